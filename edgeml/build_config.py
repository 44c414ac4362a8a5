"""Bundle build settings and the named presets, apart from :mod:`edgeml.build` so reading
them needs no torch (``edgeml build --help`` lists the presets)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgeml.decision.scenario import EDGE_PRECISIONS
from edgeml.progressive.config import ExitTrainConfig

__all__ = ["PRESETS", "BuildConfig", "ModelBuildConfig"]


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


@dataclass
class ModelBuildConfig:
    """A build of your own model and data (``edgeml build --model``, :func:`edgeml.build`).

    :param exits_after: ``"auto"`` or cut node names / submodule paths / cut indices.
    :param freeze_backbone: train the exit heads only; the model's own layers, its
        classifier included, stay bit-identical (``exits-only``).
    :param val_fraction: share of the training data held out for calibration when no
        validation data is given.
    :param test_fraction: share of the validation data kept apart for the accuracy report
        in the manifest (0: report on the calibration set itself).
    :param samples: validation inputs stored in the bundle (``samples.npz``): what
        ``edgeml profile`` measures codec sizes on.
    """

    epochs: int = 1
    batch_size: int = 64
    lr: float = 1e-3
    freeze_backbone: bool = False
    exits_after: Any = "auto"
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    difficulty_feature: str = "edge_density"
    samples: int = 16
    threads: int = 2
    seed: int = 0
    progress: bool = False
    profile: bool = True
    #: Edge precisions exported to ONNX at build time (``fp32``, ``int8``; empty: none).
    onnx: tuple[str, ...] = ("fp32",)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "threads", "samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        bad = [v for v in self.onnx if v not in EDGE_PRECISIONS]
        if bad:
            raise ValueError(f"onnx: {bad} not allowed; allowed: {', '.join(EDGE_PRECISIONS)}")
        if not 0 <= self.test_fraction < 1:
            raise ValueError(f"test_fraction: must be in [0, 1), got {self.test_fraction}")
