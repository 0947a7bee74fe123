"""Data: what the lake holds (tables and row counts), ingest runs, rejects by reason, modality coverage."""

from __future__ import annotations

import json

import pandas as pd
import plotly.express as px
import streamlit as st

from apps.streamlit import services as sv
from apps.streamlit import widgets

st.title("Data")
settings = sv.settings()
lake = widgets.require_lake(settings)
report = widgets.or_stop(sv.status, lake)

n_rejects = int(report.rejects["count"].sum()) if len(report.rejects) else 0
cols = st.columns(4)
cols[0].metric("Tables", len(report.tables))
cols[1].metric("Patients", len(report.coverage))
cols[2].metric("Ingest runs", len(report.runs))
cols[3].metric("Rejected records", n_rejects)
st.caption(f"Lake: `{lake}`")

tables_tab, runs_tab, rejects_tab, coverage_tab = st.tabs(["Tables", "Ingest runs", "Rejects", "Coverage"])
with tables_tab:
    counts = [{"table": name, "rows": rows} for name, rows in report.tables.items()]
    widgets.frame_or_note(pd.DataFrame(counts), "No tables.")

with runs_tab:
    runs = report.runs.copy()
    if len(runs):
        runs["counts"] = runs["counts"].map(lambda text: ", ".join(
            f"{k}: {v}" for k, v in json.loads(text or "{}").items() if not isinstance(v, (dict, list))))
    widgets.frame_or_note(runs, "No ingest run recorded in the manifest.")

with rejects_tab:
    if report.rejects.empty:
        st.success("Nothing was rejected.")
    else:
        st.markdown("Records that could not be ingested, by reason (one example location each). The rows are "
                    "kept in the lake's `rejects` table: "
                    "`tumorboard lake sql \"select * from rejects\" --lake LAKE`.")
        widgets.frame_or_note(report.rejects, "")
    unmatched = {k: v for k, v in report.unmatched.items() if v}
    if unmatched:
        st.warning("Identifiers matching no FHIR patient (kept under their own id): "
                   + ", ".join(f"{k}: {v}" for k, v in unmatched.items()))
    if report.ambiguous:
        st.warning(f"{report.ambiguous} identifier value(s) belong to several FHIR patients and link no other record; "
                   "name the system in those records' patient ids as `system|value`.")

with coverage_tab:
    summary = report.coverage_summary()
    if summary.empty:
        st.caption("No patients yet.")
    else:
        fig = px.bar(summary, x="fraction", y="modality", orientation="h", text="patients",
                     range_x=[0, 1.05], labels={"fraction": "share of patients"})
        fig.update_layout(height=120 + 40 * len(summary), margin={"l": 10, "r": 10, "t": 10, "b": 10},
                          template="plotly_white")
        fig.update_yaxes(autorange="reversed")  # the first modality on top, as `tumorboard lake status` lists them
        st.plotly_chart(fig, key="coverage_chart")
        st.caption("fhir: patients with a Patient resource; fhir:observations, fhir:medications, ...: patients "
                   "with at least one such record (a Patient resource alone is not a clinical record).")
        modalities = [c for c in report.coverage.columns if c != "patient_key"]
        missing = st.multiselect("Show patients missing", modalities, key="coverage_missing")
        shown = report.coverage
        for name in missing:
            shown = shown[~shown[name]]
        st.caption(f"{len(shown)} of {len(report.coverage)} patients")
        people = widgets.or_stop(sv.patients, lake)
        st.dataframe(sv.with_patient_links(shown, people), hide_index=True, width="stretch", column_config={
            "record": st.column_config.LinkColumn("record", display_text="open", help="The patient's page")})
