"""The simulator and the edge daemon decide and score an input with the same rule.

Before: the simulator abandoned a slow offload at ``timeout_ms`` with no answer, while the
daemon waited until deadline + grace and answered locally; the agent never trained on the
fallback that really runs. Now both go through :class:`edgeml.decision.outcome.OutcomeRule`:
on a link that cannot carry the tensor in time, both answer from the same local exit, and
the daemon's measured latency is the simulated give-up time plus the local finish.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from transport_helpers import start_server

from edgeml.bundle import Bundle
from edgeml.decision.action import TAUS, Action
from edgeml.decision.metrics import summarize
from edgeml.decision.scenario import LoadConfig
from edgeml.decision.tables import Outcomes
from edgeml.rl_agent.env import EdgeCloudEnv
from edgeml.rl_agent.traces import Trace
from edgeml.runtime.edge import EdgeConfig, EdgeDaemon
from edgeml.runtime.replay import source_inputs

MBPS = 0.02  # 20 kbit/s: no split's tensor crosses before deadline + grace


@pytest.fixture(scope="module")
def daemon_records(profiled_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> list:
    tmp = tmp_path_factory.mktemp("agree")
    trace = tmp / "slow_1.csv"
    trace.write_text("time_s,mbps\n" + "".join(f"{i},{MBPS}\n" for i in range(60)))
    server = start_server(profiled_bundle)
    log = tmp / "edge.jsonl"
    cfg = EdgeConfig(
        bundle=profiled_bundle.path, cloud=f"127.0.0.1:{server.port}", policy="cloud_only",
        log=log, max_inputs=12, rate=5.0, edge_slowdown=1.0, link_trace=trace,
        link_rtt_ms=10.0, rtt_ms=10.0, grace_ms=30.0, deadline_ms=100.0,
    )  # fmt: skip
    try:
        daemon = EdgeDaemon(cfg, bundle=profiled_bundle)
        assert daemon.check_cloud()
        daemon.run()
    finally:
        server.stop(0)
    return [json.loads(line) for line in Path(log).read_text().splitlines()]


def test_a_starved_offload_falls_back_to_the_same_exit_in_both(
    profiled_bundle: Bundle, daemon_records: list
) -> None:
    env = EdgeCloudEnv(
        bundle=profiled_bundle, traces=[Trace("slow_1.csv", np.full(60, MBPS))],
        edge_slowdown=1.0, rtt_ms=10.0, grace_ms=30.0, deadline_ms=100.0,
    )  # fmt: skip
    env.reset(seed=0)
    last = env.n_exits - 1
    infos = [env.step(np.array([0, last, 0]))[4] for _ in range(12)]
    assert {i["where"] for i in infos} == {"fallback"}
    assert {r["where"] for r in daemon_records} == {"fallback"}
    assert {r["fallback_reason"] for r in daemon_records} == {"deadline"}
    # Past the deadline, both answer from the shallowest exit past the split.
    assert {i["stop_exit"] for i in infos} == {r["answer"]["exit_index"] for r in daemon_records}
    # The daemon's latency is the rule's give-up time plus its local finish (measured).
    rule = env.rule
    for r in daemon_records:
        give_up = rule.give_up_ms(0, last, r["edge_load"])
        lat = r["latency_ms"]
        assert give_up <= lat["total"] <= give_up + lat["fallback_compute"] + 25.0, (give_up, lat)
    # One summarize for both: the same keys, nothing in time, everything sent.
    sim = summarize(
        [
            {"correct": i["correct"], "latency_ms": i["latency_ms"], "bytes": i["bytes"]}
            for i in infos
        ],
        env.scenario,
    )
    live = summarize(
        [{"correct": r["correct"], "latency_ms": r["latency_ms"]["total"], "bytes": r["bytes"]}
         for r in daemon_records],
        env.scenario,
    )  # fmt: skip
    assert set(sim) == set(live)
    assert sim["deadline_hit_rate"] == live["deadline_hit_rate"] == 0.0
    assert sim["timely_accuracy"] == live["timely_accuracy"] == 0.0
    assert sim["bytes_sent_mean"] > 0 and live["bytes_sent_mean"] > 0


class _Sequence:
    """A fixed action sequence (the same one is replayed through the simulator)."""

    name = "sequence"
    history = 4

    def __init__(self, actions: list[Action]) -> None:
        self.actions, self.i = actions, 0

    def reset(self, seed: int | None = None) -> None:
        self.i = 0

    def act(self, view: object) -> Action:
        a = self.actions[self.i % len(self.actions)]
        self.i += 1
        return a


# Per second of the trace: in time over a fat link, in time over a thin one, late but
# answered by the cloud, lost (local fallback), ... (int8 at split 0 is ~1 kB here).
REPLAY_MBPS = [2.0, 0.2, 0.06, 0.01, 2.0, 0.06, 0.2, 0.01, 2.0, 0.2, 0.06, 0.01, 2.0]


def _kind(where: str, latency_ms: float, deadline_ms: float) -> str:
    return f"{where}/{'in time' if latency_ms <= deadline_ms else 'late'}"


SCENARIO = dict(edge_slowdown=1.0, rtt_ms=10.0, grace_ms=100.0, deadline_ms=100.0)
RATE = 4.0


@pytest.fixture(scope="module")
def fixed_action_records(profiled_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> list:
    """One action sequence through the real daemon: a loopback server, a user-space link on
    ``REPLAY_MBPS``, the bundle's default source; its JSONL records."""
    tmp = tmp_path_factory.mktemp("fixed")
    trace_path = tmp / "replay_1.csv"
    trace_path.write_text(
        "time_s,mbps\n" + "".join(f"{i},{v}\n" for i, v in enumerate(REPLAY_MBPS))
    )
    n_blocks, last = profiled_bundle.manifest.blocks, profiled_bundle.manifest.num_exits - 1
    actions = [Action(0, last, 0)] * 4 + [Action(n_blocks, last, 0)]
    server = start_server(profiled_bundle)
    log = tmp / "edge.jsonl"
    cfg = EdgeConfig(
        bundle=profiled_bundle.path, cloud=f"127.0.0.1:{server.port}", policy="edge_only",
        log=log, max_inputs=40, rate=RATE, link_trace=trace_path, link_rtt_ms=10.0,
        probe_after_s=60.0, **SCENARIO,
    )  # fmt: skip
    try:
        daemon = EdgeDaemon(cfg, bundle=profiled_bundle)
        daemon.policy = _Sequence(actions)
        assert daemon.check_cloud()
        daemon.run()
    finally:
        server.stop(0)
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_a_fixed_action_sequence_has_the_same_outcomes_in_the_simulator_and_the_daemon(
    profiled_bundle: Bundle, fixed_action_records: list
) -> None:
    """The daemon's inputs, one by one at the same trace time, through the simulator: the
    outcome kinds (edge / cloud / fallback, in time / late) agree on >= 95% of inputs."""
    recs = fixed_action_records
    env = EdgeCloudEnv(
        bundle=profiled_bundle, traces=[Trace("replay_1.csv", np.asarray(REPLAY_MBPS))],
        load=LoadConfig(busy_share=0.0, idle=(0.0, 0.0), jitter=0.0), **SCENARIO,
    )  # fmt: skip
    kinds, disagree = [], []
    for r in recs:
        a = r["action"]
        env.reset(seed=r["seq"], options={"start_s": r["trace_s"]})
        info = env.step(np.array([a["split"], a["exit"], TAUS.index(a["tau"])]))[4]
        sim = _kind(info["where"], info["latency_ms"], 100.0)
        live = _kind(r["where"], r["latency_ms"]["total"], r["deadline_ms"])
        kinds.append(live)
        if sim != live:
            disagree.append((r["seq"], r["trace_s"], a["split"], sim, live))
    assert len(set(kinds)) >= 4, kinds  # the trace exercises every kind of outcome
    share = 1 - len(disagree) / len(recs)
    print(f"agreement {share:.1%} over {len(recs)} inputs, kinds {sorted(set(kinds))}; {disagree}")
    assert share >= 0.95, f"agreement {share:.0%}; disagreements {disagree}"


def test_the_replayed_inputs_answer_as_the_daemon_answered_its_frames(
    profiled_bundle: Bundle, fixed_action_records: list
) -> None:
    """:func:`source_inputs` of the daemon's source holds, per frame, what the daemon
    answered it: the same stop exit and correctness for the action it took (edge, cloud
    or local fallback), so a simulation replaying it meets the live edge's inputs."""
    recs = fixed_action_records
    frames = source_inputs(profiled_bundle, "fashion-mnist", len(recs), rate=RATE)
    out = Outcomes.from_calibration(frames)
    for r in recs:
        k, a = r["seq"], r["action"]
        if r["where"] == "fallback":
            want = out.answer(r["answer"]["exit_index"], k)[0]
        else:
            t = TAUS.index(a["tau"])
            assert r["answer"]["exit_index"] == out.stop[a["exit"], t, k]
            want = bool(out.correct[a["exit"], t, k])
        assert r["correct"] == want, r
    assert len({r["where"] for r in recs}) == 3  # edge, cloud and fallback answers


def test_the_daemons_inputs_meet_the_trace_from_its_offset(fixed_action_records: list) -> None:
    """The daemon's warm-up probes take link time before its first input; its inputs still
    meet the trace from ``--link-offset-s`` (0 here) on, as a simulated episode's do: each
    input's trace position is its time since the first input."""
    recs = fixed_action_records
    for r in recs:
        assert r["trace_s"] == pytest.approx(r["t_s"], abs=0.02), r
