"""ONNX export and the ONNX edge runner against torch on the tiny fixture bundle."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from edgeml.bundle import Bundle, BundleError
from edgeml.data.preprocess import dataset_frames
from edgeml.export.onnx import export_onnx
from edgeml.runtime.edge_net import OnnxEdgeNet, TorchEdgeNet, load_edge_net

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(tiny_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    path = tmp_path_factory.mktemp("onnx") / "tiny"
    shutil.copytree(tiny_bundle.path, path)
    export_onnx(path, ("fp32", "int8"), calibration_frames=64)
    return Bundle.load(path)


def test_every_segment_and_head_matches_torch(exported: Bundle) -> None:
    onnx = OnnxEdgeNet(exported, "fp32")
    net = exported.net
    x, _, _ = dataset_frames("fashion-mnist", "test", 32)
    h = x
    with torch.no_grad():
        for k in range(1, net.num_blocks + 1):
            ref = net.blocks[k - 1](torch.from_numpy(h)).numpy()
            got = onnx.block(k, h)
            assert np.allclose(got, ref, atol=1e-4), f"block {k}"
            h = ref
            if k in net.exits:
                assert np.allclose(onnx.head(k, h), net.head(k, torch.from_numpy(h)).numpy(),
                                   atol=1e-4), f"head {k}"  # fmt: skip


def test_same_exit_and_class_as_torch(exported: Bundle) -> None:
    onnx, ref = load_edge_net(exported, "onnx"), TorchEdgeNet(exported)
    x, _, _ = dataset_frames("fashion-mnist", "test", 512)
    same = total = 0
    for e in range(len(onnx.exits)):
        for tau in (1.0, 0.9, 0.7):
            a = onnx.run_segment(x, 0, onnx.num_blocks, e, tau).answers
            b = ref.run_segment(x, 0, ref.num_blocks, e, tau).answers
            same += sum((p.class_id, p.exit_index) == (q.class_id, q.exit_index)
                        for p, q in zip(a, b, strict=True))  # fmt: skip
            total += len(a)
    assert same / total >= 0.995, f"{same}/{total}"
    # a split: the pending hidden tensor matches too
    r1, r2 = onnx.run_segment(x[:4], 0, 2, 2, 1.0), ref.run_segment(x[:4], 0, 2, 2, 1.0)
    assert r1.pending == r2.pending == [0, 1, 2, 3]
    assert np.allclose(r1.hidden, r2.hidden, atol=1e-4)


def test_int8_runs_and_mostly_agrees(exported: Bundle) -> None:
    q, f = OnnxEdgeNet(exported, "int8"), OnnxEdgeNet(exported, "fp32")
    x, _, _ = dataset_frames("fashion-mnist", "test", 256)
    last = len(f.exits) - 1
    a = [p.class_id for p in q.run_segment(x, 0, q.num_blocks, last, 1.0).answers]
    b = [p.class_id for p in f.run_segment(x, 0, f.num_blocks, last, 1.0).answers]
    assert np.mean(np.array(a) == np.array(b)) >= 0.9


def test_changed_onnx_file_is_refused(exported: Bundle, tmp_path) -> None:
    path = tmp_path / "b"
    shutil.copytree(exported.path, path)
    (path / "onnx/fp32/block_1.onnx").write_bytes(b"not a model")
    with pytest.raises(BundleError, match="block_1.onnx: sha256"):
        load_edge_net(path, "onnx")
    m = json.loads((path / "manifest.json").read_text())
    m["onnx"]["variants"]["fp32"]["block_1"]["sha256"] = 5
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="sha256"):
        Bundle.load(path, weights=False)


def test_default_runtime_follows_the_files(exported: Bundle, tiny_bundle: Bundle) -> None:
    assert load_edge_net(exported.path).runtime == "onnx"
    assert load_edge_net(tiny_bundle.path).runtime == "torch"
