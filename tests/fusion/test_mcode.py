"""mCODE oncology records (the mCODE extraction framework's test fixtures in ../shared/data) through ingest, the
cohort's features and targets, and the app's header."""

from __future__ import annotations

import pandas as pd

from apps.streamlit import services as sv
from fusion.cohort import index_dates, load_frames
from fusion.config import apply_overrides, load_config
from ingest.fhir.pipeline import ingest_fhir
from ingest.lake import Lake
from tests.conftest import REPO, shared_data

# the cancer of the maximal Condition template, diagnosed 2020-01-01 by its assertedDate extension, coded so
CANCER_CODE = "example-system|example-code"


def _fixture_path(name: str):
    return shared_data("fhir", "mcode-fixtures", f"test_{name}.json")


def _config(*overrides: str):
    return apply_overrides(load_config(REPO / "configs" / "full_fusion.yaml"),
                           [f'data.index.cancer_codes=["{CANCER_CODE}"]', *overrides])


def test_the_mcode_date_of_diagnosis_in_the_asserted_date_extension_is_the_index_date(tmp_path, monkeypatch):
    """The framework writes a cancer's date of diagnosis as the condition-assertedDate extension, with no onset or
    recordedDate: the cancer was undated, the patient had no index date, and the app's header no diagnosis."""
    lake = Lake(tmp_path / "lake")
    ingest_fhir(lake, [_fixture_path("templates_fixtures_maximal-condition-resource")], workers=1)
    frames = load_frames(lake.path)
    diagnosed = pd.Timestamp("2020-01-01", tz="UTC")
    index, _ = index_dates(frames.conditions, frames.labels, _config().data.index)
    assert index.to_dict() == {"example-subject-id": diagnosed}
    monkeypatch.setattr(sv, "_run_config", lambda run_dir: _config())  # a run trained with the fixture's code
    header = sv.patient_header(lake.path, "example-subject-id", None)
    assert header["cancers"] == [{"display": "exampleDisplayName", "onset": diagnosed}]
    assert (header["diagnosis"], header["index_date"]) == ("exampleDisplayName", diagnosed)
