"""The edge daemon's records: the JSONL log's schema and keys, strict JSON, the run summary.

The summary's metrics are the decision core's :func:`~edgeml.decision.metrics.summarize`
of the records (the same keys and definitions as ``edgeml evaluate``), plus the counts only
a live run has (offloads, fallbacks, inputs without an answer).

Log schema (``edgeml.edge/1``), one object per input::

    schema, run, seq, input, t_unix, t_s, wait_ms, policy,
    action {split, exit, tau, codec}, where ("edge" | "cloud" | "fallback" | "error"),
    error (null | why the input got no answer), answer {class_id, confidence, exit_index,
    exit_block}, label, level, correct,
    offloaded, fallback, fallback_reason (null | "deadline" | "unavailable" | "error" |
    "mismatch"), bytes, deadline_ms, in_deadline, timely,
    latency_ms {total, decide, edge_compute, encode, slowdown_sleep, uplink, network,
                cloud_queue, cloud_decode, cloud_compute, fallback_compute},
    edge_slowdown, edge_runtime, cpu_load, edge_load, bw_estimate_mbps, rtt_estimate_ms, link_mbps,
    trace_s, cloud_batch, cloud_queued, cloud_running, edge_speed, cloud_speed

Latency stages add up to ``total`` (up to bookkeeping): ``network`` is everything between
handing the request over and having the reply, minus the server's own time; ``uplink`` is
the part of it spent in the emulated uplink (0 on a real network). ``slowdown_sleep`` is
the emulated edge slowness (:class:`~.speed.Pacer`): ``(edge_slowdown - 1) x`` the
measured edge compute, or with ``pace`` ``profile`` what is left to the profile's time.
``edge_speed``/``cloud_speed`` are measured over profiled compute so far (see
:class:`~.speed.SpeedTracker`). ``cpu_load`` is psutil's reading (:class:`~.speed.CpuLoad`);
``edge_load`` is what the policy and the fallback timing used, ``max(cpu_load, edge_speed -
1)`` (0 when paced to the profile).
``cloud_batch``, ``cloud_queued`` and ``cloud_running`` are the reply's load fields for an
answer from the cloud (the batch it ran in, and the requests waiting and running when that
batch finished: what the edge's cloud estimate learns from), null otherwise.
``edge_runtime`` is what ran the edge's blocks (``onnx/fp32``, ``onnx/int8``,
``torch/fp32``). ``t_s`` is seconds since the daemon started (monotonic); ``timely`` is
``correct and in_deadline`` (null without a label); ``link_mbps`` and ``trace_s`` are the emulated
link's bandwidth and trace position when the input started (null on a real network).

An input the network cannot take (another shape, a NaN or infinite pixel) or whose
processing failed still gets its line: ``where`` is ``"error"``, ``error`` names the
reason, ``action`` and ``answer`` are null, and it counts as wrong and late. The log is
strict JSON (no NaN).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edgeml.decision.metrics import summarize
from edgeml.decision.scenario import Scenario

if TYPE_CHECKING:
    from edgeml.progressive.rule import Answer
    from edgeml.runtime.sources import Item

__all__ = [
    "FALLBACK_REASONS", "LATENCY_KEYS", "LOG_SCHEMA", "MEASURED_KEYS", "RecordContext",
    "RunSummary", "input_record", "strict_json",
]  # fmt: skip

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


#: The measurements an answered input's record carries (null in an error record).
MEASURED_KEYS = (
    "cpu_load", "edge_load", "bw_estimate_mbps", "rtt_estimate_ms", "link_mbps", "trace_s",
    "cloud_batch", "cloud_queued", "cloud_running", "edge_speed", "cloud_speed",
)  # fmt: skip


@dataclass(frozen=True)
class RecordContext:
    """What every record of one input carries whatever happened to it."""

    run: str
    seq: int
    item: Item
    t_unix: float
    t_s: float
    wait_ms: float
    policy: str
    deadline_ms: float
    edge_slowdown: float
    edge_runtime: str


def input_record(
    ctx: RecordContext,
    lat: dict[str, float],
    *,
    action: dict[str, Any] | None = None,
    where: str = "error",
    error: str | None = None,
    answer: Answer | None = None,
    fallback_reason: str | None = None,
    nbytes: int = 0,
    in_deadline: bool = False,
    measured: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One JSONL line (the schema above): an answered input's, or with the defaults and
    ``error`` an input that got no answer (wrong and late)."""
    label = ctx.item.label
    correct = None if label is None else answer is not None and answer.class_id == label
    m = measured or {}
    return {
        "schema": LOG_SCHEMA, "run": ctx.run, "seq": ctx.seq, "input": ctx.item.name,
        "t_unix": ctx.t_unix, "t_s": ctx.t_s, "wait_ms": ctx.wait_ms, "policy": ctx.policy,
        "action": action, "where": where, "error": error,
        "answer": None if answer is None else {
            "class_id": answer.class_id, "confidence": round(answer.confidence, 5),
            "exit_index": answer.exit_index, "exit_block": answer.exit_block,
        },
        "label": label, "level": ctx.item.level, "correct": correct,
        "offloaded": where == "cloud", "fallback": fallback_reason is not None,
        "fallback_reason": fallback_reason, "bytes": nbytes,
        "deadline_ms": ctx.deadline_ms, "in_deadline": in_deadline,
        "timely": None if correct is None else bool(correct and in_deadline),
        "latency_ms": {k: round(v, 3) for k, v in lat.items()},
        "edge_slowdown": ctx.edge_slowdown, "edge_runtime": ctx.edge_runtime,
        **{k: m.get(k) for k in MEASURED_KEYS},
    }  # fmt: skip


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
