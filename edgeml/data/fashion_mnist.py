"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (gzipped IDX files)."""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class DatasetMissingError(FileNotFoundError):
    """The IDX files are not where we look; the message says how to install them."""


@dataclass(frozen=True)
class ImageSet:
    images: np.ndarray  # (n, 28, 28) uint8
    labels: np.ndarray  # (n,) int64

    def __len__(self) -> int:
        return len(self.labels)


def data_dir() -> Path:
    """``$EDGEML_DATA`` if set, else the Debian package's directory."""
    return Path(os.environ.get("EDGEML_DATA", DEFAULT_DIR))


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header")
    got, *dims = struct.unpack(f">{1 + ndim}I", raw[: 4 + 4 * ndim])
    if got != magic:
        raise ValueError(f"{path}: bad IDX magic {got:#x}, expected {magic:#x}")
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {data.size} bytes of data for shape {tuple(dims)}")
    return data.reshape(dims)


@lru_cache(maxsize=4)
def load_fashion_mnist(split: str = "train", root: str | None = None) -> ImageSet:
    """Load the official ``train`` (60k) or ``test`` (10k) split."""
    if split not in _FILES:
        raise ValueError(f"split: {split!r} is not one of {sorted(_FILES)}")
    base = Path(root) if root else data_dir()
    img_name, lab_name = _FILES[split]
    missing = [n for n in (img_name, lab_name) if not (base / n).is_file()]
    if missing:
        raise DatasetMissingError(
            f"Fashion-MNIST files {missing} not found in {base}. Install them with "
            "`apt-get install dataset-fashion-mnist` (or `make setup`), or point "
            "$EDGEML_DATA at a directory holding the gzipped IDX files."
        )
    images = _read_idx(base / img_name, 0x00000803, 3)
    labels = _read_idx(base / lab_name, 0x00000801, 1).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{base}: {len(images)} images but {len(labels)} labels")
    return ImageSet(images=images, labels=labels)


# Source-image ranges per split: validation is carved from the official train set so that
# no split ever shares a source image (the test split is the official test set).
VAL_SIZE = 10_000


def source_split(split: str, root: str | None = None) -> ImageSet:
    """``train`` (first 50k of official train), ``val`` (last 10k), ``test`` (official test)."""
    if split == "test":
        return load_fashion_mnist("test", root)
    full = load_fashion_mnist("train", root)
    if split == "train":
        return ImageSet(full.images[:-VAL_SIZE], full.labels[:-VAL_SIZE])
    if split == "val":
        return ImageSet(full.images[-VAL_SIZE:], full.labels[-VAL_SIZE:])
    raise ValueError(f"split: {split!r} is not one of ['test', 'train', 'val']")
