"""Calibration tables: per validation sample and exit, the predicted class, confidence, correctness.

The simulator, the baselines and the oracle read accuracy from this table, so accuracy in
every result is the trained model's real behaviour, never a formula.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeml.data.features import DEFAULT_FEATURE, difficulty_feature
from edgeml.errors import InputError, load_npz

if TYPE_CHECKING:  # torch only to build a table: loading one stays torch-free (the edge)
    from torch.utils.data import Dataset

    from edgeml.models.progressive_net import ProgressiveNet

LEVELS = 5


@dataclass(frozen=True)
class Calibration:
    """Arrays over ``n`` samples and ``E`` exits (see the bundle contract)."""

    pred: np.ndarray  # (n, E) int16
    conf: np.ndarray  # (n, E) float32, max softmax probability
    correct: np.ndarray  # (n, E) bool
    label: np.ndarray  # (n,) int16
    difficulty: np.ndarray  # (n,) int8, 0 (easy) .. 4 (hard)
    feature: np.ndarray  # (n,) float32, the edge's cheap difficulty signal (data.features)

    @property
    def num_samples(self) -> int:
        return len(self.label)

    @property
    def num_exits(self) -> int:
        return self.pred.shape[1]

    def accuracy(self, level: int | None = None) -> np.ndarray:
        """Top-1 accuracy per exit, optionally for one difficulty level."""
        mask = slice(None) if level is None else self.difficulty == level
        return self.correct[mask].mean(axis=0)

    def save(self, path: Path) -> None:
        np.savez_compressed(
            path, pred=self.pred, conf=self.conf, correct=self.correct,
            label=self.label, difficulty=self.difficulty, feature=self.feature,
        )  # fmt: skip

    @classmethod
    def load(cls, path: Path) -> Calibration:
        names = ("pred", "conf", "correct", "label", "difficulty", "feature")
        what = f"a calibration .npz written by `edgeml build` (arrays {', '.join(names)})"
        z = load_npz(path, what, need=names)
        cal = cls(*(z[k] for k in names))
        if cal.pred.ndim != 2:
            raise InputError(f"{path}: array 'pred' must be 2-D (samples, exits)")
        n, e = cal.pred.shape
        shapes_ok = cal.conf.shape == cal.correct.shape == (n, e)
        if not shapes_ok or not cal.label.shape == cal.difficulty.shape == cal.feature.shape == (
            n,
        ):
            raise InputError(f"{path}: calibration arrays disagree in shape")
        return cal


def exit_outputs(
    net: ProgressiveNet,
    data: Dataset,
    batch_size: int = 256,
    progress: bool = True,
    feature: str = DEFAULT_FEATURE,
) -> tuple[np.ndarray, ...]:
    """Run every exit on ``data``: (pred, conf, labels, levels, difficulty features).

    Items are ``(x, y, level)`` or ``(x, y)`` (level 0 then: calibration derives one).
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    net.eval()
    preds, confs, labels, levels, feats = [], [], [], [], []
    loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    for batch in tqdm(loader, desc="calibrate", disable=not progress):
        x, y = batch[0], batch[1]
        lvl = batch[2] if len(batch) > 2 else torch.zeros(len(y), dtype=torch.int8)
        with torch.no_grad():
            probs = torch.stack([torch.softmax(o, 1) for o in net.forward_exits(x)], dim=1)
        c, p = probs.max(dim=2)
        preds.append(p.numpy().astype(np.int16))
        confs.append(c.numpy().astype(np.float32))
        labels.append(np.asarray(y, dtype=np.int16))
        levels.append(np.asarray(lvl, dtype=np.int8))
        feats.append(difficulty_feature(x.numpy(), feature))
    return tuple(np.concatenate(a) for a in (preds, confs, labels, levels, feats))


def confidence_bins(first_exit_conf: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Difficulty for datasets without clutter: quintile of the first exit's confidence
    (the least confident fifth is level 4), the quintiles of ``reference`` (another set's
    first-exit confidences, e.g. the calibration set's; default: these)."""
    ref = first_exit_conf if reference is None else reference
    edges = np.quantile(ref, [0.2, 0.4, 0.6, 0.8])
    return (LEVELS - 1 - np.searchsorted(edges, first_exit_conf, side="right")).astype(np.int8)


def calibrate(
    net: ProgressiveNet,
    data: Dataset,
    has_levels: bool,
    progress: bool = True,
    feature: str = DEFAULT_FEATURE,
) -> Calibration:
    """Build the calibration table; without difficulty levels, difficulty is the quintile
    of the first exit's confidence. ``feature`` names the edge's difficulty signal."""
    pred, conf, label, level, feature_values = exit_outputs(
        net, data, progress=progress, feature=feature
    )
    correct = pred == label[:, None]
    difficulty = level if has_levels else confidence_bins(conf[:, 0])
    return Calibration(pred, conf, correct, label, difficulty, feature_values)
