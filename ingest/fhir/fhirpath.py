"""A compiled FHIRPath subset: what SQL-on-FHIR v2 ViewDefinitions need, over plain JSON resources.

An expression is parsed once into a small tree and then compiled into nested Python closures, so evaluating it
on a resource never re-parses. Every compiled expression is an :data:`Evaluator`
``fn(collection: list, row_index: int) -> list``: FHIRPath collections are Python lists, primitives are
``str``/``int``/``float``/``bool``, complex values are the JSON ``dict``s themselves.

Supported: member paths (with choice types ``value.ofType(Quantity)`` -> ``valueQuantity``), indexers,
``$this``, ``%constants`` and ``%rowIndex``, literals (string, number, boolean, ``{}``, ``@date``), the
operators ``. [] + - * / div mod & | = != ~ !~ < <= > >= in contains and or xor implies is as``, and the
functions ``where select repeat exists all empty first last tail skip take single count distinct not iif join
ofType is as extension getResourceKey getReferenceKey hasValue lowBoundary highBoundary`` plus the string
functions ``startsWith endsWith contains matches replaceMatches replace substring indexOf lower upper trim
length split toString toInteger toDecimal``. Types are inferred from the JSON (no StructureDefinitions);
``ofType``, ``is`` and ``as`` keep the types FHIR R4 derives from the type named (:data:`SUBTYPES`:
``onset.ofType(Quantity)`` reads ``onsetAge``, ``ofType(string)`` a ``valueCode``).
Two dates, date-times or times (FHIR text or ``@`` literals) compare by what they denote, precision by
precision (N1 6.1.1): offsets are normalised to UTC (no offset: UTC), and a precision one lacks that the
other has gives empty (``birthDate < @2020-06-01`` on ``2020``); other text compares as text. ``in``,
``contains``, ``distinct()``, ``|`` and ``=`` on collections use that equality item by item.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

Evaluator = Callable[[list, int], list]


class FhirPathError(ValueError):
    """An expression that cannot be parsed or compiled, or that fails on the data it is applied to."""


# --------------------------------------------------------------------------------------------------------
# Tokenizer and parser
# --------------------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>\s+|//[^\n]*|/\*.*?\*/)
  | (?P<str>'(?:[^'\\]|\\.)*')
  | (?P<date>@T?[0-9][0-9:.\-T+Z]*)
  | (?P<num>\d+(?:\.\d+)?)
  | (?P<bq>`(?:[^`\\]|\\.)*`)
  | (?P<ext>%(?:[A-Za-z_][A-Za-z0-9_]*|`(?:[^`\\]|\\.)*`|'(?:[^'\\]|\\.)*'))
  | (?P<special>\$(?:this|index|total))
  | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|!=|!~|\{\}|[=~<>+\-*/&|()\[\],.])
""", re.VERBOSE | re.DOTALL)

_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}

_BINARY = {  # operator -> precedence (higher binds tighter)
    "implies": 1, "or": 2, "xor": 2, "and": 3, "in": 4, "contains": 4,
    "=": 5, "~": 5, "!=": 5, "!~": 5, "<": 6, ">": 6, "<=": 6, ">=": 6, "|": 7,
    "is": 8, "as": 8, "+": 9, "-": 9, "&": 9, "*": 10, "/": 10, "div": 10, "mod": 10,
}


def _unescape(body: str) -> str:
    def repl(m: re.Match) -> str:
        c = m.group(1)
        if c.startswith("u"):
            return chr(int(c[1:], 16))
        return _ESCAPES.get(c, c)
    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)", repl, body)


def _tokenize(text: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise FhirPathError(f"unexpected character {text[pos]!r} at position {pos} in {text!r}")
        pos = m.end()
        kind = m.lastgroup
        value = m.group()
        if kind == "ws":
            continue
        if kind == "str":
            tokens.append(("lit", _unescape(value[1:-1])))
        elif kind == "num":
            tokens.append(("lit", float(value) if "." in value else int(value)))
        elif kind == "date":
            tokens.append(("lit", value[1:]))
        elif kind == "bq":
            tokens.append(("id", _unescape(value[1:-1])))
        elif kind == "ext":
            name = value[1:]
            tokens.append(("ext", _unescape(name[1:-1]) if name[0] in "`'" else name))
        elif kind == "special":
            tokens.append(("special", value))
        elif kind == "id":
            tokens.append(("id", value))
        else:
            tokens.append(("op", value))
    tokens.append(("end", None))
    return tokens


class _Parser:
    """Pratt parser producing tuples: ('lit', v) ('empty',) ('this',) ('special', '$index') ('ext', name)
    ('member', target, name) ('func', target, name, args) ('indexer', target, index)
    ('binop', op, left, right) ('neg', operand) ('type', op, operand, type_name)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> tuple[str, Any]:
        return self.tokens[self.pos]

    def take(self) -> tuple[str, Any]:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def expect(self, value: str) -> None:
        kind, got = self.take()
        if kind != "op" or got != value:
            raise FhirPathError(f"expected {value!r} but found {got!r} in {self.text!r}")

    def parse(self) -> tuple:
        node = self.expression(0)
        kind, value = self.peek()
        if kind != "end":
            raise FhirPathError(f"unexpected {value!r} in {self.text!r}")
        return node

    def expression(self, min_prec: int) -> tuple:
        left = self.unary()
        while True:
            kind, value = self.peek()
            if kind not in ("op", "id") or value not in _BINARY or _BINARY[value] < min_prec:
                return left
            self.take()
            prec = _BINARY[value]
            if value in ("is", "as"):
                left = ("type", value, left, self.type_name())
            else:
                left = ("binop", value, left, self.expression(prec + 1))

    def type_name(self) -> str:
        kind, value = self.take()
        if kind != "id":
            raise FhirPathError(f"expected a type name but found {value!r} in {self.text!r}")
        while self.peek() == ("op", "."):
            self.take()
            kind, value = self.take()
            if kind != "id":
                raise FhirPathError(f"expected a type name but found {value!r} in {self.text!r}")
        return value

    def unary(self) -> tuple:
        kind, value = self.peek()
        if kind == "op" and value in ("+", "-"):
            self.take()
            operand = self.unary()
            return operand if value == "+" else ("neg", operand)
        return self.postfix(self.term())

    def term(self) -> tuple:
        kind, value = self.take()
        if kind == "lit":
            return ("lit", value)
        if kind == "ext":
            return ("ext", value)
        if kind == "special":
            return ("this",) if value == "$this" else ("special", value)
        if kind == "id":
            if value in ("true", "false"):
                return ("lit", value == "true")
            return self.invocation(None, value)
        if kind == "op" and value == "(":
            node = self.expression(0)
            self.expect(")")
            return node
        if kind == "op" and value == "{}":
            return ("empty",)
        raise FhirPathError(f"unexpected {value!r} in {self.text!r}")

    def invocation(self, target: tuple | None, name: str) -> tuple:
        if self.peek() == ("op", "("):
            self.take()
            args = []
            if self.peek() != ("op", ")"):
                args.append(self.expression(0))
                while self.peek() == ("op", ","):
                    self.take()
                    args.append(self.expression(0))
            self.expect(")")
            return ("func", target, name, args)
        return ("member", target, name)

    def postfix(self, node: tuple) -> tuple:
        while True:
            tok = self.peek()
            if tok == ("op", "."):
                self.take()
                kind, value = self.take()
                if kind != "id":
                    raise FhirPathError(f"expected a name after '.' but found {value!r} in {self.text!r}")
                node = self.invocation(node, value)
            elif tok == ("op", "["):
                self.take()
                index = self.expression(0)
                self.expect("]")
                node = ("indexer", node, index)
            else:
                return node


def parse(text: str) -> tuple:
    """Parse a FHIRPath expression into its tree (tuples); raises :class:`FhirPathError`."""
    if not isinstance(text, str) or not text.strip():
        raise FhirPathError(f"a FHIRPath expression must be a non-empty string, got {text!r}")
    return _Parser(text).parse()


# --------------------------------------------------------------------------------------------------------
# Value helpers
# --------------------------------------------------------------------------------------------------------

# FHIR R4 choice elements ([x]); a missing key of this name is looked up as name + TypeName.
CHOICE_NAMES = frozenset((
    "value", "effective", "onset", "abatement", "deceased", "multipleBirth", "medication", "performed",
    "occurrence", "timing", "serviced", "born", "age", "defaultValue", "fixed", "pattern", "minValue",
    "maxValue", "reported", "asNeeded", "dose", "rate", "product", "allowed", "used", "collected", "time",
    "identified", "substance", "entity", "answer", "initial", "scheduled", "onBehalfOf", "subject", "item",
    "location", "diagnosis", "procedure", "content", "offset", "created", "bodySite", "reason", "event",
    "detail", "source", "target", "definition", "manufactured", "ingredient", "amount", "probability",
    "when", "started", "recorded", "duration", "quantity", "range", "paid", "benefit", "financial",
))

# The type names a choice element's key ends with (``valueQuantity``, ``onsetDateTime``): a sibling such as
# Timing.repeat's ``durationMax`` or ``durationUnit`` is no value of ``duration``.
CHOICE_TYPES = frozenset((
    "Base64Binary", "Boolean", "Canonical", "Code", "Date", "DateTime", "Decimal", "Id", "Instant", "Integer",
    "Integer64", "Markdown", "Oid", "PositiveInt", "String", "Time", "UnsignedInt", "Uri", "Url", "Uuid",
    "Address", "Age", "Annotation", "Attachment", "Availability", "CodeableConcept", "CodeableReference", "Coding",
    "ContactDetail", "ContactPoint", "Contributor", "Count", "DataRequirement", "Distance", "Dosage", "Duration",
    "Expression", "ExtendedContactDetail", "HumanName", "Identifier", "Meta", "Money", "MonetaryComponent",
    "ParameterDefinition", "Period", "Quantity", "Range", "Ratio", "RatioRange", "Reference", "RelatedArtifact",
    "SampledData", "Signature", "Timing", "TriggerDefinition", "UsageContext", "VirtualServiceDetail",
))

_INT_TYPES = frozenset(("integer", "positiveInt", "unsignedInt", "integer64"))
_STR_TYPES = frozenset(("string", "code", "id", "uri", "url", "canonical", "oid", "uuid", "markdown",
                        "base64Binary", "date", "dateTime", "instant", "time", "xhtml"))
_SYSTEM_TYPES = {"String": "string", "Integer": "integer", "Decimal": "decimal", "Boolean": "boolean",
                 "Date": "date", "DateTime": "dateTime", "Time": "time"}
# The FHIR R4 type hierarchy below a type (datatypes.html; StructureDefinition.baseDefinition): ``ofType(T)`` and
# ``is T`` keep the types derived from T too (FHIRPath N1 6.3). Age, Count, Distance, Duration, SimpleQuantity and
# MoneyQuantity are Quantity profiles (``onsetAge`` is a Quantity); code, id and markdown specialise string;
# url, canonical, oid and uuid specialise uri (no string); positiveInt and unsignedInt specialise integer.
# Date/time types, base64Binary, xhtml and integer64 derive from Element alone.
SUBTYPES: dict[str, tuple[str, ...]] = {
    "Quantity": ("Age", "Count", "Distance", "Duration", "SimpleQuantity", "MoneyQuantity"),
    "string": ("code", "id", "markdown"),
    "uri": ("url", "canonical", "oid", "uuid"),
    "integer": ("positiveInt", "unsignedInt"),
}


def _num(v: Any) -> bool:
    return (type(v) is int or type(v) is float or type(v) is Decimal)


def is_type(value: Any, type_name: str) -> bool:
    """Whether a JSON value can be of FHIR/System type ``type_name`` (inferred from its Python type)."""
    t = _SYSTEM_TYPES.get(type_name, type_name)
    if t == "boolean":
        return type(value) is bool
    if t in _INT_TYPES:
        return type(value) is int
    if t == "decimal":
        return type(value) in (float, Decimal)
    if t in _STR_TYPES:
        return type(value) is str
    if type(value) is dict:
        rt = value.get("resourceType")
        return rt is None or rt == t or t in ("Resource", "DomainResource")
    return False


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


def reference_key(ref: Any, type_name: str | None = None) -> str | None:
    """The resource id a FHIR Reference points to (``Patient/123``, ``http://x/Patient/123/_history/2``,
    ``urn:uuid:123``); ``None`` when the reference is absent or points to another type than ``type_name``.

    ``urn:uuid:`` / ``urn:oid:`` references carry no type: they are checked against ``Reference.type`` when
    present and otherwise accepted.
    """
    if type(ref) is not dict:
        return None
    text = ref.get("reference")
    if type(text) is not str or not text or text.startswith("#"):
        return None
    if text.startswith("urn:"):
        if type_name is not None and ref.get("type") not in (None, type_name):
            return None
        return text.rsplit(":", 1)[-1] or None
    parts = text.split("?", 1)[0].rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2:
        return None
    if type_name is not None and parts[-2] != type_name:
        return None
    return parts[-1] or None


# --------------------------------------------------------------------------------------------------------
# Boundaries (lowBoundary / highBoundary)
# --------------------------------------------------------------------------------------------------------

_DATE_RE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
_DATETIME_RE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?)?)?)?T?"
    r"(Z|[+-]\d{2}:\d{2})?$")
_TIME_RE = re.compile(r"^T?(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?$")


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if (year % 4 == 0 and year % 100 != 0) or year % 400 == 0 else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _boundary(value: Any, kind: str | None, high: bool) -> Any:
    if kind is None:
        if _num(value):
            kind = "decimal"
        elif type(value) is str:
            kind = "dateTime" if "T" in value[1:] else "time" if _TIME_RE.match(value) and ":" in value \
                else "date"
        else:
            return None
    if kind in ("decimal",) or kind in _INT_TYPES:
        if not _num(value):
            return None
        d = Decimal(repr(value)) if type(value) is float else Decimal(value)
        exponent = min(d.as_tuple().exponent, 0)
        half = Decimal(5).scaleb(exponent - 1)
        return float(d + half if high else d - half)
    if type(value) is not str:
        return None
    if kind == "date":
        m = _DATE_RE.match(value)
        if not m:
            return None
        y = int(m.group(1))
        mo = int(m.group(2) or (12 if high else 1))
        d = int(m.group(3) or (_days_in_month(y, mo) if high else 1))
        return f"{y:04d}-{mo:02d}-{d:02d}"
    if kind == "time":
        m = _TIME_RE.match(value)
        if not m:
            return None
        h, mi, s, frac = m.groups()
        mi = mi or ("59" if high else "00")
        s = s or ("59" if high else "00")
        frac = (frac or "")[:3].ljust(3, "9" if high else "0")
        return f"{h}:{mi}:{s}.{frac}"
    if kind in ("dateTime", "instant"):
        m = _DATETIME_RE.match(value)
        if not m:
            return None
        y, mo, d, h, mi, s, frac, tz = m.groups()
        year = int(y)
        month = int(mo or (12 if high else 1))
        day = int(d or (_days_in_month(year, month) if high else 1))
        h = h or ("23" if high else "00")
        mi = mi or ("59" if high else "00")
        s = s or ("59" if high else "00")
        frac = (frac or "")[:3].ljust(3, "9" if high else "0")
        tz = tz or ("-12:00" if high else "+14:00")
        return f"{year:04d}-{month:02d}-{day:02d}T{h}:{mi}:{s}.{frac}{tz}"
    return None


# --------------------------------------------------------------------------------------------------------
# Dates, date-times and times compared as such (FHIRPath N1 6.1.1 and 6.2), not as text
# --------------------------------------------------------------------------------------------------------

_NOT_TEMPORAL = object()  # _temporal_order's answer for a pair that is not two dates/date-times or two times


def _temporal(value: str) -> tuple[str, list] | None:
    """``("date", components)`` for a FHIR date/dateTime/instant or a FHIRPath ``@`` date/date-time literal,
    ``("time", components)`` for a time (``10:30:00``, ``@T10:30``), else None.

    Components are coarsest first (year, month, day, hour, minute; or hour, minute), then the second with its
    fraction as one Decimal, None past the value's precision. A value with an hour and a UTC offset is shifted
    to UTC; one without an offset is taken as UTC (the lake's convention), so ``10:00+02:00`` is ``08:00Z``.
    """
    if not value or not ("0" <= value[0] <= "9" or value[0] == "T"):
        return None
    if value[0] != "T" and not (":" in value and "-" not in value):
        m = _DATETIME_RE.match(value)
        if m is None:
            return None
        y, mo, d, h, mi, s, frac, tz = m.groups()
        comps: list = [int(y), None if mo is None else int(mo), None if d is None else int(d),
                       None if h is None else int(h), None if mi is None else int(mi),
                       None if s is None else Decimal(s + ("." + frac if frac else ""))]
        if comps[1] is not None and not 1 <= comps[1] <= 12 or comps[2] is not None and not \
                1 <= comps[2] <= _days_in_month(comps[0], comps[1]):
            return None
        if h is not None and tz not in (None, "Z", "+00:00", "-00:00"):
            sign = -1 if tz[0] == "-" else 1
            offset = sign * (int(tz[1:3]) * 60 + int(tz[4:6]))
            try:
                shifted = datetime(comps[0], comps[1], comps[2], comps[3], comps[4] or 0) - timedelta(minutes=offset)
            except (ValueError, OverflowError):
                return None
            comps[:4] = [shifted.year, shifted.month, shifted.day, shifted.hour]
            if comps[4] is not None:
                comps[4] = shifted.minute
        return "date", comps
    m = _TIME_RE.match(value)
    if m is None:
        return None
    h, mi, s, frac = m.groups()
    return "time", [int(h), None if mi is None else int(mi),
                    None if s is None else Decimal(s + ("." + frac if frac else ""))]


def _temporal_order(a: str, b: str) -> Any:
    """-1, 0 or 1 for two dates/date-times (or two times) compared precision by precision from the coarsest;
    None (unknown) when one has a precision the other lacks and they agree up to it (``2020`` and
    ``2020-06-01``); :data:`_NOT_TEMPORAL` when they are not both temporal values of one kind."""
    ta, tb = _temporal(a), _temporal(b)
    if ta is None or tb is None or ta[0] != tb[0]:
        return _NOT_TEMPORAL
    for x, y in zip(ta[1], tb[1], strict=True):
        if x is None and y is None:
            return 0
        if x is None or y is None:
            return None
        if x != y:
            return -1 if x < y else 1
    return 0


def _text_equal(a: str, b: str) -> bool | None:
    """FHIRPath ``=`` of two strings: equal text, or two dates/times denoting the same instant at the same
    precision; None (unknown) for dates/times of different precisions that agree as far as both go."""
    if a == b:
        return True
    order = _temporal_order(a, b)
    if order is _NOT_TEMPORAL:
        return False
    return None if order is None else order == 0


def _equals(a: Any, b: Any) -> bool | None:
    """FHIRPath ``=`` of two single values (N1 6.1.1): :func:`_equal`, with two strings compared by
    :func:`_text_equal` (two dates/times by what they denote); None (unknown) for dates/times of different
    precisions that agree as far as both go."""
    if type(a) is str and type(b) is str:
        return _text_equal(a, b)
    return _equal(a, b)


def _same(a: Any, b: Any) -> bool:
    """Whether ``a = b`` is true: how ``in``, ``contains``, ``distinct()`` and ``|`` tell items apart (an unknown
    equality, ``2020`` against ``2020-06-01``, keeps both)."""
    return _equals(a, b) is True


# --------------------------------------------------------------------------------------------------------
# Compiler
# --------------------------------------------------------------------------------------------------------

def _identity(coll: list, ri: int) -> list:
    return coll


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


def choice_keys(name: str, type_name: str) -> tuple[str, ...]:
    """The JSON keys of choice element ``name`` of type ``type_name`` or a type derived from it (see
    :data:`SUBTYPES`): ``("onsetQuantity", "onsetAge", ...)`` for ``onset`` and ``Quantity``."""
    t = _SYSTEM_TYPES.get(type_name, type_name)
    return tuple(name + s[0].upper() + s[1:] for s in (t, *SUBTYPES.get(t, ())))


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


def _type_arg(node: tuple, fn: str) -> str:
    if node[0] == "member" and node[1] is None:
        return node[2]
    if node[0] == "member" and node[1] is not None and node[1][0] == "member" and node[1][1] is None:
        return node[2]  # FHIR.string or System.String
    raise FhirPathError(f"{fn}() expects a type name, e.g. {fn}(Quantity)")


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


# Function builders: (compiler, source, args, target_node) -> Evaluator -------------------------------------

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


# --------------------------------------------------------------------------------------------------------
# Scalar fast path: the common simple paths of view columns, compiled to straight-line Python
# --------------------------------------------------------------------------------------------------------

SLOW = object()  # returned by a scalar function when only the full evaluator can answer


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
    exec(compile(source, f"<fhirpath {text[:60]}>", "exec"), names)  # noqa: S102 - generated from the parse tree
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


# --------------------------------------------------------------------------------------------------------
# Filter fast path: ``where`` paths made of exists() tests over simple criteria, as generated Python
# --------------------------------------------------------------------------------------------------------

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
    exec(compile("\n".join(lines), f"<where {text[:60]}>", "exec"), names)  # noqa: S102 - from the parse tree
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
