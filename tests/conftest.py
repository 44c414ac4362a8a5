"""Shared fixtures: a tiny real bundle built in seconds, and the shipped bundles."""

from __future__ import annotations

import shutil

import pytest
import torch

from edgeml.build import BuildConfig, build_bundle
from edgeml.bundle import Bundle
from edgeml.progressive.train import ExitTrainConfig

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """A real (briefly trained) B-VGG bundle on 28x28 Fashion-MNIST: fast, not accurate."""
    cfg = BuildConfig(
        model="pvgg", dataset="fashion-mnist", train_size=2048, val_size=512, test_size=512,
        train=ExitTrainConfig(epochs=1, progress=False), threads=1,
    )  # fmt: skip
    return build_bundle(tmp_path_factory.mktemp("bundle") / "tiny", cfg, command="tests")


@pytest.fixture(scope="session")
def profiled_bundle(tiny_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """A copy of ``tiny_bundle`` with a real but quick ``profile.json`` (3 repeats: noisy)."""
    from edgeml.partition.profiler import profile_bundle

    path = tmp_path_factory.mktemp("bundle") / "tiny_profiled"
    shutil.copytree(tiny_bundle.path, path)
    bundle = Bundle.load(path)
    profile_bundle(bundle, repeats=3, threads=1, samples=4, min_seconds=0.2)
    return bundle
