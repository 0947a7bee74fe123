"""Write somatic variants as a cohort MAF, a sample map and per-sample SnpEff-annotated VCF 4.2 files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ingest.synth.variants import TERRITORY_MB
from ingest.variants.features import load_gene_panel

GENE_PANEL_FILE = "gene_panel.yaml"

CONTIGS = {
    "chr1": 248956422,
    "chr2": 242193529,
    "chr3": 198295559,
    "chr4": 190214555,
    "chr5": 181538259,
    "chr6": 170805979,
    "chr7": 159345973,
    "chr8": 145138636,
    "chr9": 138394717,
    "chr10": 133797422,
    "chr11": 135086622,
    "chr12": 133275309,
    "chr13": 114364328,
    "chr14": 107043718,
    "chr15": 101991189,
    "chr16": 90338345,
    "chr17": 83257441,
    "chr18": 80373285,
    "chr19": 58617616,
    "chr20": 64444167,
    "chr21": 46709983,
    "chr22": 50818468,
    "chrX": 156040895,
    "chrY": 57227415,
}
MAF_COLUMNS = [
    "Hugo_Symbol",
    "Center",
    "NCBI_Build",
    "Chromosome",
    "Start_Position",
    "End_Position",
    "Strand",
    "Variant_Classification",
    "Variant_Type",
    "Reference_Allele",
    "Tumor_Seq_Allele1",
    "Tumor_Seq_Allele2",
    "Tumor_Sample_Barcode",
    "Matched_Norm_Sample_Barcode",
    "HGVSc",
    "HGVSp_Short",
    "t_depth",
    "t_ref_count",
    "t_alt_count",
    "n_depth",
    "n_ref_count",
    "n_alt_count",
]
SNPEFF = {  # Variant_Classification -> (SnpEff effect, impact)
    "Missense_Mutation": ("missense_variant", "MODERATE"),
    "Silent": ("synonymous_variant", "LOW"),
    "Nonsense_Mutation": ("stop_gained", "HIGH"),
    "Splice_Site": ("splice_acceptor_variant", "HIGH"),
    "Frame_Shift_Del": ("frameshift_variant", "HIGH"),
    "Frame_Shift_Ins": ("frameshift_variant", "HIGH"),
    "In_Frame_Del": ("disruptive_inframe_deletion", "MODERATE"),
}
AA3 = {
    "A": "Ala",
    "C": "Cys",
    "D": "Asp",
    "E": "Glu",
    "F": "Phe",
    "G": "Gly",
    "H": "His",
    "I": "Ile",
    "K": "Lys",
    "L": "Leu",
    "M": "Met",
    "N": "Asn",
    "P": "Pro",
    "Q": "Gln",
    "R": "Arg",
    "S": "Ser",
    "T": "Thr",
    "V": "Val",
    "W": "Trp",
    "Y": "Tyr",
    "*": "Ter",
}
ANN_FIELDS = (
    "Allele | Annotation | Annotation_Impact | Gene_Name | Gene_ID | Feature_Type | Feature_ID | "
    "Transcript_BioType | Rank | HGVS.c | HGVS.p | cDNA.pos / cDNA.length | CDS.pos / CDS.length | "
    "AA.pos / AA.length | Distance | ERRORS / WARNINGS / INFO"
)


def _hgvsp3(short: str) -> str:
    """One-letter HGVS protein change (``p.L858R``) in SnpEff's three-letter form (``p.Leu858Arg``)."""
    if "splice" in short:
        return ""
    return "p." + "".join(AA3.get(ch, ch) for ch in short[2:])


def write_maf(path: Path, variants: pd.DataFrame) -> None:
    """Write a TCGA-style MAF (tab separated, ``#version 2.4`` comment line)."""
    maf = variants.assign(
        Center="tumorboard-synth",
        NCBI_Build="GRCh38",
        Strand="+",
        Tumor_Seq_Allele1=variants["Reference_Allele"],
        Matched_Norm_Sample_Barcode=variants["Tumor_Sample_Barcode"].str.replace("SMP-", "NRM-", regex=False),
    )[MAF_COLUMNS]
    with open(path, "w", newline="") as f:
        f.write("#version 2.4\n")
        maf.to_csv(f, sep="\t", index=False, lineterminator="\n")


def write_sample_map(path: Path, truth: pd.DataFrame) -> None:
    """``sample_id,patient_id,collected_date`` (patient_id = the MRN; the diagnostic biopsy is taken on the
    index date) for every sequenced patient."""
    seq = truth[truth["has_genomics"]]
    collected = pd.to_datetime(seq["index_date"]).dt.strftime("%Y-%m-%d")
    pd.DataFrame({"sample_id": seq["sample_id"], "patient_id": seq["mrn"], "collected_date": collected}).to_csv(
        path, index=False, lineterminator="\n"
    )


def _vcf_record(v: dict) -> str:
    pos, ref, alt = int(v["Start_Position"]), v["Reference_Allele"], v["Tumor_Seq_Allele2"]
    if v["Variant_Type"] == "DEL":
        pos, ref, alt = pos - 1, v["pad_base"] + ref, v["pad_base"]
    elif v["Variant_Type"] == "INS":
        ref, alt = v["pad_base"], v["pad_base"] + alt
    effect, impact = SNPEFF[v["Variant_Classification"]]
    gene = v["Hugo_Symbol"]
    ann = (
        f"{alt}|{effect}|{impact}|{gene}|{gene}|transcript||protein_coding||{v['HGVSc']}|"
        f"{_hgvsp3(v['HGVSp_Short'])}|||||"
    )
    t_dp, t_alt = int(v["t_depth"]), int(v["t_alt_count"])
    n_dp, n_alt = int(v["n_depth"]), int(v["n_alt_count"])
    tumor = f"0/1:{t_dp - t_alt},{t_alt}:{t_dp}:{t_alt / t_dp:.3f}"
    normal = f"0/0:{n_dp - n_alt},{n_alt}:{n_dp}:{n_alt / n_dp:.3f}"
    return "\t".join(
        [
            v["Chromosome"],
            str(pos),
            ".",
            ref,
            alt,
            ".",
            "PASS",
            f"SOMATIC;ANN={ann}",
            "GT:AD:DP:AF",
            tumor,
            normal,
        ]
    )


def write_vcf(path: Path, sample_id: str, variants: pd.DataFrame) -> None:
    """Write one tumour/normal VCF 4.2 with SnpEff ``ANN`` annotations, sorted by contig and position."""
    order = {c: i for i, c in enumerate(CONTIGS)}
    v = variants.assign(_c=variants["Chromosome"].map(order)).sort_values(
        ["_c", "Start_Position"], kind="stable"
    )
    header = [
        "##fileformat=VCFv4.2",
        "##source=tumorboard-synth",
        "##reference=GRCh38",
        *(f"##contig=<ID={c},length={n},assembly=GRCh38>" for c, n in CONTIGS.items()),
        '##FILTER=<ID=PASS,Description="All filters passed">',
        '##INFO=<ID=SOMATIC,Number=0,Type=Flag,Description="Somatic mutation">',
        f"##INFO=<ID=ANN,Number=.,Type=String,Description=\"Functional annotations: '{ANN_FIELDS}' \">",
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        '##FORMAT=<ID=AD,Number=R,Type=Integer,Description="Allelic depths for the ref and alt alleles">',
        '##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Read depth">',
        '##FORMAT=<ID=AF,Number=A,Type=Float,Description="Allele fraction of the alt allele">',
        f"##tumor_sample={sample_id}",
        f"##normal_sample={sample_id.replace('SMP-', 'NRM-')}",
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tTUMOR\tNORMAL",
    ]
    lines = header + [_vcf_record(r) for r in v.to_dict("records")]
    path.write_text("\n".join(lines) + "\n")


def write_gene_panel(path: Path) -> None:
    """The assay's gene panel: the default panel's genes (``configs/gene_panel.yaml``) over the simulated
    territory of ``TERRITORY_MB`` megabases, so ``tumorboard ingest variants --gene-panel`` divides the
    non-silent count by the territory the variants were drawn over (the default's 38 Mb would report TMB
    about 35 times too low)."""
    panel = load_gene_panel().model_copy(update={"name": "tumorboard-synth", "panel_size_mb": TERRITORY_MB})
    header = "# The synthetic cohort's sequencing assay: pass it to `tumorboard ingest variants --gene-panel`.\n"
    path.write_text(header + yaml.safe_dump(panel.model_dump(), sort_keys=False))


def write_genomics(out: Path, truth: pd.DataFrame, variants: pd.DataFrame) -> dict[str, int]:
    """Write ``cohort.maf``, ``sample_map.csv``, ``gene_panel.yaml`` and ``vcf/<sample>.vcf`` for patients
    with ``has_vcf``.

    Returns:
        Counts: ``variants``, ``samples``, ``vcfs``.
    """
    out.mkdir(parents=True, exist_ok=True)
    write_maf(out / "cohort.maf", variants)
    write_sample_map(out / "sample_map.csv", truth)
    write_gene_panel(out / GENE_PANEL_FILE)
    vcf_samples = truth.loc[truth["has_vcf"], "sample_id"].to_numpy()
    if vcf_samples.size:
        (out / "vcf").mkdir(exist_ok=True)
    groups = dict(tuple(variants.groupby("Tumor_Sample_Barcode", sort=False)))
    for sample in vcf_samples:
        write_vcf(out / "vcf" / f"{sample}.vcf", sample, groups[sample])
    return {
        "variants": len(variants),
        "samples": int(np.sum(truth["has_genomics"])),
        "vcfs": len(vcf_samples),
    }
