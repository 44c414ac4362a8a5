"""Turn a ``--policy`` flag into something that picks ``(split, exit, tau index)`` per input.

Accepted forms:

* ``PATH.npz`` — an actor exported by ``edgeml train-agent`` (numpy only, microseconds);
* ``PATH.zip`` — an SB3 PPO policy: its sibling ``PATH.npz`` if present, else the zip is
  loaded with stable-baselines3 once and its actor exported in memory;
* a baseline name of :mod:`edgeml.rl_agent.baselines` that plans with what the edge can
  observe (``edge_only``, ``cloud_only``, ``neurosurgeon``, ``edgent``, ``spinn``,
  ``random``); the oracles need the future and are refused;
* ``fixed:S,E,TAU`` — always the same action (split, exit index, tau value from the grid),
  for tests and for pinning a deployment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from edgeml.progressive.rule import TAUS
from edgeml.rl_agent.observation import history_for
from edgeml.runtime.observation import EdgeState

log = logging.getLogger(__name__)

__all__ = ["EDGE_BASELINES", "Decider", "load_policy"]

EDGE_BASELINES = ("edge_only", "cloud_only", "neurosurgeon", "edgent", "spinn", "random")


class Decider(Protocol):
    name: str
    history: int  # throughput measurements the policy's observation holds

    def decide(self, state: EdgeState, now: float) -> tuple[int, int, int]: ...


@dataclass
class ActorPolicy:
    """The exported PPO actor on the env's observation vector."""

    actor: object  # edgeml.rl_agent.actor.NumpyActor
    name: str = "ppo"

    @property
    def history(self) -> int:
        return history_for(self.actor.obs_size)  # type: ignore[attr-defined]

    def decide(self, state: EdgeState, now: float) -> tuple[int, int, int]:
        a = self.actor.act(state.observation(now))  # type: ignore[attr-defined]
        return int(a[0]), int(a[1]), int(a[2])


@dataclass
class BaselinePolicy:
    """A simulator baseline run on the edge's live state (it quacks like the env)."""

    impl: object
    name: str
    history: int = 4

    def decide(self, state: EdgeState, now: float) -> tuple[int, int, int]:
        a = self.impl.act(state.observation(now), state)  # type: ignore[attr-defined]
        return int(a[0]), int(a[1]), int(a[2])


@dataclass
class FixedPolicy:
    action: tuple[int, int, int]
    name: str = "fixed"
    history: int = 4

    def decide(self, state: EdgeState, now: float) -> tuple[int, int, int]:
        return self.action


def _actor_from_zip(path: Path) -> object:
    from edgeml.rl_agent.actor import NumpyActor, export_actor

    sibling = path.with_suffix(".npz")
    if sibling.is_file():
        return NumpyActor.load(sibling)
    log.info("%s: no exported actor next to it; loading it with stable-baselines3", path)
    from stable_baselines3 import PPO

    return export_actor(PPO.load(str(path), device="cpu"))


def load_policy(spec: str, n_splits: int, n_exits: int) -> Decider:
    """Resolve ``spec`` (see the module docstring) for a bundle of this shape."""
    if spec.startswith("fixed:"):
        try:
            s, e, tau = spec[len("fixed:") :].split(",")
            action = (int(s), int(e), TAUS.index(float(tau)))
        except ValueError:
            raise ValueError(
                f"policy: {spec!r} must be fixed:SPLIT,EXIT,TAU with TAU one of {list(TAUS)}"
            ) from None
        if not (0 <= action[0] < n_splits and 0 <= action[1] < n_exits):
            raise ValueError(
                f"policy: {spec!r} needs split in 0..{n_splits - 1}, exit in 0..{n_exits - 1}"
            )
        return FixedPolicy(action, name=spec)
    if spec in EDGE_BASELINES:
        from edgeml.rl_agent.baselines import make_baseline

        return BaselinePolicy(make_baseline(spec), spec)
    if spec in ("oracle", "oracle_sample"):
        raise ValueError(f"policy: {spec!r} needs the future (simulator only); not on a device")
    path = Path(spec)
    if path.suffix in (".npz", ".zip") and path.is_file():
        from edgeml.rl_agent.actor import NumpyActor

        actor = NumpyActor.load(path) if path.suffix == ".npz" else _actor_from_zip(path)
        want = (n_splits, n_exits, len(TAUS))
        if tuple(actor.nvec) != want:  # type: ignore[attr-defined]
            raise ValueError(
                f"policy: {path} acts on (splits, exits, taus) = {actor.nvec}, "  # type: ignore[attr-defined]
                f"the bundle needs {want}; train it on this bundle"
            )
        return ActorPolicy(actor, name="ppo")
    raise ValueError(
        f"policy: {spec!r} is not an existing .npz/.zip, fixed:S,E,TAU, or one of "
        f"{', '.join(EDGE_BASELINES)}"
    )


def as_array(action: tuple[int, int, int]) -> np.ndarray:
    return np.asarray(action, dtype=np.int64)
