"""Per-sample features derived from ``variants``: gene status over a gene panel, and tumour mutational burden.

Rules (the same for both tables):

* only variants that passed filters count: ``filter`` is ``PASS`` or empty (``.`` in the VCF, no FILTER
  column in a MAF);
* non-silent = :data:`~ingest.variants.annotation.NONSILENT_CLASSES` (maftools' ``vc_nonSyn``:
  Frame_Shift_Del/Ins, Splice_Site, Translation_Start_Site, Nonsense_Mutation, Nonstop_Mutation,
  In_Frame_Del/Ins, Missense_Mutation);
* ``gene_status``: one row per sample and panel gene; ``n_variants`` counts all passing variants in the gene,
  ``mutated`` is true when at least one of them is non-silent;
* ``tmb``: ``n_nonsilent`` passing non-silent variants (all genes),
  ``tmb_per_mb = n_nonsilent / panel_size_mb``;
* a sample none of whose variants carries a consequence (an unannotated VCF) gets no rows in either table:
  its status is unknown, not wild-type.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ingest.variants.annotation import NONSILENT_CLASSES

DEFAULT_PANEL = Path(__file__).resolve().parents[2] / "configs" / "gene_panel.yaml"


class GenePanel(BaseModel):
    """Genes reported in ``gene_status`` and the sequenced territory that TMB divides by."""

    model_config = ConfigDict(extra="forbid")

    name: str = "custom"
    genes: list[str] = Field(min_length=1)
    panel_size_mb: float = Field(gt=0, description="sequenced territory, megabases")
    actionable: dict[str, list[str] | None] = Field(
        default_factory=dict, description="gene -> regular expressions matched (case-insensitive) against "
        "'<hgvsp> <consequence>' of a variant; null: any variant of the gene is actionable")

    @field_validator("genes")
    @classmethod
    def _unique(cls, genes: list[str]) -> list[str]:
        return list(dict.fromkeys(g.strip() for g in genes if g.strip()))


def load_gene_panel(path: str | Path | None = None) -> GenePanel:
    """Read a gene panel YAML (``name``, ``genes``, ``panel_size_mb``, optional ``actionable``); default:
    configs/gene_panel.yaml."""
    path = Path(path) if path is not None else DEFAULT_PANEL
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"gene panel file {path} not found; pass --gene-panel PATH.yaml with keys"
                                " name, genes, panel_size_mb") from None
    try:
        return GenePanel.model_validate(data or {})
    except ValidationError as exc:
        raise ValueError(f"{path}: invalid gene panel: {exc}") from None


_NONSILENT = pa.array(sorted(NONSILENT_CLASSES), pa.string())


def _passing(variants: pa.Table) -> pa.Table:
    filt = variants.column("filter")
    keep = pc.or_kleene(pc.is_null(filt), pc.is_in(filt, pa.array(["PASS", "", "."])))
    return variants.filter(pc.fill_null(keep, True))


class VariantTally:
    """The per-sample counts behind ``gene_status`` and ``tmb``, added up one batch of ``variants`` rows at a
    time (rows deduplicated beforehand), so that the tables come from any number of rows in bounded memory.

    Args:
        genes: panel gene symbols (``gene_status`` rows).
    """

    def __init__(self, genes: list[str]) -> None:
        self.genes = list(genes)
        self._panel = pa.array(self.genes, pa.string())
        self.patients: dict[str, str] = {}  # sample id -> patient id, every sample seen
        self.annotated: set[str] = set()  # samples with at least one variant that carries a consequence
        self.gene_counts: dict[tuple[str, str], list] = {}  # (sample, panel gene) -> [passing variants, mutated]
        self.nonsilent: dict[str, int] = {}  # sample -> passing non-silent variants (all genes)

    def add(self, variants: pa.Table | pa.RecordBatch) -> None:
        """Count one batch of rows (needs patient_id, sample_id, gene, consequence, filter)."""
        variants = pa.Table.from_batches([variants]) if isinstance(variants, pa.RecordBatch) else variants
        pairs = variants.select(["sample_id", "patient_id"]).group_by(["sample_id", "patient_id"]).aggregate([])
        self.patients.update(zip(pairs.column("sample_id").to_pylist(), pairs.column("patient_id").to_pylist(),
                                 strict=True))
        has = variants.filter(pc.is_valid(variants.column("consequence")))
        self.annotated.update(pc.unique(has.column("sample_id")).to_pylist())
        passing = _passing(variants)
        nonsilent = pc.fill_null(pc.is_in(passing.column("consequence"), _NONSILENT), False)
        passing = passing.append_column("nonsilent", nonsilent)
        in_panel = passing.filter(pc.fill_null(pc.is_in(passing.column("gene"), self._panel), False))
        if in_panel.num_rows:
            agg = in_panel.group_by(["sample_id", "gene"]).aggregate([("gene", "count"), ("nonsilent", "any")])
            for s, g, n, m in zip(agg.column("sample_id").to_pylist(), agg.column("gene").to_pylist(),
                                  agg.column("gene_count").to_pylist(), agg.column("nonsilent_any").to_pylist(),
                                  strict=True):
                counts = self.gene_counts.setdefault((s, g), [0, False])
                counts[0] += n
                counts[1] = counts[1] or bool(m)
        hits = passing.filter(nonsilent)
        if hits.num_rows:
            agg = hits.group_by("sample_id").aggregate([("sample_id", "count")])
            for s, n in zip(agg.column("sample_id").to_pylist(), agg.column("sample_id_count").to_pylist(),
                            strict=True):
                self.nonsilent[s] = self.nonsilent.get(s, 0) + n

    def _samples(self, without_variants: dict[str, str] | None) -> tuple[list[str], dict[str, str]]:
        """The annotated samples (those counted and those of ``without_variants``, sorted) and their patients."""
        extra = without_variants or {}
        return sorted(self.annotated | set(extra)), {**extra, **self.patients}

    def gene_status(self, without_variants: dict[str, str] | None = None) -> pa.Table:
        """``gene_status`` rows: (annotated samples x genes) with ``mutated`` and ``n_variants``.

        Args:
            without_variants: sample id -> patient id of samples sequenced and annotated but with no variant
                (a cohort VCF's other samples): every gene wild-type.
        """
        samples, patients = self._samples(without_variants)
        rows = {"patient_id": [], "sample_id": [], "gene": [], "mutated": [], "n_variants": []}
        for sample in samples:
            for gene in self.genes:
                n, mutated = self.gene_counts.get((sample, gene), (0, False))
                rows["patient_id"].append(patients[sample])
                rows["sample_id"].append(sample)
                rows["gene"].append(gene)
                rows["mutated"].append(mutated)
                rows["n_variants"].append(n)
        return pa.table(rows, schema=pa.schema([("patient_id", pa.string()), ("sample_id", pa.string()),
                                                ("gene", pa.string()), ("mutated", pa.bool_()),
                                                ("n_variants", pa.int64())]))

    def tmb(self, panel_size_mb: float, without_variants: dict[str, str] | None = None) -> pa.Table:
        """``tmb`` rows for the annotated samples: ``n_nonsilent`` and ``tmb_per_mb`` (mutations per Mb);
        ``without_variants`` as for :meth:`gene_status` (their TMB is 0)."""
        if panel_size_mb <= 0:
            raise ValueError(f"panel_size_mb must be > 0 (megabases sequenced), got {panel_size_mb}")
        samples, patients = self._samples(without_variants)
        n = [self.nonsilent.get(s, 0) for s in samples]
        return pa.table({
            "patient_id": pa.array([patients[s] for s in samples], pa.string()),
            "sample_id": pa.array(samples, pa.string()),
            "n_nonsilent": pa.array(n, pa.int64()),
            "panel_size_mb": pa.array([float(panel_size_mb)] * len(samples), pa.float64()),
            "tmb_per_mb": pa.array([k / panel_size_mb for k in n], pa.float64()),
        })


def gene_status(variants: pa.Table, genes: list[str], without_variants: dict[str, str] | None = None) -> pa.Table:
    """``gene_status`` rows of ``variants`` (rows of the ``variants`` table); see :meth:`VariantTally.gene_status`."""
    tally = VariantTally(genes)
    tally.add(variants)
    return tally.gene_status(without_variants)


def tmb(variants: pa.Table, panel_size_mb: float, without_variants: dict[str, str] | None = None) -> pa.Table:
    """``tmb`` rows of ``variants`` (rows of the ``variants`` table); see :meth:`VariantTally.tmb`."""
    tally = VariantTally([])
    tally.add(variants)
    return tally.tmb(panel_size_mb, without_variants)
