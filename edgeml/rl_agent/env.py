"""``edgeml/EdgeCloud-v0``: one input per step; the action picks split, exit and threshold.

The world: inputs arrive at ``input_rate`` from a camera-like stream (:mod:`.dynamics`); the
uplink follows a real bandwidth trace (:mod:`.traces`); the edge core carries a background
load; latency of an action comes from the bundle's cost model with the link time
integrated over the trace; accuracy is the bundle's calibration table.

The agent sees only what the edge can know: measured throughputs and their ages, RTT,
recent latencies and answers, the input's difficulty feature, the edge's load and the
deadline (an :class:`~edgeml.decision.observation.EdgeKnowledge`, the class the edge daemon
fills from real measurements; the table of entries is in that module).

Throughput is measured only by the edge's own transfers, as the daemon measures them
(each sample when its reply is back): every offload, and a probe the edge sends when it has
measured nothing for ``probe_interval_s`` (so a policy that stays on the edge does not blind
itself and the baselines for ever). A probe is the daemon's: the int8 tensor of the cut
closest to ``probe_bytes``, answered by the cloud at the last exit; its reply also carries
the cloud's load (a shared cloud's, through :attr:`EdgeCloudEnv.probe_sink`). A transfer
that gets no answer is a censored sample, its bytes over the time waited. RTT is the
constant ``rtt_ms`` here.

Reward per input and the outcome of an offload come from the decision core
(:mod:`edgeml.decision.outcome`), the very rule the edge daemon runs: an offload not answered
by ``deadline + grace`` is answered locally from the split (the deepest exit past it that
still fits, else the shallowest), so the agent trains on the fallback that really runs.
Inputs come on the frame grid of ``input_rate``: the next starts when its frame comes, or
as soon as the edge is free when an answer was late (the newest frame by then).

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
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from edgeml.bundle import Bundle
from edgeml.decision.action import TAUS, Action
from edgeml.decision.cloud import CloudReply
from edgeml.decision.observation import obs_size
from edgeml.decision.outcome import reward as reward_of
from edgeml.decision.policies import World
from edgeml.decision.scenario import Scenario
from edgeml.decision.tables import ActionCosts, Outcomes
from edgeml.rl_agent.dynamics import InputStream, background_load
from edgeml.rl_agent.traces import Trace, load_traces

log = logging.getLogger(__name__)

__all__ = ["ENV_ID", "EdgeCloudEnv", "Pending", "ProbeJob", "make_env"]


@dataclass
class Pending:
    """One input between the edge's part (:meth:`EdgeCloudEnv.begin`) and its answer.

    Times in ms from the input's start (``t``, the env's clock in s): ``pre_ms`` the edge's
    compute, ``arrival_ms`` when the tensor reaches the cloud and ``reply_ms`` when the
    answer is back on a cloud of its own (inf: the transfer did not finish by
    ``give_up_ms``, or nothing was sent).
    """

    t: float
    split: int
    exit: int
    tau_index: int
    sample: int
    stop: int
    load: float
    pre_ms: float
    offloaded: bool
    nbytes: float
    arrival_ms: float
    reply_ms: float
    give_up_ms: float = math.inf
    # the upload started before the give-up (the edge measures something once it ends)
    left: bool = False
    # the Mbps of the transfer, if it finished: the edge's sample (at the reply) when the
    # cloud answers by ``give_up_ms``; without an answer the daemon has only the bytes over
    # the time it waited (:meth:`censored`), however early the upload had finished
    measured: float | None = None

    def censored(self) -> tuple[float, float]:
        """What an edge that got no answer measures: ``(when, Mbps)`` of the bytes over
        the time it waited (an upper bound on the link's rate)."""
        waited = (self.give_up_ms - self.pre_ms) / 1000.0
        return self.t + self.give_up_ms / 1000.0, self.nbytes * 8.0 / max(waited, 1e-9) / 1e6

    @property
    def sent(self) -> bool:
        """The tensor reached the cloud."""
        return math.isfinite(self.arrival_ms)


@dataclass(frozen=True)
class _InputTables:
    """Per-input outcome tables as Python lists (list indexing beats numpy's in the step)."""

    outcomes: Outcomes
    stop: list[Any]  # [e][tau][input] exit where the run stops
    correct: list[Any]
    conf: list[Any]
    feature: list[float]  # the edge's difficulty signal per input

    @classmethod
    def of(cls, outcomes: Outcomes, feature: np.ndarray) -> _InputTables:
        return cls(outcomes, outcomes.stop.tolist(), outcomes.correct.tolist(),
                   outcomes.conf.tolist(), np.asarray(feature).tolist())  # fmt: skip


@dataclass(frozen=True)
class ProbeJob:
    """A probe on its way to a shared cloud, in s into ``env``'s episode (the clock of
    :attr:`EdgeCloudEnv.time_s`): when it reaches the cloud, when its reply is back if the
    cloud takes it at once and alone, and when the edge stops waiting for it
    (``probe_timeout_s`` after it left)."""

    env: EdgeCloudEnv
    arrival_s: float
    reply_s: float
    give_up_s: float


ENV_ID = "edgeml/EdgeCloud-v0"


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
        self.bundle = bundle
        self.world = World.from_bundle(bundle, sc)
        self.scenario = self.world.scenario  # edge_runtime resolved for this bundle
        self.cost = self.world.cost
        self.outcomes = self.world.outcomes
        self.rule = self.world.rule
        self.costs = ActionCosts.from_cost_model(self.cost, sc.codec)
        cal = bundle.calibration
        assert cal is not None  # World.from_bundle refuses a bundle without one
        self.n_splits, self.n_exits, self.n_taus = self.costs.shape[:3]
        self.action_space = spaces.MultiDiscrete([self.n_splits, self.n_exits, self.n_taus])
        self.observation_space = spaces.Box(-5.0, 5.0, (obs_size(sc.history),), np.float32)
        self.know = self.world.knowledge()
        self.know.sim = self
        # Python mirrors of the hot tables (list indexing beats numpy scalar indexing).
        self._edge = self.costs.edge_ms.tolist()
        self._far = self.costs.far_ms.tolist()
        self._off = self.costs.offloaded.tolist()
        self._bytes = self.costs.bytes.tolist()
        # the daemon's probe: the int8 tensor of its probe split, answered at the last exit
        self._probe_bytes = self.cost.probe_bytes(sc.probe_bytes)
        self.probe_split = self.cost.probe_split(sc.probe_bytes)
        last = self.n_exits - 1
        self._probe_far = self._far[self.probe_split][last][0][last]  # TAUS[0] is 1.0
        # a shared cloud takes the probes (the fleet sets it); None: a cloud of its own
        self.probe_sink: Callable[[ProbeJob], None] | None = None
        self._drawn = _InputTables.of(self.outcomes, cal.feature)
        self._inputs = self._drawn  # the episode's inputs' outcomes (reset may replay others)
        self._difficulty = cal.difficulty
        out = self.outcomes
        with np.errstate(invalid="ignore", divide="ignore"):
            cond = np.where(out.p_stop > 0, out.p_correct / out.p_stop, 0.0)
        self._p_correct_at_stop = cond.tolist()  # (L, E, T, J): P(correct | level, stop)
        self._by_family: dict[str, list[Trace]] = {}
        for tr in self.traces:
            self._by_family.setdefault(tr.family, []).append(tr)
        self._families = sorted(self._by_family)
        self._stream: InputStream | None = None
        self.cloud_backlog_ms = 0.0  # a shared cloud's work ahead now (the fleet sets it)

    # ------------------------------------------------------------------ gym API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode; ``options`` may fix ``trace`` (name or index) and ``start_s``,
        and give ``inputs``: a :class:`~edgeml.progressive.calibrate.Calibration` of the
        episode's inputs in their order (at least ``episode_steps``; a live edge's, from
        :func:`edgeml.runtime.replay.source_inputs`) to replay in place of inputs drawn
        from the bundle's calibration set."""
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
        self._frame_t = self._t0  # when the current input's frame came (the frame grid)
        n = sc.episode_steps
        # drawn even when replayed below, so the episode's later draws stay the same
        self._stream = InputStream.generate(self._difficulty, n, rng, sc.input_rate, sc.stream)
        self._inputs = self._drawn
        replay = options.get("inputs")
        if replay is not None:
            if replay.num_samples < n:
                raise ValueError(f"inputs: {replay.num_samples} replayed, the episode has {n}")
            self._inputs = _InputTables.of(Outcomes.from_calibration(replay), replay.feature)
            self._stream = InputStream(np.arange(n), replay.difficulty[:n].astype(np.int64))
        self._samples = self._stream.samples.tolist()
        self._levels = self._stream.levels.tolist()
        self._level_idx = np.searchsorted(self.outcomes.levels, self._stream.levels).tolist()
        self._load = background_load(n, rng, sc.input_rate, sc.load).tolist()
        # its own stream, drawn only with an overhead: the ideal stack's episodes stay as they were
        self._stack_rng = (
            np.random.default_rng(int(rng.integers(2**63))) if sc.call_overhead_ms > 0 else None
        )
        self._step = 0
        self.know = self.world.knowledge()
        self.know.sim = self
        self._pending: list[tuple[float, float]] = []
        self._reports: list[tuple[float, CloudReply]] = []  # probe replies not yet read
        # as the daemon's start-up: ``history`` probes before the first input
        self._last_meas_t = self._t - (sc.history + 1) * sc.probe_interval_s
        self._advance_probes(self._t)
        return self._obs(), self._info_reset()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        return self.finish(self.begin(action))

    def begin(self, action: np.ndarray) -> Pending:
        """The edge's part of ``action`` for the current input: compute, and the tensor's
        transfer if it offloads. :meth:`finish` then answers it; :meth:`step` is both, on a
        cloud of its own (a fleet's cloud, :mod:`.fleet`, adds its wait in between)."""
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
        j = self._inputs.stop[e][ti][i]
        pre = self._edge[s][e][ti][j] * (1.0 + load)
        offloaded = bool(self._off[s][e][ti][j])
        nbytes = self._bytes[s] if offloaded else 0.0
        p = Pending(self._t, s, e, ti, i, j, load, pre, offloaded, nbytes, math.inf, math.inf)
        if offloaded:
            give_up = self.rule.give_up_ms(s, e, load)
            send_t = self._t + pre / 1000.0
            over = self._call_ms()
            budget_s = max(give_up - pre - over, 0.0) / 1000.0
            d = self.trace.transfer_s(nbytes, send_t, max_s=budget_s)
            p.give_up_ms = give_up
            p.left = budget_s > 0
            if math.isfinite(d):
                p.measured = self._measured(d, nbytes, over)
                p.arrival_ms = pre + d * 1000.0 + (sc.rtt_ms + over) / 2.0
                p.reply_ms = pre + d * 1000.0 + sc.rtt_ms + over + self._far[s][e][ti][j]
        return p

    def finish(
        self, p: Pending, cloud: CloudReply | None = None
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Answer the input :meth:`begin` started; ``cloud``: what a shared cloud added to
        the reply (None: a cloud of its own, or no reply before the edge gave up)."""
        sc = self.scenario
        s, e, ti, i, j, load = p.split, p.exit, p.tau_index, p.sample, p.stop, p.load
        reply = p.reply_ms
        if cloud is None and p.sent:  # a cloud of its own: idle, this request alone
            cloud = CloudReply(0.0, 0.0, 1)
        if cloud is not None:
            reply = math.inf if cloud.expired else reply + cloud.extra_ms
            if not cloud.expired:  # a reply's load fields; the daemon learns none at a give-up
                self.know.record_cloud(cloud.queue_ms, cloud.extra_ms, cloud.load)
        out = self.rule.resolve(s, e, j, p.offloaded, p.pre_ms, reply, p.nbytes, load)
        if p.measured is not None and out.where == "cloud":  # as the daemon: at the reply
            self._pending.append((p.t + reply / 1000.0, p.measured))
        elif p.left:  # no answer (a reply too late, or an upload cut off): censored
            self._pending.append(p.censored())
        latency = out.latency_ms
        tables = self._inputs
        if out.where == "fallback":
            correct, conf = tables.outcomes.answer(out.exit_index, i)
        else:
            correct, conf = tables.correct[e][ti][i], tables.conf[e][ti][i]
        timely = bool(correct) and latency <= sc.deadline_ms
        if sc.reward == "expected" and out.where != "fallback":
            hit = latency <= sc.deadline_ms
            value = self._p_correct_at_stop[self._level_idx[self._step]][e][ti][j] if hit else 0.0
            reward = value - sc.latency_weight * min(latency / sc.deadline_ms, sc.latency_cap)
        else:
            reward = reward_of(bool(correct), latency, sc)
        info = {
            "latency_ms": latency, "correct": bool(correct), "timely": timely,
            "where": out.where, "bytes": out.bytes, "offloaded": out.where == "cloud",
            "fallback": out.where == "fallback", "split": s, "exit": e, "tau": TAUS[ti],
            "stop_exit": out.exit_index, "level": int(self._levels[self._step]),
            "sample": i, "time_s": p.t - self._t0, "bandwidth_mbps": self.trace.mbps_at(p.t),
            "estimate_mbps": self.estimate_mbps, "edge_load": load,
            "cloud_wait_ms": 0.0 if cloud is None else cloud.extra_ms,
            "cloud_queue_ms": 0.0 if cloud is None else cloud.queue_ms,
        }  # fmt: skip
        self.know.record_answer(latency, conf, out.exit_index, out.where != "edge")
        self._t = self._next_input_s(self._t + latency / 1000.0)
        self._advance_probes(self._t)
        self._step += 1
        truncated = self._step >= sc.episode_steps
        return self._obs(), reward, False, truncated, info

    # ------------------------------------------------------------------ what the edge knows

    @property
    def estimate_mbps(self) -> float:
        """Harmonic mean of the measured throughputs (what the baselines plan with)."""
        return self.know.estimate_mbps

    @property
    def edge_load(self) -> float:
        """The edge's background load for the current input."""
        return self._load[min(self._step, len(self._load) - 1)]

    def act(self, policy: Any) -> Action:
        """``policy``'s action for the current input (from what the edge knows)."""
        return policy.act(self.know)

    # ------------------------------------------------------------------ privileged (oracle)

    @property
    def current_sample(self) -> int:
        """The current input's row in :attr:`input_outcomes`."""
        return self._samples[self._step]

    @property
    def input_outcomes(self) -> Outcomes:
        """The outcomes of the episode's inputs: the bundle's calibration set's, or the
        replayed inputs' (``reset(options={"inputs": ...})``)."""
        return self._inputs.outcomes

    @property
    def current_level(self) -> int:
        assert self._stream is not None
        return int(self._stream.levels[self._step])

    @property
    def time_s(self) -> float:
        return self._t - self._t0

    def true_latency_table(self) -> np.ndarray:
        """Latency (ms) of every ``(s, e, tau, stop)`` for the current input, with the true
        future bandwidth of the trace and the fallback rule applied; NaN where impossible."""
        sc = self.scenario
        costs = self.costs
        pre = costs.edge_ms * (1.0 + self.edge_load)
        starts = self._t + np.nan_to_num(pre) / 1000.0
        nbytes = np.where(costs.offloaded, costs.bytes[:, None, None, None], 0.0)
        grace = sc.grace_ms
        if grace is None:  # no grace is longer than the longest local finish
            grace = self.cost.local_finish_ms(0, self.n_exits - 1, self.edge_load)
        horizon = (sc.deadline_ms + grace) / 1e3
        d = self.trace.transfer_s_many(nbytes, starts, max_s=horizon)
        lat = costs.latency_ms(d * 1000.0, sc.rtt_ms + sc.call_overhead_ms, self.edge_load)
        if self.cloud_backlog_ms > 0:
            lat = lat + np.where(costs.offloaded, self.cloud_backlog_ms, 0.0)
        return self.rule.apply_to_table(lat, costs.offloaded, self.edge_load)

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

    def _call_ms(self) -> float:
        """One call's time in the RPC stack beyond the link: exponential with the scenario's
        mean (a live fleet's calls spread so, 0.2-2.3x the mean between the deciles), 0 for
        an ideal stack. The oracle plans with the mean."""
        if self._stack_rng is None:
            return 0.0
        return float(self._stack_rng.exponential(self.scenario.call_overhead_ms))

    def _next_input_s(self, done: float) -> float:
        """When the edge starts its next input, the last one done at ``done``: frames come
        on a fixed grid of ``1 / input_rate`` (a camera's clock); the next is taken when it
        comes, or at once if the edge was still busy, and then it is the newest frame that
        has come by then (older ones are skipped), as the daemon's paced source does. So a
        late answer delays the next input but not the grid: edges keep their phases."""
        period = 1.0 / self.scenario.input_rate
        frame = self._frame_t + period
        if done > frame:
            frame += math.floor((done - frame) / period) * period
        self._frame_t = frame
        return max(frame, done)

    def _measured(self, d: float, nbytes: float, over_ms: float) -> float:
        """The Mbps the edge measures for ``nbytes`` that took ``d`` s on the link and
        ``over_ms`` in the stack (counted, as by the live estimator)."""
        return nbytes * 8.0 / max(d + over_ms / 1000.0, 1e-9) / 1e6

    def report_probe(self, t: float, reply: CloudReply) -> None:
        """A shared cloud's reply to a probe (:attr:`probe_sink`), back ``t`` s into the
        episode (:attr:`time_s`'s clock); a probe it did not answer in time has none."""
        self._reports.append((self._t0 + t, reply))

    def _probe(self, due: float) -> None:
        """Send a probe at ``due`` (env s): the daemon's probe tensor, answered at the last
        exit. Its throughput sample comes with the reply, as does the cloud's load, which a
        shared cloud (:attr:`probe_sink`) reports; one that the link does not carry within
        ``probe_timeout_s`` is a censored sample, its bytes over its timeout."""
        sc = self.scenario
        budget, nbytes = sc.probe_timeout_s, self._probe_bytes
        d = self.trace.transfer_s(nbytes, due, max_s=budget)
        if not math.isfinite(d):
            self._pending.append((due + budget, nbytes * 8.0 / budget / 1e6))
            return
        over = self._call_ms()
        half = (sc.rtt_ms + over) / 2000.0
        reply = due + d + 2 * half + self._probe_far / 1000.0
        self._pending.append((reply, self._measured(d, nbytes, over)))
        if self.probe_sink is None:  # a cloud of its own: idle, the probe alone
            self._reports.append((reply, CloudReply(0.0, 0.0, 1)))
        else:
            t0 = self._t0
            self.probe_sink(ProbeJob(self, due + d + half - t0, reply - t0, due + budget - t0))

    def _advance_probes(self, now: float) -> None:
        """Publish, in time order up to ``now``, every measurement and probe reply back by
        then, and send the probes due in between: as the daemon's prober, a probe starts
        once nothing was measured for ``probe_interval_s`` since the newest measurement
        (or since the last probe started)."""
        interval = self.scenario.probe_interval_s
        while True:
            due = self._last_meas_t + interval
            first = min(self._pending) if self._pending else (math.inf, 0.0)
            if min(due, first[0]) > now:
                break
            if first[0] <= due:
                self._pending.remove(first)
                self.know.meas.append(first)  # deque keeps the newest ``history``
                self._last_meas_t = max(self._last_meas_t, first[0])
                continue
            self._last_meas_t = due  # a probe in flight counts: no second one
            self._probe(due)
        self.read_reports(now)

    def read_reports(self, now: float | None = None) -> None:
        """Take in the probe replies back by ``now`` (env s; None: the current input's
        start), oldest first."""
        now = self._t if now is None else now
        if self._reports:
            back = sorted((r for r in self._reports if r[0] <= now), key=lambda r: r[0])
            self._reports = [r for r in self._reports if r[0] > now]
            for _, rep in back:
                self.know.record_cloud(rep.queue_ms, rep.extra_ms, rep.load)

    def _obs(self) -> np.ndarray:
        step = min(self._step, self.scenario.episode_steps - 1)
        k = self.know
        k.now_s = self._t
        k.feature = self._inputs.feature[self._samples[step]]
        k.edge_load = self._load[step]
        return k.observation()

    def _info_reset(self) -> dict[str, Any]:
        return {
            "trace": self.trace.name, "family": self.trace.family,
            "start_s": self._t0 - self.trace.duration_s, "estimate_mbps": self.estimate_mbps,
        }  # fmt: skip


def make_env(scenario: Scenario | None = None, **kwargs: Any) -> EdgeCloudEnv:
    """Factory used by ``gymnasium.make`` (keeps the entry point a plain function)."""
    return EdgeCloudEnv(scenario, **kwargs)
