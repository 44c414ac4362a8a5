"""Files shipped inside the package: the default and fixture bundles, a sample of traces."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent


def default_bundle() -> Path:
    """The shipped default bundle (progressive ResNet-style net on 96x96 scenes)."""
    return ASSETS / "bundles" / "default"


def fixture_bundle() -> Path:
    """The shipped fast fixture bundle (B-VGG on plain 28x28 Fashion-MNIST)."""
    return ASSETS / "bundles" / "fixture"
