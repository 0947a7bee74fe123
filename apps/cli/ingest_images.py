"""``tumorboard ingest images``: DICOM series, NIfTI volumes and PNG/JPEG/TIFF files into the lake."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from apps.cli.common import Command, console, err_console, fail, print_counts
from ingest.images import ingest_images
from ingest.lake import Lake, LakeError


def register(ingest_app: typer.Typer) -> None:
    ingest_app.command("images", cls=Command)(images)


def images(
    lake: Annotated[Path, typer.Option("--lake", help="The lake directory (created if missing).")],
    manifest: Annotated[Path | None, typer.Option(
        "--manifest", help="CSV with path (relative to the CSV), patient_id, optional study_date, modality:"
                           " needed for NIfTI and PNG/JPEG/TIFF files.")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="Preprocessing config (default configs/images.yaml).")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Processes decoding images.")] = 1,
    paths: Annotated[list[Path] | None, typer.Argument(
        metavar="PATH",
        help="DICOM files or folders (whole studies, searched recursively), NIfTI or PNG/JPEG/TIFF files; may be"
             " left out with --manifest, whose files are read anyway.")] = None,
) -> None:
    """Decode, sort and preprocess images into the tensor store and the `images` table.

    Exit status: 0 everything loaded, 2 some files rejected (see `tumorboard lake status`), 1 error.
    """
    if not paths and manifest is None:
        raise fail("pass DICOM/NIfTI/image files or folders, or --manifest CSV")
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err_console) as bar:
        task = bar.add_task("images", total=None)

        def progress(phase: str, done: int, total: int) -> None:
            bar.update(task, description=phase, completed=done, total=total)

        try:
            counts = ingest_images(Lake(lake), paths or [], manifest=manifest, config_path=config, workers=workers,
                                   progress=progress)
        except (FileNotFoundError, ValueError, LakeError) as exc:
            raise fail(str(exc)) from None
    kinds = counts.pop("warning_kinds")
    print_counts(counts, title="images")
    if kinds:
        print_counts(kinds, title="warnings (images affected; details in the images table)")
    if counts["rejected"]:
        console.print(f"{counts['rejected']} file(s) or manifest row(s) rejected: see the `rejects` table"
                      " (`tumorboard lake status`)")
        raise typer.Exit(2)
