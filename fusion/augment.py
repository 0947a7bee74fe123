"""Label-preserving augmentation of training image batches (on the collated tensor, per sample).

``flip``: each sample is mirrored left-right and/or up-down with probability 1/2 each; ``flip_rot90`` adds a
random multiple of 90 degrees (square images only). All slices of one sample get the same transform, so a CT
series stays a consistent volume. Use ``flip_rot90`` where orientation carries no label information (a nodule
on an axial CT slice), ``flip`` or ``none`` where it may (a chest X-ray's laterality).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Augment = Literal["none", "flip", "flip_rot90"]


def augment_images(images: Tensor, mode: Augment, generator: torch.Generator | None = None) -> Tensor:
    """``images (B, S, C, H, W)`` -> a transformed copy of the same shape (``mode="none"``: ``images``)."""
    if mode == "none":
        return images
    if mode not in ("flip", "flip_rot90"):
        raise ValueError(f"unknown image augmentation {mode!r}; use none, flip or flip_rot90")
    b = images.shape[0]
    draws = torch.randint(0, 4, (b, 3), generator=generator, device="cpu").tolist()
    out = []
    for sample, (lr, ud, quarter) in zip(images, draws, strict=True):
        if lr % 2:
            sample = sample.flip(-1)
        if ud % 2:
            sample = sample.flip(-2)
        if mode == "flip_rot90" and quarter and sample.shape[-1] == sample.shape[-2]:
            sample = sample.rot90(quarter, dims=(-2, -1))
        out.append(sample)
    return torch.stack(out)
