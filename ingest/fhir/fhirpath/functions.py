"""The functions: a builder each, ``(compiler, source, args, target_node) -> Evaluator``, which the compiler
looks up by name in :data:`_FUNCTIONS`; a builder compiles its arguments with the compiler it is given.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ingest.fhir.fhirpath.boundaries import _boundary
from ingest.fhir.fhirpath.errors import FhirPathError
from ingest.fhir.fhirpath.fhir_types import _SYSTEM_TYPES, _type_arg, is_type
from ingest.fhir.fhirpath.references import reference_key
from ingest.fhir.fhirpath.temporal import _same
from ingest.fhir.fhirpath.values import Evaluator, _as_bool, _equal, _identity, _num, _out_number, _singleton

if TYPE_CHECKING:  # only annotations name the compiler: it imports this module (_FUNCTIONS, _type_test)
    from ingest.fhir.fhirpath.compiler import _Compiler

def _nargs(args: list, lo: int, hi: int, name: str) -> None:
    if not lo <= len(args) <= hi:
        want = str(lo) if lo == hi else f"{lo} to {hi}"
        raise FhirPathError(f"{name}() takes {want} argument(s), got {len(args)}")


def _f_where(c: _Compiler, source: Evaluator, args: list, target: tuple | None) -> Evaluator:
    _nargs(args, 1, 1, "where")
    crit = c.compile(args[0])
    what = f"where() in {c.text!r}"

    def where(coll: list, ri: int) -> list:
        return [it for it in source(coll, ri) if _as_bool(crit([it], ri), what)]
    return where


def _f_select(c: _Compiler, source: Evaluator, args: list, target: tuple | None) -> Evaluator:
    _nargs(args, 1, 1, "select")
    proj = c.compile(args[0])

    def select(coll: list, ri: int) -> list:
        out: list = []
        for it in source(coll, ri):
            out.extend(proj([it], ri))
        return out
    return select


def _f_repeat(c: _Compiler, source: Evaluator, args: list, target: tuple | None) -> Evaluator:
    _nargs(args, 1, 1, "repeat")
    proj = c.compile(args[0])

    def repeat(coll: list, ri: int) -> list:
        out: list = []
        queue = list(source(coll, ri))
        while queue:
            nxt: list = []
            for it in queue:
                for child in proj([it], ri):
                    if not any(child is o or _equal(child, o) for o in out):
                        out.append(child)
                        nxt.append(child)
            queue = nxt
        return out
    return repeat


def _f_exists(c: _Compiler, source: Evaluator, args: list, target: tuple | None) -> Evaluator:
    _nargs(args, 0, 1, "exists")
    if not args and target is not None and target[0] == "func" and target[2] == "where" and len(target[3]) == 1:
        args = target[3]  # X.where(P).exists() is X.exists(P)
        source = _identity if target[1] is None else c.compile(target[1])
    if args:
        crit = c.compile(args[0])
        what = f"exists() in {c.text!r}"

        def exists_where(coll: list, ri: int) -> list:  # stops at the first match
            for it in source(coll, ri):
                r = crit([it], ri)
                if (r[0] is not False) if len(r) == 1 else _as_bool(r, what):
                    return [True]
            return [False]
        return exists_where
    return lambda coll, ri: [bool(source(coll, ri))]


def _f_all(c: _Compiler, source: Evaluator, args: list, target: tuple | None) -> Evaluator:
    _nargs(args, 1, 1, "all")
    crit = c.compile(args[0])
    what = f"all() in {c.text!r}"
    return lambda coll, ri: [all(_as_bool(crit([it], ri), what) for it in source(coll, ri))]


def _f_empty(c: _Compiler, source: Evaluator, args: list, target: tuple | None) -> Evaluator:
    _nargs(args, 0, 0, "empty")
    return lambda coll, ri: [not source(coll, ri)]


def _f_first(c: _Compiler, source: Evaluator, args: list, target: tuple | None) -> Evaluator:
    _nargs(args, 0, 0, "first")

    def first(coll: list, ri: int) -> list:
        items = source(coll, ri)
        return items[:1] if len(items) > 1 else items
    return first


def _f_last(c: _Compiler, source: Evaluator, args: list, target: tuple | None) -> Evaluator:
    _nargs(args, 0, 0, "last")
    return lambda coll, ri: source(coll, ri)[-1:]


def _f_tail(c: _Compiler, source: Evaluator, args: list, target: tuple | None) -> Evaluator:
    _nargs(args, 0, 0, "tail")
    return lambda coll, ri: source(coll, ri)[1:]


def _int_arg(c: _Compiler, args: list, name: str) -> Evaluator:
    arg = c.compile(args[0])

    def value(coll: list, ri: int) -> int:
        v = _singleton(arg(coll, ri), name)
        if type(v) is not int:
            raise FhirPathError(f"{name}() needs an integer argument in {c.text!r}")
        return v
    return value


def _f_skip(c: _Compiler, source: Evaluator, args: list, target: tuple | None) -> Evaluator:
    _nargs(args, 1, 1, "skip")
    n = _int_arg(c, args, "skip")
    return lambda coll, ri: source(coll, ri)[max(n(coll, ri), 0):]


def _f_take(c: _Compiler, source: Evaluator, args: list, target: tuple | None) -> Evaluator:
    _nargs(args, 1, 1, "take")
    n = _int_arg(c, args, "take")
    return lambda coll, ri: source(coll, ri)[:max(n(coll, ri), 0)]


def _f_single(c: _Compiler, source: Evaluator, args: list, target: tuple | None) -> Evaluator:
    _nargs(args, 0, 0, "single")
    what = f"single() in {c.text!r}"

    def single(coll: list, ri: int) -> list:
        items = source(coll, ri)
        _singleton(items, what)
        return items
    return single


def _f_count(c: _Compiler, source: Evaluator, args: list, target: tuple | None) -> Evaluator:
    _nargs(args, 0, 0, "count")
    return lambda coll, ri: [len(source(coll, ri))]


def _f_distinct(c: _Compiler, source: Evaluator, args: list, target: tuple | None) -> Evaluator:
    _nargs(args, 0, 0, "distinct")

    def distinct(coll: list, ri: int) -> list:
        out: list = []
        for v in source(coll, ri):
            if not any(_same(v, o) for o in out):
                out.append(v)
        return out
    return distinct


def _f_not(c: _Compiler, source: Evaluator, args: list, target: tuple | None) -> Evaluator:
    _nargs(args, 0, 0, "not")
    what = f"not() in {c.text!r}"

    def not_(coll: list, ri: int) -> list:
        v = _as_bool(source(coll, ri), what)
        return [] if v is None else [not v]
    return not_


def _f_iif(c: _Compiler, source: Evaluator, args: list, target: tuple | None) -> Evaluator:
    _nargs(args, 2, 3, "iif")
    crit, yes = c.compile(args[0]), c.compile(args[1])
    no = c.compile(args[2]) if len(args) == 3 else (lambda coll, ri: [])
    what = f"iif() in {c.text!r}"

    def iif(coll: list, ri: int) -> list:
        focus = source(coll, ri)
        return yes(focus, ri) if _as_bool(crit(focus, ri), what) else no(focus, ri)
    return iif


def _f_join(c: _Compiler, source: Evaluator, args: list, target: tuple | None) -> Evaluator:
    _nargs(args, 0, 1, "join")
    sep_fn = c.compile(args[0]) if args else (lambda coll, ri: [""])

    def join(coll: list, ri: int) -> list:
        sep = _singleton(sep_fn(coll, ri), "join") or ""
        return [sep.join(v if type(v) is str else str(v) for v in source(coll, ri))]
    return join


def _f_of_type(c: _Compiler, source: Evaluator, args: list, target: tuple | None) -> Evaluator:
    _nargs(args, 1, 1, "ofType")
    type_name = _type_arg(args[0], "ofType")
    return lambda coll, ri: [v for v in source(coll, ri) if is_type(v, type_name)]


def _type_test(op: str, source: Evaluator, typed: Evaluator | None, type_name: str) -> Evaluator:
    """``X is T`` / ``X as T`` on a single value; ``typed`` (``X.ofType(T)`` of a member ``X``) decides when
    given, since a JSON object says nothing of its type but a choice element's key does."""
    def is_(coll: list, ri: int) -> list:
        v = _singleton(source(coll, ri), "is")
        if v is None:
            return []
        return [bool(typed(coll, ri))] if typed is not None else [is_type(v, type_name)]

    def as_(coll: list, ri: int) -> list:
        v = _singleton(source(coll, ri), "as")
        if v is None:
            return []
        if typed is not None:
            return typed(coll, ri)
        return [v] if is_type(v, type_name) else []
    return is_ if op == "is" else as_


def _f_is(c: _Compiler, source: Evaluator, args: list, target: tuple | None) -> Evaluator:
    _nargs(args, 1, 1, "is")
    type_name = _type_arg(args[0], "is")
    return _type_test("is", source, c.typed(target, type_name), type_name)


def _f_as(c: _Compiler, source: Evaluator, args: list, target: tuple | None) -> Evaluator:
    _nargs(args, 1, 1, "as")
    type_name = _type_arg(args[0], "as")
    return _type_test("as", source, c.typed(target, type_name), type_name)


def _f_extension(c: _Compiler, source: Evaluator, args: list, target: tuple | None) -> Evaluator:
    _nargs(args, 1, 1, "extension")
    url_fn = c.compile(args[0])

    def extension(coll: list, ri: int) -> list:
        url = _singleton(url_fn(coll, ri), "extension")
        out: list = []
        for it in source(coll, ri):
            if type(it) is dict:
                out.extend(e for e in it.get("extension", ()) if type(e) is dict and e.get("url") == url)
        return out
    return extension


def _f_resource_key(c: _Compiler, source: Evaluator, args: list, target: tuple | None) -> Evaluator:
    _nargs(args, 0, 0, "getResourceKey")

    def resource_key(coll: list, ri: int) -> list:
        return [it["id"] for it in source(coll, ri)
                if type(it) is dict and "resourceType" in it and it.get("id") is not None]
    return resource_key


def _f_reference_key(c: _Compiler, source: Evaluator, args: list, target: tuple | None) -> Evaluator:
    _nargs(args, 0, 1, "getReferenceKey")
    type_name = _type_arg(args[0], "getReferenceKey") if args else None

    def ref_key(coll: list, ri: int) -> list:
        out = []
        for it in source(coll, ri):
            key = reference_key(it, type_name)
            if key is not None:
                out.append(key)
        return out
    return ref_key


def _f_has_value(c: _Compiler, source: Evaluator, args: list, target: tuple | None) -> Evaluator:
    _nargs(args, 0, 0, "hasValue")

    def has_value(coll: list, ri: int) -> list:
        items = source(coll, ri)
        return [len(items) == 1 and type(items[0]) is not dict]
    return has_value


def _f_boundary(high: bool) -> Callable:
    name = "highBoundary" if high else "lowBoundary"

    def build(c: _Compiler, source: Evaluator, args: list, target: tuple | None) -> Evaluator:
        _nargs(args, 0, 1, name)
        kind = None
        if target is not None and target[0] == "func" and target[2] in ("ofType", "as") and target[3]:
            t = _type_arg(target[3][0], target[2])
            kind = _SYSTEM_TYPES.get(t, t)

        def boundary(coll: list, ri: int) -> list:
            out = []
            for v in source(coll, ri):
                b = _boundary(v, kind, high)
                if b is not None:
                    out.append(b)
            return out
        return boundary
    return build


def _string_fn(name: str, nargs: tuple[int, int], op: Callable[..., Any]) -> Callable:
    """A function on a single string input whose arguments are singletons; returns [] on empty input."""
    def build(c: _Compiler, source: Evaluator, args: list, target: tuple | None) -> Evaluator:
        _nargs(args, nargs[0], nargs[1], name)
        arg_fns = [c.compile(a) for a in args]
        what = f"{name}() in {c.text!r}"

        def fn(coll: list, ri: int) -> list:
            v = _singleton(source(coll, ri), what)
            if v is None:
                return []
            values = [_singleton(a(coll, ri), what) for a in arg_fns]
            if any(a is None for a in values):
                return []
            r = op(v, *values)
            return [] if r is None else [r]
        return fn
    return build


def _to_integer(v: Any) -> int | None:
    if type(v) is bool:
        return int(v)
    if type(v) is int:
        return v
    if type(v) is str and re.fullmatch(r"[+-]?\d+", v):
        return int(v)
    return None


def _to_decimal(v: Any) -> float | None:
    if _num(v):
        return float(v)
    if type(v) is str and re.fullmatch(r"[+-]?\d+(\.\d+)?", v):
        return float(v)
    return None


def _to_string(v: Any) -> str | None:
    if type(v) is bool:
        return "true" if v else "false"
    if type(v) is dict:
        return None
    return str(_out_number(v))


def _str_only(fn: Callable[..., Any]) -> Callable[..., Any]:
    return lambda v, *a: fn(v, *a) if type(v) is str else None


def _substring(v: str, start: int, length: int | None = None) -> str | None:
    if start < 0 or start >= len(v):
        return None
    return v[start:] if length is None else v[start:start + max(length, 0)]


_FUNCTIONS: dict[str, Callable] = {
    "where": _f_where, "select": _f_select, "repeat": _f_repeat, "exists": _f_exists, "all": _f_all,
    "empty": _f_empty, "first": _f_first, "last": _f_last, "tail": _f_tail, "skip": _f_skip,
    "take": _f_take, "single": _f_single, "count": _f_count, "distinct": _f_distinct, "not": _f_not,
    "iif": _f_iif, "join": _f_join, "ofType": _f_of_type, "is": _f_is, "as": _f_as,
    "extension": _f_extension, "getResourceKey": _f_resource_key, "getReferenceKey": _f_reference_key,
    "hasValue": _f_has_value, "lowBoundary": _f_boundary(False), "highBoundary": _f_boundary(True),
    "startsWith": _string_fn("startsWith", (1, 1), _str_only(lambda v, p: v.startswith(p))),
    "endsWith": _string_fn("endsWith", (1, 1), _str_only(lambda v, p: v.endswith(p))),
    "contains": _string_fn("contains", (1, 1), _str_only(lambda v, p: p in v)),
    "matches": _string_fn("matches", (1, 1), _str_only(lambda v, p: re.search(p, v, re.DOTALL) is not None)),
    "replaceMatches": _string_fn("replaceMatches", (2, 2), _str_only(lambda v, p, s: re.sub(p, s, v))),
    "replace": _string_fn("replace", (2, 2), _str_only(lambda v, p, s: v.replace(p, s))),
    "substring": _string_fn("substring", (1, 2), _str_only(_substring)),
    "indexOf": _string_fn("indexOf", (1, 1), _str_only(lambda v, p: v.find(p))),
    "lower": _string_fn("lower", (0, 0), _str_only(str.lower)),
    "upper": _string_fn("upper", (0, 0), _str_only(str.upper)),
    "trim": _string_fn("trim", (0, 0), _str_only(str.strip)),
    "length": _string_fn("length", (0, 0), _str_only(len)),
    "toString": _string_fn("toString", (0, 0), _to_string),
    "toInteger": _string_fn("toInteger", (0, 0), _to_integer),
    "toDecimal": _string_fn("toDecimal", (0, 0), _to_decimal),
}


def _split(c: _Compiler, source: Evaluator, args: list, target: tuple | None) -> Evaluator:
    _nargs(args, 1, 1, "split")
    sep_fn = c.compile(args[0])

    def split(coll: list, ri: int) -> list:
        v = _singleton(source(coll, ri), "split")
        sep = _singleton(sep_fn(coll, ri), "split")
        return [] if type(v) is not str or not sep else v.split(sep)
    return split


_FUNCTIONS["split"] = _split
