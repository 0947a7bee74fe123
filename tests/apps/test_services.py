"""The app's data services on small hand-made inputs (no Streamlit page)."""

from __future__ import annotations

import orjson
import pandas as pd
import pytest

from apps.streamlit import charts
from apps.streamlit import services as sv
from ingest.fhir.pipeline import ingest_fhir
from ingest.lake import Lake


def test_a_medication_without_a_code_or_name_is_labelled_as_such():
    when = pd.Timestamp("2020-01-01", tz="UTC")
    empty = pd.DataFrame({"display": [], "code": [], "onset": [], "performed": []}, dtype=object)
    record = {"conditions": empty, "procedures": empty,
              "medications": pd.DataFrame({"display": [None, "carboplatin"], "code": [None, None],
                                           "start": [when, when]}),
              "encounters": pd.DataFrame({"start": [], "end": []}, dtype=object),
              "observations": pd.DataFrame({"value_display": [], "value_code": [], "value": [], "unit": [],
                                            "effective": [], "display": [], "code": []}, dtype=object)}
    labels = sv.patient_events(record)["label"].tolist()
    assert sorted(labels) == ["carboplatin", "medication without a code"]


def test_a_lake_without_any_cancer_diagnosis_has_no_outcomes_rather_than_an_error(tmp_path):
    resources = [{"resourceType": "Patient", "id": "p1"},
                 {"resourceType": "Observation", "id": "o1", "status": "final", "subject": {"reference": "Patient/p1"},
                  "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
                  "effectiveDateTime": "2020-01-01", "valueQuantity": {"value": 13.0}}]
    export = tmp_path / "export.ndjson"
    export.write_bytes(b"\n".join(orjson.dumps(r) for r in resources) + b"\n")
    lake = Lake(tmp_path / "lake")
    ingest_fhir(lake, [export], workers=1)
    assert sv.observed_outcome(lake.path, None, "p1") is None


LOINC, SNOMED = "http://loinc.org", "http://snomed.info/sct"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


def _lake(tmp_path, resources: list[dict]) -> Lake:
    export = tmp_path / "export.ndjson"
    export.write_bytes(b"\n".join(orjson.dumps(r) for r in resources) + b"\n")
    lake = Lake(tmp_path / "lake")
    ingest_fhir(lake, [export], workers=1)
    return lake


def _observation(rid: str, category: str | None, code: str, display: str, value: dict, when: str = "2020-01-01",
                 patient: str = "p1") -> dict:
    return {"resourceType": "Observation", "id": rid, "status": "final", "subject": {"reference": f"Patient/{patient}"},
            **({"category": [{"coding": [{"system": CATEGORY, "code": category}]}]} if category else {}),
            "code": {"coding": [{"system": LOINC, "code": code, "display": display}]}, "effectiveDateTime": when,
            **value}


def _quantity(value: float, unit: str) -> dict:
    return {"valueQuantity": {"value": value, "unit": unit}}


def _coded(display: str) -> dict:
    return {"valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "1", "display": display}]}}


# a Synthea-like record: a lab, vital signs (a pain score, a blood pressure's components), survey and
# social-history answers (some with a unit), an oncology stage filed under "survey" (as the synthetic cohort does)
MIXED_OBSERVATIONS = [
    {"resourceType": "Patient", "id": "p1"},
    _observation("hb", "laboratory", "718-7", "Hemoglobin", _quantity(13.2, "g/dL")),
    _observation("pain", "vital-signs", "72514-3", "Pain severity", _quantity(4, "{score}")),
    {**_observation("bp", "vital-signs", "85354-9", "Blood pressure", {}),
     "component": [{"code": {"coding": [{"system": LOINC, "code": "8480-6", "display": "Systolic"}]},
                    "valueQuantity": {"value": 120, "unit": "mm[Hg]"}}]},
    _observation("phq", "survey", "44261-6", "PHQ-9 total score", _quantity(7, "{score}")),
    _observation("prapare", "survey", "93025-5", "Housing status", _coded("I have housing")),
    _observation("smoking", "social-history", "72166-2", "Tobacco smoking status", _coded("Never smoked")),
    _observation("stage", "survey", "21908-9", "Stage group.clinical Cancer", _coded("Stage 3A")),
    _observation("old", None, "2532-0", "LDH", _quantity(250, "U/L")),  # no category: counted by its unit
]


def test_lab_trends_are_laboratory_observations_only(tmp_path):
    lake = _lake(tmp_path, MIXED_OBSERVATIONS)
    labs = sv.lab_series(sv.patient_record(lake.path, "p1"))
    assert sorted(labs["lab"]) == ["Hemoglobin (g/dL)", "LDH (U/L)"]  # not the pain, PHQ-9 or blood pressure


def test_the_synthetic_cohort_labs_still_show(app_data):
    from ingest.reader import read_observations

    obs = read_observations(Lake(app_data.lake))
    key = obs.loc[obs["unit"].notna(), "patient_key"].iloc[0]
    labs = sv.lab_series(sv.patient_record(app_data.lake, key))
    assert len(labs) and set(obs.loc[obs["patient_key"] == key, "category"].dropna()) >= {"laboratory"}


def test_the_timeline_shows_labs_vitals_and_oncology_but_not_surveys(tmp_path):
    lake = _lake(tmp_path, MIXED_OBSERVATIONS)
    record = sv.patient_record(lake.path, "p1")
    shown = sv.patient_events(record).query("category == 'Observation'")["label"].tolist()
    assert sorted(shown) == ["Hemoglobin: 13.2 g/dL", "LDH: 250 U/L", "Pain severity: 4 {score}",
                             "Stage group.clinical Cancer: Stage 3A", "Systolic: 120 mm[Hg]"]
    assert sv.left_out_of_timeline(record) == {"survey": 2, "social-history": 1}


def test_repeated_medication_orders_become_one_span_per_drug_and_course():
    start = pd.Timestamp("2000-01-01", tz="UTC")
    monthly = [start + pd.Timedelta(days=30 * i) for i in range(1200)]  # a thousand refills of one drug
    courses = [start, start + pd.Timedelta(days=21), start + pd.Timedelta(days=800)]  # two courses of another
    empty = pd.DataFrame({"display": [], "code": [], "onset": [], "performed": []}, dtype=object)
    record = {"conditions": empty, "procedures": empty,
              "medications": pd.DataFrame({"display": ["metformin"] * 1200 + ["cisplatin"] * 3, "code": None,
                                           "start": monthly + courses}),
              "encounters": pd.DataFrame({"start": [], "end": []}, dtype=object),
              "observations": pd.DataFrame({"value_display": [], "value_code": [], "value": [], "unit": [],
                                            "effective": [], "display": [], "code": []}, dtype=object)}
    meds = sv.patient_events(record).query("category == 'Medication'")
    spans = {(r.label, r.count, r.when, r.end) for r in meds.itertuples()}
    assert spans == {("metformin", 1200, monthly[0], monthly[-1]), ("cisplatin", 2, courses[0], courses[1]),
                     ("cisplatin", 1, courses[2], courses[2])}
    figure = charts.timeline_figure(sv.patient_events(record))
    rows = {trace.y[0]: trace for trace in figure.data}
    assert set(rows) == {"metformin", "cisplatin"}  # one row per drug, not one marker per order
    assert sum(x is not None for x in rows["metformin"].x) == 2


def test_the_header_lists_every_cancer_condition_with_its_onset(tmp_path):
    ref = {"reference": "Patient/p1"}

    def condition(rid: str, code: str, display: str, onset: str) -> dict:
        return {"resourceType": "Condition", "id": rid, "subject": ref, "onsetDateTime": onset,
                "code": {"coding": [{"system": SNOMED, "code": code, "display": display}]}}

    lake = _lake(tmp_path, [{"resourceType": "Patient", "id": "p1", "birthDate": "1950-01-01"},
                            condition("lung", "254637007", "Non-small cell lung cancer (disorder)", "2015-03-01"),
                            condition("breast", "254837009", "Malignant neoplasm of breast (disorder)", "2019-06-01"),
                            condition("again", "254837009", "Malignant neoplasm of breast (disorder)", "2020-06-01"),
                            condition("history", "1", "History of malignant neoplasm of skin", "2010-01-01"),
                            condition("flu", "2", "Influenza", "2012-01-01"),
                            {**condition("crc", "363406005", "Malignant tumor of colon", "2021-01-01"),
                             "code": {"coding": [  # one diagnosis coded twice: one cancer
                                 {"system": SNOMED, "code": "363406005", "display": "Malignant tumor of colon"},
                                 {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C18.9",
                                  "display": "Malignant neoplasm of colon, unspecified"}]}}])
    header = sv.patient_header(lake.path, "p1", None)
    assert header["cancers"] == [
        {"display": "Non-small cell lung cancer (disorder)", "onset": pd.Timestamp("2015-03-01", tz="UTC")},
        {"display": "Malignant neoplasm of breast (disorder)", "onset": pd.Timestamp("2019-06-01", tz="UTC")},
        {"display": "Malignant tumor of colon", "onset": pd.Timestamp("2021-01-01", tz="UTC")}]


def test_coverage_counts_patients_by_what_their_record_holds(tmp_path):
    lake = _lake(tmp_path, [{"resourceType": "Patient", "id": "p1"}, {"resourceType": "Patient", "id": "p2"},
                            _observation("hb", "laboratory", "718-7", "Hemoglobin", _quantity(13.2, "g/dL"))])
    summary = sv.status(lake.path).coverage_summary().set_index("modality")["patients"].to_dict()
    assert summary == {"fhir": 2, "fhir:conditions": 0, "fhir:observations": 1, "fhir:medications": 0,
                       "fhir:procedures": 0, "fhir:encounters": 0}


def test_the_timeline_leaves_social_findings_out_and_draws_a_repeated_condition_once(tmp_path):
    """Synthea records social determinants as Conditions at every check-up (212 "Full-time employment (finding)"
    in synthea-bulk-10); the timeline keeps the clinical problems, each once per episode, and counts the rest."""
    ref = {"reference": "Patient/p1"}
    icd10 = "http://hl7.org/fhir/sid/icd-10-cm"

    def condition(rid: str, code: str, display: str, onset: str, *more: dict) -> dict:
        return {"resourceType": "Condition", "id": rid, "subject": ref, "onsetDateTime": onset,
                "category": [{"coding": [{"code": "encounter-diagnosis"}]}],  # as Synthea writes for all
                "code": {"coding": [{"system": SNOMED, "code": code, "display": display}, *more]}}

    resources = [{"resourceType": "Patient", "id": "p1"},
                 *(condition(f"job{y}", "160903007", "Full-time employment (finding)", f"{y}-01-01")
                   for y in range(2000, 2010)),
                 condition("stress", "73595000", "Stress (finding)", "2005-01-01"),
                 condition("school", "224299000", "Received higher education (finding)", "1995-01-01"),
                 condition("alone", "422650009", "Social isolation (finding)", "2006-01-01"),
                 # clinical findings and disorders stay, even those that look alike
                 condition("incontinence", "22", "Stress incontinence (finding)", "2007-01-01"),
                 condition("tired", "84229001", "Fatigue (finding)", "2008-01-01"),
                 condition("bmi", "162864005", "Body mass index 30+ - obesity (finding)", "2003-01-01"),
                 # a sinusitis re-recorded three times in a season, then once three years later
                 *(condition(f"sinus{i}", "444814009", "Viral sinusitis (disorder)", day)
                   for i, day in enumerate(["2001-01-01", "2001-02-01", "2001-06-01", "2004-06-01"])),
                 # a cancer coded in SNOMED and ICD-10 is one condition, and shows
                 condition("lung", "254637007", "Non-small cell lung cancer (disorder)", "2009-03-01",
                           {"system": icd10, "code": "C34.90", "display": "Malignant neoplasm of lung"})]
    lake = _lake(tmp_path, resources)
    record = sv.patient_record(lake.path, "p1")
    marks = sv.patient_events(record).query("category == 'Condition'")
    assert sorted(marks["label"]) == ["Body mass index 30+ - obesity (finding)", "Fatigue (finding)",
                                      "Non-small cell lung cancer (disorder)", "Stress incontinence (finding)",
                                      "Viral sinusitis (disorder)", "Viral sinusitis (disorder)"]
    sinus = marks[marks["label"] == "Viral sinusitis (disorder)"].sort_values("when")
    assert sinus["count"].tolist() == [3, 1]
    assert sinus["when"].iloc[0] == pd.Timestamp("2001-01-01", tz="UTC")
    assert sinus["end"].iloc[0] == pd.Timestamp("2001-06-01", tz="UTC")
    assert sv.conditions_left_out(record) == {"social history": 13, "repeats": 2}
    hover = [t for trace in charts.timeline_figure(sv.patient_events(record)).data if trace.y[0] == "Condition"
             for t in trace.text]
    assert any("Viral sinusitis (disorder) (recorded 3 times, first here, last 2001-06-01)" in t for t in hover)


def test_a_cancer_condition_shows_on_the_timeline_whatever_its_display():
    """The social-history rule never hides a condition the run's index rule calls a cancer (here by its code)."""
    when = pd.Timestamp("2020-01-01", tz="UTC")
    empty = pd.DataFrame({"display": [], "code": [], "performed": []}, dtype=object)
    record = {"conditions": pd.DataFrame({"system": SNOMED, "code": ["35917007", "160903007"],
                                          "display": ["Stress (finding)", "Stress (finding)"],
                                          "onset": [when, when + pd.Timedelta(days=1)],
                                          "resource_id": ["a", "b"]}),
              "procedures": empty, "medications": pd.DataFrame({"display": [], "code": [], "start": []}),
              "encounters": pd.DataFrame({"start": [], "end": []}, dtype=object),
              "observations": pd.DataFrame({"value_display": [], "value_code": [], "value": [], "unit": [],
                                            "effective": [], "display": [], "code": []}, dtype=object)}
    marks = sv.patient_events(record).query("category == 'Condition'")
    assert marks["when"].tolist() == [when]  # the one with an adenocarcinoma code, not the other
    assert sv.conditions_left_out(record) == {"social history": 1, "repeats": 0}


def test_outcomes_of_curated_labels_outside_the_default_config_show_without_a_run(tmp_path):
    """No run chosen (the default config): curated treatments and diagnoses the config does not list are shown
    as they are, not an error that blanked the survival figure and the observed outcome."""
    from tests.fusion.test_curated_lakes import curated_lake

    lake = curated_lake(tmp_path, n=12, labels={
        "time": [100.0 + i for i in range(12)], "event": [i % 2 for i in range(12)],
        "diagnosis": ["Lung Adenocarcinoma"] * 12, "treatment": ["chemo", "io"] * 6, "response": [1, 0, 0] * 4})
    assert sv.observed_outcome(lake, None, "p001") == {"time": 101.0, "event": True}
    assert sv.observed_response(lake, None, "p001") == {"treatment": "io", "responded": False}
    assert sv.cohort_km(lake, None)["n"].iloc[0] == 12


def test_survival_at_one_and_two_years_is_the_predictions_value_at_those_days(app_data):
    """The Risk tab reads the curve at 365.25 and 730.5 days: its grid holds day 365 and 730, so it shows S at
    the horizon (``at_horizons``, what ``tumorboard predict`` prints), not S of a grid point weeks earlier."""
    from ingest import reader

    run = str(app_data.runs / "tiny")
    for key in sorted(reader.read_images(Lake(app_data.lake))["patient_key"])[:3]:
        survival = sv.prediction(run, app_data.lake, key)["survival"]
        assert survival["times"][-1] > 730.5  # both horizons are on the curve
        for years, day in ((1, "365"), (2, "730")):
            shown = sv.survival_at(survival, years * sv.DAYS_PER_YEAR)
            assert shown == pytest.approx(survival["at_horizons"][day], abs=1e-9)
            assert day in {f"{t:g}" for t in survival["times"]}


def test_the_treatment_of_curated_labels_is_a_treatment_on_record():
    """A cBioPortal study's patient (``--treatment DRUG_TYPE``) has no medication orders: the labels' treatment is
    the one on record, so the Treatment tab does not say "No treatment on record" next to the observed response
    to it."""
    record = {"medications": pd.DataFrame({"code": [], "display": [], "start": []}, dtype=object),
              "labels": pd.DataFrame({"treatment": ["Combo"], "response": [False]})}
    assert sv.received_treatments(record, None) == {"Combo"}
    record["labels"] = pd.DataFrame({"treatment": [None], "response": [None]}, dtype=object)
    assert sv.received_treatments(record, None) == set()


def test_only_a_cbioportal_day_zero_without_dated_records_is_shown_without_its_date():
    """2000-01-01 (ingest.cbioportal.INDEX_DATE) is a placeholder only where nothing else of the record is dated;
    a real index date is shown as a date."""
    from ingest.cbioportal import INDEX_DATE

    empty = pd.DataFrame({"patient_key": []}, dtype=object)
    record = {kind: empty for kind in sv.DATED_KINDS}
    day_zero = pd.Timestamp(INDEX_DATE, tz="UTC")
    assert sv._day_zero_only(record, day_zero)
    assert not sv._day_zero_only(record, pd.Timestamp("2017-03-02", tz="UTC"))
    assert not sv._day_zero_only({**record, "conditions": pd.DataFrame({"patient_key": ["p"]})}, day_zero)
    header = {"index_date": day_zero, "index_curated": True, "day_zero_only": True}
    assert "2000" not in sv.index_words(header) and "day 0" in sv.index_words(header)
    assert sv.index_words({**header, "day_zero_only": False}) == "index date 2000-01-01"
    assert sv.index_words({**header, "index_date": None}) is None


def test_the_model_card_names_modalities_endpoints_and_metrics_in_words():
    """A cBioPortal run (clinical + clinical_sample features, survival and response heads, no diagnosis head): the
    card says "tumour sample attributes", "overall survival (os)", "C-index (Harrell)", and lists no diagnosis
    classes (run.json keeps the config's default ones although the head is off)."""
    assert sv.modality_label("features:clinical_sample") == sv.modality_label("clinical_sample") \
        == "tumour sample attributes"
    assert sv.modality_label("clinical") == "clinical attributes" and sv.modality_label("ehr") == "clinical record"
    assert sv.modality_label("features:unknown") == "features:unknown"
    meta = {"spec": {"n_classes": None, "survival": True}, "survival_endpoint": "os",
            "diagnosis_classes": ["benign", "adenocarcinoma", "squamous"]}
    assert sv.card_heads(meta) == {"survival_endpoint": "overall survival (os)", "diagnosis_classes": []}
    meta["spec"] = {"n_classes": 3, "survival": False}
    assert sv.card_heads(meta) == {"survival_endpoint": None, "diagnosis_classes": ["benign", "adenocarcinoma",
                                                                                   "squamous"]}
    assert sv.card_heads({"survival_endpoint": "dss"})["survival_endpoint"] == "dss"
    assert [sv.metric_label(k) for k in ("c_index_harrell", "td_auc_730d", "calibration_100d", "ece", "new_key")] \
        == ["C-index (Harrell)", "time-dependent AUC at 2 years", "calibration error at 100 days",
            "expected calibration error (ECE)", "new_key"]


def test_metric_label_names_fractional_horizons_in_words():
    """fusion.evaluate tags horizons with ``f"{h:g}d"``: a configured 365.25-day horizon is ``td_auc_365.25d``,
    five such years ``calibration_1826.25d``; they are years in words too, not the raw key."""
    assert sv.metric_label("td_auc_365.25d") == "time-dependent AUC at 1 year"
    assert sv.metric_label("calibration_1826.25d") == "calibration error at 5 years"
    assert sv.metric_label("td_auc_730.5d") == "time-dependent AUC at 2 years"
    assert sv.metric_label("td_auc_182.5d") == "time-dependent AUC at 182.5 days"
    assert sv.metric_label("td_auc_1095d") == "time-dependent AUC at 3 years"
    assert sv.metric_label("calibration_100d") == "calibration error at 100 days"


def test_a_fhir_patient_whose_curated_index_date_is_2000_01_01_keeps_its_date():
    """A FHIR patient (a Patient resource: a birth date, maybe a death date) whose curated index date really is
    2000-01-01, with no other dated record: not a cBioPortal study's day 0 (such a study writes no Patient), so
    the header shows the date and does not say the patient has no calendar dates."""
    from ingest.cbioportal import INDEX_DATE

    empty = pd.DataFrame({"patient_key": []}, dtype=object)
    record = {kind: empty for kind in sv.DATED_KINDS}
    day_zero = pd.Timestamp(INDEX_DATE, tz="UTC")
    assert sv._day_zero_only({**record, "patients": empty}, day_zero)
    person = pd.DataFrame({"patient_key": ["p"], "birth_date": [pd.Timestamp("1950-05-01", tz="UTC")],
                           "death_date": [pd.Timestamp("2003-02-01", tz="UTC")]})
    assert not sv._day_zero_only({**record, "patients": person}, day_zero)


def test_the_header_reads_an_ecog_coded_as_a_loinc_answer_as_the_cohort_does(tmp_path):
    """ECOG as mCODE writes it (valueInteger) or as a LOINC answer (LA9624-3: 2), as the cohort reads both; the header
    showed only a number (a coded ECOG was n/a)."""
    cancer = {"resourceType": "Condition", "id": "c", "subject": {"reference": "Patient/p1"},
              "onsetDateTime": "2020-01-01",
              "code": {"coding": [{"system": SNOMED, "code": "254637007", "display": "Non-small cell lung cancer"}]}}
    coded = {"valueCodeableConcept": {"coding": [{"system": LOINC, "code": "LA9624-3"}]}}
    lake = _lake(tmp_path, [{"resourceType": "Patient", "id": "p1"}, {"resourceType": "Patient", "id": "p2"},
                            cancer, {**cancer, "id": "c2", "subject": {"reference": "Patient/p2"}},
                            _observation("e1", "survey", "89247-1", "ECOG", coded, "2019-12-20"),
                            _observation("e2", "survey", "89247-1", "ECOG", {"valueInteger": 1}, "2019-12-20", "p2")])
    assert sv.patient_header(lake.path, "p1", None)["ecog"] == 2.0
    assert sv.patient_header(lake.path, "p2", None)["ecog"] == 1.0


def test_the_header_reads_a_karnofsky_score_as_ecog_where_no_ecog_is_known_as_the_cohort_does(tmp_path):
    """A patient with a Karnofsky score (89243-0) and no ECOG has ECOG 2 (KPS 70) as a model input: the header showed
    n/a; an ECOG, where known, still wins."""
    cancer = {"resourceType": "Condition", "id": "c", "subject": {"reference": "Patient/p1"},
              "onsetDateTime": "2020-01-01",
              "code": {"coding": [{"system": SNOMED, "code": "254637007", "display": "Non-small cell lung cancer"}]}}
    lake = _lake(tmp_path, [{"resourceType": "Patient", "id": "p1"}, {"resourceType": "Patient", "id": "p2"},
                            cancer, {**cancer, "id": "c2", "subject": {"reference": "Patient/p2"}},
                            _observation("k1", "survey", "89243-0", "Karnofsky", {"valueInteger": 70}, "2019-12-20"),
                            _observation("k2", "survey", "89243-0", "Karnofsky", {"valueInteger": 70}, "2019-12-20",
                                         "p2"),
                            _observation("e2", "survey", "89247-1", "ECOG", {"valueInteger": 1}, "2019-12-01", "p2")])
    assert sv.patient_header(lake.path, "p1", None)["ecog"] == 2.0
    assert sv.patient_header(lake.path, "p2", None)["ecog"] == 1.0


def test_outcomes_of_a_lake_whose_labels_are_of_another_endpoint_show_on_it_without_a_run(tmp_path):
    """A cBioPortal study ingested with --endpoint PFS holds PFS labels only: with no run chosen the page showed
    no follow-up at all (the default config's endpoint is os) and did not say why."""
    from ingest.tables import ingest_labels
    from tests.fusion.test_curated_lakes import curated_lake

    lake = curated_lake(tmp_path, n=12, labels={"time": [100.0 + i for i in range(12)],
                                                "event": [i % 2 for i in range(12)]})
    ingest_labels(Lake(lake), tmp_path / "labels.csv", endpoint="PFS")
    assert sv.outcome_endpoint(lake, None) == "pfs"
    assert sv.observed_outcome(lake, None, "p001") == {"time": 101.0, "event": True}
    assert sv.cohort_km(lake, None)["n"].iloc[0] == 12
