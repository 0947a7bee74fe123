"""A lake rewritten outside tumorboard (another tool, a copy from elsewhere): reading it fails with an error that
names the table and column, never the stored value (it may be a patient's name, birth date or identifier)."""

from __future__ import annotations

import orjson
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from ingest import reader
from ingest.lake import Lake, LakeError

SECRET = "Quasimodo Zebrafamily 1931-02-03"


def _tamper(lake: Lake, table: str, column: str) -> None:
    """Rewrite ``column`` of ``table`` as text holding :data:`SECRET` (a new Delta version, as a tool would)."""
    path = str(lake.path / table)
    data = DeltaTable(path).to_pyarrow_table()
    values = [SECRET] + [None] * (data.num_rows - 1)
    data = data.set_column(data.schema.get_field_index(column), pa.field(column, pa.string()),
                           pa.array(values, pa.string()))
    write_deltalake(path, data, mode="overwrite", schema_mode="overwrite")


def test_a_registered_table_with_other_types_is_named_not_quoted(tmp_path):
    lake = Lake(tmp_path / "lake")
    lake.write("tmb", pa.table({"patient_id": ["p1"], "sample_id": ["s1"], "n_nonsilent": [3],
                                "panel_size_mb": [1.1], "tmb_per_mb": [2.7], "collected": [None]},
                               schema=pa.schema([f.remove_metadata() for f in lake_schema("tmb")])))
    _tamper(lake, "tmb", "tmb_per_mb")
    with pytest.raises(LakeError, match="tmb_per_mb") as caught:
        reader.read_tmb(lake)
    assert "Zebrafamily" not in str(caught.value) and "outside tumorboard" in str(caught.value)


def test_a_view_date_that_is_no_date_is_named_not_quoted(tmp_path, monkeypatch):
    from fusion.cohort import CohortError, load_frames
    from ingest.fhir.pipeline import ingest_fhir
    from ingest.schema import SCHEMAS

    export = tmp_path / "export.ndjson"
    export.write_bytes(b"\n".join(orjson.dumps(r) for r in [
        {"resourceType": "Patient", "id": "p1", "birthDate": "1950-01-01"},
        {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
         "onsetDateTime": "2004-06-01", "code": {"coding": [{"system": "http://snomed.info/sct", "code": "35917007"}]}},
    ]) + b"\n")
    lake = Lake(tmp_path / "lake")
    ingest_fhir(lake, [export], workers=1)
    _tamper(lake, "view_condition", "onset_datetime_latest")
    _tamper(lake, "view_patient", "birth_date")
    with pytest.raises(LakeError, match="onset_datetime_latest") as caught:  # the view's registered schema
        reader.read_conditions(lake)
    assert "Zebrafamily" not in str(caught.value)
    # a process that did not ingest (tumorboard predict, train, the app) knows no view schema: pandas parses
    monkeypatch.delitem(SCHEMAS, "view_condition")
    monkeypatch.delitem(SCHEMAS, "view_patient")
    with pytest.raises(LakeError, match="onset_latest") as caught:
        reader.read_conditions(lake)
    assert "Zebrafamily" not in str(caught.value)
    monkeypatch.setattr(reader, "read_conditions", lambda lake: reader._empty("conditions"))
    with pytest.raises(CohortError, match="birth_date") as caught:
        load_frames(lake.path)
    assert "Zebrafamily" not in str(caught.value)


def lake_schema(name: str) -> pa.Schema:
    from ingest.schema import SCHEMAS

    return SCHEMAS[name]
