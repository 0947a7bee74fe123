"""Upkeep of a Delta table's transaction log (``<table>/_delta_log``), the last step of ``tumorboard lake compact``
(:mod:`ingest.compact`).

Every commit adds a JSON file to the log. Opening a table reads its newest checkpoint (the table at one version,
in one Parquet file) and replays the commits after it. deltalake writes a checkpoint itself only at every 100th
version (``delta.checkpointInterval``), so an open replays up to 99 commits, and it deletes expired entries only
below a checkpoint, after a commit of its own (its post-commit hook): a lake fed daily keeps months of commit
files, and a table nobody writes keeps them for good. :func:`tidy_log`:

1. writes a checkpoint at the table's current version (``DeltaTable.create_checkpoint``: no commit, no new
   version), unless it has one or is at version 0: the next open reads that file and replays no commit;
2. deletes the expired log entries (``DeltaTable.cleanup_metadata``): those modified more than the table's
   ``delta.logRetentionDuration`` ago (default 30 days) and older than the newest checkpoint at or before the
   oldest unexpired commit. deltalake keeps that checkpoint and the commits after it, so a version committed
   within the log retention can still be read by number (``DeltaTable(path, version=N)``).

Time travel and ``keep_hours``: the vacuum keeps the data files a version retired for ``keep_hours`` (a week by
default) so that a reader of that version, by number too, can still read it, which needs the log to hold the
version. deltalake's rule counts from a version's commit, not from when the next commit replaced it: a version
committed 40 days ago and replaced yesterday loses its log once a checkpoint sits at yesterday's commit (the
checkpoint of step 1 on a table that was written once after a month), and any version older than the log
retention can when that retention is shorter than ``keep_hours``. So both steps are first tried on a copy of the
log, and taken only when the copy still opens at the oldest version ``keep_hours`` protects: the one current
``keep_hours`` ago, or the oldest the log can rebuild when that one is gone already. Otherwise the table gets
neither (the next commit's clean-up would use the checkpoint) and :attr:`LogUpkeep.kept` says why; a run once
that version was replaced ``keep_hours`` ago does both. A table whose ``delta.enableExpiredLogCleanup`` is
``false`` gets its checkpoint and keeps its log (``cleanup_metadata`` itself does not check the property). A
reader that opened a table before keeps its version whatever the log holds: it does not read the log again.
deltalake's own clean-up after a commit (an ingest's) does no such check: with a log retention shorter than
``keep_hours``, the next ingest may delete what a run here kept.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

LOG_FOLDER = "_delta_log"
CLEANUP_PROPERTY = "delta.enableExpiredLogCleanup"
_ENTRY = re.compile(r"(\d{20})\.(json|checkpoint\..*parquet)")  # a commit, a checkpoint (or one of its parts)


@dataclass(frozen=True)
class LogUpkeep:
    """A table's log after its upkeep: its files (:func:`log_files`), and why expired entries were kept ("" when
    none was, or none had expired). From :func:`plan_log`: what a run would leave."""

    files: int
    kept: str = ""


@dataclass(frozen=True)
class _Trial:
    """Steps 1 and 2 (the module's docstring) run on a copy of a table's log."""

    held: int  # the copy's files after the checkpoint
    left: int  # ... and after the cleanup
    protected: int  # the oldest version the log must keep readable
    readable: bool  # whether the copy opened at ``protected`` after the cleanup (True when it deleted nothing)


def log_files(folder: Path) -> int:
    """How many files the log of the table in ``folder`` holds (commits, checkpoints, ``_last_checkpoint``)."""
    return len(_entries(folder))


def tidy_log(table: DeltaTable, folder: Path, keep_hours: int) -> LogUpkeep:
    """Checkpoint the log of ``table`` (stored in ``folder``) at its current version, then delete its expired
    entries, unless that makes a version of the last ``keep_hours`` hours unreadable (see the module's docstring).

    Raises:
        DeltaError: the log cannot be read or written.
        OSError: its copy cannot be written.
    """
    checkpoint, trial, kept = _assess(table, folder, keep_hours)
    if trial.readable:
        if checkpoint:
            table.create_checkpoint()
        if trial.left < trial.held and not kept:
            table.cleanup_metadata()
    return LogUpkeep(log_files(folder), kept)


def plan_log(table: DeltaTable, folder: Path, keep_hours: int, commits: int) -> LogUpkeep:
    """What :func:`tidy_log` would do after ``commits`` more commits (a compaction's, a vacuum's), nothing
    changed: the steps are tried on a copy of the log as it is; each commit adds a file, and the run's
    checkpoint one more (two with the ``_last_checkpoint`` file) where the copy's version needed none."""
    before = _entries(folder)
    checkpoint, trial, kept = _assess(table, folder, keep_hours)
    if not trial.readable:
        return LogUpkeep(len(before) + commits, kept)
    after = trial.held if kept else trial.left
    if commits and not checkpoint:
        after += 1 + ("_last_checkpoint" not in before)
    return LogUpkeep(after + commits, kept)


def _assess(table: DeltaTable, folder: Path, keep_hours: int) -> tuple[bool, _Trial, str]:
    """Whether the table's current version needs a checkpoint, both steps tried on a copy of its log, and why
    expired entries would be kept ("" when none would)."""
    checkpoint = _wants_checkpoint(table, _entries(folder))
    trial = _trial(table, folder, keep_hours, checkpoint=checkpoint)
    return checkpoint, trial, _kept(table, trial, keep_hours)


def _entries(folder: Path) -> dict[str, float]:
    """The files of ``folder``'s log, with their modification times (what the cleanup's retention counts from)."""
    return {path.name: path.stat().st_mtime for path in (folder / LOG_FOLDER).iterdir() if path.is_file()}


def _parsed(entries: dict[str, float]) -> tuple[dict[int, float], set[int]]:
    """The log's commits (version: modification time) and the versions it has a checkpoint of."""
    commits: dict[int, float] = {}
    checkpoints: set[int] = set()
    for name, mtime in entries.items():
        if match := _ENTRY.fullmatch(name):
            if match.group(2) == "json":
                commits[int(match.group(1))] = mtime
            else:
                checkpoints.add(int(match.group(1)))
    return commits, checkpoints


def _wants_checkpoint(table: DeltaTable, entries: dict[str, float]) -> bool:
    """Whether ``table``'s current version needs a checkpoint: it has none, and it is no first commit (a
    checkpoint of version 0 saves an open nothing)."""
    version = table.version()
    return version > 0 and version not in _parsed(entries)[1]


def _protected(table: DeltaTable, entries: dict[str, float], keep_hours: int) -> int:
    """The oldest version the log must keep readable: the one current ``keep_hours`` ago (the commit before the
    first one modified since), or the oldest the log can rebuild (from a checkpoint, or version 0) when that one
    is gone already."""
    commits, checkpoints = _parsed(entries)
    cutoff = time.time() - keep_hours * 3600
    newer = [version for version, mtime in commits.items() if mtime > cutoff]
    wanted = min(newer) - 1 if newer else table.version()
    return max(wanted, min(checkpoints | ({0} & set(commits)), default=wanted))


def _trial(table: DeltaTable, folder: Path, keep_hours: int, *, checkpoint: bool) -> _Trial:
    """Run the checkpoint (when ``checkpoint``) and deltalake's log cleanup on a copy of ``folder``'s log."""
    protected = _protected(table, _entries(folder), keep_hours)
    with tempfile.TemporaryDirectory(prefix="tumorboard-log-") as scratch:
        copy = Path(scratch, "table")
        shutil.copytree(folder / LOG_FOLDER, copy / LOG_FOLDER)  # copies keep their modification times
        copied = DeltaTable(str(copy))
        if checkpoint:
            copied.create_checkpoint()
        held = log_files(copy)
        copied.cleanup_metadata()
        left = log_files(copy)
        return _Trial(held, left, protected, left == held or _opens(copy, protected))


def _opens(folder: Path, version: int) -> bool:
    """Whether the log in ``folder`` still rebuilds ``version``."""
    try:
        DeltaTable(str(folder), version=version)
    except DeltaError:
        return False
    return True


def _kept(table: DeltaTable, trial: _Trial, keep_hours: int) -> str:
    """Why the expired entries the trial deleted stay in the table's log ("": they go, or there were none)."""
    if trial.left == trial.held:
        return ""
    if not trial.readable:
        return (f"deleting them would make version {trial.protected}, current less than {keep_hours} h ago, "
                "unreadable (so no checkpoint either); a later run does both")
    if table.metadata().configuration.get(CLEANUP_PROPERTY, "true").strip().lower() == "false":
        return f"the table's {CLEANUP_PROPERTY} is false"
    return ""
