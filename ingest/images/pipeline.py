"""``ingest_images``: DICOM / NIfTI / PNG-JPEG-TIFF files -> preprocessed tensors + the ``images`` table.

Steps: discover files; read every DICOM header and group/sort series; decode and preprocess one image at a
time (optionally in worker processes); write tensors in batches to the tensor store and rows to ``images``
(merge on ``image_id``, so re-ingesting the same files replaces their rows); keep what failed in ``rejects``;
record the run in ``manifest``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa

from ingest.images import dicom
from ingest.images.preprocess import ImagesConfig, load_config, preprocess
from ingest.images.records import Reject, Volume
from ingest.images.store import TensorStore
from ingest.images.volumes import ManifestEntry, is_nifti, is_raster, load_nifti, load_raster, read_manifest
from ingest.lake import one_writer
from ingest.schema import schema_for

BATCH_BYTES = 256 * 2**20
"""Tensor bytes buffered before a tensor file and an ``images`` commit are written."""
BATCH_IMAGES = 512

Progress = Callable[[str, int, int], None]
"""``progress(phase, done, total)``: phase is ``"reading headers"`` or ``"decoding"``, counts are files."""


@dataclass
class _Job:
    kind: str  # dicom | nifti | raster
    item: dicom.Series | ManifestEntry
    n_files: int


@dataclass
class _Result:
    row: dict | None = None
    tensor: np.ndarray | None = None
    rejects: list[Reject] = field(default_factory=list)
    n_files: int = 0


@one_writer
def ingest_images(lake, paths: list[Path], *, manifest: Path | None = None, config_path: Path | None = None,
                  workers: int = 1, progress: Progress | None = None) -> dict:
    """Ingest image files and folders into ``lake``.

    Args:
        lake: an :class:`ingest.lake.Lake`.
        paths: DICOM files or folders (searched recursively; whole studies), NIfTI and PNG/JPEG/TIFF files
            (these need a row in ``manifest``).
        manifest: CSV with ``path`` (relative to the CSV), ``patient_id``, optional ``study_date`` and
            ``modality``; its files are ingested even when not under ``paths``.
        config_path: preprocessing config (default ``configs/images.yaml``).
        workers: processes that decode and preprocess images (1 = in this process).
        progress: optional callback ``progress(phase, done, total)``.

    Returns:
        Counts: ``files``, ``images``, ``slices``, ``rejected``, ``skipped``, ``warnings`` (images with at
        least one warning) and ``warning_kinds`` (warning kind -> number of images).
    """
    started = datetime.now(UTC)
    config = load_config(config_path)
    files, skipped = dicom.discover(list(paths))
    rejects: list[Reject] = []
    entries: list[ManifestEntry] = []
    named: set[Path] = set()  # files the manifest names, on kept or rejected rows
    if manifest is not None:
        manifest = Path(manifest)
        entries, rejects, named = read_manifest(manifest)
    n_bad_rows = len(rejects)
    listed = {entry.path for entry in entries}
    manifest_file = manifest.resolve() if manifest is not None else None
    dicom_files = []
    for file in files:
        if file == manifest_file or file in named:
            continue
        if is_nifti(file) or is_raster(file):
            rejects.append(Reject(str(file), f"{file.name}: not listed in a manifest, so its patient is"
                                             " unknown; pass --manifest CSV with a row (path, patient_id)"))
        else:
            dicom_files.append(file)

    headers = []
    for done, file in enumerate(dicom_files, start=1):
        header = dicom.read_header(file)
        if isinstance(header, dicom.Header):
            headers.append(header)
        elif isinstance(header, Reject):
            rejects.append(header)
        else:
            skipped += 1
        if progress is not None:
            progress("reading headers", done, len(dicom_files))
    series, group_rejects = dicom.group_series(headers)
    rejects += group_rejects

    jobs = [_Job("dicom", s, len(s.headers)) for s in series]
    jobs += [_Job("nifti" if is_nifti(e.path) else "raster", e, 1) for e in entries
             if is_nifti(e.path) or is_raster(e.path)]
    rejects += [Reject(str(e.path), f"{e.path.name}: unsupported file type; the manifest lists NIfTI"
                                    " (.nii, .nii.gz) and PNG/JPEG/TIFF files (DICOM is read directly)",
                       f"{e.manifest.name} row {e.row}")
                for e in entries if not (is_nifti(e.path) or is_raster(e.path))]

    counts = Counter(images=0, slices=0, warnings=0)
    warning_kinds: Counter[str] = Counter()
    store = TensorStore(lake)
    buffer: list[_Result] = []
    total = sum(job.n_files for job in jobs)
    done = committed = 0
    sources = [str(p) for p in paths] + ([str(manifest)] if manifest is not None else [])
    with lake.failure_recorded("ingest images", sources, lambda: {**counts, "committed": committed},
                               started_at=started):
        for result in _run_all(jobs, config, workers):
            rejects += result.rejects
            done += result.n_files
            if result.row is not None:
                buffer.append(result)
                counts["images"] += 1
                counts["slices"] += result.row["n_slices"]
                if result.row["warnings"]:
                    counts["warnings"] += 1
                    warning_kinds.update({_warning_kind(w) for w in result.row["warnings"].split("; ")})
            if buffer and (len(buffer) >= BATCH_IMAGES or sum(r.tensor.nbytes for r in buffer) >= BATCH_BYTES):
                _flush(lake, store, buffer)
                committed, buffer = committed + len(buffer), []
            if progress is not None:
                progress("decoding", done, total)
        _flush(lake, store, buffer)
    if lake.has("images"):  # a re-ingest replaced these files' images: their tensors would only fill the disk
        store.prune(set(lake.read("images", ["tensor_file"]).column("tensor_file").to_pylist()))
    lake.add_rejects([r.as_row() for r in rejects], modality="images")
    n_files = len(({f for f in files if f != manifest_file} - named) | listed) + n_bad_rows
    summary = {"files": n_files, **counts, "rejected": len(rejects), "skipped": skipped,
               "warning_kinds": dict(warning_kinds.most_common())}
    lake.record_run("ingest images", sources, summary, started_at=started,
                    status="partial" if rejects else "ok")
    return summary


def _run_all(jobs: list[_Job], config: ImagesConfig, workers: int) -> Iterator[_Result]:
    if workers <= 1 or len(jobs) < 2:
        yield from map(_run, jobs, repeat(config))
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        yield from pool.map(_run, jobs, repeat(config), chunksize=1)


def _run(job: _Job, config: ImagesConfig) -> _Result:
    """Load and preprocess one image (runs in a worker process when ``workers > 1``)."""
    loader = {"dicom": dicom.load_series, "nifti": load_nifti, "raster": load_raster}[job.kind]
    try:
        volume, rejects = loader(job.item)
    except Exception as exc:  # noqa: BLE001 (one damaged image must not stop the other images)
        files = [h.path for h in job.item.headers] if job.kind == "dicom" else [job.item.path]
        reason = f"unexpected error while reading ({type(exc).__name__}: {exc})"
        return _Result(rejects=[Reject(str(f), f"{f.name}: {reason}") for f in files], n_files=job.n_files)
    if volume is None:
        return _Result(rejects=rejects, n_files=job.n_files)
    try:
        tensor, description, warnings = preprocess(volume.array, volume.spacing_mm, volume.modality, config)
    except (ValueError, MemoryError) as exc:
        reason = f"{Path(volume.source).name}: preprocessing failed ({type(exc).__name__}: {exc})"
        return _Result(rejects=[*rejects, Reject(volume.source, reason)], n_files=job.n_files)
    return _Result(_row(volume, tensor, description, warnings), tensor, rejects, job.n_files)


def _row(volume: Volume, tensor: np.ndarray, description: dict, warnings: list[str]) -> dict:
    return {
        "image_id": volume.image_id,
        "patient_id": volume.patient_id,
        "modality": volume.modality,
        "body_part": volume.body_part,
        "study_date": volume.study_date,
        "study_uid": volume.study_uid,
        "series_uid": volume.series_uid,
        "n_slices": volume.n_slices,
        "original_shape": list(volume.array.shape),
        "spacing_mm": None if volume.spacing_mm is None else list(volume.spacing_mm),
        "orientation": None if volume.orientation is None else list(volume.orientation),
        "tensor_shape": list(tensor.shape),
        "preprocessing": json.dumps(description, sort_keys=True),
        "source": volume.source,
        "n_files": volume.n_files,
        "warnings": "; ".join([*volume.warnings, *warnings]),
    }


def _flush(lake, store: TensorStore, results: Iterable[_Result]) -> None:
    results = list(results)
    if not results:
        return
    locations = store.write([r.tensor for r in results])
    rows = [{**r.row, "tensor_file": file, "tensor_row": row} for r, (file, row) in zip(results, locations,
                                                                                         strict=True)]
    lake.write("images", pa.Table.from_pylist(rows, schema=schema_for("images")), mode="merge")


def _warning_kind(warning: str) -> str:
    """A warning without its numbers, up to the first colon or parenthesis: groups warnings for the summary."""
    head = re.split(r":| \(", warning)[0]
    return re.sub(r"\s+", " ", re.sub(r"\d+(\.\d+)?", "N", head)).strip()[:80]
