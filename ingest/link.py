"""One patient key across modalities: the crosswalk.

The canonical ``patient_key`` is the FHIR Patient id. The crosswalk table ``patient_xref`` lists, for every
Patient in ``fhir_resources``, its id and each of its identifiers (MRN and others). Non-FHIR tables carry
``patient_id`` as found in their source (DICOM PatientID, MRN in a manifest, the patient part of a sample
barcode); :func:`resolve_ids` maps them to ``patient_key``.

An id that matches no patient is *kept*: it resolves to itself, and :func:`unmatched_ids` reports it, so a lake
without any FHIR data (for example a features + labels study) still has one key per patient.

Identifier values are not unique across systems: two hospitals can both have an MRN ``1001`` (and copies of a
Synthea export share SSNs). A bare value that belongs to several patients is *ambiguous*: it links nothing
(an id with it stays unmatched) and :attr:`Crosswalk.ambiguous` counts it; such a source can name the system as
in a FHIR token, ``system|value`` (e.g. ``urn:oid:1.2.36.146.595.217.0.1|1001``), which always maps when that
pair is unique. A FHIR Patient id always maps to its own patient.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import orjson
import pyarrow as pa

from ingest.lake import Lake
from ingest.schema import SCHEMAS


@dataclass
class Crosswalk:
    """``mapping``: id value (FHIR id, identifier value, or ``system|value``) -> ``patient_key``; ``ambiguous``:
    how many identifier values belong to several patients and are left out of ``mapping``."""

    mapping: dict[str, str]
    ambiguous: int


def build_crosswalk(lake: Lake) -> Crosswalk:
    """Rebuild ``patient_xref`` from the Patient resources in ``fhir_resources``; returns its mapping."""
    if not lake.has("fhir_resources"):
        return Crosswalk({}, 0)
    table = _crosswalk_rows(lake)
    lake.write("patient_xref", table, mode="overwrite")
    return _links(table)


def _crosswalk_rows(lake: Lake) -> pa.Table:
    """The ``patient_xref`` rows of the Patients in ``fhir_resources``."""
    rows: list[dict[str, str | None]] = []
    for batch in lake.batches("fhir_resources", ["id", "json"], equals=("resource_type", "Patient")):
        for patient_id, text in zip(batch.column("id").to_pylist(), batch.column("json").to_pylist()):
            rows.append({"patient_key": patient_id, "id_kind": "fhir_id", "id_system": None,
                         "id_value": patient_id})
            for identifier in orjson.loads(text).get("identifier") or []:
                value = identifier.get("value") if isinstance(identifier, dict) else None
                if isinstance(value, str) and value:
                    system = identifier.get("system")
                    rows.append({"patient_key": patient_id, "id_kind": "identifier",
                                 "id_system": system if isinstance(system, str) else None, "id_value": value})
    return pa.Table.from_pylist(rows, schema=SCHEMAS["patient_xref"])


def crosswalk(lake: Lake) -> Crosswalk:
    """The id mapping of ``lake`` (from ``patient_xref``, or computed from ``fhir_resources`` without writing
    when that table is missing)."""
    if lake.has("patient_xref"):
        return _links(lake.read("patient_xref", ["patient_key", "id_kind", "id_system", "id_value"]))
    if lake.has("fhir_resources"):
        return _links(_crosswalk_rows(lake))
    return Crosswalk({}, 0)


def _links(xref: pa.Table) -> Crosswalk:
    """The :class:`Crosswalk` of ``patient_xref`` rows."""
    fhir_ids: dict[str, str] = {}
    bare: dict[str, set[str]] = defaultdict(set)
    qualified: dict[str, set[str]] = defaultdict(set)
    for key, kind, system, value in zip(*(xref.column(c).to_pylist()
                                         for c in ("patient_key", "id_kind", "id_system", "id_value"))):
        if kind == "fhir_id":
            fhir_ids[value] = key
            continue
        bare[value].add(key)
        if system:
            qualified[f"{system}|{value}"].add(key)
    mapping = {value: next(iter(keys)) for found in (bare, qualified) for value, keys in found.items()
               if len(keys) == 1}
    mapping.update(fhir_ids)
    return Crosswalk(mapping, ambiguous=sum(len(keys) > 1 for keys in bare.values()))


def id_map(lake: Lake) -> dict[str, str]:
    """Map every unambiguous id value (FHIR id, identifier value, ``system|value``) to its ``patient_key``."""
    return crosswalk(lake).mapping


def resolve_ids(ids: Iterable[str], mapping: dict[str, str]) -> list[str]:
    """Resolve source ids to patient keys; an id that matches no patient stays as it is (and is reported)."""
    return [mapping.get(i, i) for i in ids]


def unmatched_ids(ids: Iterable[str], mapping: dict[str, str]) -> set[str]:
    """The ids that match no FHIR patient (empty when the lake has no FHIR patients at all)."""
    if not mapping:
        return set()
    return {i for i in ids if i not in mapping}
