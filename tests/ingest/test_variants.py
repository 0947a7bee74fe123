"""Tests for ingest.variants: VCF/MAF parsing, annotation, features and the lake pipeline."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from ingest.variants.annotation import classify, hgvsp_short, maf_alleles, vep_alleles
from ingest.variants.features import GenePanel, gene_status, tmb
from ingest.variants.maf import MafFormatError, maf_variants
from ingest.variants.pipeline import ingest_variants, patient_for
from ingest.variants.vcf import VcfFormatError, VcfReader, vcf_variants

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "variants"


def data_file(relative: str) -> Path:
    path = DATA / relative
    if not path.exists():
        pytest.skip(f"real test data {path} is missing (see shared/data/SOURCES.md)")
    return path


def write_vcf(path: Path, body: str, *, samples=("TUMOR", "NORMAL"), extra_header: str = "") -> Path:
    header = [
        "##fileformat=VCFv4.2",
        '##INFO=<ID=AC,Number=A,Type=Integer,Description="Allele count">',
        '##INFO=<ID=RD,Number=R,Type=Integer,Description="Per-allele depth">',
        '##INFO=<ID=DP,Number=1,Type=Integer,Description="Depth">',
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        '##FORMAT=<ID=AD,Number=R,Type=Integer,Description="Allelic depths">',
        '##FORMAT=<ID=AF,Number=A,Type=Float,Description="Allele fraction">',
        '##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Depth">',
        '##FORMAT=<ID=PL,Number=G,Type=Integer,Description="Likelihoods">',
    ]
    if extra_header:
        header.append(extra_header)
    columns = "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"
    if samples:
        columns += "\tFORMAT\t" + "\t".join(samples)
    text = "\n".join(header + [columns]) + "\n" + body.replace("|", "\t")
    path.write_text(text)
    return path


# -- annotation helpers -----------------------------------------------------------------------------------
@pytest.mark.parametrize("given, expected", [
    ("ENSP00000275493.2:p.Leu858Arg", "p.L858R"),
    ("p.Trp54Ter", "p.W54*"),
    ("p.Lys224AsnfsTer19", "p.K224Nfs*19"),
    ("p.Ser389%3D", "p.S389="),
    ("V536L", "p.V536L"),
])
def test_hgvsp_short(given, expected):
    assert hgvsp_short(given) == expected


@pytest.mark.parametrize("pos, ref, alt, expected", [
    (100, "A", "C", (100, "A", "C", "SNP", False)),
    (100, "A", "ACCTCTT", (100, "-", "CCTCTT", "INS", True)),
    (100, "GT", "G", (101, "T", "-", "DEL", False)),
    (100, "AC", "AT", (101, "C", "T", "SNP", False)),
    (100, "ACG", "TCA", (100, "ACG", "TCA", "TNP", False)),
])
def test_maf_alleles(pos, ref, alt, expected):
    assert maf_alleles(pos, ref, alt) == expected


@pytest.mark.parametrize("effect, var_type, inframe, expected", [
    ("frameshift_variant", "DEL", False, "Frame_Shift_Del"),
    ("frameshift_variant", "INS", False, "Frame_Shift_Ins"),
    ("protein_altering_variant", "INS", True, "In_Frame_Ins"),
    ("disruptive_inframe_deletion", "DEL", True, "In_Frame_Del"),
    ("splice_donor_variant", "SNP", False, "Splice_Site"),
    ("splice_region_variant", "SNP", False, "Splice_Region"),
    ("start_lost", "SNP", False, "Translation_Start_Site"),
    ("upstream_gene_variant", "SNP", False, "5'Flank"),
    ("TFBS_ablation", "DEL", False, "Targeted_Region"),
])
def test_classify_follows_vcf2maf(effect, var_type, inframe, expected):
    assert classify(effect, var_type, inframe) == expected


def test_vep_alleles_strip_the_shared_first_base():
    assert vep_alleles("A", ["ACCTCTT"]) == ["CCTCTT"]
    assert vep_alleles("GT", ["G"]) == ["-"]
    assert vep_alleles("G", ["GACA", "C"]) == ["GACA", "C"]
    assert vep_alleles("A", ["C"]) == ["C"]


# -- VCF: vcf2maf reference ------------------------------------------------------------------------------
def _csq_vcf_from_maf(vcf: Path, maf: pd.DataFrame, out: Path, *, canonical: bool) -> Path:
    """test_b38.vcf annotated with the VEP effects that vcf2maf listed in ``all_effects`` of its MAF."""
    fields = "Allele|Consequence|SYMBOL|Feature|HGVSp|HGVSc|CANONICAL"
    by_pos = {int(p): row for p, row in zip(maf["vcf_pos"], maf.to_dict("records"), strict=True)}
    lines = []
    for line in vcf.read_text().splitlines():
        if line.startswith("#CHROM"):
            lines.append(f'##INFO=<ID=CSQ,Number=.,Type=String,Description="Consequence annotations from'
                         f' Ensembl VEP. Format: {fields}">')
        if line.startswith("#"):
            lines.append(line)
            continue
        cols = line.split("\t")
        row = by_pos[int(cols[1])]
        entries = []
        for effect in str(row["all_effects"]).strip(";").split(";"):
            gene, consequence, hgvsp, transcript, *_ = effect.split(",")
            chosen = transcript == row["Transcript_ID"]
            hgvsc = str(row["HGVSc"]) if chosen and isinstance(row["HGVSc"], str) else ""
            flag = "YES" if canonical and chosen and row["CANONICAL"] == "YES" else ""
            entries.append("|".join([row["Allele"], consequence, gene, transcript, hgvsp, hgvsc, flag]))
        cols[7] = "CSQ=" + ",".join(entries)
        lines.append("\t".join(cols))
    out.write_text("\n".join(lines) + "\n")
    return out


def test_vcf_matches_vcf2maf_output(tmp_path):
    vcf = data_file("vcf2maf/test_b38.vcf")
    maf = pd.read_csv(data_file("vcf2maf/test_b38_output.maf"), sep="\t", comment="#", dtype=str)
    ours = vcf_variants(vcf).table.to_pandas()
    assert len(ours) == len(maf) == 25
    # same variants, in MAF coordinates, with the same depth and VAF
    assert list(ours["pos"]) == [int(p) for p in maf["Start_Position"]]
    assert list(ours["ref"]) == list(maf["Reference_Allele"])
    assert list(ours["alt"]) == list(maf["Tumor_Seq_Allele2"])
    assert list(ours["depth"]) == [int(d) for d in maf["t_depth"]]
    expected_vaf = maf["t_alt_count"].astype(float) / maf["t_depth"].astype(float)
    assert ours["vaf"].to_numpy() == pytest.approx(expected_vaf.to_numpy())
    assert set(ours["sample_id"]) == {"test_b38"}  # generic TUMOR column -> file name

    for canonical, threshold in ((True, 1.0), (False, 0.8)):
        annotated = _csq_vcf_from_maf(vcf, maf, tmp_path / f"b38_{canonical}.vcf", canonical=canonical)
        got = vcf_variants(annotated).table.to_pandas()
        gene = (got["gene"].fillna("Unknown") == maf["Hugo_Symbol"]).mean()
        cls = (got["consequence"] == maf["Variant_Classification"]).mean()
        prot = (got["hgvsp"].fillna("") == maf["HGVSp_Short"].fillna("")).mean()
        print(f"vcf2maf agreement (canonical flags={canonical}): gene {gene:.0%}, class {cls:.0%}, "
              f"HGVSp_Short {prot:.0%}")
        assert gene >= threshold and cls >= threshold
        if canonical:
            assert prot >= 0.95


# -- VCF: annotations -----------------------------------------------------------------------------------
def test_snpeff_eff_annotations():
    rows = vcf_variants(data_file("vcf/cyvcf2_test.snpeff.vcf")).table.to_pandas()
    missense = rows[rows["hgvsp"].isin(["p.T141A", "p.D224V"])]
    assert len(missense) == 3  # carriers only (cohort VCF): two of p.T141A, one of p.D224V
    assert set(missense["gene"]) == {"OR4F5"}
    assert set(missense["consequence"]) == {"Missense_Mutation"}
    silent = rows[rows["hgvsp"] == "p.S60="]
    assert set(silent["consequence"]) == {"Silent"}
    assert set(rows["consequence"]) <= {"Missense_Mutation", "Silent", "3'Flank", "5'Flank", "Intron", "RNA"}


def test_vep_csq_and_multiallelic_split():
    path = data_file("vcf/pysam_gnomad.vcf")
    reader = VcfReader(path)
    records = list(reader)
    site = [r for r in records if r.pos == 16050129]
    assert [r.alt for r in site] == ["GACA", "C"]
    raw_ac = next(line for line in path.read_text().splitlines() if "\t16050129\t" in line)
    ac_values = next(f for f in raw_ac.split("\t")[7].split(";") if f.startswith("AC=")).split("=")[1]
    assert [r.info["AC"] for r in site] == ac_values.split(",")  # Number=A: one value per ALT
    assert site[0].info["AN"] == site[1].info["AN"]  # Number=1: repeated
    rows = vcf_variants(path).table.to_pandas()
    split = rows[rows["variant_key"].str.startswith("22:16050129:")]
    assert list(split["variant_key"]) == ["22:16050129:-:ACA", "22:16050129:G:C"]
    # the site's one CSQ entry has ALLELE_NUM=2: it annotates C, and GACA stays unannotated
    assert split["consequence"].isna().tolist() == [True, False]
    assert split["consequence"].iloc[1] == "IGR"
    assert rows["consequence"].notna().sum() == len(rows) - 1


def test_format_split_number_r_a_g(tmp_path):
    vcf = write_vcf(tmp_path / "multi.vcf",
                    "1|100|.|A|C,G|.|PASS|AC=3,4;RD=10,5,3;DP=18|GT:AD:AF:DP:PL|1/2:10,5,3:0.25,0.15:18:"
                    "0,1,2,3,4,5|0/0:20,0,0:0,0:20:0,9,9,9,9,9\n")
    records = list(VcfReader(vcf))
    assert [(r.alt, r.info["AC"], r.info["RD"]) for r in records] == [("C", "3", "10,5"), ("G", "4", "10,3")]
    second = records[1].sample(0)
    assert second == {"GT": "0/1", "AD": "10,3", "AF": "0.15", "DP": "18", "PL": "0,3,5"}
    rows = vcf_variants(vcf).table.to_pandas()
    assert list(rows["vaf"]) == [0.25, 0.15]  # FORMAT AF wins over AD/DP
    assert list(rows["depth"]) == [18, 18]


def test_multiallelic_ad_declared_number_dot_gives_each_alt_its_own_count(tmp_path):
    # MuTect 1 (and GATK 3) declare AD as Number=.; a multi-allelic record's AD still holds REF, ALT1, ALT2.
    # Found reviewing the split: every ALT got the last ALT's count.
    import cyvcf2

    header = [line for line in data_file("vcf2maf/test_mutect.vcf").read_text().splitlines() if line.startswith("#")]
    assert '##FORMAT=<ID=AD,Number=.,Type=Integer,Description="Allelic depths for the ref and alt alleles in' \
           ' the order listed">' in header
    vcf = tmp_path / "mutect_multi.vcf"
    vcf.write_text("\n".join(header) + "\n1\t2453125\t.\tC\tG,T\t.\tPASS\t.\tGT:AD:DP\t0/0:50,0,0:50"
                   "\t1/2:10,30,5:45\n")
    ad = next(iter(cyvcf2.VCF(str(vcf)))).format("AD")[1]  # the reference reader: TUMOR's REF, G, T counts
    rows = vcf_variants(vcf).table.to_pylist()
    assert [(r["alt"], r["depth"]) for r in rows] == [("G", 45), ("T", 45)]
    assert [r["vaf"] for r in rows] == pytest.approx([ad[1] / 45, ad[2] / 45])  # 30/45 and 5/45


def test_vaf_from_ad_when_no_af(tmp_path):
    vcf = write_vcf(tmp_path / "ad.vcf", "chr7|55191822|.|T|G|.|PASS|.|GT:AD|0/1:30,10|0/0:40,0\n")
    rows = vcf_variants(vcf).table.to_pylist()
    assert rows[0]["vaf"] == pytest.approx(0.25) and rows[0]["depth"] == 40
    assert rows[0]["chrom"] == "7" and rows[0]["variant_key"] == "7:55191822:T:G"


def test_multiallelic_homozygous_alt_gt_and_symbolic_allele():
    path = data_file("vcf/cyvcf2_test-multiallelic-homozygous-alt.vcf.gz")
    records = list(VcfReader(path))
    assert [(r.alt, r.sample(0)["GT"]) for r in records] == [("A", "0/0"), ("<*:DEL>", "1/1")]
    result = vcf_variants(path)
    # GT 2/2: the sample lacks A, and the symbolic allele is counted, not written
    assert result.table.num_rows == 0 and result.skipped == 2


def test_tumour_keeps_only_the_alts_it_carries_at_a_multiallelic_site(tmp_path):
    vcf = write_vcf(tmp_path / "tn.vcf", "12|25245351|.|C|A,T|.|PASS|.|GT:AD|0/1:70,30,0|0/0:80,0,0\n"
                                         "12|25245400|.|G|T|.|PASS|.|GT:AD|0/1:50,20|0/0:60,0\n")
    rows = vcf_variants(vcf, tumor_sample="TUMOR")
    assert [(r["pos"], r["alt"]) for r in rows.table.to_pylist()] == [(25245351, "A"), (25245400, "T")]
    assert rows.skipped == 1


@pytest.mark.parametrize("columnar", [True, False])
def test_a_tumour_genotype_without_the_alt_is_no_variant(columnar):
    # Real MuTect 1 calls (vcf2maf's test_mutect.vcf): at 10:21124238 and X:77041551 the somatic call (0/1, SS=2)
    # is in the NORMAL column and TUMOR is GT 0, no alt read; both PASS. They were written as TUMOR variants and
    # counted in TMB, while a 0/0 ALT at a multi-allelic site was already dropped. Found reading the tumour rule.
    path = data_file("vcf2maf/test_mutect.vcf")
    result = vcf_variants(path, columnar=columnar)
    rows = result.table.to_pandas()
    lines = [line.split("\t") for line in path.read_text().splitlines() if not line.startswith("#")]
    tumour_gts = [cols[10].split(":")[0] for cols in lines]
    assert result.records_read == len(lines) and result.skipped == tumour_gts.count("0") == 76
    assert rows.shape[0] == tumour_gts.count("0/1") == 424
    passing = rows[rows["filter"] == "PASS"]
    assert list(passing["variant_key"]) == ["1:204429832:C:A", "11:45880224:C:A", "16:21045502:G:T"]


@pytest.mark.parametrize("columnar", [True, False])
def test_tumour_hom_ref_and_no_call_genotypes_are_skipped_alike_on_both_paths(tmp_path, columnar):
    body = ("1|100|.|A|C|.|PASS|.|GT:AD:DP|0/1:30,10:40|0/0:40,0:40\n"
            "1|200|.|A|C|.|PASS|.|GT:AD:DP|0/0:40,0:40|0/0:40,0:40\n"
            "1|300|.|A|C|.|PASS|.|GT:AD:DP|0|0/0:40,0:40\n"
            "1|400|.|A|C|.|PASS|.|GT:AD:DP|./.:30,5:35|0/0:40,0:40\n"  # no call, alt reads: kept
            "1|500|.|A|C|.|PASS|.|GT:AD:DP|./.:35,0:35|0/0:40,0:40\n"  # no call, no alt read
            "1|600|.|A|C|.|PASS|.|GT|.|0/0\n"
            "1|700|.|A|C|.|PASS|.|AD:GT|30,10:0|0/0\n"  # GT not first: the genotype still decides
            "1|800|.|A|C|.|PASS|.|AD:DP|30,10:40|40,0:40\n"  # no GT (as Strelka): kept
            "1|900|.|A|<DEL>|.|PASS|.|GT|0/0|0/0\n")
    result = vcf_variants(write_vcf(tmp_path / "gt.vcf", body), columnar=columnar)
    assert [r["pos"] for r in result.table.to_pylist()] == [100, 400, 800]
    assert result.skipped == 6


def test_multisample_cohort_keeps_carriers_only():
    result = vcf_variants(data_file("vcf/cyvcf2_test-alt-repr.vcf"))
    rows = result.table.to_pandas()
    # samplea 0/0, sampleb 0/1, samplec 1/1, sampled 0/., samplee ./1, samplef ./.
    assert sorted(rows["sample_id"]) == ["sampleb", "samplec", "samplee"]
    assert result.skipped == 3


def test_tumor_sample_rules(tmp_path):
    body = "1|100|.|A|C|.|PASS|.|GT:AD|0/1:30,10|0/0:40,0\n"
    pair = write_vcf(tmp_path / "pair.vcf", body, samples=("S1-T", "S1-N"),
                     extra_header="##normal_sample=S1-N")
    assert vcf_variants(pair).table.column("sample_id").to_pylist() == ["S1-T"]  # not ##normal_sample
    normal = vcf_variants(pair, tumor_sample="S1-N")
    assert normal.samples == ("S1-N",)
    assert normal.table.num_rows == 0 and normal.skipped == 1  # its GT 0/0 lacks the ALT
    meta = write_vcf(tmp_path / "meta.vcf", body, samples=("X", "Y"), extra_header="##tumor_sample=Y")
    assert vcf_variants(meta).samples == ("Y",)
    with pytest.raises(VcfFormatError, match="--tumor-sample"):
        vcf_variants(pair, tumor_sample="nope")


# -- VCF: bad input -------------------------------------------------------------------------------------
def test_bad_vcf_records_become_rejects_with_line_numbers(tmp_path):
    vcf = write_vcf(tmp_path / "bad.vcf",
                    "1|100|.|A|C|.|PASS|.|GT:AD|0/1:30,10|0/0:40,0\n"
                    "1|1x0|.|A|C|.|PASS|.|GT:AD|0/1:30,10|0/0:40,0\n"
                    "1|300|.|A|C|.|PASS|.|GT:AD|0/1:30,10\n"
                    "1|400|.|A|T|.|PASS|.|GT:AD|0/1:30,10|0/0:40,0\n")
    result = vcf_variants(vcf)
    assert result.table.num_rows == 2 and result.records_read == 4
    assert [r["location"] for r in result.rejects] == ["line 12", "line 13"]
    assert "POS (column 2) is not an integer" in result.rejects[0]["reason"]
    assert "expected 11 tab-separated columns, found 10" in result.rejects[1]["reason"]


@pytest.mark.parametrize("columnar", [True, False])
def test_a_bad_pos_reason_names_no_value_so_such_records_share_it(tmp_path, columnar):
    vcf = write_vcf(tmp_path / "bad.vcf",
                    "1|100|.|A|C|.|PASS|.|GT:AD|0/1:30,10|0/0:40,0\n"
                    "1|MRN-4242|.|A|C|.|PASS|.|GT:AD|0/1:30,10|0/0:40,0\n"
                    "1|2020-01-31|.|A|T|.|PASS|.|GT:AD|0/1:30,10|0/0:40,0\n")
    result = vcf_variants(vcf, columnar=columnar)
    assert [r["location"] for r in result.rejects] == ["line 12", "line 13"]
    first, second = (r["reason"] for r in result.rejects)
    assert first == second and "MRN-4242" not in first and "2020-01-31" not in second
    assert "MRN-4242" in result.rejects[0]["raw"]  # the record itself stays in the reject's raw text


def test_truncated_vcf_gz_keeps_records_and_rejects_file(tmp_path):
    source = data_file("vcf/cyvcf2_test.vcf.gz")
    data = source.read_bytes()
    truncated = tmp_path / "truncated.vcf.gz"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    complete = vcf_variants(source)
    result = vcf_variants(truncated)
    assert 0 < result.records_read < complete.records_read
    assert result.table.num_rows > 0
    file_rejects = [r for r in result.rejects if r["location"] is None]
    assert len(file_rejects) == 1
    reason = file_rejects[0]["reason"]
    assert "truncated.vcf.gz" in reason and "truncated or corrupt" in reason


# -- MAF ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["maf/brca.maf.gz", "maf/APL_primary.maf.gz"])
def test_maf_row_counts_match_pandas(name):
    path = data_file(name)
    expected = len(pd.read_csv(path, sep="\t", comment="#", dtype=str))
    result = maf_variants(path)
    assert result.records_read == expected
    assert result.table.num_rows + len(result.rejects) == expected
    assert all(r["location"].startswith("line ") for r in result.rejects)


def test_maf_missing_required_column(tmp_path):
    bad = tmp_path / "data_mutations.txt"
    bad.write_text("#version 2.4\n"
                   "Hugo_Symbol\tChromosome\tStart_Position\tReference_Allele\tTumor_Sample_Barcode\n"
                   "EGFR\t7\t55191822\tT\tS1\n")
    with pytest.raises(MafFormatError) as err:
        maf_variants(bad)
    message = str(err.value)
    assert str(bad) in message and "Tumor_Seq_Allele2" in message and "Variant_Classification" in message
    assert "Fix:" in message


# -- features -------------------------------------------------------------------------------------------
def test_gene_status_and_tmb_rules():
    import pyarrow as pa

    table = pa.table({
        "patient_id": ["P1"] * 4 + ["P2"],
        "sample_id": ["S1"] * 4 + ["S2"],
        "gene": ["EGFR", "EGFR", "TP53", "KRAS", "EGFR"],
        "consequence": ["Silent", "Missense_Mutation", "Missense_Mutation", "Nonsense_Mutation", None],
        "filter": ["PASS", None, "LowQual", ".", None],
    })
    status = gene_status(table, ["EGFR", "TP53", "KRAS"]).to_pylist()
    assert [(r["gene"], r["mutated"], r["n_variants"]) for r in status] == [
        ("EGFR", True, 2), ("TP53", False, 0), ("KRAS", True, 1)]  # S2 is unannotated: no rows
    burden = tmb(table, 2.0).to_pylist()
    assert burden == [{"patient_id": "P1", "sample_id": "S1", "n_nonsilent": 2, "panel_size_mb": 2.0,
                       "tmb_per_mb": 1.0}]


# -- pipeline -------------------------------------------------------------------------------------------
def test_patient_rule():
    assert patient_for("TCGA-A8-A08B-01A-11D") == "TCGA-A8-A08B"
    assert patient_for("DS2D") == "DS2D"
    assert patient_for("DS2D", {"DS2D": "MRN1"}) == "MRN1"


def test_pipeline_ingests_mafs_idempotently(tmp_path):
    from ingest.lake import Lake

    maf_dir = data_file("maf")
    lake = Lake(tmp_path / "lake")
    panel = GenePanel(genes=["TP53", "PIK3CA", "GATA3"], panel_size_mb=50.0)
    counts = ingest_variants(lake, [maf_dir], gene_panel=panel)
    brca = pd.read_csv(maf_dir / "brca.maf.gz", sep="\t", dtype=str)
    apl = pd.read_csv(maf_dir / "APL_primary.maf.gz", sep="\t", dtype=str)
    assert counts["files"] == 2
    assert counts["records_read"] == len(brca) + len(apl)
    assert counts["variants_written"] + counts["rejected"] + counts["duplicates"] == counts["records_read"]
    kept = apl[apl["Tumor_Seq_Allele2"].notna()]  # 4 FLT3-ITD rows have no allele: rejected
    assert counts["rejected"] == len(apl) - len(kept) == 4
    n_samples = brca["Tumor_Sample_Barcode"].nunique() + kept["Tumor_Sample_Barcode"].nunique()
    assert counts["samples"] == n_samples

    burden = lake.read("tmb").to_pandas().set_index("sample_id")
    nonsyn = {"Frame_Shift_Del", "Frame_Shift_Ins", "Splice_Site", "Translation_Start_Site",
              "Nonsense_Mutation", "Nonstop_Mutation", "In_Frame_Del", "In_Frame_Ins", "Missense_Mutation"}
    expected = brca[brca["Variant_Classification"].isin(nonsyn)].groupby("Tumor_Sample_Barcode").size()
    for sample, n in expected.items():
        assert burden.loc[sample, "n_nonsilent"] == n
        assert burden.loc[sample, "tmb_per_mb"] == pytest.approx(n / 50.0)
    status = lake.read("gene_status").to_pandas()
    assert len(status) == 3 * counts["samples"]
    tp53 = set(brca.loc[brca["Hugo_Symbol"].eq("TP53") & brca["Variant_Classification"].isin(nonsyn),
                        "Tumor_Sample_Barcode"])
    assert set(status.loc[status["gene"].eq("TP53") & status["mutated"], "sample_id"]) >= tp53

    rejects = lake.read("rejects").to_pandas()
    assert len(rejects) == counts["rejected"] and set(rejects["modality"]) == {"variants"}

    again = ingest_variants(lake, [maf_dir], gene_panel=panel)
    assert again["variants_written"] == counts["variants_written"]
    assert lake.read("variants").num_rows == counts["variants_written"]
    assert lake.read("tmb").num_rows == counts["samples"]


def test_pipeline_sample_map_and_file_rejects(tmp_path):
    from ingest.lake import Lake

    (tmp_path / "in").mkdir()
    vcf = write_vcf(tmp_path / "in" / "S1.vcf", "7|55191822|.|T|G|.|PASS|.|GT:AD|0/1:30,10|0/0:40,0\n"
                    "7|55191900|.|C|A|.|PASS|.|GT:AD:AF:DP|0/1:232,4:29:2|0/0:40,0:0:40\n",  # a cut-up record
                    samples=("S1", "NORMAL"))
    bad_maf = tmp_path / "in" / "broken.maf"
    bad_maf.write_text("Hugo_Symbol\tChromosome\n")
    gz = tmp_path / "in" / "cut.vcf.gz"
    gz.write_bytes(gzip.compress(vcf.read_bytes())[:-12])
    sample_map = tmp_path / "map.csv"
    sample_map.write_text("sample_id,patient_id\nS1,MRN-001\n")
    lake = Lake(tmp_path / "lake")
    counts = ingest_variants(lake, [tmp_path / "in"], sample_map=sample_map)
    assert counts["files"] == 3 and counts["samples"] == 1 and counts["unannotated_samples"] == 1
    variants = lake.read("variants").to_pylist()
    assert {v["patient_id"] for v in variants} == {"MRN-001"}
    reasons = lake.read("rejects").column("reason").to_pylist()
    assert any("broken.maf" in r and "Tumor_Sample_Barcode" in r for r in reasons)
    assert any("cut.vcf.gz" in r and "truncated" in r for r in reasons)
    assert [v["pos"] for v in variants] == [55191822]  # the record with VAF 29 is a reject, not a variant
    assert any(r.startswith("VAF is not a fraction in [0, 1]") for r in reasons)  # one reason for every such record
    assert not any("VAF 29" in r for r in reasons)
    assert not lake.has("tmb") or lake.read("tmb").num_rows == 0  # unannotated: TMB unknown, not zero


def test_a_run_that_reads_no_file_is_an_error_that_writes_nothing(tmp_path):
    from ingest.lake import Lake
    from ingest.variants.pipeline import VariantInputError

    vcf = write_vcf(tmp_path / "S1.vcf", "7|55191822|.|T|G|.|PASS|.|GT:AD|0/1:30,10|0/0:40,0\n")
    lake = Lake(tmp_path / "lake")
    with pytest.raises(VariantInputError, match="no variant could be read from the 1 file.*--tumor-sample is not"):
        ingest_variants(lake, [vcf], tumor_sample="TUMOUR_X")  # a mistyped sample name
    assert not lake.has("rejects") and not lake.has("manifest")


def test_a_sample_dated_by_month_or_day_is_no_input_before_that_period_ends(tmp_path):
    """A biopsy dated ``2020-05`` may have been taken on 2020-05-20: no input for a diagnosis on 2020-05-15 (the
    cohort compares the collection date with the cutoff). Nor one dated 2020-05-15, the day of a diagnosis timed
    10:00 that day; one dated 2020-04 is."""
    import numpy as np

    from fusion.cohort import LakeFrames, genomics_block
    from ingest.lake import Lake
    from ingest.reader import read_gene_status, read_tmb

    maf = tmp_path / "c.maf"
    header = "Hugo_Symbol\tChromosome\tStart_Position\tReference_Allele\tTumor_Seq_Allele2\t" \
             "Variant_Classification\tTumor_Sample_Barcode\n"
    maf.write_text(header + "".join(f"EGFR\t7\t55191822\tT\tG\tMissense_Mutation\t{s}\n" for s in ("S1", "S2",
                                                                                                     "S3")))
    sample_map = tmp_path / "map.csv"
    sample_map.write_text("sample_id,patient_id,collected_date\nS1,P1,2020-05\nS2,P2,2020-05-15\nS3,P3,2020-04\n")
    lake = Lake(tmp_path / "lake")
    ingest_variants(lake, [maf], sample_map=sample_map, gene_panel=GenePanel(genes=["EGFR"], panel_size_mb=1.0))
    frames = LakeFrames(gene_status=read_gene_status(lake), tmb=read_tmb(lake))
    keys = np.array(["P1", "P2", "P3"])
    cutoff = pd.Series({"P1": pd.Timestamp("2020-05-15", tz="UTC"), "P2": pd.Timestamp("2020-05-15T10:00", tz="UTC"),
                        "P3": pd.Timestamp("2020-05-15", tz="UTC")})
    block, _, dated = genomics_block(frames, keys, cutoff, ["EGFR"], 1)
    assert block.present.tolist() == [False, False, True] and dated["genomics_samples_after_cutoff"] == 2


def test_sample_map_collection_dates(tmp_path):
    from ingest.lake import Lake
    from ingest.variants.pipeline import load_sample_dates, load_sample_map

    maf = tmp_path / "c.maf"
    header = "Hugo_Symbol\tChromosome\tStart_Position\tReference_Allele\tTumor_Seq_Allele2\t" \
             "Variant_Classification\tTumor_Sample_Barcode\n"
    maf.write_text(header + "EGFR\t7\t55191822\tT\tG\tMissense_Mutation\tS1\n"
                   "TP53\t17\t7675088\tC\tT\tMissense_Mutation\tS2\n")
    sample_map = tmp_path / "map.csv"
    sample_map.write_text("sample_id,patient_id,collected_date\nS1,P1,2020-03-04\nS2,P1,\n")
    lake = Lake(tmp_path / "lake")
    counts = ingest_variants(lake, [maf], sample_map=sample_map,
                             gene_panel=GenePanel(genes=["EGFR", "TP53"], panel_size_mb=1.0))
    assert counts["undated_samples"] == 1
    for table in ("tmb", "gene_status"):
        rows = lake.read(table).to_pandas().drop_duplicates("sample_id").set_index("sample_id")["collected"]
        assert rows["S1"] == pd.Timestamp("2020-03-04T23:59:59.999999", tz="UTC") and pd.isna(rows["S2"]), table
    sample_map.write_text("sample_id,patient_id,collected_date\nS1,P1,2020-03-04\nS2,P1,04/03/2020\n")
    with pytest.raises(ValueError, match=r"map.csv, line 3: collected_date is not an ISO 8601") as raised:
        load_sample_dates(sample_map)
    assert "04/03/2020" not in str(raised.value)  # a date is an identifier: the line says where it is
    sample_map.write_text("sample_id,patient_id,collected_date\nS2,P1,\nS1,P1,2020-03-04\nS1,P1,04/03/2020\n")
    with pytest.raises(ValueError, match=r"map.csv, line 4: collected_date is not"):  # its own line
        load_sample_dates(sample_map)
    sample_map.write_text("sample_id,patient_id,collected_date\nTCGA-05-4244-01A,P1,2020-03-04\n"
                          "TCGA-05-4244-01A,P1,2020-03-05\n")
    with pytest.raises(ValueError, match=r"lines 2 and 3: the same sample_id has two collected dates") as raised:
        load_sample_dates(sample_map)
    assert "TCGA-05-4244" not in str(raised.value) and "2020-03-0" not in str(raised.value)
    sample_map.write_text("sample_id,patient_id\nTCGA-05-4244-01A,P1\nS2,P1\nTCGA-05-4244-01A,P2\n")
    with pytest.raises(ValueError, match=r"lines 2 and 4: the same sample_id is mapped to two patients") as raised:
        load_sample_map(sample_map)
    assert "TCGA-05-4244" not in str(raised.value)  # a tumour sample barcode names its patient
    with pytest.raises(ValueError, match="sample map .*nope.csv not found; pass --sample-map"):
        load_sample_map(tmp_path / "nope.csv")
    from typer.testing import CliRunner

    from apps.cli import app

    sample_map.write_text("sample_id,patient_id,collected_date\nTCGA-05-4244-01A,P1,DOB 04/07/1961\n")
    result = CliRunner().invoke(app, ["ingest", "variants", str(maf), "--lake", str(tmp_path / "lake"),
                                      "--sample-map", str(sample_map)])
    shown = " ".join(result.output.split())  # rich's line wrapping undone
    assert result.exit_code == 1 and "line 2: collected_date is not an ISO 8601 date" in shown, result.output
    assert "1961" not in shown and "TCGA-05-4244" not in shown


def test_maf_bad_rows_become_rejects_with_line_numbers(tmp_path):
    header = "\t".join(["Hugo_Symbol", "Chromosome", "Start_Position", "Reference_Allele", "Tumor_Seq_Allele2",
                        "Variant_Classification", "Tumor_Sample_Barcode", "t_depth", "t_alt_count"])
    rows = ["EGFR\tchr7\t55191822\tT\tG\tMissense_Mutation\tS1\t100\t25",  # line 3
            "KRAS\t12\t25245350\tC\tA\tMissense_Mutation\tS1\t80\t8\textra",  # line 4: one field too many
            "",  # line 5: blank, ignored
            "TP53\t17\tabc\tG\tA\tMissense_Mutation\tS1\t50\t5",  # line 6: Start_Position not an integer
            "TP53\t17\t7675088\tG\t\tMissense_Mutation\tS1\t50\t5",  # line 7: no ALT
            "STK11\t19\t1207000\tC\tT\tNonsense_Mutation\tS2\t\t",  # line 8: optional fields empty (ends in tabs)
            "BRAF\t7\t0\tA\tT\tMissense_Mutation\tS2\t\t",  # line 9: positions are 1-based
            "# a note",  # line 10: a comment inside the data
            "KEAP1\t19\t10600000\tG\tT\tMissense_Mutation\tS2"]  # line 11: cut short, 7 of 9 fields
    maf = tmp_path / "cohort.maf"
    maf.write_text("#version 2.4\n" + header + "\n" + "\n".join(rows) + "\n")
    result = maf_variants(maf)
    assert result.records_read == 8 == result.table.num_rows + len(result.rejects)
    assert [r["location"] for r in result.rejects] == ["line 4", "line 6", "line 7", "line 9", "line 10", "line 11"]
    assert "wrong number of fields: expected 9 (the header's columns), found 10" in result.rejects[0]["reason"]
    assert result.rejects[0]["raw"] == rows[1]
    assert "Start_Position is not a positive integer" in result.rejects[1]["reason"]
    assert "abc" not in result.rejects[1]["reason"] and result.rejects[1]["raw"] == rows[3]
    assert "Tumor_Seq_Allele2" in result.rejects[2]["reason"] and result.rejects[2]["raw"] == rows[4]
    assert result.rejects[3]["reason"] == result.rejects[1]["reason"]  # 'abc' and '0': one reason, one summary line
    assert "comment lines (#) go before the header" in result.rejects[4]["reason"]
    assert "expected 9 (the header's columns), found 7" in result.rejects[5]["reason"]
    kept = result.table.to_pylist()
    assert [(r["chrom"], r["gene"], r["vaf"], r["depth"]) for r in kept] == [("7", "EGFR", 0.25, 100),
                                                                              ("19", "STK11", None, None)]


_FILTER_HEADER = "\t".join(["Hugo_Symbol", "Chromosome", "Start_Position", "Reference_Allele", "Tumor_Seq_Allele2",
                            "Variant_Classification", "Tumor_Sample_Barcode", "t_depth", "t_alt_count", "FILTER"])


def test_a_maf_row_with_fewer_fields_than_the_header_is_a_reject_not_empty_fields(tmp_path):
    """pandas reads a missing field as an empty one: a row cut before FILTER would read as unfiltered."""
    rows = ["EGFR\t7\t55191822\tT\tG\tMissense_Mutation\tS1\t100\t25\tPASS",  # line 2
            "KRAS\t12\t25245350\tC\tA\tMissense_Mutation\tS1\t80\t8",  # line 3: cut before FILTER
            "TP53\t17\t7675088\tG\tA\tMissense_Mutation\tS1\t50\t5\t",  # line 4: FILTER empty, count right
            "STK11\t19\t1207000\tC\tT\tNonsense_Mutation\tS2\t60\t6\tLowQual"]  # line 5
    maf = tmp_path / "cut.maf"
    maf.write_text(_FILTER_HEADER + "\n" + "\n".join(rows) + "\n")
    result = maf_variants(maf)
    assert result.records_read == 4 and result.table.num_rows == 3
    [reject] = result.rejects
    assert reject["source"] == str(maf) and reject["location"] == "line 3" and reject["raw"] == rows[1]
    reason = reject["reason"]
    assert reason.startswith("cut.maf, line 3: wrong number of fields: expected 10 (the header's columns), found 9")
    assert "cut short" in reason and "Fix:" in reason
    assert [(r["gene"], r["filter"]) for r in result.table.to_pylist()] == [
        ("EGFR", "PASS"), ("TP53", None), ("STK11", "LowQual")]


@pytest.mark.parametrize("gz", [False, True])
def test_a_maf_cut_mid_row_keeps_the_rows_before_and_rejects_the_cut_one(tmp_path, monkeypatch, gz):
    """An interrupted copy: the last line stops in the middle of a row (no line break after it)."""
    import ingest.variants.maf as maf_module

    lines = [f"EGFR\t7\t{1000 + i}\tT\tG\tMissense_Mutation\tS1\t100\t20\tPASS" for i in range(10)]
    text = _FILTER_HEADER + "\n" + "\n".join(lines) + "\n"
    text = text[: text.rindex("\t100\t20")]  # line 11 ends after its sample: 7 of 10 fields
    path = tmp_path / ("cut.maf.gz" if gz else "cut.maf")
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    monkeypatch.setattr(maf_module, "CHUNK_ROWS", 4)
    chunks = []
    result = maf_variants(path, sink=chunks.append)
    assert [c.num_rows for c in chunks] == [4, 4, 1]  # lines 2-5, 6-9, 10-11 (11 rejected)
    assert result.records_read == 10 and sum(c.num_rows for c in chunks) == 9
    [reject] = result.rejects
    assert reject["location"] == "line 11" and reject["raw"] == lines[-1][: lines[-1].rindex("\t100\t20")]
    assert "found 7" in reject["reason"] and path.name in reject["reason"]


def test_maf_field_count_rejects_keep_line_numbers_across_chunks_line_ends_and_encodings(tmp_path, monkeypatch):
    import ingest.variants.maf as maf_module

    good = [f"EGFR\t7\t{1000 + i}\tT\tG\tMissense_Mutation\tS\u00e9{i % 2}\t100\t20\tPASS" for i in range(30)]
    lines = list(good)
    short = {4: "EGFR\t7\t9", 5: "EGFR\t7\t9\tT", 10: "\t".join(["X"] * 11),
             29: "KRAS\t12\t5\tC\tA\tMissense_Mutation\tS1\t100\t20"}  # all but FILTER
    for i, line in short.items():
        lines[i] = line
    lines.insert(20, "")  # a blank line (ignored) shifts the later line numbers by one
    lines.insert(21, "\t" * 9)  # a row of empty fields: blank too
    body = "#version 2.4\n#another comment\n" + _FILTER_HEADER + "\n" + "\n".join(lines) + "\n"
    expected = sorted(i + 4 + (i >= 20) * 2 for i in short)  # data starts at line 4
    for crlf in (False, True):
        for encoding in ("utf-8", "latin-1"):
            for chunk_rows in (1, 3, 4, 50_000):
                path = tmp_path / f"t_{crlf}_{encoding}_{chunk_rows}.maf"
                path.write_bytes(body.replace("\n", "\r\n" if crlf else "\n").encode(encoding))
                monkeypatch.setattr(maf_module, "CHUNK_ROWS", chunk_rows)
                result = maf_variants(path)
                case = (crlf, encoding, chunk_rows)
                assert [r["location"] for r in result.rejects] == [f"line {n}" for n in expected], case
                assert [r["raw"] for r in result.rejects] == [short[i] for i in sorted(short)], case
                assert all("wrong number of fields" in r["reason"] for r in result.rejects), case
                assert result.records_read == 30 and result.table.num_rows == 26, case
                samples = set(result.table.column("sample_id").to_pylist())
                assert samples == ({"S\u00e90", "S\u00e91"} if encoding == "utf-8" else {"S\ufffd0", "S\ufffd1"}), case


@pytest.mark.parametrize("order", ["long first", "long second", "short first"])
def test_a_long_and_a_short_maf_row_in_one_chunk_are_both_rejects(tmp_path, order):
    """One field too many and one too few add up to the right number of tabs: both rows are still caught (a
    first row with one field too many would also make pandas take its first field for an index)."""
    good = ["EGFR\t7\t100\tT\tG\tMissense_Mutation\tS1\t100\t20\tPASS",
            "EGFR\t7\t200\tT\tG\tMissense_Mutation\tS1\t100\t20\tPASS"]
    long = "KRAS\t12\t300\tC\tA\tMissense_Mutation\tS1\t100\t20\tPASS\textra"
    short = "KRAS\t12\t400\tC\tA\tMissense_Mutation\tS1\t100\t20"
    lines = {"long first": [long, *good, short], "long second": [good[0], long, short, good[1]],
             "short first": [short, *good, long]}[order]
    path = tmp_path / "m.maf"
    path.write_text(_FILTER_HEADER + "\n" + "\n".join(lines) + "\n")
    result = maf_variants(path)
    assert {(r["location"], r["raw"]) for r in result.rejects} == {
        (f"line {lines.index(long) + 2}", long), (f"line {lines.index(short) + 2}", short)}
    assert [(r["pos"], r["gene"], r["filter"]) for r in result.table.to_pylist()] == [
        (100, "EGFR", "PASS"), (200, "EGFR", "PASS")]
    assert result.records_read == 4


def test_a_truncated_maf_gz_keeps_the_rows_before_the_break_and_rejects_the_file(tmp_path, monkeypatch):
    import pyarrow as pa

    import ingest.variants.maf as maf_module

    path = data_file("maf/brca.maf.gz")
    whole = maf_variants(path)
    cut = tmp_path / "brca_cut.maf.gz"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(maf_module, "CHUNK_ROWS", 100)
    chunks = []
    result = maf_variants(cut, sink=chunks.append)
    kept = sum(c.num_rows for c in chunks)
    assert 0 < kept == result.records_read < whole.records_read
    [reject] = result.rejects  # the line cut by the break is in the file's reject, not a row reject of its own
    assert reject["location"] is None and "brca_cut.maf.gz: file is truncated or corrupt after" in reject["reason"]
    columns = [c for c in whole.table.column_names if c != "source_file"]
    assert pa.concat_tables(chunks).select(columns).equals(whole.table.slice(0, kept).select(columns))


def test_a_short_maf_row_goes_to_the_lake_rejects_and_the_counts_reconcile(tmp_path):
    from ingest.lake import Lake

    rows = ["EGFR\t7\t55191822\tT\tG\tMissense_Mutation\tS1\t100\t25\tPASS",
            "KRAS\t12\t25245350\tC\tA\tMissense_Mutation\tS1\t80\t8"]  # line 3: cut before FILTER
    maf = tmp_path / "c.maf"
    maf.write_text(_FILTER_HEADER + "\n" + "\n".join(rows) + "\n")
    lake = Lake(tmp_path / "lake")
    counts = ingest_variants(lake, [maf], gene_panel=GenePanel(genes=["EGFR", "KRAS"], panel_size_mb=1.0))
    assert counts["records_read"] == 2 and counts["variants_written"] == 1 and counts["rejected"] == 1
    assert counts["records_read"] == counts["variants_written"] + counts["rejected"] + counts["duplicates"]
    [reject] = lake.read("rejects").to_pylist()
    assert (reject["source"], reject["location"], reject["raw"]) == (str(maf), "line 3", rows[1])
    assert "c.maf, line 3: wrong number of fields: expected 10" in reject["reason"]
    assert [v["gene"] for v in lake.read("variants").to_pylist()] == ["EGFR"]
    status = {r["gene"]: r["mutated"] for r in lake.read("gene_status").to_pylist()}
    assert status == {"EGFR": True, "KRAS": False}


def test_generic_tumor_column_takes_the_header_sample_name(tmp_path):
    """Two files whose tumour column is called TUMOR must not merge into one sample."""
    from ingest.variants.vcf import vcf_variants

    ids = []
    for name in ("SMP-1", "SMP-2"):
        path = tmp_path / f"{name}.vcf"
        path.write_text(
            "##fileformat=VCFv4.2\n"
            f"##tumor_sample={name}\n"
            '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
            "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tTUMOR\tNORMAL\n"
            "7\t55191822\t.\tT\tG\t.\tPASS\t.\tGT\t0/1\t0/0\n")
        ids.append(set(vcf_variants(path).table.column("sample_id").to_pylist()))
    assert ids == [{"SMP-1"}, {"SMP-2"}]


def test_a_sequenced_sample_without_variants_is_wild_type_not_unknown(tmp_path):
    from ingest.lake import Lake

    ann = "ANN=G|missense_variant|MODERATE|EGFR|EGFR|transcript|T1|protein_coding|20/28|c.2573T>G|p.L858R|||||"
    record = "\t".join(["7", "55191822", ".", "T", "G", ".", "PASS", ann, "GT:AD", "0/1:30,10", "0/0:40,0", "0/0:35,0"])
    vcf = write_vcf(tmp_path / "cohort.vcf", "", samples=("S1", "S2", "S3"), extra_header=ANN_HEADER)
    vcf.write_text(vcf.read_text() + record + "\n")
    lake = Lake(tmp_path / "lake")
    counts = ingest_variants(lake, [vcf], gene_panel=GenePanel(genes=["EGFR", "KRAS"], panel_size_mb=1.0))
    assert counts["samples"] == 3 and counts["tmb_rows"] == 3 and counts["unannotated_samples"] == 0
    burden = {r["sample_id"]: r["n_nonsilent"] for r in lake.read("tmb").to_pylist()}
    assert burden == {"S1": 1, "S2": 0, "S3": 0}
    status = {(r["sample_id"], r["gene"]): r["mutated"] for r in lake.read("gene_status").to_pylist()}
    assert status[("S1", "EGFR")] and not status[("S2", "EGFR")] and len(status) == 6


# -- VCF: the column-wise path gives the per-record path's rows ---------------------------------------------
ANN_HEADER = ('##INFO=<ID=ANN,Number=.,Type=String,Description="Functional annotations: \'Allele | Annotation |'
              " Annotation_Impact | Gene_Name | Gene_ID | Feature_Type | Feature_ID | Transcript_BioType | Rank |"
              " HGVS.c | HGVS.p | cDNA.pos / cDNA.length | CDS.pos / CDS.length | AA.pos / AA.length | Distance |"
              ' ERRORS / WARNINGS / INFO\' ">')
CSQ_FIELDS = "Allele|Consequence|SYMBOL|Feature|BIOTYPE|HGVSp|HGVSc|cDNA_position|CANONICAL|ALLELE_NUM|" \
             "Protein_position|Amino_acids"
CSQ_HEADER = f'##INFO=<ID=CSQ,Number=.,Type=String,Description="Consequence annotations from Ensembl VEP. ' \
             f'Format: {CSQ_FIELDS}">'
TERMS = ["missense_variant", "synonymous_variant", "stop_gained", "frameshift_variant", "intron_variant",
         "splice_donor_variant", "splice_region_variant&intron_variant", "downstream_gene_variant",
         "inframe_deletion", "protein_altering_variant", "5_prime_UTR_variant", "made_up_term", ""]
BIOTYPES = ["protein_coding", "lncRNA", "nonsense_mediated_decay", "processed_pseudogene", "", "odd_type"]
HGVSP = ["p.Leu858Arg", "p.Ser60=", "p.%3D", "p.Trp54Ter", "", "ENSP0001.1:p.Lys224AsnfsTer19", "V536L",
         "c.123A>G(p.Leu41Pro)", "p.="]


def _random_vcf(path: Path, rng, kind: str, n: int) -> Path:
    """A tumour/normal VCF with random alleles, ANN or CSQ effects, FORMAT layouts and some bad lines."""
    lines = []
    for _ in range(n):
        ref = "".join(rng.choice(list("ACGT"), size=int(rng.integers(1, 4))))
        alt = rng.choice([rng.choice(list("ACGT")), ref[0] + "TTG", ref[0] + "G", ref[0], ref + "A", "<DEL>", "*",
                          "C,G", "A,ACGT", "N[1:100["])
        if alt == ref:
            alt = "T" if ref != "T" else "G"
        entries = []
        for _ in range(int(rng.integers(0, 5))):
            allele = rng.choice([alt.split(",")[0], alt.split(",")[-1], alt[1:] or "-", "X", ""])
            gene = rng.choice(["EGFR", "KRAS", "TP53", ""])
            term, bio, hgvsp = rng.choice(TERMS), rng.choice(BIOTYPES), rng.choice(HGVSP)
            length = rng.choice(["1480/5971", "100/2000", "", "7/x"])
            hgvsc = rng.choice(["c.123+1G>A", "c.-5G>A", "ENST1:c.10A>G", ""])
            if kind == "ANN":
                fields = [allele, term, "HIGH", gene, "G1", "transcript", f"T{rng.integers(9)}", bio, "1/2",
                          hgvsc, hgvsp, length, "", rng.choice(["60/400", ""]), "", ""]
            else:
                fields = [allele, term, gene, f"T{rng.integers(9)}", bio, hgvsp, hgvsc, length,
                          rng.choice(["YES", ""]), rng.choice(["", "1", "2"]), rng.choice(["60", "60-61", ""]),
                          rng.choice(["S", "L/R", ""])]
            entries.append("|".join(fields[: int(rng.integers(len(fields) - 4, len(fields) + 1))]))
        info = ";".join(p for p in [f"DP={rng.integers(99)}", f"{kind}=" + ",".join(entries) if entries else "",
                                    rng.choice(["SOMATIC", ""])] if p) or "."
        fmt, tumour, normal = [
            ("GT:AD:DP", "0/1:30,10:40", "0/0:40,0:40"), ("GT:AD:AF:DP", "0/1:30,10:0.3:40", "0/0:40,0:0:40"),
            ("GT:AD:AF:DP", "0/1:30,10", "0/0:1,0:.:1"), ("GT:AD", "0/1:.", "0/0:40,0"),
            ("GT:FA:DP", "0/1:0.2:50", "0/0:0:50"), ("GT:AD:DP", "0/1:7,:0", "./."),
            ("GT:AD:DP", "1/2:5,3,2:10", "0/0:9,0,0:9")][int(rng.integers(7))]
        cols = [rng.choice(["1", "chr7", "chrX", "MT"]), str(rng.integers(1, 10**6)), ".", ref, alt, ".",
                rng.choice(["PASS", ".", "LowQual"]), info, fmt, tumour, normal]
        bad = rng.random()
        if bad < 0.03:
            cols = cols[:-1]
        elif bad < 0.05:
            cols[1] = rng.choice(["1x0", "+12", ""])
        elif bad < 0.06:
            cols[3] = ""
        lines.append("\t".join(cols))
        if rng.random() < 0.02:
            lines.append("")
    header = "\n".join(["##fileformat=VCFv4.2", ANN_HEADER if kind == "ANN" else CSQ_HEADER,
                        '##FORMAT=<ID=AD,Number=R,Type=Integer,Description="Allelic depths">',
                        '##FORMAT=<ID=AF,Number=A,Type=Float,Description="Allele fraction">',
                        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tTUMOR\tNORMAL"])
    path.write_text(header + "\n" + "\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("kind", ["ANN", "CSQ"])
def test_columnar_vcf_path_matches_per_record_path(tmp_path, monkeypatch, kind):
    import functools

    import numpy as np

    import ingest.variants.vcf as vcf_module
    from ingest.variants.lines import line_chunks

    path = _random_vcf(tmp_path / f"random_{kind}.vcf", np.random.default_rng(7), kind, 600)
    monkeypatch.setattr(vcf_module, "line_chunks", functools.partial(line_chunks, chunk_bytes=4096))  # many chunks
    fast, slow = vcf_variants(path), vcf_variants(path, columnar=False)
    assert fast.table.num_rows > 300 and fast.table.column("consequence").null_count < fast.table.num_rows
    for name in fast.table.column_names:
        assert fast.table.column(name).to_pylist() == slow.table.column(name).to_pylist(), name
    assert (fast.records_read, fast.skipped) == (slow.records_read, slow.skipped)
    assert fast.rejects == slow.rejects and len(fast.rejects) > 10

    data = gzip.compress(path.read_bytes())
    cut = tmp_path / "cut.vcf.gz"
    cut.write_bytes(data[: len(data) // 2])
    broken = vcf_variants(cut)
    assert 0 < broken.table.num_rows < fast.table.num_rows and broken.records_read < fast.records_read
    assert [r["location"] for r in broken.rejects if "truncated or corrupt" in r["reason"]] == [None]


def test_line_chunks_match_text_mode_lines():
    import io

    from ingest.variants.lines import line_chunks

    for data in (b"a\nbb\r\n\nccc", b"a\r\rb\n", b"x\xffy\n\nz\n", b"", b"\n\n", b"abc" * 10 + b"\nq\r\n"):
        text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace")
        expected = [(n, line.rstrip("\r\n")) for n, line in enumerate(text, start=5) if line.rstrip("\r\n")]
        for chunk_bytes in (1, 2, 3, 7, 100):
            got = []
            for numbers, lines in line_chunks(io.BufferedReader(io.BytesIO(data)), 5, chunk_bytes=chunk_bytes):
                got += list(zip(numbers.tolist(), lines.to_pylist(), strict=True))
            assert got == expected, (data, chunk_bytes)


def test_a_run_stopped_between_table_commits_is_recorded_as_failed(tmp_path, monkeypatch):
    import json

    from ingest.lake import Lake
    from ingest.variants import pipeline

    maf = tmp_path / "c.maf"
    maf.write_text("Hugo_Symbol\tChromosome\tStart_Position\tReference_Allele\tTumor_Seq_Allele2\t"
                   "Variant_Classification\tTumor_Sample_Barcode\nEGFR\t7\t55191822\tT\tG\tMissense_Mutation\tS1\n")
    replace = pipeline._replace_samples

    def stop_at_gene_status(lake, name, *args):
        if name == "gene_status":
            raise KeyboardInterrupt
        return replace(lake, name, *args)

    monkeypatch.setattr(pipeline, "_replace_samples", stop_at_gene_status)
    lake = Lake(tmp_path / "lake")
    with pytest.raises(KeyboardInterrupt):
        ingest_variants(lake, [maf], gene_panel=GenePanel(genes=["EGFR"], panel_size_mb=1.0))
    [run] = lake.read("manifest").to_pylist()
    counts = json.loads(run["counts"])
    assert run["status"] == "failed" and counts["error"] == "KeyboardInterrupt"
    assert counts["variants_written"] == 1 and counts["gene_status_rows"] == 0 and counts["tmb_rows"] == 0
    monkeypatch.setattr(pipeline, "_replace_samples", replace)
    again = ingest_variants(lake, [maf], gene_panel=GenePanel(genes=["EGFR"], panel_size_mb=1.0))
    assert again["gene_status_rows"] == 1 and lake.read("tmb").num_rows == 1 and lake.read("variants").num_rows == 1


# -- bounded memory: rows streamed a chunk at a time ------------------------------------------------------
def _maf_text(rows: list[tuple[str, str, int, str]]) -> str:
    header = "\t".join(["Hugo_Symbol", "Chromosome", "Start_Position", "Reference_Allele", "Tumor_Seq_Allele2",
                        "Variant_Classification", "Tumor_Sample_Barcode", "t_depth", "t_alt_count"])
    lines = [f"{gene}\t7\t{pos}\tT\tG\t{cls}\t{sample}\t100\t20" for gene, sample, pos, cls in rows]
    return header + "\n" + "\n".join(lines) + "\n"


def test_a_maf_streams_to_a_sink_in_chunks_with_the_same_rows(tmp_path, monkeypatch):
    import pyarrow as pa

    import ingest.variants.maf as maf

    path = tmp_path / "cohort.maf"
    path.write_text(_maf_text([("EGFR", f"S{i % 3}", 1000 + i, "Missense_Mutation") for i in range(50)]))
    monkeypatch.setattr(maf, "CHUNK_ROWS", 7)
    chunks = []
    streamed = maf_variants(path, sink=chunks.append)
    assert len(chunks) == 8 and streamed.table.num_rows == 0 and streamed.records_read == 50
    assert pa.concat_tables(chunks).equals(maf_variants(path).table)


def test_a_maf_not_utf8_after_the_first_chunks_gives_each_row_once(tmp_path, monkeypatch):
    import ingest.variants.maf as maf

    rows = [("EGFR", "S1", 1000 + i, "Missense_Mutation") for i in range(6000)]
    text = _maf_text(rows).encode()
    cut = text.rindex(b"EGFR")
    path = tmp_path / "latin1.maf"
    path.write_bytes(text[:cut] + b"\xe9" + text[cut + 1:])  # one Latin-1 byte in the last row's gene
    monkeypatch.setattr(maf, "CHUNK_ROWS", 500)
    chunks = []
    result = maf_variants(path, sink=chunks.append)
    assert len(chunks) > 1 and result.records_read == 6000
    positions = [p for chunk in chunks for p in chunk.column("pos").to_pylist()]
    assert positions == [1000 + i for i in range(6000)]  # the chunks read before the bad byte are not repeated


def test_a_cohort_vcf_streams_to_a_sink_in_chunks_with_the_same_rows(tmp_path, monkeypatch):
    import pyarrow as pa

    import ingest.variants.vcf as vcf

    body = "".join("\t".join(["7", str(1000 + i), ".", "T", "G", ".", "PASS", ".", "GT", "0/1", "0/1"]) + "\n"
                   for i in range(23))
    path = write_vcf(tmp_path / "cohort.vcf", body, samples=("S1", "S2"))
    monkeypatch.setattr(vcf, "SINK_ROWS", 10)
    chunks = []
    streamed = vcf_variants(path, sink=chunks.append)
    assert len(chunks) == 5 and streamed.table.num_rows == 0  # 46 rows: 4 chunks of 10 (+1 row) and the rest
    assert pa.concat_tables(chunks).equals(vcf_variants(path).table)


def test_the_pipeline_keeps_the_last_of_duplicate_rows_across_chunks_and_files(tmp_path, monkeypatch):
    import ingest.variants.maf as maf
    import ingest.variants.staging as staging
    from ingest.lake import Lake

    first = tmp_path / "a.maf"
    first.write_text(_maf_text([("EGFR", "S1", 100, "Silent"), ("KRAS", "S1", 200, "Missense_Mutation"),
                                ("EGFR", "S1", 100, "Missense_Mutation"), ("TP53", "S2", 300, "Silent")]))
    second = tmp_path / "b.maf"
    second.write_text(_maf_text([("TP53", "S2", 300, "Nonsense_Mutation"), ("KRAS", "S3", 200, "Silent")]))
    monkeypatch.setattr(maf, "CHUNK_ROWS", 1)
    monkeypatch.setattr(staging, "BATCH_ROWS", 2)
    lake = Lake(tmp_path / "lake")
    counts = ingest_variants(lake, [first, second], gene_panel=GenePanel(genes=["EGFR", "TP53"],
                                                                          panel_size_mb=1.0))
    rows = [(r["sample_id"], r["pos"], r["consequence"]) for r in lake.read("variants").to_pylist()]
    assert rows == [("S1", 200, "Missense_Mutation"), ("S1", 100, "Missense_Mutation"),
                    ("S2", 300, "Nonsense_Mutation"), ("S3", 200, "Silent")]  # input order, last copy kept
    assert counts["duplicates"] == 2 and counts["variants_written"] == 4
    burden = {r["sample_id"]: r["n_nonsilent"] for r in lake.read("tmb").to_pylist()}
    assert burden == {"S1": 2, "S2": 1, "S3": 0}
    status = {(r["sample_id"], r["gene"]): (r["mutated"], r["n_variants"])
              for r in lake.read("gene_status").to_pylist()}
    assert status[("S1", "EGFR")] == (True, 1) and status[("S2", "TP53")] == (True, 1)
    assert not (lake.path / "_staging").exists()


class _Trickle:
    """A binary stream whose ``read1`` returns at most ``step`` bytes (chunk boundaries between any two bytes)."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.at, self.step = data, 0, step

    def read1(self, n: int = -1) -> bytes:
        piece = self.data[self.at:self.at + self.step]
        self.at += len(piece)
        return piece


def test_line_chunks_number_lines_alike_on_every_chunk_boundary():
    """A bare ``\\r`` (classic Mac, Excel for Mac text) ending a chunk without any ``\\n`` in it was cut off the
    line it ends and read again as an empty line in the next chunk: every later line number was one too high."""
    import io

    from ingest.variants.lines import line_chunks

    for data in (b"aa\rbb\rcc\rdd\r", b"aa\rbb\rcc\rdd", b"aaaa\r\nbbbb\r\ncc\r\n", b"a\r\rb\rc\n\rd\r\n"):
        text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace")
        expected = [(n, line.rstrip("\r\n")) for n, line in enumerate(text, start=1) if line.rstrip("\r\n")]
        for step in (1, 2, 3, 4, 5):
            got = []
            for numbers, lines in line_chunks(_Trickle(data, step), 1, chunk_bytes=step):
                got += list(zip(numbers.tolist(), lines.to_pylist(), strict=True))
            assert got == expected, (data, step)


def test_a_maf_with_bare_cr_line_ends_names_the_right_line_after_a_chunk(tmp_path, monkeypatch):
    import functools

    import ingest.variants.maf as maf_module
    from ingest.variants.lines import line_blocks

    monkeypatch.setattr(maf_module, "line_blocks", functools.partial(line_blocks, chunk_bytes=1 << 16))
    header = ("Hugo_Symbol\tChromosome\tStart_Position\tReference_Allele\tTumor_Seq_Allele2\tVariant_Classification"
              "\tTumor_Sample_Barcode")
    rows = [f"EGFR\t7\t{1000 + i}\tT\tG\tMissense_Mutation\tS{i}" for i in range(6000)]  # about 250 kB
    rows[5000] = "EGFR\t7\tx\tT\tG\tMissense_Mutation\tS5000"
    path = tmp_path / "mac.maf"
    path.write_bytes("\r".join([header, *rows]).encode())
    result = maf_variants(path)
    assert [r["location"] for r in result.rejects] == ["line 5002"]
    assert result.rejects[0]["raw"] == rows[5000] and result.table.num_rows == 5999


def test_maf_rows_that_are_no_somatic_call_are_skipped_and_counted(tmp_path):
    """Mutation_Status LOH / Wildtype rows are not mutations (cBioPortal does not load them), and Germline rows are
    the patient's own variants: none of them is a tumour variant for gene status or TMB. (A "None" status reads
    as an empty cell: kept.)"""
    maf = tmp_path / "data_mutations.txt"
    header = ["Hugo_Symbol", "Chromosome", "Start_Position", "Reference_Allele", "Tumor_Seq_Allele2",
              "Variant_Classification", "Tumor_Sample_Barcode", "Mutation_Status"]
    rows = [("EGFR", "Somatic"), ("BRCA1", "Germline"), ("TP53", "LOH"), ("KRAS", "Wildtype"), ("STK11", "None"),
            ("KEAP1", "")]
    maf.write_text("\n".join(["\t".join(header), *("\t".join([gene, "7", str(100 + i), "C", "T",
                                                              "Missense_Mutation", "S1", status])
                                                    for i, (gene, status) in enumerate(rows))]) + "\n")
    result = maf_variants(maf)
    assert result.table.column("gene").to_pylist() == ["EGFR", "STK11", "KEAP1"]  # no status is no verdict
    assert result.skipped == 3 and result.records_read == 6 and not result.rejects


# -- one variant, one key: allele case and chromosome names alike in VCFs and MAFs ------------------------------
def _ann(allele: str, gene: str) -> str:
    return "ANN=" + "|".join([allele, "missense_variant", "MODERATE", gene, gene, "transcript", "T1", "protein_coding",
                              "1/2", "c.1A>G", "p.Leu858Arg", "", "", "", "", ""])


def _case_vcf(path: Path, lower: bool) -> Path:
    """Records whose REF/ALT are written lower-case (``lower``) or upper-case; annotations, symbolic ALTs and
    breakends as written either way."""
    def bases(allele: str) -> str:
        return allele.lower() if lower else allele

    records = [
        ("chr7", 55191822, "T", "G", _ann("G", "EGFR"), "GT:AD:DP", "0/1:30,10:40"),  # SnpEff writes upper-case
        ("chr12", 25245350, "C", "A", _ann("a", "KRAS"), "GT:AD:DP", "0/1:30,10:40"),  # an annotator copying case
        ("chr17", 7675088, "GCAT", "G", ".", "GT:AD:DP", "0/1:30,10:40"),  # MAF convention: shared G trimmed
        ("chr19", 1207000, "C", "T", ".", "AU:CU:GU:TU:DP", "0,0:30,30:0,0:10,10:40"),  # Strelka: counts by base
        ("chr1", 100, "A", "<del>", ".", "GT", "0/1"),  # symbolic: counted, not written
        ("chr2", 321681, "G", "g]17:198982]", ".", "GT", "0/1"),  # breakend: counted, not written
    ]
    lines = ["\t".join([c, str(p), ".", bases(r), a if a.startswith("<") or "]" in a else bases(a), ".", "PASS", i,
                        f, t, t]) for c, p, r, a, i, f, t in records]
    write_vcf(path, "", samples=("S1", "NORMAL"), extra_header=ANN_HEADER)  # the body's ANN holds "|"
    path.write_text(path.read_text() + "\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("columnar", [True, False])
def test_lower_case_vcf_alleles_give_the_upper_case_rows_and_keys(tmp_path, columnar):
    """VCF REF/ALT bases are case-insensitive: ``t>g`` is ``T>G``, with one variant_key, its annotation, its
    MAF-convention trimming and its Strelka VAF; symbolic ALTs and breakends keep their form."""
    lower = vcf_variants(_case_vcf(tmp_path / "lower.vcf", lower=True), columnar=columnar)
    upper = vcf_variants(_case_vcf(tmp_path / "upper.vcf", lower=False), columnar=columnar)
    rows = lower.table.drop(["source_file"]).to_pylist()
    assert rows == upper.table.drop(["source_file"]).to_pylist()
    assert [r["variant_key"] for r in rows] == ["7:55191822:T:G", "12:25245350:C:A", "17:7675089:CAT:-",
                                                "19:1207000:C:T"]
    assert [r["gene"] for r in rows] == ["EGFR", "KRAS", None, None]
    assert rows[3]["vaf"] == pytest.approx(0.25) and lower.skipped == upper.skipped == 2
    records = list(VcfReader(tmp_path / "lower.vcf"))
    assert [(r.ref, r.alt) for r in records[-2:]] == [("A", "<del>"), ("G", "g]17:198982]")]


def test_lower_case_maf_alleles_give_the_upper_case_rows_and_keys(tmp_path):
    """MAF alleles written lower-case (some pipelines do) are the same variant as upper-case ones, and an allele 2
    equal to the reference in another case still falls back to allele 1."""
    header = "\t".join(["Hugo_Symbol", "Chromosome", "Start_Position", "Reference_Allele", "Tumor_Seq_Allele1",
                        "Tumor_Seq_Allele2", "Variant_Classification", "Tumor_Sample_Barcode"])
    rows = [("EGFR", "7", "55191822", "T", "T", "G"), ("TP53", "17", "7675088", "C", "T", "C"),
            ("TP53", "17", "7675089", "CAT", "CAT", "-")]

    def write(name: str, ref_case, allele_case) -> Path:
        path = tmp_path / name
        lines = ["\t".join([g, c, p, ref_case(r), allele_case(a1), allele_case(a2), "Missense_Mutation", "S1"])
                 for g, c, p, r, a1, a2 in rows]
        path.write_text("\n".join([header, *lines]) + "\n")
        return path

    lower = maf_variants(write("lower.maf", str.lower, str.lower)).table
    mixed = maf_variants(write("mixed.maf", str.upper, str.lower)).table  # allele 2 "c" is the reference "C"
    upper = maf_variants(write("upper.maf", str.upper, str.upper)).table
    keys = ["7:55191822:T:G", "17:7675088:C:T", "17:7675089:CAT:-"]
    for table in (lower, mixed, upper):
        assert table.column("variant_key").to_pylist() == keys
        assert table.column("ref").to_pylist() == ["T", "C", "CAT"] and table.column("alt").to_pylist()[1] == "T"


def test_only_plain_base_strings_are_upper_cased():
    import pyarrow as pa

    from ingest.variants.normalise import upper_bases, upper_bases_column

    given = ["acgt", "n", "Ag", "-", "*", ".", "<del>", "<INS:ME:alu>", "g]17:198982]", "[13:123457[a", ""]
    expected = ["ACGT", "N", "AG", "-", "*", ".", "<del>", "<INS:ME:alu>", "g]17:198982]", "[13:123457[a", ""]
    assert [upper_bases(a) for a in given] == expected
    assert upper_bases_column(pa.array([*given, None])).to_pylist() == [*expected, None]


CHROM_NAMES = [("chrM", "MT"), ("chrMT", "MT"), ("MT", "MT"), ("M", "MT"), ("mt", "MT"), ("chrx", "X"), ("x", "X"),
               ("chrY", "Y"), ("23", "X"), ("24", "Y"), ("chr17", "17"), ("chrUn_gl000220", "Un_gl000220")]


@pytest.mark.parametrize("columnar", [True, False])
def test_vcf_and_maf_chromosome_names_agree(tmp_path, columnar):
    """The mitochondrion is MT whichever style wrote it (UCSC chrM, GRCh37 / Ensembl MT), X and Y are upper-case,
    and 23 / 24 (numeric X / Y in some MAFs and PLINK exports) are X / Y, in VCFs and MAFs alike."""
    body = "".join(f"{given}|{1000 + i}|.|A|G|.|PASS|.|GT|0/1|0/0\n" for i, (given, _) in enumerate(CHROM_NAMES))
    vcf = vcf_variants(write_vcf(tmp_path / "names.vcf", body), columnar=columnar).table
    header = "\t".join(["Hugo_Symbol", "Chromosome", "Start_Position", "Reference_Allele", "Tumor_Seq_Allele2",
                        "Variant_Classification", "Tumor_Sample_Barcode"])
    maf = tmp_path / "names.maf"
    maf.write_text("\n".join([header, *(f"G\t{given}\t{1000 + i}\tA\tG\tMissense_Mutation\tS1"
                                        for i, (given, _) in enumerate(CHROM_NAMES))]) + "\n")
    expected = [name for _, name in CHROM_NAMES]
    assert vcf.column("chrom").to_pylist() == expected == maf_variants(maf).table.column("chrom").to_pylist()
    assert vcf.column("variant_key").to_pylist()[:4] == ["MT:1000:A:G", "MT:1001:A:G", "MT:1002:A:G", "MT:1003:A:G"]
