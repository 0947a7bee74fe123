"""Tabular encoders for a float matrix ``(B, F)`` with an optional observation mask ``(B, F)``.

Mask convention (same as slice masks and ``present`` flags elsewhere in ``fusion``): ``True`` = the value was
observed, ``False`` = missing. Missing entries may hold anything (NaN included); they never reach the output.

- ``mlp``: missing values are zeroed and the mask is appended as indicator features (2F inputs), then a
  stack of Linear -> norm -> GELU -> dropout blocks.
- ``ft_transformer`` (Gorishniy et al., 2021): one token per numeric feature (``x_f * w_f + b_f``), a CLS
  token and a transformer encoder; missing features are removed from attention by the key-padding mask.

Both add a linear skip path by default (``linear_skip=True``): ``out = deep(x) + W [x, mask]``. Together with
the linear paths of the fusion modules and heads it lets the model start from (and keep) a penalised linear
model of the features, which is what the strong tabular baselines (Coxnet, logistic) are; on a few hundred
patients the deep path alone under-fits the linear signal or over-fits the noise.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fusion.models.registry import register_encoder


def observed_inputs(x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Check shapes; return ``x`` with missing entries set to 0 and the bool mask ``(B, F)``."""
    if x.ndim != 2:
        raise ValueError(f"tabular encoder: expected (B, F) features, got shape {tuple(x.shape)}")
    if mask is None:
        mask = torch.ones_like(x, dtype=torch.bool)
    if mask.shape != x.shape:
        raise ValueError(f"tabular encoder: mask shape {tuple(mask.shape)} differs from features {tuple(x.shape)}")
    mask = mask.bool()
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device)), mask


class MLPEncoder(nn.Module):
    """Missing-indicator MLP: ``(B, F)`` features + mask -> ``(B, out_dim)``.

    Args:
        in_features: number of input features F.
        hidden_dim: width of the hidden layers.
        depth: number of hidden blocks (>= 1).
        out_dim: output embedding size.
        norm: "layernorm", "batchnorm" or "none".
        dropout: dropout after each hidden block.
        linear_skip: add a linear map of ``[x, mask]`` to the output.
    """

    def __init__(
        self,
        in_features: int,
        *,
        hidden_dim: int = 128,
        depth: int = 2,
        out_dim: int = 64,
        norm: str = "layernorm",
        dropout: float = 0.1,
        linear_skip: bool = True,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"mlp encoder: depth must be >= 1, got {depth}")
        norms = {"layernorm": nn.LayerNorm, "batchnorm": nn.BatchNorm1d, "none": lambda _: nn.Identity()}
        if norm not in norms:
            raise ValueError(f"mlp encoder: norm must be one of {sorted(norms)}, got {norm!r}")
        self.in_features = int(in_features)
        self.out_dim = int(out_dim)
        layers: list[nn.Module] = []
        width = 2 * self.in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden_dim), norms[norm](hidden_dim), nn.GELU(), nn.Dropout(dropout)]
            width = hidden_dim
        layers.append(nn.Linear(width, self.out_dim))
        self.net = nn.Sequential(*layers)
        self.skip = nn.Linear(2 * self.in_features, self.out_dim, bias=False) if linear_skip else None

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Embed ``x (B, F)`` given ``mask (B, F)`` (True = observed) -> ``(B, out_dim)``."""
        x, mask = observed_inputs(x, mask)
        if x.shape[1] != self.in_features:
            raise ValueError(f"mlp encoder: built for {self.in_features} features, got {x.shape[1]}")
        inputs = torch.cat([x, mask.to(x.dtype)], dim=1)
        out = self.net(inputs)
        return out if self.skip is None else out + self.skip(inputs)


class FTTransformerEncoder(nn.Module):
    """Feature-tokenizer transformer: ``(B, F)`` features + mask -> CLS embedding ``(B, out_dim)``.

    Args:
        in_features: number of numeric features F.
        d_token: token size.
        n_layers: transformer layers.
        n_heads: attention heads (must divide ``d_token``).
        dropout: attention and feed-forward dropout.
        out_dim: output size; None keeps ``d_token``.
        linear_skip: add a linear map of ``[x, mask]`` to the output.
    """

    def __init__(
        self,
        in_features: int,
        *,
        d_token: int = 32,
        n_layers: int = 2,
        n_heads: int = 4,
        dropout: float = 0.1,
        out_dim: int | None = None,
        linear_skip: bool = True,
    ) -> None:
        super().__init__()
        if d_token % n_heads:
            raise ValueError(f"ft_transformer encoder: n_heads={n_heads} must divide d_token={d_token}")
        self.in_features = int(in_features)
        self.weight = nn.Parameter(torch.randn(self.in_features, d_token) / d_token**0.5)
        self.bias = nn.Parameter(torch.randn(self.in_features, d_token) / d_token**0.5)
        self.cls = nn.Parameter(torch.randn(1, 1, d_token) / d_token**0.5)
        layer = nn.TransformerEncoderLayer(
            d_token,
            n_heads,
            dim_feedforward=2 * d_token,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_token)
        self.out_dim = int(out_dim) if out_dim is not None else d_token
        self.head = nn.Linear(d_token, self.out_dim) if self.out_dim != d_token else nn.Identity()
        self.skip = nn.Linear(2 * self.in_features, self.out_dim, bias=False) if linear_skip else None

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Embed ``x (B, F)`` given ``mask (B, F)`` (True = observed) -> ``(B, out_dim)``."""
        x, mask = observed_inputs(x, mask)
        if x.shape[1] != self.in_features:
            raise ValueError(f"ft_transformer encoder: built for {self.in_features} features, got {x.shape[1]}")
        tokens = x.unsqueeze(-1) * self.weight + self.bias
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1)
        keep = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        out = self.head(self.norm(self.transformer(tokens, src_key_padding_mask=~keep)[:, 0]))
        return out if self.skip is None else out + self.skip(torch.cat([x, mask.to(x.dtype)], dim=1))


@register_encoder("mlp", kind="tabular")
def mlp(in_features: int, **kwargs: object) -> MLPEncoder:
    """Missing-indicator MLP (see :class:`MLPEncoder` for options)."""
    return MLPEncoder(in_features, **kwargs)


@register_encoder("ft_transformer", kind="tabular")
def ft_transformer(in_features: int, **kwargs: object) -> FTTransformerEncoder:
    """FT-Transformer over per-feature tokens (see :class:`FTTransformerEncoder` for options)."""
    return FTTransformerEncoder(in_features, **kwargs)
