"""A MAF reader (TCGA / GDC / cBioPortal ``data_mutations*.txt``, plain or gzipped) -> variant rows.

Lines starting with ``#`` before the header (``#version 2.4`` and other comment headers) are skipped; the first
other line is the column header. Required columns: :data:`REQUIRED`; a file without them raises
:class:`MafFormatError` (the pipeline records it as a whole-file reject). Column names match
case-insensitively; column order and the other columns vary between producers and are ignored except:

* ``HGVSp_Short`` (else ``Protein_Change``, ``amino_acid_change``, ``AAChange``; ``p.`` added when missing);
* ``t_depth``, ``t_ref_count``, ``t_alt_count`` -> ``depth`` (``t_depth``, else ref + alt counts) and
  ``vaf`` (alt / depth);
* ``FILTER``.

``Tumor_Seq_Allele2`` is the ALT allele (``Tumor_Seq_Allele1`` when allele 2 is empty or equals the
reference). Rows are parsed by pandas' C reader in chunks of :data:`CHUNK_ROWS` (no quoting: MAF fields are
never quoted) and checked column-wise. A row with more fields than the header, an empty required value or a
non-integer ``Start_Position`` becomes a reject row with its line number; missing trailing fields read as
empty; blank lines are ignored. A truncated ``.gz`` keeps the chunks read before the break and adds one
whole-file reject. ``Hugo_Symbol`` ``Unknown`` means no gene (null).
"""

from __future__ import annotations

import csv
import gzip
import re
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ingest.variants.vcf import MAX_RAW, ParseResult, VariantColumns, add_variant_key, open_text

REQUIRED = ("Hugo_Symbol", "Chromosome", "Start_Position", "Reference_Allele", "Tumor_Seq_Allele2",
            "Variant_Classification", "Tumor_Sample_Barcode")
OPTIONAL = ("Tumor_Seq_Allele1", "t_depth", "t_ref_count", "t_alt_count", "FILTER")
HGVSP_COLUMNS = ("HGVSp_Short", "Protein_Change", "amino_acid_change", "AAChange")
NO_VALUE = ("", ".", "NA", "nan", "NaN")
NO_VALUE_ARRAY = pa.array(NO_VALUE)
# read as text even when they look numeric (sample "0012" keeps its zeros, chromosome 1 never becomes 1.0);
# the other columns are typed by pandas' inference, as a bare read_csv would
STRING_COLUMNS = ("Chromosome", "Tumor_Sample_Barcode")
CHUNK_ROWS = 50_000
_SKIPPED_LINE = re.compile(r"Skipping line (\d+): (.*)")


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


def _raw_lines(path: Path, numbers: set[int]) -> dict[int, str]:
    """The text of the given 1-based physical lines (for reject rows)."""
    out = {}
    if not numbers:
        return out
    last = max(numbers)
    try:
        with open_text(path) as fh:
            for line_no, line in enumerate(fh, start=1):
                if line_no in numbers:
                    out[line_no] = line.rstrip("\r\n")[:MAX_RAW]
                if line_no >= last:
                    break
    except (EOFError, OSError, zlib.error):
        pass
    return out


def _chunk_table(chunk: pd.DataFrame, idx: dict[str, int], source: str) -> tuple[pa.Table, np.ndarray, list]:
    """Normalise one chunk of rows; returns (rows kept, mask of rejected rows, their reasons)."""
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

    sample, chrom, ref, alt = (text(n) for n in ("Tumor_Sample_Barcode", "Chromosome", "Reference_Allele",
                                                 "Tumor_Seq_Allele2"))
    if "Tumor_Seq_Allele1" in idx:
        same = pc.fill_null(pc.equal(alt, ref), False)
        alt = pc.coalesce(pc.if_else(same, pa.scalar(None, pa.string()), alt), text("Tumor_Seq_Allele1"))
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
                           f"Start_Position {str(chunk[idx['Start_Position']].iat[i])[:40]!r} is not a positive "
                           "integer (MAF positions are 1-based)")
    keep = pa.array(~rejected)
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
        "chrom": pc.replace_substring_regex(chrom, "^[cC][hH][rR](.)", "\\1"),
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
    return add_variant_key(table), rejected, reasons


def _row_lines(header_line: int, rows: list[int], bad_lines: set[int]) -> dict[int, int]:
    """Physical line number of each data row index (pandas skips the bad lines without a row)."""
    out: dict[int, int] = {}
    line, row = header_line, -1
    for target in sorted(rows):
        while row < target:
            line += 1
            if line not in bad_lines:
                row += 1
        out[target] = line
    return out


def _read_rows(path: Path, header_line: int, header: list[str], idx: dict[str, int], compression: str | None,
               encoding_errors: str, emit: Callable[[pa.Table], None], done: list[int]
               ) -> tuple[list[tuple[int, str]], int, list, Exception | None]:
    """Read the data rows in chunks, each chunk's rows to ``emit`` except the first ``done[0]`` chunks (emitted
    by an earlier read); ``done[0]`` counts the chunks emitted. Returns ((data row, reason) rejects, rows read,
    warnings, read failure)."""
    chunks = 0
    row_rejects: list[tuple[int, str]] = []
    rows_read = offset = 0  # offset: data rows (blank ones included) before the current chunk
    failure = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        try:
            reader = pd.read_csv(path, sep="\t", header=None, names=list(range(len(header))),
                                 skiprows=header_line, dtype={idx[c]: str for c in STRING_COLUMNS},
                                 quoting=csv.QUOTE_NONE, skip_blank_lines=False, on_bad_lines="warn",
                                 compression=compression, chunksize=CHUNK_ROWS, encoding="utf-8",
                                 encoding_errors=encoding_errors)
            for chunk in reader:
                positions = offset + np.arange(len(chunk))
                offset += len(chunk)
                blank = chunk.isna().all(axis=1).to_numpy()
                chunk, positions = chunk[~blank], positions[~blank]
                rows_read += len(chunk)
                table, rejected, reasons = _chunk_table(chunk, idx, str(path))
                chunks += 1
                if chunks > done[0]:
                    emit(table)
                    done[0] = chunks
                row_rejects.extend(zip(positions[rejected].tolist(), reasons, strict=True))
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            failure = exc
    return row_rejects, rows_read, list(caught), failure


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
    with open(path, "rb") as fh:
        compression = "gzip" if fh.read(2) == b"\x1f\x8b" else None
    tables: list[pa.Table] = []
    emit, done = sink or tables.append, [0]
    try:
        parsed = _read_rows(path, header_line, header, idx, compression, "strict", emit, done)
    except UnicodeDecodeError:  # not UTF-8: read again (slower), undecodable bytes replaced; the chunks
        # emitted before the error decoded cleanly, so they are the same and not emitted again
        parsed = _read_rows(path, header_line, header, idx, compression, "replace", emit, done)
    row_rejects, rows_read, caught, failure = parsed
    rejects = []
    if failure is not None:
        rejects.append({"source": source, "location": None, "raw": None, "reason":
                        f"{path.name}: file is truncated or corrupt after {rows_read} row(s)"
                        f" ({type(failure).__name__}: {failure}); rows before the break were kept. Fix: re-export"
                        " or re-download the file and ingest it again"})
    bad_lines = {int(n): f"wrong number of columns: {why.strip()}" for w in caught
                 for n, why in _SKIPPED_LINE.findall(str(w.message))}
    rows_read += len(bad_lines)
    lines = _row_lines(header_line, [row for row, _ in row_rejects], set(bad_lines))
    located = sorted([*bad_lines.items(), *((lines[row], reason) for row, reason in row_rejects)])
    raw = _raw_lines(path, {line for line, _ in located})
    rejects.extend({"source": source, "location": f"line {line}", "reason": reason, "raw": raw.get(line)}
                   for line, reason in located)
    table = pa.concat_tables(tables) if tables else VariantColumns().to_arrow()
    return ParseResult(path, table, rows_read, rejects)
