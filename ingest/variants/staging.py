"""Parsed variant rows spilled to disk, so that an ingest of any size holds about one chunk of rows in memory.

Each file's rows are staged as one Parquet part under ``LAKE/_staging/<run_id>``, every row numbered in input
order. :meth:`VariantStage.deduplicated` reads them back in input order, a batch at a time, without the rows
that a later row of the same (sample_id, variant_key) replaces: DuckDB finds those from the key columns alone,
spilling to the same folder past :data:`STAGE_MEMORY`. The folder is removed when the stage closes, whatever
happened.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

STAGE_MEMORY = "256MB"  # DuckDB's memory limit while finding duplicates; it spills to the stage folder beyond it
BATCH_ROWS = 100_000  # rows per batch read back
_SEQ = "_seq"  # input order of the staged rows


class VariantStage:
    """Variant rows staged file by file (:meth:`begin_file`, :meth:`add`, :meth:`end_file`).

    Args:
        lake: the :class:`ingest.lake.Lake` being written (the stage lives in its folder).
        patient_of: sample id -> patient id (the ``patient_id`` column added to every row).
    """

    def __init__(self, lake, patient_of: Callable[[str], str]) -> None:
        self.lake = lake
        self.dir = lake.staging_dir()
        lake.remove_stale_staging()
        self.patient_of = patient_of
        self.rows = 0  # rows staged (kept files)
        self.samples: set[str] = set()  # sample ids of the rows staged (kept files)
        self._writer: pq.ParquetWriter | None = None
        self._part: Path | None = None
        self._parts: list[Path] = []
        self._file_rows = 0
        self._file_samples: set[str] = set()

    def __enter__(self) -> VariantStage:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()
        self.lake.remove_staging()

    def begin_file(self) -> None:
        """Start staging the rows of the next file."""
        self._part = self.dir / f"part-{len(self._parts):06d}.parquet"
        self._file_rows, self._file_samples = 0, set()

    def add(self, table: pa.Table) -> None:
        """Stage rows of the current file (``variants`` rows without ``patient_id``)."""
        if table.num_rows == 0:
            return
        samples = table.column("sample_id")
        unique = pc.unique(samples)
        patients = pa.array([self.patient_of(s) for s in unique.to_pylist()], pa.string())
        table = table.add_column(0, "patient_id", pc.take(patients, pc.index_in(samples, unique)))
        first = self.rows + self._file_rows
        table = table.append_column(_SEQ, pa.array(range(first, first + table.num_rows), pa.int64()))
        if self._writer is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self._part, table.schema, compression="lz4")
        self._writer.write_table(table)
        self._file_rows += table.num_rows
        self._file_samples.update(unique.to_pylist())

    def end_file(self, *, keep: bool = True) -> None:
        """Close the current file's part; ``keep=False`` drops its rows (a file that failed as a whole)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            if keep:
                self._parts.append(self._part)
            else:
                self._part.unlink(missing_ok=True)
        if keep:
            self.rows += self._file_rows
            self.samples |= self._file_samples
        self._part = None

    def deduplicated(self, schema: pa.Schema, each: Callable[[pa.RecordBatch], None]) -> pa.RecordBatchReader:
        """The staged rows, the last of each (sample_id, variant_key) only, in input order, as ``schema``
        (the ``variants`` columns); every batch also goes to ``each`` as it is read."""

        def batches():
            keep = np.ones(self.rows, dtype=bool)  # by row number: one byte per staged row
            superseded = self._superseded().to_numpy()
            keep[superseded] = False
            for part in self._parts:
                for batch in pq.ParquetFile(part).iter_batches(BATCH_ROWS):
                    if len(superseded):
                        batch = batch.filter(pa.array(keep[batch.column(_SEQ).to_numpy()]))
                    out = pa.Table.from_batches([batch]).select(schema.names).cast(schema)
                    for chunk in out.to_batches():
                        each(chunk)
                        yield chunk

        return pa.RecordBatchReader.from_batches(schema, batches())

    def _superseded(self) -> pa.Array:
        """Row numbers of the staged rows that a later row with the same (sample_id, variant_key) replaces:
        DuckDB groups the keys alone (not the rows), spilling to the stage folder past its memory limit."""
        import duckdb

        if not self._parts:
            return pa.array([], pa.int64())
        con = duckdb.connect(config={"memory_limit": STAGE_MEMORY, "temp_directory": str(self.dir / "spill")})
        try:
            return con.sql(
                f"WITH rows AS (SELECT sample_id, variant_key, {_SEQ} FROM read_parquet(?::VARCHAR[])), "
                f"last AS (SELECT sample_id, variant_key, max({_SEQ}) AS kept FROM rows "
                "GROUP BY sample_id, variant_key HAVING count(*) > 1) "
                f"SELECT rows.{_SEQ} FROM rows JOIN last USING (sample_id, variant_key) WHERE rows.{_SEQ} <> kept",
                params=[[str(p) for p in self._parts]]).to_arrow_table().column(0).combine_chunks()
        finally:
            con.close()
