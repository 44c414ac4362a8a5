"""Fleets in the simulator: PPO against the baselines as N edges share one batching cloud.

For each fleet size N, ``edgeml evaluate --edges N`` plays the held-out trace files' episodes
in fleets of N edges (each edge its own trace window, input stream, load and frame phase)
on one cloud that batches as ``edgeml serve`` does, with the bundle's measured batch service
times (``profile.json``'s ``cloud_batch``). Every policy meets the same fleets. The table
shows fleet timely accuracy (all edges' inputs) per policy, the worst edge's, the cloud's
mean extra wait, the best heuristic, the headroom ``oracle - best heuristic`` and the share
PPO captures; the JSON keeps every evaluation, the PNG plots timely accuracy over N.

    .venv/bin/python bench/fleet_sim.py --traces ../shared/traces              # ~10 min here
    .venv/bin/python bench/fleet_sim.py --traces ../shared/traces --edges 1,8 --steps 300
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_BUNDLE = REPO / "edgeml" / "assets" / "bundles" / "default"
SHIPPED = REPO / "edgeml" / "assets" / "policies" / "default.zip"
SHOWN = ("ppo", "oracle", "edgent-load", "edgent", "spinn", "neurosurgeon", "cloud_only")
EDGEML = [sys.executable, "-m", "edgeml.cli"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--traces", required=True)
    p.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    p.add_argument("--policy", default=str(SHIPPED))
    p.add_argument("--edges", default="1,4,16,32")
    p.add_argument("--segments", type=int, default=4)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--work", type=Path, default=Path("/tmp/edgeml-fleet-sim"))
    p.add_argument("--out", type=Path, default=HERE / "results" / "fleet_sim.json")
    args, extra = p.parse_known_args()  # the rest goes to evaluate (e.g. --edge-slowdown)
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for n in [int(v) for v in args.edges.split(",")]:
        out = args.work / f"eval_{n}.json"
        cmd = [*EDGEML, "evaluate", args.bundle, "--traces", args.traces, "--policy",
               args.policy, "--edges", str(n), "--segments", str(args.segments),
               "--steps", str(args.steps), "--json", str(out), "--no-progress", *extra]  # fmt: skip
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        res = json.loads(out.read_text())
        results[str(n)] = {"headroom": res["headroom"], "policies": res["policies"]}
    head = "| N | " + " | ".join(SHOWN) + " | best heuristic | headroom | PPO - best | captured "
    head += "| worst edge PPO / edgent-load | cloud wait ms PPO / edgent-load |"
    print("\n" + head)
    print("|---" * (len(SHOWN) + 7) + "|")
    for n, r in results.items():
        h, pol = r["headroom"], r["policies"]
        cap = "n/a" if h["captured"] is None else f"{100 * h['captured']:.0f}%"
        cells = " | ".join(f"{pol[k]['timely_accuracy']:.4f}" for k in SHOWN)
        worst = " / ".join(
            f"{pol[k].get('worst_edge_timely_accuracy', pol[k]['timely_accuracy']):.3f}"
            for k in ("ppo", "edgent-load")
        )
        wait = " / ".join(
            f"{pol[k].get('cloud_wait_ms_mean', 0.0):.1f}" for k in ("ppo", "edgent-load")
        )
        print(f"| {n} | {cells} | {h['best_heuristic']} | {h['headroom_points']:.2f} pt | "
              f"{h['vs_best_points']:+.2f} pt | {cap} | {worst} | {wait} |")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"traces": args.traces, "policy": args.policy, "segments": args.segments,
            "steps": args.steps, "extra": extra}  # fmt: skip
    args.out.write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")
    from edgeml.rl_agent.plot import plot_sweep

    plot_sweep(
        results,
        SHOWN,
        "edges sharing one cloud",
        "fleet timely accuracy",
        args.out.with_suffix(".png"),
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
