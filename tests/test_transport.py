"""The cloud server and the edge client over real gRPC on loopback.

The central property: an edge head plus the server's tail gives the same answer as running
the action locally with the shared early-exit rule.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from transport_helpers import edge_inputs, exit_confidences, local_answer, start_server

from edgeml.bundle import Bundle
from edgeml.cli import main as cli_main
from edgeml.partition.codecs import decode, encode
from edgeml.progressive.infer import run_segment
from edgeml.transport.client import (
    ClientConfig,
    DeadlineExpired,
    EdgeClient,
    OffloadError,
    WeightsMismatchError,
    replica_targets,
    service_config,
)
from edgeml.transport.server import SERVICE_NAME, OffloadServer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(tiny_bundle: Bundle):
    srv = start_server(tiny_bundle, max_batch=8, max_wait_us=500, metrics_port=0)
    yield srv
    srv.stop(0)


@pytest.fixture(scope="module")
def client(server: OffloadServer, tiny_bundle: Bundle):
    c = EdgeClient(ClientConfig(targets=server.address), tiny_bundle.weights_sha256)
    c.wait_ready(10)
    yield c
    c.close()


def _actions(bundle: Bundle, xs: torch.Tensor) -> list[tuple[int, int, float, str]]:
    """(split, exit, tau, codec) with the exit's block after the split (so the cloud runs);
    taus at quantiles of the inputs' real exit confidences, so some runs stop early."""
    m = bundle.manifest
    conf = exit_confidences(bundle, xs)
    taus = [1.0, *(round(float(conf.quantile(q)), 4) for q in (0.3, 0.7))]
    out = []
    for s in range(m.blocks):
        for e in range(m.num_exits):
            if m.exits[e] <= s:
                continue
            for tau in taus:
                out.append((s, e, tau, "raw"))
    out += [(0, m.num_exits - 1, taus[1], "fp16"), (1, m.num_exits - 1, taus[1], "int8+zstd")]
    return out


def test_round_trip_equals_local_execution(tiny_bundle, client):
    net = tiny_bundle.net
    xs = edge_inputs(tiny_bundle, 6, seed=1)
    sent = edge_answered = 0
    exits_seen: set[int] = set()
    for s, e, tau, codec in _actions(tiny_bundle, xs):
        for i in range(len(xs)):
            x = xs[i : i + 1]
            reference = run_segment(net, x, 0, net.num_blocks, e, tau).answers[0]
            edge = run_segment(net, x, 0, s, e, tau)  # blocks 1..s on the edge
            if edge.answers[0] is not None:  # stopped at an exit <= s: nothing is sent
                edge_answered += 1
                assert edge.answers[0] == reference
                continue
            got = client.infer(edge.hidden, s, e, tau, codec=codec)
            sent += 1
            # lossy codecs: the reference is the rule run on the tensor the cloud decoded
            h_cloud = torch.from_numpy(decode(encode(edge.hidden, codec)).copy())
            want = local_answer(tiny_bundle, h_cloud, s, e, tau) if codec != "raw" else reference
            assert (got.class_id, got.exit_index, got.exit_block) == (
                want.class_id,
                want.exit_index,
                want.exit_block,
            ), (s, e, tau, codec, i)
            assert got.confidence == pytest.approx(want.confidence, abs=1e-5)
            assert got.sent_bytes > edge.hidden.numel() * (4 if codec == "raw" else 0)
            assert got.rtt_ms > 0 and got.rtt_ms >= got.compute_ms
            assert got.batch_size >= 1
            exits_seen.add(got.exit_index)
    assert sent >= 20, f"only {sent} actions reached the server ({edge_answered} at the edge)"
    assert edge_answered > 0 and len(exits_seen) >= 2  # the taus really stopped some runs


def test_request_that_would_have_stopped_before_the_split_is_answered_from_the_split(
    tiny_bundle, client
):
    # tau=0 stops at the first exit evaluated; an edge would have stopped at block 1, but the
    # server must still run from the split and answer at the first exit after it.
    m = tiny_bundle.manifest
    s = 1
    x = edge_inputs(tiny_bundle, 1, seed=2)
    h = tiny_bundle.net.run_blocks(x, 0, s)
    got = client.infer(h, s, m.num_exits - 1, 0.0)
    first_after = next(b for b in m.exits if b > s)
    assert got.exit_block == first_after
    want = local_answer(tiny_bundle, h, s, m.num_exits - 1, 0.0)
    assert (got.class_id, got.exit_index) == (want.class_id, want.exit_index)


def test_stream_session_answers_every_request_in_order(tiny_bundle, client):
    m = tiny_bundle.manifest
    xs = edge_inputs(tiny_bundle, 12, seed=3)
    s, e, tau = 1, m.num_exits - 1, 0.7
    hs = [tiny_bundle.net.run_blocks(xs[i : i + 1], 0, s) for i in range(len(xs))]
    with client.stream(timeout_s=20) as stream:
        futures = [stream.submit(h, s, e, tau) for h in hs]
        results = [f.result(timeout=20) for f in futures]
    for h, r in zip(hs, results, strict=True):
        want = local_answer(tiny_bundle, h, s, e, tau)
        assert (r.class_id, r.exit_index) == (want.class_id, want.exit_index)
        assert r.confidence == pytest.approx(want.confidence, abs=1e-5)
    assert max(r.batch_size for r in results) > 1  # pipelined frames shared batches
    # The load fields: this batch's rows running, the others of the 12 at most waiting.
    assert all(r.running == r.batch_size and r.queued <= 12 - r.batch_size for r in results)
    assert results[-1].queued == 0  # nothing is left behind the last frame


def test_health_serving_and_reflection_lists_the_services(server):
    with grpc.insecure_channel(server.address) as ch:
        hs = health_pb2_grpc.HealthStub(ch)
        for name in ("", SERVICE_NAME):
            resp = hs.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        (resp,) = refl.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name for s in resp.list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names


def test_model_info_matches_the_bundle_and_hash_check_refuses_others(tiny_bundle, client, server):
    info = client.check_model()
    m = tiny_bundle.manifest
    assert info.weights_sha256 == m.weights_sha256
    assert json.loads(info.manifest_json)["weights_sha256"] == m.weights_sha256
    assert [tuple(c.shape) for c in info.cut_points] == [c.shape for c in m.cut_points]
    assert dict(info.cut_points[1].bytes_per_codec) == m.cut_points[1].bytes
    with pytest.raises(WeightsMismatchError, match="weights_sha256"):
        client.check_model("0" * 64)
    other = EdgeClient(ClientConfig(targets=server.address), "f" * 64)
    with other, pytest.raises(WeightsMismatchError) as err:
        other.infer(torch.zeros(1, *m.cut_points[0].shape), 0, m.num_exits - 1, 1.0)
    assert err.value.code is grpc.StatusCode.FAILED_PRECONDITION


def test_profile_from_bundle_file_and_measured_on_demand(tiny_bundle, tmp_path, client):
    m = tiny_bundle.manifest
    # no profile.json in the tiny bundle: the server measures
    measured = client.profile()
    assert len(measured.block_ms) == m.blocks and len(measured.head_ms) == m.num_exits
    assert all(v > 0 for v in [*measured.block_ms, *measured.head_ms])
    assert "measured by the server" in measured.device
    with pytest.raises(OffloadError) as err:
        client.profile(repeats=10_000)
    assert err.value.code is grpc.StatusCode.INVALID_ARGUMENT and "repeats" in str(err.value)
    # a bundle with profile.json: its numbers come back verbatim
    stored = {
        "blocks_ms": [1.5 + k for k in range(m.blocks)],
        "heads_ms": {str(b): 0.25 * b for b in m.exits},
        "host": {"cpu": "Test CPU 9000", "threads": 3},
        "devices": {"cloud": "this machine"},
    }
    profiled = Bundle(tmp_path, m, tiny_bundle.net, None, stored)
    (tmp_path / "manifest.json").write_text(m.to_json())
    srv = start_server(profiled)
    try:
        with EdgeClient(ClientConfig(targets=srv.address), m.weights_sha256) as c:
            reply = c.profile()
    finally:
        srv.stop(0)
    assert list(reply.block_ms) == pytest.approx(stored["blocks_ms"])
    assert list(reply.head_ms) == pytest.approx([0.25 * b for b in m.exits])
    assert "Test CPU 9000" in reply.device and reply.threads == 3


def _concurrent(client: EdgeClient, bundle: Bundle, n: int, split: int):
    """``n`` threads send at once (a barrier lines them up); per-row taus differ."""
    m = bundle.manifest
    xs = edge_inputs(bundle, n, seed=4)
    hs = [bundle.net.run_blocks(xs[i : i + 1], 0, split) for i in range(n)]
    # odd rows: a tau just below their first cloud exit's confidence (they stop there);
    # even rows: no early stop. One batch holds both, so per-row taus must be honoured.
    first = next(k for k, b in enumerate(m.exits) if b > split)
    conf = exit_confidences(bundle, xs)[:, first]
    taus = [1.0 if i % 2 == 0 else float(conf[i]) - 1e-3 for i in range(n)]
    barrier = threading.Barrier(n)

    def one(i: int):
        barrier.wait(timeout=10)
        return client.infer(hs[i], split, m.num_exits - 1, taus[i])

    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(one, range(n)))
    for h, tau, r in zip(hs, taus, results, strict=True):
        want = local_answer(bundle, h, split, m.num_exits - 1, tau)
        assert (r.class_id, r.exit_index) == (want.class_id, want.exit_index)
        assert r.confidence == pytest.approx(want.confidence, abs=1e-5)
    assert {r.exit_index for r in results[1::2]} == {first}
    assert {r.exit_index for r in results[0::2]} == {m.num_exits - 1}
    return results


def test_dynamic_batching_batches_concurrent_requests_and_can_be_turned_off(tiny_bundle):
    batched = start_server(tiny_bundle, max_batch=8, max_wait_us=100_000)
    single = start_server(tiny_bundle, max_batch=1, max_wait_us=100_000)
    try:
        for srv, expect_batches in ((batched, True), (single, False)):
            with EdgeClient(ClientConfig(targets=srv.address), tiny_bundle.weights_sha256) as c:
                results = _concurrent(c, tiny_bundle, 16, split=1)
            sizes = [r.batch_size for r in results]
            count = srv.metrics.value("edgeml_batch_size_count")
            total = srv.metrics.value("edgeml_batch_size_sum")
            assert total == 16
            if expect_batches:
                assert max(sizes) > 1 and max(sizes) <= 8, sizes
                assert count < 16
            else:
                assert sizes == [1] * 16
                assert count == 16
    finally:
        batched.stop(0)
        single.stop(0)


def test_round_robin_spreads_calls_over_targets_and_skips_a_dead_one(tiny_bundle, server):
    second = start_server(tiny_bundle)
    dead = start_server(tiny_bundle)
    dead_port = dead.port
    dead.stop(0)
    try:
        targets = f"127.0.0.1:{server.port},localhost:{second.port},127.0.0.1:{dead_port}"
        assert len(replica_targets(targets)) == 3  # one channel per replica
        cfg = ClientConfig(targets=targets, max_attempts=3)
        ok = {"method": "Infer", "code": "OK"}
        before = server.metrics.value("edgeml_requests_total", ok)
        calls = 0
        with EdgeClient(cfg, tiny_bundle.weights_sha256) as c:
            c.wait_ready(10)
            h = torch.zeros(1, *tiny_bundle.manifest.cut_points[0].shape)
            # round_robin only picks connected subchannels: allow a few calls for both to be up
            while calls < 40:
                c.infer(h, 0, tiny_bundle.manifest.num_exits - 1, 1.0)
                calls += 1
                on_first = server.metrics.value("edgeml_requests_total", ok) - before
                on_second = second.metrics.value("edgeml_requests_total", ok)
                if calls >= 8 and on_first and on_second:
                    break
        assert on_first > 0 and on_second > 0, (on_first, on_second)
        assert on_first + on_second == calls  # none lost to the dead target
    finally:
        second.stop(0)


def test_deadlines_come_from_the_input_deadline(tiny_bundle):
    # a lone request waits for company
    slow = start_server(tiny_bundle, max_batch=4, max_wait_us=2_000_000, batch_wait_alone=True)
    m = tiny_bundle.manifest
    h = torch.zeros(1, *m.cut_points[0].shape)
    try:
        with EdgeClient(ClientConfig(targets=slow.address), m.weights_sha256) as c:
            c.wait_ready(10)
            with pytest.raises(DeadlineExpired, match="not sent"):
                c.infer(h, 0, m.num_exits - 1, 1.0, deadline=time.monotonic() - 0.001)
            assert (
                slow.metrics.value("edgeml_requests_total", {"method": "Infer", "code": "OK"}) == 0
            )
            t0 = time.monotonic()
            with pytest.raises(DeadlineExpired) as err:
                c.infer(h, 0, m.num_exits - 1, 1.0, deadline=time.monotonic() + 0.3)
            assert err.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - t0 < 1.5
    finally:
        slow.stop(0)


def test_metrics_endpoint_exports_requests_errors_latency_and_batches(server, client, tiny_bundle):
    client.infer(torch.zeros(1, *tiny_bundle.manifest.cut_points[0].shape), 0, 0, 1.0)
    with pytest.raises(OffloadError):
        client.infer(torch.zeros(1, 3), 0, 0, 1.0)  # wrong shape
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    assert 'edgeml_requests_total{code="OK",method="Infer"}' in text
    assert 'edgeml_request_errors_total{code="INVALID_ARGUMENT",method="Infer"}' in text
    assert "edgeml_request_latency_seconds_bucket" in text
    assert "edgeml_batch_size_bucket" in text


def test_serve_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["serve", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--max-batch", "--max-wait-us", "--metrics-port", "--tls-cert", "--token-file"):
        assert flag in out
    assert "(default: 16)" in out and "(default: 1000)" in out


def test_sigterm_drains_the_in_flight_request_then_exits_0(tiny_bundle, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "edgeml.cli", "serve", str(tiny_bundle.path), "--port", "0"]
    # a lone request told to wait 1.5 s for company: a slow request in flight at SIGTERM
    cmd += ["--max-batch", "4", "--max-wait-us", "1500000", "--batch-wait-alone"]
    cmd += ["--grace-s", "10"]
    log = (tmp_path / "serve.log").open("w+")  # a file, not a pipe nobody drains
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 60
        while "listening on" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, (tmp_path / "serve.log").read_text()
        address = line.strip().rsplit(" ", 1)[-1]
        m = tiny_bundle.manifest
        h = torch.zeros(1, *m.cut_points[0].shape)
        with EdgeClient(ClientConfig(targets=address), m.weights_sha256) as c:
            c.wait_ready(10)
            with ThreadPoolExecutor(1) as pool:
                pending = pool.submit(c.infer, h, 0, m.num_exits - 1, 1.0)
                time.sleep(0.5)
                assert not pending.done()
                proc.send_signal(signal.SIGTERM)
                result = pending.result(timeout=15)
        assert result.queue_ms > 1000  # it really was in flight across the SIGTERM
        # generous: on a starved CI box interpreter shutdown alone can take many seconds
        assert proc.wait(timeout=90) == 0, (tmp_path / "serve.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def test_service_config_retries_only_unavailable_and_balances_round_robin():
    cfg = json.loads(service_config(3))
    assert cfg["loadBalancingConfig"] == [{"round_robin": {}}]
    (method,) = cfg["methodConfig"]
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert method["retryPolicy"]["maxAttempts"] == 3
    assert "retryPolicy" not in json.loads(service_config(1))["methodConfig"][0]
    with pytest.raises(ValueError, match="max_attempts"):
        ClientConfig(max_attempts=9)
    assert replica_targets("127.0.0.1:1, [::1]:2") == ["127.0.0.1:1", "[::1]:2"]
    assert replica_targets("dns:///cloud:50051") == ["dns:///cloud:50051"]  # gRPC balances
    with pytest.raises(ValueError, match="targets"):
        replica_targets("127.0.0.1:1,nohost")


def test_a_paced_server_takes_the_profiled_batch_time_over_its_speedup(profiled_bundle):
    from edgeml.decision.cloud import CloudService

    speedup = 0.02  # a cloud 50x slower than profiled: the pacing, not this machine, decides
    paced = CloudService.from_profile(profiled_bundle.profile, speedup)
    m = profiled_bundle.manifest
    srv = start_server(profiled_bundle, max_batch=4, max_wait_us=0, pace_speedup=speedup)
    try:
        with EdgeClient(ClientConfig(targets=srv.address), profiled_bundle.weights_sha256) as c:
            x = edge_inputs(profiled_bundle, 1)
            for split in (0, m.exits[0]):
                h = profiled_bundle.net.run_blocks(x, 0, split)
                r = c.infer(h, split, m.num_exits - 1, 1.0)
                want = paced.batch_ms(split, [(r.exit_block, False)])
                assert r.batch_size == 1
                assert want <= r.compute_ms <= want * 1.1 + 5.0, (split, r.compute_ms, want)
            results = _concurrent(c, profiled_bundle, 4, split=m.exits[0])
        for r in results:  # a batch takes at least the profiled time of each of its rows
            assert r.compute_ms >= 0.95 * paced.batch_ms(m.exits[0], [(r.exit_block, False)])
    finally:
        srv.stop(0)
