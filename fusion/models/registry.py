"""Registries of encoders and fusion modules, in timm's style.

``@register_encoder("mlp", kind="tabular")`` registers a thin entry function; ``create_encoder("mlp", **kw)``
builds it; ``list_encoders("tabular")`` lists names. The same holds for fusion modules with
``register_fusion`` / ``create_fusion`` / ``list_fusions``. Every encoder exposes ``out_dim`` (int), every
fusion module ``in_dims`` (dict modality -> int) and ``out_dim``.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import TypeVar

from torch import nn

F = TypeVar("F", bound=Callable[..., nn.Module])

ENCODER_KINDS = ("image", "tabular")
_ENCODERS: dict[str, tuple[str, Callable[..., nn.Module]]] = {}
_FUSIONS: dict[str, Callable[..., nn.Module]] = {}


def register_encoder(name: str, *, kind: str) -> Callable[[F], F]:
    """Decorator registering an encoder entry function under ``name``; ``kind`` is "image" or "tabular"."""
    if kind not in ENCODER_KINDS:
        raise ValueError(f"register_encoder({name!r}): kind must be one of {ENCODER_KINDS}, got {kind!r}")

    def decorator(fn: F) -> F:
        if name in _ENCODERS:
            raise ValueError(f"register_encoder: the name {name!r} is already registered")
        _ENCODERS[name] = (kind, fn)
        return fn

    return decorator


def list_encoders(kind: str | None = None) -> list[str]:
    """Sorted names of registered encoders, optionally only those of one ``kind``."""
    if kind is not None and kind not in ENCODER_KINDS:
        raise ValueError(f"list_encoders: kind must be one of {ENCODER_KINDS} or None, got {kind!r}")
    return sorted(n for n, (k, _) in _ENCODERS.items() if kind is None or k == kind)


def encoder_kind(name: str) -> str:
    """The kind ("image" or "tabular") of a registered encoder."""
    _check_name(name, _ENCODERS, "encoder", list_encoders())
    return _ENCODERS[name][0]


def create_encoder(name: str, **kwargs: object) -> nn.Module:
    """Build the encoder registered as ``name`` with keyword arguments ``kwargs``; it has an ``out_dim``."""
    _check_name(name, _ENCODERS, "encoder", list_encoders())
    check_arguments(_ENCODERS[name][1], kwargs, f"encoder {name!r}")
    module = _ENCODERS[name][1](**kwargs)
    if not isinstance(getattr(module, "out_dim", None), int):
        raise TypeError(f"encoder {name!r} does not expose an integer `out_dim`; fix its entry function")
    return module


def register_fusion(name: str) -> Callable[[F], F]:
    """Decorator registering a fusion-module entry function under ``name``."""

    def decorator(fn: F) -> F:
        if name in _FUSIONS:
            raise ValueError(f"register_fusion: the name {name!r} is already registered")
        _FUSIONS[name] = fn
        return fn

    return decorator


def list_fusions() -> list[str]:
    """Sorted names of registered fusion modules."""
    return sorted(_FUSIONS)


def create_fusion(name: str, **kwargs: object) -> nn.Module:
    """Build the fusion module registered as ``name``; kwargs such as ``in_dims={"image": 64}, out_dim``."""
    _check_name(name, _FUSIONS, "fusion module", list_fusions())
    check_arguments(_FUSIONS[name], kwargs, f"fusion module {name!r}")
    return _FUSIONS[name](**kwargs)


def encoder_entry(name: str) -> Callable[..., nn.Module]:
    """The entry function of a registered encoder (for checking arguments before building)."""
    _check_name(name, _ENCODERS, "encoder", list_encoders())
    return _ENCODERS[name][1]


def fusion_entry(name: str) -> Callable[..., nn.Module]:
    """The entry function of a registered fusion module."""
    _check_name(name, _FUSIONS, "fusion module", list_fusions())
    return _FUSIONS[name]


def check_arguments(fn: Callable[..., object], kwargs: dict, what: str) -> None:
    """Raise ValueError naming the valid arguments when ``kwargs`` has one that ``fn`` does not take (an entry
    function that forwards ``**kwargs`` to the class it returns is checked against that class)."""
    unknown = unknown_arguments(fn, kwargs)
    if unknown:
        raise ValueError(f"{what} has no argument(s) {', '.join(unknown)}; valid: {', '.join(_parameters(fn))}")


def unknown_arguments(fn: Callable[..., object], kwargs: dict) -> list[str]:
    """The sorted keys of ``kwargs`` that ``fn`` does not take (none when it takes any keyword)."""
    params = _parameters(fn)
    return [] if params is None else sorted(set(kwargs) - set(params))


def _parameters(fn: Callable[..., object]) -> list[str] | None:
    """Named parameters of ``fn`` (plus those of the class it returns, when it forwards ``**kwargs``); None
    when any ``**kwargs`` stays open."""
    params = inspect.signature(fn).parameters
    named = [n for n, p in params.items() if p.kind not in _VARIADIC]
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return named
    target = typing.get_type_hints(fn).get("return")
    if not inspect.isclass(target):
        return None
    inner = inspect.signature(target.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inner.values()):
        return None
    return named + [n for n, p in inner.items() if n != "self" and p.kind not in _VARIADIC and n not in named]


_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _check_name(name: str, table: dict, what: str, valid: list[str]) -> None:
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; valid names: {', '.join(valid)}")
