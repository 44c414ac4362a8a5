"""Export a bundle's blocks and exit heads to ONNX files inside the bundle, hashed in its manifest.

One file per edge segment between consecutive cut points (``block_k``: the tensor leaving
block ``k-1`` in, the tensor leaving block ``k`` out) and one per exit head (``head_b``: the
tensor leaving block ``b`` in, logits out), opset 17, fp32, batch axis dynamic. The exit
rule stays in host code (:mod:`edgeml.runtime.edge_net`): exporting data-dependent control
flow is fragile and would freeze ``tau`` into the graph.

``int8`` adds a static QDQ quantisation of the blocks (:mod:`edgeml.export.quantize`),
calibrated on the bundle's validation frames; heads stay fp32 (they are a small share of
the compute and their softmax confidence is what the exit rule reads).

Files land in ``BUNDLE/onnx/<precision>/`` and the manifest's ``onnx`` field records, per
precision, every file's path (relative to the bundle) and sha256, the opset and the
weights hash they were exported from. ``weights.pt`` is never touched.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeml.bundle import MANIFEST, Bundle, BundleError
from edgeml.decision.scenario import EDGE_PRECISIONS
from edgeml.errors import InputError
from edgeml.export.names import block_name, head_name, sha256_file

log = logging.getLogger(__name__)

__all__ = ["OPSET", "PRECISIONS", "block_name", "export_onnx", "head_name"]

OPSET = 17
PRECISIONS = EDGE_PRECISIONS
INPUT, OUTPUT = "x", "y"


def _exact_pool(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> Any:
    """An ``AdaptiveAvgPool2d(out_hw)`` for a fixed ``in_hw`` made of slices and means.

    The exporter refuses adaptive pooling whose output does not divide its input (a 7x7 map
    to 2x2: overlapping bins); this computes torch's very bins (``floor(i*H/h)`` to
    ``ceil((i+1)*H/h)``) with ops every opset has.
    """
    import math

    import torch
    from torch import nn

    def bins(n_in: int, n_out: int) -> list[tuple[int, int]]:
        return [(i * n_in // n_out, math.ceil((i + 1) * n_in / n_out)) for i in range(n_out)]

    rows, cols = bins(in_hw[0], out_hw[0]), bins(in_hw[1], out_hw[1])

    class ExactAdaptiveAvgPool2d(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = [
                torch.stack([x[:, :, r0:r1, c0:c1].mean(dim=(2, 3)) for c0, c1 in cols], -1)
                for r0, r1 in rows
            ]
            return torch.stack(out, -2)

    return ExactAdaptiveAvgPool2d()


def _exportable(module: Any, x: Any) -> Any:
    """``module``, or a copy whose non-dividing adaptive average pools are exact slices."""
    import copy

    from torch import nn

    seen: dict[str, tuple[int, int]] = {}
    pools = {n: m for n, m in module.named_modules() if isinstance(m, nn.AdaptiveAvgPool2d)}
    hooks = [
        m.register_forward_hook(lambda _m, a, _o, n=n: seen.__setitem__(n, tuple(a[0].shape[2:])))
        for n, m in pools.items()
    ]
    try:
        module(x)
    finally:
        for h in hooks:
            h.remove()
    swap = {}
    for name, pool in pools.items():
        size = pool.output_size
        out_hw = (size, size) if isinstance(size, int) else tuple(size)  # type: ignore[arg-type]
        in_hw = seen[name]
        if any(o is not None and i % o for i, o in zip(in_hw, out_hw, strict=True)):
            swap[name] = _exact_pool(in_hw, out_hw)  # type: ignore[arg-type]
    if not swap:
        return module
    module = copy.deepcopy(module)
    for name, new in swap.items():
        parent_name, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent_name) if parent_name else module, child, new)
    return module


def _export_module(module: Any, shape: Sequence[int], out: Path) -> None:
    """One module to ONNX with a dynamic batch axis (the TorchScript exporter: no extra deps)."""
    import torch

    out.parent.mkdir(parents=True, exist_ok=True)
    x = torch.zeros((1, *shape), dtype=torch.float32)
    module = _exportable(module, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy-exporter deprecation notice
        torch.onnx.export(
            module, (x,), str(out), opset_version=OPSET, dynamo=False,
            input_names=[INPUT], output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
        )  # fmt: skip


def _export_fp32(bundle: Bundle) -> dict[str, dict[str, str]]:
    import torch

    assert bundle.net is not None
    net, cuts = bundle.net, bundle.manifest.cut_points
    files: dict[str, dict[str, str]] = {}
    with torch.no_grad():
        for k in range(1, net.num_blocks + 1):
            rel = f"onnx/fp32/{block_name(k)}.onnx"
            _export_module(net.blocks[k - 1], cuts[k - 1].shape, bundle.path / rel)
            files[block_name(k)] = {"path": rel, "sha256": sha256_file(bundle.path / rel)}
        for b in net.exits:
            rel = f"onnx/fp32/{head_name(b)}.onnx"
            _export_module(net.heads[str(b)], cuts[b].shape, bundle.path / rel)
            files[head_name(b)] = {"path": rel, "sha256": sha256_file(bundle.path / rel)}
    return files


def export_onnx(
    bundle_path: str | Path,
    precisions: Sequence[str] = ("fp32",),
    calibration_frames: int = 256,
    frames: np.ndarray | None = None,
) -> dict[str, Any]:
    """Export ``precisions`` (``fp32`` is always exported: int8 is quantised from it) into the
    bundle and record them in its manifest; returns the manifest's new ``onnx`` field.

    :param bundle_path: a bundle directory with ``weights.pt`` (torch is needed to export).
    :param precisions: subset of :data:`PRECISIONS`.
    :param calibration_frames: validation frames the int8 quantiser calibrates on.
    :param frames: the inputs of the bundle's calibration set, in its order (int8 only;
        default: regenerated for a built-in dataset). The int8 edge's own calibration table
        is measured on them (``onnx.calibration.int8``).
    """
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        raise InputError(f"precision: {bad} not allowed; allowed: {', '.join(PRECISIONS)}")
    if calibration_frames < 1:
        raise InputError(f"calibration_frames: must be >= 1, got {calibration_frames}")
    t0 = time.perf_counter()
    bundle = Bundle.load(bundle_path, need_calibration=False)
    variants: dict[str, dict[str, dict[str, str]]] = {"fp32": _export_fp32(bundle)}
    section: dict[str, Any] = {
        "opset": OPSET, "weights_sha256": bundle.weights_sha256, "variants": variants,
    }  # fmt: skip
    if "int8" in precisions:
        from edgeml.export.quantize import calibration_inputs, quantize_blocks

        if frames is None:
            frames = calibration_inputs(bundle)
        variants["int8"] = quantize_blocks(bundle, variants["fp32"], frames[:calibration_frames])
        _write_manifest_onnx(bundle.path, section)  # the int8 runner loads from the manifest
        section["calibration"] = {"int8": write_int8_calibration(bundle.path, frames)}
    section["exported_s"] = round(time.perf_counter() - t0, 1)
    _write_manifest_onnx(bundle.path, section)
    log.info("exported %s of %s in %.1f s", "+".join(variants), bundle.path, section["exported_s"])
    return section


def write_int8_calibration(bundle_path: str | Path, frames: np.ndarray) -> dict[str, str]:
    """Measure the int8 edge's calibration table on ``frames`` (the calibration set's inputs)
    into ``onnx/int8/calibration.npz``; returns its manifest entry (path, sha256)."""
    from edgeml.export.quantize import int8_calibration

    bundle = Bundle.load(bundle_path, weights=False)
    rel = "onnx/int8/calibration.npz"
    int8_calibration(bundle, frames).save(bundle.path / rel)
    return {"path": rel, "sha256": sha256_file(bundle.path / rel)}


def _write_manifest_onnx(path: Path, section: dict[str, Any]) -> None:
    """Rewrite only the manifest's ``onnx`` field (every other byte of the manifest stays)."""
    raw = json.loads((path / MANIFEST).read_text())
    raw["onnx"] = section
    text = json.dumps(raw, indent=2, sort_keys=True) + "\n"
    (path / MANIFEST).write_text(text)
    Bundle.load(path, need_calibration=False, weights=False)  # still a valid bundle


def total_bytes(bundle_path: str | Path, precision: str) -> int:
    """Bytes of the distinct files a precision's runner opens."""
    bundle = Bundle.load(bundle_path, need_calibration=False, weights=False)
    files = bundle.manifest.onnx.get("variants", {}).get(precision)
    if not files:
        raise BundleError(f"{bundle.path / MANIFEST}: no onnx.variants.{precision}")
    paths = {bundle.path / e["path"] for e in files.values()}
    return int(np.sum([p.stat().st_size for p in paths]))
