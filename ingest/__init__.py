"""tumorboard ingest: adapters that load FHIR, variants, images and curated tables into the lake.

``ingest`` never imports ``fusion``; ``fusion`` reads the lake only through :mod:`ingest.lake`,
:mod:`ingest.schema` and :mod:`ingest.reader`.
"""

__version__ = "0.1.0"
