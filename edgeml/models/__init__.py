"""Model zoo: every model is built by name with keyword arguments (the bundle stores both)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: make a model factory buildable by ``name``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return deco


def available_models() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a zoo model; an unknown name lists the known ones."""
    _load_all()
    if name not in _REGISTRY:
        raise ValueError(f"model: unknown name {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**kwargs)


def _load_all() -> None:
    # Importing the modules runs their @register decorators.
    from edgeml.models import progressive_cnn, standard  # noqa: F401
