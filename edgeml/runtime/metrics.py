"""Prometheus metrics of the edge daemon: inputs by outcome, latency, bytes, link estimates.

Each daemon owns a registry (not the process-wide default), so the demo can run several
daemons in one process and tests can start and stop them freely.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from edgeml.transport.metrics_http import MetricsHTTP

__all__ = ["EdgeMetrics"]

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)


class EdgeMetrics:
    """Counters, a latency histogram and gauges; :meth:`serve` exposes ``/metrics``."""

    def __init__(self, edge_slowdown: float, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.inputs = Counter(
            "edgeml_edge_inputs", "Inputs answered, by where the answer came from", ["where"],
            registry=r,
        )  # fmt: skip
        self.fallbacks = Counter(
            "edgeml_edge_fallbacks", "Offloads that failed and were answered locally, by reason",
            ["reason"], registry=r,
        )  # fmt: skip
        self.timely = Counter(
            "edgeml_edge_within_deadline", "Inputs answered within their deadline", registry=r
        )
        self.correct = Counter(
            "edgeml_edge_correct", "Inputs with a known label answered correctly", registry=r
        )
        self.bytes_sent = Counter(
            "edgeml_edge_bytes_sent", "Request bytes sent to the cloud (inputs and probes)",
            registry=r,
        )  # fmt: skip
        self.probes = Counter(
            "edgeml_edge_probes", "Background link probes, by outcome", ["outcome"], registry=r
        )
        self.latency = Histogram(
            "edgeml_edge_latency_seconds", "End-to-end latency of one input", ["where"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.bandwidth = Gauge(
            "edgeml_edge_bandwidth_estimate_mbps", "Harmonic-mean uplink estimate", registry=r
        )
        self.rtt = Gauge("edgeml_edge_rtt_estimate_ms", "RTT estimate", registry=r)
        self.cpu_load = Gauge("edgeml_edge_cpu_load", "Background CPU load seen", registry=r)
        self.split = Gauge("edgeml_edge_split", "Split chosen for the last input", registry=r)
        self.exit = Gauge("edgeml_edge_exit", "Exit index chosen for the last input", registry=r)
        slowdown = Gauge(
            "edgeml_edge_slowdown_factor", "Emulated edge slowdown applied by sleeping", registry=r
        )
        slowdown.set(edge_slowdown)
        self._server: MetricsHTTP | None = None

    def observe_input(self, rec: dict[str, Any]) -> None:
        """Update from one log record (see :mod:`edgeml.runtime.edge` for its fields)."""
        where = rec["where"]
        self.inputs.labels(where).inc()
        self.latency.labels(where).observe(rec["latency_ms"]["total"] / 1e3)
        if rec["fallback"]:
            self.fallbacks.labels(rec["fallback_reason"] or "error").inc()
        if rec["in_deadline"]:
            self.timely.inc()
        if rec["correct"]:
            self.correct.inc()
        self.bytes_sent.inc(rec["bytes"])
        if rec["action"] is None:  # an input that got no answer (see edge's log schema)
            return
        self.split.set(rec["action"]["split"])
        self.exit.set(rec["action"]["exit"])
        self.cpu_load.set(rec["cpu_load"])
        if rec["bw_estimate_mbps"] is not None:
            self.bandwidth.set(rec["bw_estimate_mbps"])
        self.rtt.set(rec["rtt_estimate_ms"])

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Start ``/metrics`` on ``addr:port`` (0 picks a port); returns the bound port."""
        self._server = MetricsHTTP(self.registry, port, addr)
        bound = self._server.port
        log.info("edge metrics on http://%s:%d/metrics", addr, bound)
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
