"""The server under hostile clients: silent streams, stream floods, junk on the metrics port.

Each test fails on a server without the protection it names: before the stream gate, 32
silent streams took all 32 handler threads and nothing (health included) was answered.
"""

from __future__ import annotations

import os
import socket
import struct
import time
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from transport_helpers import make_request, start_server

from edgeml.bundle import Bundle
from edgeml.transport.config import ServerConfig
from edgeml.transport.proto.edgeml.v1 import offload_pb2
from edgeml.transport.server import SERVICE_NAME, OffloadServer
from edgeml.transport.streams import StreamGate, peer_address

STREAM = f"/{SERVICE_NAME}/InferStream"
INFER = f"/{SERVICE_NAME}/Infer"


def _silent() -> Iterator[offload_pb2.InferRequest]:
    """A request iterator that never yields (the stream stays open, sending nothing)."""
    while True:
        time.sleep(3600)
        yield offload_pb2.InferRequest()  # pragma: no cover


def _open_silent_streams(channel: grpc.Channel, n: int, timeout: float) -> list[grpc.Future]:
    call = channel.stream_stream(
        STREAM,
        request_serializer=offload_pb2.InferRequest.SerializeToString,
        response_deserializer=offload_pb2.InferReply.FromString,
    )
    return [call(_silent(), timeout=timeout) for _ in range(n)]


def _refused(streams: list[grpc.Future], n: int, wait_s: float = 10) -> list[grpc.Future]:
    """The streams that ended with RESOURCE_EXHAUSTED, once ``n`` have ended (or ``wait_s``)."""
    deadline = time.monotonic() + wait_s
    while sum(s.done() for s in streams) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # any more that were wrongly refused
    done = [s for s in streams if s.done()]
    assert all(s.code() is grpc.StatusCode.RESOURCE_EXHAUSTED for s in done)
    return done


def _wait_open(server: OffloadServer, n: int, wait_s: float) -> None:
    """Until the server has admitted ``n`` streams (or ``wait_s`` passed)."""
    deadline = time.monotonic() + wait_s
    while server.servicer.streams.open < n and time.monotonic() < deadline:
        time.sleep(0.05)


def _first(stream: grpc.Future) -> grpc.StatusCode:
    try:
        next(stream)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK  # pragma: no cover


def test_40_silent_streams_leave_health_and_infer_answering(tiny_bundle: Bundle) -> None:
    server = start_server(tiny_bundle, workers=32, max_streams=16, max_streams_per_client=16)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        streams = _open_silent_streams(channel, 40, timeout=30)
        _wait_open(server, 16, wait_s=10)
        assert server.servicer.streams.open == 16
        t0 = time.monotonic()
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=1.0
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        infer = channel.unary_unary(
            INFER,
            request_serializer=offload_pb2.InferRequest.SerializeToString,
            response_deserializer=offload_pb2.InferReply.FromString,
        )
        reply = infer(make_request(tiny_bundle, split=1), timeout=1.0)
        assert time.monotonic() - t0 < 1.0
        assert reply.exit_taken == tiny_bundle.manifest.num_exits - 1
        # the 24 beyond the bound were refused at once, with the limit named
        refused = _refused(streams, 24)
        assert len(refused) == 24
        assert all("max_streams" in r.details() for r in refused)
    finally:
        for s in streams:
            s.cancel()
        channel.close()
        server.stop(0)


def test_streams_per_client_are_bounded(tiny_bundle: Bundle) -> None:
    server = start_server(tiny_bundle, max_streams=8, max_streams_per_client=2, workers=16)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        streams = _open_silent_streams(channel, 3, timeout=10)
        _wait_open(server, 2, wait_s=5)
        time.sleep(0.2)
        assert server.servicer.streams.open == 2
        (refused,) = _refused(streams, 1)
        assert "max_streams_per_client" in refused.details()
        assert sum(not st.done() for st in streams) == 2
    finally:
        for s in streams:
            s.cancel()
        channel.close()
        server.stop(0)


def test_a_silent_stream_times_out_and_frees_its_slot(tiny_bundle: Bundle) -> None:
    server = start_server(tiny_bundle, stream_idle_s=0.5)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        (stream,) = _open_silent_streams(channel, 1, timeout=30)
        t0 = time.monotonic()
        assert _first(stream) is grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - t0 < 5
        assert "stream_idle_s" in stream.details()
        time.sleep(0.1)
        assert server.servicer.streams.open == 0
    finally:
        channel.close()
        server.stop(0)


def test_stream_gate_counts_per_address() -> None:
    gate = StreamGate(total=3, per_client=2)
    assert gate.enter("a") is None and gate.enter("a") is None
    assert "max_streams_per_client" in (gate.enter("a") or "")
    assert gate.enter("b") is None
    assert "max_streams" in (gate.enter("c") or "")
    gate.leave("a")
    assert gate.enter("c") is None
    assert peer_address("ipv4:127.0.0.1:5123") == "127.0.0.1"
    assert peer_address("ipv6:[::1]:5123") == "::1"


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_streams", 32), ("stream_idle_s", 0.0), ("keepalive_s", float("nan"))],
)
def test_server_limits_are_checked(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        ServerConfig(bundle="b", workers=32, **{field: value})


def _reset_with(port: int, payload: bytes) -> None:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(payload)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # RST: the server's error reply hits a reset connection


def test_junk_on_the_metrics_port_writes_no_traceback(
    tiny_bundle: Bundle, capfd: pytest.CaptureFixture[str]
) -> None:
    server = start_server(tiny_bundle, metrics_port=0)
    try:
        port = server.metrics_port
        assert port is not None
        for payload in [b"GET /metrics HTTP/1.1\r\n", os.urandom(4000), b"\x16\x03\x01" * 50]:
            for _ in range(3):
                _reset_with(port, payload)
        time.sleep(0.3)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert b"edgeml" in body
    finally:
        server.stop(0)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err
