"""The crosswalk: FHIR Patient ids and identifiers -> patient_key, with identifier values shared by patients."""

from __future__ import annotations

import orjson
from typer.testing import CliRunner

from apps.cli import app
from ingest.fhir.pipeline import ingest_fhir
from ingest.lake import Lake
from ingest.link import crosswalk, id_map
from ingest.status import lake_status
from ingest.tables import ingest_labels

HOSPITAL_A, HOSPITAL_B = "urn:oid:1.2.3.1", "urn:oid:1.2.3.2"


def _patient(pid: str, *identifiers: tuple[str, str]) -> bytes:
    return orjson.dumps({"resourceType": "Patient", "id": pid,
                         "identifier": [{"system": s, "value": v} for s, v in identifiers]})


def test_a_shared_identifier_links_nothing_unless_its_system_is_named(tmp_path):
    export = tmp_path / "Patient.ndjson"
    export.write_bytes(b"\n".join([_patient("pa", (HOSPITAL_A, "1001"), (HOSPITAL_A, "7")),
                                   _patient("pb", (HOSPITAL_B, "1001")),
                                   _patient("pc", (HOSPITAL_B, "pa"))]) + b"\n")
    lake = Lake(tmp_path / "lake")
    result = CliRunner().invoke(app, ["ingest", "fhir", str(export), "--lake", str(lake.path)])
    assert result.exit_code == 0, result.output
    assert "1 Patient identifier value(s) belong to several patients" in " ".join(result.output.split())
    links = crosswalk(lake)
    assert links.ambiguous == 1 and "1001" not in links.mapping
    assert links.mapping[f"{HOSPITAL_A}|1001"] == "pa" and links.mapping[f"{HOSPITAL_B}|1001"] == "pb"
    assert links.mapping["7"] == "pa" and links.mapping["pa"] == "pa"  # a FHIR id wins over pc's identifier "pa"
    labels = tmp_path / "labels.csv"
    labels.write_text(f"patient_id,split\n{HOSPITAL_B}|1001,test\n1001,train\n")
    ingest_labels(lake, labels)
    status = lake_status(lake)
    assert status.ambiguous == 1 and status.unmatched["labels"] == 1  # the bare 1001
    assert set(status.coverage.loc[status.coverage.labels, "patient_key"]) == {"pb", "1001"}
    result = CliRunner().invoke(app, ["lake", "status", "--lake", str(lake.path)])
    assert result.exit_code == 0 and "name the system" in " ".join(result.output.split()), result.output


def test_status_reads_without_writing(tmp_path):
    export = tmp_path / "Patient.ndjson"
    export.write_bytes(_patient("pa", (HOSPITAL_A, "1001")) + b"\n")
    lake = Lake(tmp_path / "lake")
    ingest_fhir(lake, [export])
    assert lake.read("rejects").num_rows == 0  # a clean run leaves an empty rejects table to query
    versions = {name: lake.version(name) for name in lake.tables()}
    lake_status(lake)
    assert {name: lake.version(name) for name in lake.tables()} == versions
    bare = Lake(tmp_path / "bare")  # a lake whose crosswalk was never written still maps its ids, in memory
    ingest_fhir(bare, [export])
    __import__("shutil").rmtree(bare.table_path("patient_xref"))
    assert id_map(bare) == {"pa": "pa", "1001": "pa", f"{HOSPITAL_A}|1001": "pa"}
    assert not bare.has("patient_xref")
