"""``tumorboard synth``: generate a synthetic multimodal lung-nodule cohort (FHIR, MAF/VCF, DICOM, PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from apps.cli.common import Command, console, fail, print_counts, progress_bar
from ingest.synth import SynthConfig, generate_cohort


def register(app: typer.Typer) -> None:
    app.command("synth", cls=Command)(synth)


def _flatten(summary: dict) -> dict[str, object]:
    rows: dict[str, object] = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            rows.update({f"{key}: {k}": v for k, v in value.items()})
        else:
            rows[key] = value
    return rows


def synth(
    out: Annotated[Path, typer.Argument(
        metavar="OUT", help="Output folder (must be absent or empty unless --overwrite).")],
    patients: Annotated[int, typer.Option("--patients", min=1, help="Number of patients.")] = 200,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Random seed; same seed, same files.")] = 0,
    bundles: Annotated[
        bool, typer.Option("--bundles", help="Also write one FHIR transaction Bundle per patient.")
    ] = False,
    png: Annotated[bool, typer.Option("--png/--no-png", help="Write lung-window PNG key slices.")] = True,
    image_missing_rate: Annotated[
        float,
        typer.Option("--image-missing-rate", min=0.0, max=1.0, help="Fraction of patients without a CT."),
    ] = 0.15,
    genomics_missing_rate: Annotated[
        float,
        typer.Option("--genomics-missing-rate", min=0.0, max=1.0, help="Fraction of patients not sequenced."),
    ] = 0.2,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty OUT.")] = False,
) -> None:
    """Generate a cohort with known truth (truth.parquet); see `ingest.synth` for the layout and model."""
    try:
        config = SynthConfig(
            n_patients=patients,
            seed=seed,
            bundles=bundles,
            png=png,
            image_missing_rate=image_missing_rate,
            genomics_missing_rate=genomics_missing_rate,
        )
    except ValidationError as exc:
        raise fail(str(exc)) from None
    with progress_bar("synth") as update:
        try:
            summary = generate_cohort(out, config, update, overwrite=overwrite)
        except FileExistsError as exc:
            raise fail(str(exc)) from None
    print_counts(_flatten(summary), title=f"synthetic cohort in {out}")
    genomics = out / "genomics"
    console.print("next, into a lake LAKE:\n"
                  f"  tumorboard ingest fhir {out / 'fhir'} --lake LAKE\n"
                  f"  tumorboard ingest variants {genomics} --lake LAKE --sample-map {genomics / 'sample_map.csv'}"
                  f" --gene-panel {genomics / 'gene_panel.yaml'}\n"
                  f"  tumorboard ingest images {out / 'dicom'} --lake LAKE", highlight=False, soft_wrap=True)
