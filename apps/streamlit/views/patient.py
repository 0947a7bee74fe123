"""Patient: one patient's risk, treatment-response estimates, the evidence behind them, and their record."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from apps.streamlit import charts, figures, widgets
from apps.streamlit import services as sv

CAUTION = ("These are model estimates learned from observational data, in which treatments were chosen by "
           "clinicians rather than randomised. They are not a treatment recommendation and do not account "
           "for contraindications, patient preference or guideline criteria; discuss them at the tumour "
           "board.")
HORIZONS_YEARS = (1, 2, 5)


def _trained_on(split: str | None) -> str:
    """The sentence saying the model learned from this patient's outcome (a training patient), else ""."""
    return " The model was trained on this outcome." if split == "train" else ""


def treatment_label(run_dir: str | None, name: str) -> str:
    """What the page calls the treatment ``name`` (:func:`services.treatment_labels`)."""
    return sv.treatment_labels(run_dir, [name])[name]


def risk_tab(prediction: dict | None, lake: Path, run_dir: str | None, runs: Path | None, key: str,
             split: str | None) -> None:
    """Predicted survival against the cohort's Kaplan-Meier curve and the patient's observed outcome, and
    diagnosis probabilities."""
    survival = (prediction or {}).get("survival")
    km = widgets.or_note("Cohort curve", sv.cohort_km, lake, run_dir)
    observed = widgets.or_note("Observed outcome", sv.observed_outcome, lake, run_dir, key)
    endpoint = (survival or {}).get("endpoint") or sv.outcome_endpoint(lake, run_dir)
    left, right = st.columns([3, 1])
    with left:
        if survival or km is not None:
            st.plotly_chart(figures.survival_figure(survival, km, endpoint=endpoint, observed=observed),
                            key="survival_chart")
        if km is not None:
            st.caption(f"Grey: Kaplan-Meier estimate of the lake's cohort ({int(km['n'].iloc[0])} patients) "
                       "with its 95% interval.")
        if observed:
            after = f"{sv.duration_words(observed['time'])} after diagnosis"
            what = (f"{charts.event_word(endpoint)} {after}" if observed["event"] else
                    f"{charts.censored_phrase(endpoint)}, {after} (censored)")
            drawn = "Dotted line: this" if survival or km is not None else "This"  # no chart, no line
            st.caption(f"{drawn} patient's observed outcome in the record: {what}.{_trained_on(split)}")
    with right:
        if survival:
            for years in HORIZONS_YEARS:
                days = years * sv.DAYS_PER_YEAR
                value = sv.survival_at(survival, days)
                low, high = sv.survival_at(survival, days, "lower"), sv.survival_at(survival, days, "upper")
                st.metric(f"Survival at {years} year{'s' if years > 1 else ''}",
                          "n/a" if value is None else f"{value:.0%}",
                          help="n/a: beyond the longest follow-up of the model's training patients"
                          if value is None else None)
                if value is not None and low is not None and high is not None:
                    st.caption(f"95% interval {low:.0%}-{high:.0%}")
            if "survival_treatment" in prediction:
                treatment = prediction["survival_treatment"]
                st.caption(f"Predicted under the treatment on record: {sv.md(treatment_label(run_dir, treatment))}"
                           if treatment else
                           "No treatment on record: predicted without a treatment's response term "
                           "(see Treatment for each candidate).")
            if prediction.get("risk_percentile") is not None:
                st.metric("Risk percentile (higher: worse)", f"{prediction['risk_percentile']:.0f}",
                          help="Share of the model's training patients with a lower predicted risk.")
            if survival.get("interval_method"):
                st.caption(f"95% intervals: {survival['interval_method']}.")
        elif prediction is not None:
            st.caption("This run has no survival head.")
    if prediction and prediction.get("diagnosis"):
        chance = sv.chance_note(sv.metric_on_test(run_dir, runs, "diagnosis", "auroc"), "diagnosis head") \
            if run_dir else None
        if chance:
            st.info(chance)
        st.plotly_chart(figures.probability_bars(prediction["diagnosis"], title="Diagnosis probabilities",
                                                 highlight_max=chance is None), key="diagnosis_chart")
        if prediction.get("diagnosis_reads"):
            reads = ", ".join(sv.md(sv.modality_label(m)) for m in prediction["diagnosis_reads"])
            st.caption(f"Predicted from {reads} only; the diagnosis on record is in the header.")
    elif prediction is not None and prediction.get("diagnosis_reads"):
        reads = ", ".join(sv.md(sv.modality_label(m)) for m in prediction["diagnosis_reads"])
        st.caption(f"No diagnosis: the model's diagnosis head reads {reads}, which this patient lacks.")


def treatment_tab(prediction: dict | None, record: dict[str, pd.DataFrame], run_dir: str | None,
                  runs: Path | None, lake: Path, key: str, split: str | None) -> None:
    """Predicted probability of response per candidate treatment, with the caution, and the response the
    record shows."""
    st.warning(CAUTION, icon=":material/warning:")
    response = (prediction or {}).get("response")
    if response:
        chance = sv.chance_note(sv.metric_on_test(run_dir, runs, "response", "auroc"), "response head") \
            if run_dir else None
        if chance:
            st.info(chance)
        received = sv.received_treatments(record, run_dir)
        labels = sv.treatment_labels(run_dir, [*response, *received])  # the prediction keeps the run's names
        intervals = prediction.get("response_interval") or {}
        view = st.radio("Show", ["Chart", "Table"], key="treatment_view", horizontal=True)
        if view == "Chart":
            figure = figures.probability_bars({labels[t]: p for t, p in response.items()},
                                             title="Predicted probability of objective response",
                                             highlight_max=False,
                                             intervals={labels[t]: b for t, b in intervals.items() if t in labels}
                                             or None)
            st.plotly_chart(figure, key="response_chart")
        else:
            table = pd.DataFrame({"treatment": [labels[t] for t in response],
                                  "probability of response": [100 * v for v in response.values()]})
            if intervals:
                table["95% interval"] = [charts.percent_range(intervals.get(t)) for t in response]
            table["received"] = [t in received for t in response]
            survival_columns = sv.survival_by_treatment_columns(prediction, list(response))
            for column, values in survival_columns.items():
                table[column] = [None if v is None else 100 * v for v in values]
            st.dataframe(table.sort_values("probability of response", ascending=False), hide_index=True,
                         column_config={"probability of response": st.column_config.ProgressColumn(
                             format="%.0f%%", min_value=0.0, max_value=100.0),
                             **{c: st.column_config.NumberColumn(format="%.0f%%") for c in survival_columns}})
            if survival_columns:
                st.caption("Survival columns: the model's survival under each treatment (its log-risk includes "
                           "the predicted response to the treatment).")
        if prediction.get("response_interval_method"):
            st.caption(f"95% intervals: {prediction['response_interval_method']}; they show the model's own "
                       "uncertainty, not how often such estimates are right.")
        st.caption(f"Treatment on record: {', '.join(sorted(sv.md(labels[t]) for t in received))}." if received else
                   "No treatment on record: neither a medication order nor a curated treatment label of the "
                   "patient is one of these treatments.")
        try:
            observed = sv.observed_response(lake, run_dir, key)
        except sv.ServiceError as exc:
            st.caption(f"Observed response not shown: {exc}")
        else:
            if observed:
                outcome = ("responded (complete or partial response)" if observed["responded"] else
                           "did not respond (stable or progressive disease)")
                st.caption(f"Observed in the record: {outcome} to "
                           f"{sv.md(treatment_label(run_dir, observed['treatment']))}."
                           f"{_trained_on(split)}")
            elif received:
                st.caption("No response on record: no treatment after the diagnosis with a response assessment "
                           "(complete, partial, stable or progressive disease).")
    elif prediction is not None:
        st.info("This run has no treatment-response head.")
    else:
        st.info("No treatment-response estimates without a model.")


def why_tab(explanation: dict | None, record: dict[str, pd.DataFrame], header: dict, lake: Path,
            run_dir: str | None) -> None:
    """Modality contributions, the CT with its attribution map, variants, lab trends and top features."""
    contributions = (explanation or {}).get("modality_contributions")
    if contributions and sum(bool(c.get("present")) for c in contributions.values()) > 1:
        named = {sv.modality_label(name): item for name, item in contributions.items()}
        st.plotly_chart(figures.contributions_figure(named), key="contributions_chart")
        st.caption("What each modality adds to the predicted log-hazard: the prediction with it minus the "
                   "prediction without it (none for a missing modality).")
    elif contributions:
        st.caption("One modality only: there is no other to compare what it adds with.")

    st.subheader("CT")
    images = record["images"]
    if images.empty:
        st.caption(sv.no_data_note(header, "image"))
    else:
        images = images.sort_values("study_date", ascending=False, ignore_index=True)
        which = 0
        if len(images) > 1:
            which = st.selectbox("Series", range(len(images)), key="image_picker", format_func=lambda i: (
                f"{images['modality'][i] or 'image'} {images['study_date'][i]:%Y-%m-%d}"
                if pd.notna(images["study_date"][i]) else images["image_id"][i]))
        image = images.iloc[which]
        n_slices, first, last = sv.image_content(lake, image["tensor_file"], int(image["tensor_row"]))
        attribution = (explanation or {}).get("image_attribution")
        if attribution and attribution.get("image_id") != image["image_id"]:
            attribution = None  # the model read another series of the patient
        heat_slice = attribution.get("slice") if attribution else None
        informative = attribution is not None and any(max(row) > 0 for row in attribution["map"])
        stored_window = sv.image_window(lake, image["image_id"])
        controls, view = st.columns([1, 3])
        with controls:
            preset = st.radio("Window", list(charts.WINDOWS), key="window_preset", disabled=stored_window is None,
                              help="; ".join(f"{name}: {sv.window_words(*window)}"
                                             for name, window in charts.WINDOWS.items()))
            index = 0
            if n_slices > 1:
                default = heat_slice if informative and heat_slice is not None else (first + last) // 2
                # numbered from 1 as a viewer numbers them; index stays 0-based
                number = st.slider(f"Slice (of {n_slices})", 1, n_slices, sv.slice_number(default),
                                   key=f"slice_{image['image_id']}")
                index = number - 1
            overlay = attribution is not None and st.checkbox("Attribution overlay", value=True,
                                                                key="show_attribution")
            if attribution:
                st.caption(sv.attribution_caption(attribution, informative, n_slices))
            if stored_window is not None:
                level, width = stored_window
                st.caption(f"Stored at ingest in a window of {sv.window_words(level, width)}; values outside it "
                           "are clipped.")
            if n_slices > 1:
                st.caption(f"Image content on slices {sv.slice_number(first)}-{sv.slice_number(last)} of "
                           f"{n_slices}.")
        with view:
            pixels = sv.image_slice(lake, image["tensor_file"], int(image["tensor_row"]), index)
            heat = attribution["map"] if overlay and (n_slices == 1 or index == heat_slice) else None
            st.plotly_chart(figures.ct_figure(pixels, stored_window=stored_window, display=preset, heat=heat),
                            key="ct_chart")

    st.subheader("Variants")
    variants = sv.variant_table(record)
    tmb = record["tmb"]
    if not tmb.empty:
        latest = tmb.iloc[-1]
        high = ", TMB-high (at least 10/Mb)" if latest["tmb_per_mb"] >= 10 else ""
        counted = (f" ({int(latest['n_nonsilent'])} non-silent variants over a {latest['panel_size_mb']:g} Mb panel)"
                   if pd.notna(latest["n_nonsilent"]) and pd.notna(latest["panel_size_mb"]) else "")
        st.caption(f"Tumour mutational burden: **{latest['tmb_per_mb']:.1f} mutations/Mb**{high}{counted}"
                   + (" (latest of several samples)" if len(tmb) > 1 else ""))
    if variants.empty:
        st.caption("No sequencing data for this patient." if record["gene_status"].empty
                   else "Sequenced: no variant passed the filters.")
    else:
        def _highlight(row: pd.Series) -> list[str]:
            colour = "background-color: #fde2e1" if row["actionable"] else (
                "background-color: #fff4d6" if row["driver"] else "")
            return [colour] * len(row)

        located = st.toggle("Show the sample and genomic coordinates", key="variant_coordinates",
                            help="The sequenced sample's id and each variant's chromosome, position and alleles")
        located_columns = ["chrom", "pos", "ref", "alt", "sample_id"]
        st.dataframe(variants.style.apply(_highlight, axis=1).format({"vaf": "{:.2f}"}, na_rep=""),
                     hide_index=True, width="stretch",
                     column_order=None if located else [c for c in variants if c not in located_columns])
        st.caption("Red: actionable alteration (e.g. EGFR L858R / exon 19 deletion, KRAS G12C, BRAF V600E, "
                   "ALK); yellow: driver gene of the panel.")

    st.subheader("Lab trends")
    labs = sv.lab_series(record)
    if labs.empty:
        st.caption(sv.no_data_note(header, "laboratory values"))
    else:
        common = labs["lab"].value_counts().index.tolist()
        picked = st.multiselect("Labs", common, default=common[:4], key="lab_picker")
        if picked:
            st.plotly_chart(figures.labs_figure(labs, picked, index_date=header["index_date"]),
                            key="labs_chart")

    st.subheader("Top tabular features")
    features = (explanation or {}).get("top_features")
    if features:
        target = explanation.get("explanation_target") or ""
        kind, _, name = target.partition(":")
        what = ("the predicted risk (log-hazard)" if target == "log_risk" else
                "the predicted diagnosis ({name})" if kind == "diagnosis" else
                "the predicted response to {name}" if kind == "response" else "the explained output")
        name = treatment_label(run_dir, name) if kind == "response" else name
        st.plotly_chart(figures.attributions_figure(features, title=f"What drives {what.format(name=name)}"),
                        key="features_chart")
        st.caption(f"Integrated gradients: positive values push {what.format(name=sv.md(name))} up, negative "
                   "values down.")
    else:
        st.caption("No feature attributions (no model, or no tabular data for this patient).")


def timeline_tab(record: dict[str, pd.DataFrame], header: dict, run_dir: str | None) -> None:
    """Every dated event of the record on one axis."""
    events = sv.patient_events(record, run_dir)
    if events.empty:
        st.caption(sv.no_data_note(header, "dated events"))
    else:
        st.plotly_chart(figures.timeline_figure(events, index_date=header["index_date"],
                                               death_date=header["death_date"]), key="timeline_chart")
        left_out = sv.left_out_of_timeline(record)
        conditions = sv.conditions_left_out(record, run_dir)
        note = ("Conditions: each once per episode, at its first onset (records of one condition at most "
                f"{sv.SPAN_GAP_DAYS} days apart are one marker; the hover says how often it was recorded)")
        if conditions["repeats"]:
            note += f", {conditions['repeats']} repeated record{'s' if conditions['repeats'] > 1 else ''} drawn so"
        if conditions["social history"]:
            note += (f"; {conditions['social history']} social-history finding"
                     f"{'s' if conditions['social history'] > 1 else ''} recorded as conditions (employment, "
                     "education, stress, social contact, housing, ...) left out")
        note += (". Medications: one row per drug, a bar from the first to the last order of a course (orders at "
                 f"most {sv.SPAN_GAP_DAYS} days apart). Observations: labs, vital signs and the oncology ones "
                 "(stage, ECOG, disease status, response, tumour markers); one marker per day.")
        if left_out:
            counts = ", ".join(f"{n} {sv.md(category)}" for category, n in left_out.items())
            note += f" Left out: the other observations, questionnaires and social history ({counts})."
        st.caption(note)
        with st.expander(f"All {len(events)} events"):
            shown = events.assign(when=events["when"].dt.strftime("%Y-%m-%d"),
                                  end=pd.to_datetime(events["end"], utc=True).dt.strftime("%Y-%m-%d").fillna(""))
            st.dataframe(shown, hide_index=True, width="stretch")


def header_summary(header: dict) -> None:
    """The diagnosis as a heading that wraps (a metric's value is cut off with an ellipsis when its column is
    narrower than the name, as at 1366 px), then age, sex, stage and ECOG."""
    diagnosis = (header["diagnosis"] or "none recorded").removesuffix(" (disorder)")
    st.subheader(f"Diagnosis: {sv.md(diagnosis)}", anchor=False,
                 help=sv.md(header["diagnosis"]) if header["diagnosis"] else None)
    age, sex, stage, ecog = st.columns(4)
    age.metric(sv.age_label(header),
               "n/a" if header["age"] is None else f"{header['age']:.0f}")
    sex.metric("Sex", header["sex"] or "n/a")
    stage.metric(sv.stage_label(header), header["stage"] or "n/a")
    ecog.metric("ECOG", "n/a" if header["ecog"] is None or pd.isna(header["ecog"]) else f"{header['ecog']:.0f}")


def card_tab(run_dir: str | None, settings: sv.Settings) -> None:
    """The model card of the run in use."""
    if run_dir is None:
        st.info(f"No model card without a trained run: {widgets.train_hint(settings)}.")
    else:
        widgets.model_card(run_dir, settings.runs)


def explained(run_dir: str | None, lake: Path, key: str) -> dict | None:
    """The prediction with its explanations (None without a model; a warning when it fails)."""
    if run_dir is None:
        return None
    try:
        return sv.explanation(run_dir, lake, key)
    except sv.ServiceError as exc:
        st.warning(str(exc))
        return None


st.title("Patient")
settings = sv.settings()
lake = widgets.require_lake(settings)
people = widgets.or_stop(sv.patients, lake)
if people.empty:
    st.warning(f"The lake has no patients yet: `tumorboard ingest fhir --lake {lake} FOLDER` loads them.")
    st.stop()

run_dir = sv.active_run(settings.runs)
with st.sidebar:
    if run_dir:
        st.caption(f"Model: **{run_dir.rsplit('/', 1)[-1]}** (change it on the *Models* page)")
    else:
        st.caption("No trained model yet.")

labels = dict(zip(people["patient_key"], people["label"]))
# No patient is shown until one is chosen, so nobody reviews (or sees) a patient they did not ask for. The
# choice lives in the URL (?patient=KEY: a reload or a shared link reopens the patient) and in the session's
# "patient" (a widget's state is dropped while another page is open: coming back reopens the patient).
linked = st.query_params.get("patient")
if "patient_picker" not in st.session_state:
    st.session_state["patient_picker"] = next(
        (k for k in (linked, st.session_state.get("patient")) if k in labels), None)
key = st.selectbox("Patient (type an MRN or patient id to search)", list(labels), format_func=labels.get, index=None,
                   placeholder=f"Choose one of {len(labels)} patients", key="patient_picker")
if key is None:
    if linked is not None and linked not in labels:  # not when the user cleared the picker
        st.warning("The patient in this page's address (`?patient=`) is not in the lake: choose one above.")
    st.info("Choose a patient to see their predicted risk, treatment response, the evidence and the record.")
    st.query_params.pop("patient", None)
    st.session_state.pop("patient", None)  # cleared by the user: not reopened on coming back either
    st.stop()
st.query_params["patient"] = st.session_state["patient"] = key

record = widgets.or_stop(sv.patient_record, lake, key)
header = widgets.or_stop(sv.patient_header, lake, key, run_dir)

header_summary(header)
present = ", ".join(sv.md(sv.modality_label(m)) for m in header["modalities"]) or "none"
dates = []
if sv.index_words(header):
    dates.append(sv.index_words(header))
if header["death_date"] is not None:
    dates.append(f"died {header['death_date']:%Y-%m-%d}")
st.caption(f"Modalities present: **{present}**" + (f" · {' · '.join(dates)}" if dates else ""))
if header["cancers"]:
    listed = "; ".join(sv.md(c["display"].removesuffix(" (disorder)"))
                       + (f" ({c['onset']:%Y-%m-%d})" if c["onset"] is not None else " (no onset date)")
                       for c in header["cancers"])
    # the index rule also counts a nodule under work-up (data.index): not every one of them is a cancer
    st.caption(f"Diagnoses on record that can set the index date: {listed}")

prediction = None
if run_dir is None:
    st.info(f"No trained model in `{settings.runs or 'RUNS'}` yet, so there are no predictions; the record "
            f"is shown below. Train one with {widgets.train_hint(settings)}.")
else:
    try:
        prediction = sv.prediction(run_dir, lake, key)
    except sv.ServiceError as exc:
        st.warning(str(exc))
split = sv.patient_split(run_dir, settings.runs, key) if run_dir else None
if split == "train":
    st.warning("This patient is in the model's **training** set: its predictions are in-sample and look better "
               "than they would for a new patient.", icon=":material/school:")
elif split in ("val", "test"):
    st.caption(f"Held-out patient: in the model's {'validation' if split == 'val' else 'test'} split, never "
               "trained on.")
if prediction and prediction.get("missing_modalities"):
    missing = ", ".join(sv.md(sv.modality_label(m)) for m in prediction["missing_modalities"])
    st.caption(f"Missing for this patient: **{missing}**; the prediction "
               "rests on the modalities present.")

TABS = {"Risk": lambda: risk_tab(prediction, lake, run_dir, settings.runs, key, split),
        "Treatment": lambda: treatment_tab(prediction, record, run_dir, settings.runs, lake, key, split),
        "Why": lambda: why_tab(explained(run_dir, lake, key) if prediction else None, record, header, lake,
                               run_dir),
        "Timeline": lambda: timeline_tab(record, header, run_dir),
        "Model card": lambda: card_tab(run_dir, settings)}
# Only the open tab renders (st.tabs with on_change="rerun"): a first visit pays for the Risk tab only.
for draw, tab in zip(TABS.values(), st.tabs(list(TABS), key="patient_tab", on_change="rerun"), strict=True):
    if tab.open:
        with tab:
            draw()
