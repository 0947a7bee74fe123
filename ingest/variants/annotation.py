"""Variant annotations in VCF INFO: SnpEff ``ANN``, legacy SnpEff ``EFF`` and Ensembl VEP ``CSQ``.

One effect per variant, by vcf2maf's rule (mskcc/vcf2maf ``vcf2maf.pl``):

1. keep the effects on this ALT allele (CSQ ``ALLELE_NUM`` or ``Allele``, ANN ``Allele``, EFF
   ``Genotype_Number``);
2. reduce each effect's ``&``-joined consequences to the most severe one (:data:`EFFECT_PRIORITY`);
3. sort effects by transcript biotype (:data:`BIOTYPE_PRIORITY`), then severity, then longest transcript
   (cDNA length; amino-acid length for EFF), ties kept in the order listed;
4. the gene is that of the first effect with a gene symbol; report the effect on that gene's canonical
   transcript (VEP ``CANONICAL=YES``), else the first canonical effect with a symbol, else the first effect.

Consequences (Sequence Ontology terms; legacy EFF names are translated first) map to the MAF
``Variant_Classification`` vocabulary with vcf2maf's ``GetVariantClassification`` (:func:`classify`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from operator import itemgetter
from typing import NamedTuple
from urllib.parse import unquote

from ingest.variants.normalise import upper_bases

# Severity of Sequence Ontology consequences, 1 = most severe (vcf2maf GetEffectPriority).
EFFECT_PRIORITY: dict[str, int] = {
    "transcript_ablation": 1, "exon_loss_variant": 1,
    "splice_donor_variant": 2, "splice_acceptor_variant": 2,
    "stop_gained": 3, "frameshift_variant": 3, "stop_lost": 3,
    "start_lost": 4, "initiator_codon_variant": 4,
    "disruptive_inframe_insertion": 5, "disruptive_inframe_deletion": 5, "conservative_inframe_insertion": 5,
    "conservative_inframe_deletion": 5, "inframe_insertion": 5, "inframe_deletion": 5,
    "protein_altering_variant": 5,
    "missense_variant": 6, "conservative_missense_variant": 6, "rare_amino_acid_variant": 6,
    "transcript_amplification": 7,
    "splice_region_variant": 8,
    "start_retained_variant": 9, "stop_retained_variant": 9, "synonymous_variant": 9,
    "incomplete_terminal_codon_variant": 10,
    "coding_sequence_variant": 11, "mature_miRNA_variant": 11, "exon_variant": 11,
    "5_prime_UTR_variant": 12, "5_prime_UTR_premature_start_codon_gain_variant": 12,
    "3_prime_UTR_variant": 12,
    "non_coding_exon_variant": 13, "non_coding_transcript_exon_variant": 13,
    "non_coding_transcript_variant": 14, "nc_transcript_variant": 14, "intron_variant": 14,
    "intragenic_variant": 14, "INTRAGENIC": 14,
    "NMD_transcript_variant": 15,
    "upstream_gene_variant": 16, "downstream_gene_variant": 16,
    "TFBS_ablation": 17, "TFBS_amplification": 17, "TF_binding_site_variant": 17,
    "regulatory_region_ablation": 17,
    "regulatory_region_amplification": 17, "regulatory_region_variant": 17, "regulatory_region": 17,
    "feature_elongation": 18, "feature_truncation": 18,
    "intergenic_variant": 19, "intergenic_region": 19,
}
UNKNOWN_PRIORITY = 20

# Transcript biotypes by disease relevance, 1 = first (vcf2maf GetBiotypePriority); unlisted = 9.
_BIOTYPES = {
    1: "protein_coding",
    2: "LRG_gene IG_C_gene IG_D_gene IG_J_gene IG_LV_gene IG_V_gene TR_C_gene TR_D_gene TR_J_gene TR_V_gene",
    3: "miRNA snRNA snoRNA ribozyme tRNA sRNA scaRNA rRNA scRNA lincRNA lncRNA bidirectional_promoter_lncrna"
       " bidirectional_promoter_lncRNA",
    4: "known_ncrna vaultRNA macro_lncRNA Mt_tRNA Mt_rRNA",
    5: "antisense antisense_RNA sense_intronic sense_overlapping 3prime_overlapping_ncrna"
       " 3prime_overlapping_ncRNA misc_RNA non_coding",
    6: "regulatory_region disrupted_domain processed_transcript TEC",
    7: "TF_binding_site CTCF_binding_site promoter_flanking_region enhancer promoter open_chromatin_region"
       " retained_intron nonsense_mediated_decay non_stop_decay ambiguous_orf",
    8: "pseudogene processed_pseudogene polymorphic_pseudogene retrotransposed"
       " translated_processed_pseudogene translated_unprocessed_pseudogene transcribed_processed_pseudogene"
       " transcribed_unprocessed_pseudogene transcribed_unitary_pseudogene unitary_pseudogene"
       " unprocessed_pseudogene Mt_tRNA_pseudogene tRNA_pseudogene snoRNA_pseudogene snRNA_pseudogene"
       " scRNA_pseudogene rRNA_pseudogene misc_RNA_pseudogene miRNA_pseudogene IG_C_pseudogene"
       " IG_J_pseudogene IG_V_pseudogene IG_pseudogene TR_J_pseudogene TR_V_pseudogene",
}
BIOTYPE_PRIORITY: dict[str, int] = {b: p for p, names in _BIOTYPES.items() for b in names.split()}
UNKNOWN_BIOTYPE_PRIORITY = 9

# Legacy SnpEff (EFF, SnpEff < 4.0 without -sequenceOntology) effect names -> Sequence Ontology terms.
LEGACY_EFF_TO_SO: dict[str, str] = {
    "INTERGENIC": "intergenic_region", "INTERGENIC_CONSERVED": "intergenic_region",
    "UPSTREAM": "upstream_gene_variant", "DOWNSTREAM": "downstream_gene_variant",
    "UTR_5_PRIME": "5_prime_UTR_variant", "UTR_5_DELETED": "5_prime_UTR_variant",
    "START_GAINED": "5_prime_UTR_premature_start_codon_gain_variant",
    "UTR_3_PRIME": "3_prime_UTR_variant", "UTR_3_DELETED": "3_prime_UTR_variant",
    "SPLICE_SITE_ACCEPTOR": "splice_acceptor_variant", "SPLICE_SITE_DONOR": "splice_donor_variant",
    "SPLICE_SITE_REGION": "splice_region_variant", "SPLICE_SITE_BRANCH": "splice_region_variant",
    "SPLICE_SITE_BRANCH_U12": "splice_region_variant",
    "INTRON": "intron_variant", "INTRON_CONSERVED": "intron_variant",
    "EXON": "non_coding_transcript_exon_variant", "EXON_DELETED": "exon_loss_variant",
    "NON_SYNONYMOUS_CODING": "missense_variant", "SYNONYMOUS_CODING": "synonymous_variant",
    "FRAME_SHIFT": "frameshift_variant", "CODON_CHANGE": "coding_sequence_variant",
    "CODON_INSERTION": "inframe_insertion",
    "CODON_CHANGE_PLUS_CODON_INSERTION": "disruptive_inframe_insertion",
    "CODON_DELETION": "inframe_deletion", "CODON_CHANGE_PLUS_CODON_DELETION": "disruptive_inframe_deletion",
    "STOP_GAINED": "stop_gained", "SYNONYMOUS_STOP": "stop_retained_variant", "STOP_LOST": "stop_lost",
    "START_LOST": "start_lost", "SYNONYMOUS_START": "start_retained_variant",
    "NON_SYNONYMOUS_START": "initiator_codon_variant", "RARE_AMINO_ACID": "rare_amino_acid_variant",
    "TRANSCRIPT": "non_coding_transcript_variant", "GENE": "intragenic_variant",
    "INTRAGENIC": "intragenic_variant",
    "REGULATION": "regulatory_region_variant", "MICRO_RNA": "mature_miRNA_variant",
    "CDS": "coding_sequence_variant", "CHROMOSOME_LARGE_DELETION": "feature_truncation",
}

# MAF Variant_Classification values counted as non-silent (protein-altering) for TMB and gene status:
# maftools' default ``vc_nonSyn`` list.
NONSILENT_CLASSES: frozenset[str] = frozenset({
    "Frame_Shift_Del", "Frame_Shift_Ins", "Splice_Site", "Translation_Start_Site", "Nonsense_Mutation",
    "Nonstop_Mutation", "In_Frame_Del", "In_Frame_Ins", "Missense_Mutation",
})

_SIMPLE_CLASS: dict[str, str] = {}
for _cls, _terms in {
    "Splice_Site": "splice_acceptor_variant splice_donor_variant transcript_ablation exon_loss_variant",
    "Nonsense_Mutation": "stop_gained",
    "Nonstop_Mutation": "stop_lost",
    "Translation_Start_Site": "initiator_codon_variant start_lost",
    "Missense_Mutation": "missense_variant coding_sequence_variant conservative_missense_variant"
                         " rare_amino_acid_variant",
    "Intron": "transcript_amplification intron_variant INTRAGENIC intragenic_variant",
    "Splice_Region": "splice_region_variant",
    "Silent": "incomplete_terminal_codon_variant synonymous_variant stop_retained_variant"
              " NMD_transcript_variant",
    "RNA": "mature_miRNA_variant exon_variant non_coding_exon_variant non_coding_transcript_exon_variant"
           " non_coding_transcript_variant nc_transcript_variant",
    "5'UTR": "5_prime_UTR_variant 5_prime_UTR_premature_start_codon_gain_variant",
    "3'UTR": "3_prime_UTR_variant",
    "IGR": "TF_binding_site_variant regulatory_region_variant regulatory_region intergenic_variant"
           " intergenic_region",
    "5'Flank": "upstream_gene_variant",
    "3'Flank": "downstream_gene_variant",
}.items():
    for _term in _terms.split():
        _SIMPLE_CLASS[_term] = _cls


def classify(effect: str, var_type: str, inframe: bool) -> str:
    """Map one Sequence Ontology consequence to a MAF ``Variant_Classification`` (vcf2maf's rule).

    Args:
        effect: the SO term (e.g. ``missense_variant``).
        var_type: ``SNP``, ``DNP``, ``TNP``, ``ONP``, ``INS`` or ``DEL`` (see :func:`maf_alleles`).
        inframe: whether an indel's length change is a multiple of 3.
    """
    if effect == "frameshift_variant" or (effect == "protein_altering_variant" and not inframe):
        if var_type == "DEL":
            return "Frame_Shift_Del"
        if var_type == "INS":
            return "Frame_Shift_Ins"
    if effect.endswith("inframe_insertion") or (effect == "protein_altering_variant" and inframe
                                                and var_type == "INS"):
        return "In_Frame_Ins"
    if effect.endswith("inframe_deletion") or (effect == "protein_altering_variant" and inframe
                                               and var_type == "DEL"):
        return "In_Frame_Del"
    return _SIMPLE_CLASS.get(effect, "Targeted_Region")


def maf_alleles(pos: int, ref: str, alt: str) -> tuple[int, str, str, str, bool]:
    """VCF allele -> MAF convention (vcf2maf): shared leading bases removed, ``-`` for an empty allele.

    Returns:
        ``(start, maf_ref, maf_alt, var_type, inframe)``: ``start`` is MAF ``Start_Position`` (1-based; for an
        insertion, the base before it), ``var_type`` one of SNP/DNP/TNP/ONP/INS/DEL.
    """
    if len(ref) == 1 and len(alt) == 1:
        return pos, ref, alt, "SNP", False
    while ref and alt and ref[0] == alt[0] and ref != alt:
        ref, alt, pos = ref[1:], alt[1:], pos + 1
    ref_len, alt_len = len(ref), len(alt)
    ref, alt = ref or "-", alt or "-"
    if ref_len == alt_len:
        return pos, ref, alt, ("ONP" if ref_len > 3 else ("SNP", "DNP", "TNP")[ref_len - 1]), False
    inframe = abs(ref_len - alt_len) % 3 == 0
    if ref_len < alt_len:
        return (pos - 1 if ref == "-" else pos), ref, alt, "INS", inframe
    return pos, ref, alt, "DEL", inframe


AA3TO1 = {"Ala": "A", "Arg": "R", "Asn": "N", "Asp": "D", "Asx": "B", "Cys": "C", "Glu": "E", "Gln": "Q",
           "Glx": "Z", "Gly": "G", "His": "H", "Ile": "I", "Leu": "L", "Lys": "K", "Met": "M", "Phe": "F",
           "Pro": "P", "Ser": "S", "Thr": "T", "Trp": "W", "Tyr": "Y", "Val": "V", "Xxx": "X", "Ter": "*",
           "Sec": "U", "Pyl": "O"}
_AA3_RE = re.compile("|".join(AA3TO1))
_SHORT_CACHE: dict[str, str] = {}


def hgvsp_short(hgvsp: str) -> str:
    """``ENSP0001.1:p.Leu858Arg`` -> ``p.L858R``.

    ``Ter`` becomes ``*``, ``%3D`` becomes ``=``, and a bare ``L858R`` (legacy SnpEff, some MAFs) gets ``p.``.
    """
    cached = _SHORT_CACHE.get(hgvsp)
    if cached is not None:
        return cached
    text = hgvsp.rsplit(":", 1)[-1]
    if "%" in text:
        text = unquote(text)
    if text.startswith("c.") and "(p." in text:  # "c.123A>G(p.Leu41Pro)"
        text = text[text.index("(p.") + 1:].rstrip(")")
    short = _AA3_RE.sub(lambda m: AA3TO1[m.group(0)], text)
    if short and not short.startswith("p."):
        short = "p." + short
    if len(_SHORT_CACHE) < 200_000:
        _SHORT_CACHE[hgvsp] = short
    return short


class Effect(NamedTuple):
    """One annotated effect of an ALT allele on one transcript (or intergenic)."""

    gene: str
    consequence: str  # most severe SO term of this effect
    hgvsp: str  # as annotated (e.g. ENSP...:p.Leu858Arg); see report_hgvsp for the short form
    transcript: str
    biotype: str
    canonical: bool
    length: int  # transcript (cDNA) length; amino-acid length for EFF; 0 if unknown
    hgvsc: str = ""
    protein_position: str = ""
    amino_acids: str = ""


def _most_severe(consequences: str) -> str:
    if not consequences:
        return "intergenic_variant"
    if "&" not in consequences and "," not in consequences:
        return consequences
    terms = consequences.replace(",", "&").split("&")
    return min(terms, key=lambda t: EFFECT_PRIORITY.get(t, UNKNOWN_PRIORITY))


def _length(position: str) -> int:
    """``"1480/5971"`` -> 5971; anything else -> 0."""
    _, sep, total = position.rpartition("/")
    return int(total) if sep and total.isdigit() else 0


def _field_names(description: str, source: str) -> list[str]:
    """Field names of an ANN/CSQ/EFF annotation from its INFO header Description."""
    if source == "CSQ":
        match = re.search(r"Format:\s*([^\s\"']+)", description)
        return match.group(1).split("|") if match else []
    if source == "ANN":
        match = re.search(r"'([^']*)'", description)
        if not match or "|" not in match.group(1):
            return list(SNPEFF_ANN_FIELDS)
        return [re.sub(r"\s+", "", f) for f in match.group(1).split("|")]
    match = re.search(r"\(([^)]*)\)", description)  # EFF: Effect ( Effect_Impact | ... [ | ERRORS ] )
    if not match:
        return list(SNPEFF_EFF_FIELDS)
    names = [re.sub(r"[\s\[\]]", "", f) for f in match.group(1).split("|")]
    return ["Effect"] + [n for n in names if n]


SNPEFF_ANN_FIELDS = ("Allele", "Annotation", "Annotation_Impact", "Gene_Name", "Gene_ID", "Feature_Type",
                     "Feature_ID", "Transcript_BioType", "Rank", "HGVS.c", "HGVS.p", "cDNA.pos/cDNA.length",
                     "CDS.pos/CDS.length", "AA.pos/AA.length", "Distance", "ERRORS/WARNINGS/INFO")
SNPEFF_EFF_FIELDS = ("Effect", "Effect_Impact", "Functional_Class", "Codon_Change", "Amino_Acid_Change",
                     "Amino_Acid_Length", "Gene_Name", "Transcript_BioType", "Gene_Coding", "Transcript_ID",
                     "Exon_Rank", "Genotype_Number", "ERRORS", "WARNINGS")


def _index(names: list[str], *candidates: str) -> int:
    lowered = [n.lower() for n in names]
    for candidate in candidates:
        if candidate.lower() in lowered:
            return lowered.index(candidate.lower())
    return -1


class Annotator:
    """Parses the annotation of one VCF (CSQ preferred over ANN over EFF, as vcf2maf) and picks one effect.

    Args:
        info_descriptions: INFO ID -> Description from the VCF header (only ``CSQ``/``ANN``/``EFF`` are used).
    """

    def __init__(self, info_descriptions: dict[str, str]) -> None:
        self.source = next((k for k in ("CSQ", "ANN", "EFF") if k in info_descriptions), None)
        names = _field_names(info_descriptions[self.source], self.source) if self.source else []
        self.fields = names
        if self.source == "CSQ":
            cols = {"allele": ("Allele",), "consequence": ("Consequence",), "gene": ("SYMBOL",),
                    "transcript": ("Feature",), "biotype": ("BIOTYPE",), "hgvsp": ("HGVSp",),
                    "hgvsc": ("HGVSc",), "length": ("cDNA_position",), "canonical": ("CANONICAL",),
                    "allele_num": ("ALLELE_NUM",), "protein_position": ("Protein_position",),
                    "amino_acids": ("Amino_acids",)}
        elif self.source == "ANN":
            cols = {"allele": ("Allele",), "consequence": ("Annotation",), "gene": ("Gene_Name",),
                    "transcript": ("Feature_ID",), "biotype": ("Transcript_BioType",), "hgvsp": ("HGVS.p",),
                    "hgvsc": ("HGVS.c",), "length": ("cDNA.pos/cDNA.length",),
                    "protein_position": ("AA.pos/AA.length",)}
        else:
            cols = {"consequence": ("Effect",), "gene": ("Gene_Name",),
                    "transcript": ("Transcript_ID", "Transcript"),
                    "biotype": ("Transcript_BioType", "Gene_BioType"), "hgvsp": ("Amino_Acid_Change",),
                    "length": ("Amino_Acid_Length",), "allele_num": ("Genotype_Number",)}
        self._idx = {key: _index(names, *cands) for key, cands in cols.items()}
        self._n_fields = len(names)
        # One C-level call pulls every field; a missing field reads the "" appended after the last one.
        order = ("allele", "allele_num", "gene", "consequence", "hgvsp", "transcript", "biotype", "canonical",
                 "length", "hgvsc", "protein_position", "amino_acids")
        self._get = itemgetter(*(self._idx.get(k, -1) if self._idx.get(k, -1) >= 0 else len(names)
                                 for k in order))

    def field_index(self, key: str) -> int:
        """Position of a field (``gene``, ``consequence``, ``allele``, ...) in an entry; -1 if absent."""
        return self._idx.get(key, -1)

    def effects(self, annotation: str, *, alt: str, alt_index: int, vep_allele: str) -> list[Effect]:
        """All effects of one INFO annotation value on ALT allele ``alt`` (1-based ``alt_index``).

        ``vep_allele`` is the allele as VEP writes it in ``Allele`` (see :func:`vep_alleles`).
        """
        return [Effect._make(e) for e in self._raw(annotation, alt, alt_index, vep_allele)]

    def _raw(self, annotation: str, alt: str, alt_index: int, vep_allele: str) -> list[tuple]:
        """Effects as plain tuples in :class:`Effect` field order (cheaper to build than Effect)."""
        if self.source == "EFF":
            return self._eff_effects(annotation, alt_index)
        get, n_fields = self._get, self._n_fields
        want = vep_allele if self.source == "CSQ" else alt
        number = str(alt_index)
        out = []
        for entry in annotation.split(","):
            parts = entry.split("|")
            if len(parts) < n_fields:
                parts += [""] * (n_fields - len(parts))
            parts.append("")
            allele, num, gene, cons, hgvsp, tx, bio, can, length, hgvsc, pp, aa = get(parts)
            if num:
                if num != number:
                    continue
            elif allele and allele != want and upper_bases(allele) != want:  # an allele copied in lower case
                continue
            out.append((gene, _most_severe(cons), hgvsp, tx, bio, can == "YES", _length(length), hgvsc, pp, aa))
        return out

    def _eff_effects(self, annotation: str, alt_index: int) -> list[tuple]:
        idx = self._idx
        out = []
        for entry in annotation.split(","):
            name, _, rest = entry.partition("(")
            parts = [name] + rest.rstrip(")").split("|")
            if len(parts) < self._n_fields:
                parts += [""] * (self._n_fields - len(parts))
            i_num = idx["allele_num"]
            if i_num >= 0 and parts[i_num].isdigit() and int(parts[i_num]) != alt_index:
                continue
            so = _most_severe(LEGACY_EFF_TO_SO.get(name, name))
            change = parts[idx["hgvsp"]] if idx["hgvsp"] >= 0 else ""
            protein = next((p for p in change.split("/") if p.startswith("p.")), change.split("/")[0])
            length = parts[idx["length"]] if idx["length"] >= 0 else ""
            out.append((parts[idx["gene"]] if idx["gene"] >= 0 else "", so, protein,
                        parts[idx["transcript"]] if idx["transcript"] >= 0 else "",
                        parts[idx["biotype"]] if idx["biotype"] >= 0 else "",
                        False, int(length) if length.isdigit() else 0, "", "", ""))
        return out

    def pick(self, annotation: str | None, *, alt: str, alt_index: int, vep_allele: str) -> Effect | None:
        """The one reported effect (module docstring rule); ``None`` without an annotation for the allele."""
        if not annotation:
            return None
        chosen = pick_effect(self._raw(annotation, alt, alt_index, vep_allele))
        return None if chosen is None else Effect._make(chosen)


def _rank(effect: Effect) -> tuple[int, int, int]:
    return (BIOTYPE_PRIORITY.get(effect[4], UNKNOWN_BIOTYPE_PRIORITY),
            EFFECT_PRIORITY.get(effect[1], UNKNOWN_PRIORITY), -effect[6])


def pick_effect(effects: Sequence[tuple]) -> tuple | None:
    """Apply vcf2maf's one-effect rule (module docstring, steps 3-4) to the effects of one allele.

    Works on :class:`Effect` objects or plain tuples in the same field order; returns the chosen one.
    """
    if not effects:
        return None
    if len(effects) == 1:
        return effects[0]
    effects = sorted(effects, key=_rank)  # stable: ties keep the order listed
    gene = next((e[0] for e in effects if e[0]), None)
    if gene is not None:
        for e in effects:
            if e[5] and e[0] == gene:
                return e
        for e in effects:
            if e[5] and e[0]:
                return e
    return effects[0]


def report_hgvsp(effect: Effect, classification: str) -> str:
    """HGVSp_Short as vcf2maf reports it: ``p.X123_splice`` for splice sites, ``p.S60=`` when silent."""
    if effect.consequence in ("splice_acceptor_variant", "splice_donor_variant"):
        match = re.match(r"c\.(-?\d+)", effect.hgvsc.rsplit(":", 1)[-1])
        if match:
            c_pos = max(int(match.group(1)), 1)
            return f"p.X{round((c_pos + c_pos % 3) / 3)}_splice"
    hgvsp = hgvsp_short(effect.hgvsp) if effect.hgvsp else ""
    if hgvsp == "p.=" and effect.protein_position and effect.amino_acids:
        match = re.match(r"(\d+)", effect.protein_position)
        if match:
            return f"p.{effect.amino_acids}{match.group(1)}="
    if classification == "Silent" and re.fullmatch(r"p\.[A-Z*]\d+", hgvsp):  # legacy EFF "S60"
        return hgvsp + "="
    return hgvsp


def vep_alleles(ref: str, alts: list[str]) -> list[str]:
    """How VEP writes each ALT in CSQ ``Allele``: without the first base when REF and all ALTs share it."""
    first = ref[:1]
    if all(len(a) > 0 and a[0] == first and not a.startswith("<") for a in alts) and (
            len(ref) > 1 or any(len(a) > 1 for a in alts)):
        return [a[1:] or "-" for a in alts]
    return list(alts)
