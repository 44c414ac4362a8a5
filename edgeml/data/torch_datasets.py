"""torch ``Dataset`` views of the two datasets (plain 28x28 Fashion-MNIST, 96x96 scenes)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from edgeml.data.fashion_mnist import source_split
from edgeml.data.preprocess import DATASETS, INPUT_SHAPES, denormalize, normalize
from edgeml.data.scenes import SceneStream

__all__ = [
    "DATASETS",
    "INPUT_SHAPES",
    "FashionMNISTDataset",
    "SceneDataset",
    "denormalize",
    "normalize",
]


class FashionMNISTDataset(Dataset):
    """Plain 28x28 items as ``(x, label, level)``; the level is 0 (calibration bins it)."""

    def __init__(self, split: str, limit: int | None = None, flip: bool = False) -> None:
        src = source_split(split)
        n = len(src) if limit is None else min(limit, len(src))
        self.x = torch.from_numpy(normalize(src.images[:n].astype(np.float32) / 255)).unsqueeze(1)
        self.y = torch.from_numpy(src.labels[:n])
        self.flip = flip

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        x = self.x[i]
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, int(self.y[i]), 0


class SceneDataset(Dataset):
    """``length`` frames as ``(x, label, clutter level)`` from ``offset`` on (new per epoch)."""

    def __init__(self, split: str, length: int, seed: int = 0, offset: int = 0) -> None:
        self.stream = SceneStream(split, seed)
        self.length = length
        self.offset = offset

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        s = self.stream.frame(self.offset + i)
        return torch.from_numpy(normalize(s.image)).unsqueeze(0), s.label, s.level
