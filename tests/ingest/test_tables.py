"""Curated features and labels, the crosswalk and the lake status."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from apps.cli import app
from ingest.status import lake_status
from ingest.tables import TableFileError, ingest_features, ingest_labels


@pytest.fixture
def gse7390_csvs(tmp_path):
    from sksurv.datasets import load_breast_cancer

    features, outcome = load_breast_cancer()
    features.insert(0, "patient_id", [f"GSE7390-{i:03d}" for i in range(len(features))])
    features_csv, labels_csv = tmp_path / "features.csv", tmp_path / "labels.csv"
    features.to_csv(features_csv, index=False)
    pd.DataFrame({"patient_id": features["patient_id"], "time": outcome["t.tdm"],
                  "event": outcome["e.tdm"].astype(int)}).to_csv(labels_csv, index=False)
    return features, outcome, features_csv, labels_csv


def test_gse7390_features_and_labels_ingest_cleanly(lake, gse7390_csvs):
    features, outcome, features_csv, labels_csv = gse7390_csvs
    counts = ingest_features(lake, features_csv, modality="expression")
    assert counts == {"patients": 198, "features": 80, "values": 198 * 80, "rejected": 0}
    table = lake.read("features").to_pandas()
    er = table[(table.feature == "er") & (table.patient_id == "GSE7390-000")]
    assert er.value.isna().all() and er.value_str.iloc[0] == str(features["er"].iloc[0])
    probe = features.columns[1]
    got = table[(table.feature == probe)].set_index("patient_id").value
    assert got["GSE7390-005"] == pytest.approx(features[probe].iloc[5])
    assert ingest_labels(lake, labels_csv)["patients"] == 198
    labels = lake.read("labels").to_pandas().set_index("patient_id")
    assert labels.event.sum() == outcome["e.tdm"].sum()
    assert labels.time["GSE7390-010"] == pytest.approx(outcome["t.tdm"][10])
    # Re-ingest replaces, never duplicates.
    ingest_features(lake, features_csv, modality="expression")
    ingest_labels(lake, labels_csv)
    assert lake.read("features").num_rows == 198 * 80 and lake.read("labels").num_rows == 198
    status = lake_status(lake)
    assert status.coverage_summary().set_index("modality").patients.to_dict() == {
        "labels": 198, "features:expression": 198}


def test_bad_label_rows_are_rejected_with_row_and_reason(lake, tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("patient_id,split,time,event,index_date\n"
                   "p1,train,100,1,2020-01-01\n"
                   "p2,holdout,100,1,\n"
                   "p3,test,-5,0,\n"
                   "p4,val,10,,\n"
                   "p5,val,10,maybe,\n"
                   "p6,val,10,1,yesterday\n"
                   "p7, Validation ,10,1,\n")
    counts = ingest_labels(lake, csv)
    assert counts == {"patients": 2, "rejected": 5, "ignored_columns": 0, "ignored": []}
    assert lake.read("labels").to_pandas().set_index("patient_id").split["p7"] == "val"  # a common alias
    rejects = lake.read("rejects").to_pandas().set_index("location").reason
    assert "train/val/test" in rejects["row 3"]
    assert "non-negative" in rejects["row 4"]
    assert "go together" in rejects["row 5"]
    assert "0/1" in rejects["row 6"]
    assert "ISO date" in rejects["row 7"]
    ingest_labels(lake, csv)  # the same bad rows again: kept per run, counted once in the status
    assert lake.read("rejects").num_rows == 10
    status = lake_status(lake).rejects
    assert status["count"].sum() == 5
    latest = lake.read("rejects").column("rejected_at").to_pandas().max()
    assert (status["last_seen"] == latest.strftime("%Y-%m-%d %H:%M UTC")).all()  # the reason's latest run


def _flat(output: str) -> str:
    """CLI output with rich's line wrapping undone (a wrap must not hide a value from the test)."""
    return " ".join(output.split())


LEAKS = ("1961-13-45", "DOB 04/07/1961", "MRN4242", "12 days", "holdout-7", "yes-ish", "SSN 078-05-1120")


def test_label_reasons_name_no_cell_value_and_rows_with_one_problem_share_one(lake, tmp_path):
    """Dates and ids are identifiers: a reason names the column, what is wrong and the fix, never the value (the
    reject's raw text keeps the row); two rows with the same problem share one reason, so `lake status` and the
    CLI's error list it once with a count."""
    csv = tmp_path / "labels.csv"
    csv.write_text("patient_id,split,time,event,index_date\n"
                   "p1,train,100,1,2020-01-01\n"
                   "p2,train,100,1,1961-13-45\n"
                   "p3,train,100,1,DOB 04/07/1961\n"
                   "p4,train,MRN4242,1,\n"
                   "p5,train,12 days,1,\n"
                   "p6,holdout-7,100,1,\n"
                   "p7,train,100,yes-ish,\n"
                   "p8,SSN 078-05-1120,100,1,\n")
    result = CliRunner().invoke(app, ["ingest", "labels", str(csv), "--lake", str(lake.path)])
    assert result.exit_code == 2, result.output
    rejects = lake.read("rejects").to_pandas().set_index("location")
    reasons = rejects.reason
    assert not [leak for leak in LEAKS for reason in reasons if leak in reason]
    assert reasons["row 3"] == reasons["row 4"] and "index_date is not an ISO date" in reasons["row 3"]
    assert reasons["row 5"] == reasons["row 6"] and "time is not a number of days" in reasons["row 5"]
    assert reasons["row 7"] == reasons["row 9"] and "split is not one of train/val/test" in reasons["row 7"]
    assert "event is not 0/1" in reasons["row 8"]
    assert "1961-13-45" in rejects.raw["row 3"]  # the user can still see what was there
    status = lake_status(lake).rejects.set_index("reason")["count"]
    assert status.to_dict() == {reasons["row 3"]: 2, reasons["row 5"]: 2, reasons["row 7"]: 2, reasons["row 8"]: 1}
    shown = CliRunner().invoke(app, ["lake", "status", "--lake", str(lake.path)])
    assert shown.exit_code == 0 and not [leak for leak in LEAKS if leak in _flat(shown.output)]
    everything_bad = tmp_path / "all_bad.csv"  # nothing loads: the error quotes the first reasons
    everything_bad.write_text("patient_id,index_date\np1,1961-13-45\np2,DOB 04/07/1961\n")
    failed = CliRunner().invoke(app, ["ingest", "labels", str(everything_bad), "--lake", str(lake.path)])
    assert failed.exit_code == 1 and "every row was rejected" in _flat(failed.output), failed.output
    assert "row 2: index_date is not an ISO date" in _flat(failed.output)
    assert not [leak for leak in LEAKS if leak in _flat(failed.output)]


def test_feature_cell_reasons_name_no_value_and_share_one_per_column(lake, tmp_path):
    csv = tmp_path / "features.csv"
    csv.write_text("patient_id,ldh,hb_eu\n" + "".join(f"p{i},{200 + i},\"1{i},5\"\n" for i in range(8))
                   + "p8,MRN4242,\"98765,4321\"\np9,DOB 04/07/1961,\"11,0\"\n")
    ingest_features(lake, csv, modality="labs")
    rejects = lake.read("rejects").to_pandas().set_index("location")
    cells = rejects.reason[["row 10, column ldh", "row 11, column ldh"]]
    assert cells.nunique() == 1 and "ldh: not a finite number, in a numeric column" in cells.iloc[0]
    assert not [leak for leak in (*LEAKS, "98765") for reason in rejects.reason if leak in reason]
    assert "decimal comma" in rejects.reason["column hb_eu"] and "10,5" not in rejects.reason["column hb_eu"]
    assert rejects.raw["row 10, column ldh"] == "MRN4242"  # the cell, for the user to look at


def test_cli_exit_status_and_missing_id_column(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("patient_id,event,time\np1,1,10\np2,2,10\n")
    result = CliRunner().invoke(app, ["ingest", "labels", str(csv), "--lake", str(tmp_path / "lake")])
    assert result.exit_code == 2, result.output
    bad = tmp_path / "bad.csv"
    bad.write_text("id,x\n1,2\n")
    with pytest.raises(TableFileError, match="--id-column"):
        ingest_features(__import__("ingest.lake").lake.Lake(tmp_path / "lake"), bad, modality="m")
    result = CliRunner().invoke(app, ["ingest", "features", str(bad), "--modality", "m",
                                      "--lake", str(tmp_path / "lake")])
    assert result.exit_code == 1
    result = CliRunner().invoke(app, ["lake", "status", "--lake", str(tmp_path / "lake")])
    assert result.exit_code == 0 and "labels" in result.output


def test_trailing_commas_and_ragged_rows_never_shift_columns(lake, tmp_path):
    csv = tmp_path / "features.csv"
    csv.write_text("patient_id,age,stage,\np1,61,II,\np2,70,III\n\np3,55,I,extra\np4,80\n")
    counts = ingest_features(lake, csv, modality="clinical")
    assert counts == {"patients": 2, "features": 2, "values": 4, "rejected": 2}
    table = lake.read("features").to_pandas().set_index(["patient_id", "feature"])
    assert table.value[("p1", "age")] == 61 and table.value_str[("p2", "stage")] == "III"
    rejects = lake.read("rejects").to_pandas().set_index("location")
    assert "4 fields where the header has 3" in rejects.reason["row 5"]  # the blank line 4 keeps line numbers
    assert rejects.raw["row 5"] == "p3,55,I,extra" and "2 fields" in rejects.reason["row 6"]


def test_a_quote_left_open_never_swallows_the_rows_after_it(lake, tmp_path):
    closed_later = tmp_path / "closed_later.csv"
    closed_later.write_text('patient_id,histology\np1,adeno\np2,"large cell\np3,squamous"\np4,adeno\n')
    counts = ingest_features(lake, closed_later, modality="pathology")
    assert counts["patients"] == 2 and counts["rejected"] == 1  # p2's row ran into p3's: both in the reject
    rejects = lake.read("rejects").to_pandas().set_index("location")
    assert "runs from line 3 to line 4" in rejects.reason["row 3"] and "p3,squamous" in rejects.raw["row 3"]
    never_closed = tmp_path / "never_closed.csv"
    never_closed.write_text('patient_id,histology\np1,adeno\np2,"large cell\np3,squamous\np4,adeno\n')
    with pytest.raises(TableFileError, match="record starting on line 3"):
        ingest_features(lake, never_closed, modality="pathology")


def test_a_numeric_column_keeps_its_numbers_and_rejects_the_odd_cell(lake, tmp_path):
    csv = tmp_path / "features.csv"
    csv.write_text("patient_id,age,tmb,stage\n" + "".join(f"p{i},{60 + i},{i}.5,II\n" for i in range(8))
                   + "p8,unknown,inf,III\np9,71,n/a,I\n")
    counts = ingest_features(lake, csv, modality="clinical")
    assert counts["rejected"] == 2  # age 'unknown', tmb 'inf' ('n/a' is missing): 9 of 10, 8 of 9 are numbers
    table = lake.read("features").to_pandas().set_index(["patient_id", "feature"])
    assert table.value[("p9", "age")] == 71 and table.value_str.isna()[("p9", "age")]
    assert pd.isna(table.value[("p8", "age")]) and pd.isna(table.value[("p8", "tmb")])
    assert table.value_str[("p8", "stage")] == "III"  # no number in it: categorical
    locations = set(lake.read("rejects").to_pandas().location)
    assert locations == {"row 10, column age", "row 10, column tmb"}
    assert pd.isna(table.value[("p9", "tmb")]) and table.value_str.isna()[("p9", "tmb")]


def test_features_that_load_nothing_keep_the_modality(lake, tmp_path):
    good, empty, header, repeated = (tmp_path / f"{n}.csv" for n in ("good", "empty", "header", "repeated"))
    good.write_text("patient_id,x\np1,1\np2,2\n")
    empty.write_text("")
    header.write_text("patient_id,x\n")
    repeated.write_text("patient_id,x\np1,1\np1,2\n")
    ingest_features(lake, good, modality="m")
    with pytest.raises(TableFileError, match="empty"):
        ingest_features(lake, empty, modality="m")
    with pytest.raises(TableFileError, match="no data rows"):
        ingest_features(lake, header, modality="m")
    with pytest.raises(TableFileError, match="row 3.*also on row"):
        ingest_features(lake, repeated, modality="m")
    assert lake.read("features").num_rows == 2
    result = CliRunner().invoke(app, ["ingest", "features", str(empty), "--modality", "m", "--lake", str(lake.path)])
    said = " ".join(result.output.split())  # rich wraps the message at the console's width (the tmp path's length)
    assert result.exit_code == 1 and "the file is empty" in said and "Traceback" not in said


def test_labels_update_only_their_columns_and_reject_repeated_patients(lake, tmp_path):
    outcomes, splits = tmp_path / "outcomes.csv", tmp_path / "splits.csv"
    outcomes.write_text("patient_id,Time,EVENT,diagnosis,site\np1,100,1,nsclc,a\np2,50,0,sclc,b\n")
    splits.write_text("patient_id,split,index_date\np1,test,2020-03-01\np2,train,2020\np3,val,\np3,test,\n"
                      "p4,,\n")
    counts = ingest_labels(lake, outcomes)
    assert counts == {"patients": 2, "rejected": 0, "ignored_columns": 1, "ignored": ["site"]}
    counts = ingest_labels(lake, splits)
    assert counts["patients"] == 1 and counts["rejected"] == 4
    labels = lake.read("labels").to_pandas().set_index("patient_id")
    assert labels.loc["p1", "split"] == "test" and labels.loc["p1", "time"] == 100 and labels.loc["p1", "event"]
    assert pd.isna(labels.loc["p2", "split"]) and labels.loc["p2", "diagnosis"] == "sclc"  # its row was rejected
    reasons = lake.read("rejects").to_pandas().set_index("location").reason
    assert "not an ISO date" in reasons["row 3"] and "also on row(s) 5" in reasons["row 4"]
    assert "no label value" in reasons["row 6"]
    nothing = tmp_path / "nothing.csv"
    nothing.write_text("patient_id,Outcome\np1,1\n")
    with pytest.raises(TableFileError, match="no label column"):
        ingest_labels(lake, nothing)


def test_table_cli_errors_name_the_problem_without_a_traceback(tmp_path):
    not_a_lake = tmp_path / "lake"
    not_a_lake.write_text("")
    csv = tmp_path / "labels.csv"
    csv.write_text("patient_id,split\np1,train\n")
    for args in (["labels", str(csv)], ["features", str(csv), "--modality", "m"]):
        result = CliRunner().invoke(app, ["ingest", *args, "--lake", str(not_a_lake)])
        assert result.exit_code == 1 and "not a lake directory" in result.output, result.output


def test_one_patient_under_two_ids_is_one_patient(tmp_path):
    import orjson

    from ingest.fhir.pipeline import ingest_fhir
    from ingest.lake import Lake
    from ingest.reader import read_labels

    export = tmp_path / "Patient.ndjson"
    export.write_bytes(orjson.dumps({"resourceType": "Patient", "id": "pa",
                                     "identifier": [{"system": "urn:oid:1.2.3", "value": "1001"}]}) + b"\n")
    lake = Lake(tmp_path / "lake")
    ingest_fhir(lake, [export], workers=1)
    features = tmp_path / "features.csv"
    features.write_text("patient_id,ecog\npa,0\n1001,3\npb,1\n")  # the FHIR id and the MRN of one patient
    assert ingest_features(lake, features, modality="clinical")["patients"] == 1
    rejects = lake.read("rejects").to_pandas()
    assert rejects.reason.str.contains("the same patient \\(another of their ids\\) is also on row").sum() == 2
    first, correction = tmp_path / "labels.csv", tmp_path / "correction.csv"
    first.write_text("patient_id,time,event,split\npa,100,1,train\n")
    correction.write_text("patient_id,time,event\n1001,900,0\n")
    ingest_labels(lake, first)
    ingest_labels(lake, correction)
    labels = read_labels(lake)
    assert len(labels) == 1 and labels.time.iloc[0] == 900.0 and labels.split.iloc[0] == "train"


def test_a_features_run_stopped_at_its_commit_keeps_its_rejects_and_says_it_failed(lake, tmp_path, monkeypatch):
    from ingest.lake import Lake

    csv = tmp_path / "features.csv"
    csv.write_text("patient_id,ldh\np1,200\np2,n.d.\np3,180\np4,190\np5,210\n")
    real_write = Lake.write

    def stopped(self, name, *args, **kwargs):
        if name == "features":
            raise KeyboardInterrupt
        return real_write(self, name, *args, **kwargs)

    monkeypatch.setattr(Lake, "write", stopped)
    with pytest.raises(KeyboardInterrupt):
        ingest_features(lake, csv, modality="labs")
    assert lake.read("rejects").column("location").to_pylist() == ["row 3, column ldh"]
    runs = lake.read("manifest").to_pylist()
    assert [(r["command"], r["status"]) for r in runs] == [("ingest features --modality labs", "failed")]


def test_columns_that_would_load_wrong_are_rejected_as_columns(lake, tmp_path):
    csv = tmp_path / "features.csv"
    csv.write_text('patient_id,hb_eu,smoking=current,ldh\np1,"12,5",1,200\np2,"13,5",0,n.d.\np3,"11,0",1,180\n'
                   'p4,"12,0",0,190\np5,"14,5",0,210\n')
    counts = ingest_features(lake, csv, modality="labs")
    assert counts["features"] == 1 and counts["values"] == 5
    rejects = lake.read("rejects").to_pandas().set_index("location")
    assert "decimal comma" in rejects.reason["column hb_eu"] and "'='" in rejects.reason["column smoking=current"]
    assert rejects.raw["row 3, column ldh"] == "n.d."  # the cell, not the whole row again
    assert set(lake.read("features").column("feature").to_pylist()) == {"ldh"}
    only_commas = tmp_path / "only_commas.csv"
    only_commas.write_text('patient_id,hb_eu\np1,"12,5"\n')
    with pytest.raises(TableFileError, match="no column could be loaded"):
        ingest_features(lake, only_commas, modality="labs")
    assert set(lake.read("features").column("feature").to_pylist()) == {"ldh"}  # the modality was kept


def test_labels_take_spreadsheet_spellings_of_booleans_and_dates(lake, tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("patient_id,time,event,index_date\np1,10,1.00,2015-12-18 00:00:00\np2,20,0.0,2016-01-02\n")
    assert ingest_labels(lake, csv)["rejected"] == 0
    rows = lake.read("labels").to_pandas().set_index("patient_id")
    assert rows.event.to_dict() == {"p1": True, "p2": False}
    assert str(rows.index_date["p1"]) == "2015-12-18 00:00:00+00:00"


def test_a_file_not_in_utf8_names_its_first_bad_line(lake, tmp_path):
    csv = tmp_path / "latin1.csv"
    csv.write_bytes(b"patient_id,site\n" + b"".join(b"p%d,lung\n" % i for i in range(3000)) + b"p9,poumon \xe9\n")
    with pytest.raises(TableFileError, match="line 3002 is not UTF-8"):
        ingest_features(lake, csv, modality="site")


def test_a_long_cell_is_read_and_the_csv_limit_restored(tmp_path):
    import csv as csv_module

    from ingest.tables import read_csv_rows

    path = tmp_path / "notes.csv"
    path.write_text('patient_id,note\np1,"' + "x" * 200_000 + '"\n')
    before = min(csv_module.field_size_limit(), 131_072)  # other libraries (scipy's arff) may have raised it
    csv_module.field_size_limit(before)
    assert len(read_csv_rows(path, "patient_id").frame.note.iloc[0]) == 200_000
    assert csv_module.field_size_limit() == before


def test_index_dates_without_an_offset_are_local_times_of_the_given_zone(lake, tmp_path):
    """A date-only index date in Sydney starts at 14:00 UTC the day before: a lab at 08:00+10:00 on the day of
    diagnosis (22:00 UTC the day before) must not count as a record from before it."""
    csv = tmp_path / "labels.csv"
    csv.write_text("patient_id,index_date\np1,2020-06-15\np2,2020-06-15 08:30\np3,2020-06-15T08:30:00+02:00\n"
                   "p4,2020-01-15\n")
    result = CliRunner().invoke(app, ["ingest", "labels", str(csv), "--lake", str(lake.path),
                                      "--timezone", "Australia/Sydney"])
    assert result.exit_code == 0, result.output
    stored = lake.read("labels").to_pandas().set_index("patient_id")["index_date"].astype(str).to_dict()
    assert stored == {"p1": "2020-06-14 14:00:00+00:00", "p2": "2020-06-14 22:30:00+00:00",
                      "p3": "2020-06-15 06:30:00+00:00",  # its own offset wins
                      "p4": "2020-01-14 13:00:00+00:00"}  # summer time: +11:00
    lab = pd.Timestamp("2020-06-15T08:00:00+10:00")
    assert not lab < pd.Timestamp(stored["p1"])  # the cohort's "known before the cutoff" test

    with pytest.raises(TableFileError, match="time zone 'Sydney' is unknown; give an IANA name"):
        ingest_labels(lake, csv, timezone="Sydney")


def test_labels_record_the_endpoint_of_their_time_and_event(lake, tmp_path):
    """A curated time/event is overall survival unless ``--endpoint`` says otherwise; the endpoint travels with
    time and event (a file of splits keeps it), and a lake whose labels table predates the column gains it (a
    Delta merge dropped a column the stored table lacked) while its old rows read null: the run's endpoint, as
    before."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from ingest.reader import read_labels
    from ingest.schema import SCHEMAS

    old = pa.schema([f for f in SCHEMAS["labels"] if f.name != "endpoint"])
    write_deltalake(str(lake.table_path("labels")), pa.Table.from_pylist(
        [{"patient_id": "p0", "time": 10.0, "event": True, "source": "old.csv"}], schema=old))
    assert read_labels(lake)["endpoint"].isna().all()
    (tmp_path / "os.csv").write_text("patient_id,time,event\np1,100,1\n")
    (tmp_path / "pfs.csv").write_text("patient_id,time,event\np2,50,0\np3,,\n")
    (tmp_path / "splits.csv").write_text("patient_id,split\np1,train\np2,test\n")
    ingest_labels(lake, tmp_path / "os.csv")
    result = CliRunner().invoke(app, ["ingest", "labels", str(tmp_path / "pfs.csv"), "--lake", str(lake.path),
                                      "--endpoint", "PFS"])
    assert result.exit_code == 2, result.output  # p3: no label value
    ingest_labels(lake, tmp_path / "splits.csv")
    labels = read_labels(lake).set_index("patient_key")
    assert pd.isna(labels.loc["p0", "endpoint"]) and labels.loc["p1", "endpoint"] == "os"
    assert labels.loc["p2", "endpoint"] == "pfs" and labels.loc["p2", "split"] == "test"
    with pytest.raises(TableFileError, match="--endpoint"):
        ingest_labels(lake, tmp_path / "os.csv", endpoint="overall survival")
