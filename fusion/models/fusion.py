"""Fusion modules: combine per-modality embeddings into one vector, ignoring absent modalities.

Every module is built with ``in_dims`` (modality name -> embedding size; its order fixes the modality order)
and ``out_dim``, and is called as ``module(embeddings, present)`` with

- ``embeddings``: ``{name: Tensor (B, D_m)}``; rows of absent modalities may hold anything (NaN included),
- ``present``: ``{name: Tensor (B,) bool}``; a modality missing from the dict counts as present in every row,

returning :class:`FusionOutput` ``(embedding (B, out_dim), weights {name: (B,)} or None)``. Absent modalities
never reach the output: they are zeroed and flagged (``concat``), get zero gate weight with the others
renormalised (``gated_attention``), contribute the identity factor through the appended 1
(``kronecker``), or are masked out of attention (``cross_attention``). A row with a single present modality
works in all of them; a row with none gives a finite embedding and zero weights (the model refuses such rows).

Every module also takes ``linear_skip`` (default True): a linear map of ``[h_1 * p_1, ..., h_M * p_M]`` (absent
modalities zeroed) is added to the fused embedding, so a linear model of the inputs passes through fusion
unchanged (see :mod:`fusion.models.tabular`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from fusion.models.registry import register_fusion


class FusionOutput(NamedTuple):
    """Fused embedding ``(B, out_dim)`` and per-modality weights ``{name: (B,)}`` (None if not meaningful)."""

    embedding: Tensor
    weights: dict[str, Tensor] | None


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax of ``scores`` over ``dim`` restricted to ``mask``; masked entries and all-masked rows get 0."""
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.where(mask, torch.softmax(filled, dim=dim), torch.zeros((), dtype=scores.dtype, device=scores.device))


class GatedAttentionPool(nn.Module):
    """Gated attention pooling (Ilse et al., 2018) of ``(B, N, D)`` instances with mask ``(B, N)``.

    ``a_n = softmax_n(w^T (tanh(V h_n) * sigmoid(U h_n)))`` over valid instances; returns
    ``(sum_n a_n h_n, a)``.
    """

    def __init__(self, in_dim: int, attention_dim: int = 128) -> None:
        super().__init__()
        self.v = nn.Linear(in_dim, attention_dim)
        self.u = nn.Linear(in_dim, attention_dim)
        self.w = nn.Linear(attention_dim, 1)

    def forward(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Pool ``h (B, N, D)`` over valid ``mask (B, N)`` -> ``(pooled (B, D), weights (B, N))``."""
        h = torch.where(mask.unsqueeze(-1), h, torch.zeros((), dtype=h.dtype, device=h.device))
        scores = self.w(torch.tanh(self.v(h)) * torch.sigmoid(self.u(h))).squeeze(-1)
        weights = masked_softmax(scores, mask)
        return torch.einsum("bn,bnd->bd", weights, h), weights


class _FusionBase(nn.Module):
    """Shared input checks; subclasses implement ``fuse(h (B, M, ...) list, present (B, M))``."""

    def __init__(self, in_dims: dict[str, int], out_dim: int, linear_skip: bool = True) -> None:
        super().__init__()
        if not in_dims:
            raise ValueError(f"{type(self).__name__}: in_dims must name at least one modality")
        self.in_dims = {str(k): int(v) for k, v in in_dims.items()}
        self.names = list(self.in_dims)
        self.out_dim = int(out_dim)
        self.skip = nn.Linear(sum(self.in_dims.values()), self.out_dim, bias=False) if linear_skip else None

    def _with_skip(self, fused: Tensor, hs: list[Tensor]) -> Tensor:
        """``fused (B, out_dim)`` plus the linear skip of the zero-filled embeddings (when enabled)."""
        return fused if self.skip is None else fused + self.skip(torch.cat(hs, dim=1))

    def _inputs(self, embeddings: dict[str, Tensor], present: dict[str, Tensor]) -> tuple[list[Tensor], Tensor]:
        """Embeddings in modality order with absent rows zeroed, and the presence matrix ``(B, M)``."""
        missing = [n for n in self.names if n not in embeddings]
        if missing:
            raise ValueError(f"{type(self).__name__}: embeddings lack modalities {missing}; expected {self.names}")
        b = embeddings[self.names[0]].shape[0]
        cols, hs = [], []
        for name in self.names:
            e = embeddings[name]
            if e.shape != (b, self.in_dims[name]):
                raise ValueError(
                    f"{type(self).__name__}: embedding {name!r} has shape {tuple(e.shape)}, "
                    f"expected {(b, self.in_dims[name])}"
                )
            p = present.get(name)
            p = torch.ones(b, dtype=torch.bool, device=e.device) if p is None else p.bool().reshape(b)
            cols.append(p)
            hs.append(torch.where(p.unsqueeze(1), e, torch.zeros((), dtype=e.dtype, device=e.device)))
        return hs, torch.stack(cols, dim=1)


class ConcatFusion(_FusionBase):
    """Concatenate ``[h_m * present_m, present_m]`` over modalities, then Linear -> GELU -> dropout.

    Presence flags let the layer tell "absent" from "embedding of zeros". No per-modality weights.
    """

    def __init__(self, in_dims: dict[str, int], out_dim: int = 128, dropout: float = 0.1,
                 linear_skip: bool = True) -> None:
        super().__init__(in_dims, out_dim, linear_skip)
        total = sum(self.in_dims.values()) + len(self.names)
        self.net = nn.Sequential(nn.Linear(total, self.out_dim), nn.GELU(), nn.Dropout(dropout))

    def forward(self, embeddings: dict[str, Tensor], present: dict[str, Tensor]) -> FusionOutput:
        """Fuse ``{name: (B, D_m)}`` -> :class:`FusionOutput` with ``weights=None``."""
        hs, p = self._inputs(embeddings, present)
        return FusionOutput(self._with_skip(self.net(torch.cat([*hs, p.to(hs[0].dtype)], dim=1)), hs), None)


class GatedAttentionFusion(_FusionBase):
    """Project each modality to ``out_dim`` and pool them by gated attention over present modalities.

    ``weights[name]`` (B,) sum to 1 over a row's present modalities and are 0 for absent ones.
    """

    def __init__(
        self, in_dims: dict[str, int], out_dim: int = 128, attention_dim: int = 64, dropout: float = 0.1,
        linear_skip: bool = True,
    ) -> None:
        super().__init__(in_dims, out_dim, linear_skip)
        self.proj = nn.ModuleDict(
            {
                n: nn.Sequential(nn.Linear(d, self.out_dim), nn.LayerNorm(self.out_dim), nn.GELU(), nn.Dropout(dropout))
                for n, d in self.in_dims.items()
            }
        )
        self.pool = GatedAttentionPool(self.out_dim, attention_dim)

    def forward(self, embeddings: dict[str, Tensor], present: dict[str, Tensor]) -> FusionOutput:
        """Fuse ``{name: (B, D_m)}`` -> :class:`FusionOutput` with per-modality gate weights."""
        hs, p = self._inputs(embeddings, present)
        z = torch.stack([self.proj[n](h) for n, h in zip(self.names, hs, strict=True)], dim=1)
        fused, w = self.pool(z, p)
        return FusionOutput(self._with_skip(fused, hs), {n: w[:, i] for i, n in enumerate(self.names)})


class KroneckerFusion(_FusionBase):
    """Tensor fusion (Zadeh et al., 2017): outer product of ``[1, z_m]`` over modalities, then Linear.

    Each modality is first projected to ``rank_dim`` (small: the product has ``(rank_dim + 1) ** M`` entries).
    An absent modality contributes ``[1, 0, ..., 0]``, the identity factor, so the product equals the one
    computed without it. No per-modality weights.
    """

    def __init__(self, in_dims: dict[str, int], out_dim: int = 128, rank_dim: int = 8, dropout: float = 0.1,
                 linear_skip: bool = True) -> None:
        super().__init__(in_dims, out_dim, linear_skip)
        size = (rank_dim + 1) ** len(self.names)
        if size > 1_000_000:
            raise ValueError(f"kronecker fusion: (rank_dim + 1) ** n_modalities = {size} is too large; lower rank_dim")
        self.proj = nn.ModuleDict(
            {n: nn.Sequential(nn.Linear(d, rank_dim), nn.Tanh()) for n, d in self.in_dims.items()}
        )
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(size, self.out_dim), nn.GELU())

    def forward(self, embeddings: dict[str, Tensor], present: dict[str, Tensor]) -> FusionOutput:
        """Fuse ``{name: (B, D_m)}`` -> :class:`FusionOutput` with ``weights=None``."""
        hs, p = self._inputs(embeddings, present)
        b = p.shape[0]
        product = torch.ones(b, 1, dtype=hs[0].dtype, device=hs[0].device)
        for i, (name, h) in enumerate(zip(self.names, hs, strict=True)):
            z = self.proj[name](h) * p[:, i : i + 1].to(h.dtype)
            factor = torch.cat([torch.ones_like(z[:, :1]), z], dim=1)
            product = torch.einsum("bi,bj->bij", product, factor).reshape(b, -1)
        return FusionOutput(self._with_skip(self.net(product), hs), None)


class _AttentionBlock(nn.Module):
    """Pre-norm transformer block that also returns head-averaged attention weights ``(B, L, L)``."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim))

    def forward(self, x: Tensor, key_padding_mask: Tensor) -> tuple[Tensor, Tensor]:
        y = self.norm1(x)
        out, attn = self.attn(y, y, y, key_padding_mask=key_padding_mask, need_weights=True)
        x = x + out
        return x + self.ff(self.norm2(x)), attn


class CrossAttentionFusion(_FusionBase):
    """Transformer over one token per modality (projection + modality embedding) plus a CLS token.

    Absent modalities are removed by the key-padding mask. ``weights[name]`` is the last layer's CLS attention
    on each modality token (heads averaged), renormalised over present modalities: a view of what the model
    looked at, not a faithful attribution.
    """

    def __init__(
        self,
        in_dims: dict[str, int],
        out_dim: int = 128,
        n_layers: int = 2,
        n_heads: int = 4,
        dropout: float = 0.1,
        linear_skip: bool = True,
    ) -> None:
        super().__init__(in_dims, out_dim, linear_skip)
        if self.out_dim % n_heads:
            raise ValueError(f"cross_attention fusion: n_heads={n_heads} must divide out_dim={self.out_dim}")
        self.proj = nn.ModuleDict({n: nn.Linear(d, self.out_dim) for n, d in self.in_dims.items()})
        self.modality_embedding = nn.Parameter(torch.randn(len(self.names), self.out_dim) * 0.02)
        self.cls = nn.Parameter(torch.randn(1, 1, self.out_dim) * 0.02)
        self.blocks = nn.ModuleList(_AttentionBlock(self.out_dim, n_heads, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(self.out_dim)

    def forward(self, embeddings: dict[str, Tensor], present: dict[str, Tensor]) -> FusionOutput:
        """Fuse ``{name: (B, D_m)}`` -> :class:`FusionOutput` with CLS attention weights per modality."""
        hs, p = self._inputs(embeddings, present)
        tokens = torch.stack([self.proj[n](h) for n, h in zip(self.names, hs, strict=True)], dim=1)
        x = torch.cat([self.cls.expand(p.shape[0], -1, -1), tokens + self.modality_embedding], dim=1)
        keep = torch.cat([torch.ones_like(p[:, :1]), p], dim=1)
        attn = torch.zeros(x.shape[0], x.shape[1], x.shape[1], dtype=x.dtype, device=x.device)
        for block in self.blocks:
            x, attn = block(x, ~keep)
        cls_attn = attn[:, 0, 1:] * p.to(x.dtype)
        cls_attn = cls_attn / cls_attn.sum(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
        fused = self._with_skip(self.norm(x[:, 0]), hs)
        return FusionOutput(fused, {n: cls_attn[:, i] for i, n in enumerate(self.names)})


def modality_dropout(
    present: dict[str, Tensor], p: float, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """Drop each present modality of each row with probability ``p``, never the last present one.

    Args:
        present: ``{name: (B,) bool}``.
        p: drop probability in ``[0, 1]``.
        generator: torch RNG (on the tensors' device) for reproducibility; None uses the global RNG.

    Returns:
        A new ``{name: (B,) bool}``; rows with at least one present modality keep at least one (a random one
        among those the draw would have dropped). Rows with none stay empty.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"modality_dropout: p must be in [0, 1], got {p}")
    names = list(present)
    if not names or p == 0.0:
        return dict(present)
    mat = torch.stack([present[n].bool() for n in names], dim=1)
    u = torch.rand(mat.shape, generator=generator, device=mat.device)
    keep = mat & (u >= p)
    emptied = mat.any(dim=1) & ~keep.any(dim=1)
    rescue = torch.where(mat, u, torch.full_like(u, -1.0)).argmax(dim=1)
    keep[emptied, rescue[emptied]] = True
    return {n: keep[:, i] for i, n in enumerate(names)}


@register_fusion("concat")
def concat(in_dims: dict[str, int], **kwargs: object) -> ConcatFusion:
    """Concatenation + presence flags (see :class:`ConcatFusion`)."""
    return ConcatFusion(in_dims, **kwargs)


@register_fusion("gated_attention")
def gated_attention(in_dims: dict[str, int], **kwargs: object) -> GatedAttentionFusion:
    """Gated attention over present modalities (see :class:`GatedAttentionFusion`)."""
    return GatedAttentionFusion(in_dims, **kwargs)


@register_fusion("kronecker")
def kronecker(in_dims: dict[str, int], **kwargs: object) -> KroneckerFusion:
    """Tensor (outer-product) fusion with appended 1s (see :class:`KroneckerFusion`)."""
    return KroneckerFusion(in_dims, **kwargs)


@register_fusion("cross_attention")
def cross_attention(in_dims: dict[str, int], **kwargs: object) -> CrossAttentionFusion:
    """Transformer over modality tokens + CLS (see :class:`CrossAttentionFusion`)."""
    return CrossAttentionFusion(in_dims, **kwargs)
