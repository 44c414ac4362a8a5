"""Deterministic 96x96 "cluttered Fashion-MNIST" scenes with a difficulty (clutter) level.

Each frame holds one Fashion-MNIST item at a random position and scale on clutter made
of fragments of *other* items of the same split plus Gaussian noise. The clutter level
0..4 sets how many fragments, how bright, and how much noise: a standard cluttered-MNIST
construction whose difficulty is known per frame. Frame ``i`` of ``(split, seed)`` is a pure
function of those three numbers, so every run and every process sees the same frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeml.data.fashion_mnist import ImageSet, source_split

FRAME = 96
LEVELS = 5
_SPLIT_ID = {"train": 0, "val": 1, "test": 2}
# Per clutter level: fragments, fragment peak brightness, noise sigma, item contrast.
_FRAGMENTS = (0, 4, 8, 12, 18)
_FRAG_GAIN = (0.0, 0.45, 0.6, 0.75, 0.9)
_NOISE = (0.0, 0.04, 0.08, 0.12, 0.16)
_CONTRAST = (1.0, 1.0, 0.95, 0.9, 0.85)
_SCALE = (28, 56)  # item side in pixels
_FRAG_SIDE = (8, 16)  # fragment side, in source pixels


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # (96, 96) float32 in [0, 1]
    label: int
    level: int
    source_index: int


def _resize_nearest(img: np.ndarray, size: int) -> np.ndarray:
    idx = (np.arange(size) * img.shape[0] / size).astype(np.intp)
    return img[idx][:, idx]


class SceneStream:
    """Random-access scene generator over one source split (``train``/``val``/``test``).

    :param split: source images come only from this split, so splits never share items.
    :param seed: changes positions, scales, clutter and the order of source items.
    """

    def __init__(self, split: str = "train", seed: int = 0, root: str | None = None) -> None:
        if split not in _SPLIT_ID:
            raise ValueError(f"split: {split!r} is not one of {sorted(_SPLIT_ID)}")
        self.split = split
        self.seed = seed
        self.source: ImageSet = source_split(split, root)
        order = np.random.default_rng((seed, _SPLIT_ID[split], 7)).permutation(len(self.source))
        self._order = order

    def __len__(self) -> int:
        return len(self.source)

    def frame(self, index: int, level: int | None = None) -> Scene:
        """Frame ``index``; ``level`` None draws it from the frame's own random stream."""
        if index < 0:
            raise ValueError(f"index: must be >= 0, got {index}")
        rng = np.random.default_rng((self.seed, _SPLIT_ID[self.split], index))
        lvl = int(rng.integers(LEVELS)) if level is None else int(level)
        if not 0 <= lvl < LEVELS:
            raise ValueError(f"level: {lvl} not in 0..{LEVELS - 1}")
        src = int(self._order[index % len(self._order)])
        canvas = np.zeros((FRAME, FRAME), dtype=np.float32)
        n = len(self.source)
        for _ in range(_FRAGMENTS[lvl]):
            other = int(rng.integers(n))
            if other == src:
                other = (other + 1) % n
            side = int(rng.integers(*_FRAG_SIDE))
            y0, x0 = rng.integers(0, 28 - side, size=2)
            frag = self.source.images[other, y0 : y0 + side, x0 : x0 + side]
            scale = rng.uniform(1.0, 2.0)
            frag = _resize_nearest(frag, max(2, int(side * scale))).astype(np.float32) / 255
            fy, fx = rng.integers(0, FRAME - frag.shape[0], size=2)
            view = canvas[fy : fy + frag.shape[0], fx : fx + frag.shape[1]]
            np.maximum(view, frag * _FRAG_GAIN[lvl] * rng.uniform(0.6, 1.0), out=view)
        size = int(rng.integers(_SCALE[0], _SCALE[1] + 1))
        item = _resize_nearest(self.source.images[src], size).astype(np.float32) / 255
        y, x = rng.integers(0, FRAME - size + 1, size=2)
        view = canvas[y : y + size, x : x + size]
        np.maximum(view, item * _CONTRAST[lvl], out=view)
        if _NOISE[lvl] > 0:
            canvas += rng.normal(0.0, _NOISE[lvl], canvas.shape).astype(np.float32)
        np.clip(canvas, 0.0, 1.0, out=canvas)
        return Scene(canvas, int(self.source.labels[src]), lvl, src)
