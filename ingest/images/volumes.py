"""Non-DICOM images: NIfTI volumes (nibabel) and PNG/JPEG/TIFF files (Pillow), listed in a manifest CSV.

Neither format carries a patient identifier, so every such file must appear in a manifest CSV with
columns ``path`` (relative to the CSV), ``patient_id`` and optionally ``study_date`` (ISO 8601) and
``modality``; other columns (labels) are ignored.

Array layout matches the DICOM reader: ``(S, H, W)`` for volumes, ``(H, W)`` for 2D images. A NIfTI's voxel
axes ``(i, j, k)`` become ``(k, j, i)`` (slice, row, col) without resampling; its orientation is the direction
of the ``i`` (row direction) and ``j`` (column direction) axes in patient LPS, like DICOM
ImageOrientationPatient. Slices ascend along the normal (row x column direction), as in a DICOM series: a
left-handed affine (``k`` against ``i x j``, as dcm2niix writes an axial series) has its ``j`` axis flipped,
which gives back the DICOM series' rows. A 4D NIfTI keeps its first volume (``[..., 0]``) and says so in the warnings.
Colour PNG/JPEG/TIFF images are converted to grey (ITU-R 601 luma); a multi-page TIFF becomes a volume.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ingest.images.records import Reject, Volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
RAS_TO_LPS = np.array([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class ManifestEntry:
    """One manifest row: the file (resolved), the patient and optional study date and modality."""

    path: Path
    patient_id: str
    study_date: datetime | None
    modality: str | None
    row: int
    manifest: Path


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def is_raster(path: Path) -> bool:
    return path.suffix.lower() in RASTER_SUFFIXES


def read_manifest(manifest: Path) -> tuple[list[ManifestEntry], list[Reject], set[Path]]:
    """Parse a manifest CSV; rows with a missing file or patient_id are rejected, the others returned.

    Row numbers count the header as row 1, as a spreadsheet shows them.

    Returns:
        ``(entries, rejects, named)``: ``named`` holds every existing file a row names, rejected rows' included
        (their files already have a reject).
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ValueError(f"manifest {manifest} not found; pass --manifest PATH.csv with columns path (relative to the"
                         " CSV), patient_id and optionally study_date, modality")
    with manifest.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        missing = {"path", "patient_id"} - columns
        if missing:
            raise ValueError(f"{manifest}: manifest lacks column(s) {sorted(missing)}; expected path,"
                             " patient_id and optionally study_date, modality")
        entries, rejects, named = [], [], set()
        listed: dict[Path, int] = {}  # file -> the row that lists it
        for number, row in enumerate(reader, start=2):
            location = f"row {number}"
            relative = (row.get("path") or "").strip()
            patient = (row.get("patient_id") or "").strip()
            file = (manifest.parent / relative).resolve()
            raw = ",".join(str(v) for v in row.values() if v is not None)

            def reject(reason: str, location: str = location, raw: str = raw) -> None:
                # the row is the reject's location, not part of its reason: rows with one problem share a reason
                rejects.append(Reject(str(manifest), reason, location, raw))

            date_text = (row.get("study_date") or "").strip()
            date = _parse_date(date_text)
            if relative and file.is_file():
                named.add(file)
            if not relative:
                reject("empty path")
            elif not file.is_file():
                reject(f"file {relative} not found (looked in {manifest.parent})")
            elif not patient:
                reject("empty patient_id")
            elif file in listed:
                reject(f"file {relative} is already listed on row {listed[file]}; list each file once (one image "
                       "belongs to one patient)")
            elif date_text and date is None:
                reject("study_date is not an ISO 8601 date (YYYY-MM-DD); see the reject's raw text")
            else:
                listed[file] = number
                modality = (row.get("modality") or "").strip() or None
                entries.append(ManifestEntry(file, patient, date, modality, number, manifest))
    return entries, rejects, named


def load_nifti(entry: ManifestEntry) -> tuple[Volume | None, list[Reject]]:
    """Read a NIfTI file into a :class:`Volume` ``(S, H, W)`` float32 (scl_slope/inter applied)."""
    import nibabel as nib

    warnings = []
    try:
        image = nib.load(str(entry.path))
        shape = image.shape
        if len(shape) > 4:
            return None, [_reject(entry, f"NIfTI with {len(shape)} dimensions; expected 2, 3 or 4")]
        if len(shape) == 4 and shape[3] > 1:  # (X, Y, Z, 1), as SPM and FSL write a 3D image, is no series
            warnings.append(f"4D NIfTI with {shape[3]} volumes: kept the first")
        data = np.asarray(image.dataobj[..., 0] if len(shape) == 4 else image.dataobj,  # the first volume only,
                          dtype=np.float32)  # not all of them as float32
    except Exception as exc:  # noqa: BLE001 (nibabel raises many types on damaged files)
        return None, [_reject(entry, f"unreadable NIfTI ({type(exc).__name__}: {exc})")]
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    while data.ndim < 3:
        data = data[..., None]
        zooms = (*zooms, 1.0)
    directions = image.affine[:3, :3] / np.linalg.norm(image.affine[:3, :3], axis=0)
    if np.linalg.det(directions) < 0:  # k runs against i x j (dcm2niix's LAS): rows in DICOM order, k along it
        data, directions = data[:, ::-1], directions * [1, -1, 1]
    array = np.ascontiguousarray(np.transpose(data, (2, 1, 0)))
    spacing = (zooms[2], zooms[1], zooms[0])
    orientation = tuple(float(v) for v in np.concatenate([directions[:, 0], directions[:, 1]]) * np.tile(
        RAS_TO_LPS, 2))
    if array.shape[0] == 1:
        array, spacing = array[0], spacing[1:]
    array = _finite(array, warnings)
    if isinstance(array, str):
        return None, [_reject(entry, array)]
    return _volume(entry, array, spacing, orientation, warnings), []


def load_raster(entry: ManifestEntry) -> tuple[Volume | None, list[Reject]]:
    """Read a PNG/JPEG/TIFF file into a :class:`Volume` ``(H, W)`` (or ``(S, H, W)`` for multi-page TIFF)."""
    from PIL import Image, ImageSequence

    warnings = []
    try:
        with Image.open(entry.path) as image:
            pages = []
            for page in ImageSequence.Iterator(image):
                if page.mode in ("RGB", "RGBA", "P", "LA", "CMYK", "YCbCr"):
                    if "grey" not in " ".join(warnings):
                        warnings.append(f"{page.mode} image converted to grey (luma)")
                    page = page.convert("L")
                pages.append(np.asarray(page, dtype=np.float32))
    except Exception as exc:  # noqa: BLE001 (Pillow raises many types on damaged files)
        return None, [_reject(entry, f"unreadable image ({type(exc).__name__}: {exc})")]
    if len({p.shape for p in pages}) > 1:
        return None, [_reject(entry, "multi-page image whose pages differ in size")]
    array = pages[0] if len(pages) == 1 else np.stack(pages)
    array = _finite(array, warnings)
    if isinstance(array, str):
        return None, [_reject(entry, array)]
    return _volume(entry, array, None, None, warnings), []


def _finite(array: np.ndarray, warnings: list[str]) -> np.ndarray | str:
    """``array`` with NaN/inf pixels set to its smallest finite value (and a warning), or the reject reason when
    no pixel is finite. A NaN would otherwise spread through preprocessing into training."""
    finite = np.isfinite(array)
    if finite.all():
        return array
    if not finite.any():
        return "no finite pixel value (all NaN or infinite)"
    bad = int(array.size - finite.sum())
    warnings.append(f"{bad} non-finite pixel value(s) ({bad / array.size:.1%}) set to the smallest finite value")
    return np.where(finite, array, array[finite].min()).astype(array.dtype)


def _volume(entry: ManifestEntry, array: np.ndarray, spacing: tuple[float, ...] | None,
            orientation: tuple[float, ...] | None, warnings: list[str]) -> Volume:
    return Volume(
        array=array,
        spacing_mm=spacing,
        orientation=orientation,
        image_id=file_image_id(entry.path),
        patient_id=entry.patient_id,
        source=str(entry.path),
        modality=entry.modality,
        study_date=entry.study_date,
        warnings=warnings,
    )


def file_image_id(path: Path) -> str:
    """Image key of a non-DICOM file: a hash of its resolved path."""
    return "file-" + hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:24]


def _reject(entry: ManifestEntry, reason: str) -> Reject:
    return Reject(str(entry.path), f"{entry.path.name}: {reason}", f"{entry.manifest.name} row {entry.row}")


def _parse_date(text: str) -> datetime | None:
    """An ISO 8601 date or date-time as UTC; a date without a time is its day's last instant (the image is only
    known to precede a cohort's cutoff when that does, as a FHIR date: ``ingest.schema.utc_period_ends``)."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if re.fullmatch(r"\d{4}-?\d{2}-?\d{2}", text):
        value = value.replace(hour=23, minute=59, second=59, microsecond=999_999)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
