"""Baselines and oracles on the same episodes: sanity of each policy's choices and ordering."""

from __future__ import annotations

import numpy as np
import pytest

from edgeml.bundle import Bundle
from edgeml.rl_agent.baselines import (
    BASELINES,
    CloudOnly,
    Edgent,
    EdgeOnly,
    Neurosurgeon,
    Oracle,
    OracleSample,
    RandomPolicy,
    Spinn,
    make_baseline,
    make_teacher,
    planned_latency,
)
from edgeml.rl_agent.env import EdgeCloudEnv, Scenario
from edgeml.rl_agent.evaluate import EvalConfig, evaluate
from edgeml.rl_agent.traces import Trace, load_traces

CFG = EvalConfig(segments=2, episode_steps=150, seed=0)


@pytest.fixture(scope="module")
def results(profiled_bundle: Bundle) -> tuple[dict, dict]:
    policies = [make_baseline(n) for n in BASELINES]
    return evaluate(policies, Scenario(), load_traces(), CFG, bundle=profiled_bundle,
                    progress=False)  # fmt: skip


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
        s, e, t = Neurosurgeon().act(np.zeros(1), env)
        lat = planned_latency(env)[:, e, 0, e]
        assert e == env.n_exits - 1 and t == 0
        assert lat[s] == lat.min()
    # A starved link keeps everything on the edge, a fat one ships the input.
    env = EdgeCloudEnv(bundle=profiled_bundle, traces=[Trace("c_x.csv", np.full(30, 0.01))])
    env.reset(seed=0)
    assert Neurosurgeon().act(np.zeros(1), env)[0] == env.n_splits - 1


def test_edgent_meets_the_deadline_with_the_most_accurate_exit(profiled_bundle: Bundle) -> None:
    env = EdgeCloudEnv(bundle=profiled_bundle, traces=[Trace("c_x.csv", np.full(30, 5.0))])
    env.reset(seed=0)
    s, e, t = Edgent().act(np.zeros(1), env)
    lat = planned_latency(env)
    assert t == 0 and lat[s, e, 0, e] <= env.scenario.deadline_ms
    acc = env.outcomes.accuracy[:, 0]
    feasible = [k for k in range(env.n_exits) if (lat[:, k, 0, k] <= 100.0).any()]
    assert acc[e] == max(acc[k] for k in feasible)
    # An impossible deadline: the fastest action instead.
    env = EdgeCloudEnv(bundle=profiled_bundle, deadline_ms=0.01, timeout_ms=1000.0)
    env.reset(seed=0)
    s, e, _ = Edgent().act(np.zeros(1), env)
    lat = planned_latency(env)
    diag = np.stack([lat[:, k, 0, k] for k in range(env.n_exits)], axis=1)
    assert lat[s, e, 0, e] == diag.min()


def test_edgent_last_plans_at_the_newest_sample_the_baseline_at_the_harmonic_mean(
    profiled_bundle: Bundle,
) -> None:
    """A link that just recovered: three slow samples, then a fast one."""

    def env_with(samples: list[float]) -> EdgeCloudEnv:
        env = EdgeCloudEnv(bundle=profiled_bundle, edge_slowdown=100.0)
        env.reset(seed=0)
        env._meas.clear()
        env._meas.extend((float(i), mbps) for i, mbps in enumerate(samples))
        return env

    recovered, fast = env_with([0.01, 0.01, 0.01, 50.0]), env_with([50.0] * 4)
    assert recovered.last_mbps == 50.0 and recovered.estimate_mbps < 0.02
    baseline, teacher = Edgent().act(np.zeros(1), recovered), make_teacher("edgent-last")
    assert teacher.name == "edgent-last" and make_baseline("edgent").name == "edgent"
    assert baseline[0] > 0  # the slow estimate keeps the input on the edge
    assert list(teacher.act(np.zeros(1), recovered)) == list(Edgent().act(np.zeros(1), fast))
    assert teacher.act(np.zeros(1), recovered)[0] == 0  # the newest sample says: offload
    with pytest.raises(ValueError, match="estimate"):
        Edgent(estimate="mean")
    with pytest.raises(ValueError, match="teacher"):
        make_teacher("sage")


def test_spinn_uses_its_threshold_and_random_is_seeded(profiled_bundle: Bundle) -> None:
    env = EdgeCloudEnv(bundle=profiled_bundle)
    env.reset(seed=0)
    a = Spinn(tau=0.9).act(np.zeros(1), env)
    assert env.outcomes.taus[a[2]] == 0.9 and a[1] == env.n_exits - 1
    with pytest.raises(ValueError, match="tau"):
        Spinn(tau=0.5)
    r1, r2 = RandomPolicy(5), RandomPolicy(5)
    first = [r1.act(None, env).tolist() for _ in range(5)]
    assert first == [r2.act(None, env).tolist() for _ in range(5)]


def test_oracle_sample_picks_a_right_answer_when_one_is_in_time(profiled_bundle: Bundle) -> None:
    env = EdgeCloudEnv(bundle=profiled_bundle, traces=[Trace("c_x.csv", np.full(30, 50.0))])
    env.reset(seed=2)
    hits = 0
    for _ in range(50):
        i = env.current_sample
        can = bool(env.outcomes.correct[:, :, i].any())
        _, _, _, _, info = env.step(OracleSample().act(np.zeros(1), env))
        assert info["timely"] == can  # a fat link: every exit is in time
        hits += info["timely"]
    assert hits > 0


def test_oracle_uses_the_level_not_the_sample(profiled_bundle: Bundle) -> None:
    env = EdgeCloudEnv(bundle=profiled_bundle)
    env.reset(seed=4)
    oracle = Oracle()
    # Same level, same time and load: the oracle's choice cannot depend on the sample.
    a = oracle.act(np.zeros(1), env)
    lv = env.current_level
    others = np.flatnonzero(profiled_bundle.calibration.difficulty == lv)[:5]
    for i in others:
        env._samples[env._step] = int(i)
        assert np.array_equal(oracle.act(np.zeros(1), env), a)


def test_unknown_baseline_is_named() -> None:
    with pytest.raises(ValueError, match="oracle"):
        make_baseline("orakel")
    assert isinstance(make_baseline("edge_only"), EdgeOnly)
    assert isinstance(make_baseline("cloud_only"), CloudOnly)
