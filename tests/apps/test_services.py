"""The app's data services on small hand-made inputs (no Streamlit page)."""

from __future__ import annotations

import orjson
import pandas as pd

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
