"""The two things an image reader hands back: a decoded :class:`Volume` or a :class:`Reject`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np


@dataclass
class Volume:
    """A decoded image with its source metadata, before preprocessing.

    Attributes:
        array: float32 intensities, shape ``(H, W)`` for a 2D image or ``(S, H, W)`` for a volume (slices in
            ascending position along the slice normal). CT is in Hounsfield units.
        spacing_mm: mm between samples along each array axis, same order as ``array.shape``
            (``(row, col)`` or ``(slice, row, col)``); ``None`` when the source does not say.
        orientation: direction cosines of the row and column directions in patient LPS coordinates
            (DICOM ``ImageOrientationPatient``, 6 values), ``None`` when unknown.
        image_id: stable key: the SeriesInstanceUID (DICOM) or a hash of the file path.
        patient_id: the patient identifier exactly as found in the source.
        source: first file (or the folder) the image came from.
        warnings: human-readable notes (gaps, inconsistent spacing, conversions); empty when none.
    """

    array: np.ndarray
    spacing_mm: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    image_id: str
    patient_id: str | None
    source: str
    n_files: int = 1
    modality: str | None = None
    body_part: str | None = None
    study_date: datetime | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def n_slices(self) -> int:
        return int(self.array.shape[0]) if self.array.ndim == 3 else 1


@dataclass(frozen=True)
class Reject:
    """Something that could not be ingested: ``source`` (file), ``location`` (row N, frame N, or None)."""

    source: str
    reason: str
    location: str | None = None
    raw: str | None = None  # the manifest row's text, for a manifest row

    def as_row(self) -> dict[str, str | None]:
        return {"source": self.source, "location": self.location, "reason": self.reason, "raw": self.raw,
                "modality": "images"}
