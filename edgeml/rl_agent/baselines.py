"""Baselines and oracles: every policy maps ``(obs, env)`` to an action ``(s, e, tau_index)``.

Edge-side baselines plan with what the agent can observe: the harmonic mean of the recent
measured throughputs (``env.estimate_mbps``), the RTT and the edge's own load, and the cost
model (:meth:`~edgeml.partition.cost.CostModel.latency_table`). The oracles read the
simulator's hidden state: the true future bandwidth and the input's difficulty level
(``oracle``), and also the sample's own per-exit outcome (``oracle_sample``). All of them
run on the very same episodes (same seeds) as the agent, see :mod:`.evaluate`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from edgeml.progressive.rule import TAUS
from edgeml.rl_agent.env import EdgeCloudEnv

__all__ = [
    "BASELINES",
    "CloudOnly",
    "EdgeOnly",
    "Edgent",
    "Neurosurgeon",
    "Oracle",
    "OracleSample",
    "Policy",
    "RandomPolicy",
    "Spinn",
    "TEACHERS",
    "make_baseline",
    "make_teacher",
    "planned_latency",
]


class Policy(Protocol):
    """What :mod:`.evaluate` runs: ``reset`` at the start of an episode, ``act`` per input."""

    name: str

    def reset(self, seed: int | None = None) -> None: ...

    def act(self, obs: np.ndarray, env: EdgeCloudEnv) -> np.ndarray: ...


def _action(s: int, e: int, t: int) -> np.ndarray:
    return np.array([s, e, t], dtype=np.int64)


def planned_latency(env: EdgeCloudEnv, bandwidth_mbps: float | None = None) -> np.ndarray:
    """Cost-model latency of every ``(s, e, tau, stop)`` at a constant bandwidth (default:
    the edge's estimate) and the edge's current load; NaN where impossible."""
    sc = env.scenario
    bw = env.estimate_mbps if bandwidth_mbps is None else bandwidth_mbps
    table = env.cost.latency_table(sc.codec, bw, sc.rtt_ms, env.edge_load)  # (S, E, J, 2)
    one = np.array([tau >= 1.0 for tau in env.outcomes.taus])
    # (S, E, J, T) -> (S, E, T, J): tau index t reads the tau_is_one slice it belongs to.
    return np.where(one[None, None, :, None], table[:, :, None, :, 1], table[:, :, None, :, 0])


class _Stateless:
    name = "policy"

    def reset(self, seed: int | None = None) -> None:
        pass


class EdgeOnly(_Stateless):
    """Everything on the edge, final exit, no early stop."""

    name = "edge_only"

    def act(self, obs: np.ndarray, env: EdgeCloudEnv) -> np.ndarray:
        return _action(env.n_splits - 1, env.n_exits - 1, 0)


class CloudOnly(_Stateless):
    """Send the input, final exit in the cloud, no early stop."""

    name = "cloud_only"

    def act(self, obs: np.ndarray, env: EdgeCloudEnv) -> np.ndarray:
        return _action(0, env.n_exits - 1, 0)


class Neurosurgeon(_Stateless):
    """The latency-optimal split for the current bandwidth estimate, final exit."""

    name = "neurosurgeon"

    def act(self, obs: np.ndarray, env: EdgeCloudEnv) -> np.ndarray:
        e = env.n_exits - 1
        lat = planned_latency(env)[:, e, 0, e]
        return _action(int(np.argmin(lat)), e, 0)


class Edgent(_Stateless):
    """The most accurate (split, exit) that meets the deadline at the current estimate.

    Accuracy of an exit is its calibration accuracy; ties go to the faster action. If no
    action meets the deadline, the fastest one.

    :param estimate: ``harmonic`` plans with the edge's estimator (the baseline); ``last``
        with the newest measured throughput, which reacts faster to a recovered link (the
        PPO warm start's teacher, see :mod:`.warm_start`).
    """

    name = "edgent"

    def __init__(self, estimate: str = "harmonic") -> None:
        if estimate not in ("harmonic", "last"):
            raise ValueError(f"estimate: {estimate!r} is not one of ['harmonic', 'last']")
        self.estimate = estimate
        self.name = "edgent" if estimate == "harmonic" else "edgent-last"

    def act(self, obs: np.ndarray, env: EdgeCloudEnv) -> np.ndarray:
        lat = planned_latency(env, env.last_mbps if self.estimate == "last" else None)
        exits = np.arange(env.n_exits)
        lat_e = lat[:, exits, 0, exits]  # (S, E): tau = 1, stop = e
        acc = env.outcomes.accuracy[:, 0]  # (E,)
        ok = lat_e <= env.scenario.deadline_ms
        if not ok.any():
            s, e = np.unravel_index(int(np.argmin(lat_e)), lat_e.shape)
            return _action(int(s), int(e), 0)
        score = np.where(ok, acc[None, :], -np.inf)
        best = score == score.max()
        s, e = np.unravel_index(int(np.argmin(np.where(best, lat_e, np.inf))), lat_e.shape)
        return _action(int(s), int(e), 0)


class Spinn(_Stateless):
    """Progressive inference with a fixed threshold; the split minimises the expected
    latency (over the calibration's stop distribution) at the current estimate."""

    name = "spinn"

    def __init__(self, tau: float = 0.9) -> None:
        if tau not in TAUS:
            raise ValueError(f"tau: {tau} not in the action grid {TAUS}")
        self.tau_index = TAUS.index(tau)

    def act(self, obs: np.ndarray, env: EdgeCloudEnv) -> np.ndarray:
        e, t = env.n_exits - 1, self.tau_index
        lat = planned_latency(env)[:, e, t, :]  # (S, J)
        p = env.outcomes.p_stop_all[e, t]  # (J,)
        expected = (np.nan_to_num(lat, nan=0.0) * p).sum(axis=1)
        return _action(int(np.argmin(expected)), e, t)


class RandomPolicy:
    """Uniform over the action space, with its own seeded generator."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self._seed = seed
        self.rng = np.random.default_rng(seed)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(self._seed if seed is None else seed)

    def act(self, obs: np.ndarray, env: EdgeCloudEnv) -> np.ndarray:
        return self.rng.integers(0, env.action_space.nvec)


def _rewards(env: EdgeCloudEnv, lat: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """The env's reward for latencies and correctness (arrays of one shape)."""
    sc = env.scenario
    timely = correct & (lat <= sc.deadline_ms)
    return timely - sc.latency_weight * np.minimum(lat / sc.deadline_ms, sc.latency_cap)


class Oracle(_Stateless):
    """Knows the true future bandwidth and the input's difficulty level (not its outcome):
    the action with the best expected reward over that level's calibration samples."""

    name = "oracle"

    def act(self, obs: np.ndarray, env: EdgeCloudEnv) -> np.ndarray:
        lat = np.nan_to_num(env.true_latency_table(), nan=0.0)  # (S, E, T, J)
        out = env.outcomes
        li = out.level_index(env.current_level)
        ps, pc = out.p_stop[li], out.p_correct[li]  # (E, T, J)
        sc = env.scenario
        hit = (lat <= sc.deadline_ms) * pc
        pen = np.minimum(lat / sc.deadline_ms, sc.latency_cap) * ps
        value = hit.sum(-1) - sc.latency_weight * pen.sum(-1)  # (S, E, T)
        return _action(*(int(v) for v in np.unravel_index(int(np.argmax(value)), value.shape)))


class OracleSample(_Stateless):
    """Also knows the sample's per-exit outcome: the best action for this very input.
    A loose upper bound, for reference only."""

    name = "oracle_sample"

    def act(self, obs: np.ndarray, env: EdgeCloudEnv) -> np.ndarray:
        lat = env.true_latency_table()  # (S, E, T, J)
        i = env.current_sample
        stop = env.outcomes.stop[:, :, i]  # (E, T)
        correct = env.outcomes.correct[:, :, i]
        e_idx, t_idx = np.indices(stop.shape)
        lat_a = lat[:, e_idx, t_idx, stop]  # (S, E, T)
        value = _rewards(env, lat_a, correct[None])
        return _action(*(int(v) for v in np.unravel_index(int(np.argmax(value)), value.shape)))


BASELINES: dict[str, Callable[[], Policy]] = {
    "oracle": Oracle,
    "oracle_sample": OracleSample,
    "edge_only": EdgeOnly,
    "cloud_only": CloudOnly,
    "neurosurgeon": Neurosurgeon,
    "edgent": Edgent,
    "spinn": Spinn,
    "random": RandomPolicy,
}


# Warm-start teachers (:mod:`.warm_start`): every baseline, and Edgent at the newest sample.
TEACHERS: dict[str, Callable[[], Policy]] = {
    **BASELINES,
    "edgent-last": lambda: Edgent(estimate="last"),
}


def _make(registry: dict[str, Callable[[], Policy]], what: str, name: str) -> Policy:
    try:
        return registry[name]()
    except KeyError:
        raise ValueError(f"{what}: {name!r} not one of {', '.join(registry)}") from None


def make_baseline(name: str) -> Policy:
    return _make(BASELINES, "baseline", name)


def make_teacher(name: str) -> Policy:
    """A warm-start teacher by name (see :data:`TEACHERS`)."""
    return _make(TEACHERS, "teacher", name)
