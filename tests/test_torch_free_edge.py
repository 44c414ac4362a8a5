"""The torch-free edge: ``pip install '.[edge]'`` runs ``edgeml edge`` on ONNX Runtime.

``make setup`` builds ``.venv-edge`` with only the ``edge`` extra (no torch, no
stable-baselines3, no gymnasium, no onnx). These tests run the daemon from it on the default
bundle: with the cloud unreachable (every input answered locally) and offloading to a real
torch cloud (``edgeml serve`` from the full install), whose answers must be the ones a
torch edge gets for the same inputs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from runtime_helpers import Server, free_port

REPO = Path(__file__).resolve().parents[1]
EDGE_VENV = REPO / ".venv-edge"
DEFAULT_BUNDLE = REPO / "edgeml" / "assets" / "bundles" / "default"
HEAVY = ("torch", "stable_baselines3", "gymnasium", "onnx", "zstandard")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def edge_python() -> Path:
    python = EDGE_VENV / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{EDGE_VENV}: missing; `make setup` builds it (pip install -e '.[edge]')")
    return python


def _run_edge(python: Path, log: Path, *args: str, timeout: float = 120) -> str:
    cmd = [
        str(python), "-m", "edgeml.cli", "edge", str(DEFAULT_BUNDLE), "--log", str(log),
        "--rate", "0", "--no-malloc-tuning", *args,
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def _records(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_edge_venv_has_no_torch(edge_python: Path) -> None:
    probe = (
        "import importlib.util, json; "
        f"print(json.dumps([m for m in {HEAVY!r} if importlib.util.find_spec(m)]))"
    )
    out = subprocess.run([str(edge_python), "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [], f"the edge install carries {out.stdout}"
    helps = subprocess.run(
        [str(edge_python), "-m", "edgeml.cli", "--help"], capture_output=True, text=True
    )
    assert helps.returncode == 0 and "edge" in helps.stdout, helps.stderr


def test_edge_answers_locally_without_torch(edge_python: Path, tmp_path: Path) -> None:
    log = tmp_path / "edge.jsonl"
    dead = f"127.0.0.1:{free_port()}"
    _run_edge(edge_python, log, "--cloud", dead, "--policy", "edgent", "--max-inputs", "12")
    recs = _records(log)
    assert len(recs) == 12
    assert all(r["edge_runtime"] == "onnx/fp32" for r in recs)
    assert all(r["answer"] is not None and r["where"] in ("edge", "fallback") for r in recs)
    assert sum(r["correct"] for r in recs) >= 6  # exit 0 alone is ~66% accurate


def test_torch_free_edge_offloads_to_a_torch_cloud(edge_python: Path, tmp_path: Path) -> None:
    """Blocks 1-4 on ONNX Runtime, 5-8 on the torch cloud: the same classes as an all-torch
    run of the same inputs (the scenes stream is seeded), every input answered by the cloud."""
    port = free_port()
    server = Server(DEFAULT_BUNDLE, port)
    try:
        onnx_log, torch_log = tmp_path / "onnx.jsonl", tmp_path / "torch.jsonl"
        # no emulated slowness and a long deadline: on a loaded machine no input may fall
        # back, the point here is the split across runtimes, not timing
        common = (
            "--cloud", f"127.0.0.1:{port}", "--policy", "fixed:4,3,1.0",
            "--edge-slowdown", "1", "--deadline-ms", "5000",
        )  # fmt: skip
        _run_edge(edge_python, onnx_log, *common, "--max-inputs", "16")
        _run_edge(Path(sys.executable), torch_log, *common, "--max-inputs", "16",
                  "--edge-runtime", "torch")  # fmt: skip
    finally:
        server.stop()
    onnx, torch_ = _records(onnx_log), _records(torch_log)
    assert [r["where"] for r in onnx] == ["cloud"] * 16, [r["fallback_reason"] for r in onnx]
    assert {r["edge_runtime"] for r in onnx} == {"onnx/fp32"}
    assert {r["edge_runtime"] for r in torch_} == {"torch/fp32"}
    assert [r["input"] for r in onnx] == [r["input"] for r in torch_]
    same = sum(
        a["answer"]["class_id"] == b["answer"]["class_id"]
        for a, b in zip(onnx, torch_, strict=True)
    )
    assert same == 16
