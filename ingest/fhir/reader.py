"""Find FHIR input files and stream them as checked FHIR R4 resources or rejects.

Inputs (:func:`discover`):

* Bulk Data NDJSON: ``*.ndjson``, ``*.ndjson.gz``, ``*.jsonl``; one resource (or Bundle) per line. A Bulk
  export folder is read file by file; its ``log.ndjson`` (export events, not resources) is skipped, and so is a
  Bulk manifest (``{"transactionTime", "request", "output"}``) found in a folder. A manifest named on the command
  line is followed: its ``output`` files are read from the manifest's folder (one without ``output`` is skipped).
  A ``.ndjson`` file whose first line is a lone ``{`` or ``[`` is pretty-printed JSON and is read as JSON.
* JSON: ``*.json`` / ``*.json.gz`` holding one resource or a Bundle (any type: transaction, batch, collection,
  searchset, ...; nested Bundles are unpacked). The Bundle wrapper itself is not stored, its entries are.
  A JSON file is read whole, up to ``JSON_MAX_BYTES`` (512 MiB of JSON text, decompressed for ``.json.gz``; a
  larger one is rejected so memory stays bounded); stream big data as NDJSON. A Bundle of
  ``STREAM_BUNDLE_BYTES`` or more is parsed one entry at a time, in two passes (the entries' fullUrls, then the
  entries), so memory is its text, its fullUrl map and one entry; a smaller file, or one that is not a plain
  Bundle object, is parsed whole (Bundles are usually one patient or one page).

References: inside a Bundle, every ``reference`` equal to an entry's ``urn:uuid:``/``urn:oid:`` fullUrl is
rewritten to ``Type/id``, anywhere in the resource, so a Bundle and a Bulk export of the same data give the same
rows. A ``urn:`` reference that matches no entry of its Bundle rejects the resource ("a reference to nothing").
An entry without ``id`` whose fullUrl is ``urn:uuid:X`` gets id ``X`` (the usual transaction-Bundle form). A
resource read on its own (an NDJSON line, a single-resource file) has no Bundle to resolve against: its ``urn:``
references are kept as they are.

Checks (:func:`check_resource`), cheap enough for every resource; ``--validate`` adds full model validation:

* ``resourceType`` present and one of the 146 FHIR R4 (4.0.1) resource types (:data:`R4_RESOURCE_TYPES`);
* not recognisably another FHIR version (:data:`VERSION_MARKERS`, profile/fhirVersion strings, other-version
  resource type names): tumorboard targets FHIR R4, such resources are rejected with the version they look like;
* ``id`` present, a string, and FHIR id syntax (``[A-Za-z0-9-.]{1,64}``);
* the JSON kind (object, array, string, bool) of ``meta`` and of the elements the shipped views read
  (:data:`ELEMENT_KINDS`);
* no JSON object repeats a key (orjson, like most parsers, would keep the last value without a word). An NDJSON
  line or JSON file that orjson writes back byte for byte cannot repeat one (every line of the Synthea and
  Pathling exports; about 1.2 us a resource); nor can other text with as many keys as orjson kept
  (:func:`_may_repeat_keys` counts them: pretty-printed Bundles, NDJSON with spaces). Text whose count differs,
  or cannot be counted exactly, is parsed once more by the standard library, which names the repeated key.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import re
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from ingest.fhir.r5_only_data import R5_ONLY_ELEMENTS  # top-level elements only R5 has (ingest.fhir.r5_only)

INVALID = "(invalid)"  # the resource type reported for records that are not (or not yet) a resource
RAW_LIMIT = 10_000
JSON_MAX_BYTES = 512 << 20  # a JSON resource or Bundle (on disk) is parsed whole; NDJSON streams
STREAM_BUNDLE_BYTES = 16 << 20  # a Bundle this large is read one entry at a time (_bundle_entry_spans)
NDJSON_SUFFIXES = (".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz")
JSON_SUFFIXES = (".json", ".json.gz")
BULK_LOG = "log.ndjson"

R4_RESOURCE_TYPES = frozenset("""
Account ActivityDefinition AdverseEvent AllergyIntolerance Appointment AppointmentResponse AuditEvent Basic
Binary BiologicallyDerivedProduct BodyStructure Bundle CapabilityStatement CarePlan CareTeam CatalogEntry ChargeItem
ChargeItemDefinition Claim ClaimResponse ClinicalImpression CodeSystem Communication CommunicationRequest
CompartmentDefinition Composition ConceptMap Condition Consent Contract Coverage CoverageEligibilityRequest
CoverageEligibilityResponse DetectedIssue Device DeviceDefinition DeviceMetric DeviceRequest DeviceUseStatement
DiagnosticReport DocumentManifest DocumentReference EffectEvidenceSynthesis Encounter Endpoint EnrollmentRequest
EnrollmentResponse EpisodeOfCare EventDefinition Evidence EvidenceVariable ExampleScenario ExplanationOfBenefit
FamilyMemberHistory Flag Goal GraphDefinition Group GuidanceResponse HealthcareService ImagingStudy Immunization
ImmunizationEvaluation ImmunizationRecommendation ImplementationGuide InsurancePlan Invoice Library Linkage List
Location Measure MeasureReport Media Medication MedicationAdministration MedicationDispense MedicationKnowledge
MedicationRequest MedicationStatement MedicinalProduct MedicinalProductAuthorization
MedicinalProductContraindication MedicinalProductIndication MedicinalProductIngredient
MedicinalProductInteraction MedicinalProductManufactured MedicinalProductPackaged MedicinalProductPharmaceutical
MedicinalProductUndesirableEffect MessageDefinition MessageHeader MolecularSequence NamingSystem NutritionOrder
Observation ObservationDefinition OperationDefinition OperationOutcome Organization OrganizationAffiliation
Parameters Patient PaymentNotice PaymentReconciliation Person PlanDefinition Practitioner PractitionerRole
Procedure Provenance Questionnaire QuestionnaireResponse RelatedPerson RequestGroup ResearchDefinition
ResearchElementDefinition ResearchStudy ResearchSubject RiskAssessment RiskEvidenceSynthesis Schedule
SearchParameter ServiceRequest Slot Specimen SpecimenDefinition StructureDefinition StructureMap Subscription
Substance SubstanceNucleicAcid SubstancePolymer SubstanceProtein SubstanceReferenceInformation
SubstanceSourceMaterial SubstanceSpecification SupplyDelivery SupplyRequest Task TerminologyCapabilities
TestReport TestScript ValueSet VerificationResult VisionPrescription
""".split())

# Resource type names that exist only in other FHIR versions: the version they point to.
OTHER_VERSION_TYPES: dict[str, str] = {
    **dict.fromkeys("""ActorDefinition ArtifactAssessment BiologicallyDerivedProductDispense ConditionDefinition
        DeviceDispense DeviceUsage EncounterHistory FormularyItem GenomicStudy ImagingSelection InventoryItem
        InventoryReport NutritionIntake Permission Requirements TestPlan Transport""".split(), "R5"),
    **dict.fromkeys("""AdministrableProductDefinition Citation ClinicalUseDefinition EvidenceReport Ingredient
        ManufacturedItemDefinition MedicinalProductDefinition NutritionProduct PackagedProductDefinition
        RegulatedAuthorization SubscriptionStatus SubscriptionTopic""".split(), "R4B/R5"),
    **dict.fromkeys("""BodySite DataElement EligibilityRequest EligibilityResponse ExpansionProfile ImagingManifest
        ProcedureRequest ProcessRequest ProcessResponse ReferralRequest Sequence ServiceDefinition""".split(),
                    "STU3"),
    **dict.fromkeys("MedicationOrder DiagnosticOrder DeviceUseRequest Order OrderResponse".split(), "DSTU2"),
}


def _has(element: str) -> Callable[[dict], bool]:
    return lambda r: element in r


def _is(element: str, kind: type) -> Callable[[dict], bool]:
    return lambda r: isinstance(r.get(element), kind)


# (resource type, test, FHIR version the data looks like, what the data shows): elements whose presence or JSON
# kind differs between R4 and the versions before or after it. Small on purpose: it catches the common cases.
VERSION_MARKERS: list[tuple[str, Callable[[dict], bool], str, str]] = [
    ("Encounter", _is("class", list), "R5", "Encounter.class is a list"),
    ("Encounter", _has("actualPeriod"), "R5", "Encounter.actualPeriod is present"),
    ("MedicationRequest", _has("medication"), "R5", "MedicationRequest.medication (CodeableReference)"),
    ("MedicationAdministration", _has("medication"), "R5",
     "MedicationAdministration.medication (CodeableReference)"),
    ("MedicationStatement", _has("medication"), "R5", "MedicationStatement.medication (CodeableReference)"),
    ("MedicationDispense", _has("medication"), "R5", "MedicationDispense.medication (CodeableReference)"),
    ("Observation", _has("triggeredBy"), "R5", "Observation.triggeredBy is present"),
    ("Condition", _has("participant"), "R5", "Condition.participant is present"),
    ("Condition", _has("patient"), "DSTU2", "Condition.patient (R4 has Condition.subject)"),
    ("Condition", _is("clinicalStatus", str), "STU3", "Condition.clinicalStatus is a code, not a CodeableConcept"),
    ("Condition", _is("verificationStatus", str), "STU3",
     "Condition.verificationStatus is a code, not a CodeableConcept"),
    ("Condition", _has("assertedDate"), "STU3", "Condition.assertedDate is present"),
    ("AllergyIntolerance", _is("clinicalStatus", str), "STU3",
     "AllergyIntolerance.clinicalStatus is a code, not a CodeableConcept"),
    ("Observation", _has("context"), "STU3", "Observation.context (R4 has Observation.encounter)"),
    ("Condition", _has("context"), "STU3", "Condition.context (R4 has Condition.encounter)"),
    ("Procedure", _has("context"), "STU3", "Procedure.context (R4 has Procedure.encounter)"),
    ("MedicationRequest", _has("context"), "STU3", "MedicationRequest.context (R4 has .encounter)"),
    ("DiagnosticReport", _has("context"), "STU3", "DiagnosticReport.context (R4 has .encounter)"),
    ("MedicationStatement", _has("taken"), "STU3", "MedicationStatement.taken is present"),
    ("Procedure", _has("notPerformed"), "STU3", "Procedure.notPerformed is present"),
]
_MARKERS_BY_TYPE: dict[str, list[tuple[Callable[[dict], bool], str, str]]] = {}
for _type, _test, _version, _what in VERSION_MARKERS:
    _MARKERS_BY_TYPE.setdefault(_type, []).append((_test, _version, _what))
_NOTHING: frozenset[str] = frozenset()

# FHIR versions named in meta.profile: a version path (``hl7.org/fhir/R5/...``) or a versioned core profile
# (``http://hl7.org/fhir/StructureDefinition/Patient|5.0.0``; an IG profile's ``|x.y`` is the IG's own version).
_PROFILE_VERSION = re.compile(
    r"^http://hl7\.org/fhir/StructureDefinition/[A-Za-z]+\|(\d+)\.|hl7\.org/fhir/(R5|R6|STU3|DSTU2|5\.0|3\.0|1\.0)/")
_MAJOR_VERSION = {"0": "DSTU1", "1": "DSTU2", "3": "STU3", "5": "R5", "6": "R6"}
_NAMED_VERSION = {"R5": "R5", "R6": "R6", "STU3": "STU3", "DSTU2": "DSTU2", "5.0": "R5", "3.0": "STU3",
                  "1.0": "DSTU2"}

BOM = b"\xef\xbb\xbf"  # UTF-8 byte order mark
_INSTANT = re.compile(r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)"
                      r"(\.\d{1,9})?(Z|[+-]((0\d|1[0-3]):[0-5]\d|14:00))")
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_KIND_NAMES = {dict: "an object", list: "an array", str: "a string", bool: "true/false"}

# JSON kind of the elements the shipped views read, checked when present (full checking is --validate).
ELEMENT_KINDS: dict[str, dict[str, type]] = {
    "Patient": {"birthDate": str, "gender": str, "deceasedDateTime": str, "deceasedBoolean": bool,
                "identifier": list, "name": list, "address": list},
    "Condition": {"subject": dict, "encounter": dict, "code": dict, "category": list, "clinicalStatus": dict,
                  "verificationStatus": dict, "onsetDateTime": str, "abatementDateTime": str,
                  "recordedDate": str, "bodySite": list, "stage": list, "extension": list},
    "Observation": {"subject": dict, "encounter": dict, "code": dict, "category": list, "status": str,
                    "valueQuantity": dict, "valueCodeableConcept": dict, "valueString": str,
                    "effectiveDateTime": str, "effectivePeriod": dict, "issued": str, "focus": list,
                    "component": list, "method": dict},
    "MedicationRequest": {"subject": dict, "encounter": dict, "medicationCodeableConcept": dict,
                          "medicationReference": dict, "authoredOn": str, "status": str, "intent": str,
                          "category": list, "dosageInstruction": list},
    "MedicationAdministration": {"subject": dict, "context": dict, "medicationCodeableConcept": dict,
                                 "medicationReference": dict, "effectiveDateTime": str,
                                 "effectivePeriod": dict, "status": str},
    "Procedure": {"subject": dict, "encounter": dict, "code": dict, "status": str, "performedDateTime": str,
                  "performedPeriod": dict, "bodySite": list},
    "Encounter": {"subject": dict, "class": dict, "type": list, "period": dict, "status": str},
}
_META_KINDS = {"versionId": str, "lastUpdated": str, "profile": list}


class FhirInputError(ValueError):
    """An input path cannot be read as FHIR (missing, or a manifest naming files that are not there)."""


@dataclass(frozen=True, slots=True)
class Task:
    """One unit of reading: a file, or a byte range of a large plain NDJSON file.

    ``first_line`` is the 1-based line number at ``start``; ``end`` is None for "to the end of the file".
    """

    path: Path
    kind: str  # "ndjson" | "json"
    start: int = 0
    end: int | None = None
    first_line: int = 1

    @property
    def size(self) -> int:
        """Bytes this task covers (compressed size for gzip), for progress."""
        end = self.end if self.end is not None else self.path.stat().st_size
        return end - self.start


@dataclass(slots=True)
class Item:
    """One record read: a checked resource, or a reject (``resource`` None, ``reason`` set)."""

    location: str  # "line 12", "entry 3", "entry 2 > entry 1", "" for the whole file
    resource_type: str  # INVALID when the record has no usable resourceType
    resource: dict | None = None
    reason: str | None = None
    raw: bytes | None = None  # a reject's text (cut at RAW_LIMIT); for an NDJSON resource its whole line
    # (kept as the resource's stored JSON: the source text, decimals exactly as written)
    text_bytes: int = 0  # source text read for this record that ``raw`` does not hold: the entry's text for the
    # first Item of a Bundle entry read on its own (so that batches of them are bounded by their text too)


@dataclass
class Discovery:
    """The files to read and the files skipped (with why)."""

    tasks: list[Task] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def sources(self) -> list[Path]:
        return sorted({t.path for t in self.tasks})


# -- discovery ---------------------------------------------------------------------------------------------
def discover(paths: Iterable[str | Path], *, chunk_bytes: int = 64 << 20) -> Discovery:
    """Expand files and folders into reading tasks.

    Plain NDJSON files larger than ``chunk_bytes`` are split into line-aligned byte ranges so that workers
    can share one big file; gzip files and JSON files are read whole. In folders, the other files are listed
    in ``skipped`` with why, and so is a lake or Delta table (say the lake being written, inside an input
    folder), which is not read.

    Raises:
        FhirInputError: a path does not exist, there is nothing to read (no FHIR file, or only empty ones), or
            a manifest names an output file that is not next to it.
    """
    found = Discovery()
    paths = [Path(raw) for raw in paths]
    for path in paths:
        if path.is_dir():
            for file in _folder_files(path, found):
                if _suffix_kind(file) is None:
                    found.skipped.append((file, "not an NDJSON or JSON file"))
                else:
                    _add_file(found, file, explicit=False, chunk_bytes=chunk_bytes)
        elif path.is_file():
            _add_file(found, path, explicit=True, chunk_bytes=chunk_bytes)
        else:
            raise FhirInputError(f"{path}: no such file or folder; pass NDJSON/JSON files or Bulk export folders")
    if not any(_holds_text(task) for task in found.tasks):
        names = ", ".join(str(p) for p in paths)
        what = "every FHIR file is empty" if found.tasks else "no FHIR files found"
        passed = "; ".join(f"{p.name} ({why})" for p, why in found.skipped[:5])
        raise FhirInputError(f"{names}: {what}, nothing to ingest (expected .ndjson, .ndjson.gz, .json or "
                             ".json.gz files, or a Bulk export folder with them)"
                             + (f"; skipped: {passed}" if passed else ""))
    return found


def _folder_files(folder: Path, found: Discovery) -> list[Path]:
    """The files under ``folder``, sorted, passing over lakes and Delta tables (noted in ``found.skipped``)."""
    files = []
    for root, dirs, names in os.walk(folder):
        here = Path(root)
        if (here / "_delta_log").is_dir() or (here / "manifest" / "_delta_log").is_dir():  # a table; a lake
            found.skipped.append((here, "a lake or Delta table, not FHIR"))
            dirs.clear()
            continue
        files.extend(here / name for name in names)
    return sorted(files)


def _holds_text(task: Task) -> bool:
    """False for an empty or whitespace-only plain file (a gzip file or a byte range counts as text)."""
    if task.path.name.lower().endswith(".gz") or task.start or task.end is not None:
        return True
    size = task.path.stat().st_size
    return size > 4096 or (size > 0 and bool(task.path.read_bytes().strip()))


def _suffix_kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(NDJSON_SUFFIXES):
        return "ndjson"
    if name.endswith(JSON_SUFFIXES):
        return "json"
    return None


def _add_file(found: Discovery, path: Path, *, explicit: bool, chunk_bytes: int) -> None:
    kind = _suffix_kind(path) or "json"
    if path.name.lower() == BULK_LOG:
        found.skipped.append((path, "Bulk Data export log"))
        return
    if kind == "json":
        manifest = _bulk_manifest(path)
        if manifest is not None:
            outputs = manifest.get("output") or []
            if not outputs:
                found.skipped.append((path, "Bulk Data manifest without output"))
            elif not explicit:
                found.skipped.append((path, "Bulk Data manifest (its folder is read instead)"))
            else:
                for out in outputs:
                    name = str(out.get("url", "")).rsplit("/", 1)[-1] if isinstance(out, dict) else ""
                    target = path.parent / name
                    if not name or not target.is_file():
                        raise FhirInputError(
                            f"{path}: manifest output {name or '(no url)'!r} is not in {path.parent}; download"
                            " the export's files next to the manifest or pass the folder")
                    _add_file(found, target, explicit=False, chunk_bytes=chunk_bytes)
            return
    if kind == "ndjson" and _pretty_printed(path):
        kind = "json"  # a pretty-printed resource or Bundle saved as .ndjson: one JSON document, not lines
    if kind == "ndjson" and not path.name.lower().endswith(".gz") and path.stat().st_size > chunk_bytes:
        found.tasks.extend(_split_ndjson(path, chunk_bytes))
    else:
        found.tasks.append(Task(path, kind))


def _pretty_printed(path: Path) -> bool:
    """True when the file's first line is a lone ``{`` or ``[`` (no NDJSON line can be)."""
    try:
        with (gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")) as fh:
            head = fh.read(4096)
    except (OSError, EOFError, zlib.error):
        return False  # the NDJSON reader reports what is wrong with the file
    return head.removeprefix(b"\xef\xbb\xbf").split(b"\n", 1)[0].strip() in (b"{", b"[")


def _bulk_manifest(path: Path) -> dict | None:
    """The parsed Bulk manifest if ``path`` is one (a small JSON object with transactionTime, no resourceType)."""
    if path.name.lower().endswith(".gz") or path.stat().st_size > (1 << 20):
        return None
    with path.open("rb") as fh:
        head = fh.read(4096)
    if b'"transactionTime"' not in head or b'"resourceType"' in head:
        return None
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) and "resourceType" not in data else None


def _split_ndjson(path: Path, chunk_bytes: int, block_bytes: int = 4 << 20) -> list[Task]:
    """Line-aligned byte ranges of about ``chunk_bytes``, each with its first line number.

    The file is scanned in blocks of ``block_bytes`` (memory stays at one block whatever the file size).
    """
    tasks = []
    start, line, lines_since_start, pos = 0, 1, 0, 0  # pos: file offset of the current block
    with path.open("rb") as fh:
        while block := fh.read(block_bytes):
            offset = 0
            while True:
                cut = block.find(b"\n", max(start + chunk_bytes - pos, offset))
                if cut < 0:
                    lines_since_start += block.count(b"\n", offset)
                    break
                lines_since_start += block.count(b"\n", offset, cut + 1)
                tasks.append(Task(path, "ndjson", start, pos + cut + 1, line))
                start, line, lines_since_start, offset = pos + cut + 1, line + lines_since_start, 0, cut + 1
            pos += len(block)
    if start < pos:
        tasks.append(Task(path, "ndjson", start, pos, line))
    return tasks


# -- reading -----------------------------------------------------------------------------------------------
class Reader:
    """Iterate the :class:`Item` s of one task; ``done_bytes`` tells how far into the task it has read."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.done_bytes = 0

    def __iter__(self) -> Iterator[Item]:
        if self.task.kind == "ndjson":
            yield from self._ndjson()
        else:
            yield from self._json()

    def _ndjson(self) -> Iterator[Item]:
        task = self.task
        gz = task.path.name.lower().endswith(".gz")
        with task.path.open("rb") as raw:
            raw.seek(task.start)
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
            line_no = task.first_line - 1
            pos = task.start
            try:
                for line in stream:
                    line_no += 1
                    pos += len(line)
                    if line_no == 1 and line.startswith(BOM):
                        line = line[len(BOM):]  # written by some Windows tools; not part of the JSON
                    self.done_bytes = (raw.tell() if gz else pos) - task.start
                    if line.strip():
                        yield from _from_line(line, f"line {line_no}")
                    if task.end is not None and pos >= task.end:
                        break
            except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
                if line_no == task.first_line - 1 and not _has_gzip_magic(task.path):
                    yield Item("line 1", INVALID, reason="not a gzip file (it does not start with the gzip bytes 1F "
                                                         "8B): rename it without .gz, or compress it")
                    return
                yield Item(f"line {line_no + 1}", INVALID,
                           reason=f"truncated or corrupt gzip file ({type(exc).__name__}): line {line_no + 1} "
                                  f"onwards could not be read, the {line_no} lines before it were; "
                                  "re-download or re-compress the file")

    def _json(self) -> Iterator[Item]:
        path = self.task.path
        gz = path.name.lower().endswith(".gz")
        too_big = Item("", INVALID, reason=f"a JSON file of more than {JSON_MAX_BYTES >> 20} MiB"
                                           f"{' once decompressed' if gz else ''} (the most read whole, so that "
                                           "memory stays bounded); export it as Bulk NDJSON, one resource per line, "
                                           "which streams")
        if not gz and self.task.size > JSON_MAX_BYTES:
            self.done_bytes = self.task.size
            yield too_big
            return
        try:
            if gz:  # the limit is on the decompressed text: a few MiB of gzip can hold GiBs of JSON
                with gzip.open(path, "rb") as fh:
                    data = fh.read(JSON_MAX_BYTES + 1)
            else:
                data = path.read_bytes()
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            yield Item("", INVALID, reason=f"truncated or corrupt gzip file ({type(exc).__name__})")
            return
        self.done_bytes = self.task.size
        if len(data) > JSON_MAX_BYTES:
            yield too_big
            return
        data = data[len(BOM):] if data.startswith(BOM) else data
        found = _bundle_entry_spans(data) if len(data) >= STREAM_BUNDLE_BYTES else None
        if found is not None:
            yield from self._bundle_entries(data, *found)
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            hint = ("; it looks like NDJSON (one resource per line): name the file .ndjson"
                    if "after document" in str(exc) and data.lstrip()[:1] == b"{" else "")
            reason = _encoding_problem(data) or f"not valid JSON: {exc}{hint}"
            yield Item("", INVALID, reason=reason, raw=data[:RAW_LIMIT])
            return
        obj, repeats = _noting_repeats(data, obj)
        yield from _from_object(obj, "", lambda: data, repeats=repeats)

    def _bundle_entries(self, data: bytes, spans: array, urls: dict[str, str]) -> Iterator[Item]:
        """The Items of a large Bundle's entries, parsed one at a time from their ``spans`` (start, end pairs)
        in ``data``, as :func:`_expand_bundle` gives them from the whole parsed Bundle."""
        for n in range(len(spans) // 2):
            start, end = spans[2 * n], spans[2 * n + 1]
            self.done_bytes = self.task.size * end // len(data)
            text = data[start:end]
            entry, repeats = _noting_repeats(text, orjson.loads(text))
            _note_full_url(entry, {})  # its id, when its urn:uuid fullUrl gives it one
            size = end - start
            for item in _expand_entry(entry, f"entry {n + 1}", urls, repeats=repeats):
                item.text_bytes, size = size, 0  # an entry (a nested Bundle: all its Items) counts once
                yield item


_WHITESPACE = re.compile(rb"[ \t\n\r]*")  # JSON's
_SCANNER = json.JSONDecoder()  # raw_decode: where one JSON value ends
SCAN_WINDOW = 4 << 20  # text decoded at a time to find where a value ends


class _ValueEnds:
    """Where the JSON value at a byte offset of ``data`` ends (the standard library's scanner, on a window of
    ``data`` decoded as Latin-1: one character per byte, and UTF-8 is ASCII-transparent, so character offsets
    are byte offsets and strings are delimited as in UTF-8)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.start, self.text = memoryview(data), 0, ""

    def __call__(self, i: int) -> int:
        size = SCAN_WINDOW
        while True:
            if not self.start <= i < self.start + len(self.text):
                self.text = ""  # freed before the next window is decoded
                self.start, self.text = i, str(self.data[i:i + size], "latin-1")
            window_end = self.start + len(self.text)
            try:
                end = self.start + _SCANNER.raw_decode(self.text, i - self.start)[1]
            except json.JSONDecodeError:
                if window_end >= len(self.data):
                    raise
            else:  # a number may go on past the window: '1.' or '1e+' cut there scans as 1 and stops short
                if end + 2 < window_end or window_end >= len(self.data):  # of the edge by up to 2 characters
                    return end
            size = 2 * max(size, window_end - i)  # the value goes past the window: twice as much from i
            self.text = ""


def _bundle_entry_spans(data: bytes) -> tuple[array, dict[str, str]] | None:
    """Where each entry of the Bundle ``data`` starts and ends (``array`` of start, end pairs), and the
    ``Type/id`` of each ``urn:`` fullUrl: the first of two passes over a large Bundle, which holds one entry
    parsed at a time instead of the whole Bundle (a 358 MB Bundle took 2.9 GB parsed whole). None when
    ``data`` is not a JSON object with resourceType Bundle and an entry array, or is anything but plain:
    a top-level key twice, text orjson would not read. It is then parsed whole, which reports what is wrong.
    """
    spans, urls, top = array("q"), {}, {}
    value_end = _ValueEnds(data)

    def skip(i: int) -> int:
        return _WHITESPACE.match(data, i).end()

    try:
        i = skip(0)
        if data[i:i + 1] != b"{":
            return None
        i = skip(i + 1)
        while True:
            if data[i:i + 1] != b'"':
                return None
            end = value_end(i)
            key = orjson.loads(data[i:end])
            i = skip(end)
            if key in top or data[i:i + 1] != b":":
                return None
            i = skip(i + 1)
            if key != "entry":
                end = value_end(i)
                top[key] = orjson.loads(data[i:end])
                if key == "resourceType" and top[key] != "Bundle":
                    return None  # one large resource: read no further (its big values would be decoded twice)
                i = skip(end)
            elif data[i:i + 1] != b"[":
                return None
            else:
                top[key] = None
                i = skip(i + 1)
                while data[i:i + 1] != b"]":
                    end = value_end(i)
                    _note_full_url(orjson.loads(data[i:end]), urls)  # orjson's reading, as pass two reads it
                    spans.extend((i, end))
                    i = skip(end)
                    if data[i:i + 1] == b",":
                        i = skip(i + 1)
                        if data[i:i + 1] == b"]":
                            return None  # a trailing comma
                    elif data[i:i + 1] != b"]":
                        return None
                i = skip(i + 1)
            if data[i:i + 1] == b",":
                i = skip(i + 1)
            elif data[i:i + 1] == b"}":
                break
            else:
                return None
        if skip(i + 1) != len(data):
            return None
    except (ValueError, RecursionError):  # JSONDecodeError and orjson's are ValueErrors
        return None
    return (spans, urls) if top.get("resourceType") == "Bundle" and "entry" in top else None


def _has_gzip_magic(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _from_line(line: bytes, location: str) -> Iterator[Item]:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        yield Item(location, INVALID, reason=_encoding_problem(line) or f"not valid JSON: {exc}", raw=line[:RAW_LIMIT])
        return
    obj, repeats = _noting_repeats(line, obj)
    yield from _from_object(obj, location, lambda: line, source_text=line, repeats=repeats)


def _noting_repeats(text: bytes, parsed: object) -> tuple[object, bool]:
    """``parsed`` (orjson's reading of ``text``) and False when ``text`` provably repeats no key; else ``text``
    parsed again by :func:`_parse_noting_repeats`, and whether some object in it repeats a key."""
    if not _may_repeat_keys(text, parsed):
        return parsed, False
    try:
        noted, repeats = _parse_noting_repeats(text)
    except (ValueError, RecursionError):  # nested deeper than the standard library parses: not checked
        return parsed, False
    return (noted, True) if repeats else (parsed, False)


_SPACE_BEFORE_COLON = re.compile(rb'"\s+:')


def _may_repeat_keys(text: bytes, parsed: object) -> bool:
    """False when the JSON ``text`` cannot hold an object that repeats a key, given ``parsed``, orjson's
    reading of it (which keeps one value per key).

    Either orjson writes ``parsed`` back as ``text`` byte for byte, or ``text`` has as many keys as ``parsed``:
    in JSON a key, and only a key, ends with an unescaped quote followed by a colon, so the keys are the
    ``":`` minus the ``\\":`` (an escaped quote in a string). The count is exact unless there is whitespace
    between a key and its colon, or an escaped backslash (``\\\\"`` ends a string): then True (check it)."""
    compact = orjson.dumps(parsed)
    if compact == text.strip():
        return False
    if _SPACE_BEFORE_COLON.search(text):
        return True
    keys, kept = _key_count(text), _key_count(compact)
    return keys is None or kept is None or keys != kept


def _key_count(text: bytes) -> int | None:
    """The keys in JSON ``text`` without whitespace before a colon; None when it has an escaped backslash."""
    keys = text.count(b'":')
    if b"\\" not in text:  # no escape at all (most resources): one scan
        return keys
    if b"\\\\" in text:
        return None
    return keys - text.count(b'\\":')


class _RepeatedKey(dict):
    """A JSON object that repeats the key ``repeated`` (parsed by :func:`_parse_noting_repeats`)."""

    repeated: str = ""


def _parse_noting_repeats(data: bytes) -> tuple[object, bool]:
    """``data`` parsed by the standard library with every object that repeats a key marked
    (:class:`_RepeatedKey`), and whether any does. orjson, like most parsers, keeps the last value of a
    repeated key without a word. For text that orjson parsed: numbers come out as orjson reads them, so
    both parsers give the same values. Raises RecursionError on objects nested deeper than it parses."""
    found = False

    def note(pairs: list[tuple[str, object]]) -> dict:
        nonlocal found
        obj = dict(pairs)
        if len(obj) == len(pairs):
            return obj
        found = True
        seen: set[str] = set()
        noted = _RepeatedKey(obj)
        noted.repeated = next(k for k, _ in pairs if k in seen or seen.add(k))
        return noted

    return json.loads(data.decode("utf-8"), object_pairs_hook=note, parse_int=_int_as_orjson), found


def _int_as_orjson(text: str) -> int | float:
    value = int(text)
    return value if -(2**63) <= value < 2**64 else float(text)  # orjson reads wider integers as doubles


def _repeated_key(node: object) -> str | None:
    """The first repeated key marked in ``node`` or the objects and arrays inside it."""
    if isinstance(node, _RepeatedKey):
        return node.repeated
    for child in node.values() if isinstance(node, dict) else node if isinstance(node, list) else ():
        if isinstance(child, (dict, list)) and (key := _repeated_key(child)) is not None:
            return key
    return None


def _repeat_reason(key: str) -> str:
    return (f"a JSON object repeats the key {key[:64]!r}, so which value is meant is unknown (FHIR JSON must not "
            "repeat a key; parsers keep the last one silently): remove the wrong one")


def _encoding_problem(data: bytes) -> str | None:
    """Why ``data`` is not UTF-8 text (the encoding FHIR JSON must use), with the fix; None when it is."""
    half_nul = b"\x00" in data[:4] and data.strip(b"\x00\r\n") and 3 * data.count(b"\x00") >= len(data)
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or half_nul:  # a BOM, or every other byte NUL (not a NUL line)
        return ("the text is UTF-16, not UTF-8 as FHIR JSON must be: re-encode the file (e.g. iconv -f utf-16 "
                "-t utf-8)")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (f"not UTF-8 (byte 0x{data[exc.start]:02X} at byte {exc.start + 1}), as FHIR JSON must be: "
                "re-encode the file from its encoding (e.g. iconv -f cp1252 -t utf-8)")
    return None


def _from_object(obj: object, location: str, raw: Callable[[], bytes], source_text: bytes | None = None, *,
                 repeats: bool = False) -> Iterator[Item]:
    """``repeats``: ``obj`` came from :func:`_parse_noting_repeats` (some object in it repeats a key)."""
    if isinstance(obj, dict) and obj.get("resourceType") == "Bundle":
        yield from _expand_bundle(obj, location, {}, repeats=repeats)
        return
    yield _checked(obj, location, raw, source_text, repeats=repeats)


def _checked(obj: object, location: str, raw: Callable[[], bytes], source_text: bytes | None = None, *,
             repeats: bool = False) -> Item:
    """An accepted Item (with ``raw`` = ``source_text`` stripped, when given), or a reject whose reason comes
    from :func:`check_resource` or, when ``repeats``, names a repeated key."""
    problem = check_resource(obj)
    if problem is None and repeats and (key := _repeated_key(obj)) is not None:
        problem = _repeat_reason(key)
    if problem is not None:
        rtype = obj.get("resourceType") if isinstance(obj, dict) else None
        label = rtype if isinstance(rtype, str) and rtype in R4_RESOURCE_TYPES else INVALID
        return Item(location, label, reason=problem, raw=raw()[:RAW_LIMIT])
    return Item(location, obj["resourceType"], resource=obj,
                raw=source_text.strip() if source_text is not None else None)


def _expand_bundle(bundle: dict, location: str, outer: dict[str, str], *, repeats: bool = False) -> Iterator[Item]:
    """Yield the entries of a Bundle (recursively), with ``urn:`` references resolved to ``Type/id``;
    ``repeats``: an object in it repeats a key (the entries holding one are rejected)."""
    entries = bundle.get("entry") or []
    prefix = f"{location} > " if location else ""
    if not isinstance(entries, list):
        yield Item(location, INVALID, reason="Bundle.entry is not an array", raw=orjson.dumps(bundle)[:RAW_LIMIT])
        return
    urls = dict(outer)
    for entry in entries:
        _note_full_url(entry, urls)
    for n, entry in enumerate(entries, start=1):
        yield from _expand_entry(entry, f"{prefix}entry {n}", urls, repeats=repeats)


def _note_full_url(entry: object, urls: dict[str, str]) -> None:
    """Add ``fullUrl -> Type/id`` to ``urls`` for an entry with a ``urn:`` fullUrl; an entry without ``id`` whose
    fullUrl is ``urn:uuid:X`` gets id ``X`` (in place)."""
    res = entry.get("resource") if isinstance(entry, dict) else None
    full_url = entry.get("fullUrl") if isinstance(entry, dict) else None
    if not isinstance(res, dict) or not isinstance(full_url, str) or not full_url.startswith("urn:"):
        return
    if "id" not in res and full_url.startswith("urn:uuid:"):
        res["id"] = full_url[len("urn:uuid:"):]
    if isinstance(res.get("resourceType"), str) and isinstance(res.get("id"), str):
        urls[full_url] = f"{res['resourceType']}/{res['id']}"


def _expand_entry(entry: object, where: str, urls: dict[str, str], *, repeats: bool) -> Iterator[Item]:
    """The Item(s) of one Bundle entry (after :func:`_note_full_url` of every entry of its Bundle)."""
    res = entry.get("resource") if isinstance(entry, dict) else None
    if not isinstance(res, dict):
        reason = "Bundle entry has no resource" if res is None else "Bundle entry resource is not an object"
        yield Item(where, INVALID, reason=reason, raw=orjson.dumps(entry)[:RAW_LIMIT])
        return
    if res.get("resourceType") == "Bundle":
        yield from _expand_bundle(res, where, urls, repeats=repeats)
        return
    if repeats and (key := _repeated_key(entry)) is not None:
        rtype = res.get("resourceType")
        label = rtype if isinstance(rtype, str) and rtype in R4_RESOURCE_TYPES else INVALID
        yield Item(where, label, reason=_repeat_reason(key), raw=orjson.dumps(entry)[:RAW_LIMIT])
        return
    broken = _resolve(res, urls)
    if broken:
        rtype = res.get("resourceType")
        label = rtype if isinstance(rtype, str) and rtype in R4_RESOURCE_TYPES else INVALID
        elements = ", ".join(f"{label}.{e}" for e in sorted(set(broken))[:5])
        yield Item(where, label, reason=f"a reference to nothing: {elements} (a urn: reference matching no entry "
                                        "fullUrl in the Bundle); add the entry it points to, or write it as "
                                        "Type/id", raw=orjson.dumps(res)[:RAW_LIMIT])
        return
    yield _checked(res, where, lambda r=res: orjson.dumps(r))


def _resolve(node: object, urls: dict[str, str], path: str = "") -> list[str]:
    """Rewrite ``reference`` values found in ``urls`` in place; return the elements (e.g. ``subject``) of the
    ``urn:`` ones that did not match."""
    broken: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                if value in urls:
                    node[key] = urls[value]
                elif value.startswith("urn:"):
                    broken.append(path or "reference")
            elif isinstance(value, (dict, list)):
                broken += _resolve(value, urls, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for value in node:
            if isinstance(value, (dict, list)):
                broken += _resolve(value, urls, path)
    return broken


# -- checks ------------------------------------------------------------------------------------------------
def check_resource(obj: object) -> str | None:
    """Why ``obj`` is not an acceptable FHIR R4 resource, or None when it is. Messages carry no data values."""
    if isinstance(obj, list):
        return ("not a FHIR resource: the JSON is an array; FHIR files hold one resource or a Bundle, so write "
                "the array as NDJSON (one resource per line) or wrap it in a collection Bundle")
    if not isinstance(obj, dict):
        return f"not a FHIR resource: the JSON is {_kind(obj)}, not an object with resourceType"
    rtype = obj.get("resourceType")
    if rtype is None:
        return "not a FHIR resource: no resourceType"
    if not isinstance(rtype, str):
        return f"resourceType must be a string, found {_kind(rtype)}"
    if rtype not in R4_RESOURCE_TYPES:
        other = OTHER_VERSION_TYPES.get(rtype)
        if other:
            return f"{rtype} is a FHIR {other} resource type, not FHIR R4; tumorboard targets FHIR R4 (4.0.1)"
        return f"unknown resourceType {rtype[:64]!r}: not one of the 146 FHIR R4 resource types"
    version = detect_version(obj)
    if version is not None:
        found, what = version
        return f"looks like FHIR {found}, not R4 ({what}); tumorboard targets FHIR R4 (4.0.1)"
    rid = obj.get("id")
    if rid is None:
        return f"{rtype} has no id"
    if not isinstance(rid, str):
        return f"{rtype}.id must be a string, found {_kind(rid)}"
    if not _ID.fullmatch(rid):
        return f"{rtype}.id is not a FHIR id (1-64 of A-Z a-z 0-9 - .)"
    meta = obj.get("meta")
    if meta is not None:
        if not isinstance(meta, dict):
            return f"{rtype}.meta must be an object, found {_kind(meta)}"
        for element, kind in _META_KINDS.items():
            value = meta.get(element)
            if value is not None and not isinstance(value, kind):
                return f"{rtype}.meta.{element} must be {_KIND_NAMES[kind]}, found {_kind(value)}"
        updated = meta.get("lastUpdated")
        if updated is not None and not _INSTANT.fullmatch(updated):
            return (f"{rtype}.meta.lastUpdated is not a FHIR instant (YYYY-MM-DDThh:mm:ss[.sss] with Z or +hh:mm); "
                    "it decides which version of the resource is newest")
    kinds = ELEMENT_KINDS.get(rtype)
    if kinds:
        for element, value in obj.items():  # a resource has fewer elements than its type defines
            kind = kinds.get(element)
            if kind is not None and value is not None and not isinstance(value, kind):
                return f"{rtype}.{element} must be {_KIND_NAMES[kind]}, found {_kind(value)}"
    return None


def detect_version(resource: dict) -> tuple[str, str] | None:
    """``(version, evidence)`` when the resource says it is not FHIR R4 (see :data:`VERSION_MARKERS`)."""
    meta = resource.get("meta")
    profiles = meta.get("profile") if isinstance(meta, dict) else None
    for profile in profiles if isinstance(profiles, list) else ():
        if isinstance(profile, str):
            found = _profile_version(profile)
            if found:
                return found, "meta.profile names that version"
    fhir_version = resource.get("fhirVersion")
    for value in fhir_version if isinstance(fhir_version, list) else [fhir_version]:
        if isinstance(value, str) and value[:1] in _MAJOR_VERSION:
            return _MAJOR_VERSION[value[:1]], f"fhirVersion {value[:16]}"
    rtype = resource.get("resourceType")
    for test, version, what in _MARKERS_BY_TYPE.get(rtype, ()):
        if test(resource):
            return version, what
    r5_only = R5_ONLY_ELEMENTS.get(rtype, _NOTHING) if isinstance(rtype, str) else _NOTHING
    if r5_only.isdisjoint(resource):
        return None
    element = next(e for e in resource if e in r5_only)
    return "R5", f"{rtype}.{element.lstrip('_')} is an R5 element, not R4"


@functools.lru_cache(maxsize=4096)  # an export repeats a handful of profile URLs
def _profile_version(profile: str) -> str | None:
    match = _PROFILE_VERSION.search(profile)
    if match is None:
        return None
    if match.group(2):
        return _NAMED_VERSION[match.group(2)]
    return _MAJOR_VERSION.get(match.group(1))


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    return _KIND_NAMES.get(type(value), type(value).__name__)
