"""Tabular baselines fitted on the same training split as the model (scikit-learn / scikit-survival).

Inputs are the cohort's tabular matrix ``X (N, F)`` (NaN = missing): median imputation with missing-value
indicators and standardisation, all fitted on the training rows only.

- survival: ``coxnet`` (elastic-net Cox, ``l1_ratio=0.5``; the penalty is chosen on the validation split by
  Harrell's C, then refitted with a baseline hazard) and ``rsf`` (random survival forest);
- diagnosis: ``logistic`` (multinomial logistic regression, L2) on the tabular features the diagnosis head
  reads; ``image_logistic``, the same on image thumbnails (:func:`image_thumbnails`) when it reads the image:
  the simplest reference a CNN has to beat;
- late fusion (:mod:`fusion.evaluate`): :func:`fit_cox_stack`, a Cox model of the single-modality models'
  log-risks with a fixed mild ridge penalty, fitted on the validation split;
- response: ``logistic`` on ``[x, one-hot(treatment), x * one-hot(treatment)]`` (treatment interactions).

Each ``fit_*`` returns predictions for the requested rows: risk scores (higher = higher hazard) and a
function giving ``S(t | x)`` at times in days, or class probabilities.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as nnf
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sksurv.ensemble import RandomSurvivalForest
from sksurv.linear_model import CoxnetSurvivalAnalysis, CoxPHSurvivalAnalysis
from sksurv.metrics import concordance_index_censored
from sksurv.util import Surv

SurvivalFn = Callable[[np.ndarray], np.ndarray]
THUMBNAIL_SIDE = 16  # pixels: 256 features per channel, enough for coarse shape and intensity
STACK_RIDGE = 1.0  # late fusion's Cox ridge penalty (scikit-survival's alpha, on standardised inputs): fixed


@dataclass
class SurvivalPrediction:
    """Risk ``(n,)`` (higher = higher hazard) and ``survival(times (T,)) -> (n, T)`` for predicted rows."""

    risk: np.ndarray
    survival: SurvivalFn


def preprocessor():
    """Median imputation + missing indicators + standardisation (fit on training rows)."""
    return make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler())


def observed_columns(X: np.ndarray, train: np.ndarray) -> np.ndarray:  # noqa: N803
    """``X`` without the columns that have no observed value in the training rows."""
    return X[:, ~np.isnan(X[train]).all(axis=0)]


def _step_functions(functions, times: np.ndarray) -> np.ndarray:
    """Evaluate scikit-survival survival step functions at ``times``: 1 before their first time (no event yet;
    scikit-survival returns the value at that time there), the last value after their domain."""
    times = np.asarray(times, dtype=np.float64)
    out = np.empty((len(functions), len(times)))
    for i, fn in enumerate(functions):
        clipped = np.clip(times, fn.domain[0], fn.domain[1])
        out[i] = np.where(times < fn.x[0], 1.0, fn(clipped))
    return np.clip(out, 0.0, 1.0)


def fit_coxnet(X: np.ndarray, time: np.ndarray, event: np.ndarray, train: np.ndarray, val: np.ndarray,  # noqa: N803
               predict: np.ndarray, *, l1_ratio: float = 0.5) -> SurvivalPrediction:
    """Elastic-net Cox path on ``train`` rows, the penalty chosen on ``val`` rows (Harrell's C; the middle of
    the path without validation events), predictions for ``predict`` rows. Rows index ``X``, ``time`` (days)
    and ``event``."""
    X = observed_columns(X, train)  # noqa: N806
    prep = preprocessor().fit(X[train])
    xt, xv, xp = (prep.transform(X[r]) for r in (train, val, predict))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (ConvergenceWarning, UserWarning, RuntimeWarning))
        path, alpha = _coxnet_path(xt, time[train], event[train], xv, time[val], event[val], l1_ratio,
                                   baseline=True)
        risk = path.predict(xp, alpha=alpha)
        functions = path.predict_survival_function(xp, alpha=alpha)
    return SurvivalPrediction(risk, lambda times: _step_functions(functions, times))


def coxnet_coefficients(X: np.ndarray, time: np.ndarray, event: np.ndarray, train: np.ndarray,  # noqa: N803
                        val: np.ndarray, *, l1_ratio: float = 0.5) -> tuple[np.ndarray, float]:
    """An elastic-net Cox model on ``X`` as coefficients on ``X``'s own scale: the penalty path and choice of
    :func:`fit_coxnet`, without its imputation (the risk offset's inputs, :mod:`fusion.models.offset`).

    ``X (N, F)`` must have no NaN (e.g. features with 0 where missing plus observed flags). Columns are
    standardised for the fit (constant columns get 0); the returned ``(F,)`` coefficients undo that, so the
    log-risk is ``X @ coef`` up to a constant. Also returns the chosen penalty ``alpha``.
    """
    if np.isnan(X).any():
        raise ValueError("coxnet_coefficients: X has NaN; encode missing values first")
    mean, scale = X[train].mean(axis=0), X[train].std(axis=0)
    varying = scale > 1e-12
    if not varying.any():
        return np.zeros(X.shape[1]), float("nan")  # nothing to rank by: no offset
    xs = (X[:, varying] - mean[varying]) / scale[varying]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (ConvergenceWarning, UserWarning, RuntimeWarning))
        path, alpha = _coxnet_path(xs[train], time[train], event[train], xs[val], time[val], event[val],
                                   l1_ratio, baseline=False)
    coef = np.zeros(X.shape[1])
    coef[varying] = path.coef_[:, int(np.argmin(np.abs(path.alphas_ - alpha)))] / scale[varying]
    return coef, float(alpha)


def _coxnet_path(xt: np.ndarray, time_t: np.ndarray, event_t: np.ndarray, xv: np.ndarray, time_v: np.ndarray,
                 event_v: np.ndarray, l1_ratio: float, *, baseline: bool) -> tuple[CoxnetSurvivalAnalysis, float]:
    """The elastic-net Cox path fitted on the training rows and the penalty with the best Harrell's C on the
    validation rows (the middle of the path when they have no comparable pair: no event, or only events after
    every other patient's follow-up, as a validation split of two or three patients can have)."""
    path = CoxnetSurvivalAnalysis(l1_ratio=l1_ratio, alpha_min_ratio=0.01, n_alphas=30, max_iter=10_000,
                                  fit_baseline_model=baseline)
    path.fit(xt, Surv.from_arrays(event_t.astype(bool), time_t))
    alpha = path.alphas_[len(path.alphas_) // 2]
    if _has_comparable_pair(time_v, event_v):
        scores = []
        for a in path.alphas_:
            risk = path.predict(xv, alpha=a)
            scores.append(concordance_index_censored(event_v.astype(bool), time_v, risk)[0]
                          if np.ptp(risk) > 0 else 0.5)
        alpha = path.alphas_[int(np.argmax(scores))]
    return path, float(alpha)


def _has_comparable_pair(time: np.ndarray, event: np.ndarray) -> bool:
    """Whether Harrell's C is defined: some patient's event comes before another patient's time."""
    event = np.asarray(event).astype(bool)
    return bool(event.any() and (np.asarray(time)[event].min() < np.asarray(time).max()))


def fit_cox_stack(X: np.ndarray, time: np.ndarray, event: np.ndarray, fit: np.ndarray,  # noqa: N803
                  predict: np.ndarray, *, alpha: float = STACK_RIDGE) -> SurvivalPrediction:
    """A Cox model of a few risk scores ``X`` (e.g. the single-modality models' log-risks: late fusion), fitted on
    ``fit`` rows with a fixed mild ridge penalty ``alpha`` on the standardised columns (Efron ties, Breslow
    baseline); predictions for ``predict`` rows.

    Nothing is tuned on ``fit``: choosing the penalty by the C-index of the rows the model is fitted on (as
    :func:`fit_coxnet` with ``val = train`` would) picks the weakest penalty, and with two or three inputs and
    a validation split of a few dozen patients a cross-validated choice is noisier than a fixed one.
    """
    X = observed_columns(X, fit)  # noqa: N806
    prep = preprocessor().fit(X[fit])
    model = CoxPHSurvivalAnalysis(alpha=alpha, ties="efron")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (ConvergenceWarning, UserWarning, RuntimeWarning))
        model.fit(prep.transform(X[fit]), Surv.from_arrays(event[fit].astype(bool), time[fit]))
        xp = prep.transform(X[predict])
        functions = model.predict_survival_function(xp)
    return SurvivalPrediction(model.predict(xp), lambda times: _step_functions(functions, times))


def fit_rsf(X: np.ndarray, time: np.ndarray, event: np.ndarray, train: np.ndarray, predict: np.ndarray,  # noqa: N803
            *, seed: int = 0, n_estimators: int = 200) -> SurvivalPrediction:
    """Random survival forest on ``train`` rows (imputed, no scaling needed), predictions for ``predict``."""
    X = observed_columns(X, train)  # noqa: N806
    imputer = SimpleImputer(strategy="median", add_indicator=True).fit(X[train])
    model = RandomSurvivalForest(n_estimators=n_estimators, min_samples_leaf=6, max_features="sqrt",
                                 random_state=seed, n_jobs=1)
    model.fit(imputer.transform(X[train]), Surv.from_arrays(event[train].astype(bool), time[train]))
    xp = imputer.transform(X[predict])
    return SurvivalPrediction(model.predict(xp),
                              lambda times: _step_functions(model.predict_survival_function(xp), times))


def fit_diagnosis(X: np.ndarray, labels: np.ndarray, train: np.ndarray, predict: np.ndarray,  # noqa: N803
                  n_classes: int) -> np.ndarray:
    """Multinomial logistic regression; returns ``(len(predict), n_classes)`` probabilities (classes absent
    from the training rows get probability 0)."""
    X = observed_columns(X, train)  # noqa: N806
    model = make_pipeline(preprocessor(), LogisticRegression(C=1.0, max_iter=5000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X[train], labels[train])
    prob = np.zeros((predict.size, n_classes))
    prob[:, model.classes_] = model.predict_proba(X[predict])
    return prob


def image_thumbnails(images: Iterable[torch.Tensor | None], side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """Image features ``(n, 1 + C * side * side)``: a has-image column (1 or 0), then the thumbnail: each series
    ``(S, C, H, W)`` averaged over its slices and area-averaged to ``side x side`` pixels (zeros where the image
    is None: the has-image column carries the difference, so a linear model needs no imputation)."""
    thumbs = [None if image is None else nnf.adaptive_avg_pool2d(image.float().mean(0), side).reshape(-1).numpy()
              for image in images]
    width = next((t.size for t in thumbs if t is not None), None)
    if width is None:
        raise ValueError("image_thumbnails: no image among the rows")
    return np.stack([np.zeros(1 + width) if t is None else np.concatenate([[1.0], t]) for t in thumbs])


def treatment_onehot(treatment: np.ndarray, n_treatments: int) -> np.ndarray:
    """``(N, n_treatments)`` 0/1 indicators of treatment indices ``(N,)``; -1 (none) gives a row of zeros."""
    treatment = np.asarray(treatment)
    return (treatment[:, None] == np.arange(n_treatments)[None, :]).astype(np.float64)


def _response_design(x: np.ndarray, treatment: np.ndarray, n_treatments: int) -> np.ndarray:
    onehot = treatment_onehot(treatment, n_treatments)
    interactions = (x[:, :, None] * onehot[:, None, :]).reshape(len(x), -1)
    return np.concatenate([x, onehot, interactions], axis=1)


def fit_response(X: np.ndarray, treatment: np.ndarray, response: np.ndarray, train: np.ndarray,  # noqa: N803
                 predict: np.ndarray, n_treatments: int) -> np.ndarray:
    """Logistic regression on features, treatment one-hot and their interactions; ``(len(predict),)``
    probability of response under each predicted row's own treatment."""
    X = observed_columns(X, train)  # noqa: N806
    prep = preprocessor().fit(X[train])
    design = _response_design(prep.transform(X[train]), treatment[train], n_treatments)
    model = LogisticRegression(C=0.5, max_iter=5000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(design, response[train].astype(int))
    design = _response_design(prep.transform(X[predict]), treatment[predict], n_treatments)
    return model.predict_proba(design)[:, 1]
