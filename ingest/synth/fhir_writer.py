"""Write the cohort's EHR as a FHIR R4 Bulk Data export (NDJSON) and, optionally, transaction Bundles.

Resources are plain dicts serialised with orjson (validated against ``fhir.resources.R4B`` in the tests,
not here, for speed). NDJSON references read ``Patient/<id>``; Bundles use ``urn:uuid:<id>`` as Synthea.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from ingest.synth import codes as c
from ingest.synth.codes import REGIMENS
from ingest.synth.ids import IdSource
from ingest.synth.timeline import Timeline

RESOURCE_TYPES = ("Patient", "Condition", "Observation", "MedicationRequest", "Procedure", "Encounter")
_CATEGORY = {
    k: [{"coding": [{"system": c.OBS_CATEGORY, "code": k, "display": d}]}]
    for k, d in [
        ("laboratory", "Laboratory"),
        ("social-history", "Social History"),
        ("survey", "Survey"),
        ("therapy", "Therapy"),
        ("imaging", "Imaging"),
    ]
}


def _cc(system: str, code: str, display: str, text: str | None = None) -> dict:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": text or display}


def _ref(kind: str, rid: str) -> dict:
    return {"reference": f"{kind}/{rid}"}


def _dates(origin: np.ndarray, days: np.ndarray) -> np.ndarray:
    """ISO dates (str) of ``origin`` (datetime64[D]) plus integer ``days``."""
    return (origin + days.astype("timedelta64[D]")).astype(str)


class _PatientWriter:
    """Builds the resources of one patient from the truth row and that patient's events."""

    def __init__(self, new_id: IdSource) -> None:
        self.new_id = new_id

    def patient(self, row: pd.Series, pid: str, death_date: str | None) -> dict:
        res = {
            "resourceType": "Patient",
            "id": pid,
            "identifier": [
                {
                    "use": "usual",
                    "type": _cc(c.V2_0203, "MR", "Medical Record Number"),
                    "system": c.MRN_SYSTEM,
                    "value": row["mrn"],
                }
            ],
            "gender": row["sex"],
            "birthDate": str(row["birth_date"].date()),
        }
        if death_date is not None:
            res["deceasedDateTime"] = f"{death_date}T12:00:00Z"
        return res

    def condition(self, pid: str, enc: str | None, code: tuple[str, str], onset: str, cancer: bool) -> dict:
        res = {
            "resourceType": "Condition",
            "id": self.new_id(),
            "clinicalStatus": _cc(c.COND_CLINICAL, "active", "Active"),
            "verificationStatus": _cc(c.COND_VERIFICATION, "confirmed", "Confirmed"),
            "category": [_cc(c.COND_CATEGORY, "problem-list-item", "Problem List Item")],
            "code": _cc(c.SNOMED, *code),
            "subject": _ref("Patient", pid),
            "onsetDateTime": onset,
            "recordedDate": onset,
        }
        if cancer:
            res["meta"] = {"profile": [c.MCODE_SD + "mcode-primary-cancer-condition"]}
            res["bodySite"] = [_cc(c.SNOMED, "39607008", "Lung structure (body structure)")]
        if enc is not None:
            res["encounter"] = _ref("Encounter", enc)
        return res

    def encounter(self, pid: str, eid: str, kind: str, start: str, end: str) -> dict:
        return {
            "resourceType": "Encounter",
            "id": eid,
            "status": "finished",
            "class": {"system": c.ACT_CODE, "code": "AMB", "display": "ambulatory"},
            "type": [_cc(c.SNOMED, *c.ENCOUNTER_TYPES[kind])],
            "subject": _ref("Patient", pid),
            "period": {"start": start, "end": end},
        }

    def observation(
        self,
        pid: str,
        enc: str,
        when: str,
        category: str,
        code: tuple[str, str],
        value: dict,
        focus: str | None = None,
        profile: str | None = None,
    ) -> dict:
        res = {
            "resourceType": "Observation",
            "id": self.new_id(),
            "status": "final",
            "category": _CATEGORY[category],
            "code": _cc(c.LOINC, *code),
            "subject": _ref("Patient", pid),
            "encounter": _ref("Encounter", enc),
            "effectiveDateTime": when,
            **value,
        }
        if focus is not None:
            res["focus"] = [_ref("Condition", focus)]
        if profile is not None:
            res["meta"] = {"profile": [c.MCODE_SD + profile]}
        return res

    def procedure(self, pid: str, enc: str, when: str, code: tuple[str, str]) -> dict:
        return {
            "resourceType": "Procedure",
            "id": self.new_id(),
            "status": "completed",
            "code": _cc(c.SNOMED, *code),
            "subject": _ref("Patient", pid),
            "encounter": _ref("Encounter", enc),
            "performedDateTime": when,
            "bodySite": [_cc(c.SNOMED, "39607008", "Lung structure (body structure)")],
        }

    def medication(self, pid: str, enc: str, when: str, rxnorm: str, status: str, reason: str) -> dict:
        return {
            "resourceType": "MedicationRequest",
            "id": self.new_id(),
            "status": status,
            "intent": "order",
            "medicationCodeableConcept": _cc(c.RXNORM, rxnorm, c.DRUGS[rxnorm]),
            "subject": _ref("Patient", pid),
            "encounter": _ref("Encounter", enc),
            "authoredOn": when,
            "reasonReference": [_ref("Condition", reason)],
        }


def _quantity(value: float, unit: str) -> dict:
    return {"valueQuantity": {"value": float(value), "unit": unit, "system": c.UCUM, "code": unit}}


def _patient_resources(
    w: _PatientWriter,
    row: pd.Series,
    visits: pd.DataFrame,
    labs: pd.DataFrame,
    status: pd.DataFrame,
    dates: np.ndarray,
    hours: np.ndarray,
    rng: np.random.Generator,
) -> Iterator[dict]:
    """All resources of one patient. ``dates``/``hours`` are aligned with ``visits`` rows."""
    pid = row["patient_id"]
    cancer = row["diagnosis"] != "benign"
    index = np.datetime64(row["index_date"].date(), "D")
    death = str(index + np.timedelta64(int(row["os_time"]), "D")) if row["os_event"] else None
    yield w.patient(row, pid, death)

    stamps = [f"{d}T{h:02d}:00:00Z" for d, h in zip(dates, hours, strict=True)]
    ends = [f"{d}T{h:02d}:40:00Z" for d, h in zip(dates, hours, strict=True)]
    enc_ids = [w.new_id() for _ in range(len(visits))]
    kinds = visits["kind"].to_numpy()
    for k, kind in enumerate(kinds):
        yield w.encounter(pid, enc_ids[k], "diagnosis" if kind == "ct" else kind, stamps[k], ends[k])

    k_dx = int(np.flatnonzero(kinds == "diagnosis")[0])
    k_ct = int(np.flatnonzero(kinds == "ct")[0])
    dx_enc, dx_when = enc_ids[k_dx], stamps[k_dx]
    cond_id = w.new_id()
    primary = w.condition(pid, dx_enc, c.DIAGNOSIS_SNOMED[row["diagnosis"]], dx_when, cancer)
    primary["id"] = cond_id
    yield primary
    for name, code in c.COMORBIDITIES.items():
        if row[name]:
            onset = str(index - np.timedelta64(int(rng.integers(180, 3650)), "D"))
            yield w.condition(pid, None, code, onset, cancer=False)

    yield w.procedure(pid, enc_ids[k_ct], stamps[k_ct], c.PROCEDURES["ct"])
    yield w.procedure(pid, dx_enc, dx_when, c.PROCEDURES["biopsy"])
    yield w.observation(
        pid,
        dx_enc,
        dx_when,
        "social-history",
        c.SMOKING_LOINC,
        {"valueCodeableConcept": _cc(c.SNOMED, *c.SMOKING_SNOMED[row["smoking"]])},
    )
    yield w.observation(
        pid,
        dx_enc,
        dx_when,
        "survey",
        c.ECOG_LOINC,
        {"valueInteger": int(row["ecog"])},
        profile="mcode-ecog-performance-status",
    )
    if cancer:
        sub = c.STAGE_SUBGROUPS[row["stage"]][int(rng.integers(0, 2))]
        stage_cc = _cc(c.AJCC, sub, f"Stage {row['stage']}{sub[-1]}")
        yield w.observation(
            pid,
            dx_enc,
            dx_when,
            "survey",
            c.STAGE_LOINC,
            {"valueCodeableConcept": stage_cc},
            focus=cond_id,
            profile="mcode-cancer-stage-group",
        )
        k_tx = int(np.flatnonzero(kinds == "treatment")[0])
        stopped = row["os_event"] or not np.isnan(row["progression_day"])
        for rx in REGIMENS[(row["treatment"], row["diagnosis"])]:
            yield w.medication(
                pid, enc_ids[k_tx], stamps[k_tx], rx, "stopped" if stopped else "active", cond_id
            )

    visit_pos = {v: k for k, v in enumerate(visits.index)}
    for v, lab, value in zip(
        labs["visit"].to_numpy(), labs["lab"].to_numpy(), labs["value"].to_numpy(), strict=True
    ):
        k = visit_pos[v]
        loinc, display, unit = c.LABS[lab]
        yield w.observation(
            pid, enc_ids[k], stamps[k], "laboratory", (loinc, display), _quantity(value, unit)
        )
    for v, st, recist in zip(
        status["visit"].to_numpy(), status["status"].to_numpy(), status["recist"].to_numpy(), strict=True
    ):
        k = visit_pos[v]
        yield w.procedure(pid, enc_ids[k], stamps[k], c.PROCEDURES["ct"])
        yield w.observation(
            pid,
            enc_ids[k],
            stamps[k],
            "therapy",
            c.DISEASE_STATUS_LOINC,
            {"valueCodeableConcept": _cc(c.SNOMED, *c.DISEASE_STATUS[st])},
            focus=cond_id,
            profile="mcode-cancer-disease-status",
        )
        if isinstance(recist, str):
            code, display = c.RECIST[recist]
            yield w.observation(
                pid,
                enc_ids[k],
                stamps[k],
                "therapy",
                c.RECIST_LOINC,
                {"valueCodeableConcept": _cc(c.NCIT, code, display, text=recist)},
                focus=cond_id,
            )


def _bundle(resources: list[tuple[bytes, str, str]]) -> bytes:
    """A transaction Bundle of serialised NDJSON resources ``(json, type, id)``, references as urn:uuid."""
    entries = []
    for raw, kind, rid in resources:
        for t in RESOURCE_TYPES:
            raw = raw.replace(f'"reference":"{t}/'.encode(), b'"reference":"urn:uuid:')
        entries.append(
            b'{"fullUrl":"urn:uuid:'
            + rid.encode()
            + b'","resource":'
            + raw
            + b',"request":{"method":"POST","url":"'
            + kind.encode()
            + b'"}}'
        )
    return b'{"resourceType":"Bundle","type":"transaction","entry":[' + b",".join(entries) + b"]}"


def write_fhir(
    out: Path,
    truth: pd.DataFrame,
    timeline: Timeline,
    rng: np.random.Generator,
    *,
    bundles_dir: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Write ``out/<Type>.ndjson`` (and ``bundles_dir/<patient_id>.json`` when given).

    Returns:
        Number of resources written per resource type.
    """
    out.mkdir(parents=True, exist_ok=True)
    if bundles_dir is not None:
        bundles_dir.mkdir(parents=True, exist_ok=True)
    visits, labs, status = timeline.visits, timeline.labs, timeline.status
    index_days = truth["index_date"].dt.tz_convert(None).to_numpy().astype("datetime64[D]")
    dates = _dates(index_days[visits["pidx"].to_numpy()], visits["day"].to_numpy())
    hours = rng.integers(8, 18, len(visits))
    v_bounds = np.searchsorted(visits["pidx"].to_numpy(), np.arange(len(truth) + 1))
    l_bounds = np.searchsorted(labs["visit"].to_numpy(), v_bounds)
    s_bounds = np.searchsorted(status["visit"].to_numpy(), v_bounds)
    writer = _PatientWriter(IdSource(rng))
    counts = dict.fromkeys(RESOURCE_TYPES, 0)
    files = {t: open(out / f"{t}.ndjson", "wb") for t in RESOURCE_TYPES}  # noqa: SIM115
    try:
        for i, row in enumerate(truth.itertuples(index=False)):
            row = pd.Series(row._asdict())
            lo, hi = v_bounds[i], v_bounds[i + 1]
            entries: list[tuple[bytes, str, str]] = []
            for res in _patient_resources(
                writer,
                row,
                visits.iloc[lo:hi],
                labs.iloc[l_bounds[i] : l_bounds[i + 1]],
                status.iloc[s_bounds[i] : s_bounds[i + 1]],
                dates[lo:hi],
                hours[lo:hi],
                rng,
            ):
                kind = res["resourceType"]
                raw = orjson.dumps(res)
                files[kind].write(raw + b"\n")
                counts[kind] += 1
                if bundles_dir is not None:
                    entries.append((raw, kind, res["id"]))
            if bundles_dir is not None:
                (bundles_dir / f"{row['patient_id']}.json").write_bytes(_bundle(entries))
            if progress is not None:
                progress(1)
    finally:
        for f in files.values():
            f.close()
    return counts
