"""Image ingest: DICOM series (pydicom's own files), NIfTI (nibabel's), PNG + manifest, transforms, store."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import typer
from typer.testing import CliRunner

from apps.cli.ingest_images import register
from ingest.images import TensorStore, dicom, ingest_images, load_config
from ingest.images.preprocess import (
    Compose,
    CropOrPad,
    Image,
    ImagesConfig,
    MinMax,
    Resample,
    Resize,
    Window,
    ZScore,
)
from ingest.images.records import Reject
from ingest.images.volumes import ManifestEntry, load_nifti
from tests.conftest import shared_data

KEEP_CONFIG = """
dtype: float32
windows: {}
presets:
  - {name: keep, normalize: none}
"""


def dicom_test_file(name: str) -> Path:
    """A DICOM file shipped inside the pydicom wheel (files listed in urls.json are not available offline)."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not shipped locally (it is in pydicom's urls.json)")
    return Path(path)


def dicomdir_series(*parts: str) -> Path:
    folder = dicom_test_file("CT_small.dcm").parent.joinpath("dicomdirtests", *parts)
    if not folder.is_dir():
        pytest.skip(f"pydicom test folder {folder} is missing")
    return folder


def load_one(path: Path):
    files, _ = dicom.discover([path])
    headers = [dicom.read_header(f) for f in files]
    series, rejects = dicom.group_series([h for h in headers if isinstance(h, dicom.Header)])
    assert len(series) == 1 and not rejects
    return dicom.load_series(series[0])


def raw_pixels(path: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path).pixel_array


# -- DICOM -------------------------------------------------------------------------------------------------
def test_ct_small_is_in_hounsfield_units():
    path = dicom_test_file("CT_small.dcm")
    volume, rejects = load_one(path)
    ds = pydicom.dcmread(path)
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, -1024.0)
    raw = raw_pixels(path)
    assert (int(raw.min()), int(raw.max())) == (128, 2191)
    assert not rejects and volume.array.dtype == np.float32 and volume.array.shape == (128, 128)
    assert (volume.array.min(), volume.array.max()) == (128 - 1024, 2191 - 1024)
    np.testing.assert_array_equal(volume.array, raw.astype(np.float32) - 1024)
    assert volume.modality == "CT" and volume.patient_id == str(ds.PatientID)
    assert volume.spacing_mm == pytest.approx((0.661468, 0.661468))
    assert volume.study_date.isoformat() == "2004-01-19T12:27:30+00:00"  # 07:27:30 at UTC-05:00


def test_ct5n_stacks_five_slices_in_position_order():
    folder = dicomdir_series("98892001", "CT5N")
    volume, rejects = load_one(folder)
    assert not rejects and volume.array.shape == (5, 16, 16) and volume.n_files == 5
    files = sorted(folder.iterdir(), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
    for index, file in enumerate(files):  # axial: ascending z = ascending position along the normal
        np.testing.assert_array_equal(volume.array[index], raw_pixels(file).astype(np.float32) - 1024)
    assert volume.spacing_mm == pytest.approx((2.5, 0.488281, 0.488281))
    assert volume.orientation == pytest.approx((1, 0, 0, 0, 1, 0)) and volume.warnings == []


def test_monochrome1_series_is_inverted_with_one_mapping_for_every_slice(tmp_path):
    """Each slice was inverted with its own min + max, so a MONOCHROME1 volume's slices were shifted apart."""
    folder = dicomdir_series("98892001", "CT5N")
    for file in folder.iterdir():
        ds = pydicom.dcmread(file)
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.save_as(tmp_path / file.name)
    plain, _ = load_one(folder)
    inverted, rejects = load_one(tmp_path)
    assert not rejects and inverted.array.shape == plain.array.shape == (5, 16, 16)
    # signed 16-bit stored values x -> -1 - x, then the rescale (slope 1, intercept -1024): -2049 - HU
    np.testing.assert_array_equal(inverted.array + plain.array, np.full((5, 16, 16), -2049, np.float32))


def test_a_series_whose_files_name_two_patients_is_rejected_without_naming_them(tmp_path):
    """One SeriesInstanceUID over files of two PatientIDs: every file is rejected (the volume would be filed
    under the first file's patient), and the reason names no PatientID."""
    folder = dicomdir_series("98892001", "CT5N")
    for number, file in enumerate(sorted(folder.iterdir())):
        ds = pydicom.dcmread(file)
        if number == 3:
            ds.PatientID = "OTHER-PATIENT-7"
        ds.save_as(tmp_path / file.name)
    volume, rejects = load_one(tmp_path)
    assert volume is None and len(rejects) == 5
    assert all("spans 2 different PatientID values" in r.reason for r in rejects)
    assert not any("OTHER-PATIENT-7" in r.reason or str(pydicom.dcmread(next(folder.iterdir())).PatientID)
                   in r.reason for r in rejects)


def test_ct2_reports_its_gap():
    volume, _ = load_one(dicomdir_series("77654033", "CT2"))
    assert volume.array.shape == (4, 16, 16)
    assert volume.spacing_mm[0] == pytest.approx(1.25)
    [gap] = [w for w in volume.warnings if w.startswith("gap in slice positions")]
    assert "about 161 missing slice(s)" in gap and "202.50 mm" in gap


def test_mr700_sorted_by_position_not_instance_number():
    folder = dicomdir_series("98892003", "MR700")
    volume, _ = load_one(folder)
    files = sorted(folder.iterdir())
    by_pixels = {raw_pixels(f).astype(np.float32).tobytes(): int(pydicom.dcmread(f).InstanceNumber)
                 for f in files}
    stacked = [by_pixels[s.tobytes()] for s in volume.array]
    file_order = [int(pydicom.dcmread(f).InstanceNumber) for f in files]
    assert stacked == [7, 6, 5, 4, 3, 2, 1]  # ascending projection on the mean slice normal
    assert stacked != sorted(stacked) and stacked != file_order
    assert any("orientations differ" in w for w in volume.warnings)


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm"])
def test_lossless_compressed_decodes_to_the_uncompressed_pixels(name):
    frames, reason = dicom.decode_file(dicom_test_file(name))
    reference, _ = dicom.decode_file(dicom_test_file("MR_small.dcm"))
    assert reason == "" and frames.shape == (1, 64, 64)
    np.testing.assert_array_equal(frames, reference)


@pytest.mark.parametrize("name, bits_stored, signed", [
    ("CT_small.dcm", None, None), ("MR_small_implicit.dcm", None, None), ("rtdose.dcm", None, None),
    ("CT_small.dcm", 12, 1), ("CT_small.dcm", 12, 0),
])
def test_native_fast_path_matches_pydicom(name, bits_stored, signed):
    ds = pydicom.dcmread(dicom_test_file(name))
    if bits_stored is not None:  # high bits set on purpose: pydicom masks (unsigned) or sign-extends (signed)
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits_stored, bits_stored - 1, signed
        ds.PixelData = (np.arange(128 * 128, dtype=np.uint16) * 7).tobytes()
    expected = ds.pixel_array
    got = dicom.native_pixels(ds)
    assert got is not None and got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected.reshape(got.shape))
    assert dicom.native_pixels(pydicom.dcmread(dicom_test_file("MR_small_RLE.dcm"))) is None


def test_jpeg_baseline_colour_decodes_to_grey():
    frames, reason = dicom.decode_file(dicom_test_file("SC_rgb_jpeg_dcmtk.dcm"))
    assert reason == "" and frames.shape == (1, 100, 100) and frames.dtype == np.float32


def test_undecodable_jpeg_is_rejected_with_syntax_and_plugin():
    path = dicom_test_file("JPEG-lossy.dcm")
    volume, rejects = load_one(path)
    assert volume is None
    [reject] = rejects
    assert reject.source == str(path)
    for text in ("JPEG-lossy.dcm", "JPEG Extended", "1.2.840.10008.1.2.4.51", "pylibjpeg-libjpeg"):
        assert text in reject.reason


def test_a_header_number_that_does_not_parse_is_named_by_keyword_not_value():
    from pydicom.dataelem import RawDataElement
    from pydicom.dataset import Dataset
    from pydicom.tag import Tag

    ds = Dataset()
    ds.Rows, ds.Columns = 2, 2
    tag, value = Tag("PixelSpacing"), b"MRN4242\\1 "
    ds._dict[tag] = RawDataElement(tag, "DS", len(value), value, 0, False, True)  # as read from a file: lazily
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        problem = dicom._header_problem(ds)
    assert problem == "PixelSpacing holds a value that is not a number (ValueError)"  # not "...: 'MRN4242'"


def test_corrupt_and_non_image_files_are_rejected(tmp_path):
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(dicom_test_file("CT_small.dcm").read_bytes()[:700])
    report = dicom.read_header(dicom_test_file("reportsi.dcm"))
    assert isinstance(report, Reject) and "non-image DICOM" in report.reason and "SR" in report.reason
    with pytest.warns(UserWarning, match="Invalid value for VR IS"):
        bad_value = dicom.read_header(dicom_test_file("badVR.dcm"))  # NumberOfFrames '1A'
    assert isinstance(bad_value, Reject) and "NumberOfFrames is not an integer" in bad_value.reason
    assert "1A" not in bad_value.reason  # the header's value is not echoed: a header holds names, dates and ids
    cut_header = tmp_path / "cut_header.dcm"
    cut_header.write_bytes(dicom_test_file("CT_small.dcm").read_bytes()[:300])
    read = dicom.read_header(cut_header)
    assert isinstance(read, Reject) and "ends inside its header" in read.reason and "CT Image Storage" in read.reason
    read = dicom.read_header(garbage)
    assert isinstance(read, Reject) and "garbage.dcm" in read.reason
    header = dicom.read_header(truncated)
    if isinstance(header, dicom.Header):  # the header survived the cut: the pixels cannot
        frames, reason = dicom.decode_file(truncated)
        assert frames is None and "truncated.dcm" in reason
    else:
        assert "truncated.dcm" in header.reason


def test_multiframe_rtdose_uses_frame_offsets():
    volume, rejects = load_one(dicom_test_file("rtdose.dcm"))
    assert not rejects and volume.array.shape == (15, 10, 10)
    assert volume.spacing_mm == pytest.approx((5.0, 10.0, 10.0)) and volume.warnings == []


def test_enhanced_multiframe_sorted_by_per_frame_positions(tmp_path):
    from pydicom.dataset import Dataset

    ds = pydicom.dcmread(dicom_test_file("CT_small.dcm"))
    frames = np.stack([np.full((128, 128), value, np.int16) for value in (100, 200, 300)])
    ds.NumberOfFrames, ds.PixelData = 3, frames.tobytes()
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "RescaleSlope",
                    "RescaleIntercept"):
        delattr(ds, keyword)

    def item(**sequences) -> Dataset:
        out = Dataset()
        for name, values in sequences.items():
            inner = Dataset()
            for keyword, value in values.items():
                setattr(inner, keyword, value)
            setattr(out, name, [inner])
        return out

    ds.SharedFunctionalGroupsSequence = [item(
        PlaneOrientationSequence={"ImageOrientationPatient": [1, 0, 0, 0, 1, 0]},
        PixelMeasuresSequence={"PixelSpacing": [0.7, 0.8]})]
    ds.PerFrameFunctionalGroupsSequence = [
        item(PlanePositionSequence={"ImagePositionPatient": [0, 0, z]},
             PixelValueTransformationSequence={"RescaleSlope": 1, "RescaleIntercept": intercept})
        for z, intercept in ((5.0, -1000), (0.0, -2000), (10.0, -3000))]
    ds.save_as(tmp_path / "enhanced.dcm")
    volume, rejects = load_one(tmp_path / "enhanced.dcm")
    assert not rejects and volume.array.shape == (3, 128, 128)
    assert [float(s[0, 0]) for s in volume.array] == [200 - 2000, 100 - 1000, 300 - 3000]  # by z: 0, 5, 10
    assert volume.spacing_mm == pytest.approx((5.0, 0.7, 0.8))
    assert volume.orientation == (1, 0, 0, 0, 1, 0) and volume.warnings == []


def test_series_without_positions_falls_back_to_instance_number(tmp_path):
    source = pydicom.dcmread(dicom_test_file("CT_small.dcm"))
    for number in (3, 1, 2):
        ds = copy.deepcopy(source)
        ds.InstanceNumber = number
        ds.SOPInstanceUID = f"1.2.3.{number}"
        del ds.ImagePositionPatient
        ds.PixelData = (source.pixel_array + number).astype(source.pixel_array.dtype).tobytes()
        ds.save_as(tmp_path / f"slice{number}.dcm")
    volume, _ = load_one(tmp_path)
    assert [int(s[0, 0] - volume.array[0, 0, 0]) for s in volume.array] == [0, 1, 2]
    assert any("ordered by InstanceNumber" in w for w in volume.warnings)


def test_a_series_added_to_an_earlier_study_is_dated_by_its_own_acquisition(tmp_path):
    """A CT series acquired on 2020-03-01 in a study opened on 2019-12-20 is not an input of a cohort whose cutoff
    (a diagnosis on 2020-01-01) lies between them: the study's date would let the later series in."""
    from fusion.cohort import image_refs

    ds = pydicom.dcmread(dicom_test_file("CT_small.dcm"))
    ds.StudyDate, ds.StudyTime = "20191220", "093000"
    for prefix in ("Series", "Acquisition", "Content"):
        setattr(ds, f"{prefix}Date", "20200301")
        setattr(ds, f"{prefix}Time", "100000")
    del ds.TimezoneOffsetFromUTC
    ds.save_as(tmp_path / "later_series.dcm")
    volume, _ = load_one(tmp_path / "later_series.dcm")
    assert volume.study_date.isoformat() == "2020-03-01T10:00:00+00:00"
    images = pd.DataFrame({"patient_key": ["p"], "image_id": ["i"], "modality": ["CT"], "tensor_file": ["f"],
                           "tensor_row": [0], "study_date": [pd.Timestamp(volume.study_date)]})
    refs = image_refs(images, np.array(["p"]), pd.Series({"p": pd.Timestamp("2020-01-01", tz="UTC")}), None)
    assert not refs.present[0]


def test_an_image_dated_by_day_only_is_no_input_for_a_diagnosis_timed_that_day(tmp_path):
    """A CT whose header has a StudyDate but no time, or a manifest row dated 2020-01-01, may be from the afternoon
    of a diagnosis timed 10:00 that day: it counts from the end of its day, as a FHIR date does."""
    from fusion.cohort import image_refs
    from ingest.images.volumes import _parse_date

    ds = pydicom.dcmread(dicom_test_file("CT_small.dcm"))
    for prefix in ("Study", "Series", "Acquisition", "Content"):
        setattr(ds, f"{prefix}Date", "20200101")
        delattr(ds, f"{prefix}Time")
    del ds.TimezoneOffsetFromUTC
    ds.save_as(tmp_path / "day_only.dcm")
    volume, _ = load_one(tmp_path / "day_only.dcm")
    dates = [volume.study_date, _parse_date("2020-01-01")]
    assert [d.isoformat() for d in dates] == ["2020-01-01T23:59:59.999999+00:00"] * 2
    assert _parse_date("2020-01-01T08:00:00+02:00").isoformat() == "2020-01-01T06:00:00+00:00"  # a time: itself
    images = pd.DataFrame({"patient_key": ["p", "q"], "image_id": ["i", "j"], "modality": ["CT"] * 2,
                           "tensor_file": ["f", "g"], "tensor_row": [0, 0], "study_date": pd.to_datetime(dates)})
    cutoff = pd.Series(pd.Timestamp("2020-01-01T10:00", tz="UTC"), index=["p", "q"])
    assert not image_refs(images, np.array(["p", "q"]), cutoff, None).present.any()
    cutoff[:] = pd.Timestamp("2020-01-02", tz="UTC")  # one day of grace after a diagnosis dated by day
    assert image_refs(images, np.array(["p", "q"]), cutoff, None).present.all()


# -- NIfTI -------------------------------------------------------------------------------------------------
def nifti_entry(name: str, tmp_path: Path) -> ManifestEntry:
    from nibabel.testing import data_path

    path = Path(data_path) / name
    if not path.is_file():
        pytest.skip(f"nibabel test file {path} is missing")
    return ManifestEntry(path, "P1", None, "MR", 2, tmp_path / "manifest.csv")


def test_nifti_anatomical_keeps_spacing_and_orientation(tmp_path):
    import nibabel as nib

    entry = nifti_entry("anatomical.nii", tmp_path)
    volume, rejects = load_nifti(entry)
    data = nib.load(entry.path).get_fdata()
    assert not rejects and volume.array.shape == (25, 41, 33)  # (k, j, i)
    np.testing.assert_allclose(volume.array, np.transpose(data[:, ::-1], (2, 1, 0)))
    assert volume.spacing_mm == (2.0, 2.0, 2.0)
    # affine diag(-2, 2, 2), left-handed: i runs to RAS -x = LPS +x, j to LPS -y (flipped: rows run to LPS +y),
    # k to LPS +z = row x column direction
    assert volume.orientation == pytest.approx((1, 0, 0, 0, 1, 0))


def test_nifti_of_a_dicom_series_reads_as_the_series(tmp_path):
    """dcm2niix writes an axial series with its rows flipped (LAS, a left-handed affine): the NIfTI's slices ran
    against the normal of the orientation it was given, and its rows upside down from the DICOM series'."""
    import nibabel as nib

    series, _ = load_one(dicomdir_series("98892001", "CT5N"))
    rows = series.array.shape[1]
    row_dir, col_dir = np.array(series.orientation[:3]), np.array(series.orientation[3:])
    step, row_step, col_step = series.spacing_mm
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1] = row_dir * col_step, -col_dir * row_step  # j runs up the rows
    affine[:3, 2], affine[:3, 3] = np.cross(row_dir, col_dir) * step, col_dir * row_step * (rows - 1)
    affine[:2] *= -1  # LPS -> RAS
    assert np.linalg.det(affine[:3, :3]) < 0
    nib.save(nib.Nifti1Image(np.transpose(series.array[:, ::-1], (2, 1, 0)), affine), tmp_path / "ct.nii.gz")
    volume, _ = load_nifti(ManifestEntry(tmp_path / "ct.nii.gz", "P1", None, "CT", 2, tmp_path / "m.csv"))
    np.testing.assert_array_equal(volume.array, series.array)
    assert volume.orientation == pytest.approx(series.orientation)
    assert volume.spacing_mm == pytest.approx(series.spacing_mm)


def test_nifti_4d_keeps_the_first_volume(tmp_path):
    import nibabel as nib

    entry = nifti_entry("example4d.nii.gz", tmp_path)
    volume, _ = load_nifti(entry)
    assert volume.array.shape == (24, 96, 128)
    assert volume.spacing_mm == pytest.approx((2.2, 2.0, 2.0))
    np.testing.assert_allclose(volume.array[3], nib.load(entry.path).get_fdata()[:, ::-1, 3, 0].T)
    assert volume.warnings == ["4D NIfTI with 2 volumes: kept the first"]


def test_nifti_with_a_trailing_axis_of_one_is_a_3d_image_without_a_warning(tmp_path):
    import nibabel as nib

    image = nib.load(nifti_entry("anatomical.nii", tmp_path).path)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[..., None], image.affine), tmp_path / "anat4d.nii")
    volume, _ = load_nifti(ManifestEntry(tmp_path / "anat4d.nii", "P1", None, "MR", 2, tmp_path / "m.csv"))
    assert volume.array.shape == (25, 41, 33) and volume.warnings == []


def test_nifti_4d_reads_only_its_first_volume(tmp_path):
    """A 4D series (fMRI, DCE, DWI) is not held whole as float32 to keep one volume of it."""
    import tracemalloc

    import nibabel as nib

    entry = nifti_entry("functional.nii", tmp_path)  # (17, 21, 3, 20) int16
    full_float32 = int(np.prod(nib.load(entry.path).shape)) * 4
    tracemalloc.start()
    try:
        volume, _ = load_nifti(entry)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_allclose(volume.array, nib.load(entry.path).get_fdata()[:, ::-1, :, 0].T)
    assert peak < full_float32 / 2, f"peak {peak} bytes; all 20 volumes as float32 are {full_float32}"


def test_nifti_through_a_manifest_into_the_lake(lake, tmp_path):
    anatomical = nifti_entry("anatomical.nii", tmp_path).path
    four_d = nifti_entry("example4d.nii.gz", tmp_path).path
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"path,patient_id,modality\n{anatomical},P1,MR\n{four_d},P2,MR\n")
    counts = ingest_images(lake, [], manifest=manifest)
    assert counts["images"] == 2 and counts["rejected"] == 0 and counts["warning_kinds"] == {
        "ND NIfTI with N volumes": 1}
    rows = {r["patient_id"]: r for r in lake.read("images").to_pylist()}
    assert rows["P1"]["n_slices"] == 25 and rows["P1"]["spacing_mm"] == [2.0, 2.0, 2.0]
    assert rows["P1"]["tensor_shape"] == [64, 256, 256] and rows["P2"]["original_shape"] == [24, 96, 128]
    assert json.loads(rows["P2"]["preprocessing"])["preset"] == "mr-volume"


def test_non_finite_voxels_are_replaced_with_a_warning_or_rejected(lake, tmp_path):
    import nibabel as nib

    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6) + 10
    data[0, :2, :] = np.nan
    data[1, 0, 0] = np.inf
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "holes.nii.gz")
    nib.save(nib.Nifti1Image(np.full((4, 5, 6), np.nan, np.float32), np.eye(4)), tmp_path / "void.nii.gz")
    volume, _ = load_nifti(ManifestEntry(tmp_path / "holes.nii.gz", "P1", None, "MR", 2, tmp_path / "m.csv"))
    assert np.isfinite(volume.array).all() and volume.array.min() == 22 == data[0, 2, 0]  # the smallest finite
    assert volume.warnings == ["13 non-finite pixel value(s) (10.8%) set to the smallest finite value"]
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,patient_id\nholes.nii.gz,P1\nvoid.nii.gz,P2\nholes.nii.gz,P3\n")
    counts = ingest_images(lake, [], manifest=manifest)
    assert counts["images"] == 1 and counts["rejected"] == 2
    reasons = {r["location"]: r for r in lake.read("rejects").to_pylist()}
    assert "no finite pixel value" in reasons["manifest.csv row 3"]["reason"]
    assert "already listed on row 2" in reasons["row 4"]["reason"] and reasons["row 4"]["raw"] == "holes.nii.gz,P3"
    [row] = lake.read("images").to_pylist()
    assert row["patient_id"] == "P1"
    assert np.isfinite(TensorStore(lake).read(row["tensor_file"], row["tensor_row"])).all()


# -- PNG + manifest, end to end ----------------------------------------------------------------------------
@pytest.fixture
def xray_manifest(tmp_path):
    from PIL import Image as PILImage

    images = np.load(shared_data("images", "pneumoniamnist_subset.npz"))["test_images"][:30]
    folder = tmp_path / "png"
    folder.mkdir()
    rows = ["path,patient_id,study_date,modality,label"]
    for i, image in enumerate(images):
        PILImage.fromarray(image).save(folder / f"xr{i:02d}.png")
        rows.append(f"png/xr{i:02d}.png,PT{i:03d},2021-03-{1 + i % 28:02d},CR,{i % 2}")
    rows.insert(5, "png/missing.png,PT999,,CR,0")  # CSV row 6 (the header is row 1)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    config = tmp_path / "keep.yaml"
    config.write_text(KEEP_CONFIG)
    return images, manifest, config


def test_png_manifest_round_trips_and_missing_row_is_rejected(lake, xray_manifest):
    images, manifest, config = xray_manifest
    counts = ingest_images(lake, [], manifest=manifest, config_path=config)
    assert counts["images"] == 30 and counts["rejected"] == 1 and counts["files"] == 31
    table = lake.read("images").to_pandas().set_index("patient_id")
    assert len(table) == 30
    store = TensorStore(lake)
    for i in (0, 7, 29):
        row = table.loc[f"PT{i:03d}"]
        tensor = store.read(row.tensor_file, row.tensor_row)
        np.testing.assert_array_equal(tensor, images[i].astype(np.float32))
        assert row.modality == "CR" and list(row.original_shape) == [28, 28] and row.n_slices == 1
    assert str(table.loc["PT001"].study_date) == "2021-03-02 23:59:59.999999+00:00"  # a date: known at its end
    [reject] = lake.read("rejects").to_pylist()
    assert reject["source"] == str(manifest) and reject["location"] == "row 6"
    assert "png/missing.png" in reject["reason"] and reject["raw"].startswith("png/missing.png,PT999")
    again = ingest_images(lake, [], manifest=manifest, config_path=config)
    assert again["images"] == 30 and lake.read("images").num_rows == 30  # merge on image_id


def test_a_rejected_manifest_row_is_its_files_only_reject(lake, xray_manifest, tmp_path):
    images, manifest, config = xray_manifest
    lines = manifest.read_text().splitlines()
    lines[2] = lines[2].replace("2021-03-02", "2021-13-02")  # xr01.png: an impossible date
    manifest.write_text("\n".join(lines) + "\n")
    counts = ingest_images(lake, [manifest.parent / "png"], manifest=manifest, config_path=config)
    reasons = lake.read("rejects").column("reason").to_pylist()
    assert counts["images"] == 29 and counts["rejected"] == 2 and len(reasons) == 2  # that row and missing.png
    assert counts["files"] == 31  # the 30 PNGs, each counted once, and the missing one
    assert not any("not listed in a manifest" in r for r in reasons)


def test_bad_study_dates_share_one_reason_that_names_no_date(xray_manifest):
    """A date is an identifier: the reason names the column and the fix, the reject's raw text keeps the row, and
    rows with the same problem share one reason (one line with a count in `lake status`)."""
    from ingest.images.volumes import read_manifest

    images, manifest, config = xray_manifest
    lines = manifest.read_text().splitlines()
    lines[2] = lines[2].replace("2021-03-02", "1961-13-02")
    lines[3] = lines[3].replace("2021-03-03", "DOB 04/07/1961")
    manifest.write_text("\n".join(lines) + "\n")
    entries, rejects, _ = read_manifest(manifest)
    dated = [r for r in rejects if r.reason.startswith("study_date")]
    assert [r.location for r in dated] == ["row 3", "row 4"]
    assert dated[0].reason == dated[1].reason and "1961" not in dated[0].reason
    assert "1961-13-02" in dated[0].raw and "DOB 04/07/1961" in dated[1].raw


def test_png_default_preset_resizes_and_scales(lake, xray_manifest):
    images, manifest, _ = xray_manifest
    ingest_images(lake, [], manifest=manifest)
    row = lake.read("images").to_pylist()[0]
    tensor = TensorStore(lake).read(row["tensor_file"], row["tensor_row"])
    assert tensor.shape == (224, 224) and tensor.dtype == np.float16
    assert 0 <= tensor.min() < 0.1 and 0.9 < tensor.max() <= 1  # min-max, then linear resize
    assert json.loads(row["preprocessing"])["preset"] == "radiograph"


def test_image_file_without_manifest_is_rejected(lake, xray_manifest, tmp_path):
    counts = ingest_images(lake, [tmp_path / "png" / "xr00.png"])
    assert counts["images"] == 0 and counts["rejected"] == 1
    assert "not listed in a manifest" in lake.read("rejects").column("reason")[0].as_py()


def test_dicom_folders_into_the_lake(lake, tmp_path):
    garbage = tmp_path / "in" / "garbage.dcm"
    garbage.parent.mkdir()
    garbage.write_bytes(b"\x00not dicom at all" * 64)
    sources = [dicomdir_series("98892001"), dicomdir_series("77654033", "CT2"),
               dicom_test_file("CT_small.dcm"), dicom_test_file("JPEG-lossy.dcm"), garbage.parent]
    counts = ingest_images(lake, sources)
    assert counts["images"] == 4 and counts["slices"] == 2 + 5 + 4 + 1 and counts["rejected"] == 2
    assert counts["warning_kinds"]["gap in slice positions"] == 1
    table = lake.read("images").to_pandas().set_index("n_slices")
    ct5 = table.loc[5]
    assert list(ct5.tensor_shape) == [16, 64, 64] and list(ct5.spacing_mm) == pytest.approx([2.5, 0.488281,
                                                                                                0.488281])
    tensor = TensorStore(lake).read(ct5.tensor_file, ct5.tensor_row)
    assert tensor.dtype == np.float16 and 0 <= tensor.min() and tensor.max() <= 1
    assert {"name": "Window", "level": -600.0, "width": 1500.0} in json.loads(ct5.preprocessing)["steps"]
    assert "gap in slice positions" in table.loc[4].warnings and table.loc[5].warnings == ""
    reasons = sorted(lake.read("rejects").column("reason").to_pylist())
    assert reasons[0].startswith("JPEG-lossy.dcm") and reasons[1].startswith("garbage.dcm")
    assert ingest_images(lake, sources[:1])["images"] == 2 and lake.read("images").num_rows == 4
    ingest_images(lake, sources[:1])  # this replaces every image of the previous run's tensor file
    referenced = set(lake.read("images").column("tensor_file").to_pylist())
    assert len(referenced) == 2  # the first run's file (2 images still in use) and this run's
    assert {p.relative_to(lake.path).as_posix() for p in lake.tensor_dir.glob("*.arrow")} == referenced
    for _, row in lake.read("images").to_pandas().iterrows():
        TensorStore(lake).read(row.tensor_file, row.tensor_row)


def test_a_copied_instance_is_kept_once_and_its_copy_rejected(lake, tmp_path):
    import shutil

    series = dicomdir_series("98892001", "CT5N")
    for export in ("export1", "export2"):  # the same export twice: 5 instances, not a 10-slice volume
        shutil.copytree(series, tmp_path / "in" / export)
    counts = ingest_images(lake, [tmp_path / "in"])
    assert (counts["images"], counts["slices"], counts["rejected"]) == (1, 5, 5)
    assert lake.read("images").column("n_slices").to_pylist() == [5]
    reasons = lake.read("rejects").column("reason").to_pylist()
    assert all("the same instance (SOPInstanceUID) as" in r and "export1" in r for r in reasons)


def test_workers_give_the_same_rows(lake, tmp_path):
    from ingest.lake import Lake

    sources = [dicomdir_series("98892001", "CT5N"), dicom_test_file("CT_small.dcm")]
    ingest_images(lake, sources)
    other = Lake(tmp_path / "other")
    ingest_images(other, sources, workers=2)
    columns = ["image_id", "tensor_shape", "spacing_mm"]
    one, two = (x.read("images", columns).sort_by("image_id") for x in (lake, other))
    assert one.num_rows == 2 and one == two


def test_cli_summarises_and_exits_2_on_rejects(tmp_path):
    app, ingest_app = typer.Typer(), typer.Typer()
    app.add_typer(ingest_app, name="ingest")
    register(ingest_app)
    runner = CliRunner()
    lake = tmp_path / "lake"
    ct2 = dicomdir_series("77654033", "CT2")
    ok = runner.invoke(app, ["ingest", "images", str(ct2), "--lake", str(lake)])
    assert ok.exit_code == 0, ok.output
    assert "gap in slice positions" in ok.output
    jpeg = dicom_test_file("JPEG-lossy.dcm")
    bad = runner.invoke(app, ["ingest", "images", str(jpeg), "--lake", str(lake)])
    assert bad.exit_code == 2 and "rejected" in bad.output


# -- transforms and config ---------------------------------------------------------------------------------
@pytest.mark.parametrize("transform, kwargs, input_shape, expected_shape", [
    (Resample, {"spacing_mm": (2.0, 2.0)}, (10, 12), (5, 6)),
    (Resample, {"spacing_mm": (3.0, 1.0, 1.0)}, (6, 8, 8), (2, 8, 8)),
    (Resize, {"size": (7, 9)}, (10, 12), (7, 9)),
    (Resize, {"size": (3, 16, 16)}, (5, 8, 8), (3, 16, 16)),
    (CropOrPad, {"size": (8, 8)}, (5, 12), (8, 8)),
    (CropOrPad, {"size": (2, 4, 4)}, (5, 3, 6), (2, 4, 4)),
    (Window, {"level": 40, "width": 400}, (4, 6), (4, 6)),
    (ZScore, {}, (3, 4, 5), (3, 4, 5)),
    (MinMax, {}, (4, 6), (4, 6)),
])
def test_transform_shapes(transform, kwargs, input_shape, expected_shape):
    array = np.random.default_rng(0).normal(size=input_shape).astype(np.float32)
    out = transform(**kwargs)(Image(array, (1.0,) * len(input_shape)))
    assert out.array.shape == expected_shape and out.array.dtype == np.float32


def test_transform_values():
    hu = np.array([[-2000, -1350, -600, 150, 3000]], np.float32)
    np.testing.assert_allclose(Window(-600, 1500)(Image(hu)).array, [[0, 0, 0.5, 1, 1]])
    z = ZScore()(Image(np.array([1, 2, 3, 4], np.float32))).array
    assert z.mean() == pytest.approx(0) and z.std() == pytest.approx(1)
    assert MinMax()(Image(np.full((2, 2), 5, np.float32))).array.max() == 0
    padded = CropOrPad((4,), value=-1)(Image(np.array([1, 2], np.float32))).array
    np.testing.assert_array_equal(padded, [-1, 1, 2, -1])
    resampled = Resample((2.0, 2.0))(Image(np.ones((10, 10), np.float32), (1.0, 1.0)))
    assert resampled.spacing == (2.0, 2.0) and np.allclose(resampled.array, 1)
    resized = Resize((5, 5))(Image(np.ones((10, 10), np.float32), (1.0, 0.5)))
    assert resized.spacing == pytest.approx((2.0, 1.0))
    assert Resample((2.0, 2.0))(Image(np.ones((10, 10), np.float32), None)).array.shape == (10, 10)
    with pytest.raises(ValueError, match="2 axes given but the image has 3"):
        CropOrPad((4, 4))(Image(np.ones((2, 4, 4), np.float32)))
    steps = Compose((Window(40, 400), CropOrPad((2, 2)))).describe()
    assert steps == [{"name": "Window", "level": 40, "width": 400}, {"name": "CropOrPad", "size": (2, 2),
                                                                     "value": 0.0}]


def test_default_config_presets():
    config = load_config()
    assert {name: (w.level - w.width / 2, w.level + w.width / 2) for name, w in config.windows.items()} == {
        "lung": (-1350, 150), "mediastinum": (-160, 240), "brain": (0, 80), "bone": (-500, 1300)}
    assert config.preset_for("CT", 3).name == "ct-volume" and config.preset_for("ct", 2).name == "ct-slice"
    assert config.preset_for("US", 3).name == "volume-default"
    assert config.preset_for(None, 2).name == "image-default"


@pytest.mark.parametrize("change, message", [
    ({"colour": "rgb"}, "Extra inputs are not permitted"),
    ({"presets": [{"name": "x", "normalize": "window", "window": "liver"}]}, "unknown window"),
    ({"presets": [{"name": "x", "modalities": ["CT"]}]}, "no catch-all preset"),
    ({"presets": [{"name": "x", "ndim": 2, "size": [1, 2, 3]}]}, "size has 3 values but ndim is 2"),
])
def test_config_validation(tmp_path, change, message):
    import yaml

    raw = {"windows": {"lung": {"level": -600, "width": 1500}},
           "presets": [{"name": "all"}], **change}
    path = tmp_path / "images.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)
    minimal = ImagesConfig.model_validate({"windows": {}, "presets": [{"name": "all"}]})
    assert minimal.preset_for("CT", 3).name == "all"


# -- tensor store ------------------------------------------------------------------------------------------
def test_tensor_store_round_trip_is_zero_copy(lake):
    store = TensorStore(lake)
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=shape).astype(np.float16) for shape in [(4, 5), (2, 3, 3), (7,)]]
    locations = store.write(arrays)
    assert [row for _, row in locations] == [0, 1, 2] and len({f for f, _ in locations}) == 1
    file = locations[0][0]
    assert (lake.path / file).parent == lake.tensor_dir and not list(lake.tensor_dir.glob(".*.tmp"))
    for array, (file, row) in zip(arrays, locations, strict=True):
        got = store.read(file, row)
        np.testing.assert_array_equal(got, array)
        assert got.dtype == np.float16 and not got.flags.writeable and not got.flags.owndata
    assert np.shares_memory(store.read(file, 0), store.read(file, 0))
    assert TensorStore(lake).write([np.zeros(3, np.float32)])[0] != locations[0]
    with pytest.raises(IndexError, match="row 3 out of range"):
        store.read(file, 3)
    with pytest.raises(ValueError, match="float16 or all float32"):
        store.write([np.zeros(2, np.float16), np.zeros(2, np.float32)])


def test_a_failed_image_run_is_recorded_with_what_it_committed(lake, xray_manifest, monkeypatch):
    from ingest.images import pipeline

    _, manifest, config = xray_manifest
    flush, calls = pipeline._flush, []

    def fail_second(*args):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return flush(*args)

    monkeypatch.setattr(pipeline, "BATCH_IMAGES", 10)
    monkeypatch.setattr(pipeline, "_flush", fail_second)
    with pytest.raises(OSError, match="disk full"):
        ingest_images(lake, [], manifest=manifest, config_path=config)
    [run] = lake.read("manifest").to_pylist()
    counts = json.loads(run["counts"])
    assert run["status"] == "failed" and counts["error"] == "OSError"
    assert counts["committed"] == 10 == lake.read("images").num_rows


def test_the_tensor_store_reads_only_the_lakes_own_tensor_files(tmp_path):
    """An ``images`` row of a lake from elsewhere cannot make the app or a training read a file outside the lake
    (``../other/_tensors/...``, an absolute path)."""
    from ingest.lake import Lake

    ours, other = Lake(tmp_path / "ours"), Lake(tmp_path / "other")
    [(mine, row)] = TensorStore(ours).write([np.ones((2, 2), np.float32)])
    [(theirs, _)] = TensorStore(other).write([np.zeros((2, 2), np.float32)])
    store = TensorStore(ours)
    assert store.read(mine, row).sum() == 4
    for outside in (f"../other/{theirs}", str(other.path / theirs), f"_tensors/../../other/{theirs}"):
        with pytest.raises(FileNotFoundError, match="outside the lake"):
            store.read(outside, 0)


@pytest.mark.parametrize("transform", [Window(-600, 1500), ZScore(), MinMax()], ids=lambda t: type(t).__name__)
def test_normalisation_makes_one_new_array_not_two(transform):
    """A volume is held whole while it is preprocessed: a 1,000-slice 512x512 CT series (1 GB in float32) peaked at
    3.3 GB, as the window made two volume-sized temporaries. Each normalisation now makes one (its output)."""
    import tracemalloc

    array = np.random.default_rng(0).normal(0, 500, (16, 128, 128)).astype(np.float32)
    tracemalloc.start()
    try:
        out = transform(Image(array, (1.0, 1.0, 1.0))).array
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == array.shape and out.dtype == np.float32
    assert peak < 1.2 * array.nbytes
