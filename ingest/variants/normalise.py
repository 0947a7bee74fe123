"""Chromosome names and alleles as the ``variants`` table writes them, whichever file (VCF or MAF) they came from,
so that one variant has one ``variant_key``.

Chromosomes: a leading ``chr`` (any case) is removed, as GRCh37 / Ensembl name them (``chr17`` -> ``17``). In
that naming the mitochondrion is ``MT`` (GRCh37 and Ensembl MAFs, VEP and vcf2maf output), so UCSC's ``chrM``
(hg19 / hg38 VCFs, GDC GRCh38 MAFs) becomes ``MT`` too; ``X`` and ``Y`` are upper-case, and ``23`` / ``24``, the
numeric X and Y of some MAFs and PLINK exports, are ``X`` / ``Y`` (human genomes only: the platform's gene
panels are human). PLINK's ``25`` (XY, pseudo-autosomal) and ``26`` (MT) are left as they are: other numbering
schemes give those numbers other meanings. Other names (``Un_gl000220``, ``KI270728.1``) are kept as written.
The build is not checked: hg19's chrM is not the same sequence as GRCh37's MT, so hg19 and GRCh37
mitochondrial positions need not agree.

Alleles: VCF REF/ALT bases are case-insensitive (VCF 4.x) and some MAF producers write lower-case alleles: a
plain base string (ASCII letters only) is upper-cased. Other alleles keep their form: symbolic ones (``<DEL>``),
breakends (``G]17:198982]``), ``*``, ``.`` and MAF's ``-``.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

# upper-cased name without "chr" -> the name written
CHROM_ALIASES = {"M": "MT", "MT": "MT", "X": "X", "Y": "Y", "23": "X", "24": "Y"}
_ALIAS_NAMES = pa.array(list(CHROM_ALIASES), pa.string())
_ALIAS_WRITTEN = pa.array(list(CHROM_ALIASES.values()), pa.string())


def normalise_chrom(chrom: str) -> str:
    """``chr17`` -> ``17``; ``chrM``, ``M`` -> ``MT``; ``chrx``, ``23`` -> ``X`` (module docstring)."""
    name = chrom[3:] if chrom[:3].lower() == "chr" and len(chrom) > 3 else chrom
    return CHROM_ALIASES.get(name.upper(), name)


def normalise_chrom_column(chroms: pa.Array) -> pa.Array:
    """:func:`normalise_chrom` over a string column (n,); nulls stay null."""
    names = pc.replace_substring_regex(chroms, "^[cC][hH][rR](.)", "\\1")
    alias = pc.index_in(pc.ascii_upper(names), value_set=_ALIAS_NAMES)
    return pc.coalesce(_ALIAS_WRITTEN.take(alias), names)


def upper_bases(allele: str) -> str:
    """``acgt`` -> ``ACGT``; an allele that is not a plain base string as given (module docstring)."""
    return allele.upper() if allele.isascii() and allele.isalpha() else allele


def upper_bases_column(alleles: pa.Array) -> pa.Array:
    """:func:`upper_bases` over a string column (n,); nulls stay null."""
    upper = pc.ascii_upper(alleles)
    if upper.equals(alleles):  # the usual case, and 40x faster than the pattern match
        return alleles
    return pc.if_else(pc.match_substring_regex(alleles, "^[A-Za-z]+$"), upper, alleles)
