"""Run the SQL-on-FHIR v2 conformance suite against :mod:`ingest.fhir.viewdef` and write its test report.

Usage::

    python -m ingest.fhir.conformance [--suite DIR] [--out test_report.json]

The suite is a folder of JSON files ``{title, resources[], tests[{title, tags, view, expect[] | expectCount |
expectError, expectColumns}]}``; rows are compared as multisets (order-insensitive) and ``expectColumns``
checks the column order. The report has the suite's format
``{"file.json": {"tests": [{"name": title, "result": {"passed": bool}}]}}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from ingest.fhir.viewdef import ViewDefinitionError, compile_view

DEFAULT_SUITE = Path(__file__).resolve().parents[3] / "shared" / "data" / "fhir" / "sql-on-fhir-v2-tests"


def load_suite(directory: Path) -> list[tuple[str, dict, dict]]:
    """All cases of the suite as ``(file name, file document, test)``, files in name order."""
    cases = []
    for path in sorted(Path(directory).glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        for test in doc.get("tests", []):
            cases.append((path.name, doc, test))
    return cases


def _canonical(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, float):
        return round(value, 12)
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    return value


def _row_key(row: dict) -> str:
    return json.dumps(_canonical(row), sort_keys=True)


def check_case(resources: list[dict], test: dict) -> str | None:
    """Run one suite test; ``None`` when it passes, else a short explanation of the difference."""
    try:
        view = compile_view(test["view"], name=test.get("title"))
        rows = [row for resource in resources for row in view.rows(resource)]
    except ViewDefinitionError as exc:
        return None if test.get("expectError") else f"unexpected error: {exc}"
    if test.get("expectError"):
        return f"expected an error, got {len(rows)} row(s)"
    names = [name for name, _ in view.columns]
    if "expectColumns" in test and names != test["expectColumns"]:
        return f"columns {names} != expected {test['expectColumns']}"
    if "expectCount" in test:
        return None if len(rows) == test["expectCount"] else f"{len(rows)} rows != {test['expectCount']}"
    got = Counter(_row_key(dict(zip(names, row, strict=True))) for row in rows)
    want = Counter(_row_key(row) for row in test.get("expect", []))
    if got == want:
        return None
    missing = list((want - got).elements())[:5]
    extra = list((got - want).elements())[:5]
    return f"rows differ: missing {missing}, unexpected {extra}"


def run_suite(directory: Path = DEFAULT_SUITE) -> tuple[dict, dict[str, Counter]]:
    """Run every case; returns the report and pass/total counts per tag (``shareable``, ``experimental``,
    ``total``)."""
    report: dict[str, dict] = {}
    counts: dict[str, Counter] = {}
    for file_name, doc, test in load_suite(directory):
        failure = check_case(doc.get("resources", []), test)
        passed = failure is None
        entry = report.setdefault(file_name, {"tests": []})
        entry["tests"].append({"name": test["title"], "result": {"passed": passed}})
        for tag in [*test.get("tags", []), "total"]:
            c = counts.setdefault(tag, Counter())
            c["total"] += 1
            c["passed"] += passed
    return report, counts


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; exit status 1 when a ``shareable`` test fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, default=DEFAULT_SUITE, help="folder of the suite's JSON files")
    parser.add_argument("--out", type=Path, default=Path("test_report.json"), help="report file to write")
    args = parser.parse_args(argv)
    if not args.suite.is_dir():
        print(f"suite folder not found: {args.suite}", file=sys.stderr)
        return 2
    report, counts = run_suite(args.suite)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for tag in ("shareable", "experimental", "total"):
        c = counts.get(tag, Counter())
        print(f"{tag:>12}: {c['passed']}/{c['total']} passed")
    print(f"report written to {args.out}")
    shareable = counts.get("shareable", Counter())
    return 0 if shareable["passed"] == shareable["total"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
