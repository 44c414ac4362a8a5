"""A :class:`ProgressiveNet` cut out of any traceable ``nn.Module`` at its fx cut points.

:func:`from_module` traces the user's module once, cuts its graph into consecutive blocks
at the chosen cut points (each block is an ``fx.GraphModule`` that shares the module's own
submodules and parameters), puts a fresh exit head after every chosen cut and keeps the
module's own classifier, inside the last block, as the final exit (its head is an
identity). Composed, the blocks are the module's ``forward``, op for op.

A bundle records how it was cut (:func:`spec_of`: the cut node names and the head
factory) next to the model reference, so :func:`rebuild` redoes the very same cuts in
another process from the manifest alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import fx, nn

from edgeml.errors import InputError
from edgeml.models.progressive_cnn import exit_head
from edgeml.models.progressive_net import ProgressiveNet
from edgeml.partition.graph import CutPoint, _cut_positions, _sub_graph, find_cut_points, trace

log = logging.getLogger(__name__)

__all__ = ["auto_exits", "default_head", "from_module", "rebuild", "select_cuts"]

HeadFactory = Callable[[tuple[int, ...], int], nn.Module]
MAX_AUTO_EXITS = 3


def default_head(shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The exit head for a cut tensor of ``shape`` (no batch): a cheap strided conv and a
    2x2 pooled map for a feature map ``(C, H, W)`` (the zoo's side exit), a linear layer
    for a feature vector ``(D,)``."""
    if len(shape) == 3:
        return exit_head(shape[0], num_classes, reduce=True)
    if len(shape) == 1:
        return nn.Linear(shape[0], num_classes)
    return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.Size(shape).numel()), num_classes))


def auto_exits(cuts: Sequence[CutPoint]) -> list[CutPoint]:
    """Side exits for ``exits_after="auto"``: the last cut of each spatial resolution.

    Feature-map cuts (``N, C, H, W`` with ``H, W > 1``) are grouped by resolution; each
    group's last cut ends a stage (``layer1``..``layer4`` of a ResNet). The deepest stage
    is dropped (the model's own classifier follows it) and the deepest
    ``MAX_AUTO_EXITS`` of the rest are kept. A net without such stages gets one exit at
    its middle cut.
    """
    inner = cuts[1:-1]
    stage_end: dict[tuple[int, int], CutPoint] = {}
    for c in inner:
        if len(c.shape) == 4 and c.shape[2] > 1 and c.shape[3] > 1:
            stage_end[c.shape[2:]] = c
    ends = sorted(stage_end.values(), key=lambda c: c.index)[:-1]
    if ends:
        return ends[-MAX_AUTO_EXITS:]
    if not inner:
        raise InputError("exits_after: the model has no inner cut point to put an exit at")
    return [inner[len(inner) // 2]]


def _module_end(gm_graph: fx.Graph, path: str) -> str | None:
    """Name of the last traced node inside submodule ``path`` (its output), if any."""
    last = None
    for node in gm_graph.nodes:
        stack = node.meta.get("nn_module_stack") or {}
        paths = [v[0] if isinstance(v, tuple) else k for k, v in stack.items()]
        if any(p == path or str(p).startswith(path + ".") for p in paths):
            last = node.name
    return last


def select_cuts(
    model: nn.Module,
    cuts: Sequence[CutPoint],
    exits_after: Sequence[str | int] | str,
    graph: fx.Graph | None = None,
) -> list[CutPoint]:
    """The cuts named by ``exits_after``: ``"auto"``, or cut node names, submodule paths
    (``"layer2"``: the cut at that module's output) or indices into ``cuts``."""
    if isinstance(exits_after, str):
        if exits_after != "auto":
            raise InputError(f"exits_after: {exits_after!r}; give 'auto' or a list of cuts")
        return auto_exits(cuts)
    by_node = {c.node: c for c in cuts}
    inner = {c.index for c in cuts[1:-1]}
    graph = graph if graph is not None else trace(model)
    chosen: list[CutPoint] = []
    for item in exits_after:
        if isinstance(item, int) and not isinstance(item, bool):
            if item not in inner:
                raise InputError(
                    f"exits_after: cut index {item} is not an inner cut (1..{len(cuts) - 2})"
                )
            chosen.append(cuts[item])
        elif isinstance(item, str) and item in by_node:
            chosen.append(by_node[item])
        elif isinstance(item, str) and _module_end(graph, item) in by_node:
            chosen.append(by_node[_module_end(graph, item)])  # type: ignore[index]
        else:
            raise InputError(
                f"exits_after: {item!r} is neither a cut point nor a submodule whose output "
                f"is one; cut points: {', '.join(c.node for c in cuts[1:-1])}"
            )
    chosen = sorted({c.index: c for c in chosen}.values(), key=lambda c: c.index)
    if not chosen or chosen[0].index == 0 or chosen[-1].index == cuts[-1].index:
        raise InputError("exits_after: need at least one cut between the input and the output")
    return chosen


def from_module(
    model: nn.Module,
    exits_after: Sequence[str | int] | str = "auto",
    example: torch.Tensor | None = None,
    exit_heads: Mapping[str, nn.Module] | HeadFactory | None = None,
    num_classes: int | None = None,
    input_shape: Sequence[int] | None = None,
) -> ProgressiveNet:
    """Cut ``model`` into blocks at ``exits_after`` and attach an exit head to each cut.

    :param model: a classifier whose ``forward(x)`` torch.fx can trace; its output (the
        logits) is the final exit, computed by its own layers inside the last block.
    :param exits_after: ``"auto"`` (:func:`auto_exits`) or cut node names, submodule paths
        or cut indices of :func:`~edgeml.partition.graph.find_cut_points`.
    :param example: an input batch (or give ``input_shape``) used to size the cuts.
    :param exit_heads: ``None`` (:func:`default_head`), a factory ``(shape, num_classes)
        -> nn.Module``, or a module per cut node name.
    :param num_classes: defaults to the size of the model's output.
    """
    if example is None:
        if input_shape is None:
            raise InputError("example: give an example input (or input_shape) to size the cuts")
        example = torch.zeros(1, *input_shape)
    cuts = find_cut_points(model, example)
    graph = trace(model)
    chosen = select_cuts(model, cuts, exits_after, graph)
    out_shape = cuts[-1].shape
    if len(out_shape) != 2:
        raise InputError(f"model: output shape {out_shape}; a classifier returns (N, classes)")
    classes = num_classes or int(out_shape[1])
    if classes != out_shape[1]:
        raise InputError(f"num_classes: {classes}, but the model outputs {out_shape[1]} logits")
    blocks = _cut_blocks(model, graph, [c.node for c in chosen])
    heads: dict[int, nn.Module] = {len(blocks): nn.Identity()}
    for k, cut in enumerate(chosen, start=1):
        shape = tuple(cut.shape[1:])
        if isinstance(exit_heads, Mapping):
            if cut.node not in exit_heads:
                raise InputError(f"exit_heads: no head for cut {cut.node!r}")
            heads[k] = exit_heads[cut.node]
        elif exit_heads is not None:
            heads[k] = exit_heads(shape, classes)
        else:
            heads[k] = default_head(shape, classes)
    net = ProgressiveNet(blocks, heads)
    net.cut_nodes = tuple(c.node for c in chosen)
    log.info(
        "from_module %s: %d blocks, exits after %s", type(model).__name__, len(blocks),
        ", ".join(net.cut_nodes),
    )  # fmt: skip
    return net


def _cut_blocks(model: nn.Module, graph: fx.Graph, nodes: Sequence[str]) -> list[nn.Module]:
    """Consecutive sub-graphs of ``graph`` ending at each named cut, then at the output."""
    positions = {node.name: (pos, node) for pos, node in _cut_positions(graph)}
    all_nodes = list(graph.nodes)
    blocks: list[nn.Module] = []
    start, inputs = 0, dict[fx.Node, str]()
    for name in nodes:
        pos, crossing = positions[name]
        sub = _sub_graph(all_nodes[start : pos + 1], inputs=inputs, output=crossing)
        blocks.append(fx.GraphModule(model, sub, class_name=f"Block{len(blocks) + 1}"))
        start, inputs = pos + 1, {crossing: crossing.name}
    sub = _sub_graph(all_nodes[start:], inputs=inputs, output=None)
    blocks.append(fx.GraphModule(model, sub, class_name=f"Block{len(blocks) + 1}"))
    return blocks


def spec_of(net: ProgressiveNet, head_ref: str | None = None) -> dict[str, Any]:
    """What the manifest records so :func:`rebuild` can redo ``net``'s cuts."""
    nodes = net.cut_nodes
    if nodes is None:
        raise InputError("net: not made by ProgressiveNet.from_module (no recorded cuts)")
    return {"exits_after": list(nodes), "exit_heads": head_ref or "default"}


def rebuild(model_field: Mapping[str, Any], input_shape: Sequence[int]) -> ProgressiveNet:
    """The bundle's network from its manifest ``model`` field (see the module docstring).

    ``{"name": ref, "kwargs": {...}}`` builds a zoo ProgressiveNet as it is;
    ``"progressive": {"exits_after": [...], "exit_heads": "default" | ref}`` cuts a plain
    module again at the recorded cut nodes.
    """
    from edgeml.models.references import load_model, resolve

    ref = model_field["name"]
    module = load_model(ref, model_field.get("kwargs", {}))
    spec = model_field.get("progressive")
    if spec is None:
        if not isinstance(module, ProgressiveNet):
            raise InputError(
                f"model: {ref!r} builds a {type(module).__name__}, not a ProgressiveNet, and "
                "the manifest has no 'model.progressive' cut spec"
            )
        return module
    if not isinstance(spec, Mapping) or not isinstance(spec.get("exits_after"), list):
        raise InputError("model.progressive: need {'exits_after': [cut names], 'exit_heads'}")
    head_ref = spec.get("exit_heads", "default")
    heads = None if head_ref in (None, "default") else resolve(str(head_ref))
    return from_module(module, spec["exits_after"], input_shape=input_shape, exit_heads=heads)
