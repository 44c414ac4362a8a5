"""Bring your own model and data: edgeml.build, references, preprocessing, sources, CLI.

Tiny builds (a few hundred 16x16 images, 1 epoch): behaviour, not accuracy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from byom_models import small_resnet

import edgeml
from edgeml.bundle import Bundle, BundleError
from edgeml.errors import InputError
from edgeml.models.references import load_model
from edgeml.runtime.sources import array_items, open_source

torch.set_num_threads(1)
TESTS = Path(__file__).resolve().parent
FAST = {"epochs": 1, "threads": 1, "profile": False, "batch_size": 32}


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1")


def _rgb_npz(path: Path, n: int, classes: int, size: int = 16, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.integers(0, 80, (n, size, size, 3)).astype(np.uint8)
    for k in range(classes):  # a learnable signal: class k is bright in channel k % 3
        x[y == k, : 2 + k, :, k % 3] = 250
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture(scope="module")
def rgb_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    tmp = tmp_path_factory.mktemp("byom")
    data = _rgb_npz(tmp / "train.npz", 300, 5)
    return edgeml.build("byom_models:small_resnet", data, out=tmp / "b", onnx=("fp32", "int8"),
                        model_kwargs={"num_classes": 5}, **FAST)  # fmt: skip


def test_five_class_rgb_bundle_records_model_cuts_and_preprocessing(rgb_bundle: Bundle) -> None:
    m = rgb_bundle.manifest
    assert m.format_version == 2 and m.num_classes == 5 and m.input_shape == (3, 16, 16)
    assert m.model["name"] == "byom_models:small_resnet"
    assert m.model["progressive"]["exits_after"] == ["layer1_relu_1", "layer2_relu_1"]
    assert m.exits == (1, 2, 3) and m.blocks == 3
    prep = m.prep
    assert prep.color == "RGB" and prep.size == (16, 16) and len(prep.mean) == 3
    assert prep.mean[0] != prep.mean[1]  # fitted per channel, not Fashion-MNIST's constants
    assert m.difficulty_feature == "edge_density"
    cal = rgb_bundle.calibration
    assert cal is not None and cal.num_exits == 3 and cal.num_samples == 60
    # no levels in the data: calibration derives them from the first exit's confidence
    assert set(np.unique(cal.difficulty).tolist()) == {0, 1, 2, 3, 4}
    assert np.isfinite(cal.feature).all() and cal.feature.std() > 0
    assert (rgb_bundle.path / "samples.npz").is_file()
    # int8 quantised and calibrated at build time on the user's calibration frames
    cal8 = rgb_bundle.calibration_for("onnx/int8")
    assert cal8 is not cal and np.array_equal(cal8.label, cal.label)
    assert np.abs(cal8.accuracy() - cal.accuracy()).max() <= 0.1


def test_a_fresh_process_rebuilds_the_same_net_from_the_manifest(
    rgb_bundle: Bundle, tmp_path: Path
) -> None:
    x = torch.randn(2, 3, 16, 16)
    np.save(tmp_path / "x.npy", x.numpy())
    code = (
        "import sys, numpy as np, torch, edgeml\n"
        f"b = edgeml.Bundle.load({str(rgb_bundle.path)!r})\n"
        f"x = torch.from_numpy(np.load({str(tmp_path / 'x.npy')!r}))\n"
        "with torch.no_grad(): out = torch.cat(b.net.forward_exits(x), 1)\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, out.numpy())\n"
    )
    subprocess.run([sys.executable, "-c", code], env=_env(), check=True, timeout=120)
    with torch.no_grad():
        here = torch.cat(rgb_bundle.net.forward_exits(x), 1).numpy()
    assert np.array_equal(np.load(tmp_path / "out.npy"), here)


def test_hundred_classes_from_a_plain_xy_dataset(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    data = [(torch.rand(1, 12, 12, generator=g), i % 100) for i in range(300)]  # (x, y) only
    b = edgeml.build(small_resnet, data, out=tmp_path / "b", exits_after=["layer2"],
                     model_kwargs={"num_classes": 100, "in_channels": 1}, **FAST)  # fmt: skip
    assert b.manifest.num_classes == 100 and b.manifest.prep.color == "L"
    assert b.manifest.model["name"] == "byom_models:small_resnet"
    assert b.calibration is not None and b.calibration.pred.max() < 100
    with pytest.raises(InputError, match="labels go up to 99, the model outputs 10 logits"):
        edgeml.build(small_resnet, data, out=tmp_path / "c",
                     model_kwargs={"num_classes": 10, "in_channels": 1}, **FAST)  # fmt: skip


def test_image_folder_with_user_heads_and_a_frozen_pretrained_backbone(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    for k, name in enumerate(("cat", "dog", "fox")):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(40):
            a = rng.integers(0, 60, (12, 12, 3), dtype=np.uint8)
            a[..., k] = 240
            Image.fromarray(a).save(tmp_path / "imgs" / name / f"{i}.png")
    model = small_resnet(num_classes=3)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    b = edgeml.build("byom_models:small_resnet", tmp_path / "imgs", out=tmp_path / "b",
                     model_kwargs={"num_classes": 3}, weights=tmp_path / "w.pt",
                     exit_heads="byom_models:flat_head", freeze_backbone=True,
                     **FAST)  # fmt: skip
    assert b.manifest.build["classes"] == ["cat", "dog", "fox"]
    assert b.manifest.model["progressive"]["exit_heads"] == "byom_models:flat_head"
    assert isinstance(b.net.heads["1"][1], torch.nn.Linear)
    # the frozen model's own classifier (and every backbone tensor) came through untouched
    net_state = b.net.blocks.state_dict()
    for key, value in model.state_dict().items():
        match = [v for k, v in net_state.items() if k.split(".", 1)[1] == key]
        assert match and torch.equal(match[0], value), key
    with pytest.raises(InputError, match="one size"):
        Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(tmp_path / "imgs" / "cat" / "x.png")
        edgeml.build(small_resnet, tmp_path / "imgs", out=tmp_path / "c", **FAST)


def test_sources_scale_by_the_bundle_and_refuse_other_shapes_and_colours(
    rgb_bundle: Bundle,
) -> None:
    m = rgb_bundle.manifest
    red = np.zeros((1, 16, 16, 3), np.uint8)
    red[..., 0] = 255
    (item,) = array_items(red, m.input_shape, loop=False, prep=m.prep)
    px = m.prep.denormalize(item.x[0])
    assert np.allclose(px[0], 1.0, atol=1e-5) and np.allclose(px[1:], 0.0, atol=1e-5)
    for wrong, what in ((np.zeros((1, 16, 16), np.uint8), "grey"),
                        (np.zeros((1, 20, 20, 3), np.uint8), "size")):  # fmt: skip
        with pytest.raises(InputError, match=r"does not match the bundle's input \(3, 16, 16\)"):
            list(array_items(wrong, m.input_shape, loop=False, prep=m.prep)), what
    with pytest.raises(InputError, match="shape"):
        open_source("fashion-mnist", m.input_shape, preprocessing=m.prep)
    from edgeml.runtime.sources import default_source

    with pytest.raises(InputError, match="no built-in stream"):
        default_source(m.dataset)


def test_a_red_frame_reaches_the_cloud_red(rgb_bundle: Bundle) -> None:
    from transport_helpers import start_server

    from edgeml.transport.client import ClientConfig, EdgeClient

    m = rgb_bundle.manifest
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    (item,) = array_items(red[None], m.input_shape, loop=False, prep=m.prep)
    seen: list[torch.Tensor] = []
    hook = rgb_bundle.net.blocks[0].register_forward_pre_hook(lambda mod, a: seen.append(a[0]))
    server = start_server(rgb_bundle)
    try:
        client = EdgeClient(ClientConfig(targets=server.address), rgb_bundle.weights_sha256)
        client.wait_ready(10.0)
        reply = client.infer(item.x, 0, len(m.exits) - 1, 1.0, codec="raw")
        client.close()
    finally:
        server.stop(0)
        hook.remove()
    at_cloud = m.prep.denormalize(seen[-1][0].numpy())
    assert at_cloud[0].min() > 0.99 and at_cloud[1:].max() < 0.01  # red, not grey
    with torch.no_grad():
        assert reply.class_id == int(rgb_bundle.net(torch.from_numpy(item.x)).argmax())


def test_a_reference_that_does_not_import_is_one_clear_error(
    rgb_bundle: Bundle, tmp_path: Path
) -> None:
    with pytest.raises(InputError, match=r"cannot import module 'nosuch_pkg.nets'.*sys\.path"):
        load_model("nosuch_pkg.nets:make")
    with pytest.raises(InputError, match="has no attribute 'nope'"):
        load_model("byom_models:nope")
    with pytest.raises(InputError, match="not a zoo name"):
        load_model("no-such-net")
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(rgb_bundle.path, copy)
    man = json.loads((copy / "manifest.json").read_text())
    man["model"]["name"] = "nosuch_pkg.nets:make"
    (copy / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(BundleError, match="'nosuch_pkg.nets:make'.*module search path"):
        Bundle.load(copy)


def test_cli_builds_and_profiles_a_model_from_pythonpath(tmp_path: Path) -> None:
    data = _rgb_npz(tmp_path / "d.npz", 160, 4)
    val = _rgb_npz(tmp_path / "v.npz", 60, 4, seed=1)
    cmd = [sys.executable, "-m", "edgeml.cli", "build", str(tmp_path / "b"),
           "--model", "byom_models:small_resnet", "--model-kwargs", '{"num_classes": 4}',
           "--data", str(data), "--val-data", str(val), "--exits", "1,layer2",
           "--threads", "1", "--no-profile"]  # fmt: skip
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    m = Bundle.load(tmp_path / "b").manifest
    assert m.blocks == 3 and m.build["val_samples"] == 60
    prof = [sys.executable, "-m", "edgeml.cli", "profile", str(tmp_path / "b"), "--repeats", "2"]
    done = subprocess.run(prof, env=_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "b" / "profile.json").read_text())["samples"] == 8
    bad = subprocess.run(cmd[:-1] + ["--exits", "99"], env=_env(), capture_output=True,
                         text=True, timeout=180)  # fmt: skip
    assert bad.returncode == 2 and "exits_after: cut index 99" in bad.stderr


def test_shipped_bundles_read_as_version_1_with_the_grey_defaults() -> None:
    from edgeml.assets import fixture_bundle

    m = Bundle.load(fixture_bundle()).manifest
    assert m.format_version == 1 and m.difficulty_feature == "bright_share"
    assert m.prep.color == "L" and m.prep.mean == (0.286,) and m.prep.size == (28, 28)
