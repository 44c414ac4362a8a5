"""Unit tests of the runtime's parts: bandwidth estimator, link emulation, input sources."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pytest

from edgeml.bundle import Bundle
from edgeml.data.preprocessing import Preprocessing
from edgeml.rl_agent.traces import Trace
from edgeml.runtime.estimator import BandwidthEstimator, EstimatorConfig
from edgeml.runtime.link import LinkTimeout, TraceLink
from edgeml.runtime.sources import array_items, open_source, paced


class FakeClock:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        self.t += max(dt, 0.0)


# ---------------------------------------------------------------------------- estimator


def test_estimator_rtt_from_small_transfers_and_rate_from_large() -> None:
    clock = FakeClock()
    est = BandwidthEstimator(EstimatorConfig(prior_rtt_ms=100.0), clock=clock)
    assert est.mbps() is None and est.age_s() == math.inf and est.should_probe()
    assert est.observe(200, 0.040) is None  # a ping: RTT only
    assert est.rtt_ms() == pytest.approx(40.0)
    # 100 kB in 40 ms RTT + 80 ms serialization = 10 Mbps
    s = est.observe(100_000, 0.120)
    assert s is not None and s.mbps == pytest.approx(10.0)
    assert est.mbps() == pytest.approx(10.0)


def test_estimator_harmonic_mean_resists_a_fast_outlier() -> None:
    clock = FakeClock()
    est = BandwidthEstimator(EstimatorConfig(window=5, prior_rtt_ms=0.0), clock=clock)
    for _ in range(4):
        est.observe(125_000, 0.100)  # 10 Mbps
    est.observe(125_000, 0.001)  # a 1000 Mbps fluke
    arithmetic = (4 * 10 + 1000) / 5
    assert est.mbps() < 13 < arithmetic
    est.observe_timeout(125_000, 1.0)  # at most 1 Mbps: pulls the estimate down at once
    assert est.mbps() < 5


def test_estimator_window_forgets_and_probe_timer() -> None:
    clock = FakeClock()
    est = BandwidthEstimator(EstimatorConfig(window=2, prior_rtt_ms=0.0, probe_after_s=1.0), clock)
    est.observe(125_000, 1.0)  # 1 Mbps
    est.observe(125_000, 0.1)  # 10
    est.observe(125_000, 0.1)  # 10: the 1 Mbps sample left the window
    assert est.mbps() == pytest.approx(10.0)
    assert not est.should_probe()
    clock.sleep(0.5)
    assert est.age_s() == pytest.approx(0.5) and not est.should_probe()
    clock.sleep(0.6)
    assert est.should_probe()
    est.mark_probe()
    assert not est.should_probe()


# ---------------------------------------------------------------------------- link


def test_link_paces_by_the_trace_and_queues_transfers() -> None:
    clock = FakeClock()
    trace = Trace("t_1.csv", np.array([8.0, 0.0, 80.0]))  # 1 MB/s, outage, 10 MB/s
    link = TraceLink(trace, rtt_ms=40.0, clock=clock, sleep=clock.sleep)
    t0 = clock()
    up = link.send(500_000)  # 0.5 s at 1 MB/s, then half the RTT
    assert up.serialization_s == pytest.approx(0.5)
    assert clock() - t0 == pytest.approx(0.52)
    # 1 MB from t=0.52: 0.48 MB in the rest of second 0, outage in second 1, 0.52 MB at 10 MB/s
    up = link.send(1_000_000)
    assert up.serialization_s == pytest.approx(0.48 + 1.0 + 0.052)
    link.receive()
    assert clock() - t0 == pytest.approx(0.52 + 1.532 + 0.04)


def test_an_anchored_link_restarts_the_trace_at_its_offset() -> None:
    """What crossed the link before the anchor (a daemon's warm-up probes) does not move
    where the inputs meet the trace: at the anchor it is back at ``offset_s``."""
    clock = FakeClock()
    trace = Trace("t_1.csv", np.array([8.0, 8.0, 8.0, 80.0, 80.0]))
    link = TraceLink(trace, rtt_ms=0.0, offset_s=1.0, clock=clock, sleep=clock.sleep)
    clock.sleep(2.5)
    assert link.trace_time() == pytest.approx(3.5)
    assert link.mbps_now() == 80.0
    link.anchor()
    assert link.trace_time() == pytest.approx(1.0)
    assert link.send(100_000).serialization_s == pytest.approx(0.1)  # at 8 Mbps again


def test_link_timeout_gives_up_at_the_deadline() -> None:
    clock = FakeClock()
    link = TraceLink(Trace("t_1.csv", np.array([0.8])), rtt_ms=10.0, clock=clock, sleep=clock.sleep)
    deadline = clock() + 0.2
    with pytest.raises(LinkTimeout):
        link.send(100_000, deadline=deadline)  # needs 1 s
    assert clock() == pytest.approx(deadline)
    # the link was busy only until the deadline: a tiny transfer now goes at once
    assert link.send(10).queued_s == pytest.approx(0.0)


def test_link_without_trace_adds_only_rtt() -> None:
    clock = FakeClock()
    link = TraceLink(None, rtt_ms=30.0, clock=clock, sleep=clock.sleep)
    t0 = clock()
    link.send(10_000_000)
    link.receive()
    assert clock() - t0 == pytest.approx(0.030)
    assert link.mbps_now() == math.inf


# ---------------------------------------------------------------------------- sources


def test_array_source_takes_uint8_and_refuses_other_sizes_and_colours(tmp_path) -> None:
    grey = np.zeros((2, 28, 28), dtype=np.uint8)
    grey[1] = 255
    items = list(array_items(grey, (1, 28, 28), labels=[3, 4], loop=False))
    assert [i.label for i in items] == [3, 4]
    assert items[0].x.shape == (1, 1, 28, 28) and items[0].x.dtype == np.float32
    assert items[1].x.mean() > items[0].x.mean()
    np.savez(tmp_path / "in.npz", x=grey, y=np.array([7, 8]))
    src = open_source(str(tmp_path / "in.npz"), (1, 28, 28), loop=False)
    assert [i.label for i in src] == [7, 8]
    for wrong in (np.zeros((2, 5, 7)), np.zeros((2, 28, 28, 3), np.uint8)):  # size, colour
        with pytest.raises(ValueError, match=r"does not match the bundle's input \(1, 28, 28\)"):
            list(array_items(wrong, (1, 28, 28), loop=False))
    red = np.zeros((1, 8, 8, 3), np.uint8)
    red[..., 0] = 255
    rgb = Preprocessing("RGB", (8, 8), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    (item,) = array_items(red, (3, 8, 8), loop=False, prep=rgb)  # an RGB bundle keeps colour
    assert item.x.shape == (1, 3, 8, 8) and item.x[0, 0].mean() > item.x[0, 1].mean()
    with pytest.raises(ValueError, match="must say how to scale"):  # no silent default
        list(array_items(red, (3, 8, 8), loop=False))
    with pytest.raises(ValueError, match="source"):
        open_source("nonsense", (1, 28, 28))
    with pytest.raises(ValueError, match="shape"):
        open_source("scenes", (1, 28, 28))


def test_directory_source_reads_png_and_npy(tmp_path) -> None:
    from PIL import Image

    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(tmp_path / "a.png")
    np.save(tmp_path / "b.npy", np.zeros((28, 28), np.float32))
    items = list(open_source(str(tmp_path), (1, 28, 28), loop=False))
    assert [i.name for i in items] == ["a.png", "b.npy"]
    assert items[0].x.mean() > items[1].x.mean()


def test_scene_source_levels_come_in_runs() -> None:
    src = open_source("scenes:3", (1, 96, 96))
    items = [next(src) for _ in range(40)]
    levels = [i.level for i in items]
    assert set(levels) <= set(range(5))
    changes = sum(a != b for a, b in zip(levels, levels[1:], strict=False))
    assert changes < 20  # regimes: neighbouring frames share a level far more than chance
    again = open_source("scenes:3", (1, 96, 96))
    assert np.array_equal(next(again).x, items[0].x)


def test_paced_rate_stop_and_max_inputs() -> None:
    items = array_items(np.zeros((3, 28, 28)), (1, 28, 28))
    got = list(paced(items, rate=200.0, max_inputs=5))
    arrivals = [a for _, a in got]
    assert len(got) == 5
    assert np.allclose(np.diff(arrivals), 0.005, atol=0.004)
    stop = threading.Event()
    stop.set()
    assert list(paced(array_items(np.zeros((3, 28, 28)), (1, 28, 28)), 1.0, stop)) == []


# ---------------------------------------------------------------------------- observation


def test_knowledge_fed_like_the_daemon_gives_the_env_observation(profiled_bundle) -> None:
    """The daemon feeds a fresh :class:`EdgeKnowledge` from its own measurements each input;
    fed the env's numbers that way, it builds the env's vector bit for bit."""
    from edgeml.rl_agent.env import EdgeCloudEnv

    trace = Trace("fam_1.csv", np.array([2.0, 0.5, 8.0, 0.0, 3.0]))
    env = EdgeCloudEnv(bundle=profiled_bundle, traces=[trace], episode_steps=50)
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(12):
        obs, *_ = env.step(rng.integers(0, env.action_space.nvec))
        k = env.know
        st = env.world.knowledge()
        st.set_measurements(list(k.meas))
        for lat in reversed(k.lat):
            st.record_answer(lat, k.last_conf, k.last_exit, bool(k.last_off))
        st.now_s, st.feature, st.edge_load = k.now_s, k.feature, k.edge_load
        st.cloud_wait_ms, st.cloud_load = k.cloud_wait_ms, k.cloud_load
        assert st.observation().dtype == obs.dtype == np.float32
        np.testing.assert_array_equal(st.observation(), obs)
        assert st.estimate_mbps == env.estimate_mbps


def test_observation_builder_pinned_to_the_trained_layout() -> None:
    """The entries, order, scaling and caps the shipped policy was trained on."""
    from edgeml.decision.observation import MIN_MBPS, build_observation, obs_size

    meas = [(1.0, 100.0), (4.0, 0.0)]  # oldest first; the outage is floored
    obs = build_observation(
        meas,
        5.0,
        3,
        40.0,
        80.0,
        [800.0, 40.0, 0.0],
        0.9,
        1,
        3,
        1.0,
        -7.0,
        6.0,
        30.0,
        8.0,
        100.0,
    )  # history 3: one slot padded
    est = 2 / (1 / 100.0 + 1 / MIN_MBPS)
    want = [
        math.log10(MIN_MBPS) / 2, 1.0, math.log10(est) / 2,  # newest first, then padding
        0.1, 0.4, 3.0,  # ages / 10, padding at the cap
        math.log10(est) / 2, 0.5,  # estimate, RTT / deadline
        5.0, 0.5, 0.0,  # latencies / deadline, capped at 5
        0.9, 0.5, 1.0,  # confidence, exit / (E - 1), offloaded
        -5.0, 5.0, 0.8,  # feature z (clipped), load (capped), deadline / 100
        0.375, 0.5,  # cloud extra wait / deadline, cloud load / 16
        1.0,  # log10(edge slowdown 100) / 2
    ]  # fmt: skip
    assert obs.shape == (obs_size(3),) and obs.dtype == np.float32
    np.testing.assert_array_equal(obs, np.asarray(want, dtype=np.float32))


def test_speed_tracker_weighs_inputs_by_their_work(profiled_bundle) -> None:
    from edgeml.partition.cost import CostModel
    from edgeml.runtime.edge import LATENCY_KEYS, SpeedTracker

    cost = CostModel.from_bundle(profiled_bundle, edge_slowdown=12.0)
    tr = SpeedTracker(cost, "int8")
    assert tr.edge == tr.cloud == 1.0
    n, last = cost.num_blocks, cost.num_exits - 1
    full = cost.breakdown(n, last, last, True, "int8").edge_ms / 12.0
    lat = dict.fromkeys(LATENCY_KEYS, 0.0)
    for _ in range(20):  # the whole net on the edge, 1.5x slower than profiled
        tr.update(n, last, 1.0, last, {**lat, "edge_compute": 1.5 * full})
    assert tr.edge == pytest.approx(1.5, rel=1e-6)
    for _ in range(200):  # encode-only inputs (split 0), 50x their tiny profiled time
        enc = cost.breakdown(0, last, last, True, "int8").encode_ms / 12.0
        tr.update(0, last, 1.0, last, {**lat, "encode": 50 * enc, "cloud_compute": 1.0})
    assert tr.edge == pytest.approx(1.5, rel=1e-6)  # no block ran on the edge: no evidence
    b = cost.breakdown(0, last, last, True, "int8")
    assert tr.cloud == pytest.approx(1.0 / (b.cloud_ms + b.decode_ms), rel=1e-6)


@pytest.mark.parametrize("pace", ["measured", "profile"])
def test_the_pacer_makes_the_edge_as_slow_as_emulated(profiled_bundle, pace: str) -> None:
    import time

    from edgeml.partition.cost import CostModel
    from edgeml.runtime.speed import Pacer

    cost = CostModel.from_bundle(profiled_bundle, edge_slowdown=3.0)
    pacer = Pacer(cost, "int8", pace)
    n, last = cost.num_blocks, cost.num_exits - 1
    local = cost.breakdown(n, last, last, True, "int8").edge_ms  # 3 x the profile
    sent = cost.breakdown(1, last, last, True, "int8")
    fallback = cost.local_finish_ms(1, last)
    compute = 0.2 * local / 3.0 / 1e3  # this machine ran it 5x faster than the profile
    t0 = time.perf_counter()
    slept = [
        pacer.after_run(compute, n, last, last, 1.0),
        pacer.after_run(compute, 1, last, None, 1.0),
        pacer.after_fallback(compute, 1, last),
    ]
    assert time.perf_counter() - t0 >= sum(slept)
    if pace == "measured":  # slowdown - 1 times what this machine took, whatever it ran
        assert slept == pytest.approx([2.0 * compute] * 3)
        assert pacer.real_load
    else:  # up to the emulated edge's time of that work
        want = [local, sent.edge_ms + sent.encode_ms, fallback]
        assert slept == pytest.approx([w / 1e3 - compute for w in want])
        assert pacer.after_run(1.0, n, last, last, 1.0) == 0.0  # an overrun is not hidden
        assert not pacer.real_load
    with pytest.raises(ValueError, match="pace: 'fast'; allowed: measured, profile"):
        Pacer(cost, "int8", "fast")


def test_live_predictions_use_the_runtime_the_edge_ran() -> None:
    """A logged input is predicted with the cost model of the runtime it ran on; a cost
    model for another runtime is refused, not silently off by the runtimes' ratio."""
    from edgeml.assets import default_bundle
    from edgeml.decision.policies import World
    from edgeml.decision.scenario import Scenario
    from edgeml.partition.cost import CostModel
    from edgeml.rl_agent.traces import load_traces
    from edgeml.runtime.compare import predict_latency_ms

    bundle = Bundle.load(default_bundle(), weights=False)
    cost = World.from_bundle(bundle, Scenario()).cost
    assert cost.edge_runtime == "onnx/fp32"
    last = bundle.manifest.blocks
    rec = {"action": {"split": last, "exit": 3, "tau": 1.0, "codec": "int8"}, "where": "edge",
           "answer": {"exit_index": 3}, "edge_load": 0.0, "deadline_ms": 100.0,
           "fallback_reason": None, "edge_runtime": "onnx/fp32"}  # fmt: skip
    trace = load_traces()[0]
    want = cost.breakdown(last, 3, 3, True, "int8").edge_ms
    assert predict_latency_ms(rec, cost, trace, 0.0, 40.0) == pytest.approx(want)
    torch_cost = CostModel.from_bundle(bundle, edge_slowdown=24.0)
    assert torch_cost.breakdown(last, 3, 3, True, "int8").edge_ms > 1.3 * want
    with pytest.raises(ValueError, match="ran on onnx/fp32, the cost model plans torch/fp32"):
        predict_latency_ms(rec, torch_cost, trace, 0.0, 40.0)


def test_live_prediction_of_an_offload_and_of_its_fallback() -> None:
    """What the demo's and emulate's measured/simulated ratio divides by: an offload is
    edge + encode + the trace's transfer time + RTT + decode + cloud; one the daemon gave
    up on is its give-up time plus the local exit it then ran (the outcome rule's)."""
    from edgeml.assets import default_bundle
    from edgeml.decision.outcome import OutcomeRule
    from edgeml.decision.policies import World
    from edgeml.decision.scenario import Scenario
    from edgeml.runtime.compare import predict_latency_ms

    bundle = Bundle.load(default_bundle(), weights=False)
    cost = World.from_bundle(bundle, Scenario()).cost
    rec = {"action": {"split": 2, "exit": 3, "tau": 1.0, "codec": "int8"}, "where": "cloud",
           "answer": {"exit_index": 3}, "edge_load": 0.0, "deadline_ms": 100.0,
           "fallback_reason": None, "edge_runtime": cost.edge_runtime}  # fmt: skip
    b = cost.breakdown(2, 3, 3, True, "int8")
    fast = Trace("fam_fast", np.full(60, 80.0))  # 80 Mbps: 10 bytes per microsecond
    want = b.edge_ms + b.encode_ms + b.bytes / 1e4 + 40.0 + b.decode_ms + b.cloud_ms
    assert want < 100.0  # answered in time: no fallback
    assert predict_latency_ms(rec, cost, fast, 0.0, 40.0) == pytest.approx(want, rel=1e-6)
    slow = Trace("fam_slow", np.full(60, 0.01))  # the offload cannot make the deadline
    rule = OutcomeRule(cost, Scenario(deadline_ms=100.0))
    give_up = rule.give_up_ms(2, 3, 0.0)
    k = rule.fallback_exit(2, 3, give_up, 0.0)
    late = predict_latency_ms(rec, cost, slow, 0.0, 40.0)
    assert late == pytest.approx(give_up + cost.local_finish_ms(2, k, 0.0))
    assert late < 1e3  # not the 88 s the transfer would take at 10 kbps


def test_live_prediction_takes_this_machines_cloud_and_the_edges_pace() -> None:
    """The live cloud is this machine: its measured slowdown scales the cloud's compute in
    the prediction, not the edge's. A calibrated prediction takes the edge speed the daemon
    measured only where that speed paced it: a profile-paced edge ran at its profile."""
    from edgeml.assets import default_bundle
    from edgeml.decision.policies import World
    from edgeml.decision.scenario import Scenario
    from edgeml.runtime.compare import predict_latency_ms

    bundle = Bundle.load(default_bundle(), weights=False)
    cost = World.from_bundle(bundle, Scenario()).cost
    rec = {"action": {"split": 2, "exit": 3, "tau": 1.0, "codec": "int8"}, "where": "cloud",
           "answer": {"exit_index": 3}, "edge_load": 0.0, "deadline_ms": 100.0,
           "fallback_reason": None, "edge_runtime": cost.edge_runtime,
           "edge_speed": 1.5, "cloud_speed": 2.0}  # fmt: skip
    b = cost.breakdown(2, 3, 3, True, "int8")
    fast = Trace("fam_fast", np.full(60, 80.0))
    base = predict_latency_ms(rec, cost, fast, 0.0, 40.0)
    slower = predict_latency_ms(rec, cost, fast, 0.0, 40.0, cloud_slow=2.5)
    assert base is not None and slower is not None
    assert slower - base == pytest.approx(1.5 * (b.decode_ms + b.cloud_ms), rel=1e-6)
    measured = predict_latency_ms(rec, cost, fast, 0.0, 40.0, measured_speed=True)
    profile = predict_latency_ms(rec, cost, fast, 0.0, 40.0, measured_speed=True, pace="profile")
    assert measured is not None and profile is not None
    # the same transfer (the tensor leaves later when the edge is slower; 80 Mbps is flat)
    assert measured - profile == pytest.approx(0.5 * (b.edge_ms + b.encode_ms), rel=1e-6)
    assert profile - base == pytest.approx(b.decode_ms + b.cloud_ms, rel=1e-6)


def test_a_probe_the_link_does_not_carry_is_a_censored_sample(tmp_path: Path) -> None:
    """A probe that times out on the link teaches the edge the probe's bytes over its
    timeout (an upper bound on the rate), as the simulator's edge records it, instead of
    nothing (the estimate would keep the link's last good samples through an outage)."""
    from edgeml.assets import default_bundle
    from edgeml.partition.cost import CostModel
    from edgeml.runtime.cloud_link import CloudLink
    from edgeml.runtime.edge_config import EdgeConfig
    from edgeml.runtime.metrics import EdgeMetrics

    bundle = Bundle.load(default_bundle(), weights=False)
    cost = CostModel.from_bundle(bundle)
    cfg = EdgeConfig(bundle=str(default_bundle()), cloud="127.0.0.1:1", policy="edgent",
                     link_rtt_ms=40.0)  # fmt: skip
    link = CloudLink(cfg, bundle, cost, EdgeMetrics(1.0), history=4)
    try:
        link.link = TraceLink(Trace("out_1.csv", np.zeros(10)), 40.0, sleep=lambda _s: None)
        link.probe_once()
        (sample,) = link.estimator.samples()
        timeout_s = cfg.scenario.probe_timeout_s
        tensor = cost.bytes[cost.codec_index("int8")][cost.probe_split(cfg.probe_bytes)]
        assert sample.censored
        assert sample.mbps * 1e6 * timeout_s / 8 == pytest.approx(tensor, abs=400)
    finally:
        link.close()
