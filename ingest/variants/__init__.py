"""Genomic variant ingest: VCF and MAF files -> the ``variants``, ``gene_status`` and ``tmb`` lake tables.

* :mod:`ingest.variants.vcf`: streaming VCF reader (multi-allelic split), tumour-sample rule, VCF -> rows;
* :mod:`ingest.variants.vcf_columnar`, :mod:`ingest.variants.effects_columnar`,
  :mod:`ingest.variants.sample_fields`, :mod:`ingest.variants.lines`: the same rules column-wise over chunks of
  lines (the fast path for single-sample VCFs with ANN/CSQ);
* :mod:`ingest.variants.maf`: MAF reader -> rows;
* :mod:`ingest.variants.annotation`: SnpEff ANN / EFF and VEP CSQ, vcf2maf's one-effect rule and
  Variant_Classification mapping;
* :mod:`ingest.variants.features`: gene status over a gene panel, TMB;
* :mod:`ingest.variants.pipeline`: files and folders -> lake (:func:`ingest_variants`).

The table schemas are declared in :mod:`ingest.schema` (``variants``, ``gene_status``, ``tmb``).
"""

from ingest.variants.features import GenePanel, load_gene_panel
from ingest.variants.maf import MafFormatError, maf_variants
from ingest.variants.pipeline import discover_files, ingest_variants, patient_for
from ingest.variants.vcf import VcfFormatError, VcfReader, vcf_variants

__all__ = ["GenePanel", "MafFormatError", "VcfFormatError", "VcfReader", "discover_files", "ingest_variants",
           "load_gene_panel", "maf_variants", "patient_for", "vcf_variants"]
