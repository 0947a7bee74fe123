"""Alleles as the ``variants`` table writes them, whichever file (VCF or MAF) they came from, so that one variant
has one ``variant_key``.

VCF REF/ALT bases are case-insensitive (VCF 4.x) and some MAF producers write lower-case alleles: a plain base
string (ASCII letters only) is upper-cased. Other alleles keep their form: symbolic ones (``<DEL>``), breakends
(``G]17:198982]``), ``*``, ``.`` and MAF's ``-``.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc


def upper_bases(allele: str) -> str:
    """``acgt`` -> ``ACGT``; an allele that is not a plain base string as given (module docstring)."""
    return allele.upper() if allele.isascii() and allele.isalpha() else allele


def upper_bases_column(alleles: pa.Array) -> pa.Array:
    """:func:`upper_bases` over a string column (n,); nulls stay null."""
    upper = pc.ascii_upper(alleles)
    if upper.equals(alleles):  # the usual case, and 40x faster than the pattern match
        return alleles
    return pc.if_else(pc.match_substring_regex(alleles, "^[A-Za-z]+$"), upper, alleles)
