"""The multimodal model: per-modality encoders -> fusion -> diagnosis / survival / response heads.

A batch is a dict::

    {"modalities": {name: Tensor},            # image (B, C, H, W) / (B, S, C, H, W), tabular (B, F)
     "masks": {name: Tensor},                 # optional: (B, S) slice / (B, F) observed mask, True = valid
     "present": {name: Tensor (B,) bool},     # optional: modality available for the row (default: all True)
     "treatment": Tensor (B,) long}           # optional: treatment index, -1 = unknown

A modality left out of ``"modalities"`` is absent in every row. Each encoder only sees the rows where its
modality is present, so padding rows never touch batch-norm statistics or the output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fusion.models.fusion import modality_dropout
from fusion.models.heads import DiagnosisHead, ResponseHead, SurvivalHead
from fusion.models.offset import RiskOffset

# The response link's weight is RESPONSE_LINK_SCALE * response_weight. Adam moves a parameter by about the
# learning rate per step, so an unscaled weight could not leave 0 by more than ~0.2 in a few hundred steps
# (quality_synth: it ended at -0.02 and +0.03, where the generator's effect is -2.2 per unit of probability).
RESPONSE_LINK_SCALE = 10.0


@dataclass(frozen=True)
class HeadsConfig:
    """Which heads to build.

    Attributes:
        n_classes: diagnosis classes (>= 2); None builds no diagnosis head.
        survival: build the Cox log-risk head.
        n_treatments: candidate treatments; None builds no response head.
        diagnosis_modalities: the modalities the diagnosis head reads (None: all). The others count as
            absent for it, so data recorded at diagnosis (staging, the biopsy's genomics) cannot give the
            diagnosis away while the survival and response heads still use it.
        survival_modalities: the modalities the survival head reads (None: all), the same way. The risk
            offset's terms are added for every modality it covers, read by the head or not.
        response_link: add ``w * p(response | treatment)`` (the response head's probability for the row's
            treatment; ``w = RESPONSE_LINK_SCALE * response_weight``, learned, starting at 0) to the log-risk
            of rows with a treatment; needs the survival and response heads.
        hidden_dim: hidden width of the diagnosis and survival heads (None = linear heads).
        response_hidden_dim: hidden width of the response head's per-treatment readouts (None = linear).
        dropout: dropout inside the heads.
    """

    n_classes: int | None = None
    survival: bool = True
    n_treatments: int | None = None
    diagnosis_modalities: tuple[str, ...] | None = None
    survival_modalities: tuple[str, ...] | None = None
    response_link: bool = False
    hidden_dim: int | None = None
    response_hidden_dim: int | None = 64
    dropout: float = 0.0


class FusionModel(nn.Module):
    """Encoders + fusion + heads.

    Args:
        encoders: ``{modality: encoder}``; each encoder has ``out_dim`` and is called ``encoder(x, mask)``.
        fusion: a fusion module whose ``in_dims`` equal ``{modality: encoder.out_dim}``.
        heads: :class:`HeadsConfig` or a dict of its fields.
        modality_dropout: in training mode, drop each present modality of a row with this probability
            (never the row's last one).
        offset: a fixed linear log-risk term over the tabular inputs (:mod:`fusion.models.offset`), added to
            the survival head's output for the modalities present in a row; None = none.
    """

    def __init__(
        self,
        encoders: dict[str, nn.Module],
        fusion: nn.Module,
        heads: HeadsConfig | dict,
        *,
        modality_dropout: float = 0.0,
        offset: RiskOffset | None = None,
    ) -> None:
        super().__init__()
        heads = heads if isinstance(heads, HeadsConfig) else HeadsConfig(**heads)
        dims = {name: int(enc.out_dim) for name, enc in encoders.items()}
        if getattr(fusion, "in_dims", None) != dims:
            raise ValueError(
                f"FusionModel: fusion.in_dims {getattr(fusion, 'in_dims', None)} must equal the "
                f"encoders' out_dims {dims}; build the fusion with in_dims={dims}"
            )
        if not 0.0 <= modality_dropout < 1.0:
            raise ValueError(f"FusionModel: modality_dropout must be in [0, 1), got {modality_dropout}")
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion
        for field in ("diagnosis_modalities", "survival_modalities"):
            reads = getattr(heads, field)
            if reads is not None and (not reads or set(reads) - set(encoders)):
                raise ValueError(
                    f"FusionModel: {field} {list(reads)} must be a non-empty subset of the encoders {sorted(encoders)}"
                )
        self.heads_config = heads
        self.modality_dropout = modality_dropout
        d, kw = fusion.out_dim, {"hidden_dim": heads.hidden_dim, "dropout": heads.dropout}
        self.diagnosis = DiagnosisHead(d, heads.n_classes, **kw) if heads.n_classes is not None else None
        self.survival = SurvivalHead(d, **kw) if heads.survival else None
        self.response = (
            ResponseHead(d, heads.n_treatments, hidden_dim=heads.response_hidden_dim, dropout=heads.dropout)
            if heads.n_treatments is not None else None
        )
        if heads.response_link and (self.survival is None or self.response is None):
            raise ValueError("FusionModel: response_link needs the survival and the response head")
        self.response_weight = nn.Parameter(torch.zeros(())) if heads.response_link else None
        if offset is not None and (self.survival is None or not set(offset.n_features) <= set(encoders)):
            raise ValueError(f"FusionModel: a risk offset needs the survival head and its modalities "
                             f"{sorted(offset.n_features)} among the encoders {sorted(encoders)}")
        self.offset = offset

    def embed(self, batch: dict) -> dict:
        """Encode and fuse: ``{"embedding" (B, D), "modality_weights", "slice_attention", "present",
        "modality_embeddings", "offset_terms"}`` (``offset_terms``: see :meth:`offset_terms`)."""
        modalities, masks = batch["modalities"], batch.get("masks") or {}
        unknown = set(modalities) - set(self.encoders)
        if unknown:
            raise ValueError(
                f"FusionModel: batch has modalities {sorted(unknown)} without an encoder; "
                f"known: {sorted(self.encoders)}"
            )
        if not modalities:
            raise ValueError("FusionModel: batch['modalities'] is empty")
        first = next(iter(modalities.values()))
        b, device = first.shape[0], first.device
        present = {}
        for name in self.encoders:
            p = (batch.get("present") or {}).get(name)
            if name not in modalities:
                if p is not None and p.any():
                    raise ValueError(
                        f"FusionModel: present[{name!r}] is True for some rows but the batch has no tensor for it"
                    )
                p = torch.zeros(b, dtype=torch.bool, device=device)
            elif p is None:
                p = torch.ones(b, dtype=torch.bool, device=device)
            present[name] = p.bool().reshape(b).to(device)
        if self.training and self.modality_dropout > 0:
            present = modality_dropout(present, self.modality_dropout)
        empty = ~torch.stack(list(present.values()), dim=1).any(dim=1)
        if empty.any():
            rows = empty.nonzero().squeeze(1).tolist()[:10]
            raise ValueError(
                f"FusionModel: batch rows {rows} have no modality present; drop such patients during cohort assembly"
            )
        embeddings, slice_attention = {}, {}
        for name, enc in self.encoders.items():
            emb = torch.zeros(b, enc.out_dim, device=device)
            idx = present[name].nonzero().squeeze(1)
            if idx.numel() > 0:
                x = modalities[name].index_select(0, idx)
                mask = masks.get(name)
                mask = None if mask is None else mask.index_select(0, idx)
                if hasattr(enc, "forward_with_attention"):
                    sub, attn = enc.forward_with_attention(x, mask)
                    full = torch.zeros(b, attn.shape[1], dtype=attn.dtype, device=device)
                    slice_attention[name] = full.index_copy(0, idx, attn)
                else:
                    sub = enc(x, mask)
                emb = emb.to(sub.dtype).index_copy(0, idx, sub)
            embeddings[name] = emb
        fused, weights = self.fusion(embeddings, present)
        return {
            "embedding": fused,
            "modality_weights": weights,
            "slice_attention": slice_attention,
            "present": present,
            "modality_embeddings": embeddings,
            "offset_terms": self.offset_terms(modalities, masks),
        }

    def offset_terms(self, modalities: dict[str, Tensor], masks: dict[str, Tensor]) -> dict[str, Tensor]:
        """The risk offset's per-modality contributions ``{name: (B,)}`` (empty without an offset)."""
        return {} if self.offset is None else self.offset.terms(modalities, masks)

    def log_risk(self, z: Tensor, offset_terms: dict[str, Tensor], present: dict[str, Tensor],
                 response_prob: Tensor | None = None) -> Tensor:
        """Log-risk ``(B,)`` from the fused embedding ``z (B, D)`` plus the offset terms of the modalities
        ``present`` in each row and, with ``response_link``, ``w * response_prob`` (``(B,)``: see
        :meth:`treated_response_prob`; NaN rows get no term)."""
        risk = self.survival(z)
        for name, term in offset_terms.items():
            risk = risk + term.to(risk.dtype) * present[name].to(risk.dtype)
        if self.response_weight is not None:
            if response_prob is None:
                raise ValueError("FusionModel.log_risk: the model links response to survival; pass response_prob")
            prob = response_prob.to(risk.dtype)
            prob = torch.where(torch.isnan(prob), torch.zeros_like(prob), prob)
            risk = risk + RESPONSE_LINK_SCALE * self.response_weight * prob
        return risk

    def treated_response_prob(self, z: Tensor, treatment: Tensor | None) -> Tensor | None:
        """``p(response | treatment)`` ``(B,)`` from the response head for each row's treatment index
        (NaN where it is -1), or None when the model has no response link."""
        logits = self._linked_response_logits(z, treatment)
        return None if logits is None else torch.sigmoid(logits)

    def _linked_response_logits(self, z: Tensor, treatment: Tensor | None) -> Tensor | None:
        """The response head's logits ``(B,)`` for each row's treatment when the model has the response link
        (NaN where the treatment is -1), else None."""
        if self.response_weight is None:
            return None
        if treatment is None:
            raise ValueError("FusionModel: the model links response to survival; the batch needs 'treatment'")
        return self.response(z, treatment.to(z.device))

    def survival_log_risk(self, embeddings: dict[str, Tensor], present: dict[str, Tensor],
                          offset_terms: dict[str, Tensor], treatment: Tensor | None = None) -> Tensor:
        """Log-risk ``(B,)`` from per-modality embeddings ``{name: (B, D)}`` (what :meth:`forward` computes
        from a batch); ``treatment (B,)`` is needed with ``response_link``."""
        prob = None
        if self.response_weight is not None:
            prob = self.treated_response_prob(self.fusion(embeddings, present)[0], treatment)
        return self.log_risk(self.survival_fused(embeddings, present), offset_terms, present, prob)

    def diagnosis_fused(self, embeddings: dict[str, Tensor], present: dict[str, Tensor]) -> Tensor:
        """The fused embedding ``(B, D)`` the diagnosis head reads (see :meth:`fused_of`)."""
        return self.fused_of(embeddings, present, self.heads_config.diagnosis_modalities)

    def survival_fused(self, embeddings: dict[str, Tensor], present: dict[str, Tensor]) -> Tensor:
        """The fused embedding ``(B, D)`` the survival head reads (see :meth:`fused_of`)."""
        return self.fused_of(embeddings, present, self.heads_config.survival_modalities)

    def fused_of(self, embeddings: dict[str, Tensor], present: dict[str, Tensor],
                 reads: tuple[str, ...] | None) -> Tensor:
        """The fusion of the modalities in ``reads`` only (zeros for rows with none of them), or of all."""
        if reads is None:
            return self.fusion(embeddings, present)[0]
        present = _restrict(present, reads)
        rows = torch.stack(list(present.values()), dim=1).any(dim=1).nonzero().squeeze(1)
        first = next(iter(embeddings.values()))
        z = torch.zeros(first.shape[0], self.fusion.out_dim, dtype=first.dtype, device=first.device)
        if rows.numel() > 0:
            sub = {name: e.index_select(0, rows) for name, e in embeddings.items()}
            fused, _ = self.fusion(sub, {name: p.index_select(0, rows) for name, p in present.items()})
            z = z.index_copy(0, rows, fused.to(z.dtype))
        return z

    def diagnosis_embedding(self, out: dict) -> Tensor:
        """:meth:`diagnosis_fused` from :meth:`embed`'s output (no second fusion when unrestricted)."""
        if self.heads_config.diagnosis_modalities is None:
            return out["embedding"]
        return self.diagnosis_fused(out["modality_embeddings"], out["present"])

    def survival_embedding(self, out: dict) -> Tensor:
        """:meth:`survival_fused` from :meth:`embed`'s output (no second fusion when unrestricted)."""
        if self.heads_config.survival_modalities is None:
            return out["embedding"]
        return self.survival_fused(out["modality_embeddings"], out["present"])

    def forward(self, batch: dict) -> dict:
        """Run the model. Returns the :meth:`embed` outputs plus, per configured head,
        ``"diagnosis_logits"`` (B, C), ``"log_risk"`` (B,) (higher = higher hazard) and ``"response_logits"``
        (B,) for ``batch["treatment"]`` (only when the batch has one; NaN where the treatment is -1)."""
        out = self.embed(batch)
        z = out["embedding"]
        if self.diagnosis is not None:
            out["diagnosis_logits"] = self.diagnosis(self.diagnosis_embedding(out))
        linked = self._linked_response_logits(z, batch.get("treatment"))  # None without the response link
        if self.survival is not None:
            out["log_risk"] = self.log_risk(self.survival_embedding(out), out["offset_terms"], out["present"],
                                            None if linked is None else torch.sigmoid(linked))
        if self.response is not None and batch.get("treatment") is not None:  # with the link: the same pass
            out["response_logits"] = linked if linked is not None else self.response(z, batch["treatment"].to(z.device))
        return out

    def response_all(self, batch: dict, n_treatments: int | None = None) -> Tensor:
        """Response logits for every candidate treatment ``(B, n_treatments)`` from one encoder pass."""
        if self.response is None:
            raise ValueError("FusionModel.response_all: the model has no response head (heads.n_treatments=None)")
        if n_treatments is not None and n_treatments != self.response.n_treatments:
            raise ValueError(
                f"FusionModel.response_all: n_treatments={n_treatments} but the head was built for "
                f"{self.response.n_treatments}"
            )
        return self.response.all_treatments(self.embed(batch)["embedding"])


def _restrict(present: dict[str, Tensor], reads: tuple[str, ...] | None) -> dict[str, Tensor]:
    """``present`` with the modalities outside ``reads`` marked absent (``reads`` None: unchanged)."""
    if reads is None:
        return present
    return {name: p if name in reads else torch.zeros_like(p) for name, p in present.items()}
