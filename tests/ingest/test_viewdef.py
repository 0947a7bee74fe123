"""ViewDefinition compilation beyond the conformance suite: column types as the spec writes them."""

from __future__ import annotations

import pyarrow as pa
import pytest

from ingest.fhir.pipeline import view_table_schema
from ingest.fhir.viewdef import ViewDefinitionError, compile_view
from ingest.schema import TIMESTAMP

OBS = {"resourceType": "Observation", "id": "o1", "effectiveDateTime": "2020-01-01T01:00:00+02:00",
       "valueQuantity": {"value": 5.5}}


def _view(column: dict) -> dict:
    return {"resourceType": "ViewDefinition", "name": "v", "resource": "Observation", "status": "active",
            "select": [{"column": [{"name": "id", "path": "getResourceKey()"}, column]}]}


@pytest.mark.parametrize(("declared", "short"), [
    ("dateTime", "dateTime"),
    ("http://hl7.org/fhir/StructureDefinition/dateTime", "dateTime"),  # the spec: relative URIs get this prefix
    ("http://hl7.org/fhirpath/System.DateTime", "dateTime"),
])
def test_a_type_uri_is_the_type_it_names(declared, short):
    view = compile_view(_view({"name": "at", "path": "effective.ofType(dateTime)", "type": declared}))
    assert dict(view.columns)["at"] == short
    schema = view_table_schema(view)
    assert schema.field("at").type == TIMESTAMP and schema.field("at_latest").type == TIMESTAMP
    table = view.to_table([OBS], timestamps=True)
    assert table.column("at").to_pylist()[0].isoformat() == "2019-12-31T23:00:00+00:00"


def test_a_decimal_type_uri_gives_a_number_column():
    view = compile_view(_view({"name": "v", "path": "value.ofType(Quantity).value",
                               "type": "http://hl7.org/fhir/StructureDefinition/decimal"}))
    assert view.arrow_schema.field("v").type == pa.float64()
    assert view.to_table([OBS]).column("v").to_pylist() == [5.5]


@pytest.mark.parametrize(("declared", "hint"), [
    ("datetime", "did you mean 'dateTime'"),
    ("DateTime", "did you mean 'dateTime'"),
    ("Integer", "did you mean 'integer'"),
    ("int", "a primitive column type is one of"),
    ("http://hl7.org/fhirpath/System.Float", "unknown FHIRPath system type"),
])
def test_a_misspelt_type_is_an_error_naming_the_column(declared, hint):
    with pytest.raises(ViewDefinitionError, match=hint) as err:
        compile_view(_view({"name": "at", "path": "effective.ofType(dateTime)", "type": declared}))
    assert "column 'at'" in str(err.value) and repr(declared) in str(err.value)


@pytest.mark.parametrize("declared", ["Quantity", "Count", "Observation.referenceRange",
                                      "http://example.org/StructureDefinition/local-type"])
def test_complex_types_and_other_uris_are_accepted(declared):
    view = compile_view(_view({"name": "x", "path": "value", "type": declared}))
    assert dict(view.columns)["x"] == declared


def test_a_column_without_type_keeps_the_boolean_or_number_its_path_returns():
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female", "deceasedBoolean": False,
               "multipleBirthInteger": 2, "name": [{"given": ["A", "B"]}, {"given": ["C"]}]}
    view = compile_view({"resource": "Patient", "name": "untyped", "select": [{"column": [
        {"name": "id", "path": "getResourceKey()"},
        {"name": "is_deceased", "path": "deceased.exists()"},
        {"name": "female", "path": "gender = 'female'"},
        {"name": "n_given", "path": "name.given.count()"},
        {"name": "birth_order", "path": "multipleBirth.ofType(integer)"},
        {"name": "half", "path": "name.given.count() / 2"},
        {"name": "first_given", "path": "name.given.first()"},
        {"name": "given_lengths", "path": "name.given.select(length())", "collection": True}]}]})
    table = view.to_table([patient])
    assert table.schema.types == [pa.string(), pa.bool_(), pa.bool_(), pa.int64(), pa.int64(), pa.float64(),
                                  pa.string(), pa.list_(pa.int64())]
    assert table.to_pylist() == [{"id": "p1", "is_deceased": True, "female": True, "n_given": 3, "birth_order": 2,
                                  "half": 1.5, "first_given": "A", "given_lengths": [1, 1, 1]}]


@pytest.mark.parametrize(("path", "fix"), [
    ("subject.where(resolve() is Patient).exists()", "getReferenceKey(Patient)"),
    ("effective.ofType(dateTime) < today()", "compare it with the current date in SQL"),
    ("code.memberOf('http://vs')", "no terminology server"),
    ("code.frobnicate()", "supported functions: all, as,"),
])
def test_an_unsupported_function_says_what_to_write_instead(tmp_path, path, fix):
    from ingest.fhir.viewdef import load_views

    (tmp_path / "mine.json").write_text(__import__("json").dumps(_view({"name": "c", "path": path})))
    with pytest.raises(ViewDefinitionError) as err:
        load_views(tmp_path)
    message = str(err.value)
    assert str(tmp_path / "mine.json") in message and "column 'c'" in message and repr(path) in message
    assert fix in message


@pytest.mark.parametrize("generate", [True, False])
def test_an_error_on_the_data_names_the_column(generate):
    from ingest.fhir.viewdef import ViewEvaluationError

    view = compile_view(_view({"name": "high", "path": "value.ofType(Quantity).value > 'a'"}), generate=generate)
    with pytest.raises(ViewEvaluationError, match="view 'v': column 'high': cannot compare int with str"):
        view.rows(dict(OBS, valueQuantity={"value": 3}))


@pytest.mark.parametrize("generate", [True, False])
def test_of_type_quantity_reads_an_age_and_of_type_string_a_code(generate):
    view = compile_view({"resource": "Condition", "name": "c", "select": [{"column": [
        {"name": "id", "path": "getResourceKey()"},
        {"name": "onset_value", "path": "onset.ofType(Quantity).value", "type": "decimal"},
        {"name": "onset_unit", "path": "onset.ofType(Quantity).unit.first()", "type": "string"},
        {"name": "note", "path": "extension.value.ofType(string).first()", "type": "string"}]}]},
        generate=generate)
    conditions = [{"resourceType": "Condition", "id": "a", "onsetAge": {"value": 52, "unit": "a"},
                   "extension": [{"url": "x", "valueCode": "c1"}]},
                  {"resourceType": "Condition", "id": "q", "onsetQuantity": {"value": 3, "unit": "mo"},
                   "extension": [{"url": "x", "valueUri": "http://u"}]}]
    assert view.to_table(conditions).to_pylist() == [
        {"id": "a", "onset_value": 52.0, "onset_unit": "a", "note": "c1"},
        {"id": "q", "onset_value": 3.0, "onset_unit": "mo", "note": None}]


def test_a_collection_date_column_becomes_lists_of_timestamps():
    view = compile_view({"resource": "Patient", "name": "p", "select": [{"column": [
        {"name": "id", "path": "getResourceKey()"},
        {"name": "born", "path": "extension.value.ofType(date)", "type": "date", "collection": True},
        {"name": "seen", "path": "extension.value.ofType(instant)", "type": "instant", "collection": True}]}]})
    assert view.temporal_columns == ["born", "seen"] and view.partial_columns == ["born"]
    patients = [{"resourceType": "Patient", "id": p, "extension": [{"url": "u", "valueDate": d} for d in dates]
                 + [{"url": "i", "valueInstant": "2020-01-01T00:00:00+01:00"}]}
                for p, dates in (("a", ["2020", "2021-03"]), ("b", []), ("c", ["2020-02-03"]))]
    table = view.to_table(patients, timestamps=True)
    assert table.schema == view_table_schema(view).remove_metadata()
    assert table.schema.field("born_latest").type == pa.list_(TIMESTAMP)
    assert [[t.isoformat() for t in ts] for ts in table.column("born").to_pylist()] == [
        ["2020-01-01T00:00:00+00:00", "2021-03-01T00:00:00+00:00"], [], ["2020-02-03T00:00:00+00:00"]]
    assert [[t.isoformat() for t in ts] for ts in table.column("born_latest").to_pylist()] == [
        ["2020-12-31T23:59:59.999999+00:00", "2021-03-31T23:59:59.999999+00:00"], [],
        ["2020-02-03T23:59:59.999999+00:00"]]
    assert [t.isoformat() for ts in table.column("seen").to_pylist() for t in ts] == [
        "2019-12-31T23:00:00+00:00"] * 3
    # sliced and chunked lists with null rows keep their shape
    text = view.to_table(patients).slice(1)
    chunked = pa.Table.from_batches([*text.to_batches(), *text.to_batches()])
    chunked = chunked.set_column(1, "born", pa.chunked_array([pa.array([None, ["2020"]], pa.list_(pa.string())),
                                                              *chunked.column("born").chunks[1:]]))
    parsed = view.with_timestamps(chunked).column("born").to_pylist()
    assert [None if ts is None else [t.year for t in ts] for ts in parsed] == [None, [2020], [], [2020]]


def test_a_collection_date_column_name_and_latest_may_not_clash():
    with pytest.raises(ViewDefinitionError, match="'at_latest' is taken by the lake"):
        compile_view(_view({"name": "at", "path": "effective.ofType(dateTime)", "type": "dateTime",
                            "collection": True}) | {"select": [{"column": [
                                {"name": "at", "path": "effective.ofType(dateTime)", "type": "dateTime",
                                 "collection": True}, {"name": "at_latest", "path": "id"}]}]})


@pytest.mark.parametrize("generate", [True, False])
def test_an_untyped_quantity_value_is_a_number_column(generate):
    view = compile_view({"resource": "Observation", "name": "q", "select": [{"column": [
        {"name": "id", "path": "getResourceKey()"},
        {"name": "value", "path": "value.ofType(Quantity).value"},
        {"name": "low", "path": "value.ofType(Range).low.value"},
        {"name": "component_values", "path": "component.value.ofType(Quantity).value", "collection": True},
        {"name": "unit", "path": "value.ofType(Quantity).unit"},
        {"name": "by_key", "path": "valueQuantity.value"}]}]}, generate=generate)
    # the path names the Quantity, whose value is a decimal in every FHIR version; a plain member such as
    # valueQuantity would need a FHIR schema to type, so it stays text
    assert dict(view.columns) == {"id": None, "value": "decimal", "low": "decimal", "component_values": "decimal",
                                  "unit": None, "by_key": None}
    observations = [{"resourceType": "Observation", "id": "o1", "valueQuantity": {"value": 4, "unit": "mg"},
                     "component": [{"valueQuantity": {"value": 1.5}}, {"valueAge": {"value": 2}}]},
                    {"resourceType": "Observation", "id": "o2", "valueRange": {"low": {"value": 0.5}}}]
    table = view.to_table(observations)
    assert table.schema.types == [pa.string(), pa.float64(), pa.float64(), pa.list_(pa.float64()), pa.string(),
                                  pa.string()]
    assert table.to_pylist() == [
        {"id": "o1", "value": 4.0, "low": None, "component_values": [1.5, 2.0], "unit": "mg", "by_key": "4"},
        {"id": "o2", "value": None, "low": 0.5, "component_values": [], "unit": None, "by_key": None}]


@pytest.mark.parametrize("generate", [True, False])
@pytest.mark.parametrize(("path", "collection"), [("code.coding.first()", False), ("code.coding", True),
                                                  ("code.coding.where(code = 'b')", False)])
def test_an_untyped_column_returning_an_object_is_an_error_naming_file_view_column_and_fix(
        tmp_path, generate, path, collection):
    import json

    from ingest.fhir.viewdef import ViewEvaluationError, load_views

    column = {"name": "coding", "path": path} | ({"collection": True} if collection else {})
    (tmp_path / "mine.json").write_text(json.dumps(_view(column)))
    view = load_views(tmp_path)[0] if generate else compile_view(_view(column), generate=False,
                                                                   source=tmp_path / "mine.json")
    obs = dict(OBS, code={"coding": [{"system": "http://loinc.org", "code": "b", "display": "B"}]})
    with pytest.raises(ViewEvaluationError) as err:
        view.rows(obs)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'mine.json'}: view 'v': column 'coding' (path {path!r}) returned an"
                              " object (members: system, code, display)")
    assert f"select a member of it (e.g. {path}.system)" in message and '"type": "Coding"' in message
    assert "http://loinc.org" not in message  # names the members, never the data
    # a primitive, or an object the column declares, is written as before
    assert view.rows(dict(OBS, code={"coding": []})) == [("o1", [] if collection else None)]
    typed = compile_view(_view(column | {"type": "Coding"}), generate=generate)
    assert typed.to_table([obs]).column("coding").to_pylist()[0] in (
        '{"system":"http://loinc.org","code":"b","display":"B"}',
        ['{"system":"http://loinc.org","code":"b","display":"B"}'])
