"""Dated clinical events of each patient: visits, lab time series and disease-status assessments.

Days are integers relative to the patient's index (diagnosis) date: negative before diagnosis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ingest.synth.cohort import ASSESSMENT_DAYS

MAX_FOLLOWUPS = 20
CANCER_FOLLOWUP_DAYS = 84
BENIGN_FOLLOWUP_DAYS = 182


@dataclass(frozen=True)
class Timeline:
    """Event tables of a cohort.

    Attributes:
        visits: one row per encounter: ``pidx`` (row of the truth table), ``day``, ``kind``
            (lab | ct | diagnosis | treatment | followup), ``has_labs`` (bool).
        labs: one row per lab result: ``visit`` (row of ``visits``), ``lab`` (key of ``codes.LABS``),
            ``value`` (in the lab's UCUM unit).
        status: one row per disease-status assessment: ``visit``, ``status`` (improved | stable |
            progressing), ``recist`` (best overall response, only on the first assessment, else None).
    """

    visits: pd.DataFrame
    labs: pd.DataFrame
    status: pd.DataFrame


def _pre_index_visits(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Lab visits over the year before diagnosis: (pidx, day) with 3-6 visits each, days in [-365, -8]."""
    counts = rng.integers(3, 7, n)
    pidx = np.repeat(np.arange(n), counts)
    return pidx, rng.integers(-365, -7, pidx.size)


def _followup_visits(rng: np.random.Generator, truth: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Follow-up visits from the first assessment until the last contact (death excluded)."""
    n = len(truth)
    cancer = (truth["diagnosis"] != "benign").to_numpy()
    first = np.where(cancer, truth["treatment_start_day"].to_numpy() + ASSESSMENT_DAYS, BENIGN_FOLLOWUP_DAYS)
    step = np.where(cancer, CANCER_FOLLOWUP_DAYS, BENIGN_FOLLOWUP_DAYS)
    jitter = rng.integers(-7, 8, (n, MAX_FOLLOWUPS))
    jitter[:, 0] = 0
    days = first[:, None] + step[:, None] * np.arange(MAX_FOLLOWUPS)[None, :] + jitter
    os_time = truth["os_time"].to_numpy()
    keep = days < os_time[:, None]
    pidx = np.broadcast_to(np.arange(n)[:, None], days.shape)[keep]
    days = days[keep]
    censored = ~truth["os_event"].to_numpy()
    last_p = np.flatnonzero(censored)
    return np.concatenate([pidx, last_p]), np.concatenate([days, os_time[last_p]]).astype(int)


def _lab_values(
    rng: np.random.Generator, truth: pd.DataFrame, pidx: np.ndarray, day: np.ndarray
) -> dict[str, np.ndarray]:
    """Lab values at (pidx, day): before diagnosis they follow the EHR latents; after, also response
    (lower LDH) and progression (higher LDH, lower albumin)."""
    t = truth.iloc[pidx]
    m = pidx.size
    infl = t["inflammation"].to_numpy()
    stage = t["stage"].map({"I": 0, "II": 1, "III": 2, "IV": 3}).fillna(0).to_numpy(float)
    cancer = (t["diagnosis"] != "benign").to_numpy()
    adeno = (t["diagnosis"] == "adenocarcinoma").to_numpy()
    post = day > 0
    progressed = post & (day >= t["progression_day"].fillna(np.inf).to_numpy())
    responding = post & t["response"].fillna(False).to_numpy(bool) & ~progressed
    ckd = t["ckd"].to_numpy()
    male = (t["sex"] == "male").to_numpy()
    smoker = (t["smoking"] != "never").to_numpy()
    ecog = t["ecog"].to_numpy()

    def noise(sd: float) -> np.ndarray:
        return rng.normal(0.0, sd, m)

    ldh = np.exp(
        np.log(185.0)
        + 0.22 * infl
        + 0.05 * stage * cancer
        + 0.3 * progressed
        - 0.15 * responding
        + noise(0.1)
    )
    cea = np.exp(np.log(2.0) + 0.4 * smoker + adeno * (0.35 * stage + 0.6 * progressed) + noise(0.25))
    albumin = 4.1 - 0.28 * infl - 0.08 * ecog - 0.35 * progressed + noise(0.15)
    hemoglobin = np.where(male, 14.2, 13.0) - 0.45 * infl - 0.6 * ckd - 0.6 * (post & cancer) + noise(0.5)
    crp = np.exp(np.log(4.0) + 0.6 * infl + 0.4 * progressed + noise(0.3))
    creatinine = 0.85 + 0.9 * ckd + 0.1 * male + noise(0.08)
    wbc = 7.0 + 0.8 * infl + noise(1.0)
    platelets = 250.0 + 30.0 * infl + noise(40.0)
    return {
        "ldh": np.round(np.clip(ldh, 80.0, 3000.0)),
        "cea": np.round(np.clip(cea, 0.2, 2000.0), 1),
        "albumin": np.round(np.clip(albumin, 1.5, 5.5), 1),
        "hemoglobin": np.round(np.clip(hemoglobin, 6.0, 18.5), 1),
        "crp": np.round(np.clip(crp, 0.2, 300.0), 1),
        "creatinine": np.round(np.clip(creatinine, 0.4, 6.0), 2),
        "wbc": np.round(np.clip(wbc, 1.5, 30.0), 1),
        "platelets": np.round(np.clip(platelets, 40.0, 800.0)),
    }


def build_timeline(truth: pd.DataFrame, rng: np.random.Generator) -> Timeline:
    """Dated visits, labs and disease-status assessments for every patient of ``truth``."""
    n = len(truth)
    cancer_idx = np.flatnonzero((truth["diagnosis"] != "benign").to_numpy())
    pre_p, pre_d = _pre_index_visits(rng, n)
    fu_p, fu_d = _followup_visits(rng, truth)
    ct_d = -rng.integers(3, 15, n)
    treat_d = truth["treatment_start_day"].to_numpy()[cancer_idx].astype(int)
    parts = [
        (pre_p, pre_d, "lab", True),
        (np.arange(n), ct_d, "ct", False),
        (np.arange(n), np.zeros(n, dtype=int), "diagnosis", False),
        (cancer_idx, treat_d, "treatment", False),
        (fu_p, fu_d, "followup", True),
    ]
    visits = pd.DataFrame(
        {
            "pidx": np.concatenate([p[0] for p in parts]),
            "day": np.concatenate([p[1] for p in parts]).astype(int),
            "kind": np.concatenate([np.full(p[0].size, p[2]) for p in parts]),
            "has_labs": np.concatenate([np.full(p[0].size, p[3]) for p in parts]),
        }
    )
    visits = visits.sort_values(["pidx", "day"], kind="stable").reset_index(drop=True)

    lab_visits = np.flatnonzero(visits["has_labs"].to_numpy())
    values = _lab_values(
        rng, truth, visits["pidx"].to_numpy()[lab_visits], visits["day"].to_numpy()[lab_visits]
    )
    labs = (
        pd.DataFrame(
            {
                "visit": np.tile(lab_visits, len(values)),
                "lab": np.repeat(list(values), lab_visits.size),
                "value": np.concatenate(list(values.values())),
            }
        )
        .sort_values(["visit"], kind="stable")
        .reset_index(drop=True)
    )

    fu = visits[(visits["kind"] == "followup")]
    t = truth.iloc[fu["pidx"].to_numpy()]
    assessed = (t["diagnosis"] != "benign").to_numpy()
    fu, t = fu[assessed], t[assessed]
    day = fu["day"].to_numpy()
    progressing = day >= t["progression_day"].fillna(np.inf).to_numpy()
    responder = t["response"].fillna(False).to_numpy(bool)
    first = day == t["treatment_start_day"].to_numpy() + ASSESSMENT_DAYS
    status = pd.DataFrame(
        {
            "visit": fu.index.to_numpy(),
            "status": np.where(progressing, "progressing", np.where(responder, "improved", "stable")),
            "recist": np.where(first & t["recist"].notna().to_numpy(), t["recist"].to_numpy(object), None),
        }
    )
    return Timeline(visits=visits, labs=labs, status=status)
