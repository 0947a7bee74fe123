"""FHIR types as the evaluator knows them without StructureDefinitions: the choice elements and the type names
their keys end with, the System and primitive types a JSON value can have, the R4 type hierarchy below a type
(:data:`SUBTYPES`), and the type names ``ofType``, ``is`` and ``as`` take.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ingest.fhir.fhirpath.errors import FhirPathError

# FHIR R4 choice elements ([x]); a missing key of this name is looked up as name + TypeName.
CHOICE_NAMES = frozenset((
    "value", "effective", "onset", "abatement", "deceased", "multipleBirth", "medication", "performed",
    "occurrence", "timing", "serviced", "born", "age", "defaultValue", "fixed", "pattern", "minValue",
    "maxValue", "reported", "asNeeded", "dose", "rate", "product", "allowed", "used", "collected", "time",
    "identified", "substance", "entity", "answer", "initial", "scheduled", "onBehalfOf", "subject", "item",
    "location", "diagnosis", "procedure", "content", "offset", "created", "bodySite", "reason", "event",
    "detail", "source", "target", "definition", "manufactured", "ingredient", "amount", "probability",
    "when", "started", "recorded", "duration", "quantity", "range", "paid", "benefit", "financial",
))

# The type names a choice element's key ends with (``valueQuantity``, ``onsetDateTime``): a sibling such as
# Timing.repeat's ``durationMax`` or ``durationUnit`` is no value of ``duration``.
CHOICE_TYPES = frozenset((
    "Base64Binary", "Boolean", "Canonical", "Code", "Date", "DateTime", "Decimal", "Id", "Instant", "Integer",
    "Integer64", "Markdown", "Oid", "PositiveInt", "String", "Time", "UnsignedInt", "Uri", "Url", "Uuid",
    "Address", "Age", "Annotation", "Attachment", "Availability", "CodeableConcept", "CodeableReference", "Coding",
    "ContactDetail", "ContactPoint", "Contributor", "Count", "DataRequirement", "Distance", "Dosage", "Duration",
    "Expression", "ExtendedContactDetail", "HumanName", "Identifier", "Meta", "Money", "MonetaryComponent",
    "ParameterDefinition", "Period", "Quantity", "Range", "Ratio", "RatioRange", "Reference", "RelatedArtifact",
    "SampledData", "Signature", "Timing", "TriggerDefinition", "UsageContext", "VirtualServiceDetail",
))

_INT_TYPES = frozenset(("integer", "positiveInt", "unsignedInt", "integer64"))
_STR_TYPES = frozenset(("string", "code", "id", "uri", "url", "canonical", "oid", "uuid", "markdown",
                        "base64Binary", "date", "dateTime", "instant", "time", "xhtml"))
_SYSTEM_TYPES = {"String": "string", "Integer": "integer", "Decimal": "decimal", "Boolean": "boolean",
                 "Date": "date", "DateTime": "dateTime", "Time": "time"}
# The FHIR R4 type hierarchy below a type (datatypes.html; StructureDefinition.baseDefinition): ``ofType(T)`` and
# ``is T`` keep the types derived from T too (FHIRPath N1 6.3). Age, Count, Distance, Duration, SimpleQuantity and
# MoneyQuantity are Quantity profiles (``onsetAge`` is a Quantity); code, id and markdown specialise string;
# url, canonical, oid and uuid specialise uri (no string); positiveInt and unsignedInt specialise integer.
# Date/time types, base64Binary, xhtml and integer64 derive from Element alone.
SUBTYPES: dict[str, tuple[str, ...]] = {
    "Quantity": ("Age", "Count", "Distance", "Duration", "SimpleQuantity", "MoneyQuantity"),
    "string": ("code", "id", "markdown"),
    "uri": ("url", "canonical", "oid", "uuid"),
    "integer": ("positiveInt", "unsignedInt"),
}


def is_type(value: Any, type_name: str) -> bool:
    """Whether a JSON value can be of FHIR/System type ``type_name`` (inferred from its Python type)."""
    t = _SYSTEM_TYPES.get(type_name, type_name)
    if t == "boolean":
        return type(value) is bool
    if t in _INT_TYPES:
        return type(value) is int
    if t == "decimal":
        return type(value) in (float, Decimal)
    if t in _STR_TYPES:
        return type(value) is str
    if type(value) is dict:
        rt = value.get("resourceType")
        return rt is None or rt == t or t in ("Resource", "DomainResource")
    return False


def choice_keys(name: str, type_name: str) -> tuple[str, ...]:
    """The JSON keys of choice element ``name`` of type ``type_name`` or a type derived from it (see
    :data:`SUBTYPES`): ``("onsetQuantity", "onsetAge", ...)`` for ``onset`` and ``Quantity``."""
    t = _SYSTEM_TYPES.get(type_name, type_name)
    return tuple(name + s[0].upper() + s[1:] for s in (t, *SUBTYPES.get(t, ())))


def _type_arg(node: tuple, fn: str) -> str:
    if node[0] == "member" and node[1] is None:
        return node[2]
    if node[0] == "member" and node[1] is not None and node[1][0] == "member" and node[1][1] is None:
        return node[2]  # FHIR.string or System.String
    raise FhirPathError(f"{fn}() expects a type name, e.g. {fn}(Quantity)")
