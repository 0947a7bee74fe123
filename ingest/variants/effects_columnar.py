"""vcf2maf's one-effect rule (:mod:`ingest.variants.annotation`) over whole columns of ANN / CSQ values.

:func:`annotate_columns` gives the same gene, ``Variant_Classification`` and short HGVSp as
:meth:`Annotator.pick <ingest.variants.annotation.Annotator.pick>` + :func:`~ingest.variants.annotation.classify`
+ :func:`~ingest.variants.annotation.report_hgvsp` per record, for single-ALT records: annotation values are
split with Arrow compute functions, effects ranked with NumPy sort keys (biotype, severity, longest
transcript, listed order), and only the rare HGVSp forms (splice sites, ``p.=``, URL escapes, ``c.(p.)``)
go through the per-record function.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.variants.annotation import (
    AA3TO1,
    BIOTYPE_PRIORITY,
    EFFECT_PRIORITY,
    UNKNOWN_BIOTYPE_PRIORITY,
    UNKNOWN_PRIORITY,
    Annotator,
    Effect,
    classify,
    report_hgvsp,
)
from ingest.variants.normalise import upper_bases_column
from ingest.variants.sample_fields import list_field

VAR_TYPES = ("SNP", "DNP", "TNP", "ONP", "INS", "DEL")
_NULL = pa.scalar(None, pa.string())
_SPLICE = pa.array(["splice_acceptor_variant", "splice_donor_variant"])


def _lookup(values: pa.Array, table: dict[str, int], default: int) -> np.ndarray:
    """``table[value]`` for each string (``default`` when absent or null), as int64 (n,)."""
    keys = list(table)
    index = pc.index_in(values, value_set=pa.array(keys, pa.string()))
    ranks = np.array([table[k] for k in keys] + [default], dtype=np.int64)
    return ranks[pc.fill_null(index, len(keys)).to_numpy(zero_copy_only=False)]


def _firsts(groups: np.ndarray) -> np.ndarray:
    """Positions where a run of equal values starts in a sorted int array."""
    if not len(groups):
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])


def most_severe(consequences: pa.Array) -> pa.Array:
    """The most severe of each entry's ``&``-joined SO terms (the first on ties); empty -> intergenic."""
    consequences = pc.fill_null(consequences, "")
    if len(consequences) and pc.any(pc.match_substring(consequences, "&")).as_py():
        terms = pc.split_pattern(consequences, "&")
        flat = pc.list_flatten(terms)
        offsets = terms.offsets.to_numpy()
        size = len(flat) + 1
        key = _lookup(flat, EFFECT_PRIORITY, UNKNOWN_PRIORITY) * size + np.arange(len(flat))
        best = np.minimum.reduceat(key, offsets[:-1] - offsets[0]) % size
        consequences = flat.take(pa.array(best))
    return pc.if_else(pc.equal(consequences, ""), "intergenic_variant", consequences)


def _transcript_length(position: pa.Array) -> np.ndarray:
    """``"1480/5971"`` -> 5971, anything else -> 0 (int64, n)."""
    found = pc.extract_regex(pc.fill_null(position, ""), r"/(?P<n>[0-9]{1,18})$")
    total = pc.struct_field(found, [0])
    return pc.fill_null(total.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)


def _entries(annotator: Annotator, annotations: pa.Array, want: pa.Array,
             alt_index: int) -> tuple[np.ndarray, dict[str, pa.Array]]:
    """Effects on the wanted allele: (row of each entry (m,), field name -> string array (m,))."""
    lists = pc.split_pattern(annotations, ",")
    rows = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    fields = pc.split_pattern(pc.list_flatten(lists), "|")
    names = ("allele", "allele_num", "gene", "consequence", "hgvsp", "transcript", "biotype", "canonical",
             "length", "hgvsc", "protein_position", "amino_acids")
    empty = pa.array([""] * len(rows), pa.string())
    out = {}
    for name in names:
        k = annotator.field_index(name)
        out[name] = empty if k < 0 else pc.fill_null(list_field(fields, k), "")
    number = out["allele_num"]
    want_entry = want.take(pa.array(rows))
    by_allele = pc.or_(pc.equal(out["allele"], ""), pc.equal(upper_bases_column(out["allele"]), want_entry))
    keep = pc.if_else(pc.equal(number, ""), by_allele, pc.equal(number, str(alt_index)))
    keep_np = keep.to_numpy(zero_copy_only=False)
    if not keep_np.all():
        rows = rows[keep_np]
        out = {name: values.filter(keep) for name, values in out.items()}
    return rows, out


def pick_columns(annotator: Annotator, annotations: pa.Array, want: pa.Array, *,
                 alt_index: int = 1) -> tuple[np.ndarray, dict[str, pa.Array]]:
    """The one reported effect per record (vcf2maf rule), column-wise.

    Args:
        annotator: parses this VCF's ANN or CSQ (not EFF).
        annotations: the INFO annotation value per record (n,), null where absent.
        want: the allele as the annotation writes it (ANN: ALT; CSQ: :func:`vep_alleles`), (n,).
        alt_index: the records' 1-based ALT index (matched against CSQ ``ALLELE_NUM``).

    Returns:
        ``(rows, fields)``: the records that have an effect (k,), and their chosen effect's ``gene``,
        ``consequence`` (most severe SO term), ``hgvsp``, ``hgvsc``, ``protein_position``, ``amino_acids``.
    """
    rows, f = _entries(annotator, annotations, want, alt_index)
    consequence = most_severe(f["consequence"])
    order = np.lexsort((np.arange(len(rows)), -_transcript_length(f["length"]),
                        _lookup(consequence, EFFECT_PRIORITY, UNKNOWN_PRIORITY),
                        _lookup(f["biotype"], BIOTYPE_PRIORITY, UNKNOWN_BIOTYPE_PRIORITY), rows))
    sorted_rows = rows[order]
    firsts = _firsts(sorted_rows)
    records = sorted_rows[firsts]
    chosen = order[firsts]
    gene_codes = pc.dictionary_encode(f["gene"]).indices.to_numpy(zero_copy_only=False)[order]
    has_gene = pc.not_equal(f["gene"], "").to_numpy(zero_copy_only=False)[order]
    canonical = pc.equal(f["canonical"], "YES").to_numpy(zero_copy_only=False)[order]
    # the record's gene: that of its first ranked effect with a symbol
    record_gene = np.full(len(annotations), -1, dtype=np.int64)
    named = np.flatnonzero(has_gene)
    first_named = named[_firsts(sorted_rows[named])]
    record_gene[sorted_rows[first_named]] = gene_codes[first_named]
    slot = np.full(len(annotations), -1, dtype=np.int64)
    slot[records] = np.arange(len(records))
    # first canonical effect with a symbol, then first canonical effect on the record's gene (wins)
    for mask in (canonical & has_gene, canonical & has_gene & (gene_codes == record_gene[sorted_rows])):
        hits = np.flatnonzero(mask)
        first = hits[_firsts(sorted_rows[hits])]
        chosen[slot[sorted_rows[first]]] = order[first]
    take = pa.array(chosen)
    picked = {name: f[name].take(take) for name in ("gene", "hgvsp", "hgvsc", "protein_position", "amino_acids")}
    picked["consequence"] = consequence.take(take)
    return records, picked


def _classify(consequence: pa.Array, var_type: np.ndarray, inframe: np.ndarray) -> pa.Array:
    """:func:`classify` over columns, one call per distinct (consequence, var_type, inframe)."""
    encoded = pc.dictionary_encode(consequence)
    terms = encoded.dictionary.to_pylist()
    combo = (encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64) * len(VAR_TYPES) + var_type) * 2 \
        + inframe
    unique, inverse = np.unique(combo, return_inverse=True)
    names = [classify(terms[c // (2 * len(VAR_TYPES))], VAR_TYPES[c // 2 % len(VAR_TYPES)], bool(c % 2))
             for c in unique.tolist()]
    return pa.array(names, pa.string()).take(pa.array(inverse.reshape(-1)))


def short_hgvsp(hgvsp: pa.Array) -> pa.Array:
    """:func:`~ingest.variants.annotation.hgvsp_short` for values without ``%`` or ``c.(p.)`` forms."""
    text = pc.replace_substring_regex(hgvsp, r"^.*:", "")
    for three, one in AA3TO1.items():
        text = pc.replace_substring(text, three, one)
    prefixed = pc.binary_join_element_wise("p.", text, "")
    return pc.if_else(pc.or_(pc.equal(text, ""), pc.starts_with(text, "p.")), text, prefixed)


def annotate_columns(annotator: Annotator, annotations: pa.Array, want: pa.Array, var_type: np.ndarray,
                     inframe: np.ndarray) -> tuple[pa.Array, pa.Array, pa.Array]:
    """Gene, ``Variant_Classification`` and short HGVSp of single-ALT records (null without an effect).

    Args:
        annotator: parses this VCF's ANN or CSQ.
        annotations: INFO annotation values (n,), null where absent.
        want: the allele as written in the annotation (n,) (see :func:`pick_columns`).
        var_type: index into :data:`VAR_TYPES` (n,); inframe: bool (n,) (see
            :func:`~ingest.variants.annotation.maf_alleles`).
    """
    n = len(annotations)
    gene = consequence = hgvsp = pa.nulls(n, pa.string())
    valid = pc.and_(pc.is_valid(annotations), pc.not_equal(annotations, ""))
    present = np.flatnonzero(pc.fill_null(valid, False).to_numpy(zero_copy_only=False))
    if not len(present):
        return gene, consequence, hgvsp
    index = pa.array(present)
    rows, f = pick_columns(annotator, annotations.take(index), want.take(index))
    if not len(rows):
        return gene, consequence, hgvsp
    records = present[rows]
    classes = _classify(f["consequence"], var_type[records], inframe[records])
    raw = f["hgvsp"]
    special = pc.or_(pc.or_(pc.is_in(f["consequence"], _SPLICE), pc.match_substring(raw, "%")),
                     pc.match_substring(raw, "(p."))
    short = short_hgvsp(raw)
    silent = pc.and_(pc.equal(classes, "Silent"), pc.match_substring_regex(short, r"^p\.[A-Z*]\d+$"))
    short = pc.if_else(silent, pc.binary_join_element_wise(short, "=", ""), short)
    special = pc.or_(special, pc.equal(short, "p.="))
    special_np = special.to_numpy(zero_copy_only=False)
    if special_np.any():
        which = pa.array(np.flatnonzero(special_np))
        columns = [f[name].take(which).to_pylist() for name in ("gene", "consequence", "hgvsp", "hgvsc",
                                                                  "protein_position", "amino_acids")]
        fixed = [report_hgvsp(Effect(g, c, h, "", "", False, 0, hc, pp, aa), cls)
                 for g, c, h, hc, pp, aa, cls in zip(*columns, classes.take(which).to_pylist(), strict=True)]
        short = pc.replace_with_mask(short, pa.array(special_np), pa.array(fixed, pa.string()))
    short = pc.if_else(pc.equal(short, ""), _NULL, short)
    gene_out = pc.if_else(pc.equal(f["gene"], ""), _NULL, f["gene"])
    # scatter the k picked values to their n records
    slot = np.full(n, -1, dtype=np.int64)
    slot[records] = np.arange(len(records))
    positions = pa.array(slot, mask=slot < 0)
    return gene_out.take(positions), classes.take(positions), short.take(positions)
