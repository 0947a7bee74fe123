"""FHIR ingest: real exports and Bundles into the lake, rejects, idempotence, views, CLI exit codes."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import orjson
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from apps.cli import app
from ingest.fhir.pipeline import ingest_fhir, patient_key, reflatten_views
from ingest.fhir.reader import INVALID, FhirInputError, Reader, _split_ndjson, check_resource, discover
from ingest.lake import Lake

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "fhir"
BULK = DATA / "synthea-bulk-10"
BUNDLES = DATA / "synthea-transaction-bundles"
PATHLING = DATA / "pathling-ndjson"
MCODE = DATA / "mcode-fixtures"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"


def _need(path: Path) -> Path:
    if not path.is_dir():
        pytest.skip(f"real FHIR test data missing: {path} (see ../shared/data/SOURCES.md)")
    return path


def _rows(lake: Lake, table: str) -> list[dict]:
    return lake.read(table).to_pylist()


def _sorted(table: pa.Table) -> list[str]:
    """Rows as sorted reprs: compares tables whatever their row order."""
    return sorted(repr(sorted(row.items())) for row in table.to_pylist())


def _rejects(lake: Lake) -> list[dict]:
    return _rows(lake, "rejects") if lake.has("rejects") else []


@pytest.fixture(scope="module")
def bulk_lake(tmp_path_factory) -> tuple[Lake, object]:
    lake = Lake(tmp_path_factory.mktemp("bulk") / "lake")
    return lake, ingest_fhir(lake, [_need(BULK)])


def test_bulk_counts_equal_line_counts(bulk_lake):
    lake, report = bulk_lake
    expected = {}
    for path in BULK.glob("*.ndjson"):
        if path.name != "log.ndjson":
            expected[path.name.split(".")[0]] = len(path.read_bytes().splitlines())
    assert {t: c.read for t, c in report.counts.items()} == expected
    assert {t: c.written for t, c in report.counts.items()} == expected
    assert report.rejected == 0
    assert [p.name for p, _ in report.skipped] == ["log.ndjson"]
    stored = lake.sql("select resource_type, count(*) n from fhir_resources group by 1").to_pylist()
    assert {r["resource_type"]: r["n"] for r in stored} == expected
    manifest = _rows(lake, "manifest")[-1]
    assert manifest["command"] == "ingest fhir" and manifest["status"] == "ok"


def test_bulk_views_have_cancer_and_chemotherapy(bulk_lake):
    lake, _ = bulk_lake
    conditions = {(r["code_system"], r["code_code"]) for r in _rows(lake, "view_condition")}
    assert (SNOMED, "254637007") in conditions  # non-small cell lung cancer
    assert (SNOMED, "254837009") in conditions  # malignant neoplasm of breast
    meds = [r for r in _rows(lake, "view_medication_request") if r["medication_system"] == RXNORM]
    names = " ".join(r["medication_display"].lower() for r in meds)
    assert "paclitaxel" in names and "cisplatin" in names
    patients = {r["id"] for r in _rows(lake, "view_patient")}
    assert {r["patient_key"] for r in meds} <= patients
    mrns = [r for r in _rows(lake, "view_patient_identifier") if r["type_code"] == "MR"]
    assert len(mrns) == len(patients) and all(r["identifier_system"] and r["identifier_value"] for r in mrns)
    people = _rows(lake, "view_patient")
    assert all(r["race_system"] == "urn:oid:2.16.840.1.113883.6.238" and r["race_display"] for r in people)
    assert all(r["mrn_system"] for r in people)
    conditions = _rows(lake, "view_condition")
    assert all(r["clinical_status_system"].endswith("condition-clinical") for r in conditions if r["clinical_status"])
    assert lake.read("view_medication_request").schema.field("authored_on").type == pa.timestamp("us", tz="UTC")


def test_reingest_is_idempotent_and_newest_wins(bulk_lake, tmp_path):
    lake, first = bulk_lake
    before = lake.sql("select count(*) n from fhir_resources").to_pylist()[0]["n"]
    views_before = {name: lake.read(f"view_{name}").num_rows for name in first.views}
    again = ingest_fhir(lake, [BULK])
    assert again.written == first.written and first.repeated == 0
    assert {t: c.repeated for t, c in again.counts.items()} == {t: c.written for t, c in first.counts.items()}
    latest = max(_rows(lake, "manifest"), key=lambda row: row["finished_at"])
    assert json.loads(latest["counts"])["repeated"] == again.written
    assert lake.sql("select count(*) n from fhir_resources").to_pylist()[0]["n"] == before
    assert {name: lake.read(f"view_{name}").num_rows for name in first.views} == views_before

    patient = orjson.loads((BULK / "Patient.000.ndjson").read_bytes().splitlines()[0])
    # FHIR instants may carry up to 9 fraction digits (the lake keeps microseconds)
    newer = dict(patient, gender="other", meta={"lastUpdated": "2030-01-01T00:00:00.1234567Z"})
    older = dict(patient, gender="unknown", meta={"lastUpdated": "2029-01-01T00:00:00.123456789Z"})
    (tmp_path / "new.ndjson").write_bytes(orjson.dumps(newer) + b"\n")
    (tmp_path / "old.ndjson").write_bytes(orjson.dumps(older) + b"\n")
    assert ingest_fhir(lake, [tmp_path / "new.ndjson"]).counts["Patient"].repeated == 1
    ingest_fhir(lake, [tmp_path / "old.ndjson"])  # older than what the lake holds: ignored
    row = [r for r in _rows(lake, "view_patient") if r["id"] == patient["id"]]
    assert [r["gender"] for r in row] == ["other"]
    assert lake.sql("select count(*) n from fhir_resources").to_pylist()[0]["n"] == before

    # without meta.lastUpdated an integer meta.versionId decides, also within one file
    v5 = dict(patient, gender="female", meta={"versionId": "5"})
    v4 = dict(patient, gender="male", meta={"versionId": "4"})
    (tmp_path / "versions.ndjson").write_bytes(orjson.dumps(v5) + b"\n" + orjson.dumps(v4) + b"\n")
    assert ingest_fhir(lake, [tmp_path / "versions.ndjson"]).repeated == 2  # both: the id is in the lake
    row = [r for r in _rows(lake, "view_patient") if r["id"] == patient["id"]]
    assert [r["gender"] for r in row] == ["female"]


def test_an_id_twice_in_one_run_counts_as_repeated(tmp_path):
    lake = Lake(tmp_path / "lake")
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female"}
    lines = [patient, dict(patient, gender="male"), {"resourceType": "Patient", "id": "p2"},
             {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"}}]
    (tmp_path / "twice.ndjson").write_bytes(b"\n".join(orjson.dumps(r) for r in lines) + b"\n")
    report = ingest_fhir(lake, [tmp_path / "twice.ndjson"])
    assert (report.read, report.written, report.repeated) == (4, 4, 1)
    assert {t: c.repeated for t, c in report.counts.items()} == {"Patient": 1, "Observation": 0}
    stored = lake.sql("select count(*) n from fhir_resources").to_pylist()[0]["n"]
    assert stored == report.written - report.repeated == 3


def test_transaction_bundles_resolve_urn_uuid_references(tmp_path):
    lake = Lake(tmp_path / "lake")
    report = ingest_fhir(lake, [_need(BUNDLES)])
    assert report.rejected == 0 and report.counts["Patient"].written == 4
    patients = {r["id"] for r in _rows(lake, "view_patient")}
    conditions = _rows(lake, "view_condition")
    assert conditions and {r["patient_key"] for r in conditions} <= patients
    assert "urn:uuid:" not in lake.sql("select string_agg(json, '') j from fhir_resources").to_pylist()[0]["j"]
    keys = lake.sql("select patient_key from fhir_resources where resource_type = 'Observation'").to_pylist()
    assert {r["patient_key"] for r in keys} <= patients


def test_pathling_labs_flatten_with_value_and_unit(tmp_path):
    lake = Lake(tmp_path / "lake")
    report = ingest_fhir(lake, [_need(PATHLING)])
    assert report.counts["Observation"].written == 1502
    labs = [r for r in _rows(lake, "view_observation") if r["category_code"] == "laboratory"]
    assert len(labs) > 500
    with_values = [r for r in labs if r["value_quantity"] is not None and r["unit"]]
    assert len(with_values) > 0.8 * len(labs)
    # blood pressure keeps its values in components: systolic and diastolic rows with UCUM units
    bp = [r for r in _rows(lake, "view_observation_component") if r["code_code"] == "55284-4"]
    assert {r["component_code"] for r in bp} == {"8480-6", "8462-4"}
    assert all(r["value_quantity"] > 0 and r["unit_system"] == "http://unitsofmeasure.org" for r in bp)


def test_the_mcode_fixture_folder_keeps_one_example_id_staging_row_and_rejects_the_rest(tmp_path):
    """The fixture folder as it is: its single-resource staging fixtures share the id ``example-id``, so one of them
    (the pathological T category pT3) is kept, and no stage group; the Bundles point at a patient no entry holds.
    The staging and disease status of one patient built from them: tests/fusion/test_mcode.py."""
    lake = Lake(tmp_path / "lake")
    report = ingest_fhir(lake, [_need(MCODE)])
    staging = [(r["stage_type_code"], r["value_code"]) for r in _rows(lake, "view_tnm_stage")]
    assert staging == [("21899-0", "pT3")]  # a T category, not a stage group
    assert [r["id"] for r in _rows(lake, "view_disease_status")] == ["CancerDiseaseStatus-fixture"]
    reasons = " | ".join(r["reason"] for r in _rejects(lake))
    assert "not a FHIR resource" in reasons  # JSON arrays and configs in the fixture folder
    assert "DSTU2" in reasons and "R4" in reasons  # Condition.patient
    assert "a reference to nothing" in reasons  # urn:uuid:mrn-1 is in no entry of its Bundle
    assert "unknown resourceType" in reasons
    assert report.read == report.written + report.rejected


def _bundle_of(resources: list[dict]) -> dict:
    """A transaction Bundle whose references use urn:uuid fullUrls instead of Type/id."""
    urls = {f"{r['resourceType']}/{r['id']}": f"urn:uuid:{r['id']}" for r in resources}
    entries = []
    for res in resources:
        text = orjson.dumps(res).decode()
        for ref, url in urls.items():
            text = text.replace(f'"reference":"{ref}"', f'"reference":"{url}"')
        body = orjson.loads(text)
        del body["id"]  # the id comes from the fullUrl, as in POST entries
        entries.append({"fullUrl": urls[f"{res['resourceType']}/{res['id']}"], "resource": body,
                        "request": {"method": "POST", "url": res["resourceType"]}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def test_bulk_and_bundle_give_identical_views(tmp_path):
    _need(BULK)
    patient = orjson.loads((BULK / "Patient.000.ndjson").read_bytes().splitlines()[0])
    ref = f"Patient/{patient['id']}"
    resources = [patient]
    for name in ("Condition", "MedicationRequest", "Encounter", "Procedure"):
        for line in (BULK / f"{name}.000.ndjson").read_bytes().splitlines():
            res = orjson.loads(line)
            if res.get("subject", {}).get("reference") == ref:
                resources.append(res)
    ndjson = tmp_path / "export"
    ndjson.mkdir()
    (ndjson / "all.ndjson").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in resources))
    (tmp_path / "bundle.json").write_bytes(orjson.dumps({"resourceType": "Bundle", "type": "collection",
                                                         "entry": [{"resource": _bundle_of(resources)}]}))
    bulk, bundle = Lake(tmp_path / "a"), Lake(tmp_path / "b")
    ingest_fhir(bulk, [ndjson])
    report = ingest_fhir(bundle, [tmp_path / "bundle.json"])  # a transaction nested in a collection
    assert report.rejected == 0 and report.written == len(resources)
    for name in ("patient", "condition", "medication_request", "encounter", "procedure"):
        a, b = bulk.read(f"view_{name}"), bundle.read(f"view_{name}")
        assert a.num_rows > 0
        assert a.schema == b.schema and _sorted(a) == _sorted(b), name


def _write_broken_inputs(folder: Path) -> dict[str, int]:
    """A truncated gzip, an NDJSON with a bad line, a Bundle with an entry without resource."""
    folder.mkdir()
    lines = (PATHLING / "Patient.ndjson").read_bytes().splitlines()
    blob = gzip.compress(b"".join(line + b"\n" for line in lines))
    (folder / "Patient.ndjson.gz").write_bytes(blob[: len(blob) * 2 // 3])
    conditions = (PATHLING / "Condition.ndjson").read_bytes().splitlines()[:10]
    (folder / "Condition.ndjson").write_bytes(b"\n".join(conditions[:5] + [b'{"resourceType": "Cond'] + conditions[5:]))
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"fullUrl": "urn:uuid:p1", "resource": {"resourceType": "Patient", "id": "p1"}},
        {"request": {"method": "DELETE", "url": "Patient/p0"}},
        {"resource": {"resourceType": "Condition", "id": "c1", "subject": {"reference": "urn:uuid:p1"}}},
        {"resource": {"resourceType": "Condition", "id": "c2", "subject": {"reference": "urn:uuid:nowhere"}}},
    ]}
    (folder / "bundle.json").write_bytes(orjson.dumps(bundle))
    return {"conditions": len(conditions)}


def test_broken_inputs_land_good_records_and_reject_bad_ones(tmp_path):
    _need(PATHLING)
    expected = _write_broken_inputs(tmp_path / "in")
    lake = Lake(tmp_path / "lake")
    report = ingest_fhir(lake, [tmp_path / "in"])
    rejects = _rejects(lake)
    reasons = {r["reason"].split(":")[0] for r in rejects}
    assert any("truncated or corrupt gzip" in r for r in reasons)
    gz = [r for r in rejects if r["reason"].startswith("truncated")][0]
    assert gz["location"] == f"line {report.counts['Patient'].written}"  # the first line that is not there
    bad_line = [r for r in rejects if r["reason"].startswith("not valid JSON")]
    assert [r["location"] for r in bad_line] == ["line 6"]
    assert any(r["reason"] == "Bundle entry has no resource" and r["location"] == "entry 2" for r in rejects)
    assert any(r["reason"].startswith("a reference to nothing: Condition.subject (a urn:")
               and r["location"] == "entry 4" for r in rejects)
    assert report.counts["Condition"].written == expected["conditions"] + 1
    assert report.counts["Patient"].written >= 2  # the lines before the break, plus p1
    c1 = [r for r in _rows(lake, "view_condition") if r["id"] == "c1"]
    assert c1 and c1[0]["patient_key"] == "p1"
    for counts in report.counts.values():
        assert counts.read == counts.written + counts.rejected
    assert report.counts[INVALID].rejected == 3
    assert _rows(lake, "manifest")[-1]["status"] == "partial"


def test_interrupted_run_is_recorded_and_a_rerun_completes_it(tmp_path, monkeypatch):
    _need(PATHLING)
    clean = Lake(tmp_path / "clean")
    ingest_fhir(clean, [PATHLING])
    monkeypatch.setattr("ingest.fhir.pipeline.COMMIT_ROWS", 50)
    calls = []

    def interrupt(phase, done, total):
        calls.append(phase)
        if len(calls) == 3:
            raise KeyboardInterrupt

    lake = Lake(tmp_path / "lake")
    with pytest.raises(KeyboardInterrupt):
        ingest_fhir(lake, [PATHLING], progress=interrupt, batch_size=50)  # several chunks, in one file group
    run = _rows(lake, "manifest")[-1]
    assert run["status"] == "failed" and "KeyboardInterrupt" in run["counts"]
    assert orjson.loads(run["counts"])["committed"] == lake.read("fhir_resources").num_rows  # not what was read
    assert 0 < lake.read("fhir_resources").num_rows < clean.read("fhir_resources").num_rows
    ingest_fhir(lake, [PATHLING])
    assert sorted(r["status"] for r in _rows(lake, "manifest")) == ["failed", "ok"]
    for name in ("fhir_resources", "view_observation", "view_patient"):
        key = "json" if name == "fhir_resources" else "id"
        assert sorted(lake.read(name).column(key).to_pylist()) == sorted(clean.read(name).column(key).to_pylist())


def test_byte_order_marks_json_arrays_pretty_ndjson_and_empty_folders(tmp_path, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    bom = b"\xef\xbb\xbf"
    (folder / "Patient.ndjson").write_bytes(bom + b'{"resourceType": "Patient", "id": "p1"}\n'
                                            b'{"resourceType": "Patient", "id": "p2"}\n')
    (folder / "single.json").write_bytes(bom + b'{"resourceType": "Patient", "id": "p3"}')
    (folder / "array.json").write_bytes(b'[{"resourceType": "Patient", "id": "p4"}]')
    lake = Lake(tmp_path / "lake")
    report = ingest_fhir(lake, [folder])
    assert report.counts["Patient"].written == 3
    [reject] = _rejects(lake)
    assert reject["source"].endswith("array.json") and "write the array as NDJSON" in reject["reason"]
    # pretty-printed JSON saved as .ndjson (its first line a lone brace) is read as one JSON document
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Patient", "id": "p5"}}, {"resource": {"resourceType": "Patient", "id": "p6"}}]}
    (tmp_path / "pretty.ndjson").write_text(json.dumps(bundle, indent=2))
    gz = tmp_path / "pretty.ndjson.gz"
    gz.write_bytes(gzip.compress(json.dumps({"resourceType": "Patient", "id": "p7"}, indent=1).encode()))
    report = ingest_fhir(lake, [tmp_path / "pretty.ndjson", gz])
    assert (report.written, report.rejected) == (3, 0)
    monkeypatch.setattr("ingest.fhir.reader.JSON_MAX_BYTES", 16)
    big = Lake(tmp_path / "big")
    assert ingest_fhir(big, [folder / "single.json"]).rejected == 1
    assert "export it as Bulk NDJSON" in _rejects(big)[0]["reason"]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("nothing here")
    with pytest.raises(FhirInputError, match="no FHIR files found"):
        ingest_fhir(lake, [tmp_path / "empty"])


def test_a_gzip_json_file_is_limited_by_its_decompressed_size(tmp_path, monkeypatch):
    """JSON_MAX_BYTES bounds the text parsed whole, not the gzip file on disk: a 42 MB .json.gz Bundle held 589 MiB
    of JSON and took 4.9 GB to read, when the same file uncompressed was rejected."""
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Patient", "id": f"p{i}", "gender": "female"}} for i in range(2000)]}
    text = orjson.dumps(bundle)
    path = tmp_path / "bundle.json.gz"
    path.write_bytes(gzip.compress(text))
    monkeypatch.setattr("ingest.fhir.reader.JSON_MAX_BYTES", len(text) - 1)
    assert path.stat().st_size < len(text) // 10  # far under the limit on disk, over it once decompressed
    [task] = discover([path]).tasks
    [item] = Reader(task)
    assert item.resource is None and "more than" in item.reason and "once decompressed" in item.reason
    monkeypatch.setattr("ingest.fhir.reader.JSON_MAX_BYTES", len(text))
    assert sum(item.resource is not None for item in Reader(task)) == 2000


def test_small_files_are_read_together_and_each_row_keeps_its_file(tmp_path):
    """A Bulk export of many small files (one per page or patient) is read in shared batches: 3,585 files of 20
    lines took 2.4x the time of the same resources in 13 files when every file made its own tiny batches."""
    from ingest.fhir.pipeline import _read_task, task_groups

    for n in range(6):
        lines = [orjson.dumps({"resourceType": "Patient", "id": f"p{n}-{i}"}) for i in range(3)]
        lines.append(b'{"resourceType": "Patient"}')  # no id: a reject located in its own file
        (tmp_path / f"Patient.{n}.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    tasks = discover([tmp_path]).tasks
    groups = list(task_groups(tasks, group_bytes=3 * tasks[0].size))
    assert [len(g) for g in groups] == [3, 3] and sum(groups, ()) == tuple(tasks)
    chunks = list(_read_task(groups[0], batch_size=6, validate=False, views=None))
    rows = [r for c in chunks if c.resources is not None for r in c.resources.select(["id", "source"]).to_pylist()]
    assert {r["id"]: Path(r["source"]).name for r in rows} == {
        f"p{n}-{i}": f"Patient.{n}.ndjson" for n in range(3) for i in range(3)}
    assert any(len(set(c.resources.column("source").to_pylist())) > 1 for c in chunks if c.resources)  # shared
    rejects = [r for c in chunks for r in c.rejects]
    assert [(Path(r["source"]).name, r["location"]) for r in rejects] == [
        (f"Patient.{n}.ndjson", "line 4") for n in range(3)]
    assert sum(c.done for c in chunks) == sum(t.size for t in groups[0])
    lake = Lake(tmp_path / "lake")
    report = ingest_fhir(lake, [tmp_path])
    assert (report.counts["Patient"].read, report.counts["Patient"].written, report.counts["Patient"].rejected) \
        == (24, 18, 6)
    stored = lake.read("fhir_resources", ["id", "source"]).to_pylist()
    assert all(Path(r["source"]).name == f"Patient.{r['id'][1]}.ndjson" for r in stored) and len(stored) == 18


def test_worker_batches_are_bounded_by_records_and_text_not_only_accepted_resources(tmp_path, monkeypatch):
    """A gzip NDJSON file is one task: its batches must end by themselves. Rejects count towards a batch (an R5 export
    of 182k Encounters, all rejected, took 1.3 GB as .ndjson.gz), and so does the text read (1,000 one-MB
    DocumentReferences as .ndjson.gz: 6.0 GB, 0.7 GB uncompressed)."""
    from ingest.fhir.pipeline import _read_task

    path = tmp_path / "mixed.ndjson.gz"
    lines = [orjson.dumps({"resourceType": "DocumentReference", "id": f"d{i}", "status": "current",
                           "content": [{"attachment": {"data": "QUJD" * 500}}]}) for i in range(30)]
    lines += [orjson.dumps({"resourceType": "Encounter", "id": f"e{i}", "actualPeriod": {}}) for i in range(50)]
    path.write_bytes(gzip.compress(b"\n".join(lines)))
    [task] = discover([path]).tasks
    monkeypatch.setattr("ingest.fhir.pipeline.BATCH_BYTES", 5_000)  # about two and a half DocumentReferences
    chunks = list(_read_task(task, batch_size=10, validate=False, views=None))
    sizes = [(0 if c.resources is None else c.resources.num_rows, len(c.rejects)) for c in chunks]
    assert sum(a for a, _ in sizes) == 30 and sum(r for _, r in sizes) == 50
    assert max(a for a, _ in sizes) <= 3  # cut by text, not at batch_size=10
    assert all(a + r <= 10 for a, r in sizes)  # the rejects in a batch count
    assert sum(c.done for c in chunks) == task.size
    lake = Lake(tmp_path / "lake")
    report = ingest_fhir(lake, [path], batch_size=10)
    assert (report.read, report.written, report.rejected) == (80, 30, 50)
    assert len(_rejects(lake)) == 50 and lake.dataset("fhir_resources").count_rows() == 30


def test_a_large_bundles_entries_are_batched_by_their_text_too(tmp_path, monkeypatch):
    """A Bundle read one entry at a time keeps no raw text for its accepted entries, so BATCH_BYTES must count the
    entries' source text: otherwise a Bundle of 1 MB DocumentReferences put up to batch_size (1,000) of them,
    parsed, into one batch, and reading it one entry at a time bounded nothing."""
    from ingest.fhir.pipeline import _read_task

    entries = [{"resource": {"resourceType": "DocumentReference", "id": f"d{i}", "status": "current",
                             "content": [{"attachment": {"data": "QUJD" * 500}}]}} for i in range(30)]
    entries += [{"resource": {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Patient", "id": f"p{i}", "note": "x" * 3000}} for i in range(4)]}}]
    path = tmp_path / "documents.json"
    path.write_bytes(orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}))
    monkeypatch.setattr("ingest.fhir.reader.STREAM_BUNDLE_BYTES", 1_000)  # read one entry at a time
    monkeypatch.setattr("ingest.fhir.pipeline.BATCH_BYTES", 5_000)  # about two and a half DocumentReferences
    [task] = discover([path]).tasks
    chunks = list(_read_task(task, batch_size=10, validate=False, views=None))
    sizes = [0 if c.resources is None else c.resources.num_rows for c in chunks]
    assert sum(sizes) == 34 and max(sizes) <= 4  # cut by text (the nested Bundle's 4 Patients are one entry)
    assert sum(c.done for c in chunks) == task.size


def test_the_cli_counts_reject_reasons_from_a_stream(tmp_path, monkeypatch, capsys):
    """The summary after an ingest read every reject of the run into Python (125 MB for 182k rejects): it now
    streams them (Lake.sql_batches), keeping a count and a first example per reason."""
    from apps.cli.ingest_fhir import _print_reasons

    lines = [b'{"resourceType": "Encounter", "id": "e%d", "actualPeriod": {}}' % i for i in range(30)]
    (tmp_path / "r5.ndjson").write_bytes(b"\n".join([*lines, b"{not json", b'{"resourceType": "Patient"}']))
    lake = Lake(tmp_path / "lake")
    report = ingest_fhir(lake, [tmp_path / "r5.ndjson"])

    def whole(*args, **kwargs):
        raise AssertionError("Lake.sql reads the whole result")

    monkeypatch.setattr(Lake, "sql", whole)
    _print_reasons(lake, report.run_id)
    out = " ".join(capsys.readouterr().out.split())
    assert "looks like FHIR R5" in out and "│ 30 │" in out and "r5.ndjson:line 1 " in out
    assert "not valid JSON" in out and "r5.ndjson:line 31" in out and "Patient has no id" in out


_PLAIN = ('{"resourceType": "Bundle", "type": "transaction", "entry": ['
          '{"fullUrl": "urn:uuid:aa", "resource": {"resourceType": "Patient", "name": [{"family": "Müller"}]}},'
          '{"fullUrl": "urn:uuid:bb", "resource": {"resourceType": "Condition", "id": "c1",'
          ' "subject": {"reference": "urn:uuid:aa"}}},'
          '{"fullUrl": "urn:uuid:cc", "resource": {"resourceType": "Observation", "id": "o1",'
          ' "subject": {"reference": "urn:uuid:zz"}}},'
          '{"resource": {"resourceType": "Bundle", "type": "collection", "entry": [{"fullUrl": "urn:uuid:dd",'
          ' "resource": {"resourceType": "Encounter", "id": "e1", "subject": {"reference": "urn:uuid:aa"}}}]}},'
          '{"request": {"method": "DELETE"}}, {"resource": "Patient/1"}, "text", null,'
          '{"resource": {"resourceType": "Patient", "id": "p2", "gender": "male", "gender": "female"}},'
          '{"fullUrl": "urn:uuid:aa", "resource": {"resourceType": "Patient", "id": "p3"}},'
          '{"resource": {"resourceType": "Observation", "id": "o2",'
          ' "valueQuantity": {"value": 123456789012345678901234567890}}}'
          '], "total": 11}')
_BUNDLE_TEXTS = {
    "plain": _PLAIN,
    "pretty": json.dumps(json.loads(_PLAIN), indent=2, ensure_ascii=False),
    "escaped": json.dumps(json.loads(_PLAIN)),  # \u00fc
    "entry first": '{"entry": [{"resource": {"resourceType": "Patient", "id": "p"}}], "resourceType": "Bundle"}',
    "empty entry": '{"resourceType": "Bundle", "type": "collection", "entry": [ ]}',
    "no entry": '{"resourceType": "Bundle", "type": "collection"}',
    "entry not an array": '{"resourceType": "Bundle", "entry": {"resource": {}}}',
    "top-level key twice": _PLAIN[:-1] + ', "type": "batch"}',
    "entry twice": _PLAIN[:-1] + ', "entry": []}',
    "not a Bundle": '{"resourceType": "Patient", "id": "p", "entry": []}',
    "trailing comma": _PLAIN.replace("], \"total\"", ",], \"total\""),
    "NaN": _PLAIN.replace('"total": 11', '"total": NaN'),
    "NaN in an entry": _PLAIN.replace("123456789012345678901234567890", "NaN"),
    "infinite number": _PLAIN.replace("123456789012345678901234567890", "1e400"),
    "lone surrogate": _PLAIN.replace("Müller", "M\\ud800ller"),
    "text after it": _PLAIN + " {}",
    "two documents": _PLAIN + "\n" + _PLAIN,
    "not closed": _PLAIN[:-1],
}


@pytest.mark.parametrize("name", list(_BUNDLE_TEXTS))
def test_a_large_bundle_read_one_entry_at_a_time_gives_what_the_whole_bundle_gives(tmp_path, monkeypatch, name):
    """Bundles of STREAM_BUNDLE_BYTES and more are read entry by entry (two passes: fullUrls, then entries); the
    Items are those of the Bundle parsed whole, whatever the text (anything unusual is parsed whole)."""
    path = tmp_path / "bundle.json"
    text = _BUNDLE_TEXTS[name].encode()
    path.write_bytes(text)

    monkeypatch.setattr("ingest.fhir.reader.SCAN_WINDOW", 8)  # values run past the decoded text

    def items(threshold: int) -> list[tuple]:
        monkeypatch.setattr("ingest.fhir.reader.STREAM_BUNDLE_BYTES", threshold)
        [task] = discover([path]).tasks
        return [(i.location, i.resource_type, i.resource, i.reason, i.raw) for i in Reader(task)]

    whole, streamed = items(1 << 40), items(0)
    assert streamed == whole
    from ingest.fhir.reader import _bundle_entry_spans

    plain = name in ("plain", "pretty", "escaped", "entry first", "empty entry")
    assert (_bundle_entry_spans(text) is not None) == plain  # the others are parsed whole
    if name == "plain":
        assert [i[3] is None for i in whole].count(True) == 5  # aa (id from its fullUrl), c1, e1, p3, o2


def test_a_decimal_cut_by_the_scan_window_is_read_whole(monkeypatch):
    """A number cut by the edge of the decoded window ('1.|5', '2e+|3') scans as its integer part; the scan must
    read on, not take the Bundle as irregular and parse it whole."""
    from ingest.fhir.reader import _bundle_entry_spans

    text = (b'{"resourceType": "Bundle", "x": 1.5, "y": -2.25e+3, "entry": [{"resource": {"resourceType": '
            b'"Patient", "id": "a"}}], "z": [0.5, 1E-7]}')
    for window in range(1, len(text) + 1):
        monkeypatch.setattr("ingest.fhir.reader.SCAN_WINDOW", window)
        assert _bundle_entry_spans(text) is not None, window


def test_a_large_json_resource_that_is_no_bundle_is_not_scanned_for_entries(monkeypatch):
    """Any JSON file of STREAM_BUNDLE_BYTES or more is first scanned for Bundle entries; a single large resource
    (a Binary, a DocumentReference with its attachment) must end that scan at its resourceType, not decode and
    parse its large values once more before being parsed whole (a 57 MiB Binary: peak RSS 187 -> 302 MB)."""
    import tracemalloc

    from ingest.fhir.reader import _bundle_entry_spans

    text = orjson.dumps({"resourceType": "Binary", "id": "b", "contentType": "application/pdf",
                         "data": "QUJD" * 1_000_000})
    monkeypatch.setattr("ingest.fhir.reader.SCAN_WINDOW", 1 << 16)  # the text decoded at a time: 64 KiB
    tracemalloc.start()
    try:
        assert _bundle_entry_spans(text) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < len(text) // 10


def test_a_large_bundle_is_not_held_parsed_whole(tmp_path, monkeypatch):
    """Parsed whole, the Synthea transaction Bundles took 17x their size (a 358 MB Bundle of 200,100 entries:
    peak RSS 2.9 GB); read one entry at a time, with every fullUrl resolved, under 3x (the text itself, and one
    entry parsed at a time)."""
    import tracemalloc

    _need(BUNDLES)
    entries = [e for f in sorted(BUNDLES.glob("*.json")) for e in orjson.loads(f.read_bytes())["entry"]]
    path = tmp_path / "bundle.json"
    path.write_bytes(orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}))
    monkeypatch.setattr("ingest.fhir.reader.STREAM_BUNDLE_BYTES", 1 << 20)
    monkeypatch.setattr("ingest.fhir.reader.SCAN_WINDOW", 1 << 16)
    [task] = discover([path]).tasks
    tracemalloc.start()
    try:
        n = sum(item.resource is not None for item in Reader(task))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n == len(entries)
    assert peak < 3 * path.stat().st_size


def test_cli_exit_status_and_views_command(tmp_path):
    _need(PATHLING)
    _write_broken_inputs(tmp_path / "in")
    runner = CliRunner()
    lake = tmp_path / "lake"
    result = runner.invoke(app, ["ingest", "fhir", str(tmp_path / "in"), "--lake", str(lake)])
    assert result.exit_code == 2, result.output
    assert "rejected" in result.output and "Condition" in result.output
    assert "first example of each reason" in result.output and "Condition.ndjson:line 6" in result.output
    assert "more reason(s)" not in result.output  # every reason of the broken inputs is listed
    clean = runner.invoke(app, ["ingest", "fhir", str(PATHLING / "Patient.ndjson"), "--lake", str(lake)])
    assert clean.exit_code == 0, clean.output
    assert "written resource(s) repeat" in clean.output  # of the broken inputs, some Patients landed
    again = runner.invoke(app, ["ingest", "fhir", str(PATHLING / "Patient.ndjson"), "--lake", str(lake)])
    n = len((PATHLING / "Patient.ndjson").read_bytes().splitlines())
    assert again.exit_code == 0 and "repeated id" in again.output
    said = " ".join(again.output.split())  # rich wraps the line at the console width
    assert f"{n} written resource(s) repeat a Type/id" in said and "added 0 row(s)" in said

    views = tmp_path / "views"
    views.mkdir()
    (views / "gender.json").write_text(orjson.dumps({
        "resource": "Patient", "name": "gender_only",
        "select": [{"column": [{"name": "id", "path": "getResourceKey()"}, {"name": "gender", "path": "gender"}]}],
    }).decode())
    result = runner.invoke(app, ["ingest", "views", "--lake", str(lake), "--views", str(views)])
    assert result.exit_code == 0, result.output
    assert Lake(lake).read("view_gender_only").num_rows == Lake(lake).read("view_patient").num_rows
    # a user's views next to the shipped ones stay in step with them on the next ingest
    (tmp_path / "p9.ndjson").write_bytes(orjson.dumps({"resourceType": "Patient", "id": "p9", "gender": "male"}))
    result = runner.invoke(app, ["ingest", "fhir", str(tmp_path / "p9.ndjson"), "--lake", str(lake),
                                 "--extra-views", str(views)])
    assert result.exit_code == 0, result.output
    shipped = dict(zip(*Lake(lake).read("view_patient", ["id", "gender"]).to_pydict().values(), strict=True))
    own = dict(zip(*Lake(lake).read("view_gender_only", ["id", "gender"]).to_pydict().values(), strict=True))
    assert own == shipped and own["p9"] == "male"
    missing = runner.invoke(app, ["ingest", "fhir", str(tmp_path / "nope"), "--lake", str(lake)])
    assert missing.exit_code == 1


def test_validate_rejects_an_invalid_resource(tmp_path):
    good = {"resourceType": "Patient", "id": "ok", "gender": "female", "birthDate": "1970-01-01"}
    bad = {"resourceType": "Patient", "id": "bad", "gender": "female", "birthDate": "01/01/1970"}
    (tmp_path / "p.ndjson").write_bytes(orjson.dumps(good) + b"\n" + orjson.dumps(bad) + b"\n")
    lake = Lake(tmp_path / "lake")
    report = ingest_fhir(lake, [tmp_path / "p.ndjson"], validate=True)
    assert (report.counts["Patient"].written, report.counts["Patient"].rejected) == (1, 1)
    reject = _rejects(lake)[0]
    assert reject["location"] == "line 2" and "birthDate" in reject["reason"]
    assert "01/01/1970" not in reject["reason"]  # pydantic's message without the input value
    # without --validate both are written; the unparseable birthDate is reported, not silently nulled
    plain = Lake(tmp_path / "lake2")
    report = ingest_fhir(plain, [tmp_path / "p.ndjson"])
    assert report.counts["Patient"].written == 2 and report.view_rejects == 1
    [reject] = _rejects(plain)
    assert reject["location"] == "Patient/bad" and reject["reason"].startswith("view patient: birth_date is not")
    assert reject["source"] == str(tmp_path / "p.ndjson")  # the file it came from
    assert [r["birth_date"] for r in _rows(plain, "view_patient") if r["id"] == "bad"] == [None]
    reflatten_views(plain)  # from the lake: the same file
    assert {r["source"] for r in _rejects(plain)} == {str(tmp_path / "p.ndjson")}


def test_staged_view_rejects_all_land_whatever_the_commit_size(tmp_path, monkeypatch):
    import ingest.fhir.pipeline as pipeline

    monkeypatch.setattr(pipeline, "REJECTS_PER_COMMIT", 2)
    lines = [orjson.dumps({"resourceType": "Patient", "id": f"p{i}", "birthDate": "01/01/1970"}) for i in range(5)]
    (tmp_path / "p.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    lake = Lake(tmp_path / "lake")
    report = ingest_fhir(lake, [tmp_path / "p.ndjson"], batch_size=1)  # one staged batch per resource
    assert report.view_rejects == 5
    assert sorted(r["location"] for r in _rejects(lake)) == [f"Patient/p{i}" for i in range(5)]


@pytest.mark.parametrize(("resource", "expected"), [
    ({"resourceType": "Encounter", "id": "e", "class": [{"code": "AMB"}]}, "FHIR R5"),
    ({"resourceType": "MedicationRequest", "id": "m", "medication": {"concept": {}}}, "FHIR R5"),
    ({"resourceType": "Observation", "id": "o", "triggeredBy": []}, "FHIR R5"),
    ({"resourceType": "Procedure", "id": "p", "occurrenceDateTime": "2020"}, "Procedure.occurrenceDateTime is an R5"),
    ({"resourceType": "Observation", "id": "o", "bodyStructure": {}}, "Observation.bodyStructure is an R5"),
    ({"resourceType": "Patient", "id": "p", "meta": {"lastUpdated": "yesterday"}}, "not a FHIR instant"),
    ({"resourceType": "Patient", "id": "p", "meta": {"profile": ["http://hl7.org/fhir/StructureDefinition/Patient|5.0.0"]}},
     "FHIR R5"),
    ({"resourceType": "Condition", "id": "c", "clinicalStatus": "active"}, "FHIR STU3"),
    ({"resourceType": "MedicationOrder", "id": "m"}, "FHIR DSTU2"),
    ({"resourceType": "Banana", "id": "b"}, "unknown resourceType"),
    ({"id": "x"}, "no resourceType"),
    ({"resourceType": "Patient"}, "has no id"),
    ({"resourceType": "Patient", "id": 7}, "Patient.id must be a string"),
    ({"resourceType": "Condition", "id": "c", "subject": "Patient/1"}, "Condition.subject must be an object"),
    ([1, 2], "not a FHIR resource"),
])
def test_check_resource_reasons(resource, expected):
    reason = check_resource(resource)
    assert reason is not None and expected in reason
    if "FHIR R5" in expected or "STU3" in expected or "DSTU2" in expected:
        assert "tumorboard targets FHIR R4" in reason


def test_stored_r5_only_elements_match_fhir_resources():
    from ingest.fhir import r5_only
    from ingest.fhir.r5_only_data import R5_ONLY_ELEMENTS
    from ingest.fhir.reader import R4_RESOURCE_TYPES

    assert R5_ONLY_ELEMENTS == r5_only.compute(sorted(R4_RESOURCE_TYPES)), \
        "fhir.resources changed: regenerate with python -m ingest.fhir.r5_only"
    assert "occurrenceDateTime" in R5_ONLY_ELEMENTS["Procedure"] and "Patient" not in R5_ONLY_ELEMENTS


def test_check_accepts_r4_and_ig_profile_versions():
    us_core = {"resourceType": "Patient", "id": "p", "meta": {
        "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient|3.1.1"]}}
    assert check_resource(us_core) is None
    assert check_resource({"resourceType": "Encounter", "id": "e", "class": {"code": "AMB"}}) is None


def test_patient_key_from_references():
    assert patient_key({"resourceType": "Patient", "id": "p1"}) == "p1"
    assert patient_key({"resourceType": "Condition", "subject": {"reference": "Patient/p2"}}) == "p2"
    assert patient_key({"resourceType": "Coverage", "beneficiary": {"reference": "http://x/fhir/Patient/p3"}}) == "p3"
    assert patient_key({"resourceType": "Observation", "subject": {"reference": "Group/g"}}) is None
    # read as the views' getReferenceKey(Patient) reads it, so fhir_resources and the views agree
    assert patient_key({"resourceType": "Condition", "subject": {"reference": "urn:uuid:u1"}}) == "u1"
    assert patient_key({"resourceType": "Condition", "subject": {"reference": "urn:uuid:u1", "type": "Group"}}) is None
    assert patient_key({"resourceType": "Condition", "subject": {"reference": "Patient/p4/_history/2"}}) == "p4"
    assert patient_key({"resourceType": "Organization", "id": "o"}) is None


def test_large_ndjson_split_keeps_line_numbers(tmp_path):
    lines = [orjson.dumps({"resourceType": "Patient", "id": f"p{i}"}) for i in range(200)]
    lines[150] = b"{broken"
    path = tmp_path / "Patient.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    tasks = discover([path], chunk_bytes=500).tasks
    assert len(tasks) > 5
    items = [item for task in tasks for item in Reader(task)]
    assert len(items) == 200
    assert [i.location for i in items if i.reason] == ["line 151"]


@pytest.mark.parametrize("chunk_bytes", [1, 7, 100, 5000])
@pytest.mark.parametrize("block_bytes", [1, 3, 64, 1 << 20])
def test_ndjson_split_is_line_aligned_whatever_the_block_size(tmp_path, chunk_bytes, block_bytes):
    data = b"".join(b"x" * (i * 7 % 23) + b"\n" for i in range(300)) + b"last line without newline"
    path = tmp_path / "a.ndjson"
    path.write_bytes(data)
    tasks = _split_ndjson(path, chunk_bytes, block_bytes)
    assert tasks[0].start == 0 and tasks[-1].end == len(data)
    assert all(a.end == b.start for a, b in zip(tasks, tasks[1:], strict=False))
    for task in tasks:
        assert task.first_line == data[:task.start].count(b"\n") + 1
        assert task.end == len(data) or data[task.end - 1:task.end] == b"\n"
        assert task.end - task.start >= min(chunk_bytes, len(data) - task.start)


def test_stored_json_is_the_source_line(tmp_path):
    """NDJSON resources are stored as written (decimal precision kept); Bundle entries compactly."""
    line = b'{"resourceType": "Observation", "id": "o1", "status": "final", "valueQuantity": {"value": 1.50}}'
    (tmp_path / "Observation.ndjson").write_bytes(line + b"\r\n")
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": {"resourceType": "Patient", "id": "p1", "gender": "female"}}]}
    (tmp_path / "bundle.json").write_bytes(orjson.dumps(bundle, option=orjson.OPT_INDENT_2))
    lake = Lake(tmp_path / "lake")
    ingest_fhir(lake, [tmp_path / "Observation.ndjson", tmp_path / "bundle.json"])
    stored = dict(zip(*lake.read("fhir_resources", ["id", "json"]).to_pydict().values(), strict=True))
    assert stored["o1"] == line.decode()
    assert stored["p1"] == orjson.dumps(bundle["entry"][0]["resource"]).decode()


def test_workers_give_the_same_tables(tmp_path):
    _need(PATHLING)
    one, two = Lake(tmp_path / "one"), Lake(tmp_path / "two")
    ingest_fhir(one, [PATHLING], batch_size=400)
    report = ingest_fhir(two, [PATHLING], workers=2, batch_size=400)
    assert report.read == sum(len(p.read_bytes().splitlines()) for p in PATHLING.glob("*.ndjson"))
    for name in ("fhir_resources", "view_observation", "view_patient"):
        assert _sorted(one.read(name)) == _sorted(two.read(name)), name
    assert reflatten_views(two, workers=2)["observation"] == two.read("view_observation").num_rows


def test_script_without_main_guard_is_told_why_its_workers_died(tmp_path):
    """Spawned workers re-import the calling script; without a main guard they fail at start-up, and the
    parent says so instead of blaming memory."""
    import subprocess
    import sys

    (tmp_path / "p.ndjson").write_bytes(orjson.dumps({"resourceType": "Patient", "id": "p1"}) + b"\n")
    script = tmp_path / "no_guard.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})\n"
                      "from pathlib import Path\nfrom ingest.fhir.pipeline import ingest_fhir\n"
                      "from ingest.lake import Lake\n"
                      f"ingest_fhir(Lake(Path({str(tmp_path / 'lake')!r})), [Path({str(tmp_path / 'p.ndjson')!r})], "
                      "workers=2)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("RuntimeError: a FHIR worker process exited with code 1"), last
    assert 'if __name__ == "__main__":' in last
    assert "AssertionError" not in done.stderr

def test_bulk_manifests(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    (export / "Patient.000.ndjson").write_bytes(orjson.dumps({"resourceType": "Patient", "id": "p1"}) + b"\n")
    manifest = {"transactionTime": "2024-01-01T00:00:00Z", "request": "http://x/$export", "requiresAccessToken": False,
                "output": [{"type": "Patient", "url": "http://x/files/Patient.000.ndjson"}], "error": []}
    (export / "manifest.json").write_bytes(orjson.dumps(manifest))
    from_folder = discover([export])
    assert [t.path.name for t in from_folder.tasks] == ["Patient.000.ndjson"]
    assert [p.name for p, _ in from_folder.skipped] == ["manifest.json"]
    assert [t.path.name for t in discover([export / "manifest.json"]).tasks] == ["Patient.000.ndjson"]
    (export / "manifest.json").write_bytes(orjson.dumps(dict(manifest, output=[])))
    with pytest.raises(FhirInputError, match=r"no FHIR files found.*manifest.json \(Bulk Data manifest without"):
        discover([export / "manifest.json"])


def test_a_lake_inside_the_input_folder_is_passed_over_and_other_files_are_listed(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    (export / "Patient.ndjson").write_bytes(orjson.dumps({"resourceType": "Patient", "id": "p1"}) + b"\n")
    (export / "README.md").write_text("how this export was made")
    lake = Lake(export / "lake")
    report = ingest_fhir(lake, [export])
    assert report.read == 1 and report.rejected == 0
    assert [(p.name, why) for p, why in report.skipped] == [("README.md", "not an NDJSON or JSON file")]
    # the second run finds the lake's own files (Parquet, Delta logs, its views) in the folder: not read
    report = ingest_fhir(lake, [export])
    assert report.read == 1 and report.rejected == 0
    assert sorted((p.name, why) for p, why in report.skipped) == [("README.md", "not an NDJSON or JSON file"),
                                                                  ("lake", "a lake or Delta table, not FHIR")]
    from deltalake import write_deltalake

    write_deltalake(str(export / "table"), pa.table({"a": [1]}))  # a lone Delta table is passed over too
    report = ingest_fhir(Lake(tmp_path / "other"), [export])
    assert report.rejected == 0 and ("table", "a lake or Delta table, not FHIR") in [
        (p.name, why) for p, why in report.skipped]


@pytest.mark.parametrize("commit_rows", [20_000, 1])
def test_repeated_ids_in_one_run_keep_the_newest_view_rows(tmp_path, monkeypatch, commit_rows):
    """A first ingest flattens while reading; an id that comes twice in the run must still give the view
    rows of its newest version only (and the older version's rows must not survive), whether both versions
    are in one commit or in two (then the run's own key index routes the second one to a merge)."""
    monkeypatch.setattr("ingest.fhir.pipeline.COMMIT_ROWS", commit_rows)
    def condition(codes: list[str], updated: str) -> dict:
        return {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
                "meta": {"lastUpdated": updated},
                "code": {"coding": [{"system": SNOMED, "code": c} for c in codes]}}
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female"}
    newer, older = condition(["254637007"], "2030-01-01T00:00:00Z"), condition(["1", "2", "3"], "2020-01-01T00:00:00Z")
    for order, lines in {"newer-first": [patient, newer, older], "older-first": [patient, older, newer]}.items():
        (tmp_path / f"{order}.ndjson").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in lines))
        lake = Lake(tmp_path / order)
        report = ingest_fhir(lake, [tmp_path / f"{order}.ndjson"], batch_size=1)
        assert report.views["condition"] == 1, order
        assert [r["code_code"] for r in _rows(lake, "view_condition")] == ["254637007"], order
        assert lake.read("fhir_resources").num_rows == 2


@pytest.mark.parametrize("path", [
    "getResourceKey()", "subject.getReferenceKey(Patient)", "subject.getReferenceKey(Group)",
    "code.coding.first().code", "code.coding.code", "value.ofType(Quantity).unit", "value.ofType(string)",
    "(effective.ofType(dateTime) | effective.ofType(Period).start).first()", "category.first().coding.first().system",
    "focus.getReferenceKey(Condition).first()", "deceased.ofType(boolean)", "status", "missing.element",
])
@pytest.mark.parametrize("resource", [
    {"resourceType": "Observation", "id": "o1", "status": "final", "subject": {"reference": "Patient/p1"},
     "code": {"coding": [{"system": "s", "code": "a"}, {"system": "s", "code": "b"}]},
     "valueQuantity": {"value": 1, "unit": "mg"}, "effectivePeriod": {"start": "2020-01-01"},
     "focus": [{"reference": "Patient/p1"}, {"reference": "Condition/c1"}], "category": []},
    {"resourceType": "Observation", "id": "o2", "code": {"coding": [{"code": "x"}]}, "valueString": "text",
     "effectiveDateTime": "2021-02-03", "focus": [{"reference": "Condition/c2"}], "subject": "Patient/p1",
     "category": [{"coding": [{"system": "cat"}]}]},
    {"resourceType": "Patient", "id": "p", "deceasedBoolean": False, "value": {"unit": "x"}},
])
def test_scalar_fast_path_agrees_with_the_evaluator(path, resource):
    from ingest.fhir.fhirpath import SLOW, compile_path, compile_scalar

    fast = compile_scalar(path)
    assert fast is not None, path  # every path above is one the fast path covers
    full = compile_path(path)([resource], 0)
    value = fast(resource)
    if value is not SLOW:
        assert ([] if value is None else [value]) == full
    else:
        assert len(full) > 1 or "value" in path or "focus" in path or "subject" in path


# -- generated view code agrees with the closure engine ------------------------------------------------------
def _both_ways(view_json: dict, resources: list) -> tuple[list, list] | None:
    """Rows (or the error class) per resource from the generated code and from the closure engine alone."""
    from ingest.fhir.viewdef import ViewDefinitionError, compile_view

    try:
        fast, slow = compile_view(view_json), compile_view(view_json, generate=False)
    except ViewDefinitionError:
        return None
    assert fast.generated and not slow.generated

    def apply(view) -> list:
        out = []
        for r in resources:
            try:
                out.append(view.rows(r))
            except ViewDefinitionError as exc:
                out.append(type(exc).__name__)
        return out
    return apply(fast), apply(slow)


def test_generated_views_agree_with_closures_on_the_conformance_suite():
    from ingest.fhir.conformance import load_suite

    compared = 0
    for _, doc, test in load_suite(_shared("sql-on-fhir-v2-tests")):
        both = _both_ways(test["view"], doc.get("resources", []))
        if both is not None:
            assert both[0] == both[1], test["title"]
            compared += 1
    assert compared >= 120  # every case whose view compiles


def test_generated_shipped_views_agree_with_closures_on_real_data():
    import json

    resources: list[dict] = []
    for folder in ("synthea-bulk-10", "pathling-ndjson"):
        for path in sorted(_shared(folder).glob("*.ndjson")):
            resources += [orjson.loads(line) for line in path.read_bytes().splitlines()[:400] if line.strip()]
    for path in sorted(_shared("mcode-fixtures").glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        for item in doc if isinstance(doc, list) else [doc]:
            if isinstance(item, dict) and item.get("resourceType") == "Bundle":
                resources += [e["resource"] for e in item.get("entry", []) if isinstance(e.get("resource"), dict)]
            elif isinstance(item, dict):
                resources.append(item)
    resources += _malformed(resources)
    views = sorted(Path(__file__).resolve().parents[2].joinpath("configs", "views").glob("*.json"))
    assert len(views) >= 12
    flattened = 0
    for view_path in views:
        fast, slow = _both_ways(json.loads(view_path.read_text()), resources)
        assert fast == slow, view_path.name
        flattened += any(fast)
    assert flattened >= 9  # the real data give rows in most views


def _malformed(resources: list[dict]) -> list[dict]:
    """Variants with elements of unexpected JSON kinds, where the generated code must defer to the closures."""
    out = []
    for i, r in enumerate(resources[:: max(1, len(resources) // 60)]):
        code = r.get("code") if isinstance(r.get("code"), dict) else {"coding": [{"system": "http://loinc.org"}]}
        coding = code.get("coding") or [{}]
        variants = [
            {"code": [code, code]},
            {"code": {"coding": ["text", *coding]}},
            {"code": {"coding": [{**coding[0], "system": 7, "code": ["21976-6", "x"]}]}},
            {"code": {"coding": [{**coding[0], "code": 5}, {"system": "http://loinc.org", "code": "21976-6"}]}},
            {"meta": {"profile": [3, "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-tumor-marker"]}},
            {"subject": [{"reference": "Patient/p1"}, {"reference": "Patient/p2"}]},
            {"valueCodeableConcept": {"coding": [[{"code": "a"}]]}, "effectivePeriod": {"start": ["a", "b"]}},
            {"category": {"coding": {"system": "s"}}, "focus": "Condition/c1"},
        ]
        out.append({**r, **variants[i % len(variants)]})
    return out


def _shared(name: str) -> Path:
    folder = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "fhir" / name
    if not folder.is_dir():
        pytest.skip(f"shared FHIR data {folder} is missing")
    return folder


def test_cli_says_what_an_interrupt_or_an_empty_export_leaves(tmp_path, monkeypatch):
    empty = tmp_path / "Patient.ndjson"
    empty.write_text("")
    lake = tmp_path / "lake"
    result = CliRunner().invoke(app, ["ingest", "fhir", str(empty), "--lake", str(lake)])
    assert result.exit_code == 1 and "every FHIR file is empty" in " ".join(result.output.split())
    assert not lake.exists()  # refused before anything was written

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("apps.cli.ingest_fhir.ingest_fhir", interrupted)
    result = CliRunner().invoke(app, ["ingest", "fhir", str(empty), "--lake", str(lake)])
    assert result.exit_code == 130 and "run the same command again" in " ".join(result.output.split())


def test_text_that_is_not_utf8_is_rejected_with_the_fix_and_its_bytes(tmp_path):
    cp1252 = tmp_path / "cp1252.ndjson"
    cp1252.write_bytes(b'{"resourceType":"Patient","id":"a","name":[{"family":"M\xe9ller"}]}\n'
                       b'{"resourceType":"Patient","id":"b"}\n')
    utf16 = tmp_path / "utf16.ndjson"
    utf16.write_bytes('{"resourceType":"Patient","id":"c"}\n'.encode("utf-16"))
    lake = Lake(tmp_path / "lake")
    report = ingest_fhir(lake, [cp1252, utf16])
    assert report.counts["Patient"].written == 1
    rejects = {Path(r["source"]).name: r for r in _rejects(lake) if r["location"] == "line 1"}
    assert "not UTF-8 (byte 0xE9 at byte 56)" in rejects["cp1252.ndjson"]["reason"]
    assert "iconv" in rejects["cp1252.ndjson"]["reason"] and "M\\xe9ller" in rejects["cp1252.ndjson"]["raw"]
    assert "UTF-16" in rejects["utf16.ndjson"]["reason"]


def test_non_utf8_rejects_count_as_one_reason_whatever_their_byte(tmp_path, capsys):
    """The byte position in a 'not UTF-8' reason made each such reject a reason of its own in `lake status` and
    the ingest summary (a file of random bytes listed every line apart)."""
    from apps.cli.ingest_fhir import _print_reasons
    from ingest.status import lake_status

    latin = tmp_path / "latin1.ndjson"
    latin.write_bytes(b'{"resourceType":"Patient","id":"a","name":[{"family":"M\xe9ller"}]}\n'
                      b'{"resourceType":"Patient","id":"bb","name":[{"family":"Sch\xf6n"}]}\n'
                      b'{"resourceType":"Patient","id":"c","name":[{"given":["Ren\xe9e"]}]}\n')
    lake = Lake(tmp_path / "lake")
    ingest_fhir(lake, [latin])
    assert len({r["reason"] for r in _rejects(lake)}) == 3  # the rejects table keeps each byte position
    grouped = lake_status(lake).rejects
    assert grouped["count"].tolist() == [3] and grouped["reason"].iloc[0].startswith("not UTF-8, as FHIR JSON")
    _print_reasons(lake, lake.run_id)
    said = " ".join(capsys.readouterr().out.split())
    assert "│ 3 │ latin1.ndjson:line 1" in said and "more reason" not in said


def test_plain_text_named_gz_is_told_apart_from_a_truncated_gzip(tmp_path):
    plain = tmp_path / "Patient.ndjson.gz"
    plain.write_bytes(b'{"resourceType":"Patient","id":"a"}\n')
    lake = Lake(tmp_path / "lake")
    assert ingest_fhir(lake, [plain]).rejected == 1
    [reject] = _rejects(lake)
    assert reject["location"] == "line 1" and reject["reason"].startswith("not a gzip file")


def test_a_repeated_key_is_rejected_not_resolved_silently(tmp_path):
    lines = [b'{"resourceType":"Patient","id":"a","gender":"male","gender":"female"}',  # which one?
             b'{"resourceType": "Patient", "id": "b", "gender": "male"}',  # not compact, nothing repeated
             b'{"resourceType":"Patient","id":"c","name":[{"family":"X","family":"Y"}]}',  # nested
             b'{"resourceType":"Patient","id":"d"}',
             # not compact: the keys are counted ('":' minus escaped quotes), or checked when that is not exact
             b'{"resourceType": "Patient", "id": "e", "gender": "male", "gender": "female"}',
             b'{"resourceType": "Patient", "id": "f", "name": [{"text": "say \\": no"}], "name": []}',
             b'{"resourceType": "Patient", "id": "g", "name": [{"text": "say \\": no"}]}',
             b'{"resourceType": "Patient", "id": "h", "gender" : "male", "gender": "female"}',
             b'{"resourceType": "Patient", "id": "i", "name": [{"text": "a\\\\"}], "gender": "male"}',
             b'{"resourceType": "Patient", "id": "j", "name": [{"text": "a\\\\", "text": "b"}]}']
    (tmp_path / "Patient.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    entry = '{"fullUrl": "urn:uuid:%s", "resource": {"resourceType": "Observation", "id": "%s", "status": "final", %s}}'
    bundle = ('{"resourceType": "Bundle", "type": "collection", "entry": [' + ", ".join([
        entry % ("o1", "o1", '"code": {"text": "a"}'),
        entry % ("o2", "o2", '"code": {"text": "a"}, "code": {"text": "b"}'),
    ]) + "]}")
    (tmp_path / "bundle.json").write_text(bundle)
    lake = Lake(tmp_path / "lake")
    report = ingest_fhir(lake, [tmp_path / "Patient.ndjson", tmp_path / "bundle.json"])
    assert (report.counts["Patient"].read, report.counts["Patient"].written) == (10, 4)
    assert (report.counts["Observation"].read, report.counts["Observation"].written) == (2, 1)
    stored = {r["id"] for r in lake.sql("select id from fhir_resources").to_pylist()}
    assert stored == {"b", "d", "g", "i", "o1"}
    rejects = {(Path(r["source"]).name, r["location"]): r for r in _rejects(lake)}
    assert set(rejects) == {("Patient.ndjson", f"line {n}") for n in (1, 3, 5, 6, 8, 10)} | {("bundle.json", "entry 2")}
    for line, key in ((5, "gender"), (6, "name"), (8, "gender"), (10, "text")):
        assert f"repeats the key '{key}'" in rejects[("Patient.ndjson", f"line {line}")]["reason"]
    assert "repeats the key 'gender'" in rejects[("Patient.ndjson", "line 1")]["reason"]
    assert "repeats the key 'family'" in rejects[("Patient.ndjson", "line 3")]["reason"]
    assert "repeats the key 'code'" in rejects[("bundle.json", "entry 2")]["reason"]
    assert '"gender":"male","gender":"female"' in rejects[("Patient.ndjson", "line 1")]["raw"]  # as written
    # the standard library's parse (JSON files) must not accept what orjson refuses: NaN is not JSON
    (tmp_path / "nan.json").write_text('{"resourceType": "Observation", "id": "n", "valueQuantity": {"value": NaN}}')
    assert ingest_fhir(lake, [tmp_path / "nan.json"]).rejected == 1
    assert [r["reason"] for r in _rejects(lake) if r["source"].endswith("nan.json")][0].startswith("not valid JSON")
    (tmp_path / "utf16.json").write_bytes('{"resourceType": "Patient", "id": "u"}'.encode("utf-16"))
    assert ingest_fhir(lake, [tmp_path / "utf16.json"]).rejected == 1  # FHIR JSON is UTF-8
    lone, pair = "\\ud800", "\\ud83d\\ude00"  # a lone surrogate is not text; an escaped emoji is
    named = '{"resourceType": "Patient", "id": "ID", "name": [{"text": "TEXT"}]}'
    (tmp_path / "lone.json").write_text(named.replace("ID", "s1").replace("TEXT", lone))
    (tmp_path / "pair.json").write_text(named.replace("ID", "s2").replace("TEXT", pair))
    report = ingest_fhir(lake, [tmp_path / "lone.json", tmp_path / "pair.json"])
    assert (report.rejected, report.written) == (1, 1)
    # numbers come out as orjson reads them: an infinite double is refused, a 30-digit integer is a double
    quantity = '{"resourceType": "Observation", "id": "ID", "status": "final", "valueQuantity": {"value": NUMBER}}'
    (tmp_path / "inf.json").write_text(quantity.replace("ID", "q1").replace("NUMBER", "1e400"))
    (tmp_path / "wide.json").write_text(quantity.replace("ID", "q2").replace("NUMBER", "1" + "0" * 29))
    report = ingest_fhir(lake, [tmp_path / "inf.json", tmp_path / "wide.json"])
    assert (report.rejected, report.written) == (1, 1)
    stored = lake.sql("select json from fhir_resources where id = 'q2'").to_pylist()[0]["json"]
    assert orjson.loads(stored)["valueQuantity"]["value"] == 1e29
    assert "\U0001F600" in lake.sql("select json from fhir_resources where id = 's2'").to_pylist()[0]["json"]


def test_the_lake_keeps_its_extra_views_up_to_date_on_later_runs(tmp_path):
    from ingest.fhir.pipeline import DEFAULT_VIEWS

    extra = tmp_path / "extra"
    extra.mkdir()
    view = {"resourceType": "ViewDefinition", "name": "patient_gender", "resource": "Patient", "status": "active",
            "select": [{"column": [{"name": "id", "path": "getResourceKey()"}, {"name": "gender", "path": "gender"}]}]}
    (extra / "gender.json").write_text(json.dumps(view))
    for name in ("a", "b"):
        (tmp_path / f"{name}.ndjson").write_bytes(orjson.dumps({"resourceType": "Patient", "id": name,
                                                                "gender": "female"}) + b"\n")
    lake = Lake(tmp_path / "lake")
    ingest_fhir(lake, [tmp_path / "a.ndjson"], views_dir=[DEFAULT_VIEWS, extra / "gender.json"])  # one file
    report = ingest_fhir(lake, [tmp_path / "b.ndjson"])  # no extra views named: the lake still has that one
    assert report.views["patient_gender"] == 2
    assert sorted(r["id"] for r in _rows(lake, "view_patient_gender")) == ["a", "b"]
    # an edited view replaces the lake's copy; re-running only it recomputes the others too
    view["select"][0]["column"].append({"name": "active", "path": "active", "type": "boolean"})
    (extra / "gender.json").write_text(json.dumps(view))
    counts = reflatten_views(lake, [extra, tmp_path / "extra" / ".." / "extra"])  # one folder named twice
    assert counts["patient_gender"] == 2 and counts["patient"] == 2
    assert "active" in lake.read("view_patient_gender").column_names


def test_a_run_that_rejects_everything_still_leaves_a_queryable_lake(tmp_path):
    (tmp_path / "bad.ndjson").write_text('{"resourceType": "Patient"}\n{not json\n')
    lake = Lake(tmp_path / "lake")
    report = ingest_fhir(lake, [tmp_path / "bad.ndjson"])
    assert (report.read, report.written, report.rejected) == (2, 0, 2)
    assert lake.sql("select count(*) n from fhir_resources").to_pylist() == [{"n": 0}]
    assert lake.sql("select count(*) n from view_patient").to_pylist() == [{"n": 0}]


def test_a_view_value_of_the_wrong_json_type_is_a_reject_not_a_silent_null(tmp_path):
    lab = {"resourceType": "Observation", "status": "final", "subject": {"reference": "Patient/p"},
           "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]}}
    lines = [dict(lab, id="text", valueQuantity={"value": "12.5", "unit": "mg/dL"}),
             dict(lab, id="flag", valueQuantity={"value": True, "unit": "mg/dL"}),
             dict(lab, id="count", valueInteger="3"),
             dict(lab, id="good", valueQuantity={"value": 12.5, "unit": "mg/dL"})]
    (tmp_path / "Observation.ndjson").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in lines))
    lake = Lake(tmp_path / "lake")
    report = ingest_fhir(lake, [tmp_path / "Observation.ndjson"])
    assert report.written == 4 and report.view_rejects == 3  # the resources are kept as written
    reasons = {r["location"]: r["reason"] for r in _rejects(lake)}
    assert reasons == {
        "Observation/text": "view observation: value_quantity is text, not a FHIR decimal (kept as null)",
        "Observation/flag": "view observation: value_quantity is a boolean, not a FHIR decimal (kept as null)",
        "Observation/count": "view observation: value_integer is text, not a FHIR integer (kept as null)"}
    values = {r["id"]: r["value_quantity"] for r in _rows(lake, "view_observation")}
    assert values == {"text": None, "flag": None, "count": None, "good": 12.5}


def test_cli_reject_summary_groups_reasons_and_counts_the_rest(tmp_path, capsys):
    from apps.cli.ingest_fhir import _print_reasons, _reason_group

    assert _reason_group("not valid JSON: unexpected character: line 1 column 2") == "not valid JSON"
    assert (_reason_group("view observation: effective_datetime is not a FHIR date/dateTime (kept as null)")
            == "view observation: effective_datetime is not a FHIR date/dateTime")
    lake = Lake(tmp_path / "lake")
    lake.add_rejects([{"source": "a.ndjson", "location": f"line {i}", "reason": reason}
                      for i, reason in enumerate(["not valid JSON: x", "not valid JSON: y", "Patient has no id",
                                                  "Observation has no id"], 1)], modality="fhir")
    _print_reasons(lake, lake.run_id, top=1)
    said = " ".join(capsys.readouterr().out.split())
    assert "not valid JSON │ 2 │ a.ndjson:line 1" in said
    assert "2 more reason(s)" in said and "has no id" not in said


def test_a_collection_date_column_is_a_list_of_timestamps_even_in_a_lake_that_held_text(tmp_path):
    from ingest.fhir.pipeline import DEFAULT_VIEWS
    from ingest.schema import TIMESTAMP, register

    extra = tmp_path / "extra"
    extra.mkdir()
    view = {"resourceType": "ViewDefinition", "name": "patient_times", "resource": "Patient", "status": "active",
            "select": [{"column": [{"name": "id", "path": "getResourceKey()"},
                                   {"name": "at", "path": "extension.value.ofType(dateTime)", "type": "dateTime",
                                    "collection": True}]}]}
    (extra / "times.json").write_text(json.dumps(view))
    times = {"a": ["2020-06", "2021-01-01T10:00:00+02:00"], "b": ["2020-02-30", "2022"], "c": []}
    for name, values in times.items():
        patient = {"resourceType": "Patient", "id": name,
                   "extension": [{"url": f"http://x/{i}", "valueDateTime": v} for i, v in enumerate(values)]}
        (tmp_path / f"{name}.ndjson").write_bytes(orjson.dumps(patient) + b"\n")
    lake = Lake(tmp_path / "lake")
    # a lake written before: the column as a list of text
    ingest_fhir(lake, [tmp_path / "a.ndjson"], views_dir=[DEFAULT_VIEWS, extra])
    old = pa.schema([("id", pa.string()), ("at", pa.list_(pa.string()))])
    register("view_patient_times", old)
    lake.write("view_patient_times", pa.table({"id": ["a"], "at": [times["a"]]}, schema=old), mode="overwrite")
    assert lake.read("view_patient_times").schema.field("at").type == pa.list_(pa.string())

    report = ingest_fhir(lake, [tmp_path / "b.ndjson", tmp_path / "c.ndjson"])  # later runs still append
    assert report.views["patient_times"] == 3 and report.view_rejects == 1
    table = lake.read("view_patient_times")
    assert table.schema.field("at").type == pa.list_(TIMESTAMP)
    assert table.schema.field("at_latest").type == pa.list_(TIMESTAMP)
    got = {r["id"]: ([t and t.isoformat() for t in r["at"]], [t and t.isoformat() for t in r["at_latest"]])
           for r in table.to_pylist()}
    assert got == {
        "a": (["2020-06-01T00:00:00+00:00", "2021-01-01T08:00:00+00:00"],
              ["2020-06-30T23:59:59.999999+00:00", "2021-01-01T08:00:00+00:00"]),
        "b": ([None, "2022-01-01T00:00:00+00:00"], [None, "2022-12-31T23:59:59.999999+00:00"]),  # 02-30: null
        "c": ([], [])}
    rejects = [r for r in _rejects(lake) if "patient_times" in r["reason"]]
    assert [(r["location"], r["reason"], r["raw"]) for r in rejects] == [
        ("Patient/b", "view patient_times: at is not a FHIR date/dateTime (kept as null)", "2020-02-30")]


def test_an_untyped_view_column_returning_an_object_rejects_the_resource_naming_the_view_file(tmp_path):
    from ingest.fhir.pipeline import DEFAULT_VIEWS

    extra = tmp_path / "extra"
    extra.mkdir()
    view = {"resourceType": "ViewDefinition", "name": "patient_language", "resource": "Patient", "status": "active",
            "select": [{"column": [{"name": "id", "path": "getResourceKey()"},
                                   {"name": "language", "path": "communication.language.coding.first()"}]}]}
    (extra / "language.json").write_text(json.dumps(view))
    patients = [{"resourceType": "Patient", "id": "coded", "communication": [
                    {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en"}]}}]},
                {"resourceType": "Patient", "id": "none"}]
    (tmp_path / "Patient.ndjson").write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in patients))
    lake = Lake(tmp_path / "lake")
    report = ingest_fhir(lake, [tmp_path / "Patient.ndjson"], views_dir=[DEFAULT_VIEWS, extra])
    assert report.written == 2 and report.views["patient_language"] == 1 and report.view_rejects == 1
    [reject] = [r for r in _rejects(lake) if "patient_language" in r["reason"]]
    assert reject["location"] == "Patient/coded"
    assert reject["reason"].startswith(
        f"cannot flatten: {lake.path / '_views' / 'patient_language.json'}: view 'patient_language': column"
        " 'language' (path 'communication.language.coding.first()') returned an object (members: system, code)")
    assert "select a member of it (e.g. communication.language.coding.first().system)" in reject["reason"]
