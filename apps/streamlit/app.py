"""tumorboard's Streamlit app, the router: ``tumorboard app --lake LAKE --runs DIR`` starts it.

Equivalent: ``streamlit run apps/streamlit/app.py --server.address 127.0.0.1 --server.headless true
--client.showErrorDetails none -- --lake LAKE --runs DIR`` (or the TUMORBOARD_LAKE / TUMORBOARD_RUNS
environment variables instead of the arguments after ``--``).
"""

from pathlib import Path

import streamlit as st

from apps.streamlit.services import warm_imports

# not "pages/" (see apps/streamlit/__init__.py)
PAGES = Path(__file__).resolve().parent / "views"

st.set_option("client.showErrorDetails", "none")  # never show a traceback (patient data) in the browser
st.set_page_config(page_title="tumorboard", page_icon=":material/biotech:", layout="wide")
warm_imports()  # heavy libraries load in the background while the first page reads the lake
st.navigation([
    st.Page(PAGES / "patient.py", title="Patient", icon=":material/person:", default=True),
    st.Page(PAGES / "models.py", title="Models", icon=":material/monitoring:"),
    st.Page(PAGES / "data.py", title="Data", icon=":material/database:"),
]).run()
