"""A MAF reader (TCGA / GDC / cBioPortal ``data_mutations*.txt``, plain or gzipped) -> variant rows.

Lines starting with ``#`` before the header (``#version 2.4`` and other comment headers) are skipped; the first
other line is the column header. Required columns: :data:`REQUIRED`; a file without them raises
:class:`MafFormatError` (the pipeline records it as a whole-file reject). Column names match
case-insensitively; column order and the other columns vary between producers and are ignored except:

* ``HGVSp_Short`` (else ``Protein_Change``, ``amino_acid_change``, ``AAChange``; ``p.`` added when missing);
* ``t_depth``, ``t_ref_count``, ``t_alt_count`` -> ``depth`` (``t_depth``, else ref + alt counts) and
  ``vaf`` (alt / depth);
* ``FILTER``;
* ``Mutation_Status``: a row that is no somatic call (``LOH`` and ``Wildtype``, as cBioPortal does not load them,
  and ``Germline``, the patient's own variant) is skipped and counted (``ParseResult.skipped``); ``None`` reads
  as an empty cell, and such rows are kept.

``Tumor_Seq_Allele2`` is the ALT allele (``Tumor_Seq_Allele1`` when allele 2 is empty or equals the
reference). The lines are read in chunks of :data:`CHUNK_ROWS`, parsed by pandas' C reader (no quoting: MAF
fields are never quoted) and checked column-wise. A row with more or fewer tab-separated fields than the header
is a reject naming the file, the line and both counts, with its raw text: pandas would read a missing field as
an empty one, so a row cut short (an interrupted copy) would load as if its last values were empty, a row cut
before ``FILTER`` as unfiltered. A row ending in a tab has an empty last field, which is fine when the count
matches. An empty required value or a non-integer ``Start_Position`` is also a reject with its line number;
blank lines (empty or whitespace only) are ignored. A chunk that is not UTF-8 is read again with undecodable
bytes replaced (U+FFFD). A truncated ``.gz`` keeps the chunks read before the break and adds one whole-file
reject. ``Hugo_Symbol`` ``Unknown`` means no gene (null). Chromosome names and alleles are written as VCF
ones are (``chrM`` -> ``MT``, ``a`` -> ``A``; :mod:`ingest.variants.normalise`).
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ingest.variants.lines import line_blocks, open_binary
from ingest.variants.normalise import normalise_chrom_column, upper_bases_column
from ingest.variants.vcf import MAX_RAW, ParseResult, VariantColumns, add_variant_key, open_text

REQUIRED = ("Hugo_Symbol", "Chromosome", "Start_Position", "Reference_Allele", "Tumor_Seq_Allele2",
            "Variant_Classification", "Tumor_Sample_Barcode")
OPTIONAL = ("Tumor_Seq_Allele1", "t_depth", "t_ref_count", "t_alt_count", "FILTER", "Mutation_Status")
# Mutation_Status values of rows that are no somatic call: cBioPortal does not load LOH and Wildtype rows
# (File Formats, Mutation Data); Germline rows are the patient's own variants, not the tumour's. (cBioPortal's
# "None" cannot be told from an empty cell here: pandas reads both as missing, and such rows are kept.)
NOT_SOMATIC = pa.array(["loh", "wildtype", "germline"])
HGVSP_COLUMNS = ("HGVSp_Short", "Protein_Change", "amino_acid_change", "AAChange")
NO_VALUE = ("", ".", "NA", "nan", "NaN")
NO_VALUE_ARRAY = pa.array(NO_VALUE)
# read as text even when they look numeric (sample "0012" keeps its zeros, chromosome 1 never becomes 1.0);
# the other columns are typed by pandas' inference, as a bare read_csv would
STRING_COLUMNS = ("Chromosome", "Tumor_Sample_Barcode")
CHUNK_ROWS = 50_000
# bytes read at a time: 4 MB rather than the VCF reader's 16 MB (82 MB MAF of 300k records: peak RSS 316 vs 376 MB,
# CPU 0.56 vs 0.57 s; 144 MB MAF of 68 columns: 488 vs 509 MB, 0.74 vs 0.80 s; 2 MB re-copies the held lines more)
BLOCK_BYTES = 4 << 20


class MafFormatError(ValueError):
    """A MAF that cannot be read at all (missing required columns, no header)."""


def column_indexes(header: list[str], path: Path) -> dict[str, int]:
    """Column name -> index for the required and used optional columns of a MAF header.

    Raises:
        MafFormatError: naming the file, the missing required columns and the fix.
    """
    lowered = {name.strip().lower(): i for i, name in reversed(list(enumerate(header)))}
    wanted = REQUIRED + OPTIONAL + HGVSP_COLUMNS
    found = {name: lowered[name.lower()] for name in wanted if name.lower() in lowered}
    missing = [name for name in REQUIRED if name not in found]
    if missing:
        raise MafFormatError(
            f"{path}: not a usable MAF: missing required column(s) {', '.join(missing)}. Fix: add the"
            " column(s) to the header line (the first line not starting with '#'), or check that the file is"
            " tab-separated; required: " + ", ".join(REQUIRED))
    return found


def _header(path: Path) -> tuple[int, list[str]]:
    """(1-based line number of the header, its column names)."""
    with open_text(path) as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.startswith("#"):
                return line_no, line.rstrip("\r\n").split("\t")
    raise MafFormatError(f"{path}: no header line (every line starts with '#' or the file is empty). Fix: a"
                         " MAF's first non-comment line names its columns")


def _chunk_table(chunk: pd.DataFrame, idx: dict[str, int], source: str
                 ) -> tuple[pa.Table, np.ndarray, list, int]:
    """Normalise one chunk of rows; returns (rows kept, mask of rejected rows, their reasons, rows skipped as no
    somatic call)."""
    def text(name: str) -> pa.Array:
        """Column ``name`` as trimmed strings, null where empty / NA / ``.``."""
        values = pa.array(chunk[idx[name]], from_pandas=True)
        values = pc.utf8_trim_whitespace(values.cast(pa.string()))
        missing = pc.is_in(values, NO_VALUE_ARRAY)
        if not pc.any(missing).as_py():
            return values
        return pc.if_else(missing, pa.scalar(None, pa.string()), values)

    def number(name: str) -> np.ndarray:
        if name not in idx:
            return np.full(len(chunk), np.nan)
        return pd.to_numeric(chunk[idx[name]], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)

    sample, chrom = text("Tumor_Sample_Barcode"), text("Chromosome")
    ref, alt = upper_bases_column(text("Reference_Allele")), upper_bases_column(text("Tumor_Seq_Allele2"))
    if "Tumor_Seq_Allele1" in idx:
        same = pc.fill_null(pc.equal(alt, ref), False)
        alt = pc.coalesce(pc.if_else(same, pa.scalar(None, pa.string()), alt),
                          upper_bases_column(text("Tumor_Seq_Allele1")))
    start = number("Start_Position")
    bad_start = ~np.isfinite(start) | (start != np.round(start)) | (start < 1)
    empties = {name: pc.is_null(values).to_numpy(zero_copy_only=False) for name, values in
               (("Tumor_Sample_Barcode", sample), ("Chromosome", chrom), ("Start_Position", text("Start_Position")),
                ("Reference_Allele", ref), ("Tumor_Seq_Allele2", alt))}
    rejected = bad_start | np.logical_or.reduce(list(empties.values()))
    reasons = []
    for i in np.flatnonzero(rejected):
        empty = [name for name, mask in empties.items() if mask[i]]
        first = str(chunk[0].iat[i])
        if first.startswith("#"):
            reasons.append("a comment line inside the data; comment lines (#) go before the header line")
        else:
            reasons.append(f"empty required value(s): {', '.join(empty)}" if empty else
                           "Start_Position is not a positive integer (MAF positions are 1-based); see the reject's"
                           " raw text")
    not_somatic = np.zeros(len(chunk), dtype=bool)
    if "Mutation_Status" in idx:
        status = pc.utf8_lower(text("Mutation_Status"))
        not_somatic = pc.fill_null(pc.is_in(status, NOT_SOMATIC), False).to_numpy(zero_copy_only=False) & ~rejected
    keep = pa.array(~rejected & ~not_somatic)
    gene = text("Hugo_Symbol")
    gene = pc.if_else(pc.fill_null(pc.equal(gene, "Unknown"), False), pa.scalar(None, pa.string()), gene)
    hgvsp = pa.nulls(len(chunk), pa.string())
    for name in HGVSP_COLUMNS:
        if name in idx:
            value = text(name)
            prefixed = pc.binary_join_element_wise("p.", value, "")
            hgvsp = pc.coalesce(hgvsp, pc.if_else(pc.starts_with(value, "p."), value, prefixed))
    depth, alt_n = number("t_depth"), number("t_alt_count")
    depth = np.where(np.isnan(depth), number("t_ref_count") + alt_n, depth)
    with np.errstate(divide="ignore", invalid="ignore"):
        vaf = np.where(depth > 0, alt_n / depth, np.nan)
    table = pa.table({
        "sample_id": sample,
        "chrom": normalise_chrom_column(chrom),
        "pos": pa.array(np.nan_to_num(start).astype("int64")),
        "ref": ref,
        "alt": alt,
        "gene": gene,
        "consequence": text("Variant_Classification"),
        "hgvsp": hgvsp,
        "vaf": pa.array(vaf, pa.float64(), from_pandas=True),
        "depth": pa.array(np.nan_to_num(depth).astype("int64"), pa.int64(), mask=np.isnan(depth)),
        "filter": text("FILTER") if "FILTER" in idx else pa.nulls(len(chunk), pa.string()),
        "source_file": pa.repeat(pa.scalar(source, pa.string()), len(chunk)),
    }).filter(keep)
    return add_variant_key(table), rejected, reasons, int(not_somatic.sum())


def _tabs_per_line(data: bytes) -> np.ndarray:
    """Number of tabs in each line of ``data`` (lines ending with ``\\n``)."""
    chars = np.frombuffer(data, np.uint8)
    marks = np.flatnonzero((chars == 9) | (chars == 10))  # tabs and line ends, in order: no per-line loop
    return np.diff(np.flatnonzero(chars[marks] == 10), prepend=-1) - 1


def _line_chunks(fh, header_line: int) -> Iterator[tuple[int, bytes, np.ndarray]]:
    """The lines after the header, :data:`CHUNK_ROWS` at a time: ``(number of the first line, the lines' bytes
    each ending with \\n, byte offset of each line's \\n)``.

    Raises:
        EOFError, OSError, zlib.error: the stream breaks (after a chunk of the complete lines before the break).
    """
    held, held_ends = b"", np.zeros(0, np.int64)
    line, skip, failure = 1, header_line, None
    try:
        for block in line_blocks(fh, chunk_bytes=BLOCK_BYTES):
            ends = np.flatnonzero(np.frombuffer(block, np.uint8) == 10)
            if skip:  # the comment lines and the header
                drop = min(skip, len(ends))
                cut = int(ends[drop - 1]) + 1
                block, ends = block[cut:], ends[drop:] - cut
                skip, line = skip - drop, line + drop
            if held:
                block, ends = held + block, np.concatenate([held_ends, ends + len(held)])
            done = 0  # lines of this block already given
            while len(ends) - done >= CHUNK_ROWS:
                start = int(ends[done - 1]) + 1 if done else 0
                stop = done + CHUNK_ROWS
                yield line, block[start:int(ends[stop - 1]) + 1], ends[done:stop] - start
                line, done = line + CHUNK_ROWS, stop
            start = int(ends[done - 1]) + 1 if done else 0
            held, held_ends = block[start:], ends[done:] - start
    except Exception as exc:  # EOFError, gzip.BadGzipFile, zlib.error: keep the lines before the break
        failure = exc
    if len(held_ends):
        yield line, held, held_ends
    if failure is not None:
        raise failure


def _parse_csv(data: bytes, header: list[str], idx: dict[str, int]) -> pd.DataFrame:
    """Lines with one field per header column -> a frame with columns 0..n-1 (undecodable UTF-8 bytes -> U+FFFD)."""
    def parse(errors: str) -> pd.DataFrame:
        return pd.read_csv(io.BytesIO(data), sep="\t", header=None, names=list(range(len(header))),
                           dtype={idx[c]: str for c in STRING_COLUMNS}, quoting=csv.QUOTE_NONE,
                           skip_blank_lines=False, on_bad_lines="error", encoding="utf-8", encoding_errors=errors)
    try:
        return parse("strict")
    except UnicodeDecodeError:  # not UTF-8: this chunk again, undecodable bytes replaced (4x slower, hence not
        return parse("replace")  # the first try)


def _field_count_reason(path: Path, line: int, raw: bytes, found: int, expected: int) -> str:
    """Why a line with ``found`` fields, where the header has ``expected``, is rejected."""
    where = (f"{path.name}, line {line}: wrong number of fields: expected {expected} (the header's columns),"
             f" found {found}")
    if raw.startswith(b"#"):
        return f"{where}: a comment line inside the data; comment lines (#) go before the header line"
    why = ("the row is cut short (an interrupted copy or a lost tab?); a missing field is not read as empty"
           if found < expected else "a value with a tab in it, or a column missing from the header?")
    return (f"{where} ({why}). Fix: repair or re-export the file so that every row has one tab-separated field"
            " per header column (an empty value is nothing between two tabs), then ingest it again")


def _read_rows(path: Path, header_line: int, header: list[str], idx: dict[str, int],
               emit: Callable[[pa.Table], None]) -> tuple[list[tuple[int, str, bytes]], int, int, Exception | None]:
    """Read the data rows in chunks of :data:`CHUNK_ROWS` lines, each chunk's rows to ``emit``. Returns
    ((line, reason, raw bytes) rejects, rows read, rows skipped as no somatic call, read failure).

    pandas reads a missing field as an empty one, so only lines with one field per header column go to it. The
    usual chunk is checked whole: its first line has ``n - 1`` tabs and the chunk ``n - 1`` per non-empty line.
    Then no line has fewer fields unless another has more, and pandas raises on a line with more fields than
    the header (except the first line, whose extra fields it would take for an index: hence that line's check).
    Otherwise (or when pandas raised) the tabs are counted line by line and the lines with the wrong number
    of fields are rejected (blank ones ignored) before pandas reads the rest.
    """
    tabs_wanted = len(header) - 1
    rejects: list[tuple[int, str, bytes]] = []
    rows_read = skipped = 0
    failure = None
    with open_binary(path) as fh:
        try:
            for first, data, ends in _line_chunks(fh, header_line):
                starts = np.concatenate([[0], ends[:-1] + 1])
                lines = np.arange(len(ends))  # the chunk's lines that pandas reads, by index
                chunk = None
                if (data.count(b"\t", 0, int(ends[0])) == tabs_wanted and np.count_nonzero(
                        np.frombuffer(data, np.uint8) == 9) == np.count_nonzero(ends > starts) * tabs_wanted):
                    try:
                        chunk = _parse_csv(data, header, idx)
                    except pd.errors.ParserError:  # a line with more fields (and one with fewer)
                        pass
                if chunk is None:
                    tabs = _tabs_per_line(data)
                    wrong = np.flatnonzero(tabs != tabs_wanted)
                    for i in wrong.tolist():
                        raw = data[starts[i]:ends[i]]
                        if raw.strip():  # blank lines (whitespace only) are ignored
                            rows_read += 1
                            rejects.append((first + i, _field_count_reason(path, first + i, raw, int(tabs[i]) + 1,
                                                                           tabs_wanted + 1), raw))
                    lines = np.delete(lines, wrong)
                    if not len(lines):
                        continue
                    runs = np.split(lines, np.flatnonzero(np.diff(lines) > 1) + 1)
                    chunk = _parse_csv(b"".join(data[starts[r[0]]:ends[r[-1]] + 1] for r in runs), header, idx)
                blank = chunk.isna().all(axis=1).to_numpy()
                if blank.any():
                    chunk, lines = chunk[~blank], lines[~blank]
                rows_read += len(chunk)
                table, rejected, reasons, not_somatic = _chunk_table(chunk, idx, str(path))
                skipped += not_somatic
                emit(table)
                rejects.extend((first + i, reason, data[starts[i]:ends[i]])
                               for i, reason in zip(lines[rejected].tolist(), reasons, strict=True))
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            failure = exc
    return rejects, rows_read, skipped, failure


def maf_variants(path: str | Path, *, sink: Callable[[pa.Table], None] | None = None) -> ParseResult:
    """Parse one MAF into ``variants`` rows (module docstring for the column rules). With ``sink``, the rows go
    to it a chunk of :data:`CHUNK_ROWS` rows at a time, in file order, and the result's ``table`` is empty.

    Raises:
        MafFormatError: required columns missing, or no header line.
    """
    path = Path(path)
    source = str(path)
    header_line, header = _header(path)
    idx = column_indexes(header, path)
    tables: list[pa.Table] = []
    row_rejects, rows_read, skipped, failure = _read_rows(path, header_line, header, idx, sink or tables.append)
    rejects = []
    if failure is not None:
        rejects.append({"source": source, "location": None, "raw": None, "reason":
                        f"{path.name}: file is truncated or corrupt after {rows_read} row(s)"
                        f" ({type(failure).__name__}: {failure}); rows before the break were kept. Fix: re-export"
                        " or re-download the file and ingest it again"})
    rejects.extend({"source": source, "location": f"line {line}", "reason": reason,
                    "raw": raw.decode("utf-8", errors="replace")[:MAX_RAW]}
                   for line, reason, raw in sorted(row_rejects, key=lambda r: r[0]))
    table = pa.concat_tables(tables) if tables else VariantColumns().to_arrow()
    return ParseResult(path, table, rows_read, rejects, skipped=skipped)
