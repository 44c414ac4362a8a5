"""Shipped bundles: accuracy per clutter level and exit, FLOPs and one-core latency per exit.

Shows the two facts the default scenario rests on: the full network misses the 100 ms
deadline on the emulated edge (one core here slowed 12x) while the first exit meets it.

The manifest's test accuracy rests on 5,000 frames (1,000 per clutter level: a 95% interval
of about +-2 points). ``--test-frames N`` re-evaluates the default bundle on the first N
frames of the same test stream (a superset of the manifest's) and reports Wilson intervals.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

from edgeml.assets import default_bundle, fixture_bundle
from edgeml.build import accuracy_report
from edgeml.bundle import Bundle
from edgeml.data.torch_datasets import SceneDataset
from edgeml.partition.profiler import torch_threads
from edgeml.progressive.calibrate import calibrate
from edgeml.progressive.flops import exit_flops


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``p`` measured on ``n`` samples."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def scene_accuracy(b: Bundle, frames: int) -> dict:
    """Per-exit accuracy (overall and per level, with intervals) on ``frames`` test frames."""
    seed = b.manifest.build["config"]["seed"]
    cal = calibrate(b.net, SceneDataset("test", frames, seed), has_levels=True, progress=True)
    rep = accuracy_report(cal)
    counts = {str(lv): int((cal.difficulty == lv).sum()) for lv in sorted(set(cal.difficulty))}
    rep["per_level_n"] = counts
    rep["per_level_ci95"] = {
        lv: [[round(x, 4) for x in wilson(a, counts[lv])] for a in accs]
        for lv, accs in rep["per_level"].items()
    }
    return rep


def exit_latency_ms(b: Bundle, repeats: int) -> list[float]:
    x = torch.zeros(1, *b.manifest.input_shape)
    out = []
    with torch.no_grad():
        for k in b.net.exits:
            for _ in range(5):
                b.net.head(k, b.net.run_blocks(x, 0, k))
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                b.net.head(k, b.net.run_blocks(x, 0, k))
                times.append((time.perf_counter() - t) * 1e3)
            out.append(statistics.median(times))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--edge-slowdown", type=float, default=12.0)
    ap.add_argument("--deadline-ms", type=float, default=100.0)
    ap.add_argument("--json", default="bench/results/bundles.json")
    ap.add_argument(
        "--test-frames", type=int, default=0,
        help="re-evaluate the default bundle on this many test frames (0: the manifest's)",
    )  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = {}
    for name, path in (("default", default_bundle()), ("fixture", fixture_bundle())):
        b = Bundle.load(path)
        lat = exit_latency_ms(b, args.repeats)
        flops = exit_flops(b.net, b.manifest.input_shape)
        acc = b.manifest.build["test_accuracy"]
        results[name] = {
            "model": b.manifest.model,
            "dataset": b.manifest.dataset,
            "exits": b.net.exits,
            "flops": flops,
            "flops_share": [f / flops[-1] for f in flops],
            "latency_ms_one_core": lat,
            "edge_ms": [v * args.edge_slowdown for v in lat],
            "meets_deadline_on_edge": [v * args.edge_slowdown <= args.deadline_ms for v in lat],
            "test_accuracy": acc,
            "build_seconds": b.manifest.build["total_seconds"],
            "build_command": b.manifest.build["command"],
        }
        if name == "default" and args.test_frames:
            with torch_threads(2):
                results[name]["test_accuracy_large"] = big = scene_accuracy(b, args.test_frames)
            print(f"\ndefault on {big['samples']} test frames (95% Wilson interval):")
            for lv, accs in big["per_level"].items():
                cis = big["per_level_ci95"][lv]
                cells = "  ".join(
                    f"{a:.3f} [{lo:.3f},{hi:.3f}]" for a, (lo, hi) in zip(accs, cis, strict=True)
                )
                print(f"  clutter {lv} (n={big['per_level_n'][lv]}): {cells}")
        print(
            f"\n{name}: {b.manifest.model['name']} on {b.manifest.dataset}, "
            f"built in {b.manifest.build['total_seconds'] / 60:.1f} min"
        )
        print(
            f"{'exit':>5} {'block':>5} {'MFLOPs':>8} {'share':>6} {'1-core ms':>9} "
            f"{'edge ms':>8} {'ok@' + str(int(args.deadline_ms)):>6}  accuracy by level"
        )
        for i, k in enumerate(b.net.exits):
            levels = " ".join(f"{acc['per_level'][lv][i]:.3f}" for lv in sorted(acc["per_level"]))
            print(
                f"{i:>5} {k:>5} {flops[i] / 1e6:>8.1f} {flops[i] / flops[-1]:>6.2f} "
                f"{lat[i]:>9.2f} {lat[i] * args.edge_slowdown:>8.1f} "
                f"{str(lat[i] * args.edge_slowdown <= args.deadline_ms):>6}  {levels}"
            )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
