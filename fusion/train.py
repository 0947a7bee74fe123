"""Training: cohort -> normalised batches -> FusionModel, early stopping on a validation metric, run directory.

``train(config, lake, out)`` is seeded and reproducible on a given machine: ``torch.manual_seed``, a seeded
shuffling generator and deterministic algorithms where torch has them (same seed -> identical weights on CPU).
Tabular features are normalised with training-split statistics only; the statistics go into ``run.json``.
Early stopping and the kept epoch follow :func:`selection_score` on the validation split (the mean of the
enabled tasks' C-index / AUROC), not the validation loss: the loss and the ranking need not peak together,
and a loss minimum can sit on a weak epoch. After training, the best epoch's weights are kept and a Breslow
baseline hazard is fitted on the training split, so ``S(t | x) = S0(t) ** exp(log_risk)`` can be computed
from a loaded run.

With ``train.pretrain_modalities`` and ``train.pretrain_epochs``, training runs in two phases, as
PathomicFusion-style codebases train unimodal networks before fusing them: first the model sees only those
modalities (patients without them sit out; the others are marked absent at the fusion), early-stopped on
validation patients who have them; then all modalities, from that phase's best weights with a fresh optimizer.
``history.csv`` has a ``phase`` column (``pretrain`` / ``train``); ``best_epoch`` and ``epochs_run`` count the
second phase.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from fusion.augment import augment_images
from fusion.baselines import coxnet_coefficients
from fusion.cohort import (
    COHORT_RULES,
    Cohort,
    CohortError,
    LakeFrames,
    assemble_cohort,
    fold_cohort,
    read_frames,
)
from fusion.config import RunConfig
from fusion.data import (
    MIN_REFERENCE_PATIENTS,
    CohortDataset,
    Normalizer,
    collate,
    drop_modalities,
    mean_image,
    move_batch,
)
from fusion.losses import CoxLoss, multitask_loss
from fusion.metrics import accuracy, auroc, harrell_c_index, multiclass_auroc
from fusion.models import BreslowEstimator, FusionModel, RiskOffset
from fusion.predict import save_reference, training_outputs
from fusion.run import build_model, check_model_arguments, json_safe, load_run, save_run, staged_dir
from fusion.splits import curated_test, kfold_assignments, strata_for
from ingest.lake import Lake
from ingest.schema import SCHEMA_VERSION

Progress = Callable[[dict], None]
TASKS = ("diagnosis", "survival", "response")
# modality -> (the frame it comes from, the command that puts it in a lake)
MODALITY_INGEST = {"genomics": ("gene_status", "ingest variants"), "image": ("images", "ingest images"),
                   "ehr": ("patients", "ingest fhir")}
MAX_LOG_RISK = 80.0  # |log-risk| beyond this overflows exp() in float32: the training diverged


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; otherwise ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device={name!r} but CUDA is not available; use auto or cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"train.device={name!r} but MPS (Apple GPUs) is not available; use auto or cpu")
    return device


@contextmanager
def seeded(seed: int, *, deterministic: bool = True) -> Iterator[None]:
    """Seed Python, numpy and torch and, inside the block, ask torch for deterministic algorithms (a warning
    where an operation has none); torch's previous settings are restored on exit.

    Two torch settings stay off whatever ``deterministic`` says, for speed (210 patients of the synthetic
    cohort, 64 px CTs): cuDNN's autotuner, because the image batches change shape from batch to batch (slices
    per patient) and it re-tuned every one of them (on an NVIDIA H200, 7.7 s per epoch instead of 0.25 s); and
    deterministic mode's NaN fill of every new tensor, a debugging aid that took 12% of a profiled CPU epoch.
    """
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.benchmark, torch.utils.deterministic.fill_uninitialized_memory)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark = previous[2]
        torch.utils.deterministic.fill_uninitialized_memory = previous[3]


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Let torch use ``threads`` CPU threads inside the block (None: leave its setting); restored on exit."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def model_spec(config: RunConfig, cohort: Cohort) -> dict:
    """What :func:`fusion.run.build_model` needs to know about the cohort (see there)."""
    modalities: dict[str, dict] = {}
    for name in config.enabled_modalities():
        if name == "image":
            kwargs = config.modalities["image"].encoder_kwargs
            size = config.data.images.image_size or _first_image_size(cohort)
            modalities[name] = {"kind": "image", "in_chans": int(kwargs.get("in_chans", 1)), "image_size": size}
        else:
            modalities[name] = {"kind": "tabular", "n_features": len(cohort.blocks[name].names)}
    tasks = config.tasks
    n_classes = len(cohort.targets.diagnosis_classes) if tasks.diagnosis.enabled else None
    if n_classes is not None and n_classes < 2:
        raise CohortError(f"the diagnosis task needs >= 2 classes, got {cohort.targets.diagnosis_classes}; "
                          "set data.targets.diagnosis_classes or disable tasks.diagnosis")
    n_treatments = len(cohort.targets.treatment_names) if tasks.response.enabled else None
    if n_treatments == 0:
        raise CohortError("the response task needs treatments; set data.targets.treatments/treatment_map "
                          "or disable tasks.response")
    return {"modalities": modalities, "n_classes": n_classes, "survival": tasks.survival.enabled,
            "n_treatments": n_treatments}


def _first_image_size(cohort: Cohort) -> int:
    refs = cohort.images
    rows = np.flatnonzero(refs.present)
    if rows.size == 0 or cohort.image_loader is None:
        raise CohortError("the image modality is enabled but no patient has an image before the index date; "
                          "disable modalities.image or check data.images.modality")
    array = cohort.image_loader(str(refs.tensor_file[rows[0]]), int(refs.tensor_row[rows[0]]))
    return int(np.asarray(array).shape[-1])


def _check_labels(config: RunConfig, cohort: Cohort, rows: np.ndarray) -> None:
    t, tasks = cohort.targets, config.tasks
    checks = [(tasks.diagnosis.enabled, (t.diagnosis[rows] >= 0).any(), "diagnosis", "a known diagnosis"),
              (tasks.survival.enabled, t.event[rows][~np.isnan(t.time[rows])].any(), "survival", "an event"),
              (tasks.response.enabled, (~np.isnan(t.response[rows])).any(), "response", "a known response")]
    aux = tasks.survival.auxiliary_endpoint
    if tasks.survival.enabled and aux is not None:
        aux_time, aux_event = getattr(t, f"{aux}_time")[rows], getattr(t, f"{aux}_event")[rows]
        checks.append((True, aux_event[~np.isnan(aux_time)].any(), "survival.auxiliary_endpoint",
                       f"a {aux} event"))
    for enabled, ok, task, what in checks:
        if enabled and not ok:
            hint = ""
            if task == "response" and t.responses_without_treatment:
                hint = (f" ({t.responses_without_treatment} patient(s) have a response but no treatment, and a"
                        " response counts only with the treatment it answers: add a treatment column to the"
                        " labels, or map the drugs in data.targets.treatment_map)")
            raise CohortError(f"tasks.{task} is enabled but no training patient has {what}{hint}; "
                              f"disable tasks.{task} or add labels")


def _loader(dataset: CohortDataset, config: RunConfig, *, shuffle: bool, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=config.train.batch_size, shuffle=shuffle, collate_fn=collate,
                      num_workers=config.train.num_workers, generator=generator)


@torch.no_grad()
def predict_outputs(model: FusionModel, loader: DataLoader, device: torch.device,
                    drop: list[str] | tuple = ()) -> tuple[dict, dict]:
    """Model outputs and targets over a loader (the modalities in ``drop`` hidden), concatenated on the CPU
    (``rows`` = cohort rows)."""
    model.eval()
    outs: dict[str, list] = {}
    targets: dict[str, list] = {}
    for batch in loader:
        out = model(move_batch(drop_modalities(batch, drop), device))
        for key in ("diagnosis_logits", "log_risk", "response_logits"):
            if key in out:
                outs.setdefault(key, []).append(out[key].float().cpu())
        for key, value in {**batch["targets"], "rows": batch["rows"]}.items():
            targets.setdefault(key, []).append(value)
    return ({k: torch.cat(v) for k, v in outs.items()}, {k: torch.cat(v) for k, v in targets.items()})


def evaluate_outputs(outputs: dict, targets: dict, weights: dict[str, float]) -> dict[str, float]:
    """Loss (full-set Cox), Harrell's C-index, diagnosis accuracy and macro AUROC, and response AUROC (NaN
    where not computable, e.g. a single class)."""
    loss, parts = multitask_loss(outputs, targets, weights)
    result = {"loss": float(loss), **{f"loss_{k}": v for k, v in parts.items()},
              "c_index": math.nan, "accuracy": math.nan, "auroc": math.nan, "response_auroc": math.nan}
    if "log_risk" in outputs:
        time_, event = targets["time"].numpy(), targets["event"].numpy()
        keep = ~np.isnan(time_)
        if event[keep].any():  # NaN when no pair is comparable (a few patients): not a reason to lose the run
            result["c_index"] = _or_nan(lambda: harrell_c_index(time_[keep], event[keep],
                                                                outputs["log_risk"].numpy()[keep]))
    if "diagnosis_logits" in outputs:
        labels = targets["diagnosis"].numpy()
        keep = labels >= 0
        if keep.any():
            pred = outputs["diagnosis_logits"].argmax(1).numpy()
            result["accuracy"] = accuracy(labels[keep], pred[keep])
            prob = torch.softmax(outputs["diagnosis_logits"], 1).numpy()
            result["auroc"] = _or_nan(lambda: multiclass_auroc(labels[keep], prob[keep]))
    if "response_logits" in outputs:
        labels = targets["response"].numpy()
        keep = ~np.isnan(labels) & (labels >= 0)
        scores = outputs["response_logits"].numpy()
        result["response_auroc"] = _or_nan(lambda: auroc(labels[keep].astype(int), scores[keep]))
    return result


def _or_nan(fn: Callable[[], float]) -> float:
    try:
        return float(fn())
    except ValueError:
        return math.nan


SELECTION_METRICS = {"survival": "c_index", "diagnosis": "auroc", "response": "response_auroc"}


def selection_score(metrics: dict[str, float], weights: dict[str, float]) -> float:
    """What early stopping maximises: the task-weighted mean of the enabled tasks' validation metrics
    (survival: Harrell's C; diagnosis: macro AUROC; response: AUROC), over those that are computable;
    minus the validation loss when none is."""
    pairs = [(weights[task], metrics[key]) for task, key in SELECTION_METRICS.items()
             if weights.get(task) and math.isfinite(metrics.get(key, math.nan))]
    if not pairs:
        return -metrics["loss"]
    return sum(w * v for w, v in pairs) / sum(w for w, _ in pairs)


def fit(config: RunConfig, cohort: Cohort, run_dir: Path, *, lake_path: str | Path | None = None,
        lake_hash: str = "none", progress: Progress | None = None, tag: dict | None = None) -> dict:
    """Train one model on ``cohort``'s train split, early-stopping on val, and write ``run_dir``. With
    ``tasks.survival.coxnet_offset`` the offset is fitted first (:func:`fit_offset`).

    Returns:
        Summary: ``best_epoch``, ``epochs_run``, the val and test (when there is one) metrics and, with the
        offset, ``coxnet_offset`` (see :func:`fit_offset`).
    """
    with seeded(config.train.seed, deterministic=config.train.deterministic), torch_threads(config.train.threads):
        summary = _fit(config, cohort, run_dir, lake_path=lake_path, lake_hash=lake_hash, progress=progress, tag=tag)
        # the training patients' outputs, for predict's risk percentile and evaluate's prior, also on a lake
        # without them (new patients, another site)
        run = load_run(run_dir)
        save_reference(run, training_outputs(run, cohort), lake_hash)
    return summary


def _fit(config: RunConfig, cohort: Cohort, run_dir: Path, *, lake_path: str | Path | None, lake_hash: str,
         progress: Progress | None, tag: dict | None) -> dict:
    tcfg = config.train
    device = resolve_device(tcfg.device)
    train_rows, val_rows, test_rows = (cohort.indices(s) for s in ("train", "val", "test"))
    if train_rows.size < 2 or val_rows.size < 2:
        raise CohortError(f"need >= 2 training and >= 2 validation patients, got {train_rows.size} and "
                          f"{val_rows.size} of the cohort's {len(cohort)}; check split.val_fraction and the labels'"
                          " split column, or widen the cohort (data.index.cancer_codes)")
    _check_labels(config, cohort, train_rows)
    spec = model_spec(config, cohort)
    normalizer = Normalizer.fit(cohort, train_rows)
    image_kw = {"in_chans": spec["modalities"].get("image", {}).get("in_chans", 1),
                "max_slices": config.data.images.max_slices, "image_size": config.data.images.image_size}
    aux = config.tasks.survival.auxiliary_endpoint if config.tasks.survival.enabled else None
    datasets = {name: CohortDataset(cohort, rows, normalizer, aux_endpoint=aux if name == "train" else None,
                                    **image_kw)
                for name, rows in (("train", train_rows), ("val", val_rows), ("test", test_rows))}
    train_loader = _loader(datasets["train"], config, shuffle=True, seed=tcfg.seed)
    eval_loaders = {name: _loader(datasets[name], config, shuffle=False, seed=tcfg.seed)
                    for name in ("train", "val", "test") if len(datasets[name])}
    model = build_model(config, spec)
    offset_info = (None if model.offset is None
                   else fit_offset(model.offset, cohort, datasets["train"].tabular, train_rows, val_rows))
    model = model.to(device)
    weights = {task: (getattr(config.tasks, task).weight if getattr(config.tasks, task).enabled else 0.0)
               for task in TASKS}
    if aux is not None:  # the training batches carry the auxiliary endpoint; validation scores the main one
        weights["survival_aux"] = config.tasks.survival.auxiliary_weight
    history: list[dict] = []
    if tcfg.pretrain_modalities and tcfg.pretrain_epochs:
        _pretrain(model, config, cohort, normalizer, {"train": train_rows, "val": val_rows}, weights, device,
                  history, aux=aux, image_kw=image_kw, progress=progress, tag=tag)
    best_score, best_loss, best_epoch = _train_phase(
        model, train_loader, eval_loaders["val"], weights, config, device, history, epochs=tcfg.epochs, drop=(),
        phase="train", progress=progress, tag=tag)

    breslow = None
    if spec["survival"]:
        out, tgt = predict_outputs(model, eval_loaders["train"], device)
        time_, event = tgt["time"].numpy(), tgt["event"].numpy()
        keep = ~np.isnan(time_)
        log_risk = out["log_risk"].numpy()[keep]
        with np.errstate(all="ignore"):  # a diverged model is reported just below
            fitted = BreslowEstimator().fit(log_risk, time_[keep], event[keep])
        if not (np.isfinite(fitted.cum_baseline_hazard).all() and np.abs(log_risk).max() <= MAX_LOG_RISK):
            raise FloatingPointError(
                f"training diverged: the best epoch's log-risks reach {np.abs(log_risk).max():.3g} (a hazard ratio"
                f" of e^{MAX_LOG_RISK:.0f} and beyond does not fit in float32), so no survival curve can be"
                f" estimated; lower train.lr (now {tcfg.lr:g}) or check the input features")
        breslow = fitted.to_dict()
    metrics = {"val": evaluate_outputs(*predict_outputs(model, eval_loaders["val"], device), weights)}
    if "test" in eval_loaders:
        metrics["test"] = evaluate_outputs(*predict_outputs(model, eval_loaders["test"], device), weights)
    summary = {"best_epoch": best_epoch, "epochs_run": sum(r["phase"] == "train" for r in history),
               "best_val_loss": best_loss, "best_val_score": best_score, **metrics}
    if offset_info is not None:
        summary["coxnet_offset"] = offset_info

    meta = {
        "schema_version": SCHEMA_VERSION,
        "created_at": datetime.now(UTC).isoformat(),
        "lake": None if lake_path is None else str(Path(lake_path).resolve()),  # valid from any directory
        "lake_manifest_hash": lake_hash,
        "device": str(device),
        "spec": spec,
        "modalities": config.enabled_modalities(),
        "feature_names": {n: b.names for n, b in cohort.blocks.items()},
        "feature_descriptions": {n: b.descriptions for n, b in cohort.blocks.items()},
        "feature_selection": cohort.selection.to_dict(),
        "normalization": normalizer.to_dict(),
        "diagnosis_classes": cohort.targets.diagnosis_classes,
        "treatment_names": cohort.targets.treatment_names,
        "survival_endpoint": config.data.targets.survival_endpoint,
        "splits": dict(zip(cohort.patient_keys.tolist(), cohort.split.tolist(), strict=True)),
        "cohort_summary": cohort.summary,
        "cohort_rules": COHORT_RULES,
        "breslow": breslow,
        "summary": summary,
    }
    reference = mean_image(datasets["train"])
    imaged = 0 if cohort.images is None else int(cohort.images.present[train_rows].sum())
    if reference is None and imaged:
        meta["notes"] = [f"no reference image saved: {imaged} training patient(s) have an image, fewer than "
                         f"{MIN_REFERENCE_PATIENTS} (their mean could show one patient's image); predict's image "
                         "map is HiResCAM"]
    save_run(run_dir, model.cpu(), config, meta, reference_image=reference)
    _write_history(run_dir / "history.csv", history)
    _plot_curves(run_dir / "curves.png", history)
    return summary


def _pretrain(model: FusionModel, config: RunConfig, cohort: Cohort, normalizer: Normalizer,
              rows: dict[str, np.ndarray], weights: dict[str, float], device: torch.device, history: list[dict], *,
              aux: str | None, image_kw: dict, progress: Progress | None, tag: dict | None) -> None:
    """The first phase of ``train.pretrain_modalities``: the model sees only those modalities (the others are
    marked absent; ``rows["train"]`` / ``rows["val"]`` without any of them sit out), early-stopped on
    validation; it is left at that phase's best epoch."""
    pretrain = config.train.pretrain_modalities
    present = cohort.present()
    shown = {name: r[np.logical_or.reduce([present[m][r] for m in pretrain])] for name, r in rows.items()}
    if shown["train"].size < 2 or shown["val"].size == 0:
        raise CohortError(f"train.pretrain_modalities {pretrain}: {shown['train'].size} training and "
                          f"{shown['val'].size} validation patients have them; pretraining needs >= 2 and >= 1 "
                          "(set train.pretrain_epochs=0)")
    datasets = {name: CohortDataset(cohort, r, normalizer, aux_endpoint=aux if name == "train" else None, **image_kw)
                for name, r in shown.items()}
    seed = config.train.seed
    _train_phase(model, _loader(datasets["train"], config, shuffle=True, seed=seed),
                 _loader(datasets["val"], config, shuffle=False, seed=seed), weights, config, device, history,
                 epochs=config.train.pretrain_epochs, drop=[m for m in model.encoders if m not in pretrain],
                 phase="pretrain", progress=progress, tag=tag)


def _train_phase(model: FusionModel, train_loader: DataLoader, val_loader: DataLoader, weights: dict[str, float],
                 config: RunConfig, device: torch.device, history: list[dict], *, epochs: int, drop: list[str] | tuple,
                 phase: str, progress: Progress | None, tag: dict | None) -> tuple[float, float, int]:
    """Train ``model`` for up to ``epochs`` epochs with the modalities in ``drop`` hidden, early-stopping on the
    validation score; leave it at its best epoch. Appends one record per epoch to ``history``.

    Returns:
        ``(best validation score, its validation loss, its epoch)`` (epochs count within the phase).
    """
    tcfg = config.train
    optimizer = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    cox = CoxLoss(config.tasks.cox_queue_size)
    augment_rng = torch.Generator().manual_seed(tcfg.seed + 1)  # its own stream: "none" changes no other draw
    best_score, best_loss, best_epoch, best_state, stale = -math.inf, math.inf, 0, None, 0
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        model.train()
        cox.reset()
        total, n_seen, sums = 0.0, 0, dict.fromkeys(weights, 0.0)
        for batch in train_loader:  # loading, collating and augmenting count in train_seconds
            if "image" in batch["modalities"]:
                batch["modalities"]["image"] = augment_images(batch["modalities"]["image"], tcfg.image_augment,
                                                              augment_rng)
            batch = move_batch(drop_modalities(batch, drop), device)
            loss, parts = multitask_loss(model(batch), batch["targets"], weights, cox=cox)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if tcfg.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.max_grad_norm)
            optimizer.step()
            b = batch["rows"].shape[0]
            # train_loss sums the same task losses as val_loss; the auxiliary endpoint's is logged on its own
            aux_part = weights.get("survival_aux", 0.0) * parts.get("survival_aux", 0.0)
            total, n_seen = total + (loss.item() - aux_part) * b, n_seen + b
            for k, v in parts.items():
                sums[k] += v * b
        train_seconds = time.perf_counter() - started
        val = evaluate_outputs(*predict_outputs(model, val_loader, device, drop=drop), weights)
        score = selection_score(val, weights)
        record = {"epoch": epoch, "phase": phase, "train_loss": total / n_seen, "train_samples": n_seen,
                  "train_seconds": train_seconds,
                  **{f"train_loss_{k}": sums[k] / n_seen for k in weights if weights[k]},
                  **{f"val_{k}": v for k, v in val.items()}, "val_score": score,
                  "seconds": time.perf_counter() - started}
        history.append(record)
        if progress is not None:
            progress({**(tag or {}), **record, "epochs": epochs})
        if not math.isfinite(record["train_loss"]):
            raise FloatingPointError(f"training loss became {record['train_loss']} at epoch {epoch} ({phase}); "
                                     "lower train.lr or check the input features")
        if score > best_score + 1e-6:
            best_score, best_loss, best_epoch, stale = score, val["loss"], epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= tcfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return best_score, best_loss, best_epoch


def fit_offset(offset: RiskOffset, cohort: Cohort, tabular: dict[str, np.ndarray], train_rows: np.ndarray,
               val_rows: np.ndarray) -> dict:
    """Set ``offset``'s weights to an elastic-net Cox model (:func:`fusion.baselines.coxnet_coefficients`) of
    the inputs exactly as the model sees them: per modality, the normalised features (``tabular``, as
    :class:`CohortDataset` holds them: ``(N, F)``, NaN = missing) with 0 where missing, and their observed
    flags, all 0 for a patient without the modality. Returns ``{"alpha", "nonzero", "features"}``."""
    blocks = []
    for name in offset.n_features:
        x = tabular[name].astype(np.float64)
        observed = ~np.isnan(x)
        design = np.hstack([np.where(observed, x, 0.0), observed]) * cohort.blocks[name].present[:, None]
        blocks.append((name, design))
    design = np.hstack([d for _, d in blocks])
    t = cohort.targets
    train_rows, val_rows = (r[np.isfinite(t.time[r])] for r in (train_rows, val_rows))
    coef, alpha = coxnet_coefficients(design, t.time, t.event, train_rows, val_rows)
    splits = np.cumsum([d.shape[1] for _, d in blocks])[:-1]
    offset.set_weights({name: torch.from_numpy(w) for (name, _), w in zip(blocks, np.split(coef, splits),
                                                                          strict=True)})
    return {"alpha": alpha, "nonzero": int(np.count_nonzero(coef)), "features": int(coef.size)}


def _write_history(path: Path, history: list[dict]) -> None:
    fields = list(dict.fromkeys(k for row in history for k in row))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(history)


def _plot_curves(path: Path, history: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = list(range(1, len(history) + 1))  # counted across phases
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot(epochs, [h["train_loss"] for h in history], label="train")
    axes[0].plot(epochs, [h["val_loss"] for h in history], label="validation")
    axes[0].set(xlabel="epoch", ylabel="loss", title="Total loss")
    axes[0].legend()
    for key, label in (("val_c_index", "val C-index"), ("val_auroc", "val diagnosis AUROC"),
                       ("val_response_auroc", "val response AUROC"), ("val_score", "val score")):
        values = [h.get(key, math.nan) for h in history]
        if any(math.isfinite(v) for v in values):
            axes[1].plot(epochs, values, label=label)
    axes[1].set(xlabel="epoch", title="Validation metrics")
    if axes[1].lines:
        axes[1].legend()
    pretrained = sum(h.get("phase") == "pretrain" for h in history)
    if pretrained:
        for ax in axes:
            ax.axvline(pretrained + 0.5, color="grey", linestyle="--", linewidth=1)
        axes[0].set_title(f"Total loss\n(epochs 1-{pretrained}: pretraining phase)", fontsize=10)
        axes[1].set_title("Validation metrics\n(left of the dashed line: on the pretraining modalities alone)",
                          fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _lake_hash(lake_path: str | Path | None) -> str:
    return Lake(lake_path).manifest_hash() if lake_path is not None and Path(lake_path).is_dir() else "none"


def train(config: RunConfig, lake_path: str | Path | None, out_dir: str | Path, *,
          progress: Progress | None = None, frames: LakeFrames | None = None, cv: int | None = None) -> Path:
    """Train the model of ``config`` on the lake and write the run directory ``out_dir``.

    Args:
        config: the run configuration.
        lake_path: the lake (default ``config.data.lake``).
        out_dir: the run directory to create (must not exist or be empty).
        progress: called after every epoch with a dict (epoch, epochs, losses, metrics, fold).
        frames: use these frames instead of reading the lake (tests, in-memory cohorts).
        cv: K-fold cross-validation: ``out_dir/fold_<k>/`` per fold plus ``summary.json`` and ``summary.csv``.

    Returns:
        ``out_dir``.
    """
    check_model_arguments(config)  # before reading the lake
    lake_path = lake_path or config.data.lake
    if frames is None:
        frames = read_frames(lake_path)
    cohort = assemble_cohort(frames, config)
    empty = [name for name, present in cohort.present().items() if not present.any()]
    absent = [name for name in empty if name in MODALITY_INGEST and getattr(frames, MODALITY_INGEST[name][0]).empty]
    if absent:
        raise CohortError("the lake has no " + " and no ".join(absent) + " data; ingest it ("
                          + ", ".join(f"`tumorboard {MODALITY_INGEST[name][1]}`" for name in absent)
                          + ") or leave the modality out (" + ", ".join(f"--set modalities.{name}.enabled=false"
                                                                      for name in absent) + ")")
    if empty:
        raise CohortError(f"no patient has {' or '.join(empty)} data dated before the index date + "
                          f"data.index.grace_days ({config.data.index.grace_days:g} days); check the dates (images "
                          "and samples taken on the day of diagnosis need grace_days: 1) or disable the modality")
    lake_hash = _lake_hash(lake_path)
    out_dir = Path(out_dir)
    with staged_dir(out_dir) as tmp:
        if cv is None:
            fit(config, cohort, tmp, lake_path=lake_path, lake_hash=lake_hash, progress=progress)
        else:
            _cross_validate(config, frames, cohort, tmp, cv, lake_path=lake_path, lake_hash=lake_hash,
                            progress=progress)
    return out_dir


def _cross_validate(config: RunConfig, frames: LakeFrames, cohort: Cohort, out: Path, k: int, *,
                    lake_path: str | Path | None, lake_hash: str, progress: Progress | None) -> None:
    """K folds of ``cohort``'s patients; each fold chooses its columns on its own training patients. Patients
    whose curated split (labels) is ``test`` stay out of every fold: they are the held-out set."""
    seed = config.train.seed if config.split.seed is None else config.split.seed
    fixed = frames.labels.drop_duplicates("patient_key").set_index("patient_key")["split"]
    held_out = curated_test(fixed.reindex(cohort.patient_keys).to_numpy())
    keys = cohort.patient_keys[~held_out]
    folds = kfold_assignments(keys, strata_for(cohort.targets, config.split.stratify)[~held_out], k,
                              val_fraction=config.split.val_fraction, seed=seed)
    rows = []
    for i, split in enumerate(folds):
        fold_dir = out / f"fold_{i}"
        fold_dir.mkdir()
        summary = fit(config, fold_cohort(frames, config, keys, split), fold_dir,
                      lake_path=lake_path, lake_hash=lake_hash, progress=progress, tag={"fold": i, "folds": k})
        rows.append({"fold": i, "best_epoch": summary["best_epoch"], "best_val_loss": summary["best_val_loss"],
                     **{f"test_{m}": v for m, v in summary["test"].items()}})
    _write_history(out / "summary.csv", rows)
    metrics = [key for key in rows[0] if key.startswith("test_")]
    aggregate = {m: {"mean": float(np.nanmean([r[m] for r in rows])), "sd": float(np.nanstd([r[m] for r in rows],
                                                                                           ddof=1))}
                 for m in metrics if any(math.isfinite(r[m]) for r in rows)}
    (out / "summary.json").write_text(json.dumps(json_safe({"k": k, "folds": rows, "aggregate": aggregate,
                                                            "held_out_test_patients": int(held_out.sum())}), indent=1,
                                                  allow_nan=False))
