"""tumorboard applications: the command line (``apps.cli``) and the Streamlit app (``apps.streamlit``)."""
