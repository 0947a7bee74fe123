"""The lake contract: schemas, required columns, atomic writes, merges, rejects, manifest and SQL."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import pyarrow as pa
import pytest

from ingest.lake import Lake, LakeError
from ingest.schema import SCHEMA_VERSION, SCHEMAS, SchemaError, conform, utc_timestamps


def _resources(ids, json_values, updated=None, versions=None):
    columns = {"resource_type": ["Patient"] * len(ids), "id": ids, "source": ["f.ndjson"] * len(ids),
               "json": json_values}
    if updated is not None:
        columns["last_updated"] = utc_timestamps(pa.array(updated, pa.string()))
    if versions is not None:
        columns["version_id"] = pa.array(versions, pa.string())
    return pa.table(columns)


def test_every_schema_is_versioned_and_has_units_where_declared():
    for name, schema in SCHEMAS.items():
        assert schema.metadata[b"tumorboard.schema_version"] == SCHEMA_VERSION.encode(), name
    assert SCHEMAS["variants"].field("vaf").metadata[b"unit"] == b"fraction"
    assert SCHEMAS["labels"].field("time").metadata[b"unit"] == b"days"


def test_conform_rejects_null_in_required_column():
    table = _resources(["a", None], ["{}", "{}"])
    with pytest.raises(SchemaError, match="required column 'id' has 1 null"):
        conform("fhir_resources", table)


def test_conform_rejects_unknown_and_missing_columns():
    with pytest.raises(SchemaError, match="unknown column"):
        conform("fhir_resources", _resources(["a"], ["{}"]).append_column("oops", pa.array([1])))
    with pytest.raises(SchemaError, match="required column 'json' is missing"):
        conform("fhir_resources", _resources(["a"], ["{}"]).drop_columns(["json"]))


def test_writer_rejects_null_and_keeps_previous_version(lake):
    lake.write("fhir_resources", _resources(["a"], ["{}"]))
    before = lake.version("fhir_resources")
    with pytest.raises(SchemaError):
        lake.write("fhir_resources", _resources([None], ["{}"]))
    assert lake.read("fhir_resources").num_rows == 1
    assert lake.version("fhir_resources") == before


def test_interrupted_write_leaves_previous_version_intact(lake):
    lake.write("fhir_resources", _resources(["a", "b"], ["{}", "{}"]))
    before = lake.version("fhir_resources")
    schema = conform("fhir_resources", _resources(["x"], ["{}"])).schema

    def batches():
        yield conform("fhir_resources", _resources(["x"], ["{}"])).to_batches()[0]
        raise KeyboardInterrupt("power cut")

    with pytest.raises(BaseException, match="power cut"):
        lake.write("fhir_resources", pa.RecordBatchReader.from_batches(schema, batches()), mode="overwrite")
    reread = Lake(lake.path)
    assert sorted(reread.read("fhir_resources").column("id").to_pylist()) == ["a", "b"]
    assert reread.version("fhir_resources") == before
    on_disk = {p.name for p in lake.table_path("fhir_resources").glob("*.parquet")}
    assert on_disk == {Path(uri).name for uri in reread.delta_table("fhir_resources").file_uris()}  # no orphans
    fresh = Lake(lake.path / "fresh")
    with pytest.raises(BaseException, match="power cut"):
        fresh.write("fhir_resources", pa.RecordBatchReader.from_batches(schema, batches()))
    assert not fresh.has("fhir_resources")  # a failed first write creates no table


def test_merge_is_idempotent_and_newest_wins(lake):
    first = _resources(["a", "b"], ["a1", "b1"], ["2020-01-01", "2020-01-01"])
    lake.write("fhir_resources", first, mode="merge", newest_by="last_updated")
    lake.write("fhir_resources", first, mode="merge", newest_by="last_updated")
    update = _resources(["a", "b", "a"], ["a0", "b2", "a2"], ["2019-01-01", "2021-01-01", "2022-01-01"])
    lake.write("fhir_resources", update, mode="merge", newest_by="last_updated")
    rows = dict(zip(*lake.read("fhir_resources", ["id", "json"]).to_pydict().values()))
    assert rows == {"a": "a2", "b": "b2"}
    # SQL filters the merged table (a merge may store strings as string_view) and keeps its types
    filtered = lake.sql("SELECT id, last_updated FROM fhir_resources WHERE id = 'a' AND resource_type = 'Patient'")
    assert filtered.column("id").to_pylist() == ["a"]
    assert filtered.column("last_updated")[0].as_py().isoformat() == "2022-01-01T00:00:00+00:00"
    older = _resources(["a"], ["stale"], ["2000-01-01"])
    lake.write("fhir_resources", older, mode="merge", newest_by="last_updated")
    assert dict(zip(*lake.read("fhir_resources", ["id", "json"]).to_pydict().values()))["a"] == "a2"


def test_merge_orders_by_version_id_where_last_updated_does_not_decide(lake):
    newest = ["last_updated", "version_id"]
    first = _resources(["a", "b", "c", "d"], ["a2", "b3", "c1", "d1"], [None, "2020-01-01", None, None],
                       ["2", None, "7", "x"])
    lake.write("fhir_resources", first, mode="merge", newest_by=newest)
    update = _resources(["a", "b", "c", "d", "c"], ["a1", "b4", "c9", "d2", "c8"],
                        [None, None, None, None, None], ["1", "4", "9", "y", "8"])
    lake.write("fhir_resources", update, mode="merge", newest_by=newest)
    rows = dict(zip(*lake.read("fhir_resources", ["id", "json"]).to_pydict().values()))
    # a: versionId 1 < 2 stays out; b: no lastUpdated to compare, versionId 4 is new; c: 9 beats 8 in the
    # same write and the stored 7; d: opaque versionIds, so the later write wins
    assert rows == {"a": "a2", "b": "b4", "c": "c9", "d": "d2"}


def test_rejects_manifest_and_sql(lake):
    from datetime import datetime

    lake.add_rejects([{"source": "x.ndjson", "location": "line 3", "reason": "bad JSON", "raw": "{" * 20_000}],
                     modality="fhir")
    lake.record_run("ingest fhir", ["x.ndjson"], {"read": 3}, started_at=datetime.now(UTC))
    result = lake.sql("SELECT modality, reason, length(raw) AS n FROM rejects").to_pylist()
    assert result == [{"modality": "fhir", "reason": "bad JSON", "n": 10_000}]
    assert lake.read("manifest").column("tumorboard_version")[0].as_py()
    assert lake.manifest_hash() != "empty"
    with pytest.raises(LakeError, match="SQL error"):
        lake.sql("SELECT * FROM no_such_table")


def test_sql_is_read_only(lake, tmp_path):
    lake.add_rejects([{"source": "x.ndjson", "location": "line 3", "reason": "bad JSON", "raw": "{"}],
                     modality="fhir")
    part = next((lake.path / "rejects").glob("*.parquet"))
    for query in (f"COPY (SELECT * FROM rejects LIMIT 0) TO '{part}' (FORMAT parquet)",
                  "CREATE TABLE t AS SELECT 1", "SELECT 1; SELECT 2", f"ATTACH '{tmp_path / 'x.db'}'", "",
                  f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'"):
        with pytest.raises(LakeError, match="read-only query"):
            lake.sql(query)
    for query, named in (("INSTALL delta", "not INSTALL:"), ("SELECT 1; SELECT 2", "not 2 statements:"),
                         ("  copy rejects TO 'x.csv'", "not COPY:")):
        with pytest.raises(LakeError, match=named):  # the user's word, not DuckDB's kind (LOAD for INSTALL)
            lake.sql(query)
    assert lake.sql("SELECT count(*) AS n FROM rejects").to_pylist() == [{"n": 1}]  # the part is intact
    assert lake.sql("DESCRIBE rejects").num_rows > 0 and lake.sql("FROM rejects").num_rows == 1


def test_sql_reads_the_lake_alone(lake, tmp_path):
    """A SELECT cannot read other files, fetch a URL, install or load an extension, or unlock that."""
    lake.add_rejects([{"source": "x.ndjson", "location": "line 3", "reason": "bad JSON", "raw": "{"}],
                     modality="fhir")
    secret = tmp_path / "secret.csv"
    secret.write_text("name\nsomeone\n")
    for query in (f"SELECT * FROM read_csv('{secret}')", f"SELECT * FROM read_text('{secret}')",
                  f"SELECT * FROM read_blob('{lake.path}/../secret.csv')", f"SELECT * FROM glob('{tmp_path}/*')",
                  "SELECT * FROM 'https://example.invalid/x.parquet'",
                  "SELECT * FROM read_json('https://example.invalid/x.json')"):
        with pytest.raises(LakeError, match="SQL error"):
            lake.sql(query)
    assert lake.sql("SELECT count(*) AS n FROM rejects").to_pylist() == [{"n": 1}]
    assert lake.sql(f"SELECT count(*) AS n FROM read_parquet('{lake.path}/rejects/*.parquet')").num_rows == 1


def test_sql_with_a_memory_limit_spills_to_a_folder_it_removes(lake, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    lake.write("fhir_resources", _resources([f"p{i}" for i in range(3000)], ["x"] * 3000))
    query = "SELECT id, count(*) AS n FROM fhir_resources GROUP BY id ORDER BY id"
    limited = lake.sql(query, memory_limit="64MB")
    assert limited.equals(lake.sql(query)) and limited.num_rows == 3000
    assert list((tmp_path / "tmp").iterdir()) == []  # its spill folder is gone
    setting = "SELECT current_setting('memory_limit') AS limit"
    assert lake.sql(setting, memory_limit="64MB").column("limit").to_pylist() == ["61.0 MiB"]  # 64 MB in MiB


def test_read_missing_table_says_what_to_do(lake):
    with pytest.raises(LakeError, match="tumorboard ingest"):
        lake.read("variants")


@pytest.mark.parametrize("damage", ["truncated", "removed"])
def test_a_damaged_table_file_is_named_with_the_fix(lake, damage):
    lake.write("fhir_resources", _resources(["a", "b"], ["a1", "b1"], ["2020-01-01", "2020-01-01"]))
    part = next(lake.table_path("fhir_resources").glob("*.parquet"))
    part.write_bytes(part.read_bytes()[:100]) if damage == "truncated" else part.unlink()
    readers = {"read": lambda: lake.read("fhir_resources"), "count_rows": lambda: lake.count_rows("fhir_resources"),
               "batches": lambda: list(lake.batches("fhir_resources", ["id"])),
               "sql": lambda: lake.sql("SELECT count(*) FROM fhir_resources"),
               "merge": lambda: lake.write("fhir_resources", _resources(["a"], ["a2"], ["2021-01-01"]), mode="merge",
                                           newest_by="last_updated")}
    for how, read in readers.items():
        with pytest.raises(LakeError, match="'fhir_resources' cannot be read: .*restore the lake from a backup"):
            read()
            pytest.fail(f"{how} read a damaged table")



def test_an_unreadable_file_is_not_called_damaged(lake, monkeypatch):
    lake.write("fhir_resources", _resources(["a"], ["a1"], ["2020-01-01"]))

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr("deltalake.DeltaTable.to_pyarrow_table", denied)
    with pytest.raises(LakeError, match="cannot be read: .*Permission denied$"):
        lake.read("fhir_resources")



def test_a_permission_error_worded_by_deltalake_or_duckdb_is_not_called_damaged(lake, monkeypatch):
    """deltalake raises a plain OSError (no errno) and DuckDB an IO Error for a file the user may not read
    (reproduced without CAP_DAC_OVERRIDE on a mode-000 Parquet file): neither is damage to restore from backup."""
    import duckdb

    from ingest.lake import damage_message

    lake.write("fhir_resources", _resources(["a"], ["a1"], ["2020-01-01"]))
    message = ("Generic LocalFileSystem error Unable to open file /l/fhir_resources/part-1.parquet Permission denied"
               " (os error 13)")

    def denied(*args, **kwargs):
        raise OSError(message)
    monkeypatch.setattr("deltalake.DeltaTable.to_pyarrow_table", denied)
    with pytest.raises(LakeError, match=r"cannot be read: .*\(os error 13\)$"):
        lake.read("fhir_resources")
    duck = duckdb.IOException('IO Error: Cannot open file "/l/fhir_resources/part-1.parquet": Permission denied')
    assert damage_message("fhir_resources", duck).endswith("Permission denied")
    assert "backup" in damage_message("fhir_resources", OSError("Parquet magic bytes not found in footer"))

def test_lake_is_readable_without_tumorboard(lake):
    import duckdb
    from deltalake import DeltaTable

    lake.write("fhir_resources", _resources(["a"], ["{}"]))
    dataset = DeltaTable(str(lake.path / "fhir_resources")).to_pyarrow_dataset()  # noqa: F841 (used in SQL)
    assert duckdb.connect().sql("SELECT count(*) FROM dataset").fetchall() == [(1,)]


def test_utc_timestamps_accepts_fhir_date_forms():
    parsed = utc_timestamps(pa.array(["2020", "2020-02", "2020-02-03", "2020-02-03T04:05:06+02:00", "nope",
                                      "2020-13-40"])).to_pylist()
    assert [p.isoformat() if p else None for p in parsed] == [
        "2020-01-01T00:00:00+00:00", "2020-02-01T00:00:00+00:00", "2020-02-03T00:00:00+00:00",
        "2020-02-03T02:05:06+00:00", None, None]
    # instants only take one cast (no rewriting); an impossible one still becomes null, not an error
    parsed = utc_timestamps(pa.array(["2020-02-03T04:05:06.5Z", None, "2020-02-30T00:00:00+01:00"])).to_pylist()
    assert [p.isoformat() if p else None for p in parsed] == ["2020-02-03T04:05:06.500000+00:00", None, None]
    # up to 9 fraction digits (truncated to microseconds) and a leap second are FHIR instants too
    parsed = utc_timestamps(pa.array(["2020-02-03T04:05:06.1234567Z", "2016-12-31T23:59:60Z",
                                      "2016-12-31T23:59:60.25+01:00", "2020-02-03T04:05:06.123456789"])).to_pylist()
    assert [p.isoformat() for p in parsed] == [
        "2020-02-03T04:05:06.123456+00:00", "2016-12-31T23:59:59.999999+00:00", "2016-12-31T22:59:59.999999+00:00",
        "2020-02-03T04:05:06.123456+00:00"]


def test_streamed_write_returns_its_row_count(lake):
    table = conform("fhir_resources", _resources(["a", "b", "c"], ["{}", "{}", "{}"]))
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=2))
    assert lake.write("fhir_resources", reader) == 3
    assert lake.read("fhir_resources").num_rows == 3


def test_period_ends_of_partial_dates_and_sentinels():
    from ingest.schema import utc_period_ends

    values = pa.chunked_array([["2020", "2020-12", "2020-02-29", "2020-06-15T10:00:00+02:00"],
                               [None, "9999", "9999-12", "9999-11", "not a date"]])
    assert [None if v is None else v.isoformat() for v in utc_period_ends(values).to_pylist()] == [
        "2020-12-31T23:59:59.999999+00:00", "2020-12-31T23:59:59.999999+00:00", "2020-02-29T23:59:59.999999+00:00",
        "2020-06-15T08:00:00+00:00", None, "9999-12-31T23:59:59.999999+00:00", "9999-12-31T23:59:59.999999+00:00",
        "9999-11-30T23:59:59.999999+00:00", None]


def test_a_killed_runs_staging_folder_is_removed_by_a_later_run(lake):
    import os
    import time

    killed, live = lake.path / "_staging" / "killed", lake.path / "_staging" / "live"
    for folder in (killed, live):
        folder.mkdir(parents=True)
        (folder / "part.parquet").write_bytes(b"x")
    old = time.time() - 2 * 24 * 3600
    for path in (killed / "part.parquet", killed):
        os.utime(path, (old, old))
    assert lake.remove_stale_staging() == 1
    assert not killed.exists() and live.exists()


def test_a_streamed_write_of_small_batches_makes_few_row_groups(lake, monkeypatch):
    """Every batch of a streamed write was a Parquet row group of its own: a FHIR Bulk folder of 5,020 small
    files gave fhir_resources 5,020 row groups of 40 rows. Batches are gathered up to ROW_GROUP_ROWS rows."""
    import pyarrow.parquet as pq

    monkeypatch.setattr("ingest.lake.ROW_GROUP_ROWS", 100)
    ids = [f"p{i}" for i in range(250)]
    table = conform("fhir_resources", _resources(ids, ["{}"] * len(ids)))
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=3))
    assert lake.write("fhir_resources", reader) == 250
    [file] = lake.table_path("fhir_resources").glob("*.parquet")
    groups = pq.ParquetFile(file).metadata
    assert [groups.row_group(i).num_rows for i in range(groups.num_row_groups)] == [100, 100, 50]
    assert sorted(lake.read("fhir_resources").column("id").to_pylist()) == sorted(ids)


def _held_by_another_process(lake_dir: Path):
    """A child process that holds ``lake_dir``'s writer lock until its stdin closes."""
    import subprocess
    import sys

    lake_dir.mkdir(parents=True, exist_ok=True)
    script = ("import fcntl, sys\n"
              f"f = open({str(lake_dir / '_lock')!r}, 'a+')\n"
              "fcntl.flock(f, fcntl.LOCK_EX)\n"
              "f.seek(0); f.truncate(); f.write('pid 4242, run other'); f.flush()\n"
              "print('held', flush=True)\n"
              "sys.stdin.read()\n")
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_writer_is_refused_while_an_ingest_holds_the_lake(tmp_path):
    """Delta never refuses a blind append: two ingests of the same new resources at once both appended them
    (duplicate rows, both runs 'ok'). The lake's writer lock refuses the second run, naming the first."""
    pytest.importorskip("fcntl")
    from ingest.tables import ingest_labels

    labels = tmp_path / "labels.csv"
    labels.write_text("patient_id,split\np1,train\n")
    lake = Lake(tmp_path / "lake")
    ingest_labels(lake, labels)
    child = _held_by_another_process(lake.path)
    try:
        with pytest.raises(LakeError, match=r"another ingest is writing to lake .*pid 4242, run other"):
            ingest_labels(Lake(lake.path), labels)
        with pytest.raises(LakeError, match="another ingest is writing"):
            Lake(lake.path).write("fhir_resources", _resources(["a"], ["{}"]))
    finally:
        child.communicate("")
    assert lake.count_rows("labels") == 1 and lake.count_rows("manifest") == 1 and not lake.has("fhir_resources")
    ingest_labels(Lake(lake.path), labels)  # released with its process: the next run goes ahead
    assert lake.count_rows("manifest") == 2


def test_the_writer_lock_is_reentrant_in_one_process_and_leaves_no_lake_for_a_refused_input(tmp_path):
    pytest.importorskip("fcntl")
    lake = Lake(tmp_path / "lake")
    with lake.exclusive(), Lake(lake.path).exclusive():  # a cBioPortal ingest runs the variants ingest
        lake.write("fhir_resources", _resources(["a"], ["{}"]))
    assert lake.count_rows("fhir_resources") == 1
    with Lake(tmp_path / "new").exclusive():
        pass  # nothing written (the input was refused): no lake folder is left behind
    assert not (tmp_path / "new").exists()


def test_sql_reads_a_lake_whose_path_has_a_space_or_a_percent_sign(tmp_path):
    """deltalake percent-encodes its file URIs (``my%20lake``); DuckDB was given them as they are, found no file,
    and the lake was called damaged."""
    lake = Lake(tmp_path / "my lake %1")
    lake.write("labels", pa.Table.from_pylist([{"patient_id": "p1", "source": "s", "time": 3.0}],
                                              schema=SCHEMAS["labels"]))
    assert lake.sql("select count(*) as n from labels").column("n").to_pylist() == [1]
    assert all(path.is_file() for path in lake.data_files("labels"))


def test_an_overwrite_of_some_rows_writes_compressed_files(lake):
    """``replace_where`` overwrites (re-ingested variants, features, labels) go through deltalake's writer, which
    wrote uncompressed Parquet when given WriterProperties without a codec; they are Snappy, as the other writes."""
    import pyarrow.parquet as pq

    ids = [f"p{i}" for i in range(500)]
    lake.write("fhir_resources", _resources(ids, ['{"resourceType": "Patient"}'] * len(ids)))
    first = set(lake.table_path("fhir_resources").glob("*.parquet"))
    lake.write("fhir_resources", _resources(ids, ['{"resourceType": "Patient", "active": true}'] * len(ids)),
               mode="overwrite", replace_where="resource_type = 'Patient'")
    new = set(lake.table_path("fhir_resources").glob("*.parquet")) - first
    assert new and lake.count_rows("fhir_resources") == len(ids)
    for path in new:
        meta = pq.ParquetFile(path).metadata.row_group(0)
        assert {meta.column(i).compression for i in range(meta.num_columns)} == {"SNAPPY"}, path.name
