"""A study's genes x samples matrices (discrete copy number, expression) -> one feature row per patient."""

from __future__ import annotations

import heapq
import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from ingest.cbioportal.clinical import sample_map
from ingest.cbioportal.genes import NO_GENE, UNNAMED, StudyGenes, entrez_id
from ingest.cbioportal.tsv import DataLines, StudyError, StudyTable, fields, read_study_table
from ingest.tables import MISSING, CsvRows
from ingest.variants.pipeline import patient_for

LOG_SCALE_MAX = 50.0  # an expression value above this is a linear level, not a log2 one
LEVEL_SCAN_LINES = 2000  # gene lines read to tell linear levels from log-scale values
_CNA_CALLS = {-2.0, -1.5, -1.0, 0.0, 1.0, 2.0}  # -1.5: hemizygous deletion in some studies
_GENE_COLUMNS = ("Hugo_Symbol", "Entrez_Gene_Id", "Cytoband")  # a matrix's first columns, before the samples
NO_SYMBOL_OR_ID = "no Hugo_Symbol, and the Entrez_Gene_Id is blank, 0 or not a whole number"


def cna_rows(path: Path, genes: list[str], samples: StudyTable | None, names: StudyGenes) -> CsvRows:
    """One row per patient of the discrete calls of ``genes`` from the patient's first sample with calls (as
    :func:`_per_patient` chooses it), from a genes x samples matrix (datatype ``DISCRETE``) or its long form
    (``DISCRETE_LONG``: one ``Hugo_Symbol``, ``Sample_Id``, ``Value`` line per call; :func:`_long_cna_calls`).
    Genes are read by ``Hugo_Symbol``, or in a file of ``Entrez_Gene_Id`` only by the symbols ``names`` gives
    their ids (:func:`_named_by_entrez`), as is a line of a file with both columns whose symbol is blank
    (:func:`_name_blank_symbols`). A call other than -2, -1.5, -1, 0, 1, 2 is rejected and kept as missing;
    so is a gene's second line, or a second line of one Entrez id (cBioPortal's rule).

    Raises:
        StudyError: the file has neither gene column, or as :class:`~ingest.cbioportal.tsv.DataLines`.
    """
    header = _matrix_header(path)
    if "Hugo_Symbol" in header:
        both = "Entrez_Gene_Id" in header  # then a line with a blank symbol is its Entrez id's gene (cBioPortal)
        table = read_study_table(path, only=("Hugo_Symbol", set(genes) | ({""} if both else set())))
        rejects = _name_blank_symbols(table, genes, names) if both else []
    else:
        cells, rejects = _named_by_entrez(path, header.index("Entrez_Gene_Id"), genes, names)
        table = read_study_table(path, only=("Entrez_Gene_Id", set(cells)))
        table.frame["Hugo_Symbol"] = table.frame["Entrez_Gene_Id"].map(cells)  # last: the columns keep their numbers
    rejects.extend(table.rejects)
    if _long_form(table):
        return _long_cna_calls(table, samples, rejects)
    sample_columns = [c for c in table.frame.columns if c not in _GENE_COLUMNS]
    number = {c: i + 1 for i, c in enumerate(table.frame.columns)}  # a reject names a column by its number, as
    # a sample id names its patient
    calls: dict[str, dict[str, str | None]] = {}  # gene -> sample -> call (the gene's first line only)
    first_line: dict[tuple, int] = {}
    for line, row in table.frame.to_dict("index").items():
        gene = row["Hugo_Symbol"]
        second = _second_line(_gene_keys(gene, row.get("Entrez_Gene_Id")), line, first_line)
        if second:
            rejects.append({"source": str(path), "location": f"line {line}", "raw": table.raw[line],
                            "reason": second})
            continue
        calls[gene] = {}
        for sample in sample_columns:
            value = row[sample]
            if value is not None and _call(value) is None:
                rejects.append({"source": str(path), "location": f"line {line}, column {number[sample]}",
                                "raw": table.raw[line], "reason": f"{gene}: not a discrete copy-number call (-2,"
                                                                  " -1, 0, 1, 2); kept as missing"})
                value = None
            calls[gene][sample] = value
    return _per_patient(calls, sample_columns, samples, rejects)


def _matrix_header(path: Path) -> list[str]:
    """A matrix's header, checked to name its genes by ``Hugo_Symbol``, ``Entrez_Gene_Id`` or both (cBioPortal
    File-Formats: "One or both of")."""
    with DataLines(path) as data:
        if not {"Hugo_Symbol", "Entrez_Gene_Id"} & set(data.header):
            raise StudyError(f"{path}, line {data.number}: no Hugo_Symbol or Entrez_Gene_Id column; a cBioPortal"
                             " matrix names each gene by one or both, in its first columns")
        return data.header


def _named_by_entrez(path: Path, at: int, genes: list[str], names: StudyGenes) -> tuple[dict[str, str], list[dict]]:
    """The ``Entrez_Gene_Id`` cells (column index ``at``) of a copy-number file without ``Hugo_Symbol`` whose ids
    ``names`` names as one of ``genes`` -> that symbol; and rejects for the lines whose id is blank, 0 or not a
    whole number (no gene). The ids it cannot name are counted in ``names.unnamed``."""
    cells: dict[str, int] = {}
    rejects = []
    with DataLines(path) as data:
        for number, text in data.lines():
            parts = text.split("\t", at + 1)
            cell = parts[at].strip() if len(parts) > at else ""
            entrez = entrez_id(cell)
            if entrez is None:
                rejects.append({"source": str(path), "location": f"line {number}", "raw": text, "reason": NO_GENE})
            else:
                cells[cell] = entrez
    ids = set(cells.values())
    names.unnamed[path] = ([e for e in sorted(ids) if names.symbol(e) is None], len(ids),
                           "their copy number is not loaded (a panel gene among them cannot be told)")
    wanted = set(genes)
    return {cell: names.symbol(e) for cell, e in cells.items() if names.symbol(e) in wanted}, rejects


def _name_blank_symbols(table: StudyTable, genes: list[str], names: StudyGenes) -> list[dict]:
    """Name the lines of ``table`` (a copy-number file with both gene columns) whose ``Hugo_Symbol`` is blank by
    the symbol ``names`` gives their Entrez id, keeping those of ``genes`` (the others are left out, as lines of
    other genes are); rejects for the lines whose id names no gene. The ids not named are counted in
    ``names.unnamed``."""
    frame = table.frame
    blank = frame.index[frame["Hugo_Symbol"].isna()]
    if blank.empty:
        return []
    ids = {line: entrez_id(frame.at[line, "Entrez_Gene_Id"]) for line in blank}
    rejects = [{"source": str(table.path), "location": f"line {line}", "raw": table.raw[line],
                "reason": NO_SYMBOL_OR_ID} for line, entrez in ids.items() if entrez is None]
    known = {entrez for entrez in ids.values() if entrez is not None}
    names.unnamed[table.path] = (sorted(e for e in known if names.symbol(e) is None), len(known),
                                 "their copy number is not loaded (a panel gene among them cannot be told)")
    for line, entrez in ids.items():
        frame.at[line, "Hugo_Symbol"] = names.symbol(entrez) if entrez is not None else None
    wanted = set(genes)
    table.frame = frame[~frame.index.isin(blank) | frame["Hugo_Symbol"].isin(wanted)]
    return rejects


def _second_line(keys: list[tuple[tuple, str]], line: int, first_line: dict[tuple, int]) -> str | None:
    """Why line ``line`` is not read: one of its ``(key, label)`` pairs was on an earlier line (a gene's second
    line; a second line of an Entrez id under another symbol, as the id identifies the gene in cBioPortal); else
    None, and its keys are remembered."""
    for key, label in keys:
        if key in first_line:
            return f"a second line for {label} (line {first_line[key]} is used)"
    first_line.update((key, line) for key, _ in keys)
    return None


def _gene_keys(gene: str, entrez: str | None, *where: str) -> list[tuple[tuple, str]]:
    """The keys :func:`_second_line` tells a line's gene by: its symbol, and its Entrez id where it has one."""
    keys = [(("symbol", gene, *where), gene + (" in one sample" if where else ""))]
    if (number := entrez_id(entrez)) is not None:
        keys.append((("entrez", number, *where), f"Entrez_Gene_Id {number}" + (" in one sample" if where else "")))
    return keys


def _long_form(table: StudyTable) -> bool:
    """Whether a copy-number file is in cBioPortal's long form: ``Sample_Id`` and ``Value`` columns (any case)."""
    names = {name.lower() for name in table.frame.columns}
    return {"sample_id", "value"} <= names


def _long_cna_calls(table: StudyTable, samples: StudyTable | None, rejects: list[dict]) -> CsvRows:
    """:func:`cna_rows` of a ``DISCRETE_LONG`` file. A gene without a line for a sample is missing for it, as
    cBioPortal imports it (the pipelines that write this form often leave out the neutral calls, but a missing
    line may also be a gene the sample's panel did not cover). A second line for one gene and sample is
    rejected (the first is used), as is a second line for one Entrez id under another symbol."""
    column = {name.lower(): name for name in table.frame.columns}
    sample_at, value_at = column["sample_id"], column["value"]
    calls: dict[str, dict[str, str | None]] = {}  # gene -> sample -> call
    first_line: dict[tuple, int] = {}
    sample_columns: dict[str, None] = {}  # the samples, in the order of their first line
    for line, row in table.frame.to_dict("index").items():
        gene, sample, value = row["Hugo_Symbol"], row[sample_at], row[value_at]
        if sample is None:
            rejects.append({"source": str(table.path), "location": f"line {line}", "raw": table.raw[line],
                            "reason": f"{gene}: no {sample_at}"})
            continue
        second = _second_line(_gene_keys(gene, row.get("Entrez_Gene_Id"), sample), line, first_line)
        if second:
            rejects.append({"source": str(table.path), "location": f"line {line}", "raw": table.raw[line],
                            "reason": second})
            continue
        sample_columns.setdefault(sample)
        if value is not None and _call(value) is None:
            rejects.append({"source": str(table.path), "location": f"line {line}", "raw": table.raw[line],
                            "reason": f"{gene}: not a discrete copy-number call (-2, -1, 0, 1, 2); kept as missing"})
            value = None
        calls.setdefault(gene, {})[sample] = value
    by_gene = {gene: {sample: values.get(sample) for sample in sample_columns} for gene, values in calls.items()}
    return _per_patient(by_gene, list(sample_columns), samples, rejects)


def _per_patient(by_gene: dict[str, dict[str, object]], sample_columns: list[str], samples: StudyTable | None,
                 rejects: list[dict]) -> CsvRows:
    """Feature rows (one per patient, one column per gene) of a genes x samples matrix ``by_gene`` (gene ->
    sample -> value or None): each patient's first sample with a value, in the sample table's order (which
    :func:`ingest.cbioportal.clinical.sample_rank` sets) and then the matrix's (a sample missing from the sample
    file is its patient's as the mutations' are: a TCGA barcode's first 12 characters, else the sample itself)."""
    order = list(samples.frame["SAMPLE_ID"].dropna()) if samples is not None else []
    patient_of = sample_map(samples) if samples is not None else {}
    chosen: dict[str, str] = {}  # patient -> sample
    for sample in [s for s in order if s in sample_columns] + [s for s in sample_columns if s not in order]:
        if any(values[sample] is not None for values in by_gene.values()):
            chosen.setdefault(patient_of.get(sample) or patient_for(sample), sample)
    frame = pd.DataFrame({"patient_id": list(chosen),
                          **{gene: [values[s] for s in chosen.values()] for gene, values in by_gene.items()}},
                         dtype=object)
    return CsvRows(frame, pd.Series([None] * len(frame), dtype=object), rejects)


def expression_rows(path: Path, *, linear: bool, panel: list[str], top: int, samples: StudyTable | None,
                    names: StudyGenes) -> CsvRows:
    """One row per patient (its first sample with values) of the expression of the panel's genes and of the
    ``top`` other genes of highest variance over all samples (no label is read). Linear levels (``linear``, told
    by :func:`linear_levels`) become log2(1 + level); other values (z-scores, log-scale levels, microarray log
    ratios) stay as given. The file is read line by line, holding only the chosen genes. A gene is its
    ``Hugo_Symbol``; a line with only an ``Entrez_Gene_Id`` is the symbol ``names`` gives that id, else
    ``ENTREZ_<id>`` (counted in ``names.unnamed``). A cell that is not a number (or a negative linear level) is
    rejected and kept as missing; so is a gene's second line (its first line is used), and a second line of one
    Entrez id (cBioPortal's rule).

    Raises:
        StudyError: the file has neither gene column, or as :class:`~ingest.cbioportal.tsv.DataLines`.
    """
    wanted, rejects = set(panel), []
    chosen: dict[str, np.ndarray] = {}  # panel genes
    heap: list[tuple[float, int, str, np.ndarray]] = []  # the ``top`` most variable other genes
    first_line: dict[tuple, int] = {}
    by_entrez: dict[int, bool] = {}  # the ids of the lines named by Entrez id only -> whether the study names it
    header = _matrix_header(path)
    first = _first_sample_column(header)
    hugo_at, entrez_at = (header.index(c) if c in header else None for c in ("Hugo_Symbol", "Entrez_Gene_Id"))
    with DataLines(path) as data:
        for number, text in data.lines():
            parts = fields(text, len(header))
            gene, entrez, problem = None, None, None
            if len(parts) != len(header):
                problem = f"{len(parts)} tab-separated fields where the header has {len(header)}"
            else:
                gene = parts[hugo_at] if hugo_at is not None else ""
                entrez = parts[entrez_at] if entrez_at is not None else None
                if not gene and (number_of := entrez_id(entrez)) is not None:
                    gene = names.symbol(number_of)
                    by_entrez[number_of] = gene is not None
                    gene = gene or UNNAMED.format(number_of)
                if not gene:
                    problem = ("no Hugo_Symbol" if entrez_at is None else NO_GENE if hugo_at is None
                               else NO_SYMBOL_OR_ID)
                else:
                    problem = _second_line(_gene_keys(gene, entrez), number, first_line)
            if problem:
                rejects.append({"source": str(path), "location": f"line {number}", "raw": text, "reason": problem})
                continue
            values = _levels(parts[first:], first, path, number, text, linear, rejects)
            if gene in wanted:
                chosen[gene] = values
            elif top > 0 and np.isfinite(values).sum() >= 2:
                entry = (float(np.nanvar(values)), -number, gene, values)
                (heapq.heappush if len(heap) < top else heapq.heappushpop)(heap, entry)
    if by_entrez:
        names.unnamed[path] = ([e for e, named in sorted(by_entrez.items()) if not named], len(by_entrez),
                               f"kept as {UNNAMED.format('<id>')} (a candidate among the most variable genes, never"
                               " a panel gene)")
    chosen.update({gene: values for _, _, gene, values in sorted(heap, reverse=True)})
    by_gene = {gene: {s: (None if np.isnan(v) else float(v)) for s, v in zip(header[first:], values, strict=True)}
               for gene, values in chosen.items()}
    return _per_patient(by_gene, header[first:], samples, rejects)


def linear_levels(path: Path, lines: int = LEVEL_SCAN_LINES) -> bool:
    """Whether an expression file's values are linear levels (RSEM, TPM, FPKM, linear intensities) rather than
    already on a log scale: a value above :data:`LOG_SCALE_MAX` in its first ``lines`` gene lines. cBioPortal
    profiles do not say which (cBioPortal issues #4374, #5848), and neither the file name nor the stable_id tells:
    the datahub's pcpg_tcga_pub held log2 RSEM (datahub PR #1422), its older TCGA studies linear RSEM as
    data_RNA_Seq_v2_expression_median.txt, mela_hugo_2016 log2 FPKM as stable_id rna_seq_mrna. A log2 level above
    50 would be a linear level above 2^50, so the largest value tells."""
    with DataLines(path) as data:
        first = _first_sample_column(data.header)
        for _, text in itertools.islice(data.lines(), lines):
            values = pd.to_numeric(pd.Series(text.split("\t")[first:]), errors="coerce")
            if (values > LOG_SCALE_MAX).any():
                return True
    return False


def _first_sample_column(header: list[str]) -> int:
    """The index of a matrix's first sample column: after its gene columns (``Hugo_Symbol``, ``Entrez_Gene_Id``,
    or both, and the optional ``Cytoband``)."""
    return next((i for i, column in enumerate(header) if column not in _GENE_COLUMNS), len(header))


def _levels(cells: list[str], first: int, path: Path, number: int, text: str, linear: bool,
            rejects: list[dict]) -> np.ndarray:
    """The numbers of one expression line's sample cells, which start at column index ``first`` (NaN where
    missing or rejected), log2(1 + x) for linear levels. A reject names the column by its number, not by its
    sample id (which names the patient)."""
    try:
        values = np.array([np.nan if c.strip() in MISSING else c for c in cells], dtype=np.float64)
    except ValueError:
        values = np.full(len(cells), np.nan)
        for i, cell in enumerate(cells):
            try:
                values[i] = np.nan if cell.strip() in MISSING else float(cell)
            except ValueError:
                rejects.append({"source": str(path), "location": f"line {number}, column {first + i + 1}", "raw": text,
                                "reason": "not a number; kept as missing"})
    values[~np.isfinite(values)] = np.nan
    if linear:
        negative = values < 0
        for i in np.flatnonzero(negative):
            rejects.append({"source": str(path), "location": f"line {number}, column {first + i + 1}", "raw": text,
                            "reason": "a negative expression level; kept as missing"})
        values[negative] = np.nan
        values = np.log2(1.0 + values)
    return values


def _call(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number in _CNA_CALLS else None
