"""EdgeML: split (edge/cloud) inference with early-exit networks.

The Python API, loaded lazily so ``import edgeml`` stays light (no torch until used)::

    net = edgeml.from_module(my_resnet, exits_after="auto", example=x)   # blocks + exit heads
    bundle = edgeml.build("mymod:make", "train.npz", "val.npz", exits_after="auto", out="b/")
    bundle = edgeml.Bundle.load("b/")
    result = edgeml.train_agent(bundle, "traces/", timesteps=200_000)  # PPO policy + actor
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# ``import edgeml`` is enough for ``gymnasium.make("edgeml/EdgeCloud-v0")``: the env is
# registered by an entry-point string (nothing heavy loads until make()), and only where
# gymnasium is installed (the torch-free edge install has none).
if importlib.util.find_spec("gymnasium") is not None:
    from edgeml.rl_agent import ENV_ID as _ENV_ID  # noqa: F401  (registers the env)
__all__ = ["Bundle", "ProgressiveNet", "build", "from_module", "load_model", "train_agent"]

if TYPE_CHECKING:
    from edgeml.build import build
    from edgeml.bundle import Bundle
    from edgeml.models.progressive_net import ProgressiveNet
    from edgeml.models.references import load_model
    from edgeml.partition.module_net import from_module
    from edgeml.rl_agent.train import train_agent

_LAZY = {
    "Bundle": ("edgeml.bundle", "Bundle"),
    "ProgressiveNet": ("edgeml.models.progressive_net", "ProgressiveNet"),
    "load_model": ("edgeml.models.references", "load_model"),
    # A ProgressiveNet cut out of any traceable module. Not a ProgressiveNet classmethod:
    # cutting needs the partition package, which imports the models (no cycle).
    "from_module": ("edgeml.partition.module_net", "from_module"),
    "train_agent": ("edgeml.rl_agent.train", "train_agent"),
}


def __getattr__(name: str) -> Any:
    import importlib

    if name == "build":
        # ``edgeml.build`` is also the module of that name; importing it makes the module
        # callable (see the end of edgeml/build.py), so ``edgeml.build(...)`` builds either way.
        return importlib.import_module("edgeml.build")
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'edgeml' has no attribute {name!r}")
