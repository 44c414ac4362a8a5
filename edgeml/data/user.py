"""Your own data: an ``.npz``, an ImageFolder-style directory, or any ``(x, y)`` dataset.

Everything becomes :class:`PixelData` -- [0, 1] pixels ``(N, C, H, W)`` (kept as uint8
when they came as uint8), integer labels and optional difficulty levels -- and a
:class:`PixelDataset` serves it through the bundle's :class:`Preprocessing`, so training,
calibration and the edge scale pixels the same way. Nothing is resized or recoloured: mixed
sizes are refused with the first file that differs.

* ``.npz``: ``x`` as ``(N, H, W, C)`` / ``(N, H, W)`` uint8, or ``(N, C, H, W)`` float32 in
  [0, 1]; ``y`` integer labels; optional ``level`` (difficulty 0..4).
* a directory with one sub-directory of images per class (sorted names = class ids), read
  with Pillow; all grey images stay one channel, anything else is RGB.
* a map-style dataset whose items are ``(x, y)`` or ``(x, y, level)`` with ``x`` pixels
  (a tensor from ``ToTensor()`` or an array in 0..255); normalisation is EdgeML's job.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from edgeml.data.preprocessing import Preprocessing, pixels01
from edgeml.errors import InputError, load_npz

log = logging.getLogger(__name__)

__all__ = ["PixelData", "PixelDataset", "load_data"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".gif", ".tif", ".tiff")
_FIT_SAMPLES = 2000


@dataclass
class PixelData:
    """Pixels ``(N, C, H, W)`` (uint8 0..255, or float32 in [0, 1]), labels, levels."""

    x: np.ndarray
    y: np.ndarray
    level: np.ndarray | None = None
    classes: tuple[str, ...] | None = None
    source: str = "arrays"

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or self.x.shape[1] not in (1, 3):
            raise InputError(
                f"{self.source}: images must be (N, C, H, W) with C 1 or 3, got {self.x.shape}"
            )
        n_levels = len(self.x) if self.level is None else len(self.level)
        if len(self.y) != len(self.x) or n_levels != len(self.x):
            raise InputError(f"{self.source}: {len(self.x)} images, {len(self.y)} labels")
        if not len(self.x):
            raise InputError(f"{self.source}: no images")
        if self.y.dtype.kind not in "iu" or int(self.y.min()) < 0:
            raise InputError(f"{self.source}: labels 'y' must be integers >= 0 ({self.y.dtype})")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes else int(self.y.max()) + 1

    def pixels(self, idx: Any = slice(None)) -> np.ndarray:
        """[0, 1] float32 pixels of ``idx``."""
        x = self.x[idx]
        return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)

    def subset(self, idx: np.ndarray) -> PixelData:
        lv = None if self.level is None else self.level[idx]
        return PixelData(self.x[idx], self.y[idx], lv, self.classes, self.source)

    def fit(self) -> Preprocessing:
        """Colour, size and mean/std of (up to 2000 evenly spaced) images."""
        step = max(1, len(self) // _FIT_SAMPLES)
        return Preprocessing.fit(self.pixels(slice(None, None, step)))

    def split(self, fraction: float, seed: int = 0) -> tuple[PixelData, PixelData]:
        """A seeded ``(1 - fraction, fraction)`` split (for a validation set from train)."""
        if not 0 < fraction < 1:
            raise InputError(f"val_fraction: must be in (0, 1), got {fraction}")
        order = np.random.default_rng(seed).permutation(len(self))
        k = max(1, int(round(len(self) * fraction)))
        return self.subset(np.sort(order[k:])), self.subset(np.sort(order[:k]))


class PixelDataset(Dataset):
    """``(x, y[, level])`` items: ``x`` normalised by ``prep`` (what the network takes)."""

    def __init__(self, data: PixelData, prep: Preprocessing) -> None:
        prep.check(data.x.shape[1:], data.source)
        self.data, self.prep = data, prep

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | tuple[torch.Tensor, int, int]:
        x = torch.from_numpy(self.prep.normalize(self.data.pixels(i)))
        y = int(self.data.y[i])
        if self.data.level is None:
            return x, y
        return x, y, int(self.data.level[i])


def _from_npz(path: Path) -> PixelData:
    z = load_npz(path, "an .npz with images 'x' and integer labels 'y' (optional 'level')",
                 ("x", "y"))  # fmt: skip
    x = z["x"]
    if x.dtype == np.uint8:
        if x.ndim == 3:
            x = x[:, None]
        elif x.ndim == 4 and x.shape[-1] in (1, 3):
            x = np.moveaxis(x, -1, 1)
        elif not (x.ndim == 4 and x.shape[1] in (1, 3)):
            raise InputError(f"{path}: uint8 'x' must be (N, H, W, C) or (N, H, W), got {x.shape}")
    elif x.dtype.kind == "f":
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise InputError(f"{path}: float 'x' must be (N, C, H, W) with C 1 or 3, got {x.shape}")
        finite = np.isfinite(x).all()
        if not finite or float(x.min()) < 0.0 or float(x.max()) > 1.0:
            raise InputError(f"{path}: float 'x' must hold pixels in [0, 1] (finite)")
        x = x.astype(np.float32)
    else:
        raise InputError(f"{path}: 'x' is {x.dtype}; allowed: uint8 (0..255) or float32 in [0, 1]")
    y = np.asarray(z["y"])
    if y.dtype.kind not in "iu":
        raise InputError(f"{path}: 'y' must be integer labels, got {y.dtype}")
    level = z.get("level")
    return PixelData(np.ascontiguousarray(x), y.astype(np.int64),
                     None if level is None else np.asarray(level, np.int64), None,
                     str(path))  # fmt: skip


def _from_folder(path: Path) -> PixelData:
    from PIL import Image

    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    files = [
        (f, k) for k, c in enumerate(classes) for f in sorted((path / c).iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]  # fmt: skip
    if not files:
        raise InputError(
            f"{path}: no images; expected one sub-directory per class holding "
            f"{', '.join(IMAGE_SUFFIXES)} files (ImageFolder layout)"
        )
    images: list[tuple[Path, str, Image.Image]] = []
    for f, _ in files:
        with Image.open(f) as im:
            images.append((f, im.mode, im.copy()))
    grey = all(mode in ("1", "L", "LA", "I", "I;16", "F") for _, mode, _ in images)
    arrays, size = [], images[0][2].size
    for f, _, img in images:
        if img.size != size:
            raise InputError(
                f"{f}: {img.size[0]}x{img.size[1]} pixels, {files[0][0]} is {size[0]}x{size[1]}; "
                "all images must have one size (EdgeML never resizes)"
            )
        a = np.asarray(img.convert("L" if grey else "RGB"), dtype=np.uint8)
        arrays.append(a[None] if grey else np.moveaxis(a, -1, 0))
    y = np.asarray([k for _, k in files], np.int64)
    return PixelData(np.stack(arrays), y, None, tuple(classes), str(path))


def _from_dataset(ds: Any, name: str) -> PixelData:
    try:
        n = len(ds)
    except TypeError:
        raise InputError(f"{name}: a dataset must be map-style (len() and [i])") from None
    xs, ys, lvs = [], [], []
    for i in range(n):
        item = ds[i]
        if not isinstance(item, Sequence) or len(item) not in (2, 3):
            raise InputError(f"{name}[{i}]: items must be (x, y) or (x, y, level)")
        x = item[0].numpy() if isinstance(item[0], torch.Tensor) else np.asarray(item[0])
        xs.append(pixels01(x, f"{name}[{i}]"))
        ys.append(int(item[1]))
        if len(item) == 3:
            lvs.append(int(item[2]))
    shapes = {x.shape for x in xs}
    if len(shapes) > 1:
        raise InputError(f"{name}: images of several shapes {sorted(shapes)[:3]}; give one size")
    level = np.asarray(lvs, np.int64) if len(lvs) == n else None
    return PixelData(np.stack(xs), np.asarray(ys, np.int64), level, None, name)


def load_data(data: Any, name: str = "data") -> PixelData:
    """:class:`PixelData` from a path (``.npz`` or ImageFolder directory), a map-style
    dataset of ``(x, y[, level])``, a ``(x, y)`` pair of arrays, or PixelData itself."""
    if isinstance(data, PixelData):
        return data
    if isinstance(data, (str, Path)):
        path = Path(data)
        if path.is_dir():
            return _from_folder(path)
        if path.suffix.lower() == ".npz":
            return _from_npz(path)
        raise InputError(
            f"{name}: {path} is neither an ImageFolder directory nor an .npz "
            "('x' images, 'y' labels)"
        )
    if isinstance(data, tuple) and len(data) in (2, 3) and isinstance(data[0], np.ndarray):
        x = np.asarray(data[0])
        if x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            x = np.moveaxis(x, -1, 1)
        lv = np.asarray(data[2], np.int64) if len(data) == 3 else None
        return PixelData(x, np.asarray(data[1]).astype(np.int64), lv, None, name)
    return _from_dataset(data, name)
