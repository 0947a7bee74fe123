"""The lake contract: the Arrow schema of every lake table, in one place.

Every table that tumorboard writes is declared here (views produced by user ViewDefinitions are the one
exception: their schema comes from the view and is registered at run time with :func:`register`).

Conventions (shared by ingest and fusion):

* ``patient_key`` is the canonical patient key: the FHIR ``Patient`` resource id. Tables fed from non-FHIR
  sources carry ``patient_id``, the identifier exactly as found in the source (MRN, DICOM PatientID, the
  patient part of a sample barcode); ``ingest.link`` maps it to ``patient_key`` through the crosswalk.
* times and durations are in days as ``float64``; ``event`` columns are ``bool``;
* dates are ``timestamp[us, tz=UTC]``;
* codes are three columns ``<x>_system``, ``<x>_code``, ``<x>_display``, never a bare code.

Fields declared ``nullable=False`` are *required*: Arrow accepts nulls in them, so :func:`conform` checks them.
The schema version lives in every schema's metadata (``tumorboard.schema_version``) and units in field metadata
(``unit``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

SCHEMA_VERSION = "1"
TIMESTAMP = pa.timestamp("us", tz="UTC")


class SchemaError(ValueError):
    """A table does not satisfy the lake contract."""


def _field(name: str, type_: pa.DataType, *, required: bool = False, unit: str | None = None,
           doc: str | None = None) -> pa.Field:
    metadata = {}
    if unit:
        metadata["unit"] = unit
    if doc:
        metadata["doc"] = doc
    return pa.field(name, type_, nullable=not required, metadata=metadata or None)


def _schema(*fields: pa.Field, keys: tuple[str, ...] = ()) -> pa.Schema:
    metadata = {"tumorboard.schema_version": SCHEMA_VERSION}
    if keys:
        metadata["tumorboard.keys"] = ",".join(keys)
    return pa.schema(list(fields), metadata=metadata)


def _code(prefix: str) -> list[pa.Field]:
    return [_field(f"{prefix}_system", pa.string()), _field(f"{prefix}_code", pa.string()),
            _field(f"{prefix}_display", pa.string())]


SCHEMAS: dict[str, pa.Schema] = {
    # Ingest bookkeeping -------------------------------------------------------------------------------
    "manifest": _schema(
        _field("run_id", pa.string(), required=True),
        _field("command", pa.string(), required=True),
        _field("started_at", TIMESTAMP, required=True),
        _field("finished_at", TIMESTAMP, required=True),
        _field("tumorboard_version", pa.string(), required=True),
        _field("schema_version", pa.string(), required=True),
        _field("sources", pa.list_(pa.string()), required=True, doc="input files and folders"),
        _field("counts", pa.string(), required=True, doc="JSON object of counts"),
        _field("status", pa.string(), required=True, doc="ok | partial (some records rejected)"),
        keys=("run_id",),
    ),
    "rejects": _schema(
        _field("run_id", pa.string(), required=True),
        _field("modality", pa.string(), required=True, doc="fhir | variants | images | features | labels"),
        _field("source", pa.string(), required=True, doc="file the record came from"),
        _field("location", pa.string(), doc="line N, entry N, row N, or empty for a whole file"),
        _field("reason", pa.string(), required=True),
        _field("raw", pa.string(), doc="the rejected text, truncated to 10,000 characters"),
        _field("rejected_at", TIMESTAMP, required=True),
    ),
    "patient_xref": _schema(
        _field("patient_key", pa.string(), required=True),
        _field("id_kind", pa.string(), required=True, doc="fhir_id | identifier"),
        _field("id_system", pa.string(), doc="Identifier.system, or empty"),
        _field("id_value", pa.string(), required=True),
        keys=("patient_key", "id_kind", "id_value"),
    ),
    # FHIR --------------------------------------------------------------------------------------------
    "fhir_resources": _schema(
        _field("resource_type", pa.string(), required=True),
        _field("id", pa.string(), required=True),
        _field("patient_key", pa.string(), doc="Patient id the resource belongs to, if any"),
        _field("version_id", pa.string()),
        _field("last_updated", TIMESTAMP),
        _field("source", pa.string(), required=True),
        _field("json", pa.string(), required=True,
               doc="the resource's JSON: its NDJSON line as written, else compact JSON (Bundle urn: references"
                   " resolved)"),
        keys=("resource_type", "id"),
    ),
    # Genomics ----------------------------------------------------------------------------------------
    "variants": _schema(
        _field("patient_id", pa.string(), required=True),
        _field("sample_id", pa.string(), required=True),
        _field("chrom", pa.string(), required=True),
        _field("pos", pa.int64(), required=True, unit="1-based position"),
        _field("ref", pa.string(), required=True),
        _field("alt", pa.string(), required=True),
        _field("gene", pa.string()),
        _field("consequence", pa.string(), doc="MAF Variant_Classification vocabulary"),
        _field("hgvsp", pa.string(), doc="short protein change, e.g. p.L858R"),
        _field("vaf", pa.float64(), unit="fraction"),
        _field("depth", pa.int64(), unit="reads"),
        _field("filter", pa.string()),
        _field("source_file", pa.string(), required=True),
        _field("variant_key", pa.string(), required=True, doc="chrom:pos:ref:alt"),
        keys=("sample_id", "variant_key"),
    ),
    "gene_status": _schema(
        _field("patient_id", pa.string(), required=True),
        _field("sample_id", pa.string(), required=True),
        _field("gene", pa.string(), required=True),
        _field("mutated", pa.bool_(), required=True, doc="any non-silent variant in the gene"),
        _field("n_variants", pa.int64(), required=True),
        _field("collected", TIMESTAMP, doc="specimen collection date (sample map's collected_date), as the last "
                                           "instant it may denote (a day: its end); null: not given"),
        keys=("sample_id", "gene"),
    ),
    "tmb": _schema(
        _field("patient_id", pa.string(), required=True),
        _field("sample_id", pa.string(), required=True),
        _field("n_nonsilent", pa.int64(), required=True),
        _field("panel_size_mb", pa.float64(), required=True, unit="Mb"),
        _field("tmb_per_mb", pa.float64(), required=True, unit="mutations/Mb"),
        _field("collected", TIMESTAMP, doc="specimen collection date (sample map's collected_date), as the last "
                                           "instant it may denote (a day: its end); null: not given"),
        keys=("sample_id",),
    ),
    # Images ------------------------------------------------------------------------------------------
    "images": _schema(
        _field("image_id", pa.string(), required=True),
        _field("patient_id", pa.string(), required=True),
        _field("modality", pa.string()),
        _field("body_part", pa.string()),
        _field("study_date", TIMESTAMP),
        _field("study_uid", pa.string()),
        _field("series_uid", pa.string()),
        _field("n_slices", pa.int64()),
        _field("original_shape", pa.list_(pa.int32()), unit="voxels (slices, rows, cols)"),
        _field("spacing_mm", pa.list_(pa.float64()), unit="mm (slice, row, col)"),
        _field("orientation", pa.list_(pa.float64())),
        _field("tensor_file", pa.string(), required=True, doc="relative to the lake root"),
        _field("tensor_row", pa.int64(), required=True),
        _field("tensor_shape", pa.list_(pa.int32()), required=True),
        _field("preprocessing", pa.string(), doc="JSON of the preprocessing applied"),
        _field("source", pa.string(), required=True),
        _field("n_files", pa.int64()),
        _field("warnings", pa.string()),
        keys=("image_id",),
    ),
    # Curated tables ----------------------------------------------------------------------------------
    "features": _schema(
        _field("patient_id", pa.string(), required=True),
        _field("modality", pa.string(), required=True),
        _field("feature", pa.string(), required=True),
        _field("value", pa.float64(), doc="numeric value; null for categorical features"),
        _field("value_str", pa.string(), doc="categorical value; null for numeric features"),
        _field("source", pa.string(), required=True),
        keys=("modality", "patient_id", "feature"),
    ),
    "labels": _schema(
        _field("patient_id", pa.string(), required=True),
        _field("split", pa.string(), doc="train | val | test"),
        _field("diagnosis", pa.string()),
        _field("time", pa.float64(), unit="days"),
        _field("event", pa.bool_()),
        _field("endpoint", pa.string(), doc="the survival endpoint of time and event, lower case: os, pfs, dfs, ..."
                                            " (null: labels written before endpoints were recorded, read as the"
                                            " run's data.targets.survival_endpoint)"),
        _field("treatment", pa.string()),
        _field("response", pa.bool_()),
        _field("index_date", TIMESTAMP),
        _field("source", pa.string(), required=True),
        keys=("patient_id",),
    ),
}


def register(name: str, schema: pa.Schema, *, keys: tuple[str, ...] = ()) -> pa.Schema:
    """Register (or replace) the schema of a run-time table such as a FHIR view (``view_<name>``)."""
    metadata = dict(schema.metadata or {})
    metadata[b"tumorboard.schema_version"] = SCHEMA_VERSION.encode()
    if keys:
        metadata[b"tumorboard.keys"] = ",".join(keys).encode()
    SCHEMAS[name] = schema.with_metadata(metadata)
    return SCHEMAS[name]


def schema_for(name: str) -> pa.Schema:
    """The registered schema of table ``name``; raises :class:`SchemaError` listing the known tables."""
    try:
        return SCHEMAS[name]
    except KeyError:
        known = ", ".join(sorted(SCHEMAS))
        raise SchemaError(f"unknown lake table {name!r}; known tables: {known}") from None


def keys_for(name: str) -> list[str]:
    """The merge keys declared for table ``name`` (empty when it has none)."""
    raw = (schema_for(name).metadata or {}).get(b"tumorboard.keys", b"")
    return [k for k in raw.decode().split(",") if k]


def conform(name: str, table: pa.Table) -> pa.Table:
    """Return ``table`` cast to the schema of ``name``, in schema order, with required columns checked.

    Missing optional columns are added as nulls; unknown columns and missing required columns raise
    :class:`SchemaError`, as does a null in a required column (Arrow itself does not check ``nullable``).
    """
    schema = schema_for(name)
    extra = [c for c in table.column_names if schema.get_field_index(c) < 0]
    if extra:
        raise SchemaError(f"table {name!r}: unknown column(s) {extra}; declared columns: {schema.names}")
    columns = []
    for field in schema:
        if field.name in table.column_names:
            column = table.column(field.name)
            if not field.nullable and column.null_count:
                raise SchemaError(
                    f"table {name!r}: required column {field.name!r} has {column.null_count} null value(s);"
                    " fill it or reject those records before writing")
            try:
                column = column.cast(field.type) if column.type != field.type else column
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaError(
                    f"table {name!r}: column {field.name!r} of type {column.type} cannot be cast to"
                    f" {field.type}: {exc}") from exc
        else:
            if not field.nullable:
                raise SchemaError(f"table {name!r}: required column {field.name!r} is missing")
            column = pa.nulls(table.num_rows, field.type)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def utc_timestamps(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Parse FHIR/ISO-8601 strings to ``timestamp[us, tz=UTC]``.

    Accepts the FHIR ``date``, ``dateTime`` and ``instant`` forms: ``YYYY``, ``YYYY-MM`` and ``YYYY-MM-DD``
    become midnight UTC of the first day; date-times without an offset are taken as UTC; fractions beyond
    microseconds are truncated and a leap second (``:60``) becomes ``:59.999999``. Anything else becomes
    null (callers that must not lose a value check the null count against the input).
    """
    if pa.types.is_timestamp(values.type):
        return values.cast(TIMESTAMP)
    text = values.cast(pa.string())
    if pc.all(pc.match_substring_regex(text, _MICRO_INSTANT)).as_py() is not False:  # the common case
        return _cast_timestamps(text)
    text = pc.replace_substring_regex(text, r"^(\d{4})$", r"\1-01-01")
    text = pc.replace_substring_regex(text, r"^(\d{4}-\d{2})$", r"\1-01")
    text = pc.replace_substring_regex(text, r"^(\d{4}-\d{2}-\d{2})$", r"\1T00:00:00Z")
    text = pc.replace_substring_regex(text, r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?)$", r"\1Z")
    text = pc.replace_substring_regex(text, r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2})([Z+-])", r"\1:00\2")
    valid = pc.match_substring_regex(text, _INSTANT)
    # FHIR allows a leap second and up to 9 fraction digits; the type holds microseconds and no second 60
    text = pc.replace_substring_regex(text, r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}):60(\.\d+)?", r"\1:59.999999")
    text = pc.replace_substring_regex(text, r"^([^.]*\.\d{6})\d+", r"\1")
    return _cast_timestamps(pc.if_else(valid, text, pa.scalar(None, pa.string())))


def utc_period_ends(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """The last instant (``timestamp[us, tz=UTC]``) of the period each FHIR date/dateTime string denotes.

    A partial date denotes a year (``2020``), a month (``2020-06``) or a day (``2020-06-15``): its last
    microsecond, UTC (``2020-06-30T23:59:59.999999Z`` for ``2020-06``). A date-time denotes itself, as
    :func:`utc_timestamps` parses it. A record that may be as late as this instant is only known to precede a
    cutoff when this does.
    """
    starts = utc_timestamps(values)
    if pa.types.is_timestamp(values.type):
        return starts
    text = values.cast(pa.string())
    day = pc.fill_null(pc.match_substring_regex(text, r"^\d{4}-\d{2}-\d{2}$"), False)
    ends = pc.if_else(day, pc.add(starts, pa.scalar(_DAY_LESS_ONE, pa.duration("us"))), starts)
    coarse = pc.fill_null(pc.match_substring_regex(text, r"^\d{4}(-\d{2})?$"), False)
    if not pc.any(coarse).as_py():  # no year or month alone: the common case, column-wise
        return ends
    if isinstance(ends, pa.ChunkedArray):
        ends, text, coarse = ends.combine_chunks(), text.combine_chunks(), coarse.combine_chunks()
    # years and months alone, one by one (rare)
    coarse_ends = [_period_end(t, e) for t, e in zip(text.filter(coarse).to_pylist(),
                                                     ends.filter(coarse).to_pylist(), strict=True)]
    return pc.replace_with_mask(ends, coarse, pa.array(coarse_ends, TIMESTAMP))


_DAY_LESS_ONE = timedelta(days=1, microseconds=-1)


def _period_end(text: str, start: datetime | None) -> datetime | None:
    """The last microsecond of the year (``text`` ``YYYY``) or month (``YYYY-MM``) that starts at ``start``."""
    if start is None:
        return None
    if start.year == 9999 and (len(text) == 4 or start.month == 12):  # a sentinel such as 9999: the last instant
        return start.replace(month=12, day=31, hour=23, minute=59, second=59, microsecond=999999)
    if len(text) == 4:
        after = start.replace(year=start.year + 1)
    else:
        after = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return after - timedelta(microseconds=1)


_INSTANT = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$"  # what the rewrites above produce
_MICRO_INSTANT = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:[0-5]\d(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$"  # cast as they are


def _cast_timestamps(text: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """:data:`_INSTANT` strings (or nulls) to ``TIMESTAMP``; an impossible date (month 13) becomes null."""
    try:
        return text.cast(TIMESTAMP)
    except pa.ArrowInvalid:  # a well-formed but impossible date (month 13): parse one by one
        return pa.array([_one_timestamp(v) for v in text.to_pylist()], TIMESTAMP)


def _one_timestamp(text: str | None) -> pa.Scalar | None:
    if text is None:
        return None
    try:
        return pa.scalar(text).cast(TIMESTAMP).as_py()
    except pa.ArrowInvalid:
        return None
