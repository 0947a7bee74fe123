"""Patient-level splits: stratified, seeded, honouring curated assignments; K-fold for cross-validation.

Results depend only on the patient keys (not their order), the strata and the seed.
"""

from __future__ import annotations

import numpy as np

from ingest.tables import SPLIT_ALIASES

SPLITS = ("train", "val", "test")


def strata_for(targets, how: str) -> np.ndarray:
    """Stratum label per patient: diagnosis class (-1 unknown), event (``nan`` time = unknown) or one group.

    Args:
        targets: a :class:`fusion.cohort.Targets`.
        how: ``"diagnosis"``, ``"event"`` or ``"none"``.
    """
    n = len(targets.diagnosis)
    if how == "diagnosis":
        return targets.diagnosis.astype(str)
    if how == "event":
        known = ~np.isnan(targets.time)
        return np.where(known, np.where(targets.event, "event", "censored"), "unknown")
    if how == "none":
        return np.full(n, "all")
    raise ValueError(f"unknown stratification {how!r}; use diagnosis, event or none")


def _stratified_order(keys: np.ndarray, strata: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``keys`` ordered so that every prefix holds each stratum in proportion.

    Within a stratum of size m, patients (shuffled) get positions ``(j + u) / m`` with one uniform offset ``u``;
    sorting all patients by position interleaves the strata.
    """
    position = np.empty(keys.size)
    for stratum in sorted(set(strata.tolist())):
        members = np.flatnonzero(strata == stratum)
        members = members[np.argsort(keys[members], kind="mergesort")]
        members = members[rng.permutation(members.size)]
        position[members] = (np.arange(members.size) + rng.random()) / members.size
    return np.lexsort((keys, position))


def assign_splits(keys: np.ndarray, strata: np.ndarray, *, val_fraction: float, test_fraction: float,
                  seed: int, fixed: np.ndarray | None = None) -> np.ndarray:
    """Assign each patient to train / val / test.

    Args:
        keys: ``(N,)`` patient keys.
        strata: ``(N,)`` stratum labels (same proportions in every split).
        val_fraction, test_fraction: fractions of the patients without a fixed split.
        seed: random seed.
        fixed: ``(N,)`` curated split per patient (train | val | test, a few aliases; None/NaN/"" = assign).

    Returns:
        ``(N,)`` object array of ``"train"``, ``"val"``, ``"test"``.
    """
    keys = np.asarray(keys).astype(str)
    strata = np.asarray(strata).astype(str)
    out = np.full(keys.size, "", dtype=object)
    if fixed is not None:
        unknown = 0
        for i, value in enumerate(fixed):
            if isinstance(value, str) and value.strip():
                name = SPLIT_ALIASES.get(value.strip().lower())
                unknown += name is None
                out[i] = name or ""
        if unknown:  # not the values: a labels table changed outside tumorboard may hold anything
            raise ValueError(f"labels: {unknown} split value(s) are not one of {', '.join(SPLITS)} (or an alias: "
                             f"{', '.join(a for a in SPLIT_ALIASES if a not in SPLITS)}); load the labels again "
                             "with `tumorboard ingest labels`, which checks them")
    free = np.flatnonzero(out == "")
    order = free[_stratified_order(keys[free], strata[free], np.random.default_rng(seed))]
    n_test, n_val = round(free.size * test_fraction), round(free.size * val_fraction)
    out[order[:n_test]] = "test"
    out[order[n_test:n_test + n_val]] = "val"
    out[order[n_test + n_val:]] = "train"
    return out


def curated_test(fixed: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: the curated split (see :func:`assign_splits`) says ``test``."""
    return np.array([isinstance(v, str) and SPLIT_ALIASES.get(v.strip().lower()) == "test" for v in fixed], dtype=bool)


def kfold_assignments(keys: np.ndarray, strata: np.ndarray, k: int, *, val_fraction: float,
                      seed: int) -> list[np.ndarray]:
    """K stratified folds: in fold ``i`` its patients are ``"test"``, and of the others a stratified
    ``val_fraction`` is ``"val"`` (for early stopping) and the rest ``"train"``.

    Returns:
        ``k`` arrays ``(N,)`` of split names.
    """
    keys = np.asarray(keys).astype(str)
    strata = np.asarray(strata).astype(str)
    if k < 2 or k > keys.size:
        raise ValueError(f"--cv K needs 2 <= K <= number of patients ({keys.size}), got {k}")
    rng = np.random.default_rng(seed)
    fold = np.empty(keys.size, dtype=np.int64)
    fold[_stratified_order(keys, strata, rng)] = np.arange(keys.size) % k
    folds = []
    for i in range(k):
        out = np.full(keys.size, "test", dtype=object)
        rest = np.flatnonzero(fold != i)
        out[rest] = assign_splits(keys[rest], strata[rest], val_fraction=val_fraction, test_fraction=0.0,
                                  seed=seed + 1 + i)
        folds.append(out)
    return folds
