"""Profiler output (profile.json) and the cost model: schema, exact formula, invariants."""

from __future__ import annotations

import itertools
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeml.bundle import Bundle
from edgeml.cli import main
from edgeml.decision.scenario import Scenario
from edgeml.partition.codecs import BASE_CODECS, CODECS
from edgeml.partition.cost import RULE_KEYS, CostModel
from edgeml.partition.profiler import format_profile, interleaved_medians

torch.set_num_threads(1)


# --------------------------------------------------------------------------- profiler


def test_profile_json_schema_and_positivity(profiled_bundle: Bundle) -> None:
    on_disk = json.loads((profiled_bundle.path / "profile.json").read_text())
    assert on_disk == profiled_bundle.profile
    assert Bundle.load(profiled_bundle.path).profile == on_disk
    p = on_disk
    n = profiled_bundle.manifest.blocks
    exits = profiled_bundle.manifest.exits
    assert p["format_version"] == 1
    assert isinstance(p["host"]["cpu"], str) and p["host"]["cpu"]
    assert p["host"]["threads"] == 1
    assert p["host"]["torch"] == torch.__version__
    assert p["edge_slowdown"] == Scenario().edge_slowdown
    assert p["repeats"] == 3
    assert len(p["blocks_ms"]) == n
    assert all(v > 0 for v in p["blocks_ms"])
    assert set(p["rule_overhead_ms"]) == set(RULE_KEYS)
    assert all(0 <= v < 5 for v in p["rule_overhead_ms"].values())
    assert 0 <= p["offload_fixed_ms"] < 5
    assert set(p["heads_ms"]) == {str(b) for b in exits}
    assert all(v > 0 for v in p["heads_ms"].values())
    assert set(p["codecs"]) == set(CODECS)
    for codec, t in p["codecs"].items():
        assert set(t) >= {"bytes", "encode_ms", "decode_ms"}
        for key in ("bytes", "encode_ms", "decode_ms"):
            assert len(t[key]) == n + 1, (codec, key)
            assert all(v > 0 for v in t[key]), (codec, key)


def test_profile_bytes_match_the_tensor_at_each_split(profiled_bundle: Bundle) -> None:
    p = profiled_bundle.profile
    assert p is not None
    for cut in profiled_bundle.manifest.cut_points:
        raw_payload = 4 * math.prod(cut.shape)
        raw = p["codecs"]["raw"]["bytes"][cut.split]
        assert raw_payload < raw < raw_payload + 200  # payload + a small frame header
        for base in BASE_CODECS:  # sizes without an entropy stage do not depend on the data
            assert p["codecs"][base]["bytes"][cut.split] == cut.bytes[base], (base, cut.split)
        assert p["codecs"]["int8"]["bytes"][cut.split] < p["codecs"]["fp16"]["bytes"][cut.split]
        assert p["codecs"]["fp16"]["bytes"][cut.split] < raw


def test_interleaved_medians_takes_the_median_per_function() -> None:
    calls: list[tuple[str, int]] = []
    fns = [lambda r: calls.append(("a", r)), lambda r: calls.append(("b", r))]
    out = interleaved_medians(fns, repeats=3, warmup=1)
    assert len(out) == 2 and all(v >= 0 for v in out)
    # Warm-up round 0, then rounds 0..2, every round visiting a then b.
    assert calls == [(k, r) for r in (0, 0, 1, 2) for k in "ab"]
    with pytest.raises(ValueError, match="repeats"):
        interleaved_medians(fns, repeats=0)


def test_cli_profile_writes_profile_and_prints_table(
    tiny_bundle: Bundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "b"
    shutil.copytree(tiny_bundle.path, path)
    (path / "profile.json").unlink(missing_ok=True)
    args = ["profile", str(path), "--repeats", "2", "--edge-slowdown", "5", "--threads", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    profile = json.loads((path / "profile.json").read_text())
    assert profile["edge_slowdown"] == 5.0 and profile["repeats"] == 2
    assert "split" in out and "int8+zstd" in out and "profile written" in out
    assert out.count("\n") > tiny_bundle.manifest.blocks + 5
    assert format_profile(profile).splitlines()[1].split()[0] == "split"


# --------------------------------------------------------------------------- cost model

EXITS = (2, 4)
HAND = {
    "format_version": 1,
    "edge_slowdown": 10.0,
    "blocks_ms": [1.0, 2.0, 3.0, 4.0],
    "heads_ms": {"2": 0.5, "4": 0.25},
    "codecs": {
        "raw": {
            "bytes": [1000, 2000, 3000, 4000, 5000],
            "encode_ms": [0.1, 0.2, 0.3, 0.4, 0.5],
            "decode_ms": [0.01, 0.02, 0.03, 0.04, 0.05],
        },
        "int8": {
            "bytes": [250, 500, 750, 1000, 1250],
            "encode_ms": [1.0, 2.0, 3.0, 4.0, 5.0],
            "decode_ms": [0.5, 0.6, 0.7, 0.8, 0.9],
        },
    },
}


@pytest.fixture
def hand() -> CostModel:
    return CostModel.from_profile(HAND, EXITS)


def test_cost_formula_exact_on_hand_made_profile(hand: CostModel) -> None:
    assert hand.edge_slowdown == 10.0  # taken from the profile
    # Split 1, final exit, no early stop: block 1 on the edge, blocks 2-4 + final head in the cloud.
    b = hand.breakdown(1, 1, 1, True, "raw")
    assert b.offloaded
    assert b.edge_ms == pytest.approx(10 * 1.0)
    assert b.encode_ms == pytest.approx(10 * 0.2)
    assert b.bytes == 2000
    assert b.decode_ms == pytest.approx(0.02)
    assert b.cloud_ms == pytest.approx(2 + 3 + 4 + 0.25)
    # 2000 B at 8 Mbps = 2 ms on the wire, plus 40 ms RTT.
    want = 10 + 2 + 2 + 40 + 0.02 + 9.25
    assert hand.latency_ms(1, 1, 1, True, "raw", 8.0, 40.0) == pytest.approx(want)
    assert b.total_ms(8.0, 40.0) == pytest.approx(want)
    # Same action, int8 at the same link.
    want8 = 10 + 10 * 2.0 + 500 * 8 / 8e3 + 40 + 0.6 + 9.25
    assert hand.latency_ms(1, 1, 1, True, "int8", 8.0, 40.0) == pytest.approx(want8)
    # Cloud only: the edge only encodes the input.
    assert hand.latency_ms(0, 0, 0, True, "raw", 8.0, 10.0) == pytest.approx(
        10 * 0.1 + 1.0 + 10 + 0.01 + (1 + 2 + 0.5)
    )
    # Edge only, final exit: nothing is sent.
    assert hand.latency_ms(4, 1, 1, True, "raw", 8.0, 40.0) == pytest.approx(10 * (10 + 0.25))


def test_cost_early_stop_before_split_sends_nothing(hand: CostModel) -> None:
    # Split 3, stop at exit 0 (block 2) with tau < 1: blocks 1-2 and head 2 on the edge.
    b = hand.breakdown(3, 1, 0, False, "raw")
    assert not b.offloaded
    assert (b.encode_ms, b.bytes, b.decode_ms, b.cloud_ms) == (0, 0, 0, 0)
    assert b.edge_ms == pytest.approx(10 * (1 + 2 + 0.5))
    # No link is needed, so even a dead link costs nothing.
    assert hand.latency_ms(3, 1, 0, False, "raw", 0.0, 40.0) == pytest.approx(35.0)
    # Stopping at block 4 instead: both heads run, head 2 on the edge, head 4 in the cloud.
    b = hand.breakdown(3, 1, 1, False, "raw")
    assert b.offloaded
    assert b.edge_ms == pytest.approx(10 * (1 + 2 + 3 + 0.5))
    assert b.cloud_ms == pytest.approx(4 + 0.25)
    assert hand.latency_ms(3, 1, 1, False, "raw", 0.0, 40.0) == math.inf


def test_cost_tau_one_evaluates_only_the_chosen_exit_head(hand: CostModel) -> None:
    one = hand.breakdown(1, 1, 1, True, "raw")
    many = hand.breakdown(1, 1, 1, False, "raw")
    assert many.cloud_ms - one.cloud_ms == pytest.approx(0.5)  # head 2 ran in the cloud
    assert many.edge_ms == one.edge_ms
    one = hand.breakdown(3, 1, 1, True, "raw")
    many = hand.breakdown(3, 1, 1, False, "raw")
    assert many.edge_ms - one.edge_ms == pytest.approx(10 * 0.5)  # ... now on the edge
    assert many.cloud_ms == one.cloud_ms
    # Exit 0 with tau = 1: only head 2, after block 2, wherever it runs.
    assert hand.breakdown(4, 0, 0, True, "raw").edge_ms == pytest.approx(10 * 3.5)
    assert hand.breakdown(1, 0, 0, True, "raw").cloud_ms == pytest.approx(2 + 0.5)


def test_cost_edge_load_and_cloud_speedup(hand: CostModel) -> None:
    base = hand.breakdown(1, 1, 1, True, "int8")
    loaded = hand.breakdown(1, 1, 1, True, "int8", edge_load=1.0)
    assert loaded.edge_ms == pytest.approx(2 * base.edge_ms)
    assert loaded.encode_ms == pytest.approx(2 * base.encode_ms)
    assert (loaded.cloud_ms, loaded.decode_ms, loaded.bytes) == (
        base.cloud_ms,
        base.decode_ms,
        base.bytes,
    )
    assert hand.latency_ms(1, 1, 1, True, "int8", 8, 40, edge_load=1.0) == pytest.approx(
        loaded.total_ms(8, 40)
    )
    fast = CostModel.from_profile(HAND, EXITS, edge_slowdown=1.0, cloud_speedup=2.0)
    b = fast.breakdown(1, 1, 1, True, "int8")
    assert b.edge_ms == pytest.approx(1.0) and b.encode_ms == pytest.approx(2.0)
    assert b.cloud_ms == pytest.approx(9.25 / 2) and b.decode_ms == pytest.approx(0.3)


def test_cost_local_fallback_exact(hand: CostModel) -> None:
    # Exits at blocks 2 and 4 (EXITS); slowdown 10, load 1 doubles edge time.
    assert hand.fallback_exits(0, 1) == [0, 1]
    assert hand.fallback_exits(1, 0) == [0]  # only exits up to the chosen one
    assert hand.fallback_exits(3, 0) == [1]  # none up to it: the ones past the split
    # From split 1 to exit 1: blocks 2-4 and head 4, slowed (no rule overheads).
    assert hand.local_finish_ms(1, 1, 1.0) == pytest.approx(10 * 2 * (2 + 3 + 4 + 0.25))
    assert hand.cheapest_fallback_ms(1, 1) == pytest.approx(10 * (2 + 0.5))
    assert hand.cheapest_fallback_ms(3, 0) == pytest.approx(10 * (4 + 0.25))
    # The deepest exit that fits the budget, else the shallowest.
    assert hand.fallback_exit(1, 1, 100.0) == 1
    assert hand.fallback_exit(1, 1, 30.0) == 0
    assert hand.fallback_exit(1, 1, -5.0) == 0


def test_cost_rule_overheads_exact() -> None:
    rule = {"segment": 0.1, "exit_check": 0.01, "exit_decide": 0.05}
    cm = CostModel.from_profile({**HAND, "rule_overhead_ms": rule}, EXITS)
    assert cm.rule_ms == (0.1, 0.01, 0.05)
    # Edge runs block 1 (one segment, no exit); cloud runs blocks 2-4, passes exit 0
    # unevaluated (tau = 1) and evaluates exit 1.
    b = cm.breakdown(1, 1, 1, True, "raw")
    assert b.edge_ms == pytest.approx(10 * (1 + 0.1))
    assert b.cloud_ms == pytest.approx(9 + 0.1 + 0.01 + 0.25 + 0.05)
    # tau < 1: exit 0 is evaluated too.
    assert cm.breakdown(1, 1, 1, False, "raw").cloud_ms == pytest.approx(9 + 0.1 + 0.55 + 0.3)
    # Cloud only: the edge runs no segment.
    b = cm.breakdown(0, 0, 0, True, "raw")
    assert b.edge_ms == 0 and b.cloud_ms == pytest.approx(3 + 0.1 + 0.5 + 0.05)
    # Edge only and early stop on the edge: one segment, nothing in the cloud.
    assert cm.breakdown(4, 1, 1, True, "raw").edge_ms == pytest.approx(10 * 10.41)
    b = cm.breakdown(3, 1, 0, False, "raw")
    assert b.edge_ms == pytest.approx(10 * 3.65) and b.cloud_ms == 0
    with pytest.raises(ValueError, match="rule_ms"):
        CostModel.from_profile({**HAND, "rule_overhead_ms": {**rule, "segment": -1}}, EXITS)


def test_cost_offload_fixed_cost_is_edge_side_and_only_on_offloads(hand: CostModel) -> None:
    cm = CostModel.from_profile({**HAND, "offload_fixed_ms": 0.3}, EXITS)
    assert cm.offload_ms == 0.3 and hand.offload_ms == 0.0  # absent: 0 (older profiles)
    # Slowed and loaded like the encode it precedes, on every offload.
    b = cm.breakdown(1, 1, 1, True, "raw", edge_load=0.5)
    assert b.encode_ms == pytest.approx(10 * 1.5 * (0.2 + 0.3))
    assert cm.latency_ms(0, 0, 0, True, "int8", 8.0, 10.0) == pytest.approx(
        hand.latency_ms(0, 0, 0, True, "int8", 8.0, 10.0) + 10 * 0.3
    )
    # Nothing sent, nothing added.
    assert cm.latency_ms(4, 1, 1, True, "raw", 8.0, 40.0) == hand.latency_ms(
        4, 1, 1, True, "raw", 8.0, 40.0
    )
    table = cm.latency_table("int8", 8.0, 10.0, edge_load=0.5)
    assert table[1, 1, 1, 1] == pytest.approx(cm.latency_ms(1, 1, 1, True, "int8", 8.0, 10.0, 0.5))
    with pytest.raises(ValueError, match="offload_ms"):
        CostModel.from_profile({**HAND, "offload_fixed_ms": -1.0}, EXITS)


def test_an_onnx_edge_pays_its_own_offload_fixed_cost() -> None:
    """An ONNX edge's split-0 path is not torch's: where the profile timed it, the edge's
    cost model takes the runtime's own fixed cost; where it did not, torch's."""
    variant = {"blocks_ms": HAND["blocks_ms"], "heads_ms": HAND["heads_ms"]}
    prof = {**HAND, "offload_fixed_ms": 0.3,
            "edge_runtimes": {"onnx/fp32": {**variant, "offload_fixed_ms": 0.1},
                              "onnx/int8": variant}}  # fmt: skip
    assert CostModel.from_profile(prof, EXITS).offload_ms == 0.3
    onnx = CostModel.from_profile(prof, EXITS, edge_runtime="onnx/fp32")
    assert onnx.offload_ms == 0.1
    assert CostModel.from_profile(prof, EXITS, edge_runtime="onnx/int8").offload_ms == 0.3
    assert onnx.breakdown(0, 1, 1, True, "raw").encode_ms == pytest.approx(10 * (0.1 + 0.1))


def test_cold_path_is_the_idle_median_over_the_back_to_back_one() -> None:
    """cold_path_ms: what the path costs right after ``before`` and a pause, less what it
    costs run back to back (a clock the test drives: 1 ms warm, 3 ms cold)."""
    from edgeml.partition.edge_profile import cold_path_ms

    now = [0]
    cold = [False]

    def before() -> None:
        cold[0] = True

    def path() -> None:
        now[0] += 3_000_000 if cold[0] else 1_000_000
        cold[0] = False

    assert cold_path_ms(path, before, rounds=5, idle_s=0.0, clock=lambda: now[0]) == 2.0
    assert cold_path_ms(path, lambda: None, rounds=5, idle_s=0.0, clock=lambda: now[0]) == 0.0


def _actions(cm: CostModel):  # type: ignore[no-untyped-def]
    """Every valid (split, exit, stop, tau_is_one)."""
    for s, e in itertools.product(range(cm.num_blocks + 1), range(cm.num_exits)):
        for j in range(e + 1):
            yield s, e, j, False
        yield s, e, e, True


def test_cost_offloads_only_when_stop_block_is_past_split(profiled_bundle: Bundle) -> None:
    cm = CostModel.from_bundle(profiled_bundle)
    n_checked = 0
    for s, e, j, t in _actions(cm):
        for codec in ("raw", "int8+zstd"):
            b = cm.breakdown(s, e, j, t, codec)
            assert b.offloaded == (cm.exits[j] > s), (s, e, j, t)
            if not b.offloaded:
                assert (b.encode_ms, b.bytes, b.decode_ms, b.cloud_ms) == (0, 0, 0, 0)
            else:
                assert min(b.encode_ms, b.bytes, b.decode_ms, b.cloud_ms) > 0
            if s == 0:
                assert b.edge_ms == 0
            n_checked += 1
    assert n_checked > 20


def test_cost_latency_is_monotone_in_bandwidth(profiled_bundle: Bundle) -> None:
    cm = CostModel.from_bundle(profiled_bundle)
    grid = [0.0, 0.5, 1.0, 2.0, 5.0, 20.0, 100.0, 1000.0]
    for s, e, j, t in _actions(cm):
        lat = [cm.latency_ms(s, e, j, t, "int8", bw, 40.0) for bw in grid]
        if cm.exits[j] > s:
            assert lat[0] == math.inf
            assert all(a > b for a, b in itertools.pairwise(lat)), (s, e, j, t, lat)
            assert lat[-1] > 40.0
        else:
            assert len(set(lat)) == 1 and math.isfinite(lat[0])


def test_cost_latency_table_matches_scalar_path(profiled_bundle: Bundle) -> None:
    cm = CostModel.from_bundle(profiled_bundle, edge_slowdown=3.0)
    table = cm.latency_table("fp16+lz4", 7.5, 25.0, edge_load=0.5)
    assert table.shape == (cm.num_blocks + 1, cm.num_exits, cm.num_exits, 2)
    valid = np.zeros(table.shape, dtype=bool)
    for s, e, j, t in _actions(cm):
        valid[s, e, j, int(t)] = True
        want = cm.latency_ms(s, e, j, t, "fp16+lz4", 7.5, 25.0, edge_load=0.5)
        assert table[s, e, j, int(t)] == pytest.approx(want, rel=1e-12)
        b = cm.breakdown(s, e, j, t, "fp16+lz4", edge_load=0.5)
        assert b.total_ms(7.5, 25.0) == pytest.approx(want, rel=1e-12)
    assert np.isnan(table[~valid]).all()
    assert np.isfinite(table[valid]).all()


def test_cost_rejects_impossible_actions(hand: CostModel) -> None:
    with pytest.raises(ValueError, match="stop_exit_index"):
        hand.latency_ms(1, 0, 1, False, "raw", 10, 40)  # stops after e
    with pytest.raises(ValueError, match="tau >= 1"):
        hand.latency_ms(1, 1, 0, True, "raw", 10, 40)  # tau = 1 never stops early
    with pytest.raises(ValueError, match="split"):
        hand.latency_ms(5, 1, 1, True, "raw", 10, 40)
    with pytest.raises(ValueError, match="split"):
        hand.breakdown(-1, 1, 1, True, "raw")
    with pytest.raises(ValueError, match="codec"):
        hand.latency_ms(1, 1, 1, True, "jpeg", 10, 40)
    with pytest.raises(ValueError, match="heads_ms"):
        CostModel.from_profile(HAND, (1, 4))
    with pytest.raises(ValueError, match="exits"):
        CostModel.from_profile(HAND, (2,))
    with pytest.raises(ValueError, match="blocks_ms"):
        CostModel.from_profile({k: v for k, v in HAND.items() if k != "blocks_ms"}, EXITS)
