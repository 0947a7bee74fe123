"""Finding a cBioPortal study's data files: by its ``meta_*.txt`` files, else by the datahub's usual names."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ingest.cbioportal.tsv import StudyError


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
    other_mutations: list[Path] = field(default_factory=list)  # the same calls annotated again (not loaded)
    unread: dict[Path, str] = field(default_factory=dict)  # other data files its meta files name -> their kind
    # timeline files (meta datatype TIMELINE, else data_timeline*.txt): read only for --treatment-timeline, so
    # those with a meta file are in unread too
    timelines: list[Path] = field(default_factory=list)


def find_study_files(folder: Path) -> StudyFiles:
    """The clinical, mutation, discrete copy-number (matrix or long form), expression, gene-panel and timeline files
    of the study in ``folder`` (by its meta files, else by the usual names).

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
        # data_mutations_extended.txt and data_mutations_mskcc.txt are the same calls on two transcript sets
        # (datahub #445): one of them is read, else the last file's annotations would replace the first's and
        # every call would count as a duplicate; uncalled ones are no calls at all
        mutations = sorted((p for p in folder.glob("data_mutations*") if p.is_file()
                            and "uncalled" not in p.name.lower()),
                           key=lambda p: (_MUTATION_NAMES.get(p.name, 2), p.name))
        return StudyFiles(_first(folder, "data_clinical_patient.txt"), _first(folder, "data_clinical_sample.txt"),
                          mutations[:1], _cna_by_name(folder), chosen,
                          "" if chosen is None else "Z-SCORE" if "zscores" in chosen.name.lower() else "CONTINUOUS",
                          _first(folder, "data_gene_panel_matrix.txt"), other_mutations=mutations[1:],
                          timelines=sorted(p for p in folder.glob("data_timeline*.txt") if p.is_file()))
    files = StudyFiles(None, None)
    best: tuple[int, str] | None = None  # the expression profile chosen so far: (rank, file name)
    profiles: dict[Path, str] = {}  # every expression profile -> its kind
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
        elif kind in (("COPY_NUMBER_ALTERATION", "DISCRETE"), ("COPY_NUMBER_ALTERATION", "DISCRETE_LONG")):
            if files.cna is None:  # the first by meta file name; another (the same calls in the other form) unread
                files.cna = data
            else:
                files.unread[data] = " ".join(kind)
        elif kind[0] == "MRNA_EXPRESSION":
            profiles[data] = " ".join(kind)
            rank = _expression_rank(name, meta.get("stable_id", ""), kind[1])
            if rank is not None and (best is None or (rank, name) < best):
                files.expression, files.expression_kind, best = data, kind[1], (rank, name)
        elif kind == ("CLINICAL", "TIMELINE"):
            files.timelines.append(data)
            files.unread[data] = " ".join(kind)
        elif kind[0] == "GENE_PANEL_MATRIX":
            files.panel_matrix = data
        elif kind[0] != "CANCER_TYPE":  # a cancer type's description: no patient data
            files.unread[data] = " ".join(filter(None, kind))
    files.unread.update({path: kind for path, kind in profiles.items() if path != files.expression})
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


_MUTATION_NAMES = {"data_mutations.txt": 0, "data_mutations_extended.txt": 1}  # the file to read, best first
_EXPRESSION_NAME = re.compile(r"^data_(mrna|rna_seq|expression)", re.IGNORECASE)


def _cna_by_name(folder: Path) -> Path | None:
    """The discrete copy-number file by the datahub's names (the matrix, else the long form's file)."""
    return _first(folder, "data_cna.txt") or _first(folder, "data_CNA.txt") or _first(folder, "data_cna_long.txt")


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


