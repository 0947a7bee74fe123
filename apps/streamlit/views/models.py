"""Models: trained runs side by side (metrics with intervals, baselines, ablations, calibration, risk groups,
subgroups), a ``--cv`` run's mean and SD over its folds, and the choice of the run the Patient page uses."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from apps.streamlit import figures, widgets
from apps.streamlit import services as sv

# What evaluate's intervals are (fusion/evaluate.py): the binned calibration errors' are bias-corrected
INTERVALS_CAPTION = ("Intervals: 95% percentile bootstrap over the test patients, the same resamples for every "
                     "model of a task. The binned calibration errors (calibration at a horizon, ECE) grow on "
                     "resamples, whose repeated patients make the bins noisier: their intervals are corrected for "
                     "that bias, so that they bracket the value.")


def _caption(path: str) -> str:
    """A figure's caption: its file name without extension, words apart (``km_risk_groups.png``)."""
    return Path(path).stem.replace("_", " ")


def _metric_table(part: pd.DataFrame, shown: pd.Series) -> pd.DataFrame:
    """One task's metrics (rows of :func:`services.metric_rows`, ``shown`` as text): one row per model, the
    model first, one column per metric in metrics.json's order (365d before 730d)."""
    table = part.assign(shown=shown).pivot_table(index="model", columns="metric", values="shown", aggfunc="first")
    order = sorted(table.index, key=lambda m: (m != "model", m))
    columns = [m for m in part["metric"].unique() if m in table.columns]
    return table.loc[order, columns].reset_index()


def _metric_tables(table: pd.DataFrame, index: list[str]) -> None:
    """``table`` (the ``index`` columns, then one column per metric) as :func:`services.metric_groups` splits
    it, so that a 1366 px screen shows each whole: the group's name above its first table when it is split."""
    said = ""
    for title, columns in sv.metric_groups([c for c in table.columns if c not in index]):
        if title != said:
            st.caption(title)
            said = title
        st.dataframe(table[[*index, *columns]], hide_index=True, width="stretch")


def _chance(metric: str) -> float | None:
    """The chance level of a ranking metric (a reference line on its plot), None for the others."""
    return 0.5 if metric.startswith(("auroc", "c_index", "td_auc")) else None


st.title("Models")
settings = sv.settings()
runs = sv.available_runs(settings.runs)
if runs.empty:
    where = f"`{settings.runs}`" if settings.runs else "the runs folder (start the app with --runs)"
    st.info(f"No trained run in {where} yet. Train one with {widgets.train_hint(settings)}.")
    st.stop()

names = dict(zip(runs["path"], runs["name"]))
paths = list(names)
current = sv.active_run(settings.runs)
st.session_state[sv.RUN_KEY] = st.selectbox("Run used on the Patient page", paths, index=paths.index(current),
                                            format_func=names.get, key="run_picker")

st.subheader("Runs")
overview = runs.drop(columns="path").assign(created_at=runs["created_at"].astype(str).str[:19])
st.dataframe(overview, hide_index=True, width="stretch")

compared = st.multiselect("Compare runs", paths, default=paths[:3], format_func=names.get, key="compare_runs")
tables = []
for path in compared:
    try:
        metrics = sv.details(path, settings.runs)["metrics"]
    except sv.ServiceError as exc:
        st.warning(f"{names[path]}: {exc}")
        continue
    if metrics is None:
        st.caption(f"`{names[path]}` is not evaluated yet: run `tumorboard evaluate {path}`.")
        continue
    rows = sv.metric_rows(metrics)
    rows = rows[rows["model"] == "model"]
    tables.append(rows.assign(run=names[path], shown=sv.with_interval(rows)))
if tables:
    both = pd.concat(tables)
    side = both.pivot_table(index=["task", "metric"], columns="run", values="shown", aggfunc="first")
    side = side.loc[list(dict.fromkeys(zip(both["task"], both["metric"], strict=True)))]  # metrics.json's order
    st.markdown("**Test metrics, value [95% bootstrap interval]**")
    st.dataframe(side.reset_index(), hide_index=True, width="stretch", height=widgets.fit_height(side))

cross_validations = sv.cross_validations(settings.runs)
if not cross_validations.empty:
    st.subheader("Cross-validation")
    cv_names = dict(zip(cross_validations["path"], cross_validations["name"]))
    cv_dir = st.selectbox("Cross-validated run", list(cv_names), format_func=cv_names.get, key="cv_run")
    try:
        cv_metrics = sv.cross_validation_metrics(cv_dir)
    except sv.ServiceError as exc:
        st.warning(str(exc))
        cv_metrics = {}
    if cv_metrics is None:
        st.info(f"Not evaluated yet: run `tumorboard evaluate {cv_dir}` for the mean and SD over its folds.")
    elif cv_metrics:
        st.caption(f"Mean ± SD over the {cv_metrics.get('k')} folds, each tested on its own patients (the folds "
                   "are also listed as runs above, with their bootstrap intervals).")
        if cv_metrics.get("lake_changed"):
            st.warning("The lake changed after training in at least one fold (see the notes).")
        cv_rows = sv.metric_rows(cv_metrics)
        for task in cv_rows["task"].unique():
            part = cv_rows[cv_rows["task"] == task]
            st.markdown(f"**{task}** ({(cv_metrics['tasks'][task] or {}).get('n', '?')} test patients in all)")
            _metric_tables(_metric_table(part, sv.with_spread(part)), ["model"])
            metric = st.selectbox("Metric to plot", part["metric"].unique(), key=f"cv_metric_{task}")
            shown = part[part["metric"] == metric].rename(columns={"model": "label"})
            st.plotly_chart(figures.fold_values_figure(shown, title=f"{task}: {metric}", chance=_chance(metric)),
                            key=f"cv_folds_{task}")
        for note in cv_metrics.get("notes") or []:
            st.caption(f"Note from the evaluation: {note}.")

st.subheader("Run details")
chosen = st.selectbox("Run", paths, index=paths.index(current), format_func=names.get, key="detail_run")
try:
    details = sv.details(chosen, settings.runs)
except sv.ServiceError as exc:
    st.warning(str(exc))
    st.stop()
metrics = details["metrics"]
metrics_tab, plots_tab, subgroups_tab, training_tab, card_tab = st.tabs(
    ["Metrics", "Plots", "Subgroups", "Training", "Model card"])

with metrics_tab:
    if metrics is None:
        st.info(f"Not evaluated yet: run `tumorboard evaluate {chosen}` for metrics with intervals, "
                "baselines and ablations.")
    else:
        rows = sv.metric_rows(metrics)
        for task in rows["task"].unique():
            part = rows[rows["task"] == task]
            block = (metrics.get("tasks") or {}).get(task, {})
            counts = ", ".join(f"{k.replace('_', ' ')} {block[k]}" for k in ("n", "n_events", "n_positive")
                               if k in block)
            st.markdown(f"**{task}** ({counts})")
            _metric_tables(_metric_table(part, sv.with_interval(part)), ["model"])
            metric = st.selectbox("Metric to plot", part["metric"].unique(), key=f"metric_{task}")
            shown = part[part["metric"] == metric].rename(columns={"model": "label"})
            st.plotly_chart(figures.metric_intervals_figure(shown, title=f"{task}: {metric}",
                                                            chance=_chance(metric)), key=f"intervals_{task}")
        st.caption(INTERVALS_CAPTION)
        for note in metrics.get("notes") or []:
            st.caption(f"Note from the evaluation: {note}.")

with plots_tab:
    plots = details["plots"]
    if not plots:
        st.caption("No figures in this run folder (`tumorboard evaluate` writes a comparison with the baselines "
                   "and ablations, calibration, ROC and Kaplan-Meier-by-risk-group plots).")
    by_name = {Path(p).name: p for p in plots}
    # the tall comparison next to the risk groups and ROC curves, the calibration panels (three a row) under them
    left, right = st.columns(2)
    for column, name in ((left, "comparison.png"), (right, "km_risk_groups.png"), (right, "roc.png")):
        if name in by_name:
            path = by_name.pop(name)
            column.image(path, caption=_caption(path))
    if "calibration.png" in by_name:
        path = by_name.pop("calibration.png")
        st.image(path, caption=_caption(path))
    others = list(by_name.values())  # figures of other tools or versions, two a row
    for first, second in zip(others[::2], [*others[1::2], None]):
        cols = st.columns(2)
        cols[0].image(first, caption=_caption(first))
        if second:
            cols[1].image(second, caption=_caption(second))

with subgroups_tab:
    groups = sv.subgroup_rows(metrics) if metrics else None
    if groups is None or groups.empty:
        st.caption("No subgroup results (they need `tumorboard evaluate` and enough patients per subgroup).")
    else:
        groups = groups.assign(shown=sv.with_interval(groups))
        for task in groups["task"].unique():
            part = groups[groups["task"] == task]
            table = part.pivot_table(index=["subgroup", "n"], columns="metric", values="shown", aggfunc="first")
            st.markdown(f"**{task}**")
            _metric_tables(table[[m for m in part["metric"].unique() if m in table.columns]].reset_index(),
                           ["subgroup", "n"])

with training_tab:
    history = details["history"]
    if history is None:
        st.caption("No history.csv in this run.")
    else:
        st.line_chart(history.set_index("epoch")[[c for c in history.columns if c.endswith("loss")]])
    summary = details["meta"].get("cohort_summary")
    if summary:
        st.markdown("**Cohort**: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary.items()))

with card_tab:
    widgets.model_card(chosen, settings.runs)
