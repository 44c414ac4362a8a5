"""The early-exit rule of the action semantics, shared by edge, cloud and calibration.

For action ``(s, e, tau)``: run blocks in order; at every exit ``k <= e`` evaluate its head;
stop at the first exit whose confidence ``>= tau``, or at ``e``. ``tau >= 1`` never stops
early (a saturated fp32 softmax can reach exactly 1.0, so the rule must not rely on it),
so with ``tau >= 1`` only exit ``e``'s head runs; the cost model counts heads the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgeml.models.progressive_net import ProgressiveNet
from edgeml.progressive.rule import Answer, stops_at

__all__ = ["Answer", "SegmentResult", "run_action", "run_segment", "stops_at"]


@dataclass
class SegmentResult:
    """Outcome of running blocks ``start+1..stop`` for a batch.

    ``answers[i]`` is set for rows that stopped at an exit; ``hidden`` holds the tensor at
    ``stop`` for the rows that did not (``pending`` are their row indices).
    """

    answers: list[Answer | None]
    hidden: torch.Tensor | None
    pending: list[int]


@torch.no_grad()
def run_segment(
    net: ProgressiveNet,
    h: torch.Tensor,
    start: int,
    stop: int,
    exit_index: int,
    taus: torch.Tensor | float,
) -> SegmentResult:
    """Run blocks ``start+1..stop`` of ``net`` on a batch under the early-exit rule.

    ``exit_index`` is the action's ``e`` (a position in ``net.exits``); ``taus`` is one
    threshold or one per row. Exits at blocks ``<= start`` were evaluated by the other side.
    The run never goes past ``e``'s block, so ``stop`` is clipped to it.
    """
    e_block = net.exit_block(exit_index)
    stop = min(stop, e_block)
    n = h.shape[0]
    if stop <= start:  # nothing to run (split 0 offloads the input): skip the set-up
        return SegmentResult([None] * n, h if n else None, list(range(n)))
    tau = torch.as_tensor(taus, dtype=torch.float32).expand(n) if n else torch.zeros(0)
    answers: list[Answer | None] = [None] * n
    rows = torch.arange(n)
    for block in range(start + 1, stop + 1):
        h = net.blocks[block - 1](h)
        if block not in net.exits or not len(rows):
            continue
        if block != e_block and bool((tau[rows] >= 1.0).all()):
            continue  # no row can stop here: skipping the head changes no answer
        probs = torch.softmax(net.head(block, h), dim=1)
        conf, cls = probs.max(dim=1)
        done = (conf >= tau[rows]) & (tau[rows] < 1.0)
        if block == e_block:
            done[:] = True
        k = net.exits.index(block)
        for j in torch.nonzero(done).flatten().tolist():
            answers[int(rows[j])] = Answer(int(cls[j]), float(conf[j]), k, block)
        keep = ~done
        rows, h = rows[keep], h[keep]
    return SegmentResult(answers, h if len(rows) else None, rows.tolist())


def run_action(net: ProgressiveNet, x: torch.Tensor, exit_index: int, tau: float) -> list[Answer]:
    """Whole-network reference run of an action (the split does not change the answer)."""
    res = run_segment(net, x, 0, net.num_blocks, exit_index, tau)
    return [a for a in res.answers if a is not None]
