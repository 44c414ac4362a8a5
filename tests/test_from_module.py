"""edgeml.from_module: exact blocks, distinct cut names, heads, frozen classifier."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeml.errors import InputError
from edgeml.partition.graph import find_cut_points, split
from edgeml.partition.module_net import from_module
from edgeml.partition.progressive_split import block_cut_points
from edgeml.progressive.config import ExitTrainConfig
from edgeml.progressive.train import train_exits

torch.set_num_threads(1)


class Basic(nn.Module):
    """torchvision's BasicBlock: inplace ReLU, ``out += identity``."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class SmallResNet(nn.Module):
    def __init__(self, num_classes: int = 7) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(Basic(8, 8), Basic(8, 8))
        self.layer2 = Basic(8, 16, 2)
        self.layer3 = Basic(16, 16, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _model() -> SmallResNet:
    torch.manual_seed(0)
    model = SmallResNet()
    for m in model.modules():  # non-trivial BN statistics: exactness must not hinge on 0/1
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_cut_listing_has_one_name_per_tensor() -> None:
    cuts = find_cut_points(_model(), torch.randn(1, 3, 16, 16))
    names = [c.node for c in cuts]
    assert len(set(names)) == len(names)
    assert "conv1" not in names and "bn1" not in names and "relu" in names
    assert not any(n.startswith(("add", "iadd")) for n in names), names
    assert "avgpool" not in names and "flatten" in names


@pytest.mark.parametrize("exits", ["auto", ["layer1", "layer2"], [2]])
def test_blocks_compose_to_the_module_exactly(exits: object) -> None:
    model = _model()
    x = torch.randn(3, 3, 16, 16)
    net = from_module(model, exits, example=x[:1]).eval()  # type: ignore[arg-type]
    with torch.no_grad():
        want = model(x)
        assert torch.equal(net(x), want)
        assert torch.equal(net.run_blocks(x, 0, net.num_blocks), want)
        outs = net.forward_exits(x)
    assert len(outs) == len(net.exits) and all(o.shape == (3, 7) for o in outs)
    assert net.exits[-1] == net.num_blocks and isinstance(net.heads[str(net.num_blocks)],
                                                            nn.Identity)  # fmt: skip
    if exits == "auto":  # last cut of each resolution but the deepest: layer1, layer2
        assert net.cut_nodes == ("layer1_1_relu_1", "layer2_relu_1")


def test_head_and_tail_equal_the_whole_at_every_cut_of_the_net() -> None:
    net = from_module(_model(), "auto", example=torch.zeros(1, 3, 16, 16)).eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        want = net(x.clone())
        cuts = find_cut_points(net, x)
        assert len(cuts) > net.num_blocks
        for cut in cuts:
            head, tail = split(net, cut)
            assert torch.equal(tail(head(x.clone())), want), cut.node
        for s, cut in enumerate(block_cut_points(net, x)):
            head, _ = split(net, cut)
            assert torch.equal(head(x.clone()), net.run_blocks(x.clone(), 0, s)), s


def test_custom_heads_and_bad_exits() -> None:
    model = _model()
    ex = torch.zeros(1, 3, 16, 16)
    made: list[tuple[int, ...]] = []

    def heads(shape: tuple[int, ...], n: int) -> nn.Module:
        made.append(shape)
        return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.Size(shape).numel()), n))

    net = from_module(model, ["layer2"], example=ex, exit_heads=heads)
    assert made == [(16, 8, 8)] and net.exits == (1, 2)
    with pytest.raises(InputError, match="neither a cut point nor a submodule"):
        from_module(model, ["layer9"], example=ex)
    with pytest.raises(InputError, match="inner cut"):
        from_module(model, [0], example=ex)


def test_exits_only_training_leaves_the_model_and_its_classifier_bit_identical() -> None:
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    net = from_module(model, "auto", example=torch.zeros(1, 3, 16, 16))
    heads_before = {k: v.clone() for k, v in net.heads.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(3, 16, 16, generator=g), i % 7) for i in range(64)]  # plain (x, y)
    cfg = ExitTrainConfig(epochs=1, batch_size=16, mode="exits-only", progress=False)
    train_exits(net, lambda epoch: data, cfg)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "backbone/classifier changed"
    assert any(not torch.equal(heads_before[k], v) for k, v in net.heads.state_dict().items())
