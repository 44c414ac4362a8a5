"""Fault tolerance with real processes on loopback: a killed cloud, a killed replica.

The edge daemon runs as ``edgeml edge`` and the cloud as ``edgeml serve``, each in its own
process; the cloud is killed with SIGKILL (no drain, as a crash or a pulled cable), and the
edge is stopped with SIGTERM (which must finish the input in flight and exit 0).
"""

from __future__ import annotations

import pytest
from runtime_helpers import Edge, Server, free_port

from edgeml.bundle import Bundle

pytestmark = pytest.mark.slow

RESUME_WITHIN_S = 2.0
DOWN_S = 6.0


def _check_complete(recs: list[dict]) -> None:
    """Zero lost inputs: every sequence number present once, each with an answer."""
    assert [r["seq"] for r in recs] == list(range(len(recs)))
    for r in recs:
        assert isinstance(r["answer"]["class_id"], int)
        assert r["where"] in ("edge", "cloud", "fallback")


def test_cloud_killed_and_restarted(profiled_bundle: Bundle, tmp_path) -> None:
    port = free_port()
    bundle = profiled_bundle.path
    server = Server(bundle, port)
    last_exit = len(profiled_bundle.manifest.exits) - 1
    edge = Edge(
        bundle, f"127.0.0.1:{port}", tmp_path / "edge.jsonl",
        "--policy", f"fixed:0,{last_exit},1.0", "--rate", "20", "--edge-slowdown", "2",
    )  # fmt: skip
    try:
        edge.wait_for(
            lambda rs: sum(r["where"] == "cloud" for r in rs) >= 10, 120, "10 cloud answers"
        )
        t_kill = server.kill()
        # Stay down long enough for gRPC's reconnect backoff to grow to its cap: a channel
        # left to itself (default cap 120 s) would then miss the 2 s resume bound.
        edge.wait_for(
            lambda rs: any(r["t_unix"] > t_kill + DOWN_S and r["fallback"] for r in rs),
            30, "fallbacks after the kill",
        )  # fmt: skip
        server = Server(bundle, port)
        t_ready = server.ready_at
        recs = edge.wait_for(
            lambda rs: bool(rs) and rs[-1]["t_unix"] > t_ready + RESUME_WITHIN_S + 1.0,
            60, "inputs after the restart",
        )  # fmt: skip
    finally:
        out = edge.stop()
        server.stop()
    assert edge.proc.returncode == 0, out
    recs = edge.records()  # after SIGTERM: the input in flight was finished and logged
    _check_complete(recs)
    assert "edge slowdown x2" in out  # the report names the emulated slowdown
    down = [r for r in recs if t_kill < r["t_unix"] < t_ready]
    assert down and all(r["where"] == "fallback" for r in down)
    assert {r["fallback_reason"] for r in down} <= {"unavailable", "deadline", "error"}
    first_cloud = next(r for r in recs if r["t_unix"] >= t_ready and r["where"] == "cloud")
    assert first_cloud["t_unix"] - t_ready <= RESUME_WITHIN_S, (
        f"offloading resumed {first_cloud['t_unix'] - t_ready:.2f} s after the restart"
    )
    later = [r for r in recs if r["t_unix"] > first_cloud["t_unix"] + 0.5]
    assert later and sum(r["where"] == "cloud" for r in later) >= 0.9 * len(later)


def test_two_targets_one_killed(profiled_bundle: Bundle, tmp_path) -> None:
    bundle = profiled_bundle.path
    a = Server(bundle, free_port(), metrics_port=free_port())
    b = Server(bundle, free_port(), metrics_port=free_port())
    last_exit = len(profiled_bundle.manifest.exits) - 1
    edge = Edge(
        bundle, f"127.0.0.1:{a.port},127.0.0.1:{b.port}", tmp_path / "edge.jsonl",
        "--policy", f"fixed:0,{last_exit},1.0", "--rate", "20", "--edge-slowdown", "2",
    )  # fmt: skip
    try:
        edge.wait_for(
            lambda rs: sum(r["where"] == "cloud" for r in rs) >= 20, 120, "20 cloud answers"
        )
        served_a, served_b = a.infer_ok(), b.infer_ok()
        t_kill = a.kill()
        b_at_kill = b.infer_ok()
        recs = edge.wait_for(
            lambda rs: bool(rs) and rs[-1]["t_unix"] > t_kill + 3.0, 30, "inputs after the kill"
        )
        b_after = b.infer_ok()
    finally:
        out = edge.stop()
        b.stop()
        a.stop()
    assert edge.proc.returncode == 0, out
    _check_complete(edge.records())
    assert served_a > 0 and served_b > 0, "round_robin should use both replicas"
    after = [r for r in recs if r["t_unix"] > t_kill + 0.5]
    cloud_after = sum(r["where"] == "cloud" for r in after)
    assert cloud_after >= 0.9 * len(after), "traffic should move to the surviving replica"
    # every cloud answer after the kill came from B (its counter grew by at least as many)
    assert b_after - b_at_kill >= cloud_after
