"""A small lake and trained run for the app tests, built once per session (about 20-30 s on 2 cores).

30 synthetic patients (``ingest.synth``) ingested like ``tumorboard ingest`` does (FHIR, MAF, DICOM with
``configs/images_ct_small.yaml``), then a tiny run (EHR + genomics + a ``test_resnet`` image encoder) trained
and evaluated with few bootstrap resamples, so every page has predictions, attributions and metrics to show.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from unittest.mock import patch

import pytest

SMALL_CT_IMAGES = Path(__file__).resolve().parents[2] / "configs" / "images_ct_small.yaml"
TINY_RUN = ["train.epochs=2", "train.batch_size=16", "train.patience=2", "train.device=cpu",
            "fusion.out_dim=16",
            "modalities.ehr.encoder_kwargs={hidden_dim: 16, out_dim: 8}",
            "modalities.genomics.encoder_kwargs={hidden_dim: 16, out_dim: 8}",
            "modalities.image.enabled=true", "data.images.max_slices=4", "data.images.image_size=32",
            "modalities.image.encoder_kwargs={model_name: test_resnet, in_chans: 1, out_dim: 8}",
            "split.val_fraction=0.25", "split.test_fraction=0.25", "tasks.diagnosis.modalities=[image]",
            "tasks.survival.response_link=true",
            "data.index.grace_days=1"]  # the biopsy's genomics, dated by day on the diagnosis day, as the presets


@dataclass(frozen=True)
class AppData:
    """``lake`` and ``runs`` (holding the evaluated run ``runs/tiny``), plus a folder with no runs."""

    lake: Path
    runs: Path
    no_runs: Path


@pytest.fixture(scope="session")
def app_data(tmp_path_factory) -> AppData:
    from fusion.config import load_config
    from fusion.data import mean_image
    from fusion.evaluate import evaluate_run
    from fusion.train import train
    from ingest.lake import Lake
    from ingest.synth import SynthConfig, generate_cohort
    from ingest.synth.load import ingest_cohort

    root = tmp_path_factory.mktemp("app")
    synth = root / "synth"
    generate_cohort(synth, SynthConfig(n_patients=30, seed=3, png=False))
    lake = Lake(root / "lake")
    ingest_cohort(synth, lake, images="dicom", images_config=SMALL_CT_IMAGES)
    runs = root / "runs"
    # its 7 imaged training patients are fewer than MIN_REFERENCE_PATIENTS: the pages are shown the integrated-
    # gradient map of a larger cohort's run (tests/fusion/test_predict.py tests the minimum)
    with patch("fusion.train.mean_image", partial(mean_image, min_patients=1)):
        train(load_config(None, TINY_RUN), lake.path, runs / "tiny")
    evaluate_run(runs / "tiny", retrain_ablations=False, n_boot=10)
    (root / "no_runs").mkdir()
    return AppData(lake.path, runs, root / "no_runs")
