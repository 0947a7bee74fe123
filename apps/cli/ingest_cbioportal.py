"""``tumorboard ingest cbioportal STUDY --lake LAKE``: a cBioPortal study folder into the lake."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from apps.cli.common import Command, err_console, fail, print_counts, progress_bar
from ingest.cbioportal import ingest_cbioportal
from ingest.lake import Lake, LakeError
from ingest.schema import SchemaError


def register(ingest_app: typer.Typer) -> None:
    ingest_app.command("cbioportal", cls=Command)(cbioportal)


def cbioportal(
    study: Annotated[Path, typer.Argument(
        metavar="STUDY", help="The study folder (meta_*.txt and data_*.txt files, as the cBioPortal datahub"
                              " has them).")],
    lake: Annotated[Path, typer.Option("--lake", help="The lake directory (created if missing).")],
    endpoint: Annotated[str, typer.Option(
        "--endpoint", help="Survival endpoint: the prefix of a <X>_STATUS / <X>_MONTHS pair of patient"
                           " attributes (OS, PFS, DFS, DSS), recorded with the labels (train on PFS with --set"
                           " data.targets.survival_endpoint=pfs).")] = "OS",
    diagnosis: Annotated[str | None, typer.Option(
        "--diagnosis", help="Patient or sample attribute to use as the diagnosis label, e.g."
                            " CANCER_TYPE_DETAILED.")] = None,
    exclude: Annotated[list[str] | None, typer.Option(
        "--exclude", help="Patient attribute to leave out of the clinical features (repeatable); outcomes and"
                          " identifiers are always left out.")] = None,
    gene_panel: Annotated[Path | None, typer.Option(
        "--gene-panel", help="Gene panel YAML (name, genes, panel_size_mb) for TMB and the copy-number and"
                             " expression genes. Default: configs/gene_panel.yaml (a whole exome).")] = None,
    expression_genes: Annotated[int, typer.Option(
        "--expression-genes", min=0, help="Expression features: the panel's genes plus this many of the most"
                                          " variable others (0: no expression).")] = 500,
    response: Annotated[str | None, typer.Option(
        "--response", help="Patient or sample attribute holding the treatment response label, e.g."
                           " BEST_OVERALL_RESPONSE (CR / PR respond, SD / PD do not) or DURABLE_CLINICAL_BENEFIT"
                           " (YES / NO).")] = None,
    responders: Annotated[str | None, typer.Option(
        "--responders", help="Comma-separated values of the --response attribute that mean a response; every"
                             " other value then does not (NE / not evaluable: unknown).")] = None,
    treatment: Annotated[str | None, typer.Option(
        "--treatment", help="Patient or sample attribute naming each patient's treatment (the response task's"
                            " input), e.g. DRUG_TYPE.")] = None,
    treatment_name: Annotated[str | None, typer.Option(
        "--treatment-name", help="The one treatment every patient of the study received, e.g."
                                 " pembrolizumab (instead of --treatment).")] = None,
    treatment_timeline: Annotated[str | None, typer.Option(
        "--treatment-timeline", help="Column of the study's timeline TREATMENT events (data_timeline_treatment.txt"
                                     " or data_timeline.txt) naming each patient's treatment: AGENT, SUBTYPE or"
                                     " TREATMENT_TYPE. The first treatment starting on or after day 0 is the"
                                     " patient's (earlier ones are prior therapy); several started that day are"
                                     " one combination, e.g. Carboplatin+Pemetrexed (instead of --treatment).")
    ] = None,
) -> None:
    """Load a cBioPortal study: survival (and, with --response, treatment response) labels, clinical features,
    mutations, copy number and expression.

    Every patient gets the index date 2000-01-01 (cBioPortal has no calendar dates; survival counts from each
    patient's day 0). Exit status: 0 everything loaded, 2 some lines or cells rejected (see `tumorboard lake
    status`), 1 nothing loaded.
    """
    try:
        with progress_bar("cBioPortal study: files read, parts written") as update:
            counts = ingest_cbioportal(Lake(lake), study, endpoint=endpoint, diagnosis=diagnosis,
                                       exclude=exclude or (), gene_panel=gene_panel,
                                       expression_genes=expression_genes, response=response,
                                       responders=responders.split(",") if responders else None,
                                       treatment=treatment, treatment_name=treatment_name,
                                       treatment_timeline=treatment_timeline, progress=update)
    except (FileNotFoundError, ValueError, LakeError, SchemaError, OSError) as exc:
        raise fail(str(exc)) from None
    excluded, notes = counts.pop("excluded"), counts.pop("notes", [])
    for part, part_counts in counts.items():
        print_counts(part_counts, title=f"cbioportal: {part}")
    for modality, attributes in excluded.items():
        if attributes:
            print_counts(attributes, title=f"attributes left out of the {modality} features")
    for note in notes:
        err_console.print(f"[yellow]note:[/] {escape(note)}")
    rejected = sum(int(part_counts.get("rejected", 0)) for part_counts in counts.values())
    if rejected:
        err_console.print(f"[yellow]{rejected} line(s) or cell(s) rejected[/]: see the rejects table, e.g."
                          " `tumorboard lake status`")
        raise typer.Exit(2)
