"""The edge daemon's JSONL log: schema of every line, for edge, cloud and fallback answers."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from runtime_helpers import free_port

from edgeml.bundle import Bundle
from edgeml.runtime.edge import FALLBACK_REASONS, LATENCY_KEYS, LOG_SCHEMA, EdgeConfig, EdgeDaemon
from edgeml.runtime.sources import Item, fashion_items
from edgeml.transport.server import OffloadServer, ServerConfig

NUM = (int, float)
FIELDS: dict[str, tuple[type, ...]] = {
    "schema": (str,), "run": (str,), "seq": (int,), "input": (str,), "t_unix": NUM,
    "t_s": NUM, "wait_ms": NUM, "policy": (str,), "action": (dict,), "where": (str,),
    "error": (type(None),),
    "answer": (dict,), "label": (int, type(None)), "level": (int, type(None)),
    "correct": (bool, type(None)), "offloaded": (bool,), "fallback": (bool,),
    "fallback_reason": (str, type(None)), "bytes": (int,), "deadline_ms": NUM,
    "in_deadline": (bool,), "timely": (bool, type(None)), "latency_ms": (dict,),
    "edge_slowdown": NUM, "edge_runtime": (str,), "cpu_load": NUM, "edge_load": NUM,
    "bw_estimate_mbps": (*NUM, type(None)),
    "rtt_estimate_ms": NUM, "link_mbps": (*NUM, type(None)), "trace_s": (*NUM, type(None)),
    "cloud_batch": (int, type(None)), "cloud_queued": (int, type(None)),
    "cloud_running": (int, type(None)), "edge_speed": NUM, "cloud_speed": NUM,
}  # fmt: skip


def check_record(r: dict, n_splits: int, n_exits: int) -> None:
    assert set(r) == set(FIELDS), set(r) ^ set(FIELDS)
    for key, types in FIELDS.items():
        assert isinstance(r[key], types), (key, r[key])
    assert r["schema"] == LOG_SCHEMA
    # the policy's load: psutil's, or the measured compute slowness when that is higher
    assert abs(r["edge_load"] - max(r["cpu_load"], r["edge_speed"] - 1.0)) < 1e-3, r
    a = r["action"]
    assert set(a) == {"split", "exit", "tau", "codec"}
    assert 0 <= a["split"] < n_splits and 0 <= a["exit"] < n_exits and 0 < a["tau"] <= 1
    ans = r["answer"]
    assert set(ans) == {"class_id", "confidence", "exit_index", "exit_block"}
    assert 0 <= ans["confidence"] <= 1 and 0 <= ans["exit_index"] < n_exits
    assert set(r["latency_ms"]) == set(LATENCY_KEYS)
    assert all(v >= 0 for v in r["latency_ms"].values())
    lat = r["latency_ms"]
    parts = sum(v for k, v in lat.items() if k not in ("total", "uplink"))
    assert parts <= lat["total"] * 1.02 + 0.5  # stages never exceed the end-to-end time
    assert lat["uplink"] <= lat["network"] + 0.5
    assert r["where"] in ("edge", "cloud", "fallback")
    assert r["offloaded"] == (r["where"] == "cloud")
    assert r["fallback"] == (r["where"] == "fallback") == (r["fallback_reason"] is not None)
    if r["fallback"]:
        assert r["fallback_reason"] in FALLBACK_REASONS
    if r["where"] == "edge":
        assert r["bytes"] == 0 and ans["exit_block"] <= a["split"]
    if r["where"] == "cloud":
        assert r["bytes"] > 0 and r["cloud_batch"] >= 1
        # the reply's load: its own batch was running, and nothing can be queued below zero
        assert r["cloud_running"] == r["cloud_batch"] and r["cloud_queued"] >= 0
    else:
        assert r["cloud_batch"] is r["cloud_queued"] is r["cloud_running"] is None
    assert (
        r["in_deadline"] == (lat["total"] <= r["deadline_ms"] + 1e-6)
        or abs(lat["total"] - r["deadline_ms"]) < 1.0
    )
    assert 0.1 <= r["edge_speed"] <= 20 and 0.1 <= r["cloud_speed"] <= 20
    if r["label"] is not None:
        assert r["correct"] == (ans["class_id"] == r["label"])
        assert r["timely"] == (r["correct"] and r["in_deadline"])


def _trace(tmp_path: Path) -> Path:
    p = tmp_path / "fam_1.csv"
    mbps = [5.0, 0.05, 20.0, 0.0, 1.0]  # a slow second and an outage force deadline misses
    p.write_text("time_s,mbps\n" + "".join(f"{i},{v}\n" for i, v in enumerate(mbps)))
    return p


@pytest.fixture(scope="module")
def server(profiled_bundle: Bundle):
    srv = OffloadServer(ServerConfig(bundle=profiled_bundle.path, port=0), profiled_bundle).start()
    yield srv
    srv.stop(0)


def test_log_schema_edge_cloud_and_fallback(profiled_bundle: Bundle, server, tmp_path) -> None:
    log = tmp_path / "edge.jsonl"
    cfg = EdgeConfig(
        bundle=profiled_bundle.path, cloud=f"127.0.0.1:{server.port}", policy="random",
        log=log, max_inputs=60, rate=40.0, edge_slowdown=2.0, link_trace=_trace(tmp_path),
        link_rtt_ms=10.0, metrics_port=0, run="schema",
    )  # fmt: skip
    daemon = EdgeDaemon(cfg, bundle=profiled_bundle)
    assert daemon.check_cloud()
    scraped = None

    def scrape(*_: object) -> None:  # the /metrics endpoint, while the daemon runs
        nonlocal scraped
        url = f"http://127.0.0.1:{daemon.metrics_port}/metrics"
        scraped = urllib.request.urlopen(url, timeout=5).read()

    threading.Timer(0.8, scrape).start()
    summary = daemon.run()
    recs = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(recs) == summary.inputs == 60
    assert [r["seq"] for r in recs] == list(range(60))
    n_splits, n_exits = profiled_bundle.manifest.blocks + 1, len(profiled_bundle.manifest.exits)
    for r in recs:
        check_record(r, n_splits, n_exits)
        assert r["run"] == "schema" and r["edge_slowdown"] == 2.0
        assert r["link_mbps"] is not None and r["trace_s"] is not None
    wheres = {r["where"] for r in recs}
    assert {"edge", "cloud"} <= wheres, wheres
    assert any(r["latency_ms"]["slowdown_sleep"] > 0 for r in recs)
    cloud = [r for r in recs if r["where"] == "cloud"]
    assert all(r["latency_ms"]["uplink"] >= 5.0 for r in cloud)  # half the 10 ms RTT at least
    assert summary.as_dict()["inputs"] == 60 and 0 <= summary.as_dict()["deadline_hit_rate"] <= 1
    assert scraped is not None and b"edgeml_edge_inputs_total" in scraped
    # The replies' load fields reached what the policy observes (one edge: batch 1 each).
    assert daemon.state.cloud_load >= 1 and daemon.state.cloud_wait_ms >= 0.0


def test_log_schema_when_the_cloud_is_unreachable(profiled_bundle: Bundle, tmp_path) -> None:
    log = tmp_path / "edge.jsonl"
    last = len(profiled_bundle.manifest.exits) - 1
    cfg = EdgeConfig(
        bundle=profiled_bundle.path, cloud=f"127.0.0.1:{free_port()}", policy=f"fixed:0,{last},1.0",
        log=log, max_inputs=15, rate=50.0, edge_slowdown=1.0, metrics_port=0,
    )  # fmt: skip
    daemon = EdgeDaemon(cfg, bundle=profiled_bundle)
    assert not daemon.check_cloud(timeout_s=0.5)
    daemon.run()
    recs = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(recs) == 15
    n_splits, n_exits = profiled_bundle.manifest.blocks + 1, len(profiled_bundle.manifest.exits)
    for r in recs:
        check_record(r, n_splits, n_exits)
        assert r["where"] == "fallback"
        # a compute stall on a loaded machine can use up the deadline before sending
        assert r["fallback_reason"] in ("unavailable", "deadline")
    refused = [r for r in recs if r["fallback_reason"] == "unavailable"]
    assert len(refused) >= 12 and all(r["bytes"] == 0 for r in refused)
    # a refused connection fails fast and leaves time for the deepest exit
    deep = [r for r in refused if r["in_deadline"] and r["answer"]["exit_index"] == last]
    assert len(deep) >= 0.8 * len(refused)
    text = generate_latest(daemon.metrics.registry)
    assert b'edgeml_edge_inputs_total{where="fallback"} 15.0' in text
    assert f'edgeml_edge_fallbacks_total{{reason="unavailable"}} {len(refused)}.0'.encode() in text
    assert b"edgeml_edge_slowdown_factor 1.0" in text


def test_probes_keep_the_estimate_fresh_without_offloads(
    profiled_bundle: Bundle, server, tmp_path
) -> None:
    """An edge-only policy never offloads; the background probes still measure the link."""
    log = tmp_path / "edge.jsonl"
    cfg = EdgeConfig(
        bundle=profiled_bundle.path, cloud=f"127.0.0.1:{server.port}", policy="edge_only",
        log=log, max_inputs=50, rate=20.0, edge_slowdown=1.0, link_trace=_trace(tmp_path),
        link_rtt_ms=10.0, probe_after_s=0.5,
    )  # fmt: skip
    daemon = EdgeDaemon(cfg, bundle=profiled_bundle)
    daemon.run()
    recs = [json.loads(line) for line in log.read_text().splitlines()]
    assert all(r["where"] == "edge" and r["bytes"] == 0 for r in recs)
    text = generate_latest(daemon.metrics.registry).decode()
    ok = [ln for ln in text.splitlines() if ln.startswith('edgeml_edge_probes_total{outcome="ok"}')]
    assert ok and float(ok[0].split()[-1]) >= 3, text
    assert recs[-1]["bw_estimate_mbps"] is not None
    assert recs[-1]["rtt_estimate_ms"] == pytest.approx(10.0, abs=8.0)  # the emulated RTT


def test_the_first_input_is_decided_on_a_measured_link(
    profiled_bundle: Bundle, server, tmp_path
) -> None:
    """Start-up probes the link (as the simulator's edge has probed before its first input)
    and times the local exits, so even a policy that never offloads sees a bandwidth, an RTT
    and a measured edge speed at its first input."""
    log = tmp_path / "edge.jsonl"
    trace = tmp_path / "flat_1.csv"
    trace.write_text("time_s,mbps\n0,8.0\n1,8.0\n")
    cfg = EdgeConfig(
        bundle=profiled_bundle.path, cloud=f"127.0.0.1:{server.port}", policy="edge_only",
        log=log, max_inputs=2, rate=20.0, edge_slowdown=1.0, link_trace=trace,
        link_rtt_ms=10.0, probe_after_s=60.0, rtt_ms=80.0,
    )  # fmt: skip
    daemon = EdgeDaemon(cfg, bundle=profiled_bundle)
    assert daemon.check_cloud()
    daemon.run()
    first = json.loads(log.read_text().splitlines()[0])
    assert first["bw_estimate_mbps"] == pytest.approx(8.0, rel=0.5)
    assert first["rtt_estimate_ms"] == pytest.approx(10.0, abs=8.0)  # measured, not the prior 80
    assert first["edge_speed"] != 1.0  # timed at start-up, not the profile taken at its word


def test_a_probe_reply_reports_the_clouds_load_to_the_edge(profiled_bundle: Bundle, server) -> None:
    """A real round trip: the daemon's link probe is a request at the probe split (the int8
    cut closest to ``probe_bytes``), its reply's load fields reach the edge as an offload's
    do (the simulator's edge learns the same from its probes), and it is a throughput
    sample."""
    from edgeml.partition.cost import CostModel
    from edgeml.runtime.cloud_link import CloudLink
    from edgeml.runtime.metrics import EdgeMetrics

    cost = CostModel.from_bundle(profiled_bundle)
    cfg = EdgeConfig(bundle=profiled_bundle.path, cloud=f"127.0.0.1:{server.port}",
                     policy="edgent", link_rtt_ms=10.0)  # fmt: skip
    link = CloudLink(cfg, profiled_bundle, cost, EdgeMetrics(1.0), history=4)
    try:
        assert link.check_cloud()
        assert link.cloud_reports() == []
        link.probe_once()
        (report,) = link.cloud_reports()
        assert report.load >= 1 and report.queue_ms >= 0.0 and not report.expired
        (sample,) = link.estimator.samples()
        assert not sample.censored and sample.mbps > 0
    finally:
        link.close()


def test_the_first_input_starts_at_the_go_not_after_the_sources_set_up(
    profiled_bundle: Bundle, tmp_path
) -> None:
    """A source that takes a while to give its first frame (a dataset to load) does so
    before the daemon is ready: the first input starts at the go, on the frame grid, as a
    simulated edge's does (live fleet edges keep the phases they are started at)."""
    go = tmp_path / "go"
    m = profiled_bundle.manifest

    def slow_source() -> Iterator[Item]:
        time.sleep(0.3)  # the set-up
        yield from fashion_items(0, prep=m.prep)

    cfg = EdgeConfig(
        bundle=profiled_bundle.path, cloud=f"127.0.0.1:{free_port()}", policy="edge_only",
        log=tmp_path / "edge.jsonl", max_inputs=3, rate=20.0, edge_slowdown=1.0,
        ready_file=tmp_path / "ready", go_file=go,
    )  # fmt: skip
    daemon = EdgeDaemon(cfg, bundle=profiled_bundle)
    threading.Timer(0.5, lambda: go.write_text("go\n")).start()
    daemon.run(slow_source())
    recs = [json.loads(line) for line in (tmp_path / "edge.jsonl").read_text().splitlines()]
    assert recs[0]["t_s"] < 0.05, recs[0]  # since the go
