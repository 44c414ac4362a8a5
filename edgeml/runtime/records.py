"""The edge daemon's records: the JSONL log's schema and keys, strict JSON, the run summary.

The summary's metrics are the decision core's :func:`~edgeml.decision.metrics.summarize`
of the records (the same keys and definitions as ``edgeml evaluate``), plus the counts only
a live run has (offloads, fallbacks, inputs without an answer).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from edgeml.decision.metrics import summarize
from edgeml.decision.scenario import Scenario

__all__ = ["FALLBACK_REASONS", "LATENCY_KEYS", "LOG_SCHEMA", "RunSummary", "strict_json"]

LOG_SCHEMA = "edgeml.edge/1"
LATENCY_KEYS = (
    "total", "decide", "edge_compute", "encode", "slowdown_sleep", "uplink", "network",
    "cloud_queue", "cloud_decode", "cloud_compute", "fallback_compute",
)  # fmt: skip
FALLBACK_REASONS = ("deadline", "unavailable", "error", "mismatch")


@dataclass
class RunSummary:
    """What a run did, for the CLI's report and the demo's table: the decision core's
    :func:`~edgeml.decision.metrics.summarize` of its records, plus the live-only counts."""

    run: str
    policy: str
    scenario: Scenario
    rows: list[dict[str, Any]] = field(default_factory=list, repr=False)
    offloaded: int = 0
    fallbacks: int = 0
    errors: int = 0

    @property
    def inputs(self) -> int:
        return len(self.rows)

    @property
    def edge_slowdown(self) -> float:
        return self.scenario.edge_slowdown

    def add(self, rec: dict[str, Any]) -> None:
        self.errors += rec["where"] == "error"
        self.offloaded += bool(rec["offloaded"])
        self.fallbacks += bool(rec["fallback"])
        self.rows.append({
            "correct": rec["correct"], "latency_ms": rec["latency_ms"]["total"],
            "bytes": rec["bytes"], "answered": rec["where"] != "error",
        })  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        n = max(self.inputs, 1)
        return {
            "run": self.run, "policy": self.policy, "edge_slowdown": self.edge_slowdown,
            "inputs": self.inputs, **summarize(self.rows, self.scenario),
            "offload_rate": self.offloaded / n, "fallbacks": self.fallbacks,
            "errors": self.errors,
        }  # fmt: skip

    def report(self) -> str:
        d = self.as_dict()
        ta = "n/a" if d["timely_accuracy"] is None else f"{d['timely_accuracy']:.3f}"
        mean = d["latency_ms_mean"] or 0.0
        p95 = d["latency_ms_p95"] or 0.0
        return (
            f"{self.run or self.policy}: {self.inputs} inputs, timely accuracy {ta}, "
            f"latency mean {mean:.1f} ms p95 {p95:.1f} ms, "
            f"{d['bytes_sent_mean'] or 0:.0f} B/input, "
            f"offloaded {d['offload_rate']:.0%}, fallbacks {self.fallbacks}, "
            f"unanswered {self.errors}; "
            f"edge slowdown x{self.edge_slowdown:g} (applied by sleeping)"
        )


def _finite(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v


def strict_json(rec: dict[str, Any]) -> str:
    """One log line of strict JSON: a NaN or infinity (a model that overflowed) is null."""
    return json.dumps(_finite(rec), allow_nan=False)
