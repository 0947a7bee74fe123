"""VCF / MAF files -> the lake tables ``variants``, ``gene_status`` and ``tmb``.

Samples map to patients through ``--sample-map`` (a CSV with columns ``sample_id``, ``patient_id`` and
optionally ``collected_date``, the specimen collection date); samples not in the map, or all samples without
one, follow the rule of :func:`patient_for` (TCGA barcodes -> their first 12 characters, the patient barcode;
otherwise the sample id is the patient id). The link to FHIR patients happens later (``ingest.link``).
``collected_date`` lands in the ``collected`` column of ``gene_status`` and ``tmb``, so that cohorts can drop
samples taken after the prediction time: as the last instant it may denote (``2020-05`` ->
2020-05-31T23:59:59.999999Z, a day -> its last microsecond, a date-time -> itself), so a sample dated ``2020-05``
is no input for a diagnosis on 2020-05-15; a sample without one has ``collected`` null.

Re-ingest is idempotent, per sample: the rows of every sample seen in this run replace that sample's rows in
``variants``, ``gene_status`` and ``tmb`` (rows of other samples are untouched). A sample split over several
files must be ingested in one run. Within a run, a (sample_id, variant_key) seen twice is kept once (the last
one) and counted in ``duplicates``. What could not be read goes to the ``rejects`` table: one row per bad
record (with its line number) and one per unreadable, truncated or corrupt file.

Memory grows far slower than the input: the readers hand their rows over a chunk at a time, the chunks
are staged on disk (:mod:`ingest.variants.staging`; finding duplicates may use up to its ``STAGE_MEMORY``), and
the tables are written from the staged rows batch by batch, the per-sample counts of ``gene_status`` and
``tmb`` added up on the way (:class:`ingest.variants.features.VariantTally`). Peak RSS
(``benchmarks/ingest_variants_images.py --memory-at``): 474 MB for a 360k-record MAF, 677 MB for 3.6M records
(807 MB ingesting it again into the same lake), where holding whole files in memory took 3.3 GB.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from ingest.lake import one_writer
from ingest.schema import SCHEMAS, utc_period_ends, utc_timestamps
from ingest.variants.features import GenePanel, VariantTally, load_gene_panel
from ingest.variants.maf import MafFormatError, maf_variants
from ingest.variants.staging import VariantStage
from ingest.variants.vcf import (
    ParseResult,
    VariantColumns,
    VcfFormatError,
    open_text,
    vcf_variants,
)

VCF_SUFFIXES = (".vcf", ".vcf.gz", ".vcf.bgz")
MAF_SUFFIXES = (".maf", ".maf.gz", ".maf.txt", ".maf.txt.gz")
MODALITY = "variants"


def variant_file_kind(path: Path) -> str:
    """``vcf`` or ``maf``: by name (``.vcf[.gz]``, ``.maf[.gz]``, ``data_mutations*``), else by first line."""
    name = path.name.lower()
    if name.endswith(VCF_SUFFIXES):
        return "vcf"
    if name.endswith(MAF_SUFFIXES) or name.startswith("data_mutations"):
        return "maf"
    with open_text(path) as fh:
        first = fh.readline()
    return "vcf" if first.startswith("##fileformat=VCF") else "maf"


def discover_files(paths: Iterable[str | Path]) -> list[Path]:
    """The variant files named by ``paths``: files as given, folders searched recursively for VCF/MAF names.

    Raises:
        FileNotFoundError: a path does not exist.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and (
                f.name.lower().endswith(VCF_SUFFIXES + MAF_SUFFIXES) or f.name.startswith("data_mutations")))
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p} does not exist; pass VCF/MAF files or folders that contain them")
    return list(dict.fromkeys(files))


def load_sample_map(path: str | Path) -> dict[str, str]:
    """``sample_id -> patient_id`` from a CSV with those two columns (other columns ignored).

    Raises:
        ValueError: the file is missing, a column is missing, or a sample is mapped to two patients (the
            message names the file, the lines and the fix).
    """
    path = Path(path)
    mapping: dict[str, tuple[str, int]] = {}
    for line, row in _sample_map_rows(path):
        sample, patient = row.get("sample_id", ""), row.get("patient_id", "")
        if not (sample and patient):
            continue
        if sample in mapping and mapping[sample][0] != patient:
            raise ValueError(f"{path}, lines {mapping[sample][1]} and {line}: the same sample_id is mapped to two "
                             "patients. Fix: keep the right line")
        mapping.setdefault(sample, (patient, line))
    return {sample: patient for sample, (patient, _) in mapping.items()}


def load_sample_dates(path: str | Path) -> dict[str, str]:
    """``sample_id -> collected_date`` (ISO 8601 date or dateTime) from a sample map's optional
    ``collected_date`` column; empty when the column is absent. Empty cells are left out (date unknown).

    Raises:
        ValueError: a date that is not ISO 8601, or two dates for one sample (the message names the file, the
            line and the fix).
    """
    path = Path(path)
    rows = [(line, row) for line, row in _sample_map_rows(path) if row.get("sample_id") and row.get("collected_date")]
    parsed = utc_timestamps(pa.array([row["collected_date"] for _, row in rows], pa.string())).to_pylist()
    dates: dict[str, tuple[str, int]] = {}
    for (line, row), value in zip(rows, parsed, strict=True):
        sample, text = row["sample_id"], row["collected_date"]
        if value is None:
            raise ValueError(f"{path}, line {line}: collected_date is not an ISO 8601 date."
                             " Fix: write it as YYYY-MM-DD (or a full dateTime), or leave the cell empty")
        if sample in dates and dates[sample][0] != text:
            raise ValueError(f"{path}, lines {dates[sample][1]} and {line}: the same sample_id has two collected "
                             "dates. Fix: keep the right line")
        dates.setdefault(sample, (text, line))
    return {sample: text for sample, (text, _) in dates.items()}


def _sample_map_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    """The rows of a sample map, stripped, each with its line number (the header is line 1)."""
    if not path.is_file():
        raise ValueError(f"sample map {path} not found; pass --sample-map PATH.csv with columns sample_id,"
                         "patient_id[,collected_date]")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in reader.fieldnames or []]
        if "sample_id" not in columns or "patient_id" not in columns:
            raise ValueError(f"{path}: a sample map needs columns sample_id and patient_id; found {columns}."
                             " Fix: rename the header line")
        return [(reader.line_num, {k.strip(): (v or "").strip() for k, v in row.items() if k}) for row in reader]


def _with_collected(table: pa.Table, dates: dict[str, str]) -> pa.Table:
    """``table`` with a ``collected`` column: each row's sample date from ``dates`` as the last instant it may
    denote (:func:`ingest.schema.utc_period_ends`: a sample is only known to precede a cutoff when that does),
    null when unknown."""
    texts = pa.array([dates.get(s) for s in table.column("sample_id").to_pylist()], pa.string())
    return table.append_column("collected", utc_period_ends(texts))


def patient_for(sample_id: str, sample_map: dict[str, str] | None = None) -> str:
    """Patient id of a sample: the sample map, else a TCGA barcode's first 12 characters, else the sample."""
    if sample_map and sample_id in sample_map:
        return sample_map[sample_id]
    if sample_id.startswith("TCGA-") and len(sample_id) >= 12:
        return sample_id[:12]
    return sample_id


def parse_file(path: Path, *, tumor_sample: str | None = None,
               sink: Callable[[pa.Table], None] | None = None) -> ParseResult:
    """Parse one VCF or MAF (rows to ``sink`` a chunk at a time, when given); a file that cannot be read at all
    gives an empty result with one reject and ``unreadable`` set (rows it gave ``sink`` before do not count)."""
    try:
        if variant_file_kind(path) == "vcf":
            return vcf_variants(path, tumor_sample=tumor_sample, sink=sink)
        return maf_variants(path, sink=sink)
    except (VcfFormatError, MafFormatError, OSError, EOFError, UnicodeError) as exc:
        reason = str(exc) if isinstance(exc, (VcfFormatError, MafFormatError)) else (
            f"{path.name}: cannot read ({type(exc).__name__}: {exc}). Fix: check the file is a VCF or MAF,"
            " readable and complete")
        reject = {"source": str(path), "location": None, "reason": reason, "raw": None}
        return ParseResult(path, VariantColumns().to_arrow(), 0, [reject], unreadable=True)


def _replace_samples(lake, name: str, table: pa.Table | pa.RecordBatchReader, samples: list[str]) -> int:
    """Replace the rows of ``samples`` in table ``name`` by ``table``, in one atomic commit; rows written."""
    if not samples:
        return 0
    quoted = ", ".join("'" + s.replace("'", "''") + "'" for s in samples)
    return lake.write(name, table, mode="overwrite", replace_where=f"sample_id IN ({quoted})")


class VariantInputError(ValueError):
    """None of the given variant files could be read (each one's reason is in the message)."""


def _without_impossible_vaf(table: pa.Table, path: Path) -> tuple[pa.Table, list[dict]]:
    """``table`` without the rows whose VAF is not a fraction in [0, 1], and a reject per such row (its AD, AF
    and DP disagree: a cut or hand-edited line)."""
    vaf = table.column("vaf")
    bad = pc.fill_null(pc.or_(pc.less(vaf, 0.0), pc.greater(vaf, 1.0)), False)
    if not pc.any(bad).as_py():
        return table, []
    rows = table.filter(bad).select(["chrom", "pos", "ref", "alt"]).to_pylist()
    rejects = [{"source": str(path), "location": f"variant {r['chrom']}:{r['pos']} {r['ref']}>{r['alt']}",
                "reason": "VAF is not a fraction in [0, 1]: the record's AD, AF and DP disagree (a cut or"
                          " hand-edited line?); fix the record", "raw": None} for r in rows]
    return table.filter(pc.invert(bad)), rejects


@one_writer
def ingest_variants(lake, paths: list[Path], *, sample_map: Path | Mapping[str, str] | None = None,
                    gene_panel: GenePanel | str | Path | None = None, tumor_sample: str | None = None,
                    progress: Callable[[Path, ParseResult], None] | None = None) -> dict:
    """Ingest VCF/MAF files (or folders of them) into ``lake``.

    Args:
        lake: an :class:`ingest.lake.Lake`.
        paths: files and/or folders.
        sample_map: CSV with ``sample_id``, ``patient_id`` and optionally ``collected_date``; or a
            ``sample_id -> patient_id`` mapping (samples then undated).
        gene_panel: a :class:`GenePanel`, a YAML path, or ``None`` for ``configs/gene_panel.yaml``.
        tumor_sample: the tumour sample column of the VCFs (see :mod:`ingest.variants.vcf`).
        progress: called after each file with its path and parse result.

    Returns:
        Counts: ``files``, ``records_read``, ``variants_written``, ``rejected`` (reject rows: bad records plus
        unreadable/truncated files), ``duplicates``, ``skipped`` (symbolic ALTs and cohort samples not
        carrying an ALT), ``samples``, ``patients``, ``unannotated_samples`` (no gene_status/tmb rows),
        ``unmapped_samples`` (not in the sample map), ``undated_samples`` (no ``collected_date``),
        ``gene_status_rows``, ``tmb_rows``.

    Raises:
        FileNotFoundError: a path does not exist or no variant file was found.
        ValueError: an invalid sample map or gene panel.
        VariantInputError: no file could be read at all (e.g. a mistyped ``tumor_sample``); nothing is written.
    """
    started = datetime.now(UTC)
    files = discover_files(paths)
    if not files:
        raise FileNotFoundError("no VCF or MAF files found in the given paths (looked for *.vcf, *.vcf.gz,"
                                " *.maf, *.maf.gz, data_mutations*)")
    mapping: dict[str, str] | None = None
    dates: dict[str, str] = {}
    if isinstance(sample_map, (str, Path)):
        mapping, dates = load_sample_map(sample_map), load_sample_dates(sample_map)
    elif sample_map is not None:
        mapping = dict(sample_map)
    panel = gene_panel if isinstance(gene_panel, GenePanel) else load_gene_panel(gene_panel)

    counts = {"files": len(files), "records_read": 0, "variants_written": 0, "rejected": 0,
              "duplicates": 0, "skipped": 0, "samples": 0, "patients": 0, "unannotated_samples": 0,
              "unmapped_samples": 0, "undated_samples": 0, "gene_status_rows": 0, "tmb_rows": 0}
    rejects: list[dict] = []
    sequenced: set[str] = set()  # the sample columns of annotated VCFs read without a reject, variants or not
    with VariantStage(lake, lambda sample: patient_for(sample, mapping)) as stage:
        for path in files:
            impossible: list[dict] = []

            def stage_rows(table: pa.Table, path: Path = path, impossible: list[dict] = impossible) -> None:
                kept, bad = _without_impossible_vaf(table, path)
                impossible.extend(bad)
                stage.add(kept)

            stage.begin_file()
            result = parse_file(path, tumor_sample=tumor_sample, sink=stage_rows)
            stage.end_file(keep=not result.unreadable)
            counts["records_read"] += result.records_read
            counts["skipped"] += result.skipped
            rejects.extend(result.rejects + ([] if result.unreadable else impossible))
            if result.annotated and not result.rejects:  # read whole: a sample without a variant has none
                sequenced.update(result.samples)
            if progress is not None:
                progress(path, result)
        counts["rejected"] = len(rejects)
        if not stage.rows and counts["records_read"] == 0 and rejects:  # nothing readable: say why, write nothing
            shown = "; ".join(r["reason"] for r in rejects[:3])
            raise VariantInputError(f"no variant could be read from the {len(files)} file(s), so nothing was"
                                    f" written: {shown}")
        if stage.rows or sequenced:
            samples = sorted(stage.samples | sequenced)
            patients = {s: patient_for(s, mapping) for s in samples}
            quiet = {s: patients[s] for s in sequenced}  # no variant in the file is still a result: wild-type
            tally = VariantTally(panel.genes)
            # Three commits, each atomic: if the run stops between them, the manifest records it as failed with
            # the rows each table got, and running the command again replaces these samples' rows in all three.
            with lake.failure_recorded("ingest variants", paths, lambda: counts, started_at=started):
                rows = stage.deduplicated(SCHEMAS["variants"], tally.add)
                counts["variants_written"] = _replace_samples(lake, "variants", rows, samples)
                counts["duplicates"] = stage.rows - counts["variants_written"]
                status = _with_collected(tally.gene_status(quiet), dates)
                burden = _with_collected(tally.tmb(panel.panel_size_mb, quiet), dates)
                counts["gene_status_rows"] = _replace_samples(lake, "gene_status", status, samples)
                counts["tmb_rows"] = _replace_samples(lake, "tmb", burden, samples)
            counts["samples"] = len(samples)
            counts["patients"] = len(set(patients.values()))
            counts["unannotated_samples"] = len(samples) - burden.num_rows
            counts["unmapped_samples"] = sum(1 for s in samples if mapping is not None and s not in mapping)
            counts["undated_samples"] = sum(1 for s in samples if s not in dates)
    if rejects:
        lake.add_rejects(rejects, modality=MODALITY)
    lake.record_run("ingest variants", [str(p) for p in paths], counts, started_at=started,
                    status="partial" if rejects else "ok")
    return counts
