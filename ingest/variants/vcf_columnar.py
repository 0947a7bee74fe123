"""Column-wise VCF body parsing: one chunk of data lines -> ``variants`` columns (the common, fast path).

:class:`ColumnarVcf` applies the rules of :mod:`ingest.variants.vcf` to single-ALT records of one chosen
(tumour) sample, or of a sites-only VCF, with Arrow compute functions over the whole chunk: column count and
POS checks (bad lines -> rejects), symbolic ALTs skipped, MAF alleles, chromosome names, FORMAT depth/VAF
(:func:`~ingest.variants.sample_fields.depth_and_vaf_columns`) and ANN/CSQ effects
(:func:`~ingest.variants.effects_columnar.annotate_columns`). Multi-allelic lines, and lines whose sample
genotype may lack the ALT (hom-ref or no-call GT), are handed back for the per-record path
(:class:`~ingest.variants.vcf.VcfReader`), which splits them and applies the tumour-genotype rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.variants.annotation import Annotator, maf_alleles, vep_alleles
from ingest.variants.effects_columnar import VAR_TYPES, annotate_columns
from ingest.variants.normalise import normalise_chrom_column, upper_bases_column
from ingest.variants.sample_fields import depth_and_vaf_columns, list_field

_NULL = pa.scalar(None, pa.string())
_NO_FILTER = pa.array([".", ""])
_SYMBOLIC = pa.array(["*", "."])
RAW_CHARS = 2_000


@dataclass
class Chunk:
    """What one chunk of data lines gave."""

    columns: dict[str, pa.Array]  # variants columns (no variant_key), one row per written record
    lines: np.ndarray  # line number of each row (n,)
    leftovers: list[tuple[int, str]]  # (line number, line) of lines for the per-record path (module docstring)
    rejects: list[tuple[int, str, str]]  # (line number, reason, raw line), in line order
    skipped: int  # symbolic ALT alleles


class ColumnarVcf:
    """Parse chunks of one VCF's data lines column-wise.

    Args:
        n_cols: tab-separated columns per line (8 without samples, else 9 + samples).
        sample_column: 0-based index of the written sample among the samples, or ``None`` (sites-only).
        sample_id: the ``sample_id`` written.
        annotator: the file's ANN/CSQ parser, or ``None`` when it carries none (EFF is not handled here).
        source: the ``source_file`` written.
    """

    def __init__(self, n_cols: int, sample_column: int | None, sample_id: str, annotator: Annotator | None,
                 source: str) -> None:
        if annotator is not None and annotator.source not in ("ANN", "CSQ"):
            raise ValueError(f"column-wise parsing handles ANN and CSQ annotations, not {annotator.source}")
        self.n_cols = n_cols
        self.sample_column = sample_column
        self.sample_id = sample_id
        self.annotator = annotator if annotator is not None and annotator.source else None
        self.source = source

    def chunk(self, numbers: np.ndarray, lines: pa.Array) -> Chunk:
        """Parse non-empty data lines (n,) with their 1-based line numbers (n,)."""
        rejects: list[tuple[int, str, str]] = []
        parts = pc.split_pattern(lines, "\t")
        counts = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
        good = counts == self.n_cols
        for i in np.flatnonzero(~good).tolist():
            rejects.append((int(numbers[i]), f"expected {self.n_cols} tab-separated columns, found {counts[i]}"
                            " (truncated line or spaces instead of tabs?)", lines[i].as_py()[:RAW_CHARS]))
        if not good.all():
            keep = pa.array(good)
            parts, lines, numbers = parts.filter(keep), lines.filter(keep), numbers[good]
        flat = pc.list_flatten(parts)
        n_cols = self.n_cols

        cols = {k: flat.take(pa.array(np.arange(k, len(flat), n_cols, dtype=np.int64)))
                for k in [1, *self._needed()]}
        pos, bad_pos = _positions(cols.pop(1))
        ref, alt = cols[3], cols[4]
        empty = (pc.equal(pc.binary_length(ref), 0).to_numpy(zero_copy_only=False)
                 | pc.equal(pc.binary_length(alt), 0).to_numpy(zero_copy_only=False))
        for i in np.flatnonzero(bad_pos | empty).tolist():
            reason = "POS (column 2) is not an integer; see the reject's raw text" if bad_pos[i] else "empty REF or ALT"
            rejects.append((int(numbers[i]), reason, lines[i].as_py()[:RAW_CHARS]))
        rejects.sort(key=lambda r: r[0])
        multi = pc.match_substring(alt, ",").to_numpy(zero_copy_only=False) | self._maybe_lacking(cols)
        leftovers = [(int(numbers[i]), lines[i].as_py()) for i in np.flatnonzero(multi & ~bad_pos & ~empty)]
        symbolic = (pc.starts_with(alt, "<").to_numpy(zero_copy_only=False)
                    | pc.is_in(alt, _SYMBOLIC).to_numpy(zero_copy_only=False)
                    | pc.match_substring(alt, "[").to_numpy(zero_copy_only=False)
                    | pc.match_substring(alt, "]").to_numpy(zero_copy_only=False))
        usable = ~(bad_pos | empty | multi)
        skipped = int((symbolic & usable).sum())
        write = usable & ~symbolic
        if not write.all():
            rows = pa.array(np.flatnonzero(write))
            cols = {k: values.take(rows) for k, values in cols.items()}
            pos, numbers = pos[write], numbers[write]
        columns = self._rows(cols, pos)
        return Chunk(columns, numbers, leftovers, rejects, skipped)

    def _maybe_lacking(self, cols: dict[int, pa.Array]) -> np.ndarray:
        """Rows (n,) whose sample GT has no allele but 0 or ``.`` (or GT is not the first FORMAT key)."""
        if self.sample_column is None:
            return np.zeros(len(cols[0]), dtype=bool)
        fmt, sample = cols[8], cols[9 + self.sample_column]
        first = pc.match_substring_regex(fmt, "^GT(:|$)")
        elsewhere = pc.and_(pc.invert(first), pc.match_substring_regex(fmt, "(^|:)GT(:|$)"))
        lacking = pc.and_(first, pc.match_substring_regex(sample, r"^[0.]([/|][0.])*(:|$)"))
        return pc.fill_null(pc.or_(lacking, elsewhere), False).to_numpy(zero_copy_only=False)

    def _needed(self) -> list[int]:
        """Columns used: CHROM, REF, ALT, FILTER, INFO, and FORMAT + the sample when there is one."""
        cols = [0, 3, 4, 6, 7]
        if self.sample_column is not None:
            cols += [8, 9 + self.sample_column]
        return cols

    def _rows(self, cols: dict[int, pa.Array], pos: np.ndarray) -> dict[str, pa.Array]:
        """Output columns of the written (single-ALT, non-symbolic) records."""
        n = len(pos)
        ref, alt = upper_bases_column(cols[3]), upper_bases_column(cols[4])
        start = pos.copy()
        var_type = np.zeros(n, dtype=np.int64)
        inframe = np.zeros(n, dtype=bool)
        want = alt
        snv = (pc.equal(pc.utf8_length(ref), 1).to_numpy(zero_copy_only=False)
               & pc.equal(pc.utf8_length(alt), 1).to_numpy(zero_copy_only=False))
        maf_ref, maf_alt = ref, alt
        if not snv.all():
            others = np.flatnonzero(~snv)
            other_rows = pa.array(others)
            refs, alts = ref.take(other_rows).to_pylist(), alt.take(other_rows).to_pylist()
            new_ref, new_alt, new_want = [], [], []
            for i, r, a in zip(others.tolist(), refs, alts, strict=True):
                s, mr, ma, vt, fr = maf_alleles(int(pos[i]), r, a)
                start[i], var_type[i], inframe[i] = s, VAR_TYPES.index(vt), fr
                new_ref.append(mr)
                new_alt.append(ma)
                new_want.append(vep_alleles(r, [a])[0])
            mask = pa.array(~snv)
            maf_ref = pc.replace_with_mask(ref, mask, pa.array(new_ref, pa.string()))
            maf_alt = pc.replace_with_mask(alt, mask, pa.array(new_alt, pa.string()))
            if self.annotator is not None and self.annotator.source == "CSQ":
                want = pc.replace_with_mask(alt, mask, pa.array(new_want, pa.string()))
        if self.annotator is not None and n:
            annotations = info_field(cols[7], self.annotator.source)
            gene, consequence, hgvsp = annotate_columns(self.annotator, annotations, want, var_type, inframe)
        else:
            gene = consequence = hgvsp = pa.nulls(n, pa.string())
        if self.sample_column is not None and n:
            depth, vaf = depth_and_vaf_columns(cols[8], cols[9 + self.sample_column], ref, alt)
        else:
            depth, vaf = pa.nulls(n, pa.int64()), pa.nulls(n, pa.float64())
        filt = cols[6]
        return {
            "sample_id": pa.repeat(pa.scalar(self.sample_id, pa.string()), n),
            "chrom": normalise_chrom_column(cols[0]),
            "pos": pa.array(start, pa.int64()),
            "ref": maf_ref,
            "alt": maf_alt,
            "gene": gene,
            "consequence": consequence,
            "hgvsp": hgvsp,
            "vaf": vaf,
            "depth": depth,
            "filter": pc.if_else(pc.is_in(filt, _NO_FILTER), _NULL, filt),
            "source_file": pa.repeat(pa.scalar(self.source, pa.string()), n),
        }


def info_field(info: pa.Array, key: str) -> pa.Array:
    """The value of INFO ``key`` per record (n,), null where absent; as the per-record INFO dict reads it."""
    halves = pc.split_pattern(info, key + "=", max_splits=1)
    before, after = list_field(halves, 0), list_field(halves, 1)  # after: null without the key
    value_rest = pc.split_pattern(after, ";", max_splits=1)
    after, rest = list_field(value_rest, 0), list_field(value_rest, 1)
    # "XANN=" is another key; a repeated key: the last one wins (rare: read those records one by one)
    odd = pc.or_(pc.and_(pc.not_equal(before, ""), pc.invert(pc.ends_with(before, ";"))),
                 pc.fill_null(pc.match_substring(rest, key + "="), False))
    odd = pc.and_(pc.is_valid(after), odd)
    odd_np = pc.fill_null(odd, False).to_numpy(zero_copy_only=False)
    if odd_np.any():
        rows = np.flatnonzero(odd_np)
        fixed = [parse_info(text).get(key) for text in info.take(pa.array(rows)).to_pylist()]
        after = pc.replace_with_mask(after, pa.array(odd_np), pa.array(fixed, pa.string()))
    return after


def parse_info(text: str) -> dict[str, str]:
    """INFO text -> key: value (flags map to ""), the last of a repeated key winning."""
    if text == "." or not text:
        return {}
    info = {}
    for item in text.split(";"):
        key, _, value = item.partition("=")
        if key:
            info[key] = value
    return info


def _positions(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """POS strings -> (int64 values (n,), bool mask of values that are not integers (n,)), as Python's int()."""
    plain = pc.fill_null(pc.match_substring_regex(text, r"^[0-9]{1,18}$"), False).to_numpy(zero_copy_only=False)
    if plain.all():
        return text.cast(pa.int64()).to_numpy(), np.zeros(len(text), dtype=bool)
    values = np.zeros(len(text), dtype=np.int64)
    bad = np.zeros(len(text), dtype=bool)
    for i, value in enumerate(text.to_pylist()):
        try:
            number = int(value)
            if not -(2 ** 63) <= number < 2 ** 63:
                raise ValueError(value)
            values[i] = number
        except ValueError:
            bad[i] = True
    return values, bad
