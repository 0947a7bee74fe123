"""The public reader API: ``fusion`` and the app read the lake only through these functions.

Every function returns a pandas frame with the columns listed in its docstring, one row per record, with
``patient_key`` resolved through the crosswalk (:mod:`ingest.link`); dates are tz-aware UTC pandas Timestamps.
A table that is absent from the lake gives an empty frame with the same columns, so callers handle a
modality that was never ingested the same way as a patient who lacks it.

``known`` (conditions, observations, medications) is the earliest time the record can be taken as known: the
last instant its date may denote (a partial date ``2020-06`` is known from 2020-06-30T23:59:59.999999Z), or later
if the record says so (an observation's ``effectivePeriod`` end or ``issued``, a condition's ``recordedDate`` or
assertedDate extension).
Cohorts compare it, not the date, with the prediction time; lakes flattened before these columns existed give
the date itself.

FHIR records that say they did not happen are left out (:data:`NOT_HAPPENED`): an observation, request,
administration, procedure or condition ``entered-in-error``, a cancelled observation or request, a draft request,
an administration or procedure ``not-done``, a ``refuted`` condition, and a planned or cancelled encounter. A
model would otherwise read an erroneous lab, a refuted diagnosis or a future appointment as facts.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from ingest.lake import Lake, LakeError
from ingest.link import id_map, resolve_ids

_EMPTY = {
    "patients": ["patient_key", "mrn", "birth_date", "sex", "death_date", "deceased"],
    "conditions": ["patient_key", "system", "code", "display", "onset", "known", "recorded", "asserted",
                   "resource_id"],
    "observations": ["patient_key", "system", "code", "display", "value", "unit", "value_system", "value_code",
                     "value_display", "effective", "known", "category"],
    "medications": ["patient_key", "system", "code", "display", "start", "known"],
    "procedures": ["patient_key", "system", "code", "display", "performed"],
    "encounters": ["patient_key", "start", "end"],
    "gene_status": ["patient_key", "sample_id", "gene", "mutated", "collected"],
    "tmb": ["patient_key", "sample_id", "tmb_per_mb", "n_nonsilent", "panel_size_mb", "collected"],
    "variants": ["patient_key", "sample_id", "chrom", "pos", "ref", "alt", "gene", "consequence", "hgvsp", "vaf",
                 "depth"],
    "images": ["patient_key", "image_id", "modality", "study_date", "tensor_file", "tensor_row", "tensor_shape",
               "spacing_mm", "warnings"],
    "features": ["patient_key", "modality", "feature", "value", "value_str"],
    "labels": ["patient_key", "split", "diagnosis", "time", "event", "treatment", "response", "index_date",
               "endpoint"],
}


# view -> (status column, the values that mean the record did not happen)
NOT_HAPPENED = {
    "condition": ("verification_status", {"entered-in-error", "refuted"}),
    "observation": ("status", {"entered-in-error", "cancelled"}),
    "observation_component": ("status", {"entered-in-error", "cancelled"}),
    "medication_request": ("status", {"entered-in-error", "cancelled", "draft"}),
    "medication_administration": ("status", {"entered-in-error", "not-done"}),
    "procedure": ("status", {"entered-in-error", "not-done", "preparation"}),  # preparation: not started yet
    "encounter": ("status", {"entered-in-error", "cancelled", "planned"}),
}


def _empty(kind: str) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in _EMPTY[kind]})


def _view(lake: Lake, name: str, columns: dict[str, str], kind: str) -> pd.DataFrame:
    """Read FHIR view ``view_<name>``, renaming ``columns`` (view column -> reader column), without the records
    that did not happen (:data:`NOT_HAPPENED`)."""
    table = f"view_{name}"
    if not lake.has(table):  # a lake without FHIR (curated tables only): no rows, every column asked for
        frame = _empty(kind)
        return frame.assign(**{c: pd.Series(dtype=object) for c in columns.values() if c not in frame.columns})
    available = set(lake.dataset(table).schema.names)
    status, void = NOT_HAPPENED.get(name, (None, set()))
    wanted = [c for c in columns if c in available] + ([status] if status in available else [])
    frame = lake.read(table, list(dict.fromkeys(wanted))).to_pandas()
    if status in frame.columns:
        frame = frame[~frame[status].isin(void)]
        if status not in columns:
            frame = frame.drop(columns=status)
    frame = frame.rename(columns=columns)
    for missing in set(columns.values()) - set(frame.columns):  # a view written by an older definition
        frame[missing] = None
    frame = frame.dropna(subset=["patient_key"]).reset_index(drop=True)
    extra = [c for c in frame.columns if c not in _EMPTY[kind]]
    return frame[[c for c in _EMPTY[kind] if c in frame.columns] + extra]


def _resolved(lake: Lake, table: str, columns: list[str], kind: str) -> pd.DataFrame:
    """Read a non-FHIR table and resolve its ``patient_id`` to ``patient_key``. Optional columns that a table
    written by an older version lacks (e.g. ``collected``) come back as nulls."""
    if not lake.has(table):
        return _empty(kind)
    stored = set(lake.dataset(table).schema.names)
    frame = lake.read(table, ["patient_id", *[c for c in columns if c in stored]]).to_pandas()
    for column in columns:
        if column not in stored:
            frame[column] = None
    frame.insert(0, "patient_key", resolve_ids(frame.pop("patient_id"), id_map(lake)))
    return frame[_EMPTY[kind]]


def patient_key_of(lake: Lake, patient: str) -> str:
    """The ``patient_key`` of ``patient``: a key, or any id the crosswalk knows (MRN, ``system|value``); an id it
    does not know is returned as it is."""
    return id_map(lake).get(patient, patient)


def patient_of_sample(lake: Lake, sample_id: str) -> str | None:
    """The patient id the lake's genomics tables give sample ``sample_id`` (a tumour barcode), or None when no
    table has the sample or they give it several patients."""
    import pyarrow.dataset as ds

    for table in ("tmb", "gene_status", "variants"):
        if lake.has(table):
            found = lake.dataset(table).to_table(columns=["patient_id"], filter=ds.field("sample_id") == sample_id)
            patients = set(found.column("patient_id").to_pylist())
            if patients:
                return patients.pop() if len(patients) == 1 else None
    return None


def read_patients(lake: Lake) -> pd.DataFrame:
    """patient_key, mrn, birth_date, sex (FHIR gender), death_date (NaT when alive or the date is not known),
    deceased (bool: a death date, or ``deceasedBoolean`` true)."""
    frame = _view(lake, "patient", {"patient_key": "patient_key", "mrn": "mrn", "birth_date": "birth_date",
                                    "gender": "sex", "deceased_datetime": "death_date",
                                    "deceased_boolean": "deceased"}, "patients")
    frame["deceased"] = frame["death_date"].notna() | frame["deceased"].eq(True)
    return frame.drop_duplicates("patient_key", ignore_index=True)


def read_conditions(lake: Lake) -> pd.DataFrame:
    """patient_key, system, code, display, onset, known (module docstring), recorded (recordedDate), asserted
    (the condition-assertedDate extension, where the mCODE extraction framework writes the date of diagnosis),
    resource_id (the Condition's id: one row per coding, so a Condition coded twice has two rows)."""
    frame = _view(lake, "condition", {"patient_key": "patient_key", "code_system": "system", "code_code": "code",
                                      "code_display": "display", "onset_datetime": "onset",
                                      "onset_datetime_latest": "onset_latest", "recorded_date": "recorded",
                                      "recorded_date_latest": "recorded_latest", "asserted_date": "asserted",
                                      "asserted_date_latest": "asserted_latest", "id": "resource_id"},
                  "conditions")
    return _with_known(frame, "onset", ["onset_latest", "recorded_latest", "asserted_latest"], "conditions")


def _with_known(frame: pd.DataFrame, date: str, later: list[str], kind: str) -> pd.DataFrame:
    """``frame`` with ``known`` (:func:`_known`), only the reader's columns of ``kind`` kept."""
    frame["known"] = _known(frame, date, later)
    return frame[_EMPTY[kind]]


def _known(frame: pd.DataFrame, date: str, later: list[str]) -> pd.Series:
    """The latest of the ``later`` columns per row, or ``date`` where they are all null (a lake flattened before
    they existed)."""
    times = [utc_dates(frame[c], c) for c in later if c in frame]
    known = pd.concat(times, axis=1).max(axis=1) if times else pd.Series(pd.NaT, index=frame.index)
    return known.where(known.notna(), utc_dates(frame[date], date))


def utc_dates(values: pd.Series, column: str) -> pd.Series:
    """``values`` as tz-aware UTC Timestamps. Ingest stores dates as timestamps; text that is no date (a lake
    table rewritten outside tumorboard) raises :class:`LakeError` naming the column, never the value (which
    may be a name or an identifier)."""
    try:
        return pd.to_datetime(values, utc=True)
    except (ValueError, TypeError, OverflowError) as exc:
        raise LakeError(f"column {column!r} holds values that are not dates ({type(exc).__name__}, stored as "
                        f"{values.dtype}): the lake was changed outside tumorboard; re-run the ingest that "
                        "writes it") from None


def read_observations(lake: Lake) -> pd.DataFrame:
    """patient_key, system, code, display, value (float), unit, value_system/value_code/value_display (coded
    values), effective, known (module docstring), category (the code of the Observation's first category, e.g.
    ``laboratory``, ``vital-signs``, ``survey``, ``social-history``; null when it has none or the lake's view
    predates the column). An observation's components (a blood pressure's systolic and diastolic values) are rows
    of their own, under the component's code, with their Observation's category."""
    values = {"value_quantity": "value", "value_integer": "value_integer", "unit": "unit",
              "value_code_system": "value_system", "value_code_code": "value_code",
              "value_code_display": "value_display", "effective_datetime": "effective",
              "effective_datetime_latest": "effective_latest", "id": "resource_id"}
    frame = _view(lake, "observation", {
        "patient_key": "patient_key", "code_system": "system", "code_code": "code", "code_display": "display",
        **values, "effective_period_end_latest": "period_end_latest", "issued": "issued",
        "category_code": "category"}, "observations")
    frame["known"] = _known(frame, "effective", ["effective_latest", "period_end_latest", "issued"])
    components = _view(lake, "observation_component", {
        "patient_key": "patient_key", "component_system": "system", "component_code": "code",
        "component_display": "display", **values}, "observations")
    components = components[components["code"].notna()]
    if len(components):  # known when their Observation is (its issued time, its period's end)
        parent = frame.groupby("resource_id")["known"].max()
        components["known"] = pd.concat([_known(components, "effective", ["effective_latest"]),
                                         components["resource_id"].map(parent)], axis=1).max(axis=1)
        components["category"] = components["resource_id"].map(frame.groupby("resource_id")["category"].first())
        frame = pd.concat([frame, components], ignore_index=True)
    # valueInteger (e.g. ECOG) where there is no valueQuantity
    frame["value"] = frame["value"].where(frame["value"].notna(), frame["value_integer"])
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce").astype(float)
    return frame[_EMPTY["observations"]]


def read_medications(lake: Lake) -> pd.DataFrame:
    """patient_key, system, code, display, start, known (module docstring): medication requests (``start`` =
    authoredOn) and administrations (``start`` = effective[x]); a drug given by ``medicationReference`` has the
    codings of the referenced Medication resource (one row each; a Medication not in the lake gives none)."""
    columns = {"patient_key": "patient_key", "medication_system": "system", "medication_code": "code",
               "medication_display": "display", "medication_reference": "reference", "medication_text": "text"}
    requests = _view(lake, "medication_request", {**columns, "authored_on": "start",
                                                  "authored_on_latest": "start_latest"}, "medications")
    given = _view(lake, "medication_administration", {**columns, "effective_datetime": "start",
                                                      "effective_datetime_latest": "start_latest"}, "medications")
    frame = pd.concat([f for f in (requests, given) if len(f)] or [requests], ignore_index=True)
    frame = _with_referenced_codes(lake, frame)
    frame["display"] = frame["display"].where(frame["display"].notna(), frame["text"])  # the drug as written
    return _with_known(frame, "start", ["start_latest"], "medications")


def _with_referenced_codes(lake: Lake, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` whose rows without a code but with a ``reference`` to a Medication take its codings (a row whose
    Medication is not in the lake, or has no coding, stays without a code: it still dates a contact)."""
    referenced = frame["code"].isna() & frame["reference"].notna() if "reference" in frame else None
    if referenced is None or not referenced.any() or not lake.has("view_medication"):
        return frame
    available = set(lake.dataset("view_medication").schema.names)
    wanted = {"id": "reference", "code_system": "system", "code_code": "code", "code_display": "display",
              "code_text": "text"}
    drugs = lake.read("view_medication", [c for c in wanted if c in available]).to_pandas().rename(columns=wanted)
    drugs = drugs.reindex(columns=list(wanted.values())).dropna(subset=["code", "text"], how="all")
    resolved = frame[referenced].drop(columns=["system", "code", "display", "text"]).merge(drugs, on="reference",
                                                                                           how="left")
    return pd.concat([frame[~referenced], resolved[frame.columns]], ignore_index=True)


def read_procedures(lake: Lake) -> pd.DataFrame:
    """patient_key, system, code, display, performed."""
    return _view(lake, "procedure", {"patient_key": "patient_key", "code_system": "system", "code_code": "code",
                                     "code_display": "display", "performed_datetime": "performed"}, "procedures")


def read_encounters(lake: Lake) -> pd.DataFrame:
    """patient_key, start, end (contact dates)."""
    frame = _view(lake, "encounter", {"patient_key": "patient_key", "period_start": "start",
                                      "period_end": "end"}, "encounters")
    return frame.drop_duplicates(ignore_index=True)


def read_gene_status(lake: Lake) -> pd.DataFrame:
    """patient_key, sample_id, gene, mutated (bool), collected (UTC: the last instant the sample map's date may
    denote, NaT when not given): one row per sample and panel gene, ordered by patient, collection date (undated
    first) and sample."""
    return _by_sample(_resolved(lake, "gene_status", ["sample_id", "gene", "mutated", "collected"], "gene_status"))


def read_tmb(lake: Lake) -> pd.DataFrame:
    """patient_key, sample_id, tmb_per_mb (mutations per megabase), n_nonsilent and panel_size_mb (Mb) it
    divides, collected (UTC, NaT when not given): one row per sample, ordered like :func:`read_gene_status`
    (a patient's latest dated sample comes last)."""
    return _by_sample(_resolved(lake, "tmb", ["sample_id", "tmb_per_mb", "n_nonsilent", "panel_size_mb",
                                              "collected"], "tmb"))


def _by_sample(frame: pd.DataFrame) -> pd.DataFrame:
    if not len(frame):
        return frame
    frame["collected"] = utc_dates(frame["collected"], "collected")
    return frame.sort_values(["patient_key", "collected", "sample_id"], na_position="first",
                             kind="mergesort", ignore_index=True)


def read_variants(lake: Lake) -> pd.DataFrame:
    """patient_key, sample_id, chrom, pos, ref, alt, gene, consequence, hgvsp, vaf, depth."""
    return _resolved(lake, "variants", _EMPTY["variants"][1:], "variants")


def read_images(lake: Lake) -> pd.DataFrame:
    """patient_key, image_id, modality, study_date, tensor_file, tensor_row, tensor_shape, spacing_mm, warnings."""
    return _resolved(lake, "images", _EMPTY["images"][1:], "images")


def load_image(lake: Lake, tensor_file: str, tensor_row: int) -> np.ndarray:
    """The preprocessed tensor of one image as float32: (S, H, W) for a series, (H, W) or (C, H, W) for 2D."""
    return _store(str(lake.path)).read(tensor_file, int(tensor_row)).astype(np.float32, copy=False)


@lru_cache(maxsize=8)
def _store(lake_path: str):
    from ingest.images.store import TensorStore

    return TensorStore(Lake(lake_path))


def read_features(lake: Lake) -> pd.DataFrame:
    """patient_key, modality, feature, value (numeric or NaN), value_str (categorical or None)."""
    return _resolved(lake, "features", _EMPTY["features"][1:], "features")


def read_labels(lake: Lake) -> pd.DataFrame:
    """patient_key, split, diagnosis, time (days), event, treatment, response, index_date, endpoint (of time and
    event: ``os``, ``pfs``, ...; null in a lake written before it was recorded)."""
    return _resolved(lake, "labels", _EMPTY["labels"][1:], "labels")
