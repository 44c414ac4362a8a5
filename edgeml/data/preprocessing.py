"""Input preprocessing recorded in a bundle: colour mode, size and per-channel mean/std.

Build, calibration, the profiler and the edge's sources all turn pixels into the network's
input with the same :class:`Preprocessing` (read from the manifest), so a frame is scaled
the way the network was trained. EdgeML never resizes or recolours: a frame of another
size or colour mode is refused by :meth:`Preprocessing.check`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgeml.errors import InputError

__all__ = ["COLOR_MODES", "FASHION_MNIST", "Preprocessing", "pixels01"]

COLOR_MODES = {"L": 1, "RGB": 3}  # PIL's names -> channels


@dataclass(frozen=True)
class Preprocessing:
    """``x = (pixels / 255 - mean[c]) / std[c]`` for ``(C, H, W)`` pixels of ``size``.

    :param color: ``"L"`` (grey, one channel) or ``"RGB"`` (three).
    :param size: ``(H, W)`` of every input.
    :param mean: per-channel mean of [0, 1] pixels (one value per channel).
    :param std: per-channel standard deviation of [0, 1] pixels.
    """

    color: str
    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.color not in COLOR_MODES:
            allowed = list(COLOR_MODES)
            raise InputError(f"preprocessing.color: {self.color!r} is not one of {allowed}")
        if len(self.size) != 2 or min(self.size) < 1:
            raise InputError(f"preprocessing.size: need (H, W) >= 1, got {list(self.size)}")
        for name, vals in (("mean", self.mean), ("std", self.std)):
            if len(vals) != self.channels:
                raise InputError(
                    f"preprocessing.{name}: {self.color} needs {self.channels} value(s), "
                    f"got {list(vals)}"
                )
        if min(self.std) <= 0:
            raise InputError(f"preprocessing.std: must be > 0, got {list(self.std)}")

    @property
    def channels(self) -> int:
        return COLOR_MODES[self.color]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.size)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """[0, 1] pixels ``(..., C, H, W)`` -> the network's input scale (float32)."""
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        return ((np.asarray(x, np.float32) - mean) / std).astype(np.float32)

    def denormalize(self, x: np.ndarray) -> np.ndarray:
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        return (np.asarray(x, np.float32) * std + mean).astype(np.float32)

    def check(self, shape: Sequence[int], name: str) -> None:
        """Refuse a ``(C, H, W)`` frame of another colour mode or size (never converted)."""
        if tuple(shape) != self.input_shape:
            c, h, w = self.input_shape
            want = f"({h}, {w})" if c == 1 else f"({c}, {h}, {w}) or ({h}, {w}, {c})"
            raise InputError(
                f"{name}: shape {tuple(shape)} does not match the bundle's input "
                f"{self.input_shape} ({self.color} {h}x{w}); give {want} frames "
                "(EdgeML never resizes or recolours)"
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"], d["mean"], d["std"] = list(self.size), list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "preprocessing") -> Preprocessing:
        """Parse the manifest field; a missing or mistyped key is an InputError naming it."""
        if not isinstance(d, Mapping):
            raise InputError(f"{where}: must be an object, got {d!r}")
        missing = [k for k in ("color", "size", "mean", "std") if k not in d]
        if missing:
            raise InputError(f"{where}: missing keys {missing}")
        try:
            return cls(
                str(d["color"]),
                tuple(int(v) for v in d["size"]),  # type: ignore[arg-type]
                tuple(float(v) for v in d["mean"]),
                tuple(float(v) for v in d["std"]),
            )
        except (TypeError, ValueError) as exc:
            raise InputError(f"{where}: {exc}") from None

    @classmethod
    def fit(cls, pixels: np.ndarray) -> Preprocessing:
        """Colour, size and per-channel statistics of [0, 1] pixels ``(N, C, H, W)``."""
        n, c, h, w = pixels.shape
        color = {1: "L", 3: "RGB"}.get(c)
        if color is None:
            raise InputError(f"data: {c} channels; allowed: 1 (grey) or 3 (RGB)")
        p = np.asarray(pixels, np.float64)
        mean = p.mean(axis=(0, 2, 3))
        std = np.maximum(p.std(axis=(0, 2, 3)), 1e-3)
        return cls(color, (h, w), tuple(round(float(v), 4) for v in mean),
                   tuple(round(float(v), 4) for v in std))  # fmt: skip


# The built-in datasets (and every bundle made before preprocessing was recorded).
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530


def FASHION_MNIST(size: tuple[int, int]) -> Preprocessing:  # noqa: N802 (a constant family)
    """Grey Fashion-MNIST statistics at ``size`` (28x28 items or 96x96 scenes)."""
    return Preprocessing("L", size, (FASHION_MNIST_MEAN,), (FASHION_MNIST_STD,))


def pixels01(img: np.ndarray, name: str = "image") -> np.ndarray:
    """Pixels ``(H, W)``, ``(H, W, C)`` or ``(C, H, W)`` in 0..255 or [0, 1] -> float32 CHW.

    uint8 (or any value above 1.5) is read as 0..255. Non-finite pixels pass through: the
    daemon answers such a frame with an error record instead of stopping its source.
    """
    a = np.asarray(img)
    if a.ndim == 2:
        a = a[None]
    elif a.ndim == 3 and a.shape[0] not in (1, 3) and a.shape[-1] in (1, 3):
        a = np.moveaxis(a, -1, 0)  # HWC -> CHW
    if a.ndim != 3:
        raise InputError(f"{name}: expected (H, W), (H, W, C) or (C, H, W), got {a.shape}")
    finite = a[np.isfinite(a)] if a.dtype.kind == "f" else a
    scale = 255.0 if a.dtype == np.uint8 or (finite.size and float(finite.max()) > 1.5) else 1.0
    return np.clip(a.astype(np.float32) / scale, 0.0, 1.0)
