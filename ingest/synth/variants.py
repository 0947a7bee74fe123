"""Somatic variant calls of the sequenced patients: driver hotspots plus passengers (TMB).

Positions are GRCh38. The EGFR, KRAS, BRAF, PIK3CA and TP53 hotspots are at their real coordinates;
STK11, KEAP1 and ALK changes, and all passengers, are placed within the genes' approximate bounds.
Reference bases of passengers are random (the reference genome is not consulted).
The panel territory is ``TERRITORY_MB``: the expected number of variants is ``tmb * TERRITORY_MB``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TERRITORY_MB = 1.1
BASES = np.array(list("ACGT"))
AA = np.array(list("ACDEFGHIKLMNPQRSTVWY"))

# (gene, chrom, start, end, ref, alt, Variant_Classification, Variant_Type, HGVSc, HGVSp_Short)
HOTSPOTS = {
    "egfr_L858R": (
        "EGFR",
        "chr7",
        55191822,
        55191822,
        "T",
        "G",
        "Missense_Mutation",
        "SNP",
        "c.2573T>G",
        "p.L858R",
    ),
    "egfr_exon19del": (
        "EGFR",
        "chr7",
        55174772,
        55174786,
        "GGAATTAAGAGAAGC",
        "-",
        "In_Frame_Del",
        "DEL",
        "c.2235_2249del",
        "p.E746_A750del",
    ),
    "kras_g12c": (
        "KRAS",
        "chr12",
        25245351,
        25245351,
        "C",
        "A",
        "Missense_Mutation",
        "SNP",
        "c.34G>T",
        "p.G12C",
    ),
    "braf_v600e": (
        "BRAF",
        "chr7",
        140753336,
        140753336,
        "A",
        "T",
        "Missense_Mutation",
        "SNP",
        "c.1799T>A",
        "p.V600E",
    ),
    "pik3ca": (
        "PIK3CA",
        "chr3",
        179218303,
        179218303,
        "G",
        "A",
        "Missense_Mutation",
        "SNP",
        "c.1633G>A",
        "p.E545K",
    ),
    "tp53_R273H": (
        "TP53",
        "chr17",
        7673802,
        7673802,
        "C",
        "T",
        "Missense_Mutation",
        "SNP",
        "c.818G>A",
        "p.R273H",
    ),
    "tp53_R248Q": (
        "TP53",
        "chr17",
        7674220,
        7674220,
        "C",
        "T",
        "Missense_Mutation",
        "SNP",
        "c.743G>A",
        "p.R248Q",
    ),
    "tp53_R175H": (
        "TP53",
        "chr17",
        7675088,
        7675088,
        "C",
        "T",
        "Missense_Mutation",
        "SNP",
        "c.524G>A",
        "p.R175H",
    ),
    "stk11": ("STK11", "chr19", 1207022, 1207022, "C", "T", "Nonsense_Mutation", "SNP", "c.109C>T", "p.Q37*"),
    "keap1": (
        "KEAP1",
        "chr19",
        10499529,
        10499529,
        "C",
        "A",
        "Missense_Mutation",
        "SNP",
        "c.997G>T",
        "p.G333C",
    ),
    "alk": ("ALK", "chr2", 29220829, 29220829, "G", "T", "Missense_Mutation", "SNP", "c.3522C>A", "p.F1174L"),
}

# passenger genes (long, frequently hit in smokers' tumours): gene -> (chrom, start, end)
PASSENGER_GENES = {
    "TTN": ("chr2", 178525989, 178830802),
    "MUC16": ("chr19", 8848844, 8981342),
    "CSMD3": ("chr8", 112222928, 113436939),
    "RYR2": ("chr1", 237042184, 237833988),
    "LRP1B": ("chr2", 140231423, 142131016),
    "USH2A": ("chr1", 215622891, 216423448),
    "ZFHX4": ("chr8", 76681208, 76867285),
    "XIRP2": ("chr2", 167165799, 167487762),
    "SPTA1": ("chr1", 158610704, 158686715),
    "FLG": ("chr1", 152302175, 152325239),
    "NAV3": ("chr12", 77830013, 78213012),
    "PCLO": ("chr7", 82754012, 83158531),
    "COL11A1": ("chr1", 102876467, 103108496),
    "FAT3": ("chr11", 92351520, 92896489),
    "ZNF536": ("chr19", 30372325, 30713530),
    "APOB": ("chr2", 21001429, 21044073),
    "RYR3": ("chr15", 33310946, 33866113),
    "DNAH5": ("chr5", 13690340, 13944550),
    "FAT4": ("chr4", 125316399, 125492932),
    "PKHD1L1": ("chr8", 109362459, 109537205),
    "ADGRV1": ("chr5", 90529344, 91164437),
    "HMCN1": ("chr1", 185734572, 186190949),
    "SI": ("chr3", 164978924, 165078496),
    "COL22A1": ("chrX", 105156000, 105200000),
    "NF1": ("chr17", 31094927, 31382116),
    "SMARCA4": ("chr19", 10960932, 11062276),
}
CHIP_GENES = {"DNMT3A": ("chr2", 25227855, 25342590), "TET2": ("chr4", 105145875, 105279816)}

# Variant_Classification -> (probability, Variant_Type)
PASSENGER_CLASSES = {
    "Missense_Mutation": (0.62, "SNP"),
    "Silent": (0.22, "SNP"),
    "Nonsense_Mutation": (0.06, "SNP"),
    "Splice_Site": (0.03, "SNP"),
    "Frame_Shift_Del": (0.04, "DEL"),
    "Frame_Shift_Ins": (0.03, "INS"),
}
COLUMNS = [
    "Hugo_Symbol",
    "Chromosome",
    "Start_Position",
    "End_Position",
    "Reference_Allele",
    "Tumor_Seq_Allele2",
    "Variant_Classification",
    "Variant_Type",
    "HGVSc",
    "HGVSp_Short",
    "Tumor_Sample_Barcode",
    "t_depth",
    "t_ref_count",
    "t_alt_count",
    "n_depth",
    "n_ref_count",
    "n_alt_count",
    "pad_base",
    "driver",
]


def _driver_keys(row: pd.Series, rng: np.random.Generator) -> list[str]:
    keys = []
    if row["egfr"]:
        keys.append(f"egfr_{row['egfr_variant']}")
    if row["tp53"]:
        keys.append(str(rng.choice(["tp53_R273H", "tp53_R248Q", "tp53_R175H"])))
    keys += [k for k in ("kras_g12c", "braf_v600e", "pik3ca", "stk11", "keap1", "alk") if row[k]]
    return keys


def _passengers(
    rng: np.random.Generator, n: int, genes: dict[str, tuple[str, int, int]]
) -> dict[str, np.ndarray]:
    """``n`` passenger variants in ``genes`` (uniform gene, uniform position within it)."""
    names = np.array(list(genes))
    gi = rng.integers(0, names.size, n)
    chrom = np.array([genes[g][0] for g in names])[gi]
    lo, hi = (np.array([genes[g][k] for g in names], dtype=np.int64)[gi] for k in (1, 2))
    start = rng.integers(lo, hi)
    classes = np.array(list(PASSENGER_CLASSES))
    ci = rng.choice(classes.size, n, p=[v[0] for v in PASSENGER_CLASSES.values()])
    cls, vtype = classes[ci], np.array([v[1] for v in PASSENGER_CLASSES.values()])[ci]
    ri = rng.integers(0, 4, n)
    ref, alt = BASES[ri].astype(object), BASES[(ri + rng.integers(1, 4, n)) % 4].astype(object)
    aa_pos = rng.integers(2, 1500, n)
    ai = rng.integers(0, AA.size, n)
    aa_ref, aa_alt = AA[ai], AA[(ai + rng.integers(1, AA.size, n)) % AA.size]
    cpos = aa_pos * 3 - rng.integers(0, 3, n)
    end = start.copy()
    is_del, is_ins = vtype == "DEL", vtype == "INS"
    hgvsc = np.where(
        is_del,
        [f"c.{p}del" for p in cpos],
        np.where(
            is_ins,
            [f"c.{p}_{p + 1}ins{a}" for p, a in zip(cpos, alt, strict=True)],
            [f"c.{p}{r}>{a}" for p, r, a in zip(cpos, ref, alt, strict=True)],
        ),
    )
    alt[is_del] = "-"
    ref[is_ins] = "-"
    end[is_ins] += 1
    protein = {
        "Missense_Mutation": "p.{r}{p}{a}",
        "Silent": "p.{r}{p}=",
        "Nonsense_Mutation": "p.{r}{p}*",
        "Splice_Site": "p.X{p}_splice",
        "Frame_Shift_Del": "p.{r}{p}fs",
        "Frame_Shift_Ins": "p.{r}{p}fs",
    }
    hgvsp = [protein[k].format(r=r, p=p, a=a) for k, r, p, a in zip(cls, aa_ref, aa_pos, aa_alt, strict=True)]
    return {
        "Hugo_Symbol": names[gi],
        "Chromosome": chrom,
        "Start_Position": start,
        "End_Position": end,
        "Reference_Allele": ref,
        "Tumor_Seq_Allele2": alt,
        "Variant_Classification": cls,
        "Variant_Type": vtype,
        "HGVSc": hgvsc,
        "HGVSp_Short": np.array(hgvsp),
    }


def simulate_variants(truth: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Somatic variants of every sequenced patient (``truth.has_genomics``), MAF columns plus
    ``pad_base`` (VCF padding base for indels) and ``driver`` (bool). Every sample has >= 1 variant."""
    seq = truth[truth["has_genomics"]].reset_index(drop=True)
    cancer = (seq["diagnosis"] != "benign").to_numpy()
    drivers = [
        [] if not c else _driver_keys(row, rng) for c, (_, row) in zip(cancer, seq.iterrows(), strict=True)
    ]
    n_drivers = np.array([len(d) for d in drivers], dtype=int)
    n_pass = np.maximum(rng.poisson(seq["tmb"].to_numpy() * TERRITORY_MB) - n_drivers, (n_drivers == 0) * 1)
    d_rows = [dict(zip(COLUMNS[:10], HOTSPOTS[k], strict=True)) for ks in drivers for k in ks]
    parts = [
        pd.DataFrame(d_rows, columns=COLUMNS[:10]).assign(
            _p=np.repeat(np.arange(len(seq)), n_drivers), driver=True
        )
    ]
    for mask, genes in ((cancer, PASSENGER_GENES), (~cancer, CHIP_GENES)):
        counts = np.where(mask, n_pass, 0)
        parts.append(
            pd.DataFrame(_passengers(rng, int(counts.sum()), genes)).assign(
                _p=np.repeat(np.arange(len(seq)), counts), driver=False
            )
        )
    v = pd.concat(parts, ignore_index=True).sort_values(
        ["_p", "driver"], ascending=[True, False], kind="stable"
    )
    p = v["_p"].to_numpy()
    m = len(v)
    purity = np.where(cancer, rng.uniform(0.3, 0.9, len(seq)), 0.1)[p]
    clonal = np.where(v["driver"], 1.0, rng.choice([1.0, 0.5, 0.25], m, p=[0.6, 0.25, 0.15]))
    vaf = np.clip(purity * clonal / 2.0, 0.02, 0.6)
    depth = rng.poisson(400, m) + 50
    alt = np.maximum(rng.binomial(depth, vaf), 5)
    n_depth = rng.poisson(150, m) + 20
    n_alt = rng.binomial(n_depth, 0.002)
    v = v.assign(
        Tumor_Sample_Barcode=seq["sample_id"].to_numpy()[p],
        t_depth=depth,
        t_ref_count=depth - alt,
        t_alt_count=alt,
        n_depth=n_depth,
        n_ref_count=n_depth - n_alt,
        n_alt_count=n_alt,
        pad_base=rng.choice(BASES, m),
    )
    return v.drop_duplicates(["Tumor_Sample_Barcode", "Chromosome", "Start_Position"])[COLUMNS].reset_index(
        drop=True
    )
