"""cBioPortal studies (the datahub's folder format) -> the lake: outcomes, clinical, mutations, copy number, expression.

A study folder holds tab-separated data files, each described by a ``meta_*.txt`` file of ``key: value`` lines
(``genetic_alteration_type``, ``datatype``, ``data_filename``); a folder without meta files is read by the usual
file names (``data_clinical_patient.txt``, ``data_clinical_sample.txt``, one ``data_mutations*.txt``: not the
uncalled ones, ``data_mutations.txt`` else ``data_mutations_extended.txt`` before the others, which are
named in a note; ``data_cna.txt`` or ``data_CNA.txt``, ``data_mrna*.txt`` and the older ``data_RNA_Seq*`` /
``data_expression*``, ``data_timeline*.txt``; :mod:`~ingest.cbioportal.files` chooses among expression
profiles). Clinical files start with ``#`` lines (display names, descriptions, data types, priorities) before
the header of attribute ids.
Where meta files name several clinical files of one level (the datahub's ``data_clinical_supp_*.txt``), the
main one (``data_clinical_patient.txt`` / ``data_clinical_sample.txt``) is loaded and the others are named in a
note. :func:`ingest_cbioportal` loads, through the lake's own doors (:mod:`ingest.tables`,
:mod:`ingest.variants`):

- **labels**: ``time`` (days: ``<ENDPOINT>_MONTHS`` x 365.25 / 12, as cBioPortal derives months from days) and
  ``event`` (``<ENDPOINT>_STATUS``: ``1:DECEASED`` / ``0:LIVING`` and the like, or the older words without the
  ``0:``/``1:`` prefix) for the chosen endpoint (OS, PFS, DFS, DSS, ...), recorded in lower case as the labels'
  ``endpoint`` (a run trains on the labels of its ``data.targets.survival_endpoint``), optionally ``diagnosis`` from a
  patient or sample attribute, and the ``index_date`` :data:`INDEX_DATE` for every patient. cBioPortal data
  carry no calendar dates: survival times count from each patient's own day 0 (usually the diagnosis), which
  tumorboard places on that one date; optionally ``response`` (a patient or sample attribute such as
  ``BEST_OVERALL_RESPONSE``, read by :func:`~ingest.cbioportal.clinical.response_values`) and ``treatment``
  (an attribute such as ``DRUG_TYPE``, one name for every patient, or a column of the study's timeline
  ``TREATMENT`` events: ``AGENT``, ``SUBTYPE``, ``TREATMENT_TYPE`` at each patient's first treatment from day 0,
  :func:`~ingest.cbioportal.timeline.first_treatments`), the response task's target and input;
- **clinical features** (modality ``clinical``): the other patient attributes, except outcomes (every
  ``X_STATUS``/``X_MONTHS`` pair and the follow-up attributes of :mod:`~ingest.cbioportal.clinical`: they are
  known only after day 0 and would leak the target), treatment responses (the ``RESPONSE_ATTRIBUTES`` of
  :mod:`~ingest.cbioportal.clinical`) and the response and treatment label attributes, identifiers (``*_ID``,
  and text attributes with a different value for every patient), the diagnosis attribute and its other
  codings when one is the diagnosis label, and the attributes the caller excludes; modality
  ``clinical_sample``: the attributes of each patient's first sample (TMB, MSI score, sample type, ...) under
  the same rules, where "first" means a primary tumour before other samples, recurrences and metastases after,
  normal samples last (by ``SAMPLE_TYPE``), else the sample file's order;
- **mutations** (MAF) with ``SAMPLE_ID -> PATIENT_ID`` from the sample file, as ``ingest variants`` does;
- **copy number** (modality ``cna``; discrete GISTIC calls -2..2 of the gene panel's genes, from the genes x
  samples matrix or its long form, ``DISCRETE_LONG``) from each patient's first sample (as for
  ``clinical_sample``) that has calls;
- **expression** (modality ``expression``; ``MRNA_EXPRESSION`` levels, else z-scores): the panel's genes and the
  most variable other genes over all samples (an unsupervised choice: no label is read), linear levels (told
  by their values) as log2(1 + level), log-scale values as given, from each patient's first sample with values.

A matrix names its genes by ``Hugo_Symbol``, ``Entrez_Gene_Id`` or both; a gene given by its Entrez id alone is
named by the study's own files that carry both columns (:mod:`~ingest.cbioportal.genes`), else it is
``ENTREZ_<id>`` in the expression and no panel gene in the copy number, counted in a note.

Rejects name the study's own file and line (the line number counts the ``#`` lines).

One job a module: :mod:`~ingest.cbioportal.tsv` reads the tab-separated files, :mod:`~ingest.cbioportal.files`
finds them, :mod:`~ingest.cbioportal.clinical` turns the clinical files into labels and features,
:mod:`~ingest.cbioportal.matrices` the copy-number and expression matrices into features (with
:mod:`~ingest.cbioportal.genes` naming genes given by Entrez id),
:mod:`~ingest.cbioportal.timeline` the timeline's treatment events into treatment labels, and
:mod:`~ingest.cbioportal.pipeline` reads them all before writing anything.
"""

from ingest.cbioportal.clinical import DAYS_PER_MONTH, INDEX_DATE, is_day_zero
from ingest.cbioportal.files import StudyFiles, find_study_files
from ingest.cbioportal.pipeline import ingest_cbioportal
from ingest.cbioportal.tsv import StudyError, StudyTable, read_study_table

__all__ = ["DAYS_PER_MONTH", "INDEX_DATE", "StudyError", "StudyFiles", "StudyTable", "find_study_files",
           "ingest_cbioportal", "is_day_zero", "read_study_table"]
