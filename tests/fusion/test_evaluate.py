"""End-to-end: synthetic cohort -> lake -> a few epochs of training -> ``evaluate_run``, ``metrics.json``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fusion.baselines import image_thumbnails
from fusion.config import load_config
from fusion.evaluate import _Eval, bootstrap, evaluate_run
from fusion.predict import Outputs
from fusion.train import train

TASK_METRICS = {"diagnosis": {"auroc", "auprc", "accuracy", "balanced_accuracy", "ece"},
                "response": {"auroc", "auprc", "accuracy", "balanced_accuracy", "ece"}}
SMALL_IMAGES = """dtype: float32
windows: {}
presets:
  - {name: small, ndim: 2, size: [16, 16], fit: resize, normalize: minmax}
  - {name: volume, ndim: 3, size: [4, 16, 16], fit: resize, normalize: minmax}
"""
FAST = ["train.epochs=12", "train.batch_size=16", "train.patience=12", "train.lr=3e-3",
        "split.val_fraction=0.2", "split.test_fraction=0.35", "fusion.out_dim=16",
        "fusion.name=gated_attention",
        "fusion.kwargs={attention_dim: 16}",
        "modalities.ehr.encoder_kwargs={hidden_dim: 32, out_dim: 16, dropout: 0.1}",
        "modalities.genomics.encoder_kwargs={hidden_dim: 16, out_dim: 16, dropout: 0.1}",
        "eval.horizons_days=[365, 730]",
        # the synthetic biopsy is dated by day on the diagnosis day: as the presets, count that day's records
        "data.index.grace_days=1"]


def make_synth_lake(root: Path, *, n: int, seed: int, images: bool = False) -> Path:
    """Generate a synthetic cohort under ``root``; ingest FHIR, the MAF and (optionally) the PNGs at 16 px."""
    from ingest.lake import Lake
    from ingest.synth import SynthConfig, generate_cohort
    from ingest.synth.load import ingest_cohort

    cohort = root / "cohort"
    generate_cohort(cohort, SynthConfig(n_patients=n, seed=seed, image_size=32, n_slices=4, vcf_fraction=0.0))
    lake = Lake(root / "lake")
    config = root / "images.yaml"
    if images:
        config.write_text(SMALL_IMAGES)
    ingest_cohort(cohort, lake, images="png" if images else None, images_config=config if images else None)
    return lake.path


def _check_metric(item: dict) -> None:
    assert set(item) == {"value", "ci_low", "ci_high"}
    if item["ci_low"] is not None:
        assert item["ci_low"] <= item["ci_high"]


def _check_structure(run: Path, result: dict, stages: list[dict]) -> None:
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    assert set(result["tasks"]) == {"diagnosis", "survival", "response"}
    assert result["n_test"] > 0 and result["split_seed"] == 0 and result["n_boot"] == 25
    survival = result["tasks"]["survival"]
    assert survival["n_events"] > 0
    horizons = [f"{h:g}d" for h in survival["horizons_days"]]
    assert set(survival["calibration_without_follow_up"]) <= set(horizons)  # the model's bins left out, per horizon
    assert survival["uno_censoring_floor"] == 0.2 and survival["uno_tau_days"] > 0  # what Uno's C was truncated at
    assert horizons, "no horizon inside the test follow-up"
    expected = {"c_index_harrell", "c_index_uno", "integrated_brier", *(f"td_auc_{h}" for h in horizons),
                *(f"calibration_{h}" for h in horizons)}
    # late_fusion: the only_<m> models combined on the validation patients (both modalities have every head)
    assert set(survival["baselines"]) == {"coxnet", "rsf", "late_fusion"}
    assert set(result["tasks"]["diagnosis"]["baselines"]) == {"logistic", "late_fusion"}
    assert set(result["tasks"]["response"]["baselines"]) == {"logistic", "late_fusion"}
    for task, scores in result["tasks"].items():
        assert set(scores["ablations"]) == {"without_ehr", "without_genomics", "only_ehr", "only_genomics"}
        for table in (scores["model"], *scores["baselines"].values(), *scores["ablations"].values()):
            assert set(table) == TASK_METRICS.get(task, expected), task
            for item in table.values():
                _check_metric(item)
    assert (run / "ablations" / "only_ehr" / "model.safetensors").is_file()
    assert {"stage": "ablation", "what": "only_genomics"} in stages


def _check_subgroups_and_plots(run: Path, result: dict) -> None:
    groups = result["subgroups"]["survival"]
    n = result["tasks"]["survival"]["n"]
    assert {"sex_female", "sex_male"} <= set(groups)
    assert sum(groups[g]["n"] for g in ("sex_female", "sex_male")) == n
    bands = [g for g in groups if g.startswith("age_")]
    assert bands and sum(groups[g]["n"] for g in bands) == n
    scored = [g for g in groups.values() if g["model"] is not None]
    assert scored and all("c_index_harrell" in g["model"] for g in scored)
    for name in ("calibration.png", "comparison.png", "km_risk_groups.png", "roc.png"):
        assert name in result["plots"] and (run / name).stat().st_size > 1000


def test_evaluate_end_to_end(tmp_path, monkeypatch):
    """One trained EHR + genomics run on 60 synthetic patients (kept in one test so that parallel workers
    never train it twice)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lake = make_synth_lake(tmp_path, n=60, seed=1)
        monkeypatch.chdir(lake.parent)
        run = train(load_config(None, FAST), Path(lake.name), tmp_path / "run")  # a lake path relative to here
        assert json.loads((run / "run.json").read_text())["lake"] == str(lake.resolve())
        (tmp_path / "elsewhere").mkdir()
        monkeypatch.chdir(tmp_path / "elsewhere")  # the run finds its lake from any directory
        stages: list[dict] = []
        result = evaluate_run(run, lake, n_boot=25, progress=stages.append)
        _check_structure(run, result, stages)
        _check_subgroups_and_plots(run, result)
        # Stage, ECOG and age drive the synthetic hazard and are EHR features: a few epochs beat chance (0.5).
        assert result["tasks"]["survival"]["model"]["c_index_harrell"]["value"] > 0.55

        _check_no_retrain_scores_the_saved_single_modality_models(run, result)
        _check_failed_evaluation_leaves_the_run_as_it_was(run, monkeypatch)
        _check_external_validation_scores_the_saved_single_modality_models(run, tmp_path / "site_b")
        _check_cross_validation(tmp_path, lake)
    finally:
        torch.set_num_threads(threads)


def _check_no_retrain_scores_the_saved_single_modality_models(run: Path, result: dict) -> None:
    """``--no-retrain`` trains no only_<m> model but scores those an earlier evaluation saved, as it did."""
    stamp = (run / "ablations" / "only_ehr" / "model.safetensors").stat().st_mtime_ns
    from typer.testing import CliRunner

    from apps.cli import app

    before = (run / "metrics.json").read_bytes()
    written = CliRunner().invoke(app, ["evaluate", str(run), "--no-retrain", "--n-boot", "0", "--out",
                                       str(run.parent / "rescored")])
    assert written.exit_code == 0, written.output
    assert (run / "metrics.json").read_bytes() == before  # --out keeps the run's own evaluation
    assert json.loads((run.parent / "rescored" / "metrics.json").read_text())["external_validation"] is False
    assert (run.parent / "rescored" / "comparison.png").is_file()
    again = evaluate_run(run, None, n_boot=0, retrain_ablations=False)
    assert (run / "ablations" / "only_ehr" / "model.safetensors").stat().st_mtime_ns == stamp
    first, second = result["tasks"]["survival"], again["tasks"]["survival"]
    assert set(second["ablations"]) == set(first["ablations"])
    assert set(second["baselines"]) == {"coxnet", "rsf", "late_fusion"}
    for name in ("only_ehr", "only_genomics"):
        assert second["ablations"][name]["c_index_harrell"]["value"] == first["ablations"][name][
            "c_index_harrell"]["value"]
    item = second["model"]["c_index_harrell"]
    assert item["ci_low"] is None and item["value"] == first["model"]["c_index_harrell"]["value"]
    [note] = [note for note in again["notes"] if note.startswith("--no-retrain")]
    assert note.startswith("--no-retrain: only_ehr, only_genomics scored") and "no saved only_<m>" not in note

    shutil.move(run / "ablations" / "only_genomics", run.parent / "only_genomics")  # one saved model left
    try:
        alone = evaluate_run(run, None, n_boot=0, retrain_ablations=False)
        assert not (run / "ablations" / "only_genomics").exists()  # nothing trained
        assert set(alone["tasks"]["survival"]["ablations"]) == {"without_ehr", "without_genomics", "only_ehr"}
        assert set(alone["tasks"]["survival"]["baselines"]) == {"coxnet", "rsf"}  # one only_<m>: no late fusion
        assert any(note.endswith("; genomics has no saved only_<m> model") for note in alone["notes"])
    finally:
        shutil.move(run.parent / "only_genomics", run / "ablations" / "only_genomics")


def _check_external_validation_scores_the_saved_single_modality_models(run: Path, site: Path) -> None:
    """On a lake of patients the run never saw, the only_<m> models an earlier evaluation saved are scored with
    their training patients' outputs, with no '--no-retrain' note when it was not passed. A run whose models were
    saved before those outputs were kept gets them, only_<m> included, from one evaluation on its training lake,
    as the notes advise."""
    from fusion.run import REFERENCE_RISK_FILE

    other = make_synth_lake(site, n=12, seed=9)
    for model_dir in (run, run / "ablations" / "only_ehr", run / "ablations" / "only_genomics"):
        (model_dir / REFERENCE_RISK_FILE).unlink()  # as saved before train kept them
    evaluate_run(run, None, n_boot=0, retrain_ablations=False)  # the advice: once with its training lake
    external = evaluate_run(run, other, n_boot=0, out_dir=site / "eval")
    assert external["external_validation"]
    assert set(external["tasks"]["survival"]["ablations"]) == {"without_ehr", "without_genomics", "only_ehr",
                                                               "only_genomics"}
    assert not [note for note in external["notes"] if "--no-retrain" in note or "was not scored" in note]


def test_external_validation_note_names_survival_metrics_only_for_a_survival_task(monkeypatch, tmp_path):
    """The external validation's note says Uno's C and the Brier scores weigh by the new patients' censoring
    only when the run scores survival."""
    import fusion.evaluate as evaluate

    monkeypatch.setattr(evaluate, "read_training_reference", lambda run_dir: SimpleNamespace(log_risk=None))
    monkeypatch.setattr(evaluate, "saved_prior", lambda run, reference: "prior")
    monkeypatch.setattr(evaluate, "model_outputs", lambda *args, **kwargs: None)
    for survival in (False, True):
        ev = object.__new__(_Eval)
        ev.external, ev.cohort, ev.test, ev.notes, ev.say = True, None, np.arange(3), [], lambda event: None
        ev.saved_training = True
        ev.outputs = {"model": {}, "ablations": {}}
        tasks = SimpleNamespace(survival=SimpleNamespace(enabled=survival))
        ev.run = SimpleNamespace(run_dir=tmp_path, config=SimpleNamespace(tasks=tasks,
                                                                          enabled_modalities=lambda: ["ehr"]))
        ev.predict_model()
        assert ev.notes[0].startswith("external validation: none of the run's patients is in this lake, so its 3")
        assert ("Uno's C-index" in ev.notes[0]) is survival


def _check_failed_evaluation_leaves_the_run_as_it_was(run: Path, monkeypatch) -> None:
    """An evaluation that fails while drawing its figures (or is killed) leaves the previous figures and
    metrics.json: not new figures next to old metrics, nor a half-written file."""
    from fusion import plots

    def outputs() -> dict:
        return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.iterdir()
                if p.suffix == ".png" or p.name == "metrics.json"}

    before = outputs()

    def boom(*args, **kwargs):
        raise RuntimeError("killed while drawing")

    with monkeypatch.context() as patched, pytest.raises(RuntimeError, match="killed while drawing"):
        patched.setattr(plots, "plot_calibration", boom)
        evaluate_run(run, None, n_boot=0, retrain_ablations=False)
    assert outputs() == before and not [p for p in run.iterdir() if p.name.startswith(".")]


def _check_cross_validation(tmp_path: Path, lake: Path) -> None:
    """``tumorboard evaluate`` on a --cv run scores every fold and writes their mean, SD and values."""
    from typer.testing import CliRunner

    from apps.cli import app

    cv = train(load_config(None, [*FAST, "train.epochs=3", "tasks.response.enabled=false"]), lake, tmp_path / "cv",
               cv=2)
    result = CliRunner().invoke(app, ["evaluate", str(cv), "--no-retrain", "--n-boot", "0"])
    assert result.exit_code == 0, result.output
    assert "SD over 2 folds" in " ".join(result.output.split())
    pooled = json.loads((cv / "metrics.json").read_text())
    folds = [json.loads((cv / f"fold_{k}" / "metrics.json").read_text()) for k in range(2)]
    per_fold = [f["tasks"]["survival"]["model"]["c_index_harrell"]["value"] for f in folds]
    item = pooled["tasks"]["survival"]["model"]["c_index_harrell"]
    assert pooled["k"] == 2 and item["folds"] == per_fold
    assert item["value"] == np.mean(per_fold) and item["sd"] == np.std(per_fold, ddof=1)
    assert set(pooled["tasks"]["survival"]["baselines"]) == {"coxnet", "rsf"}
    assert pooled["tasks"]["survival"]["n"] == sum(f["tasks"]["survival"]["n"] for f in folds)
    refused = CliRunner().invoke(app, ["evaluate", str(cv), "--out", str(tmp_path / "elsewhere_cv")])
    assert refused.exit_code != 0 and "--out is for a single run" in " ".join(refused.output.split())


def test_bootstrap_is_paired_and_covers_value():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    score = y + rng.normal(0, 1.0, 80)

    def fn(y, s):
        return {"mean_gap": float(s[y == 1].mean() - s[y == 0].mean())}

    a = bootstrap(fn, (y, score), n_boot=200, seed=3)["mean_gap"]
    b = bootstrap(fn, (y, score), n_boot=200, seed=3)["mean_gap"]
    assert a == b and a["ci_low"] < a["value"] < a["ci_high"]


def test_calibration_error_intervals_contain_their_value():
    """A binned calibration error grows on resamples (repeated patients, noisier bins): on this well-calibrated
    sample the plain percentile interval (0.086 to 0.251) lies above the value (0.076)."""
    from fusion import metrics

    rng = np.random.default_rng(9)
    prob = rng.uniform(0.2, 0.8, 40)
    y = (rng.random(40) < prob).astype(int)

    def fn(y, p):
        return {"ece": metrics.expected_calibration_error(y, p), "auroc": metrics.auroc(y, p)}

    out = bootstrap(fn, (y, prob), n_boot=200, seed=1)
    for name in ("ece", "auroc"):
        assert out[name]["ci_low"] <= out[name]["value"] <= out[name]["ci_high"], name
    assert out["ece"]["ci_low"] >= 0.0


def test_image_thumbnails_average_slices_and_pool_areas():
    series = torch.zeros(2, 1, 4, 4)
    series[0, 0, :2, :2] = 1.0  # top-left quarter of the first slice
    series[1, 0] = 0.5
    thumbs = image_thumbnails([series, None, torch.ones(1, 1, 4, 4)], side=2)
    assert thumbs.shape == (3, 5)  # has-image column + 2 x 2 pixels
    np.testing.assert_allclose(thumbs[0], [1.0, 0.75, 0.25, 0.25, 0.25])  # mean over slices, then 2 x 2 areas
    assert (thumbs[1] == 0.0).all() and (thumbs[2] == 1.0).all()
    with pytest.raises(ValueError, match="no image"):
        image_thumbnails([None, None])


def test_late_fusion_inputs_put_each_single_modality_model_side_by_side():
    """Late fusion fits on the only_<m> models' validation predictions and scores their test predictions."""
    ev = object.__new__(_Eval)  # only the prediction tables matter here
    ev.cohort = SimpleNamespace(patient_keys=np.array(list("abcdef")))
    ev.val, ev.test = np.array([0, 1]), np.array([3, 4])

    def out(risk: list[float]) -> Outputs:
        return Outputs(np.array(["?"] * len(risk)), None, np.array(risk, float), None, None)

    ev.val_outputs = {"only_x": out([1, 2]), "only_y": out([3, 4])}
    ev.outputs = {"model": {}, "ablations": {"without_x": out([0, 0]), "only_x": out([5, 6]),
                                             "only_y": out([7, 8])}}
    stacked = ev._late_fusion_inputs("log_risk", lambda r: 10 * r)
    np.testing.assert_array_equal(stacked[[0, 1, 3, 4]], [[10, 30], [20, 40], [50, 70], [60, 80]])
    assert np.isnan(stacked[[2, 5]]).all()  # training rows: never read
    ev.val_outputs = {"only_x": out([1, 2])}
    assert ev._late_fusion_inputs("log_risk", lambda r: r) is None  # one model: nothing to fuse
    assert ev._late_fusion_inputs("diagnosis_prob", lambda r: r) is None  # no such head


def test_comparison_panels_put_the_model_first_then_baselines_and_ablations():
    from fusion.evaluate import comparison_panels

    def score(value, low=None, high=None):
        return {"c_index_harrell": {"value": value, "ci_low": low, "ci_high": high}}

    tasks = {"survival": {"n": 40, "n_events": 12, "model": score(0.7, 0.6, 0.8),
                          "baselines": {"rsf": score(0.65), "coxnet": score(None)},
                          "ablations": {"without_ehr": score(0.6), "only_image": score(0.55),
                                        "only_ehr": score(0.62)}},
             "response": {"n": 10, "model": {"auroc": {"value": None}}, "baselines": {}, "ablations": {}}}
    [panel] = comparison_panels(tasks)  # response: no model score, no panel
    assert panel["title"] == "survival: n=40, events 12"
    assert [(r["label"], r["kind"]) for r in panel["rows"]] == [
        ("model", "model"), ("rsf", "baseline"), ("only_ehr", "only"), ("only_image", "only"),
        ("without_ehr", "without")]  # coxnet had no value: left out
    assert panel["rows"][0] == {"label": "model", "kind": "model", "value": 0.7, "low": 0.6, "high": 0.8}


def test_survival_bootstrap_scores_the_brier_score_over_the_whole_grid():
    """Every resample and subgroup integrates the Brier score over the same grid, also where its follow-up ends
    before the grid's last time (before the fix such rows integrated over a shorter range)."""
    from fusion import metrics
    from fusion.evaluate import survival_metric_fn
    from fusion.models import BreslowEstimator

    rng = np.random.default_rng(4)
    x = rng.normal(size=300)
    time, event = rng.exponential(400 * np.exp(-x)), rng.random(300) < 0.7
    tr, te = slice(0, 200), slice(200, None)
    breslow = BreslowEstimator().fit(x[tr], time[tr], event[tr])
    grid = metrics.survival_time_grid(time[te], train_time=time[tr])
    kw = {"train_time": time[tr], "train_event": event[tr]}
    fn = survival_metric_fn(horizons=np.array([]), grid=grid, **kw)
    short = np.flatnonzero(time[te] < grid[30])  # a group followed up to the grid's middle only
    t, e, r = time[te][short], event[te][short], x[te][short]
    s = breslow.predict_survival(r, grid)
    got = fn(t, e, r, s, np.zeros((len(t), 0)))["integrated_brier"]
    assert got == pytest.approx(metrics.integrated_brier_score(t, e, s, times=grid, fixed_grid=True, **kw))
    with pytest.warns(UserWarning, match="dropped"):
        truncated = metrics.integrated_brier_score(t, e, s, times=grid, **kw)
    assert abs(got - truncated) > 0.01


def test_subgroups_report_every_group_with_its_events_even_when_empty():
    """No patient under 60 here: age_lt60 is still reported (n 0, skipped) rather than missing, and each group
    states its number of events next to its size."""
    import pandas as pd

    from fusion.evaluate import MIN_SUBGROUP

    n = 2 * MIN_SUBGROUP
    keys = np.array([f"p{i}" for i in range(n)])
    ev = object.__new__(_Eval)
    ev.cohort = SimpleNamespace(patient_keys=keys, index_date=pd.DatetimeIndex(["2020-01-01"] * n, tz="UTC"))
    birth = ["1945-01-01"] * MIN_SUBGROUP + ["1955-06-01"] * MIN_SUBGROUP  # 75 and 64 years old
    ev.patients = pd.DataFrame({"sex": ["female", "male"] * MIN_SUBGROUP, "birth_date": birth}, index=keys)
    ev.rows = {"survival": np.arange(n)}
    ev.n_boot, ev.seed = 0, 0
    event = np.arange(n) % 4 == 0

    def fn(event):
        return {"events": float(event.sum())}

    out = ev._subgroups("survival", fn, (event,), {"n_events": event})
    assert set(out) == {"sex_female", "sex_male", "age_lt60", "age_60_69", "age_ge70"}
    assert out["age_lt60"] == {"n": 0, "n_events": 0, "model": None,
                               "skipped": f"fewer than {MIN_SUBGROUP} patients"}
    assert (out["sex_female"]["n"], out["sex_female"]["n_events"]) == (MIN_SUBGROUP, 5)
    assert out["age_ge70"]["n_events"] == 3 and out["age_ge70"]["model"]["events"]["value"] == 3


def test_diagnosis_macro_metrics_keep_the_classes_of_the_sample_on_every_resample():
    """A resample lacking a class of the test set leaves the macro AUROC / AUPRC and balanced accuracy undefined
    (dropped) instead of averaging over fewer classes: the metric is the same three-class mean on every resample.
    A subgroup keeps its own classes. Before, the ~35% of resamples without the one class-2 patient averaged
    classes 0 and 1 only, pulling the interval down."""
    from fusion import metrics
    from fusion.evaluate import DIAGNOSIS_METRICS, diagnosis_metric_fn

    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(10, int), np.ones(9, int), 2]
    prob = rng.dirichlet(np.ones(3), size=20)
    prob[19] = [0.05, 0.05, 0.9]  # the one class-2 patient is ranked first for class 2: AUROC 1
    full_fn = DIAGNOSIS_METRICS.make(y, prob)
    assert full_fn(y, prob) == diagnosis_metric_fn(y, prob)  # same value on the full sample
    no2 = full_fn(y[:19], prob[:19])
    assert np.isnan(no2["auroc"]) and np.isnan(no2["auprc"]) and np.isnan(no2["balanced_accuracy"])
    assert no2["accuracy"] == metrics.accuracy(y[:19], prob[:19].argmax(1))
    sub = bootstrap(DIAGNOSIS_METRICS, (y[:19], prob[:19]), n_boot=0, seed=0)  # a subgroup without class 2
    assert sub["auroc"]["value"] == pytest.approx(np.mean([metrics.auroc(y[:19] == c, prob[:19, c]) for c in (0, 1)]))

    n_boot = 200
    out = bootstrap(DIAGNOSIS_METRICS, (y, prob), n_boot=n_boot, seed=5)["auroc"]
    draws, gen = [], np.random.default_rng(5)
    for _ in range(n_boot):
        idx = gen.integers(0, 20, 20)
        if {0, 1, 2} <= set(y[idx]):
            draws.append(np.mean([metrics.auroc(y[idx] == c, prob[idx, c]) for c in range(3)]))
    assert 0.5 * n_boot <= len(draws) < 0.8 * n_boot
    assert (out["ci_low"], out["ci_high"]) == pytest.approx(tuple(np.quantile(draws, [0.025, 0.975])))


def test_a_cross_validation_says_when_the_lake_changed_and_keeps_the_folds_notes(tmp_path, monkeypatch):
    """The folds' ``lake_changed`` and notes reach the --cv run's metrics.json and ``tumorboard evaluate``."""
    from typer.testing import CliRunner

    from apps.cli import app
    from fusion import evaluate

    def fold_result(run_dir, lake, **kwargs):
        changed = Path(run_dir).name == "fold_1"
        return {"tasks": {"survival": {"n": 5, "model": {"c_index_harrell": {"value": 0.6}},
                                       "baselines": {}, "ablations": {}}},
                "lake_changed": changed, "notes": ["horizon 1095 days not scored"] if changed else []}

    for k in range(2):
        (tmp_path / "cv" / f"fold_{k}").mkdir(parents=True)
    monkeypatch.setattr(evaluate, "evaluate_run", fold_result)
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "cv"), "--no-retrain"])
    assert result.exit_code == 0, result.output
    pooled = json.loads((tmp_path / "cv" / "metrics.json").read_text())
    assert pooled["lake_changed"] is True and pooled["notes"] == ["fold_1: horizon 1095 days not scored"]
    output = " ".join(result.output.split())
    assert "the lake changed since this model was trained" in output
    assert "note: fold_1: horizon 1095 days not scored" in output


def test_a_fold_that_could_not_score_a_task_is_named(tmp_path, monkeypatch):
    """A task skipped in one fold (no responders among its test patients) is averaged over the others: said."""
    from fusion import evaluate

    def fold_result(run_dir, lake, **kwargs):
        scored = {"n": 9, "model": {"auroc": {"value": 0.7}}, "baselines": {}, "ablations": {}}
        skipped = {"n": 9, "skipped": "the test split needs responders and non-responders"}
        return {"tasks": {"response": skipped if Path(run_dir).name == "fold_0" else scored}, "notes": []}

    for k in range(3):
        (tmp_path / f"fold_{k}").mkdir()
    monkeypatch.setattr(evaluate, "evaluate_run", fold_result)
    pooled = evaluate.evaluate_folds(tmp_path)
    assert pooled["tasks"]["response"]["model"]["auroc"]["folds"] == [None, 0.7, 0.7]
    assert pooled["notes"] == ["fold_0: response not scored (the test split needs responders and non-responders); "
                               "its mean and SD are over the other folds"]


def test_evaluate_out_that_is_a_file_is_refused_before_the_work(tmp_path):
    """``evaluate --out FILE`` evaluated the run, then failed with a FileExistsError traceback."""
    from typer.testing import CliRunner

    from apps.cli import app

    (tmp_path / "metrics.csv").write_text("x\n")
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "run"), "--out", str(tmp_path / "metrics.csv")])
    assert result.exit_code != 0 and "is a file: pass a folder" in " ".join(result.output.split())
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cross_validation_on_another_sites_lake_counts_its_patients_once(tmp_path, monkeypatch):
    """A --cv run evaluated on a lake of patients no fold saw: every fold scores the same patients, so the task's
    n is theirs (it was k times as many), metrics.json says external_validation, and the CLI does not warn that
    the lake changed since training (another lake, which the folds' notes say)."""
    from typer.testing import CliRunner

    import fusion.evaluate as evaluate
    from apps.cli import app

    def fold_result(external: bool) -> dict:
        block = {"n": 30, "model": {"c_index_harrell": {"value": 0.7, "ci_low": None, "ci_high": None}},
                 "baselines": {}, "ablations": {}}
        return {"tasks": {"survival": block}, "lake_changed": True, "external_validation": external,
                "notes": ["external validation: ..."] if external else []}

    for fold in ("fold_0", "fold_1"):
        (tmp_path / "cv" / fold).mkdir(parents=True)
    for external, n in ((True, 30), (False, 60)):
        monkeypatch.setattr(evaluate, "evaluate_run", lambda *args, external=external, **kwargs: fold_result(external))
        result = evaluate.evaluate_folds(tmp_path / "cv", tmp_path)
        assert result["tasks"]["survival"]["n"] == n and result["external_validation"] is external
    monkeypatch.setattr(evaluate, "evaluate_run", lambda *args, **kwargs: fold_result(True))
    printed = CliRunner().invoke(app, ["evaluate", str(tmp_path / "cv"), "--lake", str(tmp_path), "--no-retrain"])
    assert printed.exit_code == 0, printed.output
    assert "lake changed" not in printed.output and "(n=30)" in " ".join(printed.output.split())


def _response_eval(y: np.ndarray, prob: np.ndarray, n_boot: int, seed: int) -> _Eval:
    """An evaluation of the response task alone: ``y`` and the model's ``prob`` on as many test patients, all
    women of 75 (one subgroup of them all), no tabular features (no baseline) and no ablation."""
    import pandas as pd

    n = len(y)
    keys = np.array([f"p{i}" for i in range(n)])
    ev = object.__new__(_Eval)
    targets = SimpleNamespace(response=y.astype(float), treatment=np.zeros(n, int), treatment_names=["a"])
    ev.cohort = SimpleNamespace(patient_keys=keys, index_date=pd.DatetimeIndex(["2020-01-01"] * n, tz="UTC"),
                                targets=targets, X=np.zeros((n, 0)))
    ev.patients = pd.DataFrame({"sex": ["female"] * n, "birth_date": ["1945-01-01"] * n}, index=keys)
    ev.train, ev.val, ev.test = np.array([], int), np.array([], int), np.arange(n)
    ev.rows = {"response": np.arange(n)}
    ev.outputs = {"model": {"model": Outputs(keys, None, None, prob[:, None], prob)}, "ablations": {}}
    ev.val_outputs, ev.n_boot, ev.seed, ev.say, ev.notes = {}, n_boot, seed, lambda _: None, []
    return ev


def test_response_balanced_accuracy_is_undefined_on_resamples_without_responders():
    """Balanced accuracy is the mean recall over the classes of the patients scored: a resample without a
    responder leaves it undefined, as it does AUROC, rather than scoring the specificity alone (the diagnosis
    metrics do the same). This model misses both responders (balanced accuracy 0.45); before, the 45 of 400
    resamples without a responder scored their specificity (0.8 to 1.0) as balanced accuracy, and the interval
    was 0.35 to 1.00 instead of 0.35 to 0.50."""
    from fusion import metrics
    from fusion.evaluate import RESPONSE_METRICS

    y = np.array([1, 1] + [0] * 10)
    prob = np.array([0.4, 0.3, 0.2, 0.3, 0.6, 0.1, 0.4, 0.2, 0.35, 0.45, 0.1, 0.2])
    n_boot, seed = 400, 0
    result, subgroups = _response_eval(y, prob, n_boot, seed)._score_response()
    draws, gen = [], np.random.default_rng(seed)
    for _ in range(n_boot):
        idx = gen.integers(0, len(y), len(y))
        if 0 < y[idx].sum() < len(y):
            draws.append(metrics.balanced_accuracy(y[idx], (prob[idx] >= 0.5).astype(int)))
    assert len(draws) == n_boot - 45
    expected = tuple(np.quantile(draws, [0.025, 0.975]))
    assert expected == pytest.approx((0.35, 0.5))
    for scores in (result["model"], subgroups["sex_female"]["model"]):
        ba = scores["balanced_accuracy"]
        assert ba["value"] == pytest.approx(0.45)  # recall 0 on the responders, 0.9 on the others
        assert (ba["ci_low"], ba["ci_high"]) == pytest.approx(expected)
    # a subgroup (or test set) without a responder keeps its own classes: the recall of the one there
    one_class = bootstrap(RESPONSE_METRICS, (y[2:], prob[2:]), n_boot=0, seed=0)
    assert one_class["balanced_accuracy"]["value"] == pytest.approx(0.9)


def test_the_no_retrain_note_names_the_modalities_without_a_saved_model_only_when_there_are_some():
    """It said 'the other modalities have no only_<m>' when every modality had one (make demo's evaluate)."""
    from fusion.evaluate import no_retrain_note

    every = no_retrain_note(["image", "ehr"], ["image", "ehr"])
    assert every == "--no-retrain: only_image, only_ehr scored with the model(s) an earlier evaluate saved in " \
                    "RUN/ablations"
    assert no_retrain_note(["ehr"], ["image", "ehr", "genomics"]).endswith(
        "; image, genomics have no saved only_<m> model")
    assert no_retrain_note(["ehr"], ["image", "ehr"]).endswith("; image has no saved only_<m> model")


def test_calibration_panels_wrap_at_three_a_row(tmp_path):
    """Five panels (survival at three horizons, diagnosis, response) were one 2000 x 400 px strip whose text a
    page shrank to unreadable; they are now three a row, each 400 px wide."""
    from PIL import Image

    from fusion import plots

    panel = {"predicted": [0.2, 0.5, 0.8], "observed": [0.25, 0.45, 0.9], "n": [10, 12, 8]}
    for count, size in ((5, (1200, 800)), (2, (800, 400))):
        path = tmp_path / f"calibration_{count}.png"
        plots.plot_calibration(path, [{"title": f"panel {i}", **panel} for i in range(count)])
        assert Image.open(path).size == size


def test_a_model_that_calls_every_test_patient_one_class_is_noted():
    """make demo's 15-epoch diagnosis head called all its test patients adenocarcinoma (balanced accuracy 0.333
    [0.333, 0.333]) and nothing said so."""
    from fusion.evaluate import one_call_note

    y = np.array([0, 1, 2, 0])
    [note] = one_call_note("diagnosis", np.zeros(4, int), y, ["adeno", "squamous", "benign"])
    assert note.startswith("diagnosis: the model calls every one of the 4 test patients 'adeno'")
    assert one_call_note("diagnosis", np.array([0, 1, 0, 0]), y, ["adeno", "squamous", "benign"]) == []
    assert one_call_note("response", np.ones(3, int), np.ones(3, int), ["non-responder", "responder"]) == []

    y = np.array([0, 1] * 10)
    ev = _response_eval(y, np.linspace(0.1, 0.4, 20), 5, 0)  # every patient below 0.5: no responder called
    ev._score_response()
    assert ev.notes == one_call_note("response", np.zeros(20, int), y, ["non-responder", "responder"])
    assert "'non-responder'" in ev.notes[0]
