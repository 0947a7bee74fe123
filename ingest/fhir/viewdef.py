"""SQL-on-FHIR v2 ViewDefinitions compiled once into Python closures (https://sql-on-fhir.org/ig/latest).

A view is validated and compiled once by :func:`compile_view`; :meth:`CompiledView.rows` then flattens one
resource (a JSON ``dict``) into row tuples and :meth:`CompiledView.to_table` a stream of resources into an
Arrow table. Supported: ``select`` (nested), ``column`` (``name``, ``path``, ``type``, ``collection``),
``forEach``, ``forEachOrNull``, ``repeat``, ``unionAll``, ``where``, ``constant`` (``%name``) and
``%rowIndex``; FHIRPath is the subset compiled by :mod:`ingest.fhir.fhirpath`.

Example:
    >>> view = compile_view({"resource": "Patient", "select": [{"column": [
    ...     {"name": "id", "path": "getResourceKey()"}, {"name": "gender", "path": "gender"}]}]})
    >>> view.rows({"resourceType": "Patient", "id": "p1", "gender": "female"})
    [('p1', 'female')]
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from difflib import get_close_matches
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ingest.fhir.fhirpath import (
    SLOW,
    Evaluator,
    FhirPathError,
    chain_ops,
    compile_filter,
    compile_path,
    compile_scalar,
    generated_code,
    op_lines,
    reference_key,
    result_type,
    scalar_chains,
)
from ingest.schema import TIMESTAMP, utc_period_ends, utc_timestamps

__all__ = ["CompiledView", "ViewDefinitionError", "ViewEvaluationError", "compile_view", "load_views",
           "arrow_type", "TEMPORAL_TYPES"]

RowFn = Callable[[Any, int], list[tuple]]
ValueFn = Callable[[list, int], Any]  # a column's value on a focus collection (``[item]`` or ``[]``)
ScalarFn = Callable[[Any], Any]  # a column's value on a focus item, or SLOW (see fhirpath.compile_scalar)

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_ITERATORS = ("forEach", "forEachOrNull", "repeat")
_SELECT_KEYS = frozenset(("column", "select", "unionAll", "forEach", "forEachOrNull", "repeat"))
_COLUMN_KEYS = frozenset(("name", "path", "type", "collection", "description", "tag"))
TEMPORAL_TYPES = frozenset(("date", "dateTime", "instant"))
PARTIAL_TYPES = frozenset(("date", "dateTime"))  # their values may be a year, a month or a day
LATEST_SUFFIX = "_latest"  # the lake column added after each date/dateTime column (see with_timestamps)
FHIR_PRIMITIVES = frozenset((
    "base64Binary", "boolean", "canonical", "code", "date", "dateTime", "decimal", "id", "instant", "integer",
    "integer64", "markdown", "oid", "positiveInt", "string", "time", "unsignedInt", "uri", "url", "uuid", "xhtml"))
_SD_PREFIX = "http://hl7.org/fhir/StructureDefinition/"  # the spec: relative type URIs are given this prefix
_SYSTEM_PREFIX = "http://hl7.org/fhirpath/System."
_SYSTEM_TYPES = {"String": "string", "Boolean": "boolean", "Integer": "integer", "Decimal": "decimal",
                 "Date": "date", "DateTime": "dateTime", "Time": "time"}
_ARROW_TYPES: dict[str, pa.DataType] = {
    "boolean": pa.bool_(), "integer": pa.int64(), "positiveInt": pa.int64(), "unsignedInt": pa.int64(),
    "integer64": pa.int64(), "decimal": pa.float64(),
}


class ViewDefinitionError(ValueError):
    """An invalid ViewDefinition (bad structure, bad FHIRPath, unknown constant, mismatched unionAll)."""


class ViewEvaluationError(ViewDefinitionError):
    """A valid view that cannot be applied to a resource (several values in a non-collection column, a
    ``where`` path that is not boolean). The message names the view and column, never the data."""


def arrow_type(fhir_type: str | None, collection: bool = False) -> pa.DataType:
    """Arrow type of a column: booleans, integers and decimals keep their type, everything else (dates and
    times included, as FHIR text) is ``string``; ``collection`` columns are lists of it. A column without a
    ``type`` takes the one its path surely returns (:func:`ingest.fhir.fhirpath.result_type`: ``exists()`` is
    boolean, ``count()`` integer), else ``string``."""
    base = _ARROW_TYPES.get(fhir_type or "", pa.string())
    return pa.list_(base) if collection else base


class _Column:
    __slots__ = ("name", "path", "type", "collection")

    def __init__(self, name: str, path: str, type_: str | None, collection: bool) -> None:
        self.name, self.path, self.type, self.collection = name, path, type_, collection


class _Node:
    """A compiled select node: its columns (in output order) and its row function ``fn(focus, row_index)``."""

    __slots__ = ("columns", "rows")

    def __init__(self, columns: list[_Column], rows: RowFn) -> None:
        self.columns = columns
        self.rows = rows


class _Builder:
    def __init__(self, view_name: str, constants: dict[str, Any], source: str | None = None) -> None:
        self.view_name = view_name
        self.constants = constants
        self.source = source  # the ViewDefinition file, when the view was read from one

    def fail(self, message: str) -> ViewDefinitionError:
        return ViewDefinitionError(f"view {self.view_name!r}: {message}")

    def path(self, text: Any, where: str) -> Evaluator:
        if not isinstance(text, str) or not text.strip():
            raise self.fail(f"{where}: a FHIRPath expression (non-empty string) is required, got {text!r}")
        try:
            return compile_path(text, constants=self.constants)
        except FhirPathError as exc:
            raise self.fail(f"{where}: {exc}") from None

    def column_value(self, column: _Column) -> tuple[ScalarFn | None, ValueFn]:
        """The column's fast scalar function (None when its path has none) and its full evaluator.

        A column without a ``type`` (none declared, none inferred) must return primitives: an object is a
        :class:`ViewEvaluationError` (its fast function says SLOW on one, so the full evaluator raises it)."""
        fn = self.path(column.path, f"column {column.name!r}")
        view_name, name, path = self.view_name, column.name, column.path
        primitive = column.type is None
        not_primitive = self.not_primitive(column)

        def evaluate(focus: list, ri: int) -> list:
            try:
                return fn(focus, ri)
            except FhirPathError as exc:  # name the column, as the compile errors do
                raise ViewEvaluationError(f"view {view_name!r}: column {name!r}: {exc}") from None
        if column.collection:
            def values(focus: list, ri: int) -> list:
                out = list(evaluate(focus, ri))  # a copy: never hand out the resource's list
                if primitive:
                    for v in out:
                        if type(v) is dict:
                            raise not_primitive(v)
                return out
            return None, values

        def value(focus: list, ri: int) -> Any:
            out = evaluate(focus, ri)
            if not out:
                return None
            if len(out) == 1:
                if primitive and type(out[0]) is dict:
                    raise not_primitive(out[0])
                return out[0]
            raise ViewEvaluationError(
                f"view {view_name!r}: column {name!r} (path {path!r}) returned {len(out)} values; set"
                " \"collection\": true or narrow the path, e.g. with .first()")
        fast = compile_scalar(path)
        if fast is not None and primitive:
            scalar = fast

            def fast(item: Any) -> Any:
                v = scalar(item)
                return SLOW if type(v) is dict else v
        return fast, value

    def not_primitive(self, column: _Column) -> Callable[[dict], ViewEvaluationError]:
        """The error of a column without a ``type`` whose path returned an object (the spec: a column that
        returns a non-primitive must say its type); it names the view file, view, column, path and the object's
        member names (never their values), and says how to fix the view."""
        where = f"{self.source}: " if self.source else ""
        view_name, name, path = self.view_name, column.name, column.path

        def error(obj: dict) -> ViewEvaluationError:
            members = [k for k in obj if k != "resourceType"]
            shown = ", ".join(members[:6]) + (", ..." if len(members) > 6 else "")
            example = next((k for k in members if type(obj[k]) in (str, int, float, bool)), "code")
            return ViewEvaluationError(
                f"{where}view {view_name!r}: column {name!r} (path {path!r}) returned an object (members: {shown}),"
                " but a column without a \"type\" must return primitive values: select a member of it (e.g."
                f" {path}.{example}) or declare the column's FHIR type (e.g. \"type\": \"Coding\"), which"
                " stores the object as JSON text")
        return error

    def select(self, spec: Any, where: str) -> _Node:
        if not isinstance(spec, dict):
            raise self.fail(f"{where}: a select must be an object, got {type(spec).__name__}")
        unknown = set(spec) - _SELECT_KEYS - {"description"}
        if unknown:
            raise self.fail(f"{where}: unknown key(s) {sorted(unknown)} in select")
        iterators = [k for k in _ITERATORS if k in spec]
        if len(iterators) > 1:
            raise self.fail(f"{where}: use only one of forEach, forEachOrNull, repeat (got {iterators})")

        columns: list[_Column] = []
        raw_columns = spec.get("column", [])
        if not isinstance(raw_columns, list):
            raise self.fail(f"{where}: 'column' must be a list")
        for i, col in enumerate(raw_columns):
            columns.append(self.column_spec(col, f"{where}.column[{i}]"))
        values = [self.column_value(c) for c in columns]

        parts: list[_Node] = []
        raw_selects = spec.get("select", [])
        if not isinstance(raw_selects, list):
            raise self.fail(f"{where}: 'select' must be a list")
        for i, sub in enumerate(raw_selects):
            parts.append(self.select(sub, f"{where}.select[{i}]"))
        if "unionAll" in spec:
            parts.append(self.union(spec["unionAll"], f"{where}.unionAll"))
        all_columns = columns + [c for p in parts for c in p.columns]
        body = _body(values, [p.rows for p in parts])

        if not iterators:
            return _Node(all_columns, body)
        kind = iterators[0]
        if kind == "repeat":
            paths = spec["repeat"]
            if not isinstance(paths, list) or not paths:
                raise self.fail(f"{where}: 'repeat' must be a non-empty list of FHIRPath expressions")
            fns = [self.path(p, f"{where}.repeat[{i}]") for i, p in enumerate(paths)]
            return _Node(all_columns, _repeat_rows(fns, body))
        fn = self.path(spec[kind], f"{where}.{kind}")
        if kind == "forEach":
            return _Node(all_columns, _for_each_rows(fn, body))
        return _Node(all_columns, _for_each_or_null_rows(fn, body))

    def union(self, branches: Any, where: str) -> _Node:
        if not isinstance(branches, list) or not branches:
            raise self.fail(f"{where}: 'unionAll' must be a non-empty list of selects")
        nodes = [self.select(b, f"{where}[{i}]") for i, b in enumerate(branches)]
        names = [c.name for c in nodes[0].columns]
        for i, node in enumerate(nodes[1:], 1):
            other = [c.name for c in node.columns]
            if other != names:
                raise self.fail(f"{where}[{i}]: unionAll branches must have the same columns in the same"
                                f" order; got {other}, expected {names}")
        fns = [n.rows for n in nodes]

        def union_rows(focus: Any, ri: int) -> list[tuple]:
            out: list[tuple] = []
            for f in fns:
                out.extend(f(focus, ri))
            return out
        return _Node(nodes[0].columns, union_rows)

    def column_spec(self, col: Any, where: str) -> _Column:
        if not isinstance(col, dict):
            raise self.fail(f"{where}: a column must be an object")
        unknown = set(col) - _COLUMN_KEYS
        if unknown:
            raise self.fail(f"{where}: unknown key(s) {sorted(unknown)} in column")
        name = col.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise self.fail(f"{where}: column name {name!r} must match {_NAME_RE.pattern}")
        type_ = col.get("type")
        if type_ is not None and not isinstance(type_, str):
            raise self.fail(f"{where}: column type must be a string")
        if type_ is not None:
            type_ = self.column_type(type_, f"{where}: column {name!r}")
        collection = col.get("collection", False)
        if not isinstance(collection, bool):
            raise self.fail(f"{where}: 'collection' must be true or false")
        if not isinstance(col.get("path"), str):
            raise self.fail(f"{where}: column {name!r} needs a 'path' (FHIRPath string)")
        if type_ is None:  # a boolean, integer or decimal path gives that column, not the text 'true' or '3'
            try:
                type_ = result_type(col["path"], self.constants)
            except FhirPathError:
                pass  # compiling the path reports it
        return _Column(name, col["path"], type_, collection)

    def column_type(self, type_: str, where: str) -> str:
        """The FHIR type a column declares, as its short name: ``http://hl7.org/fhir/StructureDefinition/dateTime``
        is ``dateTime`` (the spec gives relative type URIs that prefix), ``http://hl7.org/fhirpath/System.Date``
        is ``date``. A name that is no FHIR primitive but reads like one (``datetime``, ``DateTime``, ``int``) is an
        error, not a silent text column; complex types (``Quantity``, ``Observation.referenceRange``) and other
        absolute URIs are kept as they are."""
        short = type_[len(_SD_PREFIX):] if type_.startswith(_SD_PREFIX) else type_
        if short.startswith(_SYSTEM_PREFIX):
            system = short[len(_SYSTEM_PREFIX):]
            if system not in _SYSTEM_TYPES:
                raise self.fail(f"{where}: unknown FHIRPath system type {type_!r}; known: "
                                f"{', '.join(_SYSTEM_PREFIX + t for t in _SYSTEM_TYPES)}")
            return _SYSTEM_TYPES[system]
        if short in FHIR_PRIMITIVES or ":" in short:
            return short
        alike = [p for p in FHIR_PRIMITIVES if p.lower() == short.lower()]
        if not alike and short[:1].islower():  # a capital starts a complex type (Count is no misspelt code)
            alike = get_close_matches(short, sorted(FHIR_PRIMITIVES), n=1, cutoff=0.75)
        if alike or short[:1].islower():
            hint = f"did you mean {alike[0]!r}? " if alike else ""
            raise self.fail(f"{where}: unknown FHIR type {type_!r}; {hint}a primitive column type is one of"
                            f" {', '.join(sorted(FHIR_PRIMITIVES, key=str.lower))} (a complex type starts with a"
                            " capital, e.g. Quantity)")
        return short


def _row(values: list[tuple[ScalarFn | None, ValueFn]]) -> Callable[[Any, int], tuple]:
    """The column values for one focus element (None: the empty focus of forEachOrNull); each column tries
    its scalar fast path first and falls back to the full evaluator when that says SLOW."""
    fasts = [fast for fast, _ in values]
    all_fast = all(fast is not None for fast in fasts)

    def row(focus: Any, ri: int) -> tuple:
        if all_fast and focus is not None:
            out = [fast(focus) for fast in fasts]
            if SLOW not in out:  # JSON values never equal SLOW, so this is an identity test
                return tuple(out)
        out = []
        f = None
        for fast, full in values:
            if fast is not None and focus is not None:
                v = fast(focus)
                if v is not SLOW:
                    out.append(v)
                    continue
            if f is None:
                f = [] if focus is None else [focus]
            out.append(full(f, ri))
        return tuple(out)
    return row


def _body(values: list[tuple[ScalarFn | None, ValueFn]], parts: list[RowFn]) -> RowFn:
    """Rows for one focus element: its column values times the rows of each nested select / unionAll."""
    row = _row(values)
    if not parts:
        return lambda focus, ri: [row(focus, ri)]

    def body(focus: Any, ri: int) -> list[tuple]:
        acc = [row(focus, ri)]
        for part in parts:
            rows = part(focus, ri)
            if not rows:
                return []
            if len(rows) == 1 and len(acc) == 1:
                acc = [acc[0] + rows[0]]
            else:
                acc = [a + b for a in acc for b in rows]
        return acc
    return body


def _for_each_rows(fn: Evaluator, body: RowFn) -> RowFn:
    def for_each(focus: Any, ri: int) -> list[tuple]:
        out: list[tuple] = []
        for i, item in enumerate(fn([focus], ri)):
            out.extend(body(item, i))
        return out
    return for_each


def _for_each_or_null_rows(fn: Evaluator, body: RowFn) -> RowFn:
    """Like forEach, but an empty collection gives one row evaluated on an empty focus (%rowIndex 0)."""
    def for_each_or_null(focus: Any, ri: int) -> list[tuple]:
        items = fn([focus], ri)
        if not items:
            return body(None, 0)
        out: list[tuple] = []
        for i, item in enumerate(items):
            out.extend(body(item, i))
        return out
    return for_each_or_null


def _repeat_rows(fns: list[Evaluator], body: RowFn) -> RowFn:
    def repeat(focus: Any, ri: int) -> list[tuple]:
        items: list = []

        def visit(node: Any) -> None:
            for fn in fns:
                for child in fn([node], ri):
                    items.append(child)
                    visit(child)
        visit(focus)
        out: list[tuple] = []
        for i, item in enumerate(items):
            out.extend(body(item, i))
        return out
    return repeat


class _Generator:
    """Compiles a whole view into generated Python (one function per select that yields several rows), so a
    resource's rows come from straight-line code: member chains of the columns inlined with shared prefixes
    computed once (the scalar fast path of :func:`ingest.fhir.fhirpath.compile_scalar`), other columns,
    iterator paths and ``repeat`` calling the closure engine. A column whose chain says ``SLOW`` on the data
    at hand is evaluated by its full evaluator, so the rows are those of the closure engine."""

    def __init__(self, builder: _Builder) -> None:
        self.b = builder
        self.names: dict[str, Any] = {"SLOW": SLOW, "reference_key": reference_key}
        self.lines: list[str] = []
        self.count = 0

    def bind(self, prefix: str, value: Any) -> str:
        self.count += 1
        name = f"{prefix}{self.count}"
        self.names[name] = value
        return name

    def build(self, selects: list) -> RowFn:
        root = self.body({"select": selects}, "view")
        source = "\n".join(self.lines)
        exec(generated_code(source, f"<view {self.b.view_name[:60]}>"), self.names)  # noqa: S102 - from the view
        return self.names[root]

    def node(self, spec: dict, where: str) -> str:
        """Name of the function ``fn(x, ri) -> rows`` of one select (with its iterator)."""
        if "repeat" in spec:
            return self.bind("closure", self.b.select(spec, where).rows)
        kind = next((k for k in ("forEach", "forEachOrNull") if k in spec), None)
        body = self.body(spec, where)
        if kind is None:
            return body
        items = self.bind("items", self.b.path(spec[kind], f"{where}.{kind}"))
        self.count += 1
        name = f"each{self.count}"
        self.lines += [f"def {name}(x, ri):", f"    items = {items}([x], ri)"]
        if kind == "forEachOrNull":
            self.lines += ["    if not items:", f"        return {body}(None, 0)"]
        self.lines += ["    out = []", "    for i, it in enumerate(items):", f"        out += {body}(it, i)",
                       "    return out"]
        return name

    def body(self, spec: dict, where: str) -> str:
        """Name of the function ``fn(x, ri) -> rows`` of a select's columns and nested selects on one focus
        ``x`` (None: the empty focus of forEachOrNull)."""
        segments: list[tuple[str, Any]] = []  # ("cols", [column, ...]) or ("rows", function name)
        self.segments(spec, where, segments)
        self.count += 1
        name = f"body{self.count}"
        code: list[str] = []
        prefixes: dict[tuple, str] = {(): "x"}
        exprs: list[str] = []
        needs_fx = False
        for kind, value in segments:
            if kind == "rows":
                continue
            for column in value:
                fast, full = self.b.column_value(column)
                full_name = self.bind("full", full)
                chains = scalar_chains(column.path) if fast is not None else None
                var = f"c{len(exprs)}"
                exprs.append(var)
                if chains is None:
                    needs_fx = True
                    code.append(f"{var} = {full_name}(fx, ri)")
                    continue
                finals = [self.chain(chain_ops(chain), prefixes, code) for chain in chains]
                code.append(f"{var} = {finals[0]}")
                for other in finals[1:]:
                    code += [f"if {var} is None:", f"    {var} = {other}"]
                if column.type is None:  # an object in an untyped column: the full evaluator reports it
                    code += [f"if {var} is SLOW or type({var}) is dict:", f"    {var} = {full_name}([x], ri)"]
                else:
                    code += [f"if {var} is SLOW:", f"    {var} = {full_name}([x], ri)"]
        lines = [f"def {name}(x, ri):"]
        if needs_fx:
            lines.append("    fx = [] if x is None else [x]")
        lines += ["    " + line for line in code]
        parts, loops, i = [], [], 0
        for kind, value in segments:
            if kind == "rows":
                lines += [f"    m{len(loops)} = {value}(x, ri)", f"    if not m{len(loops)}:", "        return []"]
                parts.append(f"t{len(loops)}")
                loops.append(f"for t{len(loops)} in m{len(loops)}")
            elif value:
                parts.append("(" + "".join(f"{e}, " for e in exprs[i:i + len(value)]) + ")")
                i += len(value)
        row = " + ".join(parts) if parts else "()"
        lines.append(f"    return [{row} {' '.join(loops)}]" if loops else f"    return [{row}]")
        self.lines += lines
        return name

    def segments(self, spec: dict, where: str, out: list[tuple[str, Any]]) -> None:
        """A select's output in order: runs of columns on the same focus (nested plain selects included)
        and the functions of nested selects that give any number of rows."""
        out.append(("cols", [self.b.column_spec(c, f"{where}.column[{i}]")
                             for i, c in enumerate(spec.get("column", []))]))
        for i, sub in enumerate(spec.get("select", [])):
            sub_where = f"{where}.select[{i}]"
            if _plain(sub):
                self.segments(sub, sub_where, out)
            else:
                out.append(("rows", self.node(sub, sub_where)))
        if "unionAll" in spec:
            branches = [self.node(b, f"{where}.unionAll[{i}]") for i, b in enumerate(spec["unionAll"])]
            self.count += 1
            name = f"union{self.count}"
            self.lines += [f"def {name}(x, ri):", "    return " + " + ".join(f"{b}(x, ri)" for b in branches)]
            out.append(("rows", name))

    def chain(self, ops: list[tuple], prefixes: dict[tuple, str], code: list[str]) -> str:
        """The variable holding the chain's value, emitting the ops of prefixes not computed yet."""
        for n in range(1, len(ops) + 1):
            key = tuple(ops[:n]) + (n == len(ops),)
            if key in prefixes:
                continue
            src = prefixes[tuple(ops[:n - 1]) + (False,)] if n > 1 else "x"
            dst = prefixes[key] = f"p{len(prefixes)}"
            code += op_lines(ops[n - 1], src, dst, last=n == len(ops))
        return prefixes[tuple(ops) + (True,)]


def _plain(spec: Any) -> bool:
    """A select that always gives exactly one row per focus (columns and plain selects only)."""
    return (isinstance(spec, dict) and not any(k in spec for k in (*_ITERATORS, "unionAll"))
            and all(_plain(s) for s in spec.get("select", [])))


def _constants(view: dict, fail: Callable[[str], ViewDefinitionError]) -> dict[str, Any]:
    raw = view.get("constant", [])
    if not isinstance(raw, list):
        raise fail("'constant' must be a list")
    out: dict[str, Any] = {}
    for i, c in enumerate(raw):
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not _NAME_RE.match(c["name"]):
            raise fail(f"constant[{i}] needs a 'name' matching {_NAME_RE.pattern}")
        values = [k for k in c if k.startswith("value") and len(k) > 5 and k[5].isupper()]
        if len(values) != 1:
            raise fail(f"constant {c['name']!r} needs exactly one value[x] (e.g. valueString), got {values}")
        out[c["name"]] = c[values[0]]
    return out


def _where(view: dict, builder: _Builder, generate: bool) -> list[tuple[str, Evaluator, Callable | None]]:
    raw = view.get("where", [])
    if not isinstance(raw, list):
        raise builder.fail("'where' must be a list of {path: ...}")
    out = []
    for i, w in enumerate(raw):
        if not isinstance(w, dict):
            raise builder.fail(f"where[{i}] must be an object with a 'path'")
        fn = builder.path(w.get("path"), f"where[{i}]")
        out.append((w["path"], fn, compile_filter(w["path"], constants=builder.constants) if generate else None))
    return out


class CompiledView:
    """A ViewDefinition compiled once; apply it with :meth:`rows` or :meth:`to_table`.

    Attributes:
        name: the view's ``name`` (or the file stem it was loaded from).
        resource: the FHIR resource type it flattens, e.g. ``"Observation"``.
        columns: ``(name, FHIR type or None)`` per output column, in output order.
        arrow_schema: the Arrow schema of :meth:`to_table` (see :func:`arrow_type`).
        definition: the ViewDefinition JSON it was compiled from.
    """

    def __init__(self, name: str, resource: str, root: _Node, where: list[tuple[str, Evaluator, Callable | None]],
                 definition: dict, generated: RowFn | None = None) -> None:
        self.name = name
        self.resource = resource
        self.definition = definition
        self._columns = root.columns
        self.columns: list[tuple[str, str | None]] = [(c.name, c.type) for c in root.columns]
        self.arrow_schema = pa.schema(
            [pa.field(c.name, arrow_type(c.type, c.collection)) for c in root.columns],
            metadata={"tumorboard.view": name, "tumorboard.resource": resource})
        self._root = generated or root.rows
        self._where = where
        self.generated = generated is not None  # rows come from generated code (see _Generator)

    def __repr__(self) -> str:
        return f"CompiledView({self.name!r}, resource={self.resource!r}, columns={len(self.columns)})"

    @property
    def temporal_columns(self) -> list[str]:
        """Names of the ``date``/``dateTime``/``instant`` columns (``collection`` ones included: lists of them)."""
        return [c.name for c in self._columns if c.type in TEMPORAL_TYPES]

    @property
    def partial_columns(self) -> list[str]:
        """Names of the ``date``/``dateTime`` columns, whose values may be partial (a year, a month or a day):
        each gets a ``<name>_latest`` column in the lake (:meth:`with_timestamps`)."""
        return [c.name for c in self._columns if c.type in PARTIAL_TYPES]

    def rows(self, resource: dict) -> list[tuple]:
        """Rows (tuples in :attr:`columns` order) for one resource; ``[]`` for another resource type or when
        the view's ``where`` filters it out. Raises :class:`ViewEvaluationError` on data the view cannot
        flatten."""
        if type(resource) is not dict or resource.get("resourceType") != self.resource:
            return []
        focus = [resource]
        for text, fn, fast in self._where:
            if fast is not None:
                answer = fast(resource)
                if answer is True:
                    continue
                if answer is False:
                    return []
            try:
                result = fn(focus, 0)
            except FhirPathError as exc:
                raise ViewEvaluationError(f"view {self.name!r}: where path {text!r}: {exc}") from None
            if not result:
                return []
            if len(result) > 1 or type(result[0]) is not bool:
                raise ViewEvaluationError(
                    f"view {self.name!r}: where path {text!r} must return a single boolean, got"
                    f" {len(result)} value(s) of type {type(result[0]).__name__}")
            if not result[0]:
                return []
        try:
            return self._root(resource, 0)
        except FhirPathError as exc:
            raise ViewEvaluationError(f"view {self.name!r}: {exc}") from None

    def to_table(self, resources: Iterable[dict], *, timestamps: bool = False) -> pa.Table:
        """Flatten ``resources`` (other resource types are ignored) into a table of :attr:`arrow_schema`.

        With ``timestamps=True`` the date/dateTime/instant columns become ``timestamp[us, tz=UTC]``
        (see :meth:`with_timestamps`).
        """
        rows: list[tuple] = []
        for resource in resources:
            rows.extend(self.rows(resource))
        table = self.table_from_rows(rows)
        return self.with_timestamps(table) if timestamps else table

    def table_from_rows(self, rows: list[tuple], lost: list[tuple[str, int, Any]] | None = None) -> pa.Table:
        """Build the Arrow table of :attr:`arrow_schema` from rows returned by :meth:`rows`.

        A value whose JSON type does not fit its column (a string in a ``decimal`` column, a number in a
        ``boolean`` one) becomes null; ``lost``, when given, receives ``(column, row index, value)`` for each.
        """
        columns = list(zip(*rows, strict=True)) if rows else [()] * len(self.columns)
        arrays = [_array(list(values), field, lost)
                  for values, field in zip(columns, self.arrow_schema, strict=True)]
        return pa.Table.from_arrays(arrays, schema=self.arrow_schema)

    def with_timestamps(self, table: pa.Table) -> pa.Table:
        """Return ``table`` with the view's date/dateTime/instant string columns parsed to
        ``timestamp[us, tz=UTC]``: a partial date becomes the first instant of its period (see
        :func:`ingest.schema.utc_timestamps`), and after each date/dateTime column ``<name>_latest`` holds the
        last instant the value may denote (:func:`ingest.schema.utc_period_ends`: ``2020-06`` ends on
        2020-06-30T23:59:59.999999Z; a date-time is itself), so that a cutoff can keep only what surely came
        before it. A ``collection`` column becomes a list of timestamps (its ``<name>_latest`` a list of the
        same length)."""
        partial = set(self.partial_columns)
        for name in self.temporal_columns:
            if name in table.column_names:
                i = table.column_names.index(name)
                text = table.column(name)
                if pa.types.is_list(text.type):
                    type_ = pa.list_(TIMESTAMP)
                    starts, ends = _per_item(text, utc_timestamps), lambda t=text: _per_item(t, utc_period_ends)
                else:
                    type_, starts, ends = TIMESTAMP, utc_timestamps(text), lambda t=text: utc_period_ends(t)
                table = table.set_column(i, pa.field(name, type_), starts)
                if name in partial:
                    table = table.add_column(i + 1, pa.field(name + LATEST_SUFFIX, type_), ends())
        return table


def _per_item(column: pa.Array | pa.ChunkedArray,
              parse: Callable[[pa.Array], pa.Array]) -> pa.Array | pa.ChunkedArray:
    """``parse`` (text -> ``timestamp[us, tz=UTC]``) applied to the items of a list column, keeping its lists
    and its null rows."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    out = []
    for chunk in chunks:
        offsets = chunk.offsets  # of a sliced chunk: positions in its whole values array
        start, end = offsets[0].as_py(), offsets[-1].as_py()
        out.append(pa.ListArray.from_arrays(pc.subtract(offsets, pa.scalar(start, offsets.type)),
                                            parse(chunk.values.slice(start, end - start)),
                                            mask=chunk.is_null() if chunk.null_count else None))
    return pa.chunked_array(out, pa.list_(TIMESTAMP)) if isinstance(column, pa.ChunkedArray) else out[0]


def _array(values: list, field: pa.Field, lost: list[tuple[str, int, Any]] | None) -> pa.Array:
    try:
        if pa.types.is_floating(field.type) and any(type(v) is bool for v in values):
            raise TypeError("a boolean in a decimal column")  # Arrow would take it as 0.0 / 1.0
        return pa.array(values, field.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        coerced = [_coerce(v, field.type) for v in values]
        if lost is not None:
            lost.extend((field.name, i, v) for i, (v, c) in enumerate(zip(values, coerced, strict=True))
                        if _present(v) != _present(c))
        return pa.array(coerced, field.type)


def _present(value: Any) -> int:
    """How many values ``value`` holds (a list: its non-null items)."""
    if isinstance(value, list):
        return sum(v is not None for v in value)
    return value is not None


def _coerce(value: Any, type_: pa.DataType) -> Any:
    if value is None:
        return None
    if pa.types.is_list(type_):
        return [_coerce(v, type_.value_type) for v in (value if isinstance(value, list) else [value])]
    if pa.types.is_string(type_):
        return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    if pa.types.is_floating(type_):
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if pa.types.is_integer(type_):
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if pa.types.is_boolean(type_):
        return value if isinstance(value, bool) else None
    return None


def compile_view(view_json: dict, *, name: str | None = None, generate: bool = True,
                 source: Path | str | None = None) -> CompiledView:
    """Validate and compile a SQL-on-FHIR v2 ViewDefinition.

    Args:
        view_json: the ViewDefinition (``resource``, ``select``, optional ``where``, ``constant``, ``name``).
        name: the view name when ``view_json`` has none (e.g. the file stem).
        generate: flatten with generated Python (faster; the same rows) rather than the closure engine alone.
        source: the file the view was read from, named by the errors the data cause where the view is at fault.

    Raises:
        ViewDefinitionError: the view is invalid; the message says where and how to fix it.
    """
    label = name or (view_json.get("name") if isinstance(view_json, dict) else None) or "<unnamed>"
    if not isinstance(view_json, dict):
        raise ViewDefinitionError(f"view {label!r}: a ViewDefinition must be a JSON object")
    view_name = view_json.get("name") or name or "<unnamed>"
    if not isinstance(view_name, str):
        raise ViewDefinitionError(f"view {label!r}: 'name' must be a string")
    builder = _Builder(view_name, {}, None if source is None else str(source))
    resource = view_json.get("resource")
    if not isinstance(resource, str) or not re.match(r"^[A-Z][A-Za-z]+$", resource):
        raise builder.fail(f"'resource' must name a FHIR resource type (e.g. \"Patient\"), got {resource!r}")
    selects = view_json.get("select")
    if not isinstance(selects, list) or not selects:
        raise builder.fail("'select' must be a non-empty list")
    builder.constants = _constants(view_json, builder.fail)
    where = _where(view_json, builder, generate)
    root = builder.select({"select": selects}, "view")
    seen: set[str] = set()
    for col in root.columns:
        if col.name in seen:
            raise builder.fail(f"column name {col.name!r} is used twice; column names must be unique")
        seen.add(col.name)
    for col in root.columns:
        if col.type in PARTIAL_TYPES and col.name + LATEST_SUFFIX in seen:
            raise builder.fail(f"column name {col.name + LATEST_SUFFIX!r} is taken by the lake: it holds the last"
                               f" instant the {col.type} column {col.name!r} may denote; rename the column")
    generated = _Generator(builder).build(selects) if generate else None
    return CompiledView(view_name, resource, root, where, view_json, generated)


def view_files(folder: Path | str) -> list[Path]:
    """The ViewDefinition files of ``folder``: its ``*.json`` files sorted by name, or the file itself when
    ``folder`` is one JSON file."""
    folder = Path(folder)
    if folder.is_file() and folder.suffix.lower() == ".json":
        return [folder]
    if not folder.is_dir():
        raise ViewDefinitionError(f"{folder}: not a ViewDefinition JSON file or a folder of them")
    return sorted(folder.glob("*.json"))


def load_views(directory: Path | str | Sequence[Path | str]) -> list[CompiledView]:
    """Compile every ``*.json`` ViewDefinition in ``directory`` (a folder, a JSON file, or several; sorted by
    file name within each folder).

    A view without ``name`` is named after its file stem. Raises :class:`ViewDefinitionError` naming the file
    when one is unreadable or invalid, or when two files define the same view name.
    """
    folders = [directory] if isinstance(directory, (str, Path)) else list(directory)
    views: list[CompiledView] = []
    names: dict[str, Path] = {}
    for folder in folders:
        for path in view_files(folder):
            try:
                spec = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ViewDefinitionError(f"{path}: cannot read ViewDefinition JSON: {exc}") from None
            try:
                view = compile_view(spec, name=path.stem, source=path)
            except ViewDefinitionError as exc:
                raise ViewDefinitionError(f"{path}: {exc}") from None
            if view.name in names:
                raise ViewDefinitionError(f"{path}: view name {view.name!r} is already defined in"
                                          f" {names[view.name]}")
            names[view.name] = path
            views.append(view)
    return views
