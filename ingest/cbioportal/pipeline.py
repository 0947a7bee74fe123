"""``ingest_cbioportal``: a study's files read and checked, then written through the lake's own doors."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from ingest.cbioportal.clinical import (
    disagreeing_lines,
    feature_rows,
    label_rows,
    one_spelling,
    patient_values,
    response_values,
    sample_map,
    sample_rank,
)
from ingest.cbioportal.files import find_study_files
from ingest.cbioportal.genes import StudyGenes
from ingest.cbioportal.matrices import cna_rows, expression_rows, linear_levels
from ingest.cbioportal.timeline import first_treatments
from ingest.cbioportal.tsv import StudyError, StudyTable, read_study_table
from ingest.lake import Lake, one_writer
from ingest.tables import prepare_features, prepare_labels, write_prepared
from ingest.variants.features import GenePanel, load_gene_panel
from ingest.variants.pipeline import ingest_variants


@one_writer
def ingest_cbioportal(lake: Lake, folder: Path, *, endpoint: str = "OS", diagnosis: str | None = None,
                      exclude: Iterable[str] = (), gene_panel: GenePanel | str | Path | None = None,
                      expression_genes: int = 500, response: str | None = None,
                      responders: Iterable[str] | None = None, treatment: str | None = None,
                      treatment_name: str | None = None, treatment_timeline: str | None = None,
                      progress: Callable[[int, int], None] | None = None
                      ) -> dict[str, dict]:
    """Load the cBioPortal study in ``folder`` (see :mod:`ingest.cbioportal`): labels for ``endpoint``, clinical
    features without outcomes, identifiers and ``exclude``, mutations, copy number, and the expression of the
    panel's genes and of the ``expression_genes`` most variable others (0: no expression). ``progress`` is
    called with (steps done, steps in all) as the files are read and the parts written.

    Treatment response (the ``response`` and ``treatment`` labels): ``response`` names the patient or sample
    attribute holding it (e.g. ``BEST_OVERALL_RESPONSE``, ``DURABLE_CLINICAL_BENEFIT``), read as
    :func:`~ingest.cbioportal.clinical.response_values` reads it (``responders``: the values that mean a
    response); ``treatment`` the attribute naming each patient's treatment (e.g. ``DRUG_TYPE``), or
    ``treatment_name`` the one treatment of every patient of a single-treatment study, or ``treatment_timeline``
    the column (``AGENT``, ``SUBTYPE``, ``TREATMENT_TYPE``) of the study's timeline ``TREATMENT`` events whose
    value at each patient's first treatment from day 0 is its treatment
    (:func:`~ingest.cbioportal.timeline.first_treatments`: treatments before day 0 are prior therapy; several
    started that day are one combination, ``Carboplatin+Pemetrexed``). Both attributes are left out of the
    clinical features.

    Returns:
        Counts per part (``labels``, ``response``, ``treatment`` (with ``treatment_timeline``: patients treated
        from day 0, only before it, ...), ``clinical``, ``clinical_sample``, ``mutations``, ``cna``,
        ``expression``; a part the study lacks is absent; a matrix that cannot be read (no gene column, a broken
        header, not UTF-8) is one reject of its part, named with why in a note, and the rest of the study loads;
        so does the rest where a matrix gives no patient a value of a gene it loads: ``patients`` 0, its line
        rejects, a note),
        ``excluded``: per clinical modality, the attributes left out, each with why, and ``notes`` when there is
        something to say (a targeted-panel study's TMB over the default panel, response values read as neither,
        the timeline files read for treatments, the genes a matrix gives by Entrez id alone that the study's files
        do not name, a matrix not loaded).

    Raises:
        StudyError: no patient file, it lacks the endpoint's columns, a label attribute is in neither clinical
            file, more than one treatment option, or no timeline file has TREATMENT events with the
            ``treatment_timeline`` column (the lake is unchanged).
        VariantInputError: no mutation could be read from the study's mutation file (the lake is unchanged).
        TableFileError: the labels or a feature table have no row to load (the lake is unchanged).
    """
    # the files' absolute paths are their rows' source, which a second ingest replaces: the same folder given
    # as a relative path (or from another working directory) must name the same rows
    files = find_study_files(Path(folder).resolve())
    if files.patient is None:
        raise StudyError(f"{folder}: no patient clinical file (data_clinical_patient.txt, or a meta file with"
                         " datatype: PATIENT_ATTRIBUTES); cBioPortal studies need one")
    panel = gene_panel if isinstance(gene_panel, GenePanel) else load_gene_panel(gene_panel)
    patients = read_study_table(files.patient, required=["PATIENT_ID"])
    if patients.frame.empty:
        raise StudyError(f"{files.patient}: no patient line to load (the lake is unchanged)")
    samples = read_study_table(files.sample, required=["PATIENT_ID", "SAMPLE_ID"]) if files.sample else None
    if samples is not None and "SAMPLE_TYPE" in samples.frame:  # the primary tumour represents its patient
        samples.frame = samples.frame.iloc[np.argsort([sample_rank(t) for t in samples.frame["SAMPLE_TYPE"]],
                                                      kind="stable")]
    status, months = f"{endpoint.upper()}_STATUS", f"{endpoint.upper()}_MONTHS"
    if status not in patients.frame or months not in patients.frame:
        found = sorted(c[:-len("_STATUS")] for c in patients.frame if c.endswith("_STATUS")
                       and f"{c[:-len('_STATUS')]}_MONTHS" in patients.frame)
        raise StudyError(f"{files.patient}: no {status} and {months} columns for endpoint {endpoint}; this study has"
                         f" {', '.join(found) or 'no survival endpoint'} (pass --endpoint)")
    # Every file is read and checked before the first write, so a study that cannot be read changes nothing; a
    # copy-number or expression matrix that cannot be read is left out (a reject and a note), the rest loads.
    with_expression = files.expression is not None and expression_genes > 0
    matrices = [m for m in (files.cna, files.expression if with_expression else None) if m is not None]
    total, done = 2 + 2 * len(matrices) + (samples is not None) + bool(files.mutations), 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    given = [option for option, value in (("--treatment", treatment), ("--treatment-name", treatment_name),
                                          ("--treatment-timeline", treatment_timeline)) if value is not None]
    if len(given) > 1:
        raise StudyError(f"{' and '.join(given)}: pass one of --treatment (an attribute naming each patient's"
                         " treatment), --treatment-name (the one treatment of every patient) or --treatment-timeline"
                         " (a column of the study's timeline treatment events, e.g. AGENT), not several")
    if responders is not None and response is None:
        raise StudyError("--responders names values of the --response attribute; pass --response with the"
                         " attribute holding each patient's response (e.g. BEST_OVERALL_RESPONSE)")
    diagnosed = patient_values(patients, samples, diagnosis, "--diagnosis")
    known = set(patients.frame["PATIENT_ID"].dropna())  # the patients labels are written for
    treated = patient_values(patients, samples, treatment, "--treatment")
    if treated is not None:
        treated = one_spelling(treated)
    if treatment_name is not None:
        treated = dict.fromkeys(known, treatment_name)
    timeline = first_treatments(files.timelines, treatment_timeline) if treatment_timeline is not None else None
    if timeline is not None:
        treated = timeline.treatments
    responses, unread, disagree = None, {}, {}
    if response is not None:
        disagree = disagreeing_lines(patients, samples, response)
        stated = {pid: value for pid, value in patient_values(patients, samples, response, "--response").items()
                  if pid in known}  # a sample file's patient missing from the patient file gets no labels
        responses, unread = response_values(stated, response, responders)
    labels = label_rows(patients, status, months, diagnosed, treated, responses)
    if timeline is not None:
        labels.rejects.extend(timeline.rejects)  # written (and counted) with the labels' own
    label_attributes = {**({response: "the response label"} if response else {}),
                        **({treatment: "the treatment label (given after day 0)"} if treatment else {})}
    clinical, excluded = feature_rows(patients, set(exclude), diagnosis, label_attributes)
    per_sample = feature_rows(samples, set(exclude), diagnosis, label_attributes) if samples is not None else None
    step()
    cna, expression = None, None
    names = StudyGenes([*files.mutations, *matrices])  # read only for a matrix that names genes by Entrez id alone
    unreadable: dict[str, tuple[Path, StudyError]] = {}  # part -> its matrix that cannot be read, and why: the
    # rest of the study still loads
    if files.cna is not None:
        try:
            cna = cna_rows(files.cna, panel.genes, samples, names)
        except StudyError as error:
            unreadable["cna"] = files.cna, error
        step()
    if with_expression:
        try:
            linear = files.expression_kind == "CONTINUOUS" and linear_levels(files.expression)
            expression = expression_rows(files.expression, linear=linear, panel=panel.genes, top=expression_genes,
                                         samples=samples, names=names)
        except StudyError as error:
            unreadable["expression"] = files.expression, error
        step()
    # Every table is prepared (read and checked) before the first write, so a study whose labels or features
    # cannot be loaded changes nothing.
    prepared = {"labels": prepare_labels(lake, files.patient, table=labels, endpoint=endpoint)}
    if len(clinical.frame.columns) > 1:
        prepared["clinical"] = prepare_features(lake, files.patient, modality="clinical", table=clinical,
                                                replace="source", categorical=_declared_text(patients))
    samples_not_used = 0
    if per_sample is not None:
        first, excluded_sample = per_sample
        first.rejects.extend(samples.rejects)  # the sample file's lines with a wrong field count
        if len(first.frame.columns) > 1:
            prepared["clinical_sample"] = prepare_features(lake, files.sample, modality="clinical_sample",
                                                           table=first, replace="source",
                                                           categorical=_declared_text(samples))
            samples_not_used = int(samples.frame["SAMPLE_ID"].notna().sum()) - len(first.frame)
    empty: dict[str, tuple[Path, list[dict]]] = {}  # part -> its matrix that gives no patient a value of a gene
    # it loads (no panel gene, none named by the study's files), and the matrix's rejects: the rest still loads
    for part, rows, path in (("cna", cna, files.cna), ("expression", expression, files.expression)):
        if rows is not None and rows.frame.empty:
            empty[part] = path, rows.rejects
        elif rows is not None:
            prepared[part] = prepare_features(lake, path, modality=part, table=rows, replace="source")
    # The mutation files are written first, as ingest_variants writes nothing when it cannot read them (a MAF
    # without its required columns), so such a study changes nothing either.
    counts: dict[str, dict] = {}
    if files.mutations:
        mapping = sample_map(samples) if samples is not None else None
        counts["mutations"] = ingest_variants(lake, files.mutations, sample_map=mapping, gene_panel=panel)
        step()
    counts.update({part: write_prepared(lake, prepared[part]) for part in ("labels", "clinical") if part in prepared})
    if responses is not None:
        counts["response"] = {"responded": sum(v == "1" for v in responses.values()),
                              "did not respond": sum(v == "0" for v in responses.values()),
                              "value not read": sum(unread.values())}
    if timeline is not None:
        counts["treatment"] = {
            "from the timeline": len(known & timeline.treatments.keys()),
            "only treated before day 0": len(known & timeline.prior_only),
            f"first treatment without {treatment_timeline}": len(known & timeline.no_value),
            "no treatment event": len(known - timeline.treatments.keys() - timeline.prior_only - timeline.no_value),
            "lines rejected": len(timeline.rejects)}
    counts["excluded"] = {"clinical": excluded}
    step()
    if per_sample is not None:
        counts["excluded"]["clinical_sample"] = excluded_sample
        if "clinical_sample" in prepared:
            counts["clinical_sample"] = {**write_prepared(lake, prepared["clinical_sample"]),
                                         "samples_not_used": samples_not_used}
        elif samples.rejects:  # no sample attribute to load, but its bad lines are still said
            lake.add_rejects(samples.rejects, modality="features")
            counts["clinical_sample"] = {"rejected": len(samples.rejects)}
        step()
    for part in ("cna", "expression"):
        if part in prepared:
            counts[part] = write_prepared(lake, prepared[part])
            step()
        elif part in unreadable:  # the file is a reject, so `lake status` and the exit status tell it
            path, error = unreadable[part]
            counts[part] = {"rejected": lake.add_rejects([{"source": str(path), "reason": f"file not loaded: {error}"}],
                                                         modality="features")}
            step()
        elif part in empty:  # its line rejects are still said
            counts[part] = {"patients": 0, "rejected": lake.add_rejects(empty[part][1], modality="features")}
            step()
    notes = [f"{', '.join(p.name for p in files.supplementary)}: supplementary clinical file(s) of the study,"
             " not loaded (only the main patient and sample files are)"] if files.supplementary else []
    read_timelines = set(timeline.files) if timeline is not None else set()
    unread_files = {path: kind for path, kind in files.unread.items() if path not in read_timelines}
    if unread_files:
        notes.append("not loaded (tumorboard reads clinical, mutation, discrete copy-number and one expression"
                     " file, and with --treatment-timeline the timeline files of treatment events): "
                     + ", ".join(f"{p.name} ({kind})" for p, kind in sorted(unread_files.items())))
    if timeline is not None:
        notes.append(f"--treatment-timeline {treatment_timeline}: each patient's first treatment from day 0 read"
                     f" from {', '.join(p.name for p in timeline.files)}")
    if files.other_mutations:
        notes.append(f"{', '.join(p.name for p in files.other_mutations)}: the same mutation calls annotated again,"
                     f" not loaded ({files.mutations[0].name} was)")
    if files.panel_matrix is not None and files.mutations and gene_panel is None:
        notes.append(f"{files.panel_matrix.name}: this study's samples were sequenced on targeted gene panels,"
                     f" but TMB was computed over the default panel's {panel.panel_size_mb:g} Mb; pass --gene-panel"
                     " with the panel's genes and panel_size_mb (the clinical_sample modality has cBioPortal's own"
                     " TMB_NONSYNONYMOUS where the study gives it)")
    if responses is not None and treated is None:
        notes.append(f"{response}: the responses were loaded without a treatment, and the response task predicts"
                     " the response to a treatment: add --treatment ATTRIBUTE (or --treatment-name NAME for a"
                     " single-treatment study, --treatment-timeline AGENT for one whose treatments are its"
                     " timeline's events" + (f": {', '.join(p.name for p in files.timelines)}" if files.timelines
                                             else "") + "), else training leaves these responses out")
    if disagree:
        shown = "; ".join(", ".join(map(str, lines)) for lines in list(disagree.values())[:5])
        notes.append(f"{response}: {len(disagree)} patient(s) whose samples disagree have no response ("
                     f"{files.sample.name} lines {shown}{'; ...' if len(disagree) > 5 else ''}); a response is the"
                     " patient's: correct the sample file, or move the attribute to the patient file")
    if unread:
        notes.append(f"{response}: values read as neither a response nor its absence, so those patients' response"
                     " is unknown: " + ", ".join(f"{value[:40]!r} ({n} patient(s))" for value, n in sorted(
                         unread.items(), key=lambda kv: -kv[1])[:10])
                     + "; pass --responders with the values that mean a response (the others then do not)")
    notes.extend(f"not loaded, the rest of the study was: {error}" for _, error in unreadable.values())
    notes.extend(f"{path.name}: nothing loaded, the rest of the study was: no patient has a value of a gene it"
                 " loads (the gene panel's genes" + (", and the --expression-genes most variable others" if part ==
                                                     "expression" else "") + "; a gene given by Entrez_Gene_Id alone"
                 " only where the study's files name it)" for part, (path, _) in empty.items())
    notes.extend(names.notes())
    if notes:
        counts["notes"] = notes
    return counts


def _declared_text(table: StudyTable) -> set[str]:
    """The attributes a clinical file declares STRING or BOOLEAN: categories, even when their values are numbers
    (cluster ids, coded grades), as cBioPortal itself reads them."""
    return {column for column, datatype in table.datatypes.items() if datatype != "NUMBER"}
