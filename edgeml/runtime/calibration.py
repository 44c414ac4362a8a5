"""How fast a live run's cloud and RPC stack really were: what the simulator is told when it
predicts that run (``edgeml demo``, ``emulate`` and ``fleet``).

The cloud of a live run is this machine, and this machine need not be the profile's: the
server computes slower or faster than the cost model says, and its gRPC calls take time
beyond the emulated link. Both are measured from the run's own records, one number each for
all its policies (a property of the machine, not of a policy), and the simulator of the
same run scales its cloud by the first and adds the second to every call, as the
:class:`~edgeml.decision.scenario.Scenario` fields ``cloud_speedup`` and
``call_overhead_ms`` do.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgeml.decision.cloud import CloudService
from edgeml.partition.cost import CostModel

__all__ = ["Stack", "batch_time", "cloud_slowdown", "single_time", "stack_of"]

Record = Mapping[str, Any]


def batch_time(service: CloudService) -> Callable[[Record], float]:
    """A cloud answer's profiled compute by the cloud-side profile: a batch of the logged
    size whose rows are like this one (what the fleet simulator's cloud charges)."""

    def profiled(r: Record) -> float:
        rows = [(int(r["answer"]["exit_block"]), r["action"]["tau"] < 1.0)] * int(r["cloud_batch"])
        return service.batch_ms(int(r["action"]["split"]), rows)

    return profiled


def single_time(cost: CostModel) -> Callable[[Record], float]:
    """A cloud answer's profiled compute by the cost model (batch 1, what the single-edge
    simulator charges and :func:`~.compare.predict_latency_ms` scales)."""

    def profiled(r: Record) -> float:
        a = r["action"]
        b = cost.breakdown(int(a["split"]), int(a["exit"]), int(r["answer"]["exit_index"]),
                           float(a["tau"]) >= 1.0, a["codec"], 0.0)  # fmt: skip
        return b.cloud_ms

    return profiled


def cloud_slowdown(runs: Sequence[Sequence[Record]], profiled: Callable[[Record], float]) -> float:
    """How much slower the live server computed than ``profiled`` says (:func:`batch_time`
    or :func:`single_time`): the ratio of sums of each cloud answer's measured compute to
    its profiled time over ``runs`` (every policy's, pooled). 1.0 without cloud answers."""
    measured = total = 0.0
    for r in (r for run in runs for r in run if r["where"] == "cloud" and r["cloud_batch"]):
        measured += r["latency_ms"]["cloud_compute"]
        total += profiled(r)
    return measured / total if total > 0 else 1.0


@dataclass(frozen=True)
class Stack:
    """The live RPC stack as the simulator takes it (:func:`stack_of`): the RTT the edges'
    pings measured and each call's mean time beyond the emulated link and that RTT."""

    rtt_ms: float
    call_overhead_ms: float


def stack_of(runs: Sequence[Sequence[Record]], link_rtt_ms: float) -> Stack:
    """The stack of the live ``runs`` (every policy's, pooled) on a link of ``link_rtt_ms``:
    the median ping RTT the edges measured (``rtt_estimate_ms``), and the mean over offloads
    of ``network - uplink - RTT/2`` (the call's time outside the emulated link) less the
    ping's own excess over the link's RTT. With 8 edges on two cores the calls took 3-4 ms
    more than the link, which a live edge counts against its bandwidth and the simulator's,
    measuring exactly, did not; so the simulated fleet offloaded more than the live one."""
    recs = [r for run in runs for r in run]
    rtts = [float(r["rtt_estimate_ms"]) for r in recs if r.get("rtt_estimate_ms") is not None]
    rtt = statistics.median(rtts) if rtts else link_rtt_ms
    over = [
        r["latency_ms"]["network"] - r["latency_ms"]["uplink"] - link_rtt_ms / 2.0
        for r in recs
        if r["where"] == "cloud" and r["latency_ms"]["uplink"] > 0
    ]
    call = max(statistics.fmean(over) - (rtt - link_rtt_ms), 0.0) if over else 0.0
    return Stack(round(rtt, 3), round(call, 3))
