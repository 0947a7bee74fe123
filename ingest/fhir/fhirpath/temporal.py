"""Dates, date-times and times compared as such (FHIRPath N1 6.1.1 and 6.2), not as text: read into their
components (offsets normalised to UTC) and ordered precision by precision; ``=`` of two single values.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from ingest.fhir.fhirpath.values import _equal

_DATETIME_RE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?)?)?)?T?"
    r"(Z|[+-]\d{2}:\d{2})?$")
_TIME_RE = re.compile(r"^T?(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?$")


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if (year % 4 == 0 and year % 100 != 0) or year % 400 == 0 else 28
    return 30 if month in (4, 6, 9, 11) else 31


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
