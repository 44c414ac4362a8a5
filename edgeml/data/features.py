"""Cheap difficulty signals the edge computes on every input before choosing an action.

A bundle names its signal in the manifest (``difficulty_feature``); calibration stores it
per sample, so the simulator sees exactly what the edge daemon will compute.

* ``bright_share`` -- share of pixels brighter than 0.3 after undoing Fashion-MNIST's
  normalisation: clutter in the scene stream shows up as bright pixels outside the item.
  The signal of the built-in bundles (it assumes their grey scale).
* ``edge_density`` -- mean absolute difference between neighbouring pixels over the
  channel's spread. Dividing by the spread makes it blind to any per-channel
  ``(x - mean) / std``, so it reads the same on every bundle's normalised input: busy,
  textured or noisy frames score high. The default for bundles of your own model and data.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgeml.data.preprocessing import FASHION_MNIST_MEAN, FASHION_MNIST_STD

BRIGHT = 0.3
DEFAULT_FEATURE = "bright_share"  # the built-in bundles' (and every v1 bundle's) signal
USER_FEATURE = "edge_density"


def bright_share(x: np.ndarray) -> np.ndarray:
    """Share of pixels brighter than ``BRIGHT`` per input of a normalized batch (n, c, h, w)."""
    raw = np.asarray(x, dtype=np.float32) * FASHION_MNIST_STD + FASHION_MNIST_MEAN
    return (raw.reshape(len(raw), -1) > BRIGHT).mean(axis=1).astype(np.float32)


def edge_density(x: np.ndarray) -> np.ndarray:
    """Mean |neighbour difference| / channel std per input of a batch (n, c, h, w)."""
    a = np.asarray(x, dtype=np.float32)
    dx = np.abs(np.diff(a, axis=3)).mean(axis=(2, 3)) if a.shape[3] > 1 else 0.0
    dy = np.abs(np.diff(a, axis=2)).mean(axis=(2, 3)) if a.shape[2] > 1 else 0.0
    spread = a.std(axis=(2, 3)) + 1e-6
    return ((dx + dy) / spread).mean(axis=1).astype(np.float32)


FEATURES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "bright_share": bright_share,
    "edge_density": edge_density,
}


def difficulty_feature(x: np.ndarray, name: str = DEFAULT_FEATURE) -> np.ndarray:
    """The named difficulty signal per input of a normalized batch ``(n, c, h, w)``."""
    fn = FEATURES.get(name)
    if fn is None:
        raise ValueError(f"difficulty_feature: {name!r} is not one of {sorted(FEATURES)}")
    return fn(x)
