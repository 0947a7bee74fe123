"""Image-only diagnosis on real X-rays (PneumoniaMNIST subset) through the whole product, vs a bare timm loop.

    python benchmarks/quality_images.py [--epochs 12] [--threads 2] [--out DIR] [--set KEY=VALUE ...]

``../shared/data/images/pneumoniamnist_subset.npz`` (28x28 chest X-rays, label 1 = pneumonia, with its own
train/val/test split) is written as PNG files + a manifest (``ingest images``) and a labels CSV carrying the
split and the diagnosis (``ingest labels``). ``configs/image_diagnosis.yaml`` (timm ResNet-18 with the
small-image stem) is trained on it and scored by ``evaluate_run`` on the test split. The bare loop trains a
plain ``timm.create_model("resnet18", in_chans=1, num_classes=2)`` on the same arrays (AdamW, same epochs,
best validation AUROC epoch). Target: test AUROC >= 0.95 and above the bare loop.
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

from fusion.config import load_config  # noqa: E402
from fusion.evaluate import evaluate_run  # noqa: E402
from fusion.metrics import auroc  # noqa: E402
from fusion.train import train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "images" / "pneumoniamnist_subset.npz"
CLASSES = ("normal", "pneumonia")
IMAGES_YAML = """dtype: float32
windows: {}
presets:
  - {name: xray, ndim: 2, size: [28, 28], fit: resize, normalize: minmax}
  - {name: volume, ndim: 3, fit: resize, normalize: minmax}
"""


def build_lake(out: Path) -> Path:
    """PNG files + manifest + labels, ingested (reused when ``out/lake`` exists)."""
    from PIL import Image

    from ingest.images.pipeline import ingest_images
    from ingest.lake import Lake
    from ingest.tables import ingest_labels

    lake = Lake(out / "lake")
    if (out / "lake" / "labels").is_dir():
        return lake.path
    data = np.load(DATA)
    png = out / "png"
    png.mkdir(parents=True, exist_ok=True)
    manifest, labels = [], []
    for split in ("train", "val", "test"):
        for i, (image, label) in enumerate(zip(data[f"{split}_images"], data[f"{split}_labels"][:, 0],
                                               strict=True)):
            pid = f"{split}-{i:05d}"
            Image.fromarray(image).save(png / f"{pid}.png")
            manifest.append({"path": f"{pid}.png", "patient_id": pid, "study_date": "2020-01-01",
                             "modality": "DX"})
            labels.append({"patient_id": pid, "split": split, "diagnosis": CLASSES[int(label)],
                           "index_date": "2020-01-01"})
    pd.DataFrame(manifest).to_csv(png / "manifest.csv", index=False)
    pd.DataFrame(labels).to_csv(out / "labels.csv", index=False)
    (out / "images.yaml").write_text(IMAGES_YAML)
    started = time.perf_counter()
    print(ingest_images(lake, [], manifest=png / "manifest.csv", config_path=out / "images.yaml"))
    print(ingest_labels(lake, out / "labels.csv"))
    print(f"ingest: {time.perf_counter() - started:.0f} s")
    return lake.path


def bare_timm_loop(epochs: int, seed: int, batch_size: int, lr: float) -> tuple[float, float]:
    """A plain timm ResNet-18 on the same split: (test AUROC at the best validation epoch, seconds)."""
    import timm

    torch.manual_seed(seed)
    data = np.load(DATA)
    tensors = {s: (torch.tensor(data[f"{s}_images"], dtype=torch.float32)[:, None] / 255.0,
                   torch.tensor(data[f"{s}_labels"][:, 0], dtype=torch.long))
               for s in ("train", "val", "test")}
    model = timm.create_model("resnet18", pretrained=False, in_chans=1, num_classes=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    started = time.perf_counter()
    best_val, test_at_best = -1.0, float("nan")
    x, y = tensors["train"]
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x))
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            scores = {s: torch.softmax(model(tensors[s][0]), 1)[:, 1].numpy() for s in ("val", "test")}
        val = auroc(tensors["val"][1].numpy(), scores["val"])
        if val > best_val:
            best_val, test_at_best = val, auroc(tensors["test"][1].numpy(), scores["test"])
    return test_at_best, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--out", type=Path, default=Path("/tmp/tumorboard_quality_images"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config overrides, e.g. 'modalities.image.encoder_kwargs.model_kwargs="
                             "{channels: [16, 32, 64, 128]}' for a narrow ResNet-18 (faster on a CPU)")
    args = parser.parse_args()
    if not DATA.is_file():
        sys.exit(f"{DATA} is missing (see ../shared/data/SOURCES.md)")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    lake = build_lake(args.out)
    run_dir = args.out / f"run_e{args.epochs}"
    started = time.perf_counter()
    if not (run_dir / "model.safetensors").is_file():
        config = load_config(REPO / "configs" / "image_diagnosis.yaml", [
            "data.images.modality=null", "data.targets.diagnosis_classes=[normal, pneumonia]",
            f"train.epochs={args.epochs}", f"train.patience={args.epochs}",
            f"train.batch_size={args.batch_size}",
            f"train.lr={args.lr}", "train.device=cpu", *args.overrides])
        train(config, lake, run_dir, progress=lambda r: print(
            f"  epoch {r['epoch']} train {r['train_loss']:.3f} val {r['val_loss']:.3f} "
            f"acc {r.get('val_accuracy', float('nan')):.3f} ({r['seconds']:.0f} s)", flush=True))
    seconds = time.perf_counter() - started
    result = evaluate_run(run_dir, lake, retrain_ablations=False, n_boot=200)
    scores = result["tasks"]["diagnosis"]
    bare, bare_seconds = bare_timm_loop(args.epochs, 0, args.batch_size, args.lr)
    model = scores["model"]["auroc"]
    print(f"\ntest patients: {scores['n']}")
    accuracy = scores["model"]["accuracy"]["value"]
    print(f"tumorboard image_diagnosis (small-stem ResNet-18): AUROC {model['value']:.4f} "
          f"({model['ci_low']:.4f}-{model['ci_high']:.4f}), accuracy {accuracy:.3f}, "
          f"training {seconds:.0f} s")
    print(f"bare timm resnet18 loop: test AUROC {bare:.4f}, training {bare_seconds:.0f} s")
    pixels = scores["baselines"].get("image_logistic")
    if pixels is not None:
        print(f"logistic regression on 16 x 16 thumbnails: AUROC {pixels['auroc']['value']:.4f}")
    verdict = "met" if model["value"] >= 0.95 and model["value"] > bare else "MISSED"
    print(f"target AUROC >= 0.95 and above the bare loop: {verdict}")


if __name__ == "__main__":
    main()
