"""``make demo``'s ingest steps (apps.demo)."""

from __future__ import annotations

from ingest.lake import Lake
from ingest.synth import SynthConfig, generate_cohort


def test_each_ingest_step_of_the_demo_is_a_run_of_its_own(tmp_path):
    """The demo ingested FHIR, variants and images through one Lake object: its three manifest rows (the Data
    page's Ingest runs) shared one run id, as would their rejects."""
    from apps.demo import ingest_demo_cohort

    generate_cohort(tmp_path / "cohort", SynthConfig(n_patients=8, seed=0, png=False))
    ingest_demo_cohort(tmp_path / "cohort", tmp_path / "lake")
    runs = Lake(tmp_path / "lake").read("manifest", ["run_id", "command"]).to_pylist()
    assert sorted(run["command"] for run in runs) == ["ingest fhir", "ingest images", "ingest variants"]
    assert len({run["run_id"] for run in runs}) == 3, runs
