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
                   "p6,val,10,1,yesterday\n")
    counts = ingest_labels(lake, csv)
    assert counts == {"patients": 1, "rejected": 5, "ignored_columns": 0}
    rejects = lake.read("rejects").to_pandas().set_index("location").reason
    assert "train/val/test" in rejects["row 3"]
    assert "non-negative" in rejects["row 4"]
    assert "go together" in rejects["row 5"]
    assert "0/1" in rejects["row 6"]
    assert "ISO date" in rejects["row 7"]
    ingest_labels(lake, csv)  # the same bad rows again: kept per run, counted once in the status
    assert lake.read("rejects").num_rows == 10
    assert lake_status(lake).rejects["count"].sum() == 5


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
