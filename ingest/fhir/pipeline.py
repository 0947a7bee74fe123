"""The FHIR ingest run: files -> checked resources -> ``fhir_resources`` -> ``view_<name>`` tables.

One pass, streamed in bounded batches and spread over ``workers`` processes (the parent does every lake write):
workers read the input files (:mod:`ingest.fhir.reader`; small files together, up to :data:`GROUP_BYTES` per task)
in batches of ``batch_size`` records, or of :data:`BATCH_BYTES` of source text when that comes first (optionally
validating them with ``fhir.resources`` R4B models), flatten each batch with the compiled ViewDefinitions while its
resources are parsed, and return Arrow batches of ``fhir_resources`` rows, view rows and rejects. The parent merges
the resources into ``fhir_resources`` on ``(resource_type, id)``, newest ``meta.lastUpdated`` winning (an equal
lastUpdated: the incoming row wins), in commits of up to :data:`COMMIT_ROWS` rows, so re-ingesting the same or an
updated export adds no duplicates; it stages the view rows as Arrow IPC streams under ``LAKE/_staging/<run_id>``.

Every view stays an exact function of ``fhir_resources`` (no rows of superseded versions, views without a
key work). When the staged rows are exactly that function (a first ingest into an empty lake in which no
resource id came twice) they replace each ``view_<name>`` table in one overwrite commit; otherwise (a lake
that already held resources, or repeated ids) every view is recomputed from ``fhir_resources``
(:func:`reflatten_views`, also what ``tumorboard ingest views`` runs for views added later). A crash leaves
each view at its previous version.

Counts reconcile per resource type: ``read = written + rejected``; "written" counts accepted resources, and
"repeated" those of them whose id was already in the lake or came earlier in the run (one row of
``fhir_resources`` per id), so a run adds ``written - repeated`` rows. Records without a usable resourceType (bad JSON,
truncated gzip, a Bundle entry without a resource) are counted under :data:`ingest.fhir.reader.INVALID`.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import queue
import re
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache, partial
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ingest.fhir.fhirpath import reference_key
from ingest.fhir.reader import RAW_LIMIT, Discovery, Item, Reader, Task, discover
from ingest.lake import Lake, one_writer
from ingest.link import build_crosswalk
from ingest.schema import SCHEMAS, TIMESTAMP, register, utc_timestamps

DEFAULT_VIEWS = Path(__file__).resolve().parents[2] / "configs" / "views"
# Resources a worker holds parsed at once. Holding many costs CPU, not only memory: parsing a Synthea line
# with orjson and dropping it takes 3.4 us, 8.2 us when 5,000 parsed lines are held (collector off);
# 200k Synthea resources, workers=1, 4 runs each: 6.5-7.1 s CPU at 1,000 vs 7.2-7.8 s at 5,000, peak RSS
# 406-422 MB vs 443-473 MB.
BATCH_SIZE = 1_000
# ... or records (accepted and rejected) of this much source text, whichever comes first: a gzip NDJSON file is
# one task, so a batch of 1,000 one-MB DocumentReferences held 1 GB of lines (peak RSS 6.0 GB; 0.7 GB for the
# same file uncompressed, whose 64 MiB byte ranges cut the batches).
BATCH_BYTES = 16 << 20
# Small tasks (files) a worker reads together, up to this many bytes: a Bulk export of 3,585 files of 20 lines
# took 2.4x the time of the same 71,600 resources in 13 files, each small file costing its own tiny batches.
GROUP_BYTES = 4 << 20
COMMIT_ROWS = 20_000  # fhir_resources rows per Delta commit (and Parquet row group: bounds reads)
COMMIT_BYTES = 64 << 20  # ... or this much JSON, whichever comes first
VALIDATION_MESSAGE_LIMIT = 500
# Which of two versions of a resource is newer: meta.lastUpdated, else an integer meta.versionId, else the one
# ingested later (see Lake.write).
NEWEST_BY = ("last_updated", "version_id")
LAKE_VIEWS = "_views"  # the lake's copy of the ViewDefinitions its view tables are computed from
TABLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_PATIENT_ELEMENTS = ("subject", "patient", "beneficiary", "individual")
_ITERATOR_KEYS = ("forEach", "forEachOrNull", "repeat", "unionAll")

Progress = Callable[[str, int, int], None]  # (phase, done, total): phase "read" counts bytes, "views" rows


@dataclass
class TypeCounts:
    """Records of one resource type: ``read = written + rejected``; ``repeated`` of the written ones had a
    ``Type/id`` already in the lake or earlier in the run (the lake keeps one row per id, the newest version),
    so the run added ``written - repeated`` rows."""

    read: int = 0
    written: int = 0
    rejected: int = 0
    repeated: int = 0


@dataclass
class IngestReport:
    """What an ingest run did; ``counts`` is per resource type, ``views`` rows per view table."""

    run_id: str
    counts: dict[str, TypeCounts] = field(default_factory=dict)
    views: dict[str, int] = field(default_factory=dict)
    view_rejects: int = 0
    sources: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    committed: int = 0  # fhir_resources rows committed so far (less than written when a run is interrupted)
    ambiguous_identifiers: int = 0  # Patient identifier values shared by several patients (see ingest.link)

    @property
    def read(self) -> int:
        return sum(c.read for c in self.counts.values())

    @property
    def written(self) -> int:
        return sum(c.written for c in self.counts.values())

    @property
    def rejected(self) -> int:
        return sum(c.rejected for c in self.counts.values()) + self.view_rejects

    @property
    def repeated(self) -> int:
        return sum(c.repeated for c in self.counts.values())

    def as_dict(self) -> dict[str, object]:
        """JSON-able summary (what the manifest row records)."""
        return {"read": self.read, "written": self.written, "rejected": self.rejected, "repeated": self.repeated,
                "by_type": {t: [c.read, c.written, c.rejected] for t, c in sorted(self.counts.items())},
                "repeated_by_type": {t: c.repeated for t, c in sorted(self.counts.items()) if c.repeated},
                "committed": self.committed, "ambiguous_identifiers": self.ambiguous_identifiers,
                "views": dict(sorted(self.views.items())), "view_rejects": self.view_rejects,
                "skipped": [f"{p} ({why})" for p, why in self.skipped]}


@dataclass
class _Chunk:
    """One batch of worker output."""

    resources: pa.Table | None = None
    views: dict[str, pa.Table] = field(default_factory=dict)
    rejects: list[dict] = field(default_factory=list)
    view_rejects: list[dict] = field(default_factory=list)  # resources a view could not flatten
    counts: dict[str, list[int]] = field(default_factory=dict)  # type -> [read, written, rejected]
    done: int = 0  # progress units completed by this chunk


# -- public API --------------------------------------------------------------------------------------------
def ingest_fhir(lake: Lake, paths: list[Path], *, views_dir: Path | Sequence[Path] | None = None, workers: int = 1,
                validate: bool = False, batch_size: int = BATCH_SIZE, progress: Progress | None = None) -> IngestReport:
    """Ingest FHIR files and folders into ``lake``, then recompute the view tables.

    Args:
        lake: the target lake.
        paths: NDJSON / JSON files and folders (see :mod:`ingest.fhir.reader`).
        views_dir: folder(s) of ViewDefinition JSON files; default the shipped ``configs/views``. The views the
            lake already has are flattened too (see :func:`_lake_views`).
        workers: processes that parse and flatten (1: all in this process).
        validate: also validate every resource against the ``fhir.resources`` R4B models (about 10x slower).
        batch_size: records (resources and rejects) per worker batch; a batch also ends at
            :data:`BATCH_BYTES` of source text (both bound memory).
        progress: optional ``progress(phase, done, total)`` callback.

    Returns:
        The :class:`IngestReport`; rejects are in the lake's ``rejects`` table (modality ``fhir``).

    Raises:
        ingest.fhir.reader.FhirInputError: a path does not exist.
        ingest.fhir.viewdef.ViewDefinitionError: a view is invalid (checked before anything is read).
    """
    started = datetime.now(UTC)
    given = _folders(views_dir)
    _compiled_views(*_views_key(given))  # fail before reading anything
    found = discover(paths)
    with lake.exclusive():  # after discovery: a new lake inside the input folder is not yet there to be listed
        views_dir = _lake_views(lake, given)
        views = _compiled_views(*_views_key(views_dir))
        report = IngestReport(lake.run_id, sources=found.sources, skipped=found.skipped)
        with lake.failure_recorded("ingest fhir", report.sources, report.as_dict, started_at=started):
            _ingest(lake, found, report, views, views_dir, workers=workers, validate=validate,
                    batch_size=batch_size, progress=progress)
        lake.record_run("ingest fhir", report.sources, report.as_dict(), started_at=started,
                        status="partial" if report.rejected else "ok")
    return report


def _ingest(lake: Lake, found: Discovery, report: IngestReport, views: list, views_dir: tuple[Path, ...], *,
            workers: int, validate: bool, batch_size: int, progress: Progress | None) -> None:
    """Read, commit and flatten (the body of :func:`ingest_fhir`)."""
    with _Pool(workers) as pool, _ViewStage(lake, views) as stage:
        fresh = not lake.has("fhir_resources")  # staged rows are exact only when nothing was there before
        accepted = _read_pass(lake, pool, found.tasks, report, batch_size=batch_size, validate=validate,
                              progress=progress, stage=stage if fresh else None, views_dir=views_dir)
        if not lake.has("fhir_resources"):  # every record was rejected: the table exists all the same, empty
            lake.write("fhir_resources", SCHEMAS["fhir_resources"].empty_table())
        if fresh and (accepted == 0 or lake.dataset("fhir_resources").count_rows() == accepted):
            report.views, report.view_rejects = stage.commit()
        else:  # resources were replaced or came twice: recompute every view from fhir_resources
            report.views, report.view_rejects = _reflatten(lake, views_dir, pool, batch_size=batch_size,
                                                           progress=progress)
    # Patient ids and identifiers -> patient_key, for the non-FHIR modalities
    report.ambiguous_identifiers = build_crosswalk(lake).ambiguous


@one_writer
def reflatten_views(lake: Lake, views_dir: Path | Sequence[Path] | None = None, *, workers: int = 1,
                    batch_size: int = BATCH_SIZE, progress: Progress | None = None) -> dict[str, int]:
    """Recompute every ``view_<name>`` table from ``fhir_resources`` (no input files are read): the views of
    ``views_dir`` (default the shipped ones) and those the lake already has (see :func:`_lake_views`).

    Returns:
        Rows written per view table; ``"rejected"`` counts resources a view could not flatten (those are in
        ``rejects``, located by ``Type/id``).
    """
    started = datetime.now(UTC)
    given = _folders(views_dir)
    views_dir = _lake_views(lake, given)
    with _Pool(workers) as pool:
        views, rejected = _reflatten(lake, views_dir, pool, batch_size=batch_size, progress=progress)
    counts = {**views, "rejected": rejected}
    lake.record_run("ingest views", list(given), counts, started_at=started,
                    status="partial" if rejected else "ok")
    return counts


def view_table_schema(view) -> pa.Schema:
    """The lake schema of a view: its Arrow schema with date/dateTime/instant columns as UTC timestamps (lists of
    them for ``collection`` columns), each date/dateTime column followed by its ``<name>_latest`` (see
    :meth:`CompiledView.with_timestamps`)."""
    from ingest.fhir.viewdef import LATEST_SUFFIX

    temporal, partial = set(view.temporal_columns), set(view.partial_columns)
    fields = []
    for f in view.arrow_schema:
        type_ = pa.list_(TIMESTAMP) if pa.types.is_list(f.type) else TIMESTAMP
        fields.append(pa.field(f.name, type_) if f.name in temporal else f)
        if f.name in partial:
            fields.append(pa.field(f.name + LATEST_SUFFIX, type_))
    return pa.schema(fields, metadata=view.arrow_schema.metadata)


# -- pass 1: resources -------------------------------------------------------------------------------------
def _read_pass(lake: Lake, pool: _Pool, tasks: list[Task], report: IngestReport, *, batch_size: int,
               validate: bool, progress: Progress | None, stage: _ViewStage | None,
               views_dir: tuple[Path, ...]) -> int:
    """Read every task; commit ``fhir_resources`` every :data:`COMMIT_ROWS` rows; count into ``report``;
    stage the view rows in ``stage`` (None: do not flatten). Returns the resources accepted."""
    total = sum(t.size for t in tasks)
    done = accepted = 0
    pending: list[pa.Table] = []
    rejects: list[dict] = []  # written REJECTS_PER_COMMIT at a time (a batch may be all rejects)
    pending_bytes = 0
    index = _KeyIndex(lake)
    work = partial(_read_task, batch_size=batch_size, validate=validate,
                   views=_views_key(views_dir) if stage is not None else None)
    for chunk in pool.map(work, task_groups(tasks)):
        if stage is not None:
            stage.add(chunk)
        for rtype, (n_read, n_written, n_rejected) in chunk.counts.items():
            counts = report.counts.setdefault(rtype, TypeCounts())
            counts.read += n_read
            counts.written += n_written
            counts.rejected += n_rejected
        rejects += chunk.rejects
        if len(rejects) >= REJECTS_PER_COMMIT:
            lake.add_rejects(rejects, modality="fhir")
            rejects = []
        if chunk.resources is not None and chunk.resources.num_rows:
            accepted += chunk.resources.num_rows
            pending.append(chunk.resources)
            pending_bytes += chunk.resources.nbytes
            if sum(t.num_rows for t in pending) >= COMMIT_ROWS or pending_bytes >= COMMIT_BYTES:
                _count_repeated(report, _commit_resources(lake, pending, index))
                report.committed += sum(t.num_rows for t in pending)
                pending, pending_bytes = [], 0
        done += chunk.done
        if progress:
            progress("read", done, total)
    _count_repeated(report, _commit_resources(lake, pending, index))
    report.committed += sum(t.num_rows for t in pending)
    if rejects:
        lake.add_rejects(rejects, modality="fhir")
    return accepted


def _count_repeated(report: IngestReport, repeated: dict[str, int]) -> None:
    for rtype, n in repeated.items():
        report.counts.setdefault(rtype, TypeCounts()).repeated += n


def task_groups(tasks: list[Task], group_bytes: int = GROUP_BYTES) -> Iterator[tuple[Task, ...]]:
    """``tasks`` in consecutive groups of at most ``group_bytes`` (a larger task alone), so that a worker reads
    many small files (a Bulk export of one file per page or patient) into shared batches."""
    group: list[Task] = []
    size = 0
    for task in tasks:
        if group and size + task.size > group_bytes:
            yield tuple(group)
            group, size = [], 0
        group.append(task)
        size += task.size
    if group:
        yield tuple(group)


def _read_task(tasks: Task | tuple[Task, ...], *, batch_size: int, validate: bool,
               views: tuple | None) -> Iterator[_Chunk]:
    """Worker: read one task, or a group of them (:func:`task_groups`), in batches of ``batch_size`` records
    or :data:`BATCH_BYTES` of text; flatten them when ``views`` (a :func:`_views_key`) is given."""
    tasks = (tasks,) if isinstance(tasks, Task) else tasks
    accepted: list[dict] = []
    texts: list[bytes | None] = []  # source text of each accepted resource, when it is one NDJSON line
    sources: list[str] = []  # the file of each accepted resource
    chunk = _Chunk()
    batch_bytes = reported = 0  # reported: bytes of the tasks counted in chunks so far
    for item, source, reader in _items(tasks):
        counts = chunk.counts.setdefault(item.resource_type, [0, 0, 0])
        counts[0] += 1
        reason = item.reason
        if reason is None and validate:
            reason = _validation_error(item.resource)
            if reason is not None:
                item.raw = orjson.dumps(item.resource)[:RAW_LIMIT]
        if reason is None:
            accepted.append(item.resource)
            texts.append(item.raw)
            sources.append(source)
            counts[1] += 1
        else:
            counts[2] += 1
            chunk.rejects.append(_reject_row(source, item, reason))
        # a Bundle entry read on its own keeps no raw text when accepted: its text_bytes count instead
        batch_bytes += max(item.text_bytes, len(item.raw) if item.raw is not None else 0)
        if len(accepted) + len(chunk.rejects) >= batch_size or batch_bytes >= BATCH_BYTES:
            if accepted:
                _fill(chunk, accepted, texts, sources, views)
            now = _done_bytes(tasks, reader)
            chunk.done, reported = now - reported, now
            # Free the parsed batch before the chunk goes out: the caller may switch the cyclic collector back
            # on, and its next pass would otherwise traverse every dict and list of these resources.
            accepted, texts, sources, batch_bytes = [], [], [], 0
            yield chunk
            chunk = _Chunk()
    if accepted:
        _fill(chunk, accepted, texts, sources, views)
    chunk.done = sum(t.size for t in tasks) - reported
    yield chunk


def _items(tasks: tuple[Task, ...]) -> Iterator[tuple[Item, str, Reader]]:
    """Every record of ``tasks``, in order, with its file and the reader reading it."""
    for task in tasks:
        reader = Reader(task)
        source = str(task.path)
        for item in reader:
            yield item, source, reader


def _done_bytes(tasks: tuple[Task, ...], reader: Reader) -> int:
    """Bytes of ``tasks`` read so far: the tasks before ``reader``'s, and what ``reader`` has read of its own."""
    before = 0
    for task in tasks:
        if task is reader.task:
            return before + reader.done_bytes
        before += task.size
    raise ValueError("the reader's task is not in the group")


def _fill(chunk: _Chunk, resources: list[dict], texts: list[bytes | None], sources: list[str],
          views: tuple | None) -> None:
    """Put the ``fhir_resources`` rows (and, with ``views``, the view rows) of ``resources`` in ``chunk``
    (``sources[i]``: the file of ``resources[i]``)."""
    chunk.resources = _resources_table(resources, texts, sources)
    if views is not None:
        _flatten(chunk, ((r["resourceType"], r["id"], r, None, source) for r, source in zip(resources, sources,
                                                                                              strict=True)),
                 _views_by_type(*views))


def _reject_row(source: str, item: Item, reason: str) -> dict:
    raw = item.raw.decode("utf-8", "backslashreplace") if item.raw is not None else None
    return {"source": source, "location": item.location or None, "reason": reason, "raw": raw}


def _resources_table(resources: list[dict], texts: list[bytes | None], sources: list[str]) -> pa.Table:
    """``fhir_resources`` rows for checked resources (shape: one row per resource); ``texts[i]`` is the stored
    JSON of ``resources[i]`` when given (its NDJSON line), else it is serialised compactly; ``sources[i]`` its
    file."""
    types, ids, keys, versions, updated = [], [], [], [], []
    for res in resources:
        types.append(res["resourceType"])
        ids.append(res["id"])
        keys.append(patient_key(res))
        meta = res.get("meta") or {}
        versions.append(meta.get("versionId"))
        updated.append(meta.get("lastUpdated"))
    texts = [orjson.dumps(res) if text is None else text for res, text in zip(resources, texts, strict=True)]
    return pa.table({
        "resource_type": pa.array(types, pa.string()),
        "id": pa.array(ids, pa.string()),
        "patient_key": pa.array(keys, pa.string()),
        "version_id": pa.array(versions, pa.string()),
        "last_updated": utc_timestamps(pa.array(updated, pa.string())),
        "source": pa.array(sources, pa.string()),
        "json": pa.array(texts, pa.binary()).view(pa.string()),  # UTF-8: orjson checked or wrote it
    }, schema=SCHEMAS["fhir_resources"])


def patient_key(resource: dict) -> str | None:
    """The Patient id a resource belongs to: its own id for a Patient, else the id in its
    subject/patient/beneficiary/individual reference when that points to a Patient, as the views'
    ``getReferenceKey(Patient)`` reads it (:func:`ingest.fhir.fhirpath.reference_key`)."""
    if resource.get("resourceType") == "Patient":
        return resource.get("id")
    for element in _PATIENT_ELEMENTS:
        ref = resource.get(element)
        if isinstance(ref, dict):
            return reference_key(ref, "Patient")
    return None


_MODELS: dict[str, object] = {}


def _validation_error(resource: dict) -> str | None:
    """Pydantic's message (locations and messages, no input values) when the R4B model rejects ``resource``."""
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    rtype = resource["resourceType"]
    model = _MODELS.get(rtype)
    if model is None:
        try:
            model = _MODELS[rtype] = get_fhir_model_class(rtype)
        except (KeyError, ValueError, ImportError, AttributeError):
            return None  # R4-only types without an R4B model (e.g. MedicinalProduct) are not validated
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                 for e in exc.errors(include_url=False, include_input=False, include_context=False)]
        message = f"not a valid FHIR R4 {rtype} ({len(parts)} error(s)): " + "; ".join(parts)
        return message[:VALIDATION_MESSAGE_LIMIT]
    except (ValueError, TypeError) as exc:
        return f"not a valid FHIR R4 {rtype}: {type(exc).__name__}: {str(exc)[:200]}"
    return None


class _KeyIndex:
    """Which ``Type/id`` keys ``fhir_resources`` already holds, without rescanning the table per commit.

    Keys of the rows this run commits are kept as a sorted array of 64-bit hashes (8 bytes per resource);
    the table as it was before the run is scanned only when it existed. A hash collision only sends a new
    row through a merge instead of an append, which gives the same rows.
    """

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self.before = lake.dataset("fhir_resources") if lake.has("fhir_resources") else None
        self.hashes = np.empty(0, np.int64)

    def known(self, keys: pa.Array) -> np.ndarray:
        """Per key: is it in the table (boolean array like ``keys``)."""
        hashed = _hash_keys(keys)
        positions = np.minimum(np.searchsorted(self.hashes, hashed), max(self.hashes.size - 1, 0))
        known = self.hashes[positions] == hashed if self.hashes.size else np.zeros(hashed.size, bool)
        if self.before is not None:
            known |= pc.is_in(keys, value_set=_keys_in(self.before, keys)).to_numpy(zero_copy_only=False)
        return known

    def add(self, keys: pa.Array) -> None:
        self.hashes = np.sort(np.concatenate([self.hashes, _hash_keys(keys)]), kind="stable")


def _hash_keys(keys: pa.Array) -> np.ndarray:
    return np.fromiter((hash(key) for key in keys.to_pylist()), np.int64, len(keys))


def _commit_resources(lake: Lake, tables: list[pa.Table], index: _KeyIndex) -> dict[str, int]:
    """Upsert rows into ``fhir_resources``, the newest version winning (:data:`NEWEST_BY`); returns, per
    resource type, the rows whose key was already in the table or came earlier in ``tables``.

    A Delta merge scans and joins the whole target table, so only rows whose key may already be in the lake
    (``index``) are merged; rows with new keys (all of them on a first ingest) are appended, when they are
    unique.
    """
    if not tables:
        return {}
    table = pa.concat_tables(tables)
    keys = _keys(table)
    known = index.known(keys)
    if known.any():  # filtering copies every JSON text: only when some key is already in the table
        mask = pa.array(known)
        new, old = table.filter(pc.invert(mask)), table.filter(mask)
    else:
        new, old = table, table.schema.empty_table()
    repeated = _per_type(old.column("resource_type")) if old.num_rows else {}
    if new.num_rows:
        unique = pc.count_distinct(_keys(new)).as_py() == new.num_rows
        lake.write("fhir_resources", new, mode="append" if unique else "merge", newest_by=NEWEST_BY)
        if not unique:  # an id more than once among the new rows: all but its first are repeats
            counts = pa.table({"type": new.column("resource_type").cast(pa.string()), "key": _keys(new)}) \
                .group_by("type").aggregate([("key", "count"), ("key", "count_distinct")])
            for rtype, n, distinct in zip(*(counts.column(c).to_pylist() for c in
                                             ("type", "key_count", "key_count_distinct")), strict=True):
                if n > distinct:
                    repeated[rtype] = repeated.get(rtype, 0) + n - distinct
    if old.num_rows:
        lake.write("fhir_resources", old, mode="merge", newest_by=NEWEST_BY)
    index.add(keys)
    return repeated


def _per_type(types: pa.ChunkedArray) -> dict[str, int]:
    """Rows per resource type."""
    counts = pc.value_counts(types.cast(pa.string()))
    return dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True))


def _keys(table: pa.Table | pa.RecordBatch) -> pa.Array:
    """``Type/id`` per row."""
    keys = pc.binary_join_element_wise(table.column("resource_type").cast(pa.string()),
                                       table.column("id").cast(pa.string()), "/")
    return keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys


def _keys_in(dataset, keys: pa.Array) -> pa.Array:
    """Those of ``keys`` that ``dataset`` (``fhir_resources``) holds (reads the two key columns, a batch at
    a time)."""
    found = [pa.array([], pa.string())]
    for batch in dataset.to_batches(columns=["resource_type", "id"], batch_readahead=1, fragment_readahead=1):
        stored = _keys(batch)
        found.append(stored.filter(pc.is_in(stored, value_set=keys)))
    return pa.concat_arrays(found)


# -- pass 2: views -----------------------------------------------------------------------------------------
def _reflatten(lake: Lake, views_dir: tuple[Path, ...], pool: _Pool, *, batch_size: int,
               progress: Progress | None) -> tuple[dict[str, int], int]:
    views = _compiled_views(*_views_key(views_dir))
    types = {v.resource for v in views}
    with _ViewStage(lake, views) as stage:
        fragments: list = []
        total = 0
        schema = None
        if lake.has("fhir_resources") and types:
            dataset = lake.dataset("fhir_resources")
            total = dataset.count_rows()
            fragments, schema = list(dataset.get_fragments()), dataset.schema
        done = 0
        work = partial(_flatten_fragment, schema=schema, batch_size=batch_size, views=_views_key(views_dir))
        for chunk in pool.map(work, fragments):  # workers read the Parquet files themselves
            stage.add(chunk)
            done += chunk.done
            if progress:
                progress("views", done, total)
        return stage.commit()


class _ViewStage:
    """View rows staged as one Arrow IPC stream (LZ4 buffers) per view under ``LAKE/_staging/<run_id>``, and
    the rejects of flattening as another; :meth:`commit` replaces every ``view_<name>`` table with its staged
    rows. The rows are read once, right back: an IPC stream costs a fraction of Parquet's encoding."""

    def __init__(self, lake: Lake, views: list) -> None:
        self.lake = lake
        self.schemas = {v.name: register(f"view_{v.name}", view_table_schema(v), keys=_view_keys(v))
                        for v in views}
        self.dir = lake.staging_dir()
        lake.remove_stale_staging()
        self.rows = dict.fromkeys(self.schemas, 0)
        self.rejected = 0
        self._writers: dict[str, pa.ipc.RecordBatchStreamWriter] = {}

    def __enter__(self) -> _ViewStage:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()
        self.lake.remove_staging()

    def _writer(self, name: str, schema: pa.Schema) -> pa.ipc.RecordBatchStreamWriter:
        writer = self._writers.get(name)
        if writer is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            writer = self._writers[name] = pa.ipc.new_stream(self.dir / f"{name}.arrows", schema,
                                                             options=_STAGE_OPTIONS)
        return writer

    def add(self, chunk: _Chunk) -> None:
        """Stage the view rows and flattening rejects of one worker chunk."""
        for name, table in chunk.views.items():
            if table.num_rows:
                self._writer(name, self.schemas[name]).write_table(table.cast(self.schemas[name]))
                self.rows[name] += table.num_rows
        if chunk.view_rejects:
            table = pa.Table.from_pylist(chunk.view_rejects, schema=_REJECT_SCHEMA)
            self._writer("_rejects", _REJECT_SCHEMA).write_table(table)
            self.rejected += table.num_rows

    def commit(self) -> tuple[dict[str, int], int]:
        """Write every view table (overwrite) and the staged rejects; returns rows per view and rejects."""
        self._close()
        for name, schema in self.schemas.items():
            path = self.dir / f"{name}.arrows"
            if path.is_file():
                with pa.ipc.open_stream(path) as reader:
                    self.lake.write(f"view_{name}", reader, mode="overwrite")
            else:
                self.lake.write(f"view_{name}", schema.empty_table(), mode="overwrite")
        path = self.dir / "_rejects.arrows"
        if path.is_file():
            with pa.ipc.open_stream(path) as reader:
                pending: list[pa.RecordBatch] = []
                rows = 0
                for batch in reader:  # one commit per REJECTS_PER_COMMIT rejects, not one per worker chunk
                    pending.append(batch)
                    rows += batch.num_rows
                    if rows >= REJECTS_PER_COMMIT:
                        self.lake.add_rejects(pa.Table.from_batches(pending).to_pylist(), modality="fhir")
                        pending, rows = [], 0
                if pending:
                    self.lake.add_rejects(pa.Table.from_batches(pending).to_pylist(), modality="fhir")
        return dict(self.rows), self.rejected

    def _close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


_STAGE_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")
REJECTS_PER_COMMIT = 10_000  # staged flattening rejects written to the lake per commit
_REJECT_SCHEMA = pa.schema([("source", pa.string()), ("location", pa.string()), ("reason", pa.string()),
                            ("raw", pa.string())])


def _view_keys(view) -> tuple[str, ...]:
    """``("id",)`` when the view has an ``id`` column and gives at most one row per resource."""
    names = [name for name, _ in view.columns]
    return ("id",) if "id" in names and not _has_iterator(view.definition.get("select")) else ()


def _has_iterator(node: object) -> bool:
    if isinstance(node, dict):
        return any(k in node for k in _ITERATOR_KEYS) or any(_has_iterator(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_iterator(v) for v in node)
    return False


def _lake_views(lake: Lake, given: tuple[Path, ...]) -> tuple[Path, ...]:
    """The lake's own view folder (``LAKE/_views``, one ViewDefinition file per view table) after adding or
    replacing, by name, the views of the folders ``given``.

    The lake remembers every view it has materialised, so a later run without ``--extra-views`` recomputes
    that view's table too instead of leaving it stale. Raises ViewDefinitionError, before writing anything,
    when a given view is invalid or its name cannot name a table.
    """
    from ingest.fhir.viewdef import ViewDefinitionError

    views = _compiled_views(*_views_key(given))
    for view in views:
        if not TABLE_NAME.fullmatch(view.name):
            raise ViewDefinitionError(f"view {view.name!r}: its name names the table view_<name>, so it must match"
                                      f" {TABLE_NAME.pattern}; set 'name' in the ViewDefinition")
    store = lake.path / LAKE_VIEWS
    store.mkdir(parents=True, exist_ok=True)
    for view in views:
        target, text = store / f"{view.name}.json", orjson.dumps(view.definition, option=orjson.OPT_INDENT_2)
        if not target.is_file() or target.read_bytes() != text:
            staged = target.with_suffix(".json.partial")
            staged.write_bytes(text)
            staged.replace(target)
    return (store,)


def _folders(views_dir: Path | Sequence[Path] | None) -> tuple[Path, ...]:
    """The view folders: the given one(s) (a folder named twice counts once), else the shipped ``configs/views``."""
    if views_dir is None:
        return (DEFAULT_VIEWS,)
    folders = [Path(views_dir)] if isinstance(views_dir, (str, Path)) else [Path(p) for p in views_dir]
    unique: dict[Path, Path] = {}
    for folder in folders:
        unique.setdefault(folder.resolve(), folder)
    return tuple(unique.values())


def _views_key(views_dir: tuple[Path, ...]) -> tuple:
    """``(folders, signature)``: what a worker needs to compile (and cache) the views of ``views_dir``."""
    from ingest.fhir.viewdef import view_files

    signature = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size)
                      for folder in views_dir for p in view_files(folder))
    return tuple(str(folder) for folder in views_dir), signature


@cache  # per process and (folders, their files' names/mtimes/sizes): an edited view is compiled afresh
def _compiled_views(views_dir: tuple[str, ...], signature: tuple) -> list:
    """The compiled views of ``views_dir`` (a :func:`_views_key`), compiled once per process and signature."""
    from ingest.fhir.viewdef import load_views

    return load_views(views_dir)


@cache
def _views_by_type(views_dir: tuple[str, ...], signature: tuple) -> dict[str, list]:
    """The compiled views of ``views_dir`` (a :func:`_views_key`) by resource type."""
    by_type: dict[str, list] = {}
    for view in _compiled_views(views_dir, signature):
        by_type.setdefault(view.resource, []).append(view)
    return by_type


def _flatten_fragment(fragment, *, schema: pa.Schema, batch_size: int, views: tuple) -> Iterator[_Chunk]:
    """Worker: flatten one Parquet file of ``fhir_resources``, ``batch_size`` rows at a time.

    Rows of types no view reads are dropped after reading (files written by a Delta merge carry string_view
    statistics that pyarrow's filter pushdown cannot compare with string literals).
    """
    by_type = _views_by_type(*views)
    wanted = pa.array(sorted(by_type), pa.string())
    for batch in fragment.to_batches(schema=schema, columns=["resource_type", "id", "json", "source"],
                                     batch_size=batch_size, batch_readahead=0, fragment_readahead=0):
        chunk = _Chunk(done=batch.num_rows)
        batch = batch.filter(pc.is_in(batch.column("resource_type").cast(pa.string()), value_set=wanted))
        rows = zip(*(batch.column(c).to_pylist() for c in ("resource_type", "id", "json", "source")), strict=True)
        _flatten(chunk, ((rtype, rid, orjson.loads(text), text, source) for rtype, rid, text, source in rows),
                 by_type)
        yield chunk


def _flatten(chunk: _Chunk, resources: Iterable[tuple[str, str, dict, str | None, str]],
             by_type: dict[str, list]) -> None:
    """Flatten ``(type, id, resource, json text or None, source file)`` with every view of their types into
    ``chunk``; a reject names the resource's source file and ``Type/id``."""
    from ingest.fhir.viewdef import ViewEvaluationError

    out: dict[str, list[tuple]] = {}
    sources: dict[str, str] = {}  # Type/id -> source file, for the rejects
    for rtype, rid, resource, text, source in resources:
        views = by_type.get(rtype)
        if not views:
            continue
        sources[f"{rtype}/{rid}"] = source
        for view in views:
            try:
                rows = view.rows(resource)
            except ViewEvaluationError as exc:
                raw = text if text is not None else orjson.dumps(resource).decode()
                chunk.view_rejects.append({"source": source, "location": f"{rtype}/{rid}",
                                           "reason": f"cannot flatten: {exc}", "raw": raw[:RAW_LIMIT]})
                continue
            if rows:
                out.setdefault(view.name, []).extend(rows)
    for views in by_type.values():
        for view in views:
            if view.name in out:
                lost: list[tuple[str, int, object]] = []
                table = view.table_from_rows(out[view.name], lost)
                parsed = view.with_timestamps(table)
                chunk.view_rejects += _wrong_types(view, table, lost, sources)
                chunk.view_rejects += _unparsed_dates(view, table, parsed, sources)
                chunk.views[view.name] = parsed


def _wrong_types(view, table: pa.Table, lost: list[tuple[str, int, object]], sources: dict[str, str]) -> list[dict]:
    """A reject row per value that did not fit its column's type (the row keeps a null there), located as in
    :func:`_unparsed_dates`."""
    types = dict(view.columns)
    keys = table.column("id").to_pylist() if lost and "id" in table.column_names else None
    return [_view_reject(view, None if keys is None else keys[row], sources,
                         f"{name} is {_JSON_KINDS.get(type(value), 'a number')}, not a FHIR {types.get(name)}",
                         orjson.dumps(value, default=str).decode())
            for name, row, value in lost]


def _unparsed_dates(view, raw: pa.Table, parsed: pa.Table, sources: dict[str, str]) -> list[dict]:
    """A reject row per date/dateTime value (each item of a ``collection`` column) that could not be parsed (the
    row keeps a null there).
    The view's ``id`` column (``getResourceKey()``, by the shipped views' convention) says which resource;
    ``sources`` maps ``Type/id`` to its source file."""
    rejects = []
    for name in view.temporal_columns:
        if name not in raw.column_names:
            continue
        text, times = raw.column(name), parsed.column(name)
        rows = None
        if pa.types.is_list(text.type):  # a collection column: its items, each with the row it is in
            text, times = text.combine_chunks(), times.combine_chunks()
            rows = pc.list_parent_indices(text)
            text, times = text.flatten(), times.flatten()
        lost = pc.and_(pc.is_valid(text), pc.is_null(times))
        if not pc.any(lost).as_py():
            continue
        if "id" not in raw.column_names:
            keys = pa.nulls(pc.sum(lost).as_py())
        else:
            keys = raw.column("id").filter(lost) if rows is None else raw.column("id").take(rows.filter(lost))
        values = text.filter(lost)
        rejects += [_view_reject(view, key, sources, f"{name} is not a FHIR date/dateTime", str(value))
                    for key, value in zip(keys.to_pylist(), values.to_pylist(), strict=True)]
    return rejects


_JSON_KINDS = {str: "text", bool: "a boolean", dict: "an object", list: "a list"}  # other values are numbers


def _view_reject(view, key: str | None, sources: dict[str, str], problem: str, raw: str) -> dict:
    """The reject row of a view value kept as null: located by ``Type/id``, in the resource's source file."""
    location = f"{view.resource}/{key}"
    return {"source": sources.get(location, "fhir_resources"), "location": location,
            "reason": f"view {view.name}: {problem} (kept as null)", "raw": raw[:RAW_LIMIT]}


# -- parallel map with bounded queues ----------------------------------------------------------------------
Work = Callable[[object], Iterator[_Chunk]]


class _Pool:
    """``workers`` spawned processes that apply generator functions to tasks (``workers <= 1``: this process).

    Queues are bounded, so memory does not grow with the input; the same processes serve both passes.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._procs: list = []

    def __enter__(self) -> _Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def map(self, fn: Work, tasks: Iterable[object]) -> Iterator[_Chunk]:
        """Yield the chunks of ``fn(task)`` for every task, as they come (in any order across tasks)."""
        if self.workers <= 1:
            yield from _inline(fn, tasks)
            return
        if not self._procs:
            self._start()
        stop, fed = threading.Event(), threading.Event()
        submitted = [0]

        def feed() -> None:
            for task in tasks:
                while not stop.is_set():
                    try:
                        self._task_q.put((fn, task), timeout=0.5)
                        submitted[0] += 1
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            fed.set()

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        finished = 0
        try:
            while not (fed.is_set() and finished == submitted[0]):
                try:
                    kind, payload = self._result_q.get(timeout=0.2)
                except queue.Empty:
                    dead = next((p.exitcode for p in self._procs if p.exitcode is not None), None)
                    if dead is not None:
                        raise RuntimeError(_worker_death(dead)) from None
                    continue
                if kind == "error":
                    raise RuntimeError(f"a FHIR worker failed:\n{payload}")
                if kind == "task done":
                    finished += 1
                else:
                    yield payload
        except BaseException:
            stop.set()
            self.close()
            raise
        finally:
            feeder.join(timeout=5)

    def _start(self) -> None:
        ctx = mp.get_context("spawn")  # not fork: the parent runs Delta Lake's threads
        self._task_q = ctx.Queue(maxsize=2 * self.workers)
        self._result_q = ctx.Queue(maxsize=4 * self.workers)
        for _ in range(self.workers):
            proc = ctx.Process(target=_worker, args=(self._task_q, self._result_q), daemon=True)
            proc.start()
            self._procs.append(proc)  # only started ones: close() joins them

    def close(self) -> None:
        """Stop the worker processes (idle ones exit cleanly, busy ones are terminated)."""
        for proc in self._procs:
            if proc.is_alive():
                try:
                    self._task_q.put(None, timeout=1)
                except queue.Full:
                    pass
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        self._procs = []


def _worker_death(exitcode: int) -> str:
    """Why a worker process ended before its task did, from its exit code (negative: killed by a signal)."""
    if exitcode < 0:
        return (f"a FHIR worker process was killed (signal {-exitcode}; out of memory?); rerun with fewer "
                "--workers or a smaller --batch-size")
    return (f"a FHIR worker process exited with code {exitcode} before finishing its task (its error is printed "
            "above). Worker processes are spawned and re-import the main script: a script that calls ingest_fhir "
            "or reflatten_views with workers > 1 must do so under `if __name__ == \"__main__\":`")


def _inline(fn: Work, tasks: Iterable[object]) -> Iterator[_Chunk]:
    for task in tasks:
        chunks = fn(task)
        while True:
            with _gc_paused():  # only while parsing: the parent's lake writes run with the collector on
                chunk = next(chunks, None)
            if chunk is None:
                break
            yield chunk


def _worker(task_q, result_q) -> None:
    gc.freeze()  # the imported modules: never scanned again
    gc.disable()  # a worker only parses and flattens, which makes no reference cycles
    try:
        for fn, task in iter(task_q.get, None):
            for chunk in fn(task):
                result_q.put(("chunk", chunk))
            result_q.put(("task done", None))
    except BaseException:  # report to the parent, which raises
        result_q.put(("error", traceback.format_exc(limit=5)))


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic collector (parsed JSON makes no cycles; collecting while millions of parsed objects
    are alive costs more than the parsing)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
