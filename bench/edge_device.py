"""Which edge slowdown stands for which device class: a published board figure over this core.

The cost model emulates an edge as "this machine's core, ``edge_slowdown`` times slower".
To name the device a slowdown represents, this script times a model whose latency on a
board is published -- MobileNet v1 (1.0, 224x224, the standard depthwise-separable
network, written out here) -- on ONE core of this machine with ONNX Runtime (fp32, opset 17,
all optimisations), and divides the published board figures by it:

* Raspberry Pi 4 (Cortex-A72, 1.5 GHz), MobileNet v1 1.0_224 on the CPU: 87 ms
  (TildAlice, "MobileNet vs EfficientNet-Lite: Pi 4 first model 38ms gap", dev.to, 2026);
* Raspberry Pi 3B+ (Cortex-A53, 1.4 GHz): about 2x the Pi 4's inference time (Alasdair
  Allan, "Benchmarking Machine Learning on the New Raspberry Pi 4, Model B", hackster.io,
  2019: "an approximate x2 increase in inferencing speed" from the Pi 3 to the Pi 4).

Board figures come from other runtimes and thread counts than ours, so the ratio names a
device class, not a device. Medians of interleaved warm runs.

    .venv/bin/python bench/edge_device.py
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from edgeml.partition.profiler import cpu_model

HERE = Path(__file__).resolve().parent
PUBLISHED_MS = {"raspberry-pi-4": 87.0, "raspberry-pi-3b+": 2 * 87.0}


def mobilenet_v1(num_classes: int = 1000) -> nn.Module:
    """MobileNet v1 1.0 (Howard et al. 2017, table 1): 13 depthwise-separable blocks."""

    def separable(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
            nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
        )  # fmt: skip

    plan = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1)]
    plan += [(256, 512, 2), *[(512, 512, 1)] * 5, (512, 1024, 2), (1024, 1024, 1)]
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        *[separable(*p) for p in plan], nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(1024, num_classes),
    )  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=60)
    p.add_argument("--out", type=Path, default=HERE / "results" / "edge_device.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    model = mobilenet_v1().eval()
    x = torch.randn(1, 3, 224, 224)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mobilenet_v1.onnx"
        torch.onnx.export(model, (x,), str(path), opset_version=17, dynamo=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x.numpy()}
    onnx_ms, torch_ms = [], []
    for r in range(args.runs + 5):
        t0 = time.perf_counter()
        sess.run(None, feed)
        t1 = time.perf_counter()
        with torch.no_grad():
            model(x)
        t2 = time.perf_counter()
        if r >= 5:
            onnx_ms.append((t1 - t0) * 1e3)
            torch_ms.append((t2 - t1) * 1e3)
    here = statistics.median(onnx_ms)
    rows = {name: round(ms / here, 1) for name, ms in PUBLISHED_MS.items()}
    print(
        f"MobileNet v1 1.0_224, one core of {cpu_model()}: ONNX Runtime {here:.2f} ms, "
        f"torch eager {statistics.median(torch_ms):.2f} ms (medians of {args.runs})"
    )
    print("| device class | published ms | slowdown vs this core (ONNX) |\n|---|---|---|")
    for name, ms in PUBLISHED_MS.items():
        print(f"| {name} | {ms:g} | {rows[name]:g}x |")
    result = {
        "machine": {"cpu": cpu_model(), "python": platform.python_version()},
        "model": "mobilenet_v1_1.0_224", "threads": 1, "runs": args.runs,
        "onnx_ms_median": round(here, 3), "torch_ms_median": round(statistics.median(torch_ms), 3),
        "published_ms": PUBLISHED_MS, "slowdown": rows, "numpy": np.__version__,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
