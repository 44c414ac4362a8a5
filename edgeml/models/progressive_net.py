"""ProgressiveNet: an ordered list of blocks with exit heads after some of them.

The structure lives in the model zoo so zoo factories can build it; the early-exit rule,
exit training and calibration live in :mod:`edgeml.progressive`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn


class ProgressiveNet(nn.Module):
    """Blocks ``1..N`` run in order; ``heads[k]`` classifies the output of block ``k``.

    ``forward`` returns the final exit's logits, so the net is an ordinary classifier to
    torch.fx and to the partitioner; :meth:`forward_exits` returns every exit (training).

    :param blocks: the backbone, in execution order (block ``k`` is ``blocks[k - 1]``).
    :param heads: exit head per 1-based block index; the last block must have one.
    """

    def __init__(self, blocks: Sequence[nn.Module], heads: Mapping[int, nn.Module]) -> None:
        super().__init__()
        if not blocks:
            raise ValueError("blocks: need at least one block")
        n = len(blocks)
        bad = [k for k in heads if not 1 <= k <= n]
        if bad:
            raise ValueError(f"heads: block indices {bad} outside 1..{n}")
        if n not in heads:
            raise ValueError(f"heads: the last block ({n}) must have the final exit head")
        self.blocks = nn.ModuleList(blocks)
        self.exits: tuple[int, ...] = tuple(sorted(heads))
        self.heads = nn.ModuleDict({str(k): heads[k] for k in self.exits})
        # Set by edgeml.partition.module_net.from_module: the cut node names of the source
        # module that the blocks end at.
        self.cut_nodes: tuple[str, ...] | None = None

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def exit_block(self, exit_index: int) -> int:
        """Block index of exit ``exit_index`` (0-based position in :attr:`exits`)."""
        if not 0 <= exit_index < len(self.exits):
            raise ValueError(f"exit: {exit_index} not in 0..{len(self.exits) - 1}")
        return self.exits[exit_index]

    def run_blocks(self, h: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Run blocks ``start+1..stop`` (``start`` blocks have already run)."""
        for i in range(start, stop):
            h = self.blocks[i](h)
        return h

    def head(self, block: int, h: torch.Tensor) -> torch.Tensor:
        """Logits of the exit head after ``block``."""
        return self.heads[str(block)](h)

    def forward_exits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits at every exit, in order (used by joint exit training)."""
        out = []
        for i, block in enumerate(self.blocks, start=1):
            x = block(x)
            if str(i) in self.heads:
                out.append(self.heads[str(i)](x))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.heads[str(self.num_blocks)](x)
