"""Reading cBioPortal's tab-separated data files: ``#`` lines, then a header of column ids, then data lines."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ingest.tables import MISSING, TableFileError, first_undecodable_line

PLACEHOLDER = re.compile(r"^\[[^\]]*\]$")  # "[Not Available]", "[Unknown]", ... as TCGA-derived studies write


class StudyError(TableFileError):
    """A cBioPortal study folder cannot be ingested as a whole (nothing was loaded)."""


@dataclass
class StudyTable:
    """A cBioPortal TSV: ``frame`` of stripped strings (None where missing) indexed by the file's line number;
    ``raw`` each line's text; ``rejects`` the lines whose field count differs from the header's; ``datatypes``
    each attribute's type as a clinical file's third ``#`` line declares it."""

    path: Path
    frame: pd.DataFrame
    raw: pd.Series
    rejects: list[dict]
    datatypes: dict[str, str] = field(default_factory=dict)  # a clinical file's declared STRING / NUMBER / BOOLEAN


class DataLines:
    """One of a study's files, open: ``header`` (its column ids, checked) and :meth:`lines`, its data lines.

    ``#`` lines before the header and blank lines are skipped; line numbers count every line of the file.

    Raises (on opening and while reading lines):
        StudyError: the file is not UTF-8, has no header, an unnamed or repeated column, or lacks a ``required``
            column.
    """

    def __init__(self, path: Path, required: Iterable[str] = ()) -> None:
        self.path, self.number, self.header = path, 0, None
        self.comments: list[str] = []  # the # lines before the header
        self._fh = path.open(encoding="utf-8-sig", newline="")
        self._read = self._numbered()
        try:
            first = next(self._read, None)
            if first is None:
                raise StudyError(f"{path}: no header line (every line is empty or starts with #)")
            self.header = header(path, *first, required)
        except BaseException:
            self._fh.close()
            raise

    def __enter__(self) -> DataLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()

    def lines(self) -> Iterator[tuple[int, str]]:
        """``(line number, text without its line end)`` of each data line, once."""
        return self._read

    def _numbered(self) -> Iterator[tuple[int, str]]:
        try:
            for text in self._fh:
                self.number += 1
                text = text.rstrip("\r\n")
                if self.header is None and text.startswith("#"):
                    self.comments.append(text)
                elif text.strip():
                    yield self.number, text
        except UnicodeDecodeError as exc:  # the decoder reads ahead: find the line in the bytes
            raise StudyError(f"{self.path}, line {first_undecodable_line(self.path)}: not UTF-8 text ({exc.reason});"
                             " save the file as UTF-8") from None


def read_study_table(path: Path, *, required: Iterable[str] = (), only: tuple[str, set[str]] | None = None
                     ) -> StudyTable:
    """Read a cBioPortal TSV line by line (:class:`DataLines`); cells in :data:`ingest.tables.MISSING` or in
    brackets (``[Not Available]``) are missing. ``only`` = ``(column, values)`` keeps just the lines whose
    ``column`` is in ``values`` (a copy-number matrix's panel genes), splitting no other line whole.

    Raises:
        StudyError: as :class:`DataLines`.
    """
    rows, numbers, raws, rejects = [], [], [], []
    with DataLines(path, required) as data:
        width = len(data.header)
        keep_at = data.header.index(only[0]) if only is not None else None
        for number, line in data.lines():
            if keep_at is not None:
                cells = line.split("\t", keep_at + 1)
                # a line too short to have the column is kept: its field count makes it a reject
                if len(cells) > keep_at and cells[keep_at].strip() not in only[1]:
                    continue
            values = fields(line, width)
            if len(values) != width:
                rejects.append({"source": str(path), "location": f"line {number}", "raw": line,
                                "reason": f"{len(values)} tab-separated fields where the header has {width}"})
                continue
            rows.append([None if v in MISSING or PLACEHOLDER.match(v) else v for v in values])
            numbers.append(number)
            raws.append(line)
    index = pd.Index(numbers, name="line")
    return StudyTable(path, pd.DataFrame(rows, columns=data.header, index=index, dtype=object),
                      pd.Series(raws, index=index, dtype=object), rejects, _datatypes(data))


def _datatypes(data: DataLines) -> dict[str, str]:
    """Column -> STRING / NUMBER / BOOLEAN from the third ``#`` line of a clinical file (display names,
    descriptions, datatypes, priorities); empty when there is no such line."""
    if len(data.comments) < 3:
        return {}
    declared = [value.upper() for value in fields(data.comments[2].removeprefix("#"), len(data.header))]
    if len(declared) != len(data.header) or not set(declared) <= {"STRING", "NUMBER", "BOOLEAN"}:
        return {}
    return dict(zip(data.header, declared, strict=True))


def fields(line: str, width: int) -> list[str]:
    """The stripped tab-separated fields of ``line``, less empty ones beyond the first ``width`` (a trailing tab,
    as cBioPortal's own example files have)."""
    found = [field.strip() for field in line.split("\t")]
    while len(found) > width and not found[-1]:
        found.pop()
    return found


def header(path: Path, number: int, line: str, required: Iterable[str]) -> list[str]:
    """The column ids of header ``line`` (line ``number`` of ``path``); StudyError when one is unnamed or
    repeated, or a ``required`` one is missing."""
    names = fields(line, 0)
    # columns by number, not by name: a matrix's columns are sample ids, which name patients
    repeated = next(([i + 1 for i, other in enumerate(names) if other == name] for name in names
                     if names.count(name) > 1), None)
    if repeated or "" in names:
        where = f"columns {' and '.join(map(str, repeated))}" if repeated else f"column {names.index('') + 1}"
        raise StudyError(f"{path}, line {number}: the header has an unnamed or repeated column ({where}); fix the"
                         " header")
    missing = [name for name in required if name not in names]
    if missing:
        raise StudyError(f"{path}, line {number}: no {', '.join(missing)} column; a cBioPortal data file names its"
                         " columns in the first line after the # lines")
    return names
