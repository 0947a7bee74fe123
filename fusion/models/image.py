"""Image encoders: a timm 2D backbone applied per slice, pooled over slices by gated attention.

One path for every image modality: a batch of single images ``(B, C, H, W)`` (X-ray, histology tile, MedMNIST)
is treated as series of one slice; a batch of series ``(B, S, C, H, W)`` (CT/MR slices) comes with a
slice mask ``(B, S)`` (True = real slice, False = padding). Each valid slice is encoded by the same
backbone, and slices are pooled by gated attention (Ilse et al., 2018); the attention weights are returned by
:meth:`TimmImageEncoder.forward_with_attention` for explanations.

Small images: timm's ImageNet stems downsample by 4 before the first block (a 28x28 image becomes 7x7). With
``small_input=True`` (or ``"auto"`` and ``image_size <= 32``) the stem is adapted, MedMNIST-style:

- ResNet family (``timm.models.resnet.ResNet``: resnet*, resnext*, seresnet*, resnet*d, ...): a plain
  ``conv1`` becomes a 3x3 stride-1 conv (new weights) and ``maxpool`` becomes Identity; a deep stem
  (``conv1`` a Sequential, the "d"/"t" variants) keeps its 3x3 convs with the first stride set to 1.
- EfficientNet / MobileNet family (``EfficientNet``, ``MobileNetV3``): ``conv_stem`` stride set to 1 (its
  weights are kept).

Other families raise a ValueError: pass ``small_input=False`` and resize images to the model's input size.
Pretrained weights come only from a local file (``weights_path``: safetensors, or a state dict readable by
``torch.load(weights_only=True)``); nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from timm.models import adapt_input_conv
from timm.models.efficientnet import EfficientNet
from timm.models.mobilenetv3 import MobileNetV3
from timm.models.resnet import ResNet
from torch import Tensor, nn

from fusion.models.fusion import GatedAttentionPool
from fusion.models.registry import register_encoder

SMALL_IMAGE_MAX_PX = 32


class TimmImageEncoder(nn.Module):
    """A timm backbone (``num_classes=0``) per slice + optional projection + gated-attention pooling.

    Args:
        backbone: timm model returning pooled features ``(N, backbone.num_features)``.
        out_dim: size of the output embedding; None keeps ``backbone.num_features``.
        attention_dim: hidden size of the gated-attention scorer.
        dropout: dropout on the slice features before pooling.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        out_dim: int | None = None,
        attention_dim: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        feat_dim = int(backbone.num_features)
        self.out_dim = int(out_dim) if out_dim is not None else feat_dim
        self.proj = nn.Linear(feat_dim, self.out_dim) if self.out_dim != feat_dim else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.pool = GatedAttentionPool(self.out_dim, attention_dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Embed images ``(B, C, H, W)`` or series ``(B, S, C, H, W)`` + mask ``(B, S)`` -> ``(B, D)``."""
        return self.forward_with_attention(x, mask)[0]

    def forward_with_attention(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Like :meth:`forward`, also returning slice attention weights ``(B, S)`` (``S = 1`` for images).

        Weights sum to 1 over a row's valid slices and are 0 on padding; a row without valid slices gets a
        zero embedding and zero weights.
        """
        if x.ndim == 4:
            if mask is not None:
                raise ValueError(
                    "image encoder: a slice mask was given with single images (B, C, H, W); "
                    "pass mask=None or series shaped (B, S, C, H, W)"
                )
            x = x.unsqueeze(1)
        elif x.ndim != 5:
            raise ValueError(f"image encoder: expected (B, C, H, W) or (B, S, C, H, W), got shape {tuple(x.shape)}")
        b, s = x.shape[:2]
        if mask is None:
            mask = torch.ones(b, s, dtype=torch.bool, device=x.device)
        if mask.shape != (b, s):
            raise ValueError(f"image encoder: slice mask shape {tuple(mask.shape)} does not match series {(b, s)}")
        mask = mask.bool()
        idx = mask.reshape(-1).nonzero().squeeze(1)
        slices = torch.zeros(b * s, self.out_dim, dtype=x.dtype, device=x.device)
        if idx.numel() > 0:
            feats = self.proj(self.backbone(x.reshape(b * s, *x.shape[2:]).index_select(0, idx)))
            slices = slices.index_copy(0, idx, self.dropout(feats).to(slices.dtype))
        return self.pool(slices.view(b, s, self.out_dim), mask)


@register_encoder("timm", kind="image")
def timm_encoder(
    model_name: str = "resnet18",
    *,
    in_chans: int = 1,
    pretrained: bool = False,
    weights_path: str | Path | None = None,
    small_input: bool | str = "auto",
    image_size: int | None = None,
    out_dim: int | None = None,
    attention_dim: int = 128,
    dropout: float = 0.0,
    model_kwargs: dict | None = None,
) -> TimmImageEncoder:
    """Build a :class:`TimmImageEncoder` around ``timm.create_model(model_name, num_classes=0)``.

    Args:
        model_name: any timm model name (``timm.list_models()``).
        in_chans: image channels (1 for CT/X-ray, 3 for RGB).
        pretrained: load backbone weights from ``weights_path`` (required then); never downloads.
        weights_path: local ``.safetensors`` or ``torch.save`` state dict of the timm model (a classifier head
            in it is dropped; 3-channel stems are adapted to ``in_chans`` as timm does).
        small_input: adapt the stem for small images (see module docstring); ``"auto"`` decides from
            ``image_size`` (small when ``<= 32`` px).
        image_size: shorter image side in pixels; needed by ``small_input="auto"``.
        out_dim: embedding size; None keeps the backbone's ``num_features``.
        attention_dim: hidden size of the slice attention.
        dropout: dropout on slice features.
        model_kwargs: extra arguments for ``timm.create_model``, e.g. ``{"channels": [16, 32, 64, 128]}`` for a
            narrow ResNet that trains on a CPU.
    """
    small = resolve_small_input(small_input, image_size)
    if pretrained and weights_path is None:
        raise ValueError(
            "timm encoder: pretrained=True needs weights_path=<local .safetensors/.pth file>; "
            "hub downloads are disabled"
        )
    if weights_path is not None and not pretrained:
        raise ValueError(
            f"timm encoder: weights_path={str(weights_path)!r} given with pretrained=False; "
            "pass pretrained=True to load it"
        )
    try:
        backbone = timm.create_model(model_name, pretrained=False, num_classes=0, in_chans=in_chans,
                                     **_tuples(model_kwargs or {}))
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"timm encoder: cannot build timm model {model_name!r} ({err}); see timm.list_models()"
                         " and the model's constructor arguments") from err
    if pretrained:
        load_backbone_weights(backbone, Path(weights_path), in_chans=in_chans)
    if small:
        adapt_stem_for_small_images(backbone, model_name)
    return TimmImageEncoder(backbone, out_dim=out_dim, attention_dim=attention_dim, dropout=dropout)


def _tuples(kwargs: dict) -> dict:
    """YAML gives lists; timm expects tuples for sizes such as ``channels``."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


def resolve_small_input(small_input: bool | str, image_size: int | None) -> bool:
    """Whether the stem is adapted for ``small_input`` (True, False or "auto") and ``image_size`` px."""
    if isinstance(small_input, bool):
        return small_input
    if small_input != "auto":
        raise ValueError(f"timm encoder: small_input must be True, False or 'auto', got {small_input!r}")
    if image_size is None:
        raise ValueError("timm encoder: small_input='auto' needs image_size=<pixels>; or pass small_input=True/False")
    return int(image_size) <= SMALL_IMAGE_MAX_PX


def adapt_stem_for_small_images(model: nn.Module, model_name: str) -> None:
    """Remove the stem's early downsampling in place (see the module docstring for supported families)."""
    if isinstance(model, ResNet):
        if isinstance(model.conv1, nn.Conv2d):
            old = model.conv1
            model.conv1 = nn.Conv2d(
                old.in_channels,
                old.out_channels,
                kernel_size=3,
                stride=1,
                padding=1,
                bias=old.bias is not None,
            )
        else:
            first = next(m for m in model.conv1.modules() if isinstance(m, nn.Conv2d))
            first.stride = (1, 1)
        model.maxpool = nn.Identity()
    elif isinstance(model, EfficientNet | MobileNetV3):
        model.conv_stem.stride = (1, 1)
    else:
        raise ValueError(
            f"timm encoder: small_input is supported for timm ResNet and EfficientNet/MobileNet "
            f"families, not {model_name!r} ({type(model).__name__}); pass small_input=False and "
            "resize images to the model's input size"
        )


def load_backbone_weights(model: nn.Module, path: Path, *, in_chans: int) -> None:
    """Load a local state dict into a timm backbone built with ``num_classes=0``.

    Classifier weights (``pretrained_cfg["classifier"]``) are dropped; a first conv saved with a different
    number of input channels is adapted with ``timm.models.adapt_input_conv``. Any other mismatch raises.
    """
    if not path.is_file():
        raise FileNotFoundError(f"timm encoder: weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    classifier = cfg.get("classifier")
    classifiers = classifier if isinstance(classifier, list | tuple) else [classifier] if classifier else []
    state = {k: v for k, v in state.items() if not any(k.startswith(f"{c}.") for c in classifiers)}
    first_conv = cfg.get("first_conv")
    key = f"{first_conv}.weight" if first_conv else None
    if key in state and state[key].ndim == 4 and state[key].shape[1] != in_chans:
        state[key] = adapt_input_conv(in_chans, state[key])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"timm encoder: weights in {path} do not fit the model: {str(err)[:500]}") from err
