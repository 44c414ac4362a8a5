"""Standard zoo architectures: exact parameter counts, output shapes, registration."""

from __future__ import annotations

import pytest
import torch

from edgeml.models import available_models, build_model
from edgeml.models import standard as zoo

torch.set_num_threads(1)

EXPECTED_PARAMS = {
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "mobilenet_v2": 3_504_872,
    "vgg16": 138_357_544,
}


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_parameter_count_is_exact(name: str) -> None:
    model = getattr(zoo, name)()
    assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_imagenet_output_shape(name: str) -> None:
    model = getattr(zoo, name)().eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1000)
    assert torch.isfinite(out).all()


def test_num_classes_changes_only_the_classifier() -> None:
    model = zoo.resnet18(num_classes=10).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 10)
    # 512*1000+1000 classifier parameters replaced by 512*10+10.
    assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMS["resnet18"] - 507_870


def test_registered_by_name() -> None:
    assert set(EXPECTED_PARAMS) <= set(available_models())
    model = build_model("mobilenet_v2", num_classes=7)
    assert isinstance(model, zoo.MobileNetV2)
    assert model.classifier[-1].out_features == 7
