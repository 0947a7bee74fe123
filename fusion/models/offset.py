"""A fixed linear term of the log-risk over the tabular inputs: an *offset*, in GLM terms.

With ``tasks.survival.coxnet_offset`` the log-risk is ``survival_head(z) + sum_m present_m * o_m`` where, for each
tabular modality ``m``, ``o_m = [x_m, observed_m] @ w_m``: ``x_m (B, F_m)`` the normalised features (0 where
missing), ``observed_m`` their 0/1 observed mask. The weights come from an elastic-net Cox model fitted on the
training split, its penalty chosen on the validation split, before the network trains (:func:`fusion.train.fit`);
they are stored with the model and are never trained: the network learns what the images and non-linear terms
add to a penalised linear model, which on a few hundred patients ranks better than what gradient descent finds
on its own (see ``configs/full_fusion.yaml``).

A modality absent from a row contributes no term. That includes a modality removed by modality dropout in
training or left out at test time (ablations, leave-one-modality-out explanations): the model then predicts as
for a patient without it, although the weights were fitted with every patient's actual modalities.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fusion.models.tabular import observed_inputs


class RiskOffset(nn.Module):
    """Per tabular modality, the weights ``(2 * F_m,)`` of ``[x_m, observed_m]``, concatenated in the order of
    ``n_features`` in one buffer ``weights``.

    Args:
        n_features: ``{modality: F_m}`` for the tabular modalities; weights start at 0 (no offset).
    """

    def __init__(self, n_features: dict[str, int]) -> None:
        super().__init__()
        self.n_features = {name: int(n) for name, n in n_features.items()}
        ends = torch.cumsum(torch.tensor([0] + [2 * n for n in self.n_features.values()]), 0).tolist()
        self._slices = {name: slice(a, b) for name, a, b in zip(self.n_features, ends[:-1], ends[1:], strict=True)}
        self.register_buffer("weights", torch.zeros(ends[-1]))

    def weight(self, name: str) -> Tensor:
        """The weights ``(2 * F,)`` of modality ``name`` (a view): first the features', then the observed flags'."""
        return self.weights[self._slices[name]]

    def set_weights(self, weights: dict[str, Tensor]) -> None:
        """Replace the weights (``{modality: (2 * F,)}``, every modality of the offset)."""
        if set(weights) != set(self.n_features):
            raise ValueError(f"RiskOffset: weights for {sorted(weights)}, expected {sorted(self.n_features)}")
        for name, w in weights.items():
            self.weight(name).copy_(torch.as_tensor(w, dtype=torch.float32).reshape(-1))

    def terms(self, modalities: dict[str, Tensor], masks: dict[str, Tensor]) -> dict[str, Tensor]:
        """``{modality: (B,)}`` contributions of the offset's modalities found in ``modalities`` (``(B, F)``
        features, ``masks`` ``(B, F)`` True = observed), before the rows' presence is applied."""
        out = {}
        for name in self.n_features:
            if name in modalities:
                x, observed = observed_inputs(modalities[name], masks.get(name))
                w = self.weight(name).to(x.dtype)
                out[name] = x @ w[: x.shape[1]] + observed.to(x.dtype) @ w[x.shape[1]:]
        return out
