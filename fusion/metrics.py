"""Evaluation metrics: numpy arrays in, floats out, options keyword-only, inputs checked at the boundary.

Survival conventions follow scikit-survival: ``time`` (N,) in days, ``event`` (N,) bool, ``risk`` (N,) where a
higher value indicates a higher risk (earlier event); survival probabilities are ``S(t | x)`` in [0, 1].
Metrics that weight by the censoring distribution (Uno's C, time-dependent AUC, Brier) take the training
set's ``train_time`` / ``train_event`` as keywords, so :func:`bootstrap_ci` resamples only the test arrays;
they censor test follow-up at the largest training time (the censoring weights end there) and only evaluate
times below it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from sklearn import metrics as skm
from sksurv.metrics import (
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
)
from sksurv.metrics import (
    integrated_brier_score as _sksurv_ibs,
)
from sksurv.nonparametric import CensoringDistributionEstimator, kaplan_meier_estimator
from sksurv.util import Surv


def _vector(name: str, a: object, *, dtype: type = np.float64) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {arr.shape}")
    if dtype is bool:
        if arr.dtype != bool and not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must be boolean (or 0/1)")
        return arr.astype(bool)
    arr = arr.astype(dtype)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values; drop those rows first")
    return arr


def _same_length(**arrays: np.ndarray) -> int:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"arrays must have the same length, got {lengths}")
    n = next(iter(lengths.values()))
    if n < 2:
        raise ValueError("need at least two samples")
    return n


def _survival(time: object, event: object, prefix: str = "") -> tuple[np.ndarray, np.ndarray]:
    t, e = _vector(f"{prefix}time", time), _vector(f"{prefix}event", event, dtype=bool)
    _same_length(**{f"{prefix}time": t, f"{prefix}event": e})
    if not e.any():
        raise ValueError(f"all samples are censored ({prefix}event has no True)")
    return t, e


def harrell_c_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's concordance index of ``risk`` (N,) against ``time`` (N,) days and ``event`` (N,) bool."""
    t, e = _survival(time, event)
    r = _vector("risk", risk)
    _same_length(time=t, risk=r)
    return float(concordance_index_censored(e, t, r)[0])


def uno_c_index(
    time: np.ndarray,
    event: np.ndarray,
    risk: np.ndarray,
    *,
    train_time: np.ndarray,
    train_event: np.ndarray,
    tau: float | None = None,
) -> float:
    """Uno's IPCW concordance index, truncated at ``tau`` days (default: the largest training time;
    :func:`uno_tau` gives a more stable one, which ``tumorboard evaluate`` uses).

    The censoring distribution is estimated on the training set; only events before ``tau`` anchor a
    comparison, and test times from ``tau`` on count as censored there.
    """
    t, e = _survival(time, event)
    tt, te = _survival(train_time, train_event, "train_")
    r = _vector("risk", risk)
    _same_length(time=t, risk=r)
    tau = float(tt.max()) if tau is None else float(tau)
    if tau > tt.max():
        raise ValueError(f"tau={tau} exceeds the largest training time {tt.max()}; lower tau")
    t_clip, e_clip = np.minimum(t, tau), e & (t < tau)
    if not e_clip.any():
        raise ValueError(f"no test event at or before tau={tau}")
    return float(concordance_index_ipcw(Surv.from_arrays(te, tt), Surv.from_arrays(e_clip, t_clip), r, tau=tau)[0])


UNO_CENSORING_FLOOR = 0.2  # default truncation of Uno's C: where the training G(t) falls below this


def uno_tau(train_time: np.ndarray, train_event: np.ndarray, *, floor: float = UNO_CENSORING_FLOOR) -> float:
    """A truncation time for :func:`uno_c_index`: the first training time at which the training censoring
    survival ``G(t)`` (Kaplan-Meier of the censoring times) falls below ``floor``, else the largest training
    time.

    Uno's C weights a comparison anchored at an event at ``T_i`` by ``1 / G(T_i)^2``: events compared before
    this ``tau`` get at most ``1 / floor^2`` (25 at 0.2), where the largest training time lets a handful of late
    events, seen only because few patients are followed that long, carry weights of 30 or more.
    """
    tt, te = _survival(train_time, train_event, "train_")
    if not 0 < floor < 1:
        raise ValueError(f"floor must lie in (0, 1), got {floor}")
    cens = CensoringDistributionEstimator().fit(Surv.from_arrays(te, tt))
    times = np.unique(tt)
    times = times[times < tt.max()]
    below = times[cens.predict_proba(times) < floor] if times.size else times
    return float(below[0]) if below.size else float(tt.max())


def _clip_to_training(t: np.ndarray, e: np.ndarray, tt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Censor test follow-up at the largest training time, where the censoring weights end.

    Exact for every horizon below that time: such subjects are controls (still event-free) either way.
    """
    limit = tt.max()
    return np.minimum(t, limit), e & (t < limit)


def _check_horizons(name: str, horizons: np.ndarray, t: np.ndarray, tt: np.ndarray) -> None:
    lo, hi = t.min(), min(t.max(), tt.max())
    bad = horizons[(horizons < lo) | (horizons >= hi)]
    if bad.size:
        raise ValueError(
            f"{name} {bad.tolist()} must lie in [{lo}, {hi}) days: within the test follow-up and "
            "below the largest training time"
        )


def time_dependent_auc(
    time: np.ndarray,
    event: np.ndarray,
    risk: np.ndarray,
    *,
    horizons: np.ndarray,
    train_time: np.ndarray,
    train_event: np.ndarray,
) -> dict[float, float]:
    """Cumulative/dynamic AUC (Uno / Hung-Chiang) at each horizon in days -> ``{horizon: auc}``."""
    t, e = _survival(time, event)
    tt, te = _survival(train_time, train_event, "train_")
    r = _vector("risk", risk)
    _same_length(time=t, risk=r)
    h = np.unique(_vector("horizons", np.atleast_1d(horizons)))
    _check_horizons("horizons", h, t, tt)
    t, e = _clip_to_training(t, e, tt)
    auc, _ = cumulative_dynamic_auc(Surv.from_arrays(te, tt), Surv.from_arrays(e, t), r, h)
    return {float(k): float(v) for k, v in zip(h, np.atleast_1d(auc), strict=True)}


def survival_time_grid(time: np.ndarray, *, train_time: np.ndarray, n_points: int = 50) -> np.ndarray:
    """Evaluation times (days) for the Brier score: ``n_points`` between the 10th and 90th percentile of the
    test times, kept below the largest test and training time as scikit-survival requires."""
    t, tt = _vector("time", time), _vector("train_time", train_time)
    lo, hi = np.quantile(t, [0.1, 0.9])
    hi = min(hi, np.nextafter(min(t.max(), tt.max()), -np.inf))
    if hi <= lo:
        raise ValueError("test follow-up is too short or too concentrated to build a time grid")
    return np.linspace(lo, hi, n_points)


def integrated_brier_score(
    time: np.ndarray,
    event: np.ndarray,
    surv_prob: np.ndarray,
    *,
    times: np.ndarray,
    train_time: np.ndarray,
    train_event: np.ndarray,
    fixed_grid: bool = False,
) -> float:
    """Integrated Brier score of survival curves ``surv_prob (N, T)`` = ``S(times | x)``, lower is better.

    Columns at times outside ``[min test time, min(max test time, max training time))`` are dropped with a
    warning (scikit-survival cannot weight them); at least two must remain. See :func:`survival_time_grid`.

    ``fixed_grid=True`` integrates over every one of ``times`` instead (all must lie below the largest training
    time, where the censoring weights end), for a score that means the same on every bootstrap resample or
    subgroup: the same IPCW Brier score as scikit-survival's (``S^2 / G(T_i)`` for events by ``t``,
    ``(1 - S)^2 / G(t)`` for patients still at risk), which is also defined at times before the first or after
    the last test follow-up. On ``times`` inside the test follow-up both give the same number.
    """
    t, e = _survival(time, event)
    tt, te = _survival(train_time, train_event, "train_")
    grid = _vector("times", np.atleast_1d(times))
    prob = np.asarray(surv_prob, dtype=np.float64)
    if prob.shape != (len(t), len(grid)):
        raise ValueError(f"surv_prob must be (N, T) = {(len(t), len(grid))}, got {prob.shape}")
    if not np.isfinite(prob).all() or (prob < 0).any() or (prob > 1).any():
        raise ValueError("surv_prob must hold probabilities in [0, 1]")
    if (np.diff(grid) <= 0).any():
        raise ValueError("times must be strictly increasing")
    if fixed_grid:
        return _ibs_fixed_grid(t, e, prob, grid, tt, te)
    keep = (grid >= t.min()) & (grid < min(t.max(), tt.max()))
    if keep.sum() < 2:
        raise ValueError(
            f"fewer than two of the {len(grid)} times lie in [{t.min()}, {min(t.max(), tt.max())}); "
            "use survival_time_grid()"
        )
    if not keep.all():
        warnings.warn(
            f"integrated_brier_score: dropped {int((~keep).sum())} of {len(grid)} times outside the "
            "test follow-up / training range",
            stacklevel=2,
        )
    t, e = _clip_to_training(t, e, tt)
    return float(_sksurv_ibs(Surv.from_arrays(te, tt), Surv.from_arrays(e, t), prob[:, keep], grid[keep]))


def _ibs_fixed_grid(t: np.ndarray, e: np.ndarray, prob: np.ndarray, grid: np.ndarray, tt: np.ndarray,
                    te: np.ndarray) -> float:
    """IPCW integrated Brier score over all of ``grid`` (see :func:`integrated_brier_score`)."""
    if grid.size < 2:
        raise ValueError("fixed_grid needs at least two times")
    if grid[-1] >= tt.max():
        raise ValueError(f"times must lie below the largest training time {tt.max()} (the censoring weights end)")
    t, e = _clip_to_training(t, e, tt)
    cens = CensoringDistributionEstimator().fit(Surv.from_arrays(te, tt))
    g_event = np.ones_like(t)
    g_event[e] = cens.predict_proba(t[e])
    g_grid = cens.predict_proba(grid)
    if (g_event[e] <= 0).any() or (g_grid <= 0).any():
        raise ValueError("the training censoring distribution is zero at a test event time or a grid time")
    case = e[:, None] & (t[:, None] <= grid[None, :])
    control = t[:, None] > grid[None, :]
    scores = np.mean(np.where(case, prob**2 / g_event[:, None], 0.0)
                     + np.where(control, (1.0 - prob) ** 2 / g_grid[None, :], 0.0), axis=0)
    return float(np.trapezoid(scores, grid) / (grid[-1] - grid[0]))


def _km_at(time: np.ndarray, event: np.ndarray, horizon: float) -> float:
    """Kaplan-Meier survival at ``horizon`` (1 before the first time, last value after the last one)."""
    if not event.any():
        return 1.0
    km_t, km_s = kaplan_meier_estimator(event, time)
    idx = np.searchsorted(km_t, horizon, side="right") - 1
    return 1.0 if idx < 0 else float(km_s[idx])


def calibration_at_horizon(
    time: np.ndarray,
    event: np.ndarray,
    surv_at_horizon: np.ndarray,
    *,
    horizon: float,
    n_bins: int = 10,
    max_unfollowed: float = 0.5,
) -> dict[str, object]:
    """Predicted vs Kaplan-Meier observed event probability by ``horizon`` days, per predicted-risk bin.

    Args:
        time, event: test follow-up (N,) days and events (N,) bool.
        surv_at_horizon: predicted ``S(horizon | x)`` (N,).
        horizon: days.
        n_bins: number of quantile bins (deciles by default); ties may merge bins.
        max_unfollowed: the largest fraction of patients that may sit in bins without follow-up (below).

    Returns:
        ``{"predicted": [...], "observed": [...], "n": [...], "calibration_error": float,
        "n_bins_without_follow_up": int, "n_without_follow_up": int}`` where the lists hold one float (count)
        per non-empty bin followed up to ``horizon`` and ``calibration_error`` is their size-weighted mean
        ``|predicted - observed|``. A bin none of whose patients is followed to ``horizon`` (all event-free ones
        censored before it, with its Kaplan-Meier curve above 0) has no observed risk by ``horizon``: carrying
        its last Kaplan-Meier value forward would understate it, so the bin is left out and counted. Raises
        ValueError when such bins hold more than ``max_unfollowed`` of the patients.
    """
    t, e = _survival(time, event)
    s = _vector("surv_at_horizon", surv_at_horizon)
    _same_length(time=t, surv_at_horizon=s)
    if (s < 0).any() or (s > 1).any():
        raise ValueError("surv_at_horizon must hold probabilities in [0, 1]")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    p = 1.0 - s
    edges = np.unique(np.quantile(p, np.linspace(0, 1, n_bins + 1)[1:-1]))
    bins = np.searchsorted(edges, p, side="right")
    pred, obs, counts = [], [], []
    unfollowed_bins = unfollowed = 0
    for b in np.unique(bins):
        rows = bins == b
        km = _km_at(t[rows], e[rows], float(horizon))
        if km > 0 and not (t[rows] >= horizon).any():
            unfollowed_bins += 1
            unfollowed += int(rows.sum())
            continue
        pred.append(float(p[rows].mean()))
        obs.append(1.0 - km)
        counts.append(int(rows.sum()))
    if unfollowed > max_unfollowed * len(t) or not counts:
        raise ValueError(f"{unfollowed} of {len(t)} patients are in risk bins whose follow-up ends before "
                         f"{horizon:g} days; the calibration at that horizon is undefined")
    err = float(np.average(np.abs(np.array(pred) - np.array(obs)), weights=counts))
    return {"predicted": pred, "observed": obs, "n": counts, "calibration_error": err,
            "n_bins_without_follow_up": unfollowed_bins, "n_without_follow_up": unfollowed}


def _binary(y_true: object, score: object, score_name: str) -> tuple[np.ndarray, np.ndarray]:
    y = _vector("y_true", y_true, dtype=bool)
    s = _vector(score_name, score)
    _same_length(y_true=y, **{score_name: s})
    if y.all() or not y.any():
        raise ValueError("y_true has a single class; the metric is undefined")
    return y, s


def auroc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve: ``y_true`` (N,) 0/1, ``score`` (N,) higher = more likely positive."""
    y, s = _binary(y_true, score, "score")
    return float(skm.roc_auc_score(y, s))


def auprc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the precision-recall curve (average precision); chance level = positive prevalence."""
    y, s = _binary(y_true, score, "score")
    return float(skm.average_precision_score(y, s))


def _labels(y_true: object, y_pred: object) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(y_true), np.asarray(y_pred)
    if y.ndim != 1 or p.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D class labels, got shapes {y.shape} and {p.shape}")
    _same_length(y_true=y, y_pred=p)
    return y, p


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of ``y_pred`` (N,) equal to ``y_true`` (N,)."""
    y, p = _labels(y_true, y_pred)
    return float(np.mean(y == p))


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean per-class recall over the classes present in ``y_true``."""
    y, p = _labels(y_true, y_pred)
    return float(skm.balanced_accuracy_score(y, p))


def expected_calibration_error(y_true: np.ndarray, prob: np.ndarray, *, n_bins: int = 10) -> float:
    """Expected calibration error over ``n_bins`` equal-width probability bins.

    ``prob`` (N,) is P(y = 1) for binary ``y_true`` (N,) 0/1: ECE = sum_b (n_b / N) |mean(y) - mean(prob)| per
    bin. ``prob`` (N, C) (rows summing to 1) gives the top-label ECE: confidence = max prob, accuracy =
    argmax == y_true.
    """
    p = np.asarray(prob, dtype=np.float64)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if p.ndim == 1:
        y = _vector("y_true", y_true, dtype=bool).astype(np.float64)
        conf, hit = p, y
    elif p.ndim == 2:
        y = np.asarray(y_true)
        if y.ndim != 1 or not np.isin(y, np.arange(p.shape[1])).all():
            raise ValueError(f"y_true must be 1-D class indices in [0, {p.shape[1]})")
        conf, hit = p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)
    else:
        raise ValueError(f"prob must be (N,) or (N, C), got shape {p.shape}")
    _same_length(y_true=y, prob=p)
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("prob must hold probabilities in [0, 1]")
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        rows = bins == b
        ece += rows.mean() * abs(hit[rows].mean() - conf[rows].mean())
    return float(ece)


def multiclass_auroc(y_true: np.ndarray, prob: np.ndarray) -> float:
    """Macro one-vs-rest AUROC: ``y_true`` (N,) in [0, C), ``prob`` (N, C) rows summing to 1; every class must
    appear in ``y_true``."""
    p = np.asarray(prob, dtype=np.float64)
    y = np.asarray(y_true)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"prob must be (N, C) with C >= 2, got shape {p.shape}")
    if y.ndim != 1:
        raise ValueError(f"y_true must be 1-D class indices, got shape {y.shape}")
    _same_length(y_true=y, prob=p)
    absent = sorted(set(range(p.shape[1])) - set(np.unique(y).tolist()))
    if absent:
        raise ValueError(f"classes {absent} do not appear in y_true; one-vs-rest AUROC is undefined for them")
    if p.shape[1] == 2:
        return float(skm.roc_auc_score(y, p[:, 1]))
    return float(skm.roc_auc_score(y, p, multi_class="ovr", average="macro", labels=np.arange(p.shape[1])))


def bootstrap_ci(
    metric_fn: Callable[..., float],
    *arrays: np.ndarray,
    n_boot: int = 200,
    seed: int = 0,
    alpha: float = 0.05,
    groups: np.ndarray | None = None,
    metric_kwargs: dict | None = None,
) -> dict[str, float]:
    """Percentile bootstrap interval of ``metric_fn(*arrays, **metric_kwargs)``.

    Rows are resampled with replacement, by patient: with ``groups`` (N,) (e.g. patient keys, when a patient
    has several rows) whole groups are resampled. Resamples where the metric raises ValueError or is not
    finite (e.g. a single class, no event) are skipped and counted, with a warning.

    Returns:
        ``{"value", "ci_low", "ci_high", "n_boot", "n_skipped"}``: the metric on all rows, the
        ``(alpha/2, 1 - alpha/2)`` percentiles, the number of valid and of skipped resamples.
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array")
    arrays = tuple(np.asarray(a) for a in arrays)
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"bootstrap_ci: arrays must share their first dimension, got {[len(a) for a in arrays]}")
    if n_boot < 1 or not 0 < alpha < 1:
        raise ValueError(f"bootstrap_ci: need n_boot >= 1 and 0 < alpha < 1, got {n_boot}, {alpha}")
    kwargs = metric_kwargs or {}
    value = float(metric_fn(*arrays, **kwargs))
    rng = np.random.default_rng(seed)
    if groups is None:
        members = [np.array([i]) for i in range(n)]
    else:
        g = np.asarray(groups)
        if g.shape != (n,):
            raise ValueError(f"bootstrap_ci: groups must be (N,) = ({n},), got {g.shape}")
        _, inverse = np.unique(g, return_inverse=True)
        members = [np.flatnonzero(inverse == k) for k in range(inverse.max() + 1)]
    stats, skipped = [], 0
    for _ in range(n_boot):
        picks = rng.integers(0, len(members), len(members))
        rows = np.concatenate([members[k] for k in picks])
        try:
            v = float(metric_fn(*(a[rows] for a in arrays), **kwargs))
        except ValueError:
            v = float("nan")
        if np.isfinite(v):
            stats.append(v)
        else:
            skipped += 1
    if not stats:
        raise ValueError(f"bootstrap_ci: all {n_boot} resamples were degenerate; the metric needs more data")
    if skipped:
        warnings.warn(f"bootstrap_ci: skipped {skipped} of {n_boot} degenerate resamples", stacklevel=2)
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return {
        "value": value,
        "ci_low": float(low),
        "ci_high": float(high),
        "n_boot": len(stats),
        "n_skipped": skipped,
    }
