"""End-to-end training on a few dozen synthetic patients given as reader-like frames (no lake needed)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from fusion.cohort import CohortError, LakeFrames, assemble_cohort, fold_cohort
from fusion.config import load_config
from fusion.data import CohortDataset, Normalizer, collate
from fusion.models import RiskOffset
from fusion.run import RunError, build_model, load_run
from fusion.train import train
from ingest.synth import codes as c

T0 = pd.Timestamp("2020-01-01", tz="UTC")
DAY = pd.Timedelta(days=1)
LAB_CODES = [c.LABS[k][0] for k in ("ldh", "cea", "albumin", "hemoglobin")]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest (and least disturbed by other processes) on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_frames(n: int = 36, seed: int = 0, *, images: bool = False) -> LakeFrames:
    """A small seeded cohort shaped like the reader's frames; risk rises with LDH and stage."""
    rng = np.random.default_rng(seed)
    rows = {k: [] for k in ("patients", "conditions", "observations", "medications", "encounters",
                            "gene_status", "tmb", "images")}
    classes = list(c.DIAGNOSIS_SNOMED)
    for i in range(n):
        key = f"p{i:03d}"
        index = T0 + int(rng.integers(0, 700)) * DAY
        dx = classes[i % 3]
        stage = int(rng.integers(1, 5))
        ldh = float(rng.normal(180 + 40 * stage, 20))
        death_day = float(rng.exponential(2000 / stage))
        dead = death_day < 1500
        rows["patients"].append({"patient_key": key, "mrn": f"m{i}", "birth_date": index - int(rng.integers(50, 85))
                                 * 365 * DAY, "sex": ["male", "female"][i % 2],
                                 "death_date": index + round(death_day) * DAY if dead else pd.NaT})
        code, display = c.DIAGNOSIS_SNOMED[dx]
        rows["conditions"].append({"patient_key": key, "system": c.SNOMED, "code": code, "display": display,
                                   "onset": index})
        if i % 4 == 0:
            rows["conditions"].append({"patient_key": key, "system": c.SNOMED, "code": c.COMORBIDITIES["copd"][0],
                                       "display": c.COMORBIDITIES["copd"][1], "onset": index - 400 * DAY})
        for day in (-300, -120, -10, 60):
            for code_, base in zip(LAB_CODES, (ldh, 3.0, 4.0, 13.0), strict=True):
                rows["observations"].append(_obs(key, code_, base + rng.normal(0, 2), index + day * DAY))
        for code_, value, vcode, vdisplay in ((c.ECOG_LOINC[0], float(stage > 2), None, None),
                                              (c.STAGE_LOINC[0], None, f"{stage}A", f"Stage {stage}A"),
                                              (c.SMOKING_LOINC[0], None, c.SMOKING_SNOMED["former"][0], "Ex")):
            rows["observations"].append(_obs(key, code_, value, index, vcode, vdisplay))
        last = min(round(death_day), 1500) if dead else 1500
        rows["encounters"].append({"patient_key": key, "start": index + last * DAY, "end": index + last * DAY})
        if dx != "benign":
            drug = ["40048", "1721560", "1547545"][i % 3]
            rows["medications"].append({"patient_key": key, "system": c.RXNORM, "code": drug,
                                        "display": c.DRUGS[drug], "start": index + 20 * DAY})
            resp = "PR" if rng.random() < 0.5 else "PD"
            rows["observations"].append(_obs(key, c.RECIST_LOINC[0], None, index + 80 * DAY, c.RECIST[resp][0],
                                             c.RECIST[resp][1]))
            if rng.random() < 0.6:
                rows["observations"].append(_obs(key, c.DISEASE_STATUS_LOINC[0], None, index + 200 * DAY,
                                                 c.DISEASE_STATUS["progressing"][0], "worse"))
        if i % 5:
            for gene in ("EGFR", "KRAS", "TP53"):
                rows["gene_status"].append({"patient_key": key, "gene": gene, "mutated": bool(rng.random() < 0.3)})
            rows["tmb"].append({"patient_key": key, "tmb_per_mb": float(rng.gamma(2.0, 3.0))})
        if images and i % 6:
            rows["images"].append({"patient_key": key, "image_id": f"img{i}", "modality": "CT",
                                   "study_date": index - 5 * DAY, "tensor_file": "t.npy", "tensor_row": i,
                                   "tensor_shape": [3, 16, 16]})
    frames = {k: pd.DataFrame(v) if v else None for k, v in rows.items()}
    loader = _fake_loader(seed) if images else None
    return LakeFrames(**frames, image_loader=loader)


def _obs(key, code, value, when, vcode=None, vdisplay=None) -> dict:
    return {"patient_key": key, "system": c.LOINC, "code": code, "display": f"lab {code}", "value": value,
            "unit": None, "value_system": None, "value_code": vcode, "value_display": vdisplay, "effective": when}


def _fake_loader(seed: int):
    def load(tensor_file: str, tensor_row: int) -> np.ndarray:
        rng = np.random.default_rng(seed + tensor_row)
        return rng.normal(size=(2 + tensor_row % 3, 16, 16)).astype(np.float32)

    return load


FAST = ["train.epochs=4", "train.batch_size=16", "train.patience=2", "modalities.image.enabled=false",
        "fusion.out_dim=16", "modalities.ehr.encoder_kwargs={hidden_dim: 16, out_dim: 8}",
        "modalities.genomics.encoder_kwargs={hidden_dim: 16, out_dim: 8}", "split.val_fraction=0.25",
        "split.test_fraction=0.2"]


def test_train_writes_run_and_is_reproducible(tmp_path):
    frames = make_frames()
    config = load_config(None, FAST)
    runs = [train(config, None, tmp_path / f"run{k}", frames=frames) for k in range(2)]
    for name in ("model.safetensors", "config.yaml", "run.json", "history.csv", "curves.png"):
        assert (runs[0] / name).is_file(), name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    a, b = (load_file(str(r / "model.safetensors")) for r in runs)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    meta = json.loads((runs[0] / "run.json").read_text())
    assert meta["diagnosis_classes"] == list(c.DIAGNOSES)
    assert meta["treatment_names"] == list(c.TREATMENTS)
    assert set(meta["splits"].values()) == {"train", "val", "test"} and len(meta["splits"]) == 36
    assert "lab:2532-0:last" in meta["feature_names"]["ehr"]
    n_ehr = len(meta["feature_names"]["ehr"])
    assert len(meta["normalization"]["ehr"]["mean"]) == n_ehr
    times = np.asarray(meta["breslow"]["event_times"])
    assert times.size > 0 and np.all(np.diff(meta["breslow"]["cum_baseline_hazard"]) >= 0)
    history = pd.read_csv(runs[0] / "history.csv")
    assert 1 <= len(history) <= 4 and {"train_loss", "val_loss", "val_c_index", "val_score"} <= set(history.columns)
    assert (history["train_samples"] == sum(s == "train" for s in meta["splits"].values())).all()
    assert ((history["train_seconds"] > 0) & (history["train_seconds"] < history["seconds"])).all()
    # the kept epoch is the first one with the best validation score (C-index / AUROC mean), not the lowest loss
    assert meta["summary"]["best_epoch"] == int(history["epoch"][history["val_score"].idxmax()])

    loaded = load_run(runs[0])
    assert not loaded.model.training and loaded.breslow is not None
    cohort = assemble_cohort(frames, loaded.config)
    rows = cohort.indices("test")
    norm = Normalizer.from_dict(meta["normalization"])
    batch = collate([CohortDataset(cohort, rows, norm)[i] for i in range(rows.size)])
    with torch.no_grad():
        out = loaded.model(batch)
    assert out["diagnosis_logits"].shape == (rows.size, 3) and torch.isfinite(out["log_risk"]).all()
    surv = loaded.breslow.predict_survival(out["log_risk"].numpy(), np.array([365.0, 730.0]))
    assert surv.shape == (rows.size, 2) and np.all(surv[:, 1] <= surv[:, 0])

    (runs[0] / "run.json").write_text(json.dumps({**meta, "run_format_version": "1"}))  # an older tumorboard's
    with pytest.raises(RunError, match="run format '1'.*retrain"):
        load_run(runs[0])
    # a run cut short in copying or edited by hand: one line naming the file and the fix, no traceback
    (runs[0] / "run.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "normalization"}))
    with pytest.raises(RunError, match=r"run.json lacks normalization; copy the run again or retrain"):
        load_run(runs[0])
    (runs[0] / "run.json").write_text(json.dumps(meta)[:100])
    with pytest.raises(RunError, match=r"run.json is not readable JSON"):
        load_run(runs[0])
    weights = runs[1] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(RunError, match=r"model.safetensors is damaged .*copy the run again or retrain"):
        load_run(runs[1])


def test_existing_run_dir_is_refused_and_failed_run_leaves_nothing(tmp_path):
    frames = make_frames(12)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("keep")
    with pytest.raises(RunError, match="already exists"):
        train(load_config(None, FAST), None, tmp_path / "taken", frames=frames)
    never = replace(frames, gene_status=frames.gene_status.iloc[:0], tmb=frames.tmb.iloc[:0])
    with pytest.raises(CohortError, match=r"the lake has no genomics data; ingest it \(`tumorboard ingest variants`\)"
                                          r" or leave the modality out \(--set modalities.genomics.enabled=false\)"):
        train(load_config(None, FAST), None, tmp_path / "never", frames=never)
    imaged = make_frames(12, images=True)
    late = replace(imaged, images=imaged.images.assign(study_date=pd.Timestamp("2100-01-01", tz="UTC")))
    with pytest.raises(CohortError, match="no patient has image data dated before the index date"):
        train(load_config(None, [*FAST, "modalities.image.enabled=true"]), None, tmp_path / "late", frames=late)
    bad = load_config(None, [*FAST, "modalities.ehr.encoder=timm"])  # an image encoder on tabular data
    with pytest.raises(RunError, match="image encoder"):
        train(bad, None, tmp_path / "bad", frames=frames)
    wild = load_config(None, [*FAST, "train.lr=10", "train.max_grad_norm=null"])  # finite but exploding loss
    with pytest.raises(FloatingPointError, match="training diverged: the best epoch's log-risks reach"):
        train(wild, None, tmp_path / "wild", frames=make_frames())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_response_readout_width_follows_the_config():
    spec = {"modalities": {"ehr": {"kind": "tabular", "n_features": 5}}, "n_classes": None, "survival": True,
            "n_treatments": 3}
    wide = build_model(load_config(None, ["modalities.image.enabled=false", "modalities.genomics.enabled=false"]),
                       spec)
    linear = build_model(load_config(None, ["modalities.image.enabled=false", "modalities.genomics.enabled=false",
                                            "tasks.response.hidden_dim=null"]), spec)
    assert wide.response.net.mlp[0].out_features == 64  # the default keeps older runs' architecture
    assert linear.response.net.mlp is None
    assert load_config(Path(__file__).parents[2] / "configs" / "full_fusion.yaml").tasks.response.hidden_dim is None


def test_cross_validation_writes_folds_and_summary(tmp_path):
    config = load_config(None, [*FAST, "train.epochs=1"])
    frames = make_frames(30)
    held_out = sorted(frames.patients["patient_key"])[:4]  # curated as the held-out test set
    labels = pd.DataFrame({"patient_key": held_out, "split": ["test", "Testing", "test", "test"]})
    frames = replace(frames, labels=pd.concat([frames.labels, labels], ignore_index=True))
    out = train(config, None, tmp_path / "cv", frames=frames, cv=2)
    assert (out / "fold_0" / "model.safetensors").is_file() and (out / "fold_1" / "run.json").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["k"] == 2 and len(summary["folds"]) == 2 and summary["held_out_test_patients"] == 4
    splits = [json.loads((out / f"fold_{i}" / "run.json").read_text())["splits"] for i in range(2)]
    tests = [set(k for k, v in s.items() if v == "test") for s in splits]
    assert not tests[0] & tests[1] and len(tests[0] | tests[1]) == 26
    assert not set(held_out) & (set(splits[0]) | set(splits[1]))  # in no fold, not even for training
    with pytest.raises(RunError, match="fold_"):
        load_run(out)


def test_load_run_names_a_missing_run_directory(tmp_path):
    """A mistyped RUN is said not to exist, not to lack the files of a run."""
    with pytest.raises(RunError, match="does not exist"):
        load_run(tmp_path / "no_such_run")


def test_cross_validation_folds_choose_columns_on_their_own_training_patients():
    """A lab measured only in one fold's test patients must not become a column of that fold."""
    frames = make_frames(30)
    config = load_config(None, [*FAST, "data.ehr.top_k_labs=50"])
    cohort = assemble_cohort(frames, config)
    keys = cohort.patient_keys
    split = np.where(np.arange(keys.size) < 10, "test", np.where(np.arange(keys.size) < 14, "val", "train"))
    rare = frames.observations[frames.observations["patient_key"].isin(keys[:10])].head(10).copy()
    rare["code"] = "99999-9"
    frames = replace(frames, observations=pd.concat([frames.observations, rare], ignore_index=True))
    fold = fold_cohort(frames, config, keys, split)
    assert not any("99999-9" in name for name in fold.feature_names)
    assert fold.split.tolist() == split.tolist() and fold.summary["test"] == 10
    swapped = fold_cohort(frames, config, keys, np.where(split == "test", "train", np.where(split == "train",
                                                                                              "test", split)))
    assert any("99999-9" in name for name in swapped.feature_names)


def test_a_column_no_training_patient_has_is_missing_for_every_patient():
    """A column the training rows never observe (a listed lab none of them had, a slope none had two values for)
    trained no weight: a later patient's value there is missing to the model, not fed raw (mean 0, sd 1), also
    after the statistics go through run.json."""
    from types import SimpleNamespace

    from fusion.cohort import TabularBlock
    from fusion.run import json_safe

    values = np.array([[1.0, np.nan], [3.0, np.nan], [5.0, 250.0]], np.float32)
    cohort = SimpleNamespace(blocks={"ehr": TabularBlock(["lab:last", "lab:slope"], values, np.ones(3, bool))})
    fitted = Normalizer.fit(cohort, np.array([0, 1]))
    saved = Normalizer.from_dict(json.loads(json.dumps(json_safe(fitted.to_dict()), allow_nan=False)))
    for norm in (fitted, saved):
        out = norm.apply("ehr", values)
        assert out[2, 0] == pytest.approx(3.0 / np.sqrt(2.0)) and np.isnan(out[:, 1]).all()


def test_image_batches_pad_series_and_train(tmp_path):
    frames = make_frames(24, images=True)
    config = load_config(None, [*FAST, "train.epochs=1", "modalities.image.enabled=true",
                                "modalities.genomics.enabled=false", "tasks.response.enabled=false",
                                "modalities.image.encoder_kwargs={model_name: resnet10t, in_chans: 1, out_dim: 8}"])
    cohort = assemble_cohort(frames, config)
    rows = np.arange(6)
    norm = Normalizer.fit(cohort, rows)
    batch = collate([CohortDataset(cohort, rows, norm)[i] for i in rows])
    image, mask = batch["modalities"]["image"], batch["masks"]["image"]
    assert image.shape == (6, 4, 1, 16, 16)  # longest series has 2 + 5 % 3 = 4 slices
    assert mask.sum(1).tolist() == [0, 3, 4, 2, 3, 4]  # patient 0 has no image, others 2 + i % 3 slices
    assert batch["present"]["image"].tolist() == [False, True, True, True, True, True]
    run = train(config, None, tmp_path / "img", frames=frames)
    assert json.loads((run / "run.json").read_text())["spec"]["modalities"]["image"]["image_size"] == 16


def test_coxnet_offset_is_fitted_saved_and_added_to_the_log_risk(tmp_path):
    frames = make_frames(60)
    config = load_config(None, [*FAST, "tasks.survival.coxnet_offset=true"])
    run = load_run(train(config, None, tmp_path / "run", frames=frames))
    offset = run.model.offset
    n_features = {name: len(names) for name, names in run.meta["feature_names"].items()}
    assert offset is not None and offset.n_features == n_features
    info = run.meta["summary"]["coxnet_offset"]
    assert info["features"] == 2 * sum(n_features.values()) and 0 < info["nonzero"] <= info["features"]
    assert info["nonzero"] == sum(int(torch.count_nonzero(offset.weight(n))) for n in n_features)

    # the log-risk is the head's output plus [x, observed] @ w of every present tabular modality
    cohort = assemble_cohort(frames, run.config)
    rows = cohort.indices("test")
    norm = Normalizer.from_dict(run.meta["normalization"])
    batch = collate([CohortDataset(cohort, rows, norm)[i] for i in range(rows.size)])
    expected = np.zeros(rows.size)
    for name in n_features:
        x = norm.apply(name, cohort.blocks[name].values[rows])
        design = np.hstack([np.nan_to_num(x), ~np.isnan(x)]) * cohort.blocks[name].present[rows, None]
        expected += design @ offset.weight(name).numpy()
    with torch.no_grad():
        with_offset = run.model(batch)["log_risk"].numpy()
        offset.set_weights({n: torch.zeros(2 * f) for n, f in n_features.items()})
        without = run.model(batch)["log_risk"].numpy()
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(with_offset - without, expected, atol=1e-4)

    image_only = load_config(None, ["modalities.image.enabled=true", "modalities.ehr.enabled=false",
                                    "modalities.genomics.enabled=false",
                                    "tasks.survival.coxnet_offset=true"])
    spec = {"modalities": {"image": {"kind": "image", "in_chans": 1, "image_size": 16}}, "n_classes": None,
            "survival": True, "n_treatments": None}
    assert build_model(image_only, spec).offset is None  # nothing tabular to offset: no effect


def test_risk_offset_terms_per_modality_with_any_modality_name():
    offset = RiskOffset({"lab-panel": 2, "ehr": 1})
    offset.set_weights({"lab-panel": torch.tensor([1.0, 2.0, 0.5, 0.0]), "ehr": torch.tensor([3.0, -1.0])})
    x = {"lab-panel": torch.tensor([[1.0, 1.0], [2.0, 0.0]]), "ehr": torch.tensor([[2.0], [0.0]])}
    masks = {"lab-panel": torch.tensor([[True, True], [True, False]]), "ehr": torch.tensor([[True], [False]])}
    terms = offset.terms(x, masks)
    torch.testing.assert_close(terms["lab-panel"], torch.tensor([1 + 2 + 0.5, 2 + 0.5]))
    torch.testing.assert_close(terms["ehr"], torch.tensor([6.0 - 1.0, 0.0]))
    assert set(offset.state_dict()) == {"weights"}


def test_survival_modalities_restrict_the_head_and_single_modality_models_drop_it(tmp_path):
    from fusion.evaluate import single_modality_run

    frames = make_frames(48)
    config = load_config(None, [*FAST, "tasks.survival.modalities=[ehr]", "tasks.survival.coxnet_offset=true"])
    run = load_run(train(config, None, tmp_path / "run", frames=frames))
    assert run.model.heads_config.survival_modalities == ("ehr",)
    only_genomics = single_modality_run(run, frames, "genomics", lake_path="none")
    assert only_genomics.config.tasks.survival.modalities is None  # a survival model of genomics alone
    assert only_genomics.model.heads_config.survival_modalities is None
    assert single_modality_run(run, frames, "ehr", lake_path="none").config.tasks.survival.modalities == ["ehr"]
    with pytest.raises(ValueError, match="tasks.survival.modalities names unknown modalities"):
        load_config(None, ["tasks.survival.modalities=[pathology]"])
    with pytest.raises(ValueError, match="response_link needs the response task"):
        load_config(None, ["tasks.survival.response_link=true", "tasks.response.enabled=false"])


def test_auxiliary_endpoint_trains_the_log_risk_on_the_other_endpoint(tmp_path):
    frames = make_frames(48)
    base = load_config(None, FAST)
    with_pfs = load_config(None, [*FAST, "tasks.survival.auxiliary_endpoint=pfs",
                                  "tasks.survival.auxiliary_weight=0.5"])
    cohort = assemble_cohort(frames, with_pfs)
    rows = cohort.indices("train")
    norm = Normalizer.fit(cohort, rows)
    batch = collate([CohortDataset(cohort, rows, norm, aux_endpoint="pfs")[i] for i in range(rows.size)])
    np.testing.assert_array_equal(batch["targets"]["aux_time"].numpy(),
                                  cohort.targets.pfs_time[rows].astype(np.float32))
    np.testing.assert_array_equal(batch["targets"]["aux_event"].numpy(), cohort.targets.pfs_event[rows])
    assert "aux_time" not in collate([CohortDataset(cohort, rows, norm)[0]])["targets"]

    plain, aux = (train(cfg, None, tmp_path / name, frames=frames)
                  for cfg, name in ((base, "plain"), (with_pfs, "aux")))
    history = pd.read_csv(aux / "history.csv")
    assert (history["train_loss_survival_aux"] > 0).all()
    assert "train_loss_survival_aux" not in pd.read_csv(plain / "history.csv").columns
    a, b = (load_file(str(r / "model.safetensors")) for r in (plain, aux))
    assert not all(torch.equal(a[k], b[k]) for k in a)  # the auxiliary loss changed what was learned
    with pytest.raises(ValueError, match="auxiliary_endpoint is 'os', the endpoint the model already trains on"):
        load_config(None, ["tasks.survival.auxiliary_endpoint=os"])


def test_train_threads_apply_inside_training_only():
    from fusion.train import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
    assert load_config(None, ["train.threads=2"]).train.threads == 2


def test_pretraining_phase_shows_only_its_modalities_then_all(tmp_path):
    """``train.pretrain_modalities``: a first phase on the image alone (rows without one sit out), logged as
    ``phase == "pretrain"``; the second phase starts from it, so the weights differ from a run without it."""
    frames = make_frames(36, images=True)
    base = [*FAST, "modalities.image.enabled=true", "tasks.response.enabled=false", "train.patience=5",
            "modalities.image.encoder_kwargs={model_name: resnet10t, in_chans: 1, out_dim: 8}"]
    plain = train(load_config(None, base), None, tmp_path / "plain", frames=frames)
    staged = train(load_config(None, [*base, "train.pretrain_modalities=[image]", "train.pretrain_epochs=3"]),
                   None, tmp_path / "staged", frames=frames)
    history = pd.read_csv(staged / "history.csv")
    meta = json.loads((staged / "run.json").read_text())
    phases = history["phase"].tolist()
    assert phases == ["pretrain"] * 3 + ["train"] * (len(phases) - 3)  # patience 5 > 3 epochs: no early stop
    with_image = [k for k, s in meta["splits"].items() if s == "train" and int(k[1:]) % 6]
    assert (history.loc[history["phase"] == "pretrain", "train_samples"] == len(with_image)).all()
    train_patients = sum(s == "train" for s in meta["splits"].values())
    assert len(with_image) < train_patients
    assert (history.loc[history["phase"] == "train", "train_samples"] == train_patients).all()
    assert meta["summary"]["epochs_run"] == len(phases) - 3
    a, b = (load_file(str(r / "model.safetensors")) for r in (plain, staged))
    assert not torch.equal(a["encoders.image.backbone.conv1.0.weight"], b["encoders.image.backbone.conv1.0.weight"])

    # evaluate's single-modality models train without the phase (the config would name a disabled modality)
    from fusion.evaluate import single_modality_run

    only_ehr = single_modality_run(load_run(staged), frames, "ehr", lake_path="frames")
    assert only_ehr.config.train.pretrain_epochs == 0
    assert set(pd.read_csv(only_ehr.run_dir / "history.csv")["phase"]) == {"train"}


@pytest.mark.parametrize("sets, message", [
    (["train.pretrain_epochs=3"], "pretrain_modalities is empty"),
    (["train.pretrain_epochs=3", "train.pretrain_modalities=[image]"], "not enabled"),
    (["train.pretrain_epochs=3", "train.pretrain_modalities=[ehr, genomics]"], "every enabled modality"),
    (["train.lr=inf"], "train.lr: Input should be a finite number"),
    (["eval.horizons_days=[-5]"], "horizons_days.0: Input should be greater than 0"),
    (["eval.horizons_days=[]"], "horizons_days: List should have at least 1 item"),
])
def test_config_errors_name_the_fix(sets, message):
    from fusion.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(None, [*FAST, *sets])


def test_a_set_without_comparable_pairs_scores_nan_instead_of_failing():
    from fusion.train import evaluate_outputs

    # the only event is the longest time: no pair (event before another's time) can be compared
    outputs = {"log_risk": torch.tensor([0.1, 0.2])}
    targets = {"time": torch.tensor([10.0, 5.0]), "event": torch.tensor([True, False])}
    result = evaluate_outputs(outputs, targets, {"survival": 1.0})
    assert np.isnan(result["c_index"]) and np.isfinite(result["loss"])


def test_seeded_training_turns_off_the_autotuner_and_nan_fill_and_restores_them():
    """cuDNN's autotuner re-tuned every batch of varying slice counts (7.7 s instead of 0.25 s per epoch on an
    H200), and deterministic mode's NaN fill of new tensors took 12% of a CPU epoch."""
    from fusion.train import seeded

    before = torch.backends.cudnn.benchmark, torch.utils.deterministic.fill_uninitialized_memory
    torch.backends.cudnn.benchmark, torch.utils.deterministic.fill_uninitialized_memory = True, True
    try:
        for deterministic in (True, False):
            with seeded(0, deterministic=deterministic):
                assert torch.are_deterministic_algorithms_enabled() is deterministic
                assert torch.backends.cudnn.benchmark is False
                assert torch.utils.deterministic.fill_uninitialized_memory is False
            assert torch.backends.cudnn.benchmark is True and torch.utils.deterministic.fill_uninitialized_memory
    finally:
        torch.backends.cudnn.benchmark, torch.utils.deterministic.fill_uninitialized_memory = before
