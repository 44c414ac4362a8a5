"""The edge's network runner: blocks and exit heads under the early-exit rule, on numpy.

Two backends with one interface, :class:`EdgeNet`:

* :class:`OnnxEdgeNet` — ONNX Runtime sessions over the bundle's exported files (one per
  block and per exit head, :mod:`edgeml.export.onnx`), one thread, all graph optimisations;
  torch-free, so a ``pip install '.[edge]'`` device runs it;
* :class:`TorchEdgeNet` — the bundle's torch network through
  :func:`edgeml.progressive.infer.run_segment` (the reference the ONNX runner is tested
  against).

Both take and return numpy arrays (the hidden tensor crosses to the codec as numpy) and
apply the same host-side rule: run blocks ``start+1..stop`` (clipped to exit ``e``'s block),
evaluate exit heads ``<= e``, stop at the first whose confidence ``>= tau``; ``tau >= 1``
never stops early, so then only ``e``'s head runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edgeml.bundle import MANIFEST, Bundle, BundleError, sha256_bytes
from edgeml.decision.scenario import EDGE_PRECISIONS
from edgeml.progressive.calibrate import Calibration
from edgeml.progressive.rule import Answer

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger(__name__)

__all__ = [
    "EdgeNet",
    "EdgeSegment",
    "OnnxEdgeNet",
    "TorchEdgeNet",
    "exit_table",
    "load_edge_net",
    "softmax_max",
]


@dataclass
class EdgeSegment:
    """Outcome of running blocks ``start+1..stop`` for a batch (numpy twin of
    :class:`edgeml.progressive.infer.SegmentResult`): ``answers[i]`` for rows that stopped,
    ``hidden`` the tensor at ``stop`` of the ``pending`` rows (None when none is pending)."""

    answers: list[Answer | None]
    hidden: np.ndarray | None
    pending: list[int]


class EdgeNet(Protocol):
    """What the edge daemon runs: one call per local segment."""

    runtime: str  # "onnx" | "torch"
    precision: str  # "fp32" | "int8"
    exits: tuple[int, ...]
    num_blocks: int

    def run_segment(
        self, h: np.ndarray, start: int, stop: int, exit_index: int, tau: float
    ) -> EdgeSegment: ...

    def exit_logits(self, x: np.ndarray, batch: int = 250) -> list[np.ndarray]: ...


def softmax_max(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Max softmax probability and its class per row, in float32 like torch's."""
    z = logits.astype(np.float32, copy=False)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    probs = e / e.sum(axis=1, keepdims=True)
    return probs.max(axis=1), probs.argmax(axis=1)


def exit_table(
    net: EdgeNet, frames: np.ndarray, label: np.ndarray, difficulty: np.ndarray,
    feature: np.ndarray, batch: int = 250,
) -> Calibration:  # fmt: skip
    """The calibration table of ``net`` on ``frames`` (network inputs): every exit's class
    and confidence as this runner computes them; labels, difficulty and the edge's feature
    are the frames' own."""
    n, n_exits = len(frames), len(net.exits)
    pred = np.empty((n, n_exits), dtype=np.int16)
    conf = np.empty((n, n_exits), dtype=np.float32)
    for j, logits in enumerate(net.exit_logits(frames, batch)):
        conf[:, j], pred[:, j] = softmax_max(logits)
    label = np.asarray(label, dtype=np.int16)
    return Calibration(pred, conf, pred == label[:, None], label,
                       np.asarray(difficulty, dtype=np.int8),
                       np.asarray(feature, dtype=np.float32))  # fmt: skip


class OnnxEdgeNet:
    """Blocks and heads as ONNX Runtime sessions; the exit rule in numpy.

    :param bundle: loaded with or without weights; its manifest's ``onnx`` field names the
        files, whose sha256 is checked here (a changed or foreign file is refused).
    :param precision: ``fp32`` or ``int8`` (int8: quantised blocks, the heads it lists).
    :param threads: ONNX Runtime intra-op threads (the edge is one core).
    """

    runtime = "onnx"

    def __init__(self, bundle: Bundle, precision: str = "fp32", threads: int = 1) -> None:
        if precision not in EDGE_PRECISIONS:
            raise ValueError(
                f"edge_precision: {precision!r}; allowed: {', '.join(EDGE_PRECISIONS)}"
            )
        import onnxruntime as ort

        m = bundle.manifest
        where = bundle.path / MANIFEST
        section = m.onnx
        files = section.get("variants", {}).get(precision) if section else None
        if not files:
            raise BundleError(
                f"{where}: no onnx.variants.{precision}; run `edgeml export {bundle.path}"
                f"{' --int8' if precision == 'int8' else ''}` (or use --runtime torch)"
            )
        if section["weights_sha256"] != m.weights_sha256:
            raise BundleError(
                f"{where}: field 'onnx.weights_sha256' {section['weights_sha256'][:16]}... is "
                f"not the bundle's weights_sha256 {m.weights_sha256[:16]}...; the ONNX files "
                f"belong to other weights: rerun `edgeml export {bundle.path}`"
            )
        self.precision = precision
        self.exits = tuple(m.exits)
        self.num_blocks = m.blocks
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._opts = opts

        def session(name: str) -> onnxruntime.InferenceSession:
            entry = files.get(name)
            if entry is None:
                raise BundleError(f"{where}: onnx.variants.{precision} has no {name!r}")
            path = bundle.path / entry["path"]
            if not path.is_file():
                raise BundleError(f"{path}: missing; rerun `edgeml export {bundle.path}`")
            raw = path.read_bytes()
            digest = sha256_bytes(raw)
            if digest != entry["sha256"]:
                raise BundleError(
                    f"{path}: sha256 {digest[:16]}... does not match the manifest's "
                    f"onnx.variants.{precision}.{name}.sha256 {entry['sha256'][:16]}...; "
                    "refusing to load"
                )
            return ort.InferenceSession(raw, opts, providers=["CPUExecutionProvider"])

        self._blocks = [session(f"block_{k}") for k in range(1, self.num_blocks + 1)]
        self._heads = {b: session(f"head_{b}") for b in self.exits}
        self._block_io = [(s.get_inputs()[0].name, s.get_outputs()[0].name) for s in self._blocks]
        self._head_io = {
            b: (s.get_inputs()[0].name, s.get_outputs()[0].name) for b, s in self._heads.items()
        }

    def block(self, k: int, h: np.ndarray) -> np.ndarray:
        """Block ``k`` (1-based) on a batch."""
        name_in, name_out = self._block_io[k - 1]
        return self._blocks[k - 1].run([name_out], {name_in: h})[0]

    def head(self, block: int, h: np.ndarray) -> np.ndarray:
        """Logits of the exit head after ``block``."""
        name_in, name_out = self._head_io[block]
        return self._heads[block].run([name_out], {name_in: h})[0]

    def exit_logits(self, x: np.ndarray, batch: int = 250) -> list[np.ndarray]:
        """Every exit head's logits on ``x`` (no early stop; each block runs once per
        batch): what calibration and accuracy per exit measure."""
        out: list[list[np.ndarray]] = [[] for _ in self.exits]
        for i in range(0, len(x), batch):
            h = np.ascontiguousarray(x[i : i + batch], dtype=np.float32)
            for k in range(1, self.num_blocks + 1):
                h = self.block(k, h)
                if k in self._heads:
                    out[self.exits.index(k)].append(self.head(k, h))
        return [np.concatenate(o) for o in out]

    def run_segment(
        self, h: np.ndarray, start: int, stop: int, exit_index: int, tau: float
    ) -> EdgeSegment:
        """Blocks ``start+1..stop`` under the exit rule (same semantics as torch's)."""
        if not 0 <= exit_index < len(self.exits):
            raise ValueError(f"exit: {exit_index} not in 0..{len(self.exits) - 1}")
        e_block = self.exits[exit_index]
        stop = min(stop, e_block)
        h = np.ascontiguousarray(h, dtype=np.float32)
        n = h.shape[0]
        if stop <= start:
            return EdgeSegment([None] * n, h if n else None, list(range(n)))
        answers: list[Answer | None] = [None] * n
        rows = np.arange(n)
        early = tau < 1.0
        for block in range(start + 1, stop + 1):
            h = self.block(block, h)
            if block not in self._heads or not len(rows):
                continue
            if block != e_block and not early:
                continue  # no row can stop here: skipping the head changes no answer
            conf, cls = softmax_max(self.head(block, h))
            done = np.ones(len(rows), bool) if block == e_block else (conf >= tau) & early
            k = self.exits.index(block)
            for j in np.flatnonzero(done):
                answers[int(rows[j])] = Answer(int(cls[j]), float(conf[j]), k, block)
            if done.any():
                keep = ~done
                rows, h = rows[keep], np.ascontiguousarray(h[keep])
        return EdgeSegment(answers, h if len(rows) else None, rows.tolist())


class TorchEdgeNet:
    """The torch reference behind the same interface (needs a bundle loaded with weights)."""

    runtime = "torch"
    precision = "fp32"

    def __init__(self, bundle: Bundle, threads: int = 1) -> None:
        import torch

        if bundle.net is None:
            raise BundleError(
                f"{bundle.path}: loaded without weights; the torch runtime needs them"
            )
        torch.set_num_threads(threads)
        self.net = bundle.net.eval()
        self.exits = tuple(self.net.exits)
        self.num_blocks = self.net.num_blocks

    def run_segment(
        self, h: np.ndarray, start: int, stop: int, exit_index: int, tau: float
    ) -> EdgeSegment:
        import torch

        from edgeml.progressive.infer import run_segment

        x = h if isinstance(h, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(h))
        res = run_segment(self.net, x, start, stop, exit_index, tau)
        hidden = None if res.hidden is None else res.hidden.numpy()
        return EdgeSegment(res.answers, hidden, res.pending)

    def exit_logits(self, x: np.ndarray, batch: int = 250) -> list[np.ndarray]:
        """Every exit head's logits on ``x`` (as :meth:`OnnxEdgeNet.exit_logits`)."""
        import torch

        parts: list[list[torch.Tensor]] = []
        with torch.inference_mode():
            for i in range(0, len(x), batch):
                parts.append(self.net.forward_exits(torch.from_numpy(x[i : i + batch])))
        return [torch.cat([p[j] for p in parts]).numpy() for j in range(len(self.exits))]


def load_edge_net(
    bundle: Bundle | str | Path,
    runtime: str | None = None,
    precision: str = "fp32",
    threads: int = 1,
) -> EdgeNet:
    """The runner an edge uses: ``runtime`` None picks onnx when the bundle has the files
    (:meth:`~edgeml.bundle.Manifest.edge_runtime`).

    A bundle path is loaded without weights for onnx (no torch import), with them for torch.
    """
    if not isinstance(bundle, Bundle):
        bundle = Bundle.load(bundle, need_calibration=False, weights=False)
    label = bundle.manifest.edge_runtime(runtime, precision)
    if label.startswith("onnx/"):
        return OnnxEdgeNet(bundle, precision, threads)
    if bundle.net is None:
        bundle = Bundle.load(bundle.path, need_calibration=False)
    return TorchEdgeNet(bundle, threads)


def describe(net: Any) -> str:
    """``onnx/fp32`` style label for logs and the bench."""
    return f"{net.runtime}/{net.precision}"
