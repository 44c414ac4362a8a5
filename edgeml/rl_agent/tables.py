"""Precomputed tables that make the simulator fast and keep env, baselines and oracle in step.

* :class:`Outcomes`: for every action's ``(e, tau)`` and calibration sample, the exit where
  the early-exit rule stops, whether that answer is right and its confidence; plus per
  difficulty level the distribution of (stop exit, correct). Accuracy is the model's own.
* :class:`ActionCosts`: the cost model's :class:`~edgeml.partition.cost.Breakdown` of every
  ``(split, e, tau, stop)`` at zero load, split into the edge side (edge compute + encode,
  scaled by ``1 + edge_load`` as the cost model does), the bytes on the link, and the far
  side (decode + cloud compute). The link time comes from the trace.

Tables are indexed ``[split, exit, tau_index, stop_exit]``; impossible combinations (stop
after ``e``; ``tau = 1`` with stop != ``e``) hold NaN and have zero probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeml.partition.cost import CostModel
from edgeml.progressive.calibrate import Calibration
from edgeml.progressive.rule import TAUS

__all__ = ["ActionCosts", "Outcomes", "expected_over_stops"]


@dataclass(frozen=True, eq=False)
class Outcomes:
    """Early-exit outcomes of every ``(e, tau)`` on every calibration sample."""

    stop: np.ndarray  # (E, T, n) int64 exit index where the run stops
    correct: np.ndarray  # (E, T, n) bool, the answer at ``stop`` is right
    conf: np.ndarray  # (E, T, n) float32, its confidence
    levels: np.ndarray  # (L,) the difficulty levels present
    p_stop: np.ndarray  # (L, E, T, E) P(stop = j | level)
    p_correct: np.ndarray  # (L, E, T, E) P(stop = j and right | level)
    p_stop_all: np.ndarray  # (E, T, E) over all samples
    accuracy: np.ndarray  # (E, T) accuracy over all samples
    taus: tuple[float, ...]

    @classmethod
    def from_calibration(cls, cal: Calibration, taus: tuple[float, ...] = TAUS) -> Outcomes:
        n, n_exits = cal.conf.shape
        stop = np.empty((n_exits, len(taus), n), dtype=np.int64)
        for ti, tau in enumerate(taus):
            for e in range(n_exits):
                if tau >= 1.0:
                    stop[e, ti] = e
                    continue
                hit = cal.conf[:, : e + 1] >= tau
                stop[e, ti] = np.where(hit.any(axis=1), hit.argmax(axis=1), e)
        rows = np.arange(n)
        correct = cal.correct[rows, stop]
        conf = cal.conf[rows, stop]
        levels = np.unique(cal.difficulty)
        onehot = stop[..., None] == np.arange(n_exits)  # (E, T, n, E)
        p_stop = np.stack([onehot[:, :, cal.difficulty == lv].mean(axis=2) for lv in levels])
        p_corr = np.stack(
            [
                (onehot & correct[..., None])[:, :, cal.difficulty == lv].mean(axis=2)
                for lv in levels
            ]
        )
        return cls(
            stop=stop, correct=correct, conf=conf.astype(np.float32), levels=levels,
            p_stop=p_stop, p_correct=p_corr, p_stop_all=onehot.mean(axis=2),
            accuracy=correct.mean(axis=2), taus=tuple(taus),
        )  # fmt: skip

    def level_index(self, level: int) -> int:
        return int(np.searchsorted(self.levels, level))


@dataclass(frozen=True, eq=False)
class ActionCosts:
    """Cost-model terms of every ``(split, e, tau, stop)`` for one codec, at zero load."""

    edge_ms: np.ndarray  # (S, E, T, E) edge compute + encode at load 0 (x (1 + load))
    far_ms: np.ndarray  # (S, E, T, E) decode + cloud compute (0 when nothing is sent)
    offloaded: np.ndarray  # (S, E, T, E) bool
    bytes: np.ndarray  # (S,) bytes on the link at each split
    codec: str

    @classmethod
    def from_cost_model(
        cls, cost: CostModel, codec: str, taus: tuple[float, ...] = TAUS
    ) -> ActionCosts:
        cost.codec_index(codec)  # a clear error for an unprofiled codec
        n_s, n_e, n_t = cost.num_blocks + 1, cost.num_exits, len(taus)
        edge = np.full((n_s, n_e, n_t, n_e), np.nan)
        far = np.full_like(edge, np.nan)
        off = np.zeros(edge.shape, dtype=bool)
        nbytes = np.zeros(n_s)
        for s in range(n_s):
            for e in range(n_e):
                for ti, tau in enumerate(taus):
                    one = tau >= 1.0
                    for j in [e] if one else range(e + 1):
                        b = cost.breakdown(s, e, j, one, codec, edge_load=0.0)
                        edge[s, e, ti, j] = b.edge_ms + b.encode_ms
                        far[s, e, ti, j] = b.decode_ms + b.cloud_ms
                        off[s, e, ti, j] = b.offloaded
                        if b.offloaded:
                            nbytes[s] = b.bytes
        return cls(edge, far, off, nbytes, codec)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.edge_ms.shape

    def latency_ms(self, transfer_ms: np.ndarray, rtt_ms: float, edge_load: float) -> np.ndarray:
        """Latency of every ``(s, e, tau, stop)`` given the link time of each (ms, no RTT)."""
        link = np.where(self.offloaded, transfer_ms + rtt_ms + self.far_ms, 0.0)
        return self.edge_ms * (1.0 + edge_load) + link


def expected_over_stops(values: np.ndarray, p_stop: np.ndarray) -> np.ndarray:
    """``sum_j p_stop[..., j] * values[..., j]`` ignoring NaN where ``p_stop`` is 0."""
    v = np.where(p_stop > 0, np.nan_to_num(values, nan=0.0, posinf=1e9), 0.0)
    return (v * p_stop).sum(axis=-1)
