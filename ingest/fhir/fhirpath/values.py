"""The values expressions work on: a collection is a Python list, primitives are ``str``/``int``/``float``/
``bool``, complex values are the JSON ``dict``s themselves, and a compiled expression is an
:data:`Evaluator`. Equality and equivalence of single values, singleton and boolean evaluation of a
collection, numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from ingest.fhir.fhirpath.errors import FhirPathError

Evaluator = Callable[[list, int], list]


def _num(v: Any) -> bool:
    return (type(v) is int or type(v) is float or type(v) is Decimal)


def _equal(a: Any, b: Any) -> bool:
    ta, tb = type(a), type(b)
    if ta is bool or tb is bool:
        return ta is tb and a == b
    if _num(a) and _num(b):
        return Decimal(str(a)) == Decimal(str(b)) if (ta is float) != (tb is float) else a == b
    return a == b


def _equivalent(a: Any, b: Any) -> bool:
    if type(a) is str and type(b) is str:
        return " ".join(a.lower().split()) == " ".join(b.lower().split())
    return _equal(a, b)


def _singleton(coll: list, what: str) -> Any:
    if len(coll) > 1:
        raise FhirPathError(f"{what} expects a single value but got {len(coll)}")
    return coll[0] if coll else None


def _as_bool(coll: list, what: str) -> bool | None:
    """FHIRPath singleton evaluation of a collection as a boolean (None for empty)."""
    if not coll:
        return None
    if len(coll) > 1:
        raise FhirPathError(f"{what} expects a single boolean but got {len(coll)} values")
    v = coll[0]
    return v if type(v) is bool else True


def _out_number(v: Any) -> Any:
    if type(v) is Decimal:
        return int(v) if v == v.to_integral_value() and v.as_tuple().exponent >= 0 else float(v)
    return v


def _identity(coll: list, ri: int) -> list:
    return coll
