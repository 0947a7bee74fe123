"""One patient key across modalities: the crosswalk.

The canonical ``patient_key`` is the FHIR Patient id. The crosswalk table ``patient_xref`` lists, for every
Patient in ``fhir_resources``, its id and each of its identifiers (MRN and others). Non-FHIR tables carry
``patient_id`` as found in their source (DICOM PatientID, MRN in a manifest, the patient part of a sample
barcode); :func:`resolve_ids` maps them to ``patient_key``.

An id that matches no patient is *kept*: it resolves to itself, and :func:`unmatched_ids` reports it, so a lake
without any FHIR data (for example a features + labels study) still has one key per patient.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson
import pyarrow as pa

from ingest.lake import Lake
from ingest.schema import SCHEMAS


class CrosswalkConflict(ValueError):
    """One identifier value belongs to several patients."""


def build_crosswalk(lake: Lake) -> int:
    """Rebuild ``patient_xref`` from the Patient resources in ``fhir_resources``; returns its row count."""
    if not lake.has("fhir_resources"):
        return 0
    rows: list[dict[str, str | None]] = []
    for batch in lake.batches("fhir_resources", ["id", "json"], equals=("resource_type", "Patient")):
        for patient_id, text in zip(batch.column("id").to_pylist(), batch.column("json").to_pylist()):
            rows.append({"patient_key": patient_id, "id_kind": "fhir_id", "id_system": None,
                         "id_value": patient_id})
            for identifier in orjson.loads(text).get("identifier") or []:
                value = identifier.get("value") if isinstance(identifier, dict) else None
                if isinstance(value, str) and value:
                    rows.append({"patient_key": patient_id, "id_kind": "identifier",
                                 "id_system": identifier.get("system"), "id_value": value})
    table = pa.Table.from_pylist(rows, schema=SCHEMAS["patient_xref"])
    lake.write("patient_xref", table, mode="overwrite")
    return table.num_rows


def id_map(lake: Lake) -> dict[str, str]:
    """Map every known id value (FHIR id or identifier value) to its ``patient_key``.

    Raises:
        CrosswalkConflict: an identifier value is shared by several patients (the message gives counts only).
    """
    if not lake.has("patient_xref") and lake.has("fhir_resources"):
        build_crosswalk(lake)
    if not lake.has("patient_xref"):
        return {}
    xref = lake.read("patient_xref", ["patient_key", "id_value"])
    mapping: dict[str, str] = {}
    conflicts = 0
    for key, value in zip(xref.column("patient_key").to_pylist(), xref.column("id_value").to_pylist()):
        if mapping.setdefault(value, key) != key:
            conflicts += 1
    if conflicts:
        raise CrosswalkConflict(
            f"{conflicts} identifier value(s) in {lake.path / 'patient_xref'} belong to more than one Patient;"
            " give each patient a unique identifier system/value, or drop the duplicates from the export")
    return mapping


def resolve_ids(ids: Iterable[str], mapping: dict[str, str]) -> list[str]:
    """Resolve source ids to patient keys; an id that matches no patient stays as it is (and is reported)."""
    return [mapping.get(i, i) for i in ids]


def unmatched_ids(ids: Iterable[str], mapping: dict[str, str]) -> set[str]:
    """The ids that match no FHIR patient (empty when the lake has no FHIR patients at all)."""
    if not mapping:
        return set()
    return {i for i in ids if i not in mapping}
