"""examples/bring_your_own_model.py --quick end to end: build (ONNX export, profile) ->
Bundle.load in a fresh process -> ``edgeml.train_agent`` -> ``edgeml evaluate`` -> ``edgeml
serve`` -> real gRPC offload round trips (split 0 and 1) -> ``edgeml edge`` with the policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bring_your_own_model_quick(tmp_path: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, str(ROOT / "examples" / "bring_your_own_model.py"), "--quick",
           "--out", str(tmp_path), "--threads", "1"]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["classes"] == 6 and result["input_shape"] == [3, 64, 64]
    assert result["blocks"] == 4 and len(result["accuracy_per_exit"]) == 4
    assert result["exits_after"] == ["layer1_1_relu_1", "layer2_1_relu_1", "layer3_1_relu_1"]
    assert result["cloud_answers"] == {"0": result["edge_answer"], "1": result["edge_answer"]}
    assert len(result["profile_blocks_ms"]) == 4
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["model"]["name"] == "bring_your_own_model:resnet18"
    assert manifest["preprocessing"]["color"] == "RGB"
    assert set(manifest["onnx"]["variants"]) == {"fp32"}  # exported at build time
    assert result["timesteps"] >= 2048 and (tmp_path / "ppo.npz").is_file()
    assert {"ppo", "oracle", "edgent", "edgent-load"} <= set(result["evaluate"])
    assert result["headroom"]["best_heuristic"] in result["evaluate"]
    assert result["edge_daemon"]["inputs"] == 30  # the daemon ran the trained actor
    rows = [json.loads(x) for x in (tmp_path / "edge.jsonl").read_text().splitlines()]
    assert {r["policy"] for r in rows} == {"ppo"} and rows[0]["edge_runtime"] == "onnx/fp32"
