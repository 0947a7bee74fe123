"""Run directories: build the model of a run, save it, and load it back.

A run directory holds::

    model.safetensors   the weights (safetensors)
    config.yaml         the resolved configuration
    run.json            metadata: versions, lake manifest hash, model spec, feature names and selection,
                        normalisation statistics, classes, treatments, split per patient key, Breslow baseline,
                        notes (why no reference image was saved)
    reference_image.safetensors   (runs with images of at least fusion.data.MIN_REFERENCE_PATIENTS training
                        patients) their mean input image, the baseline of the image attribution
                        (fusion.explain.image_attribution)
    history.csv         per epoch: losses, validation metrics, training samples and seconds (train_seconds:
                        the training pass with data loading; seconds: the whole epoch with validation)
    curves.png          training curves

Runs are written into a hidden temporary sibling folder and renamed at the end (:func:`staged_dir`), so a
failed run leaves nothing half-written.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

import fusion.models  # noqa: F401  (fills the encoder and fusion registries)
from fusion.config import RunConfig, dump_config, load_config
from fusion.models import BreslowEstimator, FusionModel, HeadsConfig, RiskOffset, create_encoder, create_fusion
from fusion.models.registry import check_arguments, encoder_entry, encoder_kind, fusion_entry, unknown_arguments

# 2: features are dated strictly before index + grace_days, and tasks.diagnosis.modalities exists; a format-1
# run would be fed features built by other rules.
RUN_FORMAT_VERSION = "2"
# what inference reads from run.json (a file without them was cut short or edited by hand)
RUN_META_KEYS = ("spec", "feature_names", "feature_selection", "normalization", "splits", "diagnosis_classes",
                 "treatment_names")
MODEL_FILE, CONFIG_FILE, META_FILE = "model.safetensors", "config.yaml", "run.json"
REFERENCE_IMAGE_FILE = "reference_image.safetensors"
REFERENCE_RISK_FILE = "reference_risk.json"  # a TrainingReference: the training patients' log-risks and prior
_PACKAGES = ("tumorboard", "torch", "timm", "numpy", "pandas", "pyarrow", "scikit-survival", "torchsurv",
             "safetensors", "pydantic")


class RunError(RuntimeError):
    """A run directory is missing, incomplete or inconsistent."""


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages a run depends on ("not installed" when absent)."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def check_model_arguments(config: RunConfig) -> None:
    """Raise :class:`RunError` when a modality's encoder is of the wrong kind (image / tabular) or an
    ``encoder_kwargs`` or ``fusion.kwargs`` key is not an argument of its encoder or fusion module (checked
    before any data is read)."""
    def named(key: str, lookup, name: str):
        try:
            return lookup(name)
        except ValueError as exc:
            raise RunError(f"{key}: {exc}") from None

    try:
        for name in config.enabled_modalities():
            mcfg = config.modalities[name]
            key = f"modalities.{name}.encoder"
            kind, data = named(key, encoder_kind, mcfg.encoder), "image" if name == "image" else "tabular"
            if kind != data:  # (data kind as model_spec decides it)
                raise RunError(f"{key}={mcfg.encoder!r} is a {kind} encoder but {name!r} is {data} data; choose "
                               f"one of the {data} encoders")
            _check_kwargs(encoder_entry(mcfg.encoder), dict(mcfg.encoder_kwargs), f"modalities.{name}.encoder_kwargs",
                          f"encoder {mcfg.encoder!r}")
        _check_kwargs(named("fusion.name", fusion_entry, config.fusion.name), dict(config.fusion.kwargs),
                      "fusion.kwargs", f"fusion module {config.fusion.name!r}")
    except ValueError as exc:
        raise RunError(str(exc)) from None


def _check_kwargs(entry: Callable[..., object], kwargs: dict, key: str, what: str) -> None:
    """:func:`check_arguments` of the mapping at ``key``, saying how to replace it: ``--set`` merges into a
    preset's mapping, so choosing another module (``--set fusion.name=concat``) keeps the old module's keys."""
    try:
        check_arguments(entry, kwargs, f"{key}: {what}")
    except ValueError as exc:
        unknown = unknown_arguments(entry, kwargs)
        kept = yaml.safe_dump({k: v for k, v in kwargs.items() if k not in unknown}, default_flow_style=True,
                              sort_keys=False, width=10_000).strip()
        raise RunError(f"{exc} (left from the config or another module? replace the whole mapping: "
                       f"--set '{key}={kept}')") from None


def build_model(config: RunConfig, spec: dict) -> FusionModel:
    """The :class:`FusionModel` of ``config`` for a cohort described by ``spec``.

    ``spec``: ``{"modalities": {name: {"kind": "tabular", "n_features": F} | {"kind": "image",
    "in_chans": C, "image_size": H}}, "n_classes": int | None, "survival": bool, "n_treatments": int | None}``.
    """
    check_model_arguments(config)
    encoders = {}
    for name, info in spec["modalities"].items():
        mcfg = config.modalities[name]
        kwargs = dict(mcfg.encoder_kwargs)
        if info["kind"] == "tabular":
            kwargs["in_features"] = info["n_features"]
        else:
            kwargs.setdefault("in_chans", info["in_chans"])
            kwargs.setdefault("image_size", info["image_size"])
        encoders[name] = create_encoder(mcfg.encoder, **kwargs)
    fusion = create_fusion(config.fusion.name, in_dims={n: e.out_dim for n, e in encoders.items()},
                           out_dim=config.fusion.out_dim, **config.fusion.kwargs)
    def reads(built: bool, read: list[str] | None) -> tuple[str, ...] | None:
        """The encoders a head reads, or None for all of them (or when the head is not built)."""
        kept = None if read is None or not built else tuple(m for m in encoders if m in read)
        return None if kept is None or len(kept) == len(encoders) else kept

    heads = HeadsConfig(n_classes=spec["n_classes"], survival=spec["survival"],
                        n_treatments=spec["n_treatments"], response_hidden_dim=config.tasks.response.hidden_dim,
                        diagnosis_modalities=reads(spec["n_classes"] is not None, config.tasks.diagnosis.modalities),
                        survival_modalities=reads(spec["survival"], config.tasks.survival.modalities),
                        response_link=config.tasks.survival.response_link,
                        hidden_dim=config.tasks.head_hidden_dim, dropout=config.tasks.head_dropout)
    tabular = {name: info["n_features"] for name, info in spec["modalities"].items() if info["kind"] == "tabular"}
    offset = (RiskOffset(tabular) if spec["survival"] and config.tasks.survival.coxnet_offset and tabular
              else None)
    return FusionModel(encoders, fusion, heads, modality_dropout=config.train.modality_dropout, offset=offset)


@contextmanager
def staged_dir(out_dir: str | Path) -> Iterator[Path]:
    """Yield a temporary folder next to ``out_dir``; on success rename it to ``out_dir``, else delete it.

    Raises RunError when ``out_dir`` exists and is not empty (runs are never overwritten in place).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise RunError(f"run directory {out_dir} already exists; choose a new --out or remove it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if out_dir.exists():
            out_dir.rmdir()
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def save_run(run_dir: Path, model: FusionModel, config: RunConfig, meta: dict,
             reference_image: torch.Tensor | None = None) -> None:
    """Write weights, resolved config, ``run.json`` (``meta`` plus format version and package versions) and the
    ``reference_image`` ``(S, C, H, W)`` when given."""
    save_model(model, str(run_dir / MODEL_FILE))
    if reference_image is not None:
        save_file({"image": reference_image.contiguous()}, str(run_dir / REFERENCE_IMAGE_FILE))
    (run_dir / CONFIG_FILE).write_text(dump_config(config))
    meta = {"run_format_version": RUN_FORMAT_VERSION, "versions": package_versions(), **meta}
    (run_dir / META_FILE).write_text(json.dumps(json_safe(meta), indent=1, default=str, allow_nan=False))


@dataclass(frozen=True)
class TrainingReference:
    """What the run's training patients gave, saved with the run (:data:`REFERENCE_RISK_FILE`) for a lake state.

    ``log_risk``: their log-risks, sorted ``(N,)`` (the risk percentile's reference; None without a survival
    head); ``prior``: the model's average training prediction (``diagnosis_prob (C,)``, ``log_risk`` (the
    median), ``response_all (T,)``; None where the run lacks the head or a run saved before they were kept),
    what a patient with no modality gets in the ablations.
    """

    lake_hash: str
    log_risk: np.ndarray | None
    prior: dict[str, np.ndarray | None]


PRIOR_FIELDS = ("diagnosis_prob", "log_risk", "response_all")


def read_training_reference(run_dir: Path, lake_hash: str | None = None) -> TrainingReference | None:
    """The :class:`TrainingReference` saved in ``run_dir`` for the lake state ``lake_hash`` (None: whatever lake
    state it was computed on); None when absent, for another lake state, or unreadable (a file cut short or
    edited is computed again, not an error)."""
    def finite(value: object) -> np.ndarray:
        array = np.asarray(value, np.float64)
        if array.size == 0 or not np.isfinite(array).all():
            raise ValueError("not finite")
        return array

    try:
        saved = json.loads((Path(run_dir) / REFERENCE_RISK_FILE).read_text())
        if lake_hash is not None and saved.get("lake_manifest_hash") != lake_hash:
            return None
        log_risk = None if saved.get("log_risk") is None else finite(saved["log_risk"])
        if log_risk is not None and log_risk.ndim != 1:
            return None
        prior = saved.get("prior") or {}
        return TrainingReference(str(saved.get("lake_manifest_hash")), log_risk,
                                 {f: None if prior.get(f) is None else finite(prior[f]) for f in PRIOR_FIELDS})
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def save_training_reference(run_dir: Path, log_risk: np.ndarray | None, prior: dict[str, np.ndarray | None],
                            lake_hash: str) -> None:
    """Write a :class:`TrainingReference` into ``run_dir`` (best effort: a read-only run folder is left alone),
    through a temporary file renamed into place: a predict killed while writing, or two writing at once (the
    app's sessions), never leave a half-written file."""
    path = Path(run_dir) / REFERENCE_RISK_FILE
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    content = {"lake_manifest_hash": lake_hash,
               "log_risk": None if log_risk is None else np.sort(log_risk).tolist(),
               "prior": {f: None if prior.get(f) is None else np.asarray(prior[f]).tolist() for f in PRIOR_FIELDS}}
    try:
        temporary.write_text(json.dumps(content))
        os.replace(temporary, path)
    except OSError:
        pass
    finally:
        temporary.unlink(missing_ok=True)


def json_safe(value: object) -> object:
    """``value`` with non-finite floats replaced by None (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class LoadedRun:
    """A trained run: ``model`` (eval mode, CPU), ``config``, ``meta`` (run.json), its ``breslow`` and the
    training patients' mean input image ``reference_image`` ``(S, C, H, W)`` (None: no images, or a run
    written before it was saved)."""

    run_dir: Path
    model: FusionModel
    config: RunConfig
    meta: dict
    breslow: BreslowEstimator | None
    reference_image: torch.Tensor | None = None


def _trained_targets(config: RunConfig, meta: dict) -> RunConfig:
    """``config`` with the diagnosis classes and treatments the run was trained on where it leaves them to the lake
    (``null``: the values found there), so that another lake, or this one after a new ingest, is read over the
    model's own classes and treatments, in their order, rather than over the values it holds now."""
    targets = config.data.targets
    trained = {name: list(meta[key]) for name, key in (("diagnosis_classes", "diagnosis_classes"),
                                                        ("treatments", "treatment_names"))
               if getattr(targets, name) is None and meta.get(key)}
    if not trained:
        return config
    data = config.data.model_copy(update={"targets": targets.model_copy(update=trained)})
    return config.model_copy(update={"data": data})


def load_run(run_dir: str | Path) -> LoadedRun:
    """Load a run written by :func:`fusion.train.train` (weights through safetensors) onto the CPU, where
    evaluation and prediction run, whichever device trained it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory {run_dir} does not exist; pass a folder written by `tumorboard train`")
    missing = [f for f in (MODEL_FILE, CONFIG_FILE, META_FILE) if not (run_dir / f).is_file()]
    if missing:
        hint = " (a cross-validation run: load one of its fold_<k> folders)" if (run_dir / "fold_0").is_dir() \
            else ""
        raise RunError(f"run directory {run_dir} lacks {', '.join(missing)}{hint}")
    config = load_config(run_dir / CONFIG_FILE)
    damaged = "; copy the run again or retrain it with `tumorboard train`"
    try:
        meta = json.loads((run_dir / META_FILE).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{run_dir / META_FILE} is not readable JSON ({exc}){damaged}") from None
    if meta.get("run_format_version") != RUN_FORMAT_VERSION:
        raise RunError(f"{run_dir / META_FILE}: run format {meta.get('run_format_version')!r}, this version "
                       f"reads {RUN_FORMAT_VERSION!r} (its cohort rules differ); retrain the model with "
                       "`tumorboard train`")
    lacking = [key for key in RUN_META_KEYS if key not in meta]
    if lacking:
        raise RunError(f"{run_dir / META_FILE} lacks {', '.join(lacking)}{damaged}")
    config = _trained_targets(config, meta)
    model = build_model(config, meta["spec"])
    try:
        missing_keys, unexpected = load_model(model, str(run_dir / MODEL_FILE), strict=False)
    except SafetensorError as exc:
        raise RunError(f"{run_dir / MODEL_FILE} is damaged ({exc}){damaged}") from None
    if missing_keys or unexpected:
        raise RunError(f"{run_dir / MODEL_FILE} does not fit the model of its config.yaml: missing "
                       f"{sorted(missing_keys)[:5]}, unexpected {sorted(unexpected)[:5]}")
    model.eval()
    breslow = BreslowEstimator.from_dict(meta["breslow"]) if meta.get("breslow") else None
    reference = None
    if (run_dir / REFERENCE_IMAGE_FILE).is_file():
        try:
            reference = load_file(str(run_dir / REFERENCE_IMAGE_FILE))["image"]
        except (SafetensorError, KeyError) as exc:
            raise RunError(f"{run_dir / REFERENCE_IMAGE_FILE} is damaged ({exc}){damaged}") from None
    return LoadedRun(run_dir, model, config, meta, breslow, reference)
