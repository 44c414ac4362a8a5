"""``edgeml demo``, ``fleet`` and ``emulate`` end to end, kept small (a few inputs each)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edgeml.bundle import Bundle
from edgeml.decision.policies import World
from edgeml.decision.scenario import Scenario
from edgeml.partition.cost import CostModel
from edgeml.runtime.demo import DemoConfig, run_demo

pytestmark = pytest.mark.slow


def _trace(tmp_path: Path) -> Path:
    p = tmp_path / "fam_1.csv"
    mbps = [4.0, 0.2, 12.0, 1.0] * 5
    p.write_text("time_s,mbps\n" + "".join(f"{i},{v}\n" for i, v in enumerate(mbps)))
    return p


def test_demo_runs_policies_on_the_same_inputs(profiled_bundle: Bundle, tmp_path) -> None:
    last = len(profiled_bundle.manifest.exits) - 1
    cfg = DemoConfig(
        bundle=str(profiled_bundle.path), policy=f"fixed:1,{last},0.9", trace=str(_trace(tmp_path)),
        baselines=("edge_only", "cloud_only"), inputs=12, rate=40.0, edge_slowdown=2.0,
        rtt_ms=10.0, out=str(tmp_path / "out"),
    )  # fmt: skip
    assert run_demo(cfg) == 0
    out = tmp_path / "out"
    report = json.loads((out / "demo.json").read_text())
    assert set(report["results"]) == {"ppo", "edge_only", "cloud_only"}
    assert report["config"]["pace"] == "profile" and report["cloud_slowdown"] > 0
    for name, r in report["results"].items():
        assert r["inputs"] == 12 and r["edge_slowdown"] == 2.0
        assert "predicted_latency_ms_mean" in r or name == "cloud_only"
    assert report["results"]["edge_only"]["bytes_sent_mean"] == 0
    assert report["results"]["cloud_only"]["offload_rate"] + (
        report["results"]["cloud_only"]["fallbacks"] / 12
    ) == pytest.approx(1.0)
    inputs = {
        name: [json.loads(line)["input"] for line in (out / f"{name}.jsonl").open()]
        for name in report["results"]
    }
    assert inputs["ppo"] == inputs["edge_only"] == inputs["cloud_only"]  # the same stream
    assert (out / "demo.png").stat().st_size > 10_000


def test_fleet_runs_edge_processes_on_one_cloud_per_policy(
    profiled_bundle: Bundle, tmp_path
) -> None:
    from edgeml.runtime.fleet_live import FleetConfig, run_fleet_live

    traces = tmp_path / "traces"
    traces.mkdir()
    for i in range(4):
        (traces / f"fam_{i}.csv").write_text(_trace(tmp_path).read_text())
    last = len(profiled_bundle.manifest.exits) - 1
    cfg = FleetConfig(
        bundle=str(profiled_bundle.path), policy=f"fixed:1,{last},0.9", traces=str(traces),
        baselines=("cloud_only",), edges=3, rounds=2, inputs=8, rate=20.0, edge_slowdown=2.0,
        rtt_ms=10.0, out=str(tmp_path / "out"),
    )  # fmt: skip
    assert run_fleet_live(cfg) == 0
    out = tmp_path / "out"
    report = json.loads((out / "fleet.json").read_text())
    assert set(report["results"]) == {"ppo", "cloud_only"}
    for r in report["results"].values():
        assert r["live"]["inputs"] == 3 * 2 * 8  # every edge, every round
        assert r["sim"]["inputs"] == 3 * 2 * 8  # the same fleet and rounds, simulated
    assert report["results"]["cloud_only"]["live"]["offload_rate"] > 0.5
    live = {n: r["live"] for n, r in report["results"].items()}
    lead = report["lead"]  # PPO against the one baseline, pooled and per round
    assert lead["over"] == "cloud_only" and len(lead["rounds_points"]) == 2
    assert lead["live_points"] == pytest.approx(
        100 * (live["ppo"]["timely_accuracy"] - live["cloud_only"]["timely_accuracy"])
    )
    assert np.mean(lead["rounds_points"]) == pytest.approx(lead["live_points"])  # equal rounds
    assert len({e["offset_s"] for e in report["edges"]}) == 3  # each edge its own stretch
    for i in range(3):  # edge i sees the same inputs under every policy
        seen = {(n, r): [json.loads(ln)["input"] for ln in (out / f"{n}.r{r}.edge{i}.jsonl").open()]
                for n in ("ppo", "cloud_only") for r in (0, 1)}  # fmt: skip
        assert len({tuple(v) for v in seen.values()}) == 1
    assert (out / "fleet.png").stat().st_size > 10_000
    # Every edge was paced to the profile: its work took slowdown x profile, whatever the
    # other edges and the server did to this machine (or nothing was slept: an overrun).
    cost = World.from_bundle(profiled_bundle, replace(Scenario(), edge_slowdown=2.0)).cost
    paced = 0
    for f in out.glob("*.edge*.jsonl"):
        for r in map(json.loads, f.open()):
            a, lat = r["action"], r["latency_ms"]
            if r["where"] == "fallback" or lat["slowdown_sleep"] == 0:
                continue
            stop = None if r["where"] == "cloud" else r["answer"]["exit_index"]
            b = cost.breakdown(a["split"], a["exit"], a["exit"] if stop is None else stop,
                               a["tau"] >= 1.0, a["codec"])  # fmt: skip
            spent = lat["edge_compute"] + lat["encode"] + lat["slowdown_sleep"]
            assert spent == pytest.approx(b.edge_ms + b.encode_ms, abs=0.01)
            paced += 1
    assert paced > 2 * 3 * 8 * 0.8
    assert report["cloud_slowdown"] > 0


def test_live_edges_start_at_the_phases_of_the_fleet_the_simulation_plays(
    profiled_bundle: Bundle, tmp_path, monkeypatch
) -> None:
    from edgeml.rl_agent import evaluate as ev
    from edgeml.runtime.fleet_live import FleetConfig, start_phases_s
    from edgeml.runtime.fleet_twin import simulate

    seen: list[list[float]] = []

    class Spy(ev.Fleet):  # the simulator's fleet, telling when each edge's frames start
        def reset(self, episodes, rng):  # type: ignore[no-untyped-def]
            obs = super().reset(episodes, rng)
            seen.append(list(self.phases_ms))
            return obs

    monkeypatch.setattr(ev, "Fleet", Spy)
    trace = _trace(tmp_path)
    for seed in (0, 5):
        seen.clear()
        cfg = FleetConfig(bundle=str(profiled_bundle.path), edges=4, inputs=6, rate=20.0,
                          rounds=2, seed=seed, out=str(tmp_path))  # fmt: skip
        simulate(cfg, profiled_bundle, "edgent", [(trace, 0.0, i) for i in range(4)])
        live = [1000.0 * s for s in start_phases_s(cfg, 4)]
        assert len(seen) == 2  # every simulated round at the live phases
        for phases in seen:
            assert live == pytest.approx(phases, abs=1e-9)
        assert live[0] == 0.0 and all(0.0 < p < 50.0 for p in live[1:])  # within one frame
        if seed == 0:
            first = live
    assert first != live  # the seed draws them


def test_the_fleets_cloud_speed_is_its_batch_compute_over_the_profiles(
    profiled_bundle: Bundle,
) -> None:
    from edgeml.decision.cloud import CloudService
    from edgeml.runtime.calibration import batch_time, cloud_slowdown, single_time

    service = CloudService.from_profile(profiled_bundle.profile)
    top = service.exits[-1]

    def sent(batch: int, ms: float) -> dict:
        return {
            "where": "cloud", "cloud_batch": batch, "answer": {"exit_block": top},
            "action": {"split": 0, "tau": 1.0}, "latency_ms": {"cloud_compute": ms},
        }  # fmt: skip

    one, four = (service.batch_ms(0, [(top, False)] * b) for b in (1, 4))
    local = {"where": "edge", "cloud_batch": None}
    by_batch = batch_time(service)
    assert cloud_slowdown([[sent(1, 3 * one), local], [sent(4, 1.5 * four)]], by_batch) == (
        pytest.approx((3 * one + 1.5 * four) / (one + four))
    )
    assert cloud_slowdown([[local]], by_batch) == 1.0
    # A single edge's prediction scales the cost model's cloud time, so it is measured
    # against that (batch 1 there need not be the cloud-side profile's batch 1).
    cost = CostModel.from_bundle(profiled_bundle)
    last = len(cost.exits) - 1
    rec = {**sent(1, 2.0), "answer": {"exit_block": top, "exit_index": last},
           "action": {"split": 0, "exit": last, "tau": 1.0, "codec": cost.codecs[0]}}  # fmt: skip
    single = cost.breakdown(0, last, last, True, cost.codecs[0]).cloud_ms
    assert cloud_slowdown([[rec]], single_time(cost)) == pytest.approx(2.0 / single)


def test_the_fleets_stack_is_its_calls_time_beyond_the_link_and_the_ping() -> None:
    """stack_of: the median ping RTT the edges measured, and the offloads' mean time beyond
    the emulated link (uplink plus half the RTT back) less the ping's excess over the RTT."""
    from edgeml.runtime.calibration import stack_of

    def rec(where: str, network: float, uplink: float, rtt_est: float) -> dict:
        lat = {"network": network, "uplink": uplink}
        return {"where": where, "latency_ms": lat, "rtt_estimate_ms": rtt_est}

    # link RTT 40: uplink 25 (20 of it propagation), back 20; calls took 3 and 5 ms more
    runs = [[rec("cloud", 48.0, 25.0, 41.0), rec("edge", 0.0, 0.0, 41.0)],
            [rec("cloud", 50.0, 25.0, 41.0)]]  # fmt: skip
    stack = stack_of(runs, 40.0)
    assert stack.rtt_ms == pytest.approx(41.0)
    assert stack.call_overhead_ms == pytest.approx((3.0 + 5.0) / 2 - 1.0)
    assert stack_of([[rec("edge", 0.0, 0.0, 40.0)]], 40.0).call_overhead_ms == 0.0


def _netns_allowed() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
        return False
    name = f"eml-probe-{os.getpid()}"
    ok = subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode == 0
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return ok


def _our_namespaces(pid: int) -> list[str]:
    """The namespaces ``edgeml emulate`` process ``pid`` made (``eml-c-PID``, ``eml-e-PID``)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    names = [ln.split()[0] for ln in out.splitlines() if ln.strip()]
    return [n for n in names if n in (f"eml-c-{pid}", f"eml-e-{pid}")]


@pytest.mark.skipif(not _netns_allowed(), reason="needs root with network namespaces and tc")
def test_emulate_runs_and_cleans_up_even_when_interrupted(
    profiled_bundle: Bundle, tmp_path
) -> None:
    last = len(profiled_bundle.manifest.exits) - 1
    base = [
        sys.executable, "-m", "edgeml.cli", "emulate", "--bundle", str(profiled_bundle.path),
        "--policy", f"fixed:0,{last},1.0", "--trace", str(_trace(tmp_path)), "--rate", "20",
        "--edge-slowdown", "2", "--rtt-ms", "10", "--port", "50999",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.Popen(
        [*base, "--baselines", "edge_only", "--inputs", "10", "--repeats", "2",
         "--out", str(tmp_path / "a")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    out, _ = done.communicate(timeout=300)
    assert done.returncode == 0, out
    assert _our_namespaces(done.pid) == []
    report = json.loads((tmp_path / "a" / "emulate.json").read_text())
    results = report["traces"]["fam_1.csv"]
    assert set(results) == {"ppo", "edge_only"}
    for name in ("ppo", "edge_only"):  # two rounds, pooled
        assert results[name]["inputs"] == 20 and results[name]["repeats"] == 2
        assert len(results[name]["timely_accuracy_per_round"]) == 2
        assert all((tmp_path / "a" / "fam_1" / f"{name}.r{k}.jsonl").is_file() for k in (0, 1))
    assert results["ppo"]["offload_rate"] > 0  # real packets crossed the shaped veth
    assert results["ppo"]["predicted_inputs"] > 0
    assert (tmp_path / "a" / "fam_1" / "emulate.png").is_file()
    # Interrupt a long run mid-way: namespaces and qdiscs must go.
    proc = subprocess.Popen(
        [*base, "--inputs", "100000", "--out", str(tmp_path / "b")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        t_end = time.time() + 180
        while time.time() < t_end and not _our_namespaces(proc.pid):
            time.sleep(0.2)
        assert _our_namespaces(proc.pid), "emulate never created its namespaces"
        log = tmp_path / "b" / "fam_1" / "ppo.jsonl"
        while time.time() < t_end and not (log.exists() and log.stat().st_size > 0):
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert _our_namespaces(proc.pid) == []
