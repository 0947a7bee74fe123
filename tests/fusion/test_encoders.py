"""Contract test over the encoder registry, plus image-stem, weight-loading and mask behaviour."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from fusion.models import create_encoder, list_encoders
from fusion.models.image import TimmImageEncoder

# MONAI-style cases per registered encoder: [kwargs, input_shape, expected_shape].
CASES = {
    "timm": [
        [
            {"model_name": "resnet18", "in_chans": 1, "small_input": True, "out_dim": 16},
            (2, 1, 28, 28),
            (2, 16),
        ],
        [
            {"model_name": "resnet10t", "in_chans": 1, "image_size": 28, "out_dim": 8},
            (2, 3, 1, 28, 28),
            (2, 8),
        ],
        [{"model_name": "resnet10t", "in_chans": 3, "small_input": False}, (2, 3, 64, 64), (2, 512)],
    ],
    "mlp": [
        [{"in_features": 5}, (4, 5), (4, 64)],
        [{"in_features": 3, "depth": 1, "norm": "batchnorm", "out_dim": 7, "dropout": 0.0}, (4, 3), (4, 7)],
    ],
    "ft_transformer": [
        [{"in_features": 6, "d_token": 16, "n_layers": 1, "n_heads": 2}, (3, 6), (3, 16)],
        [{"in_features": 4, "out_dim": 10}, (2, 4), (2, 10)],
    ],
}


def _mask_for(shape: tuple[int, ...]) -> torch.Tensor | None:
    """A mask with invalid entries: slice mask for series, observation mask for tables, None for images."""
    if len(shape) == 5:
        mask = torch.ones(shape[:2], dtype=torch.bool)
        mask[0, -1] = False
        mask[1, 1:] = False
        return mask
    if len(shape) == 2:
        g = torch.Generator().manual_seed(0)
        mask = torch.rand(shape, generator=g) > 0.4
        mask[:, 0] = True
        mask[0, 1:] = False
        return mask
    return None


@pytest.mark.parametrize("name", list_encoders())
def test_encoder_contract(name):
    assert name in CASES, f"encoder {name!r} is registered but has no cases in tests/fusion/test_encoders.py"
    torch.manual_seed(0)
    for kwargs, input_shape, expected_shape in CASES[name]:
        enc = create_encoder(name, **kwargs)
        assert enc.out_dim == expected_shape[1]
        x, mask = torch.randn(input_shape), _mask_for(input_shape)
        enc.train()
        out = enc(x, mask)
        assert out.shape == expected_shape
        assert torch.isfinite(out).all()
        out.square().mean().backward()
        params = [p for p in enc.parameters() if p.requires_grad]
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
        assert sum(float(p.grad.abs().sum()) for p in params) > 0
        if mask is not None:  # masked entries never reach the output
            enc.eval()
            garbage = x.clone()
            garbage[~mask] = float("nan")
            with torch.no_grad():
                torch.testing.assert_close(enc(garbage, mask), enc(x, mask))


def test_unknown_encoder_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: ft_transformer, mlp, timm"):
        create_encoder("resnet")


def test_misspelt_arguments_are_named_before_any_data_is_read():
    from fusion.config import load_config
    from fusion.run import RunError, check_model_arguments

    with pytest.raises(ValueError, match=r"encoder .mlp. has no argument\(s\) hiden_dim; valid: in_features, hidden"):
        create_encoder("mlp", in_features=3, hiden_dim=8)
    with pytest.raises(RunError, match="fusion.name: unknown fusion module 'gated_atention'; valid names: concat"):
        check_model_arguments(load_config(None, ["fusion.name=gated_atention"]))
    with pytest.raises(RunError, match="fusion.kwargs: fusion module 'gated_attention' has no argument\\(s\\) foo"):
        check_model_arguments(load_config(None, ["fusion.name=gated_attention", "fusion.kwargs.foo=1"]))
    with pytest.raises(RunError, match="modalities.image.encoder_kwargs: encoder 'timm' has no argument\\(s\\) colour"):
        check_model_arguments(load_config(None, ["modalities.image.enabled=true",
                                                 "modalities.image.encoder_kwargs.colour=1"]))



def test_a_presets_kwargs_left_for_another_module_say_how_to_replace_them():
    from fusion.config import load_config
    from fusion.run import RunError, check_model_arguments

    preset = Path(__file__).resolve().parents[2] / "configs" / "genomics_clinical_survival.yaml"
    with pytest.raises(RunError, match=r"attention_dim.*the whole mapping: --set 'fusion.kwargs=\{dropout: 0.1\}'"):
        check_model_arguments(load_config(preset, ["fusion.name=concat"]))
    check_model_arguments(load_config(preset, ["fusion.name=concat", "fusion.kwargs={dropout: 0.1}"]))
    with pytest.raises(RunError, match=r"--set 'modalities.ehr.encoder_kwargs=\{dropout: 0.1, out_dim: 32\}'"):
        check_model_arguments(load_config(preset, ["modalities.ehr.encoder=mlp"]))


def test_list_encoders_by_kind():
    assert list_encoders("image") == ["timm"]
    assert list_encoders("tabular") == ["ft_transformer", "mlp"]


def test_small_input_stem_keeps_resolution():
    small = create_encoder("timm", model_name="resnet18", small_input=True).eval()
    large = create_encoder("timm", model_name="resnet18", small_input=False).eval()
    x = torch.randn(1, 1, 28, 28)
    assert small.backbone.forward_features(x).shape[-2:] == (4, 4)
    assert large.backbone.forward_features(x).shape[-2:] == (1, 1)
    assert small.backbone.conv1.kernel_size == (3, 3) and small.backbone.conv1.stride == (1, 1)
    assert isinstance(small.backbone.maxpool, torch.nn.Identity)


@pytest.mark.parametrize(("image_size", "small"), [(28, True), (32, True), (64, False), (224, False)])
def test_small_input_auto(image_size, small):
    enc = create_encoder("timm", model_name="resnet18", image_size=image_size)
    assert isinstance(enc.backbone.maxpool, torch.nn.Identity) == small


def test_small_input_auto_needs_image_size():
    with pytest.raises(ValueError, match="image_size"):
        create_encoder("timm", model_name="resnet18")


def test_small_input_unsupported_family_is_refused():
    with pytest.raises(ValueError, match="small_input=False"):
        create_encoder("timm", model_name="convnext_atto", small_input=True)


def test_efficientnet_stem_stride():
    enc = create_encoder("timm", model_name="mobilenetv3_small_050", small_input=True)
    assert enc.backbone.conv_stem.stride == (1, 1)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_pretrained_from_local_file_adapts_channels(tmp_path, suffix):
    torch.manual_seed(0)
    src = timm.create_model("resnet10t", pretrained=False, num_classes=10, in_chans=3)
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save({"state_dict": state}, path)
    enc = create_encoder(
        "timm", model_name="resnet10t", in_chans=1, pretrained=True, weights_path=path, small_input=False
    )
    torch.testing.assert_close(enc.backbone.layer1[0].conv1.weight, src.layer1[0].conv1.weight)
    torch.testing.assert_close(enc.backbone.conv1[0].weight, src.conv1[0].weight.sum(1, keepdim=True))


def test_pretrained_needs_a_local_file(tmp_path):
    with pytest.raises(ValueError, match="weights_path"):
        create_encoder("timm", model_name="resnet10t", pretrained=True, small_input=False)
    with pytest.raises(FileNotFoundError):
        create_encoder(
            "timm",
            model_name="resnet10t",
            pretrained=True,
            weights_path=tmp_path / "no.pth",
            small_input=False,
        )


def test_slice_attention_weights_and_single_image_path():
    torch.manual_seed(0)
    enc: TimmImageEncoder = create_encoder("timm", model_name="resnet10t", image_size=28, out_dim=8).eval()
    x = torch.randn(2, 4, 1, 28, 28)
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    with torch.no_grad():
        emb, attn = enc.forward_with_attention(x, mask)
        single = enc(x[:, 0])
    assert attn.shape == (2, 4)
    torch.testing.assert_close(attn.sum(1), torch.ones(2))
    assert (attn[~mask] == 0).all()
    torch.testing.assert_close(emb[1], single[1])  # one valid slice == the same image alone


def test_tabular_mask_none_equals_all_observed():
    enc = create_encoder("ft_transformer", in_features=4, dropout=0.0).eval()
    x = torch.randn(3, 4)
    torch.testing.assert_close(enc(x), enc(x, torch.ones(3, 4, dtype=torch.bool)))
