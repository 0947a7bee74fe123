"""DICOM reader: discover files, group them by series, sort slices by position, decode pixels.

Two passes: every file's header is read first (``stop_before_pixels``) to group files by SeriesInstanceUID
and sort the slices of a series by the projection of ImagePositionPatient on the slice normal (the cross
product of the two ImageOrientationPatient direction cosines), never by InstanceNumber or file name. Only then
are the pixels of one series decoded, rescaled (RescaleSlope/Intercept: CT in Hounsfield units) and stacked.

Multi-frame files (NumberOfFrames > 1) are one image each; their frame positions come from the per-frame
functional groups (enhanced IODs) or GridFrameOffsetVector (RT dose) when present.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.uid import UID

from ingest.images.records import Reject, Volume

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
DEFLATED = "1.2.840.10008.1.2.1.99"
NATIVE_LITTLE_ENDIAN = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")
SKIP_SUFFIXES = {".txt", ".md", ".csv", ".tsv", ".json", ".xml", ".html", ".pdf", ".yaml", ".yml"}
PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

_JPEG = "pylibjpeg and pylibjpeg-libjpeg"
_J2K = "pylibjpeg and pylibjpeg-openjpeg"
DECODER_HINTS = {
    "1.2.840.10008.1.2.4.50": _JPEG, "1.2.840.10008.1.2.4.51": _JPEG, "1.2.840.10008.1.2.4.57": _JPEG,
    "1.2.840.10008.1.2.4.70": _JPEG, "1.2.840.10008.1.2.4.80": _JPEG, "1.2.840.10008.1.2.4.81": _JPEG,
    "1.2.840.10008.1.2.4.90": _J2K, "1.2.840.10008.1.2.4.91": _J2K, "1.2.840.10008.1.2.4.201": _J2K,
    "1.2.840.10008.1.2.4.202": _J2K, "1.2.840.10008.1.2.4.203": _J2K,
    "1.2.840.10008.1.2.5": "pylibjpeg and pylibjpeg-rle",
}
"""Transfer syntax UID -> the packages that decode it."""

SPACING_TOLERANCE = 0.1
"""Relative deviation from the median slice step reported as inconsistent spacing."""
GAP_FACTOR = 1.5
"""A step larger than this many median steps is reported as a gap (missing slices)."""
ORIENTATION_TOLERANCE_DEG = 1.0


@dataclass
class Header:
    """One DICOM file read up to (not including) its pixel data, which starts at byte ``pixel_offset``."""

    path: Path
    ds: Dataset
    pixel_offset: int | None = None

    @property
    def n_frames(self) -> int:
        return int(self.ds.get("NumberOfFrames", 1) or 1)


@dataclass
class Series:
    """Files that form one image: a single-frame series, or one multi-frame file."""

    image_id: str
    headers: list[Header]


def discover(paths: list[Path]) -> tuple[list[Path], int]:
    """Expand files and folders (recursively) into a sorted, de-duplicated file list.

    Hidden files, DICOMDIR index files and obvious non-image documents (``.txt``, ``.csv``, ...) are skipped.

    Returns:
        The files, and the number of files skipped.
    """
    found: dict[Path, None] = {}
    skipped = 0
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; pass existing DICOM/NIfTI/PNG files or folders")
        candidates = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in candidates:
            name = file.name
            if name.startswith(".") or name.upper() == "DICOMDIR" or file.suffix.lower() in SKIP_SUFFIXES:
                skipped += 1
                continue
            found[file.resolve()] = None
    return list(found), skipped


def read_header(path: Path) -> Header | Reject | None:
    """Read one file's header (``stop_before_pixels``).

    Returns:
        The header; a :class:`Reject` for a file that is not a readable image DICOM; ``None`` for a DICOMDIR
        index (skipped).
    """
    try:
        with open(path, "rb") as handle:
            try:
                ds = pydicom.dcmread(handle, stop_before_pixels=True)
            except InvalidDicomError:
                handle.seek(0)
                ds = pydicom.dcmread(handle, stop_before_pixels=True, force=True)
                if "SOPClassUID" not in ds and "Modality" not in ds:
                    return Reject(str(path), f"{path.name}: not a DICOM file (no 'DICM' marker, no"
                                             " DICOM header); pass DICOM, NIfTI or PNG/JPEG/TIFF files")
            deflated = str(getattr(ds.get("file_meta"), "TransferSyntaxUID", "")) == DEFLATED
            offset = None if deflated else handle.tell()  # dcmread stopped at the pixel data element
            at_end = not handle.read(1)
    except Exception as exc:  # noqa: BLE001 (pydicom raises many types on damaged files)
        return Reject(str(path), f"{path.name}: unreadable DICOM header ({type(exc).__name__}: {exc})")
    sop_class = str(ds.get("SOPClassUID", "") or getattr(ds.get("file_meta"), "MediaStorageSOPClassUID", ""))
    if sop_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
        return None
    if "Rows" not in ds or "Columns" not in ds:
        if at_end and "Image Storage" in _sop_name(sop_class):
            return Reject(str(path), f"{path.name}: the file ends inside its header ({_sop_name(sop_class)} "
                                     "without Rows/Columns): truncated? copy or export it again")
        return Reject(str(path), f"{path.name}: non-image DICOM ({_sop_name(sop_class)}, modality"
                                 f" {ds.get('Modality', '?')}): no Rows/Columns/PixelData")
    problem = _header_problem(ds)
    if problem:
        return Reject(str(path), f"{path.name}: {problem}; fix the header or leave the file out")
    return Header(path, ds, offset)


def _header_problem(ds: Dataset) -> str | None:
    """Why the values used to group and sort are unusable, or ``None`` when they are fine."""
    for keyword in ("Rows", "Columns", "NumberOfFrames", "InstanceNumber"):
        try:
            int(ds.get(keyword) or 0)
        except (ValueError, TypeError):
            return f"{keyword} is not an integer"  # not the value: a header holds names, dates and ids
    keyword = None
    try:
        for keyword, size in (("ImagePositionPatient", 3), ("ImageOrientationPatient", 6), ("PixelSpacing", 2)):
            if keyword in ds:
                values = [float(v) for v in ds[keyword].value]
                if len(values) != size or not np.isfinite(values).all():
                    return f"{keyword} must hold {size} finite numbers, found {len(values)} value(s)"
        if "ImageOrientationPatient" in ds and np.linalg.norm(np.cross(
                *np.reshape([float(v) for v in ds.ImageOrientationPatient], (2, 3)))) < 1e-3:
            return "ImageOrientationPatient row and column directions are parallel"
    except (ValueError, TypeError) as exc:
        return f"{keyword} holds a value that is not a number ({type(exc).__name__})"
    return None


def group_series(headers: list[Header]) -> tuple[list[Series], list[Reject]]:
    """Group headers by SeriesInstanceUID; each multi-frame file is an image of its own.

    Within a single-frame series, files whose Rows x Columns differ from the most common size are rejected, and
    so is a second file of one instance (the same SOPInstanceUID: an export copied twice, or one image in
    several transfer syntaxes), which would otherwise be stacked as extra slices or overwrite an image.
    """
    by_uid: dict[str, list[Header]] = defaultdict(list)
    first_of: dict[str, Path] = {}
    rejects: list[Reject] = []
    for header in headers:
        sop = str(header.ds.get("SOPInstanceUID", "") or "")
        if sop in first_of:
            rejects.append(Reject(str(header.path), f"{header.path.name}: the same instance (SOPInstanceUID) as"
                                  f" {first_of[sop]}, which is kept; remove the copy"))
            continue
        if sop:
            first_of[sop] = header.path
        uid = str(header.ds.get("SeriesInstanceUID", "") or "")
        by_uid[uid or f"file:{header.path}"].append(header)
    series: list[Series] = []
    for uid, members in by_uid.items():
        base_id = uid if not uid.startswith("file:") else "file-" + _path_hash(members[0].path)
        multi = [h for h in members if h.n_frames > 1]
        single = [h for h in members if h.n_frames == 1]
        for header in multi:
            own_id = str(header.ds.get("SOPInstanceUID", "") or _path_hash(header.path))
            image_id = base_id if len(members) == 1 else own_id
            series.append(Series(image_id, [header]))
        if not single:
            continue
        shapes = Counter((int(h.ds.Rows), int(h.ds.Columns)) for h in single)
        (rows, cols), _ = shapes.most_common(1)[0]
        kept = []
        for header in single:
            shape = (int(header.ds.Rows), int(header.ds.Columns))
            if shape == (rows, cols):
                kept.append(header)
            else:
                rejects.append(Reject(str(header.path), f"{header.path.name}: slice size"
                                      f" {shape[0]}x{shape[1]} differs from the series' {rows}x{cols};"
                                      " ingest it on its own"))
        image_id = base_id if not multi else f"{base_id}/single-frame"
        series.append(Series(image_id, kept))
    return series, rejects


def slice_normal(orientation: np.ndarray) -> np.ndarray:
    """Unit normal of a slice: cross product of the row and column direction cosines (6 values, LPS)."""
    normal = np.cross(orientation[:3], orientation[3:])
    return normal / np.linalg.norm(normal)


def sort_by_position(positions: np.ndarray,
                     orientations: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Order slices by their position along the (mean) slice normal.

    Args:
        positions: ``(N, 3)`` ImagePositionPatient of each slice, mm.
        orientations: ``(N, 6)`` ImageOrientationPatient of each slice.

    Returns:
        ``order`` (indices, ascending position), the sorted projections (mm) and warnings.
    """
    normals = np.stack([slice_normal(o) for o in orientations])
    mean = normals.mean(axis=0)
    mean /= np.linalg.norm(mean)
    warnings = []
    angle = float(np.degrees(np.arccos(np.clip(normals @ mean, -1.0, 1.0))).max())
    if angle > ORIENTATION_TOLERANCE_DEG:
        warnings.append(f"slice orientations differ by up to {angle:.1f} degrees within the series:"
                        " not a regular volume (sorted along the mean normal)")
    projection = positions @ mean
    order = np.argsort(projection, kind="stable")
    return order, projection[order], warnings


def check_spacing(projection: np.ndarray) -> tuple[float | None, list[str]]:
    """Slice step (median, mm) of sorted positions, with warnings for duplicates, gaps and irregularity."""
    steps = np.diff(projection)
    if steps.size == 0:
        return None, []
    warnings = []
    duplicates = int((steps < 1e-3).sum())
    if duplicates:
        warnings.append(f"{duplicates} slice(s) share a position with another slice (duplicates or several"
                        " acquisitions in one series)")
    positive = steps[steps >= 1e-3]
    if positive.size == 0:
        return None, warnings
    step = float(np.median(positive))
    gaps = np.flatnonzero(positive > GAP_FACTOR * step)
    if gaps.size:
        missing = int(sum(round(positive[i] / step) - 1 for i in gaps))
        first = gaps[0]
        warnings.append(f"gap in slice positions: {gaps.size} gap(s), about {missing} missing slice(s), first"
                        f" {positive[first]:.2f} mm after slice {first} (expected {step:.2f} mm)")
    regular = np.delete(positive, gaps)
    deviation = np.abs(regular - step) / step
    if deviation.size and deviation.max() > SPACING_TOLERANCE:
        warnings.append(f"inconsistent slice spacing: steps {regular.min():.3f}..{regular.max():.3f} mm"
                        f" (median {step:.3f} mm)")
    return step, warnings


def load_series(series: Series) -> tuple[Volume | None, list[Reject]]:
    """Decode, sort and stack one series into a :class:`Volume` (``(S, H, W)`` or ``(H, W)`` float32)."""
    first = series.headers[0]
    patient_id = str(first.ds.get("PatientID", "") or "").strip()
    if not patient_id:
        return None, [Reject(str(h.path), f"{h.path.name}: no PatientID (0010,0020); the images table needs a"
                                          " patient identifier: fill PatientID (e.g. dcmodify -i)")
                      for h in series.headers]
    named = {str(h.ds.get("PatientID", "") or "").strip() for h in series.headers}
    if len(named) > 1:  # one series, several patients: no patient could be given the volume
        return None, [Reject(str(h.path), f"{h.path.name}: its series (SeriesInstanceUID) spans {len(named)} "
                                          "different PatientID values (0010,0020); a series belongs to one "
                                          "patient: fix the PatientID or the SeriesInstanceUID of the files")
                      for h in series.headers]
    if first.n_frames > 1:
        return _load_multiframe(series, patient_id)
    return _load_single_frames(series, patient_id)


def _load_single_frames(series: Series, patient_id: str) -> tuple[Volume | None, list[Reject]]:
    headers = series.headers
    warnings: list[str] = []
    projection = None
    if len(headers) > 1:
        if all("ImagePositionPatient" in h.ds and "ImageOrientationPatient" in h.ds for h in headers):
            order, projection, orient_warnings = sort_by_position(
                np.array([[float(v) for v in h.ds.ImagePositionPatient] for h in headers]),
                np.array([[float(v) for v in h.ds.ImageOrientationPatient] for h in headers]))
            warnings += orient_warnings
        else:
            order = np.argsort([int(h.ds.get("InstanceNumber", 0) or 0) for h in headers], kind="stable")
            warnings.append("no ImagePositionPatient/ImageOrientationPatient: slices ordered by"
                            " InstanceNumber")
        headers = [headers[i] for i in order]
    array = np.empty((len(headers), int(headers[0].ds.Rows), int(headers[0].ds.Columns)), np.float32)
    kept, rejects = [], []
    for index, header in enumerate(headers):
        frames, reason = decode_header(header)
        if frames is None:
            rejects.append(Reject(str(header.path), reason))
            continue
        array[len(kept)] = frames[0]
        kept.append(index)
    if not kept:
        return None, rejects
    if rejects:
        warnings.append(f"{len(rejects)} file(s) of the series could not be decoded and were left out"
                        " (see rejects)")
    headers = [headers[i] for i in kept]
    step = None
    if len(kept) > 1 and projection is not None:
        step, spacing_warnings = check_spacing(projection[kept])
        warnings += spacing_warnings
    elif len(kept) > 1:
        step = _nominal_slice_spacing(headers[0].ds)
    volume = _volume(array[:len(kept)], _pixel_spacing(headers[0].ds), step, headers[0].ds, series.image_id,
                     patient_id, headers, warnings)
    return volume, rejects


def _load_multiframe(series: Series, patient_id: str) -> tuple[Volume | None, list[Reject]]:
    header = series.headers[0]
    frames, reason = decode_header(header)
    if frames is None:
        return None, [Reject(str(header.path), reason)]
    ds = header.ds
    warnings: list[str] = []
    positions = _frame_positions(ds, len(frames))
    orientation = _orientation(ds)
    step = None
    if positions is not None and orientation is not None:
        order, projection, _ = sort_by_position(positions, np.repeat(orientation[None], len(frames), axis=0))
        frames = frames[order]
        step, spacing_warnings = check_spacing(projection)
        warnings += spacing_warnings
    else:
        step = _nominal_slice_spacing(ds)
        warnings.append("multi-frame file without per-frame positions: frames kept in stored order")
    volume = _volume(frames, _pixel_spacing(ds), step, ds, series.image_id, patient_id, [header], warnings)
    return volume, []


def decode_file(path: Path) -> tuple[np.ndarray | None, str]:
    """Read one file's pixels as float32 ``(F, H, W)`` with the rescale applied (colour -> grey luma;
    MONOCHROME1 inverted within its stored range, so that high values are bright as in MONOCHROME2).

    Returns:
        ``(frames, "")`` or ``(None, reason)``; the reason names the file, the transfer syntax and, for a
        compressed syntax, the decoder packages to install.
    """
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # noqa: BLE001
        return None, f"{path.name}: unreadable DICOM ({type(exc).__name__}: {exc})"
    return _frames(ds, path)


def decode_header(header: Header) -> tuple[np.ndarray | None, str]:
    """Like :func:`decode_file`, but reads only the pixel data after an already-read header."""
    if header.pixel_offset is None:
        return decode_file(header.path)
    ds = header.ds
    try:
        with open(header.path, "rb") as handle:
            handle.seek(header.pixel_offset)
            rest = read_dataset(handle, *ds.original_encoding)
    except Exception as exc:  # noqa: BLE001
        return None, f"{header.path.name}: unreadable pixel data ({type(exc).__name__}: {exc})"
    ds.update(rest)
    try:
        return _frames(ds, header.path)
    finally:
        for tag in list(rest.keys()):  # keep the header small: the pixels live in the returned array
            del ds[tag]


def _frames(ds: Dataset, path: Path) -> tuple[np.ndarray | None, str]:
    if not any(tag in ds for tag in PIXEL_TAGS):
        sop = _sop_name(str(ds.get("SOPClassUID", "")))
        return None, f"{path.name}: non-image DICOM ({sop}): no PixelData"
    syntax = UID(str(getattr(ds.get("file_meta"), "TransferSyntaxUID", "") or "1.2.840.10008.1.2"))
    try:
        raw = native_pixels(ds)
        if raw is None:
            raw = ds.pixel_array
    except Exception as exc:  # noqa: BLE001
        return None, _decode_reason(path, syntax, exc)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if raw.ndim == (2 if samples == 1 else 3):
        raw = raw[None]
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        raw = apply_color_lut(raw, ds)
        samples = 3
    frames = raw.astype(np.float32)
    if photometric == "MONOCHROME1":  # before the rescale, over the stored range: one mapping for every slice
        frames = np.float32(_stored_range_sum(ds)) - frames
    if samples == 3:
        frames = frames @ np.array([0.299, 0.587, 0.114], np.float32)
    for i in range(len(frames)):
        slope, intercept = _rescale(ds, i)
        if slope != 1.0:
            frames[i] *= np.float32(slope)
        if intercept != 0.0:
            frames[i] += np.float32(intercept)
    return frames, ""


def _stored_range_sum(ds: Dataset) -> int:
    """Lowest plus highest stored value that BitsStored allows: ``sum - x`` inverts a MONOCHROME1 pixel ``x``
    within the same range, whatever the pixels of that image happen to span."""
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    return -1 if int(ds.get("PixelRepresentation", 0) or 0) == 1 else 2**bits - 1


def native_pixels(ds: Dataset) -> np.ndarray | None:
    """Pixels of uncompressed little-endian greyscale data straight from the buffer, ``(F, H, W)``.

    The common case (CT/MR slices) without pydicom's per-call decoder set-up; ``None`` for anything else
    (compressed, big endian, colour, 1-bit, float pixel data, short buffers), which goes through
    ``ds.pixel_array``. Like pydicom, unsigned values are masked to BitsStored and signed values are
    sign-extended from it.
    """
    syntax = str(getattr(ds.get("file_meta"), "TransferSyntaxUID", ""))
    raw = ds.get("PixelData")
    allocated = int(ds.get("BitsAllocated", 0) or 0)
    if (syntax not in NATIVE_LITTLE_ENDIAN or not isinstance(raw, bytes) or allocated not in (8, 16, 32)
            or int(ds.get("SamplesPerPixel", 1) or 1) != 1):
        return None
    frames, rows, cols = int(ds.get("NumberOfFrames", 1) or 1), int(ds.Rows), int(ds.Columns)
    count = frames * rows * cols
    if len(raw) < count * allocated // 8:
        return None
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    array = np.frombuffer(raw, f"<{'i' if signed else 'u'}{allocated // 8}", count=count)
    shift = allocated - int(ds.get("BitsStored", allocated) or allocated)
    if shift > 0:
        array = (array << shift) >> shift if signed else array & ((1 << (allocated - shift)) - 1)
    return array.reshape(frames, rows, cols)


def _decode_reason(path: Path, syntax: UID, exc: Exception) -> str:
    detail = " ".join(str(exc).split())[:300]
    name = syntax.name if syntax.is_transfer_syntax else "unknown transfer syntax"
    text = f"{path.name}: pixel data could not be decoded; transfer syntax {name} ({syntax})"
    if syntax.is_compressed:
        hint = DECODER_HINTS.get(str(syntax))
        if hint:
            text += (f"; decoder packages: {hint} (if they are installed, the compressed data is damaged or"
                     " uses a variant they do not support: convert it, e.g. `gdcmconv --raw`)")
        else:
            text += ("; no installed plugin decodes it: convert the file to an uncompressed syntax"
                     " (`gdcmconv --raw`)")
    return f"{text}; error: {type(exc).__name__}: {detail}"


def _volume(array: np.ndarray, in_plane: tuple[float, float] | None, step: float | None, ds: Dataset,
            image_id: str, patient_id: str, headers: list[Header], warnings: list[str]) -> Volume:
    if array.shape[0] == 1:
        array = array[0]
        spacing = in_plane
    else:
        spacing = (step, *in_plane) if in_plane is not None and step is not None else None
        if spacing is None:
            warnings.append("slice or pixel spacing unknown")
    orientation = _orientation(ds)
    return Volume(
        array=np.ascontiguousarray(array, dtype=np.float32),
        spacing_mm=None if spacing is None else tuple(float(s) for s in spacing),
        orientation=None if orientation is None else tuple(float(v) for v in orientation),
        image_id=image_id,
        patient_id=patient_id,
        source=str(headers[0].path),
        n_files=len(headers),
        modality=_text(ds, "Modality"),
        body_part=_text(ds, "BodyPartExamined"),
        study_date=study_datetime(ds),
        study_uid=_text(ds, "StudyInstanceUID"),
        series_uid=_text(ds, "SeriesInstanceUID"),
        warnings=warnings,
    )


def study_datetime(ds: Dataset) -> datetime | None:
    """The latest of StudyDate + StudyTime and the Series, Acquisition and Content date-times, as UTC
    (TimezoneOffsetFromUTC if set): when the image surely existed. A series added to an earlier study (acquired
    after a diagnosis that followed the study's first series) is dated by its own acquisition, so a cohort cutoff
    between the two leaves it out; a date without a time counts from the end of its day."""
    dates = []
    for prefix in ("Study", "Series", "Acquisition", "Content"):
        date = str(ds.get(f"{prefix}Date", "") or "").strip()
        if len(date) != 8 or not date.isdigit():
            continue
        time = str(ds.get(f"{prefix}Time", "") or "").strip().split(".")[0]
        time = time.ljust(6, "0")[:6] if time else ""
        try:
            value = datetime.strptime(date + (time if time.isdigit() else "235959"), "%Y%m%d%H%M%S")
        except ValueError:
            continue
        if not time.isdigit():  # the day's last instant, as a FHIR date's end (ingest.schema.utc_period_ends)
            value += timedelta(microseconds=999_999)
        offset = str(ds.get("TimezoneOffsetFromUTC", "") or "").strip()
        if len(offset) == 5 and offset[0] in "+-" and offset[1:].isdigit():
            sign = 1 if offset[0] == "+" else -1
            value -= sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:]))
        dates.append(value.replace(tzinfo=UTC))
    return max(dates, default=None)


def _rescale(ds: Dataset, frame: int) -> tuple[float, float]:
    for item in _functional_items(ds, frame, "PixelValueTransformationSequence"):
        if "RescaleSlope" in item or "RescaleIntercept" in item:
            return float(item.get("RescaleSlope", 1.0)), float(item.get("RescaleIntercept", 0.0))
    return float(ds.get("RescaleSlope", 1.0) or 1.0), float(ds.get("RescaleIntercept", 0.0) or 0.0)


def _functional_items(ds: Dataset, frame: int, sequence: str) -> list[Dataset]:
    """Items of a functional-group ``sequence`` for ``frame``: per-frame first, then shared."""
    items = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame) and sequence in per_frame[frame]:
        items += list(per_frame[frame][sequence])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and sequence in shared[0]:
        items += list(shared[0][sequence])
    return items


def _orientation(ds: Dataset) -> np.ndarray | None:
    if "ImageOrientationPatient" in ds:
        return np.array([float(v) for v in ds.ImageOrientationPatient])
    for item in _functional_items(ds, 0, "PlaneOrientationSequence"):
        if "ImageOrientationPatient" in item:
            return np.array([float(v) for v in item.ImageOrientationPatient])
    return None


def _frame_positions(ds: Dataset, n_frames: int) -> np.ndarray | None:
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) == n_frames:
        positions = []
        for item in per_frame:
            planes = item.get("PlanePositionSequence")
            if not planes or "ImagePositionPatient" not in planes[0]:
                return None
            positions.append([float(v) for v in planes[0].ImagePositionPatient])
        return np.array(positions)
    offsets = ds.get("GridFrameOffsetVector")
    orientation = _orientation(ds)
    if (offsets is not None and len(offsets) == n_frames and orientation is not None
            and "ImagePositionPatient" in ds):
        origin = np.array([float(v) for v in ds.ImagePositionPatient])
        return origin + np.outer([float(v) for v in offsets], slice_normal(orientation))
    return None


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    for source in [ds, *_functional_items(ds, 0, "PixelMeasuresSequence")]:
        for tag in ("PixelSpacing", "ImagerPixelSpacing"):
            value = source.get(tag)
            if value is not None and len(value) == 2:
                return float(value[0]), float(value[1])
    return None


def _nominal_slice_spacing(ds: Dataset) -> float | None:
    for source in [ds, *_functional_items(ds, 0, "PixelMeasuresSequence")]:
        for tag in ("SpacingBetweenSlices", "SliceThickness"):
            value = source.get(tag)
            if value not in (None, ""):
                return abs(float(value))
    return None


def _text(ds: Dataset, keyword: str) -> str | None:
    value = str(ds.get(keyword, "") or "").strip()
    return value or None


def _sop_name(uid: str) -> str:
    if not uid:
        return "no SOP class"
    name = UID(uid).name
    return f"SOP class {name}" if name != uid else f"SOP class {uid}"


def _path_hash(path: Path) -> str:
    return hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:24]
