"""The lake: a directory of Delta Lake tables plus binary side files.

Layout of a lake directory::

    LAKE/
      <table>/            one Delta table per name in ``ingest.schema`` (Parquet files + ``_delta_log``)
      view_<name>/        one Delta table per FHIR ViewDefinition
      _tensors/           memory-mappable image tensors, referenced from the ``images`` table

Every write is one atomic Delta commit: a reader sees the previous version or the new one, never half of a
write, and an interrupted write leaves the previous version intact (a run of several writes keeps the ones it
committed). Other tools (DuckDB, Polars, Spark) read the tables without tumorboard. ``manifest`` records each
ingest run; ``rejects`` keeps what could not be ingested. :mod:`ingest.compact` compacts the small files ingests
leave, deletes the ones no recent version reads, and checkpoints each table's log and deletes its expired entries.
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from deltalake.transaction import AddAction

from ingest import __version__
from ingest.schema import SCHEMA_VERSION, SCHEMAS, conform, keys_for

WriteMode = Literal["append", "overwrite", "merge"]
RAW_LIMIT = 10_000
ROW_GROUP_ROWS = 65_536  # Parquet row groups of every write: readers get bounded batches
ROW_GROUP_BYTES = 64 << 20  # ... or this much Arrow data, whichever comes first (a streamed write buffers one)
# deltalake's own writes (replace_where overwrites, lake compact): Snappy, as _write_streamed writes; without a
# codec WriterProperties writes uncompressed Parquet (a compacted fhir_resources grew 5.3x)
WRITER_PROPERTIES = WriterProperties(max_row_group_size=ROW_GROUP_ROWS, compression="SNAPPY")
TARGET_FILE_BYTES = 32 << 20  # data file size of the Delta writer (replace_where overwrites)
STREAM_FILE_ROWS = 1_000_000  # rows per Parquet file of a streamed write (see _write_streamed)
STALE_STAGING_HOURS = 24.0  # another run's staging folder untouched this long was left by a killed run
LOCK_FILE = "_lock"  # LAKE/_lock, the writer lock's file (see Lake.exclusive); it stays when unlocked
# Manifest commands of runs that rewrite files without changing a row (ingest.compact): no new lake state
MAINTENANCE_COMMANDS = frozenset({"lake compact"})
_HELD: dict[str, list] = {}  # resolved lake path -> [open lock file, depth]: the writer locks this process holds


class LakeError(RuntimeError):
    """A lake operation failed (missing table, bad path, ...)."""


def one_writer(run: Callable) -> Callable:
    """Decorate an ingest function whose first argument is the :class:`Lake`: it runs holding the lake's writer
    lock (:meth:`Lake.exclusive`), from reading what the lake holds to recording the run."""
    import functools

    @functools.wraps(run)
    def wrapper(lake: Lake, *args, **kwargs):
        with lake.exclusive():
            return run(lake, *args, **kwargs)

    return wrapper


class Lake:
    """A tumorboard lake rooted at ``path`` (created on first write).

    Args:
        path: the lake directory.
        run_id: identifier of the current ingest run, stamped on rejects and the manifest row; a new one is
            generated when omitted.
    """

    def __init__(self, path: str | Path, *, run_id: str | None = None) -> None:
        self.path = Path(path)
        self.run_id = run_id or uuid.uuid4().hex[:12]
        if self.path.exists() and not self.path.is_dir():
            raise LakeError(f"{self.path} is a file, not a lake directory; pass a directory path")

    # -- tables ------------------------------------------------------------------------------------------
    @property
    def tensor_dir(self) -> Path:
        """Folder for binary side files (image tensors); created on demand."""
        folder = self.path / "_tensors"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def staging_dir(self) -> Path:
        """This run's scratch folder, ``LAKE/_staging/<run_id>`` (not created). Its owner removes it; what a
        killed run left behind is removed by :meth:`remove_stale_staging`."""
        return self.path / "_staging" / self.run_id

    def remove_staging(self) -> None:
        """Remove this run's staging folder, and ``LAKE/_staging`` when nothing else is left in it."""
        import shutil

        folder = self.staging_dir()
        shutil.rmtree(folder, ignore_errors=True)
        if folder.parent.is_dir() and not any(folder.parent.iterdir()):
            folder.parent.rmdir()

    def remove_stale_staging(self, older_than_hours: float = STALE_STAGING_HOURS) -> int:
        """Remove the staging folders of other runs untouched for ``older_than_hours`` (a run killed outright,
        by SIGKILL or the out-of-memory killer, cannot clean up after itself); returns how many. A live run
        writes to its folder continuously, so its folder is never that old."""
        import shutil
        import time

        root = self.path / "_staging"
        if not root.is_dir():
            return 0
        cutoff = time.time() - older_than_hours * 3600
        removed = 0
        for folder in root.iterdir():
            if folder.name == self.run_id or not folder.is_dir():
                continue
            newest = max([p.stat().st_mtime for p in folder.rglob("*")] + [folder.stat().st_mtime])
            if newest < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed

    @contextmanager
    def exclusive(self, task: str | None = None) -> Iterator[None]:
        """Hold the lake's writer lock while the block runs (an ingest run; every :meth:`write` takes it too;
        ``task`` names a run other than an ingest, such as ``lake compact``, in the refusal a second run gets).

        One ingest per lake at a time: a run decides what to append or merge from what the lake held when it
        started, so two runs at once would both append the same new rows (Delta never refuses a blind append).
        The lock is an advisory ``flock`` of ``LAKE/_lock``: the operating system releases it when its process
        ends, however it ends (Ctrl-C, SIGKILL, the out-of-memory killer), so no stale lock is left behind. It is
        re-entrant within one process (a cBioPortal ingest runs the variants ingest). Readers take no lock.

        Raises:
            LakeError: another process holds the lock (its pid and run id are named).
        """
        try:
            import fcntl
        except ImportError:  # Windows: no flock; one ingest per lake at a time stays the user's rule
            yield
            return
        key = str(self.path.resolve())
        held = _HELD.get(key)
        created = False
        if held is None:
            created = not self.path.exists()
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(self.path / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115 (held past this block)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                owner = handle.read().strip()[:200]
                handle.close()
                holder = owner.split(", ", 2)  # "pid N, run ID[, task]"
                doing = f"`tumorboard {holder[2]}`" if len(holder) == 3 else "another ingest"
                raise LakeError(f"{doing} is writing to lake {self.path}" + (f" ({owner})" if owner else "")
                                + "; run one ingest per lake at a time: wait for it to finish, then run this one"
                                  " again") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}, run {self.run_id}" + (f", {task}" if task else ""))
            handle.flush()
            held = _HELD[key] = [handle, 0]
        held[1] += 1
        try:
            yield
        finally:
            held[1] -= 1
            if held[1] == 0:
                del _HELD[key]
                held[0].close()  # closing the file releases the flock
                if created and [p.name for p in self.path.iterdir()] == [LOCK_FILE]:
                    with suppress(OSError):  # a run that wrote nothing (its input was refused) leaves no lake
                        (self.path / LOCK_FILE).unlink()
                        self.path.rmdir()

    def table_path(self, name: str) -> Path:
        if not name or "/" in name or name.startswith(("_", ".")):
            raise LakeError(f"invalid table name {name!r}")
        return self.path / name

    def has(self, name: str) -> bool:
        """Whether table ``name`` exists in this lake."""
        return DeltaTable.is_deltatable(str(self.table_path(name)))

    def tables(self) -> list[str]:
        """Names of the tables present, sorted."""
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir()
                      if p.is_dir() and not p.name.startswith(("_", ".")) and self.has(p.name))

    def version(self, name: str) -> int:
        """The Delta version of table ``name`` (it grows by one per commit)."""
        return self.delta_table(name).version()

    def delta_table(self, name: str) -> DeltaTable:
        try:
            return DeltaTable(str(self.table_path(name)))
        except TableNotFoundError:
            raise LakeError(
                f"table {name!r} does not exist in lake {self.path}; run the matching `tumorboard ingest`"
                " command first") from None

    def read(self, name: str, columns: list[str] | None = None) -> pa.Table:
        """Read table ``name`` (all rows), with the registered schema's metadata re-attached."""
        with _damaged(name):
            return _lake_types(name, self.delta_table(name).to_pyarrow_table(columns=columns))

    def count_rows(self, name: str) -> int:
        """The number of rows of table ``name`` (from the Parquet footers)."""
        with _damaged(name):
            return self.dataset(name).count_rows()

    def data_files(self, name: str) -> list[Path]:
        """The Parquet files of table ``name``'s current version (:func:`local_path` of deltalake's URIs)."""
        return [local_path(uri) for uri in self.delta_table(name).file_uris()]

    def dataset(self, name: str):
        """A lazily scanned ``pyarrow.dataset.Dataset`` over table ``name`` (for large tables)."""
        return self.delta_table(name).to_pyarrow_dataset()

    def batches(self, name: str, columns: list[str], *, equals: tuple[str, str] | None = None
                ) -> Iterator[pa.RecordBatch]:
        """Stream table ``name`` in record batches, optionally keeping rows where ``column == value``.

        Memory is bounded by one data file: files are read one at a time without read-ahead and, with
        ``equals``, a file is read past its filter column only when that column matches. The filter is
        applied after reading because files written by a Delta merge may store strings as ``string_view``,
        which pyarrow cannot filter.
        """
        with _damaged(name):
            for fragment in self.dataset(name).get_fragments():
                if equals is None:
                    yield from fragment.to_batches(columns=list(columns), batch_readahead=1)
                    continue
                column, value = equals
                found = pc.equal(fragment.to_table(columns=[column]).column(column).cast(pa.string()),
                                 pa.scalar(value, pa.string()))
                if pc.any(found).as_py():
                    table = _lake_types(name, fragment.to_table(columns=list(columns)))
                    yield from table.filter(found).to_batches()

    def write(self, name: str, table: pa.Table | pa.RecordBatchReader, *, mode: WriteMode = "append",
              keys: list[str] | None = None, newest_by: str | Sequence[str] | None = None,
              replace_where: str | None = None) -> int:
        """Validate ``table`` against the schema of ``name`` and commit it atomically.

        Args:
            name: table name registered in ``ingest.schema``.
            table: the rows to write (a ``RecordBatchReader`` streams; an error while reading it aborts the
                commit and leaves the previous version intact).
            mode: ``append``, ``overwrite`` (replace all rows) or ``merge`` (upsert on ``keys``).
            keys: merge keys; default the keys declared in the schema.
            newest_by: for ``merge``, the columns that say which of two rows with the same key is newer
                (e.g. ``["last_updated", "version_id"]``), among the rows written and against the stored row:
                the first column where both rows have a value and the values differ decides (string columns
                decide only when both values are integers, as FHIR versionIds usually are); when none
                decides, the row written later wins.
            replace_where: for ``overwrite``, a SQL predicate: only the rows matching it are replaced, in the
                same commit as the new rows are added (e.g. one feature modality).

        Returns:
            The number of rows written.

        Raises:
            LakeError: another process committed to the table at the same time, or holds the lake's writer lock
                (one writer per lake: :meth:`exclusive`).
        """
        try:
            with self.exclusive():
                return self._write(name, table, mode=mode, keys=keys, newest_by=newest_by,
                                   replace_where=replace_where)
        except CommitFailedError as exc:
            raise LakeError(f"table {name!r} of lake {self.path}: another run committed to it at the same time"
                            f" ({exc}); run one ingest per lake at a time, then run this one again") from exc

    def _write(self, name: str, table: pa.Table | pa.RecordBatchReader, *, mode: WriteMode,
               keys: list[str] | None, newest_by: str | Sequence[str] | None, replace_where: str | None) -> int:
        """:meth:`write` without the translation of commit conflicts."""
        if isinstance(table, pa.RecordBatchReader):
            counter = [0]
            table = _validated_stream(name, table, counter)
            n_rows = None
        else:
            table = conform(name, table)
            n_rows = table.num_rows
        self.path.mkdir(parents=True, exist_ok=True)
        target = str(self.table_path(name))
        if mode == "merge" and self.has(name):
            if isinstance(table, pa.RecordBatchReader):
                table = table.read_all()
            keys = keys or keys_for(name)
            if not keys:
                raise LakeError(f"table {name!r} declares no merge keys; pass keys=[...]")
            order = _columns(newest_by)
            table = _deduplicate(table, keys, order)
            n_rows = table.num_rows
            if order:
                table = self._newer_than_stored(name, table, keys, order)
            if table.num_rows == 0:
                return n_rows
            predicate = " AND ".join(f"t.{_quote(k)} = s.{_quote(k)}" for k in keys)
            (self.delta_table(name)
             # merge_schema: a table written before a column existed gains it (Delta drops it otherwise)
             .merge(table, predicate=predicate, source_alias="s", target_alias="t", merge_schema=True)
             .when_matched_update_all()
             .when_not_matched_insert_all()
             .execute())
            return n_rows
        if mode == "merge":
            if isinstance(table, pa.RecordBatchReader):
                table = table.read_all()
            table = _deduplicate(table, keys or keys_for(name), _columns(newest_by))
            n_rows = table.num_rows
            mode = "append"
        if mode not in ("append", "overwrite"):
            raise LakeError(f"unknown write mode {mode!r}; use append, overwrite or merge")
        if replace_where is not None and mode == "overwrite" and self.has(name):
            write_deltalake(target, table, mode="overwrite", predicate=replace_where,
                            writer_properties=WRITER_PROPERTIES, target_file_size=TARGET_FILE_BYTES)
        else:
            if isinstance(table, pa.Table):
                table = pa.RecordBatchReader.from_batches(table.schema, table.to_batches())
            _write_streamed(target, table, mode)
        return counter[0] if n_rows is None else n_rows

    def _newer_than_stored(self, name: str, table: pa.Table, keys: list[str], order: list[str]) -> pa.Table:
        """The rows of ``table`` (unique keys) that are new or newer than the stored row with their key; reads
        only the key and ordering columns, one batch at a time."""
        wanted = _joined_key(table, keys)
        stored: dict[str, tuple] = {}
        with _damaged(name):
            for batch in self.dataset(name).to_batches(columns=[*keys, *order], batch_readahead=1,
                                                       fragment_readahead=1):
                found = batch.filter(pc.is_in(_joined_key(batch, keys), value_set=wanted))
                if found.num_rows:
                    found_keys = _joined_key(found, keys).to_pylist()
                    values = zip(*(found.column(c).to_pylist() for c in order), strict=True)
                    stored.update(zip(found_keys, values, strict=True))
        if not stored:
            return table
        incoming = zip(*(table.column(c).to_pylist() for c in order), strict=True)
        keep = [key not in stored or _is_newer(values, stored[key])
                for key, values in zip(wanted.to_pylist(), incoming, strict=True)]
        return table.filter(pa.array(keep, pa.bool_()))

    # -- bookkeeping -------------------------------------------------------------------------------------
    def add_rejects(self, rows: Iterable[Mapping[str, object]], *, modality: str | None = None) -> int:
        """Append rows to ``rejects``; each has ``source``, ``reason`` and optionally ``location``, ``raw``."""
        now = datetime.now(UTC)
        records = []
        for row in rows:
            raw = row.get("raw")
            if raw is not None and not isinstance(raw, str):
                raw = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else json.dumps(raw)
            records.append({
                "run_id": self.run_id,
                "modality": row.get("modality") or modality,
                "source": str(row["source"]),
                "location": None if row.get("location") is None else str(row["location"]),
                "reason": str(row["reason"]),
                "raw": None if raw is None else raw[:RAW_LIMIT],
                "rejected_at": now,
            })
        if not records:
            return 0
        return self.write("rejects", pa.Table.from_pylist(records, schema=SCHEMAS["rejects"]))

    def record_run(self, command: str, sources: Iterable[str | Path], counts: Mapping[str, object], *,
                   started_at: datetime, status: str = "ok") -> None:
        """Append one row to ``manifest``: what was ingested, when, from which files, by which version."""
        row = {
            "run_id": self.run_id,
            "command": command,
            "started_at": started_at,
            "finished_at": datetime.now(UTC),
            "tumorboard_version": __version__,
            "schema_version": SCHEMA_VERSION,
            "sources": [str(s) for s in sources],
            "counts": json.dumps(dict(counts), default=str, sort_keys=True),
            "status": status,
        }
        if not self.has("rejects"):  # a clean first run still leaves a (empty) rejects table to query
            self.write("rejects", SCHEMAS["rejects"].empty_table())
        self.write("manifest", pa.Table.from_pylist([row], schema=SCHEMAS["manifest"]))

    @contextmanager
    def failure_recorded(self, command: str, sources: Iterable[str | Path],
                         counts: Callable[[], Mapping[str, object]], *, started_at: datetime) -> Iterator[None]:
        """When the block raises (an error, Ctrl-C, SIGTERM), record the run as ``failed`` with ``counts()`` as
        they stand and the error's type, then re-raise: the manifest says what the run committed before it
        stopped (each table write is atomic; running the same command again completes the lake)."""
        sources = list(sources)
        try:
            yield
        except BaseException as exc:
            with suppress(Exception):
                self.record_run(command, sources, {**counts(), "error": type(exc).__name__}, started_at=started_at,
                                status="failed")
            raise

    def manifest_hash(self) -> str:
        """A short hash of the manifest's ingest runs (identifies the lake state a model was trained on).

        Maintenance runs (:data:`MAINTENANCE_COMMANDS`: ``lake compact``) are left out: they rewrite files but
        change no row, so a run trained before a compaction still finds its lake unchanged. A lake without such
        runs hashes as it always did."""
        import hashlib

        if not self.has("manifest"):
            return "empty"
        manifest = self.read("manifest", ["run_id", "command"])
        commands = manifest.column("command").to_pylist()
        runs = sorted(run for run, command in zip(manifest.column("run_id").to_pylist(), commands, strict=True)
                      if command not in MAINTENANCE_COMMANDS)
        if not runs and commands:  # maintenance runs only: the lake holds what it held with none
            return "empty"
        return hashlib.sha256("\n".join(runs).encode()).hexdigest()[:16]

    # -- query -------------------------------------------------------------------------------------------
    def sql(self, query: str, *, memory_limit: str | None = None) -> pa.Table:
        """Run one read-only DuckDB query (``SELECT``, ``WITH``, ``FROM``, ``DESCRIBE`` or ``SUMMARIZE``) in
        which every lake table is a view of the same name; the whole result (see
        :meth:`sql_batches` for a stream). ``memory_limit`` (e.g. ``"256MB"``): DuckDB's working memory, beyond
        which it spills to a temporary folder that is removed afterwards (None: DuckDB's default, 80% of RAM).

        Raises:
            LakeError: the query is not valid SQL, not one statement, or would write (``COPY``, ``CREATE``,
                ``ATTACH``, ``SET``...) or would read outside the lake (``read_csv('/etc/...')``, a URL): the
                lake's files are written by ingest only, and a query sees the lake alone.
        """
        with self.sql_batches(query, memory_limit=memory_limit) as batches:
            return batches.read_all()

    @contextmanager
    def sql_batches(self, query: str, batch_rows: int = 10_000, *,
                    memory_limit: str | None = None) -> Iterator[pa.RecordBatchReader]:
        """:meth:`sql`'s result as a stream of batches of up to ``batch_rows`` rows, read while the block runs
        (memory bounded whatever the result's size; ``memory_limit`` as in :meth:`sql`)."""
        import duckdb

        try:
            statements = duckdb.extract_statements(query)
        except duckdb.Error as exc:
            raise LakeError(f"SQL error: {exc}") from exc
        kinds = [str(statement.type).rsplit(".", 1)[-1] for statement in statements]
        if kinds != ["SELECT"]:  # EXPLAIN ANALYZE would run the statement it explains
            given = ("an empty query" if not kinds else f"{len(kinds)} statements" if len(kinds) > 1
                     else query.split(None, 1)[0].rstrip(";").upper())  # INSTALL, not DuckDB's kind (LOAD)
            raise LakeError(f"lake sql runs one read-only query (SELECT, WITH, FROM, DESCRIBE, SUMMARIZE), not"
                            f" {given}: the lake's files change only through"
                            " `tumorboard ingest` and `tumorboard lake compact`; to export a result, use --format csv"
                            " > FILE")
        # no extension is fetched or loaded on the query's behalf (``FROM 'https://...'`` would install httpfs)
        con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
        spill = tempfile.TemporaryDirectory(prefix="tumorboard-sql-") if memory_limit else None
        try:
            if spill is not None:
                con.execute("SET memory_limit = ?", [memory_limit])
                con.execute("SET temp_directory = ?", [spill.name])
            for name in self.tables():
                # DuckDB reads the table's current Parquet files itself: a pyarrow dataset would fail to filter
                # the string_view columns that Delta merges write
                files = [str(path) for path in self.data_files(name)]
                if not files:
                    con.register(name, self.read(name))
                    continue
                try:
                    con.read_parquet(files, union_by_name=True).create_view(name)
                except duckdb.Error as exc:
                    raise LakeError(damage_message(name, exc)) from None
            _confine(con, self.path)
            try:
                reader = con.sql(query).to_arrow_reader(batch_rows)
            except duckdb.Error as exc:
                raise LakeError(f"SQL error: {exc}; tables: {', '.join(self.tables()) or '(none)'}") from exc
            yield _sql_errors_named(reader)
        finally:
            con.close()
            if spill is not None:
                spill.cleanup()


TERMINAL_COLOUR = re.compile(r"\x1b\[[0-9;]*m")  # deltalake colours its error messages
# Read failures that are no damage, as deltalake ("Permission denied (os error 13)") and DuckDB ("IO Error: ...:
# Permission denied") word them: neither sets an OSError errno
_NOT_DAMAGE = re.compile(r"permission denied|operation not permitted|too many open files|\(os error (1|13|24)\)",
                         re.IGNORECASE)


def local_path(uri: str) -> Path:
    """The file a deltalake URI names: deltalake percent-encodes them (``my%20lake/``), DuckDB and the file
    system take the path as it is."""
    return Path(os.path.realpath(unquote(uri.removeprefix("file://"))))


@contextmanager
def _damaged(name: str) -> Iterator[None]:
    """Turn pyarrow's failure to read a table's Parquet file (truncated, overwritten, deleted) into a
    :class:`LakeError` that names the table and the fix."""
    try:
        yield
    except (pa.ArrowInvalid, OSError) as exc:
        raise LakeError(damage_message(name, exc)) from None


def damage_message(name: str, exc: Exception) -> str:
    reason = " ".join(TERMINAL_COLOUR.sub("", str(exc)).replace("\u21b3", "").split()).rstrip(".")
    if (isinstance(exc, OSError) and exc.errno not in (None, errno.ENOENT)) or _NOT_DAMAGE.search(reason):
        return f"lake table {name!r} cannot be read: {reason}"  # permissions, open files: no damage
    return (f"lake table {name!r} cannot be read: {reason}. A file of the lake was changed or removed outside "
            "tumorboard; restore the lake from a backup, or delete the table's folder and ingest its data again")


def _confine(con, root: Path) -> None:
    """Let the query read the lake's own files and nothing else: no other file (``read_csv('/etc/...')``,
    ``glob``), no URL, no extension, and no ``SET`` that would undo it (the configuration is locked)."""
    roots = sorted({f"{folder}/" for folder in (root.absolute(), root.resolve())})
    con.execute("SET allowed_directories = ?", [roots])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def _sql_errors_named(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """``reader`` whose query errors while streaming (a cast failing on row 1e6) raise :class:`LakeError`."""
    import duckdb

    def batches():
        try:
            yield from reader
        except (duckdb.Error, pa.ArrowException) as exc:
            raise LakeError(f"SQL error: {exc}") from exc

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


def _quote(column: str) -> str:
    return f"`{column}`"


def _validated_stream(name: str, reader: pa.RecordBatchReader, counter: list[int]) -> pa.RecordBatchReader:
    """``reader`` with every batch conformed to the schema of ``name``; ``counter[0]`` counts the rows."""
    schema = SCHEMAS[name] if name in SCHEMAS else reader.schema

    def batches():
        for batch in reader:
            counter[0] += batch.num_rows
            yield from conform(name, pa.Table.from_batches([batch])).to_batches()

    return pa.RecordBatchReader.from_batches(conform(name, schema.empty_table()).schema, batches())


def _columns(names: str | Sequence[str] | None) -> list[str]:
    return [names] if isinstance(names, str) else list(names or [])


def _is_newer(incoming: Sequence[object], stored: Sequence[object]) -> bool:
    """Whether a row with ordering values ``incoming`` replaces one with ``stored`` (rule: :meth:`Lake.write`)."""
    for new, old in zip(incoming, stored, strict=True):
        if isinstance(new, str) or isinstance(old, str):
            new, old = _integer(new), _integer(old)
        if new is not None and old is not None and new != old:
            return new > old
    return True


def _integer(value: object) -> int | None:
    return int(value) if isinstance(value, str) and value.isascii() and value.isdigit() else None


def _deduplicate(table: pa.Table, keys: list[str], order: list[str]) -> pa.Table:
    """One row per key, in first-seen order: the newest by ``order`` (see :func:`_is_newer`)."""
    if table.num_rows < 2:
        return table
    key_rows = list(zip(*(table.column(k).to_pylist() for k in keys), strict=True))
    order_rows = list(zip(*(table.column(c).to_pylist() for c in order), strict=True)) if order else None
    winner: dict[tuple, int] = {}
    for i, key in enumerate(key_rows):
        j = winner.get(key)
        if j is None or order_rows is None or _is_newer(order_rows[i], order_rows[j]):
            winner[key] = i
    if len(winner) == table.num_rows:
        return table
    return table.take(pa.array(sorted(winner.values()), pa.int64()))


def _joined_key(table: pa.Table | pa.RecordBatch, keys: list[str]) -> pa.Array:
    """One string per row from the key columns (unit separator between them)."""
    parts = [table.column(k).cast(pa.string()) for k in keys]
    joined = parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, "\x1f")
    return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined


def _lake_types(name: str, table: pa.Table) -> pa.Table:
    """``table`` as read from the files, cast to the registered schema of ``name`` (field types and the
    schema's metadata); unregistered columns keep their type, except ``string_view`` (written by Delta merges,
    and which pyarrow cannot filter) which becomes ``string``."""
    registered = SCHEMAS.get(name)

    def field(f: pa.Field) -> pa.Field:
        if registered is not None and registered.get_field_index(f.name) >= 0:
            return registered.field(f.name)
        return pa.field(f.name, pa.string(), f.nullable, f.metadata) if f.type == pa.string_view() else f

    schema = pa.schema([field(f) for f in table.schema],
                       metadata=registered.metadata if registered is not None else table.schema.metadata)
    if schema.equals(table.schema, check_metadata=True):
        return table
    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        # arrow's message quotes the value that failed (a name, an id): name the columns and types instead
        differ = [f"{f.name} ({f.type}, not {schema.field(f.name).type})" for f in table.schema
                  if f.type != schema.field(f.name).type]
        raise LakeError(f"table {name!r} has columns of other types than tumorboard writes: {', '.join(differ)} "
                        f"({type(exc).__name__}); the lake was changed outside tumorboard: re-run the ingest that "
                        "writes it") from None


# Columns whose values (almost) never repeat: Parquet's dictionary encoding of them is work thrown away (the
# writer gives up on it page by page); 200k Synthea resources of fhir_resources: 0.40 s vs 0.59 s to write.
UNIQUE_TEXT_COLUMNS = frozenset({"id", "json", "raw"})


def _write_streamed(target: str, reader: pa.RecordBatchReader, mode: WriteMode) -> None:
    """Append or overwrite a Delta table in bounded memory: pyarrow writes Parquet files of up to
    :data:`STREAM_FILE_ROWS` rows, then one Delta transaction adds them (an overwrite also removes the old
    files, in the same commit). The Delta writer held whole writes in memory, several times over: ~385 MB
    for a 1.6M-row view, ~100 MB per 20k-row commit of FHIR JSON. Small batches are gathered into row groups
    of up to :data:`ROW_GROUP_ROWS` rows or :data:`ROW_GROUP_BYTES` (a Bulk folder of 5,020 small files gave
    5,020 row groups of 40 rows). On an error the files written so far are deleted and the table is left as
    it was (or not created)."""
    import pyarrow.parquet as pq

    root = Path(target)
    root.mkdir(parents=True, exist_ok=True)
    schema = reader.schema
    written: list[Path] = []
    actions: list[AddAction] = []
    writer, rows = None, 0
    pending: list[pa.RecordBatch] = []
    pending_rows = pending_bytes = 0

    def flush(everything: bool) -> None:
        """Write the pending rows in whole row groups (``everything``: the rest too)."""
        nonlocal pending, pending_rows, pending_bytes
        table = pa.Table.from_batches(pending, schema=schema)
        cut = table.num_rows if everything else table.num_rows - table.num_rows % ROW_GROUP_ROWS
        if cut:
            writer.write_table(table.slice(0, cut), row_group_size=ROW_GROUP_ROWS)
        pending = table.slice(cut).to_batches()
        pending_rows, pending_bytes = table.num_rows - cut, sum(b.nbytes for b in pending)

    try:
        for batch in reader:
            if writer is None:
                written.append(root / f"part-{uuid.uuid4().hex}.parquet")
                writer, rows = pq.ParquetWriter(written[-1], schema, compression="snappy", use_dictionary=[
                    f.name for f in schema if f.name not in UNIQUE_TEXT_COLUMNS]), 0
            pending.append(batch)
            pending_rows += batch.num_rows
            pending_bytes += batch.nbytes
            rows += batch.num_rows
            if pending_rows >= ROW_GROUP_ROWS or pending_bytes >= ROW_GROUP_BYTES:
                flush(everything=pending_bytes >= ROW_GROUP_BYTES)
            if rows >= STREAM_FILE_ROWS:
                flush(everything=True)
                writer.close()
                actions.append(_add_action(written[-1], rows))
                writer = None
        if writer is not None:
            flush(everything=True)
            writer.close()
            actions.append(_add_action(written[-1], rows))
        if not (root / "_delta_log").is_dir():
            write_deltalake(target, schema.empty_table(), mode="overwrite")
        DeltaTable(target).create_write_transaction(actions, mode=mode, schema=schema)
    except BaseException:
        if writer is not None:
            writer.close()
        for path in written:
            path.unlink(missing_ok=True)
        raise


def _add_action(path: Path, rows: int) -> AddAction:
    """The Delta log entry of a new data file of ``rows`` rows (stats: the row count only)."""
    return AddAction(path.name, path.stat().st_size, {}, int(path.stat().st_mtime * 1000), True,
                     json.dumps({"numRecords": rows}))
