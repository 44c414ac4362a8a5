"""``edgeml/EdgeCloud-v0``: one input per step; the action picks split, exit and threshold.

The world: inputs arrive at ``input_rate`` from a camera-like stream (:mod:`.dynamics`); the
uplink follows a real bandwidth trace (:mod:`.traces`); the edge core carries a background
load; latency of an action comes from the bundle's cost model with the link time
integrated over the trace; accuracy is the bundle's calibration table.

The agent sees only what the edge can know: measured throughputs and their ages, RTT,
recent latencies and answers, the input's difficulty feature, the edge's load and the
deadline (the vector is built by :func:`edgeml.rl_agent.observation.build_observation`,
which the edge daemon calls too; its table of entries is there).

Throughput is measured only by the edge's own transfers: every offload, and a small probe
the edge sends when it has measured nothing for ``probe_interval_s`` (so a policy that
stays on the edge does not blind itself and the baselines for ever). RTT is the constant
``rtt_ms`` here.

Reward per input: ``1[correct and latency <= deadline] - latency_weight * min(latency /
deadline, latency_cap)``: the headline metric (timely accuracy) plus a small pull towards
fast answers that breaks ties between actions of equal accuracy. The default weight 0.01
keeps it a tie-breaker: within the deadline it is worth at most 0.01, less than the
accuracy gap between most exits (at 0.05 the agent learned to give up 0.6 pp of accuracy
for 15 ms it did not need, and lost on the headline metric). An offload that has not
returned within ``timeout_ms`` is abandoned: no answer, latency = ``timeout_ms``.
Time advances by ``max(latency, 1 / input_rate)``.

``reward="expected"`` (for training) replaces ``1[correct]`` by its expectation given what
decides it besides the sample itself: ``P(correct | level, e, tau, stop exit)`` from the
calibration table. The expected return is unchanged (the stop exit, hence the latency, is
still the sample's own), but the Bernoulli noise of single answers is gone, so PPO can
tell apart actions whose accuracy differs by a fraction of a percent. ``info`` and every
metric still report the sample's real outcome.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import deque
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from edgeml.bundle import Bundle
from edgeml.partition.cost import CostModel
from edgeml.progressive.infer import TAUS
from edgeml.rl_agent.dynamics import InputStream, LoadConfig, StreamConfig, background_load
from edgeml.rl_agent.observation import (
    MIN_MBPS,
    N_LAST_LATENCIES,
    FeatureScale,
    build_observation,
    estimate_mbps,
    obs_size,
)
from edgeml.rl_agent.tables import ActionCosts, Outcomes
from edgeml.rl_agent.traces import Trace, load_traces

log = logging.getLogger(__name__)

__all__ = ["ENV_ID", "EdgeCloudEnv", "Scenario", "obs_size"]

ENV_ID = "edgeml/EdgeCloud-v0"


@dataclass
class Scenario:
    """Every parameter of a simulated run (defaults: ARCHITECTURE.md's scenario).

    :param bundle: bundle directory (``None``: the shipped default bundle).
    :param traces: CSV file or directory (``None``: the trace sample shipped with the package).
    :param trace_split: ``train``, ``test`` or ``all`` files of each family.
    :param families: keep only these trace families (``None``: all).
    :param codec: tensor codec on the link (a codec of the bundle's profile).
    :param edge_slowdown: how much slower than the profiling machine the edge computes.
    :param cloud_speedup: how much faster than the profiling machine the cloud computes.
    :param rtt_ms: base round-trip time of the link.
    :param deadline_ms: an answer later than this counts as a miss.
    :param input_rate: inputs per second (time advances at least ``1 / input_rate``).
    :param episode_steps: inputs per episode (then ``truncated``).
    :param latency_weight: weight of the latency term of the reward.
    :param latency_cap: the latency term is capped at this many deadlines.
    :param reward: ``outcome`` (the answer's real correctness) or ``expected`` (its
        calibration probability given level and stop exit: same mean, less noise).
    :param timeout_ms: an offload not answered by then is abandoned (no answer).
    :param history: measured throughputs kept in the observation.
    :param probe_interval_s: probe the link when nothing was measured for this long.
    :param probe_bytes: size of a probe.
    :param stream: the input difficulty regime process.
    :param load: the edge's background load process.
    """

    bundle: str | None = None
    traces: str | list[str] | None = None
    trace_split: str = "all"
    families: tuple[str, ...] | None = None
    codec: str = "int8"
    edge_slowdown: float = 12.0
    cloud_speedup: float = 1.0
    rtt_ms: float = 40.0
    deadline_ms: float = 100.0
    input_rate: float = 10.0
    episode_steps: int = 300
    latency_weight: float = 0.01
    latency_cap: float = 2.0
    reward: str = "outcome"
    timeout_ms: float = 1000.0
    history: int = 4
    probe_interval_s: float = 1.0
    probe_bytes: float = 4000.0
    stream: StreamConfig = field(default_factory=StreamConfig)
    load: LoadConfig = field(default_factory=LoadConfig)

    def __post_init__(self) -> None:
        positive = (
            "edge_slowdown", "cloud_speedup", "deadline_ms", "input_rate", "timeout_ms",
            "probe_interval_s", "probe_bytes",
        )  # fmt: skip
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.rtt_ms < 0 or self.latency_weight < 0 or self.latency_cap < 0:
            raise ValueError("rtt_ms, latency_weight, latency_cap: must be >= 0")
        if self.timeout_ms <= self.deadline_ms:
            raise ValueError(
                f"timeout_ms: must exceed deadline_ms ({self.deadline_ms}), got {self.timeout_ms}"
            )
        if self.reward not in ("outcome", "expected"):
            raise ValueError(f"reward: {self.reward!r} not one of outcome, expected")
        if self.episode_steps < 1 or self.history < 1:
            raise ValueError("episode_steps, history: must be >= 1")
        if isinstance(self.stream, dict):
            self.stream = StreamConfig(**self.stream)
        if isinstance(self.load, dict):
            self.load = LoadConfig(**self.load)
        if self.families is not None:
            self.families = tuple(self.families)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; ``None`` paths are resolved to the shipped defaults they mean."""
        d = asdict(self)
        if d["bundle"] is None:
            from edgeml.assets import default_bundle

            d["bundle"] = str(default_bundle())
        if d["traces"] is None:
            from edgeml.rl_agent.traces import default_traces_dir

            d["traces"] = str(default_traces_dir())
        d["taus"] = list(TAUS)
        return d

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


@functools.lru_cache(maxsize=8)
def _cached_bundle(path: str, mtime: float) -> Bundle:
    return Bundle.load(path)


def _load_bundle(path: str | None) -> Bundle:
    if path is None:
        from edgeml.assets import default_bundle

        path = str(default_bundle())
    p = Path(path).resolve()
    manifest = p / "manifest.json"
    return _cached_bundle(str(p), manifest.stat().st_mtime if manifest.exists() else 0.0)


class EdgeCloudEnv(gym.Env[np.ndarray, np.ndarray]):
    """Split/exit/threshold control of one progressive network over a traced link.

    :param scenario: a :class:`Scenario`; keyword arguments override its fields, so every
        scenario parameter can also be passed directly (``EdgeCloudEnv(deadline_ms=80)``).
        ``bundle`` may be a loaded :class:`~edgeml.bundle.Bundle` and ``traces`` a list of
        :class:`~edgeml.rl_agent.traces.Trace` (shared between vectorised copies).
    """

    metadata = {"render_modes": []}

    def __init__(self, scenario: Scenario | None = None, **kwargs: Any) -> None:
        super().__init__()
        bundle_obj = kwargs.pop("bundle", None)
        traces_obj = kwargs.pop("traces", None)
        unknown = set(kwargs) - Scenario.field_names()
        if unknown:
            raise TypeError(
                f"unknown scenario parameters {sorted(unknown)}; allowed: "
                f"{', '.join(sorted(Scenario.field_names()))}"
            )
        sc = replace(scenario or Scenario(), **kwargs)
        if isinstance(bundle_obj, Bundle):
            bundle = bundle_obj
            sc.bundle = str(bundle.path)
        else:
            sc.bundle = str(bundle_obj) if bundle_obj is not None else sc.bundle
            bundle = _load_bundle(sc.bundle)
        if isinstance(traces_obj, list | tuple) and traces_obj and isinstance(traces_obj[0], Trace):
            self.traces: list[Trace] = list(traces_obj)
            sc.traces = [t.name for t in self.traces]
        else:
            if traces_obj is not None:
                sc.traces = (
                    [str(t) for t in traces_obj]
                    if isinstance(traces_obj, list | tuple)
                    else str(traces_obj)
                )
            self.traces = load_traces(sc.traces, sc.trace_split, sc.families)
        self.scenario = sc
        if bundle.calibration is None:
            raise ValueError(f"{bundle.path}: no calibration.npz; rebuild with `edgeml build`")
        self.bundle = bundle
        self.cost = CostModel.from_bundle(
            bundle, edge_slowdown=sc.edge_slowdown, cloud_speedup=sc.cloud_speedup
        )
        self.outcomes = Outcomes.from_calibration(bundle.calibration)
        self.costs = ActionCosts.from_cost_model(self.cost, sc.codec)
        cal = bundle.calibration
        self.n_splits, self.n_exits, self.n_taus = self.costs.shape[:3]
        self.action_space = spaces.MultiDiscrete([self.n_splits, self.n_exits, self.n_taus])
        self.observation_space = spaces.Box(-5.0, 5.0, (obs_size(sc.history),), np.float32)
        self._feat_scale = FeatureScale.from_calibration(cal)
        # Python mirrors of the hot tables (list indexing beats numpy scalar indexing).
        self._edge = self.costs.edge_ms.tolist()
        self._far = self.costs.far_ms.tolist()
        self._off = self.costs.offloaded.tolist()
        self._bytes = self.costs.bytes.tolist()
        self._stop = self.outcomes.stop.tolist()
        self._correct = self.outcomes.correct.tolist()
        self._conf = self.outcomes.conf.tolist()
        self._features = cal.feature.tolist()
        out = self.outcomes
        with np.errstate(invalid="ignore", divide="ignore"):
            cond = np.where(out.p_stop > 0, out.p_correct / out.p_stop, 0.0)
        self._p_correct_at_stop = cond.tolist()  # (L, E, T, J): P(correct | level, stop)
        self._by_family: dict[str, list[Trace]] = {}
        for tr in self.traces:
            self._by_family.setdefault(tr.family, []).append(tr)
        self._families = sorted(self._by_family)
        self._stream: InputStream | None = None

    # ------------------------------------------------------------------ gym API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode; ``options`` may fix ``trace`` (name or index) and ``start_s``."""
        super().reset(seed=seed)
        options = options or {}
        rng = self.np_random
        sc = self.scenario
        self.trace = self._pick_trace(options.get("trace"), rng)
        start = options.get("start_s")
        start = float(rng.uniform(0, self.trace.duration_s)) if start is None else float(start)
        # The clock runs one loop ahead so that the pre-episode probes have positive times.
        self._t0 = start % self.trace.duration_s + self.trace.duration_s
        self._t = self._t0
        n = sc.episode_steps
        self._stream = InputStream.generate(
            self.bundle.calibration.difficulty, n, rng, sc.input_rate, sc.stream
        )
        self._samples = self._stream.samples.tolist()
        self._level_idx = np.searchsorted(self.outcomes.levels, self._stream.levels).tolist()
        self._load = background_load(n, rng, sc.input_rate, sc.load).tolist()
        self._step = 0
        self._meas: deque[tuple[float, float]] = deque(maxlen=sc.history)
        self._pending: list[tuple[float, float]] = []
        self._last_meas_t = -math.inf
        self._next_probe = self._t - sc.history * sc.probe_interval_s
        self._advance_probes(self._t)
        self._lat: deque[float] = deque([0.0] * N_LAST_LATENCIES, maxlen=N_LAST_LATENCIES)
        self._last_conf, self._last_exit, self._last_off = 0.0, 0, 0.0
        return self._obs(), self._info_reset()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._stream is None:
            raise RuntimeError("call reset() before step()")
        if self._step >= self.scenario.episode_steps:
            raise RuntimeError("episode is over (truncated); call reset()")
        s, e, ti = (int(a) for a in action)
        if not (0 <= s < self.n_splits and 0 <= e < self.n_exits and 0 <= ti < self.n_taus):
            raise ValueError(f"action: {action!r} outside {self.action_space}")
        sc = self.scenario
        i = self._samples[self._step]
        load = self._load[self._step]
        j = self._stop[e][ti][i]
        correct = self._correct[e][ti][i]
        pre = self._edge[s][e][ti][j] * (1.0 + load)
        offloaded = self._off[s][e][ti][j]
        nbytes = self._bytes[s] if offloaded else 0.0
        answered = True
        bw_true = self.trace.mbps_at(self._t)
        if offloaded:
            send_t = self._t + pre / 1000.0
            budget_s = (sc.timeout_ms - pre) / 1000.0
            d = self.trace.transfer_s(nbytes, send_t, max_s=max(budget_s, 0.0))
            if math.isfinite(d):
                self._pending.append((send_t + d, nbytes * 8.0 / max(d, 1e-9) / 1e6))
                latency = pre + d * 1000.0 + sc.rtt_ms + self._far[s][e][ti][j]
            else:
                latency = math.inf
                self._pending.append((send_t + budget_s, self.trace.mean_mbps(send_t, budget_s)))
            if latency > sc.timeout_ms:
                latency, answered, correct = sc.timeout_ms, False, False
        else:
            latency = pre
        timely = bool(correct) and latency <= sc.deadline_ms
        if sc.reward == "expected":
            hit = answered and latency <= sc.deadline_ms
            value = self._p_correct_at_stop[self._level_idx[self._step]][e][ti][j] if hit else 0.0
        else:
            value = float(timely)
        reward = value - sc.latency_weight * min(latency / sc.deadline_ms, sc.latency_cap)
        info = {
            "latency_ms": latency, "correct": bool(correct), "timely": timely,
            "answered": answered, "bytes": nbytes, "offloaded": bool(offloaded),
            "split": s, "exit": e, "tau": TAUS[ti], "stop_exit": j,
            "level": int(self._stream.levels[self._step]), "sample": i,
            "time_s": self._t - self._t0, "bandwidth_mbps": bw_true,
            "estimate_mbps": self.estimate_mbps, "edge_load": load,
        }  # fmt: skip
        self._lat.appendleft(latency)
        self._last_conf = self._conf[e][ti][i] if answered else 0.0
        self._last_exit = j
        self._last_off = float(offloaded)
        self._t += max(latency, 1000.0 / sc.input_rate) / 1000.0
        self._advance_probes(self._t)
        self._step += 1
        truncated = self._step >= sc.episode_steps
        return self._obs(), reward, False, truncated, info

    # ------------------------------------------------------------------ what the edge knows

    @property
    def estimate_mbps(self) -> float:
        """Harmonic mean of the measured throughputs (what the baselines plan with)."""
        return estimate_mbps(self._meas)

    @property
    def last_mbps(self) -> float:
        """The newest measured throughput (the estimate before anything was measured)."""
        return max(self._meas[-1][1], MIN_MBPS) if self._meas else self.estimate_mbps

    @property
    def edge_load(self) -> float:
        """The edge's background load for the current input."""
        return self._load[min(self._step, len(self._load) - 1)]

    @property
    def feature(self) -> float:
        return self._features[self._samples[min(self._step, len(self._samples) - 1)]]

    # ------------------------------------------------------------------ privileged (oracle)

    @property
    def current_sample(self) -> int:
        return self._samples[self._step]

    @property
    def current_level(self) -> int:
        assert self._stream is not None
        return int(self._stream.levels[self._step])

    @property
    def time_s(self) -> float:
        return self._t - self._t0

    def true_latency_table(self) -> np.ndarray:
        """Latency (ms, capped at the timeout) of every ``(s, e, tau, stop)`` for the current
        input, with the true future bandwidth of the trace; NaN where impossible."""
        sc = self.scenario
        costs = self.costs
        pre = costs.edge_ms * (1.0 + self.edge_load)
        starts = self._t + np.nan_to_num(pre) / 1000.0
        nbytes = np.where(costs.offloaded, costs.bytes[:, None, None, None], 0.0)
        d = self.trace.transfer_s_many(nbytes, starts, max_s=sc.timeout_ms / 1000.0)
        lat = costs.latency_ms(d * 1000.0, sc.rtt_ms, self.edge_load)
        return np.where(np.isnan(lat), np.nan, np.minimum(lat, sc.timeout_ms))

    # ------------------------------------------------------------------ internals

    def _pick_trace(self, which: Any, rng: np.random.Generator) -> Trace:
        if which is None:
            family = self._families[int(rng.integers(len(self._families)))]
            members = self._by_family[family]
            return members[int(rng.integers(len(members)))]
        if isinstance(which, int | np.integer):
            return self.traces[int(which)]
        for tr in self.traces:
            if tr.name == which:
                return tr
        raise ValueError(f"trace: {which!r} not among {[t.name for t in self.traces]}")

    def _advance_probes(self, now: float) -> None:
        """Launch due probes up to ``now`` and publish every measurement finished by then."""
        sc = self.scenario
        while self._next_probe <= now:
            tp = self._next_probe
            if tp - self._last_meas_t >= sc.probe_interval_s - 1e-9:
                budget = sc.timeout_ms / 1000.0
                d = self.trace.transfer_s(sc.probe_bytes, tp, max_s=budget)
                if math.isfinite(d):
                    self._pending.append((tp + d, sc.probe_bytes * 8.0 / max(d, 1e-9) / 1e6))
                else:
                    self._pending.append((tp + budget, self.trace.mean_mbps(tp, budget)))
                self._last_meas_t = tp  # a probe in flight counts: no second one
            self._next_probe = tp + sc.probe_interval_s
        if self._pending:
            done = sorted(p for p in self._pending if p[0] <= now)
            if done:
                self._pending = [p for p in self._pending if p[0] > now]
                self._meas.extend(done)  # deque keeps the newest ``history``
                self._last_meas_t = max(self._last_meas_t, done[-1][0])

    def _obs(self) -> np.ndarray:
        sc = self.scenario
        step = min(self._step, sc.episode_steps - 1)
        feat = self._features[self._samples[step]]
        return build_observation(
            self._meas, self._t, sc.history, sc.rtt_ms, sc.deadline_ms, self._lat,
            self._last_conf, self._last_exit, self.n_exits, self._last_off,
            self._feat_scale.z(feat), self._load[step],
        )  # fmt: skip

    def _info_reset(self) -> dict[str, Any]:
        return {
            "trace": self.trace.name, "family": self.trace.family,
            "start_s": self._t0 - self.trace.duration_s, "estimate_mbps": self.estimate_mbps,
        }  # fmt: skip


def make_env(scenario: Scenario | None = None, **kwargs: Any) -> EdgeCloudEnv:
    """Factory used by ``gymnasium.make`` (keeps the entry point a plain function)."""
    return EdgeCloudEnv(scenario, **kwargs)
