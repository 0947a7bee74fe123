"""Are ``tumorboard predict``'s explanations faithful? Measured against the synthetic cohort's truth.

    python benchmarks/explain_faithfulness.py --out demo_output [--split test]

Reads a finished ``make demo`` folder (``OUT/cohort`` with ``truth.parquet``, ``OUT/lake``,
``OUT/runs/full_fusion``), runs :func:`fusion.predict.predict_patient` for every cancer patient of the split
with a CT, and prints:

1. The image map vs the nodule. The nodule centre is not stored, so it is recovered by replaying the generator's
   image random stream (``ingest.synth.generate._write_images``; checked byte-for-byte against the key-slice
   PNGs). Per patient: the map's mass inside the nodule disk (radius = ``nodule_size_mm / 2``) against the
   disk's share of the image (a uniform map's mass), the pointing game (the map's peak cell touches the disk;
   chance = the share of cells that touch it; "other patients' nodules" = the same maps scored against the
   other patients' nodules, what a map that ignores the patient gets), the mass on the nodule's side of the
   chest, and whether the chosen slice is the one nearest the nodule centre / cuts the nodule at all. The
   reported map (integrated gradients from the run's reference image, the training patients' mean image;
   HiResCAM for a run saved without it) is set against HiResCAM and Grad-CAM at the CAM layer and against
   occlusion (each cell of the slice nearest the nodule replaced by the training patients' mean image, the
   log-risk drop): where the model actually reads this patient's CT. Candidates scored alike: HiResCAM one
   stage shallower, input x gradient and integrated gradients from the mean image, at the chosen slice and at
   the one nearest the nodule.
2. Integrated gradients vs the generator's log-hazard: how many of the top-10 tabular features are inputs
   that carry a term of the true log-hazard (``ingest.synth.cohort``: stage, age, ECOG, comorbidities, the
   inflammation labs, STK11 / KEAP1 / TP53 / KRAS / EGFR), against what 10 features drawn at random from the
   patient's observed ones would give; and whether the sign of the driver attributions agrees with the
   generator's.
3. Per-modality contributions: gate weights summing to 1, ``delta_log_risk`` equal to the forward pass with
   the modality dropped (:func:`fusion.data.drop_modalities`), the integrated gradients' completeness, and the
   Spearman correlation of each modality's ``delta_log_risk`` with the generator's part of the log-hazard.

Numbers vary with the cohort and the training seed; nothing here is a pass/fail threshold. The demo run's 33
patients took about 7 minutes on 2 shared CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from captum.attr import InputXGradient, IntegratedGradients, LayerGradCam, LayerGradientXActivation
from scipy.stats import spearmanr
from torch.nn import functional as nnf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fusion import explain  # noqa: E402
from fusion.cohort import restrict_frames  # noqa: E402
from fusion.data import collate, drop_modalities  # noqa: E402
from fusion.predict import dataset_for, lake_frames, predict_patient, run_cohort, stored_slice  # noqa: E402
from fusion.run import load_run  # noqa: E402
from ingest.lake import Lake  # noqa: E402
from ingest.synth.config import SynthConfig  # noqa: E402
from ingest.synth.phantom import LUNG_A, LUNG_B, LUNG_X, LUNG_Y, Geometry, ct_volume  # noqa: E402

# The run's tabular features that carry a term of the generator's log-hazard (ingest.synth.cohort.simulate_cohort)
# with the sign of that term: "direct" inputs of the formula (stage, age, ECOG, the five comorbidities, the
# drivers), and the labs whose pre-diagnosis values follow the latent inflammation (ingest.synth.timeline:
# LDH, CRP, WBC, platelets up; albumin, haemoglobin down), whose missing-indicators are not counted.
DIRECT = {"stage": 1, "age": 1, "ecog": 1, "cond:59621000": 1, "cond:44054006": 1, "cond:13645005": 1,
          "cond:709044004": 1, "cond:84114007": 1, "gene:STK11": 1, "gene:KEAP1": 1, "gene:TP53": 1,
          "gene:KRAS": 1, "gene:EGFR": -1}
INFLAMMATION_LABS = {"2532-0": 1, "1988-5": 1, "6690-2": 1, "777-3": 1, "1751-7": -1, "718-7": -1}


def driver_sign(name: str, *, labs: bool = True) -> int:
    """+1 / -1: the feature raises / lowers the true log-hazard; 0: it carries no term of it."""
    if name in DIRECT:
        return DIRECT[name]
    parts = name.split(":")
    if labs and len(parts) == 3 and parts[0] == "lab" and parts[2] in ("last", "mean_90d", "mean_365d"):
        return INFLAMMATION_LABS.get(parts[1], 0)
    return 0


class _Recorder:
    """Wraps a numpy Generator and records what each call returned."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng, self.log = rng, []

    def __getattr__(self, name: str):
        method = getattr(self.rng, name)

        def call(*args, **kwargs):
            value = method(*args, **kwargs)
            self.log.append(value)
            return value
        return call


def nodule_centres(cohort_dir: Path) -> tuple[Geometry, dict[str, dict]]:
    """``{mrn: {"centre_mm" (z, y, x), "radius_mm", "key_slice", "hu"}}`` of every imaged patient, by replaying
    the generator's image stream (stream 4 of ``SeedSequence(seed).spawn(5)``, ``ct_volume`` then the two
    draws of ``write_series``)."""
    config = SynthConfig(**json.loads((cohort_dir / "synth_config.json").read_text()))
    truth = pd.read_parquet(cohort_dir / "truth.parquet")
    geo = Geometry(config.image_size, config.n_slices, config.pixel_spacing_mm, config.slice_thickness_mm)
    rng = [np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(5)][4]
    out = {}
    for row in truth.itertuples(index=False):
        if not row.has_image:
            continue
        rec = _Recorder(rng)
        hu, key = ct_volume(geo, rec, size_mm=row.nodule_size_mm, aggressiveness=row.aggressiveness,
                            malignant=row.diagnosis != "benign")
        side, uz, uy, ux = (float(v) for v in rec.log[:4])
        centre = np.array([uz * geo.thickness, LUNG_Y + uy * LUNG_B, side * LUNG_X + ux * LUNG_A])
        rng.random()
        rng.permutation(geo.n_slices)  # write_series: instance direction, file names
        out[str(row.mrn)] = {"centre_mm": centre, "radius_mm": row.nodule_size_mm / 2.0, "key_slice": key, "hu": hu}
    if config.png:  # the replay must give the very volumes that were written
        from PIL import Image

        from ingest.synth.dicom_writer import LUNG_WINDOW
        level, width = LUNG_WINDOW
        for mrn, item in list(out.items())[:20]:
            png = np.asarray(Image.open(cohort_dir / "png" / f"{mrn}.png"))
            mine = np.round(np.clip((item["hu"][item["key_slice"]].astype(np.float32) - (level - width / 2))
                                    / width * 255.0, 0, 255)).astype(np.uint8)
            if not np.array_equal(png, mine):
                raise RuntimeError("replaying the generator did not reproduce the written CT; the generator changed")
    return geo, out


def disk_mask(geo: Geometry, shape: tuple[int, int], centre_yx_mm: np.ndarray, radius_mm: float) -> np.ndarray:
    """Boolean ``shape`` mask of a disk on the model's input grid (a corner-aligned resize of the stored
    ``geo.size`` grid, as ``ingest.images.preprocess`` and ``fusion.data`` resize)."""
    _, axis, _ = geo.axes()
    rows = np.interp(np.linspace(0, geo.size - 1, shape[0]), np.arange(geo.size), axis)
    cols = np.interp(np.linspace(0, geo.size - 1, shape[1]), np.arange(geo.size), axis)
    yy, xx = np.meshgrid(rows, cols, indexing="ij")
    return (yy - centre_yx_mm[0]) ** 2 + (xx - centre_yx_mm[1]) ** 2 <= radius_mm**2


def cell_cover(mask: np.ndarray, cells: tuple[int, int]) -> np.ndarray:
    """Share of each map cell's pixels inside ``mask`` (the map is an average pool of the input grid)."""
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return torch.nn.functional.adaptive_avg_pool2d(t, cells)[0, 0].numpy()


def slice_z_mm(run, geo: Geometry, stored_shape: list[int], model_index: int) -> float:
    """z (mm, the generator's frame) of the model's input slice ``model_index``."""
    stored = stored_slice(run, stored_shape, model_index)
    original = stored * (geo.n_slices - 1) / (stored_shape[0] - 1)  # ingest's corner-aligned z resize
    return (original - (geo.n_slices - 1) / 2.0) * geo.thickness


def slice_maps(model, batch: dict, mean_image: torch.Tensor, cells: tuple[int, int]) -> dict[str, np.ndarray]:
    """``{"hires_cam", "grad_cam": (S, h, w)}``: the log-risk's HiResCAM (what
    :func:`fusion.explain.image_attribution` reports, for one slice) and, for comparison, Grad-CAM (captum
    ``LayerGradCam``) on every valid slice at the same layer, ReLU'd, pooled to the reported map's side."""
    enc = model.encoders["image"]
    encoded = explain.encode(model, batch)
    x, mask = batch["modalities"]["image"], batch["masks"]["image"]
    layer = explain._cam_layer(enc.backbone.eval(), x[0, :1])[1]
    fixed = {m: e for m, e in encoded.emb.items() if m != "image"}

    def forward(images: torch.Tensor) -> torch.Tensor:
        b = images.shape[0]
        emb, _ = enc.forward_with_attention(images, mask.expand(b, -1))
        return explain._target(model, {**explain._expand(fixed, b), "image": emb}, explain._expand(encoded.present, b),
                               encoded.cls, explain._expand(encoded.offset_terms, b),
                               explain._expand_treatment(encoded.treatment, b))

    names = [n for n, _ in enc.backbone.named_children()]
    shallower = enc.backbone.get_submodule(names[names.index(explain._cam_layer(enc.backbone, x[0, :1])[0]) - 1])
    valid = mask[0]

    def pixels(attr: torch.Tensor) -> torch.Tensor:  # (1, S, C, H, W) -> (valid S, 1, H, W), positive part
        return attr[0][valid].sum(1, keepdim=True).clamp(min=0)

    maps = {"hires_cam": LayerGradientXActivation(forward, layer).attribute(x).sum(1, keepdim=True).clamp(min=0),
            "grad_cam": LayerGradCam(forward, layer).attribute(x, relu_attributions=True),
            "hires_cam_shallower": LayerGradientXActivation(forward, shallower).attribute(x).sum(1, keepdim=True)
            .clamp(min=0),
            "input_x_gradient": pixels(InputXGradient(forward).attribute(x)),
            "ig_mean_image": pixels(IntegratedGradients(forward).attribute(
                x, baselines=explain._series_like(mean_image, x), n_steps=explain.IG_STEPS,
                internal_batch_size=max(1, explain.IG_BATCH_VALUES // x[0].numel())))}
    out = {}  # every map pooled to the reported map's cells
    for name, cam in maps.items():
        out[name] = nnf.adaptive_avg_pool2d(cam.detach(), cells)[:, 0].numpy().astype(np.float64)
    return out


@torch.no_grad()
def occlusion(model, batch: dict, mean_image: torch.Tensor, s: int, cells: tuple[int, int]) -> np.ndarray:
    """``cells`` map of how much the log-risk drops when one cell of slice ``s`` is replaced by the training
    patients' mean image there (the anatomy every phantom shares, without this patient's nodule): the reference
    for where the model reads this patient's image."""
    x = batch["modalities"]["image"]
    base = float(model(batch)["log_risk"][0])
    rows = np.linspace(0, x.shape[-2], cells[0] + 1).round().astype(int)
    cols = np.linspace(0, x.shape[-1], cells[1] + 1).round().astype(int)
    out = np.zeros(cells)
    for i in range(cells[0]):
        for j in range(cells[1]):
            cell = (slice(rows[i], rows[i + 1]), slice(cols[j], cols[j + 1]))
            xo = x.clone()
            xo[0, s, :, cell[0], cell[1]] = mean_image[s, :, cell[0], cell[1]]
            occluded = {**batch, "modalities": {**batch["modalities"], "image": xo}}
            out[i, j] = base - float(model(occluded)["log_risk"][0])
    return out


def scores(heat: np.ndarray, cover: np.ndarray) -> dict:
    """Mass share of a non-negative map inside the nodule (cell coverage ``cover``) and the pointing game."""
    total = heat.sum()
    if total <= 0:
        return {"share": 0.0, "hit": False, "empty": True}
    return {"share": float((heat * cover).sum() / total),
            "hit": bool(cover[np.unravel_index(np.argmax(heat), heat.shape)] > 0), "empty": False}


def main() -> None:  # noqa: C901, PLR0915
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="a finished `make demo` folder")
    parser.add_argument("--run", type=Path, default=None, help="run folder (default OUT/runs/full_fusion)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="An input array is constant")  # all-zero Grad-CAM maps
    run = load_run(args.run or args.out / "runs" / "full_fusion")
    lake = Lake(args.out / "lake")
    truth = pd.read_parquet(args.out / "cohort" / "truth.parquet")
    geo, nodules = nodule_centres(args.out / "cohort")
    frames = lake_frames(lake)
    cohort = run_cohort(run, frames)
    keys = set(cohort.patient_keys[cohort.split == args.split])
    chosen = truth[truth["patient_id"].isin(keys) & (truth["diagnosis"] != "benign") & truth["has_image"]]
    names = run.meta["feature_names"]
    print(f"run {run.run_dir}; {len(chosen)} {args.split} cancer patients with a CT")

    train_rows = cohort.indices("train")
    train_rows = train_rows[cohort.images.present[train_rows]]
    train_images = dataset_for(run, cohort, train_rows)
    mean_image = torch.stack([train_images[i]["image"] for i in range(len(train_rows))]).mean(0)
    if run.reference_image is not None:  # what predict's integrated gradients start from
        mean_image = run.reference_image

    cam, tab, mods = [], [], []
    for row in chosen.itertuples(index=False):
        result = predict_patient(run, lake, row.patient_id)
        att = result["image_attribution"]
        nod = nodules[str(row.mrn)]
        one = run_cohort(run, restrict_frames(frames, {row.patient_id}))
        batch = collate([dataset_for(run, one, np.array([0]))[0]])
        if att is not None:
            heat = np.asarray(att["map"], np.float64)
            h, w = batch["modalities"]["image"].shape[-2:]
            shape = [int(n) for n in frames.images.loc[frames.images["image_id"] == att["image_id"],
                                                        "tensor_shape"].iloc[0]]
            n_valid = int(batch["masks"]["image"][0].sum())
            zs = np.array([slice_z_mm(run, geo, shape, m) for m in range(n_valid)])
            chosen_slice, nearest = att["slice_index"], int(np.argmin(abs(zs - nod["centre_mm"][0])))
            cover = cell_cover(disk_mask(geo, (h, w), nod["centre_mm"][1:], nod["radius_mm"]), heat.shape)
            columns = np.sign(np.linspace(-1.0, 1.0, w))[None, :].repeat(h, 0)  # x < 0: left of the image
            side = cell_cover(columns == np.sign(nod["centre_mm"][2]), heat.shape)
            maps = slice_maps(run.model, batch, mean_image, heat.shape)
            recomputed = maps["ig_mean_image" if att["method"] == "integrated_gradients" else "hires_cam"]
            occluded = occlusion(run.model, batch, mean_image, nearest, heat.shape)
            item = {"layer": att["layer"], "heat": heat, "cover": cover, "area": cover.mean(),
                    "chance": (cover > 0).mean(), "side": (heat * side).sum() / max(heat.sum(), 1e-12),
                    "reported": scores(heat, cover), "nearest": nearest == chosen_slice,
                    "cuts": abs(zs[chosen_slice] - nod["centre_mm"][0]) < nod["radius_mm"],
                    "uniform": np.ptp(att["slice_attention"][:n_valid]) < 0.05 * max(att["slice_attention"]),
                    "occlusion": scores(np.clip(occluded, 0, None), cover),
                    "method": att["method"],
                    "consistent": np.allclose(recomputed[chosen_slice] / max(recomputed[chosen_slice].max(), 1e-12),
                                              heat, atol=1e-3)}
            for name, m in maps.items():
                item[f"{name}@chosen"] = scores(m[chosen_slice], cover)
                item[f"{name}@nodule"] = scores(m[nearest], cover)
                item[f"{name}_vs_occlusion"] = spearmanr(m[nearest].ravel(), occluded.ravel())[0]
                item[f"{name}_peak"] = tuple(int(v) for v in np.unravel_index(np.argmax(m[chosen_slice]), heat.shape))
                item[f"{name}_mass_slice"] = int(np.argmax(m.sum(axis=(1, 2)))) == nearest
            cam.append(item)
        # -- tabular: every feature's integrated gradients and the generator's drivers
        raw = {n: b.values[0] for n, b in one.blocks.items()}
        every = explain.top_features(run.model, batch, names, raw, {}, k=10_000, n_steps=64)
        tab.append({"features": [(f["modality"], f["name"], f["value"], f["attribution"]) for f in every],
                    "ig_sum": sum(f["attribution"] for f in every)})
        # -- modality contributions against the forward pass
        with torch.no_grad():
            full = float(run.model(batch)["log_risk"][0])
            zeroed = {**batch, "modalities": {k: (torch.zeros_like(v) if k in names else v)
                                              for k, v in batch["modalities"].items()}}
            tab[-1]["ig_target"] = full - float(run.model(zeroed)["log_risk"][0])
            item = {"log_risk": full, "reported": result["survival"]["log_risk"], "truth": row.log_hazard}
            contributions = result["modality_contributions"]
            item["weight_sum"] = sum(c["weight"] for c in contributions.values() if c["present"])
            for name, c in contributions.items():
                if c["delta_log_risk"] is not None:
                    without = float(run.model(drop_modalities(batch, [name]))["log_risk"][0])
                    item[f"delta_{name}"] = c["delta_log_risk"]
                    item[f"forward_delta_{name}"] = full - without
                    item[f"weight_{name}"] = c["weight"]
            for part in ("image", "genomics", "ehr"):
                item[f"truth_{part}"] = getattr(row, f"log_hazard_{part}")
        mods.append(item)

    # ---------------------------------------------------------------------------------------------- report
    c = pd.DataFrame(cam)
    print(f"\n1. Image attribution ({len(c)} maps; {c['method'][0]}, {c['heat'][0].shape[0]} x "
          f"{c['heat'][0].shape[1]} cells; nodule disk = {c['area'].mean():.3f} of the image, touches "
          f"{c['chance'].mean():.3f} of the cells: a uniform map's mass share and a random peak's hit rate)")
    print(f"   predict's map ({c['method'][0]}) equals the recomputed one: {c['consistent'].mean():.3f}")

    def line(label: str, key: str) -> None:
        d = pd.DataFrame(list(c[key]))
        print(f"   {label:<44} mass in nodule {d['share'].mean():.3f}  pointing game {d['hit'].mean():.3f}"
              f" ({int(d['hit'].sum())}/{len(d)})  all-zero {int(d['empty'].sum())}")

    line("reported map (chosen slice)", "reported")
    line("Grad-CAM, chosen slice", "grad_cam@chosen")
    line("HiResCAM, slice nearest the nodule centre", "hires_cam@nodule")
    line("Grad-CAM, slice nearest the nodule centre", "grad_cam@nodule")
    line("occlusion by the mean image, nearest slice", "occlusion")
    for name in ("hires_cam_shallower", "input_x_gradient", "ig_mean_image"):
        line(f"{name}, chosen slice", f"{name}@chosen")
        line(f"{name}, slice nearest the nodule centre", f"{name}@nodule")
    for name in ("hires_cam", "grad_cam", "ig_mean_image"):
        peaks = pd.Series(list(c[f"{name}_peak"])).value_counts()
        print(f"   {name}: Spearman with the occlusion map {np.nanmean(c[f'{name}_vs_occlusion']):+.3f}; most"
              f" frequent peak cell {peaks.index[0]} ({peaks.iloc[0]}/{len(c)}); the slice with the most map mass is"
              f" the nearest one for {c[f'{name}_mass_slice'].mean():.3f}")
    shuffled = [pd.Series([scores(c["heat"][i], c["cover"][j])["hit"] for j in range(len(c)) if j != i]).mean()
                for i in range(len(c)) if c["heat"][i].sum() > 0]
    print(f"   reported maps scored on other patients' nodules (a map that ignores the patient): pointing game "
          f"{np.mean(shuffled):.3f}; reported map's mass on the nodule's side of the chest {c['side'].mean():.3f}")
    print(f"   reported map's slice = slice nearest the nodule centre: {c['nearest'].mean():.3f}; cuts the "
          f"nodule: {c['cuts'].mean():.3f}; slice attention about uniform (spread < 5% of max): "
          f"{c['uniform'].mean():.3f}")

    t = pd.DataFrame(tab)
    means = {m: dict(zip(names[m], run.meta["normalization"][m]["mean"], strict=True)) for m in names}
    print(f"\n2. Integrated gradients (top 10 of {sum(len(v) for v in names.values())} tabular features)")
    for labs, label in ((False, "direct inputs of the log-hazard"), (True, "direct + inflammation labs")):
        top, chance, agree, seen = [], [], [], []
        for features in t["features"]:
            observed = [f for f in features if f[2] is not None]
            top.append(sum(driver_sign(f[1], labs=labs) != 0 for f in features[:10]))
            chance.append(10 * sum(driver_sign(f[1], labs=labs) != 0 for f in observed) / len(observed))
            for modality, name, value, attribution in features[:10]:
                sign = driver_sign(name, labs=labs)
                if sign and abs(attribution) > 1e-6 and value != means[modality][name]:
                    agree.append(np.sign(attribution) == sign * np.sign(value - means[modality][name]))
            seen.append(sum(driver_sign(f[1], labs=labs) != 0 for f in observed))
        print(f"   {label}: {np.mean(top):.2f} of the top 10 (10 random observed features: {np.mean(chance):.2f};"
              f" {np.mean(seen):.1f} such features observed per patient); sign as the generator's in"
              f" {np.mean(agree):.3f} of {len(agree)} top-10 driver attributions")
    counts: dict[str, int] = {}
    for features in t["features"]:
        for _, name, _, _ in features[:10]:
            counts[name] = counts.get(name, 0) + 1
    print("   most frequent top-10 features (* direct, + inflammation lab): " + ", ".join(
        f"{n}{'*' if driver_sign(n, labs=False) else '+' if driver_sign(n) else ''} {k}"
        for n, k in sorted(counts.items(), key=lambda kv: -kv[1])[:15]))
    gap = (t["ig_sum"] - t["ig_target"]).abs()
    print(f"   completeness |sum IG - (f(x) - f(mean))|: median {gap.median():.4f}, max {gap.max():.4f} "
          f"(|f(x) - f(mean)| median {t['ig_target'].abs().median():.3f})")

    m = pd.DataFrame(mods)
    print(f"\n3. Modality contributions ({len(m)} patients)")
    print(f"   |reported log-risk - forward|: max {(m['log_risk'] - m['reported']).abs().max():.2e}; "
          f"gate weights of present modalities sum to 1: max error {(m['weight_sum'] - 1).abs().max():.2e}")
    for name in ("image", "ehr", "genomics"):
        if f"delta_{name}" not in m:
            continue
        d = m[[f"delta_{name}", f"forward_delta_{name}", f"truth_{name}", f"weight_{name}"]].dropna()
        rho = spearmanr(d[f"delta_{name}"], d[f"truth_{name}"])[0]
        print(f"   {name:<9} n {len(d):>3}: |delta - forward delta| max "
              f"{(d[f'delta_{name}'] - d[f'forward_delta_{name}']).abs().max():.2e}; mean delta "
              f"{d[f'delta_{name}'].mean():+.3f} (sd {d[f'delta_{name}'].std():.3f}); gate weight mean "
              f"{d[f'weight_{name}'].mean():.3f}; Spearman(delta, generator's {name} part) {rho:+.3f}")
    rho = spearmanr(m["log_risk"], m["truth"])[0]
    print(f"   Spearman(log-risk, true log-hazard) {rho:+.3f}")


if __name__ == "__main__":
    main()
