"""Quality of full fusion on the synthetic cohort, next to single modalities, CoxPH and the oracle.

    python benchmarks/quality_synth.py [--patients 1000] [--seed 0] [--out DIR] [--epochs 100]
        [--image-size 64] [--n-boot 200] [--no-image] [--device cpu]

Generates the cohort (fixed seed), ingests FHIR, the MAF and the per-patient CT slice PNGs (resized to
``--image-size`` px for CPU budgets), trains ``configs/full_fusion.yaml`` and runs ``evaluate_run`` (test
split, single-modality models retrained on the same split, penalised Cox and RSF baselines). The oracle scores
the same test patients with the generator's truth (``truth.parquet``: ``log_hazard``; response: the true
probability of response under the given treatment). Intervals are paired 95% bootstrap intervals.

Two reference rows say how much of the oracle the data can give at all (they are not targets):
``oracle, missing at mean`` is the true log-hazard with the parts of a patient's missing modalities (no CT:
the image part and the treatment-benefit part; not sequenced: the genomics part and the treatment-benefit
part) replaced by their mean over cancer patients; ``logistic, true biomarkers`` is a logistic regression on
the generator's own biomarkers (EGFR, STK11, KEAP1, KRAS G12C, TP53, log TMB, sequenced) crossed with the
treatment, fitted on the training patients: the correctly specified model at this sample size;
``oracle, no aggressiveness`` is the true log-hazard without the 0.9 x aggressiveness term, the latent that
shows only as nodule margins and texture in the CT: what a model that reads everything but that can reach.

``ceiling, observable data`` estimates what a model of the inputs that also read the aggressiveness latent
perfectly from the CT would score: the truth's response model refitted (a logistic model per treatment, in
the generator's own terms) on a 60,000-patient reference cohort from the same generator, where the true TMB
is replaced by what the data shows of it (non-silent variants over the 1.1 Mb panel, a Poisson count of
about five, and the smoking status that the generator's TMB depends on), and missing modalities at their
mean; its C-index row is the true log-hazard with the treatment part from that model's response probability
and missing parts at their mean. The oracle's true TMB is not in the data, so no model can be expected to
close the gap between the two rows; on ~100 test patients a model can still land above this estimate by
chance (its bootstrap interval is about +-0.1), and other weak proxies of the TMB in the data (COPD) are
left out of it.

``where the fusion risk comes from`` regresses the model's test log-risk (cancer patients with a CT) on the
generator's parts (EHR, genomics, treatment benefit, log nodule size, aggressiveness): the weights it learned
relative to the truth's (1, 1, 1, 0.6, 0.9, up to a common scale) and the share of its variance (R^2) the
true parts explain; the rest is estimation noise.

Targets: test C-index of fusion within 0.04 of the oracle and >= 0.03 above the best single modality;
response AUROC within 0.05 of the oracle's. Re-running with the same ``--out`` reuses the lake and the runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fusion import metrics  # noqa: E402
from fusion.cohort import Cohort, load_frames  # noqa: E402
from fusion.config import load_config  # noqa: E402
from fusion.evaluate import bootstrap, evaluate_run  # noqa: E402
from fusion.predict import run_cohort  # noqa: E402
from fusion.run import LoadedRun, load_run  # noqa: E402
from fusion.train import train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
IMAGES_YAML = """dtype: float32
windows: {{}}
presets:
  - {{name: slice, ndim: 2, size: [{size}, {size}], fit: resize, normalize: minmax}}
  - {{name: volume, ndim: 3, size: [12, {size}, {size}], fit: resize, normalize: minmax}}
"""


def build_lake(out: Path, n: int, seed: int, image_size: int) -> Path:
    """Generate and ingest the cohort once (reused when ``out/lake`` exists)."""
    from ingest.lake import Lake
    from ingest.synth import SynthConfig, generate_cohort
    from ingest.synth.load import ingest_cohort

    lake = Lake(out / "lake")
    if (out / "lake" / "images").is_dir():
        return lake.path
    started = time.perf_counter()
    cohort = out / "cohort"
    if not (cohort / "truth.parquet").is_file():
        generate_cohort(cohort, SynthConfig(n_patients=n, seed=seed), overwrite=True)
    (out / "images.yaml").write_text(IMAGES_YAML.format(size=image_size))
    ingest_cohort(cohort, lake, images="png", images_config=out / "images.yaml", workers=2)
    print(f"cohort + lake: {time.perf_counter() - started:.0f} s", flush=True)
    return lake.path


def safe(metric, *arrays: np.ndarray) -> float:
    """The metric, or NaN where a resample makes it undefined."""
    try:
        return float(metric(*arrays))
    except ValueError:
        return float("nan")


def boot_c_index(t, rows: np.ndarray, risk: np.ndarray, n_boot: int, seed: int) -> dict:
    """Harrell's C of ``risk`` (aligned to ``rows``) with its bootstrap interval, as ``evaluate_run`` gives it."""
    return bootstrap(lambda time, event, r: {"c": safe(metrics.harrell_c_index, time, event, r)},
                     (t.time[rows], t.event[rows].astype(bool), risk), n_boot=n_boot, seed=seed)["c"]


def boot_auroc(labels: np.ndarray, prob: np.ndarray, n_boot: int, seed: int) -> dict:
    """AUROC with its bootstrap interval, as ``evaluate_run`` gives it."""
    return bootstrap(lambda y, p: {"a": safe(metrics.auroc, y, p)}, (labels.astype(int), prob),
                     n_boot=n_boot, seed=seed)["a"]


def at_mean(truth: pd.DataFrame, part: str, known: np.ndarray, cancer: np.ndarray) -> np.ndarray:
    """The truth's ``part`` where ``known``, else its mean over cancer patients (0 for benign)."""
    values = truth[part].to_numpy(float)
    return np.where(known, values, values[cancer].mean() * cancer)


def oracle_scores(cohort: Cohort, truth: pd.DataFrame, n_boot: int, seed: int) -> dict:
    """Oracle metrics on the run's test patients, with the same bootstrap as ``evaluate_run``."""
    t = cohort.targets
    test = cohort.indices("test")
    truth = truth.set_index("patient_id")
    out = {}
    rows = test[np.isfinite(t.time[test])]
    log_hazard = truth["log_hazard"].reindex(cohort.patient_keys[rows]).to_numpy()
    out["c_index_harrell"] = boot_c_index(t, rows, log_hazard, n_boot, seed)
    rows = test[(t.treatment[test] >= 0) & np.isfinite(t.response[test])]
    names = np.array(t.treatment_names)[t.treatment[rows]]
    prob = np.array([truth.loc[k, f"response_prob_{name}"]
                     for k, name in zip(cohort.patient_keys[rows], names, strict=True)])
    out["response_auroc"] = boot_auroc(t.response[rows], prob, n_boot, seed)
    return out


def data_limited_scores(cohort: Cohort, truth: pd.DataFrame, n_boot: int, seed: int) -> dict:
    """The reference rows of the module docstring, on the run's test patients."""
    from sklearn.linear_model import LogisticRegression

    t = cohort.targets
    truth = truth.set_index("patient_id").reindex(cohort.patient_keys)
    cancer = (truth["diagnosis"] != "benign").to_numpy()
    imaged, sequenced = truth["has_image"].to_numpy(bool), truth["has_genomics"].to_numpy(bool)
    log_hazard = (truth["log_hazard_ehr"].to_numpy(float) + at_mean(truth, "log_hazard_image", imaged, cancer)
                  + at_mean(truth, "log_hazard_genomics", sequenced, cancer)
                  + at_mean(truth, "log_hazard_treatment", imaged & sequenced, cancer))
    test = cohort.indices("test")
    rows = test[np.isfinite(t.time[test])]
    no_aggressiveness = truth["log_hazard"].to_numpy(float) - 0.9 * cancer * truth["aggressiveness"].to_numpy(float)
    out = {"c_index_harrell": boot_c_index(t, rows, log_hazard[rows], n_boot, seed),
           "c_index_no_aggressiveness": boot_c_index(t, rows, no_aggressiveness[rows], n_boot, seed)}

    markers = np.column_stack([truth[c].to_numpy(float) for c in ("egfr", "stk11", "keap1", "kras_g12c", "tp53")]
                              + [np.log(truth["tmb"].to_numpy(float))])
    markers = np.column_stack([np.where(sequenced[:, None], markers, 0.0), sequenced])
    onehot = np.eye(len(t.treatment_names))[np.maximum(t.treatment, 0)]
    design = np.column_stack([onehot] + [onehot[:, [k]] * markers for k in range(onehot.shape[1])])
    labelled = (t.treatment >= 0) & np.isfinite(t.response)
    train_rows = cohort.indices("train")[labelled[cohort.indices("train")]]
    test_rows = test[labelled[test]]
    model = LogisticRegression(C=1.0, max_iter=5000).fit(design[train_rows], t.response[train_rows].astype(int))
    prob = model.predict_proba(design[test_rows])[:, 1]
    out["response_auroc"] = boot_auroc(t.response[test_rows], prob, n_boot, seed)
    return out


def _ceiling_design(egfr: np.ndarray, stk11: np.ndarray, keap1: np.ndarray, log_tmb: np.ndarray,
                    sequenced: np.ndarray, smoking: np.ndarray, aggressiveness: np.ndarray, imaged: np.ndarray,
                    treatment: np.ndarray, n_treatments: int) -> np.ndarray:
    """The generator's response terms per treatment (``ingest.synth.cohort._response_logits``), measured TMB
    with a square for its log1p curve, smoking status (0 never, 1 former, 2 current; NaN unknown), which the
    generator's TMB depends on, apart for sequenced and unsequenced patients, unknown genomics / CT as 0 with
    their indicator: ``(n, T * 13)``."""
    never, current = (smoking == 0).astype(float), (smoking == 2).astype(float)
    features = np.column_stack([egfr * sequenced, stk11 * sequenced, keap1 * sequenced, log_tmb * sequenced,
                                (log_tmb * sequenced) ** 2, sequenced, never * sequenced, never * (1 - sequenced),
                                current * sequenced, current * (1 - sequenced), aggressiveness * imaged, imaged,
                                np.ones_like(imaged)])
    onehot = np.eye(n_treatments)[treatment]
    return np.column_stack([onehot[:, [k]] * features for k in range(n_treatments)])


def observable_ceiling(cohort: Cohort, truth: pd.DataFrame, n_boot: int, seed: int) -> dict:
    """The ``ceiling, observable data`` rows (module docstring) on the run's test patients."""
    from sklearn.linear_model import LogisticRegression

    from ingest.synth import SynthConfig
    from ingest.synth.cohort import simulate_cohort
    from ingest.synth.variants import TERRITORY_MB, simulate_variants
    from ingest.variants.annotation import NONSILENT_CLASSES

    names = list(cohort.targets.treatment_names)
    rng = np.random.default_rng(10_000 + seed)
    ref = simulate_cohort(SynthConfig(n_patients=60_000, seed=10_000 + seed), rng)
    variants = simulate_variants(ref, rng)
    counts = variants[variants["Variant_Classification"].isin(NONSILENT_CLASSES)].groupby(
        "Tumor_Sample_Barcode").size().reindex(ref["sample_id"]).fillna(0.0).to_numpy()
    ref_sequenced = ref["has_genomics"].to_numpy(float)
    labelled = (ref["response"].notna() & ref["treatment"].isin(names)).to_numpy()
    r = ref[labelled]
    design = _ceiling_design(*(r[g].to_numpy(float) for g in ("egfr", "stk11", "keap1")),
                             np.log1p(counts[labelled] / TERRITORY_MB), ref_sequenced[labelled],
                             r["smoking"].map({"never": 0.0, "former": 1.0, "current": 2.0}).to_numpy(float),
                             r["aggressiveness"].to_numpy(float), r["has_image"].to_numpy(float),
                             r["treatment"].map(names.index).to_numpy(), len(names))
    model = LogisticRegression(C=10.0, fit_intercept=False, max_iter=10_000).fit(
        design, r["response"].astype(int).to_numpy())

    t = cohort.targets
    truth = truth.set_index("patient_id").reindex(cohort.patient_keys)
    X, column = cohort.X, cohort.feature_names.index
    sequenced, imaged = truth["has_genomics"].to_numpy(float), truth["has_image"].to_numpy(float)
    treated = t.treatment >= 0
    design = _ceiling_design(*(np.nan_to_num(X[:, column(f"gene:{g}")]) for g in ("EGFR", "STK11", "KEAP1")),
                             np.nan_to_num(X[:, column("log_tmb")]), sequenced, X[:, column("smoking")],
                             truth["aggressiveness"].to_numpy(float), imaged, np.maximum(t.treatment, 0), len(names))
    prob = model.predict_proba(design)[:, 1]
    test = cohort.indices("test")
    rows = test[treated[test] & np.isfinite(t.response[test])]
    out = {"response_auroc": boot_auroc(t.response[rows], prob[rows], n_boot, seed)}

    cancer = (truth["diagnosis"] != "benign").to_numpy()
    treatment_part = np.where(treated & cancer, -2.2 * prob + 0.7, truth["log_hazard_treatment"].to_numpy(float))
    log_hazard = (truth["log_hazard_ehr"].to_numpy(float) + at_mean(truth, "log_hazard_image", imaged > 0, cancer)
                  + at_mean(truth, "log_hazard_genomics", sequenced > 0, cancer) + treatment_part)
    rows = test[np.isfinite(t.time[test])]
    out["c_index_harrell"] = boot_c_index(t, rows, log_hazard[rows], n_boot, seed)
    return out


def risk_decomposition(run: LoadedRun, cohort: Cohort, truth: pd.DataFrame) -> dict:
    """Least-squares weights of the model's test log-risk on the generator's parts (cancer patients with a
    CT), and the R^2 of that fit."""
    from fusion.predict import model_outputs

    test = cohort.indices("test")
    truth = truth.set_index("patient_id").reindex(cohort.patient_keys[test])
    keep = ((truth["diagnosis"] != "benign") & truth["has_image"]).to_numpy(bool)
    risk = model_outputs(run, cohort, test).log_risk[keep]
    parts = {"ehr": truth["log_hazard_ehr"], "genomics": truth["log_hazard_genomics"],
             "treatment": truth["log_hazard_treatment"], "log_size": np.log(truth["nodule_size_mm"] / 30.0),
             "aggressiveness": truth["aggressiveness"]}
    design = np.column_stack([np.asarray(v, float)[keep] for v in parts.values()] + [np.ones(keep.sum())])
    weights, *_ = np.linalg.lstsq(design, risk, rcond=None)
    r2 = 1.0 - np.var(risk - design @ weights) / np.var(risk)
    return {"n": int(keep.sum()), "weights": dict(zip(parts, weights[:-1].tolist(), strict=True)), "r2": r2}


def fmt(item: dict | None) -> str:
    if not item or item.get("value") is None:
        return "n/a"
    ci = "" if item.get("ci_low") is None else f" ({item['ci_low']:.3f}-{item['ci_high']:.3f})"
    return f"{item['value']:.3f}{ci}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/tumorboard_quality_synth"))
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-image", action="store_true", help="EHR + genomics only (CPU budgets)")
    parser.add_argument("--device", default="cpu", help="where to train: cpu (default), cuda or cuda:N; a GPU "
                        "draws other random numbers than the CPU, so its figures differ within noise")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    lake = build_lake(args.out, args.patients, args.seed, args.image_size)
    run_dir = args.out / ("run_ehr_genomics" if args.no_image else "run_full_fusion")
    if not (run_dir / "model.safetensors").is_file():
        started = time.perf_counter()
        config = load_config(REPO / "configs" / "full_fusion.yaml", [
            f"train.epochs={args.epochs}", f"train.device={args.device}", "data.images.modality=null",
            *(["modalities.image.enabled=false"] if args.no_image else [])])
        train(config, lake, run_dir, progress=lambda r: print(
            f"  epoch {r['epoch']} train {r['train_loss']:.3f} val {r['val_loss']:.3f} "
            f"C {r.get('val_c_index', float('nan')):.3f} ({r['seconds']:.0f} s)", flush=True))
        print(f"fusion trained in {time.perf_counter() - started:.0f} s", flush=True)
    started = time.perf_counter()
    result = evaluate_run(run_dir, lake, n_boot=args.n_boot, progress=lambda e: print(
        f"  {e.get('stage')} {e.get('what', '')} {e.get('epoch', '')}", flush=True))
    print(f"evaluation (incl. single-modality retraining) in {time.perf_counter() - started:.0f} s")
    truth = pd.read_parquet(args.out / "cohort" / "truth.parquet")
    run = load_run(run_dir)
    cohort = run_cohort(run, load_frames(lake))  # the run's features and split, read once
    oracle = oracle_scores(cohort, truth, args.n_boot, result["split_seed"])
    limited = data_limited_scores(cohort, truth, args.n_boot, result["split_seed"])
    ceiling = observable_ceiling(cohort, truth, args.n_boot, result["split_seed"])
    decomposition = risk_decomposition(run, cohort, truth)

    survival, response, diagnosis = (result["tasks"][k] for k in ("survival", "response", "diagnosis"))
    print(f"\ntest patients: {result['n_test']} (survival n={survival['n']}, events {survival['n_events']}; "
          f"response n={response['n']})")
    print(f"{'model':<26}{'C-index (Harrell)':>22}{'response AUROC':>26}{'diagnosis AUROC':>26}")
    def item(scores: dict | None, metric: str) -> dict | None:
        return None if scores is None else scores.get(metric)

    rows = [("full fusion", item(survival["model"], "c_index_harrell"), item(response["model"], "auroc"),
             item(diagnosis["model"], "auroc"))]
    for name in sorted(survival["ablations"]):
        rows.append((name, item(survival["ablations"][name], "c_index_harrell"),
                     item(response["ablations"].get(name), "auroc"),
                     item(diagnosis["ablations"].get(name), "auroc")))
    for name in ("coxnet", "rsf"):
        rows.append((f"{name} (tabular)", item(survival["baselines"].get(name), "c_index_harrell"),
                     None, None))
    rows.append(("logistic (tabular)", None, item(response["baselines"].get("logistic"), "auroc"),
                 item(diagnosis["baselines"].get("logistic"), "auroc")))
    rows.append(("logistic (CT thumbnails)", None, None, item(diagnosis["baselines"].get("image_logistic"), "auroc")))
    rows.append(("late fusion (only_*)", *(item(task["baselines"].get("late_fusion"), metric) for task, metric in
                                           ((survival, "c_index_harrell"), (response, "auroc"), (diagnosis, "auroc")))))
    rows.append(("oracle (truth)", oracle["c_index_harrell"], oracle["response_auroc"], None))
    rows.append(("oracle, missing at mean", limited["c_index_harrell"], None, None))
    rows.append(("oracle, no aggressiveness", limited["c_index_no_aggressiveness"], None, None))
    rows.append(("logistic, true biomarkers", None, limited["response_auroc"], None))
    rows.append(("ceiling, observable data", ceiling["c_index_harrell"], ceiling["response_auroc"], None))
    for name, c, r, d in rows:
        print(f"{name:<26}{fmt(c):>22}{fmt(r):>26}{fmt(d):>26}")
    scale = decomposition["weights"]["ehr"]
    print(f"\nwhere the fusion risk comes from ({decomposition['n']} cancer patients with a CT): weights "
          "relative to the EHR part's (truth: ehr 1, genomics 1, treatment 1, log_size 0.6, aggressiveness 0.9)")
    print("  " + ", ".join(f"{k} {v / scale:.2f}" for k, v in decomposition["weights"].items())
          + f"; R^2 of the true parts {decomposition['r2']:.2f}")
    fusion_c = survival["model"]["c_index_harrell"]["value"]
    singles = {k: v["c_index_harrell"]["value"] for k, v in survival["ablations"].items()
               if k.startswith("only_")}
    best = max(singles, key=singles.get)
    gap_oracle = oracle["c_index_harrell"]["value"] - fusion_c
    verdict = "met" if gap_oracle <= 0.04 else "MISSED"
    print(f"\nfusion vs oracle C-index: {-gap_oracle:+.4f} (target within 0.04: {verdict})")
    gain = fusion_c - singles[best]
    verdict = "met" if gain >= 0.03 else "MISSED"
    print(f"fusion vs best single modality ({best}): {gain:+.4f} (target >= +0.03: {verdict})")
    gap_resp = oracle["response_auroc"]["value"] - response["model"]["auroc"]["value"]
    verdict = "met" if gap_resp <= 0.05 else "MISSED"
    print(f"response AUROC vs oracle: {-gap_resp:+.4f} (target within 0.05: {verdict})")
    for what, needed, reachable in (
            ("C-index", oracle["c_index_harrell"]["value"] - 0.04, ceiling["c_index_harrell"]["value"]),
            ("response AUROC", oracle["response_auroc"]["value"] - 0.05, ceiling["response_auroc"]["value"])):
        print(f"{what}: the target needs {needed:.3f}; the observable-data ceiling is {reachable:.3f}"
              + (" (the target lies above this estimate)" if needed > reachable else ""))


if __name__ == "__main__":
    main()
