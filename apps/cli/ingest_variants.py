"""``tumorboard ingest variants PATH... --lake LAKE``: VCF/MAF files into the lake."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from apps.cli.common import Command, err_console, fail, print_counts, progress_bar
from ingest.lake import Lake, LakeError
from ingest.schema import SchemaError
from ingest.variants.pipeline import discover_files, ingest_variants


def register(ingest_app: typer.Typer) -> None:
    ingest_app.command("variants", cls=Command)(variants)


def variants(
    paths: Annotated[list[Path], typer.Argument(
        metavar="PATH", help="VCF (.vcf[.gz]) or MAF files, or folders of them.")],
    lake: Annotated[Path, typer.Option("--lake", help="The lake directory (created if missing).")],
    sample_map: Annotated[Path | None, typer.Option(
        "--sample-map", help="CSV with columns sample_id, patient_id and optionally collected_date (specimen"
                             " collection date: cohorts ignore samples taken after the prediction time)."
                             " Default: a TCGA barcode's first 12 characters, otherwise the sample id.")] = None,
    tumor_sample: Annotated[str | None, typer.Option(
        "--tumor-sample", help="Tumour sample column of the VCFs. Default: ##tumor_sample=, a sample named"
                               " TUMOR, the non-normal one, or the only one.")] = None,
    gene_panel: Annotated[Path | None, typer.Option(
        "--gene-panel", help="Gene panel YAML (name, genes, panel_size_mb). Default:"
                             " configs/gene_panel.yaml.")] = None,
) -> None:
    """Load genomic variants into the variants, gene_status and tmb tables.

    Re-ingesting a sample replaces its rows. Exit status: 0 every record loaded, 2 some records or files
    rejected (see the rejects table, modality variants), 1 fatal error (nothing written).
    """
    try:
        total = len(discover_files(paths))
        with progress_bar("variant files") as update:
            done = []

            def advance(path, result) -> None:
                done.append(path)
                update(len(done), total)

            counts = ingest_variants(Lake(lake), paths, sample_map=sample_map, gene_panel=gene_panel,
                                     tumor_sample=tumor_sample, progress=advance)
    except (FileNotFoundError, ValueError, LakeError, SchemaError, OSError) as exc:
        raise fail(str(exc)) from None
    print_counts(counts, title="variants")
    if counts["unannotated_samples"]:
        err_console.print(f"[yellow]{counts['unannotated_samples']} sample(s) have no gene annotation[/] (no ANN, CSQ"
                          " or EFF in their VCF): their gene status and TMB stay unknown; annotate the VCF with"
                          " VEP or SnpEff and ingest it again")
    if counts["rejected"]:
        err_console.print(f"[yellow]{counts['rejected']} record(s) or file(s) rejected[/]: see the rejects"
                          " table (modality variants), e.g. `tumorboard lake status`")
        raise typer.Exit(2)
