"""Evaluation figures (PNG, matplotlib Agg): calibration, Kaplan-Meier curves by risk group, ROC curves, and
the model next to its baselines and ablations with intervals."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402
from sksurv.nonparametric import kaplan_meier_estimator  # noqa: E402

CALIBRATION_COLUMNS = 3  # panels per row: five in one row (2000 x 400 px) had unreadable text once scaled to a page


def plot_calibration(path: Path, panels: list[dict]) -> None:
    """One panel per item ``{"title", "predicted" [...], "observed" [...], "n" [...]}``: observed against
    predicted event probability per bin, point size by bin size, with the identity line; at most
    :data:`CALIBRATION_COLUMNS` panels a row (4 x 4 inches each, 100 dpi)."""
    columns = min(CALIBRATION_COLUMNS, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 4 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels, strict=False):
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


COMPARISON_COLOURS = {"model": "C0", "baseline": "C7", "only": "C2", "without": "C1"}
COMPARISON_KINDS = {"model": "the model", "baseline": "baseline", "only": "one modality (only_*)",
                    "without": "modality removed at test (without_*)"}


def plot_comparison(path: Path, panels: list[dict]) -> None:
    """A forest plot per task ``{"title", "xlabel", "rows": [{"label", "kind", "value", "low", "high"}]}``:
    each row's test score as a dot with its 95% interval (``low``/``high`` None: no bar), coloured by
    ``kind`` (``model``, ``baseline``, ``only``, ``without``), top to bottom in the given order, with a grey
    dashed line at chance (0.5) and a thin line at the first row's (the model's) score."""
    heights = [max(2.0, 0.35 * len(panel["rows"]) + 1.0) for panel in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, sum(heights) + 0.5), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, panel in zip(axes[:, 0], panels, strict=True):
        rows = panel["rows"]
        y = np.arange(len(rows))[::-1]
        for pos, row in zip(y, rows, strict=True):
            colour = COMPARISON_COLOURS[row["kind"]]
            if row["low"] is not None and row["high"] is not None:
                ax.plot([row["low"], row["high"]], [pos, pos], color=colour, linewidth=2, alpha=0.6)
            ax.plot(row["value"], pos, "o", color=colour, markersize=7 if row["kind"] == "model" else 5)
        ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
        ax.axvline(rows[0]["value"], color=COMPARISON_COLOURS["model"], linewidth=0.8, alpha=0.5)
        ax.set_yticks(y, [row["label"] for row in rows])
        ax.set(xlabel=panel["xlabel"], title=panel["title"], ylim=(-0.7, len(rows) - 0.3))
        ax.grid(axis="x", alpha=0.3)
    handles = [plt.Line2D([], [], color=COMPARISON_COLOURS[k], marker="o", label=label)
               for k, label in COMPARISON_KINDS.items()]
    fig.legend(handles=handles, loc="upper center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / sum(heights)))
    fig.savefig(path, dpi=100)
    plt.close(fig)
