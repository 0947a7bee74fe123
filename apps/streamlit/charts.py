"""Plotly figure builders for the pages: plain data in, a ``go.Figure`` out (no reading, no caching)."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

DAYS_PER_YEAR = 365.25
PREDICTED, COHORT, ACCENT = "#1f77b4", "#7f7f7f", "#d62728"
OBSERVED = "#2f2f2f"  # the patient's own outcome, drawn over the curves
# CT display windows (level, width) in Hounsfield units.
WINDOWS = {"lung": (-600.0, 1500.0), "mediastinum": (40.0, 400.0), "bone": (400.0, 1800.0)}
_CATEGORIES = ["Condition", "Medication", "Procedure", "Observation", "Encounter"]
_CATEGORY_COLOURS = dict(zip(_CATEGORIES, ["#d62728", "#2ca02c", "#9467bd", "#1f77b4", "#7f7f7f"]))


def plain(text: object) -> str:
    """``text`` from a record, a labels file or a run as plotly shows it literally: plotly reads tags in any
    label (``<a href>`` a link, ``<span style>``, ``<br>``), so ``&``, ``<`` and ``>`` become entities."""
    return html.escape(str(text), quote=False)


def _layout(fig: go.Figure, *, height: int = 360, **kwargs) -> go.Figure:
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10}, template="plotly_white",
                      legend={"orientation": "h", "y": -0.2}, **kwargs)
    return fig


def _band(x: np.ndarray, low: list, high: list, colour: str, name: str,
          shape: str = "linear") -> list[go.Scatter]:
    """A filled interval between two lines (hidden from hover)."""
    return [go.Scatter(x=x, y=high, mode="lines", line={"width": 0, "shape": shape}, showlegend=False,
                       hoverinfo="skip", legendgroup=name),
            go.Scatter(x=x, y=low, mode="lines", line={"width": 0, "shape": shape}, fill="tonexty",
                       fillcolor=_rgba(colour, 0.18), name=name, hoverinfo="skip", legendgroup=name)]


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def endpoint_label(endpoint: str) -> str:
    """``"overall survival"`` for ``os``, ``"progression-free survival"`` for ``pfs``, else the name."""
    return {"os": "overall survival", "pfs": "progression-free survival"}.get(endpoint, endpoint)


def event_word(endpoint: str) -> str:
    """What reaching the endpoint is called: ``died`` (os), ``progressed`` (pfs), else ``had the event``."""
    return {"os": "died", "pfs": "progressed"}.get(endpoint, "had the event")


def censored_phrase(endpoint: str) -> str:
    """What a censored outcome says: ``alive at last follow-up`` (os), ``no progression recorded by last
    follow-up`` (pfs), else ``no event by last follow-up``."""
    return {"os": "alive at last follow-up", "pfs": "no progression recorded by last follow-up"}.get(
        endpoint, "no event by last follow-up")


def survival_figure(predicted: dict | None, cohort: pd.DataFrame | None, *,
                    endpoint: str = "os", observed: dict | None = None) -> go.Figure:
    """Predicted survival S(t) with its 95% interval next to the cohort's Kaplan-Meier curve.

    Args:
        predicted: ``times`` (days), ``survival``, optional ``lower``/``upper``; None to skip.
        cohort: Kaplan-Meier frame with ``time`` (days), ``survival``, ``lower``, ``upper``; None to skip.
        observed: the patient's own outcome, ``time`` (days) and ``event`` (False: censored), drawn as a
            dotted vertical line; None to skip.
    """
    fig = go.Figure()
    if cohort is not None and len(cohort):
        years = cohort["time"].to_numpy() / DAYS_PER_YEAR
        fig.add_traces(_band(years, cohort["lower"].tolist(), cohort["upper"].tolist(), COHORT,
                             "cohort 95% CI", "hv"))
        fig.add_trace(go.Scatter(x=years, y=cohort["survival"], mode="lines", name="cohort (Kaplan-Meier)",
                                 line={"color": COHORT, "shape": "hv", "dash": "dash"},
                                 hovertemplate="%{x:.1f} y: %{y:.0%}<extra>cohort</extra>"))
    if predicted:
        years = np.asarray(predicted["times"], float) / DAYS_PER_YEAR
        if predicted.get("lower") and predicted.get("upper"):
            fig.add_traces(_band(years, predicted["lower"], predicted["upper"], PREDICTED,
                                 "patient 95% interval", "hv"))
        fig.add_trace(go.Scatter(x=years, y=predicted["survival"], mode="lines", name="this patient (model)",
                                 line={"color": PREDICTED, "width": 3, "shape": "hv"},
                                 hovertemplate="%{x:.1f} y: %{y:.0%}<extra>patient</extra>"))
    label = endpoint_label(endpoint)
    if observed:
        what = event_word(endpoint) if observed["event"] else "last follow-up"
        fig.add_vline(x=observed["time"] / DAYS_PER_YEAR, line={"color": OBSERVED, "dash": "dot", "width": 2},
                      annotation={"text": f"observed: {what}", "font": {"color": OBSERVED}},
                      annotation_position="top right")
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", title=f"probability of {label}")
    fig.update_xaxes(title="years from diagnosis", rangemode="tozero")
    return _layout(fig, title="Survival: this patient vs the cohort")


def probability_bars(values: dict[str, float], *, title: str, highlight_max: bool = True,
                     intervals: dict[str, list[float]] | None = None) -> go.Figure:
    """Horizontal bars of probabilities (0-1), largest on top; ``intervals`` {name: [lower, upper]} adds
    error bars (95% intervals)."""
    items = sorted(((k, v) for k, v in values.items() if v is not None), key=lambda kv: kv[1])
    names, probs = [k for k, _ in items], [v for _, v in items]
    top = max(probs) if probs else None
    colours = [ACCENT if highlight_max and p == top else PREDICTED for p in probs]
    error_x, hover = None, "%{y}: %{x:.1%}<extra></extra>"
    if intervals:
        bounds = [intervals.get(k) or [p, p] for k, p in items]
        error_x = {"type": "data", "symmetric": False, "color": "#444",
                   "array": [hi - p for (_, hi), p in zip(bounds, probs, strict=True)],
                   "arrayminus": [p - lo for (lo, _), p in zip(bounds, probs, strict=True)]}
        hover = "%{y}: %{x:.1%} (95% interval %{customdata})<extra></extra>"
    fig = go.Figure(go.Bar(x=probs, y=[plain(n) for n in names], orientation="h", marker_color=colours,
                           error_x=error_x,
                           customdata=[percent_range(intervals.get(k)) for k in names] if intervals else None,
                           text=[f"{p:.0%}" for p in probs], hovertemplate=hover,
                           # outside the bar the label would sit under the error bar
                           textposition="inside" if intervals else "outside", insidetextanchor="start"))
    fig.update_xaxes(range=[0, 1.1], tickformat=".0%")
    return _layout(fig, height=80 + 40 * len(names), title=title, showlegend=False)


def contributions_figure(contributions: dict[str, dict]) -> go.Figure:
    """Per modality: change in log-risk when the modality is removed (and its gate weight in the hover)."""
    rows = [(name, item.get("delta_log_risk"), item.get("weight"), item.get("present"))
            for name, item in contributions.items()]
    names = [r[0] + ("" if r[3] else " (missing)") for r in rows]
    deltas = [r[1] or 0.0 for r in rows]
    weights = ["n/a" if r[2] is None else f"{r[2]:.2f}" for r in rows]
    colours = [ACCENT if d > 0 else PREDICTED for d in deltas]
    fig = go.Figure(go.Bar(x=deltas, y=names, orientation="h", marker_color=colours, customdata=weights,
                           hovertemplate="%{y}: %{x:+.3f} log-risk<br>gate weight %{customdata}"
                                         "<extra></extra>"))
    fig.update_xaxes(title="raises (+) or lowers (-) the predicted risk (log-hazard)", zeroline=True)
    return _layout(fig, height=120 + 40 * len(names), title="What each modality adds to the risk",
                   showlegend=False)


def attributions_figure(features: list[dict], title: str = "Top features") -> go.Figure:
    """Top tabular features by integrated-gradients attribution (signed). ``title`` is shown as written: it names
    the explained output, a diagnosis class or treatment from the lake (a cBioPortal study's agent), not markup."""
    rows = list(reversed(features))
    labels = [plain(f"{r.get('description') or r['name']} = {_fmt(r.get('value'))}") for r in rows]
    values = [r.get("attribution") or 0.0 for r in rows]
    fig = go.Figure(go.Bar(x=values, y=labels, orientation="h",
                           marker_color=[ACCENT if v > 0 else PREDICTED for v in values],
                           hovertemplate="%{y}<br>attribution %{x:+.3f}<extra></extra>"))
    fig.update_xaxes(title="attribution (towards the explained output)", zeroline=True)
    return _layout(fig, height=120 + 28 * len(rows), title=plain(title), showlegend=False)


def percent_range(bounds: list[float] | None) -> str:
    """``[0.31, 0.58]`` -> ``"31-58%"`` (empty without bounds)."""
    return "" if not bounds else f"{100 * bounds[0]:.0f}-{100 * bounds[1]:.0f}%"


def _fmt(value: object) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "missing"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def ct_figure(slice_2d: np.ndarray, *, stored_window: tuple[float, float] | None, display: str,
              heat: np.ndarray | None = None, heat_opacity: float = 0.45) -> go.Figure:
    """One CT slice in a display window, with an optional attribution heat-map (0-1) stretched over it.

    ``stored_window``: the (level, width) HU window the stored values in [0, 1] were normalised with; the
    display window is applied in HU (values outside the stored window were clipped at ingest). Without it
    the slice is shown min-max scaled and ``display`` is ignored.
    """
    img = np.asarray(slice_2d, np.float32)
    if stored_window is not None:
        level, width = stored_window
        hu = img * width + (level - width / 2)
        d_level, d_width = WINDOWS[display]
        shown = np.clip((hu - (d_level - d_width / 2)) / d_width, 0, 1)
    else:
        lo, hi = float(img.min()), float(img.max())
        shown = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    h, w = shown.shape
    fig = go.Figure(go.Heatmap(z=shown, colorscale="gray", zmin=0, zmax=1, showscale=False, hoverinfo="skip"))
    if heat is not None:
        heat = np.asarray(heat, np.float32)
        hy, hx = heat.shape
        fig.add_trace(go.Heatmap(z=np.where(heat > 0.05, heat, np.nan), x0=(w / hx - 1) / 2, dx=w / hx,
                                 y0=(h / hy - 1) / 2, dy=h / hy, colorscale="Hot", zmin=0, zmax=1,
                                 opacity=heat_opacity, showscale=True, colorbar={"title": "attribution"},
                                 hovertemplate="attribution %{z:.2f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", scaleanchor="x", visible=False)
    fig.update_xaxes(visible=False, range=[-0.5, w - 0.5])
    return _layout(fig, height=460, showlegend=False)


def timeline_figure(events: pd.DataFrame, *, index_date: pd.Timestamp | None = None,
                    death_date: pd.Timestamp | None = None) -> go.Figure:
    """Conditions, one row per drug, procedures, observations and encounters on one time axis.

    ``events``: ``when``, ``end``, ``category``, ``label``, optional ``count`` (``services.patient_events``).
    Medication rows are spans (first to last order of a course) on a row of their drug; the events of one
    category on one day share a marker whose hover lists them (a day's lab panel is one marker), a repeated
    condition (``count`` > 1, ``end`` its last record) with how often it was recorded. The diagnosis and death
    dates are dotted lines whose labels sit apart (the earlier one's left of its line, the later one's right).
    """
    fig = go.Figure()
    events = events if "count" in events else events.assign(count=1)
    meds = events[events["category"] == "Medication"]
    drug_rows = _drug_rows(meds)
    for category in _CATEGORIES:
        part = events[events["category"] == category]
        if part.empty:
            continue
        colour = _CATEGORY_COLOURS[category]
        if category == "Medication":
            for label, row in drug_rows.items():
                spans = part[part["label"] == label]
                x, text = [], []
                for start, end, count in zip(spans["when"], spans["end"], spans["count"], strict=True):
                    end = start if pd.isna(end) else end
                    what = f"{plain(label)}<br>{count} order{'s' if count > 1 else ''}, {start:%Y-%m-%d}" + (
                        f" to {end:%Y-%m-%d}" if end > start else "")
                    x += [start, end, None]
                    text += [what, what, None]
                fig.add_trace(go.Scatter(x=x, y=[row] * len(x), mode="lines+markers", name=row,
                                         line={"color": colour, "width": 6},
                                         marker={"size": 9, "color": colour, "symbol": "line-ns",
                                                 "line": {"width": 2, "color": colour}},
                                         text=text, hovertemplate="%{text}<extra></extra>"))
            continue
        if category == "Encounter":
            days = part.assign(day=part["when"].dt.floor("D")).drop_duplicates("day")
            fig.add_trace(go.Scatter(x=days["when"], y=[category] * len(days), name=category, mode="markers",
                                     marker={"size": 7, "symbol": "line-ns-open", "color": colour,
                                             "line": {"width": 2}},
                                     hovertemplate="%{x|%Y-%m-%d}<br>Encounter<extra></extra>"))
            continue
        part = part.assign(label=[_repeated(label, count, end) for label, count, end in
                                  zip(part["label"], part["count"], part["end"], strict=True)])
        days = part.groupby(part["when"].dt.floor("D"), sort=True)["label"].agg(_day_text)
        fig.add_trace(go.Scatter(x=days.index, y=[category] * len(days), name=category, mode="markers",
                                 marker={"size": 11, "symbol": "circle", "color": colour, "line": {"width": 2}},
                                 text=days.to_numpy(), hovertemplate="%{x|%Y-%m-%d}<br>%{text}<extra></extra>"))
    marks = [(when, text, colour) for when, text, colour in
             ((index_date, "diagnosis (index)", ACCENT), (death_date, "death", "black"))
             if when is not None and pd.notna(when)]
    for i, (when, text, colour) in enumerate(sorted(marks, key=lambda m: m[0])):
        fig.add_vline(x=when, line={"color": colour, "dash": "dot"})
        # above the top row's markers; of two marks, the earlier's label ends at its line and the later's starts at
        # its line, so that two close dates (a death soon after the diagnosis) do not print one label over the other
        anchor = "center" if len(marks) == 1 else ("right" if i == 0 else "left")
        fig.add_annotation(x=when, y=1.0, yref="paper", yanchor="bottom", yshift=12, text=text, xanchor=anchor,
                           showarrow=False, font={"color": colour},
                           hovertext=f"{text}: {when:%Y-%m-%d}")
    rows = [r for c in _CATEGORIES for r in ((drug_rows.values() or ["Medication"]) if c == "Medication" else [c])]
    fig.update_yaxes(categoryorder="array", categoryarray=list(reversed(rows)), range=[-0.5, len(rows) - 0.5])
    return _layout(fig, height=max(360, 120 + 36 * len(rows)), title="Timeline", showlegend=False)


def _drug_rows(meds: pd.DataFrame, width: int = 34) -> dict[str, str]:
    """Drug label -> its row's name on the timeline (shortened, unique), in the order of first order."""
    rows: dict[str, str] = {}
    for label in meds.sort_values("when")["label"].astype(str).drop_duplicates():
        name = plain(label if len(label) <= width else label[:width - 1] + "…")
        while name in rows.values() or name in _CATEGORIES:
            name += " "  # two drugs that shorten alike keep two rows
        rows[label] = name
    return rows


def _repeated(label: object, count: object, end: object) -> str:
    """A mark's hover line: its label, and for a condition recorded again (``count`` > 1) how often until when."""
    if pd.isna(count) or int(count) <= 1 or pd.isna(end):
        return plain(label)
    return f"{plain(label)} (recorded {int(count)} times, first here, last {end:%Y-%m-%d})"


def _day_text(labels: pd.Series, most: int = 12) -> str:
    """The hover text of one day's events: each label on a line (``most`` of them, then how many more)."""
    shown = list(dict.fromkeys(labels.astype(str)))
    more = len(shown) - most
    return "<br>".join(shown[:most]) + (f"<br>… and {more} more" if more > 0 else "")


def labs_figure(labs: pd.DataFrame, names: list[str], *, index_date: pd.Timestamp | None = None) -> go.Figure:
    """Small multiples of lab values over time (``effective``, ``lab``, ``value``), index date marked."""
    names = names or []
    fig = make_subplots(rows=max(len(names), 1), cols=1, shared_xaxes=True, subplot_titles=[plain(n) for n in names],
                        vertical_spacing=0.08 if len(names) > 1 else 0.02)
    for row, name in enumerate(names, start=1):
        part = labs[labs["lab"] == name]
        fig.add_trace(go.Scatter(x=part["effective"], y=part["value"], mode="lines+markers", name=plain(name),
                                 line={"color": PREDICTED},
                                 hovertemplate="%{x|%Y-%m-%d}: %{y:.3g}<extra></extra>"), row=row, col=1)
        fig.update_yaxes(range=_min_span(part["value"]), row=row, col=1)
    title = "Lab trends"
    if index_date is not None and pd.notna(index_date):
        fig.add_vline(x=index_date, line={"color": ACCENT, "dash": "dot"})
        title += " (red line: diagnosis)"
    return _layout(fig, height=80 + 150 * max(len(names), 1), showlegend=False, title=title)


def _min_span(values: pd.Series, share: float = 0.2) -> list[float] | None:
    """A y-range at least ``share`` of the values' magnitude wide, so that a change of 12.6 to 12.5 g/dL does not
    fill the panel like a steep fall (None: let plotly choose)."""
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return None
    low, high = float(values.min()), float(values.max())
    half = max(high - low, share * max(abs(low), abs(high)), 1e-9) * 0.6
    middle = (low + high) / 2
    return [middle - half, middle + half]


def fold_values_figure(rows: pd.DataFrame, *, title: str, chance: float | None = None) -> go.Figure:
    """A ``--cv`` run's metric per model (``label``, ``value``: the mean, ``folds``: the value of each fold):
    each fold a dot, the mean a diamond; ``chance`` as in :func:`metric_intervals_figure`."""
    rows = rows.iloc[::-1]
    dots = [(label, v) for label, folds in zip(rows["label"], rows["folds"], strict=True)
            for v in (folds or []) if v is not None]
    fig = go.Figure([
        go.Scatter(x=[v for _, v in dots], y=[label for label, _ in dots], mode="markers", name="one fold",
                   marker={"size": 7, "color": COHORT, "opacity": 0.7},
                   hovertemplate="%{y}: %{x:.3f} (one fold)<extra></extra>"),
        go.Scatter(x=rows["value"].astype(float), y=rows["label"], mode="markers", name="mean over the folds",
                   marker={"size": 12, "color": PREDICTED, "symbol": "diamond"},
                   hovertemplate="%{y}: mean %{x:.3f}<extra></extra>")])
    if chance is not None:
        fig.add_vline(x=chance, line={"color": "grey", "dash": "dot"}, annotation_text="chance")
    fig.update_xaxes(title="test value of each fold (its own test patients) and their mean")
    return _layout(fig, height=140 + 32 * len(rows), title=title, showlegend=True)


def metric_intervals_figure(rows: pd.DataFrame, *, title: str, chance: float | None = None) -> go.Figure:
    """Point estimates with 95% intervals (``label``, ``value``, ``ci_low``, ``ci_high``), one row each;
    ``chance``: a reference line at a chance-level value (0.5 for AUROC and C-index)."""
    rows = rows.iloc[::-1]
    value = rows["value"].astype(float)
    above = (rows["ci_high"].astype(float) - value).fillna(0)
    below = (value - rows["ci_low"].astype(float)).fillna(0)
    fig = go.Figure(go.Scatter(
        x=value, y=rows["label"], mode="markers", marker={"size": 10, "color": PREDICTED},
        error_x={"type": "data", "symmetric": False, "array": above, "arrayminus": below},
        hovertemplate="%{y}: %{x:.3f}<extra></extra>"))
    if chance is not None:
        fig.add_vline(x=chance, line={"color": "grey", "dash": "dot"}, annotation_text="chance")
    fig.update_xaxes(title="test value with its 95% bootstrap interval")
    return _layout(fig, height=120 + 32 * len(rows), title=title, showlegend=False)
