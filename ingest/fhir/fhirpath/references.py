"""The resource id a FHIR Reference points to: ``getReferenceKey()``, and the patient links of the pipeline."""

from __future__ import annotations

from typing import Any


def reference_key(ref: Any, type_name: str | None = None) -> str | None:
    """The resource id a FHIR Reference points to (``Patient/123``, ``http://x/Patient/123/_history/2``,
    ``urn:uuid:123``); ``None`` when the reference is absent or points to another type than ``type_name``.

    ``urn:uuid:`` / ``urn:oid:`` references carry no type: they are checked against ``Reference.type`` when
    present and otherwise accepted.
    """
    if type(ref) is not dict:
        return None
    text = ref.get("reference")
    if type(text) is not str or not text or text.startswith("#"):
        return None
    if text.startswith("urn:"):
        if type_name is not None and ref.get("type") not in (None, type_name):
            return None
        return text.rsplit(":", 1)[-1] or None
    parts = text.split("?", 1)[0].rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2:
        return None
    if type_name is not None and parts[-2] != type_name:
        return None
    return parts[-1] or None
