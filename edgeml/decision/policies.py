"""Every policy: one interface ``act(view) -> Action`` and one registry, for simulator and edge.

A policy is made for a :class:`World` (the bundle's cost model and calibration outcomes, and
the scenario) and asked, per input, with the :class:`~edgeml.decision.observation.
EdgeKnowledge` of the edge. Edge-side baselines plan with what the edge can measure: the
harmonic mean of the recent throughputs, the RTT and the edge's own load, and the cost
model. The oracles read the simulator's privileged state (``view.sim``): the true future
bandwidth and the input's difficulty level (``oracle``), and also the sample's own per-exit
outcome (``oracle_sample``); on a device they are refused.

:func:`make_policy` resolves every spec: a registry name (:data:`BASELINES`,
:data:`TEACHERS`), ``fixed:S,E,TAU``, an exported actor ``.npz`` or an SB3 ``.zip``. A
policy file's ``.json`` sidecar (written by ``train-agent``) records the bundle's weights
hash and the scenario it was trained on: another bundle is refused, another scenario warns.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgeml.decision.action import TAUS, Action, ActionSpace
from edgeml.decision.observation import (
    N_FIXED,
    EdgeKnowledge,
    FeatureScale,
    history_for,
    obs_size,
)
from edgeml.decision.outcome import OutcomeRule
from edgeml.decision.scenario import Scenario, scenario_diff
from edgeml.decision.tables import Outcomes
from edgeml.errors import InputError
from edgeml.partition.cost import CostModel

log = logging.getLogger(__name__)

__all__ = [
    "BASELINES",
    "LIVE_BASELINES",
    "POLICY_KINDS",
    "TEACHERS",
    "Policy",
    "World",
    "make_policy",
]


@dataclass(frozen=True, eq=False)
class World:
    """What a policy plans with: the cost model, the calibration outcomes, the scenario."""

    cost: CostModel
    outcomes: Outcomes
    scenario: Scenario
    feature_scale: FeatureScale

    @classmethod
    def from_bundle(cls, bundle: Any, scenario: Scenario) -> World:
        """From a loaded bundle (profiled and calibrated) for ``scenario``; the scenario's
        ``edge_runtime`` None is resolved here (onnx when the bundle has the files), so the
        world's scenario names the runtime the edge plans for and runs."""
        if bundle.calibration is None:
            raise InputError(f"{bundle.path}: no calibration.npz; rebuild with `edgeml build`")
        label = bundle.manifest.edge_runtime(scenario.edge_runtime, scenario.edge_precision)
        scenario = replace(scenario, edge_runtime=label.split("/")[0])
        cost = CostModel.from_bundle(
            bundle, edge_slowdown=scenario.edge_slowdown, cloud_speedup=scenario.cloud_speedup,
            edge_runtime=label,
        )  # fmt: skip
        cost.codec_index(scenario.codec)  # a clear error for an unprofiled codec
        cal = bundle.calibration_for(label)  # the int8 edge answers with its own accuracy
        outcomes, scale = Outcomes.from_calibration(cal), FeatureScale.from_calibration(cal)
        return cls(cost, outcomes, scenario, scale)

    @property
    def space(self) -> ActionSpace:
        return ActionSpace(self.cost.num_blocks + 1, self.cost.num_exits)

    @property
    def rule(self) -> OutcomeRule:
        return OutcomeRule(self.cost, self.scenario)

    def knowledge(self, history: int | None = None) -> EdgeKnowledge:
        """A blank :class:`EdgeKnowledge` for this world."""
        sc = self.scenario
        return EdgeKnowledge(
            history or sc.history, self.cost.num_exits, self.feature_scale, sc.rtt_ms,
            sc.deadline_ms, self.cost.edge_slowdown,
        )  # fmt: skip

    def planned_latency(
        self, view: EdgeKnowledge, mbps: float | None = None, cloud_wait_ms: float = 0.0
    ) -> np.ndarray:
        """Cost-model latency of every ``(s, e, tau, stop)`` at a constant bandwidth
        (default: the edge's estimate) and the edge's load, answers from the cloud
        ``cloud_wait_ms`` later; NaN where impossible."""
        bw = view.estimate_mbps if mbps is None else mbps
        table = self.cost.latency_table(self.scenario.codec, bw, view.rtt_ms, view.edge_load)
        one = np.array([tau >= 1.0 for tau in self.outcomes.taus])
        # (S, E, J, 2) -> (S, E, T, J): tau index t reads the tau_is_one slice it belongs to.
        lat = np.where(one[None, None, :, None], table[:, :, None, :, 1], table[:, :, None, :, 0])
        if cloud_wait_ms > 0:  # the answer of stop exit j comes from the cloud if j is past s
            blocks = np.asarray(self.cost.exits)
            cloud = blocks[None, :] > np.arange(self.cost.num_blocks + 1)[:, None]  # (S, J)
            lat = lat + np.where(cloud[:, None, None, :], cloud_wait_ms, 0.0)
        return lat


class Policy(Protocol):
    """``reset`` at the start of an episode (or run), ``act`` per input."""

    name: str
    history: int  # throughput measurements its observation holds

    def reset(self, seed: int | None = None) -> None: ...

    def act(self, view: EdgeKnowledge) -> Action: ...


class _Planner:
    """A policy that plans with the world (no learnt state)."""

    name = "policy"
    privileged = False

    def __init__(self, world: World) -> None:
        self.world = world
        self.history = world.scenario.history

    def reset(self, seed: int | None = None) -> None:
        pass


class EdgeOnly(_Planner):
    """Everything on the edge, final exit, no early stop."""

    name = "edge_only"

    def act(self, view: EdgeKnowledge) -> Action:
        sp = self.world.space
        return Action(sp.n_splits - 1, sp.n_exits - 1, 0)


class CloudOnly(_Planner):
    """Send the input, final exit in the cloud, no early stop."""

    name = "cloud_only"

    def act(self, view: EdgeKnowledge) -> Action:
        return Action(0, self.world.space.n_exits - 1, 0)


class Neurosurgeon(_Planner):
    """The latency-optimal split for the current bandwidth estimate, final exit."""

    name = "neurosurgeon"

    def act(self, view: EdgeKnowledge) -> Action:
        e = self.world.space.n_exits - 1
        lat = self.world.planned_latency(view)[:, e, 0, e]
        return Action(int(np.argmin(lat)), e, 0)


class Edgent(_Planner):
    """The most accurate (split, exit) that meets the deadline at the current estimate.

    Accuracy of an exit is its calibration accuracy; ties go to the faster action. If no
    action meets the deadline, the fastest one.

    :param estimate: ``harmonic`` plans with the edge's estimator (the baseline); ``last``
        with the newest measured throughput, which reacts faster to a recovered link (the
        PPO warm start's teacher).
    :param load: also plan with the cloud's measured extra wait (``edgent-load``: the
        strongest heuristic on a shared cloud).
    """

    name = "edgent"

    def __init__(self, world: World, estimate: str = "harmonic", load: bool = False) -> None:
        super().__init__(world)
        if estimate not in ("harmonic", "last"):
            raise ValueError(f"estimate: {estimate!r} is not one of ['harmonic', 'last']")
        self.estimate, self.load = estimate, load
        self.name = "edgent" if estimate == "harmonic" else "edgent-last"
        if load:
            self.name += "-load"

    def act(self, view: EdgeKnowledge) -> Action:
        w = self.world
        mbps = view.last_mbps if self.estimate == "last" else None
        lat = w.planned_latency(view, mbps, view.cloud_wait_ms if self.load else 0.0)
        exits = np.arange(w.space.n_exits)
        lat_e = lat[:, exits, 0, exits]  # (S, E): tau = 1, stop = e
        acc = w.outcomes.accuracy[:, 0]  # (E,)
        ok = lat_e <= w.scenario.deadline_ms
        if not ok.any():
            s, e = np.unravel_index(int(np.argmin(lat_e)), lat_e.shape)
            return Action(int(s), int(e), 0)
        score = np.where(ok, acc[None, :], -np.inf)
        best = score == score.max()
        s, e = np.unravel_index(int(np.argmin(np.where(best, lat_e, np.inf))), lat_e.shape)
        return Action(int(s), int(e), 0)


class Spinn(_Planner):
    """Progressive inference with a fixed threshold; the split minimises the expected
    latency (over the calibration's stop distribution) at the current estimate."""

    name = "spinn"

    def __init__(self, world: World, tau: float = 0.9) -> None:
        super().__init__(world)
        if tau not in TAUS:
            raise ValueError(f"tau: {tau} not in the action grid {TAUS}")
        self.tau_index = TAUS.index(tau)

    def act(self, view: EdgeKnowledge) -> Action:
        e, t = self.world.space.n_exits - 1, self.tau_index
        lat = self.world.planned_latency(view)[:, e, t, :]  # (S, J)
        p = self.world.outcomes.p_stop_all[e, t]  # (J,)
        expected = (np.nan_to_num(lat, nan=0.0) * p).sum(axis=1)
        return Action(int(np.argmin(expected)), e, t)


class RandomPolicy(_Planner):
    """Uniform over the action space, with its own seeded generator."""

    name = "random"

    def __init__(self, world: World, seed: int = 0) -> None:
        super().__init__(world)
        self._seed = seed
        self.rng = np.random.default_rng(seed)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(self._seed if seed is None else seed)

    def act(self, view: EdgeKnowledge) -> Action:
        return self.world.space.sample(self.rng)


class FixedPolicy(_Planner):
    """Always the same action (``fixed:S,E,TAU``), for tests and for pinning a deployment."""

    def __init__(self, world: World, action: Action, name: str) -> None:
        super().__init__(world)
        self.action, self.name = action, name

    def act(self, view: EdgeKnowledge) -> Action:
        return self.action


class _Oracle(_Planner):
    privileged = True

    def _sim(self, view: EdgeKnowledge) -> Any:
        if view.sim is None:
            raise RuntimeError(f"{self.name}: needs the simulator's future; not on a device")
        return view.sim


class Oracle(_Oracle):
    """Knows the true future bandwidth and the input's difficulty level (not its outcome),
    and on a shared cloud the work ahead of a request sent now (the running batch's rest and
    the waiting requests; not the requests other edges send later): the action with the best
    expected reward over that level's calibration samples."""

    name = "oracle"

    def act(self, view: EdgeKnowledge) -> Action:
        sim = self._sim(view)
        lat = np.nan_to_num(sim.true_latency_table(), nan=0.0)  # (S, E, T, J)
        out = self.world.outcomes
        li = out.level_index(sim.current_level)
        ps, pc = out.p_stop[li], out.p_correct[li]  # (E, T, J)
        sc = self.world.scenario
        hit = (lat <= sc.deadline_ms) * pc
        pen = np.minimum(lat / sc.deadline_ms, sc.latency_cap) * ps
        value = hit.sum(-1) - sc.latency_weight * pen.sum(-1)  # (S, E, T)
        return Action(*(int(v) for v in np.unravel_index(int(np.argmax(value)), value.shape)))


class OracleSample(_Oracle):
    """Also knows the sample's per-exit outcome: the best action for this very input.
    A loose upper bound, for reference only."""

    name = "oracle_sample"

    def act(self, view: EdgeKnowledge) -> Action:
        sim = self._sim(view)
        lat = sim.true_latency_table()  # (S, E, T, J)
        i = sim.current_sample
        out, sc = sim.input_outcomes, self.world.scenario
        stop = out.stop[:, :, i]  # (E, T)
        correct = out.correct[:, :, i]
        e_idx, t_idx = np.indices(stop.shape)
        lat_a = lat[:, e_idx, t_idx, stop]  # (S, E, T)
        timely = correct[None] & (lat_a <= sc.deadline_ms)
        value = timely - sc.latency_weight * np.minimum(lat_a / sc.deadline_ms, sc.latency_cap)
        value = np.where(np.isnan(lat_a), -np.inf, value)
        return Action(*(int(v) for v in np.unravel_index(int(np.argmax(value)), value.shape)))


class ActorPolicy:
    """A trained actor (exported numpy MLP, or an SB3 model) on the observation vector."""

    privileged = False

    def __init__(self, actor: Any, name: str = "ppo", source: str = "") -> None:
        self.actor, self.name, self.source = actor, name, source
        self.history = history_for(self.obs_size)
        if obs_size(self.history) != self.obs_size or self.history < 1:
            raise InputError(
                f"{source or name}: the actor reads {self.obs_size} observation entries; this "
                f"EdgeML builds 2*history + {N_FIXED} (the edge slowdown entry was added): "
                "retrain it with `edgeml train-agent`"
            )

    @property
    def obs_size(self) -> int:
        if hasattr(self.actor, "obs_size"):
            return int(self.actor.obs_size)
        return int(self.actor.observation_space.shape[0])

    @property
    def nvec(self) -> tuple[int, ...]:
        if hasattr(self.actor, "nvec"):
            return tuple(int(n) for n in self.actor.nvec)
        return tuple(int(n) for n in self.actor.action_space.nvec)

    def reset(self, seed: int | None = None) -> None:
        pass

    def act(self, view: EdgeKnowledge) -> Action:
        obs = view.observation()
        if hasattr(self.actor, "predict"):  # SB3
            return Action.of(self.actor.predict(obs, deterministic=True)[0])
        return Action.of(self.actor.act(obs))


BASELINES: dict[str, Callable[[World], Policy]] = {
    "oracle": Oracle,
    "oracle_sample": OracleSample,
    "edge_only": EdgeOnly,
    "cloud_only": CloudOnly,
    "neurosurgeon": Neurosurgeon,
    "edgent": Edgent,
    "edgent-load": lambda w: Edgent(w, load=True),
    "spinn": Spinn,
    "random": RandomPolicy,
}
#: Warm-start teachers: every baseline, and Edgent at the newest sample.
TEACHERS: dict[str, Callable[[World], Policy]] = {
    **BASELINES,
    "edgent-last": lambda w: Edgent(w, estimate="last"),
    "edgent-last-load": lambda w: Edgent(w, estimate="last", load=True),
}
#: The baselines a live comparison (``demo``, ``emulate``) runs next to the policy.
LIVE_BASELINES = ("edge_only", "cloud_only", "neurosurgeon", "edgent", "edgent-load", "spinn")
POLICY_KINDS = (
    f"a policy .zip from `edgeml train-agent`, its exported actor .npz, fixed:S,E,TAU, "
    f"or one of {', '.join(TEACHERS)}"
)


def _load_actor(path: Path) -> Any:
    from edgeml.decision.actor import NumpyActor

    if path.suffix == ".npz":
        return NumpyActor.load(path)
    sibling = path.with_suffix(".npz")
    if sibling.is_file():  # the exported actor: no SB3 (nor torch) needed
        return NumpyActor.load(sibling)
    import zipfile

    from stable_baselines3 import PPO

    try:
        return PPO.load(path, device="cpu")
    except (ValueError, KeyError, EOFError, AssertionError, zipfile.BadZipFile) as exc:
        reason = "not a zip file" if "zip-file" in str(exc) else f"not readable ({exc!r})"
        raise InputError(f"policy: {path}: {reason}; expected {POLICY_KINDS}") from None


def check_trained_for(path: Path, world: World, bundle_sha256: str | None) -> None:
    """Refuse a policy trained for other weights; warn (listing the fields) for another
    scenario. Reads the ``.json`` that ``train-agent`` writes next to the policy."""
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file():
        log.warning("policy %s: no %s, so not checked against the bundle", path, meta_path.name)
        return
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"policy: {meta_path}: not valid JSON ({exc})") from None
    trained = meta.get("bundle_sha256")
    if bundle_sha256 and trained and trained != bundle_sha256:
        raise InputError(
            f"policy: {path} was trained for bundle weights {trained[:16]}..., this bundle "
            f"has {bundle_sha256[:16]}...; train a policy on this bundle (edgeml train-agent)"
        )
    if "scenario" in meta:
        try:
            then = Scenario.from_dict(meta["scenario"])
        except (TypeError, ValueError):
            log.warning("policy %s: scenario in %s not readable", path, meta_path.name)
            return
        speeds = [float(v) for v in meta.get("train", {}).get("edge_slowdowns") or ()]
        if speeds and min(speeds) <= world.scenario.edge_slowdown <= max(speeds):
            then = replace(then, edge_slowdown=world.scenario.edge_slowdown)  # trained for it
        busy = [float(v) for v in meta.get("train", {}).get("edge_load_busy") or ()]
        now = world.scenario.load.busy
        if len(busy) == 2 and busy[0] <= now[0] <= now[1] <= busy[1]:
            then = replace(then, load=replace(then.load, busy=now))  # inside the trained range
        diff = scenario_diff(then, world.scenario)
        if diff:
            log.warning(
                "policy %s was trained for another scenario (%s); it may decide badly",
                path, "; ".join(diff),
            )  # fmt: skip


def make_policy(
    spec: str,
    world: World,
    *,
    device: bool = False,
    bundle_sha256: str | None = None,
    name: str | None = None,
    seed: int = 0,
) -> Policy:
    """Resolve ``spec`` (see the module docstring) for ``world``.

    :param device: refuse the oracles (they need the simulator's future).
    :param bundle_sha256: the bundle's weights hash, checked against a policy file's record.
    """
    space = world.space
    if spec.startswith("fixed:"):
        return FixedPolicy(world, space.parse_fixed(spec), name or spec)
    if spec in TEACHERS:
        pol = RandomPolicy(world, seed) if spec == "random" else TEACHERS[spec](world)
        if device and getattr(pol, "privileged", False):
            raise InputError(f"policy: {spec!r} needs the future (simulator only); not on a device")
        return pol
    path = Path(spec)
    if path.suffix not in (".npz", ".zip"):
        if path.exists():
            raise InputError(
                f"policy: {path}: unknown kind {path.suffix!r}; expected {POLICY_KINDS}"
            )
        raise InputError(f"policy: {spec!r} is not {POLICY_KINDS}")
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "no such file"
        raise InputError(f"policy: {path}: {what}; expected {POLICY_KINDS}")
    pol = ActorPolicy(_load_actor(path), name or "ppo", source=str(path))
    if pol.nvec != space.nvec:
        raise InputError(
            f"policy: {path} acts on (splits, exits, taus) = {pol.nvec}, the bundle needs "
            f"{space.nvec}; train it on this bundle"
        )
    check_trained_for(path, world, bundle_sha256)
    return pol
