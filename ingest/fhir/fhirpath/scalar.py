"""Scalar fast path: the common simple paths of view columns (member chains with ``first()`` and ``ofType(T)``,
a final ``getReferenceKey``/``getResourceKey``), compiled to straight-line Python, and the chain ops the
generated view code is written from.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import CodeType
from typing import Any

from ingest.fhir.fhirpath.fhir_types import _SYSTEM_TYPES, CHOICE_NAMES, _type_arg, choice_keys
from ingest.fhir.fhirpath.parser import parse
from ingest.fhir.fhirpath.references import reference_key

SLOW = object()  # returned by a scalar function when only the full evaluator can answer


@functools.lru_cache(maxsize=8192)
def generated_code(source: str, filename: str) -> CodeType:
    """``compile(source, filename, "exec")``, once per process for the same text: code objects are immutable,
    and every ``exec`` of one still makes new functions in its own namespace. An ingest compiles the views it
    is given and then the lake's copy of them (the same columns), and a view compiles each column's chain
    twice (its closure tree and its generated code): Python's compiler was most of that time."""
    return compile(source, filename, "exec")


def _chain(node: tuple | None) -> list[tuple] | None:
    """The steps of ``a.b.ofType(T).first().getReferenceKey(T)``-like paths from the focus, or None."""
    if node is None:
        return []
    kind = node[0]
    if kind == "member":
        steps = _chain(node[1])
        if steps is None or node[2][0].isupper() or (steps and steps[-1][0] in ("ref", "rkey")):
            return None  # a type name (``Patient.x``) or a member of a key: the full evaluator
        return [*steps, ("m", node[2])]
    if kind != "func":
        return None
    _, target, name, args = node
    if name == "ofType" and len(args) == 1 and target is not None and target[0] == "member":
        steps = _chain(target[1])
        type_name = _type_arg(args[0], "ofType")
        t = _SYSTEM_TYPES.get(type_name, type_name)
        if steps is None or target[2][0].isupper() or (steps and steps[-1][0] in ("ref", "rkey")):
            return None
        key, *others = choice_keys(target[2], t)
        return [*steps, ("t", target[2], key, tuple(others))]
    steps = _chain(target)
    if steps is None:
        return None
    if name == "first" and not args:
        return [*steps, ("first",)]
    if steps and steps[-1][0] in ("ref", "rkey"):
        return None
    if name == "getReferenceKey" and len(args) <= 1:
        return [*steps, ("ref", _type_arg(args[0], "getReferenceKey") if args else None)]
    if name == "getResourceKey" and not args:
        return [*steps, ("rkey",)]
    return None


def _chain_source(steps: list[tuple], fn_name: str, names: dict[str, Any]) -> str:
    """Python source of ``fn_name(x)``: the chain's single value, None when empty, or ``SLOW``."""
    lines = [f"def {fn_name}(x):"]
    for i, step in enumerate(steps):
        kind = step[0]
        next_first = i + 1 < len(steps) and steps[i + 1][0] == "first"
        if kind == "first":
            continue  # the member step before it already took the first item
        if kind == "ref":
            lines.append(f"    return reference_key(x, {step[1]!r})")
            break
        if kind == "rkey":
            lines.append("    if type(x) is not dict or 'resourceType' not in x:")
            lines.append("        return None")
            lines.append("    return x.get('id')")
            break
        lines.append("    if type(x) is not dict:")
        lines.append("        return SLOW")
        if kind == "m":
            name = step[1]
            lines.append(f"    x = x.get({name!r})")
            lines.append("    if x is None:")
            lines.append(f"        return {'SLOW' if name in CHOICE_NAMES else 'None'}")
        else:
            _, name, key, others = step
            lines.append(f"    v = x.get({key!r})")
            lines.append("    if v is None:")
            lines.append(f"        return None if {_absent('x', (name, *others))} else SLOW")
            lines.append("    x = v")
        lines.append("    if type(x) is list:")
        lines.append("        if not x:")
        lines.append("            return None")
        if not next_first:
            lines.append("        if len(x) > 1:")
            lines.append("            return SLOW")
        lines.append("        x = x[0]")
    else:
        lines.append("    return SLOW if type(x) is list else x")
    names.update(reference_key=reference_key, SLOW=SLOW)
    return "\n".join(lines)


def compile_scalar(text: str) -> Callable[[Any], Any] | None:
    """A fast function ``fn(item) -> value`` for the simple paths most view columns use, or None.

    Covered: member chains with ``first()``, ``ofType(T)``, a final ``getReferenceKey([T])`` or
    ``getResourceKey()``, and ``(chain | chain | ...).first()``. ``fn(item)`` is the single value the
    path gives on the one-item collection ``[item]`` (None when empty), or :data:`SLOW` when the data
    need the full evaluator (several values, choice elements to search, non-object steps).
    """
    chains = scalar_chains(text)
    if chains is None:
        return None
    names: dict[str, Any] = {}
    source = "\n".join(_chain_source(c, f"f{i}", names) for i, c in enumerate(chains))
    exec(generated_code(source, f"<fhirpath {text[:60]}>"), names)  # noqa: S102 - generated from the parse tree
    fns = [names[f"f{i}"] for i in range(len(chains))]
    if len(fns) == 1:
        return fns[0]

    def first_of(x: Any) -> Any:
        for fn in fns:
            v = fn(x)
            if v is not None:
                return v
        return None
    return first_of


def scalar_chains(text: str) -> list[list[tuple]] | None:
    """The step chains of a path :func:`compile_scalar` covers (several for ``(a | b).first()``), or None.

    Steps: ``("m", name)`` member, ``("t", name, key, others)`` ``name.ofType(T)`` read as ``key`` (``others``:
    the keys of the types derived from T, left to the full evaluator), ``("first",)``,
    ``("ref", type or None)`` getReferenceKey, ``("rkey",)`` getResourceKey.
    """
    tree = parse(text)
    alternatives = [tree]
    if tree[0] == "func" and tree[2] == "first" and not tree[3] and tree[1] is not None \
            and tree[1][0] == "binop" and tree[1][1] == "|":
        alternatives = [("func", a, "first", []) for a in _union_parts(tree[1])]
    chains = [_chain(a) for a in alternatives]
    if any(c is None or not c for c in chains):
        return None
    return chains


def chain_ops(steps: list[tuple]) -> list[tuple]:
    """A chain as generation ops: ``first()`` folded into the member step before it, giving
    ``("m", name, first)``, ``("t", name, key, others, first)``, ``("ref", type)``, ``("rkey",)``."""
    ops: list[tuple] = []
    for i, step in enumerate(steps):
        if step[0] == "first":
            continue
        first = i + 1 < len(steps) and steps[i + 1][0] == "first"
        ops.append((*step, first) if step[0] in ("m", "t") else step)
    return ops


def op_lines(op: tuple, src: str, dst: str, last: bool) -> list[str]:
    """Python statements setting ``dst`` to one chain op applied to ``src`` (a value, None for empty, or
    ``SLOW``), with the semantics of :func:`compile_scalar`; ``last``: the chain's final op. The generated
    code needs ``SLOW`` and ``reference_key`` in its globals."""
    if op[0] == "ref":
        return [f"{dst} = {src} if {src} is None or {src} is SLOW else reference_key({src}, {op[1]!r})"]
    if op[0] == "rkey":
        return [f"if {src} is None or {src} is SLOW:", f"    {dst} = {src}",
                f"elif type({src}) is not dict or 'resourceType' not in {src}:", f"    {dst} = None",
                "else:", f"    {dst} = {src}.get('id')"]
    lines = [f"if {src} is None or {src} is SLOW:", f"    {dst} = {src}",
             f"elif type({src}) is not dict:", f"    {dst} = SLOW", "else:"]
    if op[0] == "m":
        name, first = op[1], op[2]
        lines.append(f"    {dst} = {src}.get({name!r})")
        if name in CHOICE_NAMES:
            lines += [f"    if {dst} is None:", f"        {dst} = SLOW"]
    else:
        _, name, key, others, first = op
        lines += [f"    {dst} = {src}.get({key!r})", f"    if {dst} is None and not {_absent(src, (name, *others))}:",
                  f"        {dst} = SLOW"]
    lines.append(f"    if type({dst}) is list:")
    if first:
        lines.append(f"        {dst} = {dst}[0] if {dst} else None")
    else:
        lines.append(f"        {dst} = {dst}[0] if len({dst}) == 1 else None if not {dst} else SLOW")
    if last:  # a list in a list: only the full evaluator flattens it
        lines += [f"        if type({dst}) is list:", f"            {dst} = SLOW"]
    return lines


def _absent(var: str, keys: tuple[str, ...]) -> str:
    """Python expression: none of ``keys`` is in the object ``var`` (a null value counts as absent)."""
    return "(" + " and ".join(f"{var}.get({k!r}) is None" for k in keys) + ")"


def _union_parts(node: tuple) -> list[tuple]:
    if node[0] == "binop" and node[1] == "|":
        return _union_parts(node[2]) + _union_parts(node[3])
    return [node]
