"""Read depth and variant allele fraction from a VCF sample column: per record, and column-wise.

Depth: ``DP``, else the sum of ``AD``. VAF: ``AF`` (or Mutect's ``FA``), else alt ``AD`` / depth; for
Strelka, tier-1 ``AU/CU/GU/TU`` (SNVs) or ``TAR/TIR`` (indels) counts replace ``AD``. :func:`depth_and_vaf`
applies the rule to one (split) sample; :func:`depth_and_vaf_columns` to a whole column of single-ALT records
(the same results, Strelka rows handed to :func:`depth_and_vaf`).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

STRELKA_KEYS = frozenset({"AU", "CU", "GU", "TU", "TAR", "TIR"})


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    if value is None or value == ".":
        return None
    try:
        return float(value)
    except ValueError:
        return None


def depth_and_vaf(data: dict[str, str], ref: str, alt: str) -> tuple[int | None, float | None]:
    """Read depth and variant allele fraction of one (split) sample (module docstring for the rule)."""
    dp = data.get("DP")
    depth = int(dp) if dp and dp.isdigit() else None
    ref_n = alt_n = None
    ad = data.get("AD")
    if ad and ad != ".":
        first, _, last = ad.partition(",")
        if "," in last:  # unsplit AD of a multi-allelic site: REF and the last ALT
            last = last.rpartition(",")[2]
        if last:
            ref_n = int(first) if first.isdigit() else None
            alt_n = int(last) if last.isdigit() else None
        else:
            alt_n = int(first) if first.isdigit() else None
    elif "AU" in data and len(ref) == 1 and len(alt) == 1:
        ref_n = _int(data.get(ref + "U", "").split(",")[0])
        alt_n = _int(data.get(alt + "U", "").split(",")[0])
    elif "TIR" in data:
        alt_n = _int(data["TIR"].split(",")[0])
        ref_n = _int(data.get("TAR", "").split(",")[0])
    if depth is None and alt_n is not None:
        depth = alt_n + (ref_n or 0)
    vaf = _float(data.get("AF", data.get("FA")))
    if vaf is None and alt_n is not None:
        total = depth if depth else (alt_n + (ref_n or 0))
        vaf = alt_n / total if total else None
    return depth, vaf


def list_field(lists: pa.ListArray, k: int) -> pa.Array:
    """Element ``k`` of each list; null where a list is null or has ``k`` or fewer elements."""
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    offsets = lists.offsets.to_numpy()
    flat = pc.list_flatten(lists)
    present = lengths > k
    if not present.any():
        return pa.nulls(len(lists), flat.type)
    taken = flat.take(pa.array(np.where(present, offsets[:-1] - offsets[0] + k, 0)))
    return taken if present.all() else pc.if_else(pa.array(present), taken, pa.scalar(None, flat.type))


def last_field(lists: pa.ListArray) -> pa.Array:
    """The last element of each list (null for null or empty lists)."""
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    offsets = lists.offsets.to_numpy()
    flat = pc.list_flatten(lists)
    present = lengths > 0
    if not present.any():
        return pa.nulls(len(lists), flat.type)
    taken = flat.take(pa.array(np.where(present, offsets[1:] - offsets[0] - 1, 0)))
    return taken if present.all() else pc.if_else(pa.array(present), taken, pa.scalar(None, flat.type))


def digits(values: pa.Array) -> np.ndarray:
    """Strings of 1-18 ASCII digits -> float64 values; anything else (null, empty, signs, text) -> NaN."""
    ok = pc.fill_null(pc.match_substring_regex(values, r"^[0-9]{1,18}$"), False)
    out = np.full(len(values), np.nan)
    mask = ok.to_numpy(zero_copy_only=False)
    if mask.any():
        out[mask] = values.filter(ok).cast(pa.int64()).to_numpy().astype(np.float64)
    return out


def floats(values: pa.Array) -> np.ndarray:
    """Python ``float()`` over a string column: null, ``.`` and unparsable values -> NaN."""
    valid = pc.fill_null(pc.not_equal(values, "."), False)
    out = np.full(len(values), np.nan)
    mask = valid.to_numpy(zero_copy_only=False)
    if mask.any():
        chosen = values.filter(valid)
        try:
            out[mask] = chosen.cast(pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            out[mask] = [np.nan if v is None else (_float(v) if _float(v) is not None else np.nan)
                         for v in chosen.to_pylist()]
    return out


def depth_and_vaf_columns(fmt: pa.Array, sample: pa.Array, ref: pa.Array,
                          alt: pa.Array) -> tuple[pa.Array, pa.Array]:
    """:func:`depth_and_vaf` over columns of single-ALT records.

    Args:
        fmt: FORMAT column (n,), e.g. ``GT:AD:DP``.
        sample: the sample's column (n,), e.g. ``0/1:30,10:40``.
        ref, alt: REF and ALT (n,), for Strelka's per-base counts.

    Returns:
        ``(depth, vaf)``: int64 reads and float64 fraction arrays (n,), null where unknown.
    """
    n = len(sample)
    depth = np.full(n, np.nan)
    vaf = np.full(n, np.nan)
    encoded = pc.dictionary_encode(fmt)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    for code, keys in enumerate(encoded.dictionary.to_pylist()):
        rows = np.flatnonzero(codes == code) if len(encoded.dictionary) > 1 else np.arange(n)
        if not len(rows):
            continue
        keys = keys.split(":")
        values = sample if len(rows) == n else sample.take(pa.array(rows))
        if STRELKA_KEYS.intersection(keys):
            r, a = ref.take(pa.array(rows)).to_pylist(), alt.take(pa.array(rows)).to_pylist()
            for j, (text, rj, aj) in enumerate(zip(values.to_pylist(), r, a, strict=True)):
                d, v = depth_and_vaf(dict(zip(keys, text.split(":"), strict=False)), rj, aj)
                depth[rows[j]] = np.nan if d is None else d
                vaf[rows[j]] = np.nan if v is None else v
            continue
        depth[rows], vaf[rows] = _depth_vaf_numeric(keys, pc.split_pattern(values, ":"))
    return (pa.array(np.nan_to_num(depth).astype(np.int64), pa.int64(), mask=np.isnan(depth)),
            pa.array(vaf, pa.float64(), from_pandas=True))


def _depth_vaf_numeric(keys: list[str], parts: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    """Depth and VAF (NaN = unknown) of the rows sharing one FORMAT (``keys``), split by ``:``."""
    n = len(parts)

    def field(key: str) -> pa.Array | None:
        return list_field(parts, keys.index(key)) if key in keys else None

    dp = field("DP")
    depth = digits(dp) if dp is not None else np.full(n, np.nan)
    ref_n = np.full(n, np.nan)
    alt_n = np.full(n, np.nan)
    ad = field("AD")
    if ad is not None:
        has_ad = pc.fill_null(pc.and_(pc.not_equal(ad, ""), pc.not_equal(ad, ".")), False)
        counts = pc.split_pattern(ad, ",")
        first, last = list_field(counts, 0), last_field(counts)
        # "30,10" -> REF 30, ALT 10 (unsplit "30,10,5": REF and the last ALT); "10" or "10," -> ALT 10
        pair = pc.fill_null(pc.and_(pc.greater(pc.list_value_length(counts), 1), pc.not_equal(last, "")), False)
        pair_np = pair.to_numpy(zero_copy_only=False) & has_ad.to_numpy(zero_copy_only=False)
        single_np = ~pair_np & has_ad.to_numpy(zero_copy_only=False)
        first_n, last_n = digits(first), digits(last)
        ref_n = np.where(pair_np, first_n, np.nan)
        alt_n = np.where(pair_np, last_n, np.where(single_np, first_n, np.nan))
    has_alt = ~np.isnan(alt_n)
    counted = alt_n + np.nan_to_num(ref_n)
    depth = np.where(np.isnan(depth) & has_alt, counted, depth)
    af = field("AF")
    fa = field("FA")
    af = fa if af is None else (af if fa is None else pc.coalesce(af, fa))
    vaf = floats(af) if af is not None else np.full(n, np.nan)
    total = np.where(np.nan_to_num(depth) != 0, depth, counted)
    with np.errstate(divide="ignore", invalid="ignore"):
        from_counts = np.where(has_alt & (np.nan_to_num(total) != 0), alt_n / total, np.nan)
    vaf = np.where(np.isnan(vaf) & has_alt, from_counts, vaf)
    return depth, vaf
