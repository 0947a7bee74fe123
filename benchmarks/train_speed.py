"""Training throughput of full fusion, from the lake, vs a bare timm loop; and predict latency.

    python benchmarks/train_speed.py [--patients 300] [--image-size 64] [--epochs 4] [--threads 2]
        [--work /tmp/tumorboard_train_speed] [--latency-patients 10] [--run RUN --lake LAKE] [--device cpu]

A synthetic lake (``quality_synth.build_lake``: FHIR, MAF and the CT key-slice PNGs at ``--image-size`` px) is
built once under ``--work`` (one per cohort size and image size); ``configs/full_fusion.yaml`` is then trained
on it for ``--epochs`` epochs with ``train()``, exactly as ``tumorboard train`` does, in this process and with
these threads, but with ``train.modality_dropout=0`` so that every CT of the epoch goes through the backbone
(dropout would skip a fifth of them and flatter the fusion). Two figures:

(1) end to end: seconds per training epoch, from ``history.csv``'s ``train_seconds``: the whole training
    pass, with the images read from the lake's tensor store, collated and flipped/rotated, every modality's
    encoder, fusion, the three heads, backward and AdamW (validation not counted); median over the epochs
    after the first (cold caches). Right after, a bare ``timm.create_model(<the config's backbone>,
    in_chans=1, num_classes=3)`` with the same stem adaptation and ``model_kwargs`` runs as many epochs over
    as many in-memory images as the training patients have CTs, in the same batch size (cross-entropy on the
    logits). Overhead = fusion epoch seconds / bare epoch seconds - 1: what the data path and everything but
    the backbone cost. Target: under 20%.
(2) model only: forward + backward + AdamW of the same model (the run's own feature counts) on one in-memory
    batch in which every patient has every modality, against the bare loop on the same images; median of
    five alternating repeats of five steps each.

Latency: wall time of ``predict_patient(..., explain=True)`` (HiResCAM, integrated gradients, MC-dropout
interval, leave-one-modality-out) per test patient after a warm-up call, median over ``--latency-patients``
patients, on the run trained here or on RUN/LAKE (e.g. the run of ``quality_synth.py``). Target: < 1 s.

``--device cuda`` trains and runs both loops of (1) and (2) on the GPU (timings wait for the GPU to finish);
prediction, and so the latency, stays on the CPU, where ``predict`` always runs.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fusion.config import load_config  # noqa: E402
from fusion.data import move_batch  # noqa: E402
from fusion.losses import multitask_loss  # noqa: E402
from fusion.models.image import adapt_stem_for_small_images, resolve_small_input  # noqa: E402
from fusion.run import build_model, load_run  # noqa: E402
from fusion.train import resolve_device  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def train_run(work: Path, patients: int, image_size: int, epochs: int, device: str) -> tuple[Path, Path]:
    """The lake (cached under ``work``, per cohort and image size) and a fresh ``full_fusion`` run on it."""
    from quality_synth import build_lake

    from fusion.train import train

    out = work / f"{patients}_patients_{image_size}px"
    lake_path = build_lake(out, patients, 0, image_size)
    run_dir = out / "run"
    shutil.rmtree(run_dir, ignore_errors=True)  # timed here and now, next to the bare loop
    train(load_config(REPO / "configs" / "full_fusion.yaml", [
        f"train.epochs={epochs}", f"train.patience={epochs}", "train.modality_dropout=0",
        f"data.images.image_size={image_size}", "data.images.modality=null", f"train.device={device}"]),
        lake_path, run_dir)
    return lake_path, run_dir


def bare_timm(config, batch_size: int, slices: int, image_size: int, device: torch.device):
    """A step function of the bare timm loop on in-memory tensors ``(batch_size * slices, 1, size, size)`` on
    ``device``."""
    import timm

    kwargs = config.modalities["image"].encoder_kwargs
    model_kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in (kwargs.get("model_kwargs") or {}).items()}
    name = kwargs.get("model_name", "resnet18")
    model = timm.create_model(name, pretrained=False, in_chans=1, num_classes=3, **model_kwargs).train()
    if resolve_small_input(kwargs.get("small_input", "auto"), image_size):
        adapt_stem_for_small_images(model, name)
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch_size * slices, 1, image_size, image_size, generator=g)
    labels = torch.randint(0, 3, (batch_size,), generator=g)
    images, labels = images.to(device), labels.to(device)

    def step(n: int = batch_size) -> None:
        logits = model(images[: n * slices]).view(n, slices, -1).mean(1)
        loss = torch.nn.functional.cross_entropy(logits, labels[:n])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def epoch_seconds(step, n_samples: int, batch_size: int, device: torch.device) -> float:
    """Seconds of one pass over ``n_samples`` in batches (the last one partial), as a training epoch (on a GPU,
    until its queued work is done)."""
    started = time.perf_counter()
    for start in range(0, n_samples, batch_size):
        step(min(batch_size, n_samples - start))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def throughput(run_dir: Path, lake_path: Path, image_size: int, device: torch.device) -> None:
    """Print figures (1) and (2) of the module docstring for ``run_dir``."""
    from fusion.cohort import load_frames
    from fusion.predict import run_cohort

    run = load_run(run_dir)
    config, spec = run.config, run.meta["spec"]
    history = pd.read_csv(run_dir / "history.csv")
    batch_size, slices = config.train.batch_size, 1
    cohort = run_cohort(run, load_frames(lake_path))
    n_train = int(history["train_samples"].iloc[0])
    n_images = int(cohort.images.present[cohort.indices("train")].sum())
    fused = history["train_seconds"].iloc[1:]
    bare = bare_timm(config, batch_size, slices, image_size, device)
    bare(), bare()  # warm-up
    plain = [epoch_seconds(bare, n_images, batch_size, device) for _ in range(len(fused))]
    overhead = statistics.median(fused) / statistics.median(plain) - 1
    print(f"(1) end to end, {n_train} training patients ({n_images} with a CT), batch {batch_size}, "
          f"{image_size} px, {_where(device)}: train() {statistics.median(fused):.2f} s per "
          f"epoch ({min(fused):.2f}-{max(fused):.2f}), bare timm loop over the {n_images} CTs "
          f"{statistics.median(plain):.2f} s ({min(plain):.2f}-{max(plain):.2f}): overhead {overhead:+.1%} "
          f"(target < 20%: {'met' if overhead < 0.2 else 'MISSED'}); first epoch (cold caches) "
          f"{history['train_seconds'].iloc[0]:.2f} s")

    model = build_model(config, spec).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = move_batch(fusion_batch(spec, batch_size, slices, image_size), device)
    weights = {"diagnosis": 1.0, "survival": 1.0, "response": 0.5}

    def fusion_step(n: int = batch_size) -> None:
        loss, _ = multitask_loss(model(batch), batch["targets"], weights)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    fusion_step(), fusion_step()  # warm-up
    steps = 5 * batch_size
    rates = [(steps / epoch_seconds(fusion_step, steps, batch_size, device),
              steps / epoch_seconds(bare, steps, batch_size, device)) for _ in range(5)]
    model_only, bare_only = (statistics.median(r[i] for r in rates) for i in (0, 1))
    print(f"(2) model only, one in-memory batch: fusion {model_only:.1f} samples/s, bare timm loop "
          f"{bare_only:.1f} samples/s (fusion at {model_only / bare_only:.0%})")


def fusion_batch(spec: dict, b: int, s: int, size: int) -> dict:
    """An in-memory batch for the model of ``spec``: every modality present, random values and targets."""
    g = torch.Generator().manual_seed(0)
    modalities, masks = {}, {}
    for name, m in spec["modalities"].items():
        if m["kind"] == "image":
            modalities[name] = torch.rand(b, s, m["in_chans"], size, size, generator=g)
            masks[name] = torch.ones(b, s, dtype=torch.bool)
        else:
            modalities[name] = torch.randn(b, m["n_features"], generator=g)
            masks[name] = torch.ones(b, m["n_features"], dtype=torch.bool)
    return {"modalities": modalities, "masks": masks,
            "present": {m: torch.ones(b, dtype=torch.bool) for m in spec["modalities"]},
            "treatment": torch.randint(0, spec["n_treatments"], (b,), generator=g),
            "targets": {"diagnosis": torch.randint(0, spec["n_classes"], (b,), generator=g),
                        "time": torch.rand(b, generator=g) * 2000, "event": torch.rand(b, generator=g) < 0.6,
                        "response": (torch.rand(b, generator=g) < 0.4).float()}}


def _where(device: torch.device) -> str:
    """Where the loops ran, for the printed figures."""
    if device.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(device)}"
    return f"CPU, {torch.get_num_threads()} thread(s)"


def latency(run_dir: Path, lake_path: Path, patients: int) -> None:
    """Print the predict latency of the module docstring."""
    from fusion.predict import predict_patient
    from ingest.lake import Lake

    run, lake = load_run(run_dir), Lake(lake_path)
    keys = [k for k, s in run.meta["splits"].items() if s == "test"][: patients + 1]
    started = time.perf_counter()
    predict_patient(run, lake, keys[0])
    first = time.perf_counter() - started
    times, images = [], 0
    for key in keys[1:]:
        started = time.perf_counter()
        result = predict_patient(run, lake, key)
        times.append(time.perf_counter() - started)
        images += result["image_attribution"] is not None
    median = statistics.median(times)
    print(f"predict_patient with explanations, {torch.get_num_threads()} thread(s): first call {first:.2f} s "
          f"(reads the lake), then median {median:.2f} s, max {max(times):.2f} s over {len(times)} patients "
          f"({images} with an image); target < 1 s: {'met' if median < 1.0 else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=300, help="size of the synthetic cohort")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4, help="training epochs (the first is a warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/tumorboard_train_speed"))
    parser.add_argument("--latency-patients", type=int, default=10)
    parser.add_argument("--run", type=Path, help="measure predict latency on this run (with --lake)")
    parser.add_argument("--lake", type=Path)
    parser.add_argument("--device", default="cpu", help="where to train and run the loops: cpu, cuda or cuda:N "
                        "(prediction stays on the CPU)")
    args = parser.parse_args()
    if (args.run is None) != (args.lake is None):
        parser.error("give --run and --lake together")
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is a warm-up")
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    lake_path, run_dir = train_run(args.work, args.patients, args.image_size, args.epochs, args.device)
    throughput(run_dir, lake_path, args.image_size, device)
    latency(args.run or run_dir, args.lake or lake_path, args.latency_patients)


if __name__ == "__main__":
    main()
