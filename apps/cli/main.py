"""Assemble the ``tumorboard`` typer application from the verb modules."""

from __future__ import annotations

import importlib
import signal
import sys

import typer

from apps.cli.common import fail
from ingest.lake import LakeError

USAGE_ERROR = 2  # click's exit status for a mistyped command line

app = typer.Typer(
    name="tumorboard",
    help="Imaging, genomics and the clinical record in front of one prediction model.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # never print local variables (patient data) in tracebacks
)
ingest_app = typer.Typer(help="Load FHIR, variants, images and curated tables into a lake.", no_args_is_help=True)
lake_app = typer.Typer(help="Inspect, query and compact a lake.", no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")
app.add_typer(lake_app, name="lake")

# (module, which typer app its register() receives)
_VERBS = [
    ("apps.cli.synth", app),
    ("apps.cli.ingest_fhir", ingest_app),
    ("apps.cli.ingest_variants", ingest_app),
    ("apps.cli.ingest_images", ingest_app),
    ("apps.cli.ingest_tables", ingest_app),
    ("apps.cli.ingest_cbioportal", ingest_app),
    ("apps.cli.lake", lake_app),
    ("apps.cli.train", app),
    ("apps.cli.evaluate", app),
    ("apps.cli.app", app),
]
for _module, _target in _VERBS:
    importlib.import_module(_module).register(_target)


def main() -> None:
    """Console-script entry point.

    Exit statuses: a command's own (ingest: 0 loaded, 2 some records rejected, 1 error); a mistyped command,
    option or argument exits 1 rather than click's 2, which would read as "some records rejected"; SIGTERM
    (``kill``, ``timeout``, a scheduler) exits 143 through the same clean-up as Ctrl-C, so an interrupted
    ingest is recorded as failed and leaves no staging files.
    """
    signal.signal(signal.SIGTERM, _terminate)
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        print("Aborted.", file=sys.stderr)
        code = 130
    except LakeError as exc:  # e.g. two runs writing one lake at once: one line, not a traceback
        fail(str(exc))
        code = 1
    except Exception as exc:
        # click's errors (typer vendors click, so match by interface): UsageError and its kinds exit 2
        if not (hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int)):
            raise
        exc.show()
        code = 1 if exc.exit_code == USAGE_ERROR else exc.exit_code
    sys.exit(code if isinstance(code, int) else 0)


def _terminate(signum: int, frame: object) -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    print("terminated (SIGTERM): the command stops here" + (
        " (an ingest keeps what it committed and is recorded as failed in the lake's manifest: run the same command"
        " again to finish it)" if command == "ingest" else ""), file=sys.stderr)
    sys.exit(128 + signum)
