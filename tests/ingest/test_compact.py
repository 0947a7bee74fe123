"""Lake upkeep: compaction keeps every row, cuts the files, deletes what no version within the retention reads,
changes nothing in a dry run, never runs beside an ingest, and leaves the lake's state (manifest hash) as it was."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from deltalake import DeltaTable

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
                plan.live_after, plan.files_after) == (
                    run.table, run.live_before, run.files_before, run.bytes_before, run.compacted, run.deleted,
                    run.live_after, run.files_after)
    assert planned.totals()["compacted"] >= 3


def test_a_lake_with_nothing_to_do_gets_no_new_table_version(lake):
    """deltalake's vacuum commits even when it deletes nothing: a daily compaction of an idle lake must not grow
    its logs."""
    _fed(lake)
    compact_lake(lake, keep_hours=0)
    versions = {name: lake.version(name) for name in lake.tables() if name != "manifest"}
    report = compact_lake(lake, keep_hours=0)
    assert {name: lake.version(name) for name in lake.tables() if name != "manifest"} == versions
    assert all(t.compacted == t.deleted == 0 for t in report.tables if t.table != "manifest")


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
