"""ONNX export and the ONNX edge runner against torch on the tiny fixture bundle."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from edgeml.bundle import Bundle, BundleError
from edgeml.data.preprocess import dataset_frames
from edgeml.errors import InputError
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


def test_int8_edge_has_its_own_calibration_table(exported: Bundle, tmp_path) -> None:
    """``onnx.calibration.int8`` holds the int8 chain's answers on the frames of
    calibration.npz: the fp32 ONNX chain on the regenerated frames reproduces the fp32
    table (so the frames line up), and the int8 table is what the int8 runner says."""
    from edgeml.export.quantize import calibration_inputs

    cal32, cal8 = exported.calibration, exported.calibration_for("onnx/int8")
    assert cal32 is not None and exported.calibration_for("onnx/fp32") is cal32
    assert np.array_equal(cal8.label, cal32.label) and cal8.pred.shape == cal32.pred.shape
    x = calibration_inputs(exported)
    f, q = OnnxEdgeNet(exported, "fp32"), OnnxEdgeNet(exported, "int8")
    last = len(f.exits) - 1
    pf = [a.class_id for a in f.run_segment(x, 0, f.num_blocks, last, 1.0).answers]
    pq = [a.class_id for a in q.run_segment(x, 0, q.num_blocks, last, 1.0).answers]
    assert np.mean(np.array(pf) == cal32.pred[:, last]) >= 0.995
    assert np.array_equal(np.array(pq), cal8.pred[:, last])
    assert np.array_equal(cal8.correct, cal8.pred == cal8.label[:, None])
    path = tmp_path / "b"
    shutil.copytree(exported.path, path)
    (path / "onnx/int8/calibration.npz").write_bytes(b"changed")
    with pytest.raises(BundleError, match="onnx.calibration.int8"):
        Bundle.load(path, weights=False).calibration_for("onnx/int8")


def test_agent_plans_int8_with_the_int8_accuracy() -> None:
    from edgeml.assets import default_bundle
    from edgeml.decision.policies import World
    from edgeml.decision.scenario import Scenario
    from edgeml.decision.tables import Outcomes

    bundle = Bundle.load(default_bundle(), weights=False)
    w8 = World.from_bundle(bundle, Scenario(edge_precision="int8"))
    w32 = World.from_bundle(bundle, Scenario(edge_precision="fp32"))
    want = Outcomes.from_calibration(bundle.calibration_for("onnx/int8")).accuracy
    assert np.array_equal(w8.outcomes.accuracy, want)
    assert not np.array_equal(w8.outcomes.accuracy, w32.outcomes.accuracy)


def test_int8_of_a_user_dataset_needs_the_build(exported: Bundle, tmp_path) -> None:
    path = tmp_path / "u"
    shutil.copytree(exported.path, path)
    m = json.loads((path / "manifest.json").read_text())
    m["dataset"] = "my-train.npz"
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(InputError, match=r"--onnx fp32,int8"):
        export_onnx(path, ("fp32", "int8"))


def test_the_profile_times_each_onnx_edges_own_offload_path(exported: Bundle) -> None:
    """Every ONNX variant's profile carries the fixed cost of its own split-0 offload path,
    (the cost model's pick of it: test_profiler_cost)."""
    from edgeml.partition.edge_profile import edge_runtime_timings

    x, _, _ = dataset_frames("fashion-mnist", "val", 2)
    inputs = [np.ascontiguousarray(x[i : i + 1]) for i in range(2)]
    timings = edge_runtime_timings(exported, inputs, repeats=2, warmup=1, min_seconds=0.0)
    assert set(timings) == {"onnx/fp32", "onnx/int8"}
    for t in timings.values():
        assert 0.0 <= t["offload_fixed_ms"] < 5.0
