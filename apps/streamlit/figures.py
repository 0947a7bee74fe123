"""The chart builders of :mod:`apps.streamlit.charts`, cached per input (``st.cache_resource``).

Building a plotly figure (validation, template copies) is about half of a cached page render; a rerun with
the same inputs gets the figure built last time. ``cache_resource`` hands out the same object without a
copy: nothing mutates a figure after it is built (``st.plotly_chart`` only serialises it).
"""

from __future__ import annotations

import streamlit as st

from apps.streamlit import charts

_cached = st.cache_resource(show_spinner=False, max_entries=256)

survival_figure = _cached(charts.survival_figure)
probability_bars = _cached(charts.probability_bars)
contributions_figure = _cached(charts.contributions_figure)
attributions_figure = _cached(charts.attributions_figure)
ct_figure = _cached(charts.ct_figure)
timeline_figure = _cached(charts.timeline_figure)
labs_figure = _cached(charts.labs_figure)
metric_intervals_figure = _cached(charts.metric_intervals_figure)
fold_values_figure = _cached(charts.fold_values_figure)
