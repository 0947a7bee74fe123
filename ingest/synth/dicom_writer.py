"""Write a CT series as DICOM files (one per slice, shuffled file order) and a lung-window PNG key slice."""

from __future__ import annotations

import functools
import struct
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.tag import Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat

from ingest.synth.phantom import Geometry

RESCALE_INTERCEPT = -1024
LUNG_WINDOW = (-600.0, 1500.0)  # centre, width (HU)
# elements that differ between series or slices, encoded by hand: keyword -> VR
VARYING = {
    "SOPInstanceUID": "UI",
    "StudyDate": "DA",
    "SeriesDate": "DA",
    "ContentDate": "DA",
    "PatientID": "LO",
    "PatientBirthDate": "DA",
    "PatientSex": "CS",
    "StudyInstanceUID": "UI",
    "SeriesInstanceUID": "UI",
    "InstanceNumber": "IS",
    "ImagePositionPatient": "DS",
    "FrameOfReferenceUID": "UI",
    "SliceLocation": "DS",
    "PixelData": "OW",
}
_VARYING_TAGS = sorted(Tag(k) for k in VARYING)


def _template(geo: Geometry) -> Dataset:
    """The elements shared by every slice of every series for a geometry (varying ones are in ``VARYING``)."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.PatientName = ""
    ds.StudyTime = ds.SeriesTime = "093000"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.Modality = "CT"
    ds.Manufacturer = "tumorboard-synth"
    ds.StudyDescription = "CT CHEST"
    ds.SeriesDescription = f"AXIAL {geo.thickness:g}mm"
    ds.BodyPartExamined = "CHEST"
    ds.SeriesNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.KVP = 120
    ds.PatientPosition = "FFS"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [geo.spacing, geo.spacing]
    ds.SliceThickness = geo.thickness
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = geo.size
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = RESCALE_INTERCEPT
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter, ds.WindowWidth = LUNG_WINDOW
    return ds


def _element(tag: int, vr: str, value: bytes) -> bytes:
    """One explicit-VR little-endian data element; ``value`` padded to even length as DICOM requires."""
    if len(value) % 2:
        value += b"\0" if vr in ("UI", "OB", "OW") else b" "
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode()
    if vr in ("OB", "OW"):
        return head + struct.pack("<HI", 0, len(value)) + value
    return head + struct.pack("<H", len(value)) + value


_META_HEAD = _element(0x00020001, "OB", b"\0\1") + _element(0x00020002, "UI", CTImageStorage.encode())
_META_TAIL = (
    _element(0x00020010, "UI", ExplicitVRLittleEndian.encode())
    + _element(0x00020012, "UI", PYDICOM_IMPLEMENTATION_UID.encode())
    + _element(0x00020013, "SH", f"PYDICOM {pydicom.__version__}".encode())
)


def _ds(values: list[float]) -> bytes:
    return "\\".join(str(DSfloat(v)) for v in values).encode()


class SliceEncoder:
    """Encodes CT slices as whole Part-10 files (explicit VR little endian).

    The template's elements are encoded once (pydicom); the ``VARYING`` ones are encoded by hand per
    call and spliced in tag order. The bytes equal ``dcmwrite(..., enforce_file_format=True)`` of the
    full dataset (checked in the tests).
    """

    def __init__(self, template: Dataset) -> None:
        fps = [DicomBytesIO() for _ in range(len(_VARYING_TAGS) + 1)]
        for fp in fps:
            fp.is_little_endian, fp.is_implicit_VR = True, False
        for elem in template:
            if elem.tag in _VARYING_TAGS:
                raise ValueError(f"template must not hold the varying element {elem.keyword}")
            write_data_element(fps[int(np.searchsorted(_VARYING_TAGS, elem.tag))], elem)
        self._chunks = [fp.getvalue() for fp in fps]

    def __call__(self, values: dict[str, bytes]) -> bytes:
        """Part-10 bytes of one slice; ``values`` maps every ``VARYING`` keyword to its encoded value."""
        sop = values["SOPInstanceUID"]
        meta = _META_HEAD + _element(0x00020003, "UI", sop) + _META_TAIL
        parts = [b"\0" * 128, b"DICM", _element(0x00020000, "UL", struct.pack("<I", len(meta))), meta]
        for chunk, tag in zip(self._chunks, _VARYING_TAGS, strict=False):
            keyword = keyword_for_tag(tag)
            parts += [chunk, _element(tag, VARYING[keyword], values[keyword])]
        parts.append(self._chunks[-1])
        return b"".join(parts)


@functools.lru_cache(maxsize=4)
def _encoder(geo: Geometry) -> SliceEncoder:
    return SliceEncoder(_template(geo))


def write_series(
    root: Path,
    hu: np.ndarray,
    geo: Geometry,
    rng: np.random.Generator,
    *,
    mrn: str,
    sex: str,
    birth_date: str,
    study_date: str,
    seed: int,
) -> Path:
    """Write ``hu`` (int16, (n_slices, size, size), slice 0 most inferior) under
    ``root/<mrn>/<StudyUID>/<SeriesUID>/<n>.dcm`` with files in shuffled order; returns the series folder.

    ``InstanceNumber`` follows acquisition order, which runs head-to-feet for a random half of patients.
    UIDs are derived from (seed, MRN) so a rerun reproduces them.
    """
    uids = {k: generate_uid(entropy_srcs=[str(seed), mrn, k]) for k in ("study", "series", "frame")}
    folder = root / mrn / uids["study"] / uids["series"]
    folder.mkdir(parents=True)
    encode = _encoder(geo)
    series = {
        "StudyDate": study_date,
        "SeriesDate": study_date,
        "ContentDate": study_date,
        "PatientID": mrn,
        "PatientBirthDate": birth_date,
        "PatientSex": "M" if sex == "male" else "F",
        "StudyInstanceUID": uids["study"],
        "SeriesInstanceUID": uids["series"],
        "FrameOfReferenceUID": uids["frame"],
    }
    values = {k: v.encode() for k, v in series.items()}
    z, _, x = geo.axes()
    n = hu.shape[0]
    instance = np.arange(1, n + 1) if rng.random() < 0.5 else np.arange(n, 0, -1)
    names = rng.permutation(n) + 1
    stored = (hu.astype(np.int32) - RESCALE_INTERCEPT).astype("<i2")
    for k in range(n):
        values["SOPInstanceUID"] = generate_uid(entropy_srcs=[str(seed), mrn, "sop", str(k)]).encode()
        values["InstanceNumber"] = str(int(instance[k])).encode()
        values["ImagePositionPatient"] = _ds([float(x[0]), float(x[0]), float(z[k])])
        values["SliceLocation"] = _ds([float(z[k])])
        values["PixelData"] = stored[k].tobytes()
        (folder / f"{names[k]}.dcm").write_bytes(encode(values))
    return folder


def lung_window_png(path: Path, hu_slice: np.ndarray) -> None:
    """Save one HU slice (2-D) as an 8-bit PNG in the lung window (centre -600, width 1500 HU)."""
    centre, width = LUNG_WINDOW
    grey = np.clip((hu_slice.astype(np.float32) - (centre - width / 2.0)) / width * 255.0, 0.0, 255.0)
    Image.fromarray(np.round(grey).astype(np.uint8), mode="L").save(path, compress_level=3)
