"""Honest evaluation of a trained run on its test split: metrics with bootstrap intervals, baselines,
modality ablations, subgroups and figures (``tumorboard evaluate``).

Everything is computed on the run's own test split (``run.json`` ``splits``), rebuilt from the lake with the
run's saved feature selection and normalisation. Every metric is ``{"value", "ci_low", "ci_high"}``: the
value on all test patients and a 95% percentile bootstrap interval over patients (``eval.n_boot`` resamples;
the same resamples for every model of a task, so intervals are paired; ``null`` where undefined). The binned
calibration errors (``calibration_<h>d``, ``ece``) grow on resamples, whose repeated patients make the bins
noisier, so their percentile interval could lie wholly above the value: theirs is taken after subtracting that
bias (the mean of the resamples minus the value) from every resample, and starts at 0 at the lowest.

``metrics.json``::

    {"run", "lake", "lake_manifest_hash", "lake_changed", "split_seed", "n_boot", "n_test", "external_validation",
     "created_at",
     "tasks": {"diagnosis" | "survival" | "response": {
         "n", ("n_events" | "n_positive"), ("endpoint": "os" | "pfs", survival only), "model": {metric: {...}},
         (survival only: "horizons_days", "uno_tau_days", "uno_censoring_floor",
          "calibration_without_follow_up": {"<h>d": {"bins", "patients"}}),
         "baselines": {"coxnet" | "rsf" | "logistic" | "image_logistic" | "late_fusion": {metric: {...}}},
         "ablations": {"without_<m>" | "only_<m>": {metric: {...}}}}},
     "subgroups": {task: {"sex_female" | "sex_male" | "age_lt60" | "age_60_69" | "age_ge70":
                          {"n", ("n_events" | "n_positive"), "model": {metric: {...}} | null,
                           ("skipped": why, under MIN_SUBGROUP patients, empty groups included)}}},
     "plots": [file names], "notes": [...]}

External validation: on a lake that holds none of the run's patients (another site, a later cohort), the
patients the run never saw are the test patients (``external_validation``: true). The model and its
``without_<m>`` ablations are scored with the training patients' outputs saved with the run (``reference_risk.json``:
the prior and the risk tertiles), and saved ``only_<m>`` models with theirs; the baselines and unsaved ``only_<m>``
models, which need the run's training patients, are left out, and Uno's C and the Brier scores weigh by the scored
patients' own censoring. A lake that holds some of the run's patients is evaluated on the run's test patients
(likewise with the saved outputs when it lacks the training patients).

Figures: ``comparison.png`` (each task's headline metric, :data:`HEADLINE_METRICS`, for the model, its
baselines and ablations with their intervals), ``calibration.png``, ``roc.png``, ``km_risk_groups.png``.

Uno's C is truncated at ``uno_tau_days``: the first training time at which the training censoring survival
G(t) falls below ``uno_censoring_floor`` (0.2; :func:`fusion.metrics.uno_tau`), so that no comparison weighs more
than 1 / 0.2^2 = 25. Until then it was truncated at the largest training time, where G falls to a few percent:
on the demo's 30 test patients (200-patient cohort) two events after 2,450 days, when G was 0.21 and 0.18, had
weights 23 and 31 against a median of 1.1: the model's Uno C was 0.714 with both, 0.618 without (Harrell 0.621).
The floor moves the demo's tau from 3,390 to 2,495 days (dropping the later one), its Uno C to 0.675 and its
interval's width from 0.421 to 0.388; in 600 simulated 140 / 30-patient splits censored like the demo it cut
the 95th percentile of the largest weight from 58 to 18 and the estimate's standard deviation from 0.063 to
0.060, at the same mean.

Metrics: survival ``c_index_harrell``, ``c_index_uno``, ``td_auc_<h>d``, ``integrated_brier``, ``calibration_<h>d``
(mean |predicted - Kaplan-Meier observed| event probability by ``h`` days over risk deciles, lower is better; a
decile none of whose patients is followed to ``h`` days has no observed risk there and is left out, counted for the
model in ``calibration_without_follow_up`` and the notes, and the metric is undefined, ``null``, on a sample where
such deciles hold over half the patients) at the configured horizons that lie inside the test follow-up
(``integrated_brier`` over one time grid, :func:`fusion.metrics.survival_time_grid` of all test patients, on every
resample and subgroup: ``fixed_grid`` of :func:`fusion.metrics.integrated_brier_score`); classification ``auroc``,
``auprc`` (macro one-vs-rest for diagnosis, over the classes with positives and negatives among the patients scored:
all test patients, or a subgroup's; a bootstrap resample lacking one of them leaves these and ``balanced_accuracy``,
the mean recall over the classes of the patients scored, undefined rather than averaging fewer classes;
response's ``balanced_accuracy`` likewise on a resample without responders or non-responders), ``accuracy``,
``balanced_accuracy``, ``ece``. Response is scored on patients with a known treatment and response, with the
probability under their own treatment. Baselines see the inputs the model's head sees: the diagnosis
logistic regression only the tabular features of ``tasks.diagnosis.modalities`` (none when that is the image alone),
and ``image_logistic`` (diagnosis, when the head reads the image) a logistic regression on 16 x 16 thumbnails of the
same images the model sees. ``late_fusion`` (when the ``only_<m>`` models are scored and at least two have the
task's head) combines their predictions, the classical alternative to a joint model: a ridge Cox model of
their log-risks (survival; ridge penalty fixed at :data:`fusion.baselines.STACK_RIDGE`, not tuned on the rows it
is fitted on) or a logistic regression of their log probabilities (diagnosis) or logits (response),
fitted on the validation patients, since the single-modality models' predictions on their own training patients are
in-sample.

Ablations: ``without_<m>`` is the same model with modality ``m`` removed at test time; ``only_<m>`` is the
run's config restricted to ``m``, retrained on the same split (saved under ``RUN/ablations/only_<m>`` and
reused on the next evaluation, also with ``retrain_ablations=False``, which trains none; a task whose head
that model lacks, e.g. diagnosis for a modality the diagnosis head does not read, has no ``only_<m>`` entry; nor
does a modality too few patients have to train on, which a note names). A patient left with no modality gets
the model's average training prediction (what it predicts knowing nothing), so every ablation is scored on the same
patients.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from fusion import baselines, metrics, plots
from fusion.cohort import Cohort, CohortError, FeatureSelection, assemble_cohort, load_frames
from fusion.config import RunConfig, apply_overrides
from fusion.predict import (
    Outputs,
    dataset_for,
    holds_training_patients,
    model_outputs,
    prior_outputs,
    run_cohort,
    save_reference,
    saved_prior,
)
from fusion.run import LoadedRun, RunError, load_run, read_training_reference, staged_dir
from ingest.lake import Lake

Progress = Callable[[dict], None]
METRICS_FILE = "metrics.json"
RESAMPLING_BIASED = ("calibration_", "ece")  # binned errors: their intervals are bias-corrected (module doc)
MIN_SUBGROUP = 10
AGE_BANDS = (("age_lt60", -np.inf, 60.0), ("age_60_69", 60.0, 70.0), ("age_ge70", 70.0, np.inf))


# -- bootstrap ----------------------------------------------------------------------------------------------
def bootstrap(metric_fn: Callable[..., dict[str, float]], arrays: tuple[np.ndarray, ...], *, n_boot: int,
              seed: int) -> dict[str, dict[str, float | None]]:
    """Percentile bootstrap over rows (patients) of a dict-valued metric function.

    ``metric_fn(*arrays) -> {name: value}``, or a :class:`PerSample` whose definition the full ``arrays`` fix;
    every resample draws the same row indices for a given ``seed`` and row count, so two models scored on the
    same rows get paired intervals. A metric's interval is null when fewer than half of the resamples give a
    finite value for it.
    """
    if isinstance(metric_fn, PerSample):
        metric_fn = metric_fn.make(*arrays)
    full = metric_fn(*arrays)
    n = len(arrays[0])
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {name: [] for name in full}
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        for name, value in metric_fn(*(a[idx] for a in arrays)).items():
            if name in draws and np.isfinite(value):
                draws[name].append(value)
    out = {}
    for name, value in full.items():
        values = np.asarray(draws[name], float)
        ok = n_boot > 0 and len(values) >= max(1, n_boot // 2)
        biased = name.startswith(RESAMPLING_BIASED)
        if ok and biased and np.isfinite(value):
            values = values - (values.mean() - value)
        low, high = np.quantile(values, [0.025, 0.975]) if ok else (np.nan, np.nan)
        if biased:
            low = max(low, 0.0)
        out[name] = {"value": _num(value), "ci_low": _num(low), "ci_high": _num(high)}
    return out


class PerSample:
    """A metric function fixed by the sample it is bootstrapped on: ``make(*arrays)`` (the full sample, e.g. all
    test patients or one subgroup) returns the function that scores it and every resample, so that a metric
    means the same on each (e.g. the macro average over the same classes)."""

    def __init__(self, make: Callable[..., Callable[..., dict[str, float]]]) -> None:
        self.make = make


def _num(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _safe(fn: Callable[[], float]) -> float:
    """The metric, or NaN where it is undefined on these rows (one class, no event, ...)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(fn())
    except (ValueError, ZeroDivisionError, IndexError):
        return math.nan


# -- task metrics -------------------------------------------------------------------------------------------
def _tag(h: float) -> str:
    return f"{h:g}d"


def survival_metric_fn(*, train_time: np.ndarray, train_event: np.ndarray, horizons: np.ndarray,
                       grid: np.ndarray, uno_tau: float | None = None) -> Callable[..., dict[str, float]]:
    """Metric function of ``(time, event, risk, surv_grid (N, G), surv_h (N, H))`` for :func:`bootstrap`;
    Uno's C truncated at ``uno_tau`` days (default the largest training time, :func:`fusion.metrics.uno_c_index`)."""
    def fn(time, event, risk, surv_grid, surv_h) -> dict[str, float]:
        kw = {"train_time": train_time, "train_event": train_event}
        out = {"c_index_harrell": _safe(lambda: metrics.harrell_c_index(time, event, risk)),
               "c_index_uno": _safe(lambda: metrics.uno_c_index(time, event, risk, tau=uno_tau, **kw))}
        for h in horizons:
            out[f"td_auc_{_tag(h)}"] = _safe(
                lambda h=h: metrics.time_dependent_auc(time, event, risk, horizons=np.array([h]),
                                                       **kw)[float(h)])
        out["integrated_brier"] = _safe(
            lambda: metrics.integrated_brier_score(time, event, surv_grid, times=grid, fixed_grid=True, **kw))
        for j, h in enumerate(horizons):
            out[f"calibration_{_tag(h)}"] = _safe(lambda j=j, h=h: metrics.calibration_at_horizon(
                time, event, surv_h[:, j], horizon=float(h))["calibration_error"])
        return out
    return fn


def _present(y: np.ndarray, n_classes: int) -> np.ndarray:
    """The classes with positives and negatives among ``y`` (one-vs-rest)."""
    return np.array([c for c in range(n_classes) if 0 < (y == c).sum() < len(y)], dtype=np.int64)


def _macro(y: np.ndarray, prob: np.ndarray, fn: Callable[[np.ndarray, np.ndarray], float],
           classes: np.ndarray | None = None) -> float:
    """Mean of ``fn(y == c, prob[:, c])`` over ``classes`` (default: those with positives and negatives among
    ``y``); NaN when one of them lacks positives or negatives here."""
    classes = _present(y, prob.shape[1]) if classes is None else classes
    if not len(classes) or not np.array_equal(np.intersect1d(classes, _present(y, prob.shape[1])), classes):
        return math.nan
    return float(np.mean([fn(y == c, prob[:, c]) for c in classes]))


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray, classes: np.ndarray | None) -> float:
    """Mean recall over ``classes`` (default: those in ``y``); NaN when one of them is absent from ``y``."""
    if classes is None:
        return metrics.balanced_accuracy(y, pred)
    if not np.isin(classes, y).all():
        return math.nan
    return float(np.mean([np.mean(pred[y == c] == c) for c in classes]))


def diagnosis_metric_fn(y: np.ndarray, prob: np.ndarray, *, classes: np.ndarray | None = None,
                        recall_classes: np.ndarray | None = None) -> dict[str, float]:
    """Macro one-vs-rest AUROC/AUPRC over ``classes`` (default: those with positives and negatives here),
    balanced accuracy over ``recall_classes`` (default: those in ``y``), accuracy, top-label ECE. A sample
    lacking positives or negatives of one of ``classes``, or any of ``recall_classes``, leaves those metrics
    undefined (NaN) rather than averaging over fewer classes."""
    pred = prob.argmax(axis=1)
    return {"auroc": _safe(lambda: _macro(y, prob, metrics.auroc, classes)),
            "auprc": _safe(lambda: _macro(y, prob, metrics.auprc, classes)),
            "accuracy": _safe(lambda: metrics.accuracy(y, pred)),
            "balanced_accuracy": _safe(lambda: _balanced_accuracy(y, pred, recall_classes)),
            "ece": _safe(lambda: metrics.expected_calibration_error(y, prob))}


# diagnosis as evaluate scores it: over the classes of the whole sample (all test patients, or one subgroup)
DIAGNOSIS_METRICS = PerSample(lambda y, prob: partial(diagnosis_metric_fn, classes=_present(y, prob.shape[1]),
                                                      recall_classes=np.unique(y)))


def binary_metric_fn(y: np.ndarray, prob: np.ndarray, *, recall_classes: np.ndarray | None = None
                     ) -> dict[str, float]:
    """AUROC, AUPRC, accuracy and balanced accuracy at 0.5, ECE for binary ``y`` and ``P(y = 1)``; balanced
    accuracy over ``recall_classes`` (default: those in ``y``), NaN on a sample lacking one of them."""
    pred = (prob >= 0.5).astype(int)
    y = y.astype(int)
    return {"auroc": _safe(lambda: metrics.auroc(y, prob)), "auprc": _safe(lambda: metrics.auprc(y, prob)),
            "accuracy": _safe(lambda: metrics.accuracy(y, pred)),
            "balanced_accuracy": _safe(lambda: _balanced_accuracy(y, pred, recall_classes)),
            "ece": _safe(lambda: metrics.expected_calibration_error(y, prob))}


# response as evaluate scores it: balanced accuracy over the classes of the whole sample, as for diagnosis (a
# resample without responders leaves it undefined instead of scoring the specificity alone)
RESPONSE_METRICS = PerSample(lambda y, prob: partial(binary_metric_fn, recall_classes=np.unique(y.astype(int))))


# -- the evaluation -----------------------------------------------------------------------------------------
def one_call_note(task: str, calls: np.ndarray, y: np.ndarray, names: list[str]) -> list[str]:
    """A note (a list of one, or none) when the model makes one call (``calls``: class indices, ``(n,)``) for every
    test patient while their labels ``y`` hold several classes: its accuracies then measure the class mix."""
    if np.unique(calls).size != 1 or np.unique(y).size < 2:
        return []
    return [f"{task}: the model calls every one of the {calls.size} test patients {names[int(calls[0])]!r}, so its"
            " accuracy and balanced accuracy measure the class mix, not the model (its AUROC ranks the"
            " probabilities); it may be undertrained: see the run's curves.png, or raise train.epochs"]


class _Eval:
    """State of one evaluation: the run, its cohort, row sets and the predictions of every candidate."""

    def __init__(self, run: LoadedRun, cohort: Cohort, patients, lake_path: str, lake_hash: str, n_boot: int,
                 seed: int, progress: Progress) -> None:
        self.run, self.cohort, self.patients = run, cohort, patients
        self.lake_path, self.lake_hash = lake_path, lake_hash
        self.ablation_breslow: dict = {}
        self.n_boot, self.seed, self.say = n_boot, seed, progress
        self.train, self.val, self.test = (cohort.indices(s) for s in ("train", "val", "test"))
        # external validation: none of the run's patients is here, so the patients it never saw are the test set
        self.external = not (self.train.size or self.val.size or self.test.size)
        if self.external:
            self.test = cohort.indices("unseen")
        # without the run's training patients (an external lake, or one of its test patients only), what needs
        # them comes from the outputs saved with the run, and the baselines are left out
        self.saved_training = self.train.size == 0
        self.notes: list[str] = []
        self.outputs: dict[str, dict[str, Outputs]] = {"model": {}, "ablations": {}}
        self.val_outputs: dict[str, Outputs] = {}  # only_<m> on the validation rows: what late fusion fits
        t = cohort.targets
        self.rows = {"diagnosis": self.test[t.diagnosis[self.test] >= 0],
                     "survival": self.test[np.isfinite(t.time[self.test])],
                     "response": self.test[(t.treatment[self.test] >= 0)
                                           & np.isfinite(t.response[self.test])]}

    # predictions ---------------------------------------------------------------------------------------
    def predict_model(self) -> None:
        self.say({"stage": "predict", "what": "model"})
        if self.saved_training:  # the training patients' outputs saved with the run
            reference = read_training_reference(self.run.run_dir)
            prior = saved_prior(self.run, reference)
            if reference is None or prior is None:
                raise RunError(f"{self.run.run_dir} holds no saved outputs of its training patients "
                               "(reference_risk.json, written by `tumorboard train`): evaluate it once with its "
                               "training lake, then with this one")
            self.prior, self.train_log_risk = prior, reference.log_risk
            where = (f"external validation: none of the run's patients is in this lake, so its {self.test.size} "
                     "patients with data are the test patients" if self.external else
                     "this lake holds none of the run's training patients")
            self.notes.append(where + "; the baselines and the single-modality models that need the run's training "
                              "patients are left out (saved only_<m> models are scored)"
                              + (", and Uno's C-index and the Brier scores weigh by these patients' own censoring"
                                 if self.run.config.tasks.survival.enabled else ""))
        else:
            train_out = model_outputs(self.run, self.cohort, self.train)
            self.prior, self.train_log_risk = prior_outputs(train_out), train_out.log_risk
            if holds_training_patients(self.run, self.cohort.patient_keys[self.train]):
                save_reference(self.run, train_out, self.lake_hash)
            unseen = self.cohort.indices("unseen").size
            if unseen:
                self.notes.append(f"{unseen} patient(s) of this lake the run never saw are not scored: the run's "
                                  "test patients are; evaluate them on a lake of their own for an external "
                                  "validation")
        self.outputs["model"]["model"] = model_outputs(self.run, self.cohort, self.test, prior=self.prior)
        modalities = self.run.config.enabled_modalities()
        if len(modalities) > 1:
            for m in modalities:
                self.say({"stage": "predict", "what": f"without_{m}"})
                self.outputs["ablations"][f"without_{m}"] = model_outputs(
                    self.run, self.cohort, self.test, drop=[m], prior=self.prior)

    def single_modality_ablations(self, frames, *, train_missing: bool = True) -> None:
        """Score the ``only_<m>`` models: those saved by an earlier evaluation, and (``train_missing``) the
        others, trained now."""
        modalities = self.run.config.enabled_modalities()
        if len(modalities) < 2:
            return
        asked_not_to_train = not train_missing  # --no-retrain: an external validation trains none either
        train_missing = train_missing and not self.saved_training  # training needs the run's training patients
        saved = [m for m in modalities if (single_modality_dir(self.run, m) / "model.safetensors").is_file()]
        if asked_not_to_train and saved:
            self.notes.append(no_retrain_note(saved, modalities))
        for m in modalities if train_missing else saved:
            self.say({"stage": "ablation", "what": f"only_{m}"})
            try:
                sub = single_modality_run(self.run, frames, m, lake_path=self.lake_path, progress=self.say)
            except CohortError as exc:  # e.g. too few patients have this modality: the other ablations go on
                self.notes.append(f"only_{m} was not trained: {exc}")
                continue
            cohort = run_cohort(sub, frames)
            if self.saved_training:
                prior = saved_prior(sub, read_training_reference(sub.run_dir))
                if prior is None:
                    self.notes.append(f"only_{m} was not scored: its folder holds no saved outputs of its training "
                                      "patients (evaluate the run once with its training lake)")
                    continue
                self.outputs["ablations"][f"only_{m}"] = self._sub_outputs(
                    sub, cohort, prior, self.test, "unseen" if self.external else "test")
            else:
                train_out = model_outputs(sub, cohort, cohort.indices("train"))
                # saved with it, as train saves them: what an external validation scores it with (a model saved
                # before train kept them gets them here)
                if holds_training_patients(sub, cohort.patient_keys[cohort.indices("train")]):
                    save_reference(sub, train_out, self.lake_hash)
                prior = prior_outputs(train_out)
                self.outputs["ablations"][f"only_{m}"] = self._sub_outputs(sub, cohort, prior, self.test, "test")
                self.val_outputs[f"only_{m}"] = self._sub_outputs(sub, cohort, prior, self.val, "val")
            self.ablation_breslow[f"only_{m}"] = sub.breslow

    def _sub_outputs(self, sub: LoadedRun, cohort: Cohort, prior: Outputs, rows: np.ndarray,
                     split: str) -> Outputs:
        """A single-modality model's outputs for this cohort's ``rows`` (of ``split``); its ``prior`` for
        patients it does not score."""
        position = {k: i for i, k in enumerate(cohort.patient_keys)}
        keys = self.cohort.patient_keys[rows]
        here = np.array([k in position for k in keys], dtype=bool)
        mine = np.array([position[k] for k in keys[here]], dtype=np.int64)
        if here.any() and not (cohort.split[mine] == split).all():
            raise RunError(f"ablation {sub.run_dir.name} in {sub.run_dir} was trained on another split; delete it")
        part = model_outputs(sub, cohort, mine, prior=prior)  # its shapes when it scores none of them
        return _merge(part, here, prior, keys, self.cohort.targets.treatment[rows])

    def _late_fusion_inputs(self, field: str, transform: Callable[[np.ndarray], np.ndarray]) -> np.ndarray | None:
        """``(N, F)`` over the cohort: ``transform`` of each single-modality model's ``field`` side by side,
        filled at the validation and test rows (NaN elsewhere); None with fewer than two such models."""
        names = [n for n, out in self.val_outputs.items() if getattr(out, field) is not None]
        if len(names) < 2:
            return None
        columns = []
        for name in names:
            val, test = (transform(getattr(out[name], field)) for out in (self.val_outputs, self.outputs["ablations"]))
            full = np.full((self.cohort.patient_keys.size, *val.shape[1:]), np.nan)
            full[self.val], full[self.test] = val, test
            columns.append(full.reshape(full.shape[0], -1))
        return np.column_stack(columns)

    # scoring -------------------------------------------------------------------------------------------
    def _take(self, out: Outputs, task: str) -> Outputs:
        """``out`` (aligned with the test rows) restricted to the rows of ``task``."""
        pick = np.isin(self.test, self.rows[task])
        return Outputs(out.keys[pick], *(None if a is None else a[pick] for a in (
            out.diagnosis_prob, out.log_risk, out.response_all, out.response_prob)))

    def score(self) -> tuple[dict, dict]:
        tasks, subgroups = {}, {}
        config_tasks = self.run.config.tasks
        if config_tasks.diagnosis.enabled:
            tasks["diagnosis"], subgroups["diagnosis"] = self._score_diagnosis()
        if config_tasks.survival.enabled:
            tasks["survival"], subgroups["survival"] = self._score_survival()
            tasks["survival"]["endpoint"] = self.run.meta.get("survival_endpoint", "os")
        if config_tasks.response.enabled:
            tasks["response"], subgroups["response"] = self._score_response()
        return tasks, subgroups

    def _candidates(self, task: str, field: str) -> dict[str, dict[str, np.ndarray]]:
        return {group: {name: getattr(self._take(o, task), field) for name, o in outs.items()}
                for group, outs in self.outputs.items()}

    def _report(self, rows: np.ndarray, fn, arrays_for: Callable[[str, str], tuple], baseline: dict) -> dict:
        result = {"model": bootstrap(fn, arrays_for("model", "model"), n_boot=self.n_boot, seed=self.seed),
                  "baselines": {}, "ablations": {}}
        for name in baseline:
            self.say({"stage": "score", "what": name})
            result["baselines"][name] = bootstrap(fn, arrays_for("baselines", name), n_boot=self.n_boot,
                                                  seed=self.seed)
        for name in self.outputs["ablations"]:
            arrays = arrays_for("ablations", name)
            if any(a is None for a in arrays):
                continue  # that model has no head for the task (e.g. a modality the diagnosis head does not read)
            self.say({"stage": "score", "what": name})
            result["ablations"][name] = bootstrap(fn, arrays, n_boot=self.n_boot, seed=self.seed)
        return result

    def _subgroups(self, task: str, fn, arrays: tuple, counts: dict[str, np.ndarray] | None = None) -> dict:
        """Each group's size (``n``, and ``n_events`` / ``n_positive`` from ``counts``: 0/1 per row) and the
        model's metrics; groups of fewer than :data:`MIN_SUBGROUP` patients, empty ones included, are skipped."""
        out = {}
        for group, member in self.groups(self.rows[task]).items():
            n = int(member.sum())
            sizes = {"n": n, **{k: int(np.asarray(v)[member].sum()) for k, v in (counts or {}).items()}}
            if n < MIN_SUBGROUP:
                out[group] = {**sizes, "model": None, "skipped": f"fewer than {MIN_SUBGROUP} patients"}
                continue
            out[group] = {**sizes, "model": bootstrap(fn, tuple(a[member] for a in arrays), n_boot=self.n_boot,
                                                      seed=self.seed)}
        return out

    def _score_diagnosis(self) -> tuple[dict, dict]:
        rows = self.rows["diagnosis"]
        if rows.size < 2:
            return {"n": int(rows.size), "skipped": "fewer than two test patients with a diagnosis"}, {}
        t = self.cohort.targets
        y = t.diagnosis[rows]
        n_classes = len(t.diagnosis_classes)
        preds = self._candidates("diagnosis", "diagnosis_prob")
        preds["baselines"] = {}
        read = self.run.config.tasks.diagnosis.modalities  # the baseline sees what the diagnosis head sees
        X = self.cohort.tabular(read)  # noqa: N806
        train = self.train[t.diagnosis[self.train] >= 0]
        if X.shape[1] and np.unique(t.diagnosis[train]).size >= 2:
            self.say({"stage": "baseline", "what": "diagnosis logistic"})
            preds["baselines"]["logistic"] = baselines.fit_diagnosis(X, t.diagnosis, train, rows, n_classes)
        images = self.cohort.images
        if (images is not None and (read is None or "image" in read)
                and np.unique(t.diagnosis[train[images.present[train]]]).size >= 2):  # imaged patients, 2 classes
            self.say({"stage": "baseline", "what": "diagnosis image logistic"})
            preds["baselines"]["image_logistic"] = baselines.fit_diagnosis(
                self._thumbnails(np.union1d(train, rows)), t.diagnosis, train, rows, n_classes)
        late = self._late_fusion_inputs("diagnosis_prob", _log_prob)
        fit = self.val[t.diagnosis[self.val] >= 0]
        if late is not None and np.unique(t.diagnosis[fit]).size >= 2:
            self.say({"stage": "baseline", "what": "diagnosis late fusion"})
            preds["baselines"]["late_fusion"] = baselines.fit_diagnosis(late, t.diagnosis, fit, rows, n_classes)
        self.diagnosis_plot = (y, preds["model"]["model"], t.diagnosis_classes)
        self.notes.extend(one_call_note("diagnosis", preds["model"]["model"].argmax(axis=1), y, t.diagnosis_classes))
        result = {"n": int(rows.size), **self._report(
            rows, DIAGNOSIS_METRICS, lambda g, n: (y, preds[g][n]), preds["baselines"])}
        return result, self._subgroups("diagnosis", DIAGNOSIS_METRICS, (y, preds["model"]["model"]))

    def _thumbnails(self, rows: np.ndarray) -> np.ndarray:
        """:func:`baselines.image_thumbnails` of the images the model sees at ``rows``, ``(n_cohort, F)``;
        NaN in the other rows (never read)."""
        dataset = dataset_for(self.run, self.cohort, rows)
        thumbs = baselines.image_thumbnails(dataset[i]["image"] for i in range(len(dataset)))
        out = np.full((self.cohort.patient_keys.size, thumbs.shape[1]), np.nan)
        out[rows] = thumbs
        return out

    def _score_response(self) -> tuple[dict, dict]:
        rows = self.rows["response"]
        t = self.cohort.targets
        y = t.response[rows].astype(int)
        if rows.size < 2 or np.unique(y).size < 2:
            return {"n": int(rows.size), "skipped": "the test split needs responders and non-responders"}, {}
        preds = self._candidates("response", "response_prob")
        preds["baselines"] = {}
        X = self.cohort.X  # noqa: N806
        train = self.train[(t.treatment[self.train] >= 0) & np.isfinite(t.response[self.train])]
        if X.shape[1] and np.unique(t.response[train]).size == 2:
            self.say({"stage": "baseline", "what": "response logistic"})
            preds["baselines"]["logistic"] = baselines.fit_response(
                X, t.treatment, t.response, train, rows, len(t.treatment_names))
        late = self._late_fusion_inputs("response_prob", _logit)
        fit = self.val[(t.treatment[self.val] >= 0) & np.isfinite(t.response[self.val])]
        if late is not None and np.unique(t.response[fit]).size == 2:
            self.say({"stage": "baseline", "what": "response late fusion"})
            labels = np.nan_to_num(t.response).astype(int)  # the fitted and scored rows are all labelled
            preds["baselines"]["late_fusion"] = baselines.fit_diagnosis(late, labels, fit, rows, 2)[:, 1]
        self.response_plot = (y, preds["model"]["model"])
        self.notes.extend(one_call_note("response", (preds["model"]["model"] >= 0.5).astype(int), y.astype(int),
                                        ["non-responder", "responder"]))
        result = {"n": int(rows.size), "n_positive": int(y.sum()), **self._report(
            rows, RESPONSE_METRICS, lambda g, n: (y, preds[g][n]), preds["baselines"])}
        return result, self._subgroups("response", RESPONSE_METRICS, (y, preds["model"]["model"]),
                                       {"n_positive": y})

    def _score_survival(self) -> tuple[dict, dict]:
        rows = self.rows["survival"]
        t = self.cohort.targets
        time, event = t.time[rows], t.event[rows].astype(bool)
        train = rows if self.saved_training else self.train[np.isfinite(t.time[self.train])]
        train_time, train_event = t.time[train], t.event[train].astype(bool)
        if rows.size < 2 or not event.any() or not train_event.any():
            return {"n": int(rows.size), "skipped": "no event among the test or training patients"}, {}
        limit = min(time.max(), train_time.max())
        requested = np.asarray(self.run.config.eval.horizons_days, np.float64)
        horizons = requested[(requested >= time.min()) & (requested < limit)]
        for h in requested[~np.isin(requested, horizons)]:
            self.notes.append(f"survival horizon {h:g} days lies outside the test follow-up; not scored")
        grid = metrics.survival_time_grid(time, train_time=train_time)
        uno_tau = metrics.uno_tau(train_time, train_event)  # from the training patients: one for every resample
        fn = survival_metric_fn(train_time=train_time, train_event=train_event, horizons=horizons, grid=grid,
                                uno_tau=uno_tau)

        candidates: dict[str, dict[str, tuple[np.ndarray, Callable]]] = {"model": {}, "ablations": {},
                                                                          "baselines": {}}
        breslows = {"model": self.run.breslow, **self.ablation_breslow}
        for group in ("model", "ablations"):
            for name, out in self.outputs[group].items():
                risk = self._take(out, "survival").log_risk
                breslow = breslows.get(name, self.run.breslow)
                candidates[group][name] = (risk,
                                           lambda times, r=risk, b=breslow: b.predict_survival(r, times))
        X = self.cohort.X  # noqa: N806
        if self.run.config.tasks.survival.response_link:  # the model's log-risk reads the treatment: so do these
            X = np.column_stack([X, baselines.treatment_onehot(t.treatment, len(t.treatment_names))])  # noqa: N806
            self.notes.append("the survival baselines read the treatment (one-hot) too, as the model's "
                              "response_link does")
        if X.shape[1] and not self.saved_training:  # fitted on the run's training patients
            val = self.val[np.isfinite(t.time[self.val])]
            self.say({"stage": "baseline", "what": "coxnet"})
            cox = baselines.fit_coxnet(X, t.time, t.event, train, val, rows)
            self.say({"stage": "baseline", "what": "rsf"})
            rsf = baselines.fit_rsf(X, t.time, t.event, train, rows, seed=self.seed)
            candidates["baselines"] = {"coxnet": (cox.risk, cox.survival), "rsf": (rsf.risk, rsf.survival)}
        late = self._late_fusion_inputs("log_risk", lambda r: r)
        fit = self.val[np.isfinite(t.time[self.val])]
        if late is not None and t.event[fit].any():
            self.say({"stage": "baseline", "what": "survival late fusion"})
            # fitted on the validation rows (the single-modality models' training predictions are in-sample),
            # with a fixed penalty: choosing it on the rows it is fitted on would be in-sample too
            stack = baselines.fit_cox_stack(late, t.time, t.event, fit, rows)
            candidates["baselines"]["late_fusion"] = (stack.risk, stack.survival)

        def arrays_for(group: str, name: str) -> tuple:
            risk, surv = candidates[group][name]
            at_horizons = surv(horizons) if horizons.size else np.zeros((rows.size, 0))
            return time, event, risk, surv(grid), at_horizons

        result = {"n": int(rows.size), "n_events": int(event.sum()), "horizons_days": horizons.tolist(),
                  "uno_tau_days": uno_tau, "uno_censoring_floor": metrics.UNO_CENSORING_FLOOR,
                  **self._report(rows, fn, arrays_for, candidates["baselines"])}
        model_arrays = arrays_for("model", "model")
        result["calibration_without_follow_up"] = self._calibration_follow_up(time, event, model_arrays[4], horizons)
        self.survival_plot = (time, event, model_arrays[2], model_arrays[4], horizons)
        return result, self._subgroups("survival", fn, model_arrays, {"n_events": event})

    def _calibration_follow_up(self, time: np.ndarray, event: np.ndarray, surv_h: np.ndarray,
                               horizons: np.ndarray) -> dict[str, dict[str, int]]:
        """Per horizon, the model's risk bins (and their patients) left out of ``calibration_<h>d`` on all test
        patients because their follow-up ends before it (:func:`fusion.metrics.calibration_at_horizon`)."""
        out = {}
        for j, h in enumerate(horizons):
            try:
                cal = metrics.calibration_at_horizon(time, event, surv_h[:, j], horizon=float(h))
            except ValueError as error:
                self.notes.append(f"calibration_{_tag(h)}: {error}")
                continue
            out[_tag(h)] = {"bins": cal["n_bins_without_follow_up"], "patients": cal["n_without_follow_up"]}
            if cal["n_bins_without_follow_up"]:
                self.notes.append(f"calibration_{_tag(h)}: {cal['n_bins_without_follow_up']} of the model's risk "
                                  f"bins ({cal['n_without_follow_up']} patients) end follow-up before {h:g} days "
                                  "and are left out")
        return out

    # subgroups and figures -----------------------------------------------------------------------------
    def groups(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Boolean masks over ``rows`` for sex and age band at the index date (from the patients frame)."""
        patients = self.patients
        keys = self.cohort.patient_keys[rows]
        sex = patients["sex"].reindex(keys).astype("string").str.lower().fillna("").to_numpy(dtype=object)
        birth = pd.to_datetime(patients["birth_date"].reindex(keys), utc=True).to_numpy()
        age = np.asarray((self.cohort.index_date[rows].to_numpy() - birth) / np.timedelta64(1, "D") / 365.25,
                         dtype=np.float64)
        out = {"sex_female": sex == "female", "sex_male": sex == "male"}
        for name, lo, hi in AGE_BANDS:
            out[name] = (age >= lo) & (age < hi)
        return {k: np.asarray(v, dtype=bool) for k, v in out.items()}  # empty groups too: reported with n 0

    def figures(self, run_dir: Path, tasks: dict) -> list[str]:
        written = []
        comparison = comparison_panels(tasks)
        if comparison:
            plots.plot_comparison(run_dir / "comparison.png", comparison)
            written.append("comparison.png")
        panels = []
        if hasattr(self, "survival_plot"):
            time, event, risk, surv_h, horizons = self.survival_plot
            for j, h in enumerate(horizons):
                cal = _safe_dict(lambda j=j, h=h: metrics.calibration_at_horizon(time, event, surv_h[:, j],
                                                                                 horizon=float(h)))
                if cal:
                    panels.append({"title": f"Survival: event by {h:g} days", **cal})
            cuts = np.quantile(self.train_log_risk, [1 / 3, 2 / 3])
            plots.plot_km_groups(run_dir / "km_risk_groups.png", time, event, np.searchsorted(cuts, risk),
                                 ["low risk", "medium risk", "high risk"],
                                 title="Test patients by predicted risk (training tertiles)")
            written.append("km_risk_groups.png")
        curves = []
        if hasattr(self, "diagnosis_plot"):
            y, prob, classes = self.diagnosis_plot
            for c, name in enumerate(classes):
                if 0 < (y == c).sum() < len(y):
                    curves.append({"group": "diagnosis (one-vs-rest)", "label": name, "y": y == c,
                                   "score": prob[:, c], "auc": metrics.auroc(y == c, prob[:, c])})
            panels.append({"title": "Diagnosis: top-label reliability", **_reliability(
                prob.max(axis=1), (prob.argmax(axis=1) == y).astype(float))})
        if hasattr(self, "response_plot"):
            y, prob = self.response_plot
            curves.append({"group": "response", "label": "model", "y": y, "score": prob,
                           "auc": metrics.auroc(y, prob)})
            panels.append({"title": "Response: reliability", **_reliability(prob, y.astype(float))})
        if curves:
            plots.plot_roc(run_dir / "roc.png", curves)
            written.append("roc.png")
        if panels:
            plots.plot_calibration(run_dir / "calibration.png", panels)
            written.append("calibration.png")
        return sorted(written)


HEADLINE_METRICS = {"survival": ("c_index_harrell", "C-index (Harrell)"), "response": ("auroc", "AUROC"),
                    "diagnosis": ("auroc", "AUROC (macro one-vs-rest)")}


def comparison_panels(tasks: dict) -> list[dict]:
    """Per task of ``metrics.json``'s ``tasks``, its headline metric (:data:`HEADLINE_METRICS`) for the model,
    then the baselines, the single-modality models (``only_<m>``) and the model without each modality, in
    :func:`fusion.plots.plot_comparison`'s form; models without the metric are left out."""
    panels = []
    for task, (metric, label) in HEADLINE_METRICS.items():
        scores = tasks.get(task)
        if not scores or (scores.get("model") or {}).get(metric, {}).get("value") is None:
            continue
        ablations = sorted(scores.get("ablations", {}).items())
        named = [("model", "model", scores["model"]),
                 *((name, "baseline", s) for name, s in sorted(scores.get("baselines", {}).items())),
                 *((name, kind, s) for kind in ("only", "without") for name, s in ablations
                   if name.startswith(f"{kind}_"))]
        rows = [{"label": name, "kind": kind, "value": s[metric]["value"], "low": s[metric].get("ci_low"),
                 "high": s[metric].get("ci_high")}
                for name, kind, s in named if s and (s.get(metric) or {}).get("value") is not None]
        count = next((f"{k.replace('n_', '')} {scores[k]}" for k in ("n_events", "n_positive") if k in scores), None)
        title = f"{task}: n={scores.get('n')}" + (f", {count}" if count else "")
        panels.append({"title": title, "xlabel": f"{label} on the test patients, 95% bootstrap interval",
                       "rows": rows})
    return panels


def _log_prob(prob: np.ndarray) -> np.ndarray:
    return np.log(np.clip(prob, 1e-6, 1.0))


def _logit(prob: np.ndarray) -> np.ndarray:
    clipped = np.clip(prob, 1e-6, 1.0 - 1e-6)
    return np.log(clipped / (1.0 - clipped))


def _safe_dict(fn: Callable[[], dict]) -> dict | None:
    try:
        return fn()
    except ValueError:
        return None


def _reliability(prob: np.ndarray, hit: np.ndarray, n_bins: int = 10) -> dict:
    bins = np.minimum((prob * n_bins).astype(int), n_bins - 1)
    used = np.unique(bins)
    return {"predicted": [float(prob[bins == b].mean()) for b in used],
            "observed": [float(hit[bins == b].mean()) for b in used],
            "n": [int((bins == b).sum()) for b in used]}


def _merge(part: Outputs, here: np.ndarray, prior: Outputs, keys: np.ndarray,
           treatment: np.ndarray) -> Outputs:
    """Outputs for all ``keys``: ``part`` where ``here``, the ``prior`` row elsewhere."""
    def fill(values: np.ndarray | None, fallback: np.ndarray | None) -> np.ndarray | None:
        if values is None and fallback is None:
            return None
        shape = (len(keys), *(fallback.shape[1:]))
        full = np.empty(shape)
        full[here] = values
        full[~here] = fallback[0]
        return full

    response_all = fill(part.response_all, prior.response_all)
    response_prob = None
    if response_all is not None:
        picked = response_all[np.arange(len(keys)), np.clip(treatment, 0, None)]
        response_prob = np.where(treatment >= 0, picked, np.nan)
    return Outputs(keys, fill(part.diagnosis_prob, prior.diagnosis_prob), fill(part.log_risk, prior.log_risk),
                   response_all, response_prob)


def no_retrain_note(saved: list[str], modalities: list[str]) -> str:
    """The note of an evaluation with ``--no-retrain``: which ``only_<m>`` models were scored (``saved``, those an
    earlier evaluation saved) and which of ``modalities`` have none."""
    note = (f"--no-retrain: {', '.join(f'only_{m}' for m in saved)} scored with the model(s) an earlier evaluate "
            "saved in RUN/ablations")
    unsaved = [m for m in modalities if m not in saved]
    return note + (f"; {', '.join(unsaved)} {'has' if len(unsaved) == 1 else 'have'} no saved only_<m> model"
                   if unsaved else "")


def single_modality_dir(run: LoadedRun, modality: str) -> Path:
    """Where the run's ``only_<modality>`` model is saved: ``RUN/ablations/only_<m>``."""
    return run.run_dir / "ablations" / f"only_{modality}"


def single_modality_run(run: LoadedRun, frames, modality: str, *, lake_path: str,
                        progress: Progress | None = None) -> LoadedRun:
    """The run's config restricted to ``modality``, trained on the run's split (``RUN/ablations/only_<m>``);
    an existing one is loaded instead of retrained."""
    from fusion.train import fit

    out = single_modality_dir(run, modality)
    if (out / "model.safetensors").is_file():
        return load_run(out)
    others = [m for m in run.config.enabled_modalities() if m != modality]
    # one modality: no pretraining phase on a subset of modalities
    overrides = [*(f"modalities.{m}.enabled=false" for m in others), "train.pretrain_epochs=0"]
    read = run.config.tasks.diagnosis.modalities
    if read is not None and modality not in read:
        overrides.append("tasks.diagnosis.enabled=false")  # the diagnosis head does not read this modality
    survival_read = run.config.tasks.survival.modalities
    if survival_read is not None and modality not in survival_read:
        overrides.append("tasks.survival.modalities=null")  # a survival model of this modality alone
    config = apply_overrides(run.config, overrides)
    selection = FeatureSelection.from_dict(run.meta["feature_selection"])
    cohort = assemble_cohort(frames, config, selection=selection, assign=False)
    splits = run.meta["splits"]
    split = np.array([splits.get(k, "unseen") for k in cohort.patient_keys], dtype=object)
    with staged_dir(out) as tmp:
        fit(config, cohort.with_split(split), tmp, lake_path=lake_path,
            lake_hash=run.meta.get("lake_manifest_hash", "none"), progress=progress,
            tag={"ablation": f"only_{modality}"})
    return load_run(out)


def evaluate_run(run_dir: str | Path, lake: str | Path | None = None, *, retrain_ablations: bool = True,
                 progress: Progress | None = None, n_boot: int | None = None, out_dir: str | Path | None = None
                 ) -> dict:
    """Evaluate a run on its test split and write ``RUN/metrics.json`` and figures (see the module docstring).

    Args:
        run_dir: a run directory written by :func:`fusion.train.train`.
        lake: the lake (default: the lake recorded in the run, then ``data.lake`` of its config).
        retrain_ablations: also train one model per single modality (``only_<m>``) that no earlier evaluation
            saved; slow. Without it, only the saved ones are scored.
        progress: called with a dict (``stage``, ``what`` and training progress of ablations).
        n_boot: bootstrap resamples (default ``eval.n_boot`` of the run's config).
        out_dir: where ``metrics.json`` and the figures go (default ``run_dir``), e.g. an external
            validation's, to keep the run's own; created when missing.

    Returns:
        The metrics dict that was written.
    """
    run_dir = Path(run_dir)
    if out_dir is not None and Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise RunError(f"{out_dir} is a file: pass a folder (new or existing) for metrics.json and the plots")
    run = load_run(run_dir)
    lake_path = lake or run.meta.get("lake") or run.config.data.lake
    if lake_path is None or not Path(lake_path).is_dir():
        raise RunError(f"no lake to evaluate {run_dir} on: pass --lake (the run records "
                       f"{run.meta.get('lake')})")
    say = progress or (lambda _: None)
    say({"stage": "cohort"})
    frames = load_frames(lake_path)
    # another lake's labels may hold classes the run was never trained on: unknown here, and said in the notes
    cohort = run_cohort(run, frames, lenient=("diagnosis", "treatment"))
    split_seed = run.config.split.seed if run.config.split.seed is not None else run.config.train.seed
    n_boot = run.config.eval.n_boot if n_boot is None else int(n_boot)
    lake_hash = Lake(lake_path).manifest_hash()
    patients = frames.patients.drop_duplicates("patient_key").set_index("patient_key")
    ev = _Eval(run, cohort, patients, str(lake_path), lake_hash, n_boot, split_seed, say)
    ev.notes.extend(_outside_class_notes(cohort, run.config))
    if ev.test.size == 0:
        if "test" not in run.meta.get("splits", {}).values():
            raise RunError(f"run {run_dir} has no test patients (trained with split.test_fraction=0 or labels"
                           " without a test split): there is nothing to evaluate on; train with a test split")
        raise RunError(f"none of the test patients of {run_dir} is in lake {lake_path}; pass the run's lake")
    ev.predict_model()
    ev.single_modality_ablations(frames, train_missing=retrain_ablations)
    tasks, subgroups = ev.score()
    # figures and metrics.json are written into a hidden folder and renamed into the run at the end: an
    # evaluation that fails or is killed leaves the run's previous figures and metrics.json as they were
    out_dir = run_dir if out_dir is None else Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".evaluate-{uuid.uuid4().hex[:8]}.tmp"
    staging.mkdir()
    try:
        result = {
            "run": str(run_dir), "lake": str(Path(lake_path).resolve()), "created_at": datetime.now(UTC).isoformat(),
            "lake_manifest_hash": lake_hash, "lake_changed": lake_hash != run.meta.get("lake_manifest_hash"),
            "split_seed": split_seed, "n_boot": n_boot, "ci": 0.95, "n_test": int(ev.test.size),
            "external_validation": ev.external,
            "tasks": tasks, "subgroups": subgroups, "plots": ev.figures(staging, tasks), "notes": ev.notes,
        }
        (staging / METRICS_FILE).write_text(json.dumps(result, indent=1))
        for name in [*result["plots"], METRICS_FILE]:  # metrics.json last: it says the figures are current
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say({"stage": "done"})
    return result


def evaluate_folds(cv_dir: str | Path, lake: str | Path | None = None, *, retrain_ablations: bool = True,
                   progress: Progress | None = None, n_boot: int | None = None) -> dict:
    """Evaluate every fold of a ``--cv`` run (each ``fold_<k>/metrics.json`` as :func:`evaluate_run` writes it)
    and write ``CV/metrics.json``: ``{"run", "k", "folds", "created_at", "tasks": {task: {"n" (all folds; an
    external validation's: its patients, whom every fold scores), "model" | "baselines" | "ablations": {metric:
    {"value" (mean over folds), "sd", "folds" (per fold)}}}}, "lake_changed" (in any fold),
    "external_validation" (in every fold), "notes" (each fold's, prefixed with its name, and the tasks it
    skipped)}``.
    Each fold is tested on its own patients, so the per-fold values are what to compare."""
    cv_dir = Path(cv_dir)
    folds = sorted((p for p in cv_dir.glob("fold_*") if p.is_dir()), key=lambda p: int(p.name.split("_")[-1]))
    if not folds:
        raise RunError(f"{cv_dir} has no fold_<k> folders: evaluate a --cv run, or a single run directory")
    say = progress or (lambda _: None)
    results = []
    for fold in folds:
        say({"stage": "fold", "what": fold.name})
        results.append(evaluate_run(fold, lake, retrain_ablations=retrain_ablations, progress=progress,
                                    n_boot=n_boot))
    # on a lake of patients no fold saw (external validation), every fold scores the same patients
    external = all(r.get("external_validation") for r in results)
    tasks = {}
    for task in results[0]["tasks"]:
        blocks = [r["tasks"].get(task) or {} for r in results]
        out: dict = {"n": (max if external else sum)(int(b.get("n", 0)) for b in blocks),
                     "model": _across_folds([b.get("model") for b in blocks])}
        for group in ("baselines", "ablations"):
            names = sorted({name for b in blocks for name in (b.get(group) or {})})
            out[group] = {name: _across_folds([(b.get(group) or {}).get(name) for b in blocks]) for name in names}
        tasks[task] = out
    result = {"run": str(cv_dir), "k": len(folds), "folds": [f.name for f in folds],
              "created_at": datetime.now(UTC).isoformat(), "tasks": tasks,
              "lake_changed": any(r.get("lake_changed") for r in results), "external_validation": external,
              "notes": _fold_notes(folds, results)}
    temporary = cv_dir / f".{METRICS_FILE}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        temporary.write_text(json.dumps(result, indent=1))
        os.replace(temporary, cv_dir / METRICS_FILE)
    finally:
        temporary.unlink(missing_ok=True)
    return result


def _outside_class_notes(cohort: Cohort, config: RunConfig) -> list[str]:
    """One note per target read by an enabled task whose labels hold values outside the run's classes."""
    reads = {"diagnosis": config.tasks.diagnosis.enabled, "treatment": config.tasks.response.enabled}
    scored = {"diagnosis": "diagnosis", "treatment": "response"}
    return [f"{sum(counts.values())} patient(s) have a {what} label the run was not trained on "
            f"({', '.join(sorted(counts))}): unknown here, so their {scored[what]} is not scored"
            for what, counts in cohort.targets.outside_classes.items() if reads[what]]


def _fold_notes(folds: list[Path], results: list[dict]) -> list[str]:
    """Each fold's notes, and one per task a fold could not score (its mean is over the other folds)."""
    notes = [f"{fold.name}: {note}" for fold, r in zip(folds, results, strict=True) for note in r["notes"]]
    return notes + [f"{fold.name}: {task} not scored ({block['skipped']}); its mean and SD are over the other folds"
                    for fold, r in zip(folds, results, strict=True) for task, block in r["tasks"].items()
                    if "skipped" in block]


def _across_folds(scores: list[dict | None]) -> dict:
    """``{metric: {"value": mean, "sd", "folds": [value per fold or None]}}`` of per-fold metric dicts, the
    metrics in the folds' order (``td_auc_365d`` before ``td_auc_1095d``)."""
    metrics = list(dict.fromkeys(m for s in scores for m, v in (s or {}).items()
                                 if isinstance(v, dict) and "value" in v))
    out = {}
    for metric in metrics:
        per_fold = [((s or {}).get(metric) or {}).get("value") for s in scores]
        known = [v for v in per_fold if v is not None]
        out[metric] = {"value": float(np.mean(known)) if known else None,
                       "sd": float(np.std(known, ddof=1)) if len(known) > 1 else None, "folds": per_fold}
    return out
