"""Lake upkeep (``tumorboard lake compact``): rewrite each Delta table's small files into few, then delete the data
files that no table version within the retention still references, then checkpoint each table's transaction log
and delete its expired entries.

Every ingest commits at least one new Parquet file per table it writes, and a merge (a re-ingest: newest version
wins) rewrites the files holding the rows it replaces while the old files stay on disk for the table's earlier
versions; every commit also adds a file to the table's log (``_delta_log``), which each open reads. A lake fed a
daily export thus grows in files (every read opens them all), in bytes (superseded files are never deleted) and
in log. Three steps undo that, table by table, holding the lake's writer lock (:meth:`ingest.lake.Lake.exclusive`:
never beside an ingest):

1. *compaction* (``DeltaTable.optimize.compact``): the live files smaller than :data:`TARGET_SIZE` are rewritten
   into files of about that size, in one commit that changes no row (their order is kept); the old files are
   retired, not deleted, so a reader of the previous version goes on reading it;
2. *vacuum* (``DeltaTable.vacuum``, in its full mode): the data files retired more than ``keep_hours`` ago are
   deleted, with the files no commit ever named (left by a killed run) that are older than that;
3. *log upkeep* (:func:`ingest.delta_log.tidy_log`): a checkpoint at the table's current version, so that an open
   replays no commit, and the deletion of the log entries older than the table's log retention (30 days), unless
   that would leave a version of the last ``keep_hours`` unreadable by number.

``keep_hours`` defaults to :data:`KEEP_HOURS` (a week, Delta's own default): a reader that opened a table before a
compaction (a Streamlit session, a training run, another tool reading an older version by number) keeps its files
at least that long. The files a compaction retires are deleted by a later compaction at least ``keep_hours``
after it, so a weekly or daily ``compact`` keeps the lake at about a week of superseded files. ``keep_hours=0``
deletes them at once: only when nothing is reading the lake. The log upkeep leaves every version of the last
``keep_hours`` readable by number, and every version committed within the table's log retention
(``delta.logRetentionDuration``, default 30 days): see :mod:`ingest.delta_log`. A table with nothing to do gets
no new version, and no second checkpoint.

The run is recorded in ``manifest`` (command ``lake compact``), which :meth:`Lake.manifest_hash` leaves out: no
row changes, so a model trained before a compaction does not report its lake changed. The image tensors
(``_tensors/``, pruned by every images ingest) and staging folders (``_staging/``, removed by the next staged
ingest) are not Delta tables and are left alone.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from ingest.delta_log import LOG_FOLDER, log_files, plan_log, tidy_log
from ingest.lake import (
    TARGET_FILE_BYTES,
    TERMINAL_COLOUR,
    WRITER_PROPERTIES,
    Lake,
    LakeError,
    damage_message,
    local_path,
)

COMMAND = "lake compact"  # its manifest command (in ingest.lake.MAINTENANCE_COMMANDS)
KEEP_HOURS = 168  # a week: Delta's default retention of retired files (delta.deletedFileRetentionDuration)
TARGET_SIZE = TARGET_FILE_BYTES  # files the lake's own Delta writes aim at; a reader holds one file at a time


@dataclass(frozen=True)
class TableCompaction:
    """One table's compaction: its data files (``live``: those of the current version; ``files`` and ``bytes``:
    all on disk, the live ones and the retired ones a vacuum has not deleted yet, the log left out) before and
    after. In a dry run, ``*_after`` are estimates and ``compacted``, ``written`` and ``deleted`` what a run would
    do."""

    table: str
    live_before: int
    live_after: int
    files_before: int
    files_after: int
    bytes_before: int
    bytes_after: int
    compacted: int  # live files rewritten
    written: int  # files the rewrite wrote (a dry run: about how many)
    deleted: int  # files the vacuum deleted
    deleted_bytes: int
    log_before: int  # files in the table's _delta_log (commits, checkpoints): see ingest.delta_log
    log_after: int
    log_kept: str = ""  # why expired log entries were kept ("": none was, or none had expired)


@dataclass
class Compaction:
    """What :func:`compact_lake` did (or, with ``dry_run``, would do), table by table."""

    lake: Path
    keep_hours: int
    dry_run: bool
    tables: list[TableCompaction] = field(default_factory=list)

    def totals(self) -> dict[str, int]:
        """The tables' numbers added up (the number fields of :class:`TableCompaction`)."""
        names = [f for f in TableCompaction.__dataclass_fields__ if f not in ("table", "log_kept")]
        return {name: sum(getattr(t, name) for t in self.tables) for name in names}

    def counts(self) -> dict[str, object]:
        """The manifest row's counts: the totals and the retention (its sources name the tables)."""
        return {**self.totals(), "keep_hours": self.keep_hours}


def compact_lake(lake: Lake, tables: Iterable[str] | None = None, *, keep_hours: int = KEEP_HOURS,
                 dry_run: bool = False, target_size: int = TARGET_SIZE) -> Compaction:
    """Compact the small files of ``tables`` (default: every table of ``lake``), then delete the data files
    retired at least ``keep_hours`` ago, then checkpoint each table's log and delete its expired entries (see the
    module's docstring); record the run in ``manifest``.

    ``dry_run``: change nothing (no lock taken, no run recorded) and report what a run would do: the files a
    compaction would rewrite (those under ``target_size``, when a table has two or more), the files the vacuum
    would delete (with ``keep_hours=0`` these include the files the compaction would retire) and the log files
    left (the log upkeep tried on a copy of each log).

    Raises:
        LakeError: the lake does not exist, a table is not in it (the message lists those that are),
            ``keep_hours`` is negative, another run holds the writer lock, or a table cannot be read.
    """
    if keep_hours < 0:
        raise LakeError(f"keep_hours must be 0 or more, not {keep_hours}")
    if not lake.path.is_dir():
        raise LakeError(f"lake {lake.path} does not exist; create one with `tumorboard ingest ...`")
    if dry_run:
        names = _chosen(lake, tables)
        return Compaction(lake.path, keep_hours, True, [_plan(lake, n, keep_hours, target_size) for n in names])
    started = datetime.now(UTC)
    with lake.exclusive(COMMAND):  # what the lake holds is read under the lock: an ingest may have just finished
        names = _chosen(lake, tables)
        report = Compaction(lake.path, keep_hours, False)
        if not names:  # a folder without tables: recording the run would make its first two
            return report
        sources = [str(lake.table_path(name)) for name in names]
        with lake.failure_recorded(COMMAND, sources, report.counts, started_at=started):
            for name in names:
                report.tables.append(_compact(lake, name, keep_hours, target_size))
        lake.record_run(COMMAND, sources, report.counts(), started_at=started)
    return report


def _chosen(lake: Lake, tables: Iterable[str] | None) -> list[str]:
    """The tables to compact: ``tables`` in the order given (each once), else every table of the lake."""
    present = lake.tables()
    if tables is None:
        return present
    chosen = list(dict.fromkeys(tables))
    missing = [name for name in chosen if name not in present]
    if missing:
        listed = ", ".join(present) or "(none)"
        raise LakeError(f"no table {', '.join(map(repr, missing))} in lake {lake.path}; its tables: {listed}")
    return chosen


@contextmanager
def _delta_errors(lake: Lake, name: str) -> Iterator[None]:
    """deltalake's errors as a :class:`LakeError` naming the table."""
    try:
        yield
    except (DeltaError, OSError) as exc:  # OSError: the log's copy (ingest.delta_log) could not be written
        reason = " ".join(TERMINAL_COLOUR.sub("", str(exc)).split())
        raise LakeError(f"table {name!r} of lake {lake.path} could not be compacted: {reason}") from exc


def _data_files(folder: Path, name: str) -> dict[Path, int]:
    """The files of table folder ``folder`` outside its Delta log, with their sizes."""
    found: dict[Path, int] = {}
    folder = Path(os.path.realpath(folder))
    try:
        for root, dirs, files in os.walk(folder):
            if Path(root) == folder and LOG_FOLDER in dirs:
                dirs.remove(LOG_FOLDER)
            for file in files:
                path = Path(root, file)
                found[path] = path.stat().st_size
    except OSError as exc:
        raise LakeError(damage_message(name, exc)) from None
    return found


def _live(table: DeltaTable, name: str) -> dict[Path, int]:
    """The data files of ``table``'s current version, with their sizes (one missing: the table is damaged)."""
    live: dict[Path, int] = {}
    try:
        for uri in table.file_uris():
            path = local_path(uri)
            live[path] = path.stat().st_size
    except OSError as exc:
        raise LakeError(damage_message(name, exc)) from None
    return live


def _retired(table: DeltaTable, folder: Path, keep_hours: int, on_disk: dict[Path, int]) -> set[Path]:
    """The files on disk a vacuum with ``keep_hours`` would delete now (deltalake also lists the files an earlier
    vacuum deleted, as long as the log still names them)."""
    listed = table.vacuum(retention_hours=keep_hours, dry_run=True, enforce_retention_duration=False, full=True)
    folder = Path(os.path.realpath(folder))
    return {local_path(path) if path.startswith(("/", "file:")) else folder / unquote(path) for path in listed} \
        & set(on_disk)


def _small(live: dict[Path, int], target_size: int) -> dict[Path, int]:
    """The live files a compaction rewrites: those under ``target_size``, when there are two or more (deltalake
    leaves a lone small file as it is)."""
    small = {path: size for path, size in live.items() if size < target_size}
    return small if len(small) >= 2 else {}


def _plan(lake: Lake, name: str, keep_hours: int, target_size: int) -> TableCompaction:
    """What :func:`_compact` would do to table ``name``, nothing changed (the rewrite is taken to write about as
    many bytes as it reads)."""
    folder = lake.table_path(name)
    with _delta_errors(lake, name):  # a damaged log: when the table is opened
        table = lake.delta_table(name)
    on_disk, live = _data_files(folder, name), _live(table, name)
    small = _small(live, target_size)
    written = math.ceil(sum(small.values()) / target_size) if small else 0
    with _delta_errors(lake, name):
        doomed = _retired(table, folder, keep_hours, on_disk) | (set(small) if keep_hours == 0 else set())
        log = plan_log(table, folder, keep_hours, commits=bool(small) + 2 * bool(doomed))  # a vacuum commits twice
    gone = sum(on_disk.get(path, 0) for path in doomed)
    return TableCompaction(name, len(live), len(live) - len(small) + written, len(on_disk),
                           len(on_disk) + written - len(doomed), sum(on_disk.values()),
                           sum(on_disk.values()) + sum(small.values()) - gone, len(small), written, len(doomed), gone,
                           log_files(folder), log.files, log.kept)


def _compact(lake: Lake, name: str, keep_hours: int, target_size: int) -> TableCompaction:
    """Compact, then vacuum, table ``name`` (each a Delta commit or none: a table with nothing to do gets no new
    version), then checkpoint its log and delete the expired entries (:func:`ingest.delta_log.tidy_log`)."""
    folder = lake.table_path(name)
    with _delta_errors(lake, name):  # a damaged log: when the table is opened
        table = lake.delta_table(name)
    before, live_before, log_before = _data_files(folder, name), _live(table, name), log_files(folder)
    compacted = 0
    with _delta_errors(lake, name):
        if _small(live_before, target_size):
            metrics = table.optimize.compact(target_size=target_size, writer_properties=WRITER_PROPERTIES)
            compacted = int(metrics.get("numFilesRemoved", 0))
            table = lake.delta_table(name)
        # deltalake's vacuum commits (twice) even when it deletes nothing: ask first, so an idle lake stays as it is
        if _retired(table, folder, keep_hours, _data_files(folder, name)):
            table.vacuum(retention_hours=keep_hours, dry_run=False, enforce_retention_duration=False, full=True)
        table = lake.delta_table(name)
        log = tidy_log(table, folder, keep_hours)
    after, live_after = _data_files(folder, name), _live(table, name)
    gone = set(before) - set(after)
    return TableCompaction(name, len(live_before), len(live_after), len(before), len(after),
                           sum(before.values()), sum(after.values()), compacted, len(set(after) - set(before)),
                           len(gone), sum(before[p] for p in gone), log_before, log.files, log.kept)
