"""``predict_patient`` and ``tumorboard predict`` on a small EHR + genomics + image synthetic run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from fusion import explain
from fusion.cohort import restrict_frames
from fusion.config import load_config
from fusion.data import collate
from fusion.evaluate import evaluate_run
from fusion.predict import (
    PredictError,
    UnknownPatientError,
    dataset_for,
    lake_frames,
    model_outputs,
    predict_patient,
    reference_log_risk,
    run_cohort,
)
from fusion.run import load_run
from fusion.train import train
from ingest import reader
from ingest.lake import Lake
from tests.fusion.test_evaluate import FAST, make_synth_lake

IMAGE = ["modalities.image.enabled=true", "modalities.image.encoder=timm",
         "modalities.image.encoder_kwargs={model_name: resnet18, in_chans: 1, out_dim: 16,"
         " small_input: true}",
         "data.images.modality=null", "train.epochs=3"]


def _check_prediction(result: dict, run) -> None:
    json.dumps(result, allow_nan=False)
    probs = np.array(list(result["diagnosis"].values()))
    assert list(result["diagnosis"]) == run.meta["diagnosis_classes"]
    assert np.all((probs >= 0) & (probs <= 1)) and probs.sum() == pytest.approx(1.0, abs=1e-5)

    surv = result["survival"]
    times, s = np.array(surv["times"]), np.array(surv["survival"])
    lower, upper = np.array(surv["lower"]), np.array(surv["upper"])
    assert times[0] == 0 and np.all(np.diff(times) > 0) and len(s) == len(times) == len(lower) == len(upper)
    assert np.all((s >= 0) & (s <= 1)) and np.all(np.diff(s) <= 1e-12)
    assert np.all(lower <= s + 1e-12) and np.all(s <= upper + 1e-12) and np.any(upper - lower > 1e-3)
    assert np.all(np.diff(lower) <= 1e-12) and np.all(np.diff(upper) <= 1e-12)
    assert 0.0 <= result["risk_percentile"] <= 100.0

    assert list(result["response"]) == run.meta["treatment_names"]
    assert all(0.0 <= p <= 1.0 for p in result["response"].values())
    # each treatment's 95% interval holds its probability; dropout makes it wider than a point
    assert list(result["response_interval"]) == run.meta["treatment_names"]
    widths = []
    for name, (lo, hi) in result["response_interval"].items():
        assert 0.0 <= lo <= result["response"][name] + 1e-6 and result["response"][name] <= hi + 1e-6 <= 1 + 1e-6
        widths.append(hi - lo)
    assert max(widths) > 1e-3 and "MC-dropout" in result["response_interval_method"]

    contributions = result["modality_contributions"]
    assert set(contributions) == {"ehr", "genomics", "image"}
    present = [c for c in contributions.values() if c["present"]]
    assert sum(c["weight"] for c in present) == pytest.approx(1.0, abs=1e-5)
    assert all(c["delta_log_risk"] is not None for c in present) or len(present) == 1

    top = result["top_features"]
    names = {n for block in run.meta["feature_names"].values() for n in block}
    assert len(top) == 10 and all(f["name"] in names for f in top)
    assert [abs(f["attribution"]) for f in top] == sorted((abs(f["attribution"]) for f in top), reverse=True)


def test_predict_patient_end_to_end(tmp_path):
    """A few epochs on 40 synthetic patients with 16 px images; one test so parallel workers train it once."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lake_path = make_synth_lake(tmp_path, n=40, seed=2, images=True)
        run_dir = train(load_config(None, [*FAST, *IMAGE, "tasks.diagnosis.modalities=[image]",
                                           "tasks.survival.coxnet_offset=true"]), lake_path, tmp_path / "run")
        _check_a_lake_of_new_patients(run_dir, lake_path, tmp_path / "site_b")
        _check_every_patient_of_the_lake(run_dir, lake_path, tmp_path / "predictions")
        run, lake = load_run(run_dir), Lake(lake_path)
        # explanations must account for the risk offset: make it matter whatever the tiny fit chose
        generator = torch.Generator().manual_seed(0)
        run.model.offset.set_weights({n: torch.randn(2 * f, generator=generator)
                                      for n, f in run.model.offset.n_features.items()})
        truth = pd.read_parquet(tmp_path / "cohort" / "truth.parquet")
        imaged = truth[truth["has_image"]].iloc[0]

        by_mrn = predict_patient(run, lake, str(imaged["mrn"]))
        _check_prediction(by_mrn, run)
        assert by_mrn["patient_key"] == imaged["patient_id"] and by_mrn["missing_modalities"] == []
        attribution = by_mrn["image_attribution"]
        heat = np.array(attribution["map"])
        assert attribution["method"] == "integrated_gradients" and heat.ndim == 2 and heat.shape[0] <= 16
        # the baseline: the training patients' mean input image, saved with the run
        one = run_cohort(run, restrict_frames(lake_frames(lake), {str(imaged["patient_id"])}))
        x = dataset_for(run, one, np.array([0]))[0]["image"]
        assert run.reference_image is not None and run.reference_image.shape[1:] == x.shape[1:]
        assert np.all((heat >= 0) & (heat <= 1)) and 0 <= attribution["slice_index"] < len(
            attribution["slice_attention"])
        by_key = predict_patient(run, lake, str(imaged["patient_id"]), explain=False)
        assert by_key["diagnosis"] == by_mrn["diagnosis"] and "top_features" not in by_key

        no_image = truth[~truth["has_image"]]
        if len(no_image):
            other = predict_patient(run, lake, str(no_image.iloc[0]["patient_id"]))
            assert other["image_attribution"] is None and "image" in other["missing_modalities"]
            assert other["diagnosis"] is None and other["diagnosis_reads"] == ["image"]  # the CT only

        _check_integrated_gradients(run, lake, str(imaged["patient_id"]))
        _check_contributions_include_the_offset(run, lake, str(imaged["patient_id"]))
        _check_unknown_patient(run, lake, truth, run_dir, lake_path)
        # the diagnosis head reads the CT only: no tabular baseline, a logistic regression on thumbnails instead
        scores = evaluate_run(run_dir, lake_path, n_boot=0, retrain_ablations=False)["tasks"]["diagnosis"]
        assert set(scores["baselines"]) == {"image_logistic"}
        assert 0.0 <= scores["baselines"]["image_logistic"]["auroc"]["value"] <= 1.0

        # tasks.survival.modalities=[image]: the survival head reads the CT only, the tabular inputs enter the
        # log-risk through the offset alone, and predictions and explanations follow the head
        run.model.heads_config = dataclasses.replace(run.model.heads_config, survival_modalities=("image",))
        key = str(imaged["patient_id"])
        _check_prediction(restricted := predict_patient(run, lake, key), run)
        assert restricted["survival_reads"] == ["image"] and "survival_reads" not in by_mrn
        assert restricted["survival"]["log_risk"] != pytest.approx(by_mrn["survival"]["log_risk"])
        _check_integrated_gradients(run, lake, key)
        _check_contributions_include_the_offset(run, lake, key)
        _check_outputs_match_forward(run, lake)
        _check_runs_under_older_cohort_rules_warn(run, lake)
    finally:
        torch.set_num_threads(threads)


def _check_a_lake_of_new_patients(run_dir: Path, lake_path: Path, other_site: Path) -> None:
    """``train`` saves its training patients' outputs, so ``predict`` works on a lake of patients the run never
    saw (another site, a new export), their risk percentile taken within those saved risks, and ``evaluate``
    validates the run on them (external validation)."""
    from fusion.run import REFERENCE_RISK_FILE, RunError, read_training_reference

    run = load_run(run_dir)
    saved = read_training_reference(run_dir).log_risk
    cohort = run_cohort(run, lake_frames(Lake(lake_path)))
    recomputed = np.sort(model_outputs(run, cohort, cohort.indices("train")).log_risk)
    np.testing.assert_allclose(saved, recomputed, rtol=1e-5, atol=1e-6)
    # a lake state holding one training patient uses the saved risks and leaves them as they were
    one_patient = restrict_frames(lake_frames(Lake(lake_path)), {cohort.patient_keys[cohort.indices("train")[0]]})
    assert reference_log_risk(run, one_patient, "a lake state of one training patient").tolist() == saved.tolist()
    assert read_training_reference(run_dir).log_risk.tolist() == saved.tolist()

    new_lake = Lake(make_synth_lake(other_site, n=12, seed=9, images=True))
    patients = pd.read_parquet(other_site / "cohort" / "truth.parquet")
    key = str(patients[patients["has_image"]].iloc[0]["patient_id"])
    assert key not in run.meta["splits"]
    result = predict_patient(run, new_lake, key, explain=False)
    log_risk = result["survival"]["log_risk"]
    below, ties = np.searchsorted(saved, log_risk, "left"), np.searchsorted(saved, log_risk, "right")
    assert result["risk_percentile"] == pytest.approx(100 * (below + 0.5 * (ties - below)) / saved.size)

    # external validation: the new site's patients are the test patients, written where --out says
    result = evaluate_run(run_dir, new_lake.path, n_boot=0, retrain_ablations=False, out_dir=other_site / "eval")
    assert result["external_validation"] and not (run_dir / "metrics.json").exists()
    assert result["n_test"] == len(run_cohort(run, lake_frames(new_lake))) > 0
    survival = json.loads((other_site / "eval" / "metrics.json").read_text())["tasks"]["survival"]
    assert survival["baselines"] == {} and set(survival["ablations"]) == {"without_ehr", "without_genomics",
                                                                          "without_image"}
    assert 0.0 <= survival["model"]["c_index_harrell"]["value"] <= 1.0
    assert any(note.startswith("external validation: none of the run's patients") for note in result["notes"])

    (run_dir / REFERENCE_RISK_FILE).rename(other_site / REFERENCE_RISK_FILE)
    try:
        with pytest.raises(PredictError, match="this lake lacks some of the run's training patients"):
            predict_patient(run, new_lake, key, explain=False)
        with pytest.raises(RunError, match="holds no saved outputs of its training patients"):
            evaluate_run(run_dir, new_lake.path, n_boot=0, retrain_ablations=False, out_dir=other_site / "eval")
    finally:
        (other_site / REFERENCE_RISK_FILE).rename(run_dir / REFERENCE_RISK_FILE)

    # a lake of the run's test patients only: scored as they are, with the saved training outputs
    from unittest.mock import patch

    import fusion.evaluate

    test_keys = set(cohort.patient_keys[cohort.indices("test")])
    whole = fusion.evaluate.load_frames
    with patch.object(fusion.evaluate, "load_frames", lambda path: restrict_frames(whole(path), test_keys)):
        result = evaluate_run(run_dir, lake_path, n_boot=0, retrain_ablations=False, out_dir=other_site / "tests")
    assert not result["external_validation"] and result["n_test"] == len(test_keys)
    assert result["tasks"]["survival"]["baselines"] == {}
    assert np.isfinite(result["tasks"]["survival"]["model"]["c_index_harrell"]["value"])
    assert any(note.startswith("this lake holds none of the run's training patients") for note in result["notes"])

    # the training lake with the new site's FHIR added: the run's test patients are scored, the others named
    import shutil

    from ingest.fhir.pipeline import ingest_fhir

    mixed = shutil.copytree(lake_path, other_site / "mixed_lake")
    ingest_fhir(Lake(mixed), [other_site / "cohort" / "fhir"])
    result = evaluate_run(run_dir, mixed, n_boot=0, retrain_ablations=False, out_dir=other_site / "mixed_eval")
    assert not result["external_validation"] and result["n_test"] == len(cohort.indices("test"))
    unseen = run_cohort(run, lake_frames(Lake(mixed))).indices("unseen").size
    assert unseen > 0 and any(note.startswith(f"{unseen} patient(s) of this lake the run never saw are not scored")
                              for note in result["notes"])


def _check_every_patient_of_the_lake(run_dir: Path, lake_path: Path, out: Path) -> None:
    """``predict --all``: one row per patient with predict_patient's values, written as Parquet or CSV."""
    from apps.cli import app
    from fusion.predict import predict_cohort
    from fusion.run import read_training_reference

    run, lake = load_run(run_dir), Lake(lake_path)
    table, left_out = predict_cohort(run, lake)
    assert len(table) + left_out == reader.read_patients(lake)["patient_key"].nunique()
    assert set(table["split"]) <= {"train", "val", "test"} and table["patient_key"].is_unique
    without_ct = table["missing_modalities"].str.contains("image")
    for rows in (table[table["missing_modalities"] == ""], table[without_ct]):  # every modality; no CT
        assert not rows.empty
        row = rows.iloc[0]
        one = predict_patient(run, lake, row["patient_key"], explain=False)
        assert row["index_date"].isoformat().startswith(one["index_date"][:19])
        assert row["missing_modalities"] == ", ".join(one["missing_modalities"])
        for name, probability in (one["diagnosis"] or {}).items():
            assert row[f"diagnosis_{name}"] == pytest.approx(probability, abs=1e-6)
        if "image" in one["missing_modalities"]:  # the diagnosis head reads the CT only
            assert one["diagnosis"] is None
            assert all(np.isnan(row[f"diagnosis_{c}"]) for c in run.meta["diagnosis_classes"])
        assert row["log_risk"] == pytest.approx(one["survival"]["log_risk"], abs=1e-6)
        # a training patient ties with its own reference risk up to float noise (batch of one vs many): one step
        step = 100 / read_training_reference(run_dir).log_risk.size
        assert row["risk_percentile"] == pytest.approx(one["risk_percentile"], abs=step + 1e-9)
        for horizon, value in one["survival"]["at_horizons"].items():
            assert row[f"survival_{horizon}d"] == pytest.approx(value, abs=1e-6)
        for name, probability in one["response"].items():
            assert row[f"response_{name}"] == pytest.approx(probability, abs=1e-6)

    out.mkdir()
    runner = CliRunner()
    for name in ("all.parquet", "all.csv"):
        result = runner.invoke(app, ["predict", str(run_dir), "--lake", str(lake_path), "--all", "--out",
                                     str(out / name)])
        assert result.exit_code == 0, result.output
        assert f"wrote {len(table)} patients" in result.output
    written = pd.read_parquet(out / "all.parquet")
    assert written["patient_key"].tolist() == table["patient_key"].tolist()
    assert len(pd.read_csv(out / "all.csv")) == len(table) and sorted(p.name for p in out.iterdir()) == [
        "all.csv", "all.parquet"]
    for args, message in ((["--all"], "--all writes a table"), (["--all", "--patient", "x", "--out", "a.csv"],
                                                                  "pass --patient ID for one patient, or --all"),
                          (["--patient", "x", "--out", "a.csv"], "--out is for --all")):
        refused = runner.invoke(app, ["predict", str(run_dir), *args])
        assert refused.exit_code != 0 and message in " ".join(refused.output.split())


def test_response_link_puts_the_treatment_into_survival_end_to_end(tmp_path):
    """tasks.survival.response_link: predict, its explanations and the batch outputs use the log-risk under the
    recorded treatment; predict gives the survival under each candidate; the survival baselines read the
    treatment too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lake_path = make_synth_lake(tmp_path, n=40, seed=2)
        run_dir = train(load_config(None, [*FAST, "tasks.survival.coxnet_offset=true",
                                           "tasks.survival.response_link=true"]), lake_path, tmp_path / "run")
        run, lake = load_run(run_dir), Lake(lake_path)
        assert run.model.response_weight.item() != 0.0  # trained (it starts at 0) and saved
        with torch.no_grad():
            run.model.response_weight.fill_(-0.3)  # w = -3: make the term matter whatever the tiny fit chose
        truth = pd.read_parquet(tmp_path / "cohort" / "truth.parquet")
        treated = truth[(truth["treatment"] != "none") & truth["has_genomics"]].iloc[0]
        result = predict_patient(run, lake, str(treated["patient_id"]))
        names = run.meta["treatment_names"]
        by_treatment = result["survival_by_treatment"]
        assert result["survival_treatment"] in names and list(by_treatment) == names
        assert by_treatment[result["survival_treatment"]]["log_risk"] == pytest.approx(result["survival"]["log_risk"])
        assert by_treatment[result["survival_treatment"]]["at_horizons"] == pytest.approx(
            result["survival"]["at_horizons"])
        assert len({round(v["log_risk"], 6) for v in by_treatment.values()}) == len(names)
        benign = truth[truth["treatment"] == "none"].iloc[0]
        assert predict_patient(run, lake, str(benign["patient_id"]), explain=False)["survival_treatment"] is None
        _check_integrated_gradients(run, lake, str(treated["patient_id"]))
        _check_contributions_include_the_offset(run, lake, str(treated["patient_id"]))
        _check_outputs_match_forward(run, lake)
        from typer.testing import CliRunner

        from apps.cli import app

        said = CliRunner().invoke(app, ["evaluate", str(run_dir), "--lake", str(lake_path), "--no-retrain",
                                        "--n-boot", "0"])
        assert said.exit_code == 0, said.output
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert any("read the treatment" in note for note in metrics["notes"])
        flat = " ".join(said.output.split())
        assert "note: the survival baselines read the treatment" in flat  # printed too
        assert "(no intervals: --n-boot 0)" in flat and "95% CI" not in flat
        assert set(metrics["tasks"]["survival"]["baselines"]) == {"coxnet", "rsf"}
    finally:
        torch.set_num_threads(threads)


def _check_integrated_gradients(run, lake, key: str) -> None:
    """Completeness: the attributions sum to log-risk(x) - log-risk(tabular inputs at the training mean)."""
    from fusion.cohort import restrict_frames
    from fusion.predict import lake_frames

    cohort = run_cohort(run, restrict_frames(lake_frames(lake), {key}))
    batch = collate([dataset_for(run, cohort, np.array([0]))[0]])
    names = run.meta["feature_names"]
    raw = {n: b.values[0] for n, b in cohort.blocks.items()}
    every = explain.top_features(run.model, batch, names, raw, {}, k=10_000, n_steps=64)
    with torch.no_grad():
        full = float(run.model(batch)["log_risk"][0])
        zeroed = {**batch, "modalities": {k: (torch.zeros_like(v) if k in names else v)
                                          for k, v in batch["modalities"].items()}}
        base = float(run.model(zeroed)["log_risk"][0])
    tolerance = 0.02 + 0.02 * abs(full - base)
    assert sum(f["attribution"] for f in every) == pytest.approx(full - base, abs=tolerance)


def _check_contributions_include_the_offset(run, lake, key: str) -> None:
    """Leaving a modality out removes its offset term too, as :func:`fusion.data.drop_modalities` does."""
    from fusion.cohort import restrict_frames
    from fusion.data import drop_modalities
    from fusion.predict import lake_frames

    cohort = run_cohort(run, restrict_frames(lake_frames(lake), {key}))
    batch = collate([dataset_for(run, cohort, np.array([0]))[0]])
    contributions = explain.modality_contributions(run.model, batch)
    with torch.no_grad():
        full = float(run.model(batch)["log_risk"][0])
        for name in ("ehr", "genomics"):
            without = float(run.model(drop_modalities(batch, [name]))["log_risk"][0])
            assert contributions[name]["delta_log_risk"] == pytest.approx(full - without, abs=1e-4)
    interval = explain.survival_interval(run.model, batch, run.breslow, np.array([365.0]))
    # the response interval is centred on the model's own probability
    with torch.no_grad():
        expected = torch.sigmoid(run.model.response.all_treatments(run.model(batch)["embedding"]))[0].numpy()
    response = explain.response_interval(run.model, batch)
    np.testing.assert_allclose(response["probability"], expected, atol=1e-5)
    assert np.all(response["lower"] < response["probability"]) and np.all(response["probability"] < response["upper"])
    assert interval["survival"][0] == pytest.approx(float(run.breslow.predict_survival(np.array([full]),
                                                                                      np.array([365.0]))[0, 0]))


def _check_outputs_match_forward(run, lake) -> None:
    """The batch predictions that evaluation uses give the model's own log-risk."""
    from fusion.predict import lake_frames

    cohort = run_cohort(run, lake_frames(lake))
    rows = np.arange(len(cohort.patient_keys))
    batch = collate([dataset_for(run, cohort, rows)[i] for i in range(rows.size)])
    with torch.no_grad():
        forward = run.model(batch)["log_risk"].numpy()
    np.testing.assert_allclose(model_outputs(run, cohort, rows).log_risk, forward, atol=1e-5)


def _check_runs_under_older_cohort_rules_warn(run, lake) -> None:
    import warnings
    from dataclasses import replace as replaced

    from fusion.predict import lake_frames

    frames = lake_frames(lake)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # today's run: no warning
        run_cohort(run, frames)
    older = replaced(run, meta={k: v for k, v in run.meta.items() if k != "cohort_rules"})
    with pytest.warns(UserWarning, match="trained under cohort rules 1; .*recordedDate.*ECOG.* retrain it"):
        run_cohort(older, frames)
    under_2 = replaced(run, meta={**run.meta, "cohort_rules": 2})
    with pytest.warns(UserWarning, match="trained under cohort rules 2; .* now built under rules 4 \\(ECOG") as seen:
        run_cohort(under_2, frames)
    assert "partial dates" not in str(seen[0].message)  # only what changed since the run's rules


def _check_unknown_patient(run, lake, truth, run_dir, lake_path) -> None:
    with pytest.raises(UnknownPatientError) as info:
        predict_patient(run, lake, "no-such-patient")
    ids = set(truth["patient_id"].astype(str)) | set(truth["mrn"].astype(str))
    assert not any(i in str(info.value) for i in ids)

    from apps.cli.main import app

    cli = CliRunner()
    common = ["predict", str(run_dir), "--lake", str(lake_path), "--patient"]
    failed = cli.invoke(app, [*common, "no-such-patient"])
    assert failed.exit_code == 1 and not any(i in failed.output for i in ids)
    mrn = str(truth.iloc[1]["mrn"])
    ok = cli.invoke(app, [*common, mrn, "--no-explain"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["patient_key"] == truth.iloc[1]["patient_id"]


def test_grad_cam_layer_keeps_enough_resolution_to_localise():
    import timm

    from fusion.explain import CAM_MIN_SIDE, _cam_layer

    backbone = timm.create_model("resnet18", pretrained=False, in_chans=1, num_classes=0).eval()
    name, layer = _cam_layer(backbone, torch.zeros(1, 1, 64, 64))  # layer4 would be 2 x 2
    sides = []
    hook = layer.register_forward_hook(lambda _m, _i, out: sides.append(min(out.shape[-2:])))
    backbone(torch.zeros(1, 1, 64, 64))
    hook.remove()
    assert name == "layer2" and sides == [8] and sides[0] >= CAM_MIN_SIDE
    assert _cam_layer(backbone, torch.zeros(1, 1, 256, 256))[0] == "layer4"  # 8 x 8 at the last stage


def test_reference_cache_is_written_whole_and_a_broken_one_is_recomputed(tmp_path, monkeypatch):
    """A half-written ``reference_risk.json`` (a predict killed while writing it, two app sessions writing at
    once) made every later predict of the run fail with a JSONDecodeError traceback."""
    import os

    from fusion.run import REFERENCE_RISK_FILE, read_training_reference, save_training_reference

    path = tmp_path / REFERENCE_RISK_FILE
    prior = {"diagnosis_prob": np.array([0.25, 0.75]), "log_risk": np.array(0.1), "response_all": None}
    save_training_reference(tmp_path, np.array([0.5, -1.0]), prior, "h1")
    saved = read_training_reference(tmp_path, "h1")
    assert saved.log_risk.tolist() == [-1.0, 0.5] and read_training_reference(tmp_path, "h2") is None
    assert saved.prior["diagnosis_prob"].tolist() == [0.25, 0.75] and saved.prior["response_all"] is None
    assert read_training_reference(tmp_path).log_risk.tolist() == [-1.0, 0.5]  # any lake state
    before = path.read_text()
    def interrupted(*args):
        raise OSError("killed")
    monkeypatch.setattr(os, "replace", interrupted)
    save_training_reference(tmp_path, np.array([9.0, 8.0, 7.0]), prior, "h2")  # fails before the rename:
    # the old file stays whole
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == [REFERENCE_RISK_FILE]
    for broken in (before[:20], "", "[1, 2]", '{"lake_manifest_hash": "h1", "log_risk": ["x"]}',
                   '{"lake_manifest_hash": "h1", "log_risk": []}'):
        path.write_text(broken)
        assert read_training_reference(tmp_path, "h1") is None


class _WindowProbe(torch.nn.Module):
    """A backbone whose feature reads the image only inside ``window`` (a boolean (H, W) mask): a 1x1 conv makes
    channel 0 = the image and channel 1 = 1 everywhere (a constant feature, as zero padding gives a CNN at its
    borders), and the feature is ``sum(ch0 * ch1 * window)``."""

    num_features = 1

    def __init__(self, window: torch.Tensor) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, 0.0]).view(2, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([0.0, 1.0]))
        self.register_buffer("window", window.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x)
        return (a[:, 0] * a[:, 1] * self.window).sum((1, 2))[:, None]


class _RiskOfImage(torch.nn.Module):
    """The parts of a FusionModel that :func:`fusion.explain.image_attribution` uses: log-risk = the image
    embedding."""

    diagnosis = response = offset = None

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoders = torch.nn.ModuleDict({"image": encoder})
        self.survival = torch.nn.Identity()

    def survival_log_risk(self, emb, present, offset_terms, treatment=None):
        return emb["image"][:, 0]

    def offset_terms(self, modalities, masks):
        return {}


WINDOW = torch.zeros(64, 64, dtype=torch.bool)
WINDOW[40:56, 8:24] = True  # where the probe's output reads the image: lower left, so a flip or transpose shows


def _probe() -> _RiskOfImage:
    """A model whose log-risk reads a 64 px image only inside :data:`WINDOW`."""
    from fusion.models.image import TimmImageEncoder

    return _RiskOfImage(TimmImageEncoder(_WindowProbe(WINDOW))).eval()


def _one_row(image: torch.Tensor) -> dict:
    """A batch of one row holding ``image`` ``(1, S, 1, 64, 64)``, every slice valid."""
    return {"modalities": {"image": image}, "masks": {"image": torch.ones(1, image.shape[1], dtype=torch.bool)},
            "present": {"image": torch.ones(1, dtype=torch.bool)}}


def test_image_attribution_credits_only_what_the_output_reads():
    """The map lies where the log-risk reads the image (a lower-left window, so a flip or transpose shows), not
    on a brighter spot it ignores nor on a constant feature. Grad-CAM failed this (it weighs a channel's whole map
    by its mean gradient): the demo run's maps peaked on an image corner, never on the nodule."""
    image = torch.zeros(1, 1, 1, 64, 64)
    image[..., 44:48, 12:16] = 1.0  # read: inside the window
    image[..., 8:24, 40:56] = 2.0  # ignored: brighter, upper right
    model, batch = _probe(), _one_row(image)
    result = explain.image_attribution(model, batch)
    heat = np.asarray(result["map"])
    assert result["method"] == "hires_cam" and heat.shape == (16, 16) and result["slice_index"] == 0
    cells = WINDOW.view(16, 4, 16, 4).any(3).any(1).numpy()
    assert cells[np.unravel_index(heat.argmax(), heat.shape)]
    assert heat[~cells].max() == 0 and heat.max() == pytest.approx(1.0)
    spot = np.zeros((16, 16), dtype=bool)
    spot[11, 3] = True
    assert heat[spot].item() == pytest.approx(1.0) and heat[cells & ~spot].max() == 0


def test_integrated_gradients_map_the_read_region_on_the_slice_that_raises_the_output():
    """From a reference image, the map credits what differs from it where the output reads the image: a bright
    spot the output ignores gets nothing, nor does a read spot the reference already has, and the slice chosen
    is the one whose difference raises the output (not slice 0, which the attention weighs alike)."""
    image = torch.zeros(1, 2, 1, 64, 64)
    image[0, 1, :, 44:48, 12:16] = 1.0  # slice 1: read, inside the window
    image[0, :, :, 8:24, 40:56] = 2.0  # both slices: ignored, outside it
    image[0, :, :, 50:52, 18:20] = 3.0  # read, but the reference has it too
    reference = torch.zeros(2, 1, 64, 64)
    reference[:, :, 50:52, 18:20] = 3.0
    model, batch = _probe(), _one_row(image)
    result = explain.image_attribution(model, batch, reference=reference)
    heat = np.asarray(result["map"])
    assert result["method"] == "integrated_gradients" and result["slice_index"] == 1 and heat.shape == (16, 16)
    spot = np.zeros((16, 16), dtype=bool)
    spot[11, 3] = True
    assert heat[spot].item() == pytest.approx(1.0) and heat[~spot].max() == pytest.approx(0.0, abs=1e-6)


def test_the_reference_image_is_the_mean_at_each_slice_position_over_the_series_reaching_it():
    """Series of 3 and 1 slices and a patient without an image: position 0 averages both series, positions
    1-2 only the longer one; rows outside the dataset are not read."""
    from types import SimpleNamespace

    from fusion.data import mean_image

    volumes = {"a": np.stack([np.full((4, 4), v, np.float32) for v in (1.0, 2.0, 3.0)]),
               "b": np.full((4, 4), 5.0, np.float32), "c": np.full((4, 4), 100.0, np.float32)}
    images = SimpleNamespace(present=np.array([True, True, False, True]),
                             tensor_file=np.array(["a", "b", "none", "c"]), tensor_row=np.zeros(4, int))
    cohort = SimpleNamespace(images=images, image_loader=lambda name, row: volumes[name])
    dataset = SimpleNamespace(cohort=cohort, rows=np.array([0, 1, 2]), in_chans=1, max_slices=None,
                              image_size=None)
    reference = mean_image(dataset, min_patients=1)
    assert reference.shape == (3, 1, 4, 4)
    assert reference[:, 0, 0, 0].tolist() == [3.0, 2.0, 3.0]
    dataset.rows = np.array([2])
    assert mean_image(dataset, min_patients=1) is None


def test_no_reference_image_can_show_one_training_patients_image():
    """The mean is kept only over positions that MIN_REFERENCE_PATIENTS series reach: one imaged training patient
    gave their own image, and a position only the longest series reaches gave that patient's slice."""
    from types import SimpleNamespace

    from fusion.data import MIN_REFERENCE_PATIENTS, mean_image

    n = MIN_REFERENCE_PATIENTS
    volumes = {f"v{i}": np.full((4, 4), float(i), np.float32) for i in range(n)}
    volumes["long"] = np.stack([np.full((4, 4), v, np.float32) for v in (0.0, 7.0, 8.0)])
    images = SimpleNamespace(present=np.ones(n + 1, bool), tensor_file=np.array([*list(volumes)[:n], "long"]),
                             tensor_row=np.zeros(n + 1, int))
    cohort = SimpleNamespace(images=images, image_loader=lambda name, row: volumes[name])
    dataset = SimpleNamespace(cohort=cohort, rows=np.arange(n + 1), in_chans=1, max_slices=None, image_size=None)
    reference = mean_image(dataset)
    assert reference.shape == (1, 1, 4, 4)  # slices 1-2: the long series' own, left out
    assert reference[0, 0, 0, 0].item() == pytest.approx(sum(range(n)) / (n + 1))
    for rows in (np.array([n]), np.arange(n - 1)):  # one patient (theirs exactly), or one short of the minimum
        dataset.rows = rows
        assert mean_image(dataset) is None


def test_an_image_of_another_size_than_the_reference_gets_hires_cam():
    """Without data.images.image_size the model reads a patient's image of another size than its training
    images; its map is HiResCAM then, where predict with explanations failed (the reference image's size)."""
    image = torch.zeros(1, 1, 1, 64, 64)
    image[..., 44:48, 12:16] = 1.0
    model, batch = _probe(), _one_row(image)
    result = explain.image_attribution(model, batch, reference=torch.zeros(1, 1, 32, 32))
    heat = np.asarray(result["map"])
    assert result["method"] == "hires_cam" and result["baseline"] is None and result["layer"] is not None
    assert heat.shape == (16, 16) and heat[11, 3] == pytest.approx(1.0)


def test_a_run_with_too_few_imaged_training_patients_saves_no_reference_image(tmp_path, monkeypatch):
    """One imaged training patient: the mean image was their image, saved with the run; now none is saved, the
    run says why, and predict's map is HiResCAM."""
    from fusion.cohort import assemble_cohort, load_frames
    from fusion.run import REFERENCE_IMAGE_FILE

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lake_path = make_synth_lake(tmp_path, n=40, seed=2, images=True)
        frames = load_frames(lake_path)
        config = load_config(None, [*FAST, *IMAGE, "train.epochs=1"])
        cohort = assemble_cohort(frames, config)
        rows = cohort.indices("train")
        key = cohort.patient_keys[rows[cohort.images.present[rows]][0]]
        frames = dataclasses.replace(frames, images=frames.images[frames.images["patient_key"] == key])
        run = load_run(train(config, lake_path, tmp_path / "run", frames=frames))
        assert run.reference_image is None and not (run.run_dir / REFERENCE_IMAGE_FILE).exists()
        assert run.meta["notes"][0].startswith("no reference image saved: 1 training patient(s) have an image")
        monkeypatch.setattr("fusion.predict.lake_frames", lambda lake: frames)
        attribution = predict_patient(run, Lake(lake_path), str(key))["image_attribution"]
        assert attribution["method"] == "hires_cam" and attribution["baseline"] is None
    finally:
        torch.set_num_threads(threads)


def test_a_large_series_runs_its_integrated_gradient_steps_in_smaller_batches(monkeypatch):
    """The steps' batch holds at most IG_BATCH_VALUES input values (one step at a time for a big CT), and the
    map does not depend on it."""
    image = torch.zeros(1, 2, 1, 64, 64)
    image[0, 1, :, 44:48, 12:16] = 1.0
    model, batch = _probe(), _one_row(image)
    sizes = []
    attribute = explain.IntegratedGradients.attribute

    def recording(self, *args, **kwargs):
        sizes.append(kwargs["internal_batch_size"])
        return attribute(self, *args, **kwargs)

    monkeypatch.setattr(explain.IntegratedGradients, "attribute", recording)
    whole = explain.image_attribution(model, batch, reference=torch.zeros(2, 1, 64, 64))
    monkeypatch.setattr(explain, "IG_BATCH_VALUES", 2 * 64 * 64)
    stepwise = explain.image_attribution(model, batch, reference=torch.zeros(2, 1, 64, 64))
    assert sizes == [32, 1]  # 8 * 8 * 64 * 64 values per batch: 32 steps of a 2-slice series, then 1
    assert np.allclose(whole["map"], stepwise["map"], atol=1e-4) and whole["slice_index"] == stepwise["slice_index"]


def test_slices_beyond_the_reference_are_not_credited():
    """A reference of one slice (the position too few training series reach is left out of it): the patient's
    second slice, brighter where the output reads, gets no attribution instead of its whole difference from
    black, so the map stays on the first slice."""
    image = torch.zeros(1, 2, 1, 64, 64)
    image[0, 0, :, 44:48, 12:16] = 1.0
    image[0, 1, :, 40:56, 8:24] = 5.0
    model, batch = _probe(), _one_row(image)
    result = explain.image_attribution(model, batch, reference=torch.zeros(1, 1, 64, 64))
    assert result["method"] == "integrated_gradients" and result["slice_index"] == 0


def test_predictions_are_written_into_a_new_folder_and_an_unwritable_path_is_a_clear_error(tmp_path):
    """``predict --all --out`` into a folder not made yet wrote nothing but a traceback (OSError, after scoring
    every patient); a path that cannot be written (here a folder) is a PredictError, leaving nothing behind."""
    from fusion.predict import write_predictions

    table = pd.DataFrame({"patient_key": ["a", "b"], "log_risk": [0.5, -0.25]})
    write_predictions(table, tmp_path / "new" / "deeper" / "all.csv")
    assert pd.read_csv(tmp_path / "new" / "deeper" / "all.csv").equals(table)
    (tmp_path / "taken.parquet").mkdir()
    with pytest.raises(PredictError, match="cannot write the predictions to"):
        write_predictions(table, tmp_path / "taken.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "taken.parquet"]


def test_a_run_trained_under_cohort_rules_3_is_told_of_the_later_feature_changes() -> None:
    """Karnofsky as ECOG (and no longer a lab), the assertedDate onset, other stage groups, SNOMED stage codes
    and the bare 'Smoker' display change the features of a run saved under rules 3: it must hear of them."""
    from types import SimpleNamespace

    from fusion.cohort import LakeFrames

    run = SimpleNamespace(run_dir=Path("run"), meta={"cohort_rules": 3}, config=None)
    with pytest.warns(UserWarning, match="trained under cohort rules 3; .*Karnofsky.* retrain it") as seen:
        with pytest.raises(KeyError):  # the bare run has no feature selection: only the warning is checked
            run_cohort(run, LakeFrames())
    message = str(seen[0].message)
    assert "assertedDate" in message and "other_stage_codes" in message and "pathological stage" not in message
