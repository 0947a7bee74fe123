"""The logical (``and or xor implies``), comparison (``< <= > >=``) and arithmetic operators, built on their
compiled operands. Equality, union and membership, which have fast paths over the parse tree, are built by
the compiler.
"""

from __future__ import annotations

import operator
from decimal import Decimal

from ingest.fhir.fhirpath.errors import FhirPathError
from ingest.fhir.fhirpath.temporal import _NOT_TEMPORAL, _temporal_order
from ingest.fhir.fhirpath.values import Evaluator, _as_bool, _num, _out_number, _singleton


def _logic(op: str, left: Evaluator, right: Evaluator, text: str) -> Evaluator:
    what = f"'{op}' in {text!r}"
    if op == "and":
        def and_(coll: list, ri: int) -> list:
            a = left(coll, ri)
            a = a[0] if len(a) == 1 and type(a[0]) is bool else _as_bool(a, what)
            if a is False:
                return [False]
            b = right(coll, ri)
            b = b[0] if len(b) == 1 and type(b[0]) is bool else _as_bool(b, what)
            if b is False:
                return [False]
            return [True] if a and b else []
        return and_
    if op == "or":
        def or_(coll: list, ri: int) -> list:
            a = left(coll, ri)
            a = a[0] if len(a) == 1 and type(a[0]) is bool else _as_bool(a, what)
            if a is True:
                return [True]
            b = right(coll, ri)
            b = b[0] if len(b) == 1 and type(b[0]) is bool else _as_bool(b, what)
            if b is True:
                return [True]
            return [False] if a is False and b is False else []
        return or_
    if op == "xor":
        def xor(coll: list, ri: int) -> list:
            a, b = _as_bool(left(coll, ri), what), _as_bool(right(coll, ri), what)
            return [] if a is None or b is None else [a != b]
        return xor

    def implies(coll: list, ri: int) -> list:
        a = _as_bool(left(coll, ri), what)
        if a is False:
            return [True]
        b = _as_bool(right(coll, ri), what)
        if a is True:
            return [] if b is None else [b]
        return [True] if b is True else []
    return implies


def _comparison(op: str, left: Evaluator, right: Evaluator, text: str) -> Evaluator:
    cmp = {"<": operator.lt, ">": operator.gt, "<=": operator.le, ">=": operator.ge}[op]

    def compare(coll: list, ri: int) -> list:
        a = _singleton(left(coll, ri), f"'{op}' in {text!r}")
        b = _singleton(right(coll, ri), f"'{op}' in {text!r}")
        if a is None or b is None:
            return []
        if _num(a) and _num(b) and type(a) is not bool and type(b) is not bool:
            if (type(a) is Decimal) != (type(b) is Decimal):
                a, b = Decimal(str(a)), Decimal(str(b))
            return [cmp(a, b)]
        if type(a) is str and type(b) is str:
            order = _temporal_order(a, b)  # dates and times as such: offsets, precisions, fractions
            if order is _NOT_TEMPORAL:
                return [cmp(a, b)]
            return [] if order is None else [cmp(order, 0)]
        raise FhirPathError(f"cannot compare {type(a).__name__} with {type(b).__name__} in {text!r}")
    return compare


def _arithmetic(op: str, left: Evaluator, right: Evaluator, text: str) -> Evaluator:
    def arith(coll: list, ri: int) -> list:
        a = _singleton(left(coll, ri), f"'{op}' in {text!r}")
        b = _singleton(right(coll, ri), f"'{op}' in {text!r}")
        if a is None or b is None:
            return []
        if op == "+" and type(a) is str and type(b) is str:
            return [a + b]
        if not (_num(a) and _num(b)) or type(a) is bool or type(b) is bool:
            raise FhirPathError(f"'{op}' needs numbers in {text!r}")
        da, db = Decimal(str(a)), Decimal(str(b))
        if op == "+":
            r = da + db
        elif op == "-":
            r = da - db
        elif op == "*":
            r = da * db
        elif db == 0:
            return []
        elif op == "/":
            return [float(da / db)]
        elif op == "div":
            r = Decimal(int(da / db))
        else:
            r = da % db
        return [_out_number(r)]
    return arith
