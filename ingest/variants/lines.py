"""Read a text file (plain or gzip) as Arrow string arrays of lines, or as blocks of whole lines' bytes, in
bounded chunks.

Line handling matches Python's text mode (``open(..., errors="replace")``): ``\\n``, ``\\r\\n`` and bare
``\\r`` end a line, undecodable UTF-8 bytes become U+FFFD, a last line without a newline is kept. A truncated
or corrupt ``.gz`` yields every complete line decompressed before the break, then raises.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

CHUNK_BYTES = 16 << 20  # about 40,000 VCF lines with SnpEff annotations


def open_binary(path) -> BinaryIO:
    """The file as a binary stream, gunzipped when it starts with the gzip magic bytes."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def _split(data: bytes, first_line: int) -> tuple[np.ndarray, pa.Array, int]:
    """Complete lines (``\n`` breaks, the last one included) -> (numbers of the non-empty lines, those lines,
    number of the line after the last)."""
    text = data[:-1].decode("utf-8", errors="replace")
    lines = pc.split_pattern(pa.array([text], pa.large_string()), "\n").flatten().cast(pa.string())
    numbers = np.arange(first_line, first_line + len(lines), dtype=np.int64)
    lengths = pc.binary_length(lines).to_numpy(zero_copy_only=False)
    if not lengths.all():
        keep = lengths > 0
        lines, numbers = lines.filter(pa.array(keep)), numbers[keep]
    return numbers, lines, first_line + len(lengths)


def _line_end(data: bytes) -> int:
    """Length of the complete lines at the start of ``data``, line break included (a trailing "\r" may be half of
    "\r\n": it stays with its line for the next read)."""
    cut = data.rfind(b"\n") + 1
    if cut == 0:  # no "\n": the last "\r" before the final byte ends a line (a bare "\r": nothing else follows)
        return data.rfind(b"\r", 0, len(data) - 1) + 1
    return cut


def line_blocks(fh: BinaryIO, *, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Yield the bytes from the current position of ``fh`` as blocks of about ``chunk_bytes`` of complete lines,
    every line break written as ``\n`` and every block ending with one (added after a last line without one).

    Raises:
        EOFError, OSError, zlib.error: the stream breaks (after the block of the complete lines before the break).
    """
    tail = b""
    eof = False
    while not eof:
        pieces, size, failure = [tail], len(tail), None
        try:
            while True:  # at least one read, so a line longer than a chunk grows the tail
                piece = fh.read1(max(chunk_bytes - size, 1 << 16))
                if not piece:
                    eof = True
                    break
                pieces.append(piece)
                size += len(piece)
                if size >= chunk_bytes:
                    break
        except Exception as exc:  # EOFError, gzip.BadGzipFile, zlib.error: keep the lines before the break
            failure = exc
        data = b"".join(pieces)
        cut = len(data) if eof else _line_end(data)
        if cut:
            block = data[:cut]
            if b"\r" in block:
                block = block.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            yield block if block.endswith(b"\n") else block + b"\n"
        if failure is not None:
            raise failure
        tail = data[cut:]


def line_chunks(fh: BinaryIO, first_line: int, *,
                chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[np.ndarray, pa.Array]]:
    """Yield ``(line_numbers, lines)`` for the non-empty lines from the current position of ``fh``.

    Args:
        fh: a binary stream (see :func:`open_binary`).
        first_line: the 1-based number of the next line in the file.
        chunk_bytes: about how many decompressed bytes each chunk holds.

    Yields:
        ``line_numbers``: int64 array (n,), 1-based; ``lines``: string array (n,) without line breaks.

    Raises:
        EOFError, OSError, zlib.error: the stream breaks (after the complete lines before the break).
    """
    line_no = first_line
    for block in line_blocks(fh, chunk_bytes=chunk_bytes):
        numbers, lines, line_no = _split(block, line_no)
        if len(lines):
            yield numbers, lines
