"""tumorboard's Streamlit app: ``app.py`` routes to ``pages/``; ``services`` reads, ``charts`` draws."""
