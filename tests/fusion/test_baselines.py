"""The elastic-net Cox coefficients behind the risk offset are the ``coxnet`` baseline's model."""

from __future__ import annotations

import numpy as np

from fusion.baselines import coxnet_coefficients, fit_coxnet
from fusion.metrics import harrell_c_index


def test_coxnet_coefficients_rank_as_the_coxnet_baseline_and_undo_the_scaling():
    rng = np.random.default_rng(0)
    n = 300
    x = np.column_stack([rng.normal(0, 1, n), rng.normal(5, 20, n), rng.normal(0, 1, (n, 4)), np.ones(n)])
    log_hazard = 0.8 * x[:, 0] + 0.05 * x[:, 1]  # the second feature matters on its own (wide) scale
    time = rng.exponential(np.exp(-log_hazard)) * 100
    event = rng.random(n) < 0.8
    train, val, test = np.arange(0, 200), np.arange(200, 250), np.arange(250, 300)

    coef, alpha = coxnet_coefficients(x, time, event, train, val)
    baseline = fit_coxnet(x, time, event, train, val, test)
    risk = x[test] @ coef
    np.testing.assert_allclose(risk - risk.mean(), baseline.risk - baseline.risk.mean(), atol=1e-6)
    assert alpha > 0 and coef[-1] == 0.0  # a constant column gets no weight
    assert coef[0] > 0 and coef[1] > 0 and abs(coef[1]) < abs(coef[0])  # per unit of the feature's own scale
    assert harrell_c_index(time[test], event[test], risk) > 0.7


def test_coxnet_coefficients_without_varying_columns_are_zero():
    x = np.ones((20, 3))
    coef, alpha = coxnet_coefficients(x, np.arange(1.0, 21.0), np.ones(20, bool), np.arange(15), np.arange(15, 20))
    assert np.all(coef == 0) and np.isnan(alpha)


def test_cox_stack_is_a_fixed_ridge_cox_model_of_the_standardised_scores():
    """Late fusion's survival model: nothing is tuned on the rows it is fitted on (the Coxnet path's penalty
    chosen by those rows' own C-index, as before, picked the weakest penalty)."""
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.util import Surv

    from fusion.baselines import STACK_RIDGE, fit_cox_stack

    rng = np.random.default_rng(1)
    n = 240
    truth = rng.normal(size=n)
    scores = np.column_stack([truth + rng.normal(0, s, n) for s in (0.5, 1.0, 2.0)]) * [1.0, 3.0, 0.2]
    time, event = rng.exponential(np.exp(-truth)) * 100, rng.random(n) < 0.7
    fit, test = np.arange(40), np.arange(40, n)
    stack = fit_cox_stack(scores, time, event, fit, test)
    z = (scores - scores[fit].mean(0)) / scores[fit].std(0)
    ref = CoxPHSurvivalAnalysis(alpha=STACK_RIDGE, ties="efron").fit(z[fit], Surv.from_arrays(event[fit], time[fit]))
    np.testing.assert_allclose(stack.risk, z[test] @ ref.coef_, atol=1e-6)
    assert STACK_RIDGE > 0 and (ref.coef_ > 0).all()
    surv = stack.survival(np.array([10.0, 100.0, 1000.0]))
    assert surv.shape == (test.size, 3) and (np.diff(surv, axis=1) <= 0).all()
    assert harrell_c_index(time[test], event[test], stack.risk) > 0.65


def test_penalty_choice_survives_a_validation_split_without_comparable_pairs():
    """Two validation patients, the one with the event followed longer: Harrell's C is undefined there (no
    comparable pair), so the penalty is the middle of the path, as without validation events (a 10-patient
    curated lake failed training with scikit-survival's 'no comparable pairs')."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 3))
    time = rng.exponential(300, 12)
    event = np.ones(12)
    train, val = np.arange(10), np.array([10, 11])
    time[10], event[10] = 100.0, 0.0
    time[11], event[11] = 200.0, 1.0
    coef, alpha = coxnet_coefficients(x, time, event, train, val)
    assert coef.shape == (3,) and np.isfinite(alpha)
    prediction = fit_coxnet(x, time, event, train, val, val)
    assert np.isfinite(prediction.risk).all()


def test_baseline_survival_is_one_before_the_first_training_time():
    """S(t | x) = 1 before any training event: scikit-survival's step functions return their first value there,
    S at the first training time (an event here: 0.96 for the highest-risk patient), which understated the
    baselines' survival at times before it."""
    from fusion.baselines import fit_cox_stack, fit_rsf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3))
    time = rng.exponential(500 * np.exp(-(x[:, 0] - 0.8 * x[:, 1]))) + 10.0
    event = rng.random(120) < 0.7
    event[np.argmin(time)] = True  # the first training time is an event
    train, val, test = np.arange(80), np.arange(80, 100), np.arange(100, 120)
    first = time[train].min()
    for fitted in (fit_coxnet(x, time, event, train, val, test), fit_rsf(x, time, event, train, test, n_estimators=20),
                   fit_cox_stack(x, time, event, train, test)):
        surv = fitted.survival(np.array([0.0, first / 2, first, 2 * time.max()]))
        assert (surv[:, :2] == 1.0).all()
        assert (surv[:, 2] < 1.0).any() and (np.diff(surv, axis=1) <= 0).all()  # then falls, held after the end
