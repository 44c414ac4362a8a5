"""The bundle contract: manifest fields, hash verification, refusal messages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from edgeml.bundle import Bundle, BundleError


def test_manifest_fields(tiny_bundle: Bundle) -> None:
    m = json.loads((tiny_bundle.path / "manifest.json").read_text())
    for key in (
        "format_version",
        "model",
        "dataset",
        "input_shape",
        "num_classes",
        "blocks",
        "exits",
        "cut_points",
        "weights_sha256",
        "edgeml_version",
        "created",
        "build",
    ):
        assert key in m, key
    assert m["exits"][-1] == m["blocks"] == 3
    assert [c["split"] for c in m["cut_points"]] == [0, 1, 2, 3]
    cut0 = m["cut_points"][0]
    assert cut0["shape"] == [1, 28, 28] and cut0["dtype"] == "float32"
    assert cut0["bytes"]["raw"] > 28 * 28 * 4 > cut0["bytes"]["int8"] * 3
    assert m["build"]["command"] == "tests"


def test_load_gives_same_outputs(tiny_bundle: Bundle) -> None:
    again = Bundle.load(tiny_bundle.path)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(again.net(x), tiny_bundle.net(x))


def test_tampered_weights_are_refused(tiny_bundle: Bundle, tmp_path: Path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle.path, copy)
    state = torch.load(copy / "weights.pt", weights_only=True)
    key = next(iter(state))
    state[key] = state[key] + 1e-3
    torch.save(state, copy / "weights.pt")
    with pytest.raises(BundleError, match="does not match the manifest's weights_sha256"):
        Bundle.load(copy)


def test_malformed_manifest_names_field(tiny_bundle: Bundle, tmp_path: Path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle.path, copy)
    m = json.loads((copy / "manifest.json").read_text())
    del m["exits"]
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="missing field 'exits'"):
        Bundle.load(copy)
    with pytest.raises(BundleError, match="no manifest.json"):
        Bundle.load(tmp_path / "nowhere")
