"""One policy registry: a policy file is tied to the bundle and scenario it was trained for,
and a scenario flag reaches the simulator and the daemon alike."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edgeml.bundle import Bundle
from edgeml.decision.actor import NumpyActor
from edgeml.decision.policies import TEACHERS, World, make_policy
from edgeml.decision.scenario import Scenario, add_scenario_flags, scenario_from_args
from edgeml.errors import InputError
from edgeml.rl_agent.env import EdgeCloudEnv
from edgeml.runtime.edge import EdgeConfig, EdgeDaemon


def _actor(world: World, path: Path, meta: dict | None) -> Path:
    rng = np.random.default_rng(0)
    nvec = world.space.nvec
    obs = world.knowledge().obs_size
    actor = NumpyActor(
        (rng.normal(size=(8, obs)), rng.normal(size=(sum(nvec), 8))),
        (np.zeros(8), np.zeros(sum(nvec))),
        nvec,
    )
    actor.save(path)
    if meta is not None:
        path.with_suffix(".json").write_text(json.dumps(meta))
    return path


def test_a_policy_for_other_weights_is_refused_naming_both_hashes(
    profiled_bundle: Bundle, tmp_path: Path
) -> None:
    world = World.from_bundle(profiled_bundle, Scenario())
    path = _actor(world, tmp_path / "p.npz", {"bundle_sha256": "f" * 64})
    with pytest.raises(InputError) as err:
        make_policy(str(path), world, bundle_sha256=profiled_bundle.weights_sha256)
    assert "ffffffffffffffff" in str(err.value)
    assert profiled_bundle.weights_sha256[:16] in str(err.value)
    ok = _actor(world, tmp_path / "q.npz", {"bundle_sha256": profiled_bundle.weights_sha256})
    assert make_policy(str(ok), world, bundle_sha256=profiled_bundle.weights_sha256).name == "ppo"


def test_a_policy_for_another_scenario_warns_with_the_fields(
    profiled_bundle: Bundle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trained = Scenario(edge_slowdown=6.0, deadline_ms=80.0, episode_steps=50)
    meta = {"bundle_sha256": profiled_bundle.weights_sha256, "scenario": trained.to_dict()}
    world = World.from_bundle(profiled_bundle, Scenario())
    path = _actor(world, tmp_path / "p.npz", meta)
    with caplog.at_level(logging.WARNING, logger="edgeml.decision.policies"):
        make_policy(str(path), world, bundle_sha256=profiled_bundle.weights_sha256)
    text = caplog.text
    assert f"edge_slowdown: 6.0 -> {Scenario().edge_slowdown}" in text
    assert "deadline_ms: 80.0 -> 100.0" in text
    assert "episode_steps" not in text  # a training-only field is no other world


def test_every_name_of_the_registry_builds_and_the_daemon_refuses_the_oracles(
    profiled_bundle: Bundle,
) -> None:
    world = World.from_bundle(profiled_bundle, Scenario())
    view = world.knowledge()
    for name in TEACHERS:
        pol = make_policy(name, world)
        assert pol.name == name
        if not name.startswith("oracle"):
            assert world.space.contains(pol.act(view))
    with pytest.raises(InputError, match="simulator only"):
        EdgeDaemon(
            EdgeConfig(bundle=profiled_bundle.path, cloud="127.0.0.1:1", policy="oracle"),
            bundle=profiled_bundle,
        )


def test_a_scenario_flag_reaches_the_simulator_and_the_daemon(profiled_bundle: Bundle) -> None:
    p = argparse.ArgumentParser()
    add_scenario_flags(p, skip=("bundle", "traces"))
    args = p.parse_args(["--edge-slowdown", "6", "--grace-ms", "5", "--load-idle", "0", "0.2"])
    sc = scenario_from_args(args)
    assert sc.edge_slowdown == 6.0 and sc.grace_ms == 5.0 and sc.load.idle == (0.0, 0.2)
    env = EdgeCloudEnv(sc, bundle=profiled_bundle)
    daemon = EdgeDaemon(
        EdgeConfig(
            bundle=profiled_bundle.path, cloud="127.0.0.1:1", policy="edgent",
            edge_slowdown=sc.edge_slowdown, grace_ms=sc.grace_ms,
        ),
        bundle=profiled_bundle,
    )  # fmt: skip
    assert env.cost.edge_slowdown == daemon.cost.edge_slowdown == 6.0
    assert env.rule.give_up_ms(0, 0, 0.0) == daemon.rule.give_up_ms(0, 0, 0.0) == 105.0
    help_text = p.format_help()
    assert "how much slower than the profiling machine" in help_text  # from the docstring


def test_an_actor_for_the_older_observation_is_refused(
    profiled_bundle: Bundle, tmp_path: Path
) -> None:
    """An actor trained before the edge-slowdown entry (21 inputs at history 4) would read
    every entry one place off; it is refused with what to do."""
    world = World.from_bundle(profiled_bundle, Scenario())
    rng = np.random.default_rng(0)
    nvec = world.space.nvec
    old = NumpyActor((rng.normal(size=(8, 21)), rng.normal(size=(sum(nvec), 8))),
                     (np.zeros(8), np.zeros(sum(nvec))), nvec)  # fmt: skip
    path = old.save(tmp_path / "old.npz")
    with pytest.raises(InputError, match=r"reads 21 observation entries.*retrain"):
        make_policy(str(path), world)


def test_a_policy_trained_for_a_slowdown_range_is_not_warned_inside_it(
    profiled_bundle: Bundle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world = World.from_bundle(profiled_bundle, Scenario(edge_slowdown=8.0))
    meta = {"bundle_sha256": profiled_bundle.weights_sha256,
            "scenario": replace(world.scenario, edge_slowdown=4.0).to_dict(),
            "train": {"edge_slowdowns": [4.0, 24.0]}}  # fmt: skip
    path = _actor(world, tmp_path / "range.npz", meta)
    with caplog.at_level(logging.WARNING):
        make_policy(str(path), world)
    assert "another scenario" not in caplog.text
    far = World.from_bundle(profiled_bundle, Scenario(edge_slowdown=48.0))
    with caplog.at_level(logging.WARNING):
        make_policy(str(path), far)
    assert "edge_slowdown: 4.0 -> 48.0" in caplog.text


def test_a_policy_trained_for_a_wider_load_is_not_warned_inside_it(
    profiled_bundle: Bundle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world = World.from_bundle(profiled_bundle, Scenario())  # busy load (0.25, 1.0)
    wide = replace(world.scenario.load, busy=(0.25, 1.5))
    meta = {"bundle_sha256": profiled_bundle.weights_sha256,
            "scenario": replace(world.scenario, load=wide).to_dict(),
            "train": {"edge_load_busy": [0.25, 1.5]}}  # fmt: skip
    path = _actor(world, tmp_path / "wide.npz", meta)
    with caplog.at_level(logging.WARNING):
        make_policy(str(path), world)
    assert "another scenario" not in caplog.text
    beyond = replace(world.scenario, load=replace(wide, busy=(0.25, 2.0)))
    with caplog.at_level(logging.WARNING):
        make_policy(str(path), World.from_bundle(profiled_bundle, beyond))
    assert "another scenario (load:" in caplog.text
