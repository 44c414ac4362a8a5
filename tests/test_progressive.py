"""ProgressiveNet exits, the early-exit rule, exit training modes, calibration contents."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeml.bundle import Bundle
from edgeml.data.torch_datasets import FashionMNISTDataset
from edgeml.decision.action import TAUS
from edgeml.models import build_model
from edgeml.progressive.calibrate import Calibration, confidence_bins
from edgeml.progressive.infer import run_action, run_segment
from edgeml.progressive.train import ExitTrainConfig, train_exits


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [("presnet", {}, (1, 96, 96)), ("pvgg", {}, (1, 28, 28)),
     ("presnet", {"stem_stride": 1}, (1, 28, 28))],
)  # fmt: skip
def test_exit_shapes_and_final_equals_forward(name: str, kwargs: dict, shape: tuple) -> None:
    net = build_model(name, **kwargs).eval()
    x = torch.randn(3, *shape)
    with torch.no_grad():
        outs = net.forward_exits(x)
        final = net(x)
    assert len(outs) == len(net.exits) and net.exits[-1] == net.num_blocks
    assert all(o.shape == (3, 10) for o in outs)
    assert torch.equal(outs[-1], final)


def test_early_exit_rule(tiny_bundle: Bundle) -> None:
    net = tiny_bundle.net
    x = FashionMNISTDataset("test", 64).x
    with torch.no_grad():
        probs = [torch.softmax(o, 1) for o in net.forward_exits(x)]
    conf = torch.stack([p.max(1).values for p in probs], 1)
    last = len(net.exits) - 1
    # tau = 1.0 never stops early: every answer comes from exit e.
    assert {a.exit_index for a in run_action(net, x, last, 1.0)} == {last}
    assert {a.exit_index for a in run_action(net, x, 0, 1.0)} == {0}
    tau = 0.8
    answers = run_action(net, x, last, tau)
    for i, a in enumerate(answers):
        hits = (conf[i, :last] >= tau).nonzero()
        expected = int(hits[0]) if len(hits) else last
        assert a.exit_index == expected
        assert a.class_id == int(probs[expected][i].argmax())
        assert a.confidence == pytest.approx(float(conf[i, expected]), abs=1e-6)


def test_split_segments_compose(tiny_bundle: Bundle) -> None:
    """Edge part then cloud part gives the whole run's answers, for every split."""
    net = tiny_bundle.net
    x = FashionMNISTDataset("test", 32).x
    for s in range(net.num_blocks + 1):
        for e in range(len(net.exits)):
            for tau in (TAUS[0], 0.9):
                whole = run_action(net, x, e, tau)
                edge = run_segment(net, x, 0, s, e, tau)
                got = list(edge.answers)
                if edge.pending:
                    cloud = run_segment(net, edge.hidden, s, net.num_blocks, e, tau)
                    for row, ans in zip(edge.pending, cloud.answers, strict=True):
                        got[row] = ans
                assert [(a.class_id, a.exit_index) for a in got] == [
                    (a.class_id, a.exit_index) for a in whole
                ]
                assert not edge.pending or s < net.exits[e]


def test_exits_only_freezes_backbone() -> None:
    net = build_model("pvgg")
    before = [p.detach().clone() for p in net.blocks.parameters()]
    bn_before = net.blocks[0][1].running_mean.clone()
    heads_before = [p.detach().clone() for p in net.heads.parameters()]
    data = FashionMNISTDataset("train", 256)
    train_exits(net, lambda _e: data, ExitTrainConfig(epochs=1, batch_size=64, mode="exits-only",
                                                      progress=False))  # fmt: skip
    assert all(torch.equal(a, b) for a, b in zip(before, net.blocks.parameters(), strict=True))
    assert torch.equal(bn_before, net.blocks[0][1].running_mean)
    assert any(
        not torch.equal(a, b) for a, b in zip(heads_before, net.heads.parameters(), strict=True)
    )


def test_joint_training_learns() -> None:
    torch.manual_seed(0)
    net = build_model("pvgg")
    data = FashionMNISTDataset("train", 512)
    hist = train_exits(
        net, lambda _e: data, ExitTrainConfig(epochs=2, batch_size=64, progress=False)
    )
    assert hist[1] < hist[0]


def test_bad_config_names_field() -> None:
    with pytest.raises(ValueError, match="mode"):
        ExitTrainConfig(mode="greedy")


def test_calibration_contents(tiny_bundle: Bundle) -> None:
    cal = Calibration.load(tiny_bundle.path / "calibration.npz")
    n, e = cal.pred.shape
    assert n == 512 and e == len(tiny_bundle.net.exits)
    assert np.array_equal(cal.correct, cal.pred == cal.label[:, None])
    assert ((cal.conf > 0.1) & (cal.conf <= 1.0)).all()
    assert set(np.unique(cal.difficulty)) == set(range(5))
    # Difficulty bins for plain Fashion-MNIST: the least confident fifth is level 4.
    assert cal.conf[cal.difficulty == 4, 0].max() <= cal.conf[cal.difficulty == 0, 0].min()
    # The table is the model's real output: recompute a few rows.
    x = FashionMNISTDataset("val", 8).x
    with torch.no_grad():
        outs = tiny_bundle.net.forward_exits(x)
    pred = torch.stack([o.argmax(1) for o in outs], 1).numpy()
    assert np.array_equal(pred, cal.pred[:8])
    assert cal.feature.shape == (n,) and (cal.feature > 0).all()


def test_confidence_bins_order() -> None:
    conf = np.linspace(0.2, 1.0, 100)
    bins = confidence_bins(conf)
    assert bins[0] == 4 and bins[-1] == 0 and (np.diff(bins) <= 0).all()
