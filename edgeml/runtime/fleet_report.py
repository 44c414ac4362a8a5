"""What a live fleet run (``edgeml fleet``) measured and reports: its metrics per policy, the
table of measured against simulated, and the PNG of cloud queue, latency and decisions."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["format_lead", "format_table", "live_metrics", "plot_fleet", "ppo_lead"]


def live_metrics(per_edge: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """Fleet metrics of one policy's live records (rounds pooled): timely accuracy over all
    inputs, the worst edge's, mean latency, the cloud's mean queue wait over offloads."""
    recs = [r for edge in per_edge for r in edge]
    timely = [bool(r["timely"]) for r in recs]
    per = [float(np.mean([bool(r["timely"]) for r in e])) for e in per_edge if e]
    cloud = [r["latency_ms"]["cloud_queue"] for r in recs if r["where"] == "cloud"]
    lat = [r["latency_ms"] for r in recs]
    ran = [x for x in lat if x["edge_compute"] + x["encode"] > 0]
    return {
        "inputs": len(recs),
        "timely_accuracy": float(np.mean(timely)),
        "worst_edge_timely_accuracy": min(per),
        "latency_ms_mean": float(np.mean([r["latency_ms"]["total"] for r in recs])),
        "cloud_queue_ms_mean": float(np.mean(cloud)) if cloud else 0.0,
        "offload_rate": float(np.mean([r["where"] == "cloud" for r in recs])),
        "cpu_load_mean": float(np.mean([r["cpu_load"] for r in recs])),
        "overrun_rate": float(np.mean([x["slowdown_sleep"] == 0 for x in ran])) if ran else 0.0,
    }


def ppo_lead(results: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """PPO's lead over the best baseline (the highest live fleet timely accuracy), in points:
    pooled live and simulated, and per live round where the rounds were kept (each round
    plays the same inputs, so their mean is the pooled lead). None without PPO and a
    baseline."""
    others = [n for n in results if n != "ppo"]
    if "ppo" not in results or not others:
        return None
    best = max(others, key=lambda n: results[n]["live"]["timely_accuracy"])
    p, b = results["ppo"], results[best]

    def points(key: str) -> float:
        return 100.0 * (p[key]["timely_accuracy"] - b[key]["timely_accuracy"])

    rounds = None
    if "rounds" in p["live"] and "rounds" in b["live"]:
        rounds = [100.0 * (x - y) for x, y in zip(p["live"]["rounds"], b["live"]["rounds"],
                                                   strict=True)]  # fmt: skip
    return {"over": best, "live_points": points("live"), "sim_points": points("sim"),
            "rounds_points": rounds}  # fmt: skip


def format_lead(lead: dict[str, Any]) -> str:
    """One line: ``ppo - edgent-load (best baseline live): +10.4 points (rounds ...) ...``."""
    rounds = lead["rounds_points"]
    per = f" (rounds {', '.join(f'{x:+.1f}' for x in rounds)})" if rounds else ""
    return (f"ppo - {lead['over']} (best baseline live): {lead['live_points']:+.1f} points "
            f"live{per}, {lead['sim_points']:+.1f} simulated")  # fmt: skip


def format_table(results: dict[str, dict[str, Any]], title: str) -> str:
    head = (f"{'policy':<14}{'timely':>8}{'sim':>8}{'worst':>7}{'lat ms':>8}{'sim':>8}"
            f"{'lat m/s':>8}{'queue ms':>9}{'sim':>7}{'offload':>8}{'cpu':>6}")  # fmt: skip
    lines = [title, head, "-" * len(head)]
    for name, r in sorted(results.items(), key=lambda kv: -kv[1]["live"]["timely_accuracy"]):
        m, s = r["live"], r["sim"]
        ratio = m["latency_ms_mean"] / s["latency_ms_mean"] if s["latency_ms_mean"] else np.nan
        lines.append(
            f"{name:<14}{m['timely_accuracy']:>8.4f}{s['timely_accuracy']:>8.4f}"
            f"{m['worst_edge_timely_accuracy']:>7.3f}{m['latency_ms_mean']:>8.1f}"
            f"{s['latency_ms_mean']:>8.1f}{ratio:>8.3f}{m['cloud_queue_ms_mean']:>9.2f}"
            f"{s['cloud_queue_ms_mean']:>7.2f}{m['offload_rate']:>8.3f}{m['cpu_load_mean']:>6.2f}"
        )
    return "\n".join(lines)


def plot_fleet(runs: dict[str, list[list[dict[str, Any]]]], out: Path, title: str) -> Path:
    """Cloud queue wait, latency and split over time (all edges, first round) per policy."""
    from edgeml.rl_agent.plot import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    for name, per_edge in runs.items():
        recs = sorted((r for e in per_edge for r in e), key=lambda r: r["t_unix"])
        if not recs:
            continue
        t0 = recs[0]["t_unix"]
        t = np.array([r["t_unix"] - t0 for r in recs])
        q = np.array([r["latency_ms"]["cloud_queue"] for r in recs])
        lat = np.array([r["latency_ms"]["total"] for r in recs])
        split = np.array([r["action"]["split"] for r in recs], dtype=float)
        k = max(len(recs) // 60, 1)  # a moving mean over ~1/60 of the run
        kern = np.ones(k) / k
        for ax, y in zip(axes, (q, lat, split), strict=True):
            ax.plot(t[: len(y) - k + 1], np.convolve(y, kern, "valid"), label=name, lw=1)
    for ax, label in zip(axes, ("cloud queue ms", "latency ms", "split"), strict=True):
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7, ncol=4)
    axes[-1].set_xlabel("s since the fleet started (first round)")
    fig.suptitle(textwrap.fill(title, 130), fontsize=9)
    return save_figure(fig, out, 120)
