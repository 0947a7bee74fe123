"""Synthetic multimodal lung-nodule cohort (``tumorboard synth``): EHR, genomics and CT with known truth.

    from ingest.synth import generate_cohort, SynthConfig
    summary = generate_cohort(Path("cohort"), SynthConfig(n_patients=200, seed=0))

The same seed gives byte-identical files. Patients are drawn from a latent model (``cohort.py``),
given dated events (``timeline.py``) and written per modality. Each modality carries survival signal
that the others do not, and the truth is stored apart from the inputs.

Output layout of OUT
--------------------
``fhir/``
    FHIR R4 Bulk Data export, one resource per line: ``Patient.ndjson`` (MRN identifier, system
    ``http://hospital.example.org/mrn``, type MR; gender, birthDate, deceasedDateTime when dead),
    ``Condition.ndjson`` (the nodule/cancer, SNOMED: benign 427359005, adenocarcinoma 35917007,
    squamous 254634000, onset = index date; comorbidities COPD, type 2 diabetes, hypertension, heart
    failure, CKD), ``Observation.ndjson`` (LOINC labs with UCUM units: LDH 2532-0, CEA 2039-6, albumin
    1751-7, hemoglobin 718-7, CRP 1988-5, creatinine 2160-0, WBC 6690-2, platelets 777-3; 3-6 lab visits
    in the year before diagnosis and one every 12 weeks (cancer) or 26 weeks (benign) of follow-up;
    smoking status 72166-2, ECOG 89247-1 (valueInteger) and AJCC stage group 21908-9 (system
    ``http://cancerstaging.org``, codes 1A..4B) at diagnosis; mCODE disease status 97509-4 at each
    follow-up (SNOMED 268910001 improved, 359746009 stable, 271299001 worsened); best overall response
    21976-6 at the first assessment, NCIt CR C4870, PR C18213, SD C18058, PD C35571 with ``text`` = the
    RECIST category), ``MedicationRequest.ndjson`` (RxNorm: carboplatin 40048 + pemetrexed 68446 or
    cisplatin 2555 + gemcitabine 12574, osimertinib 1721560, pembrolizumab 1547545),
    ``Procedure.ndjson`` (chest CT 169069000 at diagnosis and follow-up, lung biopsy 78603008),
    ``Encounter.ndjson`` (one per visit). References read ``Patient/<id>``.
``fhir_bundles/<patient id>.json`` (only with ``bundles``)
    One transaction Bundle per patient, ``fullUrl`` and references ``urn:uuid:<id>``, POST entries.
``genomics/cohort.maf``
    TCGA-style MAF (``#version 2.4`` line, GRCh38, ``chr``-prefixed) of sequenced patients: drivers
    (EGFR L858R / exon19del, KRAS G12C, TP53, STK11, KEAP1, ALK, BRAF V600E, PIK3CA E545K) plus
    passengers; every sequenced sample has >= 1 variant. Panel territory 1.1 Mb (``variants.py``).
``genomics/sample_map.csv``
    ``sample_id,patient_id`` with patient_id = the MRN. Sample ids are ``SMP-<uuid>`` (matched normals
    ``NRM-<uuid>``), drawn from the seed as patient ids are: cohorts of different seeds share a lake.
``genomics/gene_panel.yaml``
    The assay: the default panel's genes over the 1.1 Mb territory; ingest with ``--gene-panel`` so
    ``tmb_per_mb`` is the non-silent count over that territory (about 0.8 x the truth's ``tmb``, which
    counts silent changes too).
``genomics/vcf/<sample_id>.vcf``
    For ~``vcf_fraction`` of the sequenced: VCF 4.2, contigs, SnpEff ``ANN``, ``SOMATIC`` flag,
    FORMAT ``GT:AD:DP:AF`` for samples ``TUMOR`` and ``NORMAL``.
``dicom/<MRN>/<StudyInstanceUID>/<SeriesInstanceUID>/<n>.dcm``
    One chest CT per imaged patient a few days before diagnosis (default 12 slices of 64x64, 4 mm
    pixels, 5 mm slices; int16 stored, RescaleIntercept -1024 / slope 1 -> HU; explicit VR little
    endian). File names are shuffled and InstanceNumber runs in either direction: sort by position.
``png/<MRN>.png`` + ``png/manifest.csv``
    Lung-window (-600/1500 HU) uint8 slice through the nodule centre; manifest columns ``path``
    (relative to the csv), ``patient_id`` (MRN), ``study_date`` (YYYY-MM-DD), ``modality``.
``truth.parquet``
    One row per patient; keep it away from models. ``patient_id`` (FHIR id), ``mrn``, ``sample_id``,
    ``diagnosis`` (benign | adenocarcinoma | squamous), ``stage`` (I-IV, null if benign),
    ``index_date`` (diagnosis, timestamp[us, UTC]), ``log_hazard`` = ``log_hazard_image`` +
    ``log_hazard_genomics`` + ``log_hazard_ehr`` + ``log_hazard_treatment``; ``os_time``/``pfs_time``
    (days from index, float) and ``os_event``/``pfs_event`` (bool); ``treatment`` (chemo | egfr_tki |
    immunotherapy | none), ``response`` (observed objective response, null if benign), ``recist``,
    ``response_prob_<treatment>`` (potential outcomes), ``has_image``, ``has_genomics``, ``has_vcf``;
    latents and covariates (``aggressiveness``, ``inflammation``, ``nodule_size_mm``, ``tmb``, driver
    flags, ``ecog``, comorbidity flags, ``age``, ``smoking``, ``pack_years``, ``progression_day``).
``synth_config.json``
    The resolved configuration.

Outcome model
-------------
Latents: age, sex, smoking (pack-years), diagnosis (benign ~15%; squamous more likely with
pack-years), stage I-IV, *aggressiveness* ~ N(0, 1) (image-only), *inflammation* ~ N(0, 1)
(EHR-only, seen through LDH up, albumin/hemoglobin down, CRP/WBC/platelets up), comorbidities, ECOG
(from age, comorbidity, stage, inflammation), nodule size (median 18/30/42/45 mm by stage, 11 mm
benign), drivers (EGFR mostly in never-smoking adenocarcinoma, KRAS G12C in smokers, STK11 with KRAS,
...), and TMB (rises with pack-years and squamous, lower with EGFR/ALK).

Log-hazard parts (cancer; benign patients only have the EHR part with a -1.8 offset):

- image = 0.9 aggressiveness + 0.6 log(size / 30 mm); aggressiveness shows only as margin
  lobulation, spicules and texture heterogeneity in the CT;
- genomics = 0.8 STK11 + 0.7 KEAP1 + 0.35 TP53 + 0.25 KRAS G12C - 0.4 EGFR;
- EHR = stage (0 / 0.35 / 0.7 / 1.1) + 0.03 (age - 67) + 0.2 ECOG + 0.12 n_comorbidities
  + 0.4 inflammation;
- treatment = 0.7 - 2.2 p_response(assigned treatment).

Treatment is confounded: EGFR-mutant patients get osimertinib 85% of the time, TMB >= 10 mut/Mb
patients pembrolizumab 68%, the rest mostly chemotherapy. The response logit under each treatment is
its biomarker match (EGFR for osimertinib; log TMB, minus STK11/KEAP1/EGFR, for pembrolizumab;
minus STK11/KEAP1 for chemotherapy) minus 0.6 aggressiveness; ``response`` ~ Bernoulli of the
assigned treatment's probability. Overall survival is Weibull (shape 1.1, median 1300 days at log
hazard 0) with the log-hazard; censoring at the data cut-off (2024-12-31, entry 2015-2022) or by
dropout (8%/year): about 30-35% censored. Progression is Weibull with the log-hazard plus 0.9 for
non-responders (responders progress only after the first assessment); PFS = min(progression, death).
Deaths appear as Patient.deceasedDateTime, progression as "worsened" disease status; labs after
diagnosis move with response and progression (a leakage test can rely on post-index labs).
``benchmarks/synth_oracle.py`` reports the oracle and per-part C-indices.
"""

from ingest.synth.config import SynthConfig
from ingest.synth.generate import generate_cohort

__all__ = ["SynthConfig", "generate_cohort"]
