"""``tumorboard ingest fhir`` and ``tumorboard ingest views``: FHIR R4 into the lake, flattened by views."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from apps.cli.common import Command, console, err_console, fail, print_counts
from ingest.fhir.pipeline import BATCH_SIZE, DEFAULT_VIEWS, IngestReport, ingest_fhir, reflatten_views
from ingest.fhir.reader import FhirInputError
from ingest.fhir.viewdef import ViewDefinitionError
from ingest.lake import Lake, LakeError
from ingest.schema import SchemaError
from ingest.status import UTF8_POSITION

LakeOption = Annotated[Path, typer.Option("--lake", help="The lake directory (created if missing).")]
ExistingLakeOption = Annotated[Path, typer.Option("--lake", help="The lake directory.")]
ViewsOption = Annotated[Path, typer.Option("--views", help="Folder of SQL-on-FHIR ViewDefinition JSON files.")]
ExtraViewsOption = Annotated[list[Path] | None, typer.Option(
    "--extra-views", help="Folder (or JSON file) of your own ViewDefinitions, flattened next to --views"
                          " (repeatable).")]
WorkersOption = Annotated[int, typer.Option("--workers", min=1, help="Processes that parse and flatten.")]
EXIT_HELP = ("Exit status: 0 everything ingested, 2 some records rejected (see `tumorboard lake status`;"
             " the rest is in the lake), 1 fatal error (the failing write committed nothing; an interrupted run is"
             " recorded as failed in the manifest and completed by running it again).")


def register(ingest_app: typer.Typer) -> None:
    ingest_app.command("fhir", cls=Command, help=f"{inspect.cleandoc(fhir.__doc__)}\n\n{EXIT_HELP}")(fhir)
    ingest_app.command("views", cls=Command, help=f"{inspect.cleandoc(views.__doc__)}\n\n{EXIT_HELP}")(views)


def fhir(
    paths: Annotated[list[Path], typer.Argument(
        metavar="PATH",
        help="Bulk Data NDJSON files (.ndjson, .ndjson.gz), Bulk export folders, or JSON resources/Bundles.")],
    lake: LakeOption,
    workers: WorkersOption = 1,
    validate: Annotated[bool, typer.Option(
        "--validate", help="Also validate every resource against the fhir.resources R4B models (slow).")] = False,
    views_dir: ViewsOption = DEFAULT_VIEWS,
    extra_views: ExtraViewsOption = None,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", min=1, help="Records per worker batch (a batch also ends at 16 MiB of text).")] = BATCH_SIZE,
) -> None:
    """Ingest FHIR R4 resources into `fhir_resources` and flatten them into one `view_<name>` table per view.

    Re-ingesting the same or an updated export is idempotent (the newest version wins: meta.lastUpdated, else
    an integer meta.versionId). Records that cannot be ingested (bad JSON, a repeated JSON key, not FHIR R4, a
    Bundle's urn: reference to no entry, ...) go to the `rejects` table. References between files are not
    checked.
    """
    try:
        with _progress() as update:
            report = ingest_fhir(Lake(lake), paths, views_dir=[views_dir, *(extra_views or [])], workers=workers,
                                 validate=validate, batch_size=batch_size, progress=update)
    except (FhirInputError, ViewDefinitionError, LakeError, SchemaError) as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise fail("interrupted: the resources committed so far stay in the lake (the run is recorded as failed "
                   "in its manifest, with their count); run the same command again to finish", code=130) from None
    _print_report(report)
    if report.ambiguous_identifiers:
        err_console.print(f"[yellow]warning:[/] {report.ambiguous_identifiers} Patient identifier value(s) belong to "
                          "several patients: records from other sources (images, variants, tables) that use them "
                          "link to no patient unless they name the system (system|value)")
    if report.rejected:
        _print_reasons(Lake(lake), report.run_id)
        raise typer.Exit(2)
    if report.read == 0:
        raise fail("no FHIR resource found in the given paths (empty files, or no .ndjson/.json file)")


def views(lake: ExistingLakeOption, views_dir: ViewsOption = DEFAULT_VIEWS, extra_views: ExtraViewsOption = None,
          workers: WorkersOption = 1) -> None:
    """Recompute every `view_<name>` table from `fhir_resources`, without reading the export again.

    Use it after adding or editing a ViewDefinition.
    """
    if not Lake(lake).has("fhir_resources"):
        raise fail(f"lake {lake} has no fhir_resources table; run `tumorboard ingest fhir ... --lake {lake}`")
    try:
        with _progress() as update:
            counts = reflatten_views(Lake(lake), [views_dir, *(extra_views or [])], workers=workers,
                                     progress=update)
    except (ViewDefinitionError, LakeError, SchemaError) as exc:
        raise fail(str(exc)) from None
    rejected = counts.pop("rejected")
    print_counts({f"view_{name}": rows for name, rows in counts.items()} | {"rejected": rejected},
                 title="View tables (rows)")
    if rejected:
        raise typer.Exit(2)


@contextmanager
def _progress() -> Iterator:
    """A progress display with one bar per phase: ``update(phase, done, total)``."""
    labels = {"read": "reading FHIR", "views": "flattening views"}
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
                  TextColumn("{task.fields[amount]}"), TimeElapsedColumn(), console=err_console) as bar:
        tasks: dict[str, int] = {}

        def update(phase: str, done: int, total: int) -> None:
            amount = (f"{done / 1e6:,.1f}/{total / 1e6:,.1f} MB" if phase == "read"  # compressed MB for .gz
                      else f"{done:,}/{total:,} resources")
            if phase not in tasks:
                tasks[phase] = bar.add_task(labels.get(phase, phase), total=total, amount=amount)
            bar.update(tasks[phase], completed=done, total=total, amount=amount)

        yield update


def _print_reasons(lake: Lake, run_id: str, top: int = 8) -> None:
    """The ``top`` most common reject reasons of this run, each with one file:location (never the raw text),
    and how many records the other reasons hold."""
    by_reason: dict[str, list] = {}  # reason group -> [count, source, location of its first reject]
    query = f"select reason, source, location from rejects where run_id = '{run_id}'"
    with lake.sql_batches(query) as batches:  # a run can reject millions: keep one row per reason, not all
        for batch in batches:
            for reason, source, location in zip(*(batch.column(c).to_pylist() for c in
                                                  ("reason", "source", "location")), strict=True):
                group = by_reason.get(key := _reason_group(reason))
                if group is None:
                    by_reason[key] = [1, source, location]
                else:
                    group[0] += 1
    table = Table(title="Rejected (first example of each reason)")
    table.add_column("reason", overflow="fold")
    table.add_column("count", justify="right")
    table.add_column("first at (file:location)", overflow="fold", no_wrap=False)
    ranked = sorted(by_reason.items(), key=lambda kv: -kv[1][0])
    for reason, (count, source, location) in ranked[:top]:
        where = Path(source).name + (f":{location}" if location else "")
        table.add_row(reason, f"{count:,}", where)
    if len(ranked) > top:
        table.add_row(f"[italic]{len(ranked) - top} more reason(s): tumorboard lake status lists them[/]",
                      f"{sum(count for _, (count, _, _) in ranked[top:]):,}", "")
    console.print(table)


def _reason_group(reason: str) -> str:
    """A reject reason without its detail: ``not valid JSON: <parser message>`` -> ``not valid JSON``, ``not UTF-8
    (byte 0x9C at byte 2), ...`` -> ``not UTF-8, ...``; a view's reason keeps what went wrong (``view
    observation: effective_datetime is not a FHIR date/dateTime``)."""
    reason = re.sub(UTF8_POSITION, "", reason)
    if reason.startswith("view "):
        return reason.split(" (")[0][:120]
    return reason.split(": ")[0][:120]


SKIPPED_SHOWN = 10  # skipped files printed by name; the manifest keeps them all


def _print_report(report: IngestReport) -> None:
    table = Table(title="FHIR resources")
    repeats = report.repeated > 0  # a re-ingest, an updated export, or an id twice in the input
    for name in ("type", "read", "written", "rejected", *(["repeated id"] if repeats else [])):
        table.add_column(name, justify="left" if name == "type" else "right")
    for rtype, counts in sorted(report.counts.items()):
        table.add_row(rtype, f"{counts.read:,}", f"{counts.written:,}",
                      f"[red]{counts.rejected:,}[/]" if counts.rejected else "0",
                      *([f"{counts.repeated:,}"] if repeats else []))
    table.add_section()
    table.add_row("total", f"{report.read:,}", f"{report.written:,}", f"{report.read - report.written:,}",
                  *([f"{report.repeated:,}"] if repeats else []))
    console.print(table)
    if repeats:
        console.print(f"{report.repeated:,} written resource(s) repeat a Type/id already in the lake or earlier "
                      f"in this run; the lake keeps one row per id (the newest version), so this run added "
                      f"{report.written - report.repeated:,} row(s) to fhir_resources")
    print_counts({f"view_{name}": rows for name, rows in sorted(report.views.items())},
                 title="View tables (rows)")
    for path, why in report.skipped[:SKIPPED_SHOWN]:
        console.print(f"skipped {escape(str(path))}: {escape(why)}")
    if len(report.skipped) > SKIPPED_SHOWN:
        console.print(f"... and {len(report.skipped) - SKIPPED_SHOWN:,} more skipped file(s): the run's manifest "
                      "row lists them all under `skipped` in its counts (`tumorboard lake sql --lake ... "
                      "\"select counts from manifest\"`)")
    if report.view_rejects:
        console.print(f"[red]{report.view_rejects} resource(s) could not be flattened by a view[/]")
    if report.rejected:
        console.print(f"{report.rejected:,} record(s) rejected: `tumorboard lake status --lake ...` lists the"
                      " reasons; they are in the lake's `rejects` table")
