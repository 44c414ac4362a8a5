"""The cloud's batch timings: each block and exit head at every batch size the server forms.

One edge on an idle cloud runs at batch 1, and the profile's ``blocks_ms``/``heads_ms`` say
what that costs. A shared cloud batches requests of the same (split, exit) (see
:mod:`edgeml.transport.batching`), and a batch of ``b`` rows costs far less than ``b`` single
runs but more than one. :func:`cloud_batch_timings` times every block and head at each size
of :data:`BATCH_SIZES` (median over interleaved passes, one torch thread as the server runs),
and the profile keeps them under ``cloud_batch``; the fleet simulator's cloud
(:mod:`edgeml.decision.cloud`) reads its service times from there.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

from edgeml.models.progressive_net import ProgressiveNet

__all__ = ["BATCH_SIZES", "cloud_batch_timings"]

#: Batch sizes timed (the server's default ``max_batch`` is 16; 32 covers a larger setting).
BATCH_SIZES = (1, 2, 4, 8, 16, 32)


@torch.no_grad()
def cloud_batch_timings(
    net: ProgressiveNet,
    inputs: Sequence[torch.Tensor],
    repeats: int,
    warmup: int,
    sizes: Sequence[int] = BATCH_SIZES,
) -> dict[str, Any]:
    """Median ms of each block and head per batch size, on batches cut from ``inputs``.

    ``inputs``: model inputs of batch 1 (repeated to fill larger batches). Sizes are
    interleaved within each pass, so a load burst moves all of them alike.
    """
    clock = time.thread_time_ns
    exits = {b: i for i, b in enumerate(net.exits)}
    x = torch.cat([inputs[i % len(inputs)] for i in range(max(sizes))])
    blocks: dict[int, list[list[float]]] = {b: [[] for _ in net.blocks] for b in sizes}
    heads: dict[int, list[list[float]]] = {b: [[] for _ in net.exits] for b in sizes}
    for r in range(warmup + repeats):
        for b in sizes:
            h = x[:b]
            for k, block in enumerate(net.blocks, start=1):
                t0 = clock()
                h = block(h)
                t1 = clock()
                if k in exits:
                    torch.softmax(net.heads[str(k)](h), dim=1).max(dim=1)
                if r >= warmup:
                    blocks[b][k - 1].append((t1 - t0) / 1e6)
                    if k in exits:
                        heads[b][exits[k]].append((clock() - t1) / 1e6)
    return {
        "batch_sizes": list(sizes),
        "threads": torch.get_num_threads(),
        "blocks_ms": [[round(statistics.median(v), 5) for v in blocks[b]] for b in sizes],
        "heads_ms": [[round(statistics.median(v), 5) for v in heads[b]] for b in sizes],
    }
