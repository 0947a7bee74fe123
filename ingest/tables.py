"""Curated per-patient tables: extra feature modalities and outcome labels from CSV files.

``ingest_features`` turns any per-patient table (gene expression, radiomics, curated clinical variables) into a
modality: every column but the id becomes a row ``(patient_id, modality, feature, value | value_str)`` of the
long ``features`` table. Numeric columns (at least :data:`NUMERIC_SHARE` of their cells are numbers) keep
``value``; other columns keep ``value_str`` (categorical).

``ingest_labels`` loads curated outcomes with any of ``split`` (train/val/test, or a name of
:data:`SPLIT_ALIASES`), ``diagnosis``, ``time`` (days), ``event`` (0/1), ``treatment``, ``response`` (0/1),
``index_date``. ``time`` and ``event`` are of one survival endpoint, overall survival unless ``endpoint`` names
another (``pfs``, ``dfs``, ...), recorded with them. Curated labels override those derived from
FHIR; a file updates only the label columns it has. An ``index_date`` without a UTC offset (a date, or a
date-time without ``Z`` or ``+hh:mm``) is a local time of the ``timezone`` given (UTC by default): a date
starts at midnight there, so at a site in Sydney a lab timed at 08:00+10:00 on the day of diagnosis is not
taken for a record of the day before. A row with an invalid value is rejected with its row number
(the file's line) and reason; the other rows land.

Both read the CSV row by row (:func:`read_csv_rows`): a row whose field count differs from the header's is
rejected, never shifted into other columns; a patient id on several rows rejects all of them; a file with no
row to load fails and leaves the lake as it was.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Collection
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
import pyarrow as pa

from ingest.lake import Lake, one_writer
from ingest.link import id_map, resolve_ids
from ingest.schema import SCHEMAS, utc_timestamps

LABEL_COLUMNS = ("split", "diagnosis", "time", "event", "treatment", "response", "index_date")
ENDPOINT_NAME = r"[a-z][a-z0-9_]*"  # a survival endpoint, lower case: os, pfs, dfs, dss, dmfs, ...
# curated split names -> the lake's train | val | test (fusion.splits reads the same names)
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}
# cells read as missing: the usual spellings (pandas' defaults, less None/none, which can be a category)
MISSING = {"", "NA", "N/A", "n/a", "#N/A", "<NA>", "NaN", "nan", "NULL", "null"}
# A feature column is numeric when at least this share of its non-missing cells are finite numbers; its other
# cells are rejected (stored as missing) instead of turning the whole column, numbers included, into categories.
NUMERIC_SHARE = 0.8
MAX_CELL_CHARS = 1 << 26  # a cell longer than this (64 Mi characters) fails the file
_TRUE = {"1", "true", "yes", "1.0"}
_FALSE = {"0", "false", "no", "0.0"}
_ISO_DATE = r"^\d{4}-\d{2}-\d{2}"
_OFFSET = r"T\d{2}:\d{2}.*(Z|[+-]\d{2}:\d{2})$"  # a date-time that says its UTC offset
_SPACED_TIME = r"^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2})"  # "2015-12-18 00:00:00", as pandas and spreadsheets write
_DECIMAL_COMMA = r"^[+-]?\d+,\d+$"  # "12,5": a European decimal (or a thousands separator: ambiguous)


class TableFileError(ValueError):
    """A curated CSV cannot be ingested as a whole (unreadable, no id column, nothing to load)."""


@dataclass
class CsvRows:
    """A CSV read as text: ``frame`` holds stripped strings (None where missing), indexed by row number (the
    file's line number, the header being line 1); ``raw`` the text of each row; ``rejects`` the rows whose field
    count differs from the header's."""

    frame: pd.DataFrame
    raw: pd.Series
    rejects: list[dict]


def read_csv_rows(path: Path, id_column: str) -> CsvRows:
    """Read a curated CSV (UTF-8, comma-separated, header first).

    Blank lines are skipped; empty trailing fields (a trailing comma, as spreadsheets write) are dropped; a row
    with another number of fields than the header is rejected rather than shifted into the wrong columns, and
    so is a row whose quoted value runs over several lines (a quote opened and not closed swallows the lines
    after it: they are in the reject's raw text, not lost).

    Raises:
        TableFileError: the file is unreadable, empty, has an unnamed or repeated column, or no ``id_column``.
    """
    if not path.is_file():
        raise TableFileError(f"{path} not found")
    rows, numbers, raws, rejects = [], [], [], []
    start = 1  # the line the record being read starts on
    limit = csv.field_size_limit(MAX_CELL_CHARS)  # the default, 131,072 characters, failed whole files
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, strict=True)
            header = [name.strip() for name in next(reader, [])]
            while header and not header[-1]:
                header.pop()
            _check_header(path, header, id_column)
            start = reader.line_num + 1
            for fields in reader:
                first, start = start, reader.line_num + 1
                values = [field.strip() for field in fields]
                if not any(values):
                    continue
                while len(values) > len(header) and not values[-1]:
                    values.pop()
                raw = ",".join(fields)
                if reader.line_num > first:
                    rejects.append({"source": str(path), "location": f"row {first}", "raw": raw,
                                    "reason": f"a quoted value runs from line {first} to line {reader.line_num}:"
                                              " a quote opened and not closed? Close it (or double a quote"
                                              " inside a value) and ingest the file again"})
                    continue
                if len(values) != len(header):
                    rejects.append({"source": str(path), "location": f"row {reader.line_num}", "raw": raw,
                                    "reason": f"{len(values)} fields where the header has {len(header)}; quote values "
                                              "that contain commas"})
                    continue
                rows.append([None if v in MISSING else v for v in values])
                numbers.append(reader.line_num)
                raws.append(raw)
    except csv.Error as exc:
        raise TableFileError(f"{path}: cannot read as CSV at the record starting on line {start} ({exc}): a quote"
                             " opened and not closed, or text right after a closing quote? Fix the quoting and"
                             " ingest the file again") from exc
    except UnicodeDecodeError as exc:
        raise TableFileError(f"{path}: line {first_undecodable_line(path)} is not UTF-8 text ({exc.reason}, byte"
                             f" {exc.object[exc.start:exc.start + 1]!r}); save the file as UTF-8 (a spreadsheet's"
                             " 'CSV UTF-8' format) and ingest it again") from exc
    except OSError as exc:
        raise TableFileError(f"{path}: cannot read as CSV ({exc}); save it as comma-separated UTF-8") from exc
    finally:
        csv.field_size_limit(limit)
    index = pd.Index(numbers, name="row")
    return CsvRows(pd.DataFrame(rows, columns=header, index=index, dtype=object), pd.Series(raws, index=index,
                                                                                         dtype=object), rejects)


def first_undecodable_line(path: Path) -> int | None:
    """The number of the first line of ``path`` that is not valid UTF-8 (None: every line is)."""
    with path.open("rb") as fh:
        for number, line in enumerate(fh, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return None


def _check_header(path: Path, header: list[str], id_column: str) -> None:
    if not header:
        raise TableFileError(f"{path}: the file is empty; expected a header line starting with {id_column}")
    if "" in header:
        raise TableFileError(f"{path}: column {header.index('') + 1} of the header has no name; name it or delete it")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise TableFileError(f"{path}: column(s) {', '.join(repeated)} appear more than once in the header; "
                             "rename them")
    if id_column not in header:
        raise TableFileError(
            f"{path}: no patient id column {id_column!r} (columns: {header[:20]}); rename it or pass --id-column"
            " (a file separated by semicolons or tabs must be saved as comma-separated)")


def _reject(path: Path, row: int, reason: str, raw: str | None) -> dict:
    return {"source": str(path), "location": f"row {row}", "reason": reason, "raw": raw}


def _id_rejects(mapping: dict[str, str], path: Path, table: CsvRows, ids: pd.Series
                ) -> tuple[pd.Series, list[dict]]:
    """Which rows have a usable patient id (a boolean Series) and a reject for each other row: an empty id, or a
    patient on several rows, under one id or under several that the lake's crosswalk links (a FHIR id and an
    MRN; ``mapping``: :func:`ingest.link.id_map`): every one of them, since which one is right is the curator's
    call."""
    rejects = [_reject(path, row, "empty patient id", table.raw[row]) for row in ids.index[ids.isna()]]
    keys = pd.Series(resolve_ids(ids.fillna(""), mapping), index=ids.index).where(ids.notna())
    repeated = keys.duplicated(keep=False) & keys.notna()
    for row in ids.index[repeated]:
        others = ", ".join(str(r) for r in ids.index[repeated & (keys == keys[row])] if r != row)
        same = "the patient id" if (ids[repeated & (keys == keys[row])] == ids[row]).all() else \
            "the same patient (another of their ids)"
        rejects.append(_reject(path, row, f"{same} is also on row(s) {others}; keep one row per patient",
                               table.raw[row]))
    return ids.notna() & ~repeated, rejects


def _no_rows(path: Path, rejects: list[dict], what: str) -> TableFileError:
    """The error for a file without one loadable row (the lake is left as it was)."""
    if not rejects:
        return TableFileError(f"{path}: a header but no data rows; nothing was loaded and the lake's {what} were kept")
    first = "; ".join(f"{r['location']}: {r['reason']}" for r in rejects[:3])
    return TableFileError(f"{path}: every row was rejected ({len(rejects)}; {first}); nothing was loaded and the "
                          f"lake's {what} were kept")


@dataclass
class PreparedTable:
    """A table file read and checked, not yet written (:func:`write_prepared`): a reader of several files
    (:mod:`ingest.cbioportal`) prepares them all before the first write, so a file that fails changes nothing."""

    command: str
    path: Path
    table: str  # the lake table written: "features" (rows of ``scope`` replaced) or "labels" (merged by patient)
    rows: pa.Table
    rejects: list[dict]
    counts: dict
    failed_counts: dict  # the manifest's counts when the write fails
    scope: str | None
    started: datetime


def write_prepared(lake: Lake, prepared: PreparedTable) -> dict:
    """Write ``prepared``'s rejects, then its rows in one commit, and record the run; returns its counts."""
    with lake.failure_recorded(prepared.command, [prepared.path], lambda: prepared.failed_counts,
                               started_at=prepared.started):
        # the rejects first: a run stopped after the data commit keeps them
        lake.add_rejects(prepared.rejects, modality=prepared.table)
        if prepared.scope is None:
            lake.write(prepared.table, prepared.rows, mode="merge")
        else:  # one commit: an interrupted re-ingest leaves the previous rows intact
            lake.write(prepared.table, prepared.rows, mode="overwrite", replace_where=prepared.scope)
    lake.record_run(prepared.command, [prepared.path], prepared.counts, started_at=prepared.started,
                    status="partial" if prepared.rejects else "ok")
    return prepared.counts


@one_writer
def ingest_features(lake: Lake, path: Path, *, modality: str, id_column: str = "patient_id",
                    table: CsvRows | None = None, replace: Literal["modality", "source"] = "modality",
                    categorical: Collection[str] = ()) -> dict[str, int]:
    """Load a wide per-patient CSV as feature modality ``modality`` (see :func:`prepare_features`)."""
    return write_prepared(lake, prepare_features(lake, path, modality=modality, id_column=id_column, table=table,
                                                 replace=replace, categorical=categorical))


def prepare_features(lake: Lake, path: Path, *, modality: str, id_column: str = "patient_id",
                     table: CsvRows | None = None, replace: Literal["modality", "source"] = "modality",
                     categorical: Collection[str] = ()) -> PreparedTable:
    """Read a wide per-patient CSV as feature modality ``modality`` (its write replaces that modality's rows).

    A column is numeric when at least :data:`NUMERIC_SHARE` of its non-missing cells are finite numbers; its
    other cells are rejected and stored as missing. Other columns are categorical. ``table``: the file already
    read by another reader (:mod:`ingest.cbioportal`), indexed by its line numbers; ``path`` then names it.
    ``replace``: ``modality`` (the file replaces every row of the modality) or ``source`` (only the rows this
    file gave before: several studies' files add up in one modality). ``categorical``: columns that are
    categories whatever their cells look like (a cBioPortal STRING attribute of cluster numbers).

    Returns:
        The prepared rows; their counts: ``patients``, ``features``, ``values`` written and ``rejected`` (rows
        and numeric cells).

    Raises:
        TableFileError: the file cannot be read, or has no row to load (the modality's rows are then kept).
    """
    started = datetime.now(UTC)
    if not modality.strip():
        raise TableFileError("--modality must name the modality (e.g. expression)")
    if replace not in ("modality", "source"):
        raise ValueError(f"replace must be 'modality' or 'source', not {replace!r}")
    table = table if table is not None else read_csv_rows(path, id_column)
    frame = table.frame.copy()
    ids = frame.pop(id_column)
    keep, id_rejects = _id_rejects(id_map(lake), path, table, ids)
    rejects = table.rejects + id_rejects
    frame, ids = frame[keep], ids[keep]
    if frame.empty:
        raise _no_rows(path, rejects, f"{modality!r} features")
    records: dict[str, list] = {k: [] for k in ("patient_id", "feature", "value", "value_str")}
    for column in list(frame.columns):
        values = frame[column]
        numbers = pd.to_numeric(values, errors="coerce").astype(float)
        finite, present = np.isfinite(numbers.to_numpy()), values.notna().to_numpy()
        is_numeric = column not in categorical and finite.any() and finite.sum() >= NUMERIC_SHARE * present.sum()
        unusable = _unusable_column(column, values, is_numeric)
        if unusable:
            rejects.append({"source": str(path), "location": f"column {column}", "reason": unusable, "raw": None})
            continue
        if is_numeric:
            for row in values.index[present & ~finite]:
                rejects.append({**_reject(path, row, f"{column}: not a finite number, in a numeric column "
                                                     f"({finite.sum()} of {present.sum()} values are); stored as "
                                                     "missing (the reject's raw text is the cell)", values[row]),
                                "location": f"row {row}, column {column}"})
        records["patient_id"].extend(ids)
        records["feature"].extend([column] * len(values))
        records["value"].extend(np.where(finite, numbers, np.nan) if is_numeric else [None] * len(values))
        records["value_str"].extend([None] * len(values) if is_numeric else values)
    if not records["feature"]:
        reasons = "; ".join(r["reason"] for r in rejects if r["location"].startswith("column "))[:600]
        raise TableFileError(f"{path}: no column could be loaded ({reasons}); nothing was loaded and the lake's"
                             f" {modality!r} features were kept")
    rows = pa.table({
        "patient_id": pa.array(records["patient_id"], pa.string()),
        "modality": pa.array([modality] * len(records["patient_id"]), pa.string()),
        "feature": pa.array(records["feature"], pa.string()),
        "value": pa.array([None if v is None or math.isnan(v) else float(v) for v in records["value"]], pa.float64()),
        "value_str": pa.array(records["value_str"], pa.string()),
        "source": pa.array([str(path)] * len(records["patient_id"]), pa.string()),
    })
    scope = f"modality = '{_sql_text(modality)}'" + (f" AND source = '{_sql_text(str(path))}'"
                                                      if replace == "source" else "")
    counts = {"patients": int(ids.nunique()), "features": len(set(records["feature"])), "values": rows.num_rows,
              "rejected": len(rejects)}
    return PreparedTable(f"ingest features --modality {modality}", path, "features", rows, rejects, counts,
                         {**counts, "values": 0}, scope, started)


def _sql_text(text: str) -> str:
    """``text`` inside a SQL string literal."""
    return text.replace("'", "''")


def _unusable_column(column: str, values: pd.Series, is_numeric: bool) -> str | None:
    """Why feature column ``column`` cannot be loaded as it is (its reject reason), or None."""
    if "=" in column:
        return (f"column name {column!r} has '='; the model names a category feature '<column>=<value>', so this"
                " name could clash: rename the column")
    present = values.dropna()
    if not is_numeric and len(present) and present.str.match(_DECIMAL_COMMA).mean() >= NUMERIC_SHARE:
        return (f"column {column!r} holds numbers with a comma (like 12,5): a decimal comma, or a thousands"
                " separator? Write decimals with a point and no separators, and ingest the file again (not loaded,"
                " rather than loaded as categories)")
    return None


def _parse_bool(name: str, value: str) -> bool:
    text = value.lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    with suppress(ValueError):
        if float(text) in (0.0, 1.0):  # 1.00, 0e0: how spreadsheets write numbers
            return float(text) == 1.0
    raise ValueError(f"{name} is not 0/1 (nor true/false, yes/no)")


@one_writer
def ingest_labels(lake: Lake, path: Path, *, id_column: str = "patient_id", timezone: str = "UTC",
                  table: CsvRows | None = None, endpoint: str = "os") -> dict[str, object]:
    """Load curated outcome labels, upserted by patient (see :func:`prepare_labels`)."""
    return write_prepared(lake, prepare_labels(lake, path, id_column=id_column, timezone=timezone, table=table,
                                               endpoint=endpoint))


def prepare_labels(lake: Lake, path: Path, *, id_column: str = "patient_id", timezone: str = "UTC",
                   table: CsvRows | None = None, endpoint: str = "os") -> PreparedTable:
    """Read curated outcome labels (their write upserts them by patient).

    ``timezone`` (an IANA name such as ``Australia/Sydney``) is where an ``index_date`` without a UTC offset
    was written: a date is that day's midnight there, stored in UTC. ``table``: the file already read by another
    reader (:mod:`ingest.cbioportal`), indexed by its line numbers; ``path`` then names it. ``endpoint``: the
    survival endpoint of the file's ``time`` and ``event`` (``os``, ``pfs``, ...; letter case ignored), stored
    with them in ``endpoint``.

    Label columns are matched case-insensitively. A patient already in the lake keeps the labels of the columns
    this file does not have (a file with only ``split`` adds splits to stored outcomes); an empty cell in a
    column the file has clears that label. Rows with an invalid value, no label value, or a patient id that is
    on several rows are rejected.

    Returns:
        The prepared rows; their counts: ``patients`` written, ``rejected`` rows, ``ignored_columns`` (how many
        columns are not label columns) and ``ignored`` (their names).

    Raises:
        TableFileError: the file cannot be read, has no label column, or no row to load, ``timezone`` is not a
            time zone name, or ``endpoint`` no endpoint name (the lake is unchanged).
    """
    started = datetime.now(UTC)
    zone = _zone(timezone)
    endpoint = _endpoint(endpoint)
    table = table if table is not None else read_csv_rows(path, id_column)
    frame = table.frame.rename(columns={c: c.lower() for c in table.frame.columns
                                        if c != id_column and c.lower() in LABEL_COLUMNS})
    ignored = [c for c in frame.columns if c not in (id_column, *LABEL_COLUMNS)]
    columns = [c for c in LABEL_COLUMNS if c in frame.columns]
    repeated = sorted({c for c in columns if list(frame.columns).count(c) > 1})
    if repeated:
        raise TableFileError(f"{path}: label column(s) {', '.join(repeated)} appear more than once (letter case "
                             "is ignored); keep one")
    if not columns:
        raise TableFileError(f"{path}: no label column (found {[*frame.columns][:20]}); label columns are "
                             f"{', '.join(LABEL_COLUMNS)}")
    mapping = id_map(lake)
    keep, rejects = _id_rejects(mapping, path, table, frame[id_column])
    rejects = table.rejects + rejects
    rows = []
    for number, record in frame[keep].to_dict("index").items():
        try:
            rows.append(_label_row(record, id_column, columns, path, zone))
        except ValueError as exc:
            rejects.append(_reject(path, number, str(exc), table.raw[number]))
    if not rows:
        raise _no_rows(path, rejects, "labels")
    if "time" in columns:  # the endpoint goes with the time and event (a file without them keeps the stored one)
        rows = [{**row, "endpoint": endpoint if row["time"] is not None else None} for row in rows]
        columns = [*columns, "endpoint"]
    rows = _keep_other_columns(lake, _under_stored_ids(lake, mapping, rows), columns)
    written = pa.Table.from_pylist(rows, schema=SCHEMAS["labels"])
    counts = {"patients": written.num_rows, "rejected": len(rejects), "ignored_columns": len(ignored),
              "ignored": ignored}
    return PreparedTable("ingest labels", path, "labels", written, rejects, counts, {**counts, "patients": 0}, None,
                         started)


def _under_stored_ids(lake: Lake, mapping: dict[str, str], rows: list[dict]) -> list[dict]:
    """``rows`` with the patient id of a patient whose labels the lake holds under another of their ids (an MRN
    correction of labels stored by FHIR id) replaced by the stored one, so that the row updates them instead of
    adding a second row for the patient."""
    if not lake.has("labels"):
        return rows
    stored: dict[str, str] = {}
    for stored_id in lake.read("labels", columns=["patient_id"]).column("patient_id").to_pylist():
        stored.setdefault(mapping.get(stored_id, stored_id), stored_id)
    return [{**row, "patient_id": stored.get(mapping.get(row["patient_id"], row["patient_id"]), row["patient_id"])}
            for row in rows]


def _keep_other_columns(lake: Lake, rows: list[dict], columns: list[str]) -> list[dict]:
    """``rows`` with the labels of the columns outside ``columns`` taken from the stored row of their patient (a
    column the stored table predates, such as ``endpoint``, is null)."""
    others = [c for c in (*LABEL_COLUMNS, "endpoint") if c not in columns]
    if not others or not lake.has("labels"):
        return rows
    kept = [c for c in others if c in lake.dataset("labels").schema.names]
    stored = {r["patient_id"]: r for r in lake.read("labels", columns=["patient_id", *kept]).to_pylist()}
    return [{**{c: stored.get(row["patient_id"], {}).get(c) for c in others}, **row} for row in rows]


def _endpoint(name: str) -> str:
    """``name`` as a lake endpoint (lower case); TableFileError with the fix when it is not one word."""
    text = name.strip().lower()
    if not re.fullmatch(ENDPOINT_NAME, text):
        raise TableFileError(f"--endpoint {name!r} is no endpoint name; give the survival endpoint of the file's time"
                             " and event as one word, such as os, pfs or dfs")
    return text


def _zone(name: str) -> ZoneInfo:
    """The time zone called ``name``; TableFileError with the fix when there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise TableFileError(f"time zone {name!r} is unknown; give an IANA name such as UTC, Europe/Paris or "
                             "Australia/Sydney (the zone where index dates without a UTC offset were written)"
                             ) from None


def _label_row(record: dict[str, str | None], id_column: str, columns: list[str], path: Path, zone: ZoneInfo
               ) -> dict:
    """One ``labels`` row from a CSV row (cells are stripped strings or None); raises ValueError with the reason.
    An ``index_date`` without a UTC offset is a local time in ``zone``."""
    values = {c: record[c] for c in columns if record[c] is not None}
    if not values:
        raise ValueError(f"no label value (label columns: {', '.join(columns)})")
    row: dict[str, object] = {"patient_id": record[id_column], "source": str(path), **dict.fromkeys(columns)}
    if "split" in values:
        split = SPLIT_ALIASES.get(values["split"].strip().lower())
        if split is None:
            raise ValueError("split is not one of train/val/test (or training, validation, valid, testing)")
        row["split"] = split
    for name in ("diagnosis", "treatment"):
        if name in values:
            row[name] = values[name]
    if "time" in values:
        try:
            time = float(values["time"])
        except ValueError:
            raise ValueError("time is not a number of days") from None
        if not math.isfinite(time) or time < 0:
            raise ValueError("time must be a non-negative number of days")
        row["time"] = time
    for name in ("event", "response"):
        if name in values:
            row[name] = _parse_bool(name, values[name])
    if ("time" in values) != ("event" in values):
        raise ValueError("time and event go together: give both or neither")
    if "index_date" in values:
        text = re.sub(_SPACED_TIME, r"\1T\2", values["index_date"])
        parsed = utc_timestamps(pa.array([text]))[0].as_py() if re.match(_ISO_DATE, text) else None
        if parsed is None:
            raise ValueError("index_date is not an ISO date (YYYY-MM-DD, or a date-time)")
        if not re.search(_OFFSET, text):  # parsed as UTC: the same wall-clock time in the file's zone
            parsed = parsed.replace(tzinfo=zone).astimezone(UTC)
        row["index_date"] = parsed
    return row
