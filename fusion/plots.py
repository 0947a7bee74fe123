"""Evaluation figures (PNG, matplotlib Agg): calibration, Kaplan-Meier curves by risk group, ROC curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402
from sksurv.nonparametric import kaplan_meier_estimator  # noqa: E402


def plot_calibration(path: Path, panels: list[dict]) -> None:
    """One panel per item ``{"title", "predicted" [...], "observed" [...], "n" [...]}``: observed against
    predicted event probability per bin, point size by bin size, with the identity line."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        sizes = 20 + 200 * np.asarray(panel["n"]) / max(1, max(panel["n"]))
        ax.scatter(panel["predicted"], panel["observed"], s=sizes, alpha=0.7)
        ax.plot(panel["predicted"], panel["observed"], alpha=0.5)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted probability",
               ylabel="observed (Kaplan-Meier / rate)", title=panel["title"])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_km_groups(path: Path, time: np.ndarray, event: np.ndarray, groups: np.ndarray, labels: list[str], *,
                   title: str) -> None:
    """Kaplan-Meier curves of the test patients in each predicted-risk group (``groups`` (N,) in 0..G-1)."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for g, label in enumerate(labels):
        rows = groups == g
        if rows.sum() == 0:
            continue
        if event[rows].any():
            t, s = kaplan_meier_estimator(event[rows].astype(bool), time[rows])
            t, s = np.concatenate([[0.0], t]), np.concatenate([[1.0], s])
        else:
            t, s = np.array([0.0, time[rows].max()]), np.array([1.0, 1.0])
        ax.step(t, s, where="post", label=f"{label} (n={int(rows.sum())})")
    ax.set(xlabel="days from index", ylabel="survival probability", ylim=(0, 1.02), title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_roc(path: Path, curves: list[dict]) -> None:
    """ROC curves, one per ``{"label", "y" (N,) 0/1, "score" (N,), "auc"}`` on one panel per ``group``."""
    groups = list(dict.fromkeys(c.get("group", "") for c in curves))
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 4.5), squeeze=False)
    for ax, group in zip(axes[0], groups, strict=True):
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        for curve in (c for c in curves if c.get("group", "") == group):
            fpr, tpr, _ = roc_curve(curve["y"], curve["score"])
            ax.plot(fpr, tpr, label=f"{curve['label']} (AUC {curve['auc']:.2f})")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title=group)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
