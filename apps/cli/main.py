"""Assemble the ``tumorboard`` typer application from the verb modules."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="tumorboard",
    help="Imaging, genomics and the clinical record in front of one prediction model.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # never print local variables (patient data) in tracebacks
)
ingest_app = typer.Typer(help="Load FHIR, variants, images and curated tables into a lake.", no_args_is_help=True)
lake_app = typer.Typer(help="Inspect and query a lake.", no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")
app.add_typer(lake_app, name="lake")

# (module, which typer app its register() receives)
_VERBS = [
    ("apps.cli.synth", app),
    ("apps.cli.ingest_fhir", ingest_app),
    ("apps.cli.ingest_variants", ingest_app),
    ("apps.cli.ingest_images", ingest_app),
    ("apps.cli.ingest_tables", ingest_app),
    ("apps.cli.lake", lake_app),
    ("apps.cli.train", app),
    ("apps.cli.evaluate", app),
    ("apps.cli.app", app),
]
for _module, _target in _VERBS:
    importlib.import_module(_module).register(_target)


def main() -> None:
    """Console-script entry point."""
    app()
