"""The SQL-on-FHIR v2 conformance suite (../shared/data/fhir/sql-on-fhir-v2-tests), one case per suite test.

Rows are compared order-insensitively, ``expectColumns`` checks the column order, ``expectError`` cases must
raise :class:`ViewDefinitionError` at compile or evaluation time. Every test passes, the ``experimental`` ones
(fn_boundary, fn_join) included, so none is marked xfail.
"""

from __future__ import annotations

import json

import pytest

from ingest.fhir.conformance import check_case, load_suite, main
from tests.conftest import SHARED_DATA, shared_data

SUITE = SHARED_DATA / "fhir" / "sql-on-fhir-v2-tests"


def _params() -> list:
    if not SUITE.is_dir():
        return [pytest.param(None, None, id="suite-missing",
                             marks=pytest.mark.skip(reason=f"conformance suite {SUITE} is missing"))]
    return [pytest.param(doc.get("resources", []), test, id=f"{file_name}::{test['title']}")
            for file_name, doc, test in load_suite(SUITE)]


@pytest.mark.parametrize(("resources", "test"), _params())
def test_suite_case(resources, test):
    failure = check_case(resources, test)
    assert failure is None, failure


def test_suite_is_complete():
    cases = load_suite(shared_data("fhir", "sql-on-fhir-v2-tests"))
    assert len({name for name, _, _ in cases}) == 22
    assert len(cases) == 134
    assert sum("shareable" in t.get("tags", []) for _, _, t in cases) == 123


def test_report_has_suite_format_and_all_shareable_pass(tmp_path, capsys):
    suite = shared_data("fhir", "sql-on-fhir-v2-tests")
    out = tmp_path / "test_report.json"
    assert main(["--suite", str(suite), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report) == {p.name for p in suite.glob("*.json")}
    entry = report["fn_first.json"]["tests"][0]
    assert entry == {"name": "table level first()", "result": {"passed": True}}
    assert "shareable: 123/123 passed" in capsys.readouterr().out


def test_check_case_reports_a_wrong_expectation():
    test = {"view": {"resource": "Patient", "select": [{"column": [{"name": "id", "path": "id"}]}]},
            "expect": [{"id": "other"}]}
    failure = check_case([{"resourceType": "Patient", "id": "p1"}], test)
    assert failure is not None and "rows differ" in failure
