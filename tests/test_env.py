"""EdgeCloud-v0: the env contract (checkers, registration, seeding) and its physics."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

import edgeml.rl_agent  # noqa: F401  (registers the env)
from edgeml.assets import default_bundle
from edgeml.bundle import Bundle
from edgeml.decision.action import TAUS
from edgeml.decision.observation import obs_size
from edgeml.decision.scenario import Scenario
from edgeml.decision.tables import Outcomes
from edgeml.partition.cost import CostModel
from edgeml.rl_agent.dynamics import InputStream, LoadConfig, StreamConfig, background_load
from edgeml.rl_agent.env import ENV_ID, EdgeCloudEnv
from edgeml.rl_agent.traces import Trace
from edgeml.runtime.replay import source_inputs

NO_LOAD = LoadConfig(busy_share=0.0, idle=(0.0, 0.0), jitter=0.0)


def const_trace(mbps: float, seconds: int = 60) -> Trace:
    return Trace("const_x.csv", np.full(seconds, mbps))


def test_gymnasium_and_sb3_checkers_pass(profiled_bundle: Bundle) -> None:
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = EdgeCloudEnv(bundle=profiled_bundle)
    check_env(env, skip_render_check=True)
    sb3_check_env(EdgeCloudEnv(bundle=profiled_bundle), warn=True)


def test_registered_and_made_with_keywords(profiled_bundle: Bundle) -> None:
    assert ENV_ID in gym.registry
    env = gym.make(ENV_ID, bundle=profiled_bundle.path, deadline_ms=80.0)
    assert env.unwrapped.scenario.deadline_ms == 80.0
    obs, _ = env.reset(seed=1)
    assert obs.shape == (obs_size(4),)
    n = profiled_bundle.manifest.blocks
    assert env.action_space.nvec.tolist() == [n + 1, profiled_bundle.manifest.num_exits, len(TAUS)]
    # The module prefix form imports the package itself.
    env2 = gym.make("edgeml.rl_agent:edgeml/EdgeCloud-v0", bundle=profiled_bundle.path)
    assert env2.unwrapped.scenario.bundle == str(profiled_bundle.path)


@pytest.mark.skipif(
    not (default_bundle() / "profile.json").is_file(), reason="default bundle not built yet"
)
def test_make_with_no_arguments_uses_the_shipped_defaults() -> None:
    env = gym.make(ENV_ID)
    env.reset(seed=0)
    _, _, _, _, info = env.step(env.action_space.sample())
    assert {"latency_ms", "timely", "bytes"} <= set(info)


def test_unknown_scenario_parameter_is_named(profiled_bundle: Bundle) -> None:
    with pytest.raises(TypeError, match="deadline"):
        EdgeCloudEnv(bundle=profiled_bundle, deadlin_ms=5)
    with pytest.raises(ValueError, match="grace_ms"):
        Scenario(grace_ms=-1.0)
    with pytest.raises(ValueError, match="codec"):
        EdgeCloudEnv(bundle=profiled_bundle, codec="nope")


def rollout(env: EdgeCloudEnv, seed: int, steps: int) -> tuple[list, list]:
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(123)
    seen, rewards = [obs], []
    for _ in range(steps):
        obs, r, _, trunc, _ = env.step(rng.integers(0, env.action_space.nvec))
        seen.append(obs)
        rewards.append(r)
        if trunc:
            break
    return seen, rewards


def test_same_seed_same_episode(profiled_bundle: Bundle) -> None:
    env = EdgeCloudEnv(bundle=profiled_bundle)
    a_obs, a_rew = rollout(env, 7, 100)
    b_obs, b_rew = rollout(EdgeCloudEnv(bundle=profiled_bundle), 7, 100)
    c_obs, _ = rollout(env, 8, 100)
    assert np.array_equal(np.stack(a_obs), np.stack(b_obs)) and a_rew == b_rew
    assert not np.array_equal(np.stack(a_obs), np.stack(c_obs))


def test_latency_is_the_cost_models_over_a_constant_link(profiled_bundle: Bundle) -> None:
    load = LoadConfig(busy_share=1.0, busy=(0.5, 0.5), jitter=0.0)
    env = EdgeCloudEnv(bundle=profiled_bundle, traces=[const_trace(3.0)], load=load)
    cost = CostModel.from_bundle(profiled_bundle)
    out = Outcomes.from_calibration(profiled_bundle.calibration)
    env.reset(seed=0)
    for action in [(0, 2, 0), (1, 2, 4), (2, 1, 0), (3, 2, 0), (1, 0, 0)]:
        i = env.current_sample
        _, _, _, _, info = env.step(np.array(action))
        s, e, t = action
        j = int(out.stop[e, t, i])
        want = cost.latency_ms(s, e, j, TAUS[t] >= 1.0, "int8", 3.0, 40.0, edge_load=0.5)
        assert info["stop_exit"] == j
        assert info["latency_ms"] == pytest.approx(want, rel=1e-9)
        assert info["offloaded"] == (profiled_bundle.manifest.exits[j] > s)
        assert info["correct"] == bool(out.correct[e, t, i])


def test_reward_is_timely_correctness_minus_latency_term(profiled_bundle: Bundle) -> None:
    env = EdgeCloudEnv(bundle=profiled_bundle, traces=[const_trace(5.0)], latency_weight=0.1)
    env.reset(seed=3)
    for _ in range(30):
        _, r, _, _, info = env.step(env.action_space.sample())
        lat = info["latency_ms"]
        want = float(info["correct"] and lat <= 100.0) - 0.1 * min(lat / 100.0, 2.0)
        assert r == pytest.approx(want)
        assert info["timely"] == (info["correct"] and lat <= 100.0)


def test_expected_reward_has_the_same_mean_and_less_noise(profiled_bundle: Bundle) -> None:
    runs = {}
    for mode in ("outcome", "expected"):
        env = EdgeCloudEnv(bundle=profiled_bundle, reward=mode, episode_steps=2000)
        runs[mode] = rollout(env, 11, 2000)
    assert np.array_equal(np.stack(runs["outcome"][0]), np.stack(runs["expected"][0]))
    out, exp = np.array(runs["outcome"][1]), np.array(runs["expected"][1])
    assert abs(out.mean() - exp.mean()) < 0.03
    assert exp.std() < 0.9 * out.std()
    assert not np.array_equal(out, exp)


def test_inputs_come_on_the_frame_grid_and_a_late_answer_does_not_shift_it(
    profiled_bundle: Bundle,
) -> None:
    """As the daemon's paced source: frames every 1 / input_rate; after a late answer the
    edge takes the newest frame at once, and the input after it comes on the grid again
    (so edges sharing a cloud keep their phases)."""
    env = EdgeCloudEnv(bundle=profiled_bundle, traces=[const_trace(0.05)], load=NO_LOAD)
    env.reset(seed=0)
    local, offload = np.array([env.n_splits - 1, 0, 0]), np.array([0, env.n_exits - 1, 0])
    _, _, _, _, info = env.step(local)  # fast, on the edge
    assert info["latency_ms"] < 100 and env.time_s == pytest.approx(0.1)
    _, _, _, _, info = env.step(offload)  # slow link: late
    late = info["latency_ms"]
    assert late > 100 and env.time_s == pytest.approx(0.1 + late / 1e3)
    _, _, _, _, info = env.step(local)
    assert info["latency_ms"] < 100
    assert env.time_s == pytest.approx(0.1 * (math.floor((0.1 + late / 1e3) / 0.1) + 1))


def test_a_call_overhead_lengthens_offloads_and_what_the_edge_measures(
    profiled_bundle: Bundle,
) -> None:
    """``call_overhead_ms``: each offload takes a drawn overhead longer (exponential, the
    scenario's mean), a local answer does not, and the edge's throughput sample counts the
    same overhead (a live edge's estimate subtracts only its ping's RTT)."""
    mbps, mean, n = 50.0, 3.0, 200
    runs = {}
    for o in (0.0, mean):
        env = EdgeCloudEnv(bundle=profiled_bundle, traces=[const_trace(mbps, 600)],
                           load=NO_LOAD, call_overhead_ms=o, probe_interval_s=1e4)  # fmt: skip
        env.reset(seed=0)
        lat, newest = [], []
        for _ in range(n):
            obs, _, _, _, sent = env.step(np.array([0, env.n_exits - 1, 0]))
            assert sent["offloaded"]
            lat.append(sent["latency_ms"])
            newest.append(10 ** (2 * float(obs[0])))  # the newest measurement slot
        local = env.step(np.array([env.n_splits - 1, 0, 0]))[4]
        runs[o] = np.array(lat), np.array(newest), local["latency_ms"], sent["bytes"]
    lat0, meas0, local0, nbytes = runs[0.0]
    lat, meas, local, _ = runs[mean]
    drawn = lat - lat0
    assert local == pytest.approx(local0, abs=1e-9)
    assert np.allclose(meas0, mbps, rtol=1e-4)
    d_ms = nbytes * 8 / (mbps * 1e6) * 1e3
    # the overhead each offload took is the one its measurement counted (the next step's obs)
    assert np.allclose(nbytes * 8 / (meas[:-1] * 1e6) * 1e3 - d_ms, drawn[:-1], atol=1e-3)
    assert drawn.min() >= 0 and drawn.mean() == pytest.approx(mean, rel=0.25)
    assert np.percentile(drawn, 90) > 1.8 * mean  # spread, not a constant


def test_an_offload_without_a_reply_teaches_the_edge_only_the_bytes_over_its_wait(
    profiled_bundle: Bundle,
) -> None:
    """As the daemon measures: an upload answered by the give-up time is a throughput
    sample; one the cloud did not answer in time (here a cloud 1000x too slow) is only the
    bytes over the time waited, however early the upload had finished."""
    mbps, seen = 50.0, {}
    for speedup in (1.0, 0.001):
        env = EdgeCloudEnv(bundle=profiled_bundle, traces=[const_trace(mbps, 600)],
                           load=NO_LOAD, probe_interval_s=1e4, grace_ms=0.0,
                           cloud_speedup=speedup)  # fmt: skip
        env.reset(seed=0)
        obs, _, _, _, info = env.step(np.array([0, env.n_exits - 1, 0]))
        seen[speedup] = info, 10 ** (2 * float(obs[0]))  # the newest measurement slot
    (fast, got_fast), (slow, got_slow) = seen[1.0], seen[0.001]
    assert fast["where"] == "cloud" and got_fast == pytest.approx(mbps, rel=1e-4)
    assert slow["where"] == "fallback" and slow["bytes"] == fast["bytes"]
    pre_ms = env.cost.breakdown(0, env.n_exits - 1, env.n_exits - 1, True, "int8").edge_ms
    pre_ms += env.cost.breakdown(0, env.n_exits - 1, env.n_exits - 1, True, "int8").encode_ms
    waited_s = (100.0 - pre_ms) / 1000.0
    assert got_slow == pytest.approx(slow["bytes"] * 8 / waited_s / 1e6, rel=1e-3)
    assert got_slow < mbps / 10


def test_an_edge_that_stays_local_probes_as_the_daemons_prober_does(
    profiled_bundle: Bundle,
) -> None:
    """A probe starts once nothing was measured for ``probe_interval_s`` since the newest
    measurement (the daemon's ``should_probe``), which comes with the probe's reply: so the
    probes are one interval plus one probe's round trip apart (not two intervals, as a fixed
    grid would skip every other slot), and each sends the daemon's probe tensor: the int8
    cut closest to ``probe_bytes``, not ``probe_bytes`` itself."""
    mbps = 0.1  # a probe takes ~0.4 s here: long enough to tell the sizes apart
    env = EdgeCloudEnv(bundle=profiled_bundle, traces=[const_trace(mbps, 600)], load=NO_LOAD,
                       probe_interval_s=1.0)  # fmt: skip
    env.reset(seed=0)
    local = np.array([env.n_splits - 1, 0, 0])
    ends = [t for t, _ in env.know.meas]
    for _ in range(100):  # 10 s on the edge
        env.step(local)
        ends += [t for t, _ in env.know.meas if t > ends[-1]]
    nbytes = env.cost.probe_bytes(env.scenario.probe_bytes)
    cost = env.cost
    assert nbytes == cost.bytes[cost.codec_index("int8")][cost.probe_split(4000.0)] != 4000.0
    last = env.n_exits - 1
    cloud = cost.breakdown(env.probe_split, last, last, True, "int8")
    far_ms = env.scenario.rtt_ms + cloud.decode_ms + cloud.cloud_ms
    trip = nbytes * 8 / (mbps * 1e6) + far_ms / 1e3
    gaps = np.diff(ends)
    assert len(gaps) >= 9 and np.allclose(gaps, 1.0 + trip, atol=1e-6)


def test_observation_holds_measured_not_true_bandwidth(profiled_bundle: Bundle) -> None:
    # 10 Mbps for 50 s, then 0.5 Mbps; no probes after the start: the edge cannot know.
    trace = Trace("step_x.csv", np.array([10.0] * 50 + [0.5] * 50))
    env = EdgeCloudEnv(bundle=profiled_bundle, traces=[trace], probe_interval_s=1e4,
                       load=NO_LOAD)  # fmt: skip
    obs, info = env.reset(seed=0, options={"start_s": 49.0})
    assert info["estimate_mbps"] == pytest.approx(10.0)
    edge = np.array([env.n_splits - 1, env.n_exits - 1, 0])
    for _ in range(20):  # 2 s on the edge: the true rate drops to 0.5 Mbps meanwhile
        obs, _, _, _, info = env.step(edge)
    assert info["bandwidth_mbps"] == 0.5
    assert obs[8] == pytest.approx(np.log10(10.0) / 2)  # estimate slot (history 4)
    obs, _, _, _, info = env.step(np.array([0, env.n_exits - 1, 0]))  # one offload
    assert info["bytes"] > 0
    assert obs[0] == pytest.approx(np.log10(0.5) / 2, abs=1e-6)  # newest measurement
    assert obs[4] < 0.05  # and it is fresh
    assert env.estimate_mbps < 2.0


def test_an_offload_lost_in_an_outage_is_answered_locally_as_the_daemon_does(
    profiled_bundle: Bundle,
) -> None:
    """The outcome rule: wait until deadline + grace, then go on locally from the split to
    the shallowest exit past it (the deadline has passed); the answer is real, and late."""
    trace = Trace("dead_x.csv", np.array([0.0] * 30 + [5.0] * 30))
    env = EdgeCloudEnv(bundle=profiled_bundle, traces=[trace], grace_ms=50.0, load=NO_LOAD)
    env.reset(seed=0, options={"start_s": 1.0})
    i = env.current_sample
    _, r, _, _, info = env.step(np.array([0, env.n_exits - 1, 0]))
    cost = env.cost
    assert info["where"] == "fallback" and info["stop_exit"] == 0  # shallowest exit past 0
    assert info["latency_ms"] == pytest.approx(150.0 + cost.local_finish_ms(0, 0))
    assert info["correct"] == bool(env.outcomes.correct[0, 0, i]) and not info["timely"]
    assert info["bytes"] > 0  # the tensor was sent (and lost)
    assert r == pytest.approx(-env.scenario.latency_weight * min(info["latency_ms"] / 100.0, 2.0))
    _, _, _, _, info = env.step(np.array([env.n_splits - 1, env.n_exits - 1, 0]))
    assert info["where"] == "edge" and info["bytes"] == 0.0


def test_episode_truncates(profiled_bundle: Bundle) -> None:
    env = EdgeCloudEnv(bundle=profiled_bundle, episode_steps=5)
    env.reset(seed=0)
    flags = [env.step(env.action_space.sample())[3] for _ in range(5)]
    assert flags == [False] * 4 + [True]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(env.action_space.sample())


def test_input_stream_regimes_dwell_and_match_levels() -> None:
    rng = np.random.default_rng(0)
    difficulty = np.repeat(np.arange(5), 20)
    s = InputStream.generate(difficulty, 20_000, rng, input_rate=10.0,
                             config=StreamConfig(dwell_s=3.0))  # fmt: skip
    assert np.array_equal(difficulty[s.samples], s.levels)
    runs = np.diff(np.flatnonzero(np.diff(s.levels) != 0))
    assert 20 < runs.mean() < 40  # about 3 s of frames at 10/s
    assert set(np.unique(s.levels)) == set(range(5))
    again = InputStream.generate(difficulty, 20_000, np.random.default_rng(0), 10.0,
                                 StreamConfig(dwell_s=3.0))  # fmt: skip
    assert np.array_equal(again.samples, s.samples)


def test_background_load_has_idle_and_busy_regimes() -> None:
    load = background_load(20_000, np.random.default_rng(1), 10.0, LoadConfig(jitter=0.0))
    assert load.min() >= 0.0
    busy = load >= 0.25
    assert 0.15 < busy.mean() < 0.45
    assert math.isclose(np.mean(np.diff(load) == 0), 1 - 1 / 50, abs_tol=0.02)


def test_a_replayed_episode_plays_the_given_frames_with_their_own_outcomes() -> None:
    """``reset(options={"inputs": ...})`` plays a live edge's frames in its order: each
    step's level, difficulty feature, stop exit and correctness are the frame's own (the
    edge runner's on the real scene), not a draw from the bundle's calibration set."""
    bundle = Bundle.load(default_bundle(), weights=False)
    n = 120  # four 3 s regimes of the scene stream at 10/s
    frames = source_inputs(bundle, "scenes:3", n, rate=10.0)
    out = Outcomes.from_calibration(frames)
    env = EdgeCloudEnv(bundle=bundle, traces=[const_trace(50.0)], load=NO_LOAD, episode_steps=n)
    env.reset(seed=0, options={"inputs": frames})
    assert len(set(frames.difficulty.tolist())) > 1  # the frames visit several levels
    for k in range(n):
        assert env.know.feature == pytest.approx(float(frames.feature[k]))
        s, e, t = k % (env.n_splits), k % env.n_exits, k % len(TAUS)
        info = env.step(np.array([s, e, t]))[4]
        assert (info["sample"], info["level"]) == (k, int(frames.difficulty[k]))
        if not info["fallback"]:
            assert info["stop_exit"] == int(out.stop[e, t, k])
            assert info["correct"] == bool(out.correct[e, t, k])
    with pytest.raises(ValueError, match="inputs: 120 replayed, the episode has 121"):
        EdgeCloudEnv(bundle=bundle, episode_steps=n + 1).reset(options={"inputs": frames})
