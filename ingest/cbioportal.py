"""cBioPortal studies (the datahub's folder format) -> the lake: outcomes, clinical, mutations, copy number, expression.

A study folder holds tab-separated data files, each described by a ``meta_*.txt`` file of ``key: value`` lines
(``genetic_alteration_type``, ``datatype``, ``data_filename``); a folder without meta files is read by the usual
file names (``data_clinical_patient.txt``, ``data_clinical_sample.txt``, ``data_mutations*.txt`` but the
uncalled ones, ``data_cna.txt`` or ``data_CNA.txt``, ``data_mrna*.txt`` and the older ``data_RNA_Seq*`` /
``data_expression*``; the expression profile is chosen by :func:`_expression_rank`). Clinical files start with
``#`` lines (display names, descriptions, data types, priorities) before the header of attribute ids. Where
meta files name several clinical files of one level (the datahub's ``data_clinical_supp_*.txt``), the main one
(``data_clinical_patient.txt`` / ``data_clinical_sample.txt``) is loaded and the others are named in a note.
:func:`ingest_cbioportal` loads, through the lake's own doors (:mod:`ingest.tables`, :mod:`ingest.variants`):

- **labels**: ``time`` (days: ``<ENDPOINT>_MONTHS`` x 365.25 / 12, as cBioPortal derives months from days) and
  ``event`` (``<ENDPOINT>_STATUS``: ``1:DECEASED`` / ``0:LIVING`` and the like, or the older words without the
  ``0:``/``1:`` prefix) for the chosen endpoint (OS, PFS, DFS, DSS, ...), optionally ``diagnosis`` from a
  patient or sample attribute, and the ``index_date`` :data:`INDEX_DATE` for every patient. cBioPortal data
  carry no calendar dates: survival times count from each patient's own day 0 (usually the diagnosis), which
  tumorboard places on that one date;
- **clinical features** (modality ``clinical``): the other patient attributes, except outcomes (every
  ``X_STATUS``/``X_MONTHS`` pair and :data:`FOLLOW_UP_ATTRIBUTES`: they are known only after day 0 and would
  leak the target), identifiers (``*_ID``, and text attributes with a different value for every patient), the
  diagnosis attribute and its other codings (:data:`DIAGNOSIS_ATTRIBUTES`) when one is the diagnosis label,
  and the attributes the caller excludes; modality ``clinical_sample``: the attributes of each patient's first
  sample (TMB, MSI score, sample type, ...) under the same rules, where "first" means a primary tumour before
  other samples, recurrences and metastases after, normal samples last (by ``SAMPLE_TYPE``:
  :func:`_sample_rank`), else the sample file's order;
- **mutations** (MAF) with ``SAMPLE_ID -> PATIENT_ID`` from the sample file, as ``ingest variants`` does;
- **copy number** (modality ``cna``; discrete GISTIC calls -2..2 of the gene panel's genes) from each patient's
  first sample (as for ``clinical_sample``) that has calls;
- **expression** (modality ``expression``; ``MRNA_EXPRESSION`` levels, else z-scores): the panel's genes and the
  most variable other genes over all samples (an unsupervised choice: no label is read), linear levels (told
  by their values: :func:`_linear_levels`) as log2(1 + level), log-scale values as given, from each patient's
  first sample with values.

Rejects name the study's own file and line (the line number counts the ``#`` lines).
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ingest.lake import Lake
from ingest.tables import MISSING, CsvRows, TableFileError, ingest_features, ingest_labels
from ingest.variants.features import GenePanel, load_gene_panel
from ingest.variants.pipeline import ingest_variants

DAYS_PER_MONTH = 365.25 / 12
INDEX_DATE = "2000-01-01"  # every patient's day 0 (cBioPortal has no calendar dates)
# TCGA/GDC-derived attributes recorded at follow-up, after day 0: never model inputs
FOLLOW_UP_ATTRIBUTES = frozenset({
    "VITAL_STATUS", "DAYS_TO_DEATH", "DAYS_TO_LAST_FOLLOWUP", "DAYS_LAST_FOLLOWUP", "LAST_CONTACT_DAYS_TO",
    "DEATH_DAYS_TO", "PERSON_NEOPLASM_CANCER_STATUS", "TUMOR_STATUS", "NEW_TUMOR_EVENT_AFTER_INITIAL_TREATMENT",
    "DAYS_TO_NEW_TUMOR_EVENT_AFTER_INITIAL_TREATMENT", "TREATMENT_OUTCOME_FIRST_COURSE", "FORM_COMPLETION_DATE",
})
# attributes that name the cancer type: never features when one of them is the diagnosis label
DIAGNOSIS_ATTRIBUTES = frozenset({"CANCER_TYPE", "CANCER_TYPE_DETAILED", "ONCOTREE_CODE", "TUMOR_TYPE"})
_EVENT_WORDS = {"DECEASED", "DEAD", "RECURRED/PROGRESSED", "RECURRED", "PROGRESSED", "PROGRESSION",
                "DEAD WITH TUMOR", "DEAD OF DISEASE"}
_CENSORED_WORDS = {"LIVING", "ALIVE", "DISEASEFREE", "DISEASE FREE", "CENSORED", "ALIVE OR DEAD TUMOR FREE",
                   "ALIVE OR CENSORED"}
_PLACEHOLDER = re.compile(r"^\[[^\]]*\]$")  # "[Not Available]", "[Unknown]", ... as TCGA-derived studies write
LOG_SCALE_MAX = 50.0  # an expression value above this is a linear level, not a log2 one
LEVEL_SCAN_LINES = 2000  # gene lines read to tell linear levels from log-scale values
_CNA_CALLS = {-2.0, -1.5, -1.0, 0.0, 1.0, 2.0}  # -1.5: hemizygous deletion in some studies


class StudyError(TableFileError):
    """A cBioPortal study folder cannot be ingested as a whole (nothing was loaded)."""


@dataclass
class StudyFiles:
    """The data files of one study (paths; None where the study has none)."""

    patient: Path | None
    sample: Path | None
    mutations: list[Path] = field(default_factory=list)
    cna: Path | None = None
    expression: Path | None = None
    expression_kind: str = ""  # its meta datatype: CONTINUOUS or Z-SCORE
    panel_matrix: Path | None = None  # which targeted panel sequenced each sample
    supplementary: list[Path] = field(default_factory=list)  # other clinical files (not loaded)


@dataclass
class StudyTable:
    """A cBioPortal TSV: ``frame`` of stripped strings (None where missing) indexed by the file's line number;
    ``raw`` each line's text; ``rejects`` the lines whose field count differs from the header's."""

    path: Path
    frame: pd.DataFrame
    raw: pd.Series
    rejects: list[dict]


def find_study_files(folder: Path) -> StudyFiles:
    """The clinical, mutation, discrete copy-number, expression and gene-panel files of the study in ``folder``
    (by its meta files, else by the usual names).

    Raises:
        StudyError: ``folder`` is not a folder, or a meta file names a data file that is not there.
    """
    if not folder.is_dir():
        raise StudyError(f"{folder} is not a folder; pass the study folder (the one holding meta_study.txt)")
    metas = [_meta(path) for path in sorted(folder.glob("meta_*.txt"))]
    if not metas:
        expression = [p for p in folder.glob("data_*.txt") if p.is_file() and _EXPRESSION_NAME.match(p.name)]
        ranked = sorted((rank, p.name, p) for p in expression
                        if (rank := _expression_rank(p.name, "", "Z-SCORE" if "zscores" in p.name.lower()
                                                     else "CONTINUOUS")) is not None)
        chosen = ranked[0][2] if ranked else None
        return StudyFiles(_first(folder, "data_clinical_patient.txt"), _first(folder, "data_clinical_sample.txt"),
                          sorted(p for p in folder.glob("data_mutations*") if p.is_file()
                                 and "uncalled" not in p.name.lower()),
                          _first(folder, "data_cna.txt") or _first(folder, "data_CNA.txt"), chosen,
                          "" if chosen is None else "Z-SCORE" if "zscores" in chosen.name.lower() else "CONTINUOUS",
                          _first(folder, "data_gene_panel_matrix.txt"))
    files = StudyFiles(None, None)
    expression_rank: tuple[int, str] | None = None
    clinical: dict[str, list[Path]] = {"PATIENT_ATTRIBUTES": [], "SAMPLE_ATTRIBUTES": []}
    for path, meta in metas:
        kind = (meta.get("genetic_alteration_type", "").upper(), meta.get("datatype", "").upper())
        name = meta.get("data_filename")
        if name is None:
            continue
        data = folder / name
        if not data.is_file():
            raise StudyError(f"{path}: data_filename {name} is not in {folder}; fix the meta file or add the data"
                             " file")
        if kind[0] == "CLINICAL" and kind[1] in clinical:
            clinical[kind[1]].append(data)
        elif kind[0] == "MUTATION_EXTENDED":
            files.mutations.append(data)
        elif kind == ("COPY_NUMBER_ALTERATION", "DISCRETE"):
            files.cna = data
        elif kind[0] == "MRNA_EXPRESSION" and (
                rank := _expression_rank(name, meta.get("stable_id", ""), kind[1])) is not None and (
                expression_rank is None or (rank, name) < expression_rank):
            files.expression, files.expression_kind, expression_rank = data, kind[1], (rank, name)
        elif kind[0] == "GENE_PANEL_MATRIX":
            files.panel_matrix = data
    # A study may describe several clinical files per level (the datahub's data_clinical_supp_*.txt, each with its
    # own meta file): the main one is data_clinical_patient.txt / data_clinical_sample.txt, else the first.
    for level, usual in (("PATIENT_ATTRIBUTES", "data_clinical_patient.txt"),
                         ("SAMPLE_ATTRIBUTES", "data_clinical_sample.txt")):
        paths = sorted(clinical[level], key=lambda p: p.name != usual)
        if paths:
            setattr(files, "patient" if level == "PATIENT_ATTRIBUTES" else "sample", paths[0])
            files.supplementary.extend(paths[1:])
    return files


def _expression_rank(name: str, stable_id: str, datatype: str) -> int | None:
    """How well an ``MRNA_EXPRESSION`` profile serves as the patient's gene expression (lower is better), or None
    for one that does not: microRNA (stable_id ``mirna*``, data_mirna*.txt), the adjacent normal samples' own
    profiles (stable_id ``*_normals*``, ``*_normal_samples.txt`` but not the tumours' z-scores relative to them),
    mRNA/miRNA merged z-scores, and datatype DISCRETE (outlier calls). Levels before z-scores; among levels,
    TPM, then RSEM, then other RNA-seq units, then microarrays, and raw read counts last (not normalised between
    samples). The datahub's stable_ids and file names: cBioPortal's File-Formats "Expression Data" table and
    datahub-study-curation-tools' meta templates."""
    lowered, stable = name.lower(), stable_id.lower()
    if (datatype not in ("CONTINUOUS", "Z-SCORE") or stable.startswith("mirna") or "mirna" in lowered
            or "_normals" in stable or "merged" in stable or "merged" in lowered
            or ("normal_samples" in lowered and "ref_normal_samples" not in lowered)):
        return None
    if datatype == "Z-SCORE":
        return 10
    if "read_counts" in lowered:
        return 5
    for rank, marks in enumerate((("tpm",), ("rsem", "rna_seq_v2")), start=0):
        if any(mark in lowered or mark in stable for mark in marks):
            return rank
    return 2 if "rna_seq" in lowered or "rna_seq" in stable or "mrna_seq" in stable else 3


_EXPRESSION_NAME = re.compile(r"^data_(mrna|rna_seq|expression)", re.IGNORECASE)


def _first(folder: Path, name: str) -> Path | None:
    path = folder / name
    return path if path.is_file() else None


def _meta(path: Path) -> tuple[Path, dict[str, str]]:
    """A meta file's ``key: value`` lines."""
    pairs = {}
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            pairs[key.strip()] = re.sub(r"\s#.*$", "", value).strip()  # "PATIENT_ATTRIBUTES  #Note: ..."
    return path, pairs


def read_study_table(path: Path, *, required: Iterable[str] = (), only: tuple[str, set[str]] | None = None
                     ) -> StudyTable:
    """Read a cBioPortal TSV line by line (UTF-8; ``#`` lines before the header skipped; blank lines skipped);
    cells in :data:`ingest.tables.MISSING` or in brackets (``[Not Available]``) are missing. ``only`` =
    ``(column, values)`` keeps just the lines whose ``column`` is in ``values`` (a copy-number matrix's panel
    genes), splitting no other line whole.

    Raises:
        StudyError: the file is not UTF-8, has no header, an unnamed or repeated column, or lacks a ``required``
            column.
    """
    rows, numbers, raws, rejects = [], [], [], []
    header: list[str] = []
    n, keep_at = 0, None  # keep_at: the index of ``only``'s column, once the header is read
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            for n, line in enumerate(fh, start=1):
                line = line.rstrip("\r\n")
                if not line.strip() or (not header and line.startswith("#")):
                    continue
                if not header:
                    header = _header(path, n, line, required)
                    keep_at = header.index(only[0]) if only is not None else None
                    continue
                if keep_at is not None and line.split("\t", keep_at + 1)[keep_at].strip() not in only[1]:
                    continue
                values = _fields(line, len(header))
                if len(values) != len(header):
                    rejects.append({"source": str(path), "location": f"line {n}", "raw": line,
                                    "reason": f"{len(values)} tab-separated fields where the header has"
                                              f" {len(header)}"})
                    continue
                rows.append([None if v in MISSING or _PLACEHOLDER.match(v) else v for v in values])
                numbers.append(n)
                raws.append(line)
    except UnicodeDecodeError as exc:
        raise StudyError(f"{path}, line {n + 1}: not UTF-8 text ({exc.reason}); save the file as UTF-8") from None
    if not header:
        raise StudyError(f"{path}: no header line (every line is empty or starts with #)")
    index = pd.Index(numbers, name="line")
    return StudyTable(path, pd.DataFrame(rows, columns=header, index=index, dtype=object),
                      pd.Series(raws, index=index, dtype=object), rejects)


def _fields(line: str, width: int) -> list[str]:
    """The stripped tab-separated fields of ``line``, less empty ones beyond the first ``width`` (a trailing tab,
    as cBioPortal's own example files have)."""
    fields = [field.strip() for field in line.split("\t")]
    while len(fields) > width and not fields[-1]:
        fields.pop()
    return fields


def _header(path: Path, number: int, line: str, required: Iterable[str]) -> list[str]:
    header = _fields(line, 0)
    repeated = sorted({name for name in header if header.count(name) > 1})
    if "" in header or repeated:
        raise StudyError(f"{path}, line {number}: the header has an unnamed or repeated column"
                         f" ({', '.join(repeated) or 'column ' + str(header.index('') + 1)}); fix the header")
    missing = [name for name in required if name not in header]
    if missing:
        raise StudyError(f"{path}, line {number}: no {', '.join(missing)} column; a cBioPortal data file names its"
                         " columns in the first line after the # lines")
    return header


def ingest_cbioportal(lake: Lake, folder: Path, *, endpoint: str = "OS", diagnosis: str | None = None,
                      exclude: Iterable[str] = (), gene_panel: GenePanel | str | Path | None = None,
                      expression_genes: int = 500, progress: Callable[[int, int], None] | None = None
                      ) -> dict[str, dict]:
    """Load the cBioPortal study in ``folder`` (see the module docstring): labels for ``endpoint``, clinical
    features without outcomes, identifiers and ``exclude``, mutations, copy number, and the expression of the
    panel's genes and of the ``expression_genes`` most variable others (0: no expression). ``progress`` is
    called with (steps done, steps in all) as the files are read and the parts written.

    Returns:
        Counts per part (``labels``, ``clinical``, ``clinical_sample``, ``mutations``, ``cna``, ``expression``;
        a part the study lacks is absent), ``excluded``: per clinical modality, the attributes left out, each
        with why, and ``notes`` when there is something to say (a targeted-panel study's TMB over the default
        panel).

    Raises:
        StudyError: no patient file, or it lacks the endpoint's columns (the lake is unchanged).
    """
    files = find_study_files(folder)
    if files.patient is None:
        raise StudyError(f"{folder}: no patient clinical file (data_clinical_patient.txt, or a meta file with"
                         " datatype: PATIENT_ATTRIBUTES); cBioPortal studies need one")
    panel = gene_panel if isinstance(gene_panel, GenePanel) else load_gene_panel(gene_panel)
    patients = read_study_table(files.patient, required=["PATIENT_ID"])
    if patients.frame.empty:
        raise StudyError(f"{files.patient}: no patient line to load (the lake is unchanged)")
    samples = read_study_table(files.sample, required=["PATIENT_ID", "SAMPLE_ID"]) if files.sample else None
    if samples is not None and "SAMPLE_TYPE" in samples.frame:  # the primary tumour represents its patient
        samples.frame = samples.frame.iloc[np.argsort([_sample_rank(t) for t in samples.frame["SAMPLE_TYPE"]],
                                                      kind="stable")]
    status, months = f"{endpoint.upper()}_STATUS", f"{endpoint.upper()}_MONTHS"
    if status not in patients.frame or months not in patients.frame:
        found = sorted(c[:-len("_STATUS")] for c in patients.frame if c.endswith("_STATUS")
                       and f"{c[:-len('_STATUS')]}_MONTHS" in patients.frame)
        raise StudyError(f"{files.patient}: no {status} and {months} columns for endpoint {endpoint}; this study has"
                         f" {', '.join(found) or 'no survival endpoint'} (pass --endpoint)")
    # Every file is read and checked before the first write, so a study that cannot be read changes nothing.
    with_expression = files.expression is not None and expression_genes > 0
    matrices = [m for m in (files.cna, files.expression if with_expression else None) if m is not None]
    total, done = 2 + 2 * len(matrices) + (samples is not None) + bool(files.mutations), 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    labels = _label_rows(patients, status, months, _diagnoses(patients, samples, diagnosis))
    clinical, excluded = _feature_rows(patients, set(exclude), diagnosis)
    per_sample = _feature_rows(samples, set(exclude), diagnosis) if samples is not None else None
    step()
    cna = _cna_rows(files.cna, panel.genes, samples) if files.cna is not None else None
    expression = None
    if files.cna is not None:
        step()
    if with_expression:
        rna_seq = files.expression_kind == "CONTINUOUS" and _linear_levels(files.expression)
        expression = _expression_rows(files.expression, rna_seq=rna_seq, panel=panel.genes, top=expression_genes,
                                      samples=samples)
        step()
    counts: dict[str, dict] = {"labels": ingest_labels(lake, files.patient, table=labels),
                               "excluded": {"clinical": excluded}}
    if len(clinical.frame.columns) > 1:
        counts["clinical"] = ingest_features(lake, files.patient, modality="clinical", table=clinical,
                                             replace="source")
    step()
    if per_sample is not None:
        first, counts["excluded"]["clinical_sample"] = per_sample
        if len(first.frame.columns) > 1:
            counts["clinical_sample"] = {**ingest_features(lake, files.sample, modality="clinical_sample",
                                                           table=first, replace="source"),
                                         "samples_not_used": int(samples.frame["SAMPLE_ID"].notna().sum())
                                         - len(first.frame)}
        step()
    if files.mutations:
        counts["mutations"] = ingest_variants(lake, files.mutations, sample_map=_sample_map(samples)
                                              if samples is not None else None, gene_panel=panel)
        step()
    if cna is not None:
        counts["cna"] = ingest_features(lake, files.cna, modality="cna", table=cna, replace="source")
        step()
    if expression is not None:
        counts["expression"] = ingest_features(lake, files.expression, modality="expression", table=expression,
                                                 replace="source")
        step()
    notes = [f"{', '.join(p.name for p in files.supplementary)}: supplementary clinical file(s) of the study,"
             " not loaded (only the main patient and sample files are)"] if files.supplementary else []
    if files.panel_matrix is not None and files.mutations and gene_panel is None:
        notes.append(f"{files.panel_matrix.name}: this study's samples were sequenced on targeted gene panels,"
                           f" but TMB was computed over the default panel's {panel.panel_size_mb:g} Mb; pass"
                           " --gene-panel with the panel's genes and panel_size_mb (the clinical_sample modality"
                           " has cBioPortal's own TMB_NONSYNONYMOUS where the study gives it)")
    if notes:
        counts["notes"] = notes
    return counts


def _sample_rank(sample_type: str | None) -> int:
    """Which of a patient's samples represents it (lowest first; ties in the sample file's order): a primary
    tumour, then a sample of unknown or other type, then a recurrence or metastasis (taken after day 0), a normal
    sample last. SAMPLE_TYPE words: cBioPortal File-Formats, clinical sample columns ("recurrence", "recurred",
    "progression", "progressed", "metastatic", "metastasis", "primary"); GDC studies add "Solid Tissue Normal",
    "Blood Derived Normal"."""
    word = (sample_type or "").lower()
    if "normal" in word:
        return 3
    if any(mark in word for mark in ("recurr", "progress", "metasta", "relapse")):
        return 2
    return 0 if "primary" in word else 1


def _label_rows(patients: StudyTable, status: str, months: str, diagnoses: dict[str, str] | None) -> CsvRows:
    """``patient_id, time, event, index_date[, diagnosis]`` rows for :func:`ingest.tables.ingest_labels`; a line
    whose survival cells cannot be read keeps no time and event, with a reject that says why."""
    frame, rejects = patients.frame, list(patients.rejects)
    rows = pd.DataFrame({"patient_id": frame["PATIENT_ID"], "time": None, "event": None, "index_date": INDEX_DATE},
                        index=frame.index, dtype=object)
    for line, cells in frame[[status, months]].to_dict("index").items():
        state, length = cells[status], cells[months]
        if state is None and length is None:
            continue
        try:
            event, days = _event(state, status), _days(length, months)
        except ValueError as exc:
            rejects.append({"source": str(patients.path), "location": f"line {line}", "raw": patients.raw[line],
                            "reason": f"{exc}; the patient's other labels were loaded without a survival time"})
            continue
        rows.loc[line, ["time", "event"]] = [repr(days), "1" if event else "0"]
    if diagnoses is not None:
        # an object column: a list with None would become a string column with NaN (pandas 3), not a missing cell
        rows["diagnosis"] = pd.Series([diagnoses.get(pid) if pid is not None else None for pid in rows["patient_id"]],
                                      index=rows.index, dtype=object)
    return CsvRows(rows, patients.raw, rejects)


def _event(state: str | None, column: str) -> bool:
    if state is None:
        raise ValueError(f"{column} is empty while the time is given")
    head, sep, _ = state.partition(":")
    if sep and head.strip() in ("0", "1"):
        return head.strip() == "1"
    word = state.upper()
    if word in _EVENT_WORDS:
        return True
    if word in _CENSORED_WORDS:
        return False
    raise ValueError(f"{column} is not 1:<event> or 0:<censored> (e.g. 1:DECEASED, 0:LIVING, 1:PROGRESSION)")


def _days(length: str | None, column: str) -> float:
    if length is None:
        raise ValueError(f"{column} is empty while the status is given")
    try:
        value = float(length)
    except ValueError:
        raise ValueError(f"{column} is not a number of months") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{column} must be a non-negative number of months")
    return value * DAYS_PER_MONTH


def _diagnoses(patients: StudyTable, samples: StudyTable | None, attribute: str | None) -> dict[str, str] | None:
    """``patient -> diagnosis`` from a patient attribute, else a sample attribute (a patient whose samples
    disagree gets none); None when ``attribute`` is None.

    Raises:
        StudyError: neither file has ``attribute``.
    """
    if attribute is None:
        return None
    for table in (patients, samples):
        if table is not None and attribute in table.frame:
            values = table.frame[["PATIENT_ID", attribute]].dropna()
            distinct = values.drop_duplicates().groupby("PATIENT_ID")[attribute]
            return {pid: group.iloc[0] for pid, group in distinct if len(group) == 1}
    raise StudyError(f"{patients.path}: --diagnosis {attribute} is neither a patient nor a sample attribute")


def _feature_rows(table: StudyTable, exclude: set[str], diagnosis: str | None) -> tuple[CsvRows, dict[str, str]]:
    """The attributes of a clinical file that can be model inputs (of a sample file: each patient's first sample,
    in the file's order), and the others with why they are left out."""
    frame = table.frame
    if "SAMPLE_ID" in frame:
        frame = frame[frame["PATIENT_ID"].notna()].drop_duplicates("PATIENT_ID")
    excluded: dict[str, str] = {}
    for column in frame.columns:
        stem = column.rsplit("_", 1)[0]
        if column == "PATIENT_ID":
            continue
        if column in exclude:
            excluded[column] = "excluded by the caller"
        elif (column.endswith("_STATUS") and f"{stem}_MONTHS" in frame) or (
                column.endswith("_MONTHS") and f"{stem}_STATUS" in frame) or column in FOLLOW_UP_ATTRIBUTES:
            excluded[column] = "an outcome known only after day 0"
        elif diagnosis is not None and (column == diagnosis or column in DIAGNOSIS_ATTRIBUTES):
            excluded[column] = "the diagnosis label, or another coding of it"
        elif column.endswith("_ID") or _identifier_like(frame[column]):
            excluded[column] = "an identifier"
    kept = frame[[c for c in frame.columns if c not in excluded]].rename(columns={"PATIENT_ID": "patient_id"})
    return CsvRows(kept, table.raw[kept.index], []), excluded


def _identifier_like(values: pd.Series) -> bool:
    """Text that differs on every line (at least 10 of them): an identifier, not a category."""
    present = values.dropna()
    return len(present) >= 10 and present.is_unique and pd.to_numeric(present, errors="coerce").isna().all()


def _sample_map(samples: StudyTable) -> dict[str, str]:
    """``SAMPLE_ID -> PATIENT_ID`` from the sample file."""
    pairs = samples.frame[["SAMPLE_ID", "PATIENT_ID"]].dropna()
    return dict(zip(pairs["SAMPLE_ID"], pairs["PATIENT_ID"], strict=True))


def _cna_rows(path: Path, genes: list[str], samples: StudyTable | None) -> CsvRows:
    """One row per patient of the discrete calls of ``genes`` from the patient's first sample with calls (samples
    in the sample file's order, then the CNA file's; a sample missing from the sample file is its own patient).
    A call other than -2, -1.5, -1, 0, 1, 2 is rejected and kept as missing; so is a gene's second line."""
    table = read_study_table(path, required=["Hugo_Symbol"], only=("Hugo_Symbol", set(genes)))
    sample_columns = [c for c in table.frame.columns if c not in ("Hugo_Symbol", "Entrez_Gene_Id", "Cytoband")]
    rejects = list(table.rejects)
    calls: dict[str, dict[str, str | None]] = {}  # gene -> sample -> call (the gene's first line only)
    first_line: dict[str, int] = {}
    for line, row in table.frame.to_dict("index").items():
        gene = row["Hugo_Symbol"]
        if gene in calls:
            rejects.append({"source": str(path), "location": f"line {line}", "raw": table.raw[line],
                            "reason": f"a second line for {gene} (line {first_line[gene]} is used)"})
            continue
        calls[gene], first_line[gene] = {}, line
        for sample in sample_columns:
            value = row[sample]
            if value is not None and _call(value) is None:
                rejects.append({"source": str(path), "location": f"line {line}, column {sample}",
                                "raw": table.raw[line], "reason": f"{gene}: not a discrete copy-number call (-2,"
                                                                  " -1, 0, 1, 2); kept as missing"})
                value = None
            calls[gene][sample] = value
    return _per_patient(calls, sample_columns, samples, rejects)


def _per_patient(by_gene: dict[str, dict[str, object]], sample_columns: list[str], samples: StudyTable | None,
                 rejects: list[dict]) -> CsvRows:
    """Feature rows (one per patient, one column per gene) of a genes x samples matrix ``by_gene`` (gene ->
    sample -> value or None): each patient's first sample with a value, in the sample file's order and then the
    matrix's (a sample missing from the sample file is its own patient)."""
    order = list(samples.frame["SAMPLE_ID"].dropna()) if samples is not None else []
    patient_of = _sample_map(samples) if samples is not None else {}
    chosen: dict[str, str] = {}  # patient -> sample
    for sample in [s for s in order if s in sample_columns] + [s for s in sample_columns if s not in order]:
        if any(values[sample] is not None for values in by_gene.values()):
            chosen.setdefault(patient_of.get(sample, sample), sample)
    frame = pd.DataFrame({"patient_id": list(chosen),
                          **{gene: [values[s] for s in chosen.values()] for gene, values in by_gene.items()}},
                         dtype=object)
    return CsvRows(frame, pd.Series([None] * len(frame), dtype=object), rejects)


def _expression_rows(path: Path, *, rna_seq: bool, panel: list[str], top: int, samples: StudyTable | None
                     ) -> CsvRows:
    """One row per patient (its first sample with values) of the expression of the panel's genes and of the
    ``top`` other genes of highest variance over all samples (no label is read). Linear levels (``rna_seq``,
    told by :func:`_linear_levels`) become log2(1 + level); other values (z-scores, log-scale levels, microarray
    log ratios) stay as given. The file is read line
    by line, holding only the chosen genes. A cell that is not a number (or a negative RNA-seq level) is
    rejected and kept as missing; so is a second line of a gene (its first line is used)."""
    wanted, rejects = set(panel), []
    chosen: dict[str, np.ndarray] = {}  # panel genes
    heap: list[tuple[float, int, str, np.ndarray]] = []  # the ``top`` most variable other genes
    first_line: dict[str, int] = {}
    header: list[str] = []
    first = 1  # the first sample column, once the header is read
    with path.open(encoding="utf-8-sig", newline="") as fh:
        for number, text in enumerate(fh, start=1):
            text = text.rstrip("\r\n")
            if not text.strip() or (not header and text.startswith("#")):
                continue
            if not header:
                header = _header(path, number, text, ["Hugo_Symbol"])
                first = 1 + sum(c in header for c in ("Entrez_Gene_Id", "Cytoband"))
                continue
            parts = _fields(text, len(header))
            gene = parts[0].strip()
            problem = (f"{len(parts)} tab-separated fields where the header has {len(header)}"
                       if len(parts) != len(header) else "no Hugo_Symbol" if not gene
                       else f"a second line for {gene} (line {first_line[gene]} is used)" if gene in first_line
                       else None)
            if problem:
                rejects.append({"source": str(path), "location": f"line {number}", "raw": text, "reason": problem})
                continue
            first_line[gene] = number
            values = _levels(parts[first:], header[first:], path, number, text, rna_seq, rejects)
            if gene in wanted:
                chosen[gene] = values
            elif top > 0 and np.isfinite(values).sum() >= 2:
                entry = (float(np.nanvar(values)), -number, gene, values)
                (heapq.heappush if len(heap) < top else heapq.heappushpop)(heap, entry)
    if not header:
        raise StudyError(f"{path}: no header line (every line is empty or starts with #)")
    chosen.update({gene: values for _, _, gene, values in sorted(heap, reverse=True)})
    by_gene = {gene: {s: (None if np.isnan(v) else float(v)) for s, v in zip(header[first:], values, strict=True)}
               for gene, values in chosen.items()}
    return _per_patient(by_gene, header[first:], samples, rejects)


def _linear_levels(path: Path, lines: int = LEVEL_SCAN_LINES) -> bool:
    """Whether an expression file's values are linear levels (RSEM, TPM, FPKM, linear intensities) rather than
    already on a log scale: a value above :data:`LOG_SCALE_MAX` in its first ``lines`` gene lines. cBioPortal
    profiles do not say which (cBioPortal issues #4374, #5848), and neither the file name nor the stable_id tells:
    the datahub's pcpg_tcga_pub held log2 RSEM (datahub PR #1422), its older TCGA studies linear RSEM as
    data_RNA_Seq_v2_expression_median.txt, mela_hugo_2016 log2 FPKM as stable_id rna_seq_mrna. A log2 level above
    50 would be a linear level above 2^50, so the largest value tells."""
    seen, header = 0, None
    with path.open(encoding="utf-8-sig", newline="") as fh:
        for text in fh:
            if not text.strip() or (header is None and text.startswith("#")):
                continue
            if header is None:
                header = _fields(text.rstrip("\r\n"), 0)
                first = 1 + sum(c in header for c in ("Entrez_Gene_Id", "Cytoband")) if "Hugo_Symbol" in header else 1
                continue
            values = pd.to_numeric(pd.Series(text.rstrip("\r\n").split("\t")[first:]), errors="coerce")
            if (values > LOG_SCALE_MAX).any():
                return True
            seen += 1
            if seen >= lines:
                break
    return False


def _levels(cells: list[str], columns: list[str], path: Path, number: int, text: str, rna_seq: bool,
            rejects: list[dict]) -> np.ndarray:
    """The numbers of one expression line (NaN where missing or rejected), log2(1 + x) for RNA-seq levels."""
    try:
        values = np.array([np.nan if c.strip() in MISSING else c for c in cells], dtype=np.float64)
    except ValueError:
        values = np.full(len(cells), np.nan)
        for i, cell in enumerate(cells):
            try:
                values[i] = np.nan if cell.strip() in MISSING else float(cell)
            except ValueError:
                rejects.append({"source": str(path), "location": f"line {number}, column {columns[i]}", "raw": text,
                                "reason": "not a number; kept as missing"})
    values[~np.isfinite(values)] = np.nan
    if rna_seq:
        negative = values < 0
        for i in np.flatnonzero(negative):
            rejects.append({"source": str(path), "location": f"line {number}, column {columns[i]}", "raw": text,
                            "reason": "a negative RNA-seq level; kept as missing"})
        values[negative] = np.nan
        values = np.log2(1.0 + values)
    return values


def _call(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number in _CNA_CALLS else None
