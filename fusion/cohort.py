"""Cohort assembly: from lake frames to time-aware feature matrices, targets and splits.

Time zero is each patient's *index date*: the onset of the first cancer Condition (``data.index``), or the
labels table's ``index_date`` where given. Every feature uses only records dated strictly before
``index + grace_days`` (the *cutoff*), so nothing that happens after diagnosis leaks into the inputs (with
``grace_days: 0`` not even what is recorded at the index time itself, such as the staging of the diagnosis):

- labs (``data.ehr.lab_system``, or its OID, numeric values): per code among the top-K by patient coverage (or
  the listed ``lab_codes``): ``last`` value, and per window ``w`` in ``windows_days`` the ``mean`` and the
  least-squares ``slope`` (units per year) of the values dated in ``(cutoff - w, cutoff)``, plus a ``missing``
  indicator;
- comorbidity indicators (top-K condition codes, the cancer codes themselves excluded; a condition without an
  onset dated by its assertedDate extension or ``recordedDate``: :func:`with_onset`) and prior-medication
  indicators (top-K medication codes), each code with its system (``system|code``: the same code in another
  system is another column, named ``cond:system|code`` where two share the code);
- age at index (years), sex (1 = male), ECOG (a number, or a LOINC / SNOMED answer code: ``LA9624-3`` -> 2; where
  none is known, the Karnofsky score converted: 100 -> 0, 80-90 -> 1, 60-70 -> 2, 40-50 -> 3, 10-30 -> 4, 0 -> 5), stage
  (ordinal 0-4 parsed from the stage group's code or display, e.g. ``3A``, ``Stage IIIA``, ``iiia`` or ``pIIIA``
  -> 3, SNOMED CT's ``258224005`` Stage 3: the clinical stage group, ``stage_code`` or ``clinical_stage_codes``,
  else the pathological one, ``pathological_stage_codes``, else one of another kind, ``other_stage_codes``) and
  smoking (ordinal
  from ``smoking_map``, else LOINC's / SNOMED's answer codes, else the display: never=0, former=1, current=2, a
  smoker whose current status is unknown 1.5), each the last value before the cutoff;
- tumour marker status ``marker:<name>`` per entry of ``marker_codes`` (ER, PR, HER2 by default) that some
  patient was tested for before the cutoff (the training patients, when columns are chosen): 1 positive, 0
  negative (SNOMED / LOINC answer codes, else the display's first word), the last such result known before the
  cutoff (an equivocal or unknown result is none: the earlier one stands); NaN without one.

Genomics: the configured genes' mutation status (0/1 for patients with a sample whose panel has the gene, NaN
otherwise: a gene off a patient's panel is unknown, not wild-type), ``log_tmb``
(``log1p`` of the largest TMB in mut/Mb) and ``has_sequencing``, over the samples collected before the
cutoff (a sample whose collection date is after it is ignored; an undated sample is used and counted in the
summary as ``genomics_samples_undated``). Images: a reference to the latest study dated before the cutoff
(loaded lazily by :mod:`fusion.data`). Extra modalities (``read_features``): numeric features pivoted,
categoricals one-hot. That table carries no dates and is used as it is.

Targets (see :func:`compute_targets`) come from after the index date; curated labels override them.
Which codes became columns is a :class:`FeatureSelection`; passing a saved one to :func:`assemble_cohort`
rebuilds the same columns for new patients.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from fusion.config import BUILTIN_MODALITIES, EhrConfig, IndexConfig, RunConfig, TargetsConfig
from fusion.splits import assign_splits, strata_for

DAY = pd.Timedelta(days=1)
# Version of the rules that turn lake records into features, saved in each run; what each version changed, for the
# warning a run trained under older rules gets (its features are rebuilt under these).
RULE_CHANGES = {
    2: "records counted from when they are known (partial dates, issued, recordedDate), medications ending at the"
       " index date, one unit per lab, records that did not happen left out",
    3: "ECOG read from coded answers, conditions without an onset dated by recordedDate, labs coded by the LOINC"
       " OID, genes off a patient's panel unknown rather than wild-type, the index code the index condition's own,"
       " a smoker of unknown current status (77176002, LA18979-7) 1.5 rather than a current smoker (2), the stage"
       " read in lowercase and prefixed (iiia, pIIIA) and from the pathological stage group where no clinical one"
       " is known",
    4: "conditions without an onset dated by the earlier of assertedDate and recordedDate (and known from the"
       " later), a bare 'Smoker' display 1.5 rather than 2 where the run's data.ehr.smoking_map does not map the"
       " code, the Karnofsky score (89243-0, data.ehr.karnofsky_code) as ECOG (100 0, 80-90 1, 60-70 2, 40-50 3,"
       " 10-30 4, 0 5) where no ECOG is known, and no longer a lab (a run that read it as one keeps its column),"
       " the stage from a stage group of another kind (LOINC 21914-7, SNOMED 399390009:"
       " data.ehr.other_stage_codes) where no clinical or pathological one is known, and from SNOMED CT's stage"
       " codes (258224005 Stage 3), coded tumour markers (ER, PR, HER2: data.ehr.marker_codes) marker:<name>"
       " features, 1 positive, 0 negative (a run saved without them keeps its columns), PFS progressions coded"
       " 88040-1 (mCODE STU1) and procedures as contacts that censor OS and PFS",
}
COHORT_RULES = max(RULE_CHANGES)
DAYS_PER_YEAR = 365.25

FRAME_COLUMNS: dict[str, list[str]] = {
    "patients": ["patient_key", "mrn", "birth_date", "sex", "death_date"],
    "conditions": ["patient_key", "system", "code", "display", "onset"],
    "observations": ["patient_key", "system", "code", "display", "value", "unit", "value_system", "value_code",
                     "value_display", "effective"],
    "medications": ["patient_key", "system", "code", "display", "start"],
    "encounters": ["patient_key", "start", "end"],
    "procedures": ["patient_key", "system", "code", "display", "performed"],
    "gene_status": ["patient_key", "gene", "mutated"],
    "tmb": ["patient_key", "tmb_per_mb"],
    "images": ["patient_key", "image_id", "modality", "study_date", "tensor_file", "tensor_row", "tensor_shape"],
    "features": ["patient_key", "modality", "feature", "value", "value_str"],
    "labels": ["patient_key", "split", "diagnosis", "time", "event", "treatment", "response", "index_date"],
}
OPTIONAL_COLUMNS: dict[str, list[str]] = {  # added as nulls when a frame lacks them
    "patients": ["deceased"], "conditions": ["known", "recorded", "asserted", "resource_id"],
    "observations": ["known"],
    "medications": ["known"],
    "gene_status": ["sample_id", "collected"], "tmb": ["sample_id", "collected"],
    "labels": ["endpoint"]}
DATE_COLUMNS = {"patients": ["birth_date", "death_date"], "conditions": ["onset", "known", "recorded", "asserted"],
                "observations": ["effective", "known"], "medications": ["start", "known"],
                "encounters": ["start", "end"], "procedures": ["performed"], "images": ["study_date"],
                "labels": ["index_date"], "gene_status": ["collected"], "tmb": ["collected"]}

ImageLoader = Callable[[str, int], np.ndarray]


class CohortError(ValueError):
    """The lake frames and the config do not give a usable cohort."""


@dataclass
class LakeFrames:
    """The reader's frames (``ingest.reader``), one attribute per ``read_<name>`` function.

    Missing frames are empty with the reader's columns; date columns are coerced to tz-aware UTC.
    ``image_loader(tensor_file, tensor_row)`` returns an image array (``ingest.reader.load_image``).
    """

    patients: pd.DataFrame | None = None
    conditions: pd.DataFrame | None = None
    observations: pd.DataFrame | None = None
    medications: pd.DataFrame | None = None
    encounters: pd.DataFrame | None = None
    procedures: pd.DataFrame | None = None
    gene_status: pd.DataFrame | None = None
    tmb: pd.DataFrame | None = None
    images: pd.DataFrame | None = None
    features: pd.DataFrame | None = None
    labels: pd.DataFrame | None = None
    image_loader: ImageLoader | None = None

    def __post_init__(self) -> None:
        from ingest.lake import LakeError
        from ingest.reader import utc_dates

        for name, columns in FRAME_COLUMNS.items():
            frame = getattr(self, name)
            frame = pd.DataFrame(columns=columns) if frame is None else frame.copy()
            missing = [c for c in columns if c not in frame.columns]
            if missing:
                raise CohortError(f"frame {name!r} lacks columns {missing}; expected {columns}")
            for col in OPTIONAL_COLUMNS.get(name, []):
                if col not in frame.columns:
                    frame[col] = None
            frame["patient_key"] = frame["patient_key"].astype(str)
            for col in DATE_COLUMNS.get(name, []):
                try:
                    frame[col] = utc_dates(frame[col], col)
                except LakeError as exc:
                    raise CohortError(f"frame {name!r}: {exc}") from None
            if name == "labels":  # one curated row per patient (rows under an MRN and a FHIR id: the last wins)
                frame = frame.drop_duplicates("patient_key", keep="last")
            setattr(self, name, frame)

    def patient_keys(self) -> set[str]:
        """The key of every patient with a record in any frame (a lake without FHIR has no Patient rows: its
        patients are those of its labels, features, genomics and images)."""
        return set().union(*(getattr(self, name)["patient_key"] for name in FRAME_COLUMNS))


def load_frames(lake: str | Path) -> LakeFrames:
    """Read every frame of ``lake`` through ``ingest.reader`` (fusion's only door to the lake)."""
    from functools import partial

    from ingest import reader
    from ingest.lake import Lake

    handle = Lake(lake)
    frames = {name: getattr(reader, f"read_{name}")(handle) for name in FRAME_COLUMNS}
    return LakeFrames(**frames, image_loader=partial(reader.load_image, handle))


@dataclass
class TabularBlock:
    """One tabular modality: ``values (N, F)`` float32 with NaN = missing, ``present (N,)`` bool."""

    names: list[str]
    values: np.ndarray
    present: np.ndarray
    descriptions: dict[str, str] = field(default_factory=dict)


@dataclass
class ImageRefs:
    """Per patient: the chosen image's ``tensor_file`` ('' when absent), ``tensor_row`` and ``present``."""

    tensor_file: np.ndarray
    tensor_row: np.ndarray
    present: np.ndarray


@dataclass
class Targets:
    """Per-patient targets, arrays of length N.

    ``diagnosis``: class index (-1 = unknown) into ``diagnosis_classes``; ``os_*`` / ``pfs_*``: overall and
    progression-free survival in days from the index date (NaN = unknown) with event flags; ``time``/``event``:
    the training endpoint (``data.targets.survival_endpoint``, overridden by the labels ``time``/``event`` of
    that endpoint);
    ``treatment``: index into ``treatment_names`` (-1 = none); ``response``: 1.0 (CR/PR), 0.0 (SD/PD), NaN.
    """

    diagnosis: np.ndarray
    diagnosis_classes: list[str]
    os_time: np.ndarray
    os_event: np.ndarray
    pfs_time: np.ndarray
    pfs_event: np.ndarray
    time: np.ndarray
    event: np.ndarray
    treatment: np.ndarray
    treatment_names: list[str]
    response: np.ndarray
    # patients with a response (curated or FHIR) but no known treatment: the response is dropped (it answers
    # no treatment the model can be asked about)
    responses_without_treatment: int = 0
    # {"diagnosis" | "treatment": {value: patients}}: labels outside the classes, read as unknown (``lenient``)
    outside_classes: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass
class FeatureSelection:
    """Which codes became columns (saved in a run so new patients get the same columns)."""

    labs: list[str]
    conditions: list[str]
    medications: list[str]
    genes: list[str]
    extra: dict[str, list[str]]
    lab_units: dict[str, str] = field(default_factory=dict)  # lab code -> the unit its values are kept in
    markers: list[str] = field(default_factory=list)  # tumour markers of data.ehr.marker_codes (marker:<name>)

    def to_dict(self) -> dict:
        return {"labs": self.labs, "conditions": self.conditions, "medications": self.medications,
                "genes": self.genes, "extra": self.extra, "lab_units": self.lab_units, "markers": self.markers}

    @classmethod
    def from_dict(cls, state: dict) -> FeatureSelection:
        """The selection saved by :meth:`to_dict` (a run saved before ``lab_units`` or ``markers`` existed: none,
        so its EHR columns stay those it was trained on)."""
        return cls(**{k: state[k] for k in ("labs", "conditions", "medications", "genes", "extra")},
                   lab_units=state.get("lab_units", {}), markers=state.get("markers", []))


@dataclass
class Cohort:
    """Patients (N rows, sorted by key) with their feature blocks, image references, targets and split."""

    patient_keys: np.ndarray
    index_date: pd.DatetimeIndex
    blocks: dict[str, TabularBlock]
    images: ImageRefs | None
    targets: Targets
    split: np.ndarray
    selection: FeatureSelection
    image_loader: ImageLoader | None = None
    summary: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.patient_keys)

    @property
    def feature_names(self) -> list[str]:
        """Names of the columns of :attr:`X` (tabular blocks in order)."""
        return [n for block in self.blocks.values() for n in block.names]

    @property
    def X(self) -> np.ndarray:  # noqa: N802 (the conventional name of a feature matrix)
        """All tabular features ``(N, F)`` float32, NaN = missing (for baselines)."""
        return self.tabular()

    def tabular(self, modalities: list[str] | None = None) -> np.ndarray:
        """The tabular features of ``modalities`` (None: every block) ``(N, F)`` float32, NaN = missing."""
        blocks = [b for name, b in self.blocks.items() if modalities is None or name in modalities]
        if not blocks:
            return np.zeros((len(self), 0), np.float32)
        return np.concatenate([b.values for b in blocks], axis=1)

    def present(self) -> dict[str, np.ndarray]:
        """Per enabled modality, ``(N,)`` bool: the patient has data for it."""
        out = {name: b.present for name, b in self.blocks.items()}
        if self.images is not None:
            out["image"] = self.images.present
        return out

    def indices(self, split: str) -> np.ndarray:
        """Row indices of the patients in ``split`` (train | val | test)."""
        return np.flatnonzero(self.split == split)

    def with_split(self, split: np.ndarray) -> Cohort:
        """The same cohort with another split assignment (e.g. one cross-validation fold)."""
        return replace(self, split=np.asarray(split, dtype=object))


def assemble_cohort(frames: LakeFrames, config: RunConfig, *, selection: FeatureSelection | None = None,
                    assign: bool = True, lenient: tuple[str, ...] = ()) -> Cohort:
    """Build the cohort of ``config`` from ``frames`` (a pure function of its inputs).

    Args:
        frames: the reader's frames.
        config: the run configuration.
        selection: reuse these columns (from a saved run) instead of selecting top-K codes.
        assign: assign train/val/test splits (else every patient is ``"test"``).
        lenient: targets (``"diagnosis"``, ``"treatment"``) whose labels outside the configured classes are
            unknown, not an error, and ``"endpoint"``: survival labels of other endpoints only are no error
            (:func:`compute_targets`), besides those no enabled task reads (:func:`unread_targets`).

    When splits are assigned and no selection is given, the top-K lab, condition, medication and gene columns
    are chosen on the *training* patients only (val and test patients never shape the columns). The split does
    not depend on the columns, so it is the same in both passes. Cross-validation folds choose their own
    columns (:func:`fold_cohort`).
    """
    if selection is None and assign:
        provisional = _assemble(frames, config, None, assign=True)
        selection = select_columns(frames, config, set(provisional.patient_keys[provisional.split == "train"]))
    return _assemble(frames, config, selection, assign=assign, lenient=lenient)


def select_columns(frames: LakeFrames, config: RunConfig, train_keys: set[str]) -> FeatureSelection:
    """The top-K columns chosen on the patients in ``train_keys`` only."""
    return _assemble(restrict_frames(frames, train_keys), config, None, assign=False).selection


def fold_cohort(frames: LakeFrames, config: RunConfig, keys: np.ndarray, split: np.ndarray) -> Cohort:
    """The cohort of one cross-validation fold: patients ``keys`` with their ``split`` (train/val/test), and
    columns chosen on this fold's training patients. A patient left with no modality under these columns is
    left out of the fold."""
    split_of = dict(zip(keys, split, strict=True))
    cohort = _assemble(frames, config, select_columns(frames, config, set(keys[split == "train"])), assign=False)
    cohort = subset(cohort, np.flatnonzero([key in split_of for key in cohort.patient_keys]))
    cohort = cohort.with_split(np.array([split_of[key] for key in cohort.patient_keys], dtype=object))
    for name in ("train", "val", "test"):
        cohort.summary[name] = int((cohort.split == name).sum())
    return cohort


def restrict_frames(frames: LakeFrames, keys: set[str]) -> LakeFrames:
    """The frames of the patients in ``keys`` only."""
    parts = {name: getattr(frames, name) for name in FRAME_COLUMNS}
    return LakeFrames(**{n: f[f["patient_key"].isin(keys)] for n, f in parts.items()},
                      image_loader=frames.image_loader)


def _assemble(frames: LakeFrames, config: RunConfig, selection: FeatureSelection | None, *,
              assign: bool, lenient: tuple[str, ...] = ()) -> Cohort:
    data = config.data
    index, index_code = index_dates(frames.conditions, frames.labels, data.index)
    keys = np.array(sorted(index.index))
    if keys.size == 0:
        curated = ("; the lake has curated labels but no FHIR Condition: add an index_date column to the labels"
                   " CSV (each patient's day 0, e.g. the date of diagnosis; any one date when the inputs are"
                   " undated) and ingest it again with `tumorboard ingest labels`"
                   if frames.conditions.empty and not frames.labels.empty else "")
        raise CohortError("no patient has an index date: no Condition matches data.index.cancer_codes or "
                          f"cancer_display_regex, and the labels table has no index_date{curated}")
    universe = set(frames.patients["patient_key"]) | set(frames.labels["patient_key"])
    summary = {"patients": len(universe | set(keys)), "without_index_date": len(universe - set(keys))}
    index = index.reindex(keys)
    cutoff = index + data.index.grace_days * DAY
    enabled = config.enabled_modalities()
    extra_names = [m for m in enabled if m not in BUILTIN_MODALITIES]

    blocks: dict[str, TabularBlock] = {}
    chosen = {"labs": [], "conditions": [], "medications": [], "genes": [], "extra": {}}
    if "ehr" in enabled:
        blocks["ehr"], picked, notes = ehr_block(frames, keys, index, cutoff, data.ehr, data.index, selection)
        chosen.update(picked)
        summary.update(notes)
    if "genomics" in enabled:
        genes = selection.genes if selection else None
        blocks["genomics"], chosen["genes"], dated = genomics_block(frames, keys, cutoff, data.genomics.genes,
                                                                    data.genomics.top_k_genes, genes)
        summary.update(dated)
    for name in extra_names:
        columns = selection.extra.get(name) if selection else None
        blocks[name] = extra_block(frames.features, keys, name, columns)
        chosen["extra"][name] = blocks[name].names
    images = image_refs(frames.images, keys, cutoff, data.images.modality) if "image" in enabled else None

    targets = compute_targets(frames, keys, index, index_code, data.targets,
                              lenient=unread_targets(config) + lenient)
    # e.g. a death dated before the index date, or recorded without a date: no survival time to learn from
    summary["without_survival_time"] = int(np.isnan(targets.time).sum())
    cohort = Cohort(keys, pd.DatetimeIndex(index.to_numpy()), blocks, images, targets,
                    np.full(keys.size, "test", dtype=object), FeatureSelection(**chosen),
                    frames.image_loader, summary)
    cohort = _drop_empty(cohort)
    if assign:
        split_cfg = config.split
        fixed = frames.labels.drop_duplicates("patient_key").set_index("patient_key")["split"]
        cohort.split = assign_splits(
            cohort.patient_keys, strata_for(cohort.targets, split_cfg.stratify),
            val_fraction=split_cfg.val_fraction, test_fraction=split_cfg.test_fraction,
            seed=config.train.seed if split_cfg.seed is None else split_cfg.seed,
            fixed=fixed.reindex(cohort.patient_keys).to_numpy())
    for name in ("train", "val", "test"):
        cohort.summary[name] = int((cohort.split == name).sum())
    return cohort


def build_cohort(config: RunConfig, lake: str | Path | None = None) -> Cohort:
    """Read ``lake`` (default ``config.data.lake``) and assemble the cohort of ``config``."""
    return assemble_cohort(read_frames(lake or config.data.lake), config)


def read_frames(lake: str | Path | None) -> LakeFrames:
    """:func:`load_frames` of an existing lake (a clear error when it is not given or does not exist)."""
    if lake is None:
        raise CohortError("no lake given: pass --lake or set data.lake in the config")
    if not Path(lake).is_dir():
        raise CohortError(f"lake {lake} does not exist; create it with `tumorboard ingest ...`")
    return load_frames(lake)


# -- index date ----------------------------------------------------------------------------------------------
def is_cancer_condition(conditions: pd.DataFrame, cfg: IndexConfig) -> pd.Series:
    """Bool per condition row: code in ``cancer_codes``, or display matching ``cancer_display_regex`` and not
    ``cancer_display_exclude``."""
    return coded_as(conditions, cfg.cancer_codes) | _display_match(conditions, cfg)


# other names of a code system (HL7's OIDs) -> its canonical URI
SYSTEM_ALIASES = {"urn:oid:2.16.840.1.113883.6.96": "http://snomed.info/sct",
                  "urn:oid:2.16.840.1.113883.6.1": "http://loinc.org",
                  "urn:oid:2.16.840.1.113883.6.90": "http://hl7.org/fhir/sid/icd-10-cm"}


def _system(frame: pd.DataFrame) -> pd.Series:
    """Per row: the canonical URI of its ``system`` (:data:`SYSTEM_ALIASES`); NA without a system."""
    return frame["system"].astype("string").map(lambda s: SYSTEM_ALIASES.get(s, s), na_action="ignore")


def _qualified(frame: pd.DataFrame) -> pd.Series:
    """Per row: ``system|code`` with the system's canonical URI (:func:`_system`); NA without a system."""
    return _system(frame) + "|" + frame["code"].astype("string")


def _canonical_entry(entry: str) -> str:
    system, _, code = entry.rpartition("|")
    return f"{SYSTEM_ALIASES.get(system, system)}|{code}" if system else code


def coded_as(frame: pd.DataFrame, entries: list[str]) -> pd.Series:
    """Bool per row (columns ``system``, ``code``): its ``system|code`` is one of ``entries`` (a system's OID
    counts as its URI; a row without a system matches on its code), or its code is a bare entry (any system)."""
    return _matches(frame["code"].astype("string"), _qualified(frame), entries)


def _matches(code: pd.Series, qualified: pd.Series, entries: list[str]) -> pd.Series:
    """:func:`coded_as` on a frame's ``code`` and :func:`_qualified` columns (computed once for many entries)."""
    entries = [_canonical_entry(e) for e in entries]
    hit = (code.isin([e for e in entries if "|" not in e]) | qualified.isin(entries)
           | (qualified.isna() & code.isin({e.rsplit("|", 1)[1] for e in entries if "|" in e})))
    return hit.fillna(False).astype(bool)


def _display_match(conditions: pd.DataFrame, cfg: IndexConfig) -> pd.Series:
    """Bool per condition row: the display matches ``cancer_display_regex`` and not ``cancer_display_exclude``."""
    if not cfg.cancer_display_regex:
        return pd.Series(False, index=conditions.index)
    text = conditions["display"].astype("string")
    hit = text.str.contains(cfg.cancer_display_regex, flags=re.IGNORECASE, regex=True).fillna(False)
    if cfg.cancer_display_exclude:
        hit &= ~text.str.contains(cfg.cancer_display_exclude, flags=re.IGNORECASE, regex=True).fillna(False)
    return hit.astype(bool)


def with_onset(conditions: pd.DataFrame) -> pd.DataFrame:
    """``conditions`` whose ``onset`` is the earlier of their ``asserted`` and ``recorded`` dates where they give no
    onset (a diagnosis is asserted and recorded on or after its onset, so such a condition is never dated early;
    the mCODE extraction framework writes the date of diagnosis as the assertedDate extension only)."""
    if conditions.empty:
        return conditions
    later = conditions.reindex(columns=["asserted", "recorded"]).min(axis=1)
    return conditions.assign(onset=conditions["onset"].where(conditions["onset"].notna(), later))


def index_dates(conditions: pd.DataFrame, labels: pd.DataFrame, cfg: IndexConfig) -> tuple[pd.Series, pd.Series]:
    """Per patient key: the index date (UTC Timestamp) and the index condition's code (None from labels).

    The earliest-onset condition with a listed code; for a patient without one, the earliest whose display
    matches (:func:`is_cancer_condition`); a condition without an onset counts from its assertedDate extension or
    ``recordedDate``, the earlier (:func:`with_onset`: a diagnosis is asserted and recorded on or after its onset,
    so this index is never early); a non-null labels ``index_date`` overrides it.
    """
    conditions = with_onset(conditions)
    dated = conditions[conditions["onset"].notna()]
    listed = dated[coded_as(dated, cfg.cancer_codes)]
    by_display = dated[_display_match(dated, cfg) & ~dated["patient_key"].isin(set(listed["patient_key"]))]
    cond = pd.concat([listed, by_display])
    # the first row itself (groupby.first would take each column's first non-null: another condition's code)
    first = cond.sort_values(["patient_key", "onset"], kind="mergesort").drop_duplicates("patient_key")
    first = first.set_index("patient_key")
    index, code = first["onset"], first["code"].astype(object)
    given = labels[labels["index_date"].notna()].drop_duplicates("patient_key", keep="last")
    given = given.set_index("patient_key")["index_date"]
    index = given.combine_first(index) if len(index) else given
    code = code.reindex(index.index)
    return index.rename("index_date"), code.rename("index_code")


# -- EHR features --------------------------------------------------------------------------------------------
def _before(frame: pd.DataFrame, time_col: str, keys: np.ndarray, index: pd.Series,
            cutoff: pd.Series) -> pd.DataFrame:
    """Rows of patients in ``keys`` known before their cutoff (``known``, else ``time_col``: see
    :mod:`ingest.reader`), with ``t`` = days from the index date (from ``time_col``)."""
    out = frame[frame["patient_key"].isin(keys) & frame[time_col].notna()].copy()
    out["cutoff"] = out["patient_key"].map(cutoff)
    known = out["known"].where(out["known"].notna(), out[time_col]) if "known" in out else out[time_col]
    out = out[known < out["cutoff"]]
    out["t"] = (out[time_col] - out["patient_key"].map(index)) / DAY
    out["tc"] = (out[time_col] - out["cutoff"]) / DAY
    return out.sort_values(["patient_key", time_col], kind="mergesort")


def _top_codes(frame: pd.DataFrame, k: int, *, qualified: bool = False) -> list[str]:
    """The ``k`` codes seen in the most patients (ties broken by code, for determinism); with ``qualified``,
    ``system|code`` entries, so one code in two systems counts twice. A row without a system counts as
    :func:`coded_as` matches it: towards every ``system|code`` of its code, or, for a code no row gives a
    system, as the bare code (a bare entry next to a qualified one would match the same rows twice)."""
    if frame.empty or k == 0:
        return []
    code = frame["code"].astype("string")
    entries = pd.DataFrame({"code": code, "patient_key": frame["patient_key"]})
    if qualified:
        entries["entry"] = _qualified(frame)
        known = entries[entries["entry"].notna()]
        unknown = entries[entries["entry"].isna()].drop(columns="entry").merge(
            known[["code", "entry"]].drop_duplicates(), on="code", how="left")
        unknown["entry"] = unknown["entry"].fillna(unknown["code"])
        entries = pd.concat([known, unknown], ignore_index=True)
        entries["code"] = entries.pop("entry")
    coverage = entries.groupby("code")["patient_key"].nunique().reset_index()
    coverage = coverage.sort_values(["patient_key", "code"], ascending=[False, True])
    return coverage["code"].astype(str).head(k).tolist()


def _indicator_names(prefix: str, entries: list[str]) -> list[str]:
    """Column names of indicator entries: ``prefix:code``, or ``prefix:system|code`` where two entries share
    their code."""
    codes = [e.rsplit("|", 1)[-1] for e in entries]
    return [f"{prefix}:{e if codes.count(c) > 1 else c}" for e, c in zip(entries, codes, strict=True)]


def _last(frame: pd.DataFrame, keys: np.ndarray, column: str) -> np.ndarray:
    """Last non-null ``column`` per patient (frame sorted by time) aligned to ``keys``; NaN when none."""
    sub = frame[frame[column].notna()]
    return sub.groupby("patient_key")[column].last().reindex(keys).to_numpy(dtype=np.float64)


def lab_features(labs: pd.DataFrame, keys: np.ndarray, codes: list[str],
                 windows: list[float]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Per lab code: ``last``, per window ``mean_<w>d`` and ``slope_<w>d`` (per year), and ``missing``."""
    columns: dict[str, np.ndarray] = {}
    names: dict[str, str] = {}
    for code in codes:
        sub = labs[labs["code"] == code]
        label = str(sub["display"].dropna().iloc[0]) if sub["display"].notna().any() else code
        if sub["unit"].notna().any():
            label = f"{label} ({sub['unit'].dropna().iloc[0]})"
        columns[f"lab:{code}:last"] = _last(sub, keys, "value")
        names[f"lab:{code}:last"] = f"{label}: last value"
        for w in windows:
            win = sub[sub["tc"] > -w]
            tag = f"{w:g}d"
            columns[f"lab:{code}:mean_{tag}"] = win.groupby("patient_key")["value"].mean().reindex(keys).to_numpy()
            columns[f"lab:{code}:slope_{tag}"] = _slopes(win, keys)
            names[f"lab:{code}:mean_{tag}"] = f"{label}: mean over {tag}"
            names[f"lab:{code}:slope_{tag}"] = f"{label}: slope per year over {tag}"
        columns[f"lab:{code}:missing"] = np.isnan(columns[f"lab:{code}:last"]).astype(np.float64)
        names[f"lab:{code}:missing"] = f"{label}: no value"
    return columns, names


def _slopes(frame: pd.DataFrame, keys: np.ndarray) -> np.ndarray:
    """Least-squares slope of value on time (years) per patient; NaN with fewer than two distinct times."""
    if frame.empty:
        return np.full(keys.size, np.nan)
    t = frame["t"].to_numpy(np.float64) / DAYS_PER_YEAR
    v = frame["value"].to_numpy(np.float64)
    work = pd.DataFrame({"p": frame["patient_key"].to_numpy(), "t": t, "v": v, "tt": t * t, "tv": t * v})
    g = work.groupby("p").agg(n=("t", "size"), st=("t", "sum"), sv=("v", "sum"), stt=("tt", "sum"),
                              stv=("tv", "sum"), tmin=("t", "min"), tmax=("t", "max"))
    denom = g["n"] * g["stt"] - g["st"] ** 2
    slope = (g["n"] * g["stv"] - g["st"] * g["sv"]) / denom.where(g["tmax"] > g["tmin"])
    return slope.reindex(keys).to_numpy(np.float64)


_ROMAN = {"I": 1.0, "II": 2.0, "III": 3.0, "IV": 4.0, "0": 0.0, "1": 1.0, "2": 2.0, "3": 3.0, "4": 4.0}
# a stage group as a word of its own: an AJCC prefix (c, p, yc, yp, r), the group in roman or arabic numerals, a
# subgroup (A-C, with a digit: 1A1) or 0's "is"; letter case ignored. T2N1M0 or pT2 are categories, not groups.
_STAGE_RE = re.compile(r"(?:^|[^A-Z0-9])(?:Y?[CPR])?(IV|III|II|I|[0-4])(?:IS|[A-C]\d?)?(?:$|[^A-Z0-9])", re.I)


# SNOMED CT's stage qualifiers (DICOM CID 3778): the group without its subgroup
STAGE_ANSWERS = {"261613009": 0.0, "258215001": 1.0, "258219007": 2.0, "258224005": 3.0, "258228008": 4.0}


def parse_stage(text: object) -> float:
    """Ordinal stage (0-4) from a stage code or display: ``3A``, ``IIIA``, ``iiia``, ``pIIIA`` and ``Stage IIIA``
    -> 3, ``Stage IVB`` -> 4; NaN otherwise (``T2N1M0``: TNM categories, no group)."""
    if not isinstance(text, str):
        return np.nan
    match = _STAGE_RE.search(text.strip())
    return _ROMAN[match.group(1).upper()] if match else np.nan


def stage_groups(obs: pd.DataFrame, cfg: EhrConfig) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Bool per observation row (columns ``system``, ``code``): a clinical stage group (``stage_code``,
    ``clinical_stage_codes``), a pathological one (``pathological_stage_codes``), and one of another kind
    (``other_stage_codes``), in the order the stage is read from them."""
    return (coded_as(obs, [cfg.stage_code, *cfg.clinical_stage_codes]), coded_as(obs, cfg.pathological_stage_codes),
            coded_as(obs, cfg.other_stage_codes))


def _last_stage(stage: pd.DataFrame, keys: np.ndarray) -> np.ndarray:
    """Per patient of ``keys``: the last stage of the stage observations ``stage`` (sorted by time) read from its
    SNOMED CT code (:data:`STAGE_ANSWERS`), else by :func:`parse_stage` from its code or display; NaN when none."""
    stage = stage.assign(num=[_first_finite(STAGE_ANSWERS.get(c, np.nan), parse_stage(c), parse_stage(d))
                              for c, d in zip(stage["value_code"], stage["value_display"], strict=True)])
    return _last(stage, keys, "num")


# Smoking status by coded answer: LOINC's answer list of 72166-2 (LL2201-3) and the SNOMED codes paired with it.
# A smoker whose current status is unknown is former or current: 1.5, between the two, not current.
SMOKING_ANSWERS = {"LA18976-3": 2.0, "449868002": 2.0,  # current every day smoker
                   "LA18977-1": 2.0, "428041000124106": 2.0,  # current some day smoker
                   "LA18981-3": 2.0, "428071000124103": 2.0,  # heavy tobacco smoker
                   "LA18982-1": 2.0, "428061000124105": 2.0,  # light tobacco smoker
                   "LA15920-4": 1.0, "8517006": 1.0,  # former smoker
                   "LA18978-9": 0.0, "266919005": 0.0,  # never smoker
                   "LA18979-7": 1.5, "77176002": 1.5,  # smoker, current status unknown
                   "LA18980-5": np.nan, "266927001": np.nan}  # unknown if ever smoked
_SMOKING_TEXT = ((re.compile(r"passive|second-?hand", re.I), np.nan),  # exposure, not the patient's smoking
                 (re.compile(r"unknown if ever|consumption unknown", re.I), np.nan),
                 (re.compile(r"status unknown", re.I), 1.5),
                 (re.compile(r"never|non-?smoker", re.I), 0.0), (re.compile(r"former|ex-|quit", re.I), 1.0),
                 (re.compile(r"^\s*smoker\s*(\(finding\))?\s*$", re.I), 1.5),  # bare: 77176002's display
                 (re.compile(r"current|every day|some day|daily|smokes|smoker", re.I), 2.0))  # cigarette smoker, ...


def _first_finite(*values: float) -> float:
    return next((v for v in values if not np.isnan(v)), np.nan)


def parse_smoking(code: object, display: object, mapping: dict[str, float]) -> float:
    """Smoking ordinal (0 never, 1 former, 1.5 a smoker of unknown current status, 2 current): ``mapping[code]``,
    else the coded answer (:data:`SMOKING_ANSWERS`), else the display's words; NaN otherwise."""
    if isinstance(code, str) and code in mapping:
        return float(mapping[code])
    if isinstance(code, str) and code in SMOKING_ANSWERS:
        return SMOKING_ANSWERS[code]
    if isinstance(display, str):
        for pattern, value in _SMOKING_TEXT:
            if pattern.search(display):
                return value
    return np.nan


# ECOG scores by coded answer: LOINC's answer list of 89247-1 (LL529-9) and SNOMED's ECOG grade findings
ECOG_ANSWERS = {"LA9622-7": 0.0, "LA9623-5": 1.0, "LA9624-3": 2.0, "LA9625-0": 3.0, "LA9626-8": 4.0,
                "LA9627-6": 5.0, "425389002": 0.0, "422512005": 1.0, "422894000": 2.0, "423053003": 3.0,
                "423237006": 4.0}


def ecog_value(frame: pd.DataFrame) -> pd.Series:
    """ECOG score of an observation: ``value``, else its coded answer (:data:`ECOG_ANSWERS`), else a number in
    ``value_code``/``value_display`` that is a score (0-5: the digits of another code, or a display's '50% of
    waking hours', are none)."""
    value = pd.to_numeric(frame["value"], errors="coerce")
    value = value.fillna(frame["value_code"].map(ECOG_ANSWERS).astype("float64"))
    for col in ("value_code", "value_display"):
        parsed = pd.to_numeric(frame[col].astype("string").str.extract(r"(\d+(?:\.\d+)?)")[0],
                               errors="coerce").astype("float64")  # Int64: no fill value for float64
        value = value.fillna(parsed.where(parsed.between(0, 5)))
    return value


# Tumour marker status by coded answer (SNOMED's qualifiers, LOINC's answers Positive / Negative): 1 positive, 0
# negative; an equivocal or indeterminate result (SNOMED 42425007, 82334004) is no status
MARKER_ANSWERS = {"10828004": 1.0, "LA6576-8": 1.0, "260385009": 0.0, "LA6577-6": 0.0}
_MARKER_TEXT = re.compile(r"^\W*(positive|negative)\b", re.I)


def marker_status(frame: pd.DataFrame) -> pd.Series:
    """Marker status of coded observations: its answer code (:data:`MARKER_ANSWERS`), else a display that starts
    with 'positive' (1) or 'negative' (0); NaN otherwise (equivocal, unknown, a number)."""
    word = frame["value_display"].astype("string").str.extract(_MARKER_TEXT, expand=False).str.lower()
    by_word = word.map({"positive": 1.0, "negative": 0.0}, na_action="ignore").astype("float64")
    return frame["value_code"].map(MARKER_ANSWERS).astype("float64").fillna(by_word)


def karnofsky_as_ecog(kps: pd.Series) -> pd.Series:
    """ECOG of Karnofsky scores (0-100, the standard conversion): 100 -> 0, 80-90 -> 1, 60-70 -> 2, 40-50 -> 3,
    10-30 -> 4, 0 -> 5; a score between the steps (85) goes with the step below it; NaN outside 0-100."""
    kps = pd.to_numeric(kps, errors="coerce").astype("float64")
    ecog = pd.cut(kps, [-0.5, 10, 40, 60, 80, 100, 100.5], right=False, labels=[5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    return ecog.astype("float64")


def karnofsky_value(frame: pd.DataFrame) -> pd.Series:
    """Karnofsky score of an observation: ``value``, else the number a ``value_display`` starts with (LOINC's
    answers read ``80 - Normal activity with effort``); NaN otherwise."""
    shown = frame["value_display"].astype("string").str.extract(r"^\s*(\d{1,3})(?!\d|\.\d|\s*%\s*of)")[0]
    return pd.to_numeric(frame["value"], errors="coerce").fillna(pd.to_numeric(shown, errors="coerce"))


def ehr_block(frames: LakeFrames, keys: np.ndarray, index: pd.Series, cutoff: pd.Series, cfg: EhrConfig,
              index_cfg: IndexConfig, selection: FeatureSelection | None) -> tuple[TabularBlock, dict, dict]:
    """The EHR block (see the module docstring), the codes chosen for it and summary counts
    (``lab_values_other_unit``: values left out by :func:`in_main_unit`)."""
    obs = _before(frames.observations, "effective", keys, index, cutoff)
    stage_kinds = stage_groups(obs, cfg)
    # a run saved when the Karnofsky score was a lab (its selection lists the code) keeps that column, and no ECOG
    # from it
    kps_as_lab = selection is not None and cfg.karnofsky_code in selection.labs
    kps_code = [] if kps_as_lab else [cfg.karnofsky_code]
    special = obs["code"].isin([cfg.ecog_code, *kps_code, cfg.smoking_code]) | np.logical_or.reduce(stage_kinds)
    in_system = _system(obs).eq(SYSTEM_ALIASES.get(cfg.lab_system, cfg.lab_system)).fillna(False).astype(bool)
    labs = obs[in_system & obs["value"].notna() & ~special].copy()
    labs["value"] = labs["value"].astype(np.float64)
    labs, other_unit, units = in_main_unit(labs, selection.lab_units if selection is not None else None)
    conds = _before(with_onset(frames.conditions), "onset", keys, index, cutoff)
    cancer = is_cancer_condition(conds, index_cfg)
    cancer_ids = set(conds.loc[cancer, "resource_id"].dropna())  # every coding of a cancer Condition
    conds = conds[~cancer & ~conds["resource_id"].isin(cancer_ids)]
    # prior medications end at the index date itself: the grace window is for the diagnosis's staging and
    # biopsy, and a drug ordered in it is the first treatment, the response task's input and target
    meds = _before(frames.medications, "start", keys, index, index)
    if selection is not None:
        lab_codes, cond_codes, med_codes = selection.labs, selection.conditions, selection.medications
    else:
        lab_codes = cfg.lab_codes if cfg.lab_codes is not None else _top_codes(labs, cfg.top_k_labs)
        cond_codes = (cfg.condition_codes if cfg.condition_codes is not None
                      else _top_codes(conds, cfg.top_k_conditions, qualified=True))
        med_codes = (cfg.medication_codes if cfg.medication_codes is not None
                     else _top_codes(meds, cfg.top_k_medications, qualified=True))

    patients = frames.patients.drop_duplicates("patient_key").set_index("patient_key").reindex(keys)
    columns: dict[str, np.ndarray] = {
        "age": ((index - patients["birth_date"]) / DAY / DAYS_PER_YEAR).to_numpy(np.float64),
        "sex_male": patients["sex"].astype("string").str.lower().map({"male": 1.0, "female": 0.0})
        .astype("float64").to_numpy(),
    }
    names = {"age": "Age at index (years)", "sex_male": "Sex (1 = male)"}
    ecog = obs[obs["code"] == cfg.ecog_code].copy()
    ecog["num"] = ecog_value(ecog)
    kps = obs[obs["code"].isin(kps_code)]
    kps = kps.assign(num=karnofsky_as_ecog(karnofsky_value(kps)))
    ecog_last = _last(ecog, keys, "num")  # where no ECOG is known, the last Karnofsky score as ECOG
    columns["ecog"] = np.where(np.isnan(ecog_last), _last(kps, keys, "num"), ecog_last)
    names["ecog"] = "ECOG performance status (else Karnofsky as ECOG)"
    # the clinical stage group, else the pathological one, else another (each the last known before the cutoff)
    stage = np.full(keys.size, np.nan)
    for kind in stage_kinds:
        stage = np.where(np.isnan(stage), _last_stage(obs[kind], keys), stage)
    columns["stage"] = stage
    names["stage"] = "Stage group (ordinal 0-4; clinical, else pathological, else other)"
    smoke = obs[obs["code"] == cfg.smoking_code].copy()
    smoke["num"] = [parse_smoking(c, d, cfg.smoking_map)
                    for c, d in zip(smoke["value_code"], smoke["value_display"], strict=True)]
    columns["smoking"] = _last(smoke, keys, "num")
    names["smoking"] = "Smoking (0 never, 1 former, 2 current; 1.5 a smoker, current status unknown)"
    # the markers some patient was tested for (a cohort without any gets no empty columns)
    markers = (selection.markers if selection is not None
               else [m for m, tested in cfg.marker_codes.items() if coded_as(obs, tested).any()])
    for marker in markers:  # the last positive or negative result
        tests = obs[coded_as(obs, cfg.marker_codes.get(marker, []))]
        columns[f"marker:{marker}"] = _last(tests.assign(num=marker_status(tests)), keys, "num")
        names[f"marker:{marker}"] = f"{marker.upper()} status (1 positive, 0 negative)"

    lab_cols, lab_names = lab_features(labs, keys, lab_codes, cfg.windows_days)
    columns.update(lab_cols)
    names.update(lab_names)
    for prefix, frame, codes in (("cond", conds, cond_codes), ("med", meds, med_codes)):
        code, qualified = frame["code"].astype("string"), _qualified(frame)  # once per frame, not per column
        for entry, name in zip(codes, _indicator_names(prefix, codes), strict=True):
            rows = frame[_matches(code, qualified, [entry])]
            columns[name] = np.isin(keys, list(set(rows["patient_key"]))).astype(np.float64)
            shown = rows["display"].dropna()
            names[name] = ("Prior " if prefix == "med" else "History of ") + (str(shown.iloc[0]) if len(shown)
                                                                               else entry)
    # a patient has EHR data with a Patient resource or any record before the cutoff (an export filtered by
    # resource type may lack the Patient file)
    recorded = set(frames.patients["patient_key"]) | set(obs["patient_key"]) | set(conds["patient_key"]) \
        | set(meds["patient_key"])
    block = _block(columns, np.isin(keys, list(recorded)), names)
    picked = {"labs": list(lab_codes), "conditions": list(cond_codes), "medications": list(med_codes),
              "lab_units": {code: units[code] for code in lab_codes if code in units}, "markers": markers}
    return block, picked, {"lab_values_other_unit": other_unit}


def in_main_unit(labs: pd.DataFrame, units: dict[str, str] | None = None
                 ) -> tuple[pd.DataFrame, int, dict[str, str]]:
    """``labs`` without the values whose unit differs from their code's unit, how many those were, and the unit
    of each code (lower case).

    A code's unit is the one in ``units`` (a trained run's, so that new patients' values are read in the
    training's unit), else the one most of its values carry (letter case ignored; ties: alphabetical). A value
    without a unit is kept: it cannot be told apart. Creatinine in mg/dL and in umol/L would otherwise be
    averaged (1.0 and 88 give 44.5); converting needs UCUM factors the lake does not carry.
    """
    unit = labs["unit"].astype("string").str.strip().str.lower()
    counted = pd.DataFrame({"code": labs["code"], "unit": unit}).dropna()
    counts = counted.groupby(["code", "unit"]).size().reset_index(name="n")
    main = counts.sort_values(["code", "n", "unit"], ascending=[True, False, True]).drop_duplicates("code")
    chosen = {**dict(zip(main["code"].astype(str), main["unit"].astype(str), strict=True)), **(units or {})}
    expected = labs["code"].astype(str).map(chosen)
    other = (unit.notna() & unit.ne(expected)).fillna(False).to_numpy(bool)
    return labs[~other], int(other.sum()), chosen


def _block(columns: dict[str, np.ndarray], present: np.ndarray, descriptions: dict[str, str]) -> TabularBlock:
    names = list(columns)
    n = present.size
    values = (np.stack([np.asarray(columns[c], np.float64) for c in names], axis=1) if names
              else np.zeros((n, 0)))
    return TabularBlock(names, values.astype(np.float32), present, descriptions)


# -- genomics, extra modalities, images ----------------------------------------------------------------------
def genomics_block(frames: LakeFrames, keys: np.ndarray, cutoff: pd.Series, genes: list[str] | None,
                   top_k: int, selected: list[str] | None = None
                   ) -> tuple[TabularBlock, list[str], dict[str, int]]:
    """Gene status columns ``gene:<G>``, ``log_tmb`` and ``has_sequencing``; present = has sequencing.

    Only samples collected before the patient's ``cutoff`` (indexed by patient key) count; undated ones
    count too. Returns the block, the genes chosen and the sample counts ``genomics_samples_after_cutoff``
    (left out) and ``genomics_samples_undated`` (used without a date).
    """
    gs, tmb = _samples_by_cutoff(frames.gene_status, keys, cutoff), _samples_by_cutoff(frames.tmb, keys, cutoff)
    samples = pd.concat([frames.gene_status, frames.tmb])
    samples = samples[samples["patient_key"].isin(keys)].drop_duplicates(["patient_key", "sample_id"])
    used = pd.concat([gs, tmb]).drop_duplicates(["patient_key", "sample_id"])
    dated = {"genomics_samples_after_cutoff": len(samples) - len(used),
             "genomics_samples_undated": int(used["collected"].isna().sum())}
    sequenced = np.isin(keys, list(set(gs["patient_key"]) | set(tmb["patient_key"])))
    if selected is None:
        if genes is not None:
            selected = list(genes)
        else:
            counts = gs[gs["mutated"].astype(bool)].groupby("gene")["patient_key"].nunique().reset_index()
            selected = counts.sort_values(["patient_key", "gene"], ascending=[False, True])["gene"].head(top_k)
            selected = selected.astype(str).tolist()
    mutated = gs[gs["mutated"].astype(bool)]
    columns: dict[str, np.ndarray] = {}
    names: dict[str, str] = {}
    for gene in selected:
        hit = np.isin(keys, list(set(mutated.loc[mutated["gene"] == gene, "patient_key"])))
        tested = np.isin(keys, list(set(gs.loc[gs["gene"] == gene, "patient_key"])))  # the gene is on a panel
        columns[f"gene:{gene}"] = np.where(tested, hit.astype(np.float64), np.nan)
        names[f"gene:{gene}"] = f"{gene} mutated"
    top = tmb.groupby("patient_key")["tmb_per_mb"].max().reindex(keys).to_numpy(np.float64)
    columns["log_tmb"], names["log_tmb"] = np.log1p(top), "log(1 + TMB per Mb)"
    columns["has_sequencing"], names["has_sequencing"] = sequenced.astype(np.float64), "Sequenced"
    return _block(columns, sequenced, names), list(selected), dated


def _samples_by_cutoff(frame: pd.DataFrame, keys: np.ndarray, cutoff: pd.Series) -> pd.DataFrame:
    """Rows of patients in ``keys`` whose sample was collected before their cutoff, or is undated."""
    frame = frame[frame["patient_key"].isin(keys)]
    limit = frame["patient_key"].map(cutoff)
    return frame[frame["collected"].isna() | (frame["collected"] < limit)]


def extra_block(features: pd.DataFrame, keys: np.ndarray, modality: str,
                columns: list[str] | None = None) -> TabularBlock:
    """A named modality of the features table: numeric features as they are, categoricals one-hot.

    Column names are ``<modality>:<feature>`` and ``<modality>:<feature>=<level>``; ``columns`` (from a saved
    selection) fixes the columns (unseen levels give all-zero one-hots).
    """
    rows = features[(features["modality"] == modality) & features["patient_key"].isin(keys)]
    if rows.empty and columns is None:
        raise CohortError(f"modality {modality!r} is enabled but the features table has no rows for it; "
                          f"ingest it with `tumorboard ingest features CSV --modality {modality} --lake LAKE` or "
                          f"disable it (--set modalities.{modality}.enabled=false)")
    present = np.isin(keys, list(set(rows["patient_key"])))
    numeric = rows[rows["value"].notna()]
    wide = numeric.pivot_table(index="patient_key", columns="feature", values="value", aggfunc="mean")
    wide.columns = [f"{modality}:{c}" for c in wide.columns]
    cat = rows[rows["value"].isna() & rows["value_str"].notna()]
    if not cat.empty:
        onehot = pd.crosstab(cat["patient_key"], cat["feature"].astype(str) + "=" + cat["value_str"].astype(str))
        onehot = (onehot > 0).astype(np.float64)
        onehot.columns = [f"{modality}:{c}" for c in onehot.columns]
        wide = wide.join(onehot, how="outer")
    wide = wide.reindex(keys)
    if columns is not None:
        wide = wide.reindex(columns=columns)
    wide = wide[sorted(wide.columns)] if columns is None else wide
    onehots = [c for c in wide.columns if "=" in c]
    wide.loc[present, onehots] = wide.loc[present, onehots].fillna(0.0)
    data = {c: wide[c].to_numpy(np.float64) for c in wide.columns}
    return _block(data, present, {c: c.split(":", 1)[1] for c in wide.columns})


def image_refs(images: pd.DataFrame, keys: np.ndarray, cutoff: pd.Series, modality: str | None) -> ImageRefs:
    """The latest image per patient dated before the cutoff (undated images count as eligible)."""
    imgs = images[images["patient_key"].isin(keys)].copy()
    if modality is not None:
        imgs = imgs[imgs["modality"].astype("string").str.upper() == modality.upper()]
    limit = imgs["patient_key"].map(cutoff)
    imgs = imgs[imgs["study_date"].isna() | (imgs["study_date"] < limit)]
    imgs = imgs.sort_values(["patient_key", "study_date", "image_id"], na_position="first", kind="mergesort")
    chosen = imgs.groupby("patient_key").last().reindex(keys)
    present = chosen["tensor_file"].notna().to_numpy()
    files = chosen["tensor_file"].fillna("").astype(str).to_numpy(dtype=object)
    rows = chosen["tensor_row"].fillna(-1).astype(np.int64).to_numpy()
    return ImageRefs(files, rows, present)


# -- targets -------------------------------------------------------------------------------------------------
def last_contact(frames: LakeFrames, keys: np.ndarray) -> pd.Series:
    """Latest date of any record per patient (conditions: :func:`with_onset`, observations, medications,
    encounters, procedures, images, death)."""
    parts = [with_onset(frames.conditions)[["patient_key", "onset"]].set_axis(["patient_key", "t"], axis=1),
             frames.observations[["patient_key", "effective"]].set_axis(["patient_key", "t"], axis=1),
             frames.medications[["patient_key", "start"]].set_axis(["patient_key", "t"], axis=1),
             frames.encounters[["patient_key", "start"]].set_axis(["patient_key", "t"], axis=1),
             frames.encounters[["patient_key", "end"]].set_axis(["patient_key", "t"], axis=1),
             frames.procedures[["patient_key", "performed"]].set_axis(["patient_key", "t"], axis=1),
             frames.images[["patient_key", "study_date"]].set_axis(["patient_key", "t"], axis=1),
             frames.patients[["patient_key", "death_date"]].set_axis(["patient_key", "t"], axis=1)]
    parts = [p for p in parts if not p.empty]
    if not parts:
        return pd.Series(pd.NaT, index=keys, dtype="datetime64[us, UTC]")
    allt = pd.concat(parts, ignore_index=True)
    allt["t"] = pd.to_datetime(allt["t"], utc=True)
    return allt.dropna().groupby("patient_key")["t"].max().reindex(keys)


def unread_targets(config: RunConfig) -> tuple[str, ...]:
    """The targets no enabled task of ``config`` reads (``"diagnosis"``, ``"treatment"``, ``"endpoint"``): labels
    of theirs outside the configured classes or treatments are unknown there, not an error (a cBioPortal study
    ingested with ``--diagnosis`` trains a survival model without listing its cancer types), and survival labels
    of another endpoint than the configured one need none of its times."""
    return tuple(name for name, read in (("diagnosis", config.tasks.diagnosis.enabled),
                                         ("treatment", config.tasks.response.enabled),
                                         ("endpoint", config.tasks.survival.enabled)) if not read)


def compute_targets(frames: LakeFrames, keys: np.ndarray, index: pd.Series, index_code: pd.Series,
                    cfg: TargetsConfig, endpoint: str | None = None, *, lenient: tuple[str, ...] = ()) -> Targets:
    """Diagnosis, OS, PFS, treatment and response per patient (see :class:`Targets`); labels override.

    OS: death - index (event) else last contact - index (censored); a patient recorded as deceased without a
    date (``deceasedBoolean``) has the event with an unknown time. PFS: the first disease-status observation
    (``progression_code``: mCODE's LOINC 97509-4, or 88040-1 of STU1) with a progressing code after the index
    date, or death, whichever comes first; else censored at last contact (unknown after a death without a date).
    Treatment: the first medication in ``treatment_map``
    started on or after the index date. Response: 1 if a best-response observation from that start until another
    treatment starts is in ``response_positive``, else 0 if one is in ``response_negative``, else unknown.
    Labels: a curated treatment other than FHIR's drops FHIR's response; a curated time/event sets the endpoint
    its ``endpoint`` names (null, in a lake written before it was recorded: ``endpoint``, the configured one),
    ``time``/``event`` being that of ``endpoint`` (os, pfs, or one only labels give, such as dfs), and a curated
    OS also ends PFS (at the latest at the curated death or follow-up) where FHIR records follow the patient. A
    diagnosis or treatment outside ``cfg``'s classes or treatments is an error, or unknown (-1) when ``lenient``
    names it (``"diagnosis"``, ``"treatment"``: see :func:`unread_targets`); labels of other endpoints only, no
    patient having a time on ``endpoint``, are an error unless ``lenient`` names ``"endpoint"``. A time less than
    a day
    before the index is 0 (a death dated by day on the day of a diagnosis timed within it); earlier ones
    (records before the index) become unknown.
    """
    endpoint = endpoint or cfg.survival_endpoint
    labels = frames.labels.drop_duplicates("patient_key", keep="last").set_index("patient_key").reindex(keys)
    patients = frames.patients.drop_duplicates("patient_key").set_index("patient_key").reindex(keys)
    death = patients["death_date"]
    undated_death = np.array(patients["deceased"].eq(True) & death.isna(), dtype=bool)
    contact = last_contact(frames, keys)
    os_event = np.array(death.notna(), dtype=bool) | undated_death
    os_end = death.where(death.notna(), contact)
    os_time = np.array((os_end - index) / DAY, dtype=np.float64)
    os_time[undated_death] = np.nan

    obs = frames.observations[frames.observations["patient_key"].isin(keys)]
    obs = obs.assign(index=obs["patient_key"].map(index))
    prog = obs[obs["code"].isin(cfg.progression_code) & obs["value_code"].isin(cfg.progressing_codes)
               & (obs["effective"] > obs["index"])]
    first_prog = prog.groupby("patient_key")["effective"].min().reindex(keys)
    pfs_end = pd.concat([first_prog, death], axis=1).min(axis=1)
    pfs_event = np.array(pfs_end.notna(), dtype=bool)
    pfs_time = np.array((pfs_end.where(pfs_end.notna(), contact) - index) / DAY, dtype=np.float64)
    pfs_time[undated_death & ~pfs_event] = np.nan

    fhir_treatments, response = _treatment_response(frames, obs, keys, index, cfg)
    diagnosis = index_code.reindex(keys).map(cfg.diagnosis_map)
    diagnosis = labels["diagnosis"].where(labels["diagnosis"].notna(), diagnosis)
    classes = cfg.diagnosis_classes or sorted(diagnosis.dropna().unique().tolist())
    treatments = labels["treatment"].where(labels["treatment"].notna(), fhir_treatments)
    # None: the treatments of the lake's patients (curated, else FHIR's by treatment_map), not every treatment of
    # the map: a treatment no patient had would get a response head nothing trained
    names = cfg.treatments or sorted(set(treatments.dropna()))
    label_response = labels["response"].map({True: 1.0, False: 0.0}).astype(np.float64)
    other_treatment = labels["treatment"].notna() & labels["treatment"].ne(fhir_treatments)
    response = response.where(~other_treatment, np.nan)  # FHIR's response was to another treatment
    response = np.array(label_response.where(label_response.notna(), response), dtype=np.float64)

    treatment_idx = _indices(treatments, names, "treatment", "data.targets.treatments", "treatment" in lenient)
    orphaned = int((~np.isnan(response) & (treatment_idx < 0)).sum())
    response[treatment_idx < 0] = np.nan  # a response is only meaningful for a known treatment
    has_label = labels["time"].notna().to_numpy() & labels["event"].notna().to_numpy()
    label_time = labels["time"].to_numpy(np.float64)
    label_event = labels["event"].fillna(False).to_numpy().astype(bool)
    # the endpoint each label records; null (written before it was recorded): the configured one, as then
    label_endpoint = labels["endpoint"].astype("string").str.lower().fillna(endpoint).to_numpy(object)
    curated_os, curated_pfs = has_label & (label_endpoint == "os"), has_label & (label_endpoint == "pfs")
    os_time[curated_os], os_event[curated_os] = label_time[curated_os], label_event[curated_os]
    # progression-free survival ends at the latest with the curated death or follow-up, where FHIR follows it
    # (without FHIR records a curated OS says nothing of progression)
    followed = pfs_event | ~np.isnan(pfs_time) | undated_death
    settle = curated_os & followed & ~(pfs_event & (pfs_time <= label_time))
    pfs_time[settle], pfs_event[settle] = label_time[settle], label_event[settle]
    pfs_time[curated_pfs], pfs_event[curated_pfs] = label_time[curated_pfs], label_event[curated_pfs]
    if endpoint in ("os", "pfs"):
        time, event = ((os_time, os_event) if endpoint == "os" else (pfs_time, pfs_event))
        time, event = time.copy(), event.copy()
    else:  # an endpoint only curated labels give (dfs, dss, ...)
        own = has_label & (label_endpoint == endpoint)
        time, event = np.where(own, label_time, np.nan), own & label_event
    for t in (os_time, pfs_time, time):
        t[(t > -1) & (t < 0)] = 0.0
        t[t < 0] = np.nan
    if "endpoint" not in lenient:
        _check_endpoint(endpoint, time, label_endpoint[has_label & (label_endpoint != endpoint)])
    return Targets(
        diagnosis=_indices(diagnosis, classes, "diagnosis", "data.targets.diagnosis_classes",
                           "diagnosis" in lenient),
        diagnosis_classes=list(classes), os_time=os_time, os_event=os_event, pfs_time=pfs_time,
        pfs_event=pfs_event, time=time, event=event,
        treatment=treatment_idx, treatment_names=list(names), response=response,
        responses_without_treatment=orphaned,
        outside_classes={what: counts for what, counts in (("diagnosis", _outside(diagnosis, classes)),
                                                           ("treatment", _outside(treatments, names))) if counts})


def _check_endpoint(endpoint: str, time: np.ndarray, others: np.ndarray) -> None:
    """Raise :class:`CohortError` when no patient has a ``time`` on ``endpoint`` while curated labels give
    ``others`` (the endpoints of patients' time and event that are not ``endpoint``): they are not its times."""
    if not others.size or (~np.isnan(time)).any():
        return
    found = sorted(set(others))
    fixes = [f"train on theirs (--set data.targets.survival_endpoint={found[0]})"]
    fixes.append(f"ingest {endpoint} labels (`tumorboard ingest labels CSV --endpoint {endpoint}`, `tumorboard ingest"
                 f" cbioportal STUDY --endpoint {endpoint.upper()}`)")
    raise CohortError(f"data.targets.survival_endpoint is {endpoint!r}, but the curated survival labels (time, "
                      f"event) of {others.size} patient(s) are {', '.join(found)} and no patient has a time on "
                      f"{endpoint}: {', or '.join(fixes)}")


def _treatment_response(frames: LakeFrames, obs: pd.DataFrame, keys: np.ndarray, index: pd.Series,
                        cfg: TargetsConfig) -> tuple[pd.Series, pd.Series]:
    """The first treatment on or after the index date and the response to it: best-response observations from
    its start until another treatment starts (a response after a switch is the next line's)."""
    given = frames.medications[frames.medications["patient_key"].isin(keys)
                               & frames.medications["code"].isin(list(cfg.treatment_map))]
    given = given[given["start"] >= given["patient_key"].map(index)]
    given = given.assign(treatment=given["code"].map(cfg.treatment_map))
    first = given.sort_values(["patient_key", "start", "code"], kind="mergesort").groupby("patient_key").first()
    treatment = first["treatment"].reindex(keys)
    start = first["start"].reindex(keys)
    switched = given[given["treatment"].ne(given["patient_key"].map(treatment))
                     & (given["start"] > given["patient_key"].map(start))]  # a combination started together is one
    next_start = switched.groupby("patient_key")["start"].min().reindex(keys)
    best = obs[obs["code"] == cfg.response_code]
    until = best["patient_key"].map(next_start)
    best = best[(best["effective"] >= best["patient_key"].map(start)) & (until.isna() | (best["effective"] < until))]
    positive = set(best.loc[best["value_code"].isin(cfg.response_positive), "patient_key"])
    negative = set(best.loc[best["value_code"].isin(cfg.response_negative), "patient_key"])
    response = pd.Series(np.nan, index=keys)
    response[response.index.isin(negative)] = 0.0
    response[response.index.isin(positive)] = 1.0
    return treatment, response


def _outside(values: pd.Series, names: list[str]) -> dict[str, int]:
    """``{value: patients}`` of the labels not in ``names``."""
    known = values.dropna()
    return {str(v): int(n) for v, n in known[~known.isin(names)].value_counts().items()}


def _indices(values: pd.Series, names: list[str], what: str, key: str, lenient: bool = False) -> np.ndarray:
    """Index of each value in ``names`` (-1: none); a value not in ``names`` is an error unless ``lenient``."""
    unknown = sorted(set(values.dropna()) - set(names))
    if unknown and not lenient:
        # each value a quoted YAML string (a comma, a colon or a number stays one value of its own), the whole
        # override quoted for the shell (an apostrophe in a value)
        shown = ", ".join(json.dumps(str(v), ensure_ascii=False) for v in sorted(set(names) | set(unknown)))
        raise CohortError(f"{what} value(s) {unknown} are not in {key} {names}; list them there (e.g. --set "
                          f"{shlex.quote(f'{key}=[{shown}]')}), or set it to null to take the values found in the"
                          " lake")
    lookup = {n: i for i, n in enumerate(names)}
    return np.array([lookup.get(v, -1) if isinstance(v, str) else -1 for v in values], dtype=np.int64)


def _drop_empty(cohort: Cohort) -> Cohort:
    """Leave out patients with no enabled modality present (the model cannot use them)."""
    present = cohort.present()
    keep = np.logical_or.reduce(list(present.values())) if present else np.zeros(len(cohort), bool)
    cohort.summary["without_any_modality"] = int((~keep).sum())
    if keep.all():
        return cohort
    if not keep.any():
        raise CohortError("no patient has data for any enabled modality dated before the index date + "
                          "data.index.grace_days; check `modalities` and the grace (data taken on the day of "
                          "diagnosis needs grace_days: 1)")
    return subset(cohort, np.flatnonzero(keep))


def subset(cohort: Cohort, rows: np.ndarray) -> Cohort:
    """The cohort restricted to ``rows`` (indices)."""
    t = cohort.targets
    targets = replace(t, **{f: getattr(t, f)[rows] for f in (
        "diagnosis", "os_time", "os_event", "pfs_time", "pfs_event", "time", "event", "treatment", "response")})
    blocks = {n: replace(b, values=b.values[rows], present=b.present[rows]) for n, b in cohort.blocks.items()}
    images = None if cohort.images is None else ImageRefs(
        cohort.images.tensor_file[rows], cohort.images.tensor_row[rows], cohort.images.present[rows])
    return replace(cohort, patient_keys=cohort.patient_keys[rows], index_date=cohort.index_date[rows],
                   blocks=blocks, images=images, targets=targets, split=cohort.split[rows])
