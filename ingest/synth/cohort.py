"""Latent patient model and outcomes of the synthetic lung-nodule cohort (vectorised over patients).

See the package docstring (:mod:`ingest.synth`) for the model in words. Every function takes numpy
arrays of length ``n`` (one entry per patient) and returns arrays of the same length.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ingest.synth.codes import STAGES, TREATMENTS
from ingest.synth.config import SynthConfig
from ingest.synth.ids import uuid_strings

WEIBULL_SHAPE = 1.1
MEDIAN_OS_DAYS = 1300.0  # median OS at log_hazard = 0
PFS_SHAPE = 1.3
STAGE_LOG_HAZARD = np.array([0.0, 0.35, 0.7, 1.1])
BENIGN_LOG_HAZARD = -1.8
TMB_HIGH = 10.0  # mut/Mb
ASSESSMENT_DAYS = 63  # first response assessment after treatment start
DRIVERS = ("egfr", "kras_g12c", "tp53", "stk11", "keap1", "alk", "braf_v600e", "pik3ca")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _mrns(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct 8-digit medical record numbers."""
    step = 89_999_999 // n
    values = 10_000_000 + rng.permutation(n) * step + rng.integers(0, step, n)
    return [f"{v:08d}" for v in values]


def _demographics(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    age = np.clip(rng.normal(67.0, 9.0, n), 40.0, 90.0)
    male = rng.random(n) < 0.52
    smoking = rng.choice(np.array(["never", "former", "current"]), size=n, p=[0.15, 0.5, 0.35])
    pack_years = np.where(smoking == "never", 0.0, np.clip(rng.lognormal(np.log(32.0), 0.5, n), 2.0, 150.0))
    return {"age": age, "male": male, "smoking": smoking, "pack_years": pack_years}


def _diagnosis(
    rng: np.random.Generator, n: int, pack_years: np.ndarray, benign_fraction: float
) -> np.ndarray:
    benign = rng.random(n) < benign_fraction
    p_squamous = _sigmoid(-1.7 + 0.03 * pack_years)
    squamous = rng.random(n) < p_squamous
    return np.where(benign, "benign", np.where(squamous, "squamous", "adenocarcinoma"))


def _comorbidities(
    rng: np.random.Generator, age: np.ndarray, pack_years: np.ndarray
) -> dict[str, np.ndarray]:
    n = age.size
    return {
        "copd": rng.random(n) < _sigmoid(-2.4 + 0.035 * pack_years),
        "diabetes": rng.random(n) < _sigmoid(-1.6 + 0.02 * (age - 67.0)),
        "hypertension": rng.random(n) < _sigmoid(-0.2 + 0.05 * (age - 67.0)),
        "heart_failure": rng.random(n) < _sigmoid(-2.8 + 0.06 * (age - 67.0)),
        "ckd": rng.random(n) < _sigmoid(-2.3 + 0.05 * (age - 67.0)),
    }


def _genomics(
    rng: np.random.Generator, cancer: np.ndarray, adeno: np.ndarray, never: np.ndarray, pack_years: np.ndarray
) -> dict[str, np.ndarray]:
    """Driver flags (bool) and tumour mutational burden (mut/Mb); benign nodules carry no drivers."""
    n = cancer.size
    squam = cancer & ~adeno

    def draw(p: np.ndarray) -> np.ndarray:
        return cancer & (rng.random(n) < p)

    egfr = draw(adeno * (0.07 + 0.45 * never))
    egfr_del19 = egfr & (rng.random(n) < 0.55)
    kras = draw(adeno * ~egfr * ~never * 0.16)
    alk = draw(adeno * ~egfr * ~kras * (0.02 + 0.08 * never))
    braf = draw(adeno * ~egfr * ~kras * ~alk * 0.025)
    pik3ca = draw(0.03 * adeno + 0.09 * squam)
    tp53 = draw(0.45 * adeno + 0.8 * squam)
    stk11 = draw(adeno * (0.12 + 0.2 * kras) + 0.03 * squam)
    keap1 = draw(0.1 * adeno + 0.12 * squam + 0.15 * stk11)
    log_tmb = (
        np.log(5.0) + 0.012 * pack_years + 0.35 * squam - 0.8 * egfr - 0.6 * alk + rng.normal(0.0, 0.75, n)
    )
    tmb = np.where(cancer, np.exp(log_tmb), rng.uniform(0.3, 1.5, n))
    return {
        "egfr": egfr,
        "egfr_variant": np.where(egfr, np.where(egfr_del19, "exon19del", "L858R"), ""),
        "kras_g12c": kras,
        "tp53": tp53,
        "stk11": stk11,
        "keap1": keap1,
        "alk": alk,
        "braf_v600e": braf,
        "pik3ca": pik3ca,
        "tmb": tmb,
    }


def _response_logits(g: dict[str, np.ndarray], aggressiveness: np.ndarray) -> dict[str, np.ndarray]:
    """Logit of objective response (RECIST CR/PR) under each treatment: biomarker match + aggressiveness."""
    log_tmb = np.log(g["tmb"] / 7.0)
    return {
        "chemo": -0.5 - 0.4 * g["stk11"] - 0.4 * g["keap1"] - 0.6 * aggressiveness,
        "egfr_tki": -2.8 + 4.3 * g["egfr"] - 0.6 * aggressiveness,
        "immunotherapy": (
            -1.3
            + 1.1 * log_tmb
            - 1.1 * g["stk11"]
            - 0.6 * g["keap1"]
            - 1.2 * g["egfr"]
            - 0.6 * aggressiveness
        ),
    }


def _assign_treatment(rng: np.random.Generator, cancer: np.ndarray, g: dict[str, np.ndarray]) -> np.ndarray:
    """Confounded assignment: EGFR-mutant -> mostly osimertinib, high TMB -> mostly pembrolizumab."""
    n = cancer.size
    probs = np.tile([0.70, 0.05, 0.25], (n, 1))  # chemo, egfr_tki, immunotherapy
    probs[g["tmb"] >= TMB_HIGH] = [0.30, 0.02, 0.68]
    probs[g["egfr"]] = [0.10, 0.85, 0.05]
    u = rng.random(n)[:, None]
    choice = (u > np.cumsum(probs, axis=1)).sum(axis=1)
    return np.where(cancer, np.array(TREATMENTS)[np.minimum(choice, 2)], "none")


def _weibull(rng: np.random.Generator, log_hazard: np.ndarray, shape: float, median: float) -> np.ndarray:
    """Event times (days) of a Weibull proportional-hazards model, ``S(t) = exp(-(t/scale)^k e^lh)``."""
    scale = median / np.log(2.0) ** (1.0 / shape)
    e = rng.exponential(1.0, log_hazard.size)
    return scale * (e * np.exp(-log_hazard)) ** (1.0 / shape)


def simulate_cohort(config: SynthConfig, rng: np.random.Generator) -> pd.DataFrame:
    """Draw the latent patient model and outcomes.

    Args:
        config: cohort configuration.
        rng: random generator (consumed).

    Returns:
        The truth table, one row per patient (columns documented in :mod:`ingest.synth`).
    """
    n = config.n_patients
    demo = _demographics(rng, n)
    diagnosis = _diagnosis(rng, n, demo["pack_years"], config.benign_fraction)
    cancer = diagnosis != "benign"
    adeno = diagnosis == "adenocarcinoma"
    stage_idx = np.where(cancer, rng.choice(4, size=n, p=[0.25, 0.12, 0.25, 0.38]), -1)
    como = _comorbidities(rng, demo["age"], demo["pack_years"])
    n_como = np.sum(list(como.values()), axis=0)

    aggressiveness = rng.normal(0.0, 1.0, n)
    inflammation = rng.normal(0.0, 1.0, n) - 0.6 * ~cancer
    ecog_latent = (
        0.03 * (demo["age"] - 67.0)
        + 0.25 * n_como
        + 0.3 * np.maximum(stage_idx, 0)
        + 0.35 * inflammation
        + rng.normal(0.0, 0.7, n)
    )
    ecog = np.digitize(ecog_latent, [0.1, 1.1, 1.9])
    median_size = np.where(cancer, np.array([18.0, 30.0, 42.0, 45.0])[stage_idx], 11.0)
    nodule_size = np.clip(median_size * np.exp(rng.normal(0.0, 0.3, n)), 5.0, 90.0)

    g = _genomics(rng, cancer, adeno, demo["smoking"] == "never", demo["pack_years"])
    treatment = _assign_treatment(rng, cancer, g)
    logits = _response_logits(g, aggressiveness)
    probs = {t: np.where(cancer, _sigmoid(v), np.nan) for t, v in logits.items()}
    p_assigned = np.zeros(n)
    for t in TREATMENTS:
        p_assigned = np.where(treatment == t, probs[t], p_assigned)
    response = cancer & (rng.random(n) < p_assigned)

    lh_ehr = (
        np.where(cancer, STAGE_LOG_HAZARD[stage_idx], BENIGN_LOG_HAZARD)
        + 0.03 * (demo["age"] - 67.0)
        + 0.2 * ecog
        + 0.12 * n_como
        + 0.4 * inflammation
    )
    lh_image = cancer * (0.9 * aggressiveness + 0.6 * np.log(nodule_size / 30.0))
    lh_genomics = cancer * (
        0.8 * g["stk11"] + 0.7 * g["keap1"] + 0.35 * g["tp53"] + 0.25 * g["kras_g12c"] - 0.4 * g["egfr"]
    )
    lh_treatment = cancer * (-2.2 * p_assigned + 0.7)
    log_hazard = lh_ehr + lh_image + lh_genomics + lh_treatment

    start_ord = pd.Timestamp(config.enrolment_start).value // 86_400_000_000_000
    end_ord = pd.Timestamp(config.enrolment_end).value // 86_400_000_000_000
    cutoff_ord = pd.Timestamp(config.data_cutoff).value // 86_400_000_000_000
    index_day = rng.integers(start_ord, end_ord + 1, n)
    admin = (cutoff_ord - index_day).astype(float)
    dropout = rng.exponential(365.25 / max(config.dropout_per_year, 1e-9), n)
    censor = np.minimum(admin, dropout)
    death = _weibull(rng, log_hazard, WEIBULL_SHAPE, MEDIAN_OS_DAYS)
    os_event = death <= censor
    os_time = np.maximum(np.ceil(np.minimum(death, censor)), 1.0)

    # treatment starts 2-5 weeks after diagnosis, and before death or last contact
    treat_start = np.where(cancer, np.minimum(rng.integers(14, 36, n), os_time - 1), -1)
    assess_day = treat_start + ASSESSMENT_DAYS
    lh_prog = log_hazard + 0.9 * ~response + 0.5
    prog = _weibull(rng, lh_prog, PFS_SHAPE, MEDIAN_OS_DAYS / 2.0)
    prog = np.where(response, assess_day + prog, treat_start + prog)  # responders progress after assessment
    prog = np.where(cancer, np.ceil(prog), np.inf)
    pfs_event = np.minimum(prog, death) <= censor
    pfs_time = np.maximum(np.ceil(np.minimum(np.minimum(prog, death), censor)), 1.0)
    pfs_time = np.minimum(pfs_time, os_time)
    evaluable = cancer & (os_time > assess_day)
    recist = np.where(
        response, np.where(rng.random(n) < 0.12, "CR", "PR"), np.where(prog <= assess_day, "PD", "SD")
    )
    recist = np.where(evaluable, recist, None)

    age_days = np.floor(demo["age"] * 365.25).astype(int)
    vcf_draw = rng.random(n)
    truth = pd.DataFrame(
        {
            "patient_id": uuid_strings(rng, n),
            "mrn": _mrns(rng, n),
            "sex": np.where(demo["male"], "male", "female"),
            "age": demo["age"],
            "birth_date": pd.to_datetime(index_day - age_days, unit="D", utc=True).astype(
                "datetime64[us, UTC]"
            ),
            "index_date": pd.to_datetime(index_day, unit="D", utc=True).astype("datetime64[us, UTC]"),
            "diagnosis": diagnosis,
            "stage": pd.array(np.where(cancer, np.array(STAGES)[stage_idx], None), dtype="string"),
            "smoking": demo["smoking"],
            "pack_years": demo["pack_years"],
            **como,
            "n_comorbidities": n_como,
            "ecog": ecog,
            "inflammation": inflammation,
            "aggressiveness": aggressiveness,
            "nodule_size_mm": nodule_size,
            **g,
            "treatment": treatment,
            "treatment_start_day": np.where(cancer, treat_start, np.nan),
            "response": pd.array(np.where(cancer, response, None), dtype="boolean"),
            "recist": pd.array(recist, dtype="string"),
            **{f"response_prob_{t}": probs[t] for t in TREATMENTS},
            "log_hazard": log_hazard,
            "log_hazard_image": lh_image,
            "log_hazard_genomics": lh_genomics,
            "log_hazard_ehr": lh_ehr,
            "log_hazard_treatment": lh_treatment,
            "os_time": os_time,
            "os_event": os_event,
            "pfs_time": pfs_time,
            "pfs_event": pfs_event,
            "progression_day": np.where(np.isfinite(prog) & (prog <= os_time), prog, np.nan),
            "has_image": rng.random(n) >= config.image_missing_rate,
            "has_genomics": rng.random(n) >= config.genomics_missing_rate,
        }
    )
    truth["has_vcf"] = truth["has_genomics"] & (vcf_draw < config.vcf_fraction)
    # drawn as patient ids are, so cohorts of other seeds share a lake without colliding samples (the stream's
    # last draw: no other value depends on it)
    truth["sample_id"] = pd.array(
        np.where(truth["has_genomics"], [f"SMP-{u}" for u in uuid_strings(rng, n)], None), dtype="string"
    )
    return truth
