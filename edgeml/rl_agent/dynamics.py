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

__all__ = ["InputStream", "LoadConfig", "StreamConfig", "background_load", "regimes"]


@dataclass(frozen=True)
class StreamConfig:
    """Regime process of the input difficulty.

    :param dwell_s: mean time a difficulty level lasts (geometric in frames).
    :param neighbour_prob: chance a level change goes to an adjacent level (else uniform).
    """

    dwell_s: float = 3.0
    neighbour_prob: float = 0.5

    def __post_init__(self) -> None:
        if self.dwell_s <= 0:
            raise ValueError(f"dwell_s: must be > 0, got {self.dwell_s}")
        if not 0.0 <= self.neighbour_prob <= 1.0:
            raise ValueError(f"neighbour_prob: must be in [0, 1], got {self.neighbour_prob}")


@dataclass(frozen=True)
class LoadConfig:
    """Background load on the edge core: idle/busy regimes with geometric dwell.

    :param busy_share: long-run share of time in the busy regime.
    :param dwell_s: mean duration of a regime.
    :param idle: (low, high) of the uniform load level drawn for an idle regime.
    :param busy: (low, high) of the uniform load level drawn for a busy regime.
    :param jitter: std of the per-input noise around the regime's level.
    """

    busy_share: float = 0.3
    dwell_s: float = 5.0
    idle: tuple[float, float] = (0.0, 0.1)
    busy: tuple[float, float] = (0.25, 1.0)
    jitter: float = 0.03

    def __post_init__(self) -> None:
        if not 0.0 <= self.busy_share <= 1.0:
            raise ValueError(f"busy_share: must be in [0, 1], got {self.busy_share}")
        if self.dwell_s <= 0:
            raise ValueError(f"dwell_s: must be > 0, got {self.dwell_s}")
        for name in ("idle", "busy"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi:
                raise ValueError(f"{name}: need 0 <= low <= high, got {(lo, hi)}")


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
