"""The cloud server's configuration: torch- and gRPC-free, so the CLI builds its flags
from it without importing the server."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ServerConfig"]

MiB = 1 << 20


@dataclass
class ServerConfig:
    """Everything ``edgeml serve`` can set; the defaults are the CLI's defaults.

    :param bundle: bundle directory to serve.
    :param host: address to bind; keep 127.0.0.1 unless the edge is on another machine.
    :param port: gRPC port; 0 picks a free one (see :attr:`OffloadServer.port`).
    :param max_batch: most requests per batch; 1 turns dynamic batching off.
    :param max_wait_us: longest a request waits for others with the same (split, exit).
    :param batch_wait_alone: wait ``max_wait_us`` even when no other request is about (by
        default a request that finds the server idle runs at once; see ``batching``).
    :param pace_speedup: emulate a cloud this many times as fast as the bundle's profiling
        machine, whatever this machine is: each batch takes its profiled time (the
        fleet simulator's :class:`~edgeml.decision.cloud.CloudService`) over this, the
        worker sleeping out the rest after computing (a batch that computes longer is not
        cut). For fleets emulated on one host, as the edges' ``--pace profile``. None: this
        machine's own speed.
    :param metrics_port: Prometheus ``/metrics`` port on ``host`` (None: no endpoint).
    :param tls_cert: PEM server certificate chain; with ``tls_key`` enables TLS.
    :param tls_key: PEM private key of ``tls_cert``.
    :param client_ca: PEM CA that client certificates must chain to (mutual TLS).
    :param tokens: accepted bearer tokens; empty means no token auth.
    :param max_payload_bytes: cap on a request's tensor bytes (RESOURCE_EXHAUSTED above).
    :param workers: gRPC handler threads (one per concurrent RPC or open stream).
    :param torch_threads: intra-op threads of the process (set at start-up).
    :param grace_s: how long a stop waits for in-flight requests.
    :param model_id: the name requests may use; None: the bundle's model name.
    :param profile_repeats: timed runs per block when ``Profile`` measures on demand.
    :param stream_window: requests of one stream queued or running at once (backpressure).
    :param max_streams: open ``InferStream`` calls at once, from all clients. With gRPC's
        threaded server an open stream holds a handler thread, so this stays below
        ``workers``: the rest are kept for unary calls and the health check. Beyond it a new
        stream gets RESOURCE_EXHAUSTED.
    :param max_streams_per_client: open streams per client address (RESOURCE_EXHAUSTED beyond).
    :param stream_idle_s: a stream that sends nothing for this long, with nothing in
        flight, is ended with DEADLINE_EXCEEDED and frees its thread.
    :param max_connection_age_s: close connections older than this (GOAWAY) so that
        clients re-resolve and spread over new replicas; 0: never.
    :param max_connection_age_grace_s: how long calls on such a connection may still run.
    :param keepalive_s: ping an idle connection this often to find dead peers; 0: never.
    :param keepalive_timeout_s: drop a connection whose ping is not answered in this time.
    :param min_client_ping_s: the shortest client keepalive interval accepted (the edge
        pings every 30 s); faster pings get the connection closed (ENHANCE_YOUR_CALM).
    """

    bundle: str | Path
    host: str = "127.0.0.1"
    port: int = 50051
    max_batch: int = 16
    max_wait_us: int = 1000
    batch_wait_alone: bool = False
    pace_speedup: float | None = None
    metrics_port: int | None = None
    tls_cert: str | Path | None = None
    tls_key: str | Path | None = None
    client_ca: str | Path | None = None
    tokens: Sequence[str] = ()
    max_payload_bytes: int = 4 * MiB
    workers: int = 32
    torch_threads: int = 1
    grace_s: float = 10.0
    model_id: str | None = None
    profile_repeats: int = 20
    stream_window: int = 64
    max_streams: int = 16
    max_streams_per_client: int = 4
    stream_idle_s: float = 30.0
    max_connection_age_s: float = 300.0
    max_connection_age_grace_s: float = 30.0
    keepalive_s: float = 60.0
    keepalive_timeout_s: float = 20.0
    min_client_ping_s: float = 10.0

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert/tls_key: give both to enable TLS, or neither")
        if self.client_ca is not None and self.tls_cert is None:
            raise ValueError("client_ca: mutual TLS needs tls_cert and tls_key too")
        for name in (
            "max_batch", "workers", "torch_threads", "max_payload_bytes", "stream_window",
            "max_streams", "max_streams_per_client",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in (
            "max_wait_us", "grace_s", "max_connection_age_s", "max_connection_age_grace_s",
            "keepalive_s", "keepalive_timeout_s", "min_client_ping_s",
        ):  # fmt: skip
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: must be a finite number >= 0, got {value}")
        if self.pace_speedup is not None and not (
            math.isfinite(self.pace_speedup) and self.pace_speedup > 0
        ):
            raise ValueError(f"pace_speedup: must be a finite number > 0, got {self.pace_speedup}")
        if not (math.isfinite(self.stream_idle_s) and self.stream_idle_s > 0):
            raise ValueError(f"stream_idle_s: must be > 0, got {self.stream_idle_s}")
        if self.max_streams >= self.workers:
            raise ValueError(
                f"max_streams: {self.max_streams} must be below workers ({self.workers}): "
                "an open stream holds a handler thread, unary calls and health need the rest"
            )
        if self.max_streams_per_client > self.max_streams:
            raise ValueError(
                f"max_streams_per_client: {self.max_streams_per_client} is above "
                f"max_streams ({self.max_streams})"
            )
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port: {self.metrics_port} not in 0..65535 (0: any free)")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port: {self.port} not in 0..65535")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None
