"""tumorboard's Streamlit app: ``app.py`` routes to ``views/``; ``services`` reads, ``charts`` draws.

The page files live in ``views/``, not ``pages/``: Streamlit lists a folder named ``pages`` (and ``app.py``)
in the sidebar on its own, so a direct link such as ``/models`` showed file names instead of the router's.
"""
