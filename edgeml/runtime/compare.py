"""Measured runs against the simulator: per-input predictions, run summaries, a plot.

For every logged input the simulator's prediction is the cost model's latency of the very
action the edge took (:class:`~edgeml.partition.cost.CostModel`, the one the env uses), at
the edge load the daemon used (``edge_load``: psutil's CPU load or its measured slowness,
whichever is higher), with the link time integrated over the bandwidth trace from the
moment the tensor would leave (as :meth:`edgeml.rl_agent.env.EdgeCloudEnv.step` does) plus
the base RTT. The stop exit is the one the run actually took.

A slow offload follows the decision core's outcome rule (:mod:`edgeml.decision.outcome`),
as in the env and the daemon: past the deadline plus a grace the edge answers locally, so
the prediction is that point plus the local answer's cost. Inputs that fell back because
the cloud was unreachable or failed have no prediction (the simulator has no such event).

The cloud of a live run is this machine, which need not be the profile's: the prediction
scales the cloud's compute by :func:`~.calibration.cloud_slowdown`, how much slower than the
cost model the server computed over every policy's offloads of the run (one number for the
machine, as ``edgeml fleet`` tells its simulation), and every offload pays the RPC stack's
RTT and RTT and mean time beyond the link (:func:`~.calibration.stack_of`). An edge paced to the
profile (``--pace profile``, the demo's default) takes its profile's time by construction,
so what such a run checks is the link, the cloud and the outcome rule; a measured-paced
edge also checks the cost model and the load the daemon measured.

A second, calibrated prediction replaces the profile's compute speeds by those the edge had
measured on the inputs before (``edge_speed``/``cloud_speed`` in its log): it separates
"the link and the model of the action are right" from "this machine computed slower than
its profile" (a core that sleeps between inputs, as the emulated edge does, runs the next
one with cold caches, 20-50% slower than the profile's back-to-back loop). A profile-paced
edge keeps its profile's speed there too.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeml.decision.metrics import summarize as summarize_records
from edgeml.decision.outcome import OutcomeRule
from edgeml.decision.scenario import Scenario
from edgeml.partition.cost import CostModel
from edgeml.rl_agent.traces import Trace
from edgeml.runtime.calibration import Stack, cloud_slowdown, single_time, stack_of

__all__ = [
    "format_table",
    "plot_runs",
    "predict_latency_ms",
    "predictions",
    "summarize",
    "summarize_runs",
]


def predict_latency_ms(
    rec: Mapping[str, Any],
    cost: CostModel,
    trace: Trace,
    trace_s: float,
    rtt_ms: float,
    grace: float | None = None,
    measured_speed: bool = False,
    cloud_slow: float = 1.0,
    pace: str = "measured",
    call_ms: float = 0.0,
) -> float | None:
    """The simulator's latency for one logged input (None where it has no counterpart).

    ``grace`` is the daemon's ``grace_ms`` (None: its default, the cheapest local answer at
    the logged edge load). ``cloud_slow`` scales the cloud's profiled compute (the run's
    :func:`~.calibration.cloud_slowdown`); ``call_ms`` is each offload's time in the RPC
    stack beyond the link (:class:`~.calibration.Stack`). ``measured_speed`` replaces the
    profile's compute speeds (and the edge load) by the speeds the edge had measured before
    this input (``edge_speed``, ``cloud_speed`` of the log): the same model, told how fast
    the machines really ran; an edge of ``pace`` ``"profile"`` ran at its profile whatever
    it measured.
    """
    a = rec["action"]
    if a is None:  # an input the edge could not use: nothing to predict
        return None
    ran = rec.get("edge_runtime")
    if ran is not None and ran != cost.edge_runtime:
        raise ValueError(
            f"edge_runtime: the input ran on {ran}, the cost model plans {cost.edge_runtime}; "
            "predict with the daemon's own (World.from_bundle(bundle, scenario).cost)"
        )
    s, e, tau = int(a["split"]), int(a["exit"]), float(a["tau"])
    one = tau >= 1.0
    edge_load = float(rec["edge_load"])  # the load the daemon used
    load, fe, fc = edge_load, 1.0, cloud_slow
    if measured_speed:
        load, fc = 0.0, float(rec.get("cloud_speed", 1.0))
        fe = float(rec.get("edge_speed", 1.0)) if pace == "measured" else 1.0
    where = rec["where"]
    if where == "fallback" and rec["fallback_reason"] != "deadline":
        return None
    j = int(rec["answer"]["exit_index"]) if where != "fallback" else e
    b = cost.breakdown(s, e, j, one, a["codec"], edge_load=load)
    if not b.offloaded:
        return b.edge_ms * fe
    pre = (b.edge_ms + b.encode_ms) * fe
    d = trace.transfer_s(b.bytes, trace_s + pre / 1e3)
    latency = pre + d * 1e3 + rtt_ms + call_ms + (b.decode_ms + b.cloud_ms) * fc
    rule = OutcomeRule(cost, Scenario(deadline_ms=float(rec["deadline_ms"]), grace_ms=grace))
    give_up = rule.give_up_ms(s, e, edge_load)  # what the daemon computed
    if latency > give_up:  # the daemon stops waiting and answers locally
        k = rule.fallback_exit(s, e, give_up, load)
        return give_up + cost.local_finish_ms(s, k, load) * fe
    return latency


def _compare(lat: Sequence[float], pred: Sequence[float | None], key: str) -> dict[str, Any]:
    pairs = [(m, p) for m, p in zip(lat, pred, strict=True) if p is not None and math.isfinite(p)]
    if not pairs:
        return {}
    meas = statistics.fmean(m for m, _ in pairs)
    mean = statistics.fmean(p for _, p in pairs)
    return {
        f"{key}_inputs": len(pairs),
        f"measured_latency_ms_mean_vs_{key}": meas,
        f"{key}_latency_ms_mean": mean,
        f"measured_over_{key}": meas / mean if mean > 0 else None,
    }


def summarize(
    records: Sequence[Mapping[str, Any]],
    predicted: Sequence[float | None] | None = None,
    calibrated: Sequence[float | None] | None = None,
) -> dict[str, Any]:
    """Headline numbers of one run, and its predictions when given (``predicted``: the
    profile and the edge load; ``calibrated``: with the edge's measured compute speeds)."""
    n = len(records)
    lat = [float(r["latency_ms"]["total"]) for r in records]
    rows = [
        {"correct": r["correct"], "latency_ms": float(r["latency_ms"]["total"]),
         "bytes": r["bytes"], "answered": r["where"] != "error"}
        for r in records
    ]  # fmt: skip
    deadline = float(records[0]["deadline_ms"]) if records else 100.0
    out: dict[str, Any] = {
        "inputs": n,
        **summarize_records(rows, Scenario(deadline_ms=deadline)),
        "offload_rate": sum(bool(r["offloaded"]) for r in records) / n if n else None,
        "fallbacks": sum(bool(r["fallback"]) for r in records),
        "edge_slowdown": records[0]["edge_slowdown"] if records else None,
    }
    if predicted is not None:
        out.update(_compare(lat, predicted, "predicted"))
    if calibrated is not None:
        out.update(_compare(lat, calibrated, "calibrated"))
    return out


def predictions(
    records: Sequence[Mapping[str, Any]],
    cost: CostModel,
    trace: Trace,
    trace_times: Sequence[float],
    rtt_ms: float,
    cloud_slow: float = 1.0,
    pace: str = "measured",
    call_ms: float = 0.0,
) -> tuple[list[float | None], list[float | None]]:
    """Both predictions (profile, calibrated) of every input, each at its trace time; both
    pay the stack's ``call_ms``, the first the cloud's ``cloud_slow``, the second the cloud
    speed the edge measured."""
    timed = list(zip(records, trace_times, strict=True))
    pred = [predict_latency_ms(r, cost, trace, ts, rtt_ms, cloud_slow=cloud_slow,
                               call_ms=call_ms) for r, ts in timed]  # fmt: skip
    cal = [predict_latency_ms(r, cost, trace, ts, rtt_ms, measured_speed=True, pace=pace,
                              call_ms=call_ms) for r, ts in timed]  # fmt: skip
    return pred, cal


Timed = tuple[Sequence[Mapping[str, Any]], Sequence[float]]  # one run's records, trace times


def summarize_runs(
    runs: Mapping[str, Sequence[Timed]],
    cost: CostModel,
    trace: Trace,
    link_rtt_ms: float,
    pace: str,
) -> tuple[dict[str, dict[str, Any]], float, Stack]:
    """:func:`summarize` of each policy's runs (rounds pooled) with both predictions, the
    simulator told this machine's cloud and stack as all the runs together measured them;
    returns the summaries, the cloud's slowdown over the cost model, and the stack."""
    every = [recs for timed in runs.values() for recs, _ in timed]
    slow, stack = cloud_slowdown(every, single_time(cost)), stack_of(every, link_rtt_ms)
    out: dict[str, dict[str, Any]] = {}
    for name, timed in runs.items():
        recs: list[Mapping[str, Any]] = []
        pred: list[float | None] = []
        cal: list[float | None] = []
        for rs, times in timed:
            p, c = predictions(
                rs, cost, trace, times, stack.rtt_ms, slow, pace, stack.call_overhead_ms
            )
            recs += rs
            pred += p
            cal += c
        out[name] = summarize(recs, pred, cal)
    return out, slow, stack


def format_table(results: Mapping[str, Mapping[str, Any]], title: str = "") -> str:
    """A plain-text table, one row per policy."""
    has_pred = any("predicted_latency_ms_mean" in r for r in results.values())
    head = (
        f"{'policy':<14} {'inputs':>6} {'timely acc':>10} {'accuracy':>8} {'mean ms':>8} "
        f"{'p95 ms':>8} {'bytes/in':>9} {'offload':>7} {'fallbk':>6}"
    )
    has_cal = any("calibrated_latency_ms_mean" in r for r in results.values())
    if has_pred:
        head += f" {'sim ms':>7} {'meas/sim':>8}"
    if has_cal:
        head += f" {'cal ms':>7} {'meas/cal':>8}"
    lines = [title, head] if title else [head]

    def num(v: Any, fmt: str) -> str:
        return format(v, fmt) if isinstance(v, int | float) else "n/a"

    for name, r in results.items():
        row = (
            f"{name:<14} {r['inputs']:>6} {num(r['timely_accuracy'], '10.3f')} "
            f"{num(r['accuracy'], '8.3f')} "
            f"{num(r['latency_ms_mean'], '8.1f')} {num(r['latency_ms_p95'], '8.1f')} "
            f"{num(r['bytes_sent_mean'], '9.0f')} {num(r['offload_rate'], '7.0%')} "
            f"{r['fallbacks']:>6}"
        )
        if has_pred:
            row += (
                f" {num(r.get('predicted_latency_ms_mean'), '7.1f')}"
                f" {num(r.get('measured_over_predicted'), '8.2f')}"
            )
        if has_cal:
            row += (
                f" {num(r.get('calibrated_latency_ms_mean'), '7.1f')}"
                f" {num(r.get('measured_over_calibrated'), '8.2f')}"
            )
        lines.append(row)
    return "\n".join(lines)


def plot_runs(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    trace: Trace,
    offset_s: float,
    out: str | Path,
    deadline_ms: float,
    title: str = "",
    trace_times: Mapping[str, Sequence[float]] | None = None,
) -> Path:
    """Latency and decisions over time per policy, with the bandwidth trace beneath.

    ``trace_times`` gives each record's trace position (default: its ``trace_s`` field).
    """
    from edgeml.rl_agent.plot import pyplot, save_figure

    plt = pyplot()
    names = list(runs)
    fig, axes = plt.subplots(
        len(names) + 1, 1, figsize=(11, 1.9 * (len(names) + 1)), sharex=True, squeeze=False
    )
    t_max = 0.0
    top = max((max(r["action"]["split"], r["action"]["exit"]) for rs in runs.values() for r in rs),
              default=1)  # fmt: skip
    for ax, name in zip(axes[:-1, 0], names, strict=True):
        recs = runs[name]
        ts = list(trace_times[name]) if trace_times else [r["trace_s"] for r in recs]
        t = np.asarray(ts, dtype=float) - offset_s
        t_max = max(t_max, float(t.max()) if len(t) else 0.0)
        lat = np.array([r["latency_ms"]["total"] for r in recs])
        colours = {"edge": "tab:green", "cloud": "tab:blue", "fallback": "tab:red"}
        for where, c in colours.items():
            m = np.array([r["where"] == where for r in recs])
            if m.any():
                ax.scatter(t[m], lat[m], s=5, c=c, label=where)
        ax.axhline(deadline_ms, color="k", lw=0.8, ls="--")
        ax.set_ylabel(f"{name}\nlatency ms", fontsize=8)
        ax.set_ylim(0, max(3 * deadline_ms, 1.0))
        ax2 = ax.twinx()
        ax2.step(t, [r["action"]["split"] for r in recs], where="post", color="tab:orange", lw=0.8)
        ax2.step(t, [r["action"]["exit"] for r in recs], where="post", color="tab:purple", lw=0.8)
        ax2.set_ylim(-0.5, top + 0.5)
        ax2.set_ylabel("split (orange)\nexit (purple)", fontsize=7)
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], marker="o", ls="", color=c, label=w)
        for w, c in (("edge", "tab:green"), ("cloud", "tab:blue"), ("fallback", "tab:red"))
    ]
    axes[0, 0].legend(handles=handles, loc="upper right", fontsize=7, ncol=3)
    ax = axes[-1, 0]
    secs = np.arange(0, math.ceil(t_max) + 1)
    ax.step(secs, [trace.mbps_at(offset_s + s) for s in secs], where="post", color="k")
    ax.set_ylabel("bandwidth\nMbps", fontsize=8)
    ax.set_xlabel(f"time (s) in {trace.name} from {offset_s:g} s")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, out, dpi=110)
