"""A study's timeline files -> each patient's first treatment from day 0 (the response task's input).

cBioPortal's timeline files (File-Formats, "Timeline Data": meta ``genetic_alteration_type: CLINICAL``,
``datatype: TIMELINE``) hold one event a line: ``PATIENT_ID``, ``START_DATE`` and ``STOP_DATE`` (whole days from
the patient's day 0, usually the diagnosis; negative before it, ``STOP_DATE`` empty for a point event) and
``EVENT_TYPE``. ``TREATMENT`` events suggest ``TREATMENT_TYPE`` (Medical Therapy / Radiation Therapy), ``SUBTYPE``
(Chemotherapy, Targeted Therapy, ...), ``AGENT`` and ``AGENT_CLASS``. The datahub writes one file an event type
(``data_timeline_treatment.txt``, ``data_timeline_surgery.txt``, ...; MSK-CHORD's radiation in
``data_timeline_radiation.txt``) or, in older studies, one ``data_timeline.txt`` with several event types.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ingest.cbioportal.clinical import one_spelling
from ingest.cbioportal.tsv import DataLines, StudyError, StudyTable, read_study_table

TREATMENT_EVENTS = frozenset({"TREATMENT", "Treatment", "treatment"})  # EVENT_TYPE as studies spell it
REQUIRED = ("PATIENT_ID", "START_DATE", "EVENT_TYPE")
_DAYS = re.compile(r"[+-]?[0-9]+")
COMBINATION = "+"  # several treatments started on the same first day: "Carboplatin+Pemetrexed"


@dataclass
class TimelineTreatments:
    """What :func:`first_treatments` read: ``treatments`` (patient -> label), the patients whose every treatment
    event started before day 0 (``prior_only``) or whose first day's events have no value in the column
    (``no_value``), the ``files`` read and their ``rejects`` (each with file and line)."""

    treatments: dict[str, str] = field(default_factory=dict)
    prior_only: set[str] = field(default_factory=set)
    no_value: set[str] = field(default_factory=set)
    files: list[Path] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)


def first_treatments(paths: Iterable[Path], column: str) -> TimelineTreatments:
    """Each patient's treatment label from the ``TREATMENT`` events of the timeline files in ``paths`` that have
    ``column`` (e.g. ``AGENT``, ``SUBTYPE``, ``TREATMENT_TYPE``): the ``column`` value of the first event starting
    on or after day 0. Treatments started before day 0 are prior therapy, never the label (also one still
    given at day 0). Several events on that first day make one combination, their distinct values (letter case
    ignored) in sorted order joined by ``+`` (``Carboplatin+Pemetrexed``; ``SUBTYPE``:
    ``Chemotherapy+Immunotherapy``): the regimen the response is a response to. A first day whose events have no
    ``column`` value gives no label (the patient's first treatment is not named in that column; a later one would
    be the wrong regimen).

    Every file with the column and a ``TREATMENT`` event is read (a study may keep radiation in a file of its own);
    a line without ``PATIENT_ID`` or whose ``START_DATE`` is not a whole number of days is a reject with its file
    and line.

    Raises:
        StudyError: no timeline file has ``TREATMENT`` events with ``column`` (nothing was read).
    """
    found, headers = TimelineTreatments(), {}
    events: dict[str, list[tuple[int, str | None]]] = {}  # patient -> (start day, value) of each event
    for path in paths:
        try:
            with DataLines(path) as data:
                headers[path] = data.header
        except StudyError:  # a timeline file that cannot be read is not one to read treatments from
            continue
        if not {column, *REQUIRED} <= set(data.header):
            continue
        table = read_study_table(path, only=("EVENT_TYPE", set(TREATMENT_EVENTS)))
        if not table.frame.empty or table.rejects:
            found.files.append(path)
            found.rejects.extend(table.rejects)  # lines with a wrong field count
            _events(table, column, events, found.rejects)
    if not found.files:
        shown = "; ".join(f"{p.name}: {', '.join(h)}" for p, h in headers.items()) or "none"
        raise StudyError(f"--treatment-timeline {column}: no timeline file of the study has TREATMENT events with a"
                         f" {column} column (its timeline files and their columns: {shown}); name one of the"
                         " treatment events' columns, e.g. AGENT, SUBTYPE or TREATMENT_TYPE")
    for pid, own in events.items():
        after = [(day, value) for day, value in own if day >= 0]
        if not after:
            found.prior_only.add(pid)
            continue
        first = min(day for day, _ in after)
        values = sorted({value for day, value in after if day == first and value is not None},
                        key=lambda v: (v.casefold(), v))
        # one agent written in two letter cases (two files, two rows of one course) is one agent, not a combination
        values = [v for i, v in enumerate(values) if i == 0 or v.casefold() != values[i - 1].casefold()]
        if values:
            found.treatments[pid] = COMBINATION.join(values)
        else:
            found.no_value.add(pid)
    found.treatments = one_spelling(found.treatments)
    return found


def _events(table: StudyTable, column: str, events: dict[str, list[tuple[int, str | None]]],
            rejects: list[dict]) -> None:
    """Add ``table``'s treatment events to ``events``; its lines without a patient or a whole start day to
    ``rejects`` (file and line; the reason names no patient)."""
    frame = table.frame
    for line, pid, start, value in zip(frame.index, frame["PATIENT_ID"], frame["START_DATE"], frame[column],
                                       strict=True):
        reason = "PATIENT_ID is empty" if pid is None else "START_DATE is empty" if start is None else None
        if reason is None and not _DAYS.fullmatch(start):
            reason = "START_DATE is not a whole number of days from day 0"
        if reason is not None:
            rejects.append({"source": str(table.path), "location": f"line {line}", "raw": table.raw[line],
                            "reason": f"{reason}; the treatment event was not read"})
            continue
        events.setdefault(pid, []).append((int(start), value))
