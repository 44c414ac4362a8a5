"""Exit-training settings, apart from the training code so reading them needs no torch
(the ``edgeml`` parser builds its ``--help`` from these defaults)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["ExitTrainConfig"]


@dataclass
class ExitTrainConfig:
    """How to train the exits.

    :param mode: ``joint`` trains backbone and heads with a weighted sum of exit losses;
        ``exits-only`` freezes a pretrained backbone (BN statistics too) and trains heads.
    :param exit_weights: loss weight per exit (default 1 each); BranchyNet weighs all exits.
    :param bf16: autocast convolutions and matmuls to bfloat16 (weights stay float32). On a
        CPU with AVX512-BF16 this roughly doubles training speed at 96x96; the bundle is
        still float32, so inference and calibration are unchanged.
    :param channels_last: train in NHWC memory layout (faster oneDNN convolutions on CPU).
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    mode: str = "joint"
    exit_weights: Sequence[float] | None = None
    label_smoothing: float = 0.0
    num_workers: int = 0
    bf16: bool = False
    channels_last: bool = False
    seed: int = 0
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in ("joint", "exits-only"):
            raise ValueError(f"mode: {self.mode!r} is not one of ['exits-only', 'joint']")
        if self.epochs < 1:
            raise ValueError(f"epochs: must be >= 1, got {self.epochs}")
