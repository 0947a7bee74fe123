"""App latency: time to render the Patient and Models pages on a 1000-patient lake (AppTest runs).

Run by hand: ``python benchmarks/app_latency.py [--patients 1000] [--workdir DIR]``. Builds (or reuses, when
``DIR/lake`` and ``DIR/runs/bench`` exist) a synthetic lake with FHIR, variants and small CT series, a tiny
trained and evaluated run, then times in this process, with the libraries already imported:

- Patient page, first render: all Streamlit caches empty, opened on a patient by its address
  (``?patient=KEY``; the page shows no one until a patient is chosen): reads the lake, loads the model,
  predicts, computes the cohort Kaplan-Meier curve;
- Patient page, cached: the same page again (what every widget interaction costs);
- Patient page, another patient: tables and model cached, a new prediction;
- Models page, first render and cached.

Targets: first render < 2 s, cached < 0.5 s on 2 cores. The Patient page renders only its open tab (Risk);
``patient: why tab`` is the first visit of the Why tab (explanations: HiResCAM, integrated gradients).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

APP = str(Path(__file__).resolve().parents[1] / "apps" / "streamlit" / "app.py")
SMALL_CT_IMAGES = Path(__file__).resolve().parents[1] / "configs" / "images_ct_small.yaml"
RUN = ["train.epochs=3", "train.batch_size=64", "train.device=cpu", "modalities.image.enabled=true",
       "data.images.max_slices=6", "data.images.image_size=32",
       "modalities.image.encoder_kwargs={model_name: test_resnet, in_chans: 1, out_dim: 16}",
       "data.index.grace_days=1"]  # the synthetic biopsy is dated by day on the diagnosis day, as the presets


def build(workdir: Path, n_patients: int) -> tuple[Path, Path]:
    """The lake and runs folder under ``workdir`` (built when missing)."""
    lake_dir, runs = workdir / "lake", workdir / "runs"
    if (runs / "bench" / "metrics.json").is_file():
        return lake_dir, runs
    from fusion.config import load_config
    from fusion.evaluate import evaluate_run
    from fusion.train import train
    from ingest.lake import Lake
    from ingest.synth import SynthConfig, generate_cohort
    from ingest.synth.load import ingest_cohort

    started = time.perf_counter()
    synth = workdir / "synth"
    if not synth.is_dir():
        generate_cohort(synth, SynthConfig(n_patients=n_patients, seed=0, png=False))
    ingest_cohort(synth, Lake(lake_dir), images="dicom", images_config=SMALL_CT_IMAGES, workers=2)
    print(f"built the lake in {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    train(load_config(None, RUN), lake_dir, runs / "bench")
    evaluate_run(runs / "bench", retrain_ablations=False, n_boot=100)
    print(f"trained and evaluated the run in {time.perf_counter() - started:.0f} s")
    return lake_dir, runs


def timed(at) -> float:
    started = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - started
    if at.exception or at.error:
        raise RuntimeError(f"the page failed: {(at.exception or at.error)[0].value}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--workdir", type=Path, default=None, help="reused between runs when given")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tumorboard-app-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    lake, runs = build(workdir, args.patients)
    os.environ["TUMORBOARD_LAKE"], os.environ["TUMORBOARD_RUNS"] = str(lake), str(runs)

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    import fusion.predict
    from apps.streamlit.services import warm_imports
    from ingest import reader

    warm_imports().join()  # what the server does in the background at start (scipy, torch, captum)

    from ingest.lake import Lake

    keys = reader.read_patients(Lake(lake))["patient_key"]
    other = keys.iloc[len(keys) // 2]

    def fresh(page: str | None = None) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=600)
        if page:
            return at.switch_page(page)
        at.query_params["patient"] = keys.iloc[0]
        return at
    results: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        st.cache_data.clear()
        st.cache_resource.clear()
        fusion.predict._cached_frames.cache_clear()  # fusion's own frame cache: a truly cold start
        reader._store.cache_clear()
        at = fresh()
        results.setdefault("patient: first render", []).append(timed(at))
        results.setdefault("patient: cached", []).append(timed(at))
        at.selectbox(key="patient_picker").set_value(other)
        results.setdefault("patient: another patient", []).append(timed(at))
        results.setdefault("patient: cached (2)", []).append(timed(at))
        at.session_state["patient_tab"] = "Why"
        results.setdefault("patient: why tab", []).append(timed(at))
        results.setdefault("patient: why tab, cached", []).append(timed(at))
        st.cache_data.clear()
        st.cache_resource.clear()
        models = fresh("views/models.py")
        results.setdefault("models: first render", []).append(timed(models))
        results.setdefault("models: cached", []).append(timed(models))
    print(f"\n{args.patients} patients, {os.cpu_count()} CPUs, {args.repeats} repeats (median, min - max s)")
    for name, values in results.items():
        print(f"  {name:28s} {statistics.median(values):6.2f}   ({min(values):.2f} - {max(values):.2f})")


if __name__ == "__main__":
    main()
