"""``edgeml build``: train the exits, calibrate, measure cut sizes, write a bundle.

Two entry points: :func:`build_bundle` for the presets (zoo nets on the built-in
datasets) and :func:`build` for your own model and data (any traceable classifier, cut by
``edgeml.from_module``). Profiling (``profile.json``) is a step of the partition
package, run after this (``build`` runs it unless told not to).
"""

from __future__ import annotations

import logging
import sys
import time
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from edgeml.build_config import BuildConfig, ModelBuildConfig
from edgeml.bundle import Bundle, CutPointInfo, Manifest
from edgeml.data.features import DEFAULT_FEATURE
from edgeml.data.preprocessing import FASHION_MNIST, Preprocessing
from edgeml.data.torch_datasets import INPUT_SHAPES, FashionMNISTDataset, SceneDataset
from edgeml.errors import InputError
from edgeml.models import build_model
from edgeml.models.progressive_net import ProgressiveNet
from edgeml.partition.codecs import BASE_CODECS, encode, to_bytes
from edgeml.partition.module_net import from_module
from edgeml.progressive.calibrate import Calibration, calibrate
from edgeml.progressive.config import ExitTrainConfig
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
        preprocessing=FASHION_MNIST(INPUT_SHAPES[cfg.dataset][1:]).to_dict(),
        difficulty_feature=DEFAULT_FEATURE,
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


SAMPLES = "samples.npz"  # a few validation inputs: what `edgeml profile` measures on


def _model_and_reference(
    model: str | nn.Module | Callable[..., nn.Module], kwargs: Mapping[str, Any]
) -> tuple[str, nn.Module]:
    """``(reference, module)``: a reference string is imported; a factory or a module
    instance is named by :func:`~edgeml.models.references.reference_of` (its class)."""
    from edgeml.models.references import load_model, reference_of

    if isinstance(model, str):
        return model, load_model(model, kwargs)
    if isinstance(model, nn.Module):
        return reference_of(type(model)), model
    if callable(model):
        module = model(**kwargs)
        if not isinstance(module, nn.Module):
            kind = type(module).__name__
            raise InputError(f"model: {model!r} returned a {kind}, not an nn.Module")
        return reference_of(model), module
    raise InputError(
        f"model: {type(model).__name__}; give a 'package.module:factory' reference, a "
        "factory or an nn.Module"
    )


def _head_reference(exit_heads: Any) -> str | None:
    from edgeml.models.references import reference_of

    if exit_heads is None:
        return None
    if isinstance(exit_heads, str):
        return exit_heads
    if isinstance(exit_heads, Mapping):
        raise InputError(
            "exit_heads: a bundle rebuilds its heads in every process that loads it; give a "
            "module-level factory (shape, num_classes) -> nn.Module or its 'module:factory'"
        )
    return reference_of(exit_heads)


def build(
    model: str | nn.Module | Callable[..., nn.Module],
    train: Any,
    val: Any = None,
    *,
    out: str | Path,
    exits_after: Sequence[str | int] | str = "auto",
    model_kwargs: Mapping[str, Any] | None = None,
    weights: str | Path | None = None,
    exit_heads: Callable[..., nn.Module] | str | None = None,
    preprocessing: Preprocessing | None = None,
    config: ModelBuildConfig | None = None,
    command: str = "",
    **options: Any,
) -> Bundle:
    """Build a bundle from your own classifier and data; returns it loaded (and verified).

    :param model: ``"package.module:factory"`` (+ ``model_kwargs``), a module-level
        factory, or an ``nn.Module`` whose class rebuilds it from ``model_kwargs``; any
        classifier torch.fx can trace (its own classifier becomes the final exit).
    :param train: an ``.npz`` or ImageFolder path, a map-style dataset of ``(x, y)`` /
        ``(x, y, level)`` pixels, or ``(x, y)`` arrays (see :mod:`edgeml.data.user`).
    :param val: calibration data in the same forms (default: ``val_fraction`` of train).
    :param exits_after: ``"auto"``, or cut node names / submodule paths / cut indices.
    :param weights: a state dict file loaded into the model before cutting.
    :param exit_heads: factory ``(cut shape, num_classes) -> nn.Module`` for side exits.
    :param preprocessing: default: fitted on ``train`` (colour, size, mean/std).
    :param options: fields of :class:`~edgeml.build_config.ModelBuildConfig`
        (``epochs``, ``freeze_backbone``, ``lr``, ``profile`` ...).
    """
    from edgeml.data.user import PixelDataset, load_data

    names = {f.name for f in fields(ModelBuildConfig)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise InputError(f"build: unknown options {unknown}; allowed: {sorted(names)}")
    cfg = replace(config or ModelBuildConfig(), exits_after=exits_after, **options)
    t0 = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    kwargs = dict(model_kwargs or {})
    ref, module = _model_and_reference(model, kwargs)
    if weights is not None:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise InputError(f"{weights}: does not fit {ref} ({first})") from None
    train_data = load_data(train, "train")
    if val is None:
        train_data, val_data = train_data.split(cfg.val_fraction, cfg.seed)
    else:
        val_data = load_data(val, "val")
    test_data = None
    if cfg.test_fraction > 0:
        val_data, test_data = val_data.split(cfg.test_fraction, cfg.seed + 1)
    prep = preprocessing or train_data.fit()
    train_set, val_set = PixelDataset(train_data, prep), PixelDataset(val_data, prep)
    head_ref = _head_reference(exit_heads)
    heads = None
    if head_ref is not None:
        from edgeml.models.references import resolve

        heads = resolve(head_ref)
    net = from_module(
        module, cfg.exits_after, example=torch.zeros(1, *prep.input_shape), exit_heads=heads
    )
    classes = _num_outputs(net, prep)
    top = max(train_data.num_classes, val_data.num_classes)
    if top > classes:
        raise InputError(
            f"data: labels go up to {top - 1}, the model outputs {classes} logits; build the "
            f"model with (at least) {top} classes"
        )
    train_cfg = ExitTrainConfig(
        epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
        mode="exits-only" if cfg.freeze_backbone else "joint", progress=cfg.progress,
    )  # fmt: skip
    history = train_exits(net, lambda epoch: train_set, train_cfg)
    t_train = time.perf_counter() - t0
    has_levels = val_data.level is not None
    feature = cfg.difficulty_feature
    cal = calibrate(net, val_set, has_levels, progress=cfg.progress, feature=feature)
    report_on = cal
    if test_data is not None:
        test_set = PixelDataset(test_data, prep)
        report_on = calibrate(net, test_set, has_levels, progress=cfg.progress, feature=feature)
    n_samples = min(cfg.samples, len(val_data))
    samples = torch.stack([val_set[i][0] for i in range(n_samples)])
    report = accuracy_report(report_on)
    report["split"] = "test" if test_data is not None else "calibration"
    from edgeml.partition.module_net import spec_of

    manifest = Manifest(
        model={"name": ref, "kwargs": kwargs, "progressive": spec_of(net, head_ref)},
        dataset=train_data.source,
        input_shape=prep.input_shape,
        num_classes=classes,
        preprocessing=prep.to_dict(),
        difficulty_feature=feature,
        blocks=net.num_blocks,
        exits=net.exits,
        cut_points=cut_points(net, samples),
        build={
            "command": command,
            "config": asdict(cfg),
            "classes": list(train_data.classes or []),
            "train_samples": len(train_data),
            "val_samples": len(val_data),
            "loss_per_epoch": history,
            "train_seconds": round(t_train, 1),
            "total_seconds": round(time.perf_counter() - t0, 1),
            "test_accuracy": report,
        },
    )
    Bundle.save(out, net, manifest, cal)
    pixels = np.round(val_data.pixels(slice(0, n_samples)) * 255).astype(np.uint8)
    np.savez_compressed(Path(out) / SAMPLES, x=pixels, y=val_data.y[:n_samples])
    log.info("built %s in %.0f s; accuracy per exit %s (%s)", out,
             time.perf_counter() - t0, report["overall"], report["split"])  # fmt: skip
    frames = None
    if "int8" in cfg.onnx:  # the calibration set's inputs, in calibrate()'s order
        frames = np.stack([val_set[i][0].numpy() for i in range(len(val_set))])
    return finish_bundle(out, cfg.onnx, cfg.profile, frames)


def finish_bundle(
    out: str | Path, onnx: Sequence[str], profile: bool, frames: np.ndarray | None = None
) -> Bundle:
    """A build's last steps, for presets and user models alike: export the edge's ONNX
    files (``onnx``: precisions, empty for none), then profile, so the profile times the
    runtime the edge will run. ``frames``: the calibration set's inputs, for int8 (a
    user's data is not kept in the bundle). Returns the bundle loaded."""
    if onnx:
        from edgeml.export.onnx import export_onnx

        export_onnx(out, tuple(onnx), frames=frames)
    bundle = Bundle.load(out)
    if profile:
        from edgeml.partition.profiler import profile_bundle

        profile_bundle(bundle)
    return bundle


@torch.no_grad()
def _num_outputs(net: ProgressiveNet, prep: Preprocessing) -> int:
    was = net.training
    net.eval()
    n = int(net(torch.zeros(1, *prep.input_shape)).shape[1])
    net.train(was)
    return n


class _CallableModule(types.ModuleType):
    """``edgeml.build`` is both this module and the API call :func:`build`: once the module
    is imported, Python binds ``edgeml.build`` to it, so the module itself must build."""

    def __call__(self, *args: Any, **kwargs: Any) -> Bundle:
        return build(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
