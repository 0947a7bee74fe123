"""A study's clinical files -> labels (survival, diagnosis) and clinical features without outcomes or identifiers."""

from __future__ import annotations

import pandas as pd

from ingest.cbioportal.tsv import StudyError, StudyTable
from ingest.tables import CsvRows

DAYS_PER_MONTH = 365.25 / 12
INDEX_DATE = "2000-01-01"  # every patient's day 0 (cBioPortal has no calendar dates)
# TCGA/GDC-derived attributes recorded at follow-up, after day 0: never model inputs
FOLLOW_UP_ATTRIBUTES = frozenset({
    "VITAL_STATUS", "DAYS_TO_DEATH", "DAYS_TO_LAST_FOLLOWUP", "DAYS_LAST_FOLLOWUP", "LAST_CONTACT_DAYS_TO",
    "DEATH_DAYS_TO", "PERSON_NEOPLASM_CANCER_STATUS", "TUMOR_STATUS", "NEW_TUMOR_EVENT_AFTER_INITIAL_TREATMENT",
    "DAYS_TO_NEW_TUMOR_EVENT_AFTER_INITIAL_TREATMENT", "TREATMENT_OUTCOME_FIRST_COURSE", "FORM_COMPLETION_DATE",
})
# attributes that name the cancer type: never features when one of them is the diagnosis label
DIAGNOSIS_ATTRIBUTES = frozenset({"CANCER_TYPE", "CANCER_TYPE_DETAILED", "ONCOTREE_CODE", "TUMOR_TYPE"})
_EVENT_WORDS = {"DECEASED", "DEAD", "RECURRED/PROGRESSED", "RECURRED", "PROGRESSED", "PROGRESSION",
                "DEAD WITH TUMOR", "DEAD OF DISEASE"}
_CENSORED_WORDS = {"LIVING", "ALIVE", "DISEASEFREE", "DISEASE FREE", "CENSORED", "ALIVE OR DEAD TUMOR FREE",
                   "ALIVE OR CENSORED"}


def sample_rank(sample_type: str | None) -> int:
    """Which of a patient's samples represents it (lowest first; ties in the sample file's order): a primary
    tumour, then a sample of unknown or other type, then a recurrence or metastasis (taken after day 0), a normal
    sample last. SAMPLE_TYPE words: cBioPortal File-Formats, clinical sample columns ("recurrence", "recurred",
    "progression", "progressed", "metastatic", "metastasis", "primary"); GDC studies add "Solid Tissue Normal",
    "Blood Derived Normal"."""
    word = (sample_type or "").lower()
    if "normal" in word:
        return 3
    if any(mark in word for mark in ("recurr", "progress", "metasta", "relapse")):
        return 2
    return 0 if "primary" in word else 1


def label_rows(patients: StudyTable, status: str, months: str, diagnoses: dict[str, str] | None) -> CsvRows:
    """``patient_id, time, event, index_date[, diagnosis]`` rows for :func:`ingest.tables.ingest_labels`; a line
    whose survival cells cannot be read keeps no time and event, with a reject that says why."""
    frame, rejects = patients.frame, list(patients.rejects)
    rows = pd.DataFrame({"patient_id": frame["PATIENT_ID"], "time": None, "event": None, "index_date": INDEX_DATE},
                        index=frame.index, dtype=object)
    for line, cells in frame[[status, months]].to_dict("index").items():
        state, length = cells[status], cells[months]
        if state is None and length is None:
            continue
        try:
            event, days = _event(state, status), _days(length, months)
        except ValueError as exc:
            rejects.append({"source": str(patients.path), "location": f"line {line}", "raw": patients.raw[line],
                            "reason": f"{exc}; the patient's other labels were loaded without a survival time"})
            continue
        rows.loc[line, ["time", "event"]] = [repr(days), "1" if event else "0"]
    if diagnoses is not None:
        # an object column: a list with None would become a string column with NaN (pandas 3), not a missing cell
        rows["diagnosis"] = pd.Series([diagnoses.get(pid) if pid is not None else None for pid in rows["patient_id"]],
                                      index=rows.index, dtype=object)
    return CsvRows(rows, patients.raw, rejects)


def _event(state: str | None, column: str) -> bool:
    if state is None:
        raise ValueError(f"{column} is empty while the time is given")
    head, sep, _ = state.partition(":")
    if sep and head.strip() in ("0", "1"):
        return head.strip() == "1"
    word = state.upper()
    if word in _EVENT_WORDS:
        return True
    if word in _CENSORED_WORDS:
        return False
    raise ValueError(f"{column} is not 1:<event> or 0:<censored> (e.g. 1:DECEASED, 0:LIVING, 1:PROGRESSION)")


def _days(length: str | None, column: str) -> float:
    if length is None:
        raise ValueError(f"{column} is empty while the status is given")
    try:
        value = float(length)
    except ValueError:
        raise ValueError(f"{column} is not a number of months") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{column} must be a non-negative number of months")
    return value * DAYS_PER_MONTH


def diagnoses(patients: StudyTable, samples: StudyTable | None, attribute: str | None) -> dict[str, str] | None:
    """``patient -> diagnosis`` from a patient attribute, else a sample attribute (a patient whose samples
    disagree gets none); None when ``attribute`` is None.

    Raises:
        StudyError: neither file has ``attribute``.
    """
    if attribute is None:
        return None
    for table in (patients, samples):
        if table is not None and attribute in table.frame:
            values = table.frame[["PATIENT_ID", attribute]].dropna()
            distinct = values.drop_duplicates().groupby("PATIENT_ID")[attribute]
            return {pid: group.iloc[0] for pid, group in distinct if len(group) == 1}
    raise StudyError(f"{patients.path}: --diagnosis {attribute} is neither a patient nor a sample attribute")


def feature_rows(table: StudyTable, exclude: set[str], diagnosis: str | None) -> tuple[CsvRows, dict[str, str]]:
    """The attributes of a clinical file that can be model inputs (of a sample file: each patient's first sample
    in the table's order, which :func:`sample_rank` sets), and the others with why they are left out."""
    frame = table.frame
    if "SAMPLE_ID" in frame:
        frame = frame[frame["PATIENT_ID"].notna()].drop_duplicates("PATIENT_ID")
    excluded: dict[str, str] = {}
    for column in frame.columns:
        stem = column.rsplit("_", 1)[0]
        if column == "PATIENT_ID":
            continue
        if column in exclude:
            excluded[column] = "excluded by the caller"
        elif (column.endswith("_STATUS") and f"{stem}_MONTHS" in frame) or (
                column.endswith("_MONTHS") and f"{stem}_STATUS" in frame) or column in FOLLOW_UP_ATTRIBUTES:
            excluded[column] = "an outcome known only after day 0"
        elif diagnosis is not None and (column == diagnosis or column in DIAGNOSIS_ATTRIBUTES):
            excluded[column] = "the diagnosis label, or another coding of it"
        elif column.endswith("_ID") or _identifier_like(frame[column]):
            excluded[column] = "an identifier"
    kept = frame[[c for c in frame.columns if c not in excluded]].rename(columns={"PATIENT_ID": "patient_id"})
    return CsvRows(kept, table.raw[kept.index], []), excluded


def _identifier_like(values: pd.Series) -> bool:
    """Text that differs on every line (at least 10 of them): an identifier, not a category."""
    present = values.dropna()
    return len(present) >= 10 and present.is_unique and pd.to_numeric(present, errors="coerce").isna().all()


def sample_map(samples: StudyTable) -> dict[str, str]:
    """``SAMPLE_ID -> PATIENT_ID`` from the sample file."""
    pairs = samples.frame[["SAMPLE_ID", "PATIENT_ID"]].dropna()
    return dict(zip(pairs["SAMPLE_ID"], pairs["PATIENT_ID"], strict=True))
