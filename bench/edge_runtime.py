"""The edge's runtimes side by side: torch eager, ONNX Runtime fp32 and ONNX Runtime int8.

Per exit path (blocks 1..b and exit head b, no early stop: the cost of answering at that
exit on the edge) on ONE thread, one input at a time, the three runners interleaved in one
run so the machine's noise falls on all of them alike; medians of warm runs. Then top-1
accuracy per exit of each runner on the bundle's test frames (>= 5,000), so the int8 loss
is measured, not assumed.

Last, the cloud's side of the same question: the cloud's work (the blocks after a split and
the final head) at the batch sizes its batcher forms, torch against ONNX Runtime fp32, both
on ``--cloud-threads`` threads: the cloud stays on torch unless ONNX Runtime wins there too.

    .venv/bin/python bench/edge_runtime.py [--bundle DIR] [--runs 60] [--frames 5000]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeml.assets import default_bundle
from edgeml.bundle import Bundle
from edgeml.data.preprocess import dataset_frames
from edgeml.partition.profiler import cpu_model
from edgeml.runtime.edge_net import EdgeNet, OnnxEdgeNet, TorchEdgeNet, describe

HERE = Path(__file__).resolve().parent


def cloud_side(bundle: Bundle, x: np.ndarray, threads: int, runs: int) -> list[dict[str, Any]]:
    """Median ms of the cloud's work after split 0 and after the middle cut, per batch size,
    torch vs ONNX Runtime fp32 on ``threads`` threads (interleaved)."""
    m = bundle.manifest
    nets: dict[str, EdgeNet] = {"torch/fp32": TorchEdgeNet(bundle, threads),
            "onnx/fp32": OnnxEdgeNet(bundle, "fp32", threads)}  # fmt: skip
    last = len(m.exits) - 1
    rows: list[dict[str, Any]] = []
    print(f"\ncloud side ({threads} threads): blocks after the split + final head")
    print(f"{'split':>6}{'batch':>7}{'torch':>10}{'onnx':>10}{'torch/onnx':>12}")
    for split in (0, m.blocks // 2):
        for batch in (1, 8, 32):
            h: np.ndarray | None = x[:batch]
            if split:
                h = nets["onnx/fp32"].run_segment(x[:batch], 0, split, last, 1.0).hidden
            assert h is not None
            times: dict[str, list[float]] = {n: [] for n in nets}
            for r in range(runs + 3):
                for name, net in nets.items():
                    t0 = time.perf_counter()
                    net.run_segment(h, split, m.blocks, last, 1.0)
                    if r >= 3:
                        times[name].append(1e3 * (time.perf_counter() - t0))
            med = {n: statistics.median(v) for n, v in times.items()}
            ratio = med["torch/fp32"] / med["onnx/fp32"]
            rows.append({"split": split, "batch": batch, "ms": med, "torch_over_onnx": ratio})
            print(f"{split:>6}{batch:>7}{med['torch/fp32']:>8.2f}ms{med['onnx/fp32']:>8.2f}ms"
                  f"{ratio:>11.2f}x")  # fmt: skip
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=default_bundle())
    p.add_argument("--runs", type=int, default=60)
    p.add_argument("--frames", type=int, default=5000)
    p.add_argument("--cloud-threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=HERE / "results" / "edge_runtime.json")
    args = p.parse_args()
    bundle = Bundle.load(args.bundle, need_calibration=False)
    nets: list[EdgeNet] = [
        TorchEdgeNet(bundle, 1), OnnxEdgeNet(bundle, "fp32"), OnnxEdgeNet(bundle, "int8")
    ]  # fmt: skip
    names = [describe(n) for n in nets]
    m = bundle.manifest
    seed = int(m.build.get("config", {}).get("seed", 0))
    x, labels, _ = dataset_frames(m.dataset, "test", args.frames, seed)
    one = x[:1]
    ms: dict[str, dict[int, list[float]]] = {n: {b: [] for b in m.exits} for n in names}
    for r in range(args.runs + 5):  # 5 warm-up rounds
        for b in m.exits:
            for name, net in zip(names, nets, strict=True):
                t0 = time.perf_counter()
                net.run_segment(one, 0, m.blocks, m.exits.index(b), 1.0)
                if r >= 5:
                    ms[name][b].append(1e3 * (time.perf_counter() - t0))
    med = {n: {b: statistics.median(v) for b, v in d.items()} for n, d in ms.items()}
    acc: dict[str, list[float]] = {}
    ref = nets[1].exit_logits(x)
    max_diff: dict[str, list[float]] = {}
    for name, net in zip(names, nets, strict=True):
        logits = ref if name == "onnx/fp32" else net.exit_logits(x)
        acc[name] = [float((lg.argmax(1) == labels).mean()) for lg in logits]
        max_diff[name] = [float(np.abs(lg - r).max()) for lg, r in zip(logits, ref, strict=True)]
    torch_ms, fp32, int8 = (med[n] for n in names)
    rows: list[dict[str, Any]] = []
    print(f"{'exit path':<22}" + "".join(f"{n:>12}" for n in names) + f"{'fp32 x':>9}{'int8 x':>9}")
    for i, b in enumerate(m.exits):
        path = f"blocks 1-{b} + exit {i}"
        rows.append({
            "exit": i, "block": b, "ms": {n: med[n][b] for n in names},
            "onnx_fp32_speedup": torch_ms[b] / fp32[b], "onnx_int8_speedup": torch_ms[b] / int8[b],
            "accuracy": {n: acc[n][i] for n in names},
            "int8_accuracy_loss_points": 100 * (acc["onnx/fp32"][i] - acc["onnx/int8"][i]),
            "max_abs_logit_diff_vs_onnx_fp32": {n: max_diff[n][i] for n in names},
        })  # fmt: skip
        print(f"{path:<22}" + "".join(f"{med[n][b]:>10.2f}ms" for n in names)
              + f"{torch_ms[b] / fp32[b]:>8.2f}x{torch_ms[b] / int8[b]:>8.2f}x")  # fmt: skip
    print(f"\ntop-1 per exit on {len(labels)} test frames ({m.dataset})")
    for n in names:
        print(f"{n:<12}" + "".join(f"{a:>9.4f}" for a in acc[n]))
    loss = [r["int8_accuracy_loss_points"] for r in rows]
    print("int8 loss vs fp32 (points): " + " ".join(f"{v:+.2f}" for v in loss))
    full = rows[-1]
    verdict = {
        "onnx_fp32_full_path_speedup": full["onnx_fp32_speedup"],
        "onnx_int8_full_path_speedup": full["onnx_int8_speedup"],
        "int8_max_accuracy_loss_points": max(loss),
        "fp32_ge_1_5x": full["onnx_fp32_speedup"] >= 1.5,
        "int8_ge_2x": full["onnx_int8_speedup"] >= 2.0,
        "int8_within_0_5_points": max(loss) <= 0.5,
    }
    print(json.dumps(verdict, indent=1))
    cloud = cloud_side(bundle, x, args.cloud_threads, max(10, args.runs // 3))
    result = {
        "bundle": str(args.bundle), "weights_sha256": m.weights_sha256, "cpu": cpu_model(),
        "machine": platform.machine(), "threads": 1, "runs": args.runs, "batch": 1,
        "test_frames": int(len(labels)), "rows": rows, "verdict": verdict, "cloud": cloud,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
