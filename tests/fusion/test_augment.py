"""Image augmentation: shapes, the same transform for all slices of a sample, and the transforms themselves."""

from __future__ import annotations

import pytest
import torch

from fusion.augment import augment_images


def test_none_returns_the_batch_untouched():
    images = torch.randn(3, 2, 1, 8, 8)
    assert augment_images(images, "none") is images


@pytest.mark.parametrize("mode", ["flip", "flip_rot90"])
def test_each_sample_is_one_of_its_dihedral_images_and_slices_move_together(mode):
    images = torch.arange(4 * 3 * 1 * 6 * 6, dtype=torch.float32).reshape(4, 3, 1, 6, 6)
    out = augment_images(images, mode, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    for sample, result in zip(images, out, strict=True):
        candidates = []
        for k in range(4 if mode == "flip_rot90" else 1):
            for flip in ((), (-1,), (-2,), (-2, -1)):
                variant = sample.flip(flip) if flip else sample
                candidates.append(variant.rot90(k, dims=(-2, -1)))
        assert any(torch.equal(result, c) for c in candidates)  # one transform for the whole series


def test_transforms_vary_across_samples_and_rot90_only_when_asked():
    images = torch.arange(64 * 36, dtype=torch.float32).reshape(64, 1, 1, 6, 6).clone()
    images[:] = images[0]  # 64 copies of one asymmetric image
    flipped = augment_images(images, "flip", torch.Generator().manual_seed(1))
    rotated = augment_images(images, "flip_rot90", torch.Generator().manual_seed(1))
    assert len({tuple(x.flatten().tolist()) for x in flipped}) == 4
    assert len({tuple(x.flatten().tolist()) for x in rotated}) == 8
    with pytest.raises(ValueError, match="unknown image augmentation"):
        augment_images(images, "mixup")
