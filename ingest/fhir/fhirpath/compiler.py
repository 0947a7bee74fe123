"""The compiler: a parse tree into nested Python closures (:data:`Evaluator`), so evaluating never re-parses.
Member paths with choice types, literals, constants, indexers, type tests and the operators are compiled
here, functions by their builders in :mod:`ingest.fhir.fhirpath.functions`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ingest.fhir.fhirpath.errors import FhirPathError
from ingest.fhir.fhirpath.fhir_types import _SYSTEM_TYPES, CHOICE_NAMES, CHOICE_TYPES, _type_arg, choice_keys, is_type
from ingest.fhir.fhirpath.functions import _FUNCTIONS, _type_test
from ingest.fhir.fhirpath.operators import _arithmetic, _comparison, _logic
from ingest.fhir.fhirpath.parser import parse
from ingest.fhir.fhirpath.temporal import _equals, _same, _temporal
from ingest.fhir.fhirpath.values import Evaluator, _equal, _equivalent, _identity, _num, _singleton


def _member_step(items: list, name: str) -> list:
    out: list = []
    choice = name in CHOICE_NAMES
    upper = name[0].isupper()
    for it in items:
        if type(it) is not dict:
            continue
        v = it.get(name)
        if v is None:
            if upper and it.get("resourceType") == name:
                out.append(it)
            elif choice:
                n = len(name)
                for k, cv in it.items():
                    if len(k) > n and k.startswith(name) and k[n].isupper() and k[n:] in CHOICE_TYPES:
                        if type(cv) is list:
                            out.extend(cv)
                        else:
                            out.append(cv)
            continue
        if type(v) is list:
            out.extend(v)
        else:
            out.append(v)
    return out


def _compile_path(source: Evaluator | None, names: tuple[str, ...]) -> Evaluator:
    if len(names) == 1 and source is None:
        name = names[0]

        def one(coll: list, ri: int) -> list:
            if len(coll) == 1:
                it = coll[0]
                if type(it) is dict:
                    v = it.get(name)
                    if v is not None:
                        return v if type(v) is list else [v]
            return _member_step(coll, name)
        return one

    def path(coll: list, ri: int) -> list:
        cur = coll if source is None else source(coll, ri)
        for name in names:
            if not cur:
                return cur
            if len(cur) == 1 and type(cur[0]) is dict:
                v = cur[0].get(name)
                if v is not None:
                    cur = v if type(v) is list else [v]
                    continue
            cur = _member_step(cur, name)
        return cur
    return path


def _typed_member(source: Evaluator | None, name: str, type_name: str) -> Evaluator:
    """``name.ofType(T)``: the choice key ``nameT`` (or that of a type derived from T: ``onsetAge`` is a
    Quantity) or, for a plain element, ``name`` filtered by type."""
    t = _SYSTEM_TYPES.get(type_name, type_name)
    key, *others = choice_keys(name, t)

    def typed(coll: list, ri: int) -> list:
        items = coll if source is None else source(coll, ri)
        out: list = []
        for it in items:
            if type(it) is not dict:
                continue
            v = it.get(key)
            if v is None:
                for other in others:
                    v = it.get(other)
                    if v is not None:
                        break
            if v is None:
                v = it.get(name)
                if v is None:
                    continue
                vs = v if type(v) is list else [v]
                out.extend(x for x in vs if is_type(x, t))
                continue
            if type(v) is list:
                out.extend(v)
            else:
                out.append(v)
        return out
    return typed


class _Compiler:
    def __init__(self, text: str, constants: Mapping[str, Any]) -> None:
        self.text = text
        self.constants = constants

    def compile(self, node: tuple) -> Evaluator:
        kind = node[0]
        handler = getattr(self, "_c_" + kind)
        return handler(node)

    # -- leaves ------------------------------------------------------------------------------------------
    def _c_lit(self, node: tuple) -> Evaluator:
        value = [node[1]]
        return lambda coll, ri: value

    def _c_empty(self, node: tuple) -> Evaluator:
        return lambda coll, ri: []

    def _c_this(self, node: tuple) -> Evaluator:
        return _identity

    def _c_special(self, node: tuple) -> Evaluator:
        raise FhirPathError(f"{node[1]} is not supported (in {self.text!r})")

    def _c_ext(self, node: tuple) -> Evaluator:
        name = node[1]
        if name == "rowIndex":
            return lambda coll, ri: [ri]
        if name not in self.constants:
            known = ", ".join(sorted(self.constants)) or "none"
            raise FhirPathError(f"undefined constant %{name} in {self.text!r}; defined constants: {known}")
        value = self.constants[name]
        value = value if isinstance(value, list) else [value]
        return lambda coll, ri: value

    def _c_member(self, node: tuple) -> Evaluator:
        names: list[str] = []
        while node[0] == "member":
            names.append(node[2])
            node = node[1]
            if node is None:
                break
        source = None if node is None else self.compile(node)
        return _compile_path(source, tuple(reversed(names)))

    def _c_indexer(self, node: tuple) -> Evaluator:
        target = self.compile(node[1])
        index = self.compile(node[2])

        def indexer(coll: list, ri: int) -> list:
            items = target(coll, ri)
            i = _singleton(index(coll, ri), "an indexer")
            if type(i) is not int:
                if i is None:
                    return []
                raise FhirPathError(f"an index must be an integer in {self.text!r}")
            return [items[i]] if 0 <= i < len(items) else []
        return indexer

    def _c_neg(self, node: tuple) -> Evaluator:
        operand = self.compile(node[1])

        def neg(coll: list, ri: int) -> list:
            v = _singleton(operand(coll, ri), "unary minus")
            if v is None:
                return []
            if not _num(v):
                raise FhirPathError(f"unary minus needs a number in {self.text!r}")
            return [-v]
        return neg

    def _c_type(self, node: tuple) -> Evaluator:
        _, op, operand, type_name = node
        return _type_test(op, self.compile(operand), self.typed(operand, type_name), type_name)

    def typed(self, node: tuple | None, type_name: str) -> Evaluator | None:
        """``node.ofType(type_name)`` when ``node`` is a member (a choice element is typed by its key:
        ``valueCodeableConcept`` is no Quantity, though both are JSON objects), else None."""
        if node is None or node[0] != "member":
            return None
        return _typed_member(None if node[1] is None else self.compile(node[1]), node[2], type_name)

    # -- operators ---------------------------------------------------------------------------------------
    def _c_binop(self, node: tuple) -> Evaluator:
        _, op, lnode, rnode = node
        left, right = self.compile(lnode), self.compile(rnode)
        text = self.text
        if op in ("and", "or", "xor", "implies"):
            return _logic(op, left, right, text)
        if op == "|":
            def union(coll: list, ri: int) -> list:
                out: list = []
                for v in left(coll, ri) + right(coll, ri):
                    if not any(_same(v, o) for o in out):
                        out.append(v)
                return out
            return union
        if op in ("=", "!=", "~", "!~"):
            eq = _equal if op in ("=", "!=") else _equivalent
            negate = op in ("!=", "!~")
            strict = op in ("=", "!=")
            if rnode[0] == "lit" and type(rnode[1]) is str and not (strict and _temporal(rnode[1])):
                lit = rnode[1]  # not a date or time: plain text equality
                if strict and lnode[0] == "member" and lnode[1] is None:
                    name = lnode[2]

                    def eq_member_lit(coll: list, ri: int) -> list:  # ``element = 'text'`` on one object
                        if len(coll) == 1 and type(coll[0]) is dict:
                            v = coll[0].get(name)
                            if type(v) is str:
                                return [(v == lit) != negate]
                        a = left(coll, ri)
                        if not a:
                            return []
                        res = len(a) == 1 and (a[0] == lit if type(a[0]) is str else eq(a[0], lit))
                        return [res != negate]
                    return eq_member_lit

                def eq_lit(coll: list, ri: int) -> list:
                    a = left(coll, ri)
                    if not a:  # '=' is unknown on empty; '~' is false (empty is not equivalent to text)
                        return [] if strict else [negate]
                    res = len(a) == 1 and (a[0] == lit if type(a[0]) is str and strict else eq(a[0], lit))
                    return [res != negate]
                return eq_lit

            def equality(coll: list, ri: int) -> list:
                a, b = left(coll, ri), right(coll, ri)
                if not a or not b:
                    return [] if strict else [(not a and not b) != negate]
                if len(a) != len(b):
                    return [negate]
                if not strict:
                    return [all(eq(x, y) for x, y in zip(a, b, strict=True)) != negate]
                unknown = False  # item by item, in order; dates and times by the instant they denote
                for x, y in zip(a, b, strict=True):
                    same = _equals(x, y)
                    if same is False:
                        return [negate]
                    unknown = unknown or same is None
                return [] if unknown else [not negate]
            return equality
        if op in ("<", ">", "<=", ">="):
            return _comparison(op, left, right, text)
        if op in ("in", "contains"):
            item_fn, coll_fn = (left, right) if op == "in" else (right, left)
            consts = _literal_values(rnode if op == "in" else lnode)
            if consts is not None and all(type(v) is str and not _temporal(v) for v in consts):
                members = frozenset(consts)  # no date or time: plain text equality
                item_node = lnode if op == "in" else rnode
                if item_node[0] == "member" and item_node[1] is None:
                    name = item_node[2]

                    def in_strings_member(coll: list, ri: int) -> list:  # ``element in ('a' | 'b')``
                        if len(coll) == 1 and type(coll[0]) is dict:
                            v = coll[0].get(name)
                            if type(v) is str:
                                return [v in members]
                        v = _singleton(item_fn(coll, ri), op)
                        return [] if v is None else [type(v) is str and v in members]
                    return in_strings_member

                def in_strings(coll: list, ri: int) -> list:
                    v = _singleton(item_fn(coll, ri), op)
                    return [] if v is None else [type(v) is str and v in members]
                return in_strings

            def membership(coll: list, ri: int) -> list:
                v = _singleton(item_fn(coll, ri), op)
                if v is None:
                    return []
                return [any(_same(v, x) for x in coll_fn(coll, ri))]
            return membership
        if op == "&":
            def concat(coll: list, ri: int) -> list:
                a = _singleton(left(coll, ri), "&")
                b = _singleton(right(coll, ri), "&")
                return [("" if a is None else str(a)) + ("" if b is None else str(b))]
            return concat
        return _arithmetic(op, left, right, text)

    # -- functions ---------------------------------------------------------------------------------------
    def _c_func(self, node: tuple) -> Evaluator:
        _, target, name, args = node
        if name == "ofType" and len(args) == 1:
            type_name = _type_arg(args[0], "ofType")
            if target is not None and target[0] == "member":
                source = None if target[1] is None else self.compile(target[1])
                return _typed_member(source, target[2], type_name)
        source = _identity if target is None else self.compile(target)
        builder = _FUNCTIONS.get(name)
        if builder is None:
            hint = _UNSUPPORTED_HINTS.get(name) or "supported functions: " + ", ".join(sorted(_FUNCTIONS))
            raise FhirPathError(f"unsupported FHIRPath function {name}() in {self.text!r}; {hint}")
        fn = builder(self, source, args, target)
        return fn


_NOW = ("a view is a function of the resource alone (the same rows whenever it runs): select the date and"
        " compare it with the current date in SQL")
_UNSUPPORTED_HINTS = {
    "resolve": "a view cannot follow a reference: select subject.getReferenceKey(Patient) and join it with the"
               " target view's getResourceKey() column (where(resolve() is Patient) is"
               " getReferenceKey(Patient).exists())",
    "today": _NOW, "now": _NOW, "timeOfDay": _NOW,
    "memberOf": "a view has no terminology server: list the codes, e.g. code in ('a' | 'b'), or a %constant",
}


def _literal_values(node: tuple) -> list | None:
    """The values of a literal or a union of literals (``'a' | 'b'``), or None for anything else."""
    if node[0] == "lit":
        return [node[1]]
    if node[0] == "binop" and node[1] == "|":
        left, right = _literal_values(node[2]), _literal_values(node[3])
        return None if left is None or right is None else left + right
    return None


def compile_path(text: str, *, constants: Mapping[str, Any] | None = None) -> Evaluator:
    """Compile a FHIRPath expression once into an evaluator ``fn(collection, row_index) -> collection``.

    Args:
        text: the expression, e.g. ``"code.coding.where(system = %loinc).code"``.
        constants: values of ``%name`` constants (a scalar or a list each); ``%rowIndex`` is built in.

    Raises:
        FhirPathError: syntax errors, unknown functions or constants.
    """
    tree = parse(text)
    return _Compiler(text, dict(constants or {})).compile(tree)


def evaluate(text: str, resource: Any, *, constants: Mapping[str, Any] | None = None) -> list:
    """Compile and evaluate ``text`` on one resource (convenience for tests; compile once for speed)."""
    return compile_path(text, constants=constants)([resource], 0)
