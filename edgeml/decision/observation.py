"""The agent's observation vector: built here once for the simulator and the edge daemon.

What the edge knows is one class, :class:`EdgeKnowledge`: the simulator
(:class:`~edgeml.rl_agent.env.EdgeCloudEnv`) feeds it simulated measurements, the edge
daemon real ones, and every policy, baseline and teacher reads it (oracles also read the
simulator's privileged state through :attr:`EdgeKnowledge.sim`, which is None on a device).
The shipped policy was trained on :meth:`EdgeKnowledge.observation`'s exact vector.
Entries (all scaled to roughly [-2, 2]):

====================  ==================================================================
index                 meaning
====================  ==================================================================
``0..K-1``            log10 of the last ``K`` measured throughputs (Mbps) / 2, newest first
``K..2K-1``           their ages, seconds / 10 (capped at 3)
``2K``                log10 of the harmonic-mean estimate over them / 2
``2K+1``              RTT / deadline
``2K+2..2K+4``        the last three latencies / deadline (capped at 5)
``2K+5..2K+7``        the last answer's confidence, its exit / (E-1), whether it was offloaded
``2K+8``              the current input's cheap difficulty feature (z-score over calibration)
``2K+9``              the edge's background load (``1 + load`` slows edge compute)
``2K+10``             the deadline / 100 ms
``2K+11``             the cloud's measured extra wait / deadline (capped at 5)
``2K+12``             requests the cloud last reported waiting or running / 16 (capped at 5)
``2K+13``             log10 of the edge slowdown / 2 (how much slower than the profiling
                      core the edge computes: one policy serves a range of devices)
====================  ==================================================================

The cloud entries come from the replies' load fields (``queue_ms``, ``compute_ms``,
``queued``, ``running`` of ``InferReply``): the extra wait is how much later than alone the
cloud answered (queue wait plus a batch's longer run), smoothed over replies
(:data:`CLOUD_SMOOTHING`); both are 0 until a reply was measured.

Missing measurements (fewer than ``K``) are padded with the estimate and the age cap.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "EdgeKnowledge",
    "CLOUD_SMOOTHING",
    "MIN_MBPS",
    "N_FIXED",
    "N_LAST_LATENCIES",
    "FeatureScale",
    "build_observation",
    "estimate_mbps",
    "history_for",
    "obs_size",
]

MIN_MBPS = 1e-3  # floor for logs and harmonic means: an outage measures as 1 kbit/s
N_LAST_LATENCIES = 3
N_FIXED = 14  # entries besides the 2K throughput entries
#: Weight of the newest reply in the cloud wait estimate (an exponential moving average).
CLOUD_SMOOTHING = 0.5


def obs_size(history: int) -> int:
    """Length of the vector for ``history`` throughput measurements."""
    return 2 * history + N_FIXED


def history_for(size: int) -> int:
    """The ``history`` an observation of ``size`` entries holds (an actor's input size)."""
    return (size - N_FIXED) // 2


@dataclass(frozen=True)
class FeatureScale:
    """Mean and spread of the difficulty feature over the calibration set (its z-score)."""

    mean: float
    std: float

    @classmethod
    def from_calibration(cls, calibration: Any) -> FeatureScale:
        feature = calibration.feature
        return cls(float(feature.mean()), float(feature.std()) or 1.0)

    def z(self, feature: float) -> float:
        return (feature - self.mean) / self.std


def estimate_mbps(meas: Collection[tuple[float, float]]) -> float:
    """Harmonic mean of measured throughputs ``(time_s, mbps)``, floored at :data:`MIN_MBPS`."""
    if not meas:
        return MIN_MBPS
    return len(meas) / sum(1.0 / max(m, MIN_MBPS) for _, m in meas)


def build_observation(
    meas: Collection[tuple[float, float]],
    now: float,
    history: int,
    rtt_ms: float,
    deadline_ms: float,
    latencies: Iterable[float],
    last_conf: float,
    last_exit: int,
    n_exits: int,
    last_offloaded: float,
    feature_z: float,
    edge_load: float,
    cloud_wait_ms: float = 0.0,
    cloud_load: float = 0.0,
    edge_slowdown: float = 1.0,
) -> np.ndarray:
    """The observation (see the module's table) as float32.

    ``meas``: up to ``history`` measurements ``(time_s, mbps)``, oldest first, on the clock
    of ``now``; ``latencies``: the last :data:`N_LAST_LATENCIES` latencies, newest first.
    """
    est = estimate_mbps(meas)
    newest = list(meas)[::-1]
    vals = [math.log10(max(m, MIN_MBPS)) / 2.0 for _, m in newest]
    ages = [min((now - t) / 10.0, 3.0) for t, _ in newest]
    vals += [math.log10(est) / 2.0] * (history - len(vals))
    ages += [3.0] * (history - len(ages))
    d = deadline_ms
    obs = (
        vals
        + ages
        + [math.log10(est) / 2.0, rtt_ms / d]
        + [min(x / d, 5.0) for x in latencies]
        + [last_conf, last_exit / max(n_exits - 1, 1), last_offloaded]
        + [max(min(feature_z, 5.0), -5.0), min(edge_load, 5.0), min(d / 100.0, 5.0)]
        + [min(cloud_wait_ms / d, 5.0), min(cloud_load / 16.0, 5.0)]
        + [min(math.log10(max(edge_slowdown, 1.0)) / 2.0, 5.0)]
    )
    return np.asarray(obs, dtype=np.float32)


class EdgeKnowledge:
    """What the edge knows when an input arrives: measured throughputs ``(time_s, mbps)``
    (oldest first) and the clock they are on, RTT, the last latencies and answer, the
    input's difficulty feature and the edge's load.

    :param history: throughput measurements kept (an actor's input size fixes it).
    :param n_exits: exits of the bundle (the last exit's index scales an entry).
    :param feature_scale: z-score of the difficulty feature (from the calibration set).
    :param edge_slowdown: the device's slowdown against the profile (the scenario's).
    """

    def __init__(
        self,
        history: int,
        n_exits: int,
        feature_scale: FeatureScale,
        rtt_ms: float,
        deadline_ms: float,
        edge_slowdown: float = 1.0,
    ) -> None:
        self.history = history
        self.edge_slowdown = edge_slowdown
        self.n_exits = n_exits
        self.feature_scale = feature_scale
        self.rtt_ms = rtt_ms
        self.deadline_ms = deadline_ms
        self.meas: deque[tuple[float, float]] = deque(maxlen=history)
        self.now_s = 0.0
        self.lat: deque[float] = deque([0.0] * N_LAST_LATENCIES, maxlen=N_LAST_LATENCIES)
        self.last_conf, self.last_exit, self.last_off = 0.0, 0, 0.0
        self.feature = feature_scale.mean
        self.edge_load = 0.0
        self.cloud_wait_ms = 0.0
        self.cloud_load = 0.0
        self.sim: Any = None  # the simulator's privileged state (oracles only)

    @property
    def obs_size(self) -> int:
        return obs_size(self.history)

    def set_measurements(self, meas: Iterable[tuple[float, float]]) -> None:
        """The newest throughput measurements as ``(time_s, mbps)``, oldest first."""
        self.meas = deque(list(meas)[-self.history :], maxlen=self.history)

    def record_answer(
        self, latency_ms: float, confidence: float, exit_index: int, offloaded: bool
    ) -> None:
        """After an input: its latency and the answer's confidence and exit."""
        self.lat.appendleft(latency_ms)
        self.last_conf = confidence
        self.last_exit = exit_index
        self.last_off = float(offloaded)

    def record_cloud(self, queue_ms: float, extra_ms: float, load: float) -> None:
        """A reply's load fields: its queue wait, how much later than alone it came
        (``extra_ms``, the wait included) and the requests waiting or running."""
        a = CLOUD_SMOOTHING
        self.cloud_wait_ms = (1 - a) * self.cloud_wait_ms + a * max(extra_ms, queue_ms, 0.0)
        self.cloud_load = float(load)

    @property
    def estimate_mbps(self) -> float:
        """Harmonic mean of the measured throughputs (what the baselines plan with)."""
        return estimate_mbps(self.meas)

    @property
    def last_mbps(self) -> float:
        """The newest measured throughput (the estimate before anything was measured)."""
        return max(self.meas[-1][1], MIN_MBPS) if self.meas else self.estimate_mbps

    def observation(self) -> np.ndarray:
        """The policy's observation vector (see the module's table)."""
        return build_observation(
            self.meas, self.now_s, self.history, self.rtt_ms, self.deadline_ms, self.lat,
            self.last_conf, self.last_exit, self.n_exits, self.last_off,
            self.feature_scale.z(self.feature), self.edge_load, self.cloud_wait_ms,
            self.cloud_load, self.edge_slowdown,
        )  # fmt: skip
