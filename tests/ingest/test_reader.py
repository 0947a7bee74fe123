"""The public reader API (``ingest.reader``) on a small FHIR export."""

from __future__ import annotations

import orjson

from ingest.fhir.pipeline import ingest_fhir
from ingest.lake import Lake


def test_the_reader_leaves_out_records_that_did_not_happen(tmp_path):
    from ingest.reader import (
        read_conditions,
        read_encounters,
        read_medications,
        read_observations,
        read_patients,
        read_procedures,
    )

    ref = {"reference": "Patient/p1"}
    code = {"coding": [{"system": "http://loinc.org", "code": "718-7"}]}
    resources = [
        {"resourceType": "Patient", "id": "p1", "deceasedBoolean": True},
        {"resourceType": "Patient", "id": "p2", "deceasedDateTime": "2021-01-01"},
        {"resourceType": "Patient", "id": "p3"},
        *({"resourceType": "Observation", "id": f"o-{status}", "status": status, "code": code, "subject": ref,
           "effectiveDateTime": "2020-01-01", "valueQuantity": {"value": 1.0}}
          for status in ("final", "amended", "entered-in-error", "cancelled")),
        *({"resourceType": "Condition", "id": f"c-{status}", "subject": ref, "onsetDateTime": "2020-01-01",
           "code": {"coding": [{"system": "http://snomed.info/sct", "code": "13645005"}]},
           "verificationStatus": {"coding": [{"code": status}]}}
          for status in ("confirmed", "refuted", "entered-in-error")),
        *({"resourceType": "MedicationRequest", "id": f"m-{status}", "status": status, "intent": "order",
           "subject": ref, "authoredOn": "2020-01-01",
           "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                     "code": "1"}]}}
          for status in ("active", "completed", "cancelled", "draft", "entered-in-error")),
        *({"resourceType": "Procedure", "id": f"x-{status}", "status": status, "subject": ref,
           "performedDateTime": "2020-01-01", "code": code} for status in ("completed", "not-done", "preparation")),
        *({"resourceType": "Encounter", "id": f"e-{status}", "status": status, "subject": ref,
           "class": {"code": "AMB"}, "period": {"start": "2026-01-01"}}
          for status in ("finished", "planned", "cancelled")),
    ]
    export = tmp_path / "export.ndjson"
    export.write_bytes(b"\n".join(orjson.dumps(r) for r in resources) + b"\n")
    lake = Lake(tmp_path / "lake")
    ingest_fhir(lake, [export], workers=1)
    assert len(read_observations(lake)) == 2  # final and amended
    assert len(read_conditions(lake)) == 1 and len(read_medications(lake)) == 2
    assert len(read_procedures(lake)) == 1 and len(read_encounters(lake)) == 1
    deceased = read_patients(lake).set_index("patient_key")["deceased"]
    assert deceased.to_dict() == {"p1": True, "p2": True, "p3": False}


def test_known_is_when_a_record_can_be_taken_as_known(tmp_path):
    from ingest.reader import read_conditions, read_medications, read_observations

    ref = {"reference": "Patient/p1"}
    code = {"coding": [{"system": "http://loinc.org", "code": "718-7"}]}
    lab = {"resourceType": "Observation", "status": "final", "code": code, "subject": ref,
           "valueQuantity": {"value": 1.0}}
    resources = [
        {"resourceType": "Patient", "id": "p1"},
        {**lab, "id": "month", "effectiveDateTime": "2020-06"},
        {**lab, "id": "day", "effectiveDateTime": "2020-06-15"},
        {**lab, "id": "instant", "effectiveDateTime": "2020-06-15T10:00:00+02:00"},
        {**lab, "id": "period", "effectivePeriod": {"start": "2020-06-01", "end": "2020-07-30T12:00:00Z"}},
        {**lab, "id": "issued", "effectiveDateTime": "2020-06-01T08:00:00Z", "issued": "2020-08-01T09:00:00Z"},
        {"resourceType": "Condition", "id": "c1", "subject": ref, "onsetDateTime": "2019",
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "13645005"}]}},
        {"resourceType": "Condition", "id": "c2", "subject": ref, "onsetDateTime": "2015-03-01",
         "recordedDate": "2021-02-01", "code": {"coding": [{"system": "http://snomed.info/sct", "code": "1"}]}},
        {"resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order", "subject": ref,
         "authoredOn": "2020", "medicationCodeableConcept": {"coding": [{"code": "1"}]}},
    ]
    export = tmp_path / "export.ndjson"
    export.write_bytes(b"\n".join(orjson.dumps(r) for r in resources) + b"\n")
    lake = Lake(tmp_path / "lake")
    ingest_fhir(lake, [export], workers=1)
    labs = read_observations(lake)
    assert sorted(str(t) for t in labs["known"]) == [
        "2020-06-15 08:00:00+00:00",  # an instant is itself
        "2020-06-15 23:59:59.999999+00:00",  # the day: its last instant
        "2020-06-30 23:59:59.999999+00:00",  # the month
        "2020-07-30 12:00:00+00:00",  # the period's end
        "2020-08-01 09:00:00+00:00"]  # issued later
    assert str(labs["effective"].min()) == "2020-06-01 00:00:00+00:00"  # the dates themselves are unchanged
    conditions = read_conditions(lake).set_index("code")["known"]
    assert str(conditions["13645005"]) == "2019-12-31 23:59:59.999999+00:00"
    assert str(conditions["1"]) == "2021-02-01 23:59:59.999999+00:00"  # recorded after its onset
    assert read_conditions(lake).set_index("resource_id")["recorded"].notna().to_dict() == {"c1": False, "c2": True}
    assert str(read_medications(lake)["known"].iloc[0]) == "2020-12-31 23:59:59.999999+00:00"


def test_medications_include_administrations_and_referenced_drugs(tmp_path):
    from ingest.reader import read_medications

    ref = {"reference": "Patient/p1"}
    rxnorm = "http://www.nlm.nih.gov/research/umls/rxnorm"
    resources = [
        {"resourceType": "Patient", "id": "p1"},
        {"resourceType": "Medication", "id": "m1", "code": {"coding": [{"system": rxnorm, "code": "40048",
                                                                        "display": "carboplatin"}]}},
        {"resourceType": "MedicationRequest", "id": "r1", "status": "active", "intent": "order", "subject": ref,
         "authoredOn": "2020-02-01", "medicationReference": {"reference": "Medication/m1"}},
        {"resourceType": "MedicationRequest", "id": "r2", "status": "active", "intent": "order", "subject": ref,
         "authoredOn": "2020-02-02", "medicationReference": {"reference": "Medication/not-exported"}},
        {"resourceType": "Medication", "id": "m2", "code": {"text": "pemetrexed"}},
        {"resourceType": "MedicationRequest", "id": "r3", "status": "active", "intent": "order", "subject": ref,
         "authoredOn": "2020-02-03", "medicationReference": {"reference": "Medication/m2"}},
        {"resourceType": "MedicationRequest", "id": "r4", "status": "active", "intent": "order", "subject": ref,
         "authoredOn": "2020-02-04", "medicationCodeableConcept": {"text": "carboplatin AUC5"}},
        *({"resourceType": "MedicationAdministration", "id": f"a-{status}", "status": status, "subject": ref,
           "effectiveDateTime": "2020-03-01T10:00:00Z",
           "medicationCodeableConcept": {"coding": [{"system": rxnorm, "code": "68446"}]}}
          for status in ("completed", "not-done")),
    ]
    export = tmp_path / "export.ndjson"
    export.write_bytes(b"\n".join(orjson.dumps(r) for r in resources) + b"\n")
    lake = Lake(tmp_path / "lake")
    ingest_fhir(lake, [export], workers=1)
    meds = read_medications(lake).sort_values("start")
    assert meds["code"].fillna("none").tolist() == ["40048", "none", "none", "none", "68446"]  # a-not-done: none
    assert meds["display"].fillna("none").tolist()[:4] == ["carboplatin", "none", "pemetrexed", "carboplatin AUC5"]
    assert str(meds["start"].iloc[4]) == "2020-03-01 10:00:00+00:00"
    assert str(meds["start"].iloc[1]) == "2020-02-02 00:00:00+00:00"  # its drug is not in the lake: still a contact


def test_observation_components_are_observations_of_their_own(tmp_path):
    from ingest.reader import read_observations

    loinc = "http://loinc.org"

    def component(code, value):
        return {"code": {"coding": [{"system": loinc, "code": code}]},
                "valueQuantity": {"value": value, "unit": "mm[Hg]"}}

    ecog_item = {"code": {"coding": [{"system": loinc, "code": "89247-1"}]}, "valueInteger": 1}

    resources = [{"resourceType": "Patient", "id": "p1"},
                 {"resourceType": "Observation", "id": "bp", "status": "final", "subject": {"reference": "Patient/p1"},
                  "code": {"coding": [{"system": loinc, "code": "85354-9"}]}, "effectiveDateTime": "2020-01-01",
                  "issued": "2020-02-01T09:00:00Z",
                  "component": [component("8480-6", 128.0), component("8462-4", 82.0), ecog_item]}]
    export = tmp_path / "export.ndjson"
    export.write_bytes(b"\n".join(orjson.dumps(r) for r in resources) + b"\n")
    lake = Lake(tmp_path / "lake")
    ingest_fhir(lake, [export], workers=1)
    rows = read_observations(lake).set_index("code")
    assert rows.value["8480-6"] == 128.0 and rows.value["8462-4"] == 82.0 and rows.value["89247-1"] == 1.0
    assert rows.index.tolist().count("85354-9") == 1
    assert str(rows.known["8480-6"]) == "2020-02-01 09:00:00+00:00"  # known when its Observation was issued


def test_a_contained_medication_gives_the_request_and_administration_its_codes(tmp_path):
    """Vendors often send the drug as a Medication contained in the request (medicationReference '#id'): it is in
    no Medication table, so the view must read the codes from ``contained`` or the drug is lost."""
    from ingest.reader import read_medications

    ref = {"reference": "Patient/p1"}
    rxnorm = "http://www.nlm.nih.gov/research/umls/rxnorm"
    paclitaxel = {"resourceType": "Medication", "id": "med1", "code": {
        "text": "Taxol 100 mg", "coding": [{"system": rxnorm, "code": "583214", "display": "paclitaxel 100 MG"}]}}
    resources = [
        {"resourceType": "Patient", "id": "p1"},
        {"resourceType": "MedicationRequest", "id": "r1", "status": "active", "intent": "order", "subject": ref,
         "authoredOn": "2020-02-01", "contained": [{"resourceType": "Practitioner", "id": "dr"}, paclitaxel],
         "requester": {"reference": "#dr"}, "medicationReference": {"reference": "#med1"}},
        {"resourceType": "MedicationAdministration", "id": "a1", "status": "completed", "subject": ref,
         "effectivePeriod": {"start": "2020-02-03T10:00:00Z", "end": "2020-02-03T13:00:00Z"},
         "contained": [paclitaxel], "medicationReference": {"reference": "#med1"}},
    ]
    export = tmp_path / "export.ndjson"
    export.write_bytes(b"\n".join(orjson.dumps(r) for r in resources) + b"\n")
    lake = Lake(tmp_path / "lake")
    ingest_fhir(lake, [export], workers=1)
    for view in ("view_medication_request", "view_medication_administration"):
        [row] = lake.read(view).to_pylist()
        assert (row["medication_system"], row["medication_code"]) == (rxnorm, "583214"), view
        assert row["medication_text"] == "Taxol 100 mg" and row["medication_reference"] is None, view
    meds = read_medications(lake).sort_values("start")
    assert meds["code"].tolist() == ["583214", "583214"]
    assert meds["display"].tolist() == ["paclitaxel 100 MG", "paclitaxel 100 MG"]
    assert [str(t) for t in meds["start"]] == ["2020-02-01 00:00:00+00:00", "2020-02-03 10:00:00+00:00"]
