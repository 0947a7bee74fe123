"""Cohort assembly on small hand-made frames: index dates, leakage, features, targets, splits and config."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from fusion.cohort import CohortError, LakeFrames, assemble_cohort, index_dates, parse_smoking, parse_stage
from fusion.config import ConfigError, IndexConfig, apply_overrides, load_config
from fusion.splits import assign_splits, kfold_assignments
from ingest.synth import codes as c

LDH, CEA = c.LABS["ldh"][0], c.LABS["cea"][0]
ADENO, SQUAM = c.DIAGNOSIS_SNOMED["adenocarcinoma"][0], c.DIAGNOSIS_SNOMED["squamous"][0]
HTN = c.COMORBIDITIES["hypertension"][0]


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def obs(key, code, when, value=None, vcode=None, vdisplay=None, system=c.LOINC) -> dict:
    return {"patient_key": key, "system": system, "code": code, "display": f"obs {code}", "value": value,
            "unit": None, "value_system": None, "value_code": vcode, "value_display": vdisplay,
            "effective": ts(when)}


def cond(key, code, display, when) -> dict:
    return {"patient_key": key, "system": c.SNOMED, "code": code, "display": display, "onset": ts(when)}


def med(key, code, when) -> dict:
    return {"patient_key": key, "system": c.RXNORM, "code": code, "display": c.DRUGS.get(code, code),
            "start": ts(when)}


def base_rows() -> dict[str, list[dict]]:
    """Patients a (adenocarcinoma 2020-01-01), b (regex-only cancer 2021-03-01, dies), c (no cancer),
    d (cancer 2020-05-01 but labels say index 2020-02-01 and give every target)."""
    return {
        "patients": [
            {"patient_key": "a", "mrn": "1", "birth_date": ts("1960-01-01"), "sex": "male", "death_date": pd.NaT},
            {"patient_key": "b", "mrn": "2", "birth_date": ts("1950-07-01"), "sex": "female",
             "death_date": ts("2022-03-01")},
            {"patient_key": "c", "mrn": "3", "birth_date": ts("1970-01-01"), "sex": "female", "death_date": pd.NaT},
            {"patient_key": "d", "mrn": "4", "birth_date": ts("1955-01-01"), "sex": "male", "death_date": pd.NaT},
        ],
        "conditions": [
            cond("a", ADENO, "Adenocarcinoma of lung (disorder)", "2020-01-01"),
            cond("a", "999", "Lung cancer NOS", "2020-06-01"),
            cond("b", "12345", "Malignant neoplasm of lung", "2021-03-01"),
            cond("b", HTN, "Essential hypertension (disorder)", "2015-01-01"),
            cond("c", HTN, "Essential hypertension (disorder)", "2015-01-01"),
            cond("d", SQUAM, "Squamous cell carcinoma of lung (disorder)", "2020-05-01"),
        ],
        "observations": [
            obs("a", LDH, "2018-06-01", 100.0),  # outside the 365-day window
            obs("a", LDH, "2019-01-06", 200.0),
            obs("a", LDH, "2019-07-05", 220.0),
            obs("a", LDH, "2019-12-31", 240.0),
            obs("b", CEA, "2021-01-01", 5.0),
            obs("b", LDH, "2021-02-01", 300.0),
            obs("d", LDH, "2020-01-15", 250.0),
            obs("a", c.ECOG_LOINC[0], "2020-01-01", 1.0),
            obs("a", c.STAGE_LOINC[0], "2020-01-01", None, "3A", "Stage IIIA", system=c.AJCC),
            obs("a", c.SMOKING_LOINC[0], "2020-01-01", None, c.SMOKING_SNOMED["current"][0], "Smoker"),
            obs("b", c.SMOKING_LOINC[0], "2021-03-01", None, "x", "Never smoked tobacco"),
            obs("a", c.DISEASE_STATUS_LOINC[0], "2019-06-01", None, c.DISEASE_STATUS["progressing"][0]),
            obs("a", c.DISEASE_STATUS_LOINC[0], "2020-04-01", None, c.DISEASE_STATUS["stable"][0]),
            obs("a", c.DISEASE_STATUS_LOINC[0], "2020-06-01", None, c.DISEASE_STATUS["progressing"][0]),
            obs("a", c.DISEASE_STATUS_LOINC[0], "2020-09-01", None, c.DISEASE_STATUS["progressing"][0]),
            obs("a", c.RECIST_LOINC[0], "2020-01-10", None, c.RECIST["SD"][0]),  # before the treatment
            obs("a", c.RECIST_LOINC[0], "2020-03-25", None, c.RECIST["PR"][0]),
        ],
        "medications": [med("a", "1547545", "2019-12-01"), med("a", "1721560", "2020-01-20")],
        "encounters": [{"patient_key": "a", "start": ts("2020-12-31"), "end": ts("2021-01-01")}],
        "gene_status": [{"patient_key": "a", "gene": "EGFR", "mutated": True},
                        {"patient_key": "a", "gene": "KRAS", "mutated": False},
                        {"patient_key": "b", "gene": "KRAS", "mutated": True}],
        "tmb": [{"patient_key": "a", "tmb_per_mb": 3.0}, {"patient_key": "a", "tmb_per_mb": 9.0}],
        "labels": [{"patient_key": "d", "split": "test", "diagnosis": "squamous", "time": 100.0, "event": True,
                    "treatment": "chemo", "response": False, "index_date": ts("2020-02-01")}],
        "features": [
            {"patient_key": "a", "modality": "pathology", "feature": "grade", "value": 2.0, "value_str": None},
            {"patient_key": "a", "modality": "pathology", "feature": "subtype", "value": None, "value_str": "acinar"},
            {"patient_key": "b", "modality": "pathology", "feature": "subtype", "value": None, "value_str": "solid"},
        ],
    }


def frames_of(rows: dict[str, list[dict]]) -> LakeFrames:
    return LakeFrames(**{k: pd.DataFrame(v) for k, v in rows.items()})


CONFIG = load_config(None, ["data.ehr.top_k_labs=5", "split.val_fraction=0.0", "split.test_fraction=0.0"])


def column(cohort, name: str) -> np.ndarray:
    return cohort.X[:, cohort.feature_names.index(name)]


def test_index_date_rule():
    frames = frames_of(base_rows())
    index, code = index_dates(frames.conditions, frames.labels, CONFIG.data.index)
    assert index.to_dict() == {"a": ts("2020-01-01"), "b": ts("2021-03-01"), "d": ts("2020-02-01")}
    assert code["a"] == ADENO and code["b"] == "12345"  # b found by the display regex
    no_regex = IndexConfig(cancer_display_regex=None)
    index, _ = index_dates(frames.conditions, frames.labels.iloc[:0], no_regex)
    assert sorted(index.index) == ["a", "d"] and index["d"] == ts("2020-05-01")
    cohort = assemble_cohort(frames, CONFIG)
    assert cohort.patient_keys.tolist() == ["a", "b", "d"] and cohort.summary["without_index_date"] == 1


def test_the_index_code_is_the_index_conditions_own():
    """c's first cancer by display has no code: its index code is none, not the code of c's later condition."""
    rows = base_rows()
    rows["conditions"] += [{**cond("c", None, "Carcinoma of lung", "2016-01-01"), "system": None},
                           cond("c", "94222008", "Secondary malignant neoplasm of bone", "2017-01-01")]
    index, code = index_dates(frames_of(rows).conditions, frames_of(rows).labels.iloc[:0], CONFIG.data.index)
    assert index["c"] == ts("2016-01-01") and pd.isna(code["c"])


def test_a_history_is_not_a_diagnosis_and_listed_codes_come_before_the_display_rule():
    rows = base_rows()
    rows["conditions"] += [cond("a", "429740004", "Family history of cancer", "2010-01-01"),
                           cond("c", "92546004", "Personal history of malignant neoplasm", "2012-01-01"),
                           {**cond("c", ADENO, "Left ankle sprain", "2012-01-01"), "system": "urn:local-codes"},
                           cond("d", "999", "Malignant tumour of lung", "2019-01-01")]
    frames = frames_of(rows)
    index, code = index_dates(frames.conditions, frames.labels.iloc[:0], CONFIG.data.index)
    assert index.to_dict() == {"a": ts("2020-01-01"), "b": ts("2021-03-01"), "d": ts("2020-05-01")}
    assert code["d"] == SQUAM  # the listed code, not the earlier display-only match
    bare = IndexConfig(cancer_codes=[ADENO, SQUAM])  # a bare code matches in any system, the local one too
    assert "c" in index_dates(frames.conditions, frames.labels.iloc[:0], bare)[0]
    snomed_oid = "urn:oid:2.16.840.1.113883.6.96"
    rows["conditions"] += [{**cond("c", ADENO, "Adeno, lung", "2013-01-01"), "system": snomed_oid},
                           {**cond("e", ADENO, "NSCLC adeno", "2014-01-01"), "system": None}]
    frames = frames_of(rows)
    index, _ = index_dates(frames.conditions, frames.labels.iloc[:0], CONFIG.data.index)
    assert index["c"] == ts("2013-01-01") and index["e"] == ts("2014-01-01")  # SNOMED's OID; no system given


def test_the_index_conditions_other_codings_are_no_features_and_recorded_date_stands_in_for_onset():
    rows = base_rows()
    rows["conditions"][0]["resource_id"] = "a-cancer"  # a's adenocarcinoma, also coded in ICD-10 below
    rows["conditions"].append({**cond("a", "C34.90", None, "2020-01-01"), "system": "http://hl7.org/fhir/sid/icd-10",
                               "resource_id": "a-cancer"})
    rows["conditions"].append({**cond("c", ADENO, "Adenocarcinoma of lung (disorder)", "2019-05-01"),
                               "onset": pd.NaT, "recorded": ts("2019-05-01")})
    config = apply_overrides(CONFIG, ["data.index.grace_days=1"])
    cohort = assemble_cohort(frames_of(rows), config)
    assert cohort.patient_keys.tolist() == ["a", "b", "c", "d"]  # c: indexed on its recordedDate
    assert "cond:C34.90" not in cohort.feature_names  # would give the diagnosis away


def test_a_comorbidity_without_an_onset_counts_from_its_recorded_date():
    """A Condition with only a recordedDate (onsetAge, onsetString or no onset: common outside Synthea) is a
    comorbidity from when it was recorded, as the index date rule reads it; recorded after the cutoff it is none."""
    rows = base_rows()
    lipid = "55822004"
    rows["conditions"] += [{**cond(k, lipid, "Hyperlipidemia", "2015-01-01"), "onset": pd.NaT, "recorded": ts(when)}
                           for k, when in (("a", "2018-03-01"), ("b", "2021-06-01"))]  # b's: after b's index
    cohort = assemble_cohort(frames_of(rows), CONFIG)  # rows a, b, d
    assert column(cohort, f"cond:{lipid}").tolist() == [1.0, 0.0, 0.0]


def test_lab_features_hand_computed():
    # ECOG, stage and smoking are recorded at a's index time: one day of grace admits them
    cohort = assemble_cohort(frames_of(base_rows()), apply_overrides(CONFIG, ["data.index.grace_days=1"]))
    a = 0
    assert column(cohort, f"lab:{LDH}:last")[a] == 240.0
    assert column(cohort, f"lab:{LDH}:mean_365d")[a] == pytest.approx(220.0)
    t = np.array([-360.0, -180.0, -1.0]) / 365.25
    expected = np.polyfit(t, [200.0, 220.0, 240.0], 1)[0]
    assert column(cohort, f"lab:{LDH}:slope_365d")[a] == pytest.approx(expected, rel=1e-5)
    assert np.isnan(column(cohort, f"lab:{CEA}:last")[a]) and column(cohort, f"lab:{CEA}:missing")[a] == 1.0
    assert column(cohort, f"lab:{CEA}:last")[1] == 5.0 and np.isnan(column(cohort, f"lab:{LDH}:slope_365d")[1])
    assert column(cohort, "age")[a] == pytest.approx(60.0, abs=0.01)
    assert column(cohort, "sex_male").tolist() == [1.0, 0.0, 1.0]
    assert column(cohort, "ecog")[a] == 1.0 and column(cohort, "stage")[a] == 3.0
    assert column(cohort, "smoking")[:2].tolist() == [2.0, 0.0]  # code map, then display fallback
    assert column(cohort, f"cond:{HTN}").tolist() == [0.0, 1.0, 0.0]
    assert not any(n.startswith("cond:") and n[5:] in (ADENO, "999", "12345") for n in cohort.feature_names)
    assert column(cohort, "med:1547545").tolist() == [1.0, 0.0, 0.0]  # prior medication only
    assert "med:1721560" not in cohort.feature_names  # started after the index date


def test_the_pathological_stage_group_is_read_where_no_clinical_one_is_known_before_the_cutoff():
    """mCODE records the pathological stage group (LOINC 21902-2, SNOMED 399588009), and STU3+ codes the clinical
    one by SNOMED 399537006 too; only LOINC 21908-9 was read. a's clinical stage wins over its pathological one;
    b's pathological stage (lowercase) is its stage; d's, recorded after the cutoff, is no input."""
    rows = base_rows()
    rows["observations"] += [
        obs("a", "21902-2", "2019-12-15", None, "4", "Stage IV"),
        obs("b", "21902-2", "2021-02-15", None, None, "stage iib"),
        obs("d", "399588009", "2020-03-01", None, "4", "Stage IV", system=c.SNOMED)]
    config = apply_overrides(CONFIG, ["data.index.grace_days=1"])
    stage = column(assemble_cohort(frames_of(rows), config), "stage")  # rows a, b, d
    assert stage[:2].tolist() == [3.0, 2.0] and np.isnan(stage[2])
    rows["observations"].append(obs("d", "399537006", "2020-01-20", None, None, "Stage IB", system=c.SNOMED))
    assert column(assemble_cohort(frames_of(rows), config), "stage")[2] == 1.0


def test_ecog_coded_as_a_loinc_answer_or_a_snomed_code_is_its_score_or_unknown():
    """ECOG 89247-1 coded with its LOINC answers (LA9622-7 = 0 ... LA9627-6 = 5) is that score, not the 9622 of
    the code's digits; a SNOMED code or a display's '50% of waking hours' is no score (0-5)."""
    rows = base_rows()
    ecog = c.ECOG_LOINC[0]
    rows["observations"] += [
        {**obs("a", ecog, "2019-12-31", None, "LA9624-3", "Ambulatory and capable of all selfcare"),
         "value_system": c.LOINC},
        {**obs("b", ecog, "2021-02-01", None, "423053003", "ECOG performance status - grade 3"),
         "value_system": c.SNOMED},
        obs("d", ecog, "2020-01-20", None, None, "Capable of only limited selfcare, in bed over 50% of waking hours")]
    with warnings.catch_warnings():  # pandas 3 warns that an Int64 fill of float64 values will raise
        warnings.simplefilter("error", pd.errors.Pandas4Warning)
        cohort = assemble_cohort(frames_of(rows), CONFIG)  # rows a, b, d
    assert column(cohort, "ecog")[:2].tolist() == [2.0, 3.0] and np.isnan(column(cohort, "ecog")[2])


def test_condition_and_medication_codes_keep_their_system():
    rows = base_rows()
    local = "http://hospital.example/codes"  # a local code system that reuses SNOMED's number for another thing
    rows["conditions"].append({**cond("a", HTN, "Local problem 38341003", "2019-01-01"), "system": local})
    rows["conditions"].append({**cond("d", HTN, "Essential hypertension (disorder)", "2019-01-01"),
                               "system": "urn:oid:2.16.840.1.113883.6.96"})  # SNOMED by its OID
    rows["medications"].append({**med("a", "1547545", "2019-06-01"), "system": local})
    cohort = assemble_cohort(frames_of(rows), CONFIG)
    assert cohort.patient_keys.tolist() == ["a", "b", "d"]
    assert column(cohort, f"cond:{c.SNOMED}|{HTN}").tolist() == [0.0, 1.0, 1.0]
    assert column(cohort, f"cond:{local}|{HTN}").tolist() == [1.0, 0.0, 0.0]
    assert column(cohort, f"med:{c.RXNORM}|1547545").tolist() == [1.0, 0.0, 0.0]
    assert column(cohort, f"med:{local}|1547545").tolist() == [1.0, 0.0, 0.0]
    assert sorted(cohort.selection.conditions) == sorted([f"{c.SNOMED}|{HTN}", f"{local}|{HTN}"])
    # a listed code: 'system|code' in that system only (its OID counts), a bare code (a saved run's) in any
    qualified = assemble_cohort(frames_of(rows), apply_overrides(CONFIG, [
        f"data.ehr.condition_codes=['urn:oid:2.16.840.1.113883.6.96|{HTN}']"]))
    assert column(qualified, f"cond:{HTN}").tolist() == [0.0, 1.0, 1.0]
    bare = assemble_cohort(frames_of(rows), apply_overrides(CONFIG, [f"data.ehr.condition_codes=['{HTN}']"]))
    assert column(bare, f"cond:{HTN}").tolist() == [1.0, 1.0, 1.0]


def test_a_code_recorded_without_a_system_joins_that_codes_column():
    """A row without a system matches every 'system|code' of its code (coded_as), so it counts towards those
    columns and is no column of its own: a bare-code column would match the code in every system, the same
    patients as the qualified one (two identical columns, one top-K place lost)."""
    rows = base_rows()
    rows["conditions"].append({**cond("a", HTN, "Hypertension", "2019-01-01"), "system": None})
    rows["medications"].append({**med("b", "1547545", "2021-01-01"), "system": None})
    cohort = assemble_cohort(frames_of(rows), CONFIG)
    assert cohort.selection.conditions == [f"{c.SNOMED}|{HTN}"]
    assert column(cohort, f"cond:{HTN}").tolist() == [1.0, 1.0, 0.0]  # a (no system) and b (SNOMED)
    assert cohort.selection.medications == [f"{c.RXNORM}|1547545"]
    assert column(cohort, "med:1547545").tolist() == [1.0, 1.0, 0.0]
    rows["conditions"].append({**cond("a", "77777", "Local problem", "2019-01-01"), "system": None})
    alone = assemble_cohort(frames_of(rows), CONFIG)  # a code only ever recorded without a system: a bare entry
    assert "77777" in alone.selection.conditions and column(alone, "cond:77777").tolist() == [1.0, 0.0, 0.0]


def test_a_lab_coded_in_loinc_by_its_oid_is_a_lab():
    """LOINC named by its OID (C-CDA conversions) is data.ehr.lab_system all the same, as for condition codes."""
    rows = base_rows()
    rows["observations"].append(obs("d", CEA, "2020-01-10", 4.0, system="urn:oid:2.16.840.1.113883.6.1"))
    cohort = assemble_cohort(frames_of(rows), CONFIG)  # rows a, b, d
    assert column(cohort, f"lab:{CEA}:last")[2] == 4.0


def test_a_lab_in_another_unit_is_left_out_and_counted():
    rows = base_rows()
    creatinine = "2160-0"
    for key, when, value, unit in (("a", "2019-10-01", 1.0, "mg/dL"), ("a", "2019-11-01", 88.0, "umol/L"),
                                   ("b", "2021-01-01", 1.2, "mg/dl"), ("d", "2020-01-10", 0.9, None)):
        rows["observations"].append({**obs(key, creatinine, when, value), "unit": unit})
    config = apply_overrides(CONFIG, [f"data.ehr.lab_codes=[{creatinine}]"])
    cohort = assemble_cohort(frames_of(rows), config)
    assert column(cohort, f"lab:{creatinine}:last").tolist() == pytest.approx([1.0, 1.2, 0.9])
    assert column(cohort, f"lab:{creatinine}:mean_365d")[0] == 1.0  # not (1 + 88) / 2
    assert cohort.summary["lab_values_other_unit"] == 1
    assert cohort.selection.lab_units == {creatinine: "mg/dl"}
    external = base_rows()  # another site, mostly umol/L: read in the training's unit all the same
    for key, value, unit in (("a", 90.0, "umol/L"), ("b", 100.0, "umol/L"), ("d", 1.1, "mg/dL")):
        external["observations"].append({**obs(key, creatinine, "2019-12-15" if key != "b" else "2021-01-01",
                                               value), "unit": unit})
    again = assemble_cohort(frames_of(external), config, selection=cohort.selection)
    last = column(again, f"lab:{creatinine}:last")
    assert np.isnan(last[:2]).all() and last[2] == pytest.approx(1.1)


def test_lab_after_index_changes_no_feature():
    config = load_config(None, ["data.ehr.top_k_labs=1", "data.ehr.top_k_conditions=1",
                                "data.ehr.top_k_medications=1", "split.val_fraction=0.0", "split.test_fraction=0.0"])
    before = assemble_cohort(frames_of(base_rows()), config)
    rows = base_rows()
    rows["observations"] += [obs("a", LDH, "2020-03-01", 999.0), obs("b", LDH, "2021-03-02", 1.0),
                             obs("a", c.ECOG_LOINC[0], "2020-02-01", 4.0)]
    rows["observations"] += [obs(k, "9999-9", "2022-01-01", 1.0) for k in "abcd"]  # would top coverage
    rows["conditions"] += [cond(k, "55822004", "Hyperlipidemia", "2022-01-01") for k in "abd"]
    rows["medications"] += [med(k, "12574", "2022-01-01") for k in "abd"]
    after = assemble_cohort(frames_of(rows), config)
    assert after.feature_names == before.feature_names
    np.testing.assert_array_equal(after.X, before.X)


def test_a_record_known_only_after_the_index_changes_no_feature():
    """A lab of b dated ``2021`` (known from 2021-12-31T23:59, after b's index 2021-03-01), a lab of a dated before
    a's index 2020-01-01 but issued after it, and a condition of a with an old onset recorded after the index,
    may not be features."""
    config = load_config(None, ["data.ehr.top_k_labs=3", "data.ehr.top_k_conditions=3",
                                "split.val_fraction=0.0", "split.test_fraction=0.0"])
    before = assemble_cohort(frames_of(base_rows()), config)
    rows = base_rows()
    late = [obs("b", LDH, "2021-01-01", 999.0), obs("a", CEA, "2019-11-01", 7.0),
            cond("a", HTN, "Essential hypertension (disorder)", "2015-01-01")]
    for row, known in zip(late, ("2021-12-31T23:59:59.999999Z", "2020-02-01", "2021-02-01"), strict=True):
        row["known"] = ts(known)
    rows["observations"] += late[:2]
    rows["conditions"] += late[2:]
    after = assemble_cohort(frames_of(rows), config)
    assert after.feature_names == before.feature_names
    np.testing.assert_array_equal(after.X, before.X)


def test_record_at_the_index_time_changes_no_feature_without_grace():
    before = assemble_cohort(frames_of(base_rows()), CONFIG)
    assert np.isnan(column(before, "stage")[0])  # a's staging is recorded at the index time itself
    rows = base_rows()
    rows["observations"] += [obs("a", LDH, "2020-01-01", 999.0), obs("b", LDH, "2021-03-01", 1.0)]
    rows["gene_status"] += [{"patient_key": "a", "gene": "KRAS", "mutated": True}]
    for row in rows["gene_status"] + rows["tmb"]:
        row["collected"] = ts("2020-01-01") if row["patient_key"] == "a" else ts("2021-01-01")
    after = assemble_cohort(frames_of(rows), CONFIG)
    assert column(after, f"lab:{LDH}:last")[0] == column(before, f"lab:{LDH}:last")[0] == 240.0
    assert column(after, f"lab:{LDH}:last")[1] == column(before, f"lab:{LDH}:last")[1]
    assert np.isnan(column(after, "gene:KRAS")[0])  # a's biopsy is from the index date: not a feature


def test_image_taken_after_the_cutoff_is_never_chosen():
    from fusion.cohort import image_refs

    images = pd.DataFrame({
        "patient_key": ["a", "a", "a", "b", "c"], "image_id": ["a1", "a2", "a3", "b1", "c1"],
        "modality": ["CT"] * 5, "tensor_file": ["a1.npy", "a2.npy", "a3.npy", "b1.npy", "c1.npy"],
        "tensor_row": [0, 0, 0, 0, 0],
        "study_date": [ts("2019-12-20"), ts("2020-01-01"), ts("2020-03-01"), ts("2021-01-01"), pd.NaT]})
    cutoff = pd.Series({"a": ts("2020-01-01"), "b": ts("2020-06-01"), "c": ts("2020-01-01")})
    refs = image_refs(images, np.array(["a", "b", "c"]), cutoff, "CT")
    # a: the study at the cutoff itself and the later one are out; b: only a later study; c: undated, eligible
    assert refs.tensor_file.tolist() == ["a1.npy", "", "c1.npy"] and refs.present.tolist() == [True, False, True]


def test_grace_window_admits_records_shortly_after_index():
    rows = base_rows()
    rows["observations"].append(obs("a", LDH, "2020-01-03", 500.0))
    assert column(assemble_cohort(frames_of(rows), CONFIG), f"lab:{LDH}:last")[0] == 240.0
    graced = apply_overrides(CONFIG, ["data.index.grace_days=3"])
    assert column(assemble_cohort(frames_of(rows), graced), f"lab:{LDH}:last")[0] == 500.0
    rows["medications"].append(med("a", "583214", "2020-01-01T02:00:00Z"))  # chemo ordered 2 h after the diagnosis
    cohort = assemble_cohort(frames_of(rows), graced)
    assert "med:583214" not in cohort.feature_names  # the first treatment is no "prior medication"


def test_a_patient_without_a_patient_resource_still_has_ehr_data():
    rows = base_rows()
    rows["patients"] = [p for p in rows["patients"] if p["patient_key"] != "a"]  # an export filtered by type
    cohort = assemble_cohort(frames_of(rows), CONFIG)
    a = cohort.patient_keys.tolist().index("a")
    assert cohort.blocks["ehr"].present[a] and column(cohort, f"lab:{LDH}:last")[a] == 240.0


def test_an_mcode_stu1_disease_status_progression_ends_pfs():
    """mCODE STU1 codes the cancer disease status LOINC 88040-1 (Response to cancer treatment), STU2+ 97509-4; the
    disease_status view selects both, PFS read only the latter. b (progressing 2021-06-01 in STU1's code) then
    had its PFS event at its death, 2022-03-01. A run saved with one code keeps reading that one."""
    rows = base_rows()
    rows["observations"].append(obs("b", "88040-1", "2021-06-01", None, c.DISEASE_STATUS["progressing"][0]))
    t = assemble_cohort(frames_of(rows), CONFIG).targets  # rows a, b, d
    assert t.pfs_time[1] == 92.0 and t.pfs_event[1] and t.os_time[1] == 365.0
    saved = apply_overrides(CONFIG, [f"data.targets.progression_code={c.DISEASE_STATUS_LOINC[0]}"])
    assert saved.data.targets.progression_code == [c.DISEASE_STATUS_LOINC[0]]
    assert assemble_cohort(frames_of(rows), saved).targets.pfs_time[1] == 365.0


def test_a_procedure_is_a_contact_that_censors_survival():
    """A surgery or radiation Procedure is a contact with the patient: a's last record, a radiation on 2021-06-01,
    censors OS there (the cohort did not read procedures: 366 days, the encounter of 2021-01-01)."""
    rows = base_rows()
    rows["procedures"] = [{"patient_key": "a", "system": c.SNOMED, "code": "152198000",
                           "display": "Brachytherapy (procedure)", "performed": ts("2021-06-01")}]
    t = assemble_cohort(frames_of(rows), CONFIG).targets  # rows a, b, d
    assert t.os_time[0] == 517.0 and not t.os_event[0]


def test_targets_hand_computed_and_labels_override():
    t = assemble_cohort(frames_of(base_rows()), CONFIG).targets  # rows a, b, d
    assert t.diagnosis_classes == list(c.DIAGNOSES) and t.diagnosis.tolist() == [1, -1, 2]
    # a: censored at the last contact (encounter end 2021-01-01); first progression after index 2020-06-01
    assert t.os_time[0] == 366.0 and not t.os_event[0]
    assert t.pfs_time[0] == 152.0 and t.pfs_event[0]
    # b: dies 2022-03-01, no progression -> PFS event at death
    assert t.os_time[1] == 365.0 and t.os_event[1] and t.pfs_time[1] == 365.0 and t.pfs_event[1]
    # d: labels override (index 2020-02-01; FHIR alone: censored at the last contact 2020-05-01, day 90); the
    # curated death at day 100 is OS, and ends PFS, censored at day 90 in FHIR
    assert t.os_time[2] == 100.0 and t.os_event[2] and t.time[2] == 100.0 and t.event[2]
    assert t.pfs_time[2] == 100.0 and t.pfs_event[2]
    assert t.time[:2].tolist() == [366.0, 365.0]  # endpoint os, no label
    names = t.treatment_names
    assert [names[i] if i >= 0 else None for i in t.treatment] == ["egfr_tki", None, "chemo"]
    assert t.response[0] == 1.0 and np.isnan(t.response[1]) and t.response[2] == 0.0
    pfs = assemble_cohort(frames_of(base_rows()), apply_overrides(CONFIG, ["data.targets.survival_endpoint=pfs"]))
    assert pfs.targets.time[:2].tolist() == [152.0, 365.0]


def test_curated_labels_set_the_endpoint_they_record():
    """d's curated time/event is PFS: it sets PFS only, and the OS run takes d's OS from FHIR (censored at the last
    contact, day 90); it was trained as OS. A curated OS still ends PFS where FHIR gives one; labels written
    before endpoints were recorded (null) are the configured endpoint's, as before."""
    rows = base_rows()
    rows["labels"][0]["endpoint"] = "pfs"
    t = assemble_cohort(frames_of(rows), CONFIG).targets  # rows a, b, d
    assert t.os_time[2] == 90.0 and not t.os_event[2] and t.time[2] == 90.0 and not t.event[2]
    assert t.pfs_time[2] == 100.0 and t.pfs_event[2]
    pfs = assemble_cohort(frames_of(rows), apply_overrides(CONFIG, ["data.targets.survival_endpoint=pfs"]))
    assert pfs.targets.time[2] == 100.0 and pfs.targets.event[2]
    rows["labels"][0]["endpoint"] = "os"
    t = assemble_cohort(frames_of(rows), apply_overrides(CONFIG, ["data.targets.survival_endpoint=pfs"])).targets
    assert t.os_time[2] == 100.0 and t.os_event[2] and t.pfs_time[2] == 100.0 and t.time[2] == 100.0
    rows["labels"][0]["endpoint"] = None
    legacy = assemble_cohort(frames_of(rows), apply_overrides(CONFIG, ["data.targets.survival_endpoint=pfs"]))
    assert legacy.targets.pfs_time[2] == 100.0 and legacy.targets.os_time[2] == 90.0


def test_an_endpoint_the_labels_do_not_have_is_a_clear_error():
    """A labels-only lake (a cBioPortal study): its PFS labels cannot train overall survival, nor its OS labels
    progression-free survival (a curated OS ended every patient's PFS, which nothing else gave: PFS trained on the
    OS times); the error names the endpoint the labels have and the fix. Another endpoint of the labels (dfs)
    trains under its own name; a run without a survival task needs none."""
    labels = [{"patient_key": f"p{i}", "split": None, "diagnosis": None, "time": 30.0 * (i + 1), "event": i % 2 == 0,
               "treatment": None, "response": None, "index_date": ts("2020-01-01"), "endpoint": "pfs"}
              for i in range(6)]
    features = [{"patient_key": f"p{i}", "modality": "clinical", "feature": "age", "value": 50.0 + i,
                 "value_str": None} for i in range(6)]
    curated = apply_overrides(CONFIG, ["modalities.ehr.enabled=false", "modalities.genomics.enabled=false",
                                       "modalities.clinical.enabled=true"])
    frames = LakeFrames(labels=pd.DataFrame(labels), features=pd.DataFrame(features))
    with pytest.raises(CohortError, match=r"survival_endpoint is 'os'.* 6 patient\(s\) are pfs.*"
                                          r"--set data.targets.survival_endpoint=pfs.*--endpoint os"):
        assemble_cohort(frames, curated)
    pfs = assemble_cohort(frames, apply_overrides(curated, ["data.targets.survival_endpoint=pfs"]))
    assert pfs.targets.time.tolist() == [30.0 * (i + 1) for i in range(6)]
    assert pfs.targets.event.tolist() == [i % 2 == 0 for i in range(6)]
    assert len(assemble_cohort(frames, apply_overrides(curated, ["tasks.survival.enabled=false",
                                                                 "tasks.diagnosis.enabled=true"]))) == 6
    for row in labels:
        row["endpoint"] = "os"
    frames = LakeFrames(labels=pd.DataFrame(labels), features=pd.DataFrame(features))
    with pytest.raises(CohortError, match="survival_endpoint is 'pfs'.* are os"):
        assemble_cohort(frames, apply_overrides(curated, ["data.targets.survival_endpoint=pfs"]))
    for row in labels:
        row["endpoint"] = "dfs"
    frames = LakeFrames(labels=pd.DataFrame(labels), features=pd.DataFrame(features))
    dfs = assemble_cohort(frames, apply_overrides(curated, ["data.targets.survival_endpoint=DFS"]))
    assert dfs.targets.time.tolist() == [30.0 * (i + 1) for i in range(6)] and np.isnan(dfs.targets.os_time).all()


def test_a_condition_recorded_without_an_onset_is_a_contact():
    rows = base_rows()  # a: last contact 2021-01-01 (an encounter's end), censored at day 366
    rows["conditions"].append({**cond("a", HTN, "Essential hypertension (disorder)", "2015-01-01"), "onset": pd.NaT,
                               "recorded": ts("2021-06-01")})
    t = assemble_cohort(frames_of(rows), CONFIG).targets  # rows a, b, d
    assert t.os_time[0] == 517.0 and not t.os_event[0]


def test_a_death_on_the_day_of_diagnosis_and_a_death_without_a_date_are_events():
    rows = base_rows()
    rows["conditions"][2] = cond("b", "12345", "Malignant neoplasm of lung", "2021-03-01T10:00:00Z")
    rows["patients"][1]["death_date"] = ts("2021-03-01")  # a date: midnight, ten hours before the diagnosis
    rows["patients"][0]["deceased"] = True  # deceasedBoolean: died, the date not recorded
    t = assemble_cohort(frames_of(rows), CONFIG).targets  # rows a, b, d
    assert t.os_event[1] and t.os_time[1] == 0.0 and t.pfs_event[1] and t.pfs_time[1] == 0.0
    assert t.os_event[0] and np.isnan(t.os_time[0])  # not alive and censored at the last contact
    assert assemble_cohort(frames_of(rows), CONFIG).summary["without_survival_time"] == 1
    assert t.pfs_event[0] and t.pfs_time[0] == 152.0  # the progression came first, on a known date


def test_a_response_belongs_to_the_treatment_it_followed():
    rows = base_rows()  # a: egfr_tki from 2020-01-20, PR on 2020-03-25
    rows["medications"].append(med("a", "40048", "2020-03-01"))  # carboplatin (chemo): switched before the PR
    t = assemble_cohort(frames_of(rows), CONFIG).targets
    assert t.treatment_names[t.treatment[0]] == "egfr_tki" and np.isnan(t.response[0])
    rows = base_rows()
    rows["medications"].append(med("a", "40048", "2020-01-20"))  # a combination, started with the egfr_tki
    t = assemble_cohort(frames_of(rows), CONFIG).targets
    assert t.response[0] == 1.0
    rows = base_rows()
    rows["labels"].append({"patient_key": "a", "split": None, "diagnosis": None, "time": None, "event": None,
                           "treatment": "chemo", "response": None, "index_date": pd.NaT})
    t = assemble_cohort(frames_of(rows), CONFIG).targets
    assert t.treatment_names[t.treatment[0]] == "chemo" and np.isnan(t.response[0])  # the PR was to egfr_tki


def test_unknown_label_class_is_a_clear_error():
    rows = base_rows()
    rows["labels"][0]["diagnosis"] = "mesothelioma"
    with pytest.raises(CohortError, match="mesothelioma.*diagnosis_classes"):
        assemble_cohort(frames_of(rows), CONFIG)


def test_genomics_and_extra_modality_blocks():
    config = apply_overrides(CONFIG, ["modalities.pathology={encoder: mlp}", "data.genomics.genes=[EGFR, KRAS]"])
    cohort = assemble_cohort(frames_of(base_rows()), config)
    gen = cohort.blocks["genomics"]
    assert gen.names == ["gene:EGFR", "gene:KRAS", "log_tmb", "has_sequencing"]
    np.testing.assert_array_equal(gen.values[0], np.float32([1.0, 0.0, np.log1p(9.0), 1.0]))
    assert np.isnan(gen.values[1, 0]) and gen.values[1, 1] == 1.0 and np.isnan(gen.values[1, 2])  # b: KRAS only
    assert np.isnan(gen.values[2, :3]).all() and gen.present.tolist() == [True, True, False]
    path = cohort.blocks["pathology"]
    assert path.names == ["pathology:grade", "pathology:subtype=acinar", "pathology:subtype=solid"]
    np.testing.assert_array_equal(path.values[:2], np.float32([[2.0, 1.0, 0.0], [np.nan, 0.0, 1.0]]))
    assert np.isnan(path.values[2]).all() and path.present.tolist() == [True, True, False]
    again = assemble_cohort(frames_of(base_rows()), config, selection=cohort.selection)
    assert again.feature_names == cohort.feature_names


def test_a_gene_off_the_patients_panel_is_unknown_not_wild_type():
    """gene_status has a row per sample and gene of its panel: a patient sequenced on a panel without EGFR (a
    second site's assay) has an unknown EGFR status, not a wild-type one."""
    config = apply_overrides(CONFIG, ["data.genomics.genes=[EGFR, KRAS]"])
    rows = base_rows()  # a: EGFR and KRAS tested; b: KRAS only
    rows["gene_status"].append({"patient_key": "d", "gene": "EGFR", "mutated": False})
    gen = assemble_cohort(frames_of(rows), config).blocks["genomics"]  # rows a, b, d
    assert gen.names[:2] == ["gene:EGFR", "gene:KRAS"]
    np.testing.assert_array_equal(gen.values[:, :2], np.float32([[1.0, 0.0], [np.nan, 1.0], [0.0, np.nan]]))
    assert gen.present.tolist() == [True, True, True]


def test_a_sample_collected_after_the_cutoff_changes_no_feature():
    """Patient a (index 2020-01-01) gets a second sample taken at progression, with a new KRAS mutation and a
    higher TMB: no genomics feature may change. Undated samples are used and counted."""
    config = apply_overrides(CONFIG, ["data.genomics.genes=[EGFR, KRAS]"])
    rows = base_rows()
    for row in rows["gene_status"] + rows["tmb"]:
        row.update(sample_id=f"{row['patient_key']}-dx", collected=ts("2019-12-20"))
    before = assemble_cohort(frames_of(rows), config)
    rows["gene_status"] += [{"patient_key": "a", "sample_id": "a-prog", "gene": "KRAS", "mutated": True,
                             "collected": ts("2020-09-01")}]
    rows["tmb"] += [{"patient_key": "a", "sample_id": "a-prog", "tmb_per_mb": 40.0, "collected": ts("2020-09-01")}]
    after = assemble_cohort(frames_of(rows), config)
    np.testing.assert_array_equal(after.blocks["genomics"].values, before.blocks["genomics"].values)
    assert after.summary["genomics_samples_after_cutoff"] == 1 and after.summary["genomics_samples_undated"] == 0
    rows["tmb"][-1]["collected"] = None  # undated: used
    undated = assemble_cohort(frames_of(rows), config)
    assert undated.blocks["genomics"].values[0, 2] == np.float32(np.log1p(40.0))
    assert undated.summary["genomics_samples_undated"] == 1


@pytest.mark.parametrize(("text", "expected"), [
    ("3A", 3.0), ("Stage IIIB", 3.0), ("IVA", 4.0), ("Stage 2", 2.0), ("1B", 1.0), ("II", 2.0), ("T1N0M0", np.nan),
    (None, np.nan), ("stage iiia", 3.0), ("iiia", 3.0), ("Stage iv", 4.0), ("pIIIA", 3.0), ("cIIB", 2.0),
    ("yp2A", 2.0), ("1A1", 1.0), ("Stage 0", 0.0), ("T2N1M0", np.nan), ("pT2 pN1 cM0", np.nan),
    ("American Joint Committee on Cancer stage IIIA (qualifier value)", 3.0), ("Stage unknown", np.nan)])
def test_parse_stage(text, expected):
    assert parse_stage(text) == expected or (np.isnan(expected) and np.isnan(parse_stage(text)))


def test_parse_smoking():
    mapping = {"266919005": 0.0}
    assert parse_smoking("266919005", None, mapping) == 0.0
    assert parse_smoking(None, "Ex-smoker (finding)", mapping) == 1.0
    assert parse_smoking(None, "Current every day smoker", mapping) == 2.0
    assert parse_smoking(None, "Smokes tobacco daily (finding)", mapping) == 2.0  # newer Synthea
    assert np.isnan(parse_smoking(None, "Passive smoker (finding)", mapping))
    assert np.isnan(parse_smoking(None, "unknown", mapping))


def test_a_smoker_whose_current_status_is_unknown_is_not_a_current_smoker():
    """LOINC's answer list of 72166-2 (LL2201-3) and the SNOMED codes paired with it: "Smoker, current status
    unknown" (LA18979-7, 77176002) is former or current, 1.5 on the 0/1/2 scale, not 2 (the default map read
    77176002 as current, and so did the display); "Unknown if ever smoked" is unknown."""
    from fusion.config import EhrConfig

    mapping = EhrConfig().smoking_map
    for code, display in (("77176002", "Smoker (finding)"), ("LA18979-7", "Smoker, current status unknown"),
                          (None, "Smoker, current status unknown")):
        assert parse_smoking(code, display, mapping) == 1.5
    for code, display, expected in (("LA18976-3", "Current every day smoker", 2.0),
                                    ("428041000124106", "Occasional tobacco smoker (finding)", 2.0),
                                    ("LA18982-1", "Light tobacco smoker", 2.0), ("LA15920-4", "Former smoker", 1.0),
                                    ("LA18978-9", "Never smoker", 0.0), (c.SMOKING_SNOMED["current"][0], None, 2.0)):
        assert parse_smoking(code, display, mapping) == expected
    for display, expected in (("Smoker (finding)", 1.5), ("Heavy tobacco smoker (finding)", 2.0),
                              ("Occasional tobacco smoker (finding)", 2.0), ("Current smoker", 2.0),
                              ("Non-smoker", 0.0), ("Ex-smoker", 1.0), ("Cigarette smoker (finding)", 2.0),
                              ("Pipe smoker", 2.0), ("smoker", 1.5)):
        assert parse_smoking(None, display, mapping) == expected, display  # a display without a code: as its code
    for code, display in (("LA18980-5", "Unknown if ever smoked"), ("266927001", None),
                          (None, "Tobacco smoking consumption unknown (finding)")):
        assert np.isnan(parse_smoking(code, display, mapping))


def test_splits_stratified_seeded_order_free_and_fixed():
    keys = np.array([f"k{i:03d}" for i in range(200)])
    strata = np.array(["x"] * 100 + ["y"] * 60 + ["z"] * 40)
    split = assign_splits(keys, strata, val_fraction=0.2, test_fraction=0.2, seed=3)
    assert [int((split == s).sum()) for s in ("train", "val", "test")] == [120, 40, 40]
    for stratum, n in (("x", 100), ("y", 60), ("z", 40)):
        share = (split[strata == stratum] == "test").sum() / n
        assert abs(share - 0.2) <= 1.5 / n
    perm = np.random.default_rng(0).permutation(200)
    shuffled = assign_splits(keys[perm], strata[perm], val_fraction=0.2, test_fraction=0.2, seed=3)
    np.testing.assert_array_equal(shuffled, split[perm])
    assert not np.array_equal(assign_splits(keys, strata, val_fraction=0.2, test_fraction=0.2, seed=4), split)
    fixed = np.array([None] * 200, dtype=object)
    fixed[:10], fixed[10:15] = "test", "Validation"
    honoured = assign_splits(keys, strata, val_fraction=0.2, test_fraction=0.2, seed=3, fixed=fixed)
    assert (honoured[:10] == "test").all() and (honoured[10:15] == "val").all()
    fixed[20] = "holdout"
    with pytest.raises(ValueError, match="1 split value.* not one of train, val, test") as raised:
        assign_splits(keys, strata, val_fraction=0.2, test_fraction=0.2, seed=3, fixed=fixed)
    assert "holdout" not in str(raised.value)  # the lake's values are not echoed


def test_labels_split_column_is_honoured_in_the_cohort():
    cohort = assemble_cohort(frames_of(base_rows()), load_config(None, ["split.test_fraction=0.0"]))
    assert cohort.split[cohort.patient_keys.tolist().index("d")] == "test"


def test_kfold_each_patient_tested_once():
    keys = np.array([f"k{i}" for i in range(50)])
    strata = np.array(["e", "c"] * 25)
    folds = kfold_assignments(keys, strata, 5, val_fraction=0.2, seed=0)
    tested = np.stack([f == "test" for f in folds])
    assert (tested.sum(0) == 1).all() and (tested.sum(1) == 10).all()
    assert all((tested[k] & (strata == "e")).sum() == 5 for k in range(5))
    assert all((f == "val").sum() == 8 for f in folds)


def test_config_overrides_coerce_types_and_reject_unknown_keys(tmp_path):
    config = load_config(None, ["train.lr=1e-2", "train.epochs=7", "modalities.image.enabled=true",
                                "data.ehr.windows_days=[30, 365]", "modalities.image.encoder_kwargs.out_dim=32"])
    assert config.train.lr == 0.01 and config.train.epochs == 7 and config.data.ehr.windows_days == [30.0, 365.0]
    assert config.modalities["image"].enabled and config.modalities["image"].encoder_kwargs["out_dim"] == 32
    assert config.modalities["ehr"].enabled  # other modalities keep their defaults
    codes = load_config(None, ['data.index.cancer_codes=["0123"]'])
    assert codes.data.index.cancer_codes == ["0123"]
    with pytest.raises(ConfigError, match="got the number 83: quote codes"):  # YAML 1.1 reads 0123 as octal
        load_config(None, ["data.index.cancer_codes=[0123]"])
    with pytest.raises(ConfigError, match="unknown key 'lrr' in train; valid keys: epochs"):
        load_config(None, ["train.lrr=1"])
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(None, ["train.epochs=many"])
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        load_config(None, ["modalities.image.colour=red"])
    with pytest.raises(ConfigError, match="unknown modalities \\['histology'\\]"):
        load_config(None, ["tasks.diagnosis.modalities=[image, histology]"])
    with pytest.raises(ConfigError, match="none of them is enabled"):
        load_config(None, ["tasks.diagnosis.modalities=[image]", "modalities.image.enabled=false"])
    with pytest.raises(ConfigError, match="cancer_display_regex is not a regular expression .* put a backslash"):
        load_config(None, ["data.index.cancer_display_regex='carcinoma (lung'"])
    with pytest.raises(ConfigError, match="train.device"):  # torch.device('gpu') would fail in training
        load_config(None, ["train.device=gpu"])
    assert load_config(None, ["train.device=cuda:1"]).train.device == "cuda:1"
    # mps (Apple GPUs) trained before the check came, and a saved run's config is validated when it is loaded
    assert load_config(None, ["train.device=mps"]).train.device == "mps"
    import torch

    from fusion.train import resolve_device

    if not torch.backends.mps.is_available():  # a config error of this machine, not a torch RuntimeError later
        with pytest.raises(ValueError, match="MPS"):
            resolve_device("mps")
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epocs: 3\nmodalities:\n  ehr:\n    encodr: mlp\n")
    with pytest.raises(ConfigError, match="train.epocs: .* \\(valid keys: epochs,") as raised:
        load_config(path)
    assert "modalities.ehr.encodr: Extra inputs are not permitted (valid keys: enabled, encoder," in str(raised.value)


@pytest.mark.parametrize("name", ["image_diagnosis", "genomics_clinical_survival", "full_fusion"])
def test_presets_load(name):
    from pathlib import Path

    config = load_config(Path(__file__).resolve().parents[2] / "configs" / f"{name}.yaml")
    assert config.enabled_modalities()


def test_top_k_columns_are_chosen_on_training_patients_only():
    """A lab code seen only in a test patient must not become a column (the test split shapes nothing)."""
    rows = base_rows()
    rows["observations"].append(obs("d", "9999-9", "2020-01-20", 7.0))
    cohort = assemble_cohort(frames_of(rows), CONFIG)
    assert cohort.split[cohort.patient_keys.tolist().index("d")] == "test"
    assert f"lab:{LDH}:last" in cohort.feature_names
    assert not any("9999-9" in name for name in cohort.feature_names)
    everyone = assemble_cohort(frames_of(rows), CONFIG, assign=False)  # no split: every patient counts
    assert any("9999-9" in name for name in everyone.feature_names)


def test_the_suggested_set_for_labels_outside_the_classes_lists_them_as_they_are():
    """The error's ``--set`` gives back the values, whatever they hold: a comma (GDC's "Adenocarcinoma, NOS")
    would split one value into two in a bare YAML list, and an apostrophe would end the shell's quotes."""
    import shlex

    from fusion.cohort import _indices

    values = pd.Series(["Adenocarcinoma, NOS", "Hodgkin's lymphoma", "1", None])
    with pytest.raises(CohortError) as caught:
        _indices(values, ["Squamous cell carcinoma, NOS"], "diagnosis", "data.targets.diagnosis_classes")
    command = str(caught.value).split("e.g. --set ", 1)[1].split("), or set it to null", 1)[0]
    [override] = shlex.split(command)
    classes = apply_overrides(load_config(), [override]).data.targets.diagnosis_classes
    assert sorted(classes) == sorted(["Adenocarcinoma, NOS", "Hodgkin's lymphoma", "1", "Squamous cell carcinoma, NOS"])
