"""Model references: how a bundle names the code that builds its network.

A reference is one of (resolved in this order):

* a zoo name (``"presnet"``, ``"pvgg"``, ``"resnet18"`` ...; see :func:`available_models`);
* ``"package.module:factory"`` -- an importable callable, as gymnasium's ``entry_point``
  (``factory`` may be dotted: ``"mymod:Nets.small"``);
* the name of an installed plugin's entry point in the ``edgeml.models`` group
  (``[project.entry-points."edgeml.models"] mynet = "mypkg.nets:make"``).

Every side that builds a net (build, serve, edge, train-agent, evaluate, profile) goes
through :func:`load_model` (via :meth:`edgeml.bundle.Bundle.load`), so a reference that
imports here imports everywhere the same module search path is set.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from edgeml.errors import InputError

__all__ = ["ENTRY_POINT_GROUP", "load_model", "reference_of", "resolve"]

ENTRY_POINT_GROUP = "edgeml.models"


def _search_path() -> str:
    return f"module search path (sys.path) = {[p for p in sys.path]}"


def resolve(ref: str) -> Callable[..., Any]:
    """The callable behind ``ref``; an :class:`InputError` naming it when it is not there."""
    from edgeml.models import _REGISTRY, _load_all

    if not isinstance(ref, str) or not ref:
        raise InputError(f"model: reference must be a non-empty string, got {ref!r}")
    if ":" not in ref:
        _load_all()
        if ref in _REGISTRY:
            return _REGISTRY[ref]
        eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        match = [ep for ep in eps if ep.name == ref]
        if match:
            return match[0].load()
        raise InputError(
            f"model: {ref!r} is not a zoo name ({', '.join(sorted(_REGISTRY))}), not an "
            f"installed {ENTRY_POINT_GROUP!r} entry point, nor a 'package.module:factory' "
            "reference"
        )
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise InputError(f"model: reference {ref!r} must look like 'package.module:factory'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(
            f"model: cannot import module {module_name!r} of reference {ref!r} ({exc}); "
            f"put its directory on PYTHONPATH or install it. {_search_path()}"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InputError(
                f"model: module {module_name!r} ({getattr(obj, '__file__', '?')}) has no "
                f"attribute {attr!r} (reference {ref!r})"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise InputError(f"model: {ref!r} is a {type(obj).__name__}, not a callable factory")
    return obj


def load_model(ref: str, kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """Build the module that ``ref`` names with ``kwargs`` (see the module docstring)."""
    factory = resolve(ref)
    try:
        model = factory(**dict(kwargs or {}))
    except (TypeError, ValueError) as exc:
        raise InputError(f"model: {ref!r} with kwargs {dict(kwargs or {})} fails: {exc}") from None
    if not isinstance(model, nn.Module):
        raise InputError(f"model: {ref!r} returned a {type(model).__name__}, not a torch nn.Module")
    return model


def reference_of(obj: Callable[..., Any]) -> str:
    """``"module:qualname"`` of a module-level callable, so another process can import it.

    A callable defined in a script run as ``__main__`` is named after the script's file
    (``examples/foo.py`` -> ``foo:make``): other processes import it once the script's
    directory is on their ``PYTHONPATH``.
    """
    qualname = getattr(obj, "__qualname__", "")
    module = getattr(obj, "__module__", None)
    if not module or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        raise InputError(
            f"model: {obj!r} is not a module-level function or class; a bundle must rebuild "
            "it in another process: pass a 'package.module:factory' reference"
        )
    if module == "__main__":
        main = sys.modules["__main__"]
        path = getattr(main, "__file__", None) or inspect.getsourcefile(obj)
        if not path:
            raise InputError(
                f"model: {qualname} is defined in an interactive session; define it in a "
                "module and pass 'module:factory'"
            )
        module = Path(path).stem
    return f"{module}:{qualname}"
