"""The README's command table is the command line's reference: every verb has a row and every option is in it."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main

from apps.cli import app

README = Path(__file__).resolve().parents[2] / "README.md"


def _verbs(group, prefix: tuple[str, ...] = ()) -> dict:
    """``"ingest fhir"`` -> its click command, for every leaf command under ``group`` (typer vendors click: a
    group is told by its ``commands``)."""
    found = {}
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            found.update(_verbs(command, (*prefix, name)))
        else:
            found[" ".join((*prefix, name))] = command
    return found


def _rows() -> dict[str, str]:
    """The command cell of each README table row that starts with `tumorboard <verb>`, joined per verb."""
    rows: dict[str, str] = {}
    for cell in re.findall(r"^\| `(tumorboard [^`]*)` \|", README.read_text(), flags=re.M):
        words = cell.split()[1:]
        verb = " ".join(words[:2]) if words[0] in ("ingest", "lake") else words[0]
        rows[verb] = rows.get(verb, "") + " " + cell
    return rows


def test_every_verb_and_option_is_in_the_readme_command_table():
    rows = _rows()
    missing = []
    for verb, command in _verbs(typer.main.get_command(app)).items():
        if verb not in rows:
            missing.append(verb)
            continue
        for param in command.params:
            names = [n for n in (*param.opts, *param.secondary_opts) if n.startswith("--") and n != "--help"]
            if names and not any(re.search(rf"{re.escape(n)}\b", rows[verb]) for n in names):
                missing.append(f"{verb} {names[0]}")
    assert not missing, f"not in the README's command table: {missing}"
