"""Baselines and oracles on the same episodes: sanity of each policy's choices and ordering."""

from __future__ import annotations

import numpy as np
import pytest

from edgeml.bundle import Bundle
from edgeml.decision.policies import (
    BASELINES,
    CloudOnly,
    Edgent,
    EdgeOnly,
    Neurosurgeon,
    Oracle,
    OracleSample,
    RandomPolicy,
    Spinn,
    make_policy,
)
from edgeml.decision.scenario import Scenario
from edgeml.errors import InputError
from edgeml.rl_agent.env import EdgeCloudEnv
from edgeml.rl_agent.evaluate import EvalConfig, all_baselines, evaluate, make_env
from edgeml.rl_agent.traces import Trace, load_traces

CFG = EvalConfig(segments=2, episode_steps=150, seed=0)


@pytest.fixture(scope="module")
def results(profiled_bundle: Bundle) -> tuple[dict, dict]:
    traces = load_traces()
    env = make_env(Scenario(), traces, CFG, bundle=profiled_bundle)
    assert {p.name for p in all_baselines(env)} == set(BASELINES)
    return evaluate(all_baselines(env), Scenario(), traces, CFG, progress=False, env=env)


def test_edge_only_never_sends_and_cloud_only_always_sends(results: tuple[dict, dict]) -> None:
    res, rec = results
    assert res["policies"]["edge_only"]["bytes_sent_mean"] == 0.0
    assert (rec["edge_only"]["bytes"] == 0).all()
    assert (rec["cloud_only"]["split"] == 0).all() and (rec["cloud_only"]["bytes"] > 0).all()


def test_oracles_bound_the_others(results: tuple[dict, dict]) -> None:
    pol = results[0]["policies"]
    for key in ("timely_accuracy", "reward"):
        assert pol["oracle_sample"][key] >= pol["oracle"][key] >= pol["random"][key]
    assert pol["oracle"]["reward"] > pol["random"]["reward"] + 0.05
    # Full knowledge of the link and the level: no edge-side baseline does better on average.
    for name in ("edge_only", "cloud_only", "neurosurgeon", "edgent", "spinn"):
        assert pol["oracle"]["reward"] >= pol[name]["reward"] - 1e-3, name


def test_all_policies_saw_the_same_inputs(results: tuple[dict, dict]) -> None:
    rec = results[1]
    ref = rec["oracle"]
    for name, r in rec.items():
        assert np.array_equal(r["family"], ref["family"]), name
        assert len(r["timely"]) == len(ref["timely"]), name


def test_neurosurgeon_picks_the_fastest_split(profiled_bundle: Bundle) -> None:
    for mbps in (0.05, 2.0, 200.0):
        env = EdgeCloudEnv(bundle=profiled_bundle, traces=[Trace("c_x.csv", np.full(30, mbps))])
        env.reset(seed=0)
        s, e, t = Neurosurgeon(env.world).act(env.know)
        lat = env.world.planned_latency(env.know)[:, e, 0, e]
        assert e == env.n_exits - 1 and t == 0
        assert lat[s] == lat.min()
    # A starved link keeps everything on the edge, a fat one ships the input.
    env = EdgeCloudEnv(bundle=profiled_bundle, traces=[Trace("c_x.csv", np.full(30, 0.01))])
    env.reset(seed=0)
    assert Neurosurgeon(env.world).act(env.know).split == env.n_splits - 1


def test_edgent_meets_the_deadline_with_the_most_accurate_exit(profiled_bundle: Bundle) -> None:
    env = EdgeCloudEnv(bundle=profiled_bundle, traces=[Trace("c_x.csv", np.full(30, 5.0))])
    env.reset(seed=0)
    s, e, t = Edgent(env.world).act(env.know)
    lat = env.world.planned_latency(env.know)
    assert t == 0 and lat[s, e, 0, e] <= env.scenario.deadline_ms
    acc = env.outcomes.accuracy[:, 0]
    feasible = [k for k in range(env.n_exits) if (lat[:, k, 0, k] <= 100.0).any()]
    assert acc[e] == max(acc[k] for k in feasible)
    # An impossible deadline: the fastest action instead.
    env = EdgeCloudEnv(bundle=profiled_bundle, deadline_ms=0.01)
    env.reset(seed=0)
    s, e, _ = Edgent(env.world).act(env.know)
    lat = env.world.planned_latency(env.know)
    diag = np.stack([lat[:, k, 0, k] for k in range(env.n_exits)], axis=1)
    assert lat[s, e, 0, e] == diag.min()


def test_edgent_last_plans_at_the_newest_sample_the_baseline_at_the_harmonic_mean(
    profiled_bundle: Bundle,
) -> None:
    """A link that just recovered: three slow samples, then a fast one."""

    def env_with(samples: list[float]) -> EdgeCloudEnv:
        env = EdgeCloudEnv(bundle=profiled_bundle, edge_slowdown=100.0)
        env.reset(seed=0)
        env.know.set_measurements((float(i), mbps) for i, mbps in enumerate(samples))
        return env

    recovered, fast = env_with([0.01, 0.01, 0.01, 50.0]), env_with([50.0] * 4)
    assert recovered.know.last_mbps == 50.0 and recovered.estimate_mbps < 0.02
    teacher = make_policy("edgent-last", recovered.world)
    baseline = Edgent(recovered.world).act(recovered.know)
    assert teacher.name == "edgent-last"
    assert make_policy("edgent", recovered.world).name == "edgent"
    assert baseline.split > 0  # the slow estimate keeps the input on the edge
    assert teacher.act(recovered.know) == Edgent(fast.world).act(fast.know)
    with pytest.raises(ValueError, match="estimate"):
        Edgent(recovered.world, estimate="mean")
    with pytest.raises(InputError, match="sage"):
        make_policy("sage", recovered.world)


def test_spinn_uses_its_threshold_and_random_is_seeded(profiled_bundle: Bundle) -> None:
    env = EdgeCloudEnv(bundle=profiled_bundle)
    env.reset(seed=0)
    a = Spinn(env.world, tau=0.9).act(env.know)
    assert a.tau == 0.9 and a.exit == env.n_exits - 1
    with pytest.raises(ValueError, match="tau"):
        Spinn(env.world, tau=0.5)
    r1, r2 = RandomPolicy(env.world, 5), RandomPolicy(env.world, 5)
    first = [r1.act(env.know) for _ in range(5)]
    assert first == [r2.act(env.know) for _ in range(5)]


def test_oracle_sample_picks_a_right_answer_when_one_is_in_time(profiled_bundle: Bundle) -> None:
    env = EdgeCloudEnv(bundle=profiled_bundle, traces=[Trace("c_x.csv", np.full(30, 50.0))])
    env.reset(seed=2)
    hits = 0
    for _ in range(50):
        i = env.current_sample
        can = bool(env.outcomes.correct[:, :, i].any())
        _, _, _, _, info = env.step(OracleSample(env.world).act(env.know))
        assert info["timely"] == can  # a fat link: every exit is in time
        hits += info["timely"]
    assert hits > 0


def test_oracle_uses_the_level_not_the_sample(profiled_bundle: Bundle) -> None:
    env = EdgeCloudEnv(bundle=profiled_bundle)
    env.reset(seed=4)
    oracle = Oracle(env.world)
    # Same level, same time and load: the oracle's choice cannot depend on the sample.
    a = oracle.act(env.know)
    lv = env.current_level
    others = np.flatnonzero(profiled_bundle.calibration.difficulty == lv)[:5]
    for i in others:
        env._samples[env._step] = int(i)
        assert oracle.act(env.know) == a


def test_unknown_policy_is_named_and_oracles_are_refused_on_a_device(
    profiled_bundle: Bundle,
) -> None:
    env = EdgeCloudEnv(bundle=profiled_bundle)
    with pytest.raises(InputError, match="oracle"):
        make_policy("orakel", env.world)
    assert isinstance(make_policy("edge_only", env.world), EdgeOnly)
    assert isinstance(make_policy("cloud_only", env.world), CloudOnly)
    with pytest.raises(InputError, match="simulator only"):
        make_policy("oracle", env.world, device=True)
    blind = env.world.knowledge()  # no simulator behind it
    with pytest.raises(RuntimeError, match="future"):
        Oracle(env.world).act(blind)
