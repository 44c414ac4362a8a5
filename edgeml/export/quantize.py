"""Static int8 (QDQ) quantisation of a bundle's exported blocks with ONNX Runtime.

Each block is quantised on its own, calibrated on the tensors that really enter it: the
bundle's validation frames run through the fp32 ONNX blocks before it. Weights are int8
per channel, activations uint8 per tensor (MinMax), the QDQ format that ONNX Runtime fuses
into integer kernels. Exit heads stay fp32: they are a small share of the compute and the
exit rule reads their softmax confidence, so they keep it exact.

The int8 edge answers differently from the fp32 one on a few frames, so it gets its own
calibration table (:func:`int8_calibration`): every exit of the int8 chain on the very
frames of the bundle's ``calibration.npz``. The agent, the baselines and the simulator plan
with it when the edge runs int8 (:meth:`edgeml.bundle.Bundle.calibration_for`).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from edgeml.bundle import Bundle
from edgeml.data.preprocess import BUILTIN_DATASETS, dataset_frames
from edgeml.errors import InputError
from edgeml.export.names import block_name, head_name, sha256_file
from edgeml.progressive.calibrate import Calibration

log = logging.getLogger(__name__)

__all__ = ["calibration_inputs", "int8_calibration", "quantize_blocks"]


def calibration_inputs(bundle: Bundle, n: int | None = None) -> np.ndarray:
    """The network inputs of the bundle's calibration set, in its order (the first ``n``):
    regenerated for the built-in datasets. A user's data is not kept in the bundle, so its
    frames must come from the build (``edgeml build --onnx fp32,int8``)."""
    m = bundle.manifest
    if n is None:
        if bundle.calibration is None:
            raise InputError(f"{bundle.path}: no calibration.npz; rebuild with `edgeml build`")
        n = bundle.calibration.num_samples
    if m.dataset not in BUILTIN_DATASETS:
        raise InputError(
            f"{bundle.path}: int8 needs the calibration frames, and dataset {m.dataset!r} is "
            f"not built in ({', '.join(BUILTIN_DATASETS)}); quantise at build time: "
            "`edgeml build ... --onnx fp32,int8`"
        )
    seed = int(m.build.get("config", {}).get("seed", 0))
    x, _, _ = dataset_frames(m.dataset, "val", n, seed)
    return x


def int8_calibration(bundle: Bundle, frames: np.ndarray, batch: int = 250) -> Calibration:
    """The calibration table of the bundle's int8 ONNX edge: ``frames`` are the inputs of
    ``calibration.npz`` in its order; labels, difficulty and the edge's feature are copied
    from it (they do not depend on the runtime)."""
    from edgeml.runtime.edge_net import OnnxEdgeNet, exit_table

    cal = bundle.calibration
    if cal is None:
        raise InputError(f"{bundle.path}: no calibration.npz; rebuild with `edgeml build`")
    if len(frames) != cal.num_samples:
        raise InputError(
            f"frames: {len(frames)} inputs, {bundle.path}/calibration.npz has {cal.num_samples}"
        )
    net = OnnxEdgeNet(bundle, "int8")
    int8 = exit_table(net, frames, cal.label, cal.difficulty, cal.feature, batch)
    acc8, acc32 = np.round(int8.accuracy(), 4).tolist(), np.round(cal.accuracy(), 4).tolist()
    log.info("int8 calibration: accuracy per exit %s (fp32 %s)", acc8, acc32)
    return int8


class _Reader:
    """onnxruntime's CalibrationDataReader over one array, in small batches."""

    def __init__(self, name: str, x: np.ndarray, batch: int = 32) -> None:
        self._items = iter([{name: x[i : i + batch]} for i in range(0, len(x), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def quantize_blocks(
    bundle: Bundle, fp32: dict[str, dict[str, str]], inputs: np.ndarray
) -> dict[str, dict[str, str]]:
    """Quantise every block listed in ``fp32`` into ``BUNDLE/onnx/int8/``, calibrated on
    ``inputs`` (network inputs); returns the int8 variant's manifest entries (quantised
    blocks, the fp32 heads)."""
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    m = bundle.manifest
    h = np.ascontiguousarray(inputs, dtype=np.float32)
    out_dir = bundle.path / "onnx" / "int8"
    out_dir.mkdir(parents=True, exist_ok=True)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    files: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(1, m.blocks + 1):
            src = bundle.path / fp32[block_name(k)]["path"]
            pre = Path(tmp) / f"{block_name(k)}.pre.onnx"
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            sess = ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            rel = f"onnx/int8/{block_name(k)}.onnx"
            quantize_static(
                str(pre), str(bundle.path / rel), _Reader(name, h),
                quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, per_channel=True,
                calibrate_method=CalibrationMethod.MinMax,
            )  # fmt: skip
            files[block_name(k)] = {"path": rel, "sha256": sha256_file(bundle.path / rel)}
            h = np.concatenate(
                [sess.run(None, {name: h[i : i + 64]})[0] for i in range(0, len(h), 64)]
            )
            log.info("int8: quantised block %d (calibration tensor %s)", k, h.shape[1:])
    for b in m.exits:
        files[head_name(b)] = dict(fp32[head_name(b)])
    return files
