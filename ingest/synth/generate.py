"""Orchestrates one synthetic cohort: simulate, write every modality into a temp dir, move it into place."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ingest.synth.cohort import simulate_cohort
from ingest.synth.config import SynthConfig
from ingest.synth.dicom_writer import lung_window_png, write_series
from ingest.synth.fhir_writer import write_fhir
from ingest.synth.genomics_writer import write_genomics
from ingest.synth.phantom import Geometry, ct_volume
from ingest.synth.timeline import Timeline, build_timeline
from ingest.synth.variants import simulate_variants

Progress = Callable[[int, int], None]


def _write_images(
    out: Path,
    truth: pd.DataFrame,
    timeline: Timeline,
    config: SynthConfig,
    rng: np.random.Generator,
    tick: Callable[[], None],
) -> dict[str, int]:
    """DICOM series (``out/dicom``) and, when ``config.png``, key-slice PNGs (``out/png``)."""
    geo = Geometry(config.image_size, config.n_slices, config.pixel_spacing_mm, config.slice_thickness_mm)
    ct = timeline.visits[timeline.visits["kind"] == "ct"].set_index("pidx")["day"]
    index_days = truth["index_date"].dt.tz_convert(None).to_numpy().astype("datetime64[D]")
    dicom_root, png_root = out / "dicom", out / "png"
    dicom_root.mkdir()
    manifest = []
    if config.png:
        png_root.mkdir()
    for i, row in enumerate(truth.itertuples(index=False)):
        if row.has_image:
            study = index_days[i] + np.timedelta64(int(ct.loc[i]), "D")
            hu, key = ct_volume(
                geo,
                rng,
                size_mm=row.nodule_size_mm,
                aggressiveness=row.aggressiveness,
                malignant=row.diagnosis != "benign",
            )
            write_series(
                dicom_root,
                hu,
                geo,
                rng,
                mrn=row.mrn,
                sex=row.sex,
                seed=config.seed,
                birth_date=str(row.birth_date.date()).replace("-", ""),
                study_date=str(study).replace("-", ""),
            )
            if config.png:
                lung_window_png(png_root / f"{row.mrn}.png", hu[key])
                manifest.append(
                    {
                        "path": f"{row.mrn}.png",
                        "patient_id": row.mrn,
                        "study_date": str(study),
                        "modality": "CT",
                    }
                )
        tick()
    if config.png:
        pd.DataFrame(manifest, columns=["path", "patient_id", "study_date", "modality"]).to_csv(
            png_root / "manifest.csv", index=False, lineterminator="\n"
        )
    n_series = int(truth["has_image"].sum())
    return {"series": n_series, "dicom_files": n_series * geo.n_slices, "pngs": len(manifest)}


def _write_truth(path: Path, truth: pd.DataFrame) -> None:
    table = pa.Table.from_pandas(truth, preserve_index=False)
    table = table.cast(
        pa.schema([f.with_type(pa.string()) if f.type == pa.large_string() else f for f in table.schema])
    )
    pq.write_table(table, path)


def _write_all(out: Path, config: SynthConfig, progress: Progress | None) -> dict:
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(5)]
    truth = simulate_cohort(config, streams[0])
    timeline = build_timeline(truth, streams[1])
    n = len(truth)
    total, done = 2 * n + 1, 0

    def tick(k: int = 1) -> None:
        nonlocal done
        done += k
        if progress is not None:
            progress(done, total)

    resources = write_fhir(
        out / "fhir",
        truth,
        timeline,
        streams[2],
        bundles_dir=out / "fhir_bundles" if config.bundles else None,
        progress=tick,
    )
    variants = simulate_variants(truth, streams[3])
    genomics = write_genomics(out / "genomics", truth, variants)
    tick()
    images = _write_images(out, truth, timeline, config, streams[4], tick)
    _write_truth(out / "truth.parquet", truth)
    (out / "synth_config.json").write_text(json.dumps(config.model_dump(mode="json"), indent=2) + "\n")
    return {
        "patients": n,
        "resources": resources,
        "variants": genomics["variants"],
        "sequenced": genomics["samples"],
        "vcfs": genomics["vcfs"],
        "image_series": images["series"],
        "dicom_files": images["dicom_files"],
        "pngs": images["pngs"],
        "deaths": int(truth["os_event"].sum()),
        "diagnosis": {k: int(v) for k, v in truth["diagnosis"].value_counts().sort_index().items()},
        "treatment": {k: int(v) for k, v in truth["treatment"].value_counts().sort_index().items()},
    }


def generate_cohort(
    out: Path, config: SynthConfig, progress: Progress | None = None, *, overwrite: bool = False
) -> dict:
    """Generate a synthetic multimodal lung-nodule cohort under ``out`` (layout in :mod:`ingest.synth`).

    Everything is written to a temporary sibling folder first and renamed into place at the end, so a
    failed run leaves ``out`` untouched.

    Args:
        out: output folder; must be absent or empty unless ``overwrite``.
        config: what to generate.
        progress: called as ``progress(done, total)`` while writing (abstract work units).
        overwrite: replace a non-empty ``out``.

    Returns:
        Summary counts: patients, resources per FHIR type, variants, sequenced, vcfs, image_series,
        dicom_files, pngs, deaths, diagnosis and treatment counts.

    Raises:
        FileExistsError: ``out`` is a file, or a non-empty folder and ``overwrite`` is false.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file; choose a folder path for the synthetic cohort")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; pass overwrite=True (CLI: --overwrite) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tmp.chmod(0o755)
        summary = _write_all(tmp, config, progress)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            out.rename(old / "cohort")
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary
