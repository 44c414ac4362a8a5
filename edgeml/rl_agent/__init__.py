"""RL agent: traces, input dynamics, the ``edgeml/EdgeCloud-v0`` env, baselines, PPO.

Importing this package (``import edgeml`` does) registers the environment, so
``gymnasium.make("edgeml/EdgeCloud-v0")`` works with no arguments (default bundle and the
shipped trace sample).
"""

from __future__ import annotations

import importlib.util

ENV_ID = "edgeml/EdgeCloud-v0"

# Only where gymnasium is installed: the torch-free edge install has none, and reads the
# trace and config modules of this package without it.
if importlib.util.find_spec("gymnasium") is not None:
    import gymnasium as gym

    if ENV_ID not in gym.registry:
        # An entry-point string keeps this import light: torch and the bundle load on make().
        gym.register(id=ENV_ID, entry_point="edgeml.rl_agent.env:make_env")

__all__ = ["ENV_ID"]
