"""``edgeml build``: train the exits, calibrate, measure cut sizes, write a bundle.

Profiling (``profile.json``) is a separate step of the partition package, run after this.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from edgeml.build_config import BuildConfig
from edgeml.bundle import Bundle, CutPointInfo, Manifest
from edgeml.data.torch_datasets import INPUT_SHAPES, FashionMNISTDataset, SceneDataset
from edgeml.models import build_model
from edgeml.models.progressive_net import ProgressiveNet
from edgeml.partition.codecs import BASE_CODECS, encode, to_bytes
from edgeml.progressive.calibrate import Calibration, calibrate
from edgeml.progressive.train import train_exits

log = logging.getLogger(__name__)


def _datasets(cfg: BuildConfig) -> tuple[Any, Dataset, Dataset]:
    if cfg.dataset == "scenes":
        return (
            lambda epoch: SceneDataset("train", cfg.train_size, cfg.seed, epoch * cfg.train_size),
            SceneDataset("val", cfg.val_size, cfg.seed),
            SceneDataset("test", cfg.test_size, cfg.seed),
        )
    if cfg.dataset == "fashion-mnist":
        train = FashionMNISTDataset("train", cfg.train_size, flip=True)
        return (
            lambda epoch: train,
            FashionMNISTDataset("val", cfg.val_size),
            FashionMNISTDataset("test", cfg.test_size),
        )
    raise ValueError(f"dataset: {cfg.dataset!r} is not one of {sorted(INPUT_SHAPES)}")


@torch.no_grad()
def cut_points(net: ProgressiveNet, samples: torch.Tensor) -> list[CutPointInfo]:
    """Shape, dtype and mean encoded bytes per codec of the tensor at every split."""
    net.eval()
    h = samples
    cuts = []
    for s in range(net.num_blocks + 1):
        if s:
            h = net.blocks[s - 1](h)
        sizes = {
            c: int(np.mean([len(to_bytes(encode(h[i : i + 1], c))) for i in range(len(h))]))
            for c in BASE_CODECS
        }
        cuts.append(CutPointInfo(s, tuple(h.shape[1:]), str(h.dtype).removeprefix("torch."), sizes))
    return cuts


def build_bundle(out: str | Path, cfg: BuildConfig, command: str = "") -> Bundle:
    """Train, calibrate and write a bundle to ``out``; returns it loaded (and verified)."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    in_ch = INPUT_SHAPES[cfg.dataset][0]
    kwargs = {"in_channels": in_ch, **cfg.model_kwargs}
    if cfg.model == "presnet" and cfg.dataset == "fashion-mnist":
        kwargs.setdefault("stem_stride", 1)
    net = build_model(cfg.model, **kwargs)
    if not isinstance(net, ProgressiveNet):
        raise ValueError(f"model: {cfg.model!r} is not a progressive network")
    train_sets, val_set, test_set = _datasets(cfg)
    history = train_exits(net, train_sets, cfg.train)
    t_train = time.perf_counter() - t0
    has_levels = cfg.dataset == "scenes"
    cal = calibrate(net, val_set, has_levels, progress=cfg.train.progress)
    test = calibrate(net, test_set, has_levels, progress=cfg.train.progress)
    samples = torch.stack([val_set[i][0] for i in range(16)])
    report = accuracy_report(test)
    manifest = Manifest(
        model={"name": cfg.model, "kwargs": kwargs},
        dataset=cfg.dataset,
        input_shape=INPUT_SHAPES[cfg.dataset],
        num_classes=10,
        blocks=net.num_blocks,
        exits=net.exits,
        cut_points=cut_points(net, samples),
        build={
            "command": command,
            "config": asdict(cfg),
            "loss_per_epoch": history,
            "train_seconds": round(t_train, 1),
            "total_seconds": round(time.perf_counter() - t0, 1),
            "test_accuracy": report,
        },
    )
    Bundle.save(out, net, manifest, cal)
    log.info(
        "built %s in %.0f s; test accuracy per exit %s",
        out,
        time.perf_counter() - t0,
        report["overall"],
    )
    return Bundle.load(out)


def accuracy_report(cal: Calibration) -> dict[str, Any]:
    """Top-1 per exit, overall and per difficulty level (rounded for the manifest/README)."""
    levels = sorted(set(cal.difficulty.tolist()))
    return {
        "samples": cal.num_samples,
        "overall": [round(float(a), 4) for a in cal.accuracy()],
        "per_level": {str(lv): [round(float(a), 4) for a in cal.accuracy(lv)] for lv in levels},
    }
