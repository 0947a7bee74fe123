"""Curated per-patient tables: extra feature modalities and outcome labels from CSV files.

``ingest_features`` turns any per-patient table (gene expression, radiomics, curated clinical variables) into a
modality: every column but the id becomes a row ``(patient_id, modality, feature, value | value_str)`` of the
long ``features`` table. Numeric columns keep ``value``; other columns keep ``value_str`` (categorical).

``ingest_labels`` loads curated outcomes with any of ``split`` (train/val/test), ``diagnosis``, ``time`` (days),
``event`` (0/1), ``treatment``, ``response`` (0/1), ``index_date``. Curated labels override those derived from
FHIR. A row with an invalid value is rejected with its row number and reason; the other rows land.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa

from ingest.lake import Lake
from ingest.schema import SCHEMAS, utc_timestamps

LABEL_COLUMNS = ("split", "diagnosis", "time", "event", "treatment", "response", "index_date")
SPLITS = {"train", "val", "test"}
_TRUE = {"1", "true", "yes", "1.0"}
_FALSE = {"0", "false", "no", "0.0"}


class TableFileError(ValueError):
    """A curated CSV cannot be ingested as a whole (unreadable, no id column)."""


def _read_csv(path: Path, id_column: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=["", "NA", "NaN", "nan"])
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise TableFileError(f"{path}: cannot read as CSV ({exc}); save it as comma-separated UTF-8") from exc
    if id_column not in frame.columns:
        raise TableFileError(
            f"{path}: no patient id column {id_column!r} (columns: {list(frame.columns)[:20]});"
            " rename it or pass --id-column")
    return frame


def ingest_features(lake: Lake, path: Path, *, modality: str, id_column: str = "patient_id") -> dict[str, int]:
    """Load a wide per-patient CSV as feature modality ``modality`` (replacing that modality's rows).

    Returns:
        counts: ``patients``, ``features``, ``values`` written and ``rejected`` rows.
    """
    started = datetime.now(UTC)
    frame = _read_csv(path, id_column)
    ids = frame.pop(id_column)
    rejects = [{"source": str(path), "location": f"row {i + 2}", "reason": "empty patient id", "raw": None}
               for i in ids.index[ids.isna()]]
    duplicated = ids.duplicated(keep=False) & ids.notna()
    rejects += [{"source": str(path), "location": f"row {i + 2}",
                 "reason": "patient id appears on several rows; keep one row per patient", "raw": None}
                for i in ids.index[duplicated]]
    keep = ids.notna() & ~duplicated
    frame, ids = frame[keep], ids[keep]
    records: dict[str, list] = {k: [] for k in ("patient_id", "feature", "value", "value_str")}
    for column in frame.columns:
        values = frame[column]
        numeric = pd.to_numeric(values, errors="coerce")
        is_numeric = numeric.notna().sum() == values.notna().sum()
        records["patient_id"].extend(ids)
        records["feature"].extend([column] * len(values))
        records["value"].extend(numeric if is_numeric else [None] * len(values))
        records["value_str"].extend([None] * len(values) if is_numeric else values)
    table = pa.table({
        "patient_id": pa.array(records["patient_id"], pa.string()),
        "modality": pa.array([modality] * len(records["patient_id"]), pa.string()),
        "feature": pa.array(records["feature"], pa.string()),
        "value": pa.array([None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
                           for v in records["value"]], pa.float64()),
        "value_str": pa.array([None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                               for v in records["value_str"]], pa.string()),
        "source": pa.array([str(path)] * len(records["patient_id"]), pa.string()),
    })
    quoted = modality.replace("'", "''")
    # One commit replaces this modality's rows: an interrupted re-ingest leaves the previous ones intact.
    lake.write("features", table, mode="overwrite", replace_where=f"modality = '{quoted}'")
    lake.add_rejects(rejects, modality="features")
    counts = {"patients": int(ids.nunique()), "features": int(frame.shape[1]), "values": table.num_rows,
              "rejected": len(rejects)}
    lake.record_run(f"ingest features --modality {modality}", [path], counts, started_at=started,
                    status="partial" if rejects else "ok")
    return counts


def _parse_bool(value: object) -> bool | None:
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{value!r} is not 0/1")


def ingest_labels(lake: Lake, path: Path, *, id_column: str = "patient_id") -> dict[str, int]:
    """Load curated outcome labels; rows are upserted by patient. Returns ``patients`` and ``rejected``."""
    started = datetime.now(UTC)
    frame = _read_csv(path, id_column)
    unknown = [c for c in frame.columns if c not in (id_column, *LABEL_COLUMNS)]
    rows, rejects = [], []
    for i, record in enumerate(frame.to_dict("records")):
        location = f"row {i + 2}"
        try:
            rows.append(_label_row(record, id_column, path))
        except ValueError as exc:
            rejects.append({"source": str(path), "location": location, "reason": str(exc),
                            "raw": ",".join("" if pd.isna(v) else str(v) for v in record.values())})
    table = pa.Table.from_pylist(rows, schema=SCHEMAS["labels"])
    if table.num_rows:
        lake.write("labels", table, mode="merge")
    lake.add_rejects(rejects, modality="labels")
    counts = {"patients": table.num_rows, "rejected": len(rejects), "ignored_columns": len(unknown)}
    lake.record_run("ingest labels", [path], counts, started_at=started, status="partial" if rejects else "ok")
    return counts


def _label_row(record: dict, id_column: str, path: Path) -> dict:
    def present(name: str) -> bool:
        return name in record and not pd.isna(record[name])

    if not present(id_column):
        raise ValueError("empty patient id")
    row: dict[str, object] = {"patient_id": str(record[id_column]), "source": str(path)}
    if present("split"):
        split = str(record["split"]).strip().lower()
        if split not in SPLITS:
            raise ValueError(f"split {record['split']!r} is not one of train/val/test")
        row["split"] = split
    for name in ("diagnosis", "treatment"):
        if present(name):
            row[name] = str(record[name])
    if present("time"):
        try:
            time = float(record["time"])
        except ValueError:
            raise ValueError(f"time {record['time']!r} is not a number of days") from None
        if not math.isfinite(time) or time < 0:
            raise ValueError(f"time {record['time']!r} must be a non-negative number of days")
        row["time"] = time
    for name in ("event", "response"):
        if present(name):
            row[name] = _parse_bool(record[name])
    if present("time") != present("event"):
        raise ValueError("time and event go together: give both or neither")
    if present("index_date"):
        row["index_date"] = utc_timestamps(pa.array([str(record["index_date"])]))[0].as_py()
        if row["index_date"] is None:
            raise ValueError(f"index_date {record['index_date']!r} is not an ISO date (YYYY-MM-DD)")
    return row
