"""The console entry point: exit statuses a script can rely on."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apps.cli import main


def _exit_status(monkeypatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["tumorboard", *args])
    with pytest.raises(SystemExit) as stopped:
        main()
    return stopped.value.code


def test_mistyped_command_lines_exit_1_not_the_rejects_status(monkeypatch, tmp_path, capsys):
    assert _exit_status(monkeypatch, "ingest", "fhir", str(tmp_path), "--wokers", "2") == 1
    assert "No such option: --wokers" in capsys.readouterr().err
    assert _exit_status(monkeypatch, "ingest", "fhir", str(tmp_path)) == 1  # no --lake
    assert _exit_status(monkeypatch, "--help") == 0
    labels = tmp_path / "labels.csv"
    labels.write_text("patient_id,split\np1,holdout\np2,train\n")
    assert _exit_status(monkeypatch, "ingest", "labels", str(labels), "--lake", str(tmp_path / "lake")) == 2


def test_lake_sql_writes_nested_columns_to_csv_as_json(monkeypatch, tmp_path, capsys):
    from datetime import UTC, datetime

    from ingest.lake import Lake

    Lake(tmp_path / "lake").record_run("ingest fhir", ["a.ndjson", "b,c.ndjson"], {"read": 1},
                                       started_at=datetime.now(UTC))
    assert _exit_status(monkeypatch, "lake", "sql", "--lake", str(tmp_path / "lake"), "--format", "csv",
                        "select command, sources from manifest") == 0
    assert capsys.readouterr().out.splitlines() == ['"command","sources"',
                                                    '"ingest fhir","[""a.ndjson"", ""b,c.ndjson""]"']


def test_lake_sql_streams_its_result(monkeypatch, tmp_path, capsys):
    from datetime import UTC, datetime

    from ingest.lake import Lake

    lake = Lake(tmp_path / "lake")
    lake.record_run("ingest fhir", ["a.ndjson"], {"read": 1}, started_at=datetime.now(UTC))
    assert _exit_status(monkeypatch, "lake", "sql", "--lake", str(lake.path), "--max-rows", "3",
                        "select range as n from range(25000)") == 0  # three batches of at most 10,000
    assert "... 24997 more rows" in capsys.readouterr().out
    assert _exit_status(monkeypatch, "lake", "sql", "--lake", str(lake.path), "--format", "csv",
                        "select range as n, interval (range) day as d from range(25000)") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 25001 and lines[0] == '"n","d"' and lines[-1].startswith("24999,")


def test_brackets_in_data_are_printed_as_text_not_markup(monkeypatch, tmp_path, capsys):
    from ingest.lake import Lake

    lake = Lake(tmp_path / "lake")
    lake.add_rejects([{"source": "[b]x.csv", "location": "row 2", "reason": "'[/unit]' is not a number",
                       "raw": "p1,[/unit]"}], modality="features")
    assert _exit_status(monkeypatch, "lake", "status", "--lake", str(lake.path)) == 0
    assert _exit_status(monkeypatch, "lake", "sql", "--lake", str(lake.path),
                        "select '[/x]' as a, raw from rejects") == 0
    out = capsys.readouterr().out
    assert "[/x]" in out and "p1,[/unit]" in out and out.count("[/unit]") >= 2  # in the status's rejects too


def test_variants_without_annotation_say_how_to_get_tmb(monkeypatch, tmp_path, capsys):
    vcf = tmp_path / "S1.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n##FORMAT=<ID=AD,Number=R,Type=Integer,Description=\"depths\">\n"
                   "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1\n"
                   "7\t55191822\t.\tT\tG\t.\tPASS\t.\tAD\t30,10\n")
    assert _exit_status(monkeypatch, "ingest", "variants", str(vcf), "--lake", str(tmp_path / "lake")) == 0
    assert "annotate the VCF with VEP or SnpEff" in " ".join(capsys.readouterr().err.split())


def test_interrupted_training_says_nothing_was_written(monkeypatch, tmp_path, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("fusion.train.train", interrupted)
    config = Path(__file__).resolve().parents[2] / "configs" / "full_fusion.yaml"
    (tmp_path / "lake").mkdir()
    assert _exit_status(monkeypatch, "train", "--lake", str(tmp_path / "lake"), "--config", str(config),
                        "--out", str(tmp_path / "run")) == 130
    assert "interrupted: nothing was written" in " ".join(capsys.readouterr().err.split())


def test_sigterm_runs_the_same_clean_up_as_ctrl_c(tmp_path):
    started = tmp_path / "started"
    script = ("import pathlib, sys, time\n"
              "import apps.cli.synth\n"
              "from apps.cli.main import main\n"
              "def slow(*args, **kwargs):\n"
              "    try:\n"  # touched inside the try: a signal right after the touch still finds the clean-up
              f"        pathlib.Path({str(started)!r}).touch()\n"
              "        time.sleep(60)\n"
              "    finally:\n"
              "        print('cleaned up', file=sys.stderr)\n"
              "apps.cli.synth.generate_cohort = slow\n"
              "main()\n")
    proc = subprocess.Popen([sys.executable, "-c", script, "synth", str(tmp_path / "out"), "--patients", "3"],
                            cwd=Path(__file__).resolve().parents[2], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM and "cleaned up" in err and "terminated (SIGTERM)" in err


def test_a_commit_conflict_is_one_line_naming_the_fix(monkeypatch, tmp_path, capsys):
    from deltalake.exceptions import CommitFailedError

    def conflicting(self, name, *args, **kwargs):
        raise CommitFailedError("Transaction failed: version 3 already exists")

    monkeypatch.setattr("ingest.lake.Lake._write", conflicting)
    labels = tmp_path / "labels.csv"
    labels.write_text("patient_id,split\np1,train\n")
    assert _exit_status(monkeypatch, "ingest", "labels", str(labels), "--lake", str(tmp_path / "lake")) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "another run committed to it at the same time" in err and "Traceback" not in err


def test_train_names_what_the_cohort_left_out(tmp_path, capsys):
    import json

    from apps.cli.train import _print_cohort

    (tmp_path / "run.json").write_text(json.dumps({"cohort_summary": {
        "train": 30, "val": 10, "test": 10, "without_index_date": 4, "without_survival_time": 0,
        "lab_values_other_unit": 7}}))
    _print_cohort(tmp_path)
    out = " ".join(capsys.readouterr().out.split())
    assert "cohort: 30 train, 10 val, 10 test" in out
    assert "left out: 4 patients without an index date" in out and "7 lab values in another unit" in out
    assert "without a survival time" not in out


def test_train_does_not_call_patients_without_survival_left_out_of_a_run_without_survival(tmp_path, capsys):
    """A diagnosis-only run on curated labels without time/event: every patient lacks a survival time, and none
    was left out for it."""
    import json

    from apps.cli.train import _print_cohort

    summary = {"train": 30, "val": 10, "test": 10, "without_survival_time": 50}
    (tmp_path / "run.json").write_text(json.dumps({"cohort_summary": summary, "spec": {"survival": False}}))
    _print_cohort(tmp_path)
    assert "without a survival time" not in " ".join(capsys.readouterr().out.split())
    (tmp_path / "run.json").write_text(json.dumps({"cohort_summary": summary, "spec": {"survival": True}}))
    _print_cohort(tmp_path)
    assert "left out: 50 patients without a survival time" in " ".join(capsys.readouterr().out.split())


def test_a_column_name_in_brackets_is_printed_as_text(monkeypatch, tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    labels.write_text("patient_id,split,[/unit]\np1,train,1\n")
    assert _exit_status(monkeypatch, "ingest", "labels", str(labels), "--lake", str(tmp_path / "lake")) == 0
    assert "column(s) [/unit] are not label columns" in " ".join(capsys.readouterr().err.split())


def test_lake_commands_on_a_file_say_it_is_a_file_not_that_nothing_exists(monkeypatch, tmp_path, capsys):
    table = tmp_path / "truth.parquet"
    table.write_bytes(b"PAR1")
    for args in (["lake", "status"], ["lake", "sql", "select 1"], ["lake", "compact"]):
        assert _exit_status(monkeypatch, *args, "--lake", str(table)) == 1
        err = " ".join(capsys.readouterr().err.split())
        assert "is a file, not a lake directory" in err and "does not exist" not in err


def test_lake_compact_prints_files_and_bytes_per_table_and_in_total(monkeypatch, tmp_path, capsys):
    from ingest.lake import Lake

    labels = tmp_path / "labels.csv"
    lake = tmp_path / "lake"
    for split in ("train", "test", "train"):  # three ingests: three small files per table, and superseded ones
        labels.write_text(f"patient_id,split\np1,{split}\n")
        assert _exit_status(monkeypatch, "ingest", "labels", str(labels), "--lake", str(lake)) == 0
    capsys.readouterr()
    files = {name: len(list((lake / name).glob("*.parquet"))) for name in ("labels", "manifest")}
    assert _exit_status(monkeypatch, "lake", "compact", "--lake", str(lake), "--table", "labels", "--table",
                        "manifest", "--dry-run", "--keep-hours", "0") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "Dry run, nothing changed" in out and "Would rewrite" in out
    assert {name: len(list((lake / name).glob("*.parquet"))) for name in ("labels", "manifest")} == files
    assert _exit_status(monkeypatch, "lake", "compact", "--lake", str(lake), "--keep-hours", "0") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"manifest │ 3 → 1 │ {files['manifest']} → 1 │" in out and "labels │" in out and "total │" in out
    logs = len(list((lake / "labels" / "_delta_log").iterdir()))  # 4 commits, the vacuum's 2, a checkpoint (2 files)
    assert "log files" in out and re.search(rf"labels │ 1 → 1 │ 3 → 1 │ [^│]+│ 4 → {logs} │", out) and logs == 8
    assert "Rewrote" in out and "deleted" in out
    assert len(list((lake / "labels").glob("*.parquet"))) == 1
    assert Lake(lake).read("labels").column("split").to_pylist() == ["train"]


def test_lake_compact_names_an_unknown_table_and_those_there_are(monkeypatch, tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    labels.write_text("patient_id,split\np1,train\n")
    assert _exit_status(monkeypatch, "ingest", "labels", str(labels), "--lake", str(tmp_path / "lake")) == 0
    capsys.readouterr()
    assert _exit_status(monkeypatch, "lake", "compact", "--lake", str(tmp_path / "lake"), "--table", "lables") == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "no table 'lables' in lake" in err and "its tables: labels, manifest, rejects" in err
    assert _exit_status(monkeypatch, "lake", "compact", "--lake", str(tmp_path / "nowhere")) == 1
    assert "does not exist" in " ".join(capsys.readouterr().err.split())
    assert _exit_status(monkeypatch, "lake", "compact", "--lake", str(tmp_path / "lake"), "--keep-hours", "-1") == 1
