"""Tensor store: preprocessed image tensors in Arrow IPC files under ``lake.tensor_dir``, read by mmap.

One file per :meth:`TensorStore.write` call (one ingest batch): a single record batch with columns
``data: large_list<float16 | float32>`` (the flattened tensor) and ``shape: list<int32>``. Reading memory-maps
the file and returns a NumPy view into the map: no decode and no copy. Writes go to a temporary file in the
same folder and are published with ``os.replace``, so a reader never sees a half-written file.
"""

from __future__ import annotations

import os
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa

MAX_OPEN_FILES = 64
PREFIX = "images-"


class _HasTensorDir(Protocol):
    path: Path

    @property
    def tensor_dir(self) -> Path: ...


class _MappedFile:
    """An open, memory-mapped tensor file: flat values, offsets and shapes (all views into the map)."""

    def __init__(self, path: Path) -> None:
        self.source = pa.memory_map(str(path), "r")
        batch = pa.ipc.open_file(self.source).get_batch(0)
        data = batch.column("data")
        self.values = data.values.to_numpy(zero_copy_only=True)
        self.offsets = data.offsets.to_numpy(zero_copy_only=True)
        self.shapes = batch.column("shape").to_pylist()


class TensorStore:
    """Write batches of tensors into a lake and read single tensors back by ``(file, row)``.

    Args:
        lake: the :class:`ingest.lake.Lake` (anything with ``path`` and ``tensor_dir``).
    """

    def __init__(self, lake: _HasTensorDir) -> None:
        self.root = Path(lake.path)
        self._lake = lake
        self._open: OrderedDict[str, _MappedFile] = OrderedDict()

    def write(self, arrays: Sequence[np.ndarray]) -> list[tuple[str, int]]:
        """Write ``arrays`` (all float16 or all float32, any shapes) into one new file.

        Returns:
            ``(file, row)`` per array, in order; ``file`` is relative to the lake root.
        """
        if not arrays:
            return []
        dtypes = {np.dtype(a.dtype) for a in arrays}
        if len(dtypes) != 1 or next(iter(dtypes)) not in (np.dtype(np.float16), np.dtype(np.float32)):
            raise ValueError(f"TensorStore.write: arrays must all be float16 or all float32, got {dtypes}")
        flat = [np.ascontiguousarray(a).reshape(-1) for a in arrays]
        offsets = np.zeros(len(flat) + 1, np.int64)
        np.cumsum([f.size for f in flat], out=offsets[1:])
        data = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(flat)))
        shapes = pa.array([list(a.shape) for a in arrays], pa.list_(pa.int32()))
        batch = pa.record_batch([data, shapes], names=["data", "shape"])
        folder = self._lake.tensor_dir
        target = folder / f"{PREFIX}{uuid.uuid4().hex}.arrow"
        temporary = folder / f".{target.name}.tmp"
        try:
            with pa.OSFile(str(temporary), "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
                writer.write_batch(batch)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
        relative = target.relative_to(self.root).as_posix()
        return [(relative, row) for row in range(len(arrays))]

    def read(self, file: str, row: int) -> np.ndarray:
        """The tensor at ``row`` of ``file`` (relative to the lake): a read-only view into the memory map."""
        mapped = self._mapped(file)
        if not 0 <= row < len(mapped.shapes):
            raise IndexError(f"{file}: row {row} out of range (the file holds {len(mapped.shapes)} tensors)")
        start, stop = int(mapped.offsets[row]), int(mapped.offsets[row + 1])
        return mapped.values[start:stop].reshape(mapped.shapes[row])

    def prune(self, referenced: set[str]) -> int:
        """Delete the tensor files no row references any more (a re-ingest replaced all their images); returns
        how many. A reader's open memory map stays valid: the file goes when the map is closed."""
        removed = 0
        for path in sorted(self._lake.tensor_dir.glob(f"{PREFIX}*.arrow")):
            name = path.relative_to(self.root).as_posix()
            if name not in referenced:
                self._open.pop(name, None)
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def close(self) -> None:
        """Drop the cached memory maps (a map stays valid while an array read from it is alive)."""
        self._open.clear()

    def _mapped(self, file: str) -> _MappedFile:
        mapped = self._open.get(file)
        if mapped is not None:
            self._open.move_to_end(file)
            return mapped
        path = self.root / file
        tensors = (self.root / "_tensors").resolve()
        if not path.resolve().is_relative_to(tensors):  # a lake from elsewhere names only its own tensor files
            raise FileNotFoundError("an images row names a tensor file outside the lake's _tensors folder (the "
                                    "lake was changed outside tumorboard); re-run `tumorboard ingest images`")
        if not path.is_file():
            raise FileNotFoundError(f"tensor file {path} not found; re-run `tumorboard ingest images` for the"
                                    " images that reference it")
        mapped = self._open[file] = _MappedFile(path)
        if len(self._open) > MAX_OPEN_FILES:
            self._open.popitem(last=False)
        return mapped
