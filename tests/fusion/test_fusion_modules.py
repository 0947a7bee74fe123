"""Contract test over the fusion registry, modality dropout, and the assembled FusionModel."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fusion.losses import multitask_loss
from fusion.models import FusionModel, create_encoder, create_fusion, list_fusions, modality_dropout
from fusion.models.model import RESPONSE_LINK_SCALE

IN_DIMS = {"image": 16, "tabular": 8, "genomics": 4}
# Rows: all present / image only / tabular only / genomics only / image+genomics.
PRESENT = {
    "image": torch.tensor([True, True, False, False, True]),
    "tabular": torch.tensor([True, False, True, False, False]),
    "genomics": torch.tensor([True, False, False, True, True]),
}
# [kwargs, expected embedding shape]
CASES = {
    "concat": [[{"out_dim": 12}, (5, 12)]],
    "gated_attention": [[{"out_dim": 12, "attention_dim": 6}, (5, 12)]],
    "kronecker": [[{"out_dim": 12, "rank_dim": 3}, (5, 12)], [{}, (5, 128)]],
    "cross_attention": [[{"out_dim": 12, "n_layers": 1, "n_heads": 3}, (5, 12)], [{}, (5, 128)]],
}


def _embeddings(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(5, d, generator=g, requires_grad=True) for n, d in IN_DIMS.items()}


@pytest.mark.parametrize("name", list_fusions())
def test_fusion_contract(name):
    assert name in CASES, f"fusion {name!r} is registered but has no cases in tests/fusion/test_fusion_modules.py"
    torch.manual_seed(0)
    for kwargs, expected_shape in CASES[name]:
        module = create_fusion(name, in_dims=IN_DIMS, **kwargs)
        assert module.out_dim == expected_shape[1]
        emb = _embeddings()
        fused, weights = module.train()(emb, PRESENT)
        assert fused.shape == expected_shape
        assert torch.isfinite(fused).all()
        fused.square().mean().backward()
        params = list(module.parameters())
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
        for n, e in emb.items():  # gradients reach present rows only
            assert (e.grad[PRESENT[n]].abs().sum(1) > 0).all()
            assert (e.grad[~PRESENT[n]] == 0).all()
        if weights is not None:
            assert set(weights) == set(IN_DIMS)
            w = torch.stack([weights[n] for n in IN_DIMS], 1)
            assert (w[~torch.stack([PRESENT[n] for n in IN_DIMS], 1)] == 0).all()
            torch.testing.assert_close(w.sum(1), torch.ones(5))
        module.eval()
        with torch.no_grad():
            clean = module(_embeddings(), PRESENT).embedding
            garbage = _embeddings(seed=1)  # present rows differ from `clean` unless overwritten below
            for n, e in garbage.items():
                e[PRESENT[n]] = _embeddings()[n][PRESENT[n]]
                e[~PRESENT[n]] = float("nan")
            torch.testing.assert_close(module(garbage, PRESENT).embedding, clean)


@pytest.mark.parametrize("name", ["gated_attention", "cross_attention", "concat", "kronecker"])
def test_single_present_modality_ignores_others(name):
    module = create_fusion(name, in_dims=IN_DIMS, out_dim=8).eval()
    only_image = {n: torch.tensor([n == "image"]) for n in IN_DIMS}
    a, b = _embeddings(0), _embeddings(1)
    b["image"] = a["image"]
    with torch.no_grad():
        out_a, w = module({n: e[:1] for n, e in a.items()}, only_image)
        out_b, _ = module({n: e[:1] for n, e in b.items()}, only_image)
    torch.testing.assert_close(out_a, out_b)
    if w is not None:
        assert float(w["image"]) == pytest.approx(1.0)


def test_unknown_fusion_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: concat, cross_attention, gated_attention, kronecker"):
        create_fusion("sum", in_dims=IN_DIMS)


def test_modality_dropout_keeps_one_modality():
    g = torch.Generator().manual_seed(0)
    present = {n: torch.rand(2000, generator=g) > 0.3 for n in IN_DIMS}
    present["image"][:10] = False
    for n in IN_DIMS:
        present[n][:5] = False  # rows with nothing stay empty
    before = torch.stack(list(present.values()), 1)
    out = modality_dropout(present, 0.5, torch.Generator().manual_seed(1))
    after = torch.stack(list(out.values()), 1)
    assert not (after & ~before).any()  # never adds a modality
    assert (after.any(1) == before.any(1)).all()  # never empties a row
    rate = 1 - after[before.sum(1) == 3].float().mean()
    assert 0.35 < float(rate) < 0.5  # about p, a little less because the last one is kept
    all_dropped = torch.stack(list(modality_dropout(present, 1.0).values()), 1)
    assert (all_dropped.sum(1) == before.any(1).long()).all()
    same = modality_dropout(present, 0.5, torch.Generator().manual_seed(1))
    assert all(torch.equal(same[n], out[n]) for n in IN_DIMS)
    assert all(torch.equal(modality_dropout(present, 0.0)[n], present[n]) for n in IN_DIMS)


def _model(fusion_name: str = "gated_attention", heads: dict | None = None, **model_kwargs) -> FusionModel:
    torch.manual_seed(0)
    encoders = {
        "image": create_encoder("timm", model_name="resnet10t", image_size=16, out_dim=8),
        "tabular": create_encoder("mlp", in_features=5, out_dim=6, hidden_dim=16),
    }
    fusion = create_fusion(fusion_name, in_dims={"image": 8, "tabular": 6}, out_dim=12)
    heads = {"n_classes": 3, "survival": True, "n_treatments": 4, **(heads or {})}
    return FusionModel(encoders, fusion, heads, **model_kwargs)


def _batch() -> dict:
    g = torch.Generator().manual_seed(0)
    slice_mask = torch.ones(4, 3, dtype=torch.bool)
    slice_mask[1, 2] = False
    return {
        "modalities": {
            "image": torch.randn(4, 3, 1, 16, 16, generator=g),
            "tabular": torch.randn(4, 5, generator=g),
        },
        "masks": {"image": slice_mask, "tabular": torch.rand(4, 5, generator=g) > 0.2},
        "present": {
            "image": torch.tensor([True, True, False, True]),
            "tabular": torch.tensor([True, False, True, True]),
        },
        "treatment": torch.tensor([0, 3, 1, -1]),
    }


def test_fusion_model_outputs_and_masks():
    model = _model().eval()
    batch = _batch()
    with torch.no_grad():
        out = model(batch)
    assert out["diagnosis_logits"].shape == (4, 3)
    assert out["log_risk"].shape == (4,)
    assert out["response_logits"].shape == (4,)
    assert out["embedding"].shape == (4, 12)
    assert torch.isnan(out["response_logits"][3]) and torch.isfinite(out["response_logits"][:3]).all()
    assert out["modality_weights"]["image"][2] == 0 and out["modality_weights"]["tabular"][1] == 0
    assert out["slice_attention"]["image"].shape == (4, 3) and (out["slice_attention"]["image"][2] == 0).all()
    garbage = _batch()
    garbage["modalities"]["image"][2] = float("nan")  # absent image
    garbage["modalities"]["tabular"][1] = float("nan")  # absent table
    garbage["modalities"]["image"][1, 2] = float("nan")  # padded slice
    with torch.no_grad():
        out_g = model(garbage)
    for key in ("diagnosis_logits", "log_risk", "embedding"):
        torch.testing.assert_close(out_g[key], out[key])


def _outputs_with_changed_tabular(name: str, field: str) -> tuple[FusionModel, dict, dict, dict]:
    """A model whose head ``field`` (e.g. ``"survival_modalities"``) reads the image only, in eval mode; a batch
    and the model's outputs on it and on the same batch with the tabular inputs changed."""
    model = _model(name)
    model.heads_config = dataclasses.replace(model.heads_config, **{field: ("image",)})
    model.eval()
    batch, changed = _batch(), _batch()
    changed["modalities"]["tabular"] = changed["modalities"]["tabular"] * 3.0 + 1.0
    with torch.no_grad():
        return model, batch, model(batch), model(changed)


@pytest.mark.parametrize("name", list_fusions())
def test_diagnosis_head_reads_only_its_modalities(name):
    model, batch, out, out_changed = _outputs_with_changed_tabular(name, "diagnosis_modalities")
    torch.testing.assert_close(out_changed["diagnosis_logits"], out["diagnosis_logits"])
    rows = batch["present"]["tabular"]
    assert not torch.allclose(out_changed["log_risk"][rows], out["log_risk"][rows])
    # row 2 has no image: the diagnosis head gets the embedding of nothing, the same as any other such row
    assert torch.isfinite(out["diagnosis_logits"]).all()
    torch.testing.assert_close(out["diagnosis_logits"][2], model.diagnosis(torch.zeros(1, 12))[0])
    with pytest.raises(ValueError, match="subset of the encoders"):
        FusionModel(dict(model.encoders), model.fusion, {"n_classes": 3, "diagnosis_modalities": ("genomics",)})


@pytest.mark.parametrize("name", list_fusions())
def test_survival_head_reads_only_its_modalities(name):
    model, _, out, out_changed = _outputs_with_changed_tabular(name, "survival_modalities")
    torch.testing.assert_close(out_changed["log_risk"], out["log_risk"])
    assert not torch.allclose(out_changed["response_logits"][:3], out["response_logits"][:3])
    # row 2 has no image: the survival head gets the embedding of nothing
    torch.testing.assert_close(out["log_risk"][2], model.survival(torch.zeros(1, 12))[0])
    with pytest.raises(ValueError, match="survival_modalities"):
        FusionModel(dict(model.encoders), model.fusion, {"survival_modalities": ()})


def test_response_link_adds_the_treated_response_probability_to_the_log_risk():
    plain = _model().eval()
    linked = _model(heads={"response_link": True}).eval()
    linked.load_state_dict(plain.state_dict(), strict=False)  # same weights; response_weight starts at 0
    batch = _batch()
    with torch.no_grad():
        linked.response_weight.fill_(-2.0)
        out, base = linked(batch), plain(batch)
        prob = torch.sigmoid(out["response_logits"][:3])
    torch.testing.assert_close(out["log_risk"][:3], base["log_risk"][:3] - 2.0 * RESPONSE_LINK_SCALE * prob)
    torch.testing.assert_close(out["log_risk"][3], base["log_risk"][3])  # treatment -1: no term
    emb = linked.embed(batch)
    torch.testing.assert_close(linked.survival_log_risk(emb["modality_embeddings"], emb["present"], {},
                                                        batch["treatment"]), out["log_risk"])
    # the survival loss trains the response head through the link
    linked.train()
    linked(batch)["log_risk"].sum().backward()
    assert linked.response.net.linear[1].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs 'treatment'"):
        linked.eval()(dict(batch, treatment=None))
    with pytest.raises(ValueError, match="response_link needs"):
        FusionModel(dict(plain.encoders), plain.fusion, {"survival": True, "response_link": True})


def test_fusion_model_response_all_matches_forward():
    model = _model("cross_attention").eval()
    batch = _batch()
    with torch.no_grad():
        every = model.response_all(batch, 4)
        for t in range(4):
            batch["treatment"] = torch.full((4,), t)
            torch.testing.assert_close(every[:, t], model(batch)["response_logits"])


def test_fusion_model_trains_with_modality_dropout_and_missing_modality():
    model = _model("kronecker", modality_dropout=0.3).train()
    batch = _batch()
    out = model(batch)
    targets = {
        "diagnosis": torch.tensor([0, 2, -1, 1]),
        "time": torch.tensor([5.0, 3.0, 3.0, 9.0]),
        "event": torch.tensor([True, True, False, True]),
        "response": torch.tensor([1.0, 0.0, 1.0, float("nan")]),
    }
    loss, parts = multitask_loss(out, targets, {"survival": 0.5})
    assert set(parts) == {"diagnosis", "survival", "response"} and torch.isfinite(loss)
    loss.backward()
    assert model.encoders["tabular"].net[0].weight.grad.abs().sum() > 0
    only_tab = {"modalities": {"tabular": batch["modalities"]["tabular"]}, "treatment": batch["treatment"]}
    assert model.eval()(only_tab)["embedding"].shape == (4, 12)


def test_fusion_model_refuses_rows_without_modalities_and_bad_dims():
    model = _model().eval()
    batch = _batch()
    batch["present"]["image"][2] = False
    batch["present"]["tabular"][2] = False
    with pytest.raises(ValueError, match=r"rows \[2\] have no modality present"):
        model(batch)
    enc = {"tabular": create_encoder("mlp", in_features=5, out_dim=6)}
    with pytest.raises(ValueError, match="in_dims"):
        FusionModel(enc, create_fusion("concat", in_dims={"tabular": 7}), {"survival": True})


def test_response_head_has_a_readout_per_treatment():
    from fusion.models import ResponseHead

    torch.manual_seed(0)
    head = ResponseHead(6, 3, hidden_dim=None).eval()
    z = torch.randn(5, 6)
    every = head.all_treatments(z)
    assert every.shape == (5, 3)
    for t in range(3):
        torch.testing.assert_close(head(z, torch.full((5,), t)), every[:, t])
    multi = torch.tensor([[1.0, 1.0, 0.0]]).expand(5, -1)
    torch.testing.assert_close(head(z, multi), every[:, 0] + every[:, 1])
    assert torch.isnan(head(z, torch.tensor([-1, 0, 1, 2, 0])))[0]
    # a feature can push the logit up under one treatment and down under another
    with torch.no_grad():
        head.net.linear[1].weight.zero_()
        head.net.linear[1].weight[0, 0], head.net.linear[1].weight[1, 0] = 2.0, -2.0
    diff = head.all_treatments(z + torch.eye(6)[0]) - head.all_treatments(z)
    torch.testing.assert_close(diff[:, :2], torch.tensor([[2.0, -2.0]]).expand(5, -1))


@pytest.mark.parametrize("name", ["concat", "gated_attention", "kronecker", "cross_attention"])
def test_fusion_linear_skip_passes_a_linear_model_through(name):
    torch.manual_seed(0)
    fusion = create_fusion(name, in_dims={"a": 3, "b": 2}, out_dim=8).eval()
    plain = create_fusion(name, in_dims={"a": 3, "b": 2}, out_dim=8, linear_skip=False).eval()
    assert fusion.skip is not None and plain.skip is None
    emb = {"a": torch.randn(4, 3), "b": torch.randn(4, 2)}
    present = {"a": torch.ones(4, dtype=torch.bool), "b": torch.tensor([True, False, True, True])}
    plain.load_state_dict({k: v for k, v in fusion.state_dict().items() if not k.startswith("skip.")})
    with torch.no_grad():
        extra = fusion(emb, present).embedding - plain(emb, present).embedding
    zeroed = torch.cat([emb["a"], emb["b"] * present["b"][:, None]], dim=1)
    torch.testing.assert_close(extra, zeroed @ fusion.skip.weight.T)  # absent modality contributes nothing
