"""Result types: the ``boolean``, ``integer`` or ``decimal`` type every value of a path surely has, read from
its parse tree alone, for view columns that name no ``type``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ingest.fhir.fhirpath.errors import FhirPathError
from ingest.fhir.fhirpath.fhir_types import _SYSTEM_TYPES, SUBTYPES, _type_arg
from ingest.fhir.fhirpath.parser import parse

_BOOLEAN_FUNCTIONS = frozenset(("exists", "empty", "all", "not", "hasValue", "startsWith", "endsWith", "contains",
                                "matches", "is"))
_INTEGER_FUNCTIONS = frozenset(("count", "length", "indexOf", "toInteger"))
_SAME_TYPE_FUNCTIONS = frozenset(("first", "last", "single", "tail", "skip", "take", "distinct", "where"))
_NUMBER_TYPES = {"boolean": "boolean", "integer": "integer", "positiveInt": "integer", "unsignedInt": "integer",
                 "decimal": "decimal"}


def result_type(text: str, constants: Mapping[str, Any] | None = None) -> str | None:
    """The FHIR type every value of ``text`` surely has when it is ``boolean``, ``integer`` or ``decimal``
    (``exists()``, ``count()``, a comparison, ``ofType(integer)``, ``%rowIndex``, the ``value`` of a Quantity
    the path names: ``value.ofType(Quantity).value``), else None (text, objects, or not known before the data
    are read). A view column without a ``type`` takes it, so that its values are not written as the text
    ``true`` or ``3``."""
    return _result_type(parse(text), dict(constants or {}))


_QUANTITIES = frozenset(("Quantity", *SUBTYPES["Quantity"]))
# Members of the complex types a path names with ofType/as whose type no FHIR version changes (R4, R4B, R5): a
# Quantity's value is a decimal; a Range's low/high and a Ratio's numerator/denominator are Quantities.
_MEMBER_TYPES = {**{(q, "value"): "decimal" for q in _QUANTITIES}, ("Range", "low"): "Quantity",
                 ("Range", "high"): "Quantity", ("Ratio", "numerator"): "Quantity",
                 ("Ratio", "denominator"): "Quantity"}


def _named_type(node: tuple | None) -> str | None:
    """The complex type a path's values surely have because the path names it (``x.ofType(Quantity)``,
    ``x as Range``, ``x.ofType(Range).low``, then ``first()``-like functions), else None. No schema is read:
    a plain member (``valueQuantity``) says nothing."""
    if node is None:
        return None
    if node[0] == "type" and node[1] == "as":
        return node[3]
    if node[0] == "member":
        outer = _named_type(node[1])
        return None if outer is None else _MEMBER_TYPES.get((outer, node[2]))
    if node[0] == "func":
        _, target, name, args = node
        if name in ("ofType", "as") and len(args) == 1:
            try:
                return _type_arg(args[0], name)
            except FhirPathError:
                return None
        if name in _SAME_TYPE_FUNCTIONS and target is not None:
            return _named_type(target)
    return None


def _result_type(node: tuple, constants: dict[str, Any]) -> str | None:
    kind = node[0]
    if kind == "member":
        member_type = _named_type(node)
        return member_type if member_type in ("boolean", "integer", "decimal") else None
    if kind == "lit":
        v = node[1]
        return "boolean" if type(v) is bool else "integer" if type(v) is int else "decimal" \
            if type(v) is float else None
    if kind == "ext":
        if node[1] == "rowIndex":
            return "integer"
        values = constants.get(node[1])
        values = values if isinstance(values, list) else [values]
        types = {_result_type(("lit", v), constants) for v in values}
        return types.pop() if len(types) == 1 else None
    if kind == "neg":
        return _result_type(node[1], constants)
    if kind == "type":
        return "boolean" if node[1] == "is" else _NUMBER_TYPES.get(_SYSTEM_TYPES.get(node[3], node[3]))
    if kind == "binop":
        op = node[1]
        if op in ("and", "or", "xor", "implies", "=", "!=", "~", "!~", "<", ">", "<=", ">=", "in", "contains"):
            return "boolean"
        if op == "div":
            return "integer"
        left, right = _result_type(node[2], constants), _result_type(node[3], constants)
        if op == "|":
            return left if left == right else None
        if op in ("+", "-", "*", "mod") and left == right == "integer":
            return "integer"
        if op in ("-", "*", "/", "mod") or (op == "+" and {left, right} <= {"integer", "decimal"} and left):
            return "decimal"  # numbers only (a non-number is an error), int or float: a decimal column holds both
        return None
    if kind == "func":
        _, target, name, args = node
        if name in _BOOLEAN_FUNCTIONS:
            return "boolean"
        if name in _INTEGER_FUNCTIONS:
            return "integer"
        if name == "toDecimal":
            return "decimal"
        if name in ("ofType", "as") and len(args) == 1:
            try:
                type_name = _type_arg(args[0], name)
            except FhirPathError:
                return None
            return _NUMBER_TYPES.get(_SYSTEM_TYPES.get(type_name, type_name))
        if name in _SAME_TYPE_FUNCTIONS and target is not None:
            return _result_type(target, constants)
        if name in ("select", "repeat") and len(args) == 1:
            return _result_type(args[0], constants)
        if name == "iif" and len(args) == 3:
            yes, no = _result_type(args[1], constants), _result_type(args[2], constants)
            return yes if yes == no else None
    return None
