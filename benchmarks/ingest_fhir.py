"""Benchmark ``tumorboard ingest fhir``: throughput and peak memory.

Usage::

    python benchmarks/ingest_fhir.py [BULK_EXPORT_DIR [--copies K]] [--resources 200000] [--spaced]
        [--work /tmp/tumorboard-bench-fhir] [--memory-at 2000000 ...]

Without a folder, the FHIR Bulk export of a synthetic cohort (``ingest.synth``, about 120 resources per
patient) of about ``--resources`` resources is generated once and cached under ``--work``. With a folder and
``--copies K``, a small real export (e.g. ``../shared/data/fhir/synthea-bulk-10``, 7,160 resources) is
written K times under ``--work``, every UUID's first 8 hex digits replaced by the copy number, so ids stay
unique and references keep pointing inside their copy. The export's ``log.ndjson`` is not a resource file
and is left out of every figure, as the ingest skips it. ``--spaced`` rewrites every line as Python's
``json.dumps`` writes it (a space after each ``:`` and ``,``), as exports written by Python scripts often are:
the lines orjson does not write back byte for byte, whose repeated-key check costs more.
Prints, in resources per second:

(a) orjson parsing alone (one core, collector off);
(b) the full ingest with all shipped views (``configs/views``), ``workers=1`` and ``workers=2`` (fresh lake
    each);
(c) ``fhir.resources`` R4B validation alone, on a sample of 20,000 resources;

and the peak RSS of the ingest process (with ``workers=2`` also of its largest worker, an upper bound: a
worker's count starts from the ingest process's size when it was started) for the input and for one ten times
smaller (``workers=1``); with
``--memory-at N``, also the peak RSS and rate of ``workers=1`` on synthetic exports of about N resources.
Rates per core divide by CPU seconds (process plus workers, start-up and imports included), so they hold on
a busy machine too. Target: (b) per core within 3x of (a); peak RSS flat and under 1 GB.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ingest.fhir.reader import BULK_LOG  # noqa: E402

UUID_HEAD = re.compile(rb"\b[0-9a-f]{8}(?=-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b)", re.IGNORECASE)
UUID = re.compile(r"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}", re.IGNORECASE)
RESOURCES_PER_PATIENT = 120  # a little under what ingest.synth writes per patient (seed 0): at least --resources


def synthesise(work: Path, n_resources: int) -> Path:
    """The ``fhir/`` Bulk export of a synthetic cohort of about ``n_resources`` resources (cached in ``work``)."""
    from ingest.synth import SynthConfig, generate_cohort

    patients = max(1, -(-n_resources // RESOURCES_PER_PATIENT))
    cohort = work / f"cohort-{patients}"
    if not (cohort / "fhir").is_dir():
        generate_cohort(cohort, SynthConfig(n_patients=patients, seed=0, png=False, image_missing_rate=1.0),
                        overwrite=True)
    return cohort / "fhir"


def resource_files(folder: Path) -> list[Path]:
    """The export's NDJSON resource files (its Bulk ``log.ndjson`` left out)."""
    return [p for p in sorted(folder.glob("*.ndjson")) if p.name.lower() != BULK_LOG]


def replicate(src: Path, out: Path, copies: int) -> Path:
    """``copies`` copies of the export ``src`` in ``out`` (one file per type), UUIDs made unique per copy.
    Exits when a resource id is not a UUID: copies of it would merge in the lake instead of adding rows."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for path in resource_files(src):
        data = path.read_bytes()
        for number, line in enumerate(data.splitlines(), 1):
            rid = orjson.loads(line).get("id") if line.strip() else None
            if not (isinstance(rid, str) and UUID.fullmatch(rid)):
                sys.exit(f"{path}:{number}: resource id {str(rid)[:40]!r} is not a UUID; --copies needs UUID ids")
        with (out / path.name).open("wb") as fh:
            for copy in range(copies):
                head = b"%08x" % copy
                fh.write(UUID_HEAD.sub(head, data))
                if data and not data.endswith(b"\n"):
                    fh.write(b"\n")
    return out


def respace(src: Path, out: Path) -> Path:
    """The export ``src`` with every line re-written by ``json.dumps`` (``", "`` and ``": "`` separators)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for path in resource_files(src):
        with path.open("rb") as fh, (out / path.name).open("w", encoding="ascii") as dst:
            for line in fh:
                if line.strip():
                    dst.write(json.dumps(orjson.loads(line)) + "\n")
    return out


def subset(src: Path, out: Path, fraction: float) -> int:
    """The first ``fraction`` of every file of ``src`` (a smaller export with the same shape)."""
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    for path in resource_files(src):
        lines = path.read_bytes().splitlines(keepends=True)
        keep = lines[: max(1, int(len(lines) * fraction))]
        (out / path.name).write_bytes(b"".join(keep))
        total += len(keep)
    return total


def parse_only(folder: Path) -> tuple[int, float, float]:
    """(a): resources parsed, wall and CPU seconds; orjson on every line, collector off."""
    gc.collect()
    gc.freeze()
    gc.disable()
    n, started, cpu = 0, time.perf_counter(), time.process_time()
    for path in resource_files(folder):
        with path.open("rb") as fh:
            for line in fh:
                orjson.loads(line)
                n += 1
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    gc.enable()
    return n, elapsed, cpu


def validate_only(folder: Path, sample: int) -> tuple[int, float]:
    """(c): resources validated with fhir.resources R4B models and seconds (sample spread over types)."""
    from fhir.resources.R4B import get_fhir_model_class

    files = resource_files(folder)
    per_file = max(1, sample // len(files))
    resources = []
    for path in files:
        with path.open("rb") as fh:
            for i, line in enumerate(fh):
                if i >= per_file:
                    break
                resources.append(orjson.loads(line))
    models = {r["resourceType"]: get_fhir_model_class(r["resourceType"]) for r in resources}
    started = time.perf_counter()
    for res in resources:
        models[res["resourceType"]].model_validate(res)
    return len(resources), time.perf_counter() - started


def ingest_in_child(folder: Path, lake: Path, workers: int) -> dict:
    """(b): run the ingest in a fresh process; its report, wall time and peak RSS (its own; its largest
    worker's)."""
    shutil.rmtree(lake, ignore_errors=True)
    out = subprocess.run([sys.executable, __file__, "--child", str(folder), str(lake), str(workers)],
                         check=True, capture_output=True, text=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _child(folder: Path, lake_path: Path, workers: int) -> None:
    from ingest.fhir.pipeline import ingest_fhir
    from ingest.lake import Lake

    started = time.perf_counter()
    report = ingest_fhir(Lake(lake_path), [folder], workers=workers)
    elapsed = time.perf_counter() - started
    own, workers_usage = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + workers_usage.ru_utime + workers_usage.ru_stime
    print(json.dumps({"read": report.read, "written": report.written, "rejected": report.rejected,
                      "seconds": elapsed, "cpu_seconds": cpu, "peak_mb": _own_peak_kb() / 1024,
                      "worker_peak_mb": workers_usage.ru_maxrss / 1024 if workers > 1 else 0.0}))


def _own_peak_kb() -> int:
    """This process's peak RSS since it started (``VmHWM``). ``getrusage``'s ``ru_maxrss`` would not do: Linux
    carries the parent's peak over into a child at ``exec``, so it reported the benchmark's own peak (780 MB
    for every run once the parent had read a 716k-resource export) instead of the ingest's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux: an upper bound


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, help="a Bulk export folder (default: synthesise one)")
    parser.add_argument("--copies", type=int, default=1, help="write a real export this many times (see above)")
    parser.add_argument("--resources", type=int, default=200_000, help="size of the synthesised export")
    parser.add_argument("--spaced", action="store_true", help="re-write every line as json.dumps does (see above)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tumorboard-bench-fhir"))
    parser.add_argument("--validate-sample", type=int, default=20_000)
    parser.add_argument("--memory-at", type=int, action="append", default=[], metavar="N",
                        help="also measure peak RSS on a synthetic export of about N resources (repeatable)")
    args = parser.parse_args()
    work = args.work
    folder = args.folder
    if folder is None:
        if args.copies != 1:
            parser.error("--copies needs a Bulk export folder")
        folder = synthesise(work, args.resources)
        print(f"synthetic cohort export: {folder}")
    elif args.copies > 1:
        if args.memory_at:
            parser.error("--memory-at builds synthetic exports; measure copies of a real export with --copies")
        folder = replicate(folder, work / f"copies-{args.copies}", args.copies)
        print(f"{args.copies} copies of {args.folder}: {folder}")
    if args.spaced:
        folder = respace(folder, work / f"spaced-{folder.name}")
        print(f"re-written as json.dumps writes it: {folder}")
    small = work / "export-tenth"
    shutil.rmtree(small, ignore_errors=True)
    subset(folder, small, 0.1)

    n, seconds, cpu = parse_only(folder)
    parse_rate = n / cpu
    print(f"(a) orjson parse only:        {n:>9,} resources  {seconds:7.2f} s  {n / seconds:>9,.0f} /s"
          f"  (CPU {cpu:.2f} s: {parse_rate:,.0f} /s per core)")
    runs = {}
    for workers in (1, 2):
        run = runs[workers] = ingest_in_child(folder, work / "lake", workers)
        per_core = run["read"] / run["cpu_seconds"]
        print(f"(b) full ingest, workers={workers}:  {run['read']:>9,} resources  {run['seconds']:7.2f} s"
              f"  {run['read'] / run['seconds']:>9,.0f} /s  (CPU {run['cpu_seconds']:.1f} s: {per_core:,.0f} /s"
              f" per core, {parse_rate / per_core:.1f}x the parse cost)  peak RSS {run['peak_mb']:,.0f} MB"
              + (f" (+ largest worker {run['worker_peak_mb']:,.0f} MB)" if workers > 1 else "")
              + f"  [{run['written']:,} written, {run['rejected']:,} rejected]")
    n, seconds = validate_only(folder, args.validate_sample)
    print(f"(c) R4B validation only:      {n:>9,} resources  {seconds:7.2f} s  {n / seconds:>9,.0f} /s")
    tenth = ingest_in_child(small, work / "lake", 1)
    print(f"peak RSS, workers=1: {tenth['peak_mb']:,.0f} MB for {tenth['read']:,} resources,"
          f" {runs[1]['peak_mb']:,.0f} MB for {runs[1]['read']:,}")
    for size in args.memory_at:
        run = ingest_in_child(synthesise(work, size), work / "lake", 1)
        print(f"peak RSS, workers=1: {run['peak_mb']:,.0f} MB for {run['read']:,} resources"
              f" ({run['read'] / run['cpu_seconds']:,.0f} /s per core)")
    shutil.rmtree(work / "lake", ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        _child(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
