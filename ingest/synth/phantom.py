"""Chest CT phantom with one lung nodule: HU volume of shape (n_slices, size, size).

Body (~40 HU) with a spine (~400 HU), two lungs (~-820 HU) and a nodule whose diameter is the
patient's ``nodule_size_mm``. Malignant nodules get an irregular (lobulated) margin, spicules and a
heterogeneous texture (necrotic core when large), all scaled by the latent *aggressiveness*; benign
nodules are smooth, homogeneous and sometimes calcified. Partial-volume edges are soft (sigmoid).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

LUNG_X, LUNG_Y, LUNG_A, LUNG_B = 64.0, -5.0, 46.0, 70.0  # lung centres (+-x, y) and semi-axes, mm
LUNG_HU = -820.0


@dataclass(frozen=True)
class Geometry:
    """Voxel grid: ``size`` x ``size`` pixels of ``spacing`` mm; ``n_slices`` slices, ``thickness`` mm."""

    size: int
    n_slices: int
    spacing: float
    thickness: float

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel-centre coordinates in mm (z, y, x), centred on 0; each 1-D."""
        xy = (np.arange(self.size) - (self.size - 1) / 2.0) * self.spacing
        z = (np.arange(self.n_slices) - (self.n_slices - 1) / 2.0) * self.thickness
        return z, xy, xy


def _soft(distance_inside: np.ndarray, width: float) -> np.ndarray:
    """Partial-volume membership: 1 well inside (positive distance), 0 well outside."""
    return 1.0 / (1.0 + np.exp(-np.clip(distance_inside / width, -30.0, 30.0)))


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


@functools.lru_cache(maxsize=4)
def _anatomy(geo: Geometry) -> np.ndarray:
    """Noise-free HU of body, spine and lungs (float, (n_slices, size, size)); lungs narrow upwards."""
    z, y, x = geo.axes()
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    body = _soft(1.0 - np.sqrt((xx / 150.0) ** 2 + (yy / 105.0) ** 2), 0.02)
    hu = -1000.0 + 1040.0 * body
    hu += 360.0 * _soft(15.0 - np.sqrt(xx**2 + (yy - 75.0) ** 2), 1.5)
    taper = 1.0 - 0.12 * (zz - z.min()) / max(float(np.ptp(z)), 1.0)
    lungs = np.zeros_like(hu)
    for side in (-1.0, 1.0):
        r = np.sqrt(((xx - side * LUNG_X) / (LUNG_A * taper)) ** 2 + ((yy - LUNG_Y) / (LUNG_B * taper)) ** 2)
        lungs = np.maximum(lungs, _soft(1.0 - r, 0.04))
    hu = hu * (1.0 - lungs) + LUNG_HU * lungs
    hu.flags.writeable = False
    return hu


def ct_volume(
    geo: Geometry, rng: np.random.Generator, *, size_mm: float, aggressiveness: float, malignant: bool
) -> tuple[np.ndarray, int]:
    """One patient's HU volume.

    Returns:
        ``(hu, key_slice)``: int16 HU array of shape (n_slices, size, size) and the index of the slice
        through the nodule centre.
    """
    z, y, x = geo.axes()
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    hu = _anatomy(geo).copy()

    side = rng.choice([-1.0, 1.0])
    radius = size_mm / 2.0
    centre = np.array(
        [
            rng.uniform(-0.5, 0.5) * geo.thickness,
            LUNG_Y + rng.uniform(-0.35, 0.35) * LUNG_B,
            side * LUNG_X + rng.uniform(-0.3, 0.3) * LUNG_A,
        ]
    )
    a = _sigmoid(1.6 * aggressiveness) if malignant else 0.0
    extent = radius * (1.4 + 1.6 * a) + 3.0 * geo.spacing
    box = (
        slice(None),
        *(
            slice(int(np.searchsorted(ax, c - extent)), int(np.searchsorted(ax, c + extent)))
            for ax, c in ((y, centre[1]), (x, centre[2]))
        ),
    )
    dz, dy, dx = zz[box] - centre[0], yy[box] - centre[1], xx[box] - centre[2]
    dist = np.sqrt(dz**2 + dy**2 + dx**2)
    theta = np.arctan2(dy, dx)
    edge = 0.5 * geo.spacing
    lobulation = 0.03 + 0.35 * a
    k = int(rng.integers(5, 9))
    margin = radius * (
        1.0
        + lobulation
        * (
            0.6 * np.cos(k * theta + rng.uniform(0, 6.3))
            + 0.4 * np.cos((k + 3) * theta + rng.uniform(0, 6.3))
        )
    )
    nodule = _soft(margin - dist, edge)
    for _ in range(int(round(2 + 10 * a)) if malignant else 0):
        u = np.array([rng.normal(0.0, 0.25), *np.sin(rng.uniform(0, 6.3) + np.array([0.0, np.pi / 2]))])
        u /= np.linalg.norm(u)
        t = dz * u[0] + dy * u[1] + dx * u[2]
        perp = np.sqrt(np.maximum(dist**2 - t**2, 0.0))
        length = radius * (1.3 + 1.6 * a) + geo.spacing
        spicule = _soft(0.8 * geo.spacing - perp, 0.3 * geo.spacing) * _soft(length - t, edge) * (t > 0)
        nodule = np.maximum(nodule, 0.8 * spicule)
    tissue = 35.0 + rng.normal(0.0, 6.0 + 70.0 * a, dist.shape)
    if malignant and a > 0.7 and radius > 2.0 * geo.spacing:
        tissue -= 45.0 * _soft(0.45 * radius - dist, edge)
    if not malignant and rng.random() < 0.4:
        tissue += 420.0 * _soft(0.45 * radius - dist, edge)
    hu[box] = hu[box] * (1.0 - nodule) + tissue * nodule
    hu += rng.normal(0.0, 12.0, hu.shape)
    key = int(np.argmin(np.abs(z - centre[0])))
    return np.clip(np.round(hu), -1024, 3071).astype(np.int16), key
