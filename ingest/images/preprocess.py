"""Preprocessing: small transforms with one contract, and presets chosen per modality from ``images.yaml``.

Every transform is a callable ``Image -> Image``; an :class:`Image` is a float32 array, ``(H, W)`` or
``(S, H, W)``, with its spacing in mm per array axis (``None`` when unknown). Transforms never change the
number of axes. A preset runs, in order: resample to a target spacing, intensity normalisation, then fit to a
target size (centre crop/pad, or resize).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, NamedTuple, Protocol

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "images.yaml"
FLOAT16_MAX = float(np.finfo(np.float16).max)


class Image(NamedTuple):
    """An array ``(H, W)`` or ``(S, H, W)`` (float32) and its spacing in mm per axis (or ``None``)."""

    array: np.ndarray
    spacing: tuple[float, ...] | None = None


class Transform(Protocol):
    def __call__(self, image: Image) -> Image: ...


def _check_axes(name: str, values: tuple, image: Image) -> None:
    if len(values) != image.array.ndim:
        raise ValueError(f"{name}: {len(values)} axes given but the image has {image.array.ndim}"
                         f" (shape {image.array.shape}); give one value per axis")


def _zoom(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Separable linear interpolation to ``shape``, corner samples aligned (no anti-aliasing).

    A volume is resized plane by plane in-plane first (each plane stays in cache), then across planes.
    """
    out = array.astype(np.float32, copy=False)
    if out.ndim == 3 and out.shape[1:] != tuple(shape[1:]):
        planes = np.empty((out.shape[0], *shape[1:]), np.float32)
        for index, plane in enumerate(out):
            planes[index] = _zoom(plane, shape[1:])
        out = planes
    for axis in sorted(range(array.ndim), key=lambda a: shape[a] / array.shape[a]):  # shrink first
        n, m = out.shape[axis], shape[axis]
        if n == m:
            continue
        position = np.linspace(0, n - 1, m) if m > 1 else np.array([(n - 1) / 2])
        low = np.floor(position).astype(np.intp)
        high = np.minimum(low + 1, n - 1)
        weight = (position - low).astype(np.float32).reshape([m if a == axis else 1 for a in range(out.ndim)])
        first = np.take(out, low, axis=axis)
        out = np.take(out, high, axis=axis)
        out -= first  # in place: first + (second - first) * weight
        out *= weight
        out += first
    return out


@dataclass(frozen=True)
class Resample:
    """Linear resampling to ``spacing_mm`` (one value per axis); images without spacing pass unchanged."""

    spacing_mm: tuple[float, ...]

    def __call__(self, image: Image) -> Image:
        _check_axes("Resample", self.spacing_mm, image)
        if image.spacing is None:
            return image
        shape = tuple(max(1, round(n * s / t)) for n, s, t in zip(image.array.shape, image.spacing,
                                                                   self.spacing_mm, strict=True))
        return Image(_zoom(image.array, shape), tuple(float(s) for s in self.spacing_mm))


@dataclass(frozen=True)
class Resize:
    """Linear resize to exactly ``size`` samples per axis; the spacing is scaled to match."""

    size: tuple[int, ...]

    def __call__(self, image: Image) -> Image:
        _check_axes("Resize", self.size, image)
        shape = tuple(int(n) for n in self.size)
        factors = tuple(n / m for n, m in zip(shape, image.array.shape, strict=True))
        spacing = None if image.spacing is None else tuple(
            s / f for s, f in zip(image.spacing, factors, strict=True))
        return Image(_zoom(image.array, shape), spacing)


@dataclass(frozen=True)
class CropOrPad:
    """Centre crop and/or pad with ``value`` to exactly ``size`` samples per axis (spacing unchanged)."""

    size: tuple[int, ...]
    value: float = 0.0

    def __call__(self, image: Image) -> Image:
        _check_axes("CropOrPad", self.size, image)
        array = image.array
        crop, pad = [], []
        for n, target in zip(array.shape, self.size, strict=True):
            start = max(0, (n - target) // 2)
            crop.append(slice(start, start + min(n, target)))
            before = max(0, (target - n) // 2)
            pad.append((before, max(0, target - n - before)))
        out = np.pad(array[tuple(crop)], pad, mode="constant", constant_values=self.value)
        return Image(out.astype(np.float32, copy=False), image.spacing)


@dataclass(frozen=True)
class Window:
    """Intensity window: clip to ``[level - width/2, level + width/2]`` and scale to ``[0, 1]``."""

    level: float
    width: float

    def __call__(self, image: Image) -> Image:
        low = self.level - self.width / 2
        out = image.array - np.float32(low)  # the one new array: the steps below work in place (a volume
        out /= np.float32(self.width)  # of 1,000 512x512 slices is 1 GB in float32)
        np.clip(out, 0.0, 1.0, out=out)
        return Image(out.astype(np.float32, copy=False), image.spacing)


@dataclass(frozen=True)
class ZScore:
    """Per-image z-score: ``(x - mean) / std`` (``std`` floored at ``eps``)."""

    eps: float = 1e-6

    def __call__(self, image: Image) -> Image:
        array = image.array
        mean, std = np.float32(array.mean()), np.float32(max(float(array.std()), self.eps))  # std: a temporary
        out = array - mean  # one new array (see Window), made after std's temporary is freed
        out /= std
        return Image(out.astype(np.float32, copy=False), image.spacing)


@dataclass(frozen=True)
class MinMax:
    """Per-image min-max scaling to ``[0, 1]`` (a constant image becomes all zeros)."""

    def __call__(self, image: Image) -> Image:
        array = image.array
        low, high = float(array.min()), float(array.max())
        if high > low:
            out = array - np.float32(low)  # one new array (see Window)
            out /= np.float32(high - low)
        else:
            out = np.zeros_like(array)
        return Image(out.astype(np.float32, copy=False), image.spacing)


@dataclass(frozen=True)
class Compose:
    """Apply ``transforms`` in order."""

    transforms: tuple[Transform, ...]

    def __call__(self, image: Image) -> Image:
        for transform in self.transforms:
            image = transform(image)
        return image

    def describe(self) -> list[dict]:
        """JSON-ready list of ``{"name": ..., **params}`` (stored with each image)."""
        return [{"name": type(t).__name__, **asdict(t)} for t in self.transforms]


# -- configuration ----------------------------------------------------------------------------------------
class WindowConfig(BaseModel):
    """A named intensity window (HU for CT): centre ``level`` and ``width``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    level: float
    width: float = Field(gt=0)


class Preset(BaseModel):
    """Preprocessing for images of some modalities and dimensionality (first matching preset wins).

    ``spacing_mm`` and ``size`` are in array axis order: ``[slice, row, col]`` for volumes, ``[row, col]``
    for 2D images. ``fit`` says how ``size`` is reached: ``crop_pad`` (keeps the physical scale, for use after
    resampling) or ``resize`` (interpolates to exactly ``size``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    modalities: list[str] = Field(default_factory=list, description="DICOM Modality codes; empty = any")
    ndim: Literal[2, 3] | None = None
    spacing_mm: list[float] | None = None
    size: list[int] | None = None
    fit: Literal["crop_pad", "resize"] = "crop_pad"
    normalize: Literal["window", "zscore", "minmax", "none"] = "minmax"
    window: str | None = None
    pad_value: float = 0.0

    @model_validator(mode="after")
    def _consistent(self) -> Preset:
        for key in ("spacing_mm", "size"):
            values = getattr(self, key)
            if values is not None:
                if self.ndim is not None and len(values) != self.ndim:
                    raise ValueError(f"preset {self.name!r}: {key} has {len(values)} values but ndim is"
                                     f" {self.ndim}")
                if any(v <= 0 for v in values):
                    raise ValueError(f"preset {self.name!r}: {key} values must be positive")
        if (self.spacing_mm or self.size) and self.ndim is None:
            raise ValueError(f"preset {self.name!r}: set ndim (2 or 3) when giving spacing_mm or size")
        if (self.normalize == "window") != (self.window is not None):
            raise ValueError(f"preset {self.name!r}: give window: <name> exactly when normalize is window")
        return self

    def matches(self, modality: str | None, ndim: int) -> bool:
        modality_ok = not self.modalities or (modality or "").upper() in {m.upper() for m in self.modalities}
        return modality_ok and self.ndim in (None, ndim)


class ImagesConfig(BaseModel):
    """``configs/images.yaml``: tensor dtype, named windows and the ordered preset list."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    dtype: Literal["float16", "float32"] = "float16"
    windows: dict[str, WindowConfig]
    presets: list[Preset]

    @model_validator(mode="after")
    def _consistent(self) -> ImagesConfig:
        for preset in self.presets:
            if preset.window is not None and preset.window not in self.windows:
                raise ValueError(f"preset {preset.name!r}: unknown window {preset.window!r}; known:"
                                 f" {sorted(self.windows)}")
        for ndim in (2, 3):
            if not any(not p.modalities and p.ndim in (None, ndim) for p in self.presets):
                raise ValueError(f"no catch-all preset for {ndim}D images: add one without modalities"
                                 f" (ndim: {ndim} or no ndim) after the specific ones")
        return self

    def preset_for(self, modality: str | None, ndim: int) -> Preset:
        """The first preset matching ``modality`` and ``ndim`` (catch-all presets guarantee one)."""
        return next(p for p in self.presets if p.matches(modality, ndim))

    def pipeline(self, preset: Preset) -> Compose:
        """The transforms a preset stands for."""
        steps: list[Transform] = []
        if preset.spacing_mm is not None:
            steps.append(Resample(tuple(preset.spacing_mm)))
        if preset.normalize == "window":
            window = self.windows[preset.window]
            steps.append(Window(window.level, window.width))
        elif preset.normalize == "zscore":
            steps.append(ZScore())
        elif preset.normalize == "minmax":
            steps.append(MinMax())
        if preset.size is not None:
            size = tuple(preset.size)
            steps.append(CropOrPad(size, preset.pad_value) if preset.fit == "crop_pad" else Resize(size))
        return Compose(tuple(steps))


def load_config(path: Path | None = None) -> ImagesConfig:
    """Load and validate an images config (default ``configs/images.yaml``); errors name the file."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        raw = yaml.safe_load(path.read_text())
        return ImagesConfig.model_validate(raw or {})
    except FileNotFoundError:
        raise FileNotFoundError(f"images config {path} not found; pass --config or restore"
                                f" {DEFAULT_CONFIG}") from None
    except (yaml.YAMLError, ValueError) as exc:
        raise ValueError(f"{path}: invalid images config: {exc}") from exc


def preprocess(array: np.ndarray, spacing: tuple[float, ...] | None, modality: str | None,
               config: ImagesConfig) -> tuple[np.ndarray, dict, list[str]]:
    """Apply the matching preset; returns the tensor (config dtype), a JSON-ready description and warnings."""
    preset = config.preset_for(modality, array.ndim)
    pipeline = config.pipeline(preset)
    warnings = []
    if spacing is None and preset.spacing_mm is not None:
        warnings.append(f"no pixel spacing: not resampled to {preset.spacing_mm} mm")
    out = pipeline(Image(array.astype(np.float32, copy=False), spacing)).array
    if config.dtype == "float16" and out.size and float(np.abs(out).max()) > FLOAT16_MAX:
        warnings.append("values beyond the float16 range were clipped; normalise or use dtype float32")
        out = np.clip(out, -FLOAT16_MAX, FLOAT16_MAX)
    description = {"preset": preset.name, "dtype": config.dtype, "steps": pipeline.describe()}
    return np.ascontiguousarray(out, dtype=config.dtype), description, warnings
