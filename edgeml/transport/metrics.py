"""Prometheus metrics of the cloud server: requests, errors by code, latency, batch sizes.

Each server owns a :class:`~prometheus_client.CollectorRegistry` instead of the process-wide
default, so several servers (tests, benches) can live in one process without name clashes.
"""

from __future__ import annotations

import logging

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from edgeml.transport.metrics_http import MetricsHTTP

__all__ = ["ServerMetrics"]

log = logging.getLogger(__name__)

# Per-request latency in seconds: sub-ms loopback calls up to multi-second stragglers.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


class ServerMetrics:
    """The server's counters and histograms, plus the optional ``/metrics`` HTTP endpoint."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "edgeml_requests",
            "Requests answered (one per stream message), by method and status code",
            ["method", "code"],
            registry=r,
        )
        self.errors = Counter(
            "edgeml_request_errors",
            "Requests answered with a status other than OK, by method and code",
            ["method", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "edgeml_request_latency_seconds",
            "Server-side time from receiving a request to its reply",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "edgeml_batch_size",
            "Requests per executed batch",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "edgeml_batch_compute_seconds",
            "Compute time of one batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(
            "edgeml_inflight_requests", "Requests received and not yet answered", registry=r
        )
        self._http: MetricsHTTP | None = None

    def observe(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        """Count one answered request."""
        name = code.name
        self.requests.labels(method, name).inc()
        if code is not grpc.StatusCode.OK:
            self.errors.labels(method, name).inc()
        self.latency.labels(method).observe(seconds)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Current value of one sample (0 if absent); for tests and the bench."""
        v = self.registry.get_sample_value(name, labels or {})
        return 0.0 if v is None else v

    def serve_http(self, port: int, host: str = "127.0.0.1") -> int:
        """Expose ``/metrics`` on ``host:port`` (0 picks a free port); returns the bound port."""
        self._http = MetricsHTTP(self.registry, port, host)
        bound = self._http.port
        log.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
