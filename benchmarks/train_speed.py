"""Training throughput of full fusion vs a bare timm loop on the same tensors, and predict latency.

    python benchmarks/train_speed.py [--batch 32] [--slices 1] [--image-size 32] [--iters 5] [--threads 2]
        [--run RUN --lake LAKE]

Throughput: samples/s of forward + backward + AdamW step of ``configs/full_fusion.yaml`` (ResNet-18 per
slice with the small-image stem, EHR and genomics MLPs, cross-attention fusion, three heads, multitask loss)
against a bare ``timm.create_model("resnet18", in_chans=1, num_classes=3)`` with the same stem adaptation,
built with the config's ``model_kwargs`` (e.g. the narrow channel widths), fed the same image tensors
(cross-entropy on the slice-averaged logits). The gap is the cost of everything but the backbone.

Latency: wall time of ``predict_patient(..., explain=True)`` (Grad-CAM, integrated gradients, MC-dropout
interval, leave-one-modality-out) per patient after a warm-up call, median over ``--patients`` patients, on
RUN/LAKE (e.g. the run of ``quality_synth.py``) or on a small synthetic run built here. Target: < 1 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fusion.config import load_config  # noqa: E402
from fusion.losses import multitask_loss  # noqa: E402
from fusion.models.image import adapt_stem_for_small_images  # noqa: E402
from fusion.run import build_model, load_run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
N_EHR, N_GENOMICS = 60, 10


def fusion_batch(b: int, s: int, size: int) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"modalities": {"ehr": torch.randn(b, N_EHR, generator=g),
                           "genomics": torch.randn(b, N_GENOMICS, generator=g),
                           "image": torch.rand(b, s, 1, size, size, generator=g)},
            "masks": {"ehr": torch.ones(b, N_EHR, dtype=torch.bool),
                      "genomics": torch.ones(b, N_GENOMICS, dtype=torch.bool),
                      "image": torch.ones(b, s, dtype=torch.bool)},
            "present": {m: torch.ones(b, dtype=torch.bool) for m in ("ehr", "genomics", "image")},
            "treatment": torch.randint(0, 3, (b,), generator=g),
            "targets": {"diagnosis": torch.randint(0, 3, (b,), generator=g),
                        "time": torch.rand(b, generator=g) * 2000, "event": torch.rand(b, generator=g) < 0.6,
                        "response": (torch.rand(b, generator=g) < 0.4).float()}}


def samples_per_second(step, batch_size: int, iters: int) -> float:
    step()  # warm-up
    started = time.perf_counter()
    for _ in range(iters):
        step()
    return batch_size * iters / (time.perf_counter() - started)


def throughput(args: argparse.Namespace) -> None:
    import timm

    config = load_config(REPO / "configs" / "full_fusion.yaml")
    spec = {"modalities": {"ehr": {"kind": "tabular", "n_features": N_EHR},
                           "genomics": {"kind": "tabular", "n_features": N_GENOMICS},
                           "image": {"kind": "image", "in_chans": 1, "image_size": args.image_size}},
            "n_classes": 3, "survival": True, "n_treatments": 3}
    model = build_model(config, spec).train()
    batch = fusion_batch(args.batch, args.slices, args.image_size)
    weights = {"diagnosis": 1.0, "survival": 1.0, "response": 0.5}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def fusion_step() -> None:
        loss, _ = multitask_loss(model(batch), batch["targets"], weights)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    image_kwargs = config.modalities["image"].encoder_kwargs
    model_kwargs = {k: tuple(v) if isinstance(v, list) else v
                    for k, v in (image_kwargs.get("model_kwargs") or {}).items()}
    bare = timm.create_model(image_kwargs.get("model_name", "resnet18"), pretrained=False, in_chans=1,
                             num_classes=3, **model_kwargs).train()
    if args.image_size <= 64:
        adapt_stem_for_small_images(bare, "resnet18")
    bare_optimizer = torch.optim.AdamW(bare.parameters(), lr=1e-4)
    images = batch["modalities"]["image"]
    labels = batch["targets"]["diagnosis"]

    def bare_step() -> None:
        logits = bare(images.flatten(0, 1)).view(args.batch, args.slices, -1).mean(1)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        bare_optimizer.zero_grad()
        loss.backward()
        bare_optimizer.step()

    fused = samples_per_second(fusion_step, args.batch, args.iters)
    plain = samples_per_second(bare_step, args.batch, args.iters)
    print(f"batch {args.batch} x {args.slices} slice(s) of {args.image_size}px, {model_kwargs or ''} "
          f"{torch.get_num_threads()} thread(s): full fusion {fused:.1f} samples/s, bare timm loop "
          f"{plain:.1f} samples/s (fusion at {fused / plain:.0%} of the bare loop)")


def latency(args: argparse.Namespace) -> None:
    from fusion.predict import predict_patient
    from ingest.lake import Lake

    if args.run is None:
        from quality_synth import build_lake

        from fusion.train import train

        out = Path("/tmp/tumorboard_train_speed")
        lake_path = build_lake(out, 80, 0, args.image_size)
        run_dir = out / "run"
        if not (run_dir / "model.safetensors").is_file():
            train(load_config(REPO / "configs" / "full_fusion.yaml", [
                "train.epochs=2", "data.images.modality=null", "train.device=cpu"]), lake_path, run_dir)
    else:
        run_dir, lake_path = args.run, args.lake
    run, lake = load_run(run_dir), Lake(lake_path)
    keys = [k for k, s in run.meta["splits"].items() if s == "test"][: args.patients + 1]
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
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--slices", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--patients", type=int, default=10)
    parser.add_argument("--run", type=Path)
    parser.add_argument("--lake", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    throughput(args)
    latency(args)


if __name__ == "__main__":
    main()
