"""mCODE oncology records (the mCODE extraction framework's test fixtures in ../shared/data) through ingest, the
cohort's features and targets, and the app's header."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from apps.streamlit import services as sv
from fusion.cohort import FeatureSelection, assemble_cohort, index_dates, karnofsky_as_ecog, load_frames
from fusion.config import apply_overrides, load_config
from ingest.fhir.pipeline import ingest_fhir
from ingest.lake import Lake
from tests.conftest import REPO, shared_data

PATIENT, CANCER = "urn:uuid:mrn-1", "urn:uuid:cond-1"
# The fixtures are separate unit-test inputs: their resources point at a patient and a cancer by placeholders that
# no fixture (or, within a module's Bundle, no entry) holds, and the single-resource ones share the id
# `example-id`; ingested as they are, these are rejected ("a reference to nothing") or kept once. One patient's
# Bundle, as the framework writes it, holds them all: here the placeholders become its Patient and its cancer.
PLACEHOLDERS = {"urn:uuid:mrn-1": PATIENT, "urn:uuid:example-mrn": PATIENT, "urn:uuid:example-subject-id": PATIENT,
                "urn:uuid:123-example-patient": PATIENT, "urn:uuid:cond-1": CANCER, "urn:uuid:condition-id": CANCER,
                "urn:uuid:example-condition-id": CANCER, "urn:uuid:123-Walking-Corpse-Syndrome": CANCER}
# the cancer of the maximal Condition template, diagnosed 2020-01-01 by its assertedDate extension, coded so
CANCER_CODE = "example-system|example-code"
KEY = "119147111821125"  # the patient of the framework's patient Bundle


def _fixture_path(name: str) -> Path:
    return shared_data("fhir", "mcode-fixtures", f"test_{name}.json")


def _fixture(name: str) -> list[tuple[str | None, dict]]:
    """(fullUrl, resource) of each resource of fixture ``test_<name>.json`` (a Bundle's entries, or itself)."""
    doc = json.loads(_fixture_path(name).read_text())
    if doc["resourceType"] == "Bundle":
        return [(entry.get("fullUrl"), entry["resource"]) for entry in doc["entry"]]
    return [(None, doc)]


def _relinked(node: object) -> object:
    """``node`` with its placeholder references replaced (:data:`PLACEHOLDERS`)."""
    if isinstance(node, dict):
        return {k: PLACEHOLDERS.get(v, v) if k == "reference" else _relinked(v) for k, v in node.items()}
    return [_relinked(v) for v in node] if isinstance(node, list) else node


def one_patient(tmp_path: Path, *names: str, extra: tuple[dict, ...] = ()) -> Lake:
    """The lake of one patient's collection Bundle: the Patient of the framework's patient Bundle, the cancer, the
    resources of fixtures ``names`` and the resources ``extra`` (:func:`recoded`)."""
    [(_, patient)], [(_, cancer)] = (_fixture("extractors_fixtures_csv-patient-bundle"),
                                     _fixture("templates_fixtures_maximal-condition-resource"))
    entries = [{"fullUrl": PATIENT, "resource": patient}, {"fullUrl": CANCER, "resource": _relinked(cancer)}]
    for name in names:
        short = name.rsplit("_", 1)[-1]
        for n, (url, resource) in enumerate(_fixture(name)):
            resource = _relinked(resource)
            resource.pop("requester", None)  # a practitioner no fixture holds
            if resource.get("id") == "example-id":
                resource["id"] = short
            entries.append({"fullUrl": url or f"urn:uuid:{short}-{n}", "resource": resource})
    entries += [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in extra]
    (tmp_path / "in").mkdir(parents=True)
    (tmp_path / "in" / "bundle.json").write_text(json.dumps({"resourceType": "Bundle", "type": "collection",
                                                              "entry": entries}))
    lake = Lake(tmp_path / "lake")
    report = ingest_fhir(lake, [tmp_path / "in"], workers=1)
    assert report.rejected == 0 and report.written == len(entries)
    return lake


def recoded(name: str, code: str, value: dict | None = None, *, when: str = "2020-01-01") -> dict:
    """The framework's coded lab (fixture csv-observation-bundle: LOINC 1695-6, SNOMED 10828004 positive, dated
    2020-01-02, after the cutoff) as another test: ``code`` (LOINC), its ``value`` (a Coding, or the whole value[x]
    with a key of its own) and date ``when`` (default: the day of diagnosis, an input); its id ``name``."""
    [(_, lab)] = _fixture("extractors_fixtures_csv-observation-bundle")
    lab = _relinked(lab)
    lab.update(id=name, code={"coding": [{"system": "http://loinc.org", "code": code}]})
    if value is not None and "coding" not in value and any(k.startswith("value") for k in value):
        lab.pop("valueCodeableConcept")
        lab.update(value)
    elif value is not None:
        lab["valueCodeableConcept"] = {"coding": [value]}
    lab["effectiveDateTime"] = when
    return lab


def _ehr(lake: Lake, *overrides: str) -> dict[str, float]:
    """The patient's EHR features in the full-fusion cohort of ``lake`` (the fixture's cancer code listed)."""
    cohort = assemble_cohort(load_frames(lake.path), _config(*overrides), assign=False)
    assert cohort.patient_keys.tolist() == [KEY]
    return dict(zip(cohort.blocks["ehr"].names, cohort.blocks["ehr"].values[0].tolist(), strict=True))


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


def test_the_header_shows_the_pathological_stage_group_as_such(tmp_path, monkeypatch):
    """The mCODE staging of the fixtures: a clinical stage group 3C (LOINC 21908-9, AJCC) with its T, N and M
    categories, and a pathological one (21902-2). Both are the stage feature 3; the app's header read only the
    clinical code, so a patient staged pathologically only showed none."""
    monkeypatch.setattr(sv, "_run_config", lambda run_dir: _config())
    both = one_patient(tmp_path / "both", "extractors_fixtures_csv-staging-bundle",
                       "templates_fixtures_minimal-staging-pathologic-resource")
    assert _ehr(both)["stage"] == 3.0
    header = sv.patient_header(both.path, KEY, None)
    assert (header["stage"], header["stage_kind"], sv.stage_label(header)) == ("3C", "clinical", "Stage")
    pathological = one_patient(tmp_path / "pathological", "templates_fixtures_minimal-staging-pathologic-resource")
    assert _ehr(pathological)["stage"] == 3.0
    header = sv.patient_header(pathological.path, KEY, None)
    assert (header["stage"], sv.stage_label(header)) == ("3C", "Pathological stage")


def test_one_mcode_patient_gives_the_features_and_targets_the_readme_promises(tmp_path):
    """Every mCODE element the fixtures hold, for one patient diagnosed 2020-01-01 (assertedDate): staging, disease
    statuses (a complete remission before the diagnosis, no progression), a coded lab and a body height, a cancer-
    related medication request and administration, surgical and radiation procedures (all 2020-01-01/02)."""
    lake = one_patient(tmp_path, *(f"extractors_fixtures_{n}" for n in (
        "csv-staging-bundle", "csv-cancer-disease-status-bundle", "csv-observation-bundle",
        "surgical-radiation-procedure-bundle")), *(f"templates_fixtures_{n}" for n in (
        "minimal-staging-pathologic-resource", "disease-status-resource", "maximal-observation-resource",
        "maximal-medication-request", "maximal-medication-resource", "maximal-procedure-resource")))
    assert {t: lake.read(f"view_{t}").num_rows for t in ("tnm_stage", "disease_status", "procedure")} == {
        "tnm_stage": 5, "disease_status": 2, "procedure": 3}
    features = _ehr(lake)  # one day of grace: the staging and height of the diagnosis day are inputs
    assert (features["age"], features["sex_male"], features["stage"]) == pytest.approx((25.36, 1.0, 3.0), abs=0.01)
    assert features["lab:8302-2:last"] == 70.0 and np.isnan(features["ecog"])
    cohort = assemble_cohort(load_frames(lake.path), _config('data.targets.treatment_map={"example-code": "chemo"}'),
                             assign=False)
    t = cohort.targets
    assert cohort.index_date[0] == pd.Timestamp("2020-01-01", tz="UTC")
    # censored at the last record (the lab of 2020-01-02); the remission is no progression
    assert (t.os_time[0], t.os_event[0], t.pfs_time[0], t.pfs_event[0]) == (1.0, False, 1.0, False)
    assert t.treatment_names[t.treatment[0]] == "chemo" and np.isnan(t.response[0])


def test_coded_er_pr_her2_results_are_marker_status_features(tmp_path):
    """mCODE TumorMarkerTest results are coded (positive / negative): only numeric labs were features, so a breast
    cancer's ER, PR and HER2 status never reached a model. The last positive or negative result known before the
    cutoff is the status; an equivocal one, or one after the cutoff, is none."""
    snomed, loinc = "http://snomed.info/sct", "http://loinc.org"
    lake = one_patient(tmp_path, "extractors_fixtures_csv-observation-bundle", extra=(
        recoded("er", "16112-5"),  # the fixture's own answer: SNOMED 10828004 positive
        recoded("pr-old", "16113-3", {"system": snomed, "code": "10828004"}, when="2019-06-01"),
        recoded("pr", "16113-3", {"system": loinc, "code": "LA6577-6", "display": "Negative"}),
        recoded("pr-after", "16113-3", {"system": snomed, "code": "10828004"}, when="2020-03-01"),
        recoded("her2-ihc", "85319-2", {"system": snomed, "code": "260385009"}, when="2019-12-01"),
        recoded("her2", "48676-1", {"system": snomed, "code": "42425007", "display": "Equivocal"})))
    features = _ehr(lake)
    assert (features["marker:er"], features["marker:pr"], features["marker:her2"]) == (1.0, 0.0, 0.0)
    assert "lab:16112-5:last" not in features  # coded: no lab
    untested = _ehr(one_patient(tmp_path / "none", "extractors_fixtures_csv-observation-bundle"),
                    "data.index.grace_days=2")  # the fixture's 1695-6 (not a marker) an input
    assert not [name for name in untested if name.startswith("marker:")]  # no marker test: no empty columns
    # a display's word where the answer is not coded; another list of codes (the fixture's 1695-6 as ER)
    worded = recoded("er-text", "16112-5", {"valueCodeableConcept": {"text": "x", "coding": [
        {"system": "http://example.org/local", "code": "P", "display": "Positive (95% of cells)"}]}})
    assert _ehr(one_patient(tmp_path / "worded", extra=(worded,)))["marker:er"] == 1.0
    listed = _ehr(one_patient(tmp_path / "listed", "extractors_fixtures_csv-observation-bundle"),
                  'data.ehr.marker_codes={"er": ["1695-6"]}', "data.index.grace_days=2")
    assert listed["marker:er"] == 1.0 and "marker:pr" not in listed
    # a run saved before markers were features keeps the columns it was trained on
    saved = assemble_cohort(load_frames(lake.path), _config(), assign=False).selection.to_dict()
    assert saved.pop("markers") == ["er", "pr", "her2"]
    cohort = assemble_cohort(load_frames(lake.path), _config(), selection=FeatureSelection.from_dict(saved),
                             assign=False)
    assert not [n for n in cohort.blocks["ehr"].names if n.startswith("marker:")]


def test_a_karnofsky_score_is_the_ecog_feature_where_no_ecog_is_known(tmp_path):
    """mCODE records performance status as ECOG (89247-1) or Karnofsky (89243-0): Karnofsky was no feature (a
    numeric one a lab column of its own). Converted as is standard (KPS 70 -> ECOG 2), it is the ECOG feature
    where no ECOG is known; an ECOG score is kept as it is."""
    kps = recoded("kps", "89243-0", {"valueInteger": 70})
    features = _ehr(one_patient(tmp_path / "kps", extra=(kps,)))
    assert features["ecog"] == 2.0 and not [n for n in features if "89243-0" in n]
    ecog = recoded("ecog", "89247-1", {"valueInteger": 1}, when="2019-12-01")
    assert _ehr(one_patient(tmp_path / "both", extra=(kps, ecog)))["ecog"] == 1.0
    answered = recoded("kps-answer", "89243-0", {"system": "http://loinc.org", "code": "LA-kps",
                                                 "display": "100 - Normal; no complaints; no evidence of disease"})
    assert _ehr(one_patient(tmp_path / "answer", extra=(answered,)))["ecog"] == 0.0
    scores = pd.Series([100, 90, 85, 80, 70, 60, 50, 40, 30, 10, 0, 110, -10, None])
    converted = karnofsky_as_ecog(scores).tolist()
    assert converted[:11] == [0.0, 1.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 5.0]
    assert np.isnan(converted[11:]).all()


def test_a_stage_group_of_another_kind_or_coded_by_snomed_is_the_stage(tmp_path, monkeypatch):
    """mCODE's stage group codes include LOINC 21914-7 (Stage group.other) and SNOMED 399390009, which were not
    read, and a stage given as a SNOMED CT code without a display read as unknown. Such a group is the stage where
    no clinical or pathological one is known."""
    snomed = "http://snomed.info/sct"
    other = recoded("stage-other", "21914-7", {"system": snomed, "code": "258219007"})  # Stage 2, no display
    assert _ehr(one_patient(tmp_path / "other", extra=(other,)))["stage"] == 2.0
    grouping = recoded("stage-tnm", "x", {"system": snomed, "code": "258228008"})  # Stage 4
    grouping["code"] = {"coding": [{"system": snomed, "code": "399390009"}]}
    lake = one_patient(tmp_path / "grouping", extra=(grouping,))
    assert _ehr(lake)["stage"] == 4.0
    monkeypatch.setattr(sv, "_run_config", lambda run_dir: _config())
    header = sv.patient_header(lake.path, KEY, None)
    # the stage, not the bare code 258228008
    assert (header["stage"], header["stage_kind"], sv.stage_label(header)) == ("4", "other", "Stage")
    # the pathological stage group (fixture: 3C) comes first
    both = one_patient(tmp_path / "both", "templates_fixtures_minimal-staging-pathologic-resource", extra=(other,))
    assert _ehr(both)["stage"] == 3.0
    clinical = recoded("stage-clinical", "21908-9", {"system": snomed, "code": "258215001"})  # Stage 1
    assert _ehr(one_patient(tmp_path / "clinical", extra=(clinical, grouping)))["stage"] == 1.0


def test_a_run_that_read_the_karnofsky_score_as_a_lab_keeps_that_column(tmp_path):
    """Before 9d52f6b a numeric Karnofsky score was a lab (lab:89243-0 columns, saved in the run's selection) and no
    ECOG: such a run's column must still hold the score (it was all NaN) and its ECOG stay as it was trained."""
    lake = one_patient(tmp_path, extra=(recoded("kps", "89243-0", {"valueInteger": 70}),))
    frames = load_frames(lake.path)
    saved = assemble_cohort(frames, _config(), assign=False).selection.to_dict()
    old = FeatureSelection.from_dict({**saved, "labs": ["89243-0"], "lab_units": {}})
    cohort = assemble_cohort(frames, _config(), selection=old, assign=False)
    features = dict(zip(cohort.blocks["ehr"].names, cohort.blocks["ehr"].values[0].tolist(), strict=True))
    assert features["lab:89243-0:last"] == 70.0 and np.isnan(features["ecog"])
