"""How well live edges knew their link: bandwidth estimate over the emulated link, per run.

The simulator's edge measures each transfer exactly (``8 * nbytes / transfer time`` on the
trace). A live edge measures a gRPC call: what the call took beyond the emulated link's
serialization and propagation is the stack's own per-request time, and the estimator
(:mod:`edgeml.runtime.estimator`) subtracts only the RTT it measured with health pings. On a
slow link that remainder is a few percent of the transfer; on a fast one it is most of it,
and the edge believes its link slower than it is, so a policy that reads the estimate
offloads less than in the simulator.

This reads the per-input JSONL of any live run (``edgeml demo``'s or ``edgeml fleet``'s
output directory) and prints, per policy: the median ratio of the edge's estimate to the
link's true rate when the input arrived (``bw_estimate_mbps / link_mbps``), split at
``--fast-mbps``, and the median per-request time beyond the emulated link
(``network - uplink - RTT/2`` of the offloads).

    .venv/bin/python bench/link_estimates.py demo-out bench/results/fleet_live
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _median(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 3) if xs else None


def run_stats(records: list[dict[str, Any]], fast_mbps: float, rtt_ms: float) -> dict[str, Any]:
    """Estimate/link ratios (slow and fast links) and the per-request overhead of a run."""
    slow: list[float] = []
    fast: list[float] = []
    for r in records:
        est, link = r.get("bw_estimate_mbps"), r.get("link_mbps")
        if est and link:
            (fast if link > fast_mbps else slow).append(est / link)
    over = [
        r["latency_ms"]["network"] - r["latency_ms"]["uplink"] - rtt_ms / 2
        for r in records
        if r["where"] == "cloud" and r["latency_ms"]["uplink"] > 0
    ]
    return {
        "inputs": len(records),
        "est_over_link_slow": _median(slow), "slow_inputs": len(slow),
        "est_over_link_fast": _median(fast), "fast_inputs": len(fast),
        "overhead_ms_median": _median(over), "offloads": len(over),
    }  # fmt: skip


def directory_stats(path: Path, fast_mbps: float, rtt_ms: float) -> dict[str, dict[str, Any]]:
    """Per policy (the JSONL's ``run`` field) of one live-run directory; ``rtt_ms`` is the
    emulated link's RTT (the run's ``--rtt-ms``)."""
    by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in sorted(path.glob("*.jsonl")):
        for line in f.read_text().splitlines():
            rec = json.loads(line)
            by_run[str(rec["run"])].append(rec)
    return {name: run_stats(recs, fast_mbps, rtt_ms) for name, recs in sorted(by_run.items())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="+", type=Path, help="live-run output directories")
    ap.add_argument("--fast-mbps", type=float, default=10.0, help="slow/fast link boundary")
    ap.add_argument("--rtt-ms", type=float, default=40.0, help="the runs' emulated RTT")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "link_estimates.json")
    args = ap.parse_args()
    results = {str(d): directory_stats(d, args.fast_mbps, args.rtt_ms) for d in args.dirs}
    print(f"{'run':<34} {'policy':<14} {'est/link slow':>13} {'est/link fast':>13} "
          f"{'overhead ms':>11} {'offloads':>8}")  # fmt: skip
    for d, pols in results.items():
        for name, s in pols.items():
            print(f"{d[-34:]:<34} {name:<14} {s['est_over_link_slow']!s:>13} "
                  f"{s['est_over_link_fast']!s:>13} {s['overhead_ms_median']!s:>11} "
                  f"{s['offloads']:>8}")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"fast_mbps": args.fast_mbps, "rtt_ms": args.rtt_ms, "results": results}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
