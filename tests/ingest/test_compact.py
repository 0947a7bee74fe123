"""Lake upkeep: compaction keeps every row, cuts the files, deletes what no version within the retention reads,
checkpoints each Delta log and deletes its expired entries but never a version the retention keeps, changes
nothing in a dry run, never runs beside an ingest, and leaves the lake's state (manifest hash) as it was."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from ingest.compact import COMMAND, compact_lake
from ingest.lake import Lake, LakeError
from tests.ingest.test_lake import _held_by_another_process, _resources


def _fed(lake: Lake) -> Lake:
    """``lake`` after a few days' small commits: appends, re-ingests (upserts, the newest version wins), appends
    again, and a recorded run."""
    for day in range(3):
        ids = [f"p{day}-{i}" for i in range(5)]
        lake.write("fhir_resources", _resources(ids, [f"{{\"day\": {day}}}"] * 5, ["2020-01-01"] * 5))
    lake.write("fhir_resources", _resources(["p0-0", "p1-1", "new"], ["a2", "b2", "n1"], ["2021-01-01"] * 3),
               mode="merge", newest_by="last_updated")
    lake.write("fhir_resources", _resources(["p0-0", "p2-2"], ["a3", "stale"], ["2022-01-01", "2000-01-01"]),
               mode="merge", newest_by="last_updated")
    for day in range(3, 5):
        lake.write("fhir_resources", _resources([f"p{day}"], ["{}"], ["2020-01-01"]))
    lake.record_run("ingest fhir", ["export.ndjson"], {"read": 20}, started_at=datetime.now(UTC))
    return lake


def _rows(lake: Lake) -> list[dict]:
    return sorted(lake.read("fhir_resources").to_pylist(), key=lambda row: row["id"])


def _parquet(lake: Lake, name: str) -> set[Path]:
    return set(lake.table_path(name).glob("*.parquet"))


def _log(lake: Lake, name: str) -> Path:
    return lake.table_path(name) / "_delta_log"


def _age_log(lake: Lake, days: float, up_to: int | None = None) -> None:
    """Date every log file of every table (of versions up to ``up_to``) ``days`` back, as if written then."""
    when = time.time() - days * 24 * 3600
    for name in lake.tables():
        for path in _log(lake, name).iterdir():
            if up_to is None or (path.name[:20].isdigit() and int(path.name[:20]) <= up_to):
                os.utime(path, (when, when))


def _opens_at(lake: Lake, name: str, version: int) -> bool:
    try:
        DeltaTable(str(lake.table_path(name)), version=version)
    except DeltaError:
        return False
    return True


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root``: size and modification time (ns)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file()}


def test_compaction_keeps_the_rows_and_retention_zero_deletes_the_old_files(lake):
    _fed(lake)
    rows, state = _rows(lake), lake.manifest_hash()
    files = _parquet(lake, "fhir_resources")
    live = len(lake.delta_table("fhir_resources").file_uris())
    assert live >= 3 and len(files) > live  # the merges left superseded files on disk
    report = compact_lake(lake, keep_hours=0)
    [table] = [t for t in report.tables if t.table == "fhir_resources"]
    assert (table.live_before, table.live_after, table.files_before, table.files_after) == (live, 1, len(files), 1)
    assert table.bytes_after < table.bytes_before and table.deleted == len(files)
    assert _rows(lake) == rows  # every row, each at its newest version
    assert not files & _parquet(lake, "fhir_resources")  # every old file is gone
    assert len(_parquet(lake, "fhir_resources")) == 1
    assert lake.sql("SELECT count(*) AS n FROM fhir_resources").column("n")[0].as_py() == len(rows)
    # the run is in the manifest, but no row changed: a model trained before it finds its lake unchanged
    assert lake.manifest_hash() == state
    assert lake.sql(f"SELECT status FROM manifest WHERE command = '{COMMAND}'").column("status").to_pylist() == ["ok"]


def test_the_default_retention_keeps_the_previous_version_readable(lake):
    """A reader that opened the table before the compaction (a Streamlit session, a training run) still reads it:
    the retired files stay until a compaction a week (the default) later; ``keep_hours=0`` then deletes them."""
    _fed(lake)
    before = lake.version("fhir_resources")
    rows = _rows(lake)
    files = _parquet(lake, "fhir_resources")
    report = compact_lake(lake)
    [table] = [t for t in report.tables if t.table == "fhir_resources"]
    assert table.live_after == 1 and table.deleted == 0 and table.files_after == len(files) + 1
    older = DeltaTable(str(lake.table_path("fhir_resources")), version=before).to_pyarrow_table()
    assert older.num_rows == len(rows)
    compact_lake(lake, keep_hours=0)
    assert len(_parquet(lake, "fhir_resources")) == 1 and _rows(lake) == rows


def test_a_dry_run_changes_nothing_and_says_what_a_run_does(lake):
    _fed(lake)
    tree, versions = _tree(lake.path), {name: lake.version(name) for name in lake.tables()}
    planned = compact_lake(lake, keep_hours=0, dry_run=True)
    assert _tree(lake.path) == tree and {name: lake.version(name) for name in lake.tables()} == versions
    assert lake.count_rows("manifest") == 1  # no run recorded
    done = compact_lake(lake, keep_hours=0)
    for plan, run in zip(planned.tables, done.tables, strict=True):
        assert (plan.table, plan.live_before, plan.files_before, plan.bytes_before, plan.compacted, plan.deleted,
                plan.live_after, plan.files_after, plan.log_before, plan.log_after, plan.log_kept) == (
                    run.table, run.live_before, run.files_before, run.bytes_before, run.compacted, run.deleted,
                    run.live_after, run.files_after, run.log_before, run.log_after, run.log_kept)
    assert planned.totals()["compacted"] >= 3


def test_a_lake_with_nothing_to_do_gets_no_new_table_version(lake):
    """deltalake's vacuum commits even when it deletes nothing: a daily compaction of an idle lake must not grow
    its logs."""
    _fed(lake)
    compact_lake(lake, keep_hours=0)
    versions = {name: lake.version(name) for name in lake.tables() if name != "manifest"}
    logs = {name: _tree(_log(lake, name)) for name in versions}
    report = compact_lake(lake, keep_hours=0)
    assert {name: lake.version(name) for name in lake.tables() if name != "manifest"} == versions
    assert {name: _tree(_log(lake, name)) for name in versions} == logs  # no second checkpoint either
    assert all(t.compacted == t.deleted == 0 and t.log_before == t.log_after for t in report.tables
               if t.table != "manifest")


def test_each_log_gets_a_checkpoint_at_its_current_version(lake):
    """The next open reads one checkpoint instead of replaying every commit."""
    _fed(lake)
    logs = {name: len(list(_log(lake, name).iterdir())) for name in lake.tables()}
    rows = _rows(lake)
    report = compact_lake(lake, keep_hours=0)
    [table] = [t for t in report.tables if t.table == "fhir_resources"]
    version = lake.version("fhir_resources")
    assert (_log(lake, "fhir_resources") / f"{version:020d}.checkpoint.parquet").is_file()
    assert table.log_before == logs["fhir_resources"]
    assert table.log_after == len(list(_log(lake, "fhir_resources").iterdir()))
    assert table.log_after == table.log_before + 3 + 2  # the compaction's and vacuum's commits, the checkpoint
    assert _rows(lake) == rows
    assert report.counts()["log_after"] == sum(t.log_after for t in report.tables)


def test_expired_log_entries_go_and_every_version_the_log_retention_keeps_stays_readable(lake):
    """deltalake's rule: entries older than the log retention (30 days) and before the checkpoint that the
    oldest unexpired version needs. The table is idle (no commit, so deltalake's own clean-up after a commit never
    runs); a dry run says what a run does."""
    _fed(lake)
    compact_lake(lake, keep_hours=0)
    checkpoint = lake.version("fhir_resources")
    for day in range(3):
        lake.write("fhir_resources", _resources([f"late{day}"], ["{}"]))
    compact_lake(lake, keep_hours=0)
    _age_log(lake, 40, up_to=checkpoint + 1)
    latest = lake.version("fhir_resources")
    tree = _tree(lake.path)
    [planned] = compact_lake(lake, ["fhir_resources"], dry_run=True).tables
    assert _tree(lake.path) == tree  # the cleanup was tried on a copy of the log
    [done] = compact_lake(lake, ["fhir_resources"]).tables
    assert lake.version("fhir_resources") == latest and done.compacted == done.deleted == 0
    assert (planned.log_before, planned.log_after, planned.log_kept) == (done.log_before, done.log_after, "")
    names = sorted(p.name for p in _log(lake, "fhir_resources").iterdir())
    assert names[0] == f"{checkpoint:020d}.checkpoint.parquet"  # every older commit is gone
    assert done.log_after == len(names) < done.log_before
    assert all(_opens_at(lake, "fhir_resources", v) for v in range(checkpoint, latest + 1))
    assert not _opens_at(lake, "fhir_resources", checkpoint - 1)


def test_the_log_cleanup_keeps_a_version_whose_files_the_retention_keeps(lake):
    """A version committed before the log retention but replaced within ``keep_hours``: the vacuum keeps its
    files for a reader of it, so its log stays too. deltalake's cleanup (compact's, or the one after every later
    commit) deletes it once a checkpoint sits at the commit that replaced it (the rule counts from a version's own
    commit): so that commit gets no checkpoint either."""
    _fed(lake)
    compact_lake(lake, keep_hours=0)
    _age_log(lake, 40)
    replaced = lake.version("fhir_resources")
    rows = _rows(lake)
    lake.write("fhir_resources", _resources(["only"], ["{}"]), mode="overwrite")  # one file: nothing to compact
    [table] = compact_lake(lake, ["fhir_resources"]).tables
    assert table.compacted == table.deleted == 0 and f"version {replaced}," in table.log_kept
    assert table.log_after == table.log_before
    assert not (_log(lake, "fhir_resources") / f"{replaced + 1:020d}.checkpoint.parquet").exists()
    lake.write("fhir_resources", _resources(["next"], ["{}"]))  # deltalake's clean-up after a commit
    older = DeltaTable(str(lake.table_path("fhir_resources")), version=replaced).to_pyarrow_table()
    assert sorted(older.column("id").to_pylist()) == [row["id"] for row in rows]


def test_a_table_that_turned_log_cleanup_off_keeps_its_log(lake):
    _fed(lake)
    DeltaTable(str(lake.table_path("fhir_resources"))).alter.set_table_properties(
        {"delta.enableExpiredLogCleanup": "false"})
    compact_lake(lake, keep_hours=0)
    _age_log(lake, 40)
    lake.write("fhir_resources", _resources(["late"], ["{}"]))
    names = {p.name for p in _log(lake, "fhir_resources").iterdir()}
    [table] = compact_lake(lake, ["fhir_resources"], keep_hours=0).tables
    assert names <= {p.name for p in _log(lake, "fhir_resources").iterdir()}
    assert table.log_kept == "the table's delta.enableExpiredLogCleanup is false"


def test_compaction_refuses_to_run_beside_an_ingest_and_an_ingest_beside_it(tmp_path):
    pytest.importorskip("fcntl")
    lake = _fed(Lake(tmp_path / "lake"))
    version, tree = lake.version("fhir_resources"), _tree(lake.path / "fhir_resources")
    child = _held_by_another_process(lake.path)
    try:
        with pytest.raises(LakeError, match=r"another ingest is writing to lake .*pid 4242, run other"):
            compact_lake(Lake(lake.path), keep_hours=0)
    finally:
        child.communicate("")
    assert lake.version("fhir_resources") == version and _tree(lake.path / "fhir_resources") == tree
    import subprocess
    import sys

    script = ("import sys\nfrom ingest.lake import Lake\n"
              f"with Lake({str(lake.path)!r}, run_id='other').exclusive({COMMAND!r}):\n"
              "    print('held', flush=True)\n    sys.stdin.read()\n")
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(LakeError, match=r"`tumorboard lake compact` is writing to lake .*run other, lake compact"):
            Lake(lake.path).write("fhir_resources", _resources(["late"], ["{}"]))
    finally:
        child.communicate("")
    compact_lake(Lake(lake.path), keep_hours=0)  # released with its process: the compaction goes ahead
    assert lake.version("fhir_resources") > version


def test_an_unknown_table_is_named_with_the_tables_there_are(lake):
    _fed(lake)
    with pytest.raises(LakeError, match=r"no table 'nope' in lake .*; its tables: fhir_resources, manifest, rejects"):
        compact_lake(lake, ["manifest", "nope"])
    with pytest.raises(LakeError, match=r"no table '_tensors' in lake .*; its tables: fhir_resources, manifest"):
        compact_lake(lake, ["_tensors"], dry_run=True)
    assert lake.count_rows("manifest") == 1  # nothing was compacted or recorded
    with pytest.raises(LakeError, match="does not exist"):
        compact_lake(Lake(lake.path.parent / "elsewhere"))
    assert not (lake.path.parent / "elsewhere").exists()
    (lake.path.parent / "bare").mkdir()
    assert compact_lake(Lake(lake.path.parent / "bare")).tables == []
    assert not Lake(lake.path.parent / "bare").tables()  # no manifest made up for a folder without tables


def test_only_the_named_tables_are_compacted(lake):
    _fed(lake)
    versions = lake.version("fhir_resources")
    report = compact_lake(lake, ["rejects", "manifest"], keep_hours=0)
    assert [t.table for t in report.tables] == ["rejects", "manifest"]
    assert lake.version("fhir_resources") == versions


def test_a_killed_runs_files_go_after_the_retention_and_tensors_and_staging_stay(lake):
    """Files no commit names (a run killed between writing a Parquet file and committing it) are deleted once
    older than the retention; the image tensors and staging folders are no Delta table and are left alone."""
    _fed(lake)
    folder = lake.table_path("fhir_resources")
    day_old = time.time() - 24 * 3600
    orphan, fresh = folder / "part-killed.parquet", folder / "part-writing.parquet"
    tensor, staged = lake.tensor_dir / "images-0.arrow", lake.path / "_staging" / "run" / "views.arrow"
    staged.parent.mkdir(parents=True)
    for path in (orphan, fresh, tensor, staged):
        path.write_bytes(b"PAR1")
    for path in (orphan, tensor, staged):
        os.utime(path, (day_old, day_old))
    compact_lake(lake, keep_hours=1)
    assert not orphan.exists() and fresh.exists() and tensor.exists() and staged.exists()


def test_the_manifest_hash_of_a_lake_never_compacted_is_unchanged(lake):
    """Runs trained before this release recorded the hash of every run id: a lake without compactions keeps it."""
    _fed(lake)
    lake.record_run("ingest variants", ["a.maf"], {"read": 1}, started_at=datetime.now(UTC))
    runs = sorted(lake.read("manifest", ["run_id"]).column("run_id").to_pylist())
    assert lake.manifest_hash() == hashlib.sha256("\n".join(runs).encode()).hexdigest()[:16]
    state = lake.manifest_hash()
    compact_lake(lake)
    compact_lake(lake, keep_hours=0)
    assert lake.manifest_hash() == state and lake.count_rows("manifest") == 4


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_table_whose_log_cannot_be_read_is_named_in_a_lake_error(lake, dry_run):
    """A Delta log damaged outside tumorboard: a LakeError naming the table (the command's one-line error), not
    deltalake's own exception (a traceback)."""
    _fed(lake)
    (lake.table_path("fhir_resources") / "_delta_log" / "00000000000000000000.json").write_text("garbage{")
    with pytest.raises(LakeError, match="table 'fhir_resources' of lake .* could not be compacted: .*Json error"):
        compact_lake(lake, keep_hours=0, dry_run=dry_run)


def test_the_rewritten_files_are_compressed_as_the_ingest_wrote_them(lake):
    """The compaction wrote its files uncompressed (deltalake's WriterProperties without a codec): the demo's
    fhir_resources grew from 4.7 MiB in two files to 25.1 MiB in one; its files are Snappy, as an ingest's."""
    import pyarrow.parquet as pq

    text = '{"resourceType": "Observation", "status": "final", "code": {"text": "Haemoglobin"}}'
    for day in range(2):
        ids = [f"p{day}-{i}" for i in range(2000)]
        lake.write("fhir_resources", _resources(ids, [text] * len(ids), ["2020-01-01"] * len(ids)))
    report = compact_lake(lake, ["fhir_resources"], keep_hours=0)
    [table] = report.tables
    assert table.compacted == 2 and table.files_after == 1
    assert table.bytes_after <= table.bytes_before, (table.bytes_before, table.bytes_after)
    [written] = _parquet(lake, "fhir_resources")
    meta = pq.ParquetFile(written).metadata.row_group(0)
    assert {meta.column(i).compression for i in range(meta.num_columns)} == {"SNAPPY"}
