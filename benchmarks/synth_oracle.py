"""Generation time and oracle concordance of the synthetic cohort (``ingest.synth``).

    python benchmarks/synth_oracle.py [--patients 1000] [--seed 0] [--bundles]

Prints the wall time to generate the cohort into a temp dir, then Harrell's C-index (scikit-survival
``concordance_index_censored``, higher log-hazard = higher risk) of the true log-hazard ("oracle")
and of each modality's part alone, on overall survival (and on PFS for reference). Targets: oracle
0.75-0.85, each part <= oracle - 0.05, 1000 patients in well under a minute.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from sksurv.metrics import concordance_index_censored

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.synth import SynthConfig, generate_cohort  # noqa: E402

PARTS = ("log_hazard", "log_hazard_image", "log_hazard_genomics", "log_hazard_ehr", "log_hazard_treatment")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bundles", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = generate_cohort(
            Path(tmp) / "cohort", SynthConfig(n_patients=args.patients, seed=args.seed, bundles=args.bundles)
        )
        seconds = time.perf_counter() - start
        truth = pd.read_parquet(Path(tmp) / "cohort" / "truth.parquet")
    print(
        f"generated {summary['patients']} patients in {seconds:.1f} s "
        f"({sum(summary['resources'].values())} FHIR resources, {summary['dicom_files']} DICOM files, "
        f"{summary['variants']} variants)"
    )
    print(f"censored (OS): {1 - truth['os_event'].mean():.1%}; deaths {summary['deaths']}")
    print(f"{'score':<24}{'C-index OS':>12}{'C-index PFS':>13}")
    for col in PARTS:
        c_os = concordance_index_censored(
            truth["os_event"].to_numpy(), truth["os_time"].to_numpy(), truth[col].to_numpy()
        )[0]
        c_pfs = concordance_index_censored(
            truth["pfs_event"].to_numpy(), truth["pfs_time"].to_numpy(), truth[col].to_numpy()
        )[0]
        name = "oracle (log_hazard)" if col == "log_hazard" else col.removeprefix("log_hazard_") + " part"
        print(f"{name:<24}{c_os:>12.3f}{c_pfs:>13.3f}")


if __name__ == "__main__":
    main()
