"""The edge's own timings when it runs its blocks on ONNX Runtime (fp32 or int8).

The profile's ``blocks_ms``/``heads_ms`` are torch's, on this machine: the cloud's numbers,
and the edge's when it runs torch. An edge on ONNX Runtime computes the same blocks faster
(and int8 faster still), so planning with torch's numbers would make it offload or stop
early where it could answer deeper locally. :func:`edge_runtime_timings` times every ONNX
variant the bundle ships in whole passes, as :class:`~edgeml.partition.profiler.PassTimer`
times torch (each block where a real run executes it, each head plus the softmax/max the
rule judges), and the profile keeps them under ``edge_runtimes`` keyed ``onnx/fp32``,
``onnx/int8``; the cost model takes the edge side from there
(:meth:`~edgeml.partition.cost.CostModel.from_profile`'s ``edge_runtime``). Each variant
also gets its own ``offload_fixed_ms`` (:func:`cold_path_ms` of its split-0 offload path):
an ONNX edge's split 0 only casts and encodes, and its cold path costs less than torch's
segment set-up (the README has the measured figures).

With one ONNX Runtime thread the session runs on the calling thread, so the clock is the
thread's CPU time, as for torch.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgeml.bundle import Bundle
from edgeml.decision.scenario import EDGE_PRECISIONS

log = logging.getLogger(__name__)

__all__ = ["cold_path_ms", "edge_runtime_timings"]


def cold_path_ms(
    path: Callable[[], object],
    before: Callable[[], object],
    rounds: int = 20,
    idle_s: float = 0.1,
    clock: Callable[[], int] = time.thread_time_ns,
) -> float:
    """How much longer ``path`` takes from an idle core than back to back (ms, >= 0).

    The edge's inputs come ``idle_s`` apart (0.1 s at 10 inputs/s), and by then the code and
    data of its offload path have left the caches. Timed as the daemon runs it: ``before``
    (the input's difficulty feature, computed before deciding), a pause, then the path; the
    cold median minus the warm median of the same path.
    """
    for _ in range(3):
        path()
    warm: list[float] = []
    for _ in range(rounds):
        t0 = clock()
        path()
        warm.append((clock() - t0) / 1e6)
    cold: list[float] = []
    for _ in range(rounds):
        time.sleep(idle_s)
        before()
        t0 = clock()
        path()
        cold.append((clock() - t0) / 1e6)
    return max(statistics.median(cold) - statistics.median(warm), 0.0)


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
    codec: str = "int8",
) -> dict[str, dict[str, Any]]:
    """Block and head medians of every ONNX variant the bundle ships, and the fixed cost of
    its split-0 offload path with ``codec`` (``offload_fixed_ms``), keyed
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
    feature = bundle.manifest.difficulty_feature
    for precision in EDGE_PRECISIONS:
        if not bundle.manifest.has_onnx(precision):
            continue
        net = OnnxEdgeNet(bundle, precision, threads=1)
        xs = [np.ascontiguousarray(x, dtype=np.float32) for x in inputs]
        timings = _variant_timings(net, xs, repeats, warmup, min_seconds)
        timings["offload_fixed_ms"] = round(_offload_fixed_ms(net, xs[0], codec, feature), 5)
        out[f"onnx/{precision}"] = timings
    return out


def _offload_fixed_ms(net: Any, x: np.ndarray, codec: str, feature: str) -> float:
    """:func:`cold_path_ms` of what an ONNX edge runs to offload at split 0."""
    from edgeml.data.features import difficulty_feature
    from edgeml.partition.codecs import encode, to_bytes

    last = len(net.exits) - 1

    def path() -> None:
        res = net.run_segment(x, 0, 0, last, 1.0)
        to_bytes(encode(res.hidden, codec))

    return cold_path_ms(path, lambda: difficulty_feature(x, feature))
