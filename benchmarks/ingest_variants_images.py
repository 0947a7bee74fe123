"""Ingest throughput benchmarks: variants (VCF, MAF) next to bare readers in the same run.

Run by hand: ``python benchmarks/ingest_variants_images.py [--records 100000] [--memory-at N ...]``. Prints
records/s for our readers and for the bare reference readers over the same synthetic files, and their ratio
(aim: within 2x). With ``--memory-at N`` (repeatable), also the peak RSS of ``tumorboard ingest variants`` (a
fresh process; a new lake, then the same file again into it) on a synthetic MAF of N records: the ingest
streams, so the figure should not grow with N.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GENES = ["EGFR", "KRAS", "TP53", "STK11", "KEAP1", "BRAF", "PIK3CA", "NRAS", "MET", "ERBB2", "NF1", "RB1",
         "PTEN", "ARID1A", "SMARCA4", "CDKN2A", "ATM", "APC", "BRCA1", "BRCA2"]
AA = ["Ala", "Arg", "Asn", "Asp", "Cys", "Gln", "Glu", "Gly", "His", "Ile", "Leu", "Lys", "Met", "Phe", "Pro",
      "Ser", "Thr", "Trp", "Tyr", "Val"]
CLASSES = ["Missense_Mutation", "Silent", "Nonsense_Mutation", "Frame_Shift_Del", "Intron", "3'UTR",
           "Splice_Site", "In_Frame_Del"]


def _ann(rng: random.Random, alt: str, gene: str) -> str:
    """Three SnpEff ANN entries: a coding effect, a downstream and an intron effect on other transcripts."""
    pos = rng.randint(1, 1200)
    change = f"p.{rng.choice(AA)}{pos}{rng.choice(AA)}"
    tx = f"ENST{rng.randint(10**10, 10**11 - 1)}"
    coding = (f"{alt}|missense_variant|MODERATE|{gene}|ENSG0001|transcript|{tx}.1|protein_coding|5/20|"
              f"c.{pos * 3}A>G|{change}|{pos * 3 + 100}/4000|{pos * 3}/3600|{pos}/1200||")
    down = (f"{alt}|downstream_gene_variant|MODIFIER|{gene}-AS1|ENSG0002|transcript|ENST0000222.1|"
            f"lncRNA||n.100A>G||||||2000|")
    intron = (f"{alt}|intron_variant|MODIFIER|{gene}|ENSG0001|transcript|ENST0000333.2|protein_coding|4/19|"
              f"c.100+20A>G||||||")
    return ",".join((coding, down, intron))


def make_vcf(path: Path, n: int, seed: int = 0) -> Path:
    """A tumour/normal VCF of ``n`` records with SnpEff ANN and FORMAT GT:AD:DP."""
    rng = random.Random(seed)
    header = [
        "##fileformat=VCFv4.2",
        '##INFO=<ID=DP,Number=1,Type=Integer,Description="Depth">',
        '##INFO=<ID=ANN,Number=.,Type=String,Description="Functional annotations: \'Allele | Annotation |'
        " Annotation_Impact | Gene_Name | Gene_ID | Feature_Type | Feature_ID | Transcript_BioType | Rank |"
        " HGVS.c | HGVS.p | cDNA.pos / cDNA.length | CDS.pos / CDS.length | AA.pos / AA.length | Distance |"
        ' ERRORS / WARNINGS / INFO\' ">',
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        '##FORMAT=<ID=AD,Number=R,Type=Integer,Description="Allelic depths">',
        '##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Depth">',
    ]
    header += [f"##contig=<ID={c},length=250000000>" for c in range(1, 23)]
    header.append("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tTUMOR\tNORMAL")
    per_chrom = n // 22 + 1
    with open(path, "w") as fh:
        fh.write("\n".join(header) + "\n")
        for i in range(n):
            chrom = i // per_chrom + 1
            pos = (i % per_chrom) * 1000 + rng.randint(1, 999)
            ref = rng.choice("ACGT")
            alt = rng.choice([b for b in "ACGT" if b != ref])
            if i % 10 == 0:
                alt = ref + "".join(rng.choice("ACGT") for _ in range(rng.randint(1, 4)))
            dp_t, dp_n = rng.randint(20, 400), rng.randint(20, 400)
            alt_t = rng.randint(1, dp_t)
            info = f"DP={dp_t + dp_n};ANN={_ann(rng, alt, rng.choice(GENES))}"
            fh.write(f"{chrom}\t{pos}\t.\t{ref}\t{alt}\t50\tPASS\t{info}\tGT:AD:DP\t"
                     f"0/1:{dp_t - alt_t},{alt_t}:{dp_t}\t0/0:{dp_n},0:{dp_n}\n")
    return path


def make_maf(path: Path, n: int, seed: int = 0) -> Path:
    """A GDC-style MAF of ``n`` rows (34 columns, ``#version`` header) over 200 TCGA samples."""
    rng = random.Random(seed)
    columns = ["Hugo_Symbol", "Entrez_Gene_Id", "Center", "NCBI_Build", "Chromosome", "Start_Position",
               "End_Position", "Strand", "Variant_Classification", "Variant_Type", "Reference_Allele",
               "Tumor_Seq_Allele1", "Tumor_Seq_Allele2", "dbSNP_RS", "Tumor_Sample_Barcode",
               "Matched_Norm_Sample_Barcode", "HGVSc", "HGVSp", "HGVSp_Short", "Transcript_ID", "Exon_Number",
               "t_depth", "t_ref_count", "t_alt_count", "n_depth", "n_ref_count", "n_alt_count",
               "all_effects", "Allele", "Gene", "Feature", "Consequence", "IMPACT", "FILTER"]
    samples = [f"TCGA-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}-01A" for _ in range(200)]
    with open(path, "w") as fh:
        fh.write("#version 2.4\n" + "\t".join(columns) + "\n")
        for _ in range(n):
            ref = rng.choice("ACGT")
            alt = rng.choice([b for b in "ACGT" if b != ref])
            pos = rng.randint(1, 200_000_000)
            t_depth = rng.randint(20, 400)
            t_alt = rng.randint(1, t_depth)
            gene = rng.choice(GENES)
            aa = rng.randint(1, 1000)
            short = f"p.{rng.choice('ACDEFGHIKLMNPQRSTVWY')}{aa}{rng.choice('ACDEFGHIKLMNPQRSTVWY')}"
            row = [gene, "0", "BI", "GRCh38", f"chr{rng.randint(1, 22)}", str(pos), str(pos), "+",
                   rng.choice(CLASSES), "SNP", ref, ref, alt, "novel", rng.choice(samples), "NORMAL",
                   f"c.{aa * 3}{ref}>{alt}", f"p.Xaa{aa}Yaa", short, "ENST00000275493", "5/20", str(t_depth),
                   str(t_depth - t_alt), str(t_alt), "100", "100", "0",
                   f"{gene},missense_variant,{short},ENST00000275493,;", alt, "ENSG0001", "ENST00000275493",
                   "missense_variant", "MODERATE", "PASS"]
            fh.write("\t".join(row) + "\n")
    return path


def _timed(fn, repeat: int = 1) -> tuple[float, float, object]:
    """(best wall seconds, best CPU seconds of this process, result) over ``repeat`` runs."""
    wall = cpu = float("inf")
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu, out


def _line(label: str, n: int, wall: float, cpu: float) -> None:
    print(f"  {label:<36} {n / wall:>10,.0f} records/s wall ({wall:.2f} s), {n / cpu:>10,.0f} records/s CPU"
          f" ({cpu:.2f} s)")


def _report(label: str, n: int, ours: tuple[float, float], bare: tuple[float, float], bare_label: str) -> None:
    _line(label, n, *ours)
    _line(bare_label, n, *bare)
    print(f"  ratio ours / bare: {ours[0] / bare[0]:.2f}x wall, {ours[1] / bare[1]:.2f}x CPU  (aim <= 2x)")


def bench_variants(n_records: int = 100_000, repeat: int = 3) -> dict[str, float]:
    """Time VCF and MAF ingest next to a bare cyvcf2 loop and a bare ``pandas.read_csv`` on the same files.

    Each reader runs ``repeat`` times (best kept); wall and process CPU time are both reported, since wall
    time on a shared machine depends on the other load.
    """
    import pandas as pd

    from ingest.lake import Lake
    from ingest.variants.maf import maf_variants
    from ingest.variants.pipeline import ingest_variants
    from ingest.variants.vcf import vcf_variants

    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        vcf = make_vcf(tmp / "bench.vcf", n_records)
        maf = make_maf(tmp / "bench.maf", n_records)
        print(f"variants: {n_records:,} records; VCF {vcf.stat().st_size / 1e6:.0f} MB,"
              f" MAF {maf.stat().st_size / 1e6:.0f} MB")

        *ours, parsed = _timed(lambda: vcf_variants(vcf).table, repeat)
        assert parsed.num_rows == n_records
        results.update(vcf_s=ours[0], vcf_cpu_s=ours[1])
        try:
            from cyvcf2 import VCF

            def bare_cyvcf2() -> int:
                count = 0
                for v in VCF(str(vcf)):
                    _ = (v.CHROM, v.POS, v.REF, v.ALT, v.INFO.get("ANN"), v.format("AD"), v.format("DP"))
                    count += 1
                return count

            *bare, count = _timed(bare_cyvcf2, repeat)
            assert count == n_records
            _report("ours: VCF -> Arrow (parse+annotate)", n_records, ours, bare, "bare cyvcf2 loop (same fields)")
            results.update(cyvcf2_s=bare[0], cyvcf2_cpu_s=bare[1])
        except ImportError:
            _line("ours: VCF -> Arrow (parse+annotate)", n_records, *ours)
            print("  cyvcf2 is not installed: no baseline")
        *general, parsed = _timed(lambda: vcf_variants(vcf, columnar=False).table)
        assert parsed.num_rows == n_records
        _line("ours: VCF, per-record path", n_records, *general)
        results.update(vcf_per_record_cpu_s=general[1])
        *lake, counts = _timed(lambda: ingest_variants(Lake(tmp / "lake_vcf"), [vcf]))
        assert counts["variants_written"] == n_records
        _line("ours: VCF -> lake (full ingest)", n_records, *lake)
        results.update(vcf_lake_s=lake[0])

        *ours, parsed = _timed(lambda: maf_variants(maf).table, repeat)
        assert parsed.num_rows == n_records
        *bare, frame = _timed(lambda: pd.read_csv(maf, sep="\t", comment="#", low_memory=False), repeat)
        assert len(frame) == n_records
        _report("ours: MAF -> Arrow", n_records, ours, bare, "bare pandas.read_csv")
        *lake, counts = _timed(lambda: ingest_variants(Lake(tmp / "lake_maf"), [maf]))
        _line("ours: MAF -> lake (full ingest)", n_records, *lake)
        results.update(maf_s=ours[0], maf_cpu_s=ours[1], pandas_s=bare[0], pandas_cpu_s=bare[1],
                       maf_lake_s=lake[0])
    return results


def bench_images(n_slices: int = 300, size: int = 512, repeats: int = 3) -> dict[str, float]:
    """Time DICOM series ingest next to a bare ``pydicom.dcmread(f).pixel_array`` loop over the same files.

    Writes a synthetic CT series (``n_slices`` slices of ``size`` x ``size`` int16, files in shuffled order)
    and reports slices/s (best of ``repeats``) for the bare loop and for ``ingest_images`` with the default CT
    preset: headers, sort by position, decode, HU, resample to 3 x 1.5 x 1.5 mm, lung window, crop/pad to
    96 x 256 x 256, float16 tensor store and Delta commit.
    """
    import copy
    import itertools

    import numpy as np
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    from ingest.images import ingest_images
    from ingest.lake import Lake

    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    body = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 2.3) ** 2).astype(np.int16) * 1000
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = tmp / "series"
        folder.mkdir()
        series_uid = generate_uid()
        for i in rng.permutation(n_slices):
            ds = copy.deepcopy(template)
            ds.SeriesInstanceUID, ds.SOPInstanceUID = series_uid, generate_uid()
            ds.Rows = ds.Columns = size
            ds.InstanceNumber = int(i) + 1
            ds.ImagePositionPatient = [-160.0, -160.0, -300.0 + 1.25 * int(i)]
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.PixelSpacing = [320 / size, 320 / size]
            ds.PixelData = (body + rng.integers(0, 200, (size, size), dtype=np.int16) + 24).tobytes()
            ds.save_as(folder / f"{rng.integers(1 << 30):010d}.dcm")
        files = sorted(folder.iterdir())
        ingest_images(Lake(tmp / "warm-up"), files[:2])  # imports and the first Delta commit, not timed

        def bare() -> None:
            for file in files:
                pydicom.dcmread(file).pixel_array  # noqa: B018

        runs = itertools.count()

        def ours() -> None:  # a fresh lake per run
            counts = ingest_images(Lake(tmp / f"lake{next(runs)}"), [folder])
            assert counts["images"] == 1 and counts["slices"] == n_slices, counts

        t_bare = min(_timed(bare)[0] for _ in range(repeats))
        t_ours = min(_timed(ours)[0] for _ in range(repeats))
    print(f"images: {n_slices} CT slices of {size}x{size}, best of {repeats}")
    print(f"  {'ours: DICOM series -> lake':<34} {n_slices / t_ours:>12,.0f} slices/s   ({t_ours:.2f} s)")
    print(f"  {'bare pydicom dcmread+pixel_array':<34} {n_slices / t_bare:>12,.0f} slices/s   ({t_bare:.2f} s)")
    print(f"  ratio ours / bare time: {t_ours / t_bare:.2f}x  (aim <= 2x)")
    return {"images_s": t_ours, "pydicom_s": t_bare}


_PEAK_ON_EXIT = ("import atexit, sys; from pathlib import Path; atexit.register(lambda: print('peak_kb', Path("
                 "'/proc/self/status').read_text().split('VmHWM:')[1].split()[0], file=sys.stderr)); "
                 "sys.argv = ['tumorboard', *sys.argv[1:]]; from apps.cli import main; main()")


def bench_memory(sizes: list[int]) -> None:
    """Print the peak RSS (Linux ``VmHWM``) of ``tumorboard ingest variants``, each run in a fresh process, on
    synthetic MAFs of each size in ``sizes``: into a new lake, then the same file again into that lake."""
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            maf = make_maf(Path(tmp) / f"memory-{n}.maf", n)
            lake = Path(tmp) / f"lake-{n}"
            for label in ("new lake", "again"):
                started = time.perf_counter()
                done = subprocess.run([sys.executable, "-c", _PEAK_ON_EXIT, "ingest", "variants", str(maf),
                                       "--lake", str(lake)], check=True, capture_output=True, text=True,
                                      cwd=Path(__file__).resolve().parents[1])
                peak_kb = int(done.stderr.rsplit("peak_kb", 1)[1].split()[0])
                print(f"  MAF of {n:>10,} records, {label:<8}: peak RSS {peak_kb / 1024:,.0f} MB"
                      f"  ({time.perf_counter() - started:.1f} s)")
            maf.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000, help="records per synthetic variant file")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant reader (best kept)")
    parser.add_argument("--memory-at", type=int, action="append", default=[], metavar="N",
                        help="also measure the ingest's peak RSS on a synthetic MAF of N records (repeatable)")
    args = parser.parse_args()
    for name, bench in [("variants", lambda: bench_variants(args.records, args.repeat)), ("images", bench_images)]:
        print(f"== {name}")
        bench()
    if args.memory_at:
        print("== variants ingest memory")
        bench_memory(sorted(args.memory_at))


if __name__ == "__main__":
    main()
