"""The README's command table is the command line's reference: every verb has a row and every option is in it."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main
from typer.testing import CliRunner

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


def _rows(*, whole: bool = False) -> dict[str, str]:
    """The command cell (``whole``: the whole row) of each README table row that starts with
    `tumorboard <verb>`, joined per verb."""
    rows: dict[str, str] = {}
    for cell, rest in re.findall(r"^\| `(tumorboard [^`]*)` \|(.*)$", README.read_text(), flags=re.M):
        words = cell.split()[1:]
        verb = " ".join(words[:2]) if words[0] in ("ingest", "lake") else words[0]
        rows[verb] = rows.get(verb, "") + " " + cell + (rest if whole else "")
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


def test_usage_lines_name_the_arguments_as_the_readme_does():
    """``--help`` said ``evaluate [OPTIONS] {run}`` and ``ingest images [OPTIONS] [paths]...`` where the README's
    table writes ``RUN`` and ``[PATH...]``: every verb's arguments upper case, with ``...`` and brackets as there,
    under a name its README row uses."""
    rows = _rows(whole=True)
    wrong = []
    for verb in _verbs(typer.main.get_command(app)):
        result = CliRunner().invoke(app, [*verb.split(), "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        usage = re.search(rf"Usage: .*?{verb} \[OPTIONS\](.*)", result.output).group(1).split()
        wrong += [f"{verb}: {argument}" for argument in usage
                  if not re.fullmatch(r"\[?[A-Z]+(\.\.\.)?\]?", argument) or argument not in rows[verb]]
    assert not wrong, f"usage lines unlike the README's command table: {wrong}"
