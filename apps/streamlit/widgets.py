"""Page parts used by more than one page: the missing-lake and missing-run messages, and the model card."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pandas as pd
import streamlit as st

from apps.streamlit import services as sv

TRAIN_HINT = ("`tumorboard train --lake {lake} --config CONFIG.yaml --out {runs}/<name>`, then "
              "`tumorboard evaluate {runs}/<name>` for its metrics")
INTENDED_USE = (
    "**Intended use.** Research and decision support for a multidisciplinary tumour board: the model ranks "
    "patients by predicted risk and summarises the evidence in their record. It is not a medical device, "
    "has not been validated prospectively, and does not replace the clinical judgement of the treating team."
)
LIMITS = (
    "**Limits.** Trained on the patients of one lake (see *Data*); performance on other populations, "
    "scanners, sequencing assays and coding practices is unknown. Treatment-response estimates come from "
    "observational data in which treatment was not randomised (confounding by indication). Survival curves "
    "beyond the longest training follow-up are not estimated. Missing modalities lower the information "
    "available to the model; the prediction then rests on the modalities present."
)
T = TypeVar("T")
FULL_ROWS = 30  # tables up to this many rows are shown without an inner scroll bar


def require_lake(settings: sv.Settings) -> Path:
    """The lake path; shows what to run and stops the page when there is no lake with tables."""
    lake = settings.lake
    if lake is None:
        st.warning("No lake configured. Start the app with `tumorboard app --lake LAKE --runs RUNS`.")
        st.stop()
    if not sv.lake_exists(lake):
        st.warning(f"The lake `{lake}` does not exist or holds no tables yet. Create it with, for example: "
                   f"`tumorboard synth cohort --patients 200` and `tumorboard ingest fhir --lake {lake} "
                   f"cohort/fhir` (then `ingest variants` and `ingest images`).")
        st.stop()
    return lake


def or_stop(load: Callable[..., T], *args: object) -> T:
    """``load(*args)``; on a :class:`services.ServiceError` show its message and stop the page."""
    try:
        return load(*args)
    except sv.ServiceError as exc:
        st.error(str(exc))
        st.stop()


def or_note(what: str, load: Callable[..., T], *args: object) -> T | None:
    """``load(*args)``; on a :class:`services.ServiceError` a caption "``what`` not shown: <message>" and None
    (the rest of the page goes on)."""
    try:
        return load(*args)
    except sv.ServiceError as exc:
        st.caption(f"{what} not shown: {exc}")
        return None


def train_hint(settings: sv.Settings) -> str:
    """The commands that create a run, with this app's lake and runs folder filled in."""
    return TRAIN_HINT.format(lake=settings.lake or "LAKE", runs=settings.runs or "RUNS")


def model_card(run_dir: str, runs: Path | None) -> None:
    """The run's model card: data, model, metrics with intervals, calibration, intended use and limits."""
    try:
        details = sv.details(run_dir, runs)
    except sv.ServiceError as exc:
        st.warning(str(exc))
        return
    meta, metrics = details["meta"], details["metrics"]
    heads = sv.card_heads(meta)
    st.markdown(f"#### Model card: `{Path(run_dir).name}`")
    left, right = st.columns(2)
    with left:
        st.markdown("**Data**")
        counts = ", ".join(f"{k}: {v}" for k, v in meta.get("split_counts", {}).items()) or "n/a"
        st.markdown(
            f"- lake: `{meta.get('lake')}` (state `{meta.get('lake_manifest_hash')}`)\n"
            f"- patients per split: {counts}\n"
            f"- survival endpoint: {heads['survival_endpoint'] or 'none (no survival head)'}\n"
            f"- trained: {str(meta.get('created_at', 'n/a'))[:19]}, "
            f"schema {meta.get('schema_version', 'n/a')}")
    with right:
        st.markdown("**Model**")
        n_features = {sv.md(sv.modality_label(m)): len(f) for m, f in (meta.get("feature_names") or {}).items()}
        treatments = sv.treatment_labels(run_dir, meta.get("treatment_names") or [])
        st.markdown(
            f"- modalities: {', '.join(sv.md(sv.modality_label(m)) for m in meta.get('modalities', [])) or 'n/a'}"
            f" (tabular features: {', '.join(f'{m} {n}' for m, n in n_features.items()) or 'none'})\n"
            f"- diagnosis classes: {', '.join(map(sv.md, heads['diagnosis_classes'])) or 'none (no diagnosis head)'}\n"
            f"- candidate treatments: {', '.join(map(sv.md, treatments.values())) or 'n/a'}\n"
            f"- versions: torch {meta.get('versions', {}).get('torch', '?')}, "
            f"timm {meta.get('versions', {}).get('timm', '?')}")
    if metrics is None:
        st.info(f"This run has not been evaluated yet: run `tumorboard evaluate {run_dir}` for test metrics "
                "with confidence intervals, calibration and subgroup results.")
    else:
        rows = sv.metric_rows(metrics)
        rows = rows[rows["model"] == "model"]
        if len(rows):
            rows = rows.assign(**{"value [95% CI]": sv.with_interval(rows)}, metric=rows["metric"].map(sv.metric_label))
            st.markdown(f"**Test metrics** ({metrics.get('n_test', '?')} test patients, "
                        f"{metrics.get('n_boot', '?')} bootstrap resamples)")
            st.dataframe(rows[["task", "metric", "value [95% CI]"]], hide_index=True, width="stretch",
                         height=fit_height(rows))
        for note in metrics.get("notes") or []:
            st.caption(note)
    calibration = [p for p in details["plots"] if Path(p).stem.startswith("calibration")]
    if calibration:
        st.image(calibration[0], caption="Calibration on the test split", width="stretch")
    if details["card"]:
        with st.expander("model_card.md"):
            st.markdown(details["card"])
    st.markdown(INTENDED_USE)
    st.markdown(LIMITS)


def fit_height(frame: pd.DataFrame) -> str:
    """``st.dataframe`` height: every row of a short table (up to ``FULL_ROWS``), else a scrolling box."""
    return "content" if len(frame) <= FULL_ROWS else "auto"


def frame_or_note(frame: pd.DataFrame, note: str, **kwargs) -> None:
    """``st.dataframe(frame)`` (short tables in full) or an info line when it is empty."""
    if frame is None or frame.empty:
        st.caption(note)
    else:
        st.dataframe(frame, hide_index=True, width="stretch", **{"height": fit_height(frame), **kwargs})
