"""``tumorboard lake``: query and inspect a lake."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import pyarrow as pa
import pyarrow.csv as pacsv
import typer

from apps.cli.common import console, fail, print_arrow, print_counts, print_frame
from ingest.lake import Lake, LakeError
from ingest.status import lake_status

LakeOption = Annotated[Path, typer.Option("--lake", help="The lake directory.")]


def register(lake_app: typer.Typer) -> None:
    lake_app.command("sql")(sql)
    lake_app.command("status")(status)


def sql(
    query: Annotated[str, typer.Argument(help="One read-only DuckDB query (SELECT ...); every lake table is a"
                                               " view of the same name.")],
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
