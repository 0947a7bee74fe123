"""Deterministic identifiers drawn from a numpy random generator."""

from __future__ import annotations

import numpy as np


def uuid_strings(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` random version-4 UUID strings drawn from ``rng`` (deterministic for a seed)."""
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hexes = raw.tobytes().hex()
    return [
        f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        for h in (hexes[32 * i : 32 * (i + 1)] for i in range(n))
    ]


class IdSource:
    """Hands out UUID strings one at a time, drawing them from ``rng`` in blocks."""

    def __init__(self, rng: np.random.Generator, block: int = 4096) -> None:
        self._rng = rng
        self._block = block
        self._pool: list[str] = []

    def __call__(self) -> str:
        if not self._pool:
            self._pool = uuid_strings(self._rng, self._block)[::-1]
        return self._pool.pop()
