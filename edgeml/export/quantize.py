"""Static int8 (QDQ) quantisation of a bundle's exported blocks with ONNX Runtime.

Each block is quantised on its own, calibrated on the tensors that really enter it: the
bundle's validation frames run through the fp32 ONNX blocks before it. Weights are int8
per channel, activations uint8 per tensor (MinMax), the QDQ format that ONNX Runtime fuses
into integer kernels. Exit heads stay fp32: they are a small share of the compute and the
exit rule reads their softmax confidence, so they keep it exact.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeml.bundle import Bundle
from edgeml.data.preprocess import dataset_frames
from edgeml.export.names import block_name, head_name, sha256_file

log = logging.getLogger(__name__)

__all__ = ["calibration_inputs", "quantize_blocks"]


def calibration_inputs(bundle: Bundle, n: int) -> np.ndarray:
    """``n`` validation frames of the bundle's dataset, preprocessed like every side's input."""
    seed = int(bundle.manifest.build.get("config", {}).get("seed", 0))
    x, _, _ = dataset_frames(bundle.manifest.dataset, "val", n, seed)
    return x


class _Reader:
    """onnxruntime's CalibrationDataReader over one array, in small batches."""

    def __init__(self, name: str, x: np.ndarray, batch: int = 32) -> None:
        self._items = iter([{name: x[i : i + batch]} for i in range(0, len(x), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def quantize_blocks(
    bundle: Bundle, fp32: dict[str, dict[str, str]], frames: int = 256
) -> dict[str, dict[str, str]]:
    """Quantise every block listed in ``fp32`` into ``BUNDLE/onnx/int8/``; returns the int8
    variant's manifest entries (quantised blocks, the fp32 heads)."""
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    m = bundle.manifest
    h = calibration_inputs(bundle, frames)
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


def variant_summary(section: dict[str, Any]) -> dict[str, int]:
    """Files per precision in a manifest ``onnx`` section (for logs and the CLI)."""
    return {p: len(f) for p, f in section.get("variants", {}).items()}
