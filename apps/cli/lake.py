"""``tumorboard lake``: query, inspect and compact a lake."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import pyarrow as pa
import pyarrow.csv as pacsv
import typer

from apps.cli.common import Command, console, fail, print_arrow, print_counts, print_frame
from ingest.compact import KEEP_HOURS, Compaction, compact_lake
from ingest.lake import Lake, LakeError
from ingest.status import lake_status

LakeOption = Annotated[Path, typer.Option("--lake", help="The lake directory.")]


def register(lake_app: typer.Typer) -> None:
    lake_app.command("sql", cls=Command)(sql)
    lake_app.command("status", cls=Command)(status)
    lake_app.command("compact", cls=Command)(compact)


def sql(
    query: Annotated[str, typer.Argument(
        metavar="QUERY", help="One read-only DuckDB query (SELECT ...); every lake table is a view of the same"
                              " name.")],
    lake: LakeOption,
    output: Annotated[str, typer.Option("--format", help="table | csv")] = "table",
    max_rows: Annotated[int, typer.Option(help="Rows to print in table format.")] = 50,
) -> None:
    """Run a SQL query (DuckDB) over the lake's tables."""
    _require_lake(lake)
    if output not in ("table", "csv"):
        raise fail(f"unknown --format {output!r}; use table or csv")
    try:
        with Lake(lake).sql_batches(query) as batches:
            if output == "csv":
                _write_csv(batches)
            else:
                shown, more = _head(batches, max(max_rows, 0))
                print_arrow(shown, max_rows=shown.num_rows)
                if more:
                    console.print(f"... {more} more rows")
    except LakeError as exc:
        raise fail(str(exc)) from None


def _require_lake(lake: Path) -> None:
    if lake.exists() and not lake.is_dir():
        raise fail(f"{lake} is a file, not a lake directory; pass the lake's folder")
    if not lake.is_dir():
        raise fail(f"lake {lake} does not exist; create one with `tumorboard ingest ...`")


def _head(batches: pa.RecordBatchReader, rows: int) -> tuple[pa.Table, int]:
    """The first ``rows`` rows of ``batches`` and how many more there are (counted, not kept)."""
    kept: list[pa.RecordBatch] = []
    held = more = 0
    for batch in batches:
        if held < rows:
            kept.append(batch.slice(0, rows - held))
            held += kept[-1].num_rows
            batch = batch.slice(kept[-1].num_rows)
        more += batch.num_rows
    return pa.Table.from_batches(kept, schema=batches.schema), more


def _write_csv(batches: pa.RecordBatchReader) -> None:
    """Write ``batches`` to stdout as CSV, batch by batch (nested values as JSON: see :func:`_flat`)."""
    writer = schema = None
    for batch in batches:
        table = _flat(pa.Table.from_batches([batch]))
        if writer is None:
            schema = table.schema
            writer = pacsv.CSVWriter(sys.stdout.buffer, schema)
        writer.write_table(table.cast(schema))
    if writer is None:
        pacsv.write_csv(_flat(batches.schema.empty_table()), sys.stdout.buffer)
    else:
        writer.close()


def _flat(table: pa.Table) -> pa.Table:
    """``table`` with its nested columns (lists, structs, maps) as JSON text, and the types CSV cannot hold
    (intervals, durations) as text: CSV has no nested values."""
    for i, field in enumerate(table.schema):
        if pa.types.is_nested(field.type):
            text = [None if v is None else json.dumps(v, default=str) for v in table.column(i).to_pylist()]
        elif pa.types.is_interval(field.type) or pa.types.is_duration(field.type):
            text = [None if v is None else str(v) for v in table.column(i).to_pylist()]
        else:
            continue
        table = table.set_column(i, pa.field(field.name, pa.string()), pa.array(text, pa.string()))
    return table


def status(lake: LakeOption) -> None:
    """Row counts per table, ingest runs, rejects by reason and per-patient modality coverage."""
    _require_lake(lake)
    report = lake_status(Lake(lake))
    print_counts(report.tables, title=f"Tables in {lake}")
    if not report.runs.empty:
        print_frame(report.runs[["finished_at", "command", "status", "counts"]].head(10), title="Recent runs")
    if report.rejects.empty:
        console.print("No rejects.")
    else:
        print_frame(report.rejects, title="Rejects by reason")
    print_frame(report.coverage_summary(), title=f"Modality coverage ({len(report.coverage)} patients)")
    if any(report.unmatched.values()):
        print_counts({k: v for k, v in report.unmatched.items() if v},
                     title="Ids matching no FHIR patient (kept under their own id)")
    if report.ambiguous:
        console.print(f"{report.ambiguous} identifier value(s) belong to several FHIR patients and link no other "
                      "record; name the system in those records' patient ids as system|value")


def compact(
    lake: LakeOption,
    table: Annotated[list[str] | None, typer.Option(
        "--table", help="A table to compact (repeat for more); default: every table of the lake.")] = None,
    keep_hours: Annotated[int, typer.Option(
        "--keep-hours", min=0, help="Delete the files retired at least this long ago (a reader of an older table"
                                    " version keeps its files this long; 0: at once, when nothing reads the lake)."
                                    )] = KEEP_HOURS,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be done; change nothing.")] = False,
) -> None:
    """Rewrite each table's small files into few (Delta compaction), then delete the files no version within
    --keep-hours reads (Delta vacuum), then checkpoint each table's Delta log and delete its expired entries;
    holds the lake's writer lock, and is recorded in the manifest."""
    _require_lake(lake)
    try:
        report = compact_lake(Lake(lake), table or None, keep_hours=keep_hours, dry_run=dry_run)
    except LakeError as exc:
        raise fail(str(exc)) from None
    _print_compaction(report)


def _print_compaction(report: Compaction) -> None:
    """Per table and in total: live files, files and bytes on disk, and Delta log files before and after (a dry
    run: estimates); the tables whose expired log entries were kept, and why."""
    from rich.table import Table
    from rich.text import Text

    dry = report.dry_run
    out = Table(title=Text(f"{'Dry run, nothing changed: estimated ' if dry else ''}compaction of {report.lake}"),
                caption=Text("live: the current version's data files; files, bytes: all data files on disk (the "
                             "Delta log left out); log files: those of the table's Delta log (commits, checkpoints)"))
    out.add_column("table", no_wrap=True)
    for column in ("live files", "files", "bytes", "log files"):
        out.add_column(column, justify="right", no_wrap=True)
    rows = [(t.table, vars(t)) for t in report.tables] + [("total", report.totals())]
    for i, (name, n) in enumerate(rows):
        out.add_row(Text(name), f"{n['live_before']:,} → {n['live_after']:,}",
                    f"{n['files_before']:,} → {n['files_after']:,}",
                    f"{_size(n['bytes_before'])} → {_size(n['bytes_after'])}",
                    f"{n['log_before']:,} → {n['log_after']:,}", end_section=i == len(rows) - 2)
    console.print(out)
    total = report.totals()
    console.print(f"{'Would rewrite' if dry else 'Rewrote'} {total['compacted']:,} small file(s) into "
                  f"{'about ' if dry else ''}{total['written']:,}; {'would delete' if dry else 'deleted'} "
                  f"{total['deleted']:,} file(s) ({_size(total['deleted_bytes'])}) retired at least "
                  f"{report.keep_hours} h ago.")
    if total["compacted"] and report.keep_hours:
        console.print(f"The files the rewrite retire{'s' if dry else 'd'} stay for readers of the previous table "
                      f"versions: a compact run {report.keep_hours} h or more from now deletes them.")
    for t in report.tables:
        if t.log_kept:
            console.print(Text(f"{t.table}: expired Delta log entries {'would be ' if dry else ''}kept: {t.log_kept}."))


def _size(n: int) -> str:
    """``n`` bytes in binary units (``812 B``, ``3.4 KiB``, ``1.2 MiB``)."""
    if n < 1024:
        return f"{n:,} B"
    value, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:,.1f} {unit}"
