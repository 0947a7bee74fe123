"""Tokenizer and Pratt parser: FHIRPath text to the tree of tuples that the compiler, the fast paths and
result-type inference read.
"""

from __future__ import annotations

import re
from typing import Any

from ingest.fhir.fhirpath.errors import FhirPathError

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
