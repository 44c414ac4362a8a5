"""The evaluation figure: per policy, latency and the chosen split/exit over one episode,
drawn against the link's true bandwidth, plus a bar chart of timely accuracy per family."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_evaluation", "plot_sweep", "pyplot", "save_figure"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend (imported late: it is slow)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int) -> Path:
    """Lay out, write (creating the folder) and close ``fig``; returns the path."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def plot_sweep(
    results: Mapping[str, Mapping[str, Any]], names: Sequence[str], xlabel: str, ylabel: str,
    path: str | Path,
) -> Path:  # fmt: skip
    """Timely accuracy of each policy in ``names`` over a swept setting (the keys of
    ``results``, numbers; log2 axis), one evaluation JSON's ``policies`` per key."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [float(k) for k in results]
    for n in names:
        ys = [r["policies"][n]["timely_accuracy"] for r in results.values()]
        ax.plot(xs, ys, marker="o", label=n)
    ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    return save_figure(fig, path, 120)


def _pick_episode(records: Mapping[str, Mapping[str, np.ndarray]], family: str | None) -> int:
    """The episode with the largest bandwidth swing (of ``family`` if given): where the
    policies' choices differ most visibly."""
    rec = next(iter(records.values()))
    best, best_score = 0, -1.0
    for ep in np.unique(rec["episode"]):
        m = rec["episode"] == ep
        if family is not None and rec["family"][m][0] != family:
            continue
        bw = np.log10(np.maximum(rec["bandwidth_mbps"][m], 1e-3))
        score = float(bw.std())
        if score > best_score:
            best, best_score = int(ep), score
    return best


def plot_evaluation(
    result: Mapping[str, Any],
    records: Mapping[str, Mapping[str, np.ndarray]],
    path: str | Path,
    policies: Sequence[str] | None = None,
    family: str | None = "hsdpa",
    n_blocks: int | None = None,
) -> Path:
    """Write the PNG; ``family`` picks the episode shown (falls back to any family);
    ``n_blocks`` fixes the split/exit axis (default: the largest split any policy chose)."""
    plt = pyplot()
    names = list(policies or records)
    fams = result["traces"]["families"]
    if family not in fams:
        family = None
    ep = _pick_episode(records, family)
    deadline = float(result["scenario"]["deadline_ms"])
    top = n_blocks or max(int(r["split"].max()) for r in records.values())
    n = len(names)
    fig, axes = plt.subplots(n + 1, 1, figsize=(11, 1.7 * n + 4.2), sharex=False)
    ax0 = axes[0]
    width = 0.8 / max(n, 1)
    x = np.arange(len(fams))
    for k, name in enumerate(names):
        vals = [result["policies"][name]["per_family"][f]["timely_accuracy"] for f in fams]
        ax0.bar(x + k * width, vals, width, label=name)
    ax0.set_xticks(x + width * (n - 1) / 2, fams)
    ax0.set_ylabel("timely accuracy")
    ax0.set_ylim(0, 1.3)
    ax0.legend(ncol=min(n, 5), fontsize=7, loc="upper center")
    split = result["scenario"].get("trace_split", "?")
    ax0.set_title(f"timely accuracy per trace family ({split} files)")
    for ax, name in zip(axes[1:], names, strict=True):
        rec = records[name]
        m = rec["episode"] == ep
        t = rec["time_s"][m]
        ax.semilogy(t, np.maximum(rec["bandwidth_mbps"][m], 1e-2), color="0.75", lw=1,
                    label="bandwidth (Mbps)")  # fmt: skip
        ax.semilogy(t, np.maximum(rec["estimate_mbps"][m], 1e-2), color="0.45", lw=0.8,
                    ls=":", label="estimate")  # fmt: skip
        ax.set_ylabel("Mbps", fontsize=7)
        lat_ax = ax.twinx()
        lat_ax.plot(t, rec["latency_ms"][m], ".", ms=2, color="tab:red", label="latency")
        lat_ax.axhline(deadline, color="tab:red", lw=0.6, ls="--")
        lat_ax.set_ylim(0, 3 * deadline)
        lat_ax.set_ylabel("ms", fontsize=7)
        act_ax = ax.twinx()
        act_ax.spines["right"].set_position(("axes", 1.06))
        act_ax.step(t, rec["split"][m], where="post", color="tab:blue", lw=0.8, label="split")
        act_ax.step(t, rec["stop_exit"][m], where="post", color="tab:green", lw=0.8,
                    label="exit taken")  # fmt: skip
        act_ax.set_ylabel("split / exit", fontsize=7)
        act_ax.set_ylim(-0.3, top + 0.3)
        acc = result["policies"][name]["timely_accuracy"]
        ax.set_title(f"{name}: timely accuracy {acc:.3f} (episode shown: "
                     f"{rec['family'][m][0]})", fontsize=8, loc="left")  # fmt: skip
        if name == names[0]:
            handles: list[Any] = []
            labels: list[str] = []
            for a in (ax, lat_ax, act_ax):
                h, lb = a.get_legend_handles_labels()
                handles += h
                labels += lb
            ax.legend(handles, labels, fontsize=6, ncol=5, loc="upper left")
    axes[-1].set_xlabel("time in episode (s)")
    return save_figure(fig, path, dpi=90)
