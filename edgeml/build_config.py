"""Bundle build settings and the named presets, apart from :mod:`edgeml.build` so reading
them needs no torch (``edgeml build --help`` lists the presets)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgeml.progressive.config import ExitTrainConfig

__all__ = ["PRESETS", "BuildConfig"]


@dataclass
class BuildConfig:
    """Everything a build depends on; written into the manifest so it can be repeated.

    :param train_size: training samples per epoch (scenes: fresh frames every epoch).
    :param val_size: calibration samples (validation split).
    :param test_size: held-out samples for the accuracy report (test split).
    """

    model: str = "presnet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    dataset: str = "scenes"
    train_size: int = 30_000
    val_size: int = 5_000
    test_size: int = 5_000
    train: ExitTrainConfig = field(default_factory=lambda: ExitTrainConfig(epochs=8, num_workers=1))
    threads: int = 2
    seed: int = 0


PRESETS: dict[str, BuildConfig] = {
    # The default bundle: progressive ResNet-style net on the 96x96 scene stream.
    "default": BuildConfig(
        model_kwargs={"stem_stride": 2, "widths": [48, 112, 128, 160]},
        train=ExitTrainConfig(epochs=8, num_workers=1, bf16=True, channels_last=True),
    ),
    # The fast fixture: B-VGG on plain 28x28 Fashion-MNIST.
    "fixture": BuildConfig(
        model="pvgg",
        dataset="fashion-mnist",
        train_size=50_000,
        val_size=10_000,
        test_size=10_000,
        train=ExitTrainConfig(epochs=8, lr=3e-3, num_workers=0),
    ),
}
