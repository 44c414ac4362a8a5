"""A fleet: N simulated edges, each on its own trace, input stream and load, on one cloud.

Each edge is an :class:`~edgeml.rl_agent.env.EdgeCloudEnv` (its link, its inputs, the one
outcome rule); the cloud is a :class:`~edgeml.decision.cloud.CloudModel`, the server's
batching rule on simulated time with its measured batch service times. :class:`Fleet`
interleaves them as a discrete-event simulation on one clock: an edge decides when its input
arrives (frames at ``input_rate``, each edge at its own phase), its tensor reaches the cloud
``pre + transfer + rtt/2`` later, waits for a batch, and its reply comes back ``rtt/2``
after the batch ends, later than alone by the queue wait and the batch's longer run; an edge
that has no reply by its give-up time answers locally (the outcome rule), and the cloud runs
its request anyway unless the request's deadline passed first. The edges' link probes are
requests too (the probe split, the last exit): they queue and batch with the offloads, and
their replies tell an edge that stays local how loaded the cloud is.

With one edge nobody shares the cloud: every request runs at once at batch 1 and
:meth:`Fleet.play` gives exactly what :meth:`EdgeCloudEnv.step` gives.

:class:`FleetEnv` is the gym view for training: one learning edge among ``N - 1`` others
driven by a given policy (a snapshot of the learner: parameter sharing).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from edgeml.decision.action import TAUS, Action
from edgeml.decision.cloud import BatchingRule, CloudJob, CloudModel, CloudReply, CloudService
from edgeml.progressive.calibrate import Calibration
from edgeml.rl_agent.env import EdgeCloudEnv, Pending, ProbeJob

__all__ = ["EdgeEpisode", "Fleet", "FleetEnv", "fleet_rng", "frame_phases"]

Decide = Callable[[int, EdgeCloudEnv], Action]
Record = Callable[[int, float, dict[str, Any]], None]

_DECIDE, _ARRIVE, _GIVE_UP = 0, 1, 2


@dataclass(frozen=True)
class EdgeEpisode:
    """One edge's episode: its trace, where in it it starts, and its seed."""

    trace: str
    start_s: float
    seed: int
    inputs: Calibration | None = None  # inputs to replay (None: drawn), see EdgeCloudEnv.reset

    def options(self) -> dict[str, Any]:
        """``EdgeCloudEnv.reset``'s options for this episode."""
        return {"trace": self.trace, "start_s": self.start_s, "inputs": self.inputs}


def fleet_rng(seed: int, index: int = 0) -> np.random.Generator:
    """The random stream of fleet ``index`` of a run seeded ``seed`` (its edges' phases):
    ``edgeml evaluate --edges`` and the live fleet's simulation play fleet 0 of ``--seed``,
    and the live fleet starts its edges at that fleet's phases."""
    return np.random.default_rng(seed * 7_919 + index)


def frame_phases(n: int, interval_ms: float, rng: np.random.Generator) -> list[float]:
    """When each of ``n`` edges' first frame comes within the frame interval (ms): edge 0 at
    0, the others uniform, since cameras are not synchronised (edges in lockstep would
    offload together)."""
    return [0.0, *(float(rng.uniform(0.0, interval_ms)) for _ in range(n - 1))]


@dataclass
class _Open:
    """An offloaded input whose answer the edge has not had yet."""

    edge: int
    pending: Pending
    done: bool = False


@dataclass(frozen=True)
class _Probe:
    """A probe in the cloud: its edge, and when (fleet ms) its reply is back if the cloud
    takes it at once and alone (the edge stops waiting at the job's ``expires_ms``)."""

    edge: int
    reply_ms: float


@dataclass
class Fleet:
    """``envs`` (one per edge) on one cloud; see the module docstring.

    :param envs: the edges (each its own env; they may share traces and the bundle).
    :param service: the cloud's batch service times.
    :param rule: the server's batching rule.
    :param planned: the service times the edges plan with (their profile), when the cloud
        is not as fast as profiled (None: ``service``). A reply's ``extra_ms`` is measured
        against it, as the daemon measures it against its cost model.
    """

    envs: Sequence[EdgeCloudEnv]
    service: CloudService
    rule: BatchingRule = field(default_factory=BatchingRule)
    planned: CloudService | None = None

    def __post_init__(self) -> None:
        self.cloud = CloudModel(self.service, self.rule)
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = itertools.count()
        self.phases_ms = [0.0] * len(self.envs)  # each edge's first frame (ms), see reset
        self._flying: set[CloudJob] = set()  # sent, not yet arrived
        self.exit_blocks = tuple(self.service.exits)
        self._now_ms = -math.inf  # the fleet's clock: the event being handled
        self._index: dict[int, int] = {}  # id(env) -> its edge

    @property
    def n(self) -> int:
        return len(self.envs)

    def reset(self, episodes: Sequence[EdgeEpisode], rng: np.random.Generator) -> list[np.ndarray]:
        """Start every edge's episode; each edge's first frame comes at a random phase
        within the frame interval (cameras are not synchronised). Returns first observations."""
        if len(episodes) != self.n:
            raise ValueError(f"episodes: {len(episodes)} for {self.n} edges")
        self.cloud = CloudModel(self.service, self.rule)
        self._heap.clear()
        self._flying.clear()
        self._now_ms = -math.inf
        self._index = {id(env): i for i, env in enumerate(self.envs)}
        self.phases_ms = frame_phases(self.n, 1000.0 / self.envs[0].scenario.input_rate, rng)
        obs = []
        for env, ep in zip(self.envs, episodes, strict=True):
            env.probe_sink = self._probe  # the edges' probes go to this cloud too
            o, _ = env.reset(seed=ep.seed, options=ep.options())
            obs.append(o)
        for i, phase in enumerate(self.phases_ms):
            self._push(phase, _DECIDE, i)
        return obs

    def play(self, decide: Decide, record: Record) -> None:
        """Run every edge's episode to its end: ``decide(edge, env)`` picks each action,
        ``record(edge, reward, info)`` receives each answer."""
        self.pump(decide, record, learner=None)

    def pump(self, decide: Decide, record: Record, learner: int | None) -> float | None:
        """Run events until ``learner`` is due to decide (returns the time, ms, on the fleet
        clock; the caller then :meth:`begin`\\ s its action) or until every edge is done
        (returns None)."""
        while True:
            t_cloud = self.cloud.next_event_ms()
            t_edge = self._heap[0][0] if self._heap else math.inf
            if t_cloud <= t_edge and t_cloud < math.inf:
                self._now_ms = t_cloud
                self._replies(self.cloud.advance(t_cloud), record)
                continue
            if not self._heap:
                return None
            t, _, kind, what = heapq.heappop(self._heap)
            self._now_ms = t
            if kind == _ARRIVE:
                self._flying.discard(what)
                self._replies(self.cloud.advance(t), record)
                self.cloud.arrive(what)
                self._replies(self.cloud.advance(t), record)
            elif kind == _GIVE_UP:
                if not what.done:  # no reply by the give-up time: the edge answers locally
                    p = what.pending
                    late = max(p.give_up_ms - p.reply_ms, 0.0)
                    reply = CloudReply(late, late, self.cloud.load, expired=True)
                    self._finish(what, reply, record)
            else:
                i = int(what)
                env = self.envs[i]
                if env._step >= env.scenario.episode_steps:
                    continue
                env.read_reports()  # the probe replies back by now
                if i == learner:
                    return t
                self.begin(i, decide(i, env), t, record)

    def begin(self, i: int, action: Action, t: float, record: Record) -> None:
        """Edge ``i`` takes ``action`` for its input due at ``t`` (fleet ms)."""
        env = self.envs[i]
        env.cloud_backlog_ms = self.cloud.backlog_ms(t, self._flying)
        p = env.begin(np.asarray(action))
        if not p.sent:
            rew, info = self._answer(i, p, None)
            record(i, rew, info)
            return
        job = CloudJob(
            key=(p.split, p.exit), arrival_ms=t + p.arrival_ms,
            stop_block=self.exit_blocks[p.stop], early=TAUS[p.tau_index] < 1.0,
            expires_ms=t + p.give_up_ms, owner=_Open(i, p),
        )  # fmt: skip
        self._flying.add(job)
        self._push(job.arrival_ms, _ARRIVE, job)
        self._push(t + p.give_up_ms, _GIVE_UP, job.owner)

    def next_obs(self, i: int) -> np.ndarray:
        """Edge ``i``'s observation for its input now due."""
        env = self.envs[i]
        env.cloud_backlog_ms = self.cloud.backlog_ms(self._due(i), self._flying)
        return env._obs()

    # ------------------------------------------------------------------ internals

    def _push(self, t: float, kind: int, what: Any) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), kind, what))

    def _due(self, i: int) -> float:
        env = self.envs[i]
        return self.phases_ms[i] + env.time_s * 1000.0

    def _probe(self, probe: ProbeJob) -> None:
        """An edge's probe (:attr:`EdgeCloudEnv.probe_sink`): a request at the probe split
        and the last exit, as the daemon's. One the edge sent while its input was in
        flight reaches the cloud no earlier than now (the fleet handles inputs whole)."""
        i = self._index[id(probe.env)]
        at = self.phases_ms[i]
        job = CloudJob(
            key=(probe.env.probe_split, len(self.exit_blocks) - 1),
            arrival_ms=max(at + probe.arrival_s * 1000.0, self._now_ms),
            stop_block=self.exit_blocks[-1], expires_ms=at + probe.give_up_s * 1000.0,
            owner=_Probe(i, at + probe.reply_s * 1000.0),
        )  # fmt: skip
        self._flying.add(job)
        self._push(job.arrival_ms, _ARRIVE, job)

    def _replies(self, jobs: list[CloudJob], record: Record) -> None:
        for job in jobs:
            if isinstance(job.owner, _Probe):
                self._probe_reply(job)
                continue
            o: _Open = job.owner
            if o.done:
                continue  # the edge gave up on it already
            p = o.pending
            if job.expired:
                continue  # dropped unrun at the deadline: the give-up answers it
            load = job.queued_at_done + job.batch_size  # the reply's queued + running
            self._finish(o, CloudReply(job.queue_ms, self._extra(job, p.split), load), record)

    def _extra(self, job: CloudJob, split: int) -> float:
        """How much later than alone the cloud answered ``job`` (against the plan)."""
        alone = (self.planned or self.service).alone_ms(split, job.stop_block, job.early)
        return max(job.done_ms - job.arrival_ms - alone, 0.0)

    def _probe_reply(self, job: CloudJob) -> None:
        """A probe's reply: its load fields reach the edge when the reply is back, unless
        the cloud dropped it or it came after the edge stopped waiting."""
        if job.expired:
            return
        probe: _Probe = job.owner
        env = self.envs[probe.edge]
        extra = self._extra(job, env.probe_split)
        back = probe.reply_ms + extra
        if back > job.expires_ms:
            return
        reply = CloudReply(job.queue_ms, extra, job.queued_at_done + job.batch_size)
        env.report_probe((back - self.phases_ms[probe.edge]) / 1000.0, reply)

    def _finish(self, o: _Open, reply: CloudReply, record: Record) -> None:
        o.done = True
        rew, info = self._answer(o.edge, o.pending, reply)
        record(o.edge, rew, info)

    def _answer(self, i: int, p: Pending, reply: CloudReply | None) -> tuple[float, dict[str, Any]]:
        env = self.envs[i]
        _, rew, _, _, info = env.finish(p, reply)
        info["edge"] = i
        if env._step < env.scenario.episode_steps:
            self._push(self._due(i), _DECIDE, i)
        return rew, info


class FleetEnv(gym.Env[np.ndarray, np.ndarray]):
    """One learning edge (edge 0) among ``N - 1`` others on a shared cloud, as a gym env.

    :param make_edge: builds one edge env (all share traces and bundle).
    :param service: the cloud's batch service times; ``rule`` its batching rule.
    :param sizes: fleet sizes, one drawn per episode (uniformly).
    :param others: the policy of the other edges, ``others(view) -> Action`` (training
        passes a snapshot of the learner that follows it).
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        make_edge: Callable[[], EdgeCloudEnv],
        service: CloudService,
        sizes: Sequence[int],
        others: Callable[[Any], Action],
        rule: BatchingRule | None = None,
    ) -> None:
        super().__init__()
        self.sizes = tuple(int(n) for n in sizes)
        self.edges = [make_edge() for _ in range(max(self.sizes))]
        first = self.edges[0]
        self.action_space = first.action_space
        self.observation_space = first.observation_space
        self.service, self.rule = service, rule or BatchingRule()
        self.others = others
        self.fleet = Fleet(self.edges[:1], service, self.rule)
        self._result: tuple[float, dict[str, Any]] | None = None

    @property
    def world(self) -> Any:
        return self.edges[0].world

    @property
    def scenario(self) -> Any:
        return self.edges[0].scenario

    def act(self, policy: Any) -> Action:
        """``policy``'s action for the learning edge's current input."""
        return self.edges[0].act(policy)

    def _decide(self, i: int, env: EdgeCloudEnv) -> Action:
        return self.others(env.know)

    def _record(self, i: int, reward: float, info: dict[str, Any]) -> None:
        if i == 0:
            self._result = (reward, info)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        rng = self.np_random
        n = self.sizes[int(rng.integers(len(self.sizes)))]
        self.fleet = Fleet(self.edges[:n], self.service, self.rule)
        eps = []
        for env in self.fleet.envs:
            tr = env.traces[int(rng.integers(len(env.traces)))]
            eps.append(EdgeEpisode(tr.name, float(rng.uniform(0, tr.duration_s)),
                                   int(rng.integers(2**31))))  # fmt: skip
        self.fleet.reset(eps, rng)
        t = self.fleet.pump(self._decide, self._record, learner=0)
        assert t is not None
        self._t = t
        return self.fleet.next_obs(0), {"edges": n}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._result = None
        self.fleet.begin(0, Action.of(action), self._t, self._record)
        t = self.fleet.pump(self._decide, self._record, learner=0)
        assert self._result is not None  # the learner's input is answered before its next
        reward, info = self._result
        if t is None:  # the learner's episode is over
            return self.edges[0]._obs(), reward, False, True, info
        self._t = t
        return self.fleet.next_obs(0), reward, False, False, info
