"""Exogenous processes of the simulator: the input stream and the edge's background load.

Both are generated per episode from a seed, one value per input (step), so every policy
evaluated with the same seed sees the very same inputs and the same load, whatever it does.

* Input stream: the difficulty level follows a regime process (a Markov chain over levels
  with geometric dwell times, mean ``dwell_s`` seconds of frames); each input is a random
  calibration sample of the current level. Neighbouring frames are alike, as from a camera
  watching a scene, and accuracy comes from the real model's outputs on that sample.
* Background load: other work on the edge core alternates between idle and busy regimes
  (geometric dwell); the value ``edge_load`` slows edge compute by ``1 + edge_load``
  (see :mod:`edgeml.partition.cost`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeml.decision.scenario import LoadConfig, StreamConfig

__all__ = ["InputStream", "LoadConfig", "StreamConfig", "background_load", "regimes"]


def regimes(rng: np.random.Generator, n: int, mean_dwell: float) -> tuple[np.ndarray, np.ndarray]:
    """Split ``n`` steps into regimes with geometric lengths (mean ``mean_dwell`` steps).

    Returns ``(starts, lengths)`` of the regimes, covering exactly ``n`` steps.
    """
    p = 1.0 / max(mean_dwell, 1.0)
    lengths: list[int] = []
    total = 0
    while total < n:
        k = int(rng.geometric(p))
        lengths.append(k)
        total += k
    arr = np.asarray(lengths, dtype=np.int64)
    arr[-1] -= total - n
    starts = np.concatenate([[0], np.cumsum(arr)[:-1]])
    return starts, arr


@dataclass(frozen=True)
class InputStream:
    """Per-step calibration sample indices and their difficulty levels for one episode."""

    samples: np.ndarray  # (n,) indices into the calibration table
    levels: np.ndarray  # (n,) difficulty level of each input

    @classmethod
    def generate(
        cls,
        difficulty: np.ndarray,
        n: int,
        rng: np.random.Generator,
        input_rate: float,
        config: StreamConfig = StreamConfig(),  # noqa: B008 - frozen dataclass
    ) -> InputStream:
        """Draw ``n`` inputs; only levels present in ``difficulty`` are visited."""
        present = np.unique(difficulty)
        by_level = {int(lv): np.flatnonzero(difficulty == lv) for lv in present}
        starts, lengths = regimes(rng, n, config.dwell_s * input_rate)
        pos = int(rng.integers(len(present)))
        seq = np.empty(len(lengths), dtype=np.int64)
        for r in range(len(lengths)):
            seq[r] = present[pos]
            if len(present) > 1:
                pos = _next_level(rng, pos, len(present), config.neighbour_prob)
        levels = np.repeat(seq, lengths)
        samples = np.empty(n, dtype=np.int64)
        for lv, idx in by_level.items():
            where = np.flatnonzero(levels == lv)
            samples[where] = idx[rng.integers(len(idx), size=len(where))]
        return cls(samples, levels.astype(np.int64))


def _next_level(rng: np.random.Generator, pos: int, k: int, neighbour_prob: float) -> int:
    if rng.random() < neighbour_prob:
        options = [q for q in (pos - 1, pos + 1) if 0 <= q < k]
    else:
        options = [q for q in range(k) if q != pos]
    return int(options[int(rng.integers(len(options)))])


def background_load(
    n: int,
    rng: np.random.Generator,
    input_rate: float,
    config: LoadConfig = LoadConfig(),  # noqa: B008 - frozen dataclass
) -> np.ndarray:
    """Per-step edge load (>= 0) for ``n`` inputs."""
    starts, lengths = regimes(rng, n, config.dwell_s * input_rate)
    busy = rng.random(len(lengths)) < config.busy_share
    lo = np.where(busy, config.busy[0], config.idle[0])
    hi = np.where(busy, config.busy[1], config.idle[1])
    level = np.repeat(rng.uniform(lo, hi), lengths)
    noise = rng.normal(0.0, config.jitter, n) if config.jitter > 0 else 0.0
    return np.maximum(level + noise, 0.0)
