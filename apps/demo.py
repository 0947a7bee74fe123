"""``make demo``: the whole pipeline on the built-in synthetic cohort.

synth -> ingest (FHIR, variants, images) -> lake status -> train (full fusion) -> evaluate -> predict one
patient, then prints where the results are and how to open the app. Every step calls the same library
functions as the CLI verbs. Run ``python -m apps.demo --help`` for the sizes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from apps.cli.common import console, print_counts, print_frame
from fusion.config import load_config
from fusion.evaluate import evaluate_run
from fusion.predict import predict_patient
from fusion.run import load_run
from fusion.train import train
from ingest.fhir.pipeline import ingest_fhir
from ingest.images.pipeline import ingest_images
from ingest.lake import Lake
from ingest.reader import read_patients
from ingest.status import lake_status
from ingest.synth import SynthConfig, generate_cohort
from ingest.variants.pipeline import ingest_variants

REPO = Path(__file__).resolve().parents[1]


def _step(title: str, action: Callable[[], object]) -> object:
    console.rule(f"[bold]{title}")
    started = time.perf_counter()
    result = action()
    console.print(f"[green]done[/] in {time.perf_counter() - started:.1f} s")
    return result


def run_demo(out: Path, *, patients: int, seed: int, epochs: int, retrain_ablations: bool) -> dict:
    """Run the pipeline into ``out`` (replaced if it exists) and return the chosen patient's prediction."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    cohort_dir, lake_dir, runs_dir = out / "cohort", out / "lake", out / "runs"
    run_dir = runs_dir / "full_fusion"

    summary = _step(f"1. synthesise {patients} patients (seed {seed})",
                    lambda: generate_cohort(cohort_dir, SynthConfig(n_patients=patients, seed=seed)))
    print_counts({k: v for k, v in summary.items() if not isinstance(v, dict)}, title="synthetic cohort")

    ingest_demo_cohort(cohort_dir, lake_dir)
    lake = Lake(lake_dir)
    status = lake_status(lake)
    print_counts(status.tables, title="lake tables")
    print_frame(status.coverage_summary(), title=f"modality coverage ({len(status.coverage)} patients)")

    # The preset's batch of 128 suits 1000+ patients; on the demo's ~210 training patients it would give two
    # optimiser steps per epoch, so the demo uses 32 (measured: test C-index 0.69 vs 0.64 at 15 epochs).
    # The preset's full-resolution image stem and augmentation pay off over ~100 epochs on 700 patients
    # (benchmarks/quality_synth.py); on the demo's 8-slice CT volumes and 15 epochs they took 14 min and scored
    # test C 0.658, so the demo keeps the fast stem and no augmentation (2-3 min, C 0.677).
    # 30 epochs, not 15: after 15 (~100 optimiser steps at lr 3e-4) the CT encoder, the diagnosis head's only
    # input, had not left the class prior: the probabilities varied by 0.004 (SD) over the imaged patients, the
    # validation diagnosis loss (0.945) was above that of the training prior alone (0.928), and every test patient
    # was called adenocarcinoma (balanced accuracy 0.333). Chosen on the validation patients (train.threads=1):
    # validation score 0.752 at 30 epochs (best epoch 25, diagnosis AUROC 0.802) vs 0.706 at 15 (0.710); at 15,
    # lr 1e-3 0.709, lr 2e-3 0.745 with the validation diagnosis loss jumping to 1.9, batch 16 0.714.
    config = load_config(REPO / "configs" / "full_fusion.yaml", [
        f"train.epochs={epochs}", "train.batch_size=32", "train.image_augment=none",
        "modalities.image.encoder_kwargs.small_input=auto"])
    _step("5. train full fusion (image + EHR + genomics)", lambda: train(config, lake_dir, run_dir))
    metrics = _step("6. evaluate on the test split (baselines, ablations, bootstrap CIs)",
                    lambda: evaluate_run(run_dir, lake_dir, retrain_ablations=retrain_ablations))
    _print_headline(metrics)

    patient = read_patients(lake)["patient_key"].iloc[0]
    prediction = _step("7. predict one patient with explanations",
                       lambda: predict_patient(load_run(run_dir), lake, patient))
    (out / "prediction.json").write_text(json.dumps(prediction, indent=2))
    console.rule("[bold]results")
    console.print(f"cohort (raw files):   {cohort_dir}\nlake:                 {lake_dir}\n"
                  f"trained run:          {run_dir}\nmetrics:              {run_dir / 'metrics.json'}\n"
                  f"model vs baselines:   {run_dir / 'comparison.png'} (and calibration, ROC, Kaplan-Meier plots)\n"
                  f"one prediction:       {out / 'prediction.json'}")
    console.print("\nOpen the app (binds to 127.0.0.1):\n"
                  f"  .venv/bin/tumorboard app --lake {lake_dir} --runs {runs_dir}\n"
                  f"and choose a patient, or open the one predicted above: http://127.0.0.1:8501/?patient={patient}")
    return prediction


def ingest_demo_cohort(cohort_dir: Path, lake_dir: Path) -> None:
    """Steps 2-4: the cohort's FHIR export, variants (MAF + VCF) and CT series into ``lake_dir``, each a run of its
    own (its own run id in the manifest and on its rejects), as the ``tumorboard ingest`` verbs are."""
    fhir = _step("2. ingest FHIR (Bulk NDJSON, SQL-on-FHIR views)",
                 lambda: ingest_fhir(Lake(lake_dir), [cohort_dir / "fhir"]))
    console.print(f"resources read {fhir.read}, written {fhir.written}, rejected {fhir.rejected}")
    variants = _step("3. ingest variants (MAF + VCF)", lambda: ingest_variants(
        Lake(lake_dir), [cohort_dir / "genomics"], sample_map=cohort_dir / "genomics" / "sample_map.csv",
        gene_panel=cohort_dir / "genomics" / "gene_panel.yaml"))
    console.print(f"variants written {variants['variants_written']}, samples {variants['samples']}")
    images = _step("4. ingest CT series (DICOM)", lambda: ingest_images(Lake(lake_dir), [cohort_dir / "dicom"]))
    console.print(f"series {images['images']}, slices {images['slices']}, rejected {images['rejected']}")


def _print_headline(metrics: dict) -> None:
    """One line per task: the model's main metric next to the baselines'."""
    main_metric = {"survival": "c_index_harrell", "diagnosis": "auroc", "response": "auroc"}
    rows = {}
    for task, metric in main_metric.items():
        block = metrics.get("tasks", {}).get(task)
        if not block:
            continue
        model = block.get("model", {}).get(metric) or {}
        baselines = {name: (values.get(metric) or {}).get("value")
                     for name, values in block.get("baselines", {}).items()}
        shown = ", ".join(f"{name} {value:.3f}" for name, value in baselines.items() if value is not None)
        rows[f"{task} {metric}"] = _fmt(model) + "  | baselines: " + (shown or "none (no tabular input)")
    print_counts(rows, title="test-set results (95% bootstrap CI)")


def _fmt(item: dict) -> str:
    if item.get("value") is None:
        return "n/a"
    return f"{item['value']:.3f} [{item.get('ci_low', float('nan')):.3f}, {item.get('ci_high', float('nan')):.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (replaced)")
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--no-retrain", action="store_true",
                        help="skip retraining the single-modality ablation models (faster)")
    args = parser.parse_args()
    run_demo(args.out, patients=args.patients, seed=args.seed, epochs=args.epochs,
             retrain_ablations=not args.no_retrain)


if __name__ == "__main__":
    main()
