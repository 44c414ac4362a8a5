"""FLOPs per exit, counted by torch's own FLOP counter (no hand-written formulas)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from edgeml.models.progressive_net import ProgressiveNet


@torch.no_grad()
def exit_flops(net: ProgressiveNet, input_shape: tuple[int, ...]) -> list[int]:
    """FLOPs of running blocks ``1..k`` plus exit ``k``'s head, for every exit ``k``."""
    net.eval()
    out = []
    for k in net.exits:
        with FlopCounterMode(display=False) as counter:
            net.head(k, net.run_blocks(torch.zeros(1, *input_shape), 0, k))
        out.append(int(counter.get_total_flops()))
    return out
