"""What the edge knows, kept up to date input by input, as the policy's observation.

The agent was trained on :class:`edgeml.rl_agent.env.EdgeCloudEnv`'s observation vector,
so the daemon builds it with the same function,
:func:`edgeml.rl_agent.observation.build_observation`, from its own measurements;
``tests/test_runtime_units.py`` checks the two vectors are identical on a stepped env, so
feeding the builder differently on either side fails a test.

:class:`EdgeState` also quacks like the env for the edge-side baselines of
:mod:`edgeml.rl_agent.baselines` (``estimate_mbps``, ``edge_load``, ``scenario``, ``cost``,
``outcomes``, ``n_splits``, ``n_exits``, ``action_space``), so the runtime runs the same
baseline code as the simulator instead of a re-implementation.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from gymnasium import spaces

from edgeml.bundle import Bundle
from edgeml.partition.cost import CostModel
from edgeml.progressive.rule import TAUS
from edgeml.rl_agent.observation import (
    N_LAST_LATENCIES,
    FeatureScale,
    build_observation,
    estimate_mbps,
    obs_size,
)
from edgeml.rl_agent.tables import Outcomes

__all__ = ["EdgeScenario", "EdgeState"]


@dataclass(frozen=True)
class EdgeScenario:
    """The scenario fields the baselines read (named as in ``rl_agent.env.Scenario``)."""

    codec: str
    rtt_ms: float
    deadline_ms: float


class EdgeState:
    """The edge's running knowledge: measured throughputs, latencies, last answer, load.

    :param history: throughput measurements in the observation (the env's ``history``;
        an exported actor's input size fixes it: ``2 * history + 11``).
    """

    def __init__(
        self,
        bundle: Bundle,
        cost: CostModel,
        codec: str,
        deadline_ms: float,
        rtt_ms: float,
        history: int = 4,
    ) -> None:
        if bundle.calibration is None:
            raise ValueError(f"{bundle.path}: no calibration.npz; rebuild with `edgeml build`")
        cal = bundle.calibration
        self.history = history
        self.cost = cost
        self.outcomes = Outcomes.from_calibration(cal)
        self.n_splits = cost.num_blocks + 1
        self.n_exits = cost.num_exits
        self.action_space = spaces.MultiDiscrete([self.n_splits, self.n_exits, len(TAUS)])
        self.scenario = EdgeScenario(codec, rtt_ms, deadline_ms)
        self._feat_scale = FeatureScale.from_calibration(cal)
        self.meas: deque[tuple[float, float]] = deque(maxlen=history)  # (time, Mbps)
        self.lat: deque[float] = deque([0.0] * N_LAST_LATENCIES, maxlen=N_LAST_LATENCIES)
        self.last_conf, self.last_exit, self.last_off = 0.0, 0, 0.0
        self.feature = self._feat_scale.mean
        self.edge_load = 0.0

    @property
    def obs_size(self) -> int:
        return obs_size(self.history)

    # ------------------------------------------------------------------ updates

    def set_rtt(self, rtt_ms: float) -> None:
        self.scenario = EdgeScenario(self.scenario.codec, rtt_ms, self.scenario.deadline_ms)

    def set_measurements(self, meas: list[tuple[float, float]]) -> None:
        """The newest throughput measurements as ``(time_s, mbps)``, oldest first."""
        self.meas = deque(meas[-self.history :], maxlen=self.history)

    def record_answer(
        self, latency_ms: float, confidence: float, exit_index: int, offloaded: bool
    ) -> None:
        """After an input: its latency and the answer's confidence and exit."""
        self.lat.appendleft(latency_ms)
        self.last_conf = confidence
        self.last_exit = exit_index
        self.last_off = float(offloaded)

    # ------------------------------------------------------------------ what the env exposes

    @property
    def estimate_mbps(self) -> float:
        """Harmonic mean of the measured throughputs, as the env computes it."""
        return estimate_mbps(self.meas)

    def observation(self, now: float) -> np.ndarray:
        """The env's observation vector for the current input (``now`` on the meas clock)."""
        sc = self.scenario
        return build_observation(
            self.meas, now, self.history, sc.rtt_ms, sc.deadline_ms, self.lat,
            self.last_conf, self.last_exit, self.n_exits, self.last_off,
            self._feat_scale.z(self.feature), self.edge_load,
        )  # fmt: skip
