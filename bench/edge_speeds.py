"""Where offloading and exits matter: PPO against the baselines over edge speeds.

For each edge slowdown (how much slower than this machine's ONNX Runtime core the edge
computes: 4x a fast phone core, 12x a Raspberry Pi 4, 24x a Pi 3B+, see
``bench/edge_device.py``) a policy is trained for that slowdown alone (``edgeml
train-agent --edge-slowdown S``) and evaluated on the held-out trace files (``edgeml
evaluate --edge-slowdown S``), and so is the shipped policy, trained for the whole range.
The table shows timely accuracy per policy, the best heuristic, the oracle and the headroom
PPO captures, ``(PPO - best heuristic) / (oracle - best heuristic)``, per slowdown; the
JSON keeps every evaluation, the PNG plots timely accuracy over slowdown.

``shipped`` in the JSON: one policy for the supported range should stay within 1 point of
each slowdown's own policy. ``--shipped-only`` re-evaluates just the shipped policy into an
existing JSON (no retraining).

    .venv/bin/python bench/edge_speeds.py --traces ../shared/traces          # ~20 min here
    .venv/bin/python bench/edge_speeds.py --traces ../shared/traces --slowdowns 4,24 \
        --timesteps 200000
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
EDGEML = [sys.executable, "-m", "edgeml.cli"]
sys.path.insert(0, str(REPO))
from edgeml.rl_agent.evaluate import HEURISTICS, headroom  # noqa: E402


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--traces", required=True)
    p.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    p.add_argument("--slowdowns", default="4,8,12,24")
    p.add_argument("--timesteps", type=int, default=1_000_000)
    p.add_argument("--shipped-only", action="store_true",
                   help="keep --out's own results; evaluate only the shipped policy")  # fmt: skip
    p.add_argument("--work", type=Path, default=Path("/tmp/edgeml-edge-speeds"))
    p.add_argument("--out", type=Path, default=HERE / "results" / "edge_speeds.json")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    if args.shipped_only:
        results = json.loads(args.out.read_text())["results"]
    for s in [float(v) for v in args.slowdowns.split(",")]:
        flag = ["--edge-slowdown", f"{s:g}"]
        out = args.work / f"eval_shipped_{s:g}.json"  # the one shipped policy at this speed
        run([*EDGEML, "evaluate", args.bundle, "--traces", args.traces, "--policy",
             str(SHIPPED), "--json", str(out), "--no-progress", *flag])  # fmt: skip
        shipped = json.loads(out.read_text())["policies"]["ppo"]["timely_accuracy"]
        if args.shipped_only:
            results[f"{s:g}"]["shipped"] = shipped
            continue
        policy = args.work / f"ppo_{s:g}.zip"  # trained for this slowdown alone
        if not policy.exists():
            run([
                *EDGEML, "train-agent", args.bundle, "--traces", args.traces, "--out",
                str(policy), "--timesteps", str(args.timesteps), "--no-progress", *flag,
            ])  # fmt: skip
        out = args.work / f"eval_{s:g}.json"
        run([*EDGEML, "evaluate", args.bundle, "--traces", args.traces, "--policy", str(policy),
             "--json", str(out), "--no-progress", *flag])  # fmt: skip
        pol = json.loads(out.read_text())["policies"]
        results[f"{s:g}"] = {"policy": str(policy), "headroom": headroom(pol), "policies": pol,
                             "shipped": shipped}  # fmt: skip
    names = ["ppo", "oracle", *HEURISTICS]
    print("\n| slowdown | " + " | ".join(names)
          + " | best heuristic | headroom | captured | shipped | shipped - own |")  # fmt: skip
    print("|---" * (len(names) + 6) + "|")
    for key, r in results.items():
        h, pol = r["headroom"], r["policies"]
        cap = "n/a" if h["captured"] is None else f"{100 * h['captured']:.0f}%"
        cells = " | ".join(f"{pol[n]['timely_accuracy']:.3f}" if n in pol else "-" for n in names)
        gap = 100 * (r["shipped"] - pol["ppo"]["timely_accuracy"])
        print(
            f"| {key}x | {cells} | {h['best_heuristic']} | {h['headroom_points']:.1f} pt | {cap} "
            f"| {r['shipped']:.3f} | {gap:+.2f} pt |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"traces": args.traces, "results": results}, indent=2) + "\n")
    from edgeml.rl_agent.plot import plot_sweep

    shown = {k: {"policies": {**r["policies"], "shipped": {"timely_accuracy": r["shipped"]}}}
             for k, r in results.items()}  # fmt: skip
    plot_sweep(
        shown,
        [n for n in ["shipped", *names] if all(n in r["policies"] for r in shown.values())],
        "edge slowdown (x this machine's ONNX core)",
        "timely accuracy",
        args.out.with_suffix(".png"),
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
