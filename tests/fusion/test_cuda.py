"""The GPU path: every registered encoder and fusion module, and a whole training run, on a CUDA device.

These tests need a CUDA GPU and are reported as skipped (with that reason, in the ``-ra`` summary) on a machine
without one, such as CI. Training on the GPU must give a run that the CPU loads and scores as the GPU did:
evaluation and prediction always run on the CPU.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fusion.config import load_config
from fusion.metrics import harrell_c_index, multiclass_auroc
from fusion.models import create_encoder, create_fusion, list_encoders, list_fusions
from fusion.predict import model_outputs, run_cohort
from fusion.run import load_run
from fusion.train import train
from tests.fusion.test_encoders import CASES as ENCODER_CASES
from tests.fusion.test_encoders import _mask_for
from tests.fusion.test_fusion_modules import CASES as FUSION_CASES
from tests.fusion.test_fusion_modules import IN_DIMS, PRESENT
from tests.fusion.test_train import FAST, make_frames

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
CUDA = torch.device("cuda")


def _on(value, device: torch.device):
    return None if value is None else value.to(device)


@pytest.mark.parametrize("name", list_encoders())
def test_encoder_runs_on_cuda_as_on_cpu(name):
    torch.manual_seed(0)
    for kwargs, input_shape, expected_shape in ENCODER_CASES[name]:
        enc = create_encoder(name, **kwargs).to(CUDA).train()
        x, mask = torch.randn(input_shape), _mask_for(input_shape)
        out = enc(x.to(CUDA), _on(mask, CUDA))
        assert out.device.type == "cuda" and out.shape == expected_shape and torch.isfinite(out).all()
        out.square().mean().backward()
        assert all(p.grad is not None and p.grad.device.type == "cuda" and torch.isfinite(p.grad).all()
                   for p in enc.parameters() if p.requires_grad)
        enc.eval()
        with torch.no_grad():
            on_gpu = enc(x.to(CUDA), _on(mask, CUDA)).cpu()
            on_cpu = enc.cpu()(x, mask)
        torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", list_fusions())
def test_fusion_module_runs_on_cuda_as_on_cpu(name):
    torch.manual_seed(0)
    for kwargs, expected_shape in FUSION_CASES[name]:
        module = create_fusion(name, in_dims=IN_DIMS, **kwargs).to(CUDA).train()
        g = torch.Generator().manual_seed(0)
        emb = {n: torch.randn(5, d, generator=g) for n, d in IN_DIMS.items()}
        gpu_emb = {n: e.to(CUDA).requires_grad_() for n, e in emb.items()}
        present = {n: p.to(CUDA) for n, p in PRESENT.items()}
        fused, _ = module(gpu_emb, present)
        assert fused.device.type == "cuda" and fused.shape == expected_shape and torch.isfinite(fused).all()
        fused.square().mean().backward()
        for n, e in gpu_emb.items():  # gradients reach present rows only, on the GPU too
            assert (e.grad[present[n]].abs().sum(1) > 0).all() and (e.grad[~present[n]] == 0).all()
        module.eval()
        with torch.no_grad():
            on_gpu = module(gpu_emb, present).embedding.cpu()
            on_cpu = module.cpu()(emb, PRESENT).embedding
        torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-3, atol=1e-3)


def test_training_on_cuda_gives_a_run_the_cpu_scores_alike(tmp_path):
    frames = make_frames(48, images=True)
    config = load_config(None, [*FAST, "train.device=cuda", "modalities.image.enabled=true",
                                "modalities.image.encoder_kwargs={model_name: resnet10t, in_chans: 1, out_dim: 8}"])
    run_dir = train(config, None, tmp_path / "run", frames=frames)
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["device"].startswith("cuda")
    run = load_run(run_dir)  # the weights come back to the CPU
    assert all(p.device.type == "cpu" for p in run.model.parameters())

    cohort = run_cohort(run, frames)
    assert cohort.images.present.any()
    rows = cohort.indices("val")
    outputs = model_outputs(run, cohort, rows)
    t, gpu_val = cohort.targets, meta["summary"]["val"]
    # the CPU ranks the validation patients as the GPU did when it chose this epoch
    known = ~np.isnan(t.time[rows])
    c_index = harrell_c_index(t.time[rows][known], t.event[rows][known], outputs.log_risk[known])
    assert np.isfinite(c_index) and c_index == pytest.approx(gpu_val["c_index"], abs=1e-6)
    labelled = t.diagnosis[rows] >= 0
    auroc = multiclass_auroc(t.diagnosis[rows][labelled], outputs.diagnosis_prob[labelled])
    assert auroc == pytest.approx(gpu_val["auroc"], abs=1e-6)
