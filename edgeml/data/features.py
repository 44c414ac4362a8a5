"""A cheap difficulty signal the edge can compute on every input before choosing an action.

Clutter shows up as bright pixels outside the item and as noise, so the share of bright
pixels tracks the clutter level at the cost of one comparison per pixel. Calibration
stores it per sample so the simulator sees exactly what the edge daemon will compute.
"""

from __future__ import annotations

import numpy as np

from edgeml.data.preprocess import denormalize

BRIGHT = 0.3


def difficulty_feature(x: np.ndarray) -> np.ndarray:
    """Share of pixels brighter than ``BRIGHT`` per input of a normalized batch (n, c, h, w)."""
    raw = denormalize(np.asarray(x, dtype=np.float32))
    return (raw.reshape(len(raw), -1) > BRIGHT).mean(axis=1).astype(np.float32)
