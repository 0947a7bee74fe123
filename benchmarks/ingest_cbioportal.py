"""Benchmark ``tumorboard ingest cbioportal`` on a study of TCGA PanCancer Atlas size: time and peak memory.

Run by hand: ``python benchmarks/ingest_cbioportal.py [--patients 1100] [--genes 25000] [--mutations 100000]
[--work /tmp/tumorboard-bench-cbioportal]``. Writes a synthetic study in the datahub's layout (meta files,
clinical patient and sample files with their ``#`` header lines, a MAF, a discrete copy-number matrix and an
RNA-seq matrix of ``--genes`` genes x one sample per patient) and ingests it into a fresh lake in a fresh
process, printing wall and CPU seconds and the process's peak RSS. Both matrices are read line by line: only the
gene panel's copy-number lines are split, and only the panel's and the 500 most variable genes' expression is
held, so memory should follow what is kept, not the matrices (a 1,100 x 25,000 matrix is 55 MB of text, and
about 2 GB as one pandas frame of strings).
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PANEL_GENES = ["EGFR", "KRAS", "TP53", "STK11", "KEAP1", "BRAF", "PIK3CA", "MET", "ERBB2", "PTEN"]
CLASSES = ["Missense_Mutation", "Silent", "Nonsense_Mutation", "Frame_Shift_Del", "Splice_Site"]


def write_study(folder: Path, patients: int, genes: int, mutations: int, seed: int = 0) -> None:
    """A synthetic study in the cBioPortal datahub's layout (see the module docstring)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    ids = [f"TCGA-{i // 10000:02d}-{i % 10000:04d}" for i in range(patients)]
    samples = [f"{pid}-01" for pid in ids]
    header = ["PATIENT_ID", "AGE", "SEX", "AJCC_PATHOLOGIC_TUMOR_STAGE", "OS_STATUS", "OS_MONTHS", "PFS_STATUS",
              "PFS_MONTHS"]
    with (folder / "data_clinical_patient.txt").open("w") as fh:
        for meta in ("#Patient Identifier", "#Identifier", "#STRING", "#1"):
            fh.write("\t".join([meta] * len(header)) + "\n")
        fh.write("\t".join(header) + "\n")
        for pid in ids:
            fh.write("\t".join([pid, str(rng.randint(30, 90)), rng.choice(["Male", "Female"]),
                                rng.choice(["STAGE I", "STAGE II", "STAGE III", "[Not Available]"]),
                                rng.choice(["0:LIVING", "1:DECEASED"]), f"{rng.uniform(0, 120):.2f}",
                                rng.choice(["0:CENSORED", "1:PROGRESSION"]), f"{rng.uniform(0, 100):.2f}"]) + "\n")
    with (folder / "data_clinical_sample.txt").open("w") as fh:
        fh.write("#Patient\t#Sample\n#\t#\n#STRING\tSTRING\n#1\t1\nPATIENT_ID\tSAMPLE_ID\n")
        fh.writelines(f"{pid}\t{sample}\n" for pid, sample in zip(ids, samples, strict=True))
    with (folder / "data_mutations.txt").open("w") as fh:
        fh.write("Hugo_Symbol\tChromosome\tStart_Position\tReference_Allele\tTumor_Seq_Allele2\t"
                 "Variant_Classification\tTumor_Sample_Barcode\n")
        for _ in range(mutations):
            fh.write(f"{rng.choice(PANEL_GENES + ['TTN', 'MUC16', 'CSMD3'])}\t{rng.randint(1, 22)}\t"
                     f"{rng.randint(1, 10**8)}\tC\tT\t{rng.choice(CLASSES)}\t{rng.choice(samples)}\n")
    names = PANEL_GENES + [f"GENE{i}" for i in range(genes - len(PANEL_GENES))]
    rng.shuffle(names)
    with (folder / "data_cna.txt").open("w") as fh:
        fh.write("Hugo_Symbol\tEntrez_Gene_Id\t" + "\t".join(samples) + "\n")
        calls = ["-2", "-1", "0", "0", "0", "0", "1", "2"]
        for number, gene in enumerate(names):
            fh.write(f"{gene}\t{number}\t" + "\t".join(rng.choice(calls) for _ in samples) + "\n")
    with (folder / "data_mrna_seq_v2_rsem.txt").open("w") as fh:
        fh.write("Hugo_Symbol\tEntrez_Gene_Id\t" + "\t".join(samples) + "\n")
        for number, gene in enumerate(names):
            scale = rng.choice([1.0, 10.0, 100.0, 1000.0])
            fh.write(f"{gene}\t{number}\t" + "\t".join(f"{rng.expovariate(1 / scale):.4f}" for _ in samples) + "\n")
    for name, kind, datatype, data in [
            ("mrna", "MRNA_EXPRESSION", "CONTINUOUS", "data_mrna_seq_v2_rsem.txt"),
            ("clinical_patient", "CLINICAL", "PATIENT_ATTRIBUTES", "data_clinical_patient.txt"),
            ("clinical_sample", "CLINICAL", "SAMPLE_ATTRIBUTES", "data_clinical_sample.txt"),
            ("mutations", "MUTATION_EXTENDED", "MAF", "data_mutations.txt"),
            ("cna", "COPY_NUMBER_ALTERATION", "DISCRETE", "data_cna.txt")]:
        (folder / f"meta_{name}.txt").write_text(f"cancer_study_identifier: bench\ngenetic_alteration_type: {kind}\n"
                                                  f"datatype: {datatype}\ndata_filename: {data}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1100)
    parser.add_argument("--genes", type=int, default=25000)
    parser.add_argument("--mutations", type=int, default=100_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/tumorboard-bench-cbioportal"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    study = args.work / "study"
    write_study(study, args.patients, args.genes, args.mutations)
    size = sum(p.stat().st_size for p in study.iterdir()) / 1e6
    print(f"study: {args.patients:,} patients, {args.genes:,}-gene copy-number and expression matrices,"
          f" {args.mutations:,} mutations"
          f" ({size:.0f} MB)")
    started, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-m", "apps", "ingest", "cbioportal", str(study), "--lake",
                           str(args.work / "lake")], cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 2):
        sys.exit(f"ingest failed ({done.returncode}):\n{done.stderr[-2000:]}")
    print(f"ingest cbioportal: {wall:.1f} s wall, {after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime:.1f}"
          f" s CPU, peak RSS {after.ru_maxrss / 1024:.0f} MB (exit {done.returncode})")


if __name__ == "__main__":
    main()
