"""Ingest a generated cohort folder into a lake, as the ``tumorboard ingest`` commands would.

One call for the tests and benchmarks that need a synthetic lake (``make demo`` runs the same steps one by one,
printing each, and also ingests the per-sample VCFs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from ingest.fhir.pipeline import ingest_fhir
from ingest.images.pipeline import ingest_images
from ingest.lake import Lake
from ingest.link import build_crosswalk
from ingest.variants.pipeline import ingest_variants


def ingest_cohort(cohort_dir: str | Path, lake: Lake, *, images: Literal["dicom", "png"] | None = "dicom",
                  images_config: str | Path | None = None, workers: int = 1) -> dict:
    """Ingest ``cohort_dir`` (written by :func:`ingest.synth.generate_cohort`) into ``lake``.

    Steps: the FHIR Bulk export, the MRN crosswalk, the cohort MAF (it holds every sequenced sample; the VCFs
    next to it repeat some of them), then the images: ``"dicom"`` the CT series, ``"png"`` the key-slice PNGs
    through their manifest, None none.

    Args:
        images_config: image preprocessing YAML (default ``configs/images.yaml``).
        workers: processes for the FHIR and image steps.

    Returns:
        ``{"fhir": ..., "variants": ..., "images": ...}``: each step's summary (``images`` None when skipped).
    """
    if images not in ("dicom", "png", None):
        raise ValueError(f"ingest_cohort: images={images!r}; use 'dicom', 'png' or None")
    cohort_dir = Path(cohort_dir)
    genomics = cohort_dir / "genomics"
    summary = {"fhir": ingest_fhir(lake, [cohort_dir / "fhir"], workers=workers)}
    build_crosswalk(lake)
    summary["variants"] = ingest_variants(lake, [genomics / "cohort.maf"], sample_map=genomics / "sample_map.csv",
                                          gene_panel=genomics / "gene_panel.yaml")
    if images == "dicom":
        summary["images"] = ingest_images(lake, [cohort_dir / "dicom"], config_path=images_config, workers=workers)
    elif images == "png":
        summary["images"] = ingest_images(lake, [], manifest=cohort_dir / "png" / "manifest.csv",
                                          config_path=images_config, workers=workers)
    else:
        summary["images"] = None
    return summary
