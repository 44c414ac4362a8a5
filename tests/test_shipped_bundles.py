"""The bundles shipped in the package: they load, verify, and keep their promises."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeml.assets import default_bundle, fixture_bundle
from edgeml.bundle import Bundle
from edgeml.data.torch_datasets import FashionMNISTDataset, SceneDataset
from edgeml.progressive.calibrate import exit_outputs
from edgeml.progressive.flops import exit_flops


@pytest.fixture(scope="module")
def fixture() -> Bundle:
    return Bundle.load(fixture_bundle())


@pytest.fixture(scope="module")
def default() -> Bundle:
    return Bundle.load(default_bundle())


def test_fixture_accuracy_on_the_official_test_set(fixture: Bundle) -> None:
    pred, _conf, label, _lvl, _feat = exit_outputs(
        fixture.net, FashionMNISTDataset("test"), batch_size=1000, progress=False
    )
    acc = (pred == label[:, None]).mean(axis=0)
    assert len(label) == 10_000
    assert acc[-1] >= 0.92, acc
    assert acc[0] >= 0.80, acc


def test_fixture_first_exit_costs_at_most_a_third(fixture: Bundle) -> None:
    flops = exit_flops(fixture.net, fixture.manifest.input_shape)
    assert flops == sorted(flops)
    assert flops[0] <= flops[-1] / 3, flops


def test_default_bundle_contract(default: Bundle) -> None:
    m = default.manifest
    assert m.model["name"] == "presnet" and m.dataset == "scenes"
    assert m.input_shape == (1, 96, 96) and m.exits[-1] == m.blocks
    assert m.build["command"].startswith("edgeml") and "build" in m.build["command"]
    size = sum(p.stat().st_size for p in default.path.iterdir())
    assert size <= 10 * 2**20, size
    assert default.profile is not None and len(default.profile["blocks_ms"]) == m.blocks


def test_default_accuracy_falls_with_clutter(default: Bundle) -> None:
    cal = default.calibration
    assert cal is not None
    final = [cal.accuracy(level)[-1] for level in range(5)]
    assert final[0] > final[2] > final[4], final
    assert final[0] >= 0.88, final


def test_default_calibration_is_the_models_real_output(default: Bundle) -> None:
    """Recompute the first validation frames: the shipped table is what the net predicts."""
    seed = default.manifest.build["config"]["seed"]
    data = SceneDataset("val", 64, seed)
    pred, conf, _label, level, _feat = exit_outputs(default.net, data, progress=False)
    cal = default.calibration
    assert cal is not None
    assert np.array_equal(pred, cal.pred[:64])
    assert np.allclose(conf, cal.conf[:64], atol=1e-4)
    assert np.array_equal(level, cal.difficulty[:64])


def test_default_exits_get_cheaper_earlier(default: Bundle) -> None:
    flops = exit_flops(default.net, default.manifest.input_shape)
    assert flops == sorted(flops) and flops[0] < 0.6 * flops[-1], flops
    x = torch.zeros(1, 1, 96, 96)
    with torch.no_grad():
        assert torch.equal(default.net(x), default.net.forward_exits(x)[-1])


def test_default_profile_makes_offloading_and_exits_matter(default: Bundle) -> None:
    """On the default 12x edge the full network misses the deadline, the first exit meets it."""
    from edgeml.decision.scenario import Scenario

    sc, prof = Scenario(), default.profile
    assert prof is not None
    assert prof["forward_ms"] >= 8.0, prof["forward_ms"]
    first = default.manifest.exits[0]
    first_ms = sum(prof["blocks_ms"][:first]) + prof["heads_ms"][str(first)]
    assert first_ms * sc.edge_slowdown < sc.deadline_ms < prof["forward_ms"] * sc.edge_slowdown


def test_the_shipped_policy_loads_for_the_default_bundle_at_every_speed_it_serves(
    default: Bundle, caplog: pytest.LogCaptureFixture
) -> None:
    """The shipped actor reads this EdgeML's observation, was trained on these weights and,
    inside the slowdown range it was trained for, is used without a scenario warning."""
    import json
    import logging

    from edgeml.decision.policies import World, make_policy
    from edgeml.decision.scenario import Scenario
    from edgeml.runtime.demo import _policy_candidates

    npz = _policy_candidates()[0]
    meta = json.loads(npz.with_suffix(".json").read_text())
    assert meta["bundle_sha256"] == default.weights_sha256
    speeds = meta["train"]["edge_slowdowns"]
    for s in speeds:
        world = World.from_bundle(default, Scenario(edge_slowdown=s))
        with caplog.at_level(logging.WARNING):
            pol = make_policy(str(npz), world, bundle_sha256=default.weights_sha256)
        assert world.space.contains(pol.act(world.knowledge()))  # valid on a blank view
    assert "another scenario" not in caplog.text
