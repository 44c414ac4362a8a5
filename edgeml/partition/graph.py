"""Cut points of a traceable model and the head/tail split at one of them.

A cut is a place in the topological order of the model's torch.fx graph where exactly one
tensor is live (produced before, consumed after). Only that tensor has to cross the network,
so a residual connection is never cut: inside it two tensors are live.

The listing has one name per distinct tensor: a cut whose next op only re-expresses it
(batch norm, an activation, dropout, a flatten/view: same element count, same dtype, and
nothing else live) is the same data under another name, so a chain such as
``conv1 -> bn1 -> relu`` or ``add -> relu`` gives one cut, named after its last op.
"""

from __future__ import annotations

import logging
import math
import os
import traceback
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

logger = logging.getLogger(__name__)

LeafTypes = Sequence[type[nn.Module]]

_HOW_TO_FIX = (
    "To make the model splittable: move data-dependent control flow (if/for/while on tensor "
    "values, len() or int() of a tensor) out of forward(); wrap a free function that does it "
    "with torch.fx.wrap; or keep the offending submodule whole by passing its type in "
    "leaf_modules=(...) (it then runs on one side of the split)."
)


class PartitionError(ValueError):
    """The model cannot be traced or split at the requested place."""


@dataclass(frozen=True)
class CutPoint:
    """One place the model can be split, and the tensor that crosses there.

    :param index: position in the list of cuts (0 = send the input, last = edge only)
    :param node: name of the fx node that produces the crossing tensor
    :param shape: shape of the crossing tensor for the example input (batch included)
    :param dtype: dtype of the crossing tensor
    :param nbytes: raw size of the crossing tensor for the example input
    """

    index: int
    node: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    nbytes: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (dtype as its name), e.g. for the bundle manifest."""
        return {
            "index": self.index,
            "node": self.node,
            "shape": list(self.shape),
            "dtype": str(self.dtype).removeprefix("torch."),
            "nbytes": self.nbytes,
        }


class _SplitTracer(fx.Tracer):
    """fx tracer that honours extra leaf module types and remembers where tracing failed."""

    def __init__(self, leaf_modules: LeafTypes = ()) -> None:
        super().__init__()
        self.leaf_types = tuple(leaf_modules)
        self._scope: list[tuple[str, str]] = []
        self.failed_in: tuple[str, str] | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if self.leaf_types and isinstance(m, self.leaf_types):
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
        self._scope.append((self.path_of_module(m), type(m).__name__))
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            # The innermost module sees the exception first; keep that one.
            if self.failed_in is None:
                self.failed_in = self._scope[-1]
            raise
        finally:
            self._scope.pop()


def trace(model: nn.Module, leaf_modules: LeafTypes = ()) -> fx.Graph:
    """Symbolically trace ``model``; on failure raise a :class:`PartitionError` that says where.

    :param leaf_modules: module types kept as single opaque calls instead of traced through
    """
    tracer = _SplitTracer(leaf_modules)
    try:
        graph = tracer.trace(model)
    except Exception as exc:
        raise PartitionError(_explain_trace_failure(model, tracer, exc)) from exc
    placeholders = [n.name for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise PartitionError(
            f"model: forward() must take exactly one tensor input to be split, got "
            f"{len(placeholders)} ({', '.join(placeholders)}); wrap the model in a module whose "
            f"forward(x) binds the other arguments"
        )
    return graph


def _explain_trace_failure(model: nn.Module, tracer: _SplitTracer, exc: Exception) -> str:
    if tracer.failed_in is not None:
        path, cls = tracer.failed_in
        where = f"submodule {path!r} ({cls})"
    else:
        where = f"{type(model).__name__}.forward"
    source = _user_frame(exc)
    at = f" at {source}" if source else ""
    return (
        f"cannot trace {type(model).__name__} with torch.fx: {type(exc).__name__}: {exc} "
        f"-- failed in {where}{at}. {_HOW_TO_FIX}"
    )


def _user_frame(exc: BaseException) -> str | None:
    """The innermost traceback frame outside torch and this module: the op that failed."""
    torch_dir = os.path.dirname(torch.__file__)
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.startswith(torch_dir) or frame.filename == __file__:
            continue
        line = f": `{frame.line.strip()}`" if frame.line else ""
        return f"{os.path.basename(frame.filename)}:{frame.lineno} in {frame.name}(){line}"
    return None


def _cut_positions(graph: fx.Graph) -> list[tuple[int, fx.Node]]:
    """``(position, crossing node)`` for every place where a single value is live.

    Parameters and buffers (``get_attr``) never count as live: each side reads its own copy.
    A value that stays the sole live one over several positions (e.g. across dead code)
    gives one cut, at its first position.
    """
    nodes = list(graph.nodes)
    order = {n: i for i, n in enumerate(nodes)}
    expires: dict[int, list[fx.Node]] = {}
    live: set[fx.Node] = set()
    seen: set[fx.Node] = set()
    cuts: list[tuple[int, fx.Node]] = []
    for i, node in enumerate(nodes):
        if node.op == "output":
            break
        for done in expires.pop(i, ()):
            live.discard(done)
        if node.op == "get_attr":
            continue
        last_use = max((order[u] for u in node.users), default=-1)
        if last_use > i:
            live.add(node)
            expires.setdefault(last_use, []).append(node)
        if len(live) == 1:
            (crossing,) = live
            if crossing not in seen:
                seen.add(crossing)
                cuts.append((i, crossing))
    return cuts


# Ops that re-express their single input without mixing values across elements or changing
# the byte count: a cut before one of them and the cut after it carry the same data.
_SAME_DATA_MODULES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU,
    nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Mish,
    nn.Dropout, nn.Dropout2d, nn.Identity, nn.Flatten, nn.Unflatten,
)  # fmt: skip
_SAME_DATA_FUNCTIONS = {
    torch.relu, torch.relu_, torch.sigmoid, torch.tanh, torch.flatten, torch.reshape,
    torch.nn.functional.relu, torch.nn.functional.relu6, torch.nn.functional.gelu,
    torch.nn.functional.silu, torch.nn.functional.hardswish, torch.nn.functional.leaky_relu,
    torch.nn.functional.dropout, torch.nn.functional.batch_norm,
}  # fmt: skip
_SAME_DATA_METHODS = {
    "relu", "relu_", "sigmoid", "tanh", "flatten", "view", "reshape", "contiguous",
}  # fmt: skip


def _re_expresses(node: fx.Node, prev: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """True when ``node`` only re-expresses ``prev`` (its one tensor input) elementwise."""
    inputs = [a for a in node.all_input_nodes if a.op != "get_attr"]
    if inputs != [prev]:
        return False
    if node.op == "call_module":
        return isinstance(modules.get(str(node.target)), _SAME_DATA_MODULES)
    if node.op == "call_function":
        return node.target in _SAME_DATA_FUNCTIONS
    if node.op == "call_method":
        return node.target in _SAME_DATA_METHODS
    return False


def _same_data(a: TensorMetadata, b: TensorMetadata) -> bool:
    return a.dtype == b.dtype and math.prod(a.shape) == math.prod(b.shape)


def _distinct_cuts(
    model: nn.Module, positions: list[tuple[int, fx.Node]], keep: Collection[str] = ()
) -> list[tuple[int, fx.Node]]:
    """Drop a cut when the next cut's op only re-expresses its tensor (keep the later name).

    The input (a placeholder) and the nodes named in ``keep`` are always kept: split 0
    sends exactly what the caller gave, and a caller may need a given node as a cut.
    """
    modules = dict(model.named_modules())
    out: list[tuple[int, fx.Node]] = []
    for pos, node in positions:
        if out:
            prev = out[-1][1]
            pm, nm = prev.meta.get("tensor_meta"), node.meta.get("tensor_meta")
            if (
                prev.op != "placeholder"
                and prev.name not in keep
                and isinstance(pm, TensorMetadata)
                and isinstance(nm, TensorMetadata)
                and _re_expresses(node, prev, modules)
                and _same_data(pm, nm)
            ):
                out[-1] = (pos, node)
                continue
        out.append((pos, node))
    return out


def find_cut_points(
    model: nn.Module,
    example_input: torch.Tensor,
    leaf_modules: LeafTypes = (),
    keep: Collection[str] = (),
) -> list[CutPoint]:
    """All places ``model`` can be split, with the crossing tensor's shape, dtype and size.

    The first cut sends the input (cloud only), the last one carries the output (edge only).
    A tensor that the next op only re-expresses (``bn``/``relu`` after a conv, ``relu``
    after a residual ``add``) is listed once, under the later name (unless the earlier
    one is in ``keep``: e.g. the block boundaries of a ProgressiveNet). Sizes are for
    ``example_input``'s batch size. The model runs once, in eval mode and without
    gradients; the train/eval flags of its submodules are restored afterwards.
    """
    graph = trace(model, leaf_modules)
    gm = fx.GraphModule(model, graph)
    _propagate_shapes(model, gm, example_input)
    cuts: list[CutPoint] = []
    for _, node in _distinct_cuts(model, _cut_positions(graph), keep):
        meta = node.meta.get("tensor_meta")
        if not isinstance(meta, TensorMetadata):
            logger.debug("skip cut at %s: crossing value is not a single tensor", node.name)
            continue
        shape = tuple(int(d) for d in meta.shape)
        itemsize = torch.empty((), dtype=meta.dtype).element_size()
        cuts.append(CutPoint(len(cuts), node.name, shape, meta.dtype, math.prod(shape) * itemsize))
    logger.debug("%s: %d cut points", type(model).__name__, len(cuts))
    return cuts


def _propagate_shapes(model: nn.Module, gm: fx.GraphModule, example_input: torch.Tensor) -> None:
    # Eval mode so batch norm does not update its running statistics while we only look.
    flags = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            ShapeProp(gm).propagate(example_input)
    except Exception as exc:
        raise PartitionError(
            f"example_input: running {type(model).__name__} on a tensor of shape "
            f"{tuple(example_input.shape)} failed: {exc}"
        ) from exc
    finally:
        for m, flag in flags.items():
            m.training = flag


def split(
    model: nn.Module, cut: CutPoint, leaf_modules: LeafTypes = ()
) -> tuple[fx.GraphModule, fx.GraphModule]:
    """Split ``model`` at ``cut`` into ``head`` and ``tail`` with ``tail(head(x)) == model(x)``.

    Both halves share parameters and buffers with ``model`` (no copy). Pass the same
    ``leaf_modules`` that produced the cut.
    """
    graph = trace(model, leaf_modules)
    positions = {node.name: (pos, node) for pos, node in _cut_positions(graph)}
    if cut.node not in positions:
        raise PartitionError(
            f"cut: node {cut.node!r} is not a cut point of {type(model).__name__}; known: "
            f"{', '.join(positions)} (were the cuts found with other leaf_modules?)"
        )
    pos, crossing = positions[cut.node]
    nodes = [n for n in graph.nodes]
    head = _sub_graph(nodes[: pos + 1], inputs={}, output=crossing)
    tail = _sub_graph(nodes[pos + 1 :], inputs={crossing: crossing.name}, output=None)
    head_gm = fx.GraphModule(model, head, class_name="SplitHead")
    tail_gm = fx.GraphModule(model, tail, class_name="SplitTail")
    # Only the flag of the wrapper: the shared submodules keep their own modes.
    head_gm.training = tail_gm.training = model.training
    return head_gm, tail_gm


def _sub_graph(
    nodes: Sequence[fx.Node], inputs: dict[fx.Node, str], output: fx.Node | None
) -> fx.Graph:
    """Copy ``nodes`` into a new graph; ``inputs`` become placeholders, get_attr is copied lazily.

    ``output=None`` means ``nodes`` ends with the original output node.
    """
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {src: graph.placeholder(name) for src, name in inputs.items()}

    def lookup(arg: fx.Node) -> fx.Node:
        if arg not in env:
            if arg.op != "get_attr":
                # Cannot happen for a valid cut: only the crossing value is live.
                raise PartitionError(f"internal: value {arg.name!r} crosses the cut")
            env[arg] = graph.node_copy(arg)
        return env[arg]

    for node in nodes:
        if node.op == "get_attr":
            continue
        env[node] = graph.node_copy(node, lookup)
    if output is not None:
        graph.output(lookup(output))
    graph.lint()
    return graph
