"""Input preprocessing shared by training, the cloud and a torch-free edge: numpy only."""

from __future__ import annotations

import numpy as np

from edgeml.data.scenes import FRAME

__all__ = ["DATASETS", "INPUT_SHAPES", "denormalize", "normalize"]

DATASETS = ("fashion-mnist", "scenes")
INPUT_SHAPES = {"fashion-mnist": (1, 28, 28), "scenes": (1, FRAME, FRAME)}
_MEAN, _STD = 0.2860, 0.3530  # Fashion-MNIST pixel statistics


def normalize(x: np.ndarray) -> np.ndarray:
    """Map [0, 1] pixels to the network's input scale (same on edge and in training)."""
    return (x - _MEAN) / _STD


def denormalize(x: np.ndarray) -> np.ndarray:
    return x * _STD + _MEAN


def dataset_frames(
    dataset: str, split: str, n: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` network inputs of ``split`` as the torch datasets give them, in numpy:
    ``(x (n, C, H, W) float32, labels (n,), levels (n,))`` (level 0 for plain
    Fashion-MNIST). Used where torch is absent or not wanted (int8 calibration, benches)."""
    from edgeml.data.fashion_mnist import source_split
    from edgeml.data.scenes import SceneStream

    if dataset == "scenes":
        stream = SceneStream(split, seed)
        frames = [stream.frame(i) for i in range(n)]
        x = np.stack([normalize(f.image) for f in frames])[:, None]
        labels = np.array([f.label for f in frames], np.int64)
        levels = np.array([f.level for f in frames], np.int64)
    elif dataset == "fashion-mnist":
        src = source_split(split)
        n = min(n, len(src))
        x = normalize(src.images[:n].astype(np.float32) / 255)[:, None]
        labels = src.labels[:n].astype(np.int64)
        levels = np.zeros(n, np.int64)
    else:
        raise ValueError(f"dataset: {dataset!r} is not one of {list(DATASETS)}")
    return np.ascontiguousarray(x, dtype=np.float32), labels, levels
