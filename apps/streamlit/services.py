"""Cached data access for the Streamlit pages: every value comes from tumorboard's public library API.

Caching: lake tables are read once per lake state (``ingest.lake.Lake.manifest_hash``, re-checked every few
seconds) into a ``st.cache_resource`` store that nothing mutates; what a page receives (a patient's rows, the
lake status, a prediction) comes from ``st.cache_data``. Loaded runs (models) are ``st.cache_resource``.

Pages never see library exceptions: expected failures become :class:`ServiceError` with a message meant for
the user (what is missing and which command creates it); unexpected ones are logged with their type and
place only (no patient identifiers) and surface as a generic :class:`ServiceError`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import numpy as np
import pandas as pd
import streamlit as st

from ingest import reader
from ingest.lake import Lake

log = logging.getLogger("tumorboard.app")
ENV_LAKE, ENV_RUNS = "TUMORBOARD_LAKE", "TUMORBOARD_RUNS"
RUN_FILES = ("model.safetensors", "run.json")
RUN_CONFIG = "config.yaml"  # fusion.run.CONFIG_FILE (not imported: fusion.run imports torch)
RUN_COLUMNS = ["path", "name", "created_at", "modalities", "n_patients", "evaluated"]
RUN_KEY = "run_dir"  # session_state key of the run the Patient page uses (set on the Models page)
DAYS_PER_YEAR = 365.25
T = TypeVar("T")
# What the pages call each source / model modality (the lake's "fhir" and the model's "ehr" are one thing to a
# clinician); other names (features:<name>, extra modalities) are shown as they are.
MODALITY_LABELS = {"fhir": "clinical record", "ehr": "clinical record", "images": "imaging", "image": "imaging",
                   "genomics": "genomics", "labels": "curated labels",
                   # a cBioPortal study's (ingest.cbioportal): its patient and first sample's attributes
                   "clinical": "clinical attributes", "clinical_sample": "tumour sample attributes",
                   "cna": "copy number", "expression": "gene expression"}
# metrics.json's keys (fusion.evaluate) as the model card names them; <h>d horizons in years where whole
METRIC_LABELS = {"c_index_harrell": "C-index (Harrell)", "c_index_uno": "C-index (Uno)",
                 "td_auc_{h}": "time-dependent AUC at {h}", "integrated_brier": "integrated Brier score",
                 "calibration_{h}": "calibration error at {h}", "auroc": "AUROC", "auprc": "AUPRC",
                 "accuracy": "accuracy", "balanced_accuracy": "balanced accuracy",
                 "ece": "expected calibration error (ECE)", "macro_auroc": "macro AUROC"}
# Metric columns per table: five "0.699 [0.579, 0.806]" columns and the model names fit a 1366 px screen's page
# (about 900 px beside the sidebar); survival's nine (C-index, AUC and calibration at three horizons) did not
METRIC_COLUMNS = 5
# The tables of a task with more than METRIC_COLUMNS metrics (survival): title -> the metrics' key prefixes;
# metrics of no group come last, as "Other metrics"
METRIC_GROUPS = {"Discrimination (higher is better)": ("c_index", "td_auc", "auroc", "auprc", "macro_auroc"),
                 "Accuracy (higher is better)": ("accuracy", "balanced_accuracy"),
                 "Calibration and prediction error (lower is better)": ("integrated_brier", "brier", "calibration_",
                                                                        "ece")}

# Imported once per server, in the background, so the first page render does not pay for them: scipy and
# scikit-learn (the cohort Kaplan-Meier curve, about 1 s), torch, timm and captum (predictions, explanations).
HEAVY_MODULES = ("sksurv.nonparametric", "fusion.predict", "fusion.explain")


class ServiceError(RuntimeError):
    """Something the page cannot show; the message is for the user and names what to do."""


@dataclass(frozen=True)
class Settings:
    """Where the app reads from: ``lake`` (a lake directory) and ``runs`` (a folder of run directories)."""

    lake: Path | None
    runs: Path | None


def settings(argv: list[str] | None = None) -> Settings:
    """``--lake`` / ``--runs`` from the script arguments (after ``--`` in ``streamlit run``), else the
    ``TUMORBOARD_LAKE`` / ``TUMORBOARD_RUNS`` environment variables."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--lake")
    parser.add_argument("--runs")
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    lake = args.lake or os.environ.get(ENV_LAKE)
    runs = args.runs or os.environ.get(ENV_RUNS)
    return Settings(Path(lake) if lake else None, Path(runs) if runs else None)


def guarded(what: str, fn: Callable[[], T]) -> T:
    """Run ``fn``; turn an unexpected exception into a :class:`ServiceError` about ``what``."""
    try:
        return fn()
    except ServiceError:
        raise
    except Exception as exc:  # noqa: BLE001 (the page must not show a traceback)
        where = traceback.extract_tb(exc.__traceback__)[-1]
        log.error("%s failed: %s at %s:%s", what, type(exc).__name__, where.filename, where.lineno)
        raise ServiceError(f"{what} failed ({type(exc).__name__}); the server log has the details.") from None


@st.cache_resource(show_spinner=False)
def warm_imports() -> threading.Thread:
    """Start importing :data:`HEAVY_MODULES` in a daemon thread, once per server process (join it to wait)."""
    import importlib

    def run() -> None:
        for name in HEAVY_MODULES:
            try:
                importlib.import_module(name)
            except ImportError as exc:  # the page that needs it reports the missing module
                log.warning("warm-up import of %s failed: %s", name, type(exc).__name__)

    thread = threading.Thread(target=run, name="tumorboard-warm-imports", daemon=True)
    thread.start()
    return thread


# -- the lake ---------------------------------------------------------------------------------------------
def lake_exists(lake: Path | None) -> bool:
    """Whether ``lake`` is a directory holding at least one table."""
    return lake is not None and lake.is_dir() and bool(Lake(lake).tables())


@st.cache_data(ttl=10, show_spinner=False)
def lake_token(lake: str) -> str:
    """The lake's state (manifest hash): cache key of everything read from it; re-checked every 10 s."""
    return Lake(lake).manifest_hash() if Path(lake).is_dir() else "absent"


@dataclass(frozen=True)
class LakeTables:
    """The reader's frames of one lake state (read-only) and which patients have which modality."""

    frames: dict[str, pd.DataFrame]
    modalities: dict[str, set[str]]


SHARED_KINDS = ("patients", "conditions", "observations", "medications", "encounters", "gene_status", "tmb",
                "images", "features", "labels")  # read once for the app and the model (fusion.predict.lake_frames)


@st.cache_resource(show_spinner="Reading the lake…", max_entries=2)
def _tables(lake: str, token: str) -> LakeTables:
    from fusion.predict import lake_frames
    from ingest.status import patient_modalities

    handle = Lake(lake)
    shared = lake_frames(handle)
    frames = {kind: getattr(shared, kind) for kind in SHARED_KINDS}
    frames["procedures"], frames["variants"] = reader.read_procedures(handle), reader.read_variants(handle)
    return LakeTables(frames, guarded("Reading modality coverage", lambda: patient_modalities(handle)))


@st.cache_data(show_spinner=False, max_entries=4)
def _patient_list(lake: str, token: str) -> pd.DataFrame:
    data = _tables(lake, token)
    people = data.frames["patients"][["patient_key", "mrn"]]
    others = sorted(set().union(*data.modalities.values()) - set(people["patient_key"])) \
        if data.modalities else []
    people = pd.concat([people, pd.DataFrame({"patient_key": others, "mrn": None})], ignore_index=True)
    people["label"] = people["mrn"].fillna(people["patient_key"]).astype(str)
    return people.sort_values("label", ignore_index=True)[["patient_key", "label"]]


@st.cache_data(show_spinner=False, max_entries=64)
def _patient_record(lake: str, token: str, key: str) -> dict[str, pd.DataFrame]:
    frames = _tables(lake, token).frames
    return {kind: frame[frame["patient_key"] == key].reset_index(drop=True) for kind, frame in frames.items()}


def _run_config(run_dir: str | None):
    """The run's config, else (no run, or one that does not load) the default one."""
    from fusion.config import load_config

    if run_dir:
        try:
            return loaded_run(run_dir).config
        except ServiceError:
            pass  # the prediction section reports the broken run
    return load_config(None)


@st.cache_data(show_spinner=False, max_entries=64)
def _patient_header(lake: str, token: str, key: str, run_dir: str | None) -> dict:
    from fusion.cohort import (
        STAGE_ANSWERS,
        ecog_value,
        index_dates,
        is_cancer_condition,
        karnofsky_as_ecog,
        karnofsky_value,
        stage_groups,
        with_onset,
    )

    record = _patient_record(lake, token, key)
    config = _run_config(run_dir).data
    cond = with_onset(record["conditions"])  # undated by onset: the assertedDate extension, else recordedDate
    cancer = cond[is_cancer_condition(cond, config.index)]
    cancer = cancer[_one_coding_per_condition(cancer)]  # a SNOMED + ICD-10 coded diagnosis is one cancer
    cancer = cancer.assign(name=cancer["display"].fillna(cancer["code"]).fillna("cancer without a code"))
    cancers = [{"display": name, "onset": None if pd.isna(since) else since} for name, since in
               cancer.groupby("name")["onset"].min().sort_values(na_position="last").items()]
    index, code = index_dates(record["conditions"], record["labels"], config.index)
    index_date = index.get(key) if len(index) else None
    diagnosis = None
    if index_date is not None:
        hit = cond[(cond["code"] == code.get(key)) & (cond["onset"] == index_date)]
        diagnosis = hit["display"].iloc[0] if len(hit) else None
    labels = record["labels"]
    if diagnosis is None and len(labels) and labels["diagnosis"].notna().any():
        diagnosis = labels["diagnosis"].dropna().iloc[-1]
    person = record["patients"].iloc[0] if len(record["patients"]) else None
    birth = person["birth_date"] if person is not None else None
    death = person["death_date"] if person is not None else None
    at = index_date if index_date is not None else (death if pd.notna(death) else pd.Timestamp.now(tz="UTC"))
    age = float((at - birth).days / DAYS_PER_YEAR) if birth is not None and pd.notna(birth) else None
    sex = person["sex"] if person is not None else None
    if person is None:  # no FHIR Patient (curated tables, a cBioPortal study): a curated age or sex feature
        age, sex = _curated(record["features"], ("age",), "value"), _curated(record["features"], ("sex", "gender"),
                                                                              "value_str")
    obs = record["observations"].sort_values("effective")

    def latest(rows: pd.DataFrame) -> pd.DataFrame:
        """The last of ``rows`` by 30 days after the index date (none, or one row)."""
        if index_date is not None:
            rows = rows[rows["effective"] <= index_date + pd.Timedelta(days=30)]
        return rows.iloc[-1:]

    def text(rows: pd.DataFrame) -> object:
        """The coded stage's display, else its stage as the cohort reads SNOMED CT's stage codes (``4``), else its
        code, of ``rows``' one row (None without)."""
        if rows.empty:
            return None
        display, code = rows["value_display"].iloc[0], rows["value_code"].iloc[0]
        if pd.notna(display):
            return display
        return f"{STAGE_ANSWERS[code]:.0f}" if code in STAGE_ANSWERS else code if pd.notna(code) else None

    # the clinical stage group, else the pathological one, else another; ECOG by its number or coded answer (as
    # the cohort)
    shown = ((text(latest(obs[rows])), kind)
             for kind, rows in zip(("clinical", "pathological", "other"), stage_groups(obs, config.ehr), strict=True))
    stage, stage_kind = next(((value, kind) for value, kind in shown if value is not None), (None, None))
    ecog = latest(obs[obs["code"] == config.ehr.ecog_code])
    ecog = ecog_value(ecog).iloc[0] if len(ecog) else None
    if ecog is None or pd.isna(ecog):  # the Karnofsky score as ECOG where no ECOG is known (as the cohort)
        kps = latest(obs[obs["code"] == config.ehr.karnofsky_code])
        ecog = karnofsky_as_ecog(karnofsky_value(kps)).iloc[0] if len(kps) else ecog
    modalities = sorted(m for m, keys in _tables(lake, token).modalities.items() if key in keys)
    curated_index = bool(len(labels)) and labels["index_date"].notna().any()
    return {"age": age, "age_curated": person is None, "sex": sex, "diagnosis": diagnosis,
            "index_curated": curated_index, "day_zero_only": curated_index and _day_zero_only(record, index_date),
            "stage": stage, "stage_kind": stage_kind,
            "ecog": ecog,
            "index_date": index_date, "death_date": death if pd.notna(death) else None,
            "modalities": modalities, "cancers": cancers}


# a record's tables with calendar dates: a FHIR Patient (its birth and death dates) too, which a cBioPortal
# study never writes (a FHIR patient whose curated index date really is 2000-01-01 keeps it)
DATED_KINDS = ("patients", "conditions", "observations", "medications", "encounters", "procedures", "images")


def _day_zero_only(record: dict[str, pd.DataFrame], index_date: object) -> bool:
    """Whether the patient's index date is a cBioPortal study's day 0 (:func:`ingest.cbioportal.is_day_zero`) and
    nothing else of their record has a date (no FHIR Patient either): their times are days from day 0, there is no
    calendar date to show."""
    from ingest.cbioportal import is_day_zero

    return is_day_zero(index_date) and all(record[kind].empty for kind in DATED_KINDS if kind in record)


def index_words(header: dict) -> str | None:
    """The header's index date in words: ``day 0 of the study ...`` for a patient without calendar dates
    (``day_zero_only``), ``index date YYYY-MM-DD`` (a curated one), ``diagnosed YYYY-MM-DD``, else None."""
    if header["index_date"] is None:
        return None
    if header.get("day_zero_only"):
        return ("no calendar dates (a cBioPortal study): times count in days from the patient's day 0, usually "
                "the diagnosis")
    return f"{'index date' if header['index_curated'] else 'diagnosed'} {header['index_date']:%Y-%m-%d}"


def age_label(header: dict) -> str:
    """The header's age metric label: ``Age at diagnosis`` where the age is the birth date's distance to the
    index date, else ``Age`` (a curated age attribute, whose time point the lake does not say; no index date)."""
    return "Age at diagnosis" if header["index_date"] is not None and not header.get("age_curated") else "Age"


def stage_label(header: dict) -> str:
    """The header's stage metric label: ``Pathological stage`` where the stage is the pathological stage group
    (no clinical one is known by 30 days after the index date), else ``Stage``."""
    return "Pathological stage" if header.get("stage_kind") == "pathological" else "Stage"


def no_data_note(header: dict, what: str) -> str:
    """The caption of an empty section (``what``: ``image``, ``laboratory values``, ``dated events``) for the
    patient: where their data have no calendar dates (a cBioPortal study) it says that such a lake holds none."""
    if header.get("day_zero_only"):
        return (f"No {what} for this patient: a cBioPortal study carries no CT images, laboratory values or "
                "dated events (its survival and response count from day 0: see Risk and Treatment).")
    return f"No {what} for this patient."


def _curated(features: pd.DataFrame, names: tuple[str, ...], column: str) -> object:
    """The patient's first curated feature value (``column``) named one of ``names``, letter case ignored."""
    rows = features[features["feature"].str.lower().isin(names) & features[column].notna()]
    return None if rows.empty else rows[column].iloc[0]


def patients(lake: Path) -> pd.DataFrame:
    """``patient_key``, ``label`` (MRN, else the key), sorted by label: every patient in the lake."""
    return guarded("Reading the lake", lambda: _patient_list(str(lake), lake_token(str(lake))))


def with_patient_links(frame: pd.DataFrame, people: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (with ``patient_key``) led by ``patient`` (the picker's label: MRN, else the key) and
    ``record`` (the relative address of the patient's page, ``./?patient=KEY``)."""
    labels = people.set_index("patient_key")["label"]
    links = pd.DataFrame({"patient": frame["patient_key"].map(labels).fillna(frame["patient_key"]),
                          "record": "./?patient=" + frame["patient_key"].map(lambda k: quote(str(k), safe=""))},
                         index=frame.index)
    return pd.concat([links, frame], axis=1)


def patient_record(lake: Path, key: str) -> dict[str, pd.DataFrame]:
    """The patient's rows of every reader frame (``patients``, ``conditions``, ``observations``, ...)."""
    return guarded("Reading the patient's record",
                   lambda: _patient_record(str(lake), lake_token(str(lake)), key))


def patient_header(lake: Path, key: str, run_dir: str | None) -> dict:
    """``age`` (years at the index date, else now or at death; a curated ``age`` feature when the lake has no
    FHIR Patient for them), ``sex`` (likewise ``sex`` or ``gender``), ``diagnosis``, ``stage`` (the last clinical
    stage group by 30 days after the index date, else the pathological one, else one of another kind, as
    written), ``stage_kind`` (``clinical``, ``pathological``, ``other`` or None), ``ecog`` (else the Karnofsky
    score as ECOG), ``index_date`` (Timestamp or None), ``index_curated`` (it is the curated labels'
    ``index_date``, not a Condition's onset), ``death_date``, ``modalities`` (list of names present), ``cancers``
    (every cancer condition of the patient by the run's ``data.index`` codes and display rule, once per name
    with its earliest onset, else assertedDate or recorded date: ``[{"display", "onset"}]``, earliest first)."""
    return guarded("Reading the patient's record",
                   lambda: _patient_header(str(lake), lake_token(str(lake)), key, run_dir))


# Observations the timeline shows: labs and vital signs, and the oncology ones whatever their category (the
# codes of the stage, disease-status, best-response and tumour-marker views, and ECOG); questionnaires, social
# history (smoking, employment) and other categories are left out and counted in the caption.
TIMELINE_CATEGORIES = ("laboratory", "vital-signs")
ONCOLOGY_VIEWS = ("tnm_stage", "disease_status", "best_response", "tumor_marker")
SPAN_GAP_DAYS = 366  # orders of one drug at most a year apart (a yearly renewal) are one span on the timeline


@st.cache_resource(show_spinner=False)
def oncology_codes() -> frozenset[str]:
    """LOINC codes of the oncology observations: those the :data:`ONCOLOGY_VIEWS` select on, and the default
    config's ECOG and stage codes."""
    from fusion.config import EhrConfig
    from ingest.fhir.pipeline import DEFAULT_VIEWS

    found = {EhrConfig().ecog_code, EhrConfig().stage_code}
    for name in ONCOLOGY_VIEWS:
        view = json.loads((DEFAULT_VIEWS / f"{name}.json").read_text())
        for where in view.get("where", []):
            found.update(re.findall(r"'(\d+-\d)'", where.get("path", "")))
    return frozenset(found)


def _on_timeline(obs: pd.DataFrame) -> pd.Series:
    """Bool per observation: a lab, a vital sign, an oncology observation, or one without a category."""
    category = _category(obs)
    return category.isin(TIMELINE_CATEGORIES) | category.isna() | obs["code"].isin(oncology_codes())


def left_out_of_timeline(record: dict[str, pd.DataFrame]) -> dict[str, int]:
    """Category -> number of the patient's dated observations the timeline leaves out (surveys, social history),
    most first."""
    obs = record["observations"]
    left = _category(obs[~_on_timeline(obs) & obs["effective"].notna()])
    return {str(k): int(v) for k, v in left.value_counts().items()}


# Conditions the timeline leaves out: the social determinants of health that Synthea records as Conditions at
# every check-up (employment, education, income, housing, transport, social contact, violence, stress), matched
# on the whole display with its SNOMED semantic tag "(finding)" or "(person)", so that a clinical finding (fatigue,
# dyspnoea, obesity by BMI, "Stress incontinence (finding)") and every "(disorder)" stay; "Medication review due
# (situation)" is Synthea's administrative reminder. A cancer condition always shows. The Condition category does
# not tell them apart: Synthea writes "encounter-diagnosis" for all of them.
SOCIAL_CONDITION = re.compile(
    r"(?:(?:full|part)-time employment|unemployed|not in labou?r force|received higher education|"
    r"received certificate of high school equivalency|only received primary school education|"
    r"limited social contact|social isolation|"
    r"reports of violence in the environment|victim of intimate partner abuse|has a criminal record|"
    r"housing unsatisfactory|homeless(?:ness)?|lack of access to transportation|transport problems?|stress|"
    r"risk activity involvement|refugee)\s*\((?:finding|person)\)|medication review due \(situation\)",
    re.IGNORECASE)


def _timeline_conditions(record: dict[str, pd.DataFrame], run_dir: str | None) -> tuple[pd.DataFrame, dict]:
    """The Condition marks of the timeline and what they leave out.

    One row per Condition resource (its first coding with a display: a condition coded in SNOMED and ICD-10 is
    one condition); social determinants (:data:`SOCIAL_CONDITION`) are left out unless a coding is a cancer by
    the run's ``data.index`` rule; records of one display less than :data:`SPAN_GAP_DAYS` apart (a problem
    re-recorded at each visit, one episode of a recurrent infection) are one mark at the first onset, ``end``
    the last, ``count`` the records. Returns (marks: ``when``, ``end``, ``label``, ``count``; ``{"social
    history": n, "repeats": m}``: the records left out and those drawn with an earlier one).
    """
    from fusion.cohort import is_cancer_condition, with_onset

    cond = with_onset(record["conditions"])  # undated by onset: the assertedDate extension, else recordedDate
    cond = cond.assign(label=cond["display"].fillna(cond["code"]).fillna("condition without a code"))
    cancer = is_cancer_condition(cond, _run_config(run_dir).data.index) if len(cond) else \
        pd.Series(False, index=cond.index)
    social = cond["label"].astype(str).map(lambda d: SOCIAL_CONDITION.fullmatch(d) is not None).astype(bool)
    rid = _condition_ids(cond)  # the reader's rows are codings: a Condition is a cancer if any coding is one
    cancer, social = cancer.groupby(rid).transform("any"), social.groupby(rid).transform("any")
    dated = _one_coding_per_condition(cond) & cond["onset"].notna()
    hidden = dated & social & ~cancer
    shown = cond[dated & ~hidden]
    marks = _spans(pd.DataFrame({"when": shown["onset"], "label": shown["label"]}))
    return marks, {"social history": int(hidden.sum()), "repeats": int(len(shown) - len(marks))}


def _condition_ids(cond: pd.DataFrame) -> pd.Series:
    """Per condition row (one per coding): its Condition's resource id, or a stand-in of its own without one."""
    own = pd.Series([f"row {i}" for i in range(len(cond))], index=cond.index, dtype=object)
    return own if "resource_id" not in cond else cond["resource_id"].astype(object).where(cond["resource_id"].notna(),
                                                                                            own)


def _one_coding_per_condition(cond: pd.DataFrame) -> pd.Series:
    """Bool per condition row: the first coding of its Condition that has a display (else its first coding)."""
    by_display = cond["display"].isna().sort_values(kind="mergesort").index
    return ~_condition_ids(cond).loc[by_display].duplicated().reindex(cond.index).astype(bool)


def conditions_left_out(record: dict[str, pd.DataFrame], run_dir: str | None = None) -> dict[str, int]:
    """``{"social history": n, "repeats": m}``: the patient's dated conditions the timeline leaves out (social
    determinants recorded as conditions) and those it draws with an earlier record of the same condition."""
    return _timeline_conditions(record, run_dir)[1]


def _spans(meds: pd.DataFrame) -> pd.DataFrame:
    """Records of one label (a drug's orders, a condition's records) at most :data:`SPAN_GAP_DAYS` apart merged
    into one span: ``when`` (first), ``end`` (last), ``label``, ``count`` (records)."""
    if meds.empty:
        return pd.DataFrame(columns=["when", "end", "label", "count"])
    meds = meds.sort_values(["label", "when"], kind="mergesort")
    gap = meds.groupby("label")["when"].diff() > pd.Timedelta(days=SPAN_GAP_DAYS)
    span = (gap | meds["label"].ne(meds["label"].shift())).cumsum()
    return (meds.groupby(span).agg(when=("when", "min"), end=("when", "max"), label=("label", "first"),
                                   count=("when", "size")).reset_index(drop=True))


def patient_events(record: dict[str, pd.DataFrame], run_dir: str | None = None) -> pd.DataFrame:
    """One row per dated event of the patient: ``when``, ``end`` (encounters, medication spans, the last record of
    a repeated condition), ``category``, ``label``, ``count`` (medication orders in a span, condition records in
    a mark, else 1).

    Conditions are the clinical ones, once per episode (:func:`_timeline_conditions`: social determinants
    recorded as conditions are left out, repeats less than a year apart are one mark; a cancer always shows,
    by the ``data.index`` rule of ``run_dir``'s config, else the default one).
    Medication orders of one drug become spans (:func:`_spans`): a patient with a thousand monthly
    refills has one span per drug and course. Observations are the labs, vital signs and oncology ones (stage,
    ECOG, disease status, response, tumour markers), with their values; surveys and social history are left out
    (:func:`left_out_of_timeline` counts them).
    """
    parts = [_timeline_conditions(record, run_dir)[0].assign(category="Condition")]
    proc = record["procedures"]
    parts.append(pd.DataFrame({"when": proc["performed"], "end": pd.NaT, "category": "Procedure",
                               "label": proc["display"].fillna(proc["code"]).fillna("procedure without a code"),
                               "count": 1}))
    meds = record["medications"]
    meds = pd.DataFrame({"when": meds["start"], "label": meds["display"].fillna(meds["code"])
                         .fillna("medication without a code")}).dropna(subset=["when"])
    parts.append(_spans(meds).assign(category="Medication"))
    enc = record["encounters"]
    parts.append(pd.DataFrame({"when": enc["start"], "end": enc["end"], "category": "Encounter",
                               "label": "Encounter", "count": 1}))
    obs = record["observations"]
    shown = obs[_on_timeline(obs) & (obs["value_display"].notna() | obs["value_code"].notna()
                                     | obs["value"].notna())]
    number = shown["value"].map(lambda v: f"{v:g}", na_action="ignore").astype("string")  # ECOG 1, not 1.0
    number = (number + " " + shown["unit"].fillna("").astype("string")).str.strip()
    value = shown["value_display"].fillna(shown["value_code"]).fillna(number)
    parts.append(pd.DataFrame({"when": shown["effective"], "end": pd.NaT, "category": "Observation",
                               "label": shown["display"].fillna(shown["code"]) + ": " + value.astype(str),
                               "count": 1}))
    columns = ["when", "end", "category", "label", "count"]
    events = pd.concat([p[columns] for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) \
        else pd.DataFrame(columns=columns)
    return events.dropna(subset=["when"]).sort_values("when", ignore_index=True)


def _category(obs: pd.DataFrame) -> pd.Series:
    """The observations' category code (``laboratory``, ``vital-signs``, ``survey``, ...); null where the record
    has none or the lake's view predates the column."""
    return obs["category"] if "category" in obs else pd.Series(None, index=obs.index, dtype=object)


def lab_series(record: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Numeric laboratory results with a unit: ``effective``, ``lab`` ("display (unit)"), ``value``.

    A lab is an Observation of category ``laboratory``; one without a category counts when it has a unit (a lake
    flattened before the category column, a source that leaves it out), so survey scores and vital signs with a
    category are not labs.
    """
    obs = record["observations"]
    category = _category(obs)
    is_lab = (category == "laboratory") | category.isna()
    labs = obs[is_lab & obs["value"].notna() & obs["unit"].notna() & obs["effective"].notna()]
    names = labs["display"].fillna(labs["code"]) + " (" + labs["unit"] + ")"
    return pd.DataFrame({"effective": labs["effective"], "lab": names, "value": labs["value"]}) \
        .sort_values("effective", ignore_index=True)


@st.cache_data(show_spinner=False)
def driver_genes() -> list[str]:
    """The genes of the default gene panel (``configs/gene_panel.yaml``)."""
    from ingest.variants.features import load_gene_panel

    return list(load_gene_panel().genes)


@st.cache_resource(show_spinner=False)
def actionable_patterns() -> dict[str, re.Pattern | None]:
    """Gene -> compiled ``actionable`` expression of the default gene panel (None: any variant counts)."""
    from ingest.variants.features import load_gene_panel

    return {gene: None if changes is None else re.compile("|".join(f"(?:{c})" for c in changes), re.I)
            for gene, changes in load_gene_panel().actionable.items()}


def variant_table(record: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The patient's variants with ``driver`` (panel gene) and ``actionable`` (the panel's ``actionable``
    list) flags, actionable ones first."""
    var = record["variants"][["gene", "hgvsp", "consequence", "vaf", "depth", "chrom", "pos", "ref", "alt",
                              "sample_id"]].copy()
    drivers, patterns = set(driver_genes()), actionable_patterns()
    var.insert(2, "driver", var["gene"].isin(drivers))
    var.insert(3, "actionable", [_is_actionable(patterns, g, p, c) for g, p, c in
                                 zip(var["gene"], var["hgvsp"], var["consequence"])])
    return var.sort_values(["actionable", "driver", "gene"], ascending=[False, False, True],
                           ignore_index=True)


def _is_actionable(patterns: dict[str, re.Pattern | None], gene: object, hgvsp: object,
                   consequence: object) -> bool:
    if gene not in patterns:
        return False
    pattern = patterns[gene]
    return pattern is None or pattern.search(f"{hgvsp or ''} {consequence or ''}") is not None


# -- images -----------------------------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=4)
def _image_windows(lake: str, token: str) -> dict[str, tuple[float, float] | None]:
    """image_id -> the (level, width) HU window the tensor was normalised with (None: not a CT window)."""
    handle = Lake(lake)
    if not handle.has("images"):
        return {}
    rows = handle.read("images", ["image_id", "preprocessing"]).to_pylist()
    out = {}
    for row in rows:
        steps = json.loads(row["preprocessing"] or "{}").get("steps", [])
        window = next((s for s in steps if s.get("name") == "Window"), None)
        out[row["image_id"]] = (float(window["level"]), float(window["width"])) if window else None
    return out


def image_window(lake: Path, image_id: str) -> tuple[float, float] | None:
    """The ingest window of ``image_id`` ((level, width) in HU), or None when stored otherwise."""
    return _image_windows(str(lake), lake_token(str(lake))).get(image_id)


@st.cache_data(show_spinner=False, max_entries=8)
def _image_content(lake: str, token: str, tensor_file: str, tensor_row: int) -> tuple[int, int, int]:
    volume = reader.load_image(Lake(lake), tensor_file, tensor_row)
    if volume.ndim == 2:
        return 1, 0, 0
    filled = np.flatnonzero(volume.reshape(volume.shape[0], -1).max(axis=1) > volume.min())
    first, last = (int(filled[0]), int(filled[-1])) if filled.size else (0, volume.shape[0] - 1)
    return int(volume.shape[0]), first, last


@st.cache_data(show_spinner=False, max_entries=64)
def _image_slice(lake: str, token: str, tensor_file: str, tensor_row: int, index: int) -> np.ndarray:
    volume = reader.load_image(Lake(lake), tensor_file, tensor_row)
    if volume.ndim == 2:
        return volume
    return np.ascontiguousarray(volume[min(max(index, 0), volume.shape[0] - 1)])


def image_content(lake: Path, tensor_file: str, tensor_row: int) -> tuple[int, int, int]:
    """``(n_slices, first, last)``: slices of a series and the range holding image content (not padding)."""
    return guarded("Reading the image", lambda: _image_content(str(lake), lake_token(str(lake)), tensor_file,
                                                               tensor_row))


def window_words(level: float, width: float) -> str:
    """A CT window in words, ``level -600 HU, width 1500 HU``: "-600/1500" leaves the reader to guess which is
    which (radiologists write width first as often as level first)."""
    return f"level {level:g} HU, width {width:g} HU"


def slice_number(index: int) -> int:
    """The number a viewer shows for a slice: 1 for the first. Indices (the slider's position, the attribution's
    ``slice``) stay 0-based; only what the page says is 1-based."""
    return int(index) + 1


def attribution_caption(attribution: dict, informative: bool, n_slices: int) -> str:
    """What the CT's attribution map is and which slice it is on (numbered from 1; none for a 2D image)."""
    integrated = attribution.get("method") == "integrated_gradients"
    method = ("Integrated gradients from the training patients' mean image" if integrated
              else "HiResCAM (Grad-CAM with element-wise gradients)")
    if not informative:
        return f"{method}: the map is empty, no image region pushes the explained output up."
    heat_slice = attribution.get("slice")
    if n_slices <= 1 or heat_slice is None:
        return f"{method}."
    on = f"slice {slice_number(heat_slice)}"
    if integrated:
        return f"{method}, on {on}: the slice where the image raises the explained output most."
    weights = attribution.get("slice_attention") or []
    uniform = len(weights) > 1 and max(weights) - min(weights) < 0.05 * max(weights)
    return f"{method} on {on}, " + ("the slice it weighs most, though it weighs all slices about equally."
                                    if uniform else "the slice the model attends to most.")


def image_slice(lake: Path, tensor_file: str, tensor_row: int, index: int) -> np.ndarray:
    """One (H, W) float32 slice of a stored image (the first channel of a 2D colour image)."""
    return guarded("Reading the image", lambda: _image_slice(str(lake), lake_token(str(lake)), tensor_file,
                                                             tensor_row, index))


# -- status -----------------------------------------------------------------------------------------------
@st.cache_data(show_spinner="Summarising the lake…", max_entries=2)
def _status(lake: str, token: str):
    from ingest.status import lake_status

    return lake_status(Lake(lake))


def status(lake: Path):
    """:class:`ingest.status.LakeStatus` of ``lake`` (cached per lake state)."""
    return guarded("Summarising the lake", lambda: _status(str(lake), lake_token(str(lake))))


# -- runs -------------------------------------------------------------------------------------------------
def is_run(folder: Path) -> bool:
    return all((folder / name).is_file() for name in RUN_FILES)


def runs_token(runs: Path) -> str:
    """Changes when a run is added, removed or re-evaluated (names and metrics.json times)."""
    if not runs.is_dir():
        return "absent"
    parts = []
    for folder in sorted([runs, *runs.glob("*"), *runs.glob("*/fold_*")]):
        if folder.is_dir() and is_run(folder):
            metrics = folder / "metrics.json"
            parts.append(f"{folder}:{metrics.stat().st_mtime_ns if metrics.is_file() else 0}")
    return "|".join(parts)


@st.cache_data(show_spinner=False, max_entries=4)
def list_runs(runs: str, token: str) -> pd.DataFrame:
    """One row per run under ``runs`` (or ``runs`` itself when it is a run), newest first: ``path``,
    ``name``, ``created_at``, ``modalities``, ``n_patients``, ``evaluated``."""
    root = Path(runs)
    rows = []
    for folder in (root, *sorted(root.glob("*")), *sorted(root.glob("*/fold_*"))):
        if not (folder.is_dir() and is_run(folder)) or folder.name.startswith("."):
            continue
        try:
            meta = json.loads((folder / "run.json").read_text())
        except (OSError, ValueError):
            log.warning("skipping a run folder with an unreadable run.json")
            continue
        name = str(folder.relative_to(root)) if folder != root else folder.name
        rows.append({"path": str(folder), "name": name, "created_at": meta.get("created_at"),
                     "modalities": ", ".join(meta.get("modalities", [])),
                     "n_patients": len(meta.get("splits", {})),
                     "evaluated": (folder / "metrics.json").is_file()})
    frame = pd.DataFrame(rows, columns=RUN_COLUMNS)
    return frame.sort_values("created_at", ascending=False, ignore_index=True, na_position="last")


def available_runs(runs: Path | None) -> pd.DataFrame:
    """:func:`list_runs` for the configured runs folder (empty frame when there is none)."""
    if runs is None or not runs.is_dir():
        return pd.DataFrame(columns=RUN_COLUMNS)
    return list_runs(str(runs), runs_token(runs))


def active_run(runs: Path | None) -> str | None:
    """The run the Patient page uses: the one picked on the Models page, else the newest."""
    table = available_runs(runs)
    chosen = st.session_state.get(RUN_KEY)
    if chosen in set(table["path"]):
        return chosen
    return table["path"].iloc[0] if len(table) else None


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def loaded_run(run_dir: str):
    """:class:`fusion.run.LoadedRun` of ``run_dir`` (eval mode, CPU); shared, never mutated."""
    import fusion.explain  # noqa: F401  (pays the explanation imports with the model load, once per server)
    from fusion.run import RunError, load_run

    try:
        return load_run(run_dir)
    except RunError as exc:
        raise ServiceError(str(exc)) from None


@st.cache_data(show_spinner=False, max_entries=8)
def run_details(run_dir: str, token: str) -> dict:
    """``meta`` (run.json without the per-patient splits), ``metrics`` (metrics.json or None), ``plots``
    (PNG paths), ``history`` (per-epoch losses or None), ``card`` (model_card.md text or None)."""
    folder = Path(run_dir)
    meta = json.loads((folder / "run.json").read_text())
    splits = meta.pop("splits", {})
    meta["split_counts"] = pd.Series(list(splits.values()), dtype=object).value_counts().to_dict()
    for big in ("normalization", "breslow", "feature_selection", "feature_descriptions"):
        meta.pop(big, None)
    metrics_file = folder / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
    history = pd.read_csv(folder / "history.csv") if (folder / "history.csv").is_file() else None
    card = (folder / "model_card.md").read_text() if (folder / "model_card.md").is_file() else None
    return {"meta": meta, "metrics": metrics, "plots": [str(p) for p in sorted(folder.glob("*.png"))],
            "history": history, "card": card}


def details(run_dir: str, runs: Path | None) -> dict:
    """:func:`run_details` with errors turned into :class:`ServiceError`."""
    token = runs_token(runs) if runs is not None else "none"
    return guarded("Reading the run", lambda: run_details(run_dir, token))


@st.cache_data(show_spinner=False, max_entries=8)
def _run_splits(run_dir: str, token: str) -> dict[str, str]:
    return json.loads((Path(run_dir) / "run.json").read_text()).get("splits", {})


def patient_split(run_dir: str, runs: Path | None, key: str) -> str | None:
    """``"train"``, ``"val"`` or ``"test"``: the patient's split in the run (None: not in its cohort)."""
    token = runs_token(runs) if runs is not None else "none"
    return guarded("Reading the run", lambda: _run_splits(run_dir, token)).get(key)


def metric_on_test(run_dir: str, runs: Path | None, task: str, metric: str) -> dict | None:
    """The run's test ``{"value", "ci_low", "ci_high"}`` of ``metric`` for ``task`` (None before evaluate)."""
    metrics = details(run_dir, runs)["metrics"] or {}
    value = ((metrics.get("tasks") or {}).get(task, {}).get("model") or {}).get(metric)
    return value if isinstance(value, dict) and value.get("value") is not None else None


def metric_rows(metrics: dict) -> pd.DataFrame:
    """metrics.json ``tasks`` flattened: ``task``, ``model`` ("model", "baseline: x", "ablation: y"),
    ``metric``, ``value``, ``ci_low``, ``ci_high``; a ``--cv`` run's metrics.json also gives ``sd`` and
    ``folds`` (the value of each fold; None elsewhere)."""
    rows = []
    for task, block in (metrics.get("tasks") or {}).items():
        groups = [("model", block.get("model") or {})]
        groups += [(f"baseline: {n}", m) for n, m in (block.get("baselines") or {}).items()]
        groups += [(f"ablation: {n}", m) for n, m in (block.get("ablations") or {}).items()]
        for name, values in groups:
            for metric, v in (values or {}).items():
                if isinstance(v, dict) and "value" in v:
                    rows.append({"task": task, "model": name, "metric": metric, "value": v.get("value"),
                                 "ci_low": v.get("ci_low"), "ci_high": v.get("ci_high"), "sd": v.get("sd"),
                                 "folds": v.get("folds")})
    return pd.DataFrame(rows, columns=["task", "model", "metric", "value", "ci_low", "ci_high", "sd", "folds"])


def subgroup_rows(metrics: dict) -> pd.DataFrame:
    """metrics.json ``subgroups`` flattened: ``task``, ``subgroup``, ``n``, ``metric``, value and interval."""
    rows = []
    for task, groups in (metrics.get("subgroups") or {}).items():
        for group, block in (groups or {}).items():
            for metric, v in ((block or {}).get("model") or {}).items():
                if isinstance(v, dict) and "value" in v:
                    rows.append({"task": task, "subgroup": group, "n": block.get("n"), "metric": metric,
                                 "value": v.get("value"), "ci_low": v.get("ci_low"),
                                 "ci_high": v.get("ci_high")})
    return pd.DataFrame(rows, columns=["task", "subgroup", "n", "metric", "value", "ci_low", "ci_high"])


def with_interval(frame: pd.DataFrame) -> pd.Series:
    """``"0.712 [0.650, 0.771]"`` per row of a frame with ``value``, ``ci_low``, ``ci_high``."""
    def fmt(row: pd.Series) -> str:
        if row["value"] is None or pd.isna(row["value"]):
            return "n/a"
        if row["ci_low"] is None or pd.isna(row["ci_low"]):
            return f"{row['value']:.3f}"
        return f"{row['value']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"

    return frame.apply(fmt, axis=1) if len(frame) else pd.Series(dtype=object)


def with_spread(frame: pd.DataFrame) -> pd.Series:
    """``"0.712 ± 0.031 (5 folds)"`` per row of :func:`metric_rows` of a ``--cv`` run: the mean over the folds
    that scored the metric, their SD and how many they are."""
    def fmt(row: pd.Series) -> str:
        folds = [v for v in (row["folds"] or []) if v is not None]
        if row["value"] is None or pd.isna(row["value"]):
            return "n/a"
        spread = "" if row["sd"] is None or pd.isna(row["sd"]) else f" ± {row['sd']:.3f}"
        return f"{row['value']:.3f}{spread} ({len(folds)} fold{'s' if len(folds) != 1 else ''})"

    return frame.apply(fmt, axis=1) if len(frame) else pd.Series(dtype=object)


def cross_validations(runs: Path | None) -> pd.DataFrame:
    """One row per ``--cv`` run under ``runs`` (a folder whose ``fold_<k>`` folders are runs): ``path``,
    ``name``, ``k`` and ``evaluated`` (its own metrics.json, the mean and SD over the folds, exists)."""
    rows = []
    if runs is not None and runs.is_dir():
        for folder in (runs, *sorted(runs.glob("*"))):
            folds = [f for f in folder.glob("fold_*") if f.is_dir() and is_run(f)] if folder.is_dir() else []
            if folds and not folder.name.startswith("."):
                rows.append({"path": str(folder), "name": folder.name if folder == runs else
                             str(folder.relative_to(runs)), "k": len(folds),
                             "evaluated": (folder / "metrics.json").is_file()})
    return pd.DataFrame(rows, columns=["path", "name", "k", "evaluated"])


def cross_validation_metrics(cv_dir: str) -> dict | None:
    """The ``--cv`` run's metrics.json (mean, SD and per-fold values), or None before ``tumorboard evaluate``."""
    path = Path(cv_dir) / "metrics.json"
    if not path.is_file():
        return None
    return guarded("Reading the cross-validation", lambda: json.loads(path.read_text()))


# -- predictions ------------------------------------------------------------------------------------------
@st.cache_data(show_spinner="Scoring the patient…", max_entries=128)
def _prediction(run_dir: str, lake: str, token: str, key: str, explain: bool) -> dict:
    try:
        from fusion.predict import PredictError, UnknownPatientError, predict_patient
    except ImportError:
        raise ServiceError("Predictions are not available in this installation (fusion.predict is "
                           "missing).") from None
    run = loaded_run(run_dir)
    try:
        return predict_patient(run, Lake(lake), key, explain=explain)
    except UnknownPatientError:
        raise ServiceError("This patient is not in the lake any more; reload the page.") from None
    except PredictError as exc:
        raise ServiceError(f"The model cannot score this patient: {exc}.") from None


def prediction(run_dir: str, lake: Path, key: str) -> dict:
    """:func:`fusion.predict.predict_patient` without explanations for one patient, cached."""
    return guarded("Scoring the patient",
                   lambda: _prediction(run_dir, str(lake), lake_token(str(lake)), key, False))


def explanation(run_dir: str, lake: Path, key: str) -> dict:
    """:func:`fusion.predict.predict_patient` with explanations (``modality_contributions``,
    ``image_attribution``, ``top_features``) for one patient, cached; the Why tab only asks for them."""
    return guarded("Explaining the prediction",
                   lambda: _prediction(run_dir, str(lake), lake_token(str(lake)), key, True))


@st.cache_data(show_spinner="Reading the cohort's outcomes…", max_entries=4)
def _outcomes(lake: str, token: str, run_dir: str | None) -> pd.DataFrame:
    from fusion.cohort import compute_targets, index_dates
    from fusion.predict import lake_frames

    frames, data = lake_frames(Lake(lake)), _run_config(run_dir).data
    index, index_code = index_dates(frames.conditions, frames.labels, data.index)
    keys = np.array(sorted(index.index))
    if not keys.size:  # no patient has a cancer diagnosis (nor a labels index_date): no outcomes
        return pd.DataFrame({"time": [], "event": [], "treatment": [], "response": []},
                            index=pd.Index([], name="patient_key"))
    # No features. Outcomes are shown, not learned: every treatment on record by its name (a lake's curated
    # treatments need not be the default config's, when no run is chosen), and the diagnosis is not shown from
    # here, so its labels need not be the run's classes.
    shown = data.targets.model_copy(update={"treatments": None,
                                            "survival_endpoint": _outcome_endpoint(lake, token, run_dir)})
    targets = compute_targets(frames, keys, index.reindex(keys), index_code, shown,
                              lenient=("diagnosis", "endpoint"))
    names = np.array([*targets.treatment_names, None], dtype=object)  # index -1: no treatment
    return pd.DataFrame({"time": np.asarray(targets.time, float), "event": np.asarray(targets.event, bool),
                         "treatment": names[np.asarray(targets.treatment)],
                         "response": np.asarray(targets.response, float)},
                        index=pd.Index(keys, name="patient_key"))


@st.cache_data(show_spinner=False, max_entries=16)
def _outcome_endpoint(lake: str, token: str, run_dir: str | None) -> str:
    from fusion.predict import lake_frames

    endpoint = _run_config(run_dir).data.targets.survival_endpoint
    if run_dir:
        return endpoint
    labels = lake_frames(Lake(lake)).labels
    # lower case, as compute_targets reads them
    recorded = set(labels.loc[labels["time"].notna(), "endpoint"].astype("string").dropna().str.lower())
    return recorded.pop() if len(recorded) == 1 else endpoint


def outcome_endpoint(lake: Path, run_dir: str | None) -> str:
    """The survival endpoint the Patient page shows outcomes on: the run's, else (no run chosen) the one the
    lake's curated labels record (a cBioPortal study ingested with ``--endpoint PFS``: ``pfs``), else the default
    config's (``os``)."""
    return guarded("Reading the survival endpoint",
                   lambda: _outcome_endpoint(str(lake), lake_token(str(lake)), run_dir))


def _outcome_row(lake: Path, run_dir: str | None, key: str) -> pd.Series | None:
    outcomes = guarded("Reading the patient's outcome", lambda: _outcomes(str(lake), lake_token(str(lake)), run_dir))
    return outcomes.loc[key] if key in outcomes.index else None


def observed_outcome(lake: Path, run_dir: str | None, key: str) -> dict | None:
    """The patient's observed ``time`` (days from the index date) and ``event`` (True: the endpoint happened;
    False: censored at last contact) on the run's survival endpoint; None without follow-up."""
    row = _outcome_row(lake, run_dir, key)
    if row is None or not np.isfinite(row["time"]) or row["time"] < 0:
        return None
    return {"time": float(row["time"]), "event": bool(row["event"])}


def observed_response(lake: Path, run_dir: str | None, key: str) -> dict | None:
    """The response target of the patient: ``treatment`` (the first on record after the index date) and
    ``responded`` (True: complete or partial response); None without both."""
    row = _outcome_row(lake, run_dir, key)
    if row is None or row["treatment"] is None or not np.isfinite(row["response"]):
        return None
    return {"treatment": str(row["treatment"]), "responded": bool(row["response"] == 1.0)}


@st.cache_data(show_spinner="Computing the cohort survival curve…", max_entries=4)
def _cohort_km(lake: str, token: str, run_dir: str | None) -> pd.DataFrame:
    from sksurv.nonparametric import kaplan_meier_estimator

    outcomes = _outcomes(lake, token, run_dir)
    time, event = outcomes["time"].to_numpy(), outcomes["event"].to_numpy()
    keep = np.isfinite(time) & (time >= 0)
    if keep.sum() < 2 or not event[keep].any():
        raise ServiceError("Too few patients with follow-up in the lake for a Kaplan-Meier curve.")
    times, surv, (low, high) = kaplan_meier_estimator(event[keep], time[keep], conf_type="log-log")
    return pd.DataFrame({"time": np.r_[0.0, times], "survival": np.r_[1.0, surv], "lower": np.r_[1.0, low],
                         "upper": np.r_[1.0, high], "n": int(keep.sum())})


def cohort_km(lake: Path, run_dir: str | None) -> pd.DataFrame:
    """Kaplan-Meier estimate (``time`` days, ``survival``, 95% log-log ``lower``/``upper``, ``n``) of the
    lake's cohort on the run's survival endpoint (``sksurv.nonparametric.kaplan_meier_estimator``)."""
    return guarded("The cohort survival curve", lambda: _cohort_km(str(lake), lake_token(str(lake)), run_dir))


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~:$&^\"'=])")


def md(text: object) -> str:
    """``text`` from a record, a labels file or a run, escaped for Streamlit markdown (captions, help, markdown):
    shown as written, never as an image fetched from a URL, a link, a heading, colour or LaTeX."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def modality_label(name: str) -> str:
    """The clinical name of a modality (:data:`MODALITY_LABELS`; the lake's ``features:<name>`` as ``<name>``),
    else the name itself."""
    return MODALITY_LABELS.get(name, MODALITY_LABELS.get(name.removeprefix("features:"), name))


def card_heads(meta: dict) -> dict:
    """What a run's run.json (``meta``) says its heads are, for the model card: ``survival_endpoint`` (in words,
    with its key: ``overall survival (os)``; None without a survival head) and ``diagnosis_classes`` (empty
    without a diagnosis head: a run's config lists the default classes even when the head is off)."""
    from apps.streamlit.charts import endpoint_label

    spec = meta.get("spec") or {}
    endpoint = meta.get("survival_endpoint")
    survival = spec.get("survival", True) and endpoint
    return {"survival_endpoint": f"{endpoint_label(endpoint)} ({endpoint})" if survival and
            endpoint_label(endpoint) != endpoint else (endpoint if survival else None),
            "diagnosis_classes": list(meta.get("diagnosis_classes") or []) if spec.get("n_classes", 1) else []}


def metric_groups(metrics: list[str]) -> list[tuple[str, list[str]]]:
    """A task's metrics (metrics.json's order) split into tables a 1366 px screen shows without scrolling
    sideways: ``[("", metrics)]`` when they are at most :data:`METRIC_COLUMNS`, else by
    :data:`METRIC_GROUPS` (discrimination apart from calibration and prediction error), each group in tables of
    at most :data:`METRIC_COLUMNS`. Returns ``(title, metrics)`` per table, every metric once."""
    if len(metrics) <= METRIC_COLUMNS:
        return [("", list(metrics))]
    groups: dict[str, list[str]] = {}
    for metric in metrics:
        title = next((t for t, prefixes in METRIC_GROUPS.items() if metric.startswith(prefixes)), "Other metrics")
        groups.setdefault(title, []).append(metric)
    order = [*METRIC_GROUPS, "Other metrics"]
    return [(title, groups[title][i:i + METRIC_COLUMNS]) for title in order if title in groups
            for i in range(0, len(groups[title]), METRIC_COLUMNS)]


def metric_label(key: str) -> str:
    """A metrics.json key in words (:data:`METRIC_LABELS`: ``td_auc_730d`` -> ``time-dependent AUC at 2 years``),
    else the key itself."""
    if key in METRIC_LABELS:
        return METRIC_LABELS[key]
    match = re.fullmatch(r"(.+_)(\d+(?:\.\d+)?)d", key)  # fusion.evaluate's f"{h:g}d": 730d, 365.25d
    if match and f"{match[1]}{{h}}" in METRIC_LABELS:
        days = float(match[2])
        years = next((round(days / y) for y in (365, 365.25) if days >= y and days % y == 0), None)
        horizon = f"{years} year{'s' if years != 1 else ''}" if years else f"{days:g} days"
        return METRIC_LABELS[f"{match[1]}{{h}}"].format(h=horizon)
    return key


def duration_words(days: float) -> str:
    """A follow-up time in words: days under 3 months, months under 2 years, else years (one decimal)."""
    if days < 90:
        return f"{days:.0f} day{'' if round(days) == 1 else 's'}"
    if days < 2 * DAYS_PER_YEAR:
        return f"{days / (DAYS_PER_YEAR / 12):.0f} months"
    return f"{days / DAYS_PER_YEAR:.1f} years"


def survival_at(curve: dict, days: float, column: str = "survival") -> float | None:
    """S(days) of a predicted curve {times, survival, lower, upper} (step function; None beyond its last time);
    ``column`` "lower" / "upper": the interval's bounds."""
    times = np.asarray(curve.get("times") or [], float)
    if times.size == 0 or days > times[-1] or not curve.get(column):
        return None
    i = int(np.searchsorted(times, days, side="right")) - 1
    value = curve[column][max(i, 0)]
    return None if value is None else float(value)


def chance_note(metric: dict | None, what: str) -> str | None:
    """A warning when a head's test AUROC interval reaches 0.5 (no better than chance), else None."""
    if metric is None or metric.get("ci_low") is None or metric["ci_low"] > 0.5:
        return None
    return (f"On its test patients the {what} is not clearly better than chance (AUROC {metric['value']:.2f}, "
            f"95% interval {metric['ci_low']:.2f}-{metric['ci_high']:.2f}): do not read these numbers as a finding.")


def horizon_words(days: str | float) -> str:
    """A horizon in days as the Risk tab says it: whole years as years (``365`` -> ``1 year``), else days."""
    value = float(days)
    years = value / 365
    if value > 0 and years == int(years):
        return f"{int(years)} year{'s' if years > 1 else ''}"
    return f"{value:g} days"


def survival_by_treatment_columns(prediction: dict, treatments: list[str]) -> dict[str, list[float | None]]:
    """``{"survival at 1 year": [S per treatment]}`` (:func:`horizon_words`) from a prediction's
    ``survival_by_treatment`` (runs with ``tasks.survival.response_link``), in the order of ``treatments``;
    empty without it."""
    by_treatment = prediction.get("survival_by_treatment") or {}
    if not by_treatment:
        return {}
    horizons = list(next(iter(by_treatment.values()))["at_horizons"])
    return {f"survival at {horizon_words(h)}": [by_treatment.get(t, {}).get("at_horizons", {}).get(h)
                                                for t in treatments] for h in horizons}


@st.cache_data(show_spinner=False, max_entries=8)
def _treatment_labels(run_dir: str | None) -> dict[str, str]:
    """The run's ``data.targets.treatment_labels`` from its config file (not the model: the Models page's card
    need not load it), else (no run, or a config that does not load) the default config's."""
    from fusion.config import ConfigError, load_config

    path = Path(run_dir) / RUN_CONFIG if run_dir else None
    try:
        config = load_config(path if path is not None and path.is_file() else None)
    except ConfigError:
        config = load_config(None)  # the prediction section reports the broken run
    return dict(config.data.targets.treatment_labels)


def treatment_labels(run_dir: str | None, names: list[str] | tuple[str, ...] | set[str]) -> dict[str, str]:
    """Treatment name -> what the pages call it: the run's ``data.targets.treatment_labels`` (``egfr_tki`` ->
    ``EGFR TKI``), else the name itself (a curated labels file's treatment, a config without a label); two names
    shown alike are told apart by their names in brackets. Predictions, tables' keys and the run keep the names."""
    labels = _treatment_labels(run_dir)
    shown = {name: labels.get(name) or name for name in names}
    counts = pd.Series(list(shown.values()), dtype=object).value_counts()
    return {name: label if counts[label] == 1 or label == name else f"{label} ({name})"
            for name, label in shown.items()}


def received_treatments(record: dict[str, pd.DataFrame], run_dir: str | None) -> set[str]:
    """Treatment names of the patient: their medication orders by the run's ``data.targets.treatment_map``, and
    the ``treatment`` of their curated labels (a labels file's, or a cBioPortal study's ``--treatment``
    attribute or timeline: such a lake has no medication orders)."""
    mapping = _run_config(run_dir).data.targets.treatment_map
    ordered = {mapping[c] for c in record["medications"]["code"].dropna() if c in mapping}
    labels = record.get("labels")
    curated = set() if labels is None or "treatment" not in labels else set(labels["treatment"].dropna().astype(str))
    return ordered | curated
