"""Inference with a trained run: its cohort rebuilt from a lake, batched model outputs, one patient's report.

:func:`run_cohort` rebuilds the run's columns (its saved feature selection) for the patients of a lake and
restores the run's split per patient key (patients the run never saw get split ``"unseen"``).
:func:`model_outputs` runs the model over cohort rows, optionally with modalities removed at test time.
:func:`predict_patient` is the report behind ``tumorboard predict`` and the app (see its docstring for the
JSON layout); :func:`predict_cohort` is ``tumorboard predict --all``'s table of every patient.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from fusion.cohort import (
    COHORT_RULES,
    DAYS_PER_YEAR,
    FRAME_COLUMNS,
    RULE_CHANGES,
    Cohort,
    CohortError,
    FeatureSelection,
    LakeFrames,
    assemble_cohort,
    restrict_frames,
)
from fusion.data import CohortDataset, Normalizer, collate, drop_modalities, image_to_series
from fusion.run import (
    PRIOR_FIELDS,
    LoadedRun,
    RunError,
    TrainingReference,
    read_training_reference,
    save_training_reference,
)
from ingest.lake import Lake

if TYPE_CHECKING:
    from fusion.explain import Encoded

N_TIMES = 41


class UnknownPatientError(LookupError):
    """The requested identifier matches no patient of the lake (the message never repeats identifiers)."""


class PredictError(ValueError):
    """The patient exists but the run cannot predict for them (no index date, no usable modality)."""


@dataclass
class Outputs:
    """Model outputs for cohort rows, aligned with ``keys`` (N,).

    ``diagnosis_prob (N, C)``, ``log_risk (N,)`` (higher = higher hazard), ``response_all (N, T)``
    (probability of response under each candidate treatment) and ``response_prob (N,)`` (under the
    patient's own treatment, NaN without one); each None when the run has no such head.
    """

    keys: np.ndarray
    diagnosis_prob: np.ndarray | None
    log_risk: np.ndarray | None
    response_all: np.ndarray | None
    response_prob: np.ndarray | None


# -- the run's cohort ---------------------------------------------------------------------------------------
@lru_cache(maxsize=2)
def _cached_frames(lake_path: str, manifest_hash: str) -> LakeFrames:
    from fusion.cohort import load_frames

    return load_frames(lake_path)


def lake_frames(lake: Lake) -> LakeFrames:
    """The reader's frames of ``lake``, cached per lake state (manifest hash); treat them as read-only."""
    return _cached_frames(str(Path(lake.path).resolve()), lake.manifest_hash())


# predicting reads no label: a diagnosis or treatment the run never saw is unknown there, not an error, and the
# lake's survival labels need not be of the run's endpoint
PREDICT_LENIENT = ("diagnosis", "treatment", "endpoint")


def run_cohort(run: LoadedRun, frames: LakeFrames, *, lenient: tuple[str, ...] = ()) -> Cohort:
    """The cohort of ``frames`` with the run's columns, and the run's split per patient key. Warns when the run
    was trained under older cohort rules (:data:`fusion.cohort.COHORT_RULES`). ``lenient``: as for
    :func:`fusion.cohort.assemble_cohort`."""
    trained_under = run.meta.get("cohort_rules", 1)
    if trained_under < COHORT_RULES:
        warnings.warn(f"run {run.run_dir} was trained under cohort rules {trained_under}; its patients' features are"
                      f" now built under rules {COHORT_RULES} ("
                      + "; ".join(RULE_CHANGES[v] for v in sorted(RULE_CHANGES) if v > trained_under)
                      + "), so predictions can differ from what it learned: retrain it", stacklevel=2)
    selection = FeatureSelection.from_dict(run.meta["feature_selection"])
    cohort = assemble_cohort(frames, run.config, selection=selection, assign=False, lenient=lenient)
    for name, block in cohort.blocks.items():
        expected = run.meta["feature_names"].get(name)
        if expected != block.names:
            raise RunError(f"{run.run_dir / 'run.json'}: modality {name!r} was trained on "
                           f"{len(expected or [])} features but the lake gives {len(block.names)} with the "
                           "run's feature selection; evaluate with the lake the run was trained on")
    splits = run.meta.get("splits", {})
    cohort.split = np.array([splits.get(k, "unseen") for k in cohort.patient_keys], dtype=object)
    return cohort


def dataset_for(run: LoadedRun, cohort: Cohort, rows: np.ndarray) -> CohortDataset:
    """A :class:`CohortDataset` over ``rows`` with the run's normalisation and image settings."""
    spec_image = run.meta["spec"]["modalities"].get("image", {})
    return CohortDataset(cohort, rows, Normalizer.from_dict(run.meta["normalization"]),
                         in_chans=int(spec_image.get("in_chans", 1)),
                         max_slices=run.config.data.images.max_slices,
                         image_size=run.config.data.images.image_size)


def present_after_drop(cohort: Cohort, rows: np.ndarray, drop: Iterable[str]) -> np.ndarray:
    """``(len(rows),)`` bool: the row keeps at least one modality when ``drop`` is removed."""
    kept = [p[rows] for name, p in cohort.present().items() if name not in set(drop)]
    return np.logical_or.reduce(kept) if kept else np.zeros(len(rows), bool)


@torch.no_grad()
def model_outputs(run: LoadedRun, cohort: Cohort, rows: np.ndarray, *, drop: Iterable[str] = (),
                  prior: Outputs | None = None, batch_size: int = 64) -> Outputs:
    """Outputs of the run's model for cohort ``rows``, with the modalities in ``drop`` removed at test time.

    Rows left with no modality get ``prior`` (one row: the model's average prediction over the training
    split, i.e. what it predicts knowing nothing); without ``prior`` such rows, or no rows at all, raise
    :class:`PredictError`.
    """
    drop = tuple(drop)
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0 and prior is None:  # nothing gives the outputs' shapes
        raise PredictError("no row to score and no prior: pass the rows of patients with data for the run's "
                           "modalities, or a prior (prior_outputs of the training patients' outputs)")
    usable = present_after_drop(cohort, rows, drop)
    if not usable.all() and prior is None:
        raise PredictError(f"{int((~usable).sum())} row(s) have no modality left after removing {list(drop)}")
    model = run.model
    model.eval()
    parts: dict[str, list[np.ndarray]] = {"diagnosis_prob": [], "log_risk": [], "response_all": []}
    dataset = dataset_for(run, cohort, rows[usable])
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        out = model.embed(drop_modalities(batch, drop))
        z = out["embedding"]
        if model.diagnosis is not None:
            parts["diagnosis_prob"].append(torch.softmax(model.diagnosis(model.diagnosis_embedding(out)),
                                                         dim=1).numpy())
        if model.survival is not None:
            parts["log_risk"].append(model.log_risk(model.survival_embedding(out), out["offset_terms"],
                                                    out["present"],
                                                    model.treated_response_prob(z, batch["treatment"])).numpy())
        if model.response is not None:
            parts["response_all"].append(torch.sigmoid(model.response.all_treatments(z)).numpy())
    result = {}
    for name, chunks in parts.items():
        head_missing = {"diagnosis_prob": model.diagnosis, "log_risk": model.survival,
                        "response_all": model.response}[name] is None
        if head_missing:
            result[name] = None
            continue
        values = np.concatenate(chunks) if chunks else None
        fallback = getattr(prior, name) if prior is not None else None
        full = np.empty((rows.size, *(fallback.shape[1:] if fallback is not None else values.shape[1:])))
        if values is not None:
            full[usable] = values
        if (~usable).any():
            full[~usable] = fallback[0]
        result[name] = full.astype(np.float64)
    response_prob = None
    if result["response_all"] is not None:
        treatment = cohort.targets.treatment[rows]
        picked = result["response_all"][np.arange(rows.size), np.clip(treatment, 0, None)]
        response_prob = np.where(treatment >= 0, picked, np.nan)
    return Outputs(cohort.patient_keys[rows], result["diagnosis_prob"], result["log_risk"],
                   result["response_all"], response_prob)


def prior_outputs(train: Outputs) -> Outputs:
    """One row: the average training prediction (mean probabilities, median log-risk)."""
    def mean(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a.mean(axis=0, keepdims=True)

    log_risk = None if train.log_risk is None else np.median(train.log_risk, keepdims=True)
    return Outputs(np.array(["prior"]), mean(train.diagnosis_prob), log_risk, mean(train.response_all), None)


# -- one patient --------------------------------------------------------------------------------------------
def resolve_patient(lake: Lake, frames: LakeFrames, patient: str) -> str:
    """The ``patient_key`` of ``patient``: a key, any identifier known to the crosswalk, or the id of a sample
    of the lake's genomics (a tumour barcode such as a cBioPortal ``SAMPLE_ID``).

    Raises:
        UnknownPatientError: no patient of the lake has this identifier.
    """
    from ingest.reader import patient_key_of, patient_of_sample

    def known(key: str) -> bool:
        return any((getattr(frames, name)["patient_key"] == key).any() for name in FRAME_COLUMNS)

    key = patient_key_of(lake, patient)
    if not known(key):
        owner = patient_of_sample(lake, patient)
        key = patient_key_of(lake, owner) if owner is not None else key
    if not known(key):
        # a lake without FHIR has no crosswalk: its patients are the ids of the labels (and features) it was given
        listing = ("patient_key, id_system, id_value from patient_xref" if lake.has("patient_xref")
                   else "patient_id from labels")
        raise UnknownPatientError(f"no patient with the given identifier in lake {lake.path}; pass a patient "
                                  "key, an identifier (e.g. MRN) or a genomics sample id: `tumorboard lake sql "
                                  f"--lake LAKE \"select {listing}\"` lists the patients")
    return key


def save_reference(run: LoadedRun, train_out: Outputs, lake_hash: str) -> None:
    """Save the outputs of the run's training patients, ``train_out``, with the run: their sorted log-risks and
    their :func:`prior_outputs` (:class:`fusion.run.TrainingReference`, for the lake state ``lake_hash``)."""
    prior = prior_outputs(train_out)
    save_training_reference(run.run_dir, train_out.log_risk,
                            {f: None if getattr(prior, f) is None else getattr(prior, f)[0] for f in PRIOR_FIELDS},
                            lake_hash)


def saved_prior(run: LoadedRun, reference: TrainingReference | None) -> Outputs | None:
    """The :func:`prior_outputs` in ``reference`` (:func:`fusion.run.read_training_reference` of the run) as one
    row; None without a reference, or without a prior for one of the run's heads (a run saved before priors
    were kept)."""
    if reference is None:
        return None
    heads = {"diagnosis_prob": run.model.diagnosis, "log_risk": run.model.survival, "response_all": run.model.response}
    if any(head is not None and reference.prior[f] is None for f, head in heads.items()):
        return None
    return Outputs(np.array(["prior"]), *(None if heads[f] is None else reference.prior[f][None] for f in PRIOR_FIELDS),
                   None)


def holds_training_patients(run: LoadedRun, keys: Iterable[str]) -> bool:
    """Whether ``keys`` include every training patient of the run: only then do their outputs in a lake state
    replace the ones saved with the run (a lake holding a few of them would leave a coarse reference)."""
    trained_on = {key for key, split in run.meta.get("splits", {}).items() if split == "train"}
    return bool(trained_on) and trained_on <= set(keys)


def reference_log_risk(run: LoadedRun, frames: LakeFrames, lake_hash: str) -> np.ndarray:
    """Sorted log-risks of the run's training patients in this lake state (cached with the run,
    :func:`save_reference`). A lake without every one of them with data for the run's modalities (new patients,
    another site, a subset, their labels without their inputs) gets the ones saved with the run: by ``train``,
    or for the last lake state that held them all."""
    cached = read_training_reference(run.run_dir, lake_hash)
    if cached is not None and cached.log_risk is not None:
        return cached.log_risk
    if holds_training_patients(run, frames.patient_keys()):  # of any table: a lake without FHIR has no Patient
        cohort = run_cohort(run, frames, lenient=PREDICT_LENIENT)
        if holds_training_patients(run, cohort.patient_keys):  # the cohort's patients have data
            train_out = training_outputs(run, cohort)
            save_reference(run, train_out, lake_hash)
            return np.sort(train_out.log_risk)
    saved = read_training_reference(run.run_dir)
    if saved is None or saved.log_risk is None:
        raise PredictError("this lake lacks some of the run's training patients or their inputs, and the run "
                           "holds no saved training risks (reference_risk.json, written by `tumorboard train`): "
                           "predict once with the run's training lake to save them")
    return saved.log_risk


def training_outputs(run: LoadedRun, cohort: Cohort) -> Outputs:
    """The run's outputs for the training patients of ``cohort`` that have a modality.

    Raises:
        PredictError: none of them has (a lake that holds the run's training patients without their inputs).
    """
    rows = cohort.indices("train")
    rows = rows[present_after_drop(cohort, rows, ())]
    if rows.size == 0:
        raise PredictError("none of the run's training patients in this lake has data for any of its modalities ("
                           f"{', '.join(run.config.enabled_modalities())}), so their outputs, the reference for "
                           "risk percentiles, cannot be computed: use the lake the run was trained on, or ingest "
                           "their inputs into this one")
    return model_outputs(run, cohort, rows)


def risk_percentile(reference: np.ndarray, log_risk: np.ndarray) -> np.ndarray:
    """Percentile (0-100) of each ``log_risk`` among the sorted ``reference`` log-risks, ties counted half."""
    below = np.searchsorted(reference, log_risk, "left")
    ties = np.searchsorted(reference, log_risk, "right")
    return 100.0 * (below + 0.5 * (ties - below)) / reference.size


def survival_times(run: LoadedRun) -> np.ndarray:
    """Day grid for survival curves: 0 to the last training event time (``N_TIMES`` points, whole days), with
    the run's ``eval.horizons_days`` and each whole year (365.25 days, rounded down) on it, so that the curve
    read at 1, 2 or 5 years gives S of that day (``at_horizons``), not S of the grid point up to 8 weeks
    before."""
    t_max = float(np.max(run.breslow.event_times)) if run.breslow is not None else 0.0
    years = np.floor(DAYS_PER_YEAR * np.arange(1, int(t_max // DAYS_PER_YEAR) + 1))
    marks = np.concatenate([years, np.asarray(run.config.eval.horizons_days, np.float64)])
    return np.unique(np.concatenate([np.round(np.linspace(0.0, t_max, N_TIMES)), marks[marks <= t_max]]))


def predict_patient(run: LoadedRun, lake: Lake, patient: str, *, explain: bool = True) -> dict:
    """Predictions and explanations for one patient, as a JSON-serialisable dict.

    Args:
        run: a loaded run (:func:`fusion.run.load_run`).
        lake: the lake holding the patient's data.
        patient: the patient key or any identifier of the patient (MRN, ...).
        explain: add ``modality_contributions``, ``image_attribution`` and ``top_features`` (slower).

    Returns:
        ``patient_key``, ``index_date``; ``diagnosis`` {class: probability} (None when the patient has none
        of the modalities the diagnosis head reads: ``diagnosis_reads``, given when the head reads only some);
        ``survival`` {``endpoint``, ``log_risk``,
        ``times`` (days), ``survival`` S(t), ``lower``/``upper`` (95% pointwise interval, see
        :func:`fusion.explain.survival_interval`), ``at_horizons`` {days: S}}; ``risk_percentile`` (0-100,
        among the run's training patients); ``response`` {treatment: probability of objective response},
        ``response_interval`` {treatment: [lower, upper]} (95%, see :func:`fusion.explain.response_interval`)
        and ``response_interval_method``;
        ``missing_modalities``; ``survival_reads``: the modalities the survival head's network reads, given
        when it reads only some (the risk offset's tabular terms are in the log-risk either way); with
        ``tasks.survival.response_link``: ``survival_treatment`` (the recorded treatment the survival is
        predicted under; None: no treatment on record, so no response term) and ``survival_by_treatment``
        {treatment: {``log_risk``, ``at_horizons``}} (the survival under each candidate treatment); with
        ``explain``: ``modality_contributions`` {modality: {``weight``,
        ``delta_log_risk``, ``delta_diagnosis``}}, ``image_attribution`` (integrated gradients from the
        training patients' mean image, HiResCAM for a run saved without it or an image of another size, or
        None without an image; with ``image_id`` and ``slice``, the stored slice index of its
        ``slice_index``), ``top_features``
        (10 tabular features by |integrated gradients|) and ``explanation_target`` (what the attributions
        explain, e.g. ``log_risk``). Heads the run lacks give None. The first call on a lake
        computes the training log-risks for the percentile (cached in ``RUN/reference_risk.json``); a lake
        without the training patients uses the ones saved with the run.

    Raises:
        UnknownPatientError: the identifier matches no patient of the lake.
        PredictError: the patient has no index date or no data for any of the run's modalities.
    """
    from fusion import explain as ex

    frames = lake_frames(lake)
    key = resolve_patient(lake, frames, patient)
    try:
        cohort = run_cohort(run, restrict_frames(frames, {key}), lenient=PREDICT_LENIENT)
    except CohortError as exc:
        raise PredictError(f"cannot build the patient's inputs: {_reason(exc)}") from None
    if len(cohort) != 1:
        raise PredictError("the patient has no data for any of the run's modalities")
    batch = collate([dataset_for(run, cohort, np.array([0]))[0]])
    model = run.model.eval()
    present = {name: bool(p[0]) for name, p in cohort.present().items()}
    with torch.no_grad():
        out = model(batch)
    encoded = ex.encode(model, batch)
    # MC-dropout passes, shared by the survival and response intervals
    mc = ex.mc_samples(model, batch) if model.survival is not None or model.response is not None else None
    result: dict = {
        "patient_key": key,
        "index_date": pd.Timestamp(cohort.index_date[0]).isoformat(),
        "missing_modalities": [m for m in run.config.enabled_modalities() if not present.get(m, False)],
        "diagnosis": None, "survival": None, "risk_percentile": None, "response": None,
    }
    if model.heads_config.survival_modalities is not None:
        result["survival_reads"] = list(model.heads_config.survival_modalities)
    reads = model.heads_config.diagnosis_modalities
    if reads is not None:
        result["diagnosis_reads"] = list(reads)
    if "diagnosis_logits" in out and (reads is None or any(present.get(m, False) for m in reads)):
        prob = torch.softmax(out["diagnosis_logits"], dim=1)[0].tolist()
        result["diagnosis"] = dict(zip(run.meta["diagnosis_classes"], prob, strict=True))
    if "log_risk" in out and run.breslow is not None:
        log_risk = float(out["log_risk"][0])
        times = survival_times(run)
        interval = ex.survival_interval(model, batch, run.breslow, times, encoded=encoded, mc=mc)
        horizons = np.asarray(run.config.eval.horizons_days, np.float64)
        at = run.breslow.predict_survival(np.array([log_risk]), horizons)[0]
        result["survival"] = {"endpoint": run.meta.get("survival_endpoint", "os"), "log_risk": log_risk,
                              "times": times.tolist(), **{k: v.tolist() for k, v in interval.items()
                                                          if isinstance(v, np.ndarray)},
                              "interval_method": interval["method"],
                              "at_horizons": {f"{h:g}": float(s) for h, s in zip(horizons, at, strict=True)}}
        result["risk_percentile"] = float(risk_percentile(reference_log_risk(run, frames, lake.manifest_hash()),
                                                          np.array([log_risk]))[0])
        if model.response_weight is not None:
            treatment = int(batch["treatment"][0])
            names = run.meta["treatment_names"]
            result["survival_treatment"] = names[treatment] if treatment >= 0 else None
            result["survival_by_treatment"] = _survival_by_treatment(run, encoded, names, horizons)
    if model.response is not None:
        interval = ex.response_interval(model, batch, encoded=encoded, mc=mc)
        names = run.meta["treatment_names"]
        result["response"] = dict(zip(names, interval["probability"].tolist(), strict=True))
        result["response_interval"] = {name: [float(lo), float(hi)] for name, lo, hi in zip(
            names, interval["lower"], interval["upper"], strict=True)}
        result["response_interval_method"] = interval["method"]
    if explain:
        names = run.meta["feature_names"]
        raw = {n: b.values[0] for n, b in cohort.blocks.items()}
        descriptions = run.meta.get("feature_descriptions", {})
        result["modality_contributions"] = ex.modality_contributions(model, batch, encoded)
        attribution = (ex.image_attribution(model, batch, encoded, reference=run.reference_image)
                       if present.get("image") else None)
        result["image_attribution"] = _locate(attribution, run, cohort, frames)
        result["top_features"] = ex.top_features(model, batch, names, raw, descriptions, k=10,
                                                 encoded=encoded)
        result["explanation_target"] = ex.target_name(model, encoded.cls, run.meta["diagnosis_classes"],
                                                      encoded.response_treatment, run.meta["treatment_names"])
    return _finite(result)


# -- every patient ------------------------------------------------------------------------------------------
PREDICTION_FORMATS = (".parquet", ".csv")


def predict_cohort(run: LoadedRun, lake: Lake) -> tuple[pd.DataFrame, int]:
    """Predictions for every patient of ``lake`` the run can score (no explanations), one row each.

    Returns:
        The table and how many of the lake's patients (those of any of its tables: a lake without FHIR has
        no Patient rows) it leaves out (no index date, or none of the run's modalities). Columns:
        ``patient_key``, ``split`` (the run's: ``train`` | ``val`` | ``test``, or ``unseen``), ``index_date``
        (UTC), ``treatment`` (on record, None without one), ``missing_modalities`` (comma-separated); per head
        the run has: ``diagnosis_<class>`` (probability; NaN when the patient has none of the modalities the
        diagnosis head reads), ``log_risk``, ``risk_percentile`` (0-100, among the training patients),
        ``survival_<h>d`` (S at each ``eval.horizons_days``), ``response_<treatment>`` (probability of response
        under each candidate). The values are :func:`predict_patient`'s.
    """
    frames = lake_frames(lake)
    cohort = run_cohort(run, frames, lenient=PREDICT_LENIENT)
    rows = np.arange(len(cohort))
    rows = rows[present_after_drop(cohort, rows, ())]
    out = model_outputs(run, cohort, rows)
    present = cohort.present()
    modalities = run.config.enabled_modalities()
    names = run.meta["treatment_names"]
    treatment = cohort.targets.treatment[rows]
    index_date = pd.DatetimeIndex(cohort.index_date[rows])
    table: dict[str, object] = {
        "patient_key": cohort.patient_keys[rows], "split": cohort.split[rows],
        "index_date": index_date.tz_convert("UTC") if index_date.tz else index_date.tz_localize("UTC"),
        "treatment": [names[i] if i >= 0 else None for i in treatment],
        "missing_modalities": [", ".join(m for m in modalities if not present[m][r]) for r in rows]}
    if out.diagnosis_prob is not None:
        reads = run.model.heads_config.diagnosis_modalities or modalities
        readable = np.logical_or.reduce([present[m][rows] for m in reads])
        for j, name in enumerate(run.meta["diagnosis_classes"]):
            table[f"diagnosis_{name}"] = np.where(readable, out.diagnosis_prob[:, j], np.nan)
    if out.log_risk is not None and run.breslow is not None:
        table["log_risk"] = out.log_risk
        table["risk_percentile"] = risk_percentile(reference_log_risk(run, frames, lake.manifest_hash()),
                                                   out.log_risk)
        horizons = np.asarray(run.config.eval.horizons_days, np.float64)
        at = run.breslow.predict_survival(out.log_risk, horizons)
        for j, h in enumerate(horizons):
            table[f"survival_{h:g}d"] = at[:, j]
    if out.response_all is not None:
        for j, name in enumerate(names):
            table[f"response_{name}"] = out.response_all[:, j]
    return pd.DataFrame(table), len(frames.patient_keys()) - rows.size


def write_predictions(table: pd.DataFrame, path: Path) -> None:
    """Write :func:`predict_cohort`'s table to ``path`` (``.parquet`` or ``.csv``; its folder is created when
    missing), through a temporary file renamed into place: a failed or killed run leaves no half-written file.

    Raises:
        PredictError: ``path`` has another suffix, or cannot be written (e.g. it is a folder).
    """
    import os
    import uuid

    path = Path(path)
    if path.suffix.lower() not in PREDICTION_FORMATS:
        raise PredictError(f"{path}: write the predictions to a .parquet or .csv file")
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".parquet":
            table.to_parquet(temporary, index=False)
        else:
            table.to_csv(temporary, index=False)
        os.replace(temporary, path)
    except OSError as exc:
        raise PredictError(f"cannot write the predictions to {path}: {exc.strerror or exc}") from None
    finally:
        temporary.unlink(missing_ok=True)


@torch.no_grad()
def _survival_by_treatment(run: LoadedRun, encoded: Encoded, names: list[str], horizons: np.ndarray) -> dict:
    """``{treatment: {"log_risk", "at_horizons" {days: S}}}`` of one encoded row under each candidate treatment
    (a model with ``response_link``)."""
    out = {}
    for index, name in enumerate(names):
        log_risk = float(run.model.survival_log_risk(encoded.emb, encoded.present, encoded.offset_terms,
                                                     torch.tensor([index]))[0])
        at = run.breslow.predict_survival(np.array([log_risk]), horizons)[0]
        out[name] = {"log_risk": log_risk, "at_horizons": {f"{h:g}": float(s) for h, s in zip(horizons, at,
                                                                                               strict=True)}}
    return out


def _locate(attribution: dict | None, run: LoadedRun, cohort: Cohort, frames: LakeFrames) -> dict | None:
    """``attribution`` with ``image_id`` (the lake image the model read) and ``slice`` (the stored slice index
    of the model's input slice ``slice_index``; None for a 2D image) added."""
    if attribution is None:
        return None
    images = frames.images
    hit = images[(images["tensor_file"] == cohort.images.tensor_file[0])
                 & (images["tensor_row"] == cohort.images.tensor_row[0])]
    if hit.empty:
        return {**attribution, "image_id": None, "slice": None}
    shape = [int(n) for n in hit["tensor_shape"].iloc[0]]
    return {**attribution, "image_id": str(hit["image_id"].iloc[0]),
            "slice": stored_slice(run, shape, int(attribution["slice_index"]))}


def stored_slice(run: LoadedRun, shape: list[int], model_index: int) -> int | None:
    """Index into a stored image of ``shape`` of the model's input slice ``model_index``, or None when the
    image is one slice. Runs :func:`fusion.data.image_to_series` on a volume of slice numbers, so the mapping
    follows its subsampling exactly."""
    if len(shape) < 3:
        return None
    spec_image = run.meta["spec"]["modalities"].get("image", {})
    probe = np.arange(shape[0], dtype=np.float32).reshape(shape[0], *([1] * (len(shape) - 1)))
    series = image_to_series(np.broadcast_to(probe, (*shape[:-2], 1, 1)).copy(),
                             in_chans=int(spec_image.get("in_chans", 1)),
                             max_slices=run.config.data.images.max_slices)
    if series.shape[0] == 1:
        return None
    return int(round(float(series[model_index].flatten()[0])))


def _reason(exc: CohortError) -> str:
    text = str(exc)
    if "any enabled modality" in text:  # first: its message also names "the index date"
        return "no data for any of the run's modalities"
    if "index date" in text:
        return "no index date (no cancer Condition matches data.index and no labels index_date)"
    return text


def _finite(value: object) -> object:
    """Replace NaN / inf floats by None recursively (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
