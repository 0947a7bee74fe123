"""cBioPortal study folders: outcomes, clinical features without leakage, mutations and copy number."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from apps.cli import app
from ingest.cbioportal import DAYS_PER_MONTH, StudyError, find_study_files, ingest_cbioportal
from tests.conftest import shared_data

HEAD = "#Patient Identifier\tAge\tSex\n#Id\tAge at diagnosis\tSex\n#STRING\tNUMBER\tSTRING\n#1\t1\t1\n"


def _write(path, lines):
    path.write_text("\n".join("\t".join(map(str, row)) for row in lines) + "\n", encoding="utf-8")


def _maf_with_entrez(folder, rows):
    """The study's MAF with its Entrez_Gene_Id column: ``rows`` of symbol, id, chromosome, position, ref, alt,
    classification and sample."""
    _write(folder / "data_mutations.txt",
           [["Hugo_Symbol", "Entrez_Gene_Id", "Chromosome", "Start_Position", "Reference_Allele", "Tumor_Seq_Allele2",
             "Variant_Classification", "Tumor_Sample_Barcode"], *rows])


def _study(folder, *, patients=None, with_meta=True):
    """A study of 12 patients, one sample each (P1 has two), as the cBioPortal datahub lays it out."""
    folder.mkdir()
    rows = patients or [
        [f"P{i}", 40 + i, "Male" if i % 2 else "Female", "1:DECEASED" if i % 3 == 0 else "0:LIVING", 6.5 * i,
         "1:Recurred/Progressed" if i % 2 else "0:DiseaseFree", 3.0 * i, "Dead" if i % 3 == 0 else "Alive",
         f"TCGA-XX-{1000 + i}", "[Not Available]" if i == 4 else "White"]
        for i in range(1, 13)]
    header = ["PATIENT_ID", "AGE", "SEX", "OS_STATUS", "OS_MONTHS", "DFS_STATUS", "DFS_MONTHS", "VITAL_STATUS",
              "OTHER_PATIENT_ID", "RACE"]
    (folder / "data_clinical_patient.txt").write_text(HEAD, encoding="utf-8")
    with (folder / "data_clinical_patient.txt").open("a", encoding="utf-8") as fh:
        fh.write("\n".join("\t".join(map(str, row)) for row in [header, *rows]) + "\n")
    _write(folder / "data_clinical_sample.txt",
           [["#Patient", "#Sample", "#Type", "#Code", "#TMB"],
            ["PATIENT_ID", "SAMPLE_ID", "CANCER_TYPE_DETAILED", "ONCOTREE_CODE", "TMB_NONSYNONYMOUS"],
            *[[f"P{i}", f"P{i}-01", *(["Lung Adenocarcinoma", "LUAD"] if i % 2 else
                                      ["Lung Squamous Cell Carcinoma", "LUSC"]), 1.5 * i] for i in range(1, 13)],
            ["P1", "P1-02", "Lung Adenocarcinoma", "LUAD", 9.0]])
    _write(folder / "data_mutations.txt",
           [["Hugo_Symbol", "Chromosome", "Start_Position", "Reference_Allele", "Tumor_Seq_Allele2",
             "Variant_Classification", "Tumor_Sample_Barcode"],
            ["EGFR", 7, 55191822, "T", "G", "Missense_Mutation", "P1-01"],
            ["TP53", 17, 7675088, "C", "T", "Missense_Mutation", "P2-01"],
            ["KRAS", 12, 25245350, "C", "A", "Missense_Mutation", "P2-01"]])
    _write(folder / "data_cna.txt",
           [["Hugo_Symbol", "Entrez_Gene_Id", "P1-02", "P1-01", "P2-01", "P3-01"],
            ["EGFR", 1956, 2, 0, -1, "NA"], ["TP53", 7157, 0, -2, "amp", 1], ["NOTAGENE", 1, 2, 2, 2, 2],
            ["EGFR", 1956, 1, 1, 1, 1]])
    _write(folder / "data_mrna_seq_v2_rsem.txt",
           [["Hugo_Symbol", "Entrez_Gene_Id", "P1-01", "P2-01", "P3-01", "P4-01"],
            ["EGFR", 1956, 0, 1, 3, "NA"], ["FLAT", 1, 5, 5, 5, 5], ["WIDE", 2, 0, 1000, 0, 1000],
            ["MILD", 3, 1, 3, 1, 3], ["WIDE", 4, 1, 1, 1, 1], ["KRAS", 3845, -4, "x", 1, 1]])
    _write(folder / "data_mrna_seq_v2_rsem_zscores_ref_all_samples.txt",
           [["Hugo_Symbol", "P1-01", "P2-01"], ["EGFR", -1, 1]])
    if with_meta:
        for name, kind, datatype, data in [
                ("mrna_z", "MRNA_EXPRESSION", "Z-SCORE", "data_mrna_seq_v2_rsem_zscores_ref_all_samples.txt"),
                ("mrna", "MRNA_EXPRESSION", "CONTINUOUS", "data_mrna_seq_v2_rsem.txt"),
                ("clinical_patient", "CLINICAL", "PATIENT_ATTRIBUTES", "data_clinical_patient.txt"),
                ("clinical_sample", "CLINICAL", "SAMPLE_ATTRIBUTES", "data_clinical_sample.txt"),
                ("mutations", "MUTATION_EXTENDED", "MAF", "data_mutations.txt"),
                ("cna", "COPY_NUMBER_ALTERATION", "DISCRETE", "data_cna.txt")]:
            (folder / f"meta_{name}.txt").write_text(
                f"cancer_study_identifier: test_study\ngenetic_alteration_type: {kind}  #Note: Dont change\n"
                f"datatype: {datatype}\n"
                f"data_filename: {data}\n", encoding="utf-8")
    return folder


def _features(lake, modality):
    frame = lake.read("features").to_pandas()
    return frame[frame["modality"] == modality]


def test_a_study_loads_outcomes_clinical_features_mutations_and_copy_number(tmp_path, lake):
    steps: list[tuple[int, int]] = []
    counts = ingest_cbioportal(lake, _study(tmp_path / "study"), diagnosis="CANCER_TYPE_DETAILED",
                               progress=lambda done, total: steps.append((done, total)))
    # read: clinical files, copy number, expression; written: mutations, labels and clinical, samples, cna,
    # expression
    assert steps == [(n, 8) for n in range(1, 9)]
    labels = lake.read("labels").to_pandas().set_index("patient_id")
    assert len(labels) == 12 and counts["labels"]["patients"] == 12
    assert math.isclose(labels.loc["P3", "time"], 19.5 * DAYS_PER_MONTH) and labels.loc["P3", "event"]
    assert not labels.loc["P2", "event"] and math.isclose(labels.loc["P2", "time"], 13.0 * 30.4375)
    assert (labels["index_date"].dt.strftime("%Y-%m-%d") == "2000-01-01").all()
    assert labels.loc["P2", "diagnosis"] == "Lung Squamous Cell Carcinoma"
    assert labels.loc["P3", "diagnosis"] == "Lung Adenocarcinoma"
    clinical = _features(lake, "clinical")
    assert set(clinical["feature"]) == {"AGE", "SEX", "RACE"}
    assert clinical[(clinical["patient_id"] == "P4") & (clinical["feature"] == "RACE")]["value_str"].isna().all()
    assert counts["excluded"]["clinical"] == {"OS_STATUS": "an outcome known only after day 0",
                                              "OS_MONTHS": "an outcome known only after day 0",
                                              "DFS_STATUS": "an outcome known only after day 0",
                                              "DFS_MONTHS": "an outcome known only after day 0",
                                              "VITAL_STATUS": "an outcome known only after day 0",
                                              "OTHER_PATIENT_ID": "an identifier"}
    # the diagnosis label and its other codings are never inputs; the first sample's other attributes are
    assert counts["excluded"]["clinical_sample"] == {
        "SAMPLE_ID": "an identifier", "CANCER_TYPE_DETAILED": "the diagnosis label, or another coding of it",
        "ONCOTREE_CODE": "the diagnosis label, or another coding of it"}
    per_sample = _features(lake, "clinical_sample").set_index(["patient_id", "feature"])["value"]
    assert set(per_sample.index.get_level_values("feature")) == {"TMB_NONSYNONYMOUS"}
    assert per_sample[("P1", "TMB_NONSYNONYMOUS")] == 1.5 and counts["clinical_sample"]["samples_not_used"] == 1
    status = lake.read("gene_status").to_pandas()
    egfr = status[status["gene"] == "EGFR"].set_index("sample_id")
    assert egfr.loc["P1-01", "patient_id"] == "P1" and egfr.loc["P1-01", "mutated"]
    cna = _features(lake, "cna").set_index(["patient_id", "feature"])["value"]
    # P1's first sample in the sample file is P1-01 (not the CNA file's first column, P1-02)
    assert cna[("P1", "EGFR")] == 0 and cna[("P1", "TP53")] == -2 and cna[("P2", "EGFR")] == -1
    assert math.isnan(cna[("P2", "TP53")]) and cna[("P3", "TP53")] == 1 and math.isnan(cna[("P3", "EGFR")])
    assert "NOTAGENE" not in set(_features(lake, "cna")["feature"])
    rejects = lake.read("rejects").to_pandas()
    bad_call = rejects[rejects["source"].str.endswith("data_cna.txt")]
    assert bad_call.set_index("location")["reason"].to_dict() == {
        "line 3, column 5": "TP53: not a discrete copy-number call (-2, -1, 0, 1, 2); kept as missing",
        "line 5": "a second line for EGFR (line 2 is used)"}


def test_expression_keeps_the_panel_and_the_most_variable_genes_as_log_levels(tmp_path, lake):
    counts = ingest_cbioportal(lake, _study(tmp_path / "study"), expression_genes=1)
    expression = _features(lake, "expression").set_index(["patient_id", "feature"])["value"]
    # the RNA-seq levels, not the z-scores; EGFR and KRAS from the panel, WIDE the one most variable other gene
    assert set(expression.index.get_level_values("feature")) == {"EGFR", "KRAS", "WIDE"}
    assert math.isclose(expression[("P3", "EGFR")], 2.0) and math.isclose(expression[("P2", "WIDE")],
                                                                          math.log2(1001))
    assert math.isnan(expression[("P4", "EGFR")]) and math.isclose(expression[("P3", "KRAS")], 1.0)
    assert counts["expression"]["patients"] == 4
    rejects = lake.read("rejects").to_pandas()
    mine = rejects[rejects["source"].str.endswith("data_mrna_seq_v2_rsem.txt")].set_index("location")["reason"]
    assert mine.to_dict() == {"line 6": "a second line for WIDE (line 4 is used)",
                              "line 7, column 3": "a negative expression level; kept as missing",
                              "line 7, column 4": "not a number; kept as missing"}
    assert math.isnan(expression[("P1", "KRAS")]) and math.isnan(expression[("P2", "KRAS")])
    ingest_cbioportal(lake, _study(tmp_path / "again"), expression_genes=0)
    assert _features(lake, "expression")["feature"].nunique() == 3  # 0: the expression rows were left alone


def test_other_endpoints_and_the_status_words_of_older_studies(tmp_path, lake):
    folder = _study(tmp_path / "study", with_meta=False)
    text = (folder / "data_clinical_patient.txt").read_text().replace("1:Recurred/Progressed", "Recurred/Progressed")
    text = text.replace("0:DiseaseFree", "DiseaseFree").replace("\n", "\t\n")  # a trailing tab, as in cBioPortal's docs
    (folder / "data_clinical_patient.txt").write_text(text)
    (folder / "data_cna.txt").rename(folder / "data_CNA.txt")  # the older studies' name
    _write(folder / "data_mutations_uncalled.txt", [  # reads at a known site where no mutation was called
        ["Hugo_Symbol", "Chromosome", "Start_Position", "Reference_Allele", "Tumor_Seq_Allele2",
         "Variant_Classification", "Tumor_Sample_Barcode"], ["BRAF", 7, 140753336, "A", "T", "Missense_Mutation",
                                                             "P3-01"]])
    (folder / "data_mutations_mskcc.txt").write_text((folder / "data_mutations.txt").read_text())  # MSKCC isoforms
    found = find_study_files(folder)
    assert found.cna == folder / "data_CNA.txt" and found.mutations == [folder / "data_mutations.txt"]
    assert found.other_mutations == [folder / "data_mutations_mskcc.txt"]
    counts = ingest_cbioportal(lake, folder, endpoint="dfs")
    assert counts["mutations"]["records_read"] == 3 and counts["mutations"]["duplicates"] == 0  # one file read
    assert any(note.startswith("data_mutations_mskcc.txt: the same mutation calls") for note in counts["notes"])
    labels = lake.read("labels").to_pandas().set_index("patient_id")
    assert labels.loc["P1", "event"] and not labels.loc["P2", "event"]
    assert math.isclose(labels.loc["P2", "time"], 6.0 * DAYS_PER_MONTH)


def test_the_labels_record_the_studys_endpoint(tmp_path, lake):
    """--endpoint DFS writes the DFS time and event as DFS (they trained as overall survival)."""
    result = CliRunner().invoke(app, ["ingest", "cbioportal", str(_study(tmp_path / "study")), "--lake",
                                      str(lake.path), "--endpoint", "DFS"])
    assert result.exit_code == 2, result.output  # the study's copy-number and expression cells it rejects
    labels = lake.read("labels").to_pandas()
    assert len(labels) == 12 and set(labels["endpoint"]) == {"dfs"}


def test_a_missing_endpoint_names_the_ones_there(tmp_path, lake):
    with pytest.raises(StudyError, match=r"no PFS_STATUS and PFS_MONTHS .* this study has DFS, OS"):
        ingest_cbioportal(lake, _study(tmp_path / "study"), endpoint="PFS")
    assert not lake.has("labels")


def test_a_matrix_that_cannot_be_read_is_reported_and_the_rest_of_the_study_loads(tmp_path, lake):
    folder = _study(tmp_path / "study")
    _write(folder / "data_cna.txt", [["Gene", "P1-01"], ["EGFR", 2]])  # no gene column cBioPortal knows
    counts = ingest_cbioportal(lake, folder)
    assert counts["labels"]["patients"] == 12 and counts["mutations"]["records_read"] == 3
    assert counts["expression"]["patients"] == 4 and counts["cna"] == {"rejected": 1}
    assert not (_features(lake, "cna")).size
    why = (f"{folder / 'data_cna.txt'}, line 1: no Hugo_Symbol or Entrez_Gene_Id column; a cBioPortal matrix names"
           " each gene by one or both, in its first columns")
    assert f"not loaded, the rest of the study was: {why}" in counts["notes"]
    rejects = lake.read("rejects").to_pandas()
    assert rejects[rejects["source"].str.endswith("data_cna.txt")]["reason"].tolist() == [f"file not loaded: {why}"]
    result = CliRunner().invoke(app, ["ingest", "cbioportal", str(folder), "--lake", str(tmp_path / "cli")])
    assert result.exit_code == 2 and "not loaded, the rest of the study was" in " ".join(result.output.split())


def test_matrices_of_entrez_ids_only_are_named_from_the_studys_own_files(tmp_path, lake):
    """cBioPortal matrices name genes by Hugo_Symbol, Entrez_Gene_Id or both (File-Formats: "One or both of"; the
    expression section recommends Entrez ids alone), and datahub studies hold such files. The study's MAF pairs
    symbols with Entrez ids; an id it does not pair is kept under ENTREZ_<id> in the expression (every gene
    counts there) and cannot be a panel gene's copy number; an id of 0 or a blank one names no gene."""
    folder = _study(tmp_path / "study")
    _maf_with_entrez(folder, [["EGFR", 1956, 7, 55191822, "T", "G", "Missense_Mutation", "P1-01"],
                              ["TP53", 7157, 17, 7675088, "C", "T", "Missense_Mutation", "P2-01"],
                              ["KRAS", 3845, 12, 25245350, "C", "A", "Missense_Mutation", "P2-01"],
                              ["Unknown", 0, 12, 25245360, "C", "A", "IGR", "P2-01"]])
    _write(folder / "data_cna.txt", [["Entrez_Gene_Id", "P1-01", "P2-01", "P3-01"],
                                     [1956, 2, -1, 0], [7157, -2, 0, "NA"], [424242, 2, 2, 2], [0, 1, 1, 1]])
    _write(folder / "data_mrna_seq_v2_rsem.txt",
           [["Entrez_Gene_Id", "P1-01", "P2-01", "P3-01"],
            [1956, 0, 1, 3], [3845, 1, 1, 7], [2, 0, 1000, 0], ["", 5, 6, 7], [0, 1, 2, 3], ["12.5", 1, 2, 3]])
    counts = ingest_cbioportal(lake, folder, expression_genes=1)
    cna = _features(lake, "cna").set_index(["patient_id", "feature"])["value"]
    assert set(cna.index.get_level_values("feature")) == {"EGFR", "TP53"}
    assert cna[("P1", "EGFR")] == 2 and cna[("P2", "EGFR")] == -1 and cna[("P1", "TP53")] == -2
    expression = _features(lake, "expression").set_index(["patient_id", "feature"])["value"]
    assert set(expression.index.get_level_values("feature")) == {"EGFR", "KRAS", "ENTREZ_2"}
    assert math.isclose(expression[("P3", "KRAS")], 3.0) and math.isclose(expression[("P2", "ENTREZ_2")],
                                                                           math.log2(1001))
    rejects = lake.read("rejects").to_pandas()
    mine = rejects[rejects["source"].str.endswith("data_mrna_seq_v2_rsem.txt")].set_index("location")["reason"]
    no_gene = "no gene: the Entrez_Gene_Id is blank, 0 or not a whole number, and the file has no Hugo_Symbol column"
    assert mine.to_dict() == {"line 5": no_gene, "line 6": no_gene, "line 7": no_gene}
    notes = " ".join(counts["notes"])
    assert ("data_mrna_seq_v2_rsem.txt: 1 of 3 genes named only by Entrez_Gene_Id is not named in the study's files"
            " (data_mutations.txt): kept as ENTREZ_<id>" in notes)
    assert "data_cna.txt" in notes and "add a Hugo_Symbol column" in notes


def test_an_entrez_id_identifies_its_gene_and_one_the_study_pairs_two_ways_stays_unnamed(tmp_path, lake):
    """Where a line has both columns, the Entrez id identifies the gene (cBioPortal's validateData.py ignores a
    second line of one id, and names a line by its id when its symbol is blank). An id the study's files pair with
    two symbols (1029: CDKN2A in the copy number, P16 in the MAF), or whose symbol they pair with a second id
    (TP53: 7157 and 7158), could be either gene: it is not named."""
    folder = _study(tmp_path / "study")
    _maf_with_entrez(folder, [["KRAS", 3845, 12, 25245350, "C", "A", "Missense_Mutation", "P2-01"],
                              ["P16", 1029, 9, 21971100, "C", "T", "Missense_Mutation", "P1-01"],
                              ["TP53", 7157, 17, 7675088, "C", "T", "Missense_Mutation", "P2-01"],
                              ["TP53", 7158, 17, 7675089, "C", "T", "Missense_Mutation", "P3-01"]])
    _write(folder / "data_cna.txt", [["Hugo_Symbol", "Entrez_Gene_Id", "P1-01", "P2-01"],
                                     ["CDKN2A", 1029, -2, 0], ["EGFR", 1956, 2, 0], ["EGFR", 1956, 1, 1]])
    _write(folder / "data_mrna_seq_v2_rsem.txt",
           [["Hugo_Symbol", "Entrez_Gene_Id", "P1-01", "P2-01", "P3-01"],
            ["EGFR", 1956, 0, 1, 3], ["ERBB1", 1956, 5, 5, 5], ["", 3845, 1, 1, 7], ["", 7157, 1, 2, 3],
            ["", 1029, 3, 2, 1]])
    counts = ingest_cbioportal(lake, folder, expression_genes=5)
    expression = _features(lake, "expression")
    assert set(expression["feature"]) == {"EGFR", "KRAS", "ENTREZ_7157", "ENTREZ_1029"}
    rejects = lake.read("rejects").to_pandas()
    mine = rejects[rejects["source"].str.endswith("data_mrna_seq_v2_rsem.txt")].set_index("location")["reason"]
    assert mine.to_dict() == {"line 3": "a second line for Entrez_Gene_Id 1956 (line 2 is used)"}
    assert _features(lake, "cna").set_index(["patient_id", "feature"])["value"][("P1", "CDKN2A")] == -2
    notes = " ".join(counts["notes"])
    assert ("data_mrna_seq_v2_rsem.txt: 2 of 3 genes named only by Entrez_Gene_Id are not named in the study's files"
            " (data_mutations.txt, data_cna.txt, data_mrna_seq_v2_rsem.txt); 2 of them because those files pair the id"
            " with two symbols or its symbol with a second id (Entrez_Gene_Id 1029, 7157)" in notes)


def test_a_matrix_without_a_gene_to_load_is_noted_and_the_rest_of_the_study_loads(tmp_path, lake):
    """A copy-number matrix of Entrez ids that no file of the study names (its MAF has no Entrez_Gene_Id), or of
    no panel gene, gives no patient a row: it stopped the study ("a header but no data rows"), though the note on
    its unnamed genes says what to do. Its line rejects are still written."""
    folder = _study(tmp_path / "study")
    _write(folder / "data_cna.txt", [["Entrez_Gene_Id", "P1-01", "P2-01"], [1956, 2, -1], [7157, -2, 0], [0, 1, 1]])
    _write(folder / "data_mrna_seq_v2_rsem.txt", [["Hugo_Symbol", "P1-01", "P2-01"], ["EGFR", 1, 2], ["KRAS", 3, 4]])
    counts = ingest_cbioportal(lake, folder)
    assert counts["labels"]["patients"] == 12 and counts["expression"]["patients"] == 2
    assert counts["cna"] == {"patients": 0, "rejected": 1} and not _features(lake, "cna").size
    notes = " ".join(counts["notes"])
    assert "data_cna.txt: nothing loaded, the rest of the study was: no patient has a value of a gene it loads" in notes
    assert "data_cna.txt: 2 of 2 genes named only by Entrez_Gene_Id are not named" in notes
    rejects = lake.read("rejects").to_pandas()
    assert rejects[rejects["source"].str.endswith("data_cna.txt")]["location"].tolist() == ["line 4"]
    _write(folder / "data_cna.txt", [["Hugo_Symbol", "P1-01", "P2-01"], ["NOTAGENE", 2, -1]])
    again = ingest_cbioportal(lake, folder)
    assert again["cna"] == {"patients": 0, "rejected": 0} and again["labels"]["patients"] == 12


def test_a_copy_number_line_without_a_symbol_is_named_by_its_entrez_id(tmp_path, lake):
    """In a matrix with both gene columns, a line whose Hugo_Symbol is blank is its Entrez id's gene, as in the
    expression (cBioPortal's importer names it so): EGFR's copy number was dropped, unsaid. An id no file names is
    counted in the note; a line with neither a symbol nor an id is a reject."""
    folder = _study(tmp_path / "study")
    _maf_with_entrez(folder, [["EGFR", 1956, 7, 55191822, "T", "G", "Missense_Mutation", "P1-01"]])
    _write(folder / "data_cna.txt", [["Hugo_Symbol", "Entrez_Gene_Id", "P1-01", "P2-01"],
                                     ["", 1956, 2, -1], ["TP53", 7157, -2, 0], ["", 424242, 1, 1], ["", "", 1, 1],
                                     ["", 1956, 1, 1]])
    counts = ingest_cbioportal(lake, folder)
    cna = _features(lake, "cna").set_index(["patient_id", "feature"])["value"]
    assert cna.to_dict() == {("P1", "EGFR"): 2, ("P2", "EGFR"): -1, ("P1", "TP53"): -2, ("P2", "TP53"): 0}
    rejects = lake.read("rejects").to_pandas()
    mine = rejects[rejects["source"].str.endswith("data_cna.txt")].set_index("location")["reason"]
    assert mine.to_dict() == {"line 5": "no Hugo_Symbol, and the Entrez_Gene_Id is blank, 0 or not a whole number",
                              "line 6": "a second line for EGFR (line 2 is used)"}
    assert any(note.startswith("data_cna.txt: 1 of 2 genes named only by Entrez_Gene_Id is not named")
               for note in counts["notes"])


def test_a_long_copy_number_file_of_entrez_ids_only_is_named_too(tmp_path, lake):
    folder = _study(tmp_path / "study")
    _maf_with_entrez(folder, [["EGFR", 1956, 7, 55191822, "T", "G", "Missense_Mutation", "P1-01"]])
    (folder / "data_cna.txt").unlink()
    _write(folder / "data_cna_long.txt", [["Entrez_Gene_Id", "Sample_Id", "Value"], [1956, "P1-01", 2],
                                          [1956, "P2-01", -1], [1956, "P2-01", 1], [0, "P2-01", 1]])
    meta = folder / "meta_cna.txt"
    meta.write_text(meta.read_text().replace("DISCRETE", "DISCRETE_LONG").replace("data_cna.txt", "data_cna_long.txt"))
    ingest_cbioportal(lake, folder)
    cna = _features(lake, "cna").set_index(["patient_id", "feature"])["value"]
    assert cna.to_dict() == {("P1", "EGFR"): 2, ("P2", "EGFR"): -1}
    rejects = lake.read("rejects").to_pandas()
    mine = rejects[rejects["source"].str.endswith("data_cna_long.txt")].set_index("location")["reason"]
    assert mine.to_dict() == {"line 4": "a second line for EGFR in one sample (line 3 is used)",
                              "line 5": "no gene: the Entrez_Gene_Id is blank, 0 or not a whole number, and the file"
                                        " has no Hugo_Symbol column"}


def test_an_unusable_maf_stops_the_study_before_anything_is_written(tmp_path, lake):
    folder = _study(tmp_path / "study")
    _write(folder / "data_mutations.txt", [["Hugo_Symbol", "Chromosome"], ["EGFR", 7]])  # no positions, no sample
    with pytest.raises(ValueError, match=r"missing required column\(s\) Start_Position"):
        ingest_cbioportal(lake, folder)
    assert not any(lake.has(table) for table in ("labels", "features", "variants"))


def test_a_study_whose_every_patient_line_is_rejected_writes_nothing_not_even_its_mutations(tmp_path, lake):
    rows = [[f"P{i // 2}", 50, "Male", "0:LIVING", 5, "0:DiseaseFree", 1, "Alive", f"X{i}", "White"]
            for i in range(2, 14)]  # every patient id on two lines
    with pytest.raises(ValueError, match=r"data_clinical_patient.txt: every row was rejected"):
        ingest_cbioportal(lake, _study(tmp_path / "study", patients=rows))
    assert not any(lake.has(table) for table in ("labels", "features", "variants", "rejects"))


def test_a_matrix_that_is_not_utf8_is_named_with_its_line(tmp_path, lake):
    folder = _study(tmp_path / "study")
    matrix = folder / "data_mrna_seq_v2_rsem.txt"
    matrix.write_bytes(matrix.read_bytes() + b"CAF\xc9\t9\t1\t1\t1\t1\n")  # cp1252, not UTF-8
    counts = ingest_cbioportal(lake, folder)
    assert counts["expression"] == {"rejected": 1} and counts["cna"]["patients"] == 3
    assert any("data_mrna_seq_v2_rsem.txt, line 8: not UTF-8 text" in note for note in counts["notes"])


def test_matrix_rejects_and_header_errors_name_columns_by_number_not_by_sample_id(tmp_path, lake):
    """A matrix's columns are sample ids, and a sample id names its patient: `lake status` shows each reason's
    location, and the CLI the header error."""
    folder = _study(tmp_path / "study")
    ingest_cbioportal(lake, folder)
    rejects = lake.read("rejects").to_pandas()
    matrices = rejects[rejects["source"].str.contains("data_cna|data_mrna")]
    assert len(matrices) == 5
    shown = " ".join(matrices["location"].fillna("") + " " + matrices["reason"])
    assert "P1-" not in shown and "P2-" not in shown
    _write(folder / "data_cna.txt", [["Hugo_Symbol", "TCGA-05-4244-01", "P1-01", "TCGA-05-4244-01"], ["EGFR", 1, 0, 1]])
    notes = " ".join(ingest_cbioportal(lake, folder)["notes"])
    assert "data_cna.txt, line 1: the header has an unnamed or repeated column (columns 2 and 4)" in notes
    rejects = lake.read("rejects").to_pandas()
    assert "TCGA-05-4244" not in notes + " ".join(rejects["reason"]) + " ".join(rejects["location"].fillna(""))


def test_a_sample_line_with_a_wrong_field_count_is_a_reject_not_dropped_unsaid(tmp_path, lake):
    folder = _study(tmp_path / "study")
    samples = folder / "data_clinical_sample.txt"
    samples.write_text(samples.read_text() + "P13\tP13-01\tLung Adenocarcinoma\tLUAD\t3.0\textra\n")
    counts = ingest_cbioportal(lake, folder)
    assert counts["clinical_sample"]["rejected"] == 1
    rejects = lake.read("rejects").to_pandas()
    assert rejects[rejects["source"].str.endswith("data_clinical_sample.txt")]["location"].tolist() == ["line 16"]
    # a sample file of ids only (no attribute to load as a feature): its bad line is still a reject
    _write(samples, [["PATIENT_ID", "SAMPLE_ID"], ["P1", "P1-01"], ["P2", "P2-01", "extra"]])
    assert ingest_cbioportal(lake, folder)["clinical_sample"] == {"rejected": 1}


def test_matrix_samples_without_a_sample_file_join_their_patients_as_the_mutations_do(tmp_path, lake):
    """No sample file: a TCGA sample barcode's first 12 characters are its patient, for the copy number and
    expression as for the mutations (the matrices kept the whole barcode, a patient with no labels)."""
    folder = tmp_path / "study"
    folder.mkdir()
    ids = [f"TCGA-AA-{1000 + i}" for i in range(4)]
    _write(folder / "data_clinical_patient.txt",
           [["PATIENT_ID", "AGE", "OS_STATUS", "OS_MONTHS"],
            *[[pid, 50 + i, "0:LIVING", 10] for i, pid in enumerate(ids)]])
    _write(folder / "data_mutations.txt",
           [["Hugo_Symbol", "Chromosome", "Start_Position", "Reference_Allele", "Tumor_Seq_Allele2",
             "Variant_Classification", "Tumor_Sample_Barcode"],
            ["EGFR", 7, 55191822, "T", "G", "Missense_Mutation", f"{ids[0]}-01"]])
    _write(folder / "data_cna.txt", [["Hugo_Symbol", *(f"{pid}-01" for pid in ids)], ["EGFR", 2, 0, -1, 1]])
    ingest_cbioportal(lake, folder)
    assert set(lake.read("gene_status").to_pandas()["patient_id"]) == {ids[0]}
    assert set(_features(lake, "cna")["patient_id"]) == set(ids)


def test_bad_survival_cells_are_rejected_by_line_without_their_values(tmp_path, lake):
    rows = [["P1", 50, "Male", "2:SOMETHING-ODD", 10, "0:DiseaseFree", 1, "Alive", "X1", "White"],
            ["P2", 51, "Female", "1:DECEASED", "ten-months-odd", "0:DiseaseFree", 1, "Dead", "X2", "White"],
            ["P3", 52, "Female", "0:LIVING", 12],
            ["P4", 53, "Male", "0:LIVING", 12, "0:DiseaseFree", 1, "Alive", "X4", "Asian"]]
    counts = ingest_cbioportal(lake, _study(tmp_path / "study", patients=rows))
    rejects = lake.read("rejects").to_pandas()
    mine = rejects[rejects["source"].str.endswith("data_clinical_patient.txt")].set_index("location")
    # the four # lines and the header come first: P1 is on line 6
    assert set(mine.index) == {"line 6", "line 7", "line 8"}
    assert "OS_STATUS is not 1:<event> or 0:<censored>" in mine.loc["line 6", "reason"]
    assert "OS_MONTHS is not a number of months" in mine.loc["line 7", "reason"]
    assert "5 tab-separated fields where the header has 10" in mine.loc["line 8", "reason"]
    assert not mine["reason"].str.contains("ODD|odd").any()
    labels = lake.read("labels").to_pandas().set_index("patient_id")
    assert set(labels.index) == {"P1", "P2", "P4"} and labels.loc[["P1", "P2"], "time"].isna().all()
    assert counts["labels"]["rejected"] == 3


def test_a_real_maf_joins_its_patient(tmp_path, lake):
    folder = _study(tmp_path / "study")
    (folder / "data_mutations.txt").unlink()
    (folder / "data_mutations.txt").symlink_to(shared_data("variants", "maf", "brca.maf.gz"))
    sample = folder / "data_clinical_sample.txt"
    sample.write_text(sample.read_text() + "P5\tTCGA-A8-A08B\tBreast Invasive Ductal Carcinoma\tIDC\t40\n")
    counts = ingest_cbioportal(lake, folder)
    assert counts["mutations"]["records_read"] == 1913 and counts["mutations"]["unmapped_samples"] == 0
    tmb = lake.read("tmb").to_pandas().set_index("sample_id")
    assert tmb.loc["TCGA-A8-A08B", "patient_id"] == "P5"


def test_the_command_prints_each_part_and_exits_2_on_rejects(tmp_path):
    folder, lake = _study(tmp_path / "study"), tmp_path / "lake"
    result = CliRunner().invoke(app, ["ingest", "cbioportal", str(folder), "--lake", str(lake), "--exclude", "RACE"])
    assert result.exit_code == 2, result.output  # two bad copy-number lines or cells, three of expression
    for title in ("cbioportal: labels", "cbioportal: clinical", "cbioportal: mutations", "cbioportal: cna",
                  "cbioportal: expression", "left out of the clinical features", "5 line(s) or cell(s) rejected"):
        assert title in " ".join(result.output.split())  # rich wraps a title wider than its table
    assert "RACE" in result.output and "excluded by the caller" in result.output
    # the z-score profile is named as not loaded, with its kind; nothing else is
    assert "data_mrna_seq_v2_rsem_zscores_ref_all_samples.txt (MRNA_EXPRESSION Z-SCORE)" in " ".join(
        result.output.split()) and result.output.count("note:") == 1
    (folder / "data_sv.txt").write_text("Sample_Id\tSite1_Hugo_Symbol\nP1-01\tALK\n")
    (folder / "meta_sv.txt").write_text("cancer_study_identifier: test_study\ngenetic_alteration_type:"
                                        " STRUCTURAL_VARIANT\ndatatype: SV\ndata_filename: data_sv.txt\n")
    assert "data_sv.txt (STRUCTURAL_VARIANT SV)" in " ".join(CliRunner().invoke(
        app, ["ingest", "cbioportal", str(folder), "--lake", str(lake)]).output.split())
    (folder / "data_gene_panel_matrix.txt").write_text("SAMPLE_ID\tmutations\nP1-01\tIMPACT468\n")
    (folder / "meta_gene_panel_matrix.txt").write_text("cancer_study_identifier: test_study\n"
                                                       "genetic_alteration_type: GENE_PANEL_MATRIX\n"
                                                       "datatype: GENE_PANEL_MATRIX\n"
                                                       "data_filename: data_gene_panel_matrix.txt\n")
    panel = CliRunner().invoke(app, ["ingest", "cbioportal", str(folder), "--lake", str(lake)])
    assert "targeted gene panels, but TMB was computed over the default panel's 38 Mb" in " ".join(
        panel.output.split())
    missing = CliRunner().invoke(app, ["ingest", "cbioportal", str(tmp_path / "nowhere"), "--lake", str(lake)])
    assert missing.exit_code == 1 and "not a folder" in " ".join(missing.output.split())


def test_a_study_trains_and_evaluates_without_fhir(tmp_path, lake):
    """A lake of curated tables only assembles into a cohort; a modality too few patients have (genomics: 2 of
    30 sequenced) gets no single-modality model, and a note says why, while the other ablations are scored."""
    from fusion.cohort import load_frames
    from fusion.config import load_config
    from fusion.evaluate import evaluate_run
    from fusion.predict import UnknownPatientError, resolve_patient
    from fusion.train import train

    rows = [[f"P{i}", 40 + i, "Male" if i % 2 else "Female", "1:DECEASED" if i % 3 else "0:LIVING", 2.0 * i,
             "0:DiseaseFree", 1, "Alive", f"X{i}", "White"] for i in range(1, 31)]
    ingest_cbioportal(lake, _study(tmp_path / "study", patients=rows))
    config = load_config(None, [
        "modalities.ehr.enabled=false", "modalities.image.enabled=false", "modalities.clinical.enabled=true",
        "modalities.clinical.encoder=mlp", "tasks.diagnosis.enabled=false", "tasks.response.enabled=false",
        "train.epochs=2", "train.device=cpu", "tasks.cox_queue_size=0"])
    train(config, lake.path, tmp_path / "run")
    result = evaluate_run(tmp_path / "run", lake.path, n_boot=5)
    ablations = result["tasks"]["survival"]["ablations"]
    assert "only_clinical" in ablations and "only_genomics" not in ablations and "without_genomics" in ablations
    assert any(note.startswith("only_genomics was not trained: need >= 2 training") for note in result["notes"])
    frames = load_frames(lake.path)  # predict --patient takes a sample barcode for its patient
    assert resolve_patient(lake, frames, "P2-01") == resolve_patient(lake, frames, "P2") == "P2"
    with pytest.raises(UnknownPatientError):
        resolve_patient(lake, frames, "P2-09")


def test_two_studies_add_up_and_each_one_again_replaces_only_its_own_rows(tmp_path, lake):
    first = _study(tmp_path / "luad")
    second = _study(tmp_path / "lusc", patients=[
        ["Q1", 70, "Male", "0:LIVING", 5, "0:DiseaseFree", 5, "Alive", "Y1", "Asian"]])
    ingest_cbioportal(lake, first)
    ingest_cbioportal(lake, second)
    ingest_cbioportal(lake, first)  # again: its rows are replaced, not doubled, and the other study's stay
    clinical = _features(lake, "clinical")
    assert set(clinical["patient_id"]) == {f"P{i}" for i in range(1, 13)} | {"Q1"}
    assert not clinical.duplicated(["patient_id", "feature"]).any()
    assert set(lake.read("labels").to_pandas()["patient_id"]) == {f"P{i}" for i in range(1, 13)} | {"Q1"}


def test_the_same_study_given_as_a_relative_path_replaces_its_rows(tmp_path, lake, monkeypatch):
    ingest_cbioportal(lake, _study(tmp_path / "study"))
    monkeypatch.chdir(tmp_path)
    ingest_cbioportal(lake, Path("study"))  # the same folder, spelled otherwise
    features = lake.read("features").to_pandas()
    assert not features.duplicated(["modality", "patient_id", "feature"]).any()


def test_real_outcomes_and_expression_arrive_as_the_study_holds_them(tmp_path, lake):
    """GSE7390 (scikit-survival's real breast-cancer cohort: 198 patients, 76 microarray probes, time to distant
    metastasis) written as a cBioPortal study: the lake holds the outcome in days and the probes' values as given
    (log-scale microarray values, none above 50: no second log)."""
    from sksurv.datasets import load_breast_cancer

    x, y = load_breast_cancer()
    ids = [f"GSE7390-{i:03d}" for i in range(len(x))]
    probes = [c for c in x.columns if c.startswith("X")]
    study = tmp_path / "gse7390"
    study.mkdir()
    (study / "data_clinical_patient.txt").write_text("#a\t#b\t#c\t#d\t#e\n" * 4 + "\n".join(
        "\t".join(map(str, row)) for row in [
            ["PATIENT_ID", "AGE", "ER_STATUS", "GRADE", "DMFS_STATUS", "DMFS_MONTHS"],
            *[[pid, age, er, grade, "1:Metastasis" if event else "0:Censored", repr(float(days) / DAYS_PER_MONTH)]
              for pid, age, er, grade, event, days in zip(ids, x["age"], x["er"], x["grade"], y["e.tdm"],
                                                           y["t.tdm"], strict=True)]]) + "\n")
    _write(study / "data_clinical_sample.txt", [["PATIENT_ID", "SAMPLE_ID"], *[[pid, f"{pid}-01"] for pid in ids]])
    _write(study / "data_mrna_affymetrix_microarray.txt",
           [["Hugo_Symbol", *[f"{pid}-01" for pid in ids]], *[[p, *(repr(float(v)) for v in x[p])] for p in probes]])
    counts = ingest_cbioportal(lake, study, endpoint="DMFS", expression_genes=100)
    assert counts["labels"]["rejected"] == 0 and counts["expression"] == {
        "patients": 198, "features": 76, "values": 198 * 76, "rejected": 0}
    labels = lake.read("labels").to_pandas().set_index("patient_id").loc[ids]
    assert (labels["event"].to_numpy() == y["e.tdm"]).all()
    assert max(abs(labels["time"].to_numpy() - y["t.tdm"])) < 1e-6
    expression = _features(lake, "expression").pivot(index="patient_id", columns="feature", values="value")
    assert (expression.loc[ids, probes].to_numpy() == x[probes].to_numpy()).all()
    assert set(_features(lake, "clinical")["feature"]) == {"AGE", "ER_STATUS", "GRADE"}


def test_supplementary_clinical_files_do_not_replace_the_main_ones(tmp_path, lake):
    """The datahub gives data_clinical_supp_*.txt files their own meta file (genetic_alteration_type CLINICAL,
    datatype PATIENT_ATTRIBUTES or SAMPLE_ATTRIBUTES; datahub audit-scripts/add_supp_meta.py); their meta files
    sort after meta_clinical_patient.txt and meta_clinical_sample.txt, and must not take their place."""
    folder = _study(tmp_path / "study")
    _write(folder / "data_clinical_supp_hypoxia.txt", [["#S", "#H"], ["#S", "#H"], ["#STRING", "#NUMBER"],
                                                       ["#1", "#1"], ["SAMPLE_ID", "BUFFA_HYPOXIA_SCORE"],
                                                       ["P1-01", 3]])
    _write(folder / "data_clinical_supp_extra.txt", [["#P", "#X"], ["#P", "#X"], ["#STRING", "#STRING"],
                                                     ["#1", "#1"], ["PATIENT_ID", "EXTRA"], ["P1", "yes"]])
    for name, datatype in (("hypoxia", "SAMPLE_ATTRIBUTES"), ("extra", "PATIENT_ATTRIBUTES")):
        (folder / f"meta_clinical_supp_{name}.txt").write_text(
            f"cancer_study_identifier: test_study\ngenetic_alteration_type: CLINICAL\ndatatype: {datatype}\n"
            f"data_filename: data_clinical_supp_{name}.txt\n", encoding="utf-8")
    found = find_study_files(folder)
    assert found.patient.name == "data_clinical_patient.txt" and found.sample.name == "data_clinical_sample.txt"
    counts = ingest_cbioportal(lake, folder)
    assert counts["labels"]["patients"] == 12 and counts["clinical_sample"]["patients"] == 12
    assert any("data_clinical_supp_extra.txt, data_clinical_supp_hypoxia.txt: supplementary" in note
               for note in counts["notes"])


def test_the_expression_profile_is_mrna_of_the_tumours_not_mirna_normals_or_read_counts(tmp_path):
    """MRNA_EXPRESSION profiles also hold microRNA (stable_id mirna, data_mirna.txt), the adjacent normal samples
    (stable_id rna_seq_v2_mrna_median_normals) and GDC's raw read counts (data_mrna_seq_read_counts.txt, stable_id
    rna_seq_mrna), all CONTINUOUS (cBioPortal File-Formats, Expression Data; datahub-study-curation-tools' meta
    templates); meta_mirna.txt sorts first."""
    folder = _study(tmp_path / "study")
    for name, stable_id, data in [("mirna", "mirna", "data_mirna.txt"),
                                  ("mrna_seq_read_counts", "rna_seq_mrna", "data_mrna_seq_read_counts.txt"),
                                  ("mrna_seq_v2_rsem_normal_samples", "rna_seq_v2_mrna_median_normals",
                                   "data_mrna_seq_v2_rsem_normal_samples.txt")]:
        _write(folder / data, [["Hugo_Symbol", "P1-01"], ["EGFR", 1]])
        (folder / f"meta_{name}.txt").write_text(
            f"cancer_study_identifier: test_study\ngenetic_alteration_type: MRNA_EXPRESSION\ndatatype: CONTINUOUS\n"
            f"stable_id: {stable_id}\ndata_filename: {data}\n", encoding="utf-8")
    found = find_study_files(folder)
    assert (found.expression.name, found.expression_kind) == ("data_mrna_seq_v2_rsem.txt", "CONTINUOUS")
    for meta in folder.glob("meta_*.txt"):
        meta.unlink()
    (folder / "data_mrna_seq_v2_rsem.txt").rename(folder / "data_RNA_Seq_v2_expression_median.txt")  # older name
    _write(folder / "data_mrna_affymetrix_microarray.txt", [["Hugo_Symbol", "P1-01"], ["EGFR", 1]])
    found = find_study_files(folder)
    assert (found.expression.name, found.expression_kind) == ("data_RNA_Seq_v2_expression_median.txt", "CONTINUOUS")


def test_expression_is_logged_only_when_its_values_are_linear_levels(tmp_path, lake):
    """cBioPortal profiles do not say whether levels are log-transformed (cBioPortal issues #4374, #5848): the
    datahub's pcpg_tcga_pub held log2 RSEM in its RNA-seq file (datahub PR #1422) while older TCGA studies hold
    linear RSEM as data_RNA_Seq_v2_expression_median.txt (stable_id rna_seq_v2_mrna). The values tell."""
    logged = _study(tmp_path / "logged")
    _write(logged / "data_mrna_seq_v2_rsem.txt", [["Hugo_Symbol", "Entrez_Gene_Id", "P1-01", "P2-01", "P3-01"],
                                                  ["EGFR", 1956, 9.5, 12.25, 0.0], ["WIDE", 2, 1.0, 15.0, 3.0]])
    ingest_cbioportal(lake, logged, expression_genes=5)
    expression = _features(lake, "expression").set_index(["patient_id", "feature"])["value"]
    assert expression[("P1", "EGFR")] == 9.5 and expression[("P2", "WIDE")] == 15.0  # as given, not log2(1 + x)
    linear = _study(tmp_path / "linear")
    (linear / "data_mrna_seq_v2_rsem.txt").rename(linear / "data_RNA_Seq_v2_expression_median.txt")
    meta = linear / "meta_mrna.txt"
    meta.write_text(meta.read_text().replace("data_mrna_seq_v2_rsem.txt", "data_RNA_Seq_v2_expression_median.txt")
                    + "stable_id: rna_seq_v2_mrna\n")
    ingest_cbioportal(lake, linear, expression_genes=1)
    expression = _features(lake, "expression")
    mine = expression[expression["source"].str.endswith("data_RNA_Seq_v2_expression_median.txt")]
    values = mine.set_index(["patient_id", "feature"])["value"]
    assert math.isclose(values[("P3", "EGFR")], 2.0) and math.isclose(values[("P2", "WIDE")], math.log2(1001))


def test_a_primary_tumour_sample_represents_its_patient_before_a_metastasis(tmp_path, lake):
    """SAMPLE_TYPE tells a patient's primary tumour from a recurrence or metastasis, sampled after day 0, and from
    normal samples (cBioPortal File-Formats, clinical sample columns; GDC studies' Solid Tissue Normal)."""
    folder = _study(tmp_path / "study")
    _write(folder / "data_clinical_sample.txt",
           [["#Patient", "#Sample", "#Type", "#TMB"], ["#Patient", "#Sample", "#Type", "#TMB"],
            ["#STRING", "#STRING", "#STRING", "#NUMBER"], ["#1", "#1", "#1", "#1"],
            ["PATIENT_ID", "SAMPLE_ID", "SAMPLE_TYPE", "TMB_NONSYNONYMOUS"],
            ["P2", "P2-01", "Solid Tissue Normal", 0], ["P1", "P1-01", "Metastasis", 1.5],
            ["P1", "P1-02", "Primary", 9.0], ["P2", "P2-02", "Primary Tumor", 4.0], ["P3", "P3-01", "", 2.0]])
    _write(folder / "data_cna.txt", [["Hugo_Symbol", "P1-01", "P1-02", "P2-01", "P2-02", "P3-01"],
                                     ["EGFR", 0, 2, 0, -1, 1]])
    ingest_cbioportal(lake, folder, expression_genes=0)
    per_sample = _features(lake, "clinical_sample").set_index(["patient_id", "feature"])
    assert per_sample.loc[("P1", "TMB_NONSYNONYMOUS"), "value"] == 9.0
    assert per_sample.loc[("P2", "TMB_NONSYNONYMOUS"), "value"] == 4.0
    assert per_sample.loc[("P3", "TMB_NONSYNONYMOUS"), "value"] == 2.0
    cna = _features(lake, "cna").set_index(["patient_id", "feature"])["value"]
    assert cna[("P1", "EGFR")] == 2 and cna[("P2", "EGFR")] == -1 and cna[("P3", "EGFR")] == 1


def test_a_patient_without_samples_gets_no_diagnosis_from_a_sample_attribute(tmp_path, lake):
    """--diagnosis names a sample attribute and a patient has no sample: that patient's labels load without a
    diagnosis (the missing cell became NaN, which failed the whole labels write)."""
    study = _study(tmp_path / "study")
    sample_file = study / "data_clinical_sample.txt"
    sample_file.write_text("".join(line for line in sample_file.read_text().splitlines(keepends=True)
                                   if not line.startswith("P12\t")), encoding="utf-8")
    counts = ingest_cbioportal(lake, study, diagnosis="CANCER_TYPE_DETAILED")
    labels = lake.read("labels").to_pandas().set_index("patient_id")
    assert counts["labels"]["patients"] == 12 and pd.isna(labels.loc["P12", "diagnosis"])
    assert labels.loc["P3", "diagnosis"] == "Lung Adenocarcinoma" and labels.loc["P12", "event"]


def test_an_attribute_declared_string_stays_a_category_though_its_values_are_numbers(tmp_path, lake):
    folder = _study(tmp_path / "study")
    lines = ["#Patient\t#Age\t#Cluster\t#Status\t#Months", "#Id\t#Age\t#Expression cluster\t#OS\t#OS",
             "#STRING\tNUMBER\tSTRING\tSTRING\tNUMBER", "#1\t1\t1\t1\t1",
             "PATIENT_ID\tAGE\tCLUSTER\tOS_STATUS\tOS_MONTHS",
             *[f"P{i}\t{40 + i}\t{i % 3 + 1}\t0:LIVING\t{i}" for i in range(1, 13)]]
    (folder / "data_clinical_patient.txt").write_text("\n".join(lines) + "\n")
    ingest_cbioportal(lake, folder)
    clinical = _features(lake, "clinical").set_index(["patient_id", "feature"])
    assert clinical.loc[("P1", "CLUSTER"), "value_str"] == "2" and pd.isna(clinical.loc[("P1", "CLUSTER"), "value"])
    assert clinical.loc[("P1", "AGE"), "value"] == 41


def test_an_expression_matrix_with_entrez_ids_first_names_genes_by_their_symbols(tmp_path, lake):
    folder = _study(tmp_path / "study")
    _write(folder / "data_mrna_seq_v2_rsem.txt", [["Entrez_Gene_Id", "Hugo_Symbol", "P1-01", "P2-01"],
                                                  [1956, "EGFR", 1, 3], [3845, "KRAS", 0, 1]])
    ingest_cbioportal(lake, folder, expression_genes=5)
    assert set(_features(lake, "expression")["feature"]) == {"EGFR", "KRAS"}


@pytest.mark.parametrize("with_meta", [True, False])
def test_long_form_copy_number_gives_the_matrix_calls(tmp_path, lake, with_meta):
    """cBioPortal's DISCRETE_LONG file (one gene, sample, value line per call) gives the same calls as the
    genes x samples matrix; a gene without a line for a sample is missing for it, as cBioPortal imports it."""
    folder = _study(tmp_path / "study", with_meta=with_meta)
    (folder / "data_cna.txt").unlink()
    _write(folder / "data_cna_long.txt",
           [["Hugo_Symbol", "Entrez_Gene_Id", "Sample_Id", "Value", "cbp_driver"],
            ["EGFR", 1956, "P1-02", 2, ""], ["EGFR", 1956, "P1-01", 0, ""], ["TP53", 7157, "P1-01", -2, ""],
            ["EGFR", 1956, "P2-01", -1, ""], ["TP53", 7157, "P2-01", "amp", ""], ["TP53", 7157, "P3-01", 1, ""],
            ["NOTAGENE", 1, "P3-01", 2, ""], ["EGFR", 1956, "P1-01", 1, ""]])
    if with_meta:
        (folder / "meta_cna.txt").write_text(
            "cancer_study_identifier: test_study\ngenetic_alteration_type: COPY_NUMBER_ALTERATION\n"
            "datatype: DISCRETE_LONG\ndata_filename: data_cna_long.txt\n", encoding="utf-8")
    ingest_cbioportal(lake, folder)
    cna = _features(lake, "cna").set_index(["patient_id", "feature"])["value"]
    # P1's first sample in the sample file is P1-01, as with the matrix
    assert cna[("P1", "EGFR")] == 0 and cna[("P1", "TP53")] == -2 and cna[("P2", "EGFR")] == -1
    assert math.isnan(cna[("P2", "TP53")]) and cna[("P3", "TP53")] == 1 and math.isnan(cna[("P3", "EGFR")])
    assert set(cna.index.get_level_values("patient_id")) == {"P1", "P2", "P3"}
    assert "NOTAGENE" not in set(_features(lake, "cna")["feature"])
    rejects = lake.read("rejects").to_pandas()
    bad = rejects[rejects["source"].str.endswith("data_cna_long.txt")].set_index("location")["reason"].to_dict()
    assert bad == {"line 6": "TP53: not a discrete copy-number call (-2, -1, 0, 1, 2); kept as missing",
                   "line 9": "a second line for EGFR in one sample (line 3 is used)"}


def _immunotherapy_study(folder):
    """The 12-patient study with the response attributes of the datahub's immunotherapy cohorts: a best overall
    response per patient and the drug class of each sample."""
    _study(folder)
    path = folder / "data_clinical_patient.txt"
    head, *lines = path.read_text(encoding="utf-8").split("\n", 4)[4].strip().split("\n")
    responses = ["CR", "PR", "SD", "PD", "NE", "Partial Response", "1:Yes", "maybe", "maybe", "PD", "", "SD"]
    text = HEAD.replace("\n", "\tx\n") + head + "\tBEST_OVERALL_RESPONSE\tDURABLE_CLINICAL_BENEFIT\n" + "".join(
        f"{line}\t{response}\t{'YES' if i < 3 else 'NO'}\n" for i, (line, response) in enumerate(
            zip(lines, responses, strict=True)))
    path.write_text(text, encoding="utf-8")
    sample = folder / "data_clinical_sample.txt"
    rows = [line.split("\t") for line in sample.read_text(encoding="utf-8").splitlines()]
    drugs = {"P2": "Anti-CTLA4"}
    _write(sample, [rows[0] + ["#Drug"], rows[1] + ["DRUG_TYPE"],
                    *[row + [drugs.get(row[0], "Anti-PD-1")] for row in rows[2:]]])
    return folder


def test_a_response_attribute_gives_response_and_treatment_labels_and_never_a_feature(tmp_path, lake):
    counts = ingest_cbioportal(lake, _immunotherapy_study(tmp_path / "study"), response="BEST_OVERALL_RESPONSE",
                               treatment="DRUG_TYPE")
    labels = lake.read("labels").to_pandas().set_index("patient_id")
    # CR / PR / "Partial Response" / 1:Yes respond, SD / PD do not; NE, an empty cell and unread values are unknown
    assert labels["response"].to_dict() == {
        "P1": True, "P2": True, "P3": False, "P4": False, "P5": None, "P6": True, "P7": True, "P8": None,
        "P9": None, "P10": False, "P11": None, "P12": False}
    assert labels.loc["P2", "treatment"] == "Anti-CTLA4" and labels.loc["P1", "treatment"] == "Anti-PD-1"
    assert counts["response"] == {"responded": 4, "did not respond": 4, "value not read": 2}
    assert counts["notes"][-1].startswith("BEST_OVERALL_RESPONSE: values read as neither a response nor its "
                                          "absence, so those patients' response is unknown: 'maybe' (2 patient(s))")
    # the response label, the other response outcome and the treatment are never inputs
    assert counts["excluded"]["clinical"]["BEST_OVERALL_RESPONSE"] == "the response label"
    assert counts["excluded"]["clinical"]["DURABLE_CLINICAL_BENEFIT"] == ("a treatment response, known only after "
                                                                         "treatment")
    assert counts["excluded"]["clinical_sample"]["DRUG_TYPE"] == "the treatment label (given after day 0)"
    features = set(lake.read("features").to_pandas()["feature"])
    assert not features & {"BEST_OVERALL_RESPONSE", "DURABLE_CLINICAL_BENEFIT", "DRUG_TYPE"}


def test_responders_name_the_response_values_and_a_single_treatment_study_names_its_drug(tmp_path, lake):
    counts = ingest_cbioportal(lake, _immunotherapy_study(tmp_path / "study"), response="DURABLE_CLINICAL_BENEFIT",
                               responders=["yes"], treatment_name="pembrolizumab")
    labels = lake.read("labels").to_pandas().set_index("patient_id")
    assert labels["response"].sum() == 3 and labels["response"].notna().all()
    assert (labels["treatment"] == "pembrolizumab").all()
    assert counts["response"] == {"responded": 3, "did not respond": 9, "value not read": 0}
    # without --response the response outcomes are still never features; the study's drug class may be one
    lake2 = type(lake)(tmp_path / "lake2")
    counts = ingest_cbioportal(lake2, tmp_path / "study")
    assert "response" not in counts and "DURABLE_CLINICAL_BENEFIT" in counts["excluded"]["clinical"]
    assert "DRUG_TYPE" in set(lake2.read("features").to_pandas()["feature"])


def test_response_options_that_cannot_be_read_change_nothing(tmp_path, lake):
    study = _immunotherapy_study(tmp_path / "study")
    with pytest.raises(StudyError, match="--response NOPE is neither a patient nor a sample attribute"):
        ingest_cbioportal(lake, study, response="NOPE")
    with pytest.raises(StudyError, match="--treatment and --treatment-name: pass one of --treatment"):
        ingest_cbioportal(lake, study, treatment="DRUG_TYPE", treatment_name="pembrolizumab")
    assert not lake.has("labels")
    result = CliRunner().invoke(app, ["ingest", "cbioportal", str(study), "--lake", str(tmp_path / "cli"),
                                      "--response", "BEST_OVERALL_RESPONSE", "--responders", "CR,PR",
                                      "--treatment", "DRUG_TYPE"])
    assert result.exit_code == 2, result.output  # the study's bad copy-number and expression cells
    assert "cbioportal: response" in result.output and "did not respond" in result.output


def test_responders_match_coded_values_and_not_evaluable_stays_unknown():
    """``--responders yes`` on a ``1:Yes`` / ``0:No`` attribute (cBioPortal's coded form) means the ``1:Yes``
    patients, not no one; ``X`` (skcm_dfci_2015's not evaluable) is unknown, not a non-response."""
    from ingest.cbioportal.clinical import response_values

    values = {"P1": "1:Yes", "P2": "0:No", "P3": "X", "P4": "NE"}
    assert response_values(values, "DURABLE_CLINICAL_BENEFIT", ["yes"]) == ({"P1": "1", "P2": "0"}, {})
    assert response_values(values, "DURABLE_CLINICAL_BENEFIT", ["1:Yes"]) == ({"P1": "1", "P2": "0"}, {})
    assert response_values(values, "DURABLE_CLINICAL_BENEFIT") == ({"P1": "1", "P2": "0"}, {})
    recist = {"P1": "CR", "P2": "PR", "P3": "SD", "P4": "PD", "P5": "X"}
    assert response_values(recist, "DURABLE_CLINICAL_BENEFIT", ["CR", "PR"]) == (
        {"P1": "1", "P2": "1", "P3": "0", "P4": "0"}, {})


def test_responders_that_match_no_value_or_without_response_change_nothing(tmp_path, lake):
    """A --responders value that no patient has (a typo, or the study spells it otherwise) would make every
    patient a non-responder; --responders without --response would load no response at all: both are errors
    that name the fix, and the lake is unchanged."""
    study = _immunotherapy_study(tmp_path / "study")
    with pytest.raises(StudyError, match=r"--responders 'Complete', 'Partial': no patient's "
                                         r"BEST_OVERALL_RESPONSE is one of them \(its values: .*'CR'"):
        ingest_cbioportal(lake, study, response="BEST_OVERALL_RESPONSE",
                          responders=["Complete", "Partial"])
    with pytest.raises(StudyError, match="--responders names values of the --response attribute"):
        ingest_cbioportal(lake, study, responders=["CR"])
    assert not lake.has("labels")
    # one value that some patient has is enough (a study without complete responses)
    counts = ingest_cbioportal(lake, study, response="BEST_OVERALL_RESPONSE", responders=["PR", "Complete Response"])
    assert counts["response"]["responded"] == 1


def test_a_sample_response_that_a_patients_samples_disagree_on_is_said(tmp_path, lake):
    """A response attribute of the sample file: a patient whose two samples disagree (PR, SD) gets none, and the
    note says so (the counts alone left the patient out without a word)."""
    folder = _study(tmp_path / "study")
    sample = folder / "data_clinical_sample.txt"
    rows = [line.split("\t") for line in sample.read_text(encoding="utf-8").splitlines()]
    given = {"P1-01": "PR", "P1-02": "SD"}
    _write(sample, [rows[0] + ["#Response"], rows[1] + ["BEST_OVERALL_RESPONSE"],
                    *[row + [given.get(row[1], "CR" if int(row[0][1:]) % 2 else "PD")] for row in rows[2:]]])
    counts = ingest_cbioportal(lake, folder, response="BEST_OVERALL_RESPONSE")
    assert counts["response"] == {"responded": 5, "did not respond": 6, "value not read": 0}
    assert lake.read("labels").to_pandas().set_index("patient_id")["response"]["P1"] is None
    [note] = [n for n in counts["notes"] if n.startswith("BEST_OVERALL_RESPONSE") and "disagree" in n]
    # the sample file's lines, not the patient's id (a note names no patient)
    assert note == ("BEST_OVERALL_RESPONSE: 1 patient(s) whose samples disagree have no response "
                    "(data_clinical_sample.txt lines 3, 15); a response is the patient's: correct the sample file, or"
                    " move the attribute to the patient file")


def test_responses_without_a_treatment_are_said_at_ingest(tmp_path, lake):
    """The response task predicts the response to a treatment: responses loaded without one are left out by
    training, so the ingest says how to give it."""
    counts = ingest_cbioportal(lake, _immunotherapy_study(tmp_path / "study"), response="BEST_OVERALL_RESPONSE")
    assert any(note.startswith("BEST_OVERALL_RESPONSE: the responses were loaded without a treatment")
               and "--treatment-name" in note for note in counts["notes"])
    # a study whose treatments are in its timeline: the note names that option and the files
    lake3 = type(lake)(tmp_path / "lake3")
    counts = ingest_cbioportal(lake3, _timeline_study(tmp_path / "timeline"), response="BEST_OVERALL_RESPONSE")
    assert any("without a treatment" in note and "--treatment-timeline AGENT" in note
               and "data_timeline_treatment.txt" in note for note in counts["notes"])
    lake2 = type(lake)(tmp_path / "lake2")
    counts = ingest_cbioportal(lake2, tmp_path / "study", response="BEST_OVERALL_RESPONSE", treatment="DRUG_TYPE")
    assert not any("without a treatment" in note for note in counts["notes"])


def test_a_study_with_the_matrix_and_the_long_form_reads_one_and_names_the_other(tmp_path, lake):
    folder = _study(tmp_path / "study")
    _write(folder / "data_cna_long.txt", [["Hugo_Symbol", "Sample_Id", "Value"], ["EGFR", "P1-01", 2]])
    (folder / "meta_cna_long.txt").write_text(
        "cancer_study_identifier: test_study\ngenetic_alteration_type: COPY_NUMBER_ALTERATION\n"
        "datatype: DISCRETE_LONG\ndata_filename: data_cna_long.txt\n", encoding="utf-8")
    found = find_study_files(folder)
    assert found.cna == folder / "data_cna.txt"  # meta_cna.txt before meta_cna_long.txt
    assert found.unread[folder / "data_cna_long.txt"] == "COPY_NUMBER_ALTERATION DISCRETE_LONG"
    counts = ingest_cbioportal(lake, folder)
    assert any("data_cna_long.txt (COPY_NUMBER_ALTERATION DISCRETE_LONG)" in note for note in counts["notes"])
    cna = _features(lake, "cna").set_index(["patient_id", "feature"])["value"]
    assert cna[("P1", "EGFR")] == 0  # the matrix's call, not the long file's 2


_TIMELINE_HEADER = ["PATIENT_ID", "START_DATE", "STOP_DATE", "EVENT_TYPE", "TREATMENT_TYPE", "SUBTYPE", "AGENT"]
_TREATMENTS = [  # line 2 on (line 1 is the header)
    ["P1", -30, -1, "TREATMENT", "Medical Therapy", "Chemotherapy", "Cisplatin"],  # prior therapy
    ["P1", 10, 200, "TREATMENT", "Medical Therapy", "Immunotherapy", "Pembrolizumab"],
    ["P2", 40, "", "TREATMENT", "Medical Therapy", "Immunotherapy", "Pembrolizumab"],
    ["P2", 0, 90, "TREATMENT", "Medical Therapy", "Chemotherapy", "Pemetrexed"],  # two agents on one day
    ["P2", 0, 90, "TREATMENT", "Medical Therapy", "Chemotherapy", "Carboplatin"],
    ["P3", -100, -20, "TREATMENT", "Medical Therapy", "Chemotherapy", "Docetaxel"],  # only before day 0
    ["P5", "abc", "", "TREATMENT", "Medical Therapy", "Chemotherapy", "Gemcitabine"],  # line 8: rejected
    ["", 5, "", "TREATMENT", "Medical Therapy", "Chemotherapy", "Gemcitabine"],  # line 9: no patient, rejected
    ["P6", 5, 60, "TREATMENT", "Medical Therapy", "Immunotherapy", "Nivolumab"],
    ["P6", 5, 60, "TREATMENT", "Medical Therapy", "Immunotherapy", "Ipilimumab"],
    ["P7", 3, "", "TREATMENT", "Medical Therapy", "Targeted Therapy", "Osimertinib"],
    ["P8", 0, 30, "TREATMENT", "Radiation Therapy", "", ""],  # the first treatment has no agent
    ["P8", 20, 80, "TREATMENT", "Medical Therapy", "Chemotherapy", "Paclitaxel"],
]


def _treatments(lake):
    """patient -> the labels' treatment (None where missing)."""
    treatment = lake.read("labels").to_pandas().set_index("patient_id")["treatment"]
    return {pid: None if pd.isna(value) else value for pid, value in treatment.items()}


def _timeline_study(folder, *, with_meta=True):
    """The immunotherapy study with the datahub's timeline files: with meta files, one file of treatment events
    (data_timeline_treatment.txt) and one of surgeries; without, the older single data_timeline.txt of several
    event types. P4 has only a surgery; P9-P12 no event."""
    _immunotherapy_study(folder)
    surgery = [["P4", 2, "", "SURGERY", "", "", ""], ["P1", 1, "", "SURGERY", "", "", ""]]
    if with_meta:
        _write(folder / "data_timeline_treatment.txt", [_TIMELINE_HEADER, *_TREATMENTS])
        _write(folder / "data_timeline_surgery.txt", [_TIMELINE_HEADER[:4], *[row[:4] for row in surgery]])
        for name in ("treatment", "surgery"):
            (folder / f"meta_timeline_{name}.txt").write_text(
                "cancer_study_identifier: test_study\ngenetic_alteration_type: CLINICAL\ndatatype: TIMELINE\n"
                f"data_filename: data_timeline_{name}.txt\n", encoding="utf-8")
    else:
        for meta in folder.glob("meta_*.txt"):
            meta.unlink()
        _write(folder / "data_timeline.txt", [_TIMELINE_HEADER, *_TREATMENTS, *surgery])
    return folder


@pytest.mark.parametrize("with_meta", [True, False])
def test_treatments_from_the_timeline_are_each_patients_first_from_day_0(tmp_path, lake, with_meta):
    """--treatment-timeline AGENT: the first TREATMENT event on or after day 0 names the treatment (earlier ones
    are prior therapy), agents started the same day are one combination in sorted order, and a patient without
    a treatment event, or only treated before day 0, has none; bad lines are rejects with file and line."""
    study = _timeline_study(tmp_path / "study", with_meta=with_meta)
    counts = ingest_cbioportal(lake, study, response="BEST_OVERALL_RESPONSE", treatment_timeline="AGENT")
    labels = lake.read("labels").to_pandas().set_index("patient_id")
    assert _treatments(lake) == {
        "P1": "Pembrolizumab", "P2": "Carboplatin+Pemetrexed", "P3": None, "P4": None, "P5": None,
        "P6": "Ipilimumab+Nivolumab", "P7": "Osimertinib", "P8": None, "P9": None, "P10": None, "P11": None,
        "P12": None}
    assert labels.loc["P2", "response"] is True  # the response labels are the same as without a timeline
    assert counts["treatment"] == {"from the timeline": 4, "only treated before day 0": 1,
                                   "first treatment without AGENT": 1, "no treatment event": 6, "lines rejected": 2}
    timeline = "data_timeline_treatment.txt" if with_meta else "data_timeline.txt"
    rejects = lake.read("rejects").to_pandas()
    bad = rejects[rejects["source"].str.endswith(timeline)].set_index("location")["reason"].to_dict()
    assert bad == {"line 8": "START_DATE is not a whole number of days from day 0; the treatment event was not read",
                   "line 9": "PATIENT_ID is empty; the treatment event was not read"}
    assert counts["labels"]["rejected"] == 2
    assert f"--treatment-timeline AGENT: each patient's first treatment from day 0 read from {timeline}" in (
        counts["notes"])
    assert not any("without a treatment" in note for note in counts["notes"])
    # the file read for treatments is no longer "not loaded"; the surgeries' file still is
    [unread] = [note for note in counts["notes"] if note.startswith("not loaded")] or [""]
    assert "data_timeline_treatment.txt" not in unread
    assert ("data_timeline_surgery.txt (CLINICAL TIMELINE)" in unread) == with_meta


def test_treatments_from_the_timeline_by_subtype_or_treatment_type_are_classes(tmp_path, lake):
    """SUBTYPE gives treatment classes: a same-day combination of one class is that class; TREATMENT_TYPE names the
    radiation that AGENT leaves empty."""
    study = _timeline_study(tmp_path / "study")
    ingest_cbioportal(lake, study, treatment_timeline="SUBTYPE")
    treatment = _treatments(lake)
    assert [treatment[p] for p in ("P1", "P2", "P6", "P7")] == ["Immunotherapy", "Chemotherapy", "Immunotherapy",
                                                                 "Targeted Therapy"]
    assert treatment["P8"] is None and treatment["P3"] is None
    lake2 = type(lake)(tmp_path / "lake2")
    counts = ingest_cbioportal(lake2, study, treatment_timeline="TREATMENT_TYPE")
    treatment = _treatments(lake2)
    assert treatment["P8"] == "Radiation Therapy" and treatment["P2"] == "Medical Therapy"
    assert counts["treatment"]["from the timeline"] == 5


def test_treatment_timeline_with_another_treatment_option_or_an_unknown_column_changes_nothing(tmp_path, lake):
    study = _timeline_study(tmp_path / "study")
    with pytest.raises(StudyError, match="--treatment-name and --treatment-timeline: pass one of"):
        ingest_cbioportal(lake, study, treatment_name="pembrolizumab", treatment_timeline="AGENT")
    with pytest.raises(StudyError, match="--treatment and --treatment-timeline: pass one of"):
        ingest_cbioportal(lake, study, treatment="DRUG_TYPE", treatment_timeline="AGENT")
    with pytest.raises(StudyError, match=r"--treatment-timeline DOSE: no timeline file of the study has TREATMENT "
                                         r"events with a DOSE column \(its timeline files and their columns: "
                                         r"data_timeline_surgery.txt: PATIENT_ID, START_DATE"):
        ingest_cbioportal(lake, study, treatment_timeline="DOSE")
    assert not lake.has("labels")
    result = CliRunner().invoke(app, ["ingest", "cbioportal", str(study), "--lake", str(tmp_path / "cli"),
                                      "--treatment", "DRUG_TYPE", "--treatment-timeline", "AGENT"])
    assert result.exit_code == 1 and "--treatment and --treatment-timeline" in result.output
    result = CliRunner().invoke(app, ["ingest", "cbioportal", str(study), "--lake", str(tmp_path / "cli"),
                                      "--response", "BEST_OVERALL_RESPONSE", "--treatment-timeline", "AGENT"])
    assert result.exit_code == 2, result.output  # the timeline's two bad lines (and the study's bad cells)
    assert "cbioportal: treatment" in result.output and "from the timeline" in result.output


def test_a_same_day_agent_in_two_letter_cases_is_one_agent_not_a_combination(tmp_path):
    """A study with both data_timeline.txt and data_timeline_treatment.txt (or two rows of one course) may write
    the agent as CARBOPLATIN in one and Carboplatin in the other: one agent, not 'CARBOPLATIN+Carboplatin'."""
    from ingest.cbioportal.timeline import first_treatments

    header = ["PATIENT_ID", "START_DATE", "STOP_DATE", "EVENT_TYPE", "AGENT"]
    _write(tmp_path / "data_timeline.txt", [header, ["P1", 0, "", "TREATMENT", "CARBOPLATIN"],
                                            ["P1", 0, "", "TREATMENT", "Pemetrexed"]])
    _write(tmp_path / "data_timeline_treatment.txt", [header, ["P1", "+0", "NA", "Treatment", "Carboplatin"]])
    found = first_treatments(sorted(tmp_path.glob("data_timeline*.txt")), "AGENT")
    assert found.treatments == {"P1": "CARBOPLATIN+Pemetrexed"}


def test_a_treatment_spelled_in_two_letter_cases_by_patients_is_one_class(tmp_path):
    """Patients whose timelines write one regimen in other letter cases get one treatment class (the spelling
    most of them have), not one response head each."""
    from ingest.cbioportal.timeline import first_treatments

    header = ["PATIENT_ID", "START_DATE", "STOP_DATE", "EVENT_TYPE", "AGENT"]
    _write(tmp_path / "data_timeline_treatment.txt", [
        header, ["P1", 0, "", "TREATMENT", "carboplatin"], ["P2", 3, "", "TREATMENT", "Carboplatin"],
        ["P3", 1, "", "TREATMENT", "Carboplatin"], ["P4", 0, "", "TREATMENT", "PEMBROLIZUMAB"]])
    found = first_treatments([tmp_path / "data_timeline_treatment.txt"], "AGENT")
    assert found.treatments == {"P1": "Carboplatin", "P2": "Carboplatin", "P3": "Carboplatin",
                                "P4": "PEMBROLIZUMAB"}


def test_a_timeline_line_too_short_for_its_event_type_is_a_reject_not_a_crash(tmp_path, lake):
    study = _timeline_study(tmp_path / "study")
    with (study / "data_timeline_treatment.txt").open("a", encoding="utf-8") as fh:
        fh.write("P9\t4\n")  # line 15
    counts = ingest_cbioportal(lake, study, treatment_timeline="AGENT")
    assert counts["treatment"]["lines rejected"] == 3
    rejects = lake.read("rejects").to_pandas().set_index("location")
    assert rejects.loc["line 15", "reason"] == "2 tab-separated fields where the header has 7"


def test_a_treatment_attribute_in_two_letter_cases_is_one_class_and_counts_hold_the_patient_file_only(tmp_path,
                                                                                                       lake):
    """``--treatment``: the drug class written in other letter cases is one treatment (as the timeline's); a
    sample-file patient missing from the patient file gets no labels, so the response counts leave it out."""
    folder = _immunotherapy_study(tmp_path / "study")
    sample = folder / "data_clinical_sample.txt"
    rows = [line.split("\t") for line in sample.read_text(encoding="utf-8").splitlines()]
    body = [row[:-1] + ["anti-pd-1" if row[0] == "P3" else row[-1], "CR" if row[0] in ("P1", "P2") else "PD"]
            for row in rows[2:]]
    extra = list(body[0])  # P13: in the sample file only, a responder
    extra[0], extra[1] = "P13", "P13-01"
    _write(sample, [rows[0] + ["#Response"], rows[1] + ["SAMPLE_RESPONSE"], *body, extra])
    counts = ingest_cbioportal(lake, folder, response="SAMPLE_RESPONSE", treatment="DRUG_TYPE")
    labels = lake.read("labels").to_pandas().set_index("patient_id")
    assert labels.loc["P3", "treatment"] == "Anti-PD-1" and "P13" not in labels.index
    assert set(labels["treatment"]) == {"Anti-PD-1", "Anti-CTLA4"}
    # P1's two samples agree (CR, CR)
    assert counts["response"] == {"responded": 2, "did not respond": 10, "value not read": 0}
