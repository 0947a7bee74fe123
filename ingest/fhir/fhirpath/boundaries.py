"""``lowBoundary()`` and ``highBoundary()``: the least and the greatest value a decimal, date, date-time or time
of its precision can stand for.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from ingest.fhir.fhirpath.fhir_types import _INT_TYPES
from ingest.fhir.fhirpath.temporal import _DATETIME_RE, _TIME_RE, _days_in_month
from ingest.fhir.fhirpath.values import _num

_DATE_RE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")


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
