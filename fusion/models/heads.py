"""Prediction heads on the fused embedding ``(B, D)`` and the Breslow baseline for survival curves."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn


class _Head(nn.Module):
    """``(B, in_dim) -> (B, out_dim)``: a linear map plus, with ``hidden_dim``, a one-hidden-layer MLP residual.

    The linear part keeps a linear model of the fused embedding reachable (see :mod:`fusion.models.tabular`);
    the MLP adds non-linear terms on top.
    """

    def __init__(self, in_dim: int, hidden_dim: int | None, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.linear = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, out_dim))
        self.mlp = (nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout),
                                  nn.Linear(hidden_dim, out_dim)) if hidden_dim else None)

    def forward(self, z: Tensor) -> Tensor:
        out = self.linear(z)
        return out if self.mlp is None else out + self.mlp(z)


def _mlp(in_dim: int, hidden_dim: int | None, out_dim: int, dropout: float) -> nn.Module:
    return _Head(in_dim, hidden_dim, out_dim, dropout)


class DiagnosisHead(nn.Module):
    """Class logits ``(B, n_classes)`` (softmax / cross-entropy; binary tasks use ``n_classes=2``)."""

    def __init__(self, in_dim: int, n_classes: int, *, hidden_dim: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"DiagnosisHead: n_classes must be >= 2 (binary = 2), got {n_classes}")
        self.n_classes = int(n_classes)
        self.net = _mlp(in_dim, hidden_dim, self.n_classes, dropout)

    def forward(self, z: Tensor) -> Tensor:
        """``z (B, D)`` -> logits ``(B, n_classes)``."""
        return self.net(z)


class SurvivalHead(nn.Module):
    """Cox log-risk ``(B,)``: a higher value indicates a higher hazard (shorter expected survival)."""

    def __init__(self, in_dim: int, *, hidden_dim: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = _mlp(in_dim, hidden_dim, 1, dropout)

    def forward(self, z: Tensor) -> Tensor:
        """``z (B, D)`` -> log-risk ``(B,)``."""
        return self.net(z).squeeze(-1)


class ResponseHead(nn.Module):
    """Treatment-conditioned response logit: one output per treatment, ``f(z)[:, treatment] -> (B,)``.

    Each treatment has its own (linear + optional MLP) readout of the fused embedding, so predictive
    biomarkers can act differently under each treatment (an EGFR mutation helps under a TKI and hurts under
    immunotherapy); a shared embedding of the treatment added to ``z`` could only shift the logit.

    ``treatment`` is either indices ``(B,)`` long in ``[0, n_treatments)`` or a float one-hot / multi-hot
    ``(B, n_treatments)`` (combination therapies sum their logits). Index ``-1`` (unknown treatment) gives
    a NaN logit for that row; such rows must carry no response label.
    """

    def __init__(
        self,
        in_dim: int,
        n_treatments: int,
        *,
        hidden_dim: int | None = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if n_treatments < 1:
            raise ValueError(f"ResponseHead: n_treatments must be >= 1, got {n_treatments}")
        self.n_treatments = int(n_treatments)
        self.net = _mlp(in_dim, hidden_dim, self.n_treatments, dropout)

    def forward(self, z: Tensor, treatment: Tensor) -> Tensor:
        """``z (B, D)``, treatment ``(B,)`` long or ``(B, T)`` float -> response logit ``(B,)``."""
        if treatment.ndim == 1:
            if (treatment >= self.n_treatments).any():
                raise ValueError(f"ResponseHead: treatment index >= n_treatments={self.n_treatments}")
            unknown = treatment < 0
            onehot = nn.functional.one_hot(treatment.long().clamp_min(0), self.n_treatments).to(z.dtype)
        elif treatment.shape == (z.shape[0], self.n_treatments):
            unknown, onehot = None, treatment.to(z.dtype)
        else:
            raise ValueError(
                f"ResponseHead: treatment must be (B,) indices or (B, {self.n_treatments}) one-hot, "
                f"got shape {tuple(treatment.shape)}"
            )
        logit = (self.net(z) * onehot).sum(dim=1)
        if unknown is not None:
            logit = torch.where(unknown, torch.full_like(logit, float("nan")), logit)
        return logit

    def all_treatments(self, z: Tensor) -> Tensor:
        """Logits for every candidate treatment: ``z (B, D)`` -> ``(B, n_treatments)``."""
        return self.net(z)


class BreslowEstimator:
    """Breslow baseline hazard, fitted after training, for ``S(t | x) = S0(t) ** exp(log_risk(x))``.

    ``H0(t) = sum_{t_i <= t} d_i / sum_{j: T_j >= t_i} exp(r_j)`` over the unique event times ``t_i``.
    The fitted state is two float64 arrays (``event_times`` in days, ``cum_baseline_hazard``), saved with
    :meth:`to_dict` and restored with :meth:`from_dict`. Before the first event time ``S0 = 1``; after the
    last one ``S0`` stays at its last value (no extrapolation).
    """

    def __init__(self, event_times: np.ndarray | None = None, cum_baseline_hazard: np.ndarray | None = None) -> None:
        self.event_times = None if event_times is None else np.asarray(event_times, dtype=np.float64)
        self.cum_baseline_hazard = (
            None if cum_baseline_hazard is None else np.asarray(cum_baseline_hazard, dtype=np.float64)
        )

    def fit(self, log_risk: np.ndarray, time: np.ndarray, event: np.ndarray) -> BreslowEstimator:
        """Fit on training-set log-risks ``(N,)``, times ``(N,)`` in days and events ``(N,)`` bool."""
        log_risk, time = np.asarray(log_risk, np.float64).ravel(), np.asarray(time, np.float64).ravel()
        event = np.asarray(event).astype(bool).ravel()
        if not (log_risk.shape == time.shape == event.shape):
            raise ValueError(
                f"BreslowEstimator.fit: log_risk, time, event lengths differ "
                f"({log_risk.size}, {time.size}, {event.size})"
            )
        if not (np.isfinite(log_risk).all() and np.isfinite(time).all()):
            raise ValueError("BreslowEstimator.fit: log_risk and time must be finite")
        if not event.any():
            raise ValueError("BreslowEstimator.fit: all samples are censored")
        order = np.argsort(time, kind="mergesort")
        t_sorted, r_sorted = time[order], np.exp(log_risk[order] - log_risk.max())
        at_risk = np.cumsum(r_sorted[::-1])[::-1]
        uniq = np.unique(time[event])
        first = np.searchsorted(t_sorted, uniq, side="left")
        deaths = np.bincount(np.searchsorted(uniq, time[event]), minlength=uniq.size).astype(np.float64)
        self.event_times = uniq
        self.cum_baseline_hazard = np.cumsum(deaths / at_risk[first]) * np.exp(-log_risk.max())
        return self

    def _check_fitted(self) -> None:
        if self.event_times is None or self.cum_baseline_hazard is None:
            raise RuntimeError("BreslowEstimator: call fit() (or from_dict()) before predicting")

    def baseline_cumulative_hazard(self, times: np.ndarray) -> np.ndarray:
        """``H0(t)`` at ``times (T,)`` in days."""
        self._check_fitted()
        idx = np.searchsorted(self.event_times, np.asarray(times, np.float64), side="right") - 1
        return np.where(idx >= 0, self.cum_baseline_hazard[np.clip(idx, 0, None)], 0.0)

    def predict_survival(self, log_risk: np.ndarray, times: np.ndarray) -> np.ndarray:
        """``S(t | x)`` for log-risks ``(N,)`` at ``times (T,)`` days -> ``(N, T)`` probabilities."""
        h0 = self.baseline_cumulative_hazard(times)[None, :]
        with np.errstate(over="ignore", invalid="ignore"):
            surv = np.exp(-np.exp(np.asarray(log_risk, np.float64).ravel())[:, None] * h0)
        return np.where(h0 == 0.0, 1.0, surv)

    def to_dict(self) -> dict[str, list[float]]:
        """Plain lists, e.g. for JSON next to a checkpoint."""
        self._check_fitted()
        return {
            "event_times": self.event_times.tolist(),
            "cum_baseline_hazard": self.cum_baseline_hazard.tolist(),
        }

    @classmethod
    def from_dict(cls, state: dict[str, list[float]]) -> BreslowEstimator:
        """Inverse of :meth:`to_dict`."""
        return cls(np.asarray(state["event_times"]), np.asarray(state["cum_baseline_hazard"]))
