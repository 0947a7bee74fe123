"""Image ingest: DICOM series, NIfTI volumes and PNG/JPEG/TIFF files -> preprocessed tensors in the lake.

Public API: :func:`ingest_images` (files -> ``images`` table + tensor store), :class:`TensorStore`
(``write(arrays) -> [(file, row)]``, ``read(file, row) -> np.ndarray``), :func:`load_config` and the
transforms in :mod:`ingest.images.preprocess`.
"""

from ingest.images.pipeline import ingest_images
from ingest.images.preprocess import ImagesConfig, load_config
from ingest.images.store import TensorStore

__all__ = ["ImagesConfig", "TensorStore", "ingest_images", "load_config"]
