"""Block boundaries of a :class:`ProgressiveNet` as fx cut points.

A ProgressiveNet's ``forward`` runs every block and the final head, so the generic tracer
of :mod:`edgeml.partition.graph` handles it; this module only names which of its cuts are
the bundle's splits ``0..N`` (split ``s`` carries the output of block ``s``), so the
runtime can use :func:`~edgeml.partition.graph.split` on the same places the cost model
and the action space talk about.
"""

from __future__ import annotations

import torch
from torch import fx

from edgeml.models.progressive_net import ProgressiveNet
from edgeml.partition.graph import CutPoint, PartitionError, find_cut_points, split, trace

__all__ = ["block_cut_points", "split_at_block"]


def _outer_block(node: fx.Node) -> int | None:
    """1-based index of the top-level block a traced node belongs to, if any."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    key, value = next(iter(stack.items()))
    path = value[0] if isinstance(value, tuple) else key
    parts = str(path).split("@")[0].split(".")
    if len(parts) >= 2 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1]) + 1
    return None


def block_cut_points(net: ProgressiveNet, example_input: torch.Tensor) -> list[CutPoint]:
    """The cut for every split ``0..N``: the input, then the output of each block.

    Raises :class:`PartitionError` when a block's output is not a single-tensor cut (e.g. a
    block that forwards two tensors).
    """
    last_node: dict[int, str] = {}
    for node in trace(net).nodes:
        k = _outer_block(node)
        if k is not None:
            last_node[k] = node.name
    # A block's output stays a cut of its own even when the next op only re-expresses it.
    cuts = find_cut_points(net, example_input, keep=set(last_node.values()))
    by_node = {c.node: c for c in cuts}
    out = [cuts[0]]
    for k in range(1, net.num_blocks + 1):
        name = last_node.get(k)
        if name not in by_node:
            raise PartitionError(
                f"block {k}: its output ({name or 'no traced op'}) is not a cut point; "
                f"cuts are {', '.join(by_node)}"
            )
        out.append(by_node[name])
    return out


def split_at_block(
    net: ProgressiveNet, s: int, example_input: torch.Tensor
) -> tuple[fx.GraphModule, fx.GraphModule]:
    """Head (blocks ``1..s``) and tail (blocks ``s+1..N`` + final head) of ``net``."""
    if not 0 <= s <= net.num_blocks:
        raise ValueError(f"split: {s} not in 0..{net.num_blocks}")
    return split(net, block_cut_points(net, example_input)[s])
