"""The edge's own timings when it runs its blocks on ONNX Runtime (fp32 or int8).

The profile's ``blocks_ms``/``heads_ms`` are torch's, on this machine: the cloud's numbers,
and the edge's when it runs torch. An edge on ONNX Runtime computes the same blocks faster
(and int8 faster still), so planning with torch's numbers would make it offload or stop
early where it could answer deeper locally. :func:`edge_runtime_timings` times every ONNX
variant the bundle ships in whole passes, as :class:`~edgeml.partition.profiler.PassTimer`
times torch (each block where a real run executes it, each head plus the softmax/max the
rule judges), and the profile keeps them under ``edge_runtimes`` keyed ``onnx/fp32``,
``onnx/int8``; the cost model takes the edge side from there
(:meth:`~edgeml.partition.cost.CostModel.from_profile`'s ``edge_runtime``).

With one ONNX Runtime thread the session runs on the calling thread, so the clock is the
thread's CPU time, as for torch.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeml.bundle import Bundle
from edgeml.decision.scenario import EDGE_PRECISIONS

log = logging.getLogger(__name__)

__all__ = ["edge_runtime_timings"]


def _variant_timings(
    net: Any, inputs: Sequence[np.ndarray], repeats: int, warmup: int, min_seconds: float
) -> dict[str, Any]:
    from edgeml.runtime.edge_net import softmax_max

    clock = time.thread_time_ns
    exits = {b: i for i, b in enumerate(net.exits)}
    blocks: list[list[float]] = [[] for _ in range(net.num_blocks)]
    heads: list[list[float]] = [[] for _ in net.exits]

    def one_pass(x: np.ndarray, record: bool) -> None:
        h = x
        for k in range(1, net.num_blocks + 1):
            t0 = clock()
            h = net.block(k, h)
            t1 = clock()
            if k in exits:
                softmax_max(net.head(k, h))
            if record:
                blocks[k - 1].append((t1 - t0) / 1e6)
                if k in exits:
                    heads[exits[k]].append((clock() - t1) / 1e6)

    for r in range(warmup):
        one_pass(inputs[r % len(inputs)], record=False)
    end = time.perf_counter() + min_seconds
    r = 0
    while r < repeats or time.perf_counter() < end:
        one_pass(inputs[r % len(inputs)], record=True)
        r += 1
    return {
        "blocks_ms": [round(statistics.median(v), 5) for v in blocks],
        "heads_ms": {str(b): round(statistics.median(heads[i]), 5) for b, i in exits.items()},
        "passes": r,
    }


def edge_runtime_timings(
    bundle: Bundle,
    inputs: Sequence[np.ndarray],
    repeats: int = 30,
    warmup: int = 6,
    min_seconds: float = 1.0,
) -> dict[str, dict[str, Any]]:
    """Block and head medians of every ONNX variant the bundle ships, keyed
    ``onnx/<precision>``; empty without ONNX files or without onnxruntime installed.

    :param inputs: batch-1 float32 inputs (the profile's validation frames).
    """
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        log.warning("onnxruntime is not installed: the profile has no ONNX edge timings")
        return {}
    from edgeml.runtime.edge_net import OnnxEdgeNet

    out: dict[str, dict[str, Any]] = {}
    for precision in EDGE_PRECISIONS:
        if not bundle.manifest.has_onnx(precision):
            continue
        net = OnnxEdgeNet(bundle, precision, threads=1)
        xs = [np.ascontiguousarray(x, dtype=np.float32) for x in inputs]
        out[f"onnx/{precision}"] = _variant_timings(net, xs, repeats, warmup, min_seconds)
    return out
