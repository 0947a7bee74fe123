"""The ViewDefinitions shipped in configs/views, applied to the real FHIR files in ../shared/data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from ingest.fhir.viewdef import CompiledView, ViewDefinitionError, compile_view, load_views
from ingest.schema import TIMESTAMP
from tests.conftest import REPO, shared_data

VIEWS_DIR = REPO / "configs" / "views"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
EXPECTED_VIEWS = {"patient", "condition", "observation", "medication_request", "medication_administration",
                  "procedure", "encounter", "cancer_condition", "tnm_stage", "disease_status", "tumor_marker",
                  "best_response", "observation_component", "patient_identifier", "medication"}
NO_PATIENT = {"medication"}  # a Medication resource belongs to no patient: it is what a request references


@pytest.fixture(scope="module")
def views() -> dict[str, CompiledView]:
    return {v.name: v for v in load_views(VIEWS_DIR)}


def _ndjson(path: Path) -> Iterator[dict]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _json_resources(folder: Path) -> Iterator[dict]:
    """Resources of every JSON file in ``folder``: Bundle entries, single resources, lists of them."""
    for path in sorted(folder.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        for item in doc if isinstance(doc, list) else [doc]:
            if isinstance(item, dict) and item.get("resourceType") == "Bundle":
                entries = item.get("entry", [])
                yield from (e["resource"] for e in entries if isinstance(e.get("resource"), dict))
            elif isinstance(item, dict) and "resourceType" in item:
                yield item


def _dicts(view: CompiledView, resources) -> list[dict]:
    names = [name for name, _ in view.columns]
    return [dict(zip(names, row, strict=True)) for r in resources for row in view.rows(r)]


def test_every_shipped_view_compiles_with_the_conventions(views):
    assert set(views) == EXPECTED_VIEWS
    for path in VIEWS_DIR.glob("*.json"):
        assert json.loads(path.read_text())["name"] == path.stem
    for view in views.values():
        names = [name for name, _ in view.columns]
        assert names[:2] == (["id", "code_system"] if view.name in NO_PATIENT else ["id", "patient_key"]), view.name
        assert all(t is not None for _, t in view.columns), f"{view.name}: untyped column"
        for name in names:
            if name.endswith("_system"):  # a code (system, code, display), or a status, unit or identifier
                stem = name[: -len("_system")]
                coded = {f"{stem}_code", f"{stem}_display"} <= set(names)
                assert coded or {stem, f"{stem}_code", f"{stem}_value"} & set(names), f"{view.name}: {name} alone"
        assert view.arrow_schema.names == names


def test_load_views_names_the_bad_file(tmp_path):
    (tmp_path / "good.json").write_text(json.dumps(
        {"resource": "Patient", "select": [{"column": [{"name": "id", "path": "id"}]}]}))
    (tmp_path / "bad.json").write_text(json.dumps({"resource": "Patient", "select": [{"forEach": "@@"}]}))
    with pytest.raises(ViewDefinitionError, match=r"bad\.json.*unexpected character"):
        load_views(tmp_path)
    (tmp_path / "bad.json").unlink()
    [good] = load_views(tmp_path)
    assert good.name == "good"


def test_synthea_conditions_have_nsclc_and_breast_cancer(views):
    conditions = list(_ndjson(shared_data("fhir", "synthea-bulk-10", "Condition.000.ndjson")))
    rows = _dicts(views["condition"], conditions)
    assert len(rows) == len(conditions)
    snomed = {r["code_code"] for r in rows if r["code_system"] == SNOMED}
    assert {"254637007", "254837009"} <= snomed  # NSCLC, malignant neoplasm of breast
    assert all(r["patient_key"] and "/" not in r["patient_key"] for r in rows)
    cancers = _dicts(views["cancer_condition"], conditions)
    assert {r["code_code"] for r in cancers} == {"254637007", "424132000", "254837009"}
    assert {r["cancer_role"] for r in cancers} == {"primary"}


def test_synthea_medication_requests_find_paclitaxel_and_cisplatin(views):
    path = shared_data("fhir", "synthea-bulk-10", "MedicationRequest.000.ndjson")
    rows = _dicts(views["medication_request"], _ndjson(path))
    drugs = {r["medication_display"].lower().split()[0] for r in rows if r["medication_system"] == RXNORM}
    assert {"paclitaxel", "cisplatin"} <= drugs
    assert all(r["authored_on"] and r["intent"] for r in rows)


def test_pathling_lab_observations_have_values_and_units(views):
    observations = list(_ndjson(shared_data("fhir", "pathling-ndjson", "Observation.ndjson")))
    view = views["observation"]
    table = view.to_table(observations)
    assert table.schema == view.arrow_schema
    assert table.schema.field("value_quantity").type == pa.float64()
    labs = [r for r in table.to_pylist() if r["category_code"] == "laboratory"]
    assert len(labs) == 984
    with_value = [r for r in labs if r["value_quantity"] is not None]
    assert len(with_value) > 900
    assert all(r["unit"] for r in with_value)
    timed = view.with_timestamps(table)
    assert timed.schema.field("effective_datetime").type == TIMESTAMP
    assert timed.column("effective_datetime").null_count == table.column("effective_datetime").null_count


def test_bundle_urn_uuid_subjects_resolve_to_patient_ids(views):
    resources = list(_json_resources(shared_data("fhir", "synthea-transaction-bundles")))
    patients = {r["id"] for r in resources if r["resourceType"] == "Patient"}
    rows = _dicts(views["observation"], resources)
    assert rows and {r["patient_key"] for r in rows} <= patients


def test_mcode_fixtures_give_staging_and_disease_status(views):
    resources = list(_json_resources(shared_data("fhir", "mcode-fixtures")))
    stages = _dicts(views["tnm_stage"], resources)
    groups = [r for r in stages if r["stage_type_code"] == "21908-9"]
    assert groups and all(r["value_system"] == "http://cancerstaging.org" and r["value_code"] for r in groups)
    assert {"cT3", "cN3", "cM0"} <= {r["value_code"] for r in stages}
    assert all(r["patient_key"] for r in stages)
    status = _dicts(views["disease_status"], resources)
    assert {"385633008", "709137006"} <= {r["value_code"] for r in status}
    assert all(r["effective_datetime"] and r["focus_condition"] for r in status)
    cancers = _dicts(views["cancer_condition"], resources)
    roles = {(r["code_system"], r["code_code"]): r["cancer_role"] for r in cancers}
    assert roles[("http://hl7.org/fhir/sid/icd-10-cm", "C79.81")] == "secondary"
    assert roles[("http://hl7.org/fhir/sid/icd-10-cm", "C50.211")] == "primary"
    assert not any(r["code_code"] == "I10" for r in cancers)  # hypertension is not a cancer


def _obs(code: str, value: dict, **extra) -> dict:
    return {"resourceType": "Observation", "id": f"o-{code}", "status": "final",
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2021-03-04",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]}, **value, **extra}


def test_tumor_marker_and_best_response_select_their_codes(views):
    cea = _obs("2039-6", {"valueQuantity": {"value": 7.1, "unit": "ng/mL", "code": "ng/mL"}},
               category=[{"coding": [{"code": "laboratory"}]}])
    response = _obs("21976-6", {"valueCodeableConcept": {"coding": [
        {"system": "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl", "code": "C18213",
         "display": "Partial Response"}]}})
    height = _obs("8302-2", {"valueQuantity": {"value": 170, "unit": "cm"}})
    [marker] = _dicts(views["tumor_marker"], [cea, response, height])
    assert (marker["code_code"], marker["value_quantity"], marker["unit"]) == ("2039-6", 7.1, "ng/mL")
    [best] = _dicts(views["best_response"], [cea, response, height])
    assert (best["patient_key"], best["value_code"]) == ("p1", "C18213")
    assert best["effective_datetime"] == "2021-03-04"


def test_rows_errors_name_the_column_not_the_data():
    view = compile_view({"name": "v", "resource": "Patient",
                         "select": [{"column": [{"name": "family", "path": "name.family"}]}]})
    patient = {"resourceType": "Patient", "id": "secret-id", "name": [{"family": "Doe"}, {"family": "Roe"}]}
    with pytest.raises(ViewDefinitionError, match="column 'family'") as info:
        view.rows(patient)
    assert "Doe" not in str(info.value) and "secret-id" not in str(info.value)
    assert view.rows({"resourceType": "Observation", "id": "o"}) == []


def test_tnm_stage_selects_mcode_stu3_snomed_and_other_loinc_staging_codes_without_a_profile(views):
    """mCODE STU3/STU4 code a stage group or T/N/M category in SNOMED CT (399537006 clinical TNM stage grouping,
    399504009 cT category, ...), STU2 adds the 'other' LOINC codes (21914-7, 21911-3, ...); a sender that does
    not declare meta.profile must still give staging rows."""
    sct = "http://snomed.info/sct"

    def staging(code: str, system: str, value: str) -> dict:
        return {"resourceType": "Observation", "id": f"s-{code}", "status": "final",
                "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2022-05-01",
                "code": {"coding": [{"system": system, "code": code}]},
                "valueCodeableConcept": {"coding": [{"system": sct, "code": value}]}}

    resources = [staging("399537006", sct, "1222806003"),  # clinical TNM stage grouping: AJCC stage IIIA
                 staging("399504009", sct, "1228938002"),  # cT category: cT2
                 staging("371494008", sct, "1229967007"),  # pN category: pN1
                 staging("399387003", sct, "1229901006"),  # cM category: cM0
                 staging("21914-7", "http://loinc.org", "1222806003"),  # stage group, other
                 staging("21912-1", "http://loinc.org", "1229967007"),  # regional nodes, other
                 staging("8302-2", "http://loinc.org", "1"),  # body height: not staging
                 staging("363346000", sct, "1")]  # a cancer (disorder), not a staging element
    rows = _dicts(views["tnm_stage"], resources)
    assert sorted(r["stage_type_code"] for r in rows) == sorted(
        ["399537006", "399504009", "371494008", "399387003", "21914-7", "21912-1"])
    assert all(r["patient_key"] == "p1" and r["value_system"] == sct and r["value_code"] for r in rows)


def test_observation_views_keep_a_comparator_a_boolean_and_a_ratio(views):
    """A PSA '<0.1 ng/mL' is a limit, not the value 0.1; valueBoolean and valueRatio results have a column too
    (they came out as rows with every value column null)."""
    psa = _obs("2857-1", {"valueQuantity": {"value": 0.1, "comparator": "<", "unit": "ng/mL", "code": "ng/mL",
                                            "system": "http://unitsofmeasure.org"}})
    titre = _obs("2039-6", {"valueRatio": {"numerator": {"value": 1}, "denominator": {"value": 160}}})
    flag = _obs("85337-4", {"valueBoolean": False})
    pressure = _obs("85354-9", {}, component=[
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
         "valueQuantity": {"value": 250, "comparator": ">", "unit": "mm[Hg]"}},
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]}, "valueBoolean": True}])
    rows = {r["code_code"]: r for r in _dicts(views["observation"], [psa, titre, flag])}
    assert (rows["2857-1"]["value_quantity"], rows["2857-1"]["value_comparator"]) == (0.1, "<")
    assert (rows["2039-6"]["value_ratio_numerator"], rows["2039-6"]["value_ratio_denominator"]) == (1, 160)
    assert rows["85337-4"]["value_boolean"] is False and rows["2857-1"]["value_boolean"] is None
    markers = {r["code_code"]: r for r in _dicts(views["tumor_marker"], [psa, titre, flag])}
    assert set(markers) == {"2857-1", "2039-6"}
    assert markers["2857-1"]["value_comparator"] == "<" and markers["2039-6"]["value_ratio_denominator"] == 160
    components = {r["component_code"]: r for r in _dicts(views["observation_component"], [pressure])}
    assert (components["8480-6"]["value_quantity"], components["8480-6"]["value_comparator"]) == (250, ">")
    assert components["8462-4"]["value_boolean"] is True
    for name in ("observation", "tumor_marker", "observation_component"):
        table = views[name].to_table([psa, titre, flag, pressure])
        assert table.schema == views[name].arrow_schema
