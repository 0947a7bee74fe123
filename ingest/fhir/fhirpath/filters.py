"""Filter fast path: ``where`` paths made of ``exists()`` tests over simple string criteria, as generated Python."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ingest.fhir.fhirpath.compiler import _Compiler, _literal_values
from ingest.fhir.fhirpath.fhir_types import CHOICE_NAMES
from ingest.fhir.fhirpath.parser import parse
from ingest.fhir.fhirpath.scalar import SLOW, generated_code
from ingest.fhir.fhirpath.temporal import _temporal
from ingest.fhir.fhirpath.values import _identity


class _Slow(Exception):
    """Raised inside generated filters when the data need the full evaluator."""


def compile_filter(text: str, *, constants: Mapping[str, Any] | None = None) -> Callable[[Any], Any] | None:
    """A fast ``fn(resource) -> bool`` for ``where`` paths such as
    ``meta.profile.where($this = 'x').exists() or code.coding.where(system = 's' and code in ('a' | 'b'))
    .exists()``, or None when ``text`` is not of that form.

    Covered: ``and``/``or`` of ``P.exists()``, ``P.exists(C)`` and ``P.where(C).exists()``, where ``C`` is an
    ``and``/``or`` of ``$this`` or a plain member compared with string literals (``=``, ``in``,
    ``startsWith``). ``fn`` returns the single boolean the full evaluator gives on ``[resource]``, or
    :data:`SLOW` when the data need it (a member that is not a string, an item that is not an object).
    """
    tree = parse(text)
    compiler = _Compiler(text, dict(constants or {}))
    names: dict[str, Any] = {"SLOW": SLOW, "_Slow": _Slow}
    lines: list[str] = []
    expr = _filter_expr(tree, compiler, names, lines)
    if expr is None:
        return None
    lines += ["def where_filter(x):", "    try:", f"        return {expr}", "    except _Slow:",
              "        return SLOW"]
    exec(generated_code("\n".join(lines), f"<where {text[:60]}>"), names)  # noqa: S102 - from the parse tree
    return names["where_filter"]


def _filter_expr(node: tuple, c: _Compiler, names: dict[str, Any], lines: list[str]) -> str | None:
    """Python expression (on ``x``, the resource) of a filter tree node that always gives one boolean."""
    if node[0] == "binop" and node[1] in ("and", "or"):
        left = _filter_expr(node[2], c, names, lines)
        right = _filter_expr(node[3], c, names, lines)
        return None if left is None or right is None else f"({left} {node[1]} {right})"
    if node[0] != "func" or node[2] != "exists" or len(node[3]) > 1:
        return None
    target, args = node[1], node[3]
    if not args and target is not None and target[0] == "func" and target[2] == "where" and len(target[3]) == 1:
        target, args = target[1], target[3]
    k = len([n for n in names if n.startswith("src")])
    names[f"src{k}"] = _identity if target is None else c.compile(target)
    if not args:
        return f"bool(src{k}([x], 0))"
    members: dict[str, str] = {}
    crit = _criterion(args[0], names, members)
    if crit is None:
        return None
    lines += [f"def exists{k}(x):", *_items_lines(target, f"src{k}"), "    for y in items:"]
    if "$this" in members:
        lines += ["        if type(y) is not str:", "            raise _Slow"]
    if set(members) - {"$this"}:
        lines += ["        if type(y) is not dict:", "            raise _Slow"]
    for member, var in members.items():
        if member != "$this":
            lines += [f"        {var} = y.get({member!r})", f"        if {var} is not None and type({var}) is not str:",
                      "            raise _Slow"]
    lines += [f"        if {crit}:", "            return True", "    return False"]
    return f"exists{k}(x)"


def _items_lines(target: tuple | None, src: str) -> list[str]:
    """Statements setting ``items`` to the collection of ``target`` on ``[x]``: inlined for one or two
    plain members (objects all the way), else the compiled evaluator ``src``."""
    path: list[str] = []
    node = target
    while node is not None and node[0] == "member" and node[2][:1].islower() and node[2] not in CHOICE_NAMES:
        path.insert(0, node[2])
        node = node[1]
    if node is not None or not 1 <= len(path) <= 2:
        return [f"    items = {src}([x], 0)"]
    wrap = ["        items = ()", "    elif type(items) is not list:", "        items = (items,)"]
    if len(path) == 1:
        return [f"    items = x.get({path[0]!r})", "    if items is None:", *wrap]
    return [f"    items = x.get({path[0]!r})", "    if type(items) is dict:", f"        items = items.get({path[1]!r})",
            "        if items is None:", "            items = ()", "        elif type(items) is not list:",
            "            items = (items,)", "    elif items is None:", "        items = ()", "    else:",
            f"        items = {src}([x], 0)"]


def _criterion(node: tuple, names: dict[str, Any], members: dict[str, str]) -> str | None:
    """Python expression on one item ``y`` of a monotone criterion: and/or of string tests on ``$this``
    (``y``) or plain members (read into variables listed in ``members``). An empty operand reads as false,
    which gives the same "is it true" answer as FHIRPath's three-valued logic because and/or are monotone."""
    if node[0] == "binop" and node[1] in ("and", "or"):
        left, right = _criterion(node[2], names, members), _criterion(node[3], names, members)
        return None if left is None or right is None else f"({left} {node[1]} {right})"
    if node[0] == "binop" and node[1] in ("=", "in"):
        item, lits = node[2], _literal_values(node[3])
        if lits is None or not lits or not all(type(v) is str for v in lits) or (node[1] == "=" and len(lits) > 1):
            return None
        if any(_temporal(v) for v in lits):
            return None  # a date or time: equal by the instant it denotes, which the evaluator knows
        value = _criterion_item(item, members)
        if value is None:
            return None
        if node[1] == "=":
            return f"{value} == {lits[0]!r}"
        j = len([n for n in names if n.startswith("set")])
        names[f"set{j}"] = frozenset(lits)
        return f"{value} in set{j}"
    if node[0] == "func" and node[2] == "startsWith" and len(node[3]) == 1 and node[3][0][0] == "lit" \
            and type(node[3][0][1]) is str and node[1] is not None:
        value = _criterion_item(node[1], members)
        if value is None:
            return None
        return f"({value} is not None and {value}.startswith({node[3][0][1]!r}))"
    return None


def _criterion_item(node: tuple, members: dict[str, str]) -> str | None:
    """``$this`` (``y``) or a plain lower-case member that is no choice element (a variable), else None."""
    if node == ("this",):
        members["$this"] = "y"
        return "y"
    if node[0] == "member" and node[1] is None and node[2][:1].islower() and node[2] not in CHOICE_NAMES:
        return members.setdefault(node[2], f"a{len(members)}")
    return None
