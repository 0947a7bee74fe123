"""Training losses: Cox partial likelihood (Efron ties), masked classification losses, the multitask sum.

Missing labels: diagnosis labels are class indices with ``-1`` (or NaN) = missing; response labels are
0/1 floats with NaN (or -1) = missing; survival rows with a NaN time are left out of the Cox loss (they are
neither events nor members of any risk set). A loss with no valid row returns a zero that still depends on
the outputs, so ``backward()`` works on every batch.

Cox on small batches: the partial likelihood compares each event with its risk set *within the batch*, so tiny
batches give noisy, biased gradients. Either use large batches (hundreds of rows; a batch without any event
contributes nothing) or :class:`CoxLoss` with ``queue_size > 0``: a memory bank of detached log-risks,
times and events from recent batches joins every risk set (queued rows act as censored at their time, so
only the current batch's events are scored). Queued risks are stale by a few steps; torchsurv's
``torchsurv.loss.momentum.Momentum`` (an EMA target network) is the heavier alternative.

Queued risks are stored relative to their batch's mean and re-anchored on the current batch's mean. Without
that, raising every current risk by a constant lowers the loss against the frozen queue (the partial
likelihood itself ignores such shifts), so the risk offset drifts upwards step after step and the training
loss climbs while the ranking stops improving.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

with warnings.catch_warnings():  # torchsurv scripts a function with torch.jit at import; torch 2.14 deprecates it
    warnings.filterwarnings("ignore", message=".*torch.jit.*", category=FutureWarning)
    from torchsurv.loss.cox import neg_partial_log_likelihood


def _zero(t: Tensor) -> Tensor:
    """A zero loss connected to ``t``'s graph."""
    return t.sum() * 0.0


def cox_nll(log_risk: Tensor, time: Tensor, event: Tensor, *, reduction: str = "mean") -> Tensor:
    """Negative Cox partial log-likelihood with Efron's handling of tied event times.

    Args:
        log_risk: ``(N,)`` predicted log relative hazard (higher = higher risk).
        time: ``(N,)`` event or censoring time in days; NaN rows are ignored.
        event: ``(N,)`` bool, True = event observed.
        reduction: "mean" (divided by the number of events) or "sum".

    Returns:
        Scalar loss; zero (still connected to ``log_risk``) when there is no event. torchsurv 0.2.0 returns
        float32 whatever the input dtype (relative error about 1e-7).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"cox_nll: reduction must be 'mean' or 'sum', got {reduction!r}")
    log_risk, time, event = log_risk.reshape(-1), time.reshape(-1), event.reshape(-1).bool()
    if not (log_risk.shape == time.shape == event.shape):
        raise ValueError(
            f"cox_nll: log_risk, time, event lengths differ ({log_risk.numel()}, {time.numel()}, {event.numel()})"
        )
    keep = ~torch.isnan(time)
    log_risk, time, event = log_risk[keep], time[keep].to(log_risk.dtype), event[keep]
    n_events = int(event.sum())
    if n_events == 0 or log_risk.numel() < 2:
        return _zero(log_risk)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Ties in `time` detected")
        total = neg_partial_log_likelihood(log_risk, event, time, ties_method="efron", reduction="sum")
    return total / n_events if reduction == "mean" else total


class CoxLoss(nn.Module):
    """Cox loss (:func:`cox_nll`, Efron ties) with an optional memory bank for small batches.

    Args:
        queue_size: number of past rows (detached) kept and added to the risk sets; 0 disables the bank.

    Call ``loss(log_risk, time, event)`` in training; the bank is updated after each call in training mode
    and neither used nor updated in eval mode. Banked risks are kept centred on their batch's mean and
    shifted to the current batch's mean when used, so the loss is invariant to a common shift of all risks.
    ``reset()`` empties it (e.g. at the start of each epoch).
    """

    def __init__(self, queue_size: int = 0) -> None:
        super().__init__()
        if queue_size < 0:
            raise ValueError(f"CoxLoss: queue_size must be >= 0, got {queue_size}")
        self.queue_size = int(queue_size)
        self.reset()

    def reset(self) -> None:
        """Empty the memory bank."""
        self._risk, self._time = torch.empty(0), torch.empty(0)

    def forward(self, log_risk: Tensor, time: Tensor, event: Tensor) -> Tensor:
        """Loss for the current batch, ``(N,)`` tensors as in :func:`cox_nll`."""
        log_risk, time, event = log_risk.reshape(-1), time.reshape(-1), event.reshape(-1).bool()
        if not (self.training and self.queue_size):
            return cox_nll(log_risk, time, event)
        keep = ~torch.isnan(time)
        if not keep.any():
            return cox_nll(log_risk, time, event)
        anchor = log_risk[keep].mean()
        q_risk, q_time = self._risk.to(log_risk) + anchor, self._time.to(time)
        loss = cox_nll(
            torch.cat([log_risk, q_risk]),
            torch.cat([time, q_time]),
            torch.cat([event, torch.zeros(q_risk.numel(), dtype=torch.bool, device=event.device)]),
        )
        centred = (log_risk - anchor).detach()[keep]
        self._risk = torch.cat([centred, self._risk.to(log_risk)])[: self.queue_size]
        self._time = torch.cat([time[keep], q_time])[: self.queue_size]
        return loss


def masked_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over rows with a label: ``logits (B, C)``, ``labels (B,)`` (-1 or NaN = missing)."""
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"masked_cross_entropy: expected logits (B, C) and labels (B,), got "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    as_float = labels.to(torch.float32)
    valid = ~torch.isnan(as_float) & (as_float >= 0)
    if not valid.any():
        return _zero(logits)
    target = labels[valid].long()
    if int(target.max()) >= logits.shape[1]:
        raise ValueError(f"masked_cross_entropy: label {int(target.max())} >= number of classes {logits.shape[1]}")
    return nn.functional.cross_entropy(logits[valid], target)


def masked_bce_with_logits(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean binary cross-entropy over labelled rows: ``logits (B,)``, ``labels (B,)`` 0/1, NaN/-1 missing."""
    if logits.shape != labels.shape:
        raise ValueError(
            f"masked_bce_with_logits: logits {tuple(logits.shape)} and labels {tuple(labels.shape)} differ"
        )
    labels = labels.to(logits.dtype)
    valid = ~torch.isnan(labels) & (labels >= 0)
    if not valid.any():
        return _zero(torch.nan_to_num(logits))
    return nn.functional.binary_cross_entropy_with_logits(logits[valid], labels[valid])


DEFAULT_WEIGHTS = {"diagnosis": 1.0, "survival": 1.0, "response": 1.0, "survival_aux": 0.0}


def multitask_loss(
    outputs: dict, targets: dict, weights: dict[str, float] | None = None, *, cox: nn.Module | None = None
) -> tuple[Tensor, dict[str, float]]:
    """Weighted sum of the task losses whose outputs and targets are both there.

    Args:
        outputs: model outputs with any of ``"diagnosis_logits"`` (B, C), ``"log_risk"`` (B,),
            ``"response_logits"`` (B,).
        targets: any of ``"diagnosis"`` (B,) class index (-1 missing), ``"time"`` (B,) days (NaN missing) with
            ``"event"`` (B,) bool, ``"response"`` (B,) 0/1 (NaN missing), and ``"aux_time"`` / ``"aux_event"``:
            an auxiliary survival endpoint, scored on the same ``log_risk`` by :func:`cox_nll`.
        weights: ``{"diagnosis", "survival", "response", "survival_aux"} -> float``; missing keys weigh 1
            (``survival_aux``: 0), 0 skips a task.
        cox: the survival loss (e.g. ``CoxLoss(queue_size=...)``); default :func:`cox_nll`.

    Returns:
        ``(total, parts)``: the scalar loss and each computed task loss as a float.
    """
    weights = {**DEFAULT_WEIGHTS, **(weights or {})}
    unknown = set(weights) - set(DEFAULT_WEIGHTS)
    if unknown:
        raise ValueError(f"multitask_loss: unknown task weights {sorted(unknown)}; use {sorted(DEFAULT_WEIGHTS)}")
    parts: dict[str, Tensor] = {}
    if weights["diagnosis"] and "diagnosis_logits" in outputs and "diagnosis" in targets:
        parts["diagnosis"] = masked_cross_entropy(outputs["diagnosis_logits"], targets["diagnosis"])
    if weights["survival"] and "log_risk" in outputs and "time" in targets and "event" in targets:
        fn = cox if cox is not None else cox_nll
        parts["survival"] = fn(outputs["log_risk"], targets["time"], targets["event"])
    if weights["survival_aux"] and "log_risk" in outputs and "aux_time" in targets and "aux_event" in targets:
        parts["survival_aux"] = cox_nll(outputs["log_risk"], targets["aux_time"], targets["aux_event"])
    if weights["response"] and "response_logits" in outputs and "response" in targets:
        parts["response"] = masked_bce_with_logits(outputs["response_logits"], targets["response"])
    if not parts:
        raise ValueError(
            "multitask_loss: no task has both an output and a target (check the heads config and "
            "the target keys diagnosis / time+event / response)"
        )
    total = sum(weights[k] * v for k, v in parts.items())
    return total, {k: float(v.detach()) for k, v in parts.items()}
