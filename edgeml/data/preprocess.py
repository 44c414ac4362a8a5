"""Frames of the built-in datasets as numpy network inputs, without torch (int8 calibration
of an exported edge, benches)."""

from __future__ import annotations

import numpy as np

from edgeml.data.preprocessing import FASHION_MNIST_MEAN, FASHION_MNIST_STD

__all__ = ["BUILTIN_DATASETS", "dataset_frames"]


def normalize(x: np.ndarray) -> np.ndarray:
    return (x - FASHION_MNIST_MEAN) / FASHION_MNIST_STD


BUILTIN_DATASETS = ("fashion-mnist", "scenes")  # what dataset_frames regenerates


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
        raise ValueError(f"dataset: {dataset!r} is not one of {list(BUILTIN_DATASETS)}")
    return np.ascontiguousarray(x, dtype=np.float32), labels, levels
