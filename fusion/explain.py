"""Explanations for one patient's prediction (a batch of one row from :func:`fusion.data.collate`).

The model is taken apart into its public pieces: per-modality ``encoders``, the ``fusion`` module and the
heads (``diagnosis``, ``survival``, ``response``), so that each explanation re-runs only what it needs:

- :func:`modality_contributions`: the fusion's gate weights and the leave-one-modality-out change in log-risk
  and in the probability of the predicted diagnosis (the modality marked absent at the fusion, as the model
  sees a patient without it);
- :func:`top_features`: integrated gradients (captum) of the target with respect to the normalised tabular
  inputs, from the all-zero baseline = the training mean of every feature; a missing value has attribution 0
  (its missing-indicator effect is not attributed);
- :func:`image_attribution`: integrated gradients (captum) of the target with respect to the image pixels,
  from the training patients' mean image (``LoadedRun.reference_image``: what an image without this patient's
  findings looks like), on the slice where the image raises the target most. On a demo-size run (300
  patients; ``benchmarks/explain_faithfulness.py``) its maps of the 33 test cancer patients with a CT peaked
  on the nodule for 32 at the map's 16 x 16 cells (a random cell: 3.4%) and 31 at 8 x 8 (6%), against 20 at
  8 x 8 for HiResCAM (Draelos & Carin, 2020: Grad-CAM with element-wise gradients, on the deepest timm stage
  that still localises) and none for Grad-CAM, whose maps peaked on an image corner for 26: it weighs each
  channel's whole map by its mean gradient, so it credits activations where the output does not depend on
  them. A run without a reference image (written before it was saved, or from fewer than
  :data:`fusion.data.MIN_REFERENCE_PATIENTS` imaged training patients), or an image of another size than the
  reference (``data.images.image_size`` unset), gets HiResCAM, at the slice the encoder's attention pooling
  weighs most;
- :func:`survival_interval`: a pointwise 95% interval for ``S(t | x)``; :func:`response_interval`: a 95%
  interval for each treatment's response probability (both from :func:`mc_samples`).

The target of the attributions is the log-risk when the run has a survival head (a positive attribution
raises the hazard), else the logit of the predicted diagnosis, else (a response-only run) the response logit of
the patient's recorded treatment, or of the treatment most likely to respond when none is recorded. The
log-risk includes the risk offset (``tasks.survival.coxnet_offset``, :mod:`fusion.models.offset`): its terms go
with their modality, so leaving a modality out removes its term and the integrated gradients of a tabular input
include its offset weight. With ``tasks.survival.response_link`` it also includes the response term for the
row's treatment, recomputed from the same embeddings.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from captum.attr import IntegratedGradients, LayerGradientXActivation
from scipy.special import expit
from torch import Tensor, nn
from torch.nn import functional as nnf

from fusion.models import BreslowEstimator, FusionModel

Z_95 = 1.959964
MAP_MAX_SIDE = 16
IG_STEPS = 32  # integrated-gradient steps of the image map
# the image map's steps run in batches of at most this many input values (8 steps of an 8-slice 64 px series):
# a 32-slice 512 px CT then runs one step at a time, with HiResCAM's memory
IG_BATCH_VALUES = 8 * 8 * 64 * 64
CAM_MIN_SIDE = 7  # CAM maps coarser than this cannot localise


def _encode(model: FusionModel, batch: dict) -> tuple[dict[str, Tensor], dict[str, Tensor],
                                                     dict[str, Tensor]]:
    """Per-modality embeddings ``{name: (B, D)}`` (zeros where absent), presence ``{name: (B,)}`` and slice
    attention ``{name: (B, S)}`` for a batch whose rows share the same present modalities."""
    modalities, masks = batch["modalities"], batch.get("masks") or {}
    b = next(iter(modalities.values())).shape[0]
    emb, present, attention = {}, {}, {}
    for name, enc in model.encoders.items():
        p = batch["present"].get(name) if name in modalities else None
        p = torch.zeros(b, dtype=torch.bool) if p is None else p.bool()
        present[name] = p
        if p.all():
            if hasattr(enc, "forward_with_attention"):
                emb[name], attention[name] = enc.forward_with_attention(modalities[name], masks.get(name))
            else:
                emb[name] = enc(modalities[name], masks.get(name))
        else:
            emb[name] = torch.zeros(b, enc.out_dim)
    return emb, present, attention


def _target(model: FusionModel, emb: dict[str, Tensor], present: dict[str, Tensor],
            diagnosis_class: int | None, offset_terms: dict[str, Tensor], treatment: Tensor | None,
            response_treatment: int | None = None) -> Tensor:
    """``(B,)`` explanation target: log-risk (:meth:`FusionModel.survival_log_risk`), else the logit of
    ``diagnosis_class`` (from the modalities the diagnosis head reads), else the response logit of
    ``response_treatment`` (a model with a response head only)."""
    if model.survival is not None:
        return model.survival_log_risk(emb, present, offset_terms, treatment)
    if model.diagnosis is not None:
        return model.diagnosis(model.diagnosis_fused(emb, present))[:, diagnosis_class]
    return model.response.all_treatments(model.fusion(emb, present)[0])[:, response_treatment]


def target_name(model: FusionModel, diagnosis_class: int | None = None,
                classes: list[str] | None = None, response_treatment: int | None = None,
                treatments: list[str] | None = None) -> str:
    """What the attributions explain: ``"log_risk"``, ``"diagnosis_logit:<class>"`` or (a response-only
    model) ``"response_logit:<treatment>"``."""
    if model.survival is not None:
        return "log_risk"
    if model.diagnosis is not None:
        return f"diagnosis_logit:{classes[diagnosis_class] if classes else diagnosis_class}"
    return f"response_logit:{treatments[response_treatment] if treatments else response_treatment}"


@dataclass
class Encoded:
    """One row's encoder outputs, computed once and shared by the explanations.

    ``emb {name: (1, D)}``, ``present {name: (1,)}``, ``attention {name: (1, S)}`` (slice attention of image
    encoders), ``cls``: the predicted diagnosis class (None without a diagnosis head), ``offset_terms
    {name: (1,)}``: the risk offset's contributions (:meth:`FusionModel.offset_terms`) and ``treatment`` ``(1,)``:
    the row's treatment index (None when the batch has none); ``response_treatment``: in a model with neither a
    survival nor a diagnosis head, the treatment whose response logit the attributions explain (the row's
    recorded one, else the most likely to respond), None otherwise.
    """

    emb: dict[str, Tensor]
    present: dict[str, Tensor]
    attention: dict[str, Tensor]
    cls: int | None
    offset_terms: dict[str, Tensor]
    treatment: Tensor | None = None
    response_treatment: int | None = None

    def log_risk(self, model: FusionModel) -> Tensor:
        """The row's log-risk ``(1,)``."""
        return model.survival_log_risk(self.emb, self.present, self.offset_terms, self.treatment)


@torch.no_grad()
def encode(model: FusionModel, batch: dict) -> Encoded:
    """Run the encoders once on a one-row ``batch`` (eval mode)."""
    emb, present, attention = _encode(model, batch)
    cls = None
    if model.diagnosis is not None:
        cls = int(model.diagnosis(model.diagnosis_fused(emb, present)).argmax(1)[0])
    treatment = batch.get("treatment")
    response_treatment = None
    if model.survival is None and model.diagnosis is None and model.response is not None:
        recorded = -1 if treatment is None else int(treatment[0])
        response_treatment = recorded if recorded >= 0 else int(
            model.response.all_treatments(model.fusion(emb, present)[0]).argmax(1)[0])
    return Encoded(emb, present, attention, cls, model.offset_terms(batch["modalities"], batch.get("masks") or {}),
                   None if treatment is None else treatment[:1], response_treatment)


def _expand(tensors: dict[str, Tensor], b: int) -> dict[str, Tensor]:
    return {k: v.expand(b, *v.shape[1:]) for k, v in tensors.items()}


def _expand_treatment(treatment: Tensor | None, b: int) -> Tensor | None:
    return None if treatment is None else treatment[:1].expand(b)


@torch.no_grad()
def modality_contributions(model: FusionModel, batch: dict,
                           encoded: Encoded | None = None) -> dict[str, dict]:
    """Per modality: ``present``, gate ``weight`` (None when the fusion has none), ``delta_log_risk`` = full
    minus without the modality, ``delta_diagnosis`` = change in the probability of the predicted class
    (None for absent modalities or when the modality is the patient's only one)."""
    encoded = encoded or encode(model, batch)
    emb, present, cls = encoded.emb, encoded.present, encoded.cls
    weights = model.fusion(emb, present)[1]
    terms = encoded.offset_terms
    base_risk = encoded.log_risk(model)[0] if model.survival is not None else None
    base_prob = None
    if model.diagnosis is not None:
        base_prob = torch.softmax(model.diagnosis(model.diagnosis_fused(emb, present)), 1)[0, cls]
    n_present = sum(int(p[0]) for p in present.values())
    out = {}
    for name in model.encoders:
        item = {"present": bool(present[name][0]),
                "weight": float(weights[name][0]) if weights is not None else None,
                "delta_log_risk": None, "delta_diagnosis": None}
        if item["present"] and n_present > 1:
            without = {**present, name: torch.zeros_like(present[name])}
            if base_risk is not None:
                risk_wo = model.survival_log_risk(emb, without, terms, encoded.treatment)[0]
                item["delta_log_risk"] = float(base_risk - risk_wo)
            if base_prob is not None:
                z_dx = model.diagnosis_fused(emb, without)
                item["delta_diagnosis"] = float(base_prob - torch.softmax(model.diagnosis(z_dx), 1)[0, cls])
        out[name] = item
    return out


def top_features(model: FusionModel, batch: dict, names: dict[str, list[str]], raw: dict[str, np.ndarray],
                 descriptions: dict[str, dict[str, str]], *, k: int = 10, n_steps: int = 32,
                 encoded: Encoded | None = None) -> list[dict]:
    """The ``k`` tabular features with the largest |integrated gradients| for the first row.

    Args:
        names: feature names per tabular modality (run.json ``feature_names``).
        raw: the row's unnormalised values per modality ``(F,)`` (NaN = missing), shown as ``value``.
        descriptions: readable feature descriptions per modality.

    Returns:
        ``[{"name", "modality", "description", "value", "attribution"}]`` sorted by |attribution|.
    """
    encoded = encoded or encode(model, batch)
    emb, present, cls = encoded.emb, encoded.present, encoded.cls
    tabular = [m for m in names if m in batch["modalities"] and bool(present[m][0])]
    if not tabular:
        return []
    fixed = {m: e.detach() for m, e in emb.items() if m not in tabular}
    masks = {m: batch["masks"][m] for m in tabular}
    fixed_terms = {m: t for m, t in encoded.offset_terms.items() if m not in tabular}

    def forward(*xs: Tensor) -> Tensor:
        b = xs[0].shape[0]
        embs = {**_expand(fixed, b), **{m: model.encoders[m](x, masks[m].expand(b, -1))
                                      for m, x in zip(tabular, xs, strict=True)}}
        terms = {**_expand(fixed_terms, b), **model.offset_terms(dict(zip(tabular, xs, strict=True)),
                                                                  {m: masks[m].expand(b, -1) for m in tabular})}
        return _target(model, embs, _expand(present, b), cls, terms, _expand_treatment(encoded.treatment, b),
                       encoded.response_treatment)

    inputs = tuple(batch["modalities"][m].clone().requires_grad_(True) for m in tabular)
    attributions = IntegratedGradients(forward).attribute(
        inputs, baselines=tuple(torch.zeros_like(x) for x in inputs), n_steps=n_steps)
    rows = []
    for m, attr in zip(tabular, attributions, strict=True):
        for j, name in enumerate(names[m]):
            value = float(raw[m][j])
            rows.append({"name": name, "modality": m, "description": descriptions.get(m, {}).get(name, name),
                         "value": value if np.isfinite(value) else None,
                         "attribution": float(attr[0, j].detach())})
    rows.sort(key=lambda r: -abs(r["attribution"]))
    return rows[:k]


def _cam_layer(backbone: nn.Module, sample: Tensor) -> tuple[str, nn.Module]:
    """The CAM layer of a timm backbone: the deepest feature stage (``feature_info``) whose output on
    ``sample (1, C, H, W)`` is still at least :data:`CAM_MIN_SIDE` pixels wide (a 64 px CT slice through a
    ResNet ends at 2 x 2, too coarse to point at a nodule), else the shallowest; without ``feature_info``, the
    last Conv2d."""
    info = getattr(backbone, "feature_info", None)
    if info:
        names = [i["module"] for i in info] if isinstance(info, list) else list(info.module_name())
        sides: dict[str, int] = {}
        hooks = [backbone.get_submodule(n).register_forward_hook(
            lambda _m, _i, out, n=n: sides.__setitem__(n, min(out.shape[-2:]))) for n in names]
        try:
            with torch.no_grad():
                backbone(sample)
        finally:
            for hook in hooks:
                hook.remove()
        name = next((n for n in reversed(names) if sides.get(n, 0) >= CAM_MIN_SIDE), names[0])
        return name, backbone.get_submodule(name)
    convs = [(n, m) for n, m in backbone.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("image attribution: the image backbone has no Conv2d layer for a CAM")
    return convs[-1]


def image_attribution(model: FusionModel, batch: dict, encoded: Encoded | None = None,
                      reference: Tensor | None = None) -> dict | None:
    """Where the row's image pushes the explanation target up (module docstring).

    With ``reference`` (the training patients' mean input image ``(S', C, H, W)``): integrated gradients from
    it (:data:`IG_STEPS` steps), summed over channels, positive part, on the slice with the most of it. Without
    (or when its slices are not the size of the row's image): HiResCAM at the most attended slice,
    ``ReLU(sum_c dy/dA_c * A_c)`` over the CAM layer's activations ``A`` (:func:`_cam_layer`).

    Returns:
        ``{"method": "integrated_gradients" | "hires_cam", "baseline" ("training_mean_image"; None for
        HiResCAM), "layer" (HiResCAM's; None for integrated gradients), "slice_index" (into the model's input
        series), "slice_attention" (S,), "map" (h x w nested lists in [0, 1], at most 16 x 16), "input_shape"
        [H, W]}``, or None when the row has no image or the image encoder is not a timm backbone.
    """
    if "image" not in batch["modalities"] or "image" not in model.encoders:
        return None
    enc = model.encoders["image"]
    if not hasattr(enc, "backbone"):
        return None
    x = batch["modalities"]["image"]
    mask = batch["masks"].get("image")
    x = x if x.ndim == 5 else x.unsqueeze(1)
    mask = torch.ones(x.shape[:2], dtype=torch.bool) if mask is None else mask
    encoded = encoded or encode(model, batch)
    emb, present, attention, cls = encoded.emb, encoded.present, encoded.attention, encoded.cls
    if not bool(present["image"][0]):
        return None
    fixed = {m: e for m, e in emb.items() if m != "image"}
    if reference is not None and tuple(reference.shape[1:]) != tuple(x.shape[2:]):
        reference = None  # another size (data.images.image_size unset): no pixel-wise baseline

    def forward(images: Tensor) -> Tensor:
        b = images.shape[0]
        image_emb, _ = enc.forward_with_attention(images, mask.expand(b, -1))
        return _target(model, {**_expand(fixed, b), "image": image_emb}, _expand(present, b), cls,
                       _expand(encoded.offset_terms, b), _expand_treatment(encoded.treatment, b),
                       encoded.response_treatment)

    weights = attention["image"][0]
    valid = mask[0].nonzero().squeeze(1)
    if reference is not None:
        baseline = _series_like(reference, x)
        pixels = IntegratedGradients(forward).attribute(x, baselines=baseline, n_steps=IG_STEPS,
                                                        internal_batch_size=max(1, IG_BATCH_VALUES // x[0].numel()))
        positive = pixels[0].sum(1, keepdim=True).clamp(min=0).detach()  # (S, 1, H, W)
        best = int(valid[positive[valid].sum((1, 2, 3)).argmax()])
        heat, method, layer_name = positive[best], "integrated_gradients", None
    else:
        was_training = enc.backbone.training
        enc.backbone.eval()
        layer_name, layer = _cam_layer(enc.backbone, x[0, :1])
        enc.backbone.train(was_training)
        # (valid slices, channels, h, w) -> (valid slices, 1, h, w)
        cam = LayerGradientXActivation(forward, layer).attribute(x).sum(1, keepdim=True).clamp(min=0).detach()
        best = int(valid[weights[valid].argmax()])
        heat, method = cam[int((valid == best).nonzero()[0, 0])], "hires_cam"
    side = (min(heat.shape[-2], MAP_MAX_SIDE), min(heat.shape[-1], MAP_MAX_SIDE))
    heat = nnf.adaptive_avg_pool2d(heat.unsqueeze(0), side)[0, 0]
    peak = float(heat.max())
    heat = heat / peak if peak > 0 else heat
    return {"method": method, "baseline": "training_mean_image" if reference is not None else None,
            "layer": layer_name, "slice_index": best, "slice_attention": [float(w) for w in weights],
            "map": heat.round(decimals=4).tolist(), "input_shape": list(x.shape[-2:])}


def _series_like(reference: Tensor, x: Tensor) -> Tensor:
    """``reference`` ``(S', C, H, W)`` (slices of ``x``'s size) as a baseline shaped like ``x``
    ``(1, S, C, H, W)``: its first ``S``
    slices; beyond its ``S'``, ``x``'s own slices (no attribution there: a zero baseline would credit a whole
    slice and draw the map to positions too few training series reach)."""
    out = x.detach().clone()
    n = min(reference.shape[0], x.shape[1])
    out[0, :n] = reference[:n].to(x.dtype)
    return out


def _has_dropout(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in module.modules())


def _is_timm_encoder(enc: nn.Module) -> bool:
    return all(hasattr(enc, a) for a in ("backbone", "proj", "dropout", "pool"))


def _timm_mc(enc: nn.Module, batch: dict, name: str, n_samples: int) -> Tensor:
    """``(n_samples, D)`` MC-dropout embeddings of a timm image encoder whose backbone has no dropout: the
    backbone runs once on the row's valid slices; projection, dropout and attention pooling run per sample."""
    x = batch["modalities"][name]
    x = x if x.ndim == 5 else x.unsqueeze(1)
    mask = batch["masks"].get(name)
    valid = torch.ones(x.shape[1], dtype=torch.bool) if mask is None else mask[0].bool()
    feats = enc.proj(enc.backbone(x[0][valid]))  # (s, D)
    slices = enc.dropout(feats.unsqueeze(0).expand(n_samples, -1, -1).contiguous())
    return enc.pool(slices, torch.ones(slices.shape[:2], dtype=torch.bool))[0]


@torch.no_grad()
def mc_samples(model: FusionModel, batch: dict, *, n_samples: int = 30, seed: int = 0) -> dict[str, np.ndarray]:
    """MC-dropout outputs of the first row: ``log_risk (n_samples,)`` with a survival head and
    ``response_logits (n_samples, n_treatments)`` with a response head; constant when the model has no
    dropout. Runs on a copy of the model, so the caller's model stays in eval mode."""
    mc = copy.deepcopy(model).eval()
    for m in mc.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.train()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        one = {**batch, "modalities": {k: v[:1] for k, v in batch["modalities"].items()},
               "masks": {k: v[:1] for k, v in batch["masks"].items()},
               "present": {k: v[:1] for k, v in batch["present"].items()}}
        emb, present, _ = _encode(mc, one)
        samples = {}
        for name, enc in mc.encoders.items():
            if bool(present[name][0]) and _is_timm_encoder(enc) and not _has_dropout(enc.backbone):
                samples[name] = _timm_mc(enc, one, name, n_samples)
            elif bool(present[name][0]) and _has_dropout(enc):
                rep = {**one, "modalities": {name: one["modalities"][name].expand(
                    n_samples, *one["modalities"][name].shape[1:])},
                    "masks": {name: one["masks"][name].expand(n_samples, *one["masks"][name].shape[1:])}
                    if name in one["masks"] else {},
                    "present": {name: torch.ones(n_samples, dtype=torch.bool)}}
                samples[name] = _encode(mc, rep)[0][name]
            else:
                samples[name] = emb[name].expand(n_samples, -1)
        out = {}
        present = _expand(present, n_samples)
        if mc.survival is not None:
            terms = mc.offset_terms(one["modalities"], one["masks"])
            risk = mc.survival_log_risk(samples, present, _expand(terms, n_samples),
                                        _expand_treatment(batch.get("treatment"), n_samples))
            out["log_risk"] = risk.numpy().astype(np.float64)
        if mc.response is not None:
            out["response_logits"] = mc.response.all_treatments(mc.fusion(samples, present)[0]).numpy().astype(
                np.float64)
        return out


def response_interval(model: FusionModel, batch: dict, *, n_samples: int = 30, seed: int = 0,
                      encoded: Encoded | None = None, mc: dict[str, np.ndarray] | None = None) -> dict:
    """A 95% interval for the probability of response under each candidate treatment, first row of
    ``batch``: ``sigmoid(logit +- 1.96 sd)`` around the model's logit, with ``sd`` the MC-dropout standard
    deviation of the logit (``mc``: :func:`mc_samples`' output, computed when not given). Like
    :func:`survival_interval`, it holds only the uncertainty that dropout captures.

    Returns:
        ``{"probability", "lower", "upper"}`` arrays ``(n_treatments,)``, ``lower <= probability <= upper``,
        and ``method``.
    """
    mc = mc or mc_samples(model, batch, n_samples=n_samples, seed=seed)
    encoded = encoded or encode(model, batch)
    with torch.no_grad():
        z = model.fusion(encoded.emb, encoded.present)[0]
        logit = model.response.all_treatments(z)[0].numpy().astype(np.float64)
    draws = mc["response_logits"]
    sd = draws.std(axis=0, ddof=1) if draws.shape[0] > 1 else np.zeros_like(logit)
    no_dropout = "" if sd.any() else "; the model has no active dropout, so 0"
    return {"probability": expit(logit), "lower": expit(logit - Z_95 * sd), "upper": expit(logit + Z_95 * sd),
            "method": f"logit +- 1.96 MC-dropout SD ({draws.shape[0]} passes{no_dropout})"}


def survival_interval(model: FusionModel, batch: dict, breslow: BreslowEstimator, times: np.ndarray, *,
                      n_samples: int = 30, seed: int = 0, encoded: Encoded | None = None,
                      mc: dict[str, np.ndarray] | None = None) -> dict:
    """``S(t | x)`` at ``times`` (days) with a pointwise 95% interval for the first row of ``batch``.

    The interval is built on the log cumulative hazard, ``log H(t|x) = log H0(t) + r(x)``, whose variance is
    the sum of (a) the MC-dropout variance of the log-risk ``r(x)`` (``n_samples`` stochastic passes) and
    (b) the relative variance of the Breslow baseline, ``Var H0(t) / H0(t)^2`` with the Aalen-type
    ``Var H0(t) = sum_{t_i <= t} dH0(t_i)^2`` (one event per distinct event time, conservative under ties).
    ``S = exp(-exp(log H))``; bounds are made non-increasing in t. Uncertainty of the weights beyond what
    dropout captures is not included.

    Returns:
        ``{"survival", "lower", "upper"}`` arrays ``(T,)``, ``lower <= survival <= upper``, and ``method``.
    """
    times = np.asarray(times, np.float64)
    encoded = encoded or encode(model, batch)
    with torch.no_grad():
        log_risk = float(encoded.log_risk(model)[0])
    samples = (mc or mc_samples(model, batch, n_samples=n_samples, seed=seed))["log_risk"]
    var_r = float(samples.var(ddof=1)) if samples.size > 1 else 0.0
    h0 = breslow.baseline_cumulative_hazard(times)
    steps = np.diff(np.concatenate([[0.0], breslow.cum_baseline_hazard]))
    var_steps = np.cumsum(steps**2)
    idx = np.searchsorted(breslow.event_times, times, side="right") - 1
    var_h0 = np.where(idx >= 0, var_steps[np.clip(idx, 0, None)], 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_h = np.log(h0) + log_risk
        sd = np.sqrt(np.where(h0 > 0, var_h0 / h0**2, 0.0) + var_r)
        surv = np.where(h0 > 0, np.exp(-np.exp(log_h)), 1.0)
        lower = np.where(h0 > 0, np.exp(-np.exp(log_h + Z_95 * sd)), 1.0)
        upper = np.where(h0 > 0, np.exp(-np.exp(log_h - Z_95 * sd)), 1.0)
    lower = np.minimum.accumulate(np.minimum(lower, surv))
    upper = np.maximum(np.minimum.accumulate(upper), surv)
    no_dropout = "" if var_r > 0 else "; the model has no active dropout, so 0"
    method = (f"log-log +- 1.96 SD, from the MC-dropout log-risk variance ({samples.size} passes{no_dropout}) and "
              "the Breslow baseline's variance")
    return {"survival": surv, "lower": lower, "upper": upper, "method": method}
