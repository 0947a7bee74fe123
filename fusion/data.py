"""Torch side of a cohort: tabular normalisation, a Dataset with lazily loaded images, and the batch collate.

A batch (see :mod:`fusion.models.model`)::

    {"modalities": {"ehr": (B, F) float32, ..., "image": (B, S, C, H, W) float32},
     "masks":      {"ehr": (B, F) bool (True = observed), ..., "image": (B, S) bool (True = real slice)},
     "present":    {name: (B,) bool},
     "treatment":  (B,) long (-1 = none),
     "targets":    {"diagnosis": (B,) long (-1 = unknown), "time": (B,) float32 days (NaN = unknown),
                    "event": (B,) bool, "response": (B,) float32 (NaN = unknown),
                    "aux_time", "aux_event": the auxiliary survival endpoint, only with ``aux_endpoint``},
     "rows":       (B,) long, the cohort row of each sample}

Absent modalities have zero tensors and all-False masks; an image modality absent from every row of a batch is
left out of ``modalities`` altogether.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as nnf
from torch.utils.data import Dataset

from fusion.cohort import Cohort


@dataclass
class Normalizer:
    """Per-feature mean and standard deviation of each tabular block, from the training rows only."""

    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]

    @classmethod
    def fit(cls, cohort: Cohort, rows: np.ndarray) -> Normalizer:
        """Statistics over ``rows`` of each block (NaN ignored; constant columns get std 1). A column no row
        observes gets std NaN: the model learns nothing from it, so its values stay missing for every patient
        (fed raw, a later patient's value would meet weights no gradient reached)."""
        mean, std = {}, {}
        for name, block in cohort.blocks.items():
            values = block.values[rows].astype(np.float64)
            observed = ~np.isnan(values)
            count = observed.sum(axis=0)
            m = np.where(count > 0, np.nansum(values, axis=0) / np.maximum(count, 1), 0.0)
            var = np.where(count > 1, np.nansum((values - m) ** 2, axis=0) / np.maximum(count - 1, 1), 1.0)
            s = np.sqrt(var)
            mean[name] = m.astype(np.float32)
            std[name] = np.where(count > 0, np.where(s > 1e-8, s, 1.0), np.nan).astype(np.float32)
        return cls(mean, std)

    def apply(self, name: str, values: np.ndarray) -> np.ndarray:
        """``(values - mean) / std`` for block ``name``; NaN stays NaN, and so is every value of a column whose
        std is NaN (see :meth:`fit`)."""
        return ((values - self.mean[name]) / self.std[name]).astype(np.float32)

    def to_dict(self) -> dict:
        return {n: {"mean": self.mean[n].tolist(), "std": self.std[n].tolist()} for n in self.mean}

    @classmethod
    def from_dict(cls, state: dict) -> Normalizer:
        return cls({n: np.asarray(v["mean"], np.float32) for n, v in state.items()},
                   {n: np.asarray(v["std"], np.float32) for n, v in state.items()})


def image_to_series(array: np.ndarray, *, in_chans: int, max_slices: int | None = None,
                    image_size: int | None = None) -> torch.Tensor:
    """An image array from the lake as a series ``(S, C, H, W)`` float32.

    ``(H, W)`` -> one slice; ``(C, H, W)`` with ``C == in_chans > 1`` -> one multi-channel image; other 3D
    arrays are series ``(S, H, W)`` of single-channel slices (replicated when ``in_chans > 1``); ``(S, C, H, W)``
    is kept. Longer series are evenly subsampled to ``max_slices``; slices are resized (bilinear) to
    ``image_size`` when given.
    """
    # The lake's tensors are read-only memory maps: copy into a writable float32 array once.
    x = torch.from_numpy(np.array(array, dtype=np.float32, copy=True))
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        x = x[None] if (in_chans > 1 and x.shape[0] == in_chans) else x[:, None]
    elif x.ndim != 4:
        raise ValueError(f"image tensor of shape {tuple(x.shape)}: expected (H, W), (C, H, W), (S, H, W) or "
                         "(S, C, H, W)")
    if x.shape[1] != in_chans:
        if x.shape[1] != 1:
            raise ValueError(f"image has {x.shape[1]} channels but the image encoder has in_chans={in_chans}; "
                             "set modalities.image.encoder_kwargs.in_chans")
        x = x.expand(-1, in_chans, -1, -1)
    if max_slices is not None and x.shape[0] > max_slices:
        x = x[np.linspace(0, x.shape[0] - 1, max_slices).round().astype(int)]
    if image_size is not None and tuple(x.shape[-2:]) != (image_size, image_size):
        x = nnf.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return x.contiguous()


class CohortDataset(Dataset):
    """Samples of ``cohort`` at ``rows``: normalised tabular blocks, a lazily loaded image, targets.

    Args:
        cohort: the assembled cohort.
        rows: ``(n,)`` cohort row indices.
        normalizer: statistics of the training rows.
        in_chans: channels expected by the image encoder.
        max_slices, image_size: see :func:`image_to_series`.
        aux_endpoint: ``"os"`` or ``"pfs"``: also give that endpoint's time and event (``aux_time``,
            ``aux_event``), the target of ``tasks.survival.auxiliary_endpoint``; None: not.
    """

    def __init__(self, cohort: Cohort, rows: np.ndarray, normalizer: Normalizer, *, in_chans: int = 1,
                 max_slices: int | None = None, image_size: int | None = None,
                 aux_endpoint: str | None = None) -> None:
        self.cohort = cohort
        targets = cohort.targets
        self.aux = (None if aux_endpoint is None
                    else (getattr(targets, f"{aux_endpoint}_time"), getattr(targets, f"{aux_endpoint}_event")))
        self.rows = np.asarray(rows, dtype=np.int64)
        self.tabular = {n: normalizer.apply(n, b.values) for n, b in cohort.blocks.items()}
        self.in_chans, self.max_slices, self.image_size = in_chans, max_slices, image_size
        if cohort.images is not None and cohort.images.present[self.rows].any() and cohort.image_loader is None:
            raise ValueError("the cohort references images but has no image loader (LakeFrames.image_loader)")

    def __len__(self) -> int:
        return self.rows.size

    def __getitem__(self, i: int) -> dict:
        row = int(self.rows[i])
        c, t = self.cohort, self.cohort.targets
        item = {"row": row, "tabular": {n: v[row] for n, v in self.tabular.items()},
                "present": {n: bool(b.present[row]) for n, b in c.blocks.items()},
                "treatment": int(t.treatment[row]), "diagnosis": int(t.diagnosis[row]),
                "time": float(t.time[row]), "event": bool(t.event[row]), "response": float(t.response[row])}
        if self.aux is not None:
            item["aux_time"], item["aux_event"] = float(self.aux[0][row]), bool(self.aux[1][row])
        if c.images is not None:
            present = bool(c.images.present[row])
            item["present"]["image"] = present
            item["image"] = (image_to_series(c.image_loader(str(c.images.tensor_file[row]),
                                                            int(c.images.tensor_row[row])),
                                             in_chans=self.in_chans, max_slices=self.max_slices,
                                             image_size=self.image_size) if present else None)
        return item


# a mean of fewer images could show one patient's image (it is theirs exactly when only they have one)
MIN_REFERENCE_PATIENTS = 10


def mean_image(dataset: CohortDataset, min_patients: int = MIN_REFERENCE_PATIENTS) -> torch.Tensor | None:
    """The mean model input image of the dataset's patients with an image, slice position by slice position:
    ``(S, C, H, W)``, ``S`` the longest series that ``min_patients`` series reach (a position only some series
    reach is their mean there; positions fewer reach are left out); None when fewer than ``min_patients``
    patients have an image. The reference of :func:`fusion.explain.image_attribution`."""
    c = dataset.cohort
    rows = dataset.rows[c.images.present[dataset.rows]] if c.images is not None else dataset.rows[:0]
    if rows.size < max(min_patients, 1):
        return None
    total, count = None, None
    for row in rows:
        image = image_to_series(c.image_loader(str(c.images.tensor_file[row]), int(c.images.tensor_row[row])),
                                in_chans=dataset.in_chans, max_slices=dataset.max_slices,
                                image_size=dataset.image_size).double()
        if total is None:
            total, count = torch.zeros_like(image), torch.zeros(image.shape[0], dtype=torch.float64)
        if image.shape[1:] != total.shape[1:]:
            raise ValueError(f"images of different sizes {tuple(image.shape[1:])} and {tuple(total.shape[1:])}; "
                             "set data.images.image_size")
        if image.shape[0] > total.shape[0]:
            total = torch.cat([total, torch.zeros(image.shape[0] - total.shape[0], *total.shape[1:],
                                                  dtype=torch.float64)])
            count = torch.cat([count, torch.zeros(image.shape[0] - count.shape[0], dtype=torch.float64)])
        total[: image.shape[0]] += image
        count[: image.shape[0]] += 1
    kept = int((count >= min_patients).sum())  # the counts fall with the position: the first ``kept``
    return (total[:kept] / count[:kept].view(-1, 1, 1, 1)).float()


def collate(items: list[dict]) -> dict:
    """Stack samples of :class:`CohortDataset` into a batch (see the module docstring)."""
    modalities, masks = {}, {}
    for name in items[0]["tabular"]:
        x = torch.as_tensor(np.stack([it["tabular"][name] for it in items]))
        observed = ~torch.isnan(x)
        modalities[name], masks[name] = torch.nan_to_num(x, nan=0.0), observed
    present = {name: torch.tensor([it["present"][name] for it in items]) for name in items[0]["present"]}
    if "image" in items[0]:
        images = [it["image"] for it in items]
        shown = [im for im in images if im is not None]
        if shown:
            modalities["image"], masks["image"] = _pad_series(images, shown)
        else:
            del present["image"]
    targets = {"diagnosis": torch.tensor([it["diagnosis"] for it in items], dtype=torch.long),
               "time": torch.tensor([it["time"] for it in items], dtype=torch.float32),
               "event": torch.tensor([it["event"] for it in items], dtype=torch.bool),
               "response": torch.tensor([it["response"] for it in items], dtype=torch.float32)}
    if "aux_time" in items[0]:
        targets["aux_time"] = torch.tensor([it["aux_time"] for it in items], dtype=torch.float32)
        targets["aux_event"] = torch.tensor([it["aux_event"] for it in items], dtype=torch.bool)
    return {
        "modalities": modalities, "masks": masks, "present": present,
        "treatment": torch.tensor([it["treatment"] for it in items], dtype=torch.long),
        "targets": targets,
        "rows": torch.tensor([it["row"] for it in items], dtype=torch.long),
    }


def _pad_series(images: list[torch.Tensor | None], shown: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad series to the longest: ``(B, S, C, H, W)`` and slice mask ``(B, S)``."""
    shapes = {tuple(im.shape[1:]) for im in shown}
    if len(shapes) > 1:
        raise ValueError(f"images of different sizes {sorted(shapes)} in one batch; set data.images.image_size")
    c, h, w = shown[0].shape[1:]
    s = max(im.shape[0] for im in shown)
    out = torch.zeros(len(images), s, c, h, w)
    mask = torch.zeros(len(images), s, dtype=torch.bool)
    for i, im in enumerate(images):
        if im is not None:
            out[i, : im.shape[0]] = im
            mask[i, : im.shape[0]] = True
    return out, mask


def drop_modalities(batch: dict, drop: Iterable[str]) -> dict:
    """The batch with the modalities in ``drop`` marked absent in every row (their tensors removed)."""
    drop = set(drop)
    if not drop:  # the training loop's usual case
        return batch
    out = dict(batch)
    out["modalities"] = {k: v for k, v in batch["modalities"].items() if k not in drop}
    out["masks"] = {k: v for k, v in batch["masks"].items() if k not in drop}
    out["present"] = {k: v for k, v in batch["present"].items() if k not in drop}
    return out


def move_batch(batch: dict, device: torch.device) -> dict:
    """The batch with every tensor on ``device``."""
    if isinstance(batch, dict):
        return {k: move_batch(v, device) for k, v in batch.items()}
    return batch.to(device) if isinstance(batch, torch.Tensor) else batch
