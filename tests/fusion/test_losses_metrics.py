"""Losses against reference implementations; metrics against sksurv / sklearn and constructed cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from sksurv.linear_model.coxph import BreslowEstimator as SksurvBreslow
from sksurv.metrics import (
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
)
from sksurv.metrics import (
    integrated_brier_score as sk_ibs,
)
from sksurv.nonparametric import CensoringDistributionEstimator
from sksurv.util import Surv

from fusion import metrics as M
from fusion.losses import CoxLoss, cox_nll, masked_bce_with_logits, masked_cross_entropy, multitask_loss
from fusion.models import BreslowEstimator


def efron_nll_reference(log_risk: np.ndarray, time: np.ndarray, event: np.ndarray) -> float:
    """Direct Efron negative partial log-likelihood (sum over events), one unique event time at a time."""
    risk = np.exp(log_risk)
    total = 0.0
    for t in np.unique(time[event]):
        tied = event & (time == t)
        m, at_risk, tied_sum = tied.sum(), risk[time >= t].sum(), risk[tied].sum()
        total += log_risk[tied].sum() - sum(np.log(at_risk - r / m * tied_sum) for r in range(m))
    return -total


def _survival_data(n: int, seed: int, ties: bool = True):
    rng = np.random.default_rng(seed)
    log_risk = rng.normal(size=n)
    time = rng.integers(1, 8, size=n).astype(float) if ties else rng.exponential(10, size=n)
    event = rng.random(n) < 0.6
    return log_risk, time, event


@pytest.mark.parametrize(("seed", "ties"), [(0, True), (1, True), (2, False)])
def test_cox_nll_matches_efron_reference(seed, ties):
    log_risk, time, event = _survival_data(40, seed, ties)
    assert not ties or len(np.unique(time[event])) < event.sum()  # the data really has ties
    ref = efron_nll_reference(log_risk, time, event)  # torchsurv 0.2.0 computes in float32: compare at 1e-6
    lr, t, e = torch.tensor(log_risk), torch.tensor(time), torch.tensor(event)
    assert float(cox_nll(lr, t, e, reduction="sum")) == pytest.approx(ref, rel=1e-6)
    assert float(cox_nll(lr, t, e)) == pytest.approx(ref / event.sum(), rel=1e-6)


def test_cox_nll_fits_the_same_coefficients_as_scikit_survival_efron():
    """Minimising cox_nll over a linear predictor gives scikit-survival's Efron CoxPH coefficients."""
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.util import Surv

    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 3))
    time = np.ceil(rng.exponential(np.exp(-x @ np.array([0.8, -0.5, 0.0])) * 10.0))  # whole days: ties
    event = rng.random(150) < 0.7
    assert len(np.unique(time[event])) < event.sum()
    reference = CoxPHSurvivalAnalysis(ties="efron").fit(x, Surv.from_arrays(event, time)).coef_
    beta = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    xt, tt, et = torch.tensor(x), torch.tensor(time), torch.tensor(event)
    optimiser = torch.optim.LBFGS([beta], max_iter=200, tolerance_grad=1e-10, tolerance_change=1e-12)

    def closure():
        optimiser.zero_grad()
        loss = cox_nll(xt @ beta, tt, et, reduction="sum")
        loss.backward()
        return loss

    optimiser.step(closure)
    np.testing.assert_allclose(beta.detach().numpy(), reference, atol=2e-3)


def test_cox_nll_ignores_nan_times_and_handles_no_events():
    log_risk, time, event = _survival_data(30, 3)
    time_nan = time.copy()
    time_nan[:5] = np.nan
    lr = torch.tensor(log_risk, requires_grad=True)
    got = cox_nll(lr, torch.tensor(time_nan), torch.tensor(event), reduction="sum")
    assert float(got.detach()) == pytest.approx(efron_nll_reference(log_risk[5:], time[5:], event[5:]), rel=1e-6)
    zero = cox_nll(lr, torch.tensor(time), torch.zeros(30, dtype=torch.bool))
    assert float(zero.detach()) == 0.0
    zero.backward()
    assert lr.grad is not None


def test_cox_loss_memory_bank_joins_risk_sets():
    lr1, t1, e1 = (torch.tensor(a) for a in _survival_data(8, 4))
    lr2, t2, e2 = (torch.tensor(a) for a in _survival_data(8, 5))
    loss = CoxLoss(queue_size=8).train()
    loss(lr1, t1, e1)
    got = loss(lr2, t2, e2)
    queued = lr1 - lr1.mean() + lr2.mean()  # banked risks are re-anchored on the current batch's mean
    expected = cox_nll(torch.cat([lr2, queued]), torch.cat([t2, t1]),
                       torch.cat([e2, torch.zeros(8, dtype=torch.bool)]))
    assert float(got) == pytest.approx(float(expected))
    assert float(loss.eval()(lr2, t2, e2)) == pytest.approx(float(cox_nll(lr2, t2, e2)))


def test_cox_loss_memory_bank_ignores_a_common_shift():
    """Shifting every current risk by a constant must not lower the loss against the (frozen) bank; otherwise
    the risk offset drifts upwards during training."""
    lr1, t1, e1 = (torch.tensor(a) for a in _survival_data(16, 4))
    lr2, t2, e2 = (torch.tensor(a) for a in _survival_data(16, 5))
    losses = []
    for shift in (0.0, 5.0):
        loss = CoxLoss(queue_size=16).train()
        loss(lr1, t1, e1)
        current = (lr2 + shift).clone().requires_grad_(True)
        value = loss(current, t2, e2)
        value.backward()
        losses.append(value.item())
        assert abs(float(current.grad.sum())) < 1e-5  # no gradient along the common shift
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_masked_classification_losses():
    logits = torch.randn(6, 3, requires_grad=True)
    labels = torch.tensor([0, -1, 2, 1, -1, 2])
    keep = labels >= 0
    expected = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    torch.testing.assert_close(masked_cross_entropy(logits, labels), expected)
    torch.testing.assert_close(masked_cross_entropy(logits, labels.float().masked_fill(~keep, float("nan"))), expected)
    empty = masked_cross_entropy(logits, torch.full((6,), -1))
    assert float(empty.detach()) == 0.0
    empty.backward()
    y = torch.tensor([1.0, float("nan"), 0.0, -1.0, 1.0, 0.0])
    z = torch.randn(6)
    z[1] = float("nan")  # e.g. an unknown treatment: no label, so it must not matter
    ok = ~torch.isnan(y) & (y >= 0)
    expected_bce = torch.nn.functional.binary_cross_entropy_with_logits(z[ok], y[ok])
    torch.testing.assert_close(masked_bce_with_logits(z, y), expected_bce)
    with pytest.raises(ValueError, match="classes"):
        masked_cross_entropy(logits, torch.tensor([0, 1, 2, 3, 0, 0]))


def test_multitask_loss_weights_and_errors():
    out = {"diagnosis_logits": torch.randn(4, 2), "log_risk": torch.randn(4)}
    tgt = {
        "diagnosis": torch.tensor([0, 1, 1, -1]),
        "time": torch.tensor([1.0, 2.0, 3.0, 4.0]),
        "event": torch.tensor([True, False, True, True]),
    }
    total, parts = multitask_loss(out, tgt, {"diagnosis": 2.0, "survival": 0.5})
    assert float(total) == pytest.approx(2.0 * parts["diagnosis"] + 0.5 * parts["survival"], rel=1e-6)
    _, only_dx = multitask_loss(out, tgt, {"survival": 0.0})
    assert set(only_dx) == {"diagnosis"}
    with pytest.raises(ValueError, match="unknown task weights"):
        multitask_loss(out, tgt, {"surv": 1.0})
    with pytest.raises(ValueError, match="no task"):
        multitask_loss(out, {})


def test_multitask_loss_adds_the_auxiliary_endpoint_only_when_weighted():
    torch.manual_seed(0)
    out = {"log_risk": torch.randn(6)}
    tgt = {"time": torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
           "event": torch.tensor([True, False, True, True, False, True]),
           "aux_time": torch.tensor([0.5, 2.0, 1.0, float("nan"), 3.0, 2.5]),
           "aux_event": torch.tensor([True, True, False, True, True, False])}
    total, parts = multitask_loss(out, tgt)
    assert set(parts) == {"survival"}  # off unless weighted
    total, parts = multitask_loss(out, tgt, {"survival_aux": 0.5})
    expected = cox_nll(out["log_risk"], tgt["aux_time"], tgt["aux_event"])
    assert parts["survival_aux"] == pytest.approx(float(expected), rel=1e-6)
    assert parts["survival_aux"] != pytest.approx(parts["survival"])
    assert float(total) == pytest.approx(parts["survival"] + 0.5 * parts["survival_aux"], rel=1e-6)


def test_breslow_matches_sksurv_and_round_trips():
    log_risk, time, event = _survival_data(60, 6)
    ours = BreslowEstimator().fit(log_risk, time, event)
    ref = SksurvBreslow().fit(log_risk, event, time)
    np.testing.assert_allclose(ours.baseline_cumulative_hazard(ref.unique_times_), ref.cum_baseline_hazard_.y)
    times = np.array([0.5, 1.0, 3.5, 7.0, 100.0])
    surv = ours.predict_survival(log_risk[:3], times)
    assert surv.shape == (3, 5) and (surv[:, 0] == 1).all() and (np.diff(surv, axis=1) <= 0).all()
    again = BreslowEstimator.from_dict(ours.to_dict())
    np.testing.assert_array_equal(again.predict_survival(log_risk[:3], times), surv)


def _test_split(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=400)
    t = rng.exponential(np.exp(-x) * 100)
    c = rng.exponential(150, size=400)
    time, event = np.minimum(t, c), t <= c
    return x, time, event


def naive_harrell(time, event, risk):
    num = den = 0.0
    for i in range(len(time)):
        if event[i]:
            later = time > time[i]
            den += later.sum()
            num += (risk[i] > risk[later]).sum() + 0.5 * (risk[i] == risk[later]).sum()
    return num / den


def test_harrell_c_index_matches_references():
    rng = np.random.default_rng(1)
    time, event, risk = rng.exponential(10, 80), rng.random(80) < 0.5, rng.normal(size=80)
    got = M.harrell_c_index(time, event, risk)
    assert got == pytest.approx(concordance_index_censored(event, time, risk)[0])
    assert got == pytest.approx(naive_harrell(time, event, risk))
    with pytest.raises(ValueError, match="all samples are censored"):
        M.harrell_c_index(time, np.zeros(80, bool), risk)
    with pytest.raises(ValueError, match="same length"):
        M.harrell_c_index(time, event, risk[:-1])


def test_uno_and_time_dependent_auc():
    x, time, event = _test_split(0)
    tr, te = slice(0, 250), slice(250, None)
    kw = {"train_time": time[tr], "train_event": event[tr]}
    uno = M.uno_c_index(time[te], event[te], x[te], **kw)
    tau = time[tr].max()
    ref = concordance_index_ipcw(
        Surv.from_arrays(event[tr], time[tr]),
        Surv.from_arrays(event[te] & (time[te] < tau), np.minimum(time[te], tau)),
        x[te],
        tau=tau,
    )[0]
    assert uno == pytest.approx(ref) and 0.6 < uno < 0.9
    auc = M.time_dependent_auc(time[te], event[te], x[te], horizons=[30.0, 60.0], **kw)
    assert set(auc) == {30.0, 60.0} and all(0.6 < v < 0.95 for v in auc.values())
    with pytest.raises(ValueError, match="horizons"):
        M.time_dependent_auc(time[te], event[te], x[te], horizons=[1e6], **kw)


def test_uno_tau_stops_where_the_censoring_survival_falls_below_the_floor():
    """The default truncation of Uno's C in ``evaluate``: the first training time at which the censoring survival
    G(t) is under the floor, so no event compared before it weighs more than 1 / floor^2; the largest training time
    gave weights above 100 here."""
    x, time, event = _test_split(5)
    tr, te = slice(0, 250), slice(250, None)
    cens = CensoringDistributionEstimator().fit(Surv.from_arrays(event[tr], time[tr]))
    tau = M.uno_tau(time[tr], event[tr], floor=0.2)
    assert tau < time[tr].max()
    assert cens.predict_proba(np.array([tau]))[0] < 0.2
    before = np.unique(time[tr][time[tr] < tau])
    assert (cens.predict_proba(before) >= 0.2).all()  # every event compared before tau weighs at most 25
    late = event[te] & (time[te] < time[tr].max())
    assert (1 / cens.predict_proba(np.minimum(time[te][late], np.nextafter(time[tr].max(), 0))) ** 2).max() > 100
    kw = {"train_time": time[tr], "train_event": event[tr]}
    got = M.uno_c_index(time[te], event[te], x[te], tau=tau, **kw)
    ref = concordance_index_ipcw(Surv.from_arrays(event[tr], time[tr]),
                                 Surv.from_arrays(event[te] & (time[te] < tau), np.minimum(time[te], tau)), x[te],
                                 tau=tau)[0]
    assert got == pytest.approx(ref)
    assert M.uno_tau(time[tr], event[tr], floor=1e-6) == time[tr].max()  # G never that low: the whole follow-up
    with pytest.raises(ValueError, match="floor"):
        M.uno_tau(time[tr], event[tr], floor=1.5)


def test_integrated_brier_score_clips_grid_and_matches_sksurv():
    x, time, event = _test_split(2)
    tr, te = slice(0, 250), slice(250, None)
    breslow = BreslowEstimator().fit(x[tr], time[tr], event[tr])
    grid = M.survival_time_grid(time[te], train_time=time[tr])
    assert grid.max() < min(time[te].max(), time[tr].max())
    surv = breslow.predict_survival(x[te], grid)
    kw = {"train_time": time[tr], "train_event": event[tr]}
    ibs = M.integrated_brier_score(time[te], event[te], surv, times=grid, **kw)
    ref = sk_ibs(Surv.from_arrays(event[tr], time[tr]), Surv.from_arrays(event[te], time[te]), surv, grid)
    assert ibs == pytest.approx(ref) and 0 < ibs < 0.25
    wide = np.append(grid, time[tr].max() + 10)
    with pytest.warns(UserWarning, match="dropped 1 of 51"):
        clipped = M.integrated_brier_score(time[te], event[te], breslow.predict_survival(x[te], wide), times=wide, **kw)
    assert clipped == pytest.approx(ibs)


def test_survival_metrics_with_test_follow_up_beyond_training():
    x, time, event = _test_split(6)
    tr, te = slice(0, 250), slice(250, None)
    limit = np.sort(time[tr][event[tr]])[100]  # training follow-up ends at `limit`, with an event there
    train_time, train_event = np.minimum(time[tr], limit), event[tr] & (time[tr] <= limit)
    assert (time[te][event[te]] > limit).any()
    kw = {"train_time": train_time, "train_event": train_event}
    with pytest.raises(ValueError, match="censoring survival function is zero"):  # what the clipping avoids
        cumulative_dynamic_auc(
            Surv.from_arrays(train_event, train_time), Surv.from_arrays(event[te], time[te]), x[te], [limit / 2]
        )
    auc = M.time_dependent_auc(time[te], event[te], x[te], horizons=[limit / 4, limit / 2], **kw)
    assert all(0.55 < v < 0.95 for v in auc.values())
    breslow = BreslowEstimator().fit(x[tr], train_time, train_event)
    grid = M.survival_time_grid(time[te], train_time=train_time)
    assert grid.max() < limit
    ibs = M.integrated_brier_score(time[te], event[te], breslow.predict_survival(x[te], grid), times=grid, **kw)
    assert 0 < ibs < 0.25
    assert 0.55 < M.uno_c_index(time[te], event[te], x[te], **kw) < 0.9


def test_calibration_at_horizon():
    rng = np.random.default_rng(3)
    rate = np.exp(rng.normal(size=3000)) / 50
    time = rng.exponential(1 / rate)
    event = np.ones(3000, bool)
    good = M.calibration_at_horizon(time, event, np.exp(-rate * 30), horizon=30.0)
    assert len(good["predicted"]) == 10 and sum(good["n"]) == 3000
    assert good["calibration_error"] < 0.03
    bad = M.calibration_at_horizon(time, event, np.exp(-rate * 5), horizon=30.0)
    assert bad["calibration_error"] > 0.2


def test_calibration_at_horizon_leaves_out_bins_without_follow_up():
    """The riskiest decile is all censored at 10 days, before the 30-day horizon: its Kaplan-Meier curve stays at 1,
    so its observed risk by 30 days is unknown, not 0. It is left out and counted; before, it entered as observed
    0 against predicted 0.95 and inflated the error (0.09 higher here)."""
    rng = np.random.default_rng(3)
    rate = np.exp(rng.normal(size=1000)) / 50
    time, event = rng.exponential(1 / rate), np.ones(1000, bool)
    surv = np.exp(-rate * 30)
    top = surv <= np.quantile(surv, 0.1)
    time[top], event[top] = 10.0, False
    surv[top] = 0.05  # riskier than every other patient: the top decile
    cal = M.calibration_at_horizon(time, event, surv, horizon=30.0)
    assert (cal["n_bins_without_follow_up"], cal["n_without_follow_up"]) == (1, 100)
    assert len(cal["predicted"]) == 9 and sum(cal["n"]) == 900
    assert cal["calibration_error"] < 0.06
    followed = M.calibration_at_horizon(time[~top], event[~top], surv[~top], horizon=30.0, n_bins=9)
    assert cal["calibration_error"] == pytest.approx(followed["calibration_error"])
    # a bin whose follow-up ends with its last patient's event has observed risk 1: it is followed
    time[top], event[top] = 10.0, True
    cal = M.calibration_at_horizon(time, event, surv, horizon=30.0)
    assert cal["n_bins_without_follow_up"] == 0 and cal["observed"][-1] == 1.0
    # most patients without follow-up to the horizon: undefined
    short = surv <= np.quantile(surv, 0.6)
    time[short], event[short] = 10.0, False
    with pytest.raises(ValueError, match="follow-up ends before 30 days"):
        M.calibration_at_horizon(time, event, surv, horizon=30.0)


def test_expected_calibration_error_constructed():
    y = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    assert M.expected_calibration_error(y, np.full(10, 0.8)) == pytest.approx(0.2)
    # Two bins: 0.15 (all negative -> gap 0.15) and 0.95 (all positive -> gap 0.05), equal size.
    p = np.r_[np.full(5, 0.15), np.full(5, 0.95)]
    assert M.expected_calibration_error(np.r_[np.zeros(5), np.ones(5)], p) == pytest.approx(0.1)
    # Top-label: confidence 0.6 in every row, 3 of 4 argmax correct -> |0.75 - 0.6| = 0.15.
    prob = np.array([[0.6, 0.3, 0.1], [0.2, 0.6, 0.2], [0.1, 0.3, 0.6], [0.6, 0.2, 0.2]])
    assert M.expected_calibration_error(np.array([0, 1, 2, 1]), prob) == pytest.approx(0.15)


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(4)
    y = rng.random(100) < 0.3
    s = y + rng.normal(size=100)
    assert M.auroc(y, s) == pytest.approx(roc_auc_score(y, s))
    assert M.auprc(y, s) == pytest.approx(average_precision_score(y, s))
    assert M.accuracy([0, 1, 1, 2], [0, 1, 2, 2]) == 0.75
    assert M.balanced_accuracy([0, 0, 0, 1], [0, 0, 0, 0]) == 0.5
    with pytest.raises(ValueError, match="single class"):
        M.auroc(np.ones(5), np.arange(5.0))
    prob = rng.dirichlet(np.ones(3), size=60)
    yc = rng.integers(0, 3, 60)
    assert M.multiclass_auroc(yc, prob) == pytest.approx(roc_auc_score(yc, prob, multi_class="ovr"))
    with pytest.raises(ValueError, match=r"classes \[2\]"):
        M.multiclass_auroc(yc % 2, prob)


def test_bootstrap_ci_skips_degenerate_resamples_and_resamples_patients():
    rng = np.random.default_rng(5)
    y = np.zeros(12, bool)
    y[0] = True
    s = rng.normal(size=12)
    with pytest.warns(UserWarning, match="skipped"):
        res = M.bootstrap_ci(M.auroc, y, s, n_boot=100, seed=0)
    assert res["value"] == pytest.approx(M.auroc(y, s))
    assert res["n_skipped"] > 0 and res["n_boot"] + res["n_skipped"] == 100
    assert res["ci_low"] <= res["ci_high"]
    groups = np.repeat(np.arange(10), 2)

    def pairs_intact(g: np.ndarray) -> float:
        return float(all(np.sum(g == k) % 2 == 0 for k in np.unique(g)))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = M.bootstrap_ci(pairs_intact, groups, n_boot=50, groups=groups)
    assert res["ci_low"] == res["ci_high"] == 1.0
    x, time, event = _test_split(0)
    res = M.bootstrap_ci(
        M.uno_c_index,
        time[250:],
        event[250:],
        x[250:],
        n_boot=20,
        metric_kwargs={"train_time": time[:250], "train_event": event[:250]},
    )
    assert res["ci_low"] < res["value"] < res["ci_high"]


def test_selection_score_averages_enabled_task_metrics():
    from fusion.train import selection_score

    val = {"loss": 3.0, "c_index": 0.7, "auroc": 0.9, "response_auroc": float("nan")}
    weights = {"diagnosis": 1.0, "survival": 1.0, "response": 0.5}
    assert selection_score(val, weights) == pytest.approx(0.8)  # response not computable: left out
    assert selection_score({**val, "response_auroc": 0.6}, weights) == pytest.approx((0.7 + 0.9 + 0.3) / 2.5)
    assert selection_score(val, {"diagnosis": 0.0, "survival": 1.0, "response": 0.0}) == pytest.approx(0.7)
    no_metric = {**val, "c_index": float("nan"), "auroc": float("nan")}
    assert selection_score(no_metric, weights) == -3.0  # falls back to the validation loss


def test_integrated_brier_score_on_a_fixed_grid_beyond_the_test_follow_up():
    """A bootstrap resample or subgroup whose follow-up ends before the grid's last time: ``fixed_grid`` keeps
    every grid time, so the score means the same on every resample (the default drops the late columns:
    measured on the demo run, 31 of 200 resamples integrated over a shorter range, up to 0.14 apart)."""
    x, time, event = _test_split(2)
    tr, te = slice(0, 250), slice(250, None)
    breslow = BreslowEstimator().fit(x[tr], time[tr], event[tr])
    kw = {"train_time": time[tr], "train_event": event[tr]}
    grid = M.survival_time_grid(time[te], train_time=time[tr])
    surv = breslow.predict_survival(x[te], grid)
    same = M.integrated_brier_score(time[te], event[te], surv, times=grid, fixed_grid=True, **kw)
    assert same == pytest.approx(M.integrated_brier_score(time[te], event[te], surv, times=grid, **kw))
    # a subset followed only up to the grid's middle and starting after its first time
    sub = np.flatnonzero((time[te] < grid[25]) & (time[te] > grid[1]))
    t, e, s = time[te][sub], event[te][sub], surv[sub]
    assert e.any() and t.max() < grid[-1] and t.min() > grid[0]
    fixed = M.integrated_brier_score(t, e, s, times=grid, fixed_grid=True, **kw)
    # scikit-survival's IPCW Brier on all of the grid: add a patient censored after the grid with S = 1 and one
    # with an event before it with S = 0 (both score 0 at every time), then undo the mean over n + 2
    t2, e2 = np.r_[t, grid[-1] + 1.0, grid[0] / 2], np.r_[e, False, True]
    s2 = np.vstack([s, np.ones(len(grid)), np.zeros(len(grid))])
    ref = sk_ibs(Surv.from_arrays(event[tr], time[tr]), Surv.from_arrays(e2, t2), s2, grid) * (len(t) + 2) / len(t)
    assert fixed == pytest.approx(ref)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dropped = M.integrated_brier_score(t, e, s, times=grid, **kw)
    assert abs(dropped - fixed) > 0.01  # the default integrates over another range
    with pytest.raises(ValueError, match="largest training time"):
        M.integrated_brier_score(t, e, s[:, :2], times=np.array([grid[0], time[tr].max()]), fixed_grid=True, **kw)
