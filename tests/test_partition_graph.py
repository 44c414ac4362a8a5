"""Cut points and head/tail split on traced graphs: exactness, residual safety, error messages."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from edgeml.models import standard as zoo
from edgeml.partition.graph import CutPoint, PartitionError, find_cut_points, split

torch.set_num_threads(1)


def _assert_every_cut_is_exact(
    model: nn.Module, x: torch.Tensor, cuts: list[CutPoint], **kw: object
) -> None:
    model.eval()
    with torch.no_grad():
        expected = model(x.clone())
        for cut in cuts:
            head, tail = split(model, cut, **kw)
            mid = head(x.clone())
            assert mid.shape == cut.shape, cut
            assert mid.dtype == cut.dtype, cut
            assert torch.equal(tail(mid), expected), f"split at {cut.node} changed the output"


# Input sizes small enough to keep the test fast; every model still ends in a valid shape.
@pytest.mark.parametrize(
    ("name", "size"),
    [("resnet18", 64), ("resnet50", 64), ("mobilenet_v2", 64), ("vgg16", 32)],
)
def test_every_cut_of_standard_models_is_exact(name: str, size: int) -> None:
    torch.manual_seed(0)
    model = getattr(zoo, name)().eval()
    x = torch.randn(1, 3, size, size)
    cuts = find_cut_points(model, x)
    assert [c.index for c in cuts] == list(range(len(cuts)))
    assert len({c.node for c in cuts}) == len(cuts), "a crossing tensor appears twice"
    assert cuts[0].shape == tuple(x.shape)
    assert cuts[-1].shape == (1, 1000)
    _assert_every_cut_is_exact(model, x, cuts)


def test_resnet50_cuts_at_224_cover_every_block_stem_and_head() -> None:
    model = zoo.resnet50().eval()
    cuts = find_cut_points(model, torch.randn(1, 3, 224, 224))
    names = [c.node for c in cuts]
    assert len(cuts) >= 18
    depths = {1: 3, 2: 4, 3: 6, 4: 3}
    block_outputs = [f"layer{s}_{i}_relu_2" for s, n in depths.items() for i in range(n)]
    assert set(block_outputs) <= set(names)
    assert {"x", "relu", "maxpool", "flatten", "fc"} <= set(names)
    # One name per distinct tensor: conv1/bn1 are relu's data, add_k is relu_2's, avgpool
    # is flatten's.
    assert not {"conv1", "bn1", "avgpool"} & set(names)
    assert not any(n.startswith("add") for n in names)
    by_name = {c.node: c for c in cuts}
    assert by_name["x"].nbytes == 3 * 224 * 224 * 4
    assert by_name["maxpool"].shape == (1, 64, 56, 56)
    assert by_name["layer4_2_relu_2"].shape == (1, 2048, 7, 7)
    assert by_name["fc"].nbytes == 1000 * 4
    # Nothing inside a bottleneck: its conv/bn nodes have the skip tensor live beside them.
    assert not any("conv" in n or "bn" in n or "downsample" in n for n in names if "layer" in n)


class TinyResidual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        y = self.b(torch.relu(self.a(x)))
        x = torch.relu(x + y)
        return self.head(x.mean((2, 3)))


def test_residual_is_never_cut_inside() -> None:
    model = TinyResidual()
    x = torch.randn(1, 3, 8, 8)
    cuts = find_cut_points(model, x)
    # stem/relu and add/relu_2 are one tensor each (relu re-expresses it): listed once.
    assert [c.node for c in cuts] == ["x", "relu", "relu_2", "mean", "head"]
    assert {c.node: c.nbytes for c in cuts}["relu_2"] == 4 * 8 * 8 * 4
    _assert_every_cut_is_exact(model, x, cuts)


def test_sequential_model_cuts_after_every_layer() -> None:
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    x = torch.randn(2, 5)
    cuts = find_cut_points(model, x)
    assert [(c.node, c.shape) for c in cuts] == [
        ("input_1", (2, 5)),
        ("_1", (2, 6)),
        ("_2", (2, 3)),
    ]
    _assert_every_cut_is_exact(model, x, cuts)


class Gate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x
        return -x


class Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.gate = Gate()
        self.out = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.gate(self.conv(x)))


def test_untraceable_model_names_the_op_and_the_fix() -> None:
    with pytest.raises(PartitionError) as info:
        find_cut_points(Gated(), torch.randn(1, 3, 4, 4))
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "'gate' (Gate)" in message
    assert "if x.sum() > 0:" in message
    assert "control flow" in message and "leaf_modules" in message


def test_leaf_modules_make_an_untraceable_submodule_splittable() -> None:
    model = Gated()
    x = torch.randn(1, 3, 4, 4)
    cuts = find_cut_points(model, x, leaf_modules=(Gate,))
    assert [c.node for c in cuts] == ["x", "conv", "gate", "out"]
    _assert_every_cut_is_exact(model, x, cuts, leaf_modules=(Gate,))


def test_shape_propagation_leaves_train_mode_and_bn_statistics_alone() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    model[2].eval()  # a mixed-mode model must keep its per-module flags
    stats = model[1].running_mean.clone()
    find_cut_points(model, torch.randn(2, 3, 8, 8) + 5.0)
    assert model.training and model[1].training and not model[2].training
    assert torch.equal(model[1].running_mean, stats)
    assert model[1].num_batches_tracked.item() == 0


def test_split_rejects_a_cut_from_another_model() -> None:
    cut = find_cut_points(TinyResidual(), torch.randn(1, 3, 8, 8))[2]  # "relu_2"
    with pytest.raises(PartitionError, match="'relu_2' is not a cut point"):
        split(nn.Sequential(nn.Linear(2, 2)), cut)


def test_model_with_two_inputs_is_rejected() -> None:
    class TwoInputs(nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return x + y

    with pytest.raises(PartitionError, match="exactly one tensor input"):
        find_cut_points(TwoInputs(), torch.randn(1))


def test_cut_point_is_frozen_and_serialisable() -> None:
    cut = find_cut_points(TinyResidual(), torch.randn(1, 3, 8, 8))[-1]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cut.index = 0  # type: ignore[misc]
    assert cut.as_dict() == {
        "index": 4,
        "node": "head",
        "shape": [1, 2],
        "dtype": "float32",
        "nbytes": 8,
    }


def test_a_conv_keeps_its_own_cut_but_a_view_after_it_does_not() -> None:
    # conv -> conv (same shape) are distinct tensors; flatten only re-expresses the second.
    conv = [nn.Conv2d(2, 2, 3, padding=1) for _ in range(2)]
    model = nn.Sequential(*conv, nn.Flatten())
    cuts = find_cut_points(model, torch.randn(1, 2, 4, 4))
    assert [c.node for c in cuts] == ["input_1", "_0", "_2"]
    _assert_every_cut_is_exact(model, torch.randn(1, 2, 4, 4), cuts)
