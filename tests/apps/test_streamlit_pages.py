"""Every page of the Streamlit app through ``streamlit.testing.v1.AppTest`` on a small lake and run.

Each test asserts the page's title first (a wrong page path silently renders the default page), drives the
widgets by key and checks ``not at.exception``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from apps.cli.app import streamlit_command
from apps.streamlit import services as sv
from ingest.lake import Lake
from ingest.reader import read_tmb

APP = str(Path(__file__).resolve().parents[2] / "apps" / "streamlit" / "app.py")


def open_page(monkeypatch, lake: Path, runs: Path | None, page: str | None = None) -> AppTest:
    monkeypatch.setenv(sv.ENV_LAKE, str(lake))
    if runs is None:
        monkeypatch.delenv(sv.ENV_RUNS, raising=False)
    else:
        monkeypatch.setenv(sv.ENV_RUNS, str(runs))
    at = AppTest.from_file(APP, default_timeout=120)
    if page:
        at.switch_page(page)
    return at.run()


def open_tab(at: AppTest, label: str) -> AppTest:
    """Select the Patient page's tab ``label`` (its tabs render lazily) and rerun."""
    at.session_state["patient_tab"] = label
    at = at.run()
    assert not at.exception
    return at


def texts(at: AppTest) -> str:
    kinds = ("markdown", "caption", "info", "warning", "error", "success")
    parts = [e.value for kind in kinds for e in at.get(kind)]
    return "\n".join(str(p) for p in parts)


# The tiny run's treatments (the default config's keys) as the pages name them (data.targets.treatment_labels)
READABLE = {"chemo": "chemotherapy", "egfr_tki": "EGFR TKI", "immunotherapy": "immunotherapy"}


def diagnosis_heading(at: AppTest):
    """The Patient page's diagnosis heading (a subheader that wraps, not a metric cut off at 1366 px)."""
    return next(h for h in at.subheader if h.value.startswith("Diagnosis: "))


def patient_keys(lake: Path) -> tuple[set[str], set[str]]:
    """(patients with an image, patients without genomics)."""
    from ingest import reader
    from ingest.lake import Lake

    handle = Lake(lake)
    everyone = set(reader.read_patients(handle)["patient_key"])
    imaged = set(reader.read_images(handle)["patient_key"])
    return imaged, everyone - set(reader.read_gene_status(handle)["patient_key"])


def test_patient_page(monkeypatch, app_data):
    at = open_page(monkeypatch, app_data.lake, app_data.runs)
    assert at.title[0].value == "Patient"
    assert not at.exception
    imaged, _ = patient_keys(app_data.lake)
    picker = at.selectbox(key="patient_picker")
    assert len(picker.options) == 30
    picked = sorted(imaged)[0]
    at = picker.set_value(picked).run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    percentile = "Risk percentile (higher: worse)"
    expected = {"Age at diagnosis", "Sex", "Stage", "ECOG", "Survival at 1 year", percentile}
    assert expected <= set(metrics) and "Diagnosis" not in metrics
    header = sv.patient_header(app_data.lake, picked, str(app_data.runs / "tiny"))
    assert diagnosis_heading(at).value == f"Diagnosis: {sv.md(header['diagnosis'].removesuffix(' (disorder)'))}"
    assert 0 <= float(metrics[percentile]) <= 100
    assert "95% interval" in texts(at)  # of the patient's curve, under each survival figure
    # how the survival intervals are computed, said once ("Interval: log-log 95% interval: MC-dropout ...")
    (method,) = [c.value for c in at.caption if "log-log" in c.value]
    assert method.startswith("95% intervals: log-log +- 1.96 SD") and method.lower().count("interval") == 1
    assert "Modalities present: **clinical record, " in texts(at) and "imaging" in texts(at)  # not fhir, images
    split = sv.patient_split(str(app_data.runs / "tiny"), app_data.runs, picked)
    assert ("in-sample" in texts(at)) == (split == "train") and split in ("train", "val", "test")
    assert {"Risk", "Treatment", "Why", "Timeline", "Model card"} == {t.label for t in at.tabs}
    assert "Predicted from imaging only" in texts(at)  # the clinical name, not the model's "image"
    charts = {c.proto.id for c in at.get("plotly_chart")}
    assert len(charts) == 2  # survival and diagnosis: only the open tab (Risk) renders
    assert "Integrated gradients" not in texts(at)
    observed = sv.observed_outcome(app_data.lake, str(app_data.runs / "tiny"), picked)
    assert observed is not None  # every synthetic cancer patient has follow-up
    after = f"{sv.duration_words(observed['time'])} after diagnosis"
    said = f"died {after}" if observed["event"] else f"alive at last follow-up, {after} (censored)"
    assert f"this patient's observed outcome in the record: {said}." in texts(at)
    assert ("The model was trained on this outcome." in texts(at)) == (split == "train")

    at = open_tab(at, "Treatment")
    assert "observational data" in texts(at) and "not a treatment recommendation" in texts(at)
    run = str(app_data.runs / "tiny")
    observed = sv.observed_response(app_data.lake, run, picked)
    assert ("Observed in the record:" in texts(at)) == (observed is not None)
    responders = {k: sv.observed_response(app_data.lake, run, k) for k in sorted(imaged)}
    shown = next(k for k, v in responders.items() if v is not None)  # the fixture has treated, assessed patients
    at = at.selectbox(key="patient_picker").set_value(shown).run()
    outcome = "responded (complete or partial response)" if responders[shown]["responded"] else "did not respond"
    said = READABLE[responders[shown]["treatment"]]  # not the config's key (egfr_tki)
    assert f"Observed in the record: {outcome}" in texts(at) and f"to {said}." in texts(at)
    at = at.selectbox(key="patient_picker").set_value(picked).run()
    (chart,) = at.get("plotly_chart")  # response
    assert all(name in chart.proto.spec for name in READABLE.values()) and "egfr_tki" not in chart.proto.spec
    at = at.radio(key="treatment_view").set_value("Table").run()
    assert not at.exception
    table = next(d.value for d in at.dataframe if "probability of response" in d.value.columns)
    assert len(table) >= 2 and table["probability of response"].between(0, 100).all()  # percent
    assert set(table["treatment"]) == set(READABLE.values())
    assert "egfr_tki" not in texts(at)
    for probability, interval in zip(table["probability of response"], table["95% interval"], strict=True):
        low, high = (float(v) for v in interval.rstrip("%").split("-"))
        assert low - 0.5 <= probability <= high + 0.5  # whole percents
    assert "95% intervals: logit +- 1.96 MC-dropout SD" in texts(at)
    survival = [c for c in table.columns if c.startswith("survival at ")]  # the run links response to survival
    assert survival and table[survival].stack().between(0, 100).all()
    recorded = sv.explanation(str(app_data.runs / "tiny"), app_data.lake, picked)["survival_treatment"]
    at = open_tab(at, "Risk")
    caption = f"Predicted under the treatment on record: {READABLE[recorded]}" if recorded else \
        "No treatment on record"
    assert caption in texts(at)

    at = open_tab(at, "Why")
    assert len(at.get("plotly_chart")) >= 3  # contributions, CT, labs, features
    assert "positive values push the predicted risk (log-hazard) up" in texts(at)  # the run has a survival head
    (slider,) = at.slider
    # the fixture stores 12-slice series, numbered 1-12 as a viewer numbers them (indices stay 0-based)
    assert (slider.min, slider.max, slider.label) == (1, 12, "Slice (of 12)")
    attribution = sv.explanation(str(app_data.runs / "tiny"), app_data.lake, picked)["image_attribution"]
    assert slider.key == f"slice_{attribution['image_id']}"  # the series the model read
    images = sv.patient_record(app_data.lake, picked)["images"].set_index("image_id")
    image = images.loc[attribution["image_id"]]
    _, first, last = sv.image_content(app_data.lake, image["tensor_file"], int(image["tensor_row"]))
    informative = any(max(row) > 0 for row in attribution["map"])
    assert slider.value == 1 + (attribution["slice"] if informative else (first + last) // 2)
    assert f"Image content on slices {first + 1}-{last + 1} of 12." in texts(at)
    if informative:
        assert f"on slice {attribution['slice'] + 1}:" in texts(at)
    overlays = [c for c in at.get("plotly_chart") if "attribution %{z" in c.proto.spec]
    assert bool(overlays) == informative  # the map is drawn on the slice it was computed on
    at = slider.set_value(1).run()  # the first slice
    stored = sv.image_window(app_data.lake, attribution["image_id"])
    assert f"Stored at ingest in a window of level {stored[0]:g} HU, width {stored[1]:g} HU;" in texts(at)
    assert "lung: level -600 HU, width 1500 HU" in at.radio(key="window_preset").help
    at = at.radio(key="window_preset").set_value("bone").run()
    assert not at.exception
    assert "Integrated gradients from the training patients' mean image" in texts(at)
    sequenced = sorted(read_tmb(Lake(app_data.lake))["patient_key"])[0]
    at = at.selectbox(key="patient_picker").set_value(sequenced).run()
    at = open_tab(at, "Why")
    latest = sv.patient_record(app_data.lake, sequenced)["tmb"].iloc[-1]
    assert f"{latest['tmb_per_mb']:.1f} mutations/Mb" in texts(at)  # the synthetic assay's 1.1 Mb
    assert f"{int(latest['n_nonsilent'])} non-silent variants over a 1.1 Mb panel" in texts(at)
    assert ("TMB-high" in texts(at)) == (latest["tmb_per_mb"] >= 10)
    variants = next(d for d in at.dataframe if "hgvsp" in d.value.columns)
    assert "gene" in variants.proto.column_order and "sample_id" not in variants.proto.column_order
    at = at.toggle(key="variant_coordinates").set_value(True).run()
    variants = next(d for d in at.dataframe if "hgvsp" in d.value.columns)
    assert not variants.proto.column_order  # every column, sample id and coordinates included

    at = open_tab(at, "Timeline")
    assert len(at.get("plotly_chart")) == 1 and not at.exception
    at = open_tab(at, "Model card")
    assert "Intended use." in texts(at) and not at.exception
    assert "candidate treatments: chemotherapy, EGFR TKI, immunotherapy" in texts(at)
    assert "survival endpoint: overall survival (os)" in texts(at)
    card_metrics = next(d for d in at.dataframe if "value [95% CI]" in d.value.columns).value
    assert "C-index (Harrell)" in set(card_metrics["metric"]) and "c_index_harrell" not in set(card_metrics["metric"])


def test_patient_without_modalities(monkeypatch, app_data):
    at = open_page(monkeypatch, app_data.lake, app_data.runs)
    imaged, unsequenced = patient_keys(app_data.lake)
    candidates = sorted(unsequenced - imaged) or sorted(unsequenced)
    at = at.selectbox(key="patient_picker").set_value(candidates[0]).run()
    assert at.title[0].value == "Patient"
    assert not at.exception
    if candidates[0] not in imaged:  # the tiny run's diagnosis head reads the CT only
        assert "No diagnosis: the model's diagnosis head reads imaging, which" in texts(at)  # not "image"
    shown = texts(open_tab(at, "Why"))
    assert "No sequencing data for this patient." in shown
    if candidates[0] not in imaged:
        assert "No image for this patient." in shown


def test_patient_page_without_a_run(monkeypatch, app_data):
    at = open_page(monkeypatch, app_data.lake, app_data.no_runs)
    assert at.title[0].value == "Patient"
    assert not at.exception
    assert "No trained model" in texts(at)  # the sidebar says so before a patient is chosen
    at = at.selectbox(key="patient_picker").set_value(sorted(patient_keys(app_data.lake)[0])[0]).run()
    assert "No trained model" in texts(at) and "tumorboard train" in texts(at)
    assert {"Age at diagnosis", "Sex"} <= {m.label for m in at.metric} and diagnosis_heading(at)


def test_patient_page_opens_on_no_patient_or_the_linked_one(monkeypatch, app_data):
    at = open_page(monkeypatch, app_data.lake, app_data.runs)
    assert at.selectbox(key="patient_picker").value is None
    assert "Choose a patient" in texts(at) and not at.metric and not at.tabs  # no one's record is shown
    picked = sorted(patient_keys(app_data.lake)[0])[1]
    at = at.selectbox(key="patient_picker").set_value(picked).run()
    assert at.query_params["patient"] == picked and "Sex" in {m.label for m in at.metric} and diagnosis_heading(at)
    at.switch_page("views/models.py").run()
    at = at.switch_page("views/patient.py").run()  # the picker's own state was dropped on the other page
    assert at.selectbox(key="patient_picker").value == picked and not at.exception

    linked = AppTest.from_file(APP, default_timeout=120)
    linked.query_params["patient"] = picked  # a reload, or a link someone shared
    linked = linked.run()
    assert linked.selectbox(key="patient_picker").value == picked and linked.metric
    cleared = linked.selectbox(key="patient_picker").set_value(None).run()
    assert "Choose a patient" in texts(cleared) and "not in the lake" not in texts(cleared)
    assert "patient" not in cleared.query_params
    stale = AppTest.from_file(APP, default_timeout=120)
    stale.query_params["patient"] = "Patient/not-in-this-lake"
    stale = stale.run()
    assert stale.selectbox(key="patient_picker").value is None and "is not in the lake" in texts(stale)
    assert "patient" not in stale.query_params and not stale.exception


def test_models_page(monkeypatch, app_data):
    at = open_page(monkeypatch, app_data.lake, app_data.runs, "views/models.py")
    assert at.title[0].value == "Models"
    assert not at.exception
    assert at.selectbox(key="run_picker").value == str(app_data.runs / "tiny")
    frames = [d.value for d in at.dataframe]
    assert any("tiny" in f.columns for f in frames)  # runs side by side, one column per run
    assert any(f.astype(str).apply(lambda c: c.str.contains(r"\[\d", regex=True)).any().any() for f in frames)
    assert "c_index_harrell" in {m for f in frames if "metric" in f.columns for m in f["metric"]}
    notes = json.loads((app_data.runs / "tiny" / "metrics.json").read_text())["notes"]
    assert notes and all(f"Note from the evaluation: {note}." in texts(at) for note in notes)
    # the calibration errors' intervals are bias-corrected (README, fusion/evaluate.py): the caption said that
    # their value could fall outside them
    assert "their intervals are corrected for that bias" in texts(at)
    assert "can fall outside its interval" not in texts(at)
    # a task's metrics in tables a 1366 px screen shows whole: survival's nine metric columns in one table were
    # 1333 px wide in its 904 px box (integrated_brier cut mid-value, the calibration errors out of sight)
    metric_tables = [f for f in frames if {"model", "subgroup"} & set(f.columns)]
    assert metric_tables and all(len(f.columns) <= 2 + sv.METRIC_COLUMNS for f in metric_tables)
    assert all(len(f.columns) <= 1 + sv.METRIC_COLUMNS for f in metric_tables if "model" in f.columns)
    survival = json.loads((app_data.runs / "tiny" / "metrics.json").read_text())["tasks"]["survival"]["model"]
    assert len(survival) > sv.METRIC_COLUMNS  # the test means something: survival's table was too wide
    assert set(survival) <= {c for f in metric_tables if "model" in f.columns for c in f.columns}
    assert "Discrimination (higher is better)" in texts(at)
    assert "Calibration and prediction error (lower is better)" in texts(at)
    at = at.selectbox(key="run_picker").set_value(str(app_data.runs / "tiny")).run()
    assert at.session_state[sv.RUN_KEY] == str(app_data.runs / "tiny")
    assert not at.exception


def test_models_page_shows_a_cross_validation_as_mean_and_sd(monkeypatch, app_data, tmp_path):
    """A --cv run (two folds, here copies of the tiny run) is listed with its folds; once evaluated, its
    metrics.json's mean +- SD over the folds is shown per model and metric."""
    import shutil

    from fusion.evaluate import evaluate_folds

    runs = tmp_path / "runs"
    for fold in ("fold_0", "fold_1"):
        shutil.copytree(app_data.runs / "tiny", runs / "cv" / fold)
    at = open_page(monkeypatch, app_data.lake, runs, "views/models.py")
    assert not at.exception and at.selectbox(key="cv_run").value == str(runs / "cv")
    assert f"Not evaluated yet: run `tumorboard evaluate {runs / 'cv'}`" in texts(at)

    result = evaluate_folds(runs / "cv", app_data.lake, retrain_ablations=False, n_boot=0)
    at = open_page(monkeypatch, app_data.lake, runs, "views/models.py")
    assert not at.exception
    fold_metrics = json.loads((runs / "cv" / "fold_0" / "metrics.json").read_text())["tasks"]["survival"]["model"]
    assert list(result["tasks"]["survival"]["model"]) == list(fold_metrics)  # 365d before 1095d, as in a fold
    c_index = result["tasks"]["survival"]["model"]["c_index_harrell"]
    expected = f"{c_index['value']:.3f} ± {c_index['sd']:.3f} (2 folds)"
    tables = [d.value for d in at.dataframe if "c_index_harrell" in d.value.columns]
    assert any(expected in set(t.loc[t["model"] == "model", "c_index_harrell"]) for t in tables)
    assert "Mean ± SD over the 2 folds" in texts(at)
    assert at.selectbox(key="cv_metric_survival").value in set(result["tasks"]["survival"]["model"])


def test_survival_by_treatment_says_horizons_as_the_risk_tab_does():
    """The Risk tab says 'Survival at 1 year'; the survival-by-treatment table said 'survival at 365 days'."""
    prediction = {"survival_by_treatment": {"chemo": {"at_horizons": {"365": 0.9, "730": 0.7, "500": 0.8}},
                                            "egfr_tki": {"at_horizons": {"365": 0.95, "730": 0.8, "500": 0.85}}}}
    columns = sv.survival_by_treatment_columns(prediction, ["egfr_tki", "chemo"])
    assert columns == {"survival at 1 year": [0.95, 0.9], "survival at 2 years": [0.8, 0.7],
                       "survival at 500 days": [0.85, 0.8]}


def test_metric_groups_keep_every_metric_in_narrow_tables():
    five = ["auroc", "auprc", "accuracy", "balanced_accuracy", "ece"]
    assert sv.metric_groups(five) == [("", five)]
    survival = ["c_index_harrell", "c_index_uno", "td_auc_365d", "td_auc_730d", "td_auc_1095d", "td_auc_1825d",
                "integrated_brier", "calibration_365d", "log_rank"]
    discrimination, _, error = sv.METRIC_GROUPS
    assert sv.metric_groups(survival) == [(discrimination, survival[:5]), (discrimination, ["td_auc_1825d"]),
                                          (error, ["integrated_brier", "calibration_365d"]),
                                          ("Other metrics", ["log_rank"])]


def test_fold_spread_text():
    frame = pd.DataFrame({"value": [0.7, 0.65, None], "sd": [0.05, None, None],
                          "folds": [[0.65, 0.75], [0.65, None], [None, None]]})
    assert sv.with_spread(frame).tolist() == ["0.700 ± 0.050 (2 folds)", "0.650 (1 fold)", "n/a"]


def test_models_page_without_runs(monkeypatch, app_data):
    at = open_page(monkeypatch, app_data.lake, app_data.no_runs, "views/models.py")
    assert at.title[0].value == "Models"
    assert not at.exception
    assert "No trained run" in texts(at)


def test_data_page(monkeypatch, app_data):
    at = open_page(monkeypatch, app_data.lake, app_data.runs, "views/data.py")
    assert at.title[0].value == "Data"
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Patients"] == "30" and int(metrics["Ingest runs"]) >= 3
    tables = next(d.value for d in at.dataframe if "table" in d.value.columns)
    assert {"view_patient", "variants", "images"} <= set(tables["table"])
    # the coverage bars top to bottom in the order of `tumorboard lake status`'s coverage table (plotly draws a
    # bar chart's first category at the bottom: they ran the other way)
    (chart,) = [c for c in at.get("plotly_chart") if "coverage_chart" in c.proto.id]
    spec = json.loads(chart.proto.spec)
    drawn = spec["data"][0]["y"]
    top_down = drawn if spec["layout"].get("yaxis", {}).get("autorange") == "reversed" else drawn[::-1]
    assert list(top_down) == list(sv.status(app_data.lake).coverage_summary()["modality"])
    at = at.multiselect(key="coverage_missing").set_value(["images"]).run()
    assert not at.exception
    coverage = next(d.value for d in at.dataframe if "record" in d.value.columns)
    people = sv.patients(app_data.lake).set_index("patient_key")["label"]
    assert len(coverage) and not coverage["images"].any()
    assert list(coverage["patient"]) == list(people[coverage["patient_key"]])  # MRNs, as the picker shows
    assert list(coverage["record"]) == ["./?patient=" + k for k in coverage["patient_key"]]  # uuids: unquoted


@pytest.mark.parametrize("page", ["views/patient.py", "views/models.py", "views/data.py"])
def test_pages_with_a_missing_lake(monkeypatch, tmp_path, page):
    at = open_page(monkeypatch, tmp_path / "nowhere", tmp_path / "no-runs", page)
    assert at.title[0].value == page.split("/")[1].removesuffix(".py").title()
    assert not at.exception
    if page != "views/models.py":
        assert "does not exist" in texts(at) and "tumorboard ingest fhir" in texts(at)


def test_settings_from_arguments_then_environment(monkeypatch):
    monkeypatch.setenv(sv.ENV_LAKE, "/env/lake")
    monkeypatch.setenv(sv.ENV_RUNS, "/env/runs")
    assert sv.settings(["--lake", "/arg/lake"]) == sv.Settings(Path("/arg/lake"), Path("/env/runs"))
    monkeypatch.delenv(sv.ENV_RUNS)
    assert sv.settings([]).runs is None


def test_app_command_binds_localhost_and_hides_errors(tmp_path):
    command = streamlit_command(tmp_path / "lake", None)
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    assert command[command.index("--client.showErrorDetails") + 1] == "none"
    assert command[-2:] == ["--lake", str(tmp_path / "lake")]


def test_a_bare_streamlit_run_from_the_repository_binds_localhost_too():
    import tomllib

    settings = tomllib.loads((Path(__file__).resolve().parents[2] / ".streamlit" / "config.toml").read_text())
    assert settings["server"]["address"] == "127.0.0.1" and settings["browser"]["gatherUsageStats"] is False
    assert settings["client"]["showErrorDetails"] == "none"


def test_the_app_command_warns_when_it_binds_beyond_this_machine(tmp_path, monkeypatch):
    import importlib

    from typer.testing import CliRunner

    from apps.cli.main import app

    app_cli = importlib.import_module("apps.cli.app")  # the module: the package's `app` is the Typer app

    started = []
    monkeypatch.setattr(app_cli.subprocess, "call", lambda command: started.append(command) or 0)
    exposed = CliRunner().invoke(app, ["app", "--lake", str(tmp_path), "--host", "0.0.0.0"])
    assert exposed.exit_code == 0 and "reachable from other machines" in " ".join(exposed.output.split())
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "::ffff:127.0.0.1", "localhost"):
        local = CliRunner().invoke(app, ["app", "--lake", str(tmp_path), "--host", host])
        assert local.exit_code == 0 and "reachable" not in local.output, host
    assert len(started) == 7


def test_patient_links_quote_the_key():
    frame = pd.DataFrame({"patient_key": ["urn:mrn|7/1", "b"], "images": [True, False]})
    people = pd.DataFrame({"patient_key": ["b"], "label": ["MRN-2"]})
    linked = sv.with_patient_links(frame, people)
    assert list(linked.columns) == ["patient", "record", "patient_key", "images"]
    assert list(linked["patient"]) == ["urn:mrn|7/1", "MRN-2"]  # no label: the key
    assert list(linked["record"]) == ["./?patient=urn%3Amrn%7C7%2F1", "./?patient=b"]


def test_metric_rows_and_intervals():
    metrics = {"tasks": {"survival": {
        "model": {"c_index_harrell": {"value": 0.7, "ci_low": 0.6, "ci_high": 0.8}},
        "baselines": {"coxnet": {"c_index_harrell": {"value": 0.65, "ci_low": None, "ci_high": None}}},
        "ablations": {"without_image": {"c_index_harrell": {"value": None}}}}}}
    rows = sv.metric_rows(metrics)
    assert rows["model"].tolist() == ["model", "baseline: coxnet", "ablation: without_image"]
    assert sv.with_interval(rows).tolist() == ["0.700 [0.600, 0.800]", "0.650", "n/a"]


def test_actionable_variants():
    var = pd.DataFrame({"gene": ["EGFR", "EGFR", "EGFR", "KRAS", "KRAS", "TP53", "ALK"],
                        "hgvsp": ["p.L858R", "p.E746_A750del", "p.L747_P753delinsS", "p.G12C", "p.G12D",
                                  "p.R273H", "p.F1174L"],
                        "consequence": ["Missense_Mutation", "In_Frame_Del", "In_Frame_Del",
                                        "Missense_Mutation", "Missense_Mutation", "Missense_Mutation",
                                        "Missense_Mutation"]})
    for col in ("vaf", "depth", "chrom", "pos", "ref", "alt", "sample_id"):
        var[col] = None
    table = sv.variant_table({"variants": var})
    flagged = dict(zip(table["hgvsp"], table["actionable"]))
    assert flagged == {"p.L858R": True, "p.E746_A750del": True, "p.L747_P753delinsS": True, "p.G12C": True,
                       "p.G12D": False, "p.R273H": False, "p.F1174L": True}
    assert table["driver"].all()  # all these genes are in the default panel
    assert table["actionable"].tolist() == [True] * 5 + [False] * 2  # actionable ones first


def test_ct_figure_windows_in_hounsfield_units_and_overlays_the_map():
    import numpy as np

    from apps.streamlit.charts import ct_figure

    hu = np.array([[-1350.0, -600.0], [40.0, 150.0]])
    stored = (hu + 1350.0) / 1500.0  # lung window -600/1500 -> [0, 1], as ingest stores CT
    shown = ct_figure(stored, stored_window=(-600.0, 1500.0), display="mediastinum").data[0].z
    np.testing.assert_allclose(shown, [[0.0, 0.0], [0.5, 0.775]], atol=1e-6)  # -160..240 HU
    with_map = ct_figure(stored, stored_window=None, display="lung", heat=np.ones((1, 1)))
    assert len(with_map.data) == 2 and with_map.data[1].dx == 2.0


def test_the_features_chart_title_shows_a_lake_treatment_as_text_not_a_link():
    """The Why tab titles the features chart by the explained output, which names a treatment or diagnosis class
    from the lake (a cBioPortal agent, a curated labels file's treatment): plotly must not read it as a tag."""
    from apps.streamlit.charts import attributions_figure

    evil = '<a href="https://evil.example/x">Carboplatin</a>'
    title = f"What drives the predicted response to {evil}"
    figure = attributions_figure([{"name": "age", "value": 61.0, "attribution": 0.2}], title=title)
    assert "Carboplatin" in figure.layout.title.text and "<a" not in figure.layout.title.text


def test_treatment_labels_name_treatments_as_a_clinician_does(tmp_path):
    """The run's data.targets.treatment_labels where a treatment has one, else its name (the only identity of a
    curated labels file's treatment); two treatments labelled alike keep their names to tell them apart."""
    from fusion.config import dump_config, load_config

    assert sv.treatment_labels(None, ["egfr_tki", "chemo", "Carboplatin+Pemetrexed"]) == {
        "egfr_tki": "EGFR TKI", "chemo": "chemotherapy", "Carboplatin+Pemetrexed": "Carboplatin+Pemetrexed"}
    run = tmp_path / "run"
    run.mkdir()
    config = load_config(None, ["data.targets.treatment_labels={a: platinum doublet, b: platinum doublet}"])
    (run / "config.yaml").write_text(dump_config(config))
    assert sv.treatment_labels(str(run), ["a", "b", "egfr_tki"]) == {
        "a": "platinum doublet (a)", "b": "platinum doublet (b)", "egfr_tki": "egfr_tki"}


def test_slices_are_numbered_from_one_where_the_page_says_them():
    attribution = {"method": "integrated_gradients", "slice": 0, "map": [[1.0]]}
    assert sv.slice_number(0) == 1
    assert "on slice 1: the slice where" in sv.attribution_caption(attribution, True, 12)
    cam = {"method": "hirescam", "slice": 11, "slice_attention": [0.1, 0.9]}
    assert "HiResCAM (Grad-CAM with element-wise gradients) on slice 12, the slice the model attends to most." \
        == sv.attribution_caption(cam, True, 12)
    # a 2D image has no slice to name (the attribution's slice is None), not "on slice None"
    assert sv.attribution_caption({**attribution, "slice": None}, True, 1) == \
        "Integrated gradients from the training patients' mean image."
    assert "the map is empty" in sv.attribution_caption(attribution, False, 12)


def test_survival_figure_marks_the_observed_outcome():
    from apps.streamlit.charts import survival_figure

    predicted = {"times": [0.0, 365.25, 730.5], "survival": [1.0, 0.7, 0.4]}
    died = survival_figure(predicted, None, endpoint="os", observed={"time": 730.5, "event": True})
    (line,) = [s for s in died.layout.shapes if s.type == "line"]
    assert line.x0 == line.x1 == 2.0 and died.layout.annotations[0].text == "observed: died"
    censored = survival_figure(predicted, None, endpoint="pfs", observed={"time": 365.25, "event": False})
    assert censored.layout.annotations[0].text == "observed: last follow-up"
    assert not survival_figure(predicted, None).layout.shapes


def test_duration_words():
    assert [sv.duration_words(d) for d in (1, 16.4, 120, 700, 1000)] == [
        "1 day", "16 days", "4 months", "23 months", "2.7 years"]


def test_survival_at_reads_the_step_function():
    curve = {"times": [0.0, 100.0, 400.0], "survival": [1.0, 0.8, 0.5]}
    assert sv.survival_at(curve, 365.25) == 0.8
    assert sv.survival_at(curve, 400.0) == 0.5
    assert sv.survival_at(curve, 401.0) is None


def test_chance_note_and_survival_interval_lookup():
    assert sv.chance_note({"value": 0.6, "ci_low": 0.38, "ci_high": 0.82}, "response head").startswith(
        "On its test patients the response head is not clearly better than chance (AUROC 0.60")
    assert sv.chance_note({"value": 0.8, "ci_low": 0.71, "ci_high": 0.88}, "response head") is None
    assert sv.chance_note(None, "response head") is None
    curve = {"times": [0.0, 100.0, 400.0], "survival": [1.0, 0.8, 0.5], "lower": [1.0, 0.7, 0.3],
             "upper": [1.0, 0.9, 0.7]}
    assert sv.survival_at(curve, 365) == 0.8 and sv.survival_at(curve, 365, "lower") == 0.7
    assert sv.survival_at(curve, 500, "upper") is None  # beyond the curve
    assert sv.survival_at({"times": [0.0], "survival": [1.0]}, 0, "lower") is None  # no interval


def open_patient_of_export(monkeypatch, tmp_path, resources: list[dict], patient: str) -> AppTest:
    """The Patient page of ``patient`` in a lake ingested from ``resources`` (written as one NDJSON export)."""
    import orjson

    from ingest.fhir.pipeline import ingest_fhir

    export = tmp_path / "export.ndjson"
    export.write_bytes(b"\n".join(orjson.dumps(r) for r in resources) + b"\n")
    lake = Lake(tmp_path / "lake")
    ingest_fhir(lake, [export], workers=1)
    at = open_page(monkeypatch, lake.path, None)
    return at.selectbox(key="patient_picker").set_value(patient).run()


def test_the_timeline_caption_counts_the_conditions_left_out_and_drawn_once(monkeypatch, tmp_path):
    """A Synthea-like record: employment findings every year, a cancer, a sinusitis recorded twice in a season."""
    def condition(rid: str, code: str, display: str, onset: str) -> dict:
        return {"resourceType": "Condition", "id": rid, "subject": {"reference": "Patient/p1"},
                "onsetDateTime": onset,
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]}}

    resources = [{"resourceType": "Patient", "id": "p1", "birthDate": "1950-01-01"},
                 *(condition(f"job{y}", "160903007", "Full-time employment (finding)", f"{y}-01-01")
                   for y in range(2000, 2005)),
                 condition("sinus1", "444814009", "Viral sinusitis (disorder)", "2001-01-01"),
                 condition("sinus2", "444814009", "Viral sinusitis (disorder)", "2001-03-01"),
                 condition("lung", "35917007", "Adenocarcinoma of lung (disorder)", "2004-06-01")]
    at = open_patient_of_export(monkeypatch, tmp_path, resources, "p1")
    at = open_tab(at, "Timeline")
    caption = texts(at)
    assert "1 repeated record drawn so" in caption
    assert "5 social-history findings recorded as conditions" in caption
    assert len(at.get("plotly_chart")) == 1


def test_record_text_is_shown_as_text_not_markdown_or_html(monkeypatch, tmp_path):
    """A display in the record (or a lake from elsewhere) is data: in a caption or tooltip it must not become an
    image fetched from a URL (the browser would call that host when the patient is opened) or a link, and in a
    chart plotly must not read it as a tag (``<a href>`` is a clickable link there)."""
    evil = "https://evil.example/x.png"
    display = f"Adenocarcinoma ![seen]({evil}) [results]({evil}) <a href=\"{evil}\">here</a> (disorder)"
    drug = f"<a href=\"{evil}\">Cisplatin: see dosing</a>"
    resources = [{"resourceType": "Patient", "id": "p1", "birthDate": "1950-01-01"},
                 {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
                  "onsetDateTime": "2004-06-01", "code": {"coding": [
                      {"system": "http://snomed.info/sct", "code": "35917007", "display": display}]}},
                 {"resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
                  "subject": {"reference": "Patient/p1"}, "authoredOn": "2004-06-10",
                  "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                            "code": "309311", "display": drug}]}}]
    at = open_patient_of_export(monkeypatch, tmp_path, resources, "p1")
    assert not at.exception
    heading = diagnosis_heading(at)
    shown = "\n".join([texts(at), heading.value, heading.proto.help, *(str(m.help) for m in at.metric)])
    assert "Adenocarcinoma" in shown
    for raw in ("![", "](", "<a"):  # unescaped: markdown would read them
        assert not re.search(r"(?<!\\)" + re.escape(raw), shown)
    at = open_tab(at, "Timeline")
    (chart,) = at.get("plotly_chart")
    spec = chart.proto.spec
    assert "Cisplatin" in spec and "Adenocarcinoma" in spec
    assert "<a href" not in spec and "\\u003ca href" not in spec.lower()


def test_a_patient_without_fhir_shows_the_curated_age_sex_and_day_zero(monkeypatch, tmp_path):
    """A cBioPortal study's patient: no FHIR Patient, so the header reads the curated AGE and SEX attributes (an
    attribute's time point is not known: "Age", not "Age at diagnosis"), and the placeholder index date
    2000-01-01 is shown as what it is, day 0 without calendar dates, not as a date; the empty timeline and the
    Why tab's CT and labs say why they are empty."""
    from ingest.cbioportal import ingest_cbioportal
    from tests.ingest.test_cbioportal import _study

    ingest_cbioportal(Lake(tmp_path / "lake"), _study(tmp_path / "study"), diagnosis="CANCER_TYPE_DETAILED")
    at = open_page(monkeypatch, tmp_path / "lake", None)
    at = at.selectbox(key="patient_picker").set_value("P3").run()
    assert at.title[0].value == "Patient" and not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Age"] == "43" and metrics["Sex"] == "Male" and "Age at diagnosis" not in metrics
    assert diagnosis_heading(at).value == "Diagnosis: Lung Adenocarcinoma"
    assert "2000" not in texts(at) and "diagnosed" not in texts(at)
    assert "no calendar dates (a cBioPortal study): times count in days from the patient's day 0" in texts(at)
    for tab in ("Timeline", "Why"):
        at = open_tab(at, tab)
        assert "a cBioPortal study carries no CT images, laboratory values or dated events" in texts(at), tab


def test_a_benign_nodule_is_not_listed_as_a_cancer_diagnosis(monkeypatch, tmp_path):
    """The index rule counts a lung nodule under work-up (``data.index``): the header lists it among the diagnoses
    that can set the index date, not as a cancer."""
    resources = [{"resourceType": "Patient", "id": "p1", "birthDate": "1950-01-01"},
                 {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
                  "onsetDateTime": "2019-12-31", "code": {"coding": [
                      {"system": "http://snomed.info/sct", "code": "786838002",
                       "display": "Solitary nodule of lung (disorder)"}]}}]
    at = open_patient_of_export(monkeypatch, tmp_path, resources, "p1")
    assert not at.exception
    assert "Cancer diagnoses" not in texts(at)
    assert "Diagnoses on record that can set the index date: Solitary nodule of lung (2019-12-31)" in texts(at)


def test_the_treatment_tab_says_when_no_treatment_or_no_response_is_on_record(monkeypatch, app_data):
    """An untreated patient (a nodule under work-up) and a treated one without a response assessment: the tab says
    so instead of ending silently under the estimates."""
    run = str(app_data.runs / "tiny")
    scored = [k for k in sorted(sv.patients(app_data.lake)["patient_key"]) if sv.patient_split(run, app_data.runs, k)]
    treated = {k: bool(sv.received_treatments(sv.patient_record(app_data.lake, k), run)) for k in scored}
    untreated = next(k for k in scored if not treated[k])
    unassessed = next(k for k in scored if treated[k] and sv.observed_response(app_data.lake, run, k) is None)
    at = open_page(monkeypatch, app_data.lake, app_data.runs)
    at = open_tab(at.selectbox(key="patient_picker").set_value(untreated).run(), "Treatment")
    assert "No treatment on record" in texts(at) and "No response on record" not in texts(at)
    at = at.selectbox(key="patient_picker").set_value(unassessed).run()
    assert not at.exception and "Treatment on record: " in texts(at)
    assert "No response on record: no treatment after the diagnosis with a response assessment" in texts(at)
    assert "Observed in the record" not in texts(at)


def test_a_modality_name_is_shown_as_text_not_markdown(monkeypatch, tmp_path):
    """A feature table's modality name is whatever --modality said: in "Modalities present" it must not become an
    image fetched from a URL (the browser would call that host when the patient is opened) or a link."""
    import orjson

    from ingest.fhir.pipeline import ingest_fhir
    from ingest.tables import ingest_features

    evil = "https://evil.example/x.png"
    resources = [{"resourceType": "Patient", "id": "p1", "birthDate": "1950-01-01"}]
    export = tmp_path / "export.ndjson"
    export.write_bytes(b"\n".join(orjson.dumps(r) for r in resources) + b"\n")
    lake = Lake(tmp_path / "lake")
    ingest_fhir(lake, [export], workers=1)
    table = tmp_path / "extra.csv"
    table.write_text("patient_id,score\np1,1.5\n")
    ingest_features(lake, table, modality=f"![seen]({evil})")
    at = open_page(monkeypatch, lake.path, None)
    at = at.selectbox(key="patient_picker").set_value("p1").run()
    assert not at.exception
    shown = texts(at)
    assert "Modalities present" in shown and "seen" in shown
    for raw in ("![", "]("):  # unescaped: markdown would read them
        assert not re.search(r"(?<!\\)" + re.escape(raw), shown)
