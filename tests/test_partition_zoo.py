"""Progressive zoo nets split exactly at every cut, and int8 at every split keeps top-1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeml.bundle import Bundle
from edgeml.data.torch_datasets import FashionMNISTDataset
from edgeml.models import build_model
from edgeml.partition.codecs import decode, encode
from edgeml.partition.graph import find_cut_points, split
from edgeml.partition.progressive_split import block_cut_points, split_at_block

torch.set_num_threads(1)

ZOO = [
    pytest.param("presnet", {}, 96, id="presnet-96"),
    pytest.param("pvgg", {}, 28, id="pvgg-28"),
    pytest.param("presnet", {"stem_stride": 1}, 28, id="presnet-stride1-28"),
]


@pytest.mark.parametrize(("name", "kwargs", "size"), ZOO)
@torch.no_grad()
def test_every_cut_of_progressive_nets_is_exact(name: str, kwargs: dict, size: int) -> None:
    torch.manual_seed(0)
    net = build_model(name, **kwargs).eval()
    _randomize_bn(net)
    x = torch.randn(1, 1, size, size)
    expected = net(x.clone())
    cuts = find_cut_points(net, x)
    assert len(cuts) > net.num_blocks
    for cut in cuts:
        head, tail = split(net, cut)
        mid = head(x.clone())
        assert mid.shape == cut.shape, cut
        assert torch.equal(tail(mid), expected), f"{name}: split at {cut.node} changed the output"


@pytest.mark.parametrize(("name", "kwargs", "size"), ZOO)
@torch.no_grad()
def test_block_boundaries_are_cuts(name: str, kwargs: dict, size: int) -> None:
    torch.manual_seed(0)
    net = build_model(name, **kwargs).eval()
    _randomize_bn(net)
    x = torch.randn(1, 1, size, size)
    cuts = block_cut_points(net, x)
    assert len(cuts) == net.num_blocks + 1
    assert [c.index for c in cuts] == sorted({c.index for c in cuts})  # distinct, in order
    for s, cut in enumerate(cuts):
        want = net.run_blocks(x.clone(), 0, s)
        assert cut.shape == tuple(want.shape), s
        head, tail = split(net, cut)
        assert torch.equal(head(x.clone()), want), f"cut {cut.node} is not the output of block {s}"
    head, tail = split_at_block(net, 2, x)
    assert torch.equal(tail(head(x.clone())), net(x.clone()))
    with pytest.raises(ValueError, match="split"):
        split_at_block(net, net.num_blocks + 1, x)


def _randomize_bn(net: torch.nn.Module) -> None:
    """Non-trivial running statistics, so a cut that skipped a batch norm would show."""
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)


@torch.no_grad()
def _top1_with_codec(bundle: Bundle, x: torch.Tensor, s: int, codec: str | None) -> np.ndarray:
    """Predictions of the final exit when the tensor at split ``s`` crosses with ``codec``."""
    net = bundle.net
    h = net.run_blocks(x, 0, s)
    if codec is not None:  # per input, batch 1, exactly as the edge sends it
        h = torch.cat(
            [torch.from_numpy(decode(encode(h[i : i + 1], codec)).copy()) for i in range(len(h))]
        )
    logits = net.head(net.num_blocks, net.run_blocks(h, s, net.num_blocks))
    return logits.argmax(1).numpy()


@pytest.mark.parametrize("codec", ["int8", "int8c"])
def test_int8_at_every_split_keeps_top1(tiny_bundle: Bundle, codec: str) -> None:
    ds = FashionMNISTDataset("val", 300)
    x, y = ds.x, ds.y.numpy()
    fp32 = _top1_with_codec(tiny_bundle, x, 0, None)
    acc32 = (fp32 == y).mean()
    assert acc32 > 0.3, "the tiny bundle must be well above chance (0.1) for this to mean much"
    for s in range(tiny_bundle.net.num_blocks + 1):
        pred = _top1_with_codec(tiny_bundle, x, s, codec)
        acc = (pred == y).mean()
        assert abs(acc - acc32) <= 0.02, (
            f"{codec} at split {s}: top-1 {acc:.3f} vs fp32 {acc32:.3f}"
        )
        assert (pred == fp32).mean() >= 0.95, f"{codec} at split {s} flips too many answers"
