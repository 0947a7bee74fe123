"""What a lake holds: row counts, ingest runs, rejects by reason, and per-patient modality coverage."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import pyarrow.compute as pc

from ingest.lake import Lake
from ingest.link import crosswalk, id_map, resolve_ids, unmatched_ids

# modality name -> (table, id column); FHIR rows carry the key itself.
MODALITY_SOURCES = {
    "genomics": ("variants", "patient_id"),
    "images": ("images", "patient_id"),
    "labels": ("labels", "patient_id"),
}


@dataclass
class LakeStatus:
    """A summary of one lake.

    Attributes:
        tables: table name -> row count.
        runs: the manifest, newest first (run_id, command, finished_at, status, counts).
        rejects: modality, reason, count (distinct records: one rejected by several runs counts once), one
            example location and when a run last rejected a record for it (``last_seen``, text; the table is a log
            of every run, so a reason fixed since stays listed with its old date), most frequent first.
        coverage: one row per patient key, one bool column per modality: ``fhir`` (a Patient resource) and what
            the FHIR record holds (``fhir:conditions``, ``fhir:observations``, ``fhir:medications``,
            ``fhir:procedures``, ``fhir:encounters``: at least one such resource), ``genomics``, ``images``,
            ``labels``, ``features:<name>``.
        unmatched: modality -> number of ids that match no FHIR patient (kept under their own id).
        ambiguous: identifier values shared by several FHIR patients (they link nothing; see
            :mod:`ingest.link`).
    """

    tables: dict[str, int]
    runs: pd.DataFrame
    rejects: pd.DataFrame
    coverage: pd.DataFrame
    unmatched: dict[str, int] = field(default_factory=dict)
    ambiguous: int = 0

    def coverage_summary(self) -> pd.DataFrame:
        """Per modality: patients with it and their share of all patients."""
        if self.coverage.empty:
            return pd.DataFrame(columns=["modality", "patients", "fraction"])
        counts = self.coverage.drop(columns="patient_key").sum()
        return pd.DataFrame({"modality": counts.index, "patients": counts.values.astype(int),
                             "fraction": (counts.values / len(self.coverage)).round(3)})

# The clinical records counted per patient in the coverage, name -> FHIR resource types: a Patient resource alone
# ("fhir") says nothing about what a patient's record holds (a Bulk export without its Observation file).
FHIR_RECORDS = {"fhir:conditions": ("Condition",), "fhir:observations": ("Observation",),
                "fhir:medications": ("MedicationRequest", "MedicationAdministration", "MedicationStatement"),
                "fhir:procedures": ("Procedure",), "fhir:encounters": ("Encounter",)}



# a record rejected again by a re-run counts once; the example is the record rejected first
REJECTS_MEMORY = "256MB"  # DuckDB's working memory for counting rejects; beyond it, it spills to disk
# where in its record a text stops being UTF-8: per-record detail that would make each such reject a reason of its own
UTF8_POSITION = r" \(byte 0x[0-9A-Fa-f]+ at byte [0-9]+\)"
REJECTS_BY_REASON = f"""
WITH records AS (
    SELECT modality, regexp_replace(reason, '{UTF8_POSITION}', '') AS reason, source, location,
           max(rejected_at) AS rejected_at
    FROM rejects GROUP BY ALL)
SELECT modality, reason, count(*) AS count,
       arg_min(source || ' ' || coalesce(location, ''), rejected_at) AS example, max(rejected_at) AS last_seen
FROM records GROUP BY modality, reason ORDER BY count DESC, modality, reason
"""

def fhir_record_patients(lake: Lake) -> dict[str, set[str]]:
    """:data:`FHIR_RECORDS` name -> patient keys with at least one such resource (every name, empty sets
    included, when the lake has FHIR resources; none otherwise)."""
    if not lake.has("fhir_resources"):
        return {}
    table = lake.read("fhir_resources", ["resource_type", "patient_key"])
    pairs = table.filter(pc.is_valid(table.column("patient_key"))).group_by(["resource_type", "patient_key"]) \
        .aggregate([]).to_pandas()
    by_type = pairs.groupby("resource_type")["patient_key"].agg(set).to_dict()
    return {name: set().union(*(by_type.get(t, set()) for t in types)) for name, types in FHIR_RECORDS.items()}


def patient_modalities(lake: Lake, mapping: dict[str, str] | None = None) -> dict[str, set[str]]:
    """Modality name -> set of patient keys that have it (``fhir``, ``genomics``, ``images``, ``labels``,
    ``features:<name>`` for each extra modality)."""
    mapping = id_map(lake) if mapping is None else mapping
    present: dict[str, set[str]] = {}
    if lake.has("fhir_resources"):
        batches = lake.batches("fhir_resources", ["id"], equals=("resource_type", "Patient"))
        present["fhir"] = {key for batch in batches for key in batch.column("id").to_pylist()}
    for modality, (table, column) in MODALITY_SOURCES.items():
        if lake.has(table):
            ids = pc.unique(lake.read(table, [column]).column(column)).to_pylist()
            present[modality] = set(resolve_ids(ids, mapping))
    if lake.has("features"):
        frame = lake.read("features", ["patient_id", "modality"]).group_by(["patient_id", "modality"]) \
            .aggregate([]).to_pandas()
        for name, group in frame.groupby("modality"):
            present[f"features:{name}"] = set(resolve_ids(group["patient_id"], mapping))
    return present


def lake_status(lake: Lake) -> LakeStatus:
    """Summarise ``lake`` (reads only)."""
    links = crosswalk(lake)
    mapping = links.mapping
    tables = {name: lake.count_rows(name) for name in lake.tables()}
    runs = pd.DataFrame(columns=["run_id", "command", "finished_at", "status", "counts"])
    if lake.has("manifest"):
        runs = lake.read("manifest", list(runs.columns)).to_pandas() \
            .sort_values("finished_at", ascending=False, ignore_index=True)
    rejects = pd.DataFrame(columns=["modality", "reason", "count", "example", "last_seen"])
    if lake.has("rejects"):
        # DuckDB, spilling past REJECTS_MEMORY: not one Python object per reject, nor a hash table of them all
        rejects = lake.sql(REJECTS_BY_REASON, memory_limit=REJECTS_MEMORY).to_pandas()
        rejects["last_seen"] = pd.to_datetime(rejects["last_seen"], utc=True).dt.strftime("%Y-%m-%d %H:%M UTC")
    present = patient_modalities(lake, mapping)
    keys = sorted(set().union(*present.values())) if present else []
    for name, members in fhir_record_patients(lake).items():  # what the FHIR record of each patient holds
        present[name] = members & set(keys)
    coverage = pd.DataFrame({"patient_key": keys})
    for modality, members in present.items():
        coverage[modality] = coverage["patient_key"].isin(members)
    unmatched = {}
    for modality, (table, column) in MODALITY_SOURCES.items():
        if lake.has(table):
            ids = pc.unique(lake.read(table, [column]).column(column)).to_pylist()
            unmatched[modality] = len(unmatched_ids(ids, mapping))
    if lake.has("features"):
        ids = pc.unique(lake.read("features", ["patient_id"]).column("patient_id")).to_pylist()
        unmatched["features"] = len(unmatched_ids(ids, mapping))
    return LakeStatus(tables=tables, runs=runs, rejects=rejects, coverage=coverage, unmatched=unmatched,
                      ambiguous=links.ambiguous)
