"""A streaming VCF reader (``.vcf``, ``.vcf.gz``) that splits multi-allelic sites, plus VCF -> variant rows.

:class:`VcfReader` yields one :class:`VcfRecord` per ALT allele. Splitting follows ``bcftools norm -m-``:
INFO and FORMAT values with ``Number=A`` keep that ALT's value, ``Number=R`` keep REF's and that ALT's,
``Number=G`` (diploid) keep the 0/0, 0/i and i/i entries, all others are repeated (the spec's per-allele FORMAT
keys, e.g. ``AD``, split by their spec Number when the header says ``Number=.``); GT alleles other than the
split ALT become 0. Bad records (wrong column count, non-numeric POS) become reject rows with their line
number; a truncated or corrupt ``.gz`` keeps the records before the break and adds one whole-file reject.

:func:`vcf_variants` turns records into rows of the ``variants`` table. Which sample is the tumour, in order:
``tumor_sample`` argument; header ``##tumor_sample=``; a sample named ``TUMOR``/``TUMOUR``; with two samples,
the one that is not ``##normal_sample=`` / ``NORMAL``; the only sample. A sites-only VCF (no samples) is one
sample named after the file. Otherwise (several samples, none marked) each sample is its own sample and a row
is written where its genotype carries the ALT (or, without GT, its alt depth is > 0). In tumour mode every
record is written (as vcf2maf does) unless the tumour's GT shows it lacks the ALT (hom-ref such as ``0/0``,
or a no-call ``./.`` whose AD / AF show no alt reads), as at a multi-allelic site the ALTs it lacks are
dropped; without GT (Strelka) every record is written. FILTER is kept in ``filter``.
A tumour column with the generic name ``TUMOR``/``TUMOUR`` takes the ``##tumor_sample=`` value (vcf2maf /
Mutect style) as ``sample_id``, or the file name (without ``.vcf[.gz]``) when the header names none.
Depth = FORMAT ``DP`` (else the sum of ``AD``); VAF = FORMAT ``AF`` (or Mutect's ``FA``) if
present, else alt ``AD`` / depth; Strelka's ``AU/CU/GU/TU`` and ``TAR/TIR`` counts are used when ``AD`` is
absent. Symbolic ALT alleles (``<DEL>``, ``*``, ``.``) are not variants: they are counted, not written.
Positions and alleles are written in MAF convention (:func:`~ingest.variants.annotation.maf_alleles`), bases
upper-cased (REF/ALT are case-insensitive; an annotation's allele matches in either case), and chromosome names
normalised as the MAF reader's are (``chr17`` -> ``17``, ``chrM`` -> ``MT``, ``chrx`` -> ``X``), so VCF- and
MAF-derived rows share one ``variant_key`` (:mod:`ingest.variants.normalise`).
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.variants.annotation import (
    Annotator,
    classify,
    maf_alleles,
    report_hgvsp,
    vep_alleles,
)
from ingest.variants.lines import line_chunks, open_binary
from ingest.variants.normalise import normalise_chrom, upper_bases
from ingest.variants.sample_fields import _float, _int, depth_and_vaf
from ingest.variants.vcf_columnar import ColumnarVcf, parse_info

SINK_ROWS = 100_000  # rows the record-by-record path hands a sink at a time (column-wise: a chunk of lines)

_DEF_RE = re.compile(r'^##(INFO|FORMAT)=<ID=([^,>]+),Number=([^,>]+)(?:.*?Description="(.*?)")?')
GENERIC_TUMOR_NAMES = frozenset({"TUMOR", "TUMOUR"})
GENERIC_NORMAL_NAMES = frozenset({"NORMAL"})
# Number of the VCF specification's reserved per-allele FORMAT keys, for headers that declare them Number=. or
# not at all (GATK 3 and MuTect 1 write AD as Number=.): the value still holds one entry per allele.
SPEC_FORMAT_NUMBER = {"AD": "R", "ADF": "R", "ADR": "R", "PL": "G", "GL": "G", "GP": "G"}
MAX_RAW = 2_000


class VcfFormatError(ValueError):
    """The file is not a readable VCF (no ``#CHROM`` header line, or an unknown tumour sample)."""


@dataclass
class VcfHeader:
    """What the ``##`` and ``#CHROM`` lines say."""

    samples: list[str]
    info_number: dict[str, str] = field(default_factory=dict)
    info_description: dict[str, str] = field(default_factory=dict)
    format_number: dict[str, str] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    n_lines: int = 0


@dataclass(slots=True)
class VcfRecord:
    """One ALT allele of one VCF data line (multi-allelic sites give several records)."""

    line_no: int
    chrom: str
    pos: int
    id: str
    ref: str
    alt: str
    alt_index: int  # 1-based index of ``alt`` among the site's ALTs
    alts: list[str]  # all ALTs of the site
    qual: str
    filter: str
    info: dict[str, str]  # flags map to ""
    format: list[str]
    sample_columns: list[str]  # raw, unsplit sample columns
    _header: VcfHeader

    def sample(self, index: int) -> dict[str, str]:
        """FORMAT key -> value of sample ``index`` (0-based), split to this ALT for multi-allelic sites."""
        values = self.sample_columns[index].split(":")
        data = dict(zip(self.format, values, strict=False))  # trailing FORMAT fields may be dropped
        if len(self.alts) > 1:
            numbers = self._header.format_number
            for key, value in data.items():
                if key == "GT":
                    data[key] = _split_gt(value, self.alt_index)
                else:
                    number = numbers.get(key, ".")
                    if number == ".":
                        number = SPEC_FORMAT_NUMBER.get(key, ".")
                    data[key] = _split_value(value, number, self.alt_index, len(self.alts))
        return data


def _split_value(value: str, number: str, i: int, n_alts: int) -> str:
    if number not in ("A", "R", "G") or "," not in value:
        return value
    parts = value.split(",")
    if number == "A":
        return parts[i - 1] if len(parts) == n_alts else value
    if number == "R":
        return f"{parts[0]},{parts[i]}" if len(parts) == n_alts + 1 else value
    if len(parts) == (n_alts + 1) * (n_alts + 2) // 2:  # diploid G: 0/0, 0/i, i/i
        het = i * (i + 1) // 2
        return f"{parts[0]},{parts[het]},{parts[het + i]}"
    return value


def _split_gt(gt: str, i: int) -> str:
    out = []
    for token in re.split(r"([/|])", gt):
        if token in ("/", "|", ".", "0") or not token.isdigit():
            out.append(token)
        else:
            out.append("1" if int(token) == i else "0")
    return "".join(out)


def open_text(path: Path):
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


class VcfReader:
    """Stream the records of one VCF file.

    Iterate the reader for :class:`VcfRecord` objects; afterwards :attr:`rejects` holds reject rows
    (``source``, ``location``, ``reason``, ``raw``) and :attr:`lines_read` the number of data lines seen.

    Raises:
        VcfFormatError: on iteration, when the file has no ``#CHROM`` header line.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.header: VcfHeader | None = None
        self.rejects: list[dict] = []
        self.lines_read = 0

    def _reject(self, line_no: int | None, reason: str, raw: str | None = None) -> None:
        location = None if line_no is None else f"line {line_no}"
        self.rejects.append({"source": str(self.path), "location": location, "reason": reason,
                             "raw": None if raw is None else raw[:MAX_RAW]})

    def _read_header(self, lines: Iterator[str]) -> VcfHeader:
        header = VcfHeader(samples=[])
        for n, line in enumerate(lines, start=1):
            if line.startswith("##"):
                match = _DEF_RE.match(line)
                if match:
                    kind, key, number, description = match.groups()
                    if kind == "INFO":
                        header.info_number[key] = number
                        header.info_description[key] = description or ""
                    else:
                        header.format_number[key] = number
                elif "=" in line:
                    key, _, value = line[2:].rstrip("\n").partition("=")
                    header.meta.setdefault(key, value)
                continue
            if line.startswith("#CHROM"):
                header.samples = line.rstrip("\r\n").split("\t")[9:]
                header.n_lines = n
                return header
            break
        raise VcfFormatError(
            f"{self.path}: no '#CHROM' header line before the first record; is this a VCF? Fix: add the VCF"
            " header (bcftools view -h on the original file shows it)")

    def read_header(self) -> VcfHeader:
        """Read (only) the header lines and keep them in :attr:`header`.

        Raises:
            VcfFormatError: no ``#CHROM`` line. EOFError, OSError, zlib.error: the file breaks in the header.
        """
        with open_text(self.path) as fh:
            self._use_header(self._read_header(fh))
        return self.header

    def _use_header(self, header: VcfHeader) -> None:
        self.header = header
        self._n_cols = 9 + len(header.samples) if header.samples else 8
        self._split_info = {k for k, v in header.info_number.items() if v in ("A", "R", "G")}

    def reject_break(self, exc: BaseException) -> None:
        """Record the whole-file reject of a truncated or corrupt file (after :attr:`lines_read` lines)."""
        self._reject(None, f"{self.path.name}: file is truncated or corrupt after {self.lines_read}"
                     f" data line(s) ({type(exc).__name__}: {exc}); records before the break were"
                     " kept. Fix: re-export or re-download the file and ingest it again")

    def __iter__(self) -> Iterator[VcfRecord]:
        with open_text(self.path) as fh:
            try:
                yield from self._records(fh)
            except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
                self.reject_break(exc)

    def _records(self, fh) -> Iterator[VcfRecord]:
        self._use_header(self._read_header(fh))
        line_no = self.header.n_lines
        for line in fh:
            line_no += 1
            line = line.rstrip("\r\n")
            if not line:
                continue
            self.lines_read += 1
            yield from self.parse_line(line, line_no)

    def parse_line(self, line: str, line_no: int) -> Iterator[VcfRecord]:
        """The records (one per ALT) of one non-empty data line; a bad line adds a reject and yields none.

        Needs :attr:`header` (iterate the reader, or call :meth:`read_header` first).
        """
        header, n_cols = self.header, self._n_cols
        cols = line.split("\t")
        if len(cols) != n_cols:
            self._reject(line_no, f"expected {n_cols} tab-separated columns, found {len(cols)}"
                         " (truncated line or spaces instead of tabs?)", line)
            return
        chrom, pos_text, vid, ref, alt_text, qual, filt, info_text = cols[:8]
        try:
            pos = int(pos_text)
        except ValueError:
            self._reject(line_no, "POS (column 2) is not an integer; see the reject's raw text", line)
            return
        if not ref or not alt_text:
            self._reject(line_no, "empty REF or ALT", line)
            return
        info = parse_info(info_text)
        ref = upper_bases(ref)
        alts = [upper_bases(alt) for alt in alt_text.split(",")]
        fmt = cols[8].split(":") if n_cols > 8 else []
        samples = cols[9:]
        n_alts = len(alts)
        split_info, info_number = self._split_info, header.info_number
        for i, alt in enumerate(alts, start=1):
            if n_alts > 1 and split_info:
                rec_info = dict(info)
                for key in split_info.intersection(info):
                    rec_info[key] = _split_value(info[key], info_number[key], i, n_alts)
            else:
                rec_info = info
            yield VcfRecord(line_no, chrom, pos, vid, ref, alt, i, alts, qual, filt, rec_info, fmt,
                            samples, header)


def is_symbolic(alt: str) -> bool:
    """Symbolic or missing ALT alleles: ``<DEL>``, ``<*:DEL>``, ``*``, ``.``, breakends."""
    return alt.startswith("<") or alt in ("*", ".") or "[" in alt or "]" in alt


def _carries(data: dict[str, str]) -> bool:
    """Whether a (split) sample carries the ALT: GT contains it, else alt AD > 0, else AF > 0."""
    gt = data.get("GT")
    if gt is not None and gt not in (".", "./.", ".|."):
        return "1" in re.split(r"[/|]", gt)
    ad = data.get("AD", "")
    if ad and ad != ".":
        return bool(_int(ad.split(",")[-1]))
    return bool(_float(data.get("AF")))


@dataclass
class SampleChoice:
    """Which sample column(s) of a VCF become which ``sample_id`` (see module docstring)."""

    columns: list[tuple[int | None, str]]  # (column index or None for sites-only, sample_id)
    tumor_mode: bool


def choose_samples(header: VcfHeader, path: Path, tumor_sample: str | None = None) -> SampleChoice:
    """Apply the tumour-sample rule of the module docstring to one VCF header."""
    samples = header.samples
    stem = path.name
    for suffix in (".gz", ".bgz", ".vcf"):
        stem = stem[: -len(suffix)] if stem.lower().endswith(suffix) else stem

    def named(index: int) -> SampleChoice:
        name = samples[index]
        generic = name.upper() in GENERIC_TUMOR_NAMES
        # A generic TUMOR column is named by ##tumor_sample= when that names no column, else by the file name.
        sample_id = (header.meta.get("tumor_sample") or stem) if generic else name
        return SampleChoice([(index, sample_id)], tumor_mode=True)

    if tumor_sample is not None:
        if not samples and tumor_sample:
            return SampleChoice([(None, tumor_sample)], tumor_mode=True)
        if tumor_sample not in samples:
            raise VcfFormatError(
                f"{path}: --tumor-sample is not one of the file's {len(samples)} sample column(s). Fix: pass"
                " one of the names on the #CHROM line, or omit --tumor-sample")
        return named(samples.index(tumor_sample))
    if not samples:
        return SampleChoice([(None, stem)], tumor_mode=True)
    meta_tumor = header.meta.get("tumor_sample")
    if meta_tumor in samples:
        return named(samples.index(meta_tumor))
    for i, name in enumerate(samples):
        if name.upper() in GENERIC_TUMOR_NAMES:
            return named(i)
    if len(samples) == 2:
        normals = {header.meta.get("normal_sample"), *GENERIC_NORMAL_NAMES}
        others = [i for i, name in enumerate(samples) if name not in normals and name.upper() not in normals]
        if len(others) == 1:
            return named(others[0])
    if len(samples) == 1:
        return named(0)
    return SampleChoice([(i, name) for i, name in enumerate(samples)], tumor_mode=False)


class VariantColumns:
    """Column-wise buffer of ``variants`` rows (no ``patient_id``, ``variant_key``), cheap to append to."""

    NAMES = ("sample_id", "chrom", "pos", "ref", "alt", "gene", "consequence", "hgvsp", "vaf", "depth",
             "filter", "source_file")
    TYPES = {"pos": pa.int64(), "vaf": pa.float64(), "depth": pa.int64()}

    def __init__(self) -> None:
        self.data: dict[str, list] = {name: [] for name in self.NAMES}
        appends = [values.append for values in self.data.values()]

        def append(*row) -> None:
            """Append one row: the values of :attr:`NAMES`, in that order."""
            for add, value in zip(appends, row, strict=True):
                add(value)

        self.append = append

    def __len__(self) -> int:
        return len(self.data["sample_id"])

    def to_arrow(self) -> pa.Table:
        """The buffered rows as a table with the ``variants`` column types, ``variant_key`` added."""
        return add_variant_key(pa.table({name: pa.array(values, self.TYPES.get(name, pa.string()))
                                         for name, values in self.data.items()}))


def add_variant_key(table: pa.Table) -> pa.Table:
    """Append ``variant_key`` = ``chrom:pos:ref:alt``."""
    key = pc.binary_join_element_wise(table.column("chrom"), table.column("pos").cast(pa.string()),
                                      table.column("ref"), table.column("alt"), ":")
    return table.append_column("variant_key", key)


@dataclass
class ParseResult:
    """What parsing one file produced."""

    path: Path
    table: pa.Table  # variants rows without patient_id
    records_read: int  # data lines (VCF) or rows (MAF) read
    rejects: list[dict]
    skipped: int = 0  # ALT alleles that are not variants (symbolic) or not carried by a cohort sample
    annotated: bool = True  # whether the file carries gene/consequence annotations
    samples: tuple[str, ...] = ()  # the sample ids of the file's sample columns, variants or not (VCF)
    unreadable: bool = False  # the file could not be read at all (its one reject says why)


class RecordRows:
    """``variants`` rows from :class:`VcfRecord` objects, one record at a time (the general path).

    Args:
        header: the file's header; choice: its sample choice; source: the ``source_file`` written.
    """

    def __init__(self, header: VcfHeader, choice: SampleChoice, source: str) -> None:
        self.choice = choice
        self.annotator = Annotator(header.info_description)
        self.source = source
        self.out = VariantColumns()
        self.lines: list[int] = []  # line number of each row
        self.skipped = 0
        self._vep_cache: dict[tuple[str, str], list[str]] = {}

    def flush(self) -> pa.Table:
        """The rows buffered so far (:meth:`VariantColumns.to_arrow`), removed from the buffer."""
        table = self.out.to_arrow()
        self.out, self.lines = VariantColumns(), []
        return table

    def add(self, rec: VcfRecord) -> None:
        """Append the rows of one record (one per written sample), or count it as skipped."""
        alt = rec.alt
        if is_symbolic(alt):
            self.skipped += 1
            return
        start, mref, malt, var_type, inframe = maf_alleles(rec.pos, rec.ref, alt)
        gene = consequence = hgvsp = None
        ann_key = self.annotator.source
        annotation = rec.info.get(ann_key) if ann_key else None
        if annotation:
            if ann_key == "CSQ":
                key = (rec.ref, ",".join(rec.alts))
                vep = self._vep_cache.get(key)
                if vep is None:
                    vep = self._vep_cache[key] = vep_alleles(rec.ref, rec.alts)
                    if len(self._vep_cache) > 10_000:
                        self._vep_cache.clear()
                vep_allele = vep[rec.alt_index - 1]
            else:
                vep_allele = alt
            effect = self.annotator.pick(annotation, alt=alt, alt_index=rec.alt_index, vep_allele=vep_allele)
            if effect is not None:
                gene = effect.gene or None
                consequence = classify(effect.consequence, var_type, inframe)
                hgvsp = report_hgvsp(effect, consequence) or None
        chrom = normalise_chrom(rec.chrom)
        filt = None if rec.filter in (".", "") else rec.filter
        for column, sample_id in self.choice.columns:
            if column is None:
                depth = vaf = None
            else:
                data = rec.sample(column)
                # a cohort keeps the carriers; a tumour drops the ALTs its GT lacks (0/0, ./. without alt
                # reads), and those of a multi-allelic site it lacks
                if (not self.choice.tumor_mode or len(rec.alts) > 1 or "GT" in data) and not _carries(data):
                    self.skipped += 1
                    continue
                depth, vaf = depth_and_vaf(data, rec.ref, alt)
            self.out.append(sample_id, chrom, start, mref, malt, gene, consequence, hgvsp, vaf, depth, filt,
                            self.source)
            self.lines.append(rec.line_no)


def _columnar_parser(header: VcfHeader, choice: SampleChoice, source: str) -> ColumnarVcf | None:
    """The column-wise parser for files it handles: one written sample (or sites-only), no legacy EFF."""
    annotator = Annotator(header.info_description)
    if not choice.tumor_mode or len(choice.columns) != 1 or annotator.source == "EFF":
        return None
    n_cols = 9 + len(header.samples) if header.samples else 8
    column, sample_id = choice.columns[0]
    return ColumnarVcf(n_cols, column, sample_id, annotator if annotator.source else None, source)


def _merge(columns: dict[str, pa.Array], lines: np.ndarray, rows: RecordRows) -> tuple[pa.Table, int]:
    """Column-wise rows and per-record rows of one chunk, in line order; (table, per-record skipped)."""
    table = pa.table(columns)
    if len(rows.out):
        extra = pa.table(rows.out.data, schema=table.schema)
        order = np.argsort(np.concatenate([lines, np.asarray(rows.lines, dtype=np.int64)]), kind="stable")
        table = pa.concat_tables([table, extra]).take(pa.array(order))
    return table, rows.skipped


def vcf_variants(path: str | Path, *, tumor_sample: str | None = None, columnar: bool = True,
                 sink: Callable[[pa.Table], None] | None = None) -> ParseResult:
    """Parse one VCF into ``variants`` rows (module docstring: sample rule, depth, VAF, MAF alleles).

    Files with one written sample (tumour mode) or none (sites-only) and ANN/CSQ or no annotations are parsed
    column-wise in chunks (:mod:`ingest.variants.vcf_columnar`; multi-allelic lines per record); cohort VCFs
    and legacy EFF annotations record by record, as is every file with ``columnar=False`` (about 3x slower;
    the same result). With ``sink``, the rows go to it a chunk at a time as they are parsed (at most about
    :data:`SINK_ROWS` rows each, in file order) and the result's ``table`` is empty: memory stays bounded
    whatever the file's size.

    Raises:
        VcfFormatError: no ``#CHROM`` line, or ``tumor_sample`` not in the file.
    """
    path = Path(path)
    source = str(path)
    reader = VcfReader(path)
    try:
        header = reader.read_header()
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError):
        header = None  # the per-record path records the break
    parser = None
    if header is not None:
        choice = choose_samples(header, path, tumor_sample)
        parser = _columnar_parser(header, choice, source) if columnar else None
    if parser is None:
        return _per_record(reader, path, tumor_sample, sink)
    tables: list[pa.Table] = []
    emit = sink or tables.append
    skipped = 0
    with open_binary(path) as fh:
        try:
            for numbers, lines in line_chunks(fh, 1):
                if numbers[0] <= header.n_lines:
                    keep = numbers > header.n_lines
                    numbers, lines = numbers[keep], lines.filter(pa.array(keep))
                    if not len(numbers):
                        continue
                reader.lines_read += len(numbers)
                part = parser.chunk(numbers, lines)
                rows = RecordRows(header, choice, source)
                for line_no, line in part.leftovers:
                    for rec in reader.parse_line(line, line_no):
                        rows.add(rec)
                reader.rejects.extend({"source": source, "location": f"line {n}", "reason": reason, "raw": raw}
                                      for n, reason, raw in part.rejects)
                table, more = _merge(part.columns, part.lines, rows)
                emit(add_variant_key(table))
                skipped += part.skipped + more
        except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
            reader.reject_break(exc)
    table = pa.concat_tables(tables) if tables else VariantColumns().to_arrow()
    return ParseResult(path, table, reader.lines_read, reader.rejects, skipped,
                       annotated=parser.annotator is not None, samples=_sample_ids(choice))


def _per_record(reader: VcfReader, path: Path, tumor_sample: str | None,
                sink: Callable[[pa.Table], None] | None) -> ParseResult:
    """:func:`vcf_variants` record by record (cohort VCFs, EFF annotations, files that break early)."""
    rows: RecordRows | None = None
    for rec in reader:
        if rows is None:
            rows = RecordRows(reader.header, choose_samples(reader.header, path, tumor_sample), str(path))
        rows.add(rec)
        if sink is not None and len(rows.out) >= SINK_ROWS:
            sink(rows.flush())
    if rows is None:
        return ParseResult(path, VariantColumns().to_arrow(), reader.lines_read, reader.rejects, 0,
                           annotated=False)
    if sink is not None:
        sink(rows.flush())
    return ParseResult(path, rows.out.to_arrow(), reader.lines_read, reader.rejects, rows.skipped,
                       annotated=rows.annotator.source is not None, samples=_sample_ids(rows.choice))


def _sample_ids(choice: SampleChoice) -> tuple[str, ...]:
    """The sample ids of a file's sample columns (none for a sites-only VCF, which has no sample column)."""
    return tuple(sample_id for column, sample_id in choice.columns if column is not None)
