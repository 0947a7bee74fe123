"""Training, evaluation and prediction on lakes without FHIR: curated features and labels only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fusion.config import load_config
from fusion.predict import predict_patient
from fusion.run import load_run
from fusion.train import train
from ingest.lake import Lake
from ingest.tables import ingest_features, ingest_labels

# a curated clinical modality and nothing else; few epochs, one thread
CURATED = ["modalities.ehr.enabled=false", "modalities.genomics.enabled=false", "modalities.clinical.enabled=true",
           "modalities.clinical.encoder_kwargs={hidden_dim: 16, out_dim: 8, dropout: 0.1}",
           "fusion.out_dim=8", "fusion.kwargs={attention_dim: 8}", "train.epochs=2", "train.batch_size=16",
           "train.threads=1", "eval.n_boot=5"]


def curated_lake(root: Path, *, n: int = 40, seed: int = 0, labels: dict | None = None,
                 features: dict | None = None) -> Path:
    """A lake holding a ``clinical`` features table and a labels table (every patient indexed on 2020-01-01).

    ``labels`` / ``features``: extra columns {name: values (n,)} (default labels: survival; default features: two
    numbers and a category)."""
    rng = np.random.default_rng(seed)
    ids = [f"p{i:03d}" for i in range(n)]
    x = rng.normal(size=n)
    feats = pd.DataFrame({"patient_id": ids, **(features if features is not None else {
        "age": (60 + 10 * x).round(1), "marker": rng.normal(size=n).round(3),
        "grade": rng.choice(["G1", "G2", "G3"], n)})})
    labs = pd.DataFrame({"patient_id": ids, "index_date": "2020-01-01", **(labels if labels is not None else {
        "time": rng.exponential(500 * np.exp(-0.5 * x)).round(1), "event": (rng.random(n) < 0.7).astype(int)})})
    root.mkdir(parents=True, exist_ok=True)
    feats.to_csv(root / "features.csv", index=False)
    labs.to_csv(root / "labels.csv", index=False)
    lake = Lake(root / "lake")
    ingest_features(lake, root / "features.csv", modality="clinical")
    ingest_labels(lake, root / "labels.csv")
    return root / "lake"


def _train(lake: Path, out: Path, *overrides: str) -> Path:
    config = load_config(Path(__file__).parents[2] / "configs" / "genomics_clinical_survival.yaml",
                         [*CURATED, *overrides])
    return train(config, lake, out)


def test_predict_explains_a_response_only_run(tmp_path):
    """A run with only the response head explains the response logit (it crashed looking for a diagnosis
    head)."""
    rng = np.random.default_rng(1)
    n = 40
    treatment = rng.choice(["chemo", "io"], n).astype(object)
    treatment[0] = None  # no treatment on record: the treatment most likely to respond is explained
    lake = curated_lake(tmp_path, n=n, labels={"treatment": treatment,
                                               "response": np.where(treatment == None, None,  # noqa: E711
                                                                    rng.integers(0, 2, n)).astype(object)})
    run = load_run(_train(lake, tmp_path / "run", "tasks.survival.enabled=false", "tasks.response.enabled=true",
                          "split.stratify=none", "data.targets.treatments=[chemo, io]"))
    torch.set_num_threads(1)
    for key in ("p000", "p001"):
        result = predict_patient(run, Lake(lake), key)
        assert set(result["response"]) == {"chemo", "io"} and result["survival"] is None
        assert result["explanation_target"].startswith("response_logit:")
        assert result["explanation_target"].split(":")[1] in {"chemo", "io"}
        assert result["top_features"] and all(np.isfinite(f["attribution"]) for f in result["top_features"])
    recorded = pd.read_csv(tmp_path / "labels.csv").set_index("patient_id")["treatment"]["p001"]
    assert predict_patient(run, Lake(lake), "p001")["explanation_target"] == f"response_logit:{recorded}"


def test_labels_of_a_disabled_task_need_not_be_in_the_configured_classes(tmp_path):
    """A survival run on a lake whose labels carry diagnoses and treatments the config does not list (a
    cBioPortal study ingested with --diagnosis): the disabled tasks' labels are unknown, not an error; the
    diagnosis task, when enabled, still names the unlisted classes."""
    import pytest

    from fusion.cohort import CohortError

    rng = np.random.default_rng(2)
    n = 40
    x = rng.normal(size=n)
    lake = curated_lake(tmp_path, n=n, labels={
        "time": rng.exponential(500 * np.exp(-0.5 * x)).round(1), "event": (rng.random(n) < 0.7).astype(int),
        "diagnosis": rng.choice(["Lung Adenocarcinoma", "Lung Squamous Cell Carcinoma"], n),
        "treatment": rng.choice(["carboplatin", "pembrolizumab"], n)})
    run = load_run(_train(lake, tmp_path / "run"))
    assert run.meta["summary"]["epochs_run"] >= 1
    with pytest.raises(CohortError, match="Lung Adenocarcinoma.*data.targets.diagnosis_classes"):
        _train(lake, tmp_path / "run2", "tasks.diagnosis.enabled=true")


def test_responses_without_a_treatment_are_named_when_the_response_task_has_none(tmp_path):
    """Curated responses without a treatment column count for nothing; the error says so instead of asking for
    the labels the file already has."""
    import pytest

    from fusion.cohort import CohortError

    rng = np.random.default_rng(3)
    lake = curated_lake(tmp_path, labels={"response": rng.integers(0, 2, 40)})
    with pytest.raises(CohortError, match=r"40 patient\(s\) have a response but no treatment.*treatment column"):
        _train(lake, tmp_path / "run", "tasks.survival.enabled=false", "tasks.response.enabled=true",
               "split.stratify=none")


def test_a_curated_lake_without_index_dates_says_how_to_give_them(tmp_path):
    """Features and labels with time and event but no index_date: the error names the column to add."""
    import pytest

    from fusion.cohort import CohortError

    curated_lake(tmp_path / "with_dates")
    pd.read_csv(tmp_path / "with_dates" / "labels.csv").drop(columns="index_date").to_csv(
        tmp_path / "labels.csv", index=False)
    lake = Lake(tmp_path / "lake")
    ingest_features(lake, tmp_path / "with_dates" / "features.csv", modality="clinical")
    ingest_labels(lake, tmp_path / "labels.csv")
    with pytest.raises(CohortError, match="add an index_date column to the labels CSV"):
        _train(tmp_path / "lake", tmp_path / "run")


def test_an_unknown_patient_of_a_lake_without_fhir_is_told_a_query_that_runs(tmp_path):
    """The lake has no patient_xref (no FHIR): the listing query the error suggests reads the labels."""
    import pytest

    from fusion.cohort import load_frames
    from fusion.predict import UnknownPatientError, resolve_patient

    lake = Lake(curated_lake(tmp_path))
    with pytest.raises(UnknownPatientError) as error:
        resolve_patient(lake, load_frames(lake.path), "nobody")
    query = str(error.value).split('LAKE "')[1].split('"`')[0]
    assert "patient_xref" not in query and lake.sql(query).num_rows == 40


def test_predict_reads_no_label_of_the_patient(tmp_path):
    """A patient whose curated diagnosis or treatment the run never saw (labels are targets, not inputs) is
    predicted over the run's classes; it failed with 'add them to the config' for every patient of the lake.
    ``evaluate`` on that lake counts the label as unknown and says so in a note (it failed the same way)."""
    from fusion.evaluate import evaluate_run

    rng = np.random.default_rng(3)
    n = 40
    x = rng.normal(size=n)
    lake = curated_lake(tmp_path, n=n, labels={
        "time": rng.exponential(500 * np.exp(-0.5 * x)).round(1), "event": (rng.random(n) < 0.7).astype(int),
        "diagnosis": rng.choice(["adeno", "squamous"], n)})
    run = load_run(_train(lake, tmp_path / "run", "tasks.diagnosis.enabled=true",
                          "data.targets.diagnosis_classes=[adeno, squamous]", "split.stratify=none"))
    torch.set_num_threads(1)
    (tmp_path / "new.csv").write_text("patient_id,diagnosis,treatment,index_date\n"
                                      "p000,small cell,radiotherapy,2020-01-01\n")
    ingest_labels(Lake(lake), tmp_path / "new.csv")
    result = predict_patient(run, Lake(lake), "p000")
    assert list(result["diagnosis"]) == ["adeno", "squamous"] and result["survival"] is not None
    notes = evaluate_run(run.run_dir, lake, n_boot=0, retrain_ablations=False)["notes"]
    assert "1 patient(s) have a diagnosis label the run was not trained on (small cell): unknown here, so their" \
           " diagnosis is not scored" in notes
    assert not any("treatment label" in note for note in notes)  # the run has no response task


def test_predict_names_a_patient_without_data_for_the_run(tmp_path):
    """A patient with an index date but none of the run's modalities is told so, not said to lack an index
    date (the cohort's message mentions 'the index date + grace_days')."""
    import pytest

    from fusion.predict import PredictError

    lake = curated_lake(tmp_path)
    run = load_run(_train(lake, tmp_path / "run"))
    (tmp_path / "new.csv").write_text("patient_id,index_date\np999,2020-01-01\n")
    ingest_labels(Lake(lake), tmp_path / "new.csv")
    with pytest.raises(PredictError, match="no data for any of the run's modalities"):
        predict_patient(run, Lake(lake), "p999")


def test_a_run_trained_with_treatments_null_keeps_its_treatments_on_another_lake(tmp_path):
    """``data.targets.treatments: null`` (the values found in the lake, as a cBioPortal study's drug classes are)
    is resolved once, at training: its treatments are those of the lake's patients, not the FHIR treatment map's
    as well, and a lake of new patients (another site, another drug among them) is read with the run's
    treatments. Re-deriving them from that lake shifted every index: a chemo patient's response was explained
    (and scored) as another treatment's."""
    from fusion.evaluate import evaluate_run

    rng = np.random.default_rng(4)
    n = 40
    treatment = rng.choice(["chemo", "io"], n).astype(object)
    lake = curated_lake(tmp_path / "site_a", n=n, labels={"treatment": treatment, "response": rng.integers(0, 2, n)})
    overrides = ("tasks.survival.enabled=false", "tasks.response.enabled=true", "split.stratify=none",
                 "data.targets.treatments=null")
    run = load_run(_train(lake, tmp_path / "run", *overrides))
    assert run.meta["treatment_names"] == ["chemo", "io"]  # no treatment of the FHIR map that no patient had
    site_b = tmp_path / "site_b"  # new patients (q...), one of them treated with a drug site A never gave
    site_b.mkdir()
    ids = [f"q{i}" for i in range(6)]
    pd.DataFrame({"patient_id": ids, "age": [50, 60, 70, 55, 65, 75], "marker": [0.1, -0.2, 0.3, 0.0, 1.0, -1.0],
                  "grade": ["G1", "G2", "G3", "G1", "G2", "G3"]}).to_csv(site_b / "features.csv", index=False)
    pd.DataFrame({"patient_id": ids, "index_date": "2020-01-01",
                  "treatment": ["carboplatin", "chemo", "io", "chemo", "io", "chemo"],
                  "response": [0, 1, 0, 0, 1, 1]}).to_csv(site_b / "labels.csv", index=False)
    other = Lake(site_b / "lake")
    ingest_features(other, site_b / "features.csv", modality="clinical")
    ingest_labels(other, site_b / "labels.csv")
    torch.set_num_threads(1)
    result = predict_patient(run, other, "q1")
    assert set(result["response"]) == {"chemo", "io"}
    assert result["explanation_target"] == "response_logit:chemo"
    metrics = evaluate_run(run.run_dir, other.path, retrain_ablations=False, n_boot=0, out_dir=tmp_path / "eval")
    assert metrics["external_validation"]
    assert metrics["tasks"]["response"]["n"] == 5  # carboplatin's patient: a treatment the model has no head for


def test_training_outputs_without_a_training_patient_with_data_say_what_to_do(tmp_path):
    """A lake holding the run's training patients (their labels) but none of their inputs, only the other
    patients': computing the training reference has no row to score and no prior, and said so with an
    AttributeError on ``None.shape``."""
    import pytest

    from fusion.predict import PredictError, lake_frames, model_outputs, run_cohort, training_outputs

    lake = curated_lake(tmp_path / "site_a")
    run = load_run(_train(lake, tmp_path / "run"))
    trained_on = {key for key, split in run.meta["splits"].items() if split == "train"}
    features = pd.read_csv(tmp_path / "site_a" / "features.csv")
    features[~features["patient_id"].isin(trained_on)].to_csv(tmp_path / "features.csv", index=False)
    other = Lake(tmp_path / "lake")
    ingest_features(other, tmp_path / "features.csv", modality="clinical")
    ingest_labels(other, tmp_path / "site_a" / "labels.csv")
    torch.set_num_threads(1)
    cohort = run_cohort(run, lake_frames(other))
    with pytest.raises(PredictError, match="none of the run's training patients.*has data for.*clinical.*lake the"
                                           " run was trained on"):
        training_outputs(run, cohort)
    with pytest.raises(PredictError, match="no row to score.*prior"):
        model_outputs(run, cohort, np.array([], dtype=np.int64))


def test_predict_all_counts_the_patients_it_leaves_out_of_a_lake_without_fhir(tmp_path):
    """``predict --all`` on a labels-only lake (cBioPortal): a patient with labels but no input and one with
    inputs but no index date are left out and counted (the count read the FHIR Patient table: always 0)."""
    from fusion.predict import predict_cohort

    lake = curated_lake(tmp_path)
    run = load_run(_train(lake, tmp_path / "run"))
    (tmp_path / "new.csv").write_text("patient_id,index_date\np998,2020-01-01\n")
    ingest_labels(Lake(lake), tmp_path / "new.csv")
    (tmp_path / "more.csv").write_text("patient_id,age,marker,grade\np999,70,0.5,G2\n")
    ingest_features(Lake(lake), tmp_path / "more.csv", modality="clinical", replace="source")
    torch.set_num_threads(1)
    table, left_out = predict_cohort(run, Lake(lake))
    assert len(table) == 40 and left_out == 2


def test_a_lake_without_fhir_holding_the_training_patients_recomputes_their_reference(tmp_path):
    """The risk percentile's reference on the training lake of a labels-only run whose saved reference is gone:
    the lake holds every training patient, so their risks are computed there (they were looked for in the FHIR
    Patient table, found missing, and the prediction failed asking for the training lake it was given). A lake
    with their labels but not their inputs uses the saved reference."""
    from fusion.run import read_training_reference

    lake = curated_lake(tmp_path)
    run_dir = _train(lake, tmp_path / "run")
    saved = read_training_reference(run_dir).log_risk
    (run_dir / "reference_risk.json").unlink()
    torch.set_num_threads(1)
    run = load_run(run_dir)
    result = predict_patient(run, Lake(lake), "p000", explain=False)
    assert 0.0 <= result["risk_percentile"] <= 100.0
    np.testing.assert_allclose(read_training_reference(run_dir).log_risk, saved, atol=1e-5)
    # the training patients' labels without their inputs: the saved reference, not one of a few or none of them
    trained_on = {key for key, split in run.meta["splits"].items() if split == "train"}
    features = pd.read_csv(tmp_path / "features.csv")
    features[~features["patient_id"].isin(trained_on)].to_csv(tmp_path / "others.csv", index=False)
    other = Lake(tmp_path / "other")
    ingest_features(other, tmp_path / "others.csv", modality="clinical")
    ingest_labels(other, tmp_path / "labels.csv")
    scored = next(key for key in features["patient_id"] if key not in trained_on)
    again = predict_patient(run, other, scored, explain=False)
    assert again["risk_percentile"] == predict_patient(run, Lake(lake), scored, explain=False)["risk_percentile"]


def test_labels_of_progression_free_survival_train_and_predict_as_such(tmp_path):
    """Curated PFS labels (``ingest labels --endpoint pfs``, as ``ingest cbioportal --endpoint PFS`` writes them):
    the default config (overall survival) is told the labels are PFS and how to train on them, instead of
    training OS on them and predicting ``"endpoint": "os"``; with ``survival_endpoint: pfs`` predictions say so."""
    import pytest

    from fusion.cohort import CohortError

    curated_lake(tmp_path / "site")
    lake = Lake(tmp_path / "lake")
    ingest_features(lake, tmp_path / "site" / "features.csv", modality="clinical")
    ingest_labels(lake, tmp_path / "site" / "labels.csv", endpoint="pfs")
    with pytest.raises(CohortError, match="curated survival labels .* are pfs.*survival_endpoint=pfs"):
        _train(lake.path, tmp_path / "os_run")
    run = load_run(_train(lake.path, tmp_path / "run", "data.targets.survival_endpoint=pfs"))
    torch.set_num_threads(1)
    assert predict_patient(run, lake, "p000", explain=False)["survival"]["endpoint"] == "pfs"
