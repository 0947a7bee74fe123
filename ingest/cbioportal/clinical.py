"""A study's clinical files -> labels (survival, diagnosis) and clinical features without outcomes or identifiers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

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
# treatment-response outcomes as the datahub's immunotherapy studies name them: never features
RESPONSE_ATTRIBUTES = frozenset({
    "DURABLE_CLINICAL_BENEFIT", "CLINICAL_BENEFIT", "BEST_OVERALL_RESPONSE", "BEST_RESPONSE", "BEST_RECIST",
    "BEST_RECIST_RESPONSE", "RECIST_RESPONSE", "OBJECTIVE_RESPONSE", "TREATMENT_RESPONSE", "RESPONSE", "RESPONDER",
    "TREATMENT_BEST_RESPONSE",  # TCGA's (GDC) best response to the first course
})
# response values (upper case): objective response (RECIST CR / PR) or the study's benefit yes / no; values that
# say the response was not assessed are missing, not a non-response
RESPONDER_WORDS = frozenset({"CR", "PR", "COMPLETE RESPONSE", "PARTIAL RESPONSE", "CR/PR", "RESPONDER", "RESPONSE",
                             "YES", "Y", "TRUE", "DCB", "DURABLE CLINICAL BENEFIT", "CLINICAL BENEFIT"})
NON_RESPONDER_WORDS = frozenset({"SD", "PD", "STABLE DISEASE", "PROGRESSIVE DISEASE", "SD/PD", "NON-RESPONDER",
                                 "NONRESPONDER", "NON RESPONDER", "NO RESPONSE", "NO", "N", "FALSE", "NDB",
                                 "NO DURABLE BENEFIT", "NO CLINICAL BENEFIT"})
# X: not evaluable in skcm_dfci_2015's DURABLE_CLINICAL_BENEFIT (CR / PR / SD / PD / X)
NOT_ASSESSED_WORDS = frozenset({"NE", "NOT EVALUABLE", "NOT EVALUATED", "INEVALUABLE", "UNKNOWN", "NOT ASSESSED",
                                "X"})
# attributes that name the cancer type: never features when one of them is the diagnosis label
DIAGNOSIS_ATTRIBUTES = frozenset({"CANCER_TYPE", "CANCER_TYPE_DETAILED", "ONCOTREE_CODE", "TUMOR_TYPE"})
_EVENT_WORDS = {"DECEASED", "DEAD", "RECURRED/PROGRESSED", "RECURRED", "PROGRESSED", "PROGRESSION",
                "DEAD WITH TUMOR", "DEAD OF DISEASE"}
_CENSORED_WORDS = {"LIVING", "ALIVE", "DISEASEFREE", "DISEASE FREE", "CENSORED", "ALIVE OR DEAD TUMOR FREE",
                   "ALIVE OR CENSORED"}


def is_day_zero(index_date: object) -> bool:
    """Whether ``index_date`` is :data:`INDEX_DATE`, the date tumorboard gives every cBioPortal patient's day 0
    (the study has no calendar dates: it is no date to show as a diagnosis date)."""
    if index_date is None or pd.isna(index_date):
        return False
    stamp = pd.Timestamp(index_date)
    return (stamp.tz_convert(None) if stamp.tzinfo else stamp) == pd.Timestamp(INDEX_DATE)


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


def label_rows(patients: StudyTable, status: str, months: str, diagnoses: dict[str, str] | None,
               treatments: dict[str, str] | None = None, responses: dict[str, str] | None = None) -> CsvRows:
    """``patient_id, time, event, index_date[, diagnosis][, treatment][, response]`` rows for
    :func:`ingest.tables.ingest_labels` (each optional label from ``patient -> value``; a response as ``"1"`` /
    ``"0"``); a line whose survival cells cannot be read keeps no time and event, with a reject that says why."""
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
    for name, values in (("diagnosis", diagnoses), ("treatment", treatments), ("response", responses)):
        if values is not None:
            # an object column: a list with None would become a string column with NaN (pandas 3), not a missing
            # cell
            rows[name] = pd.Series([values.get(pid) if pid is not None else None for pid in rows["patient_id"]],
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


def patient_values(patients: StudyTable, samples: StudyTable | None, attribute: str | None, option: str
                   ) -> dict[str, str] | None:
    """``patient -> value`` of a patient attribute, else of a sample attribute (a patient whose samples disagree
    gets none); None when ``attribute`` is None. ``option`` names the command-line option in the error.

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
    raise StudyError(f"{patients.path}: {option} {attribute} is neither a patient nor a sample attribute")


def disagreeing_lines(patients: StudyTable, samples: StudyTable | None, attribute: str) -> dict[str, list[int]]:
    """``patient -> the sample file's line numbers`` of its samples' values of a sample ``attribute`` (one the
    patient file lacks), for the patients whose samples disagree, which :func:`patient_values` gives no value.
    Line numbers, not ids: a note names no patient."""
    if attribute in patients.frame or samples is None or attribute not in samples.frame:
        return {}
    values = samples.frame[["PATIENT_ID", attribute]].dropna()
    return {pid: sorted(group.index) for pid, group in values.groupby("PATIENT_ID", sort=False)
            if group[attribute].nunique() > 1}


def one_spelling(labels: dict[str, str]) -> dict[str, str]:
    """``labels`` (patient -> treatment) with each treatment in the spelling most patients have (ties: the first in
    sorted order): ``carboplatin`` for one patient and ``Carboplatin`` for two are one treatment class, not two."""
    best: dict[str, str] = {}
    for label, _ in sorted(Counter(labels.values()).items(), key=lambda kv: (-kv[1], kv[0])):
        best.setdefault(label.casefold(), label)
    return {pid: best[label.casefold()] for pid, label in labels.items()}


def response_values(values: dict[str, str], attribute: str, responders: Iterable[str] | None = None
                    ) -> tuple[dict[str, str], dict[str, int]]:
    """``patient -> "1"`` (responded) or ``"0"`` from ``patient -> value`` of the response ``attribute``, and the
    values read as neither, with their patient counts.

    By default a value is read case-insensitively by :data:`RESPONDER_WORDS` and :data:`NON_RESPONDER_WORDS`
    (RECIST CR / PR vs SD / PD, yes / no, ``1:Yes`` / ``0:No``); with ``responders`` those values respond and
    every other value does not (a coded value ``1:Yes`` is one of ``yes`` too). Either way a value of
    :data:`NOT_ASSESSED_WORDS` is missing.

    Raises:
        StudyError: no value of the attribute is one of ``responders`` (every patient would be a non-responder:
            a typo, or the study spells its values otherwise).
    """
    responders = list(responders) if responders is not None else None
    chosen = {value.strip().upper() for value in responders} if responders is not None else None
    read: dict[str, str] = {}
    unread: dict[str, int] = {}
    for pid, value in values.items():
        word = value.strip().upper()
        head, sep, tail = word.partition(":")
        if word in NOT_ASSESSED_WORDS:
            continue
        if chosen is not None:
            read[pid] = "1" if word in chosen or (sep and tail.strip() in chosen) else "0"
        elif sep and head.strip() in ("0", "1"):
            read[pid] = head.strip()
        elif word in RESPONDER_WORDS or word in NON_RESPONDER_WORDS:
            read[pid] = "1" if word in RESPONDER_WORDS else "0"
        else:
            unread[value] = unread.get(value, 0) + 1
    if chosen is not None and read and "1" not in read.values():
        found = sorted(set(values.values()), key=str.upper)
        raise StudyError(f"--responders {', '.join(map(repr, responders))}: no patient's {attribute} is one of them"
                         f" (its values: {', '.join(map(repr, found[:20]))}{', ...' if len(found) > 20 else ''});"
                         " name the values that mean a response as the study writes them (letter case is"
                         " ignored)")
    return read, unread


def feature_rows(table: StudyTable, exclude: set[str], diagnosis: str | None,
                 labels: dict[str, str] | None = None) -> tuple[CsvRows, dict[str, str]]:
    """The attributes of a clinical file that can be model inputs (of a sample file: each patient's first sample
    in the table's order, which :func:`sample_rank` sets), and the others with why they are left out;
    ``labels``: other attributes read as labels (the response, the treatment) -> why they are left out."""
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
        elif labels and column in labels:
            excluded[column] = labels[column]
        elif (column.endswith("_STATUS") and f"{stem}_MONTHS" in frame) or (
                column.endswith("_MONTHS") and f"{stem}_STATUS" in frame) or column in FOLLOW_UP_ATTRIBUTES:
            excluded[column] = "an outcome known only after day 0"
        elif column in RESPONSE_ATTRIBUTES:
            excluded[column] = "a treatment response, known only after treatment"
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
