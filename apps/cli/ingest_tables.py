"""``tumorboard ingest features`` and ``tumorboard ingest labels``: curated per-patient CSV tables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from apps.cli.common import Command, err_console, fail, print_counts
from ingest.lake import Lake, LakeError
from ingest.tables import LABEL_COLUMNS, TableFileError, ingest_features, ingest_labels

LakeOption = Annotated[Path, typer.Option("--lake", help="The lake directory (created if missing).")]
IdOption = Annotated[str, typer.Option("--id-column", help="Column holding the patient id.")]


def register(ingest_app: typer.Typer) -> None:
    ingest_app.command("features", cls=Command)(features)
    ingest_app.command("labels", cls=Command)(labels)


def features(
    csv: Annotated[Path, typer.Argument(metavar="CSV", help="Wide CSV: one row per patient, one column per feature.")],
    modality: Annotated[str, typer.Option("--modality", help="Name of the modality, e.g. expression.")],
    lake: LakeOption,
    id_column: IdOption = "patient_id",
) -> None:
    """Load a per-patient feature table (numeric or categorical) as a model modality.

    Exit status: 0 all rows loaded, 2 some rows (or cells) rejected (see `tumorboard lake status`), 1 nothing
    loaded (the lake is unchanged).
    """
    try:
        counts = ingest_features(Lake(lake), csv, modality=modality, id_column=id_column)
    except (TableFileError, LakeError) as exc:
        raise fail(str(exc)) from None
    print_counts(counts, title=f"features: {modality}")
    if counts["rejected"]:
        raise typer.Exit(2)


def labels(
    csv: Annotated[Path, typer.Argument(
        metavar="CSV", help="CSV with patient_id and any of split, diagnosis, time, event, treatment, response,"
                            " index_date.")],
    lake: LakeOption,
    id_column: IdOption = "patient_id",
    timezone: Annotated[str, typer.Option(help="IANA time zone (e.g. Australia/Sydney) where index_date values "
                                               "without a UTC offset were written: a date starts at midnight "
                                               "there.")] = "UTC",
    endpoint: Annotated[str, typer.Option(help="Survival endpoint of the file's time and event (os, pfs, dfs, ...):"
                                               " a run trains on the labels of its "
                                               "data.targets.survival_endpoint.")] = "os",
) -> None:
    """Load curated outcome labels (they override labels derived from FHIR).

    Exit status: 0 all rows loaded, 2 some rows (or cells) rejected (see `tumorboard lake status`), 1 nothing
    loaded (the lake is unchanged).
    """
    try:
        counts = ingest_labels(Lake(lake), csv, id_column=id_column, timezone=timezone, endpoint=endpoint)
    except (TableFileError, LakeError) as exc:
        raise fail(str(exc)) from None
    ignored = counts.pop("ignored")
    print_counts(counts, title="labels")
    if ignored:
        err_console.print(f"[yellow]warning:[/] column(s) {escape(', '.join(ignored))} are not label columns and"
                          f" were ignored (label columns: {', '.join(LABEL_COLUMNS)})")
    if counts["rejected"]:
        raise typer.Exit(2)
