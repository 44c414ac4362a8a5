"""Input sources of the edge daemon: what its camera (or file) delivers, at a given rate.

A source is an iterator of :class:`Item` (an input already normalized to the network's
scale, with its label and difficulty level when known). :func:`open_source` turns the
``--source`` flag into one:

* ``scenes`` / ``scenes:SEED`` — the 96x96 scene stream (test split) whose clutter level
  follows the simulator's regime process (:mod:`edgeml.rl_agent.dynamics`), so the daemon
  sees runs of easy and hard frames like the agent did in training;
* ``fashion-mnist`` / ``fashion-mnist:SEED`` — plain 28x28 items of the test split;
* ``DIR`` — every ``*.png`` / ``*.npy`` in a directory, sorted by name (label unknown);
* ``FILE.npy`` — an array of images ``(N, H, W)`` or ``(N, C, H, W)``;
  ``FILE.npz`` — the same under key ``x``, with optional ``y`` (labels) and ``level``.

Pixels may be uint8 (0..255) or float in [0, 1]; every frame must have the bundle's size and
channel count (grey ``(H, W)`` for a one-channel bundle), or the source is refused.

:func:`paced` releases items at ``rate`` per second; when the edge falls behind, the next
item is stamped with the arrival time of the camera's latest frame (the frames in between
are never seen), so the wait an item had before the edge took it is below one period.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeml.data.preprocess import normalize

log = logging.getLogger(__name__)

__all__ = ["Item", "open_source", "paced", "scene_items", "array_items", "directory_items"]

SCENE_LEVELS = 5
_CHUNK = 1024  # levels drawn per regime chunk (the stream is endless)


@dataclass(frozen=True)
class Item:
    """One input: ``x`` is normalized float32 of shape ``(1, C, H, W)``."""

    index: int
    x: np.ndarray
    label: int | None = None
    level: int | None = None
    name: str = ""


def _to_input(img: np.ndarray, shape: tuple[int, ...], name: str = "image") -> np.ndarray:
    """Pixels (H, W), (H, W, C) or (C, H, W) in 0..255 or [0, 1] -> normalized (1, C, H, W).

    The image must already have the bundle's size and colour: a frame of another size or
    channel count is refused (resizing or greying it would give confident answers to an
    input the network was never trained on). Non-finite pixels pass through: the daemon
    answers such a frame with an error record instead of stopping the whole source.
    """
    a = np.asarray(img)
    c, h, w = shape
    if a.ndim == 2:
        a = a[None]
    elif a.ndim == 3 and a.shape[0] not in (1, 3) and a.shape[-1] in (1, 3):
        a = np.moveaxis(a, -1, 0)  # HWC -> CHW
    if a.ndim != 3 or a.shape != (c, h, w):
        want = f"({h}, {w})" if c == 1 else f"({c}, {h}, {w}) or ({h}, {w}, {c})"
        raise ValueError(
            f"{name}: shape {tuple(np.shape(img))} does not match the bundle's input "
            f"{tuple(shape)}; give {want} frames (EdgeML never resizes or recolours)"
        )
    finite = a[np.isfinite(a)] if a.dtype.kind == "f" else a
    scale = 255.0 if a.dtype == np.uint8 or (finite.size and float(finite.max()) > 1.5) else 1.0
    x = normalize(np.clip(a.astype(np.float32) / scale, 0.0, 1.0))
    return np.ascontiguousarray(x[None], dtype=np.float32)


def scene_items(seed: int = 0, dwell_s: float = 3.0, rate: float = 10.0) -> Iterator[Item]:
    """Endless test-split scenes whose clutter level follows the simulator's regime process."""
    from edgeml.data.scenes import SceneStream
    from edgeml.rl_agent.dynamics import InputStream, StreamConfig

    stream = SceneStream("test", seed)
    rng = np.random.default_rng((seed, 61))
    cfg = StreamConfig(dwell_s=dwell_s)
    i = 0
    while True:
        levels = InputStream.generate(np.arange(SCENE_LEVELS), _CHUNK, rng, rate, cfg).levels
        for level in levels:
            s = stream.frame(i, int(level))
            x = normalize(s.image)[None, None].astype(np.float32)
            yield Item(i, x, s.label, s.level, f"scene-{seed}-{i}")
            i += 1


def fashion_items(seed: int = 0) -> Iterator[Item]:
    """Endless plain 28x28 test items in a seeded order (level unknown)."""
    from edgeml.data.fashion_mnist import source_split

    images = source_split("test")
    order = np.random.default_rng((seed, 62)).permutation(len(images))
    i = 0
    while True:
        k = int(order[i % len(order)])
        x = normalize(images.images[k].astype(np.float32) / 255)[None, None]
        yield Item(i, x.astype(np.float32), int(images.labels[k]), None, f"fmnist-{k}")
        i += 1


def array_items(
    x: np.ndarray,
    shape: tuple[int, ...],
    labels: Iterable[int] | None = None,
    levels: Iterable[int] | None = None,
    name: str = "array",
    loop: bool = True,
) -> Iterator[Item]:
    """Items from an image array (looping by default, as a daemon runs until stopped)."""
    x = np.asarray(x)
    if x.ndim not in (3, 4) or len(x) == 0:
        raise ValueError(f"{name}: expected a non-empty (N, H, W) or (N, C, H, W) array")
    ys = None if labels is None else np.asarray(list(labels))
    lv = None if levels is None else np.asarray(list(levels))
    for arr, what in ((ys, "labels"), (lv, "level")):
        if arr is not None and len(arr) != len(x):
            raise ValueError(f"{name}: {len(x)} images but {len(arr)} {what}")
    prepared = [_to_input(img, shape, f"{name}[{k}]") for k, img in enumerate(x)]
    i = 0
    while True:
        k = i % len(prepared)
        label = None if ys is None else int(ys[k])
        level = None if lv is None else int(lv[k])
        yield Item(i, prepared[k], label, level, f"{name}[{k}]")
        i += 1
        if not loop and i == len(prepared):
            return


def directory_items(path: Path, shape: tuple[int, ...], loop: bool = True) -> Iterator[Item]:
    """Every ``*.png`` / ``*.npy`` of a directory in name order (labels unknown)."""
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".png", ".npy"))
    if not files:
        raise ValueError(f"source: {path} holds no .png or .npy files")
    prepared = [(f.name, _to_input(_read_image(f), shape, str(f))) for f in files]
    i = 0
    while True:
        name, x = prepared[i % len(prepared)]
        yield Item(i, x, None, None, name)
        i += 1
        if not loop and i == len(prepared):
            return


def _load_arrays(path: Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``(x, y, level)`` of a source ``.npy`` (x only) or ``.npz`` (``x``, optional ``y``,
    ``level``); a damaged, pickled or keyless file is an InputError that names it."""
    from edgeml.errors import load_npy, load_npz

    if path.suffix.lower() == ".npy":
        return load_npy(path, "a source .npy of images (N, H, W) or (N, C, H, W)"), None, None
    z = load_npz(path, "a source .npz with images under 'x' (optional 'y', 'level')", ("x",))
    return z["x"], z.get("y"), z.get("level")


def _read_image(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        return _load_arrays(path)[0]
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in ("L", "F", "RGB"):
            return np.asarray(im)
        return np.asarray(im.convert("L" if im.mode in ("1", "LA", "I;16") else "RGB"))


def open_source(
    spec: str, input_shape: tuple[int, ...], rate: float = 10.0, loop: bool = True
) -> Iterator[Item]:
    """The iterator for a ``--source`` flag (see the module docstring for the forms)."""
    shape = tuple(int(d) for d in input_shape)
    kind, _, arg = spec.partition(":")
    if kind in ("scenes", "fashion-mnist"):
        try:
            seed = int(arg) if arg else 0
        except ValueError:
            raise ValueError(f"source: seed in {spec!r} must be an integer") from None
        native = (1, 96, 96) if kind == "scenes" else (1, 28, 28)
        if shape != native:
            raise ValueError(
                f"source: {kind!r} gives inputs of shape {native}, the bundle takes {shape}; "
                "pick the source that matches the bundle's dataset"
            )
        return scene_items(seed, rate=rate) if kind == "scenes" else fashion_items(seed)
    path = Path(spec)
    if path.is_dir():
        return directory_items(path, shape, loop)
    if path.suffix in (".npy", ".npz") and path.is_file():
        x, y, lv = _load_arrays(path)
        return array_items(x, shape, y, lv, name=path.name, loop=loop)
    raise ValueError(
        f"source: {spec!r} is not 'scenes[:SEED]', 'fashion-mnist[:SEED]', a directory, "
        "or an existing .npy/.npz file"
    )


def default_source(dataset: str) -> str:
    """The source spec that matches a bundle's dataset."""
    return "scenes" if dataset == "scenes" else "fashion-mnist"


def paced(
    items: Iterator[Item],
    rate: float,
    stop: threading.Event | None = None,
    max_inputs: int | None = None,
) -> Iterator[tuple[Item, float]]:
    """Yield ``(item, arrival)`` at ``rate`` per second (``arrival`` on ``time.monotonic``).

    Ends when ``stop`` is set (checked while waiting, so stopping is prompt), after
    ``max_inputs`` items, or when ``items`` runs out. ``rate <= 0`` means as fast as possible.
    """
    period = 1.0 / rate if rate > 0 else 0.0
    next_t = time.monotonic()
    for count, item in enumerate(items):
        if max_inputs is not None and count >= max_inputs:
            return
        delay = next_t - time.monotonic()
        if delay > 0 and stop is not None:
            if stop.wait(delay):
                return
        elif delay > 0:
            time.sleep(delay)
        if stop is not None and stop.is_set():
            return
        now = time.monotonic()
        if period and now - next_t >= period:  # behind: take the latest frame instead
            next_t += (now - next_t) // period * period
        arrival = next_t if period else now
        yield item, arrival
        next_t = arrival + period
