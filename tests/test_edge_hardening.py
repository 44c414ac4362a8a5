"""The edge daemon under bad input: a corrupt frame, frames of another shape, bad flags.

Before: one NaN pixel in an offloaded frame ended ``edgeml edge`` (exit 2, every later
input lost), the local answer to it logged ``"confidence": NaN`` (not JSON), a 5x7 source
was resized into confident garbage, and nonsense flags were accepted or ended in a
traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runtime_helpers import free_port
from transport_helpers import start_server

from edgeml.bundle import Bundle
from edgeml.cli import main


def _strict(path: Path) -> list[dict[str, Any]]:
    def refuse(const: str) -> None:
        raise ValueError(f"not strict JSON: {const}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def _frames(tmp_path: Path, bundle: Bundle, shape: tuple[int, ...] | None = None) -> Path:
    rng = np.random.default_rng(0)
    x = rng.random((10, *(shape or bundle.manifest.input_shape[1:])), dtype=np.float32)
    if shape is None:
        x[3, 5, 5] = np.nan
    path = tmp_path / "frames.npy"
    np.save(path, x)
    return path


@pytest.mark.parametrize("cloud_up", [True, False], ids=["offloaded", "cloud-down"])
def test_a_nan_frame_gets_an_error_record_and_the_daemon_goes_on(
    profiled_bundle: Bundle, tmp_path: Path, cloud_up: bool
) -> None:
    server = start_server(profiled_bundle) if cloud_up else None
    cloud = f"127.0.0.1:{server.port if server else free_port()}"
    log = tmp_path / "edge.jsonl"
    try:
        code = main([
            "edge", str(profiled_bundle.path), "--cloud", cloud, "--policy", "cloud_only",
            "--source", str(_frames(tmp_path, profiled_bundle)), "--max-inputs", "10",
            "--rate", "0", "--log", str(log), "--edge-slowdown", "1",
        ])  # fmt: skip
    finally:
        if server is not None:
            server.stop(0)
    assert code == 0
    recs = _strict(log)
    assert [r["seq"] for r in recs] == list(range(10))
    bad = recs[3]
    assert bad["where"] == "error" and "non-finite" in bad["error"] and bad["answer"] is None
    others = [r for i, r in enumerate(recs) if i != 3]
    assert all(r["error"] is None and r["answer"] is not None for r in others)
    want = "cloud" if cloud_up else "fallback"
    assert sum(r["where"] == want for r in others) >= 8


BAD_FLAGS = [
    (["--deadline-ms", "nan"], "deadline_ms"),
    (["--grace-ms", "-1"], "grace_ms"),
    (["--rtt-ms", "-10"], "rtt_ms"),
    (["--cloud", "127.0.0.1:99999"], "targets"),
    (["--cloud", "127.0.0.1:abc"], "targets"),
    (["--threads", "0"], "threads"),
    (["--metrics-port", "99999"], "metrics_port"),
    (["--tls-cert", "x.crt"], "tls_cert"),
]


@pytest.mark.parametrize(("flags", "field"), BAD_FLAGS, ids=[f[1] + f[0][1] for f in BAD_FLAGS])
def test_bad_edge_flags_get_one_line_naming_the_field(
    profiled_bundle: Bundle, flags: list[str], field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["edge", str(profiled_bundle.path), "--cloud", "127.0.0.1:1", "--policy", "edge_only"]
    for i in range(0, len(flags), 2):  # a later --cloud replaces the default one
        if flags[i] in argv:
            del argv[argv.index(flags[i]) : argv.index(flags[i]) + 2]
    assert main([*argv, *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith("edgeml edge: ") and field in err


def test_a_source_of_another_shape_is_refused(
    profiled_bundle: Bundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = start_server(profiled_bundle)
    try:
        code = main([
            "edge", str(profiled_bundle.path), "--cloud", f"127.0.0.1:{server.port}",
            "--policy", "edge_only", "--source", str(_frames(tmp_path, profiled_bundle, (5, 7))),
            "--max-inputs", "3", "--rate", "0",
        ])  # fmt: skip
    finally:
        server.stop(0)
    assert code == 2
    err = capsys.readouterr().err
    assert "does not match the bundle's input" in err and "Traceback" not in err
