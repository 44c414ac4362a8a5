"""``edgeml fleet``: N real edge daemons on one real batching cloud, every policy in turn.

What it does:

1. starts one ``edgeml serve`` process on 127.0.0.1 (the server's batching settings; with
   ``--pace profile`` paced to ``--cloud-speedup`` x the profile: a cloud of its own speed);
2. picks N held-out traces (test split; cycled when there are fewer) and a start offset in
   each, fixed by the seed: edge ``i`` always sees its own trace stretch and input stream;
3. for each round, for each policy (PPO and the live baselines, in an order that rotates by
   one every round): starts N ``edgeml edge`` processes, each with its own trace emulated in
   user space (bytes paced by the trace, plus RTT) and paced to the profile (``--pace
   profile``: each edge takes ``edge_slowdown`` x its profiled compute, as a device with a
   core of its own would; ``--pace measured`` lets this machine's contention slow them too,
   which the simulated fleet does not model), waits until all are ready and lets them go at
   once, and collects their JSONL logs;
4. plays the same fleet in the simulator (:func:`~edgeml.rl_agent.evaluate.run_fleet`: the
   same traces, offsets and edge count, each edge's own frames replayed
   (:mod:`~edgeml.runtime.replay`), no background edge load, the bundle's cloud batch
   times scaled by the cloud speed measured in the live runs, :func:`~.calibration.cloud_slowdown`,
   and the RTT and per-call overhead the live edges' calls had, :func:`~.calibration.stack_of`)
   per policy;
5. prints a table of fleet timely accuracy (all edges' inputs pooled over rounds), the
   worst edge's, mean latency and cloud queue wait, measured and simulated, and writes the
   JSON, the logs and a PNG of cloud queue, latency and decisions over time per policy.

How many edges a machine emulates honestly is bounded by its cores: the compute is real
(then padded by sleeping to the emulated time), and an edge whose real compute outlasted
that time counts in ``overrun_rate``, so an overloaded host shows up in the numbers.

The server runs on this machine, next to the edges, and this machine need not be the one
the bundle was profiled on: the simulator's cloud is as fast as the live server measured
(the ratio of its batch compute to the profile's at ``--cloud-speedup``, printed and kept
in the JSON; about 1 when paced, unless this machine cannot keep up). The edges plan with
the bundle's profile at ``--edge-slowdown`` and ``--cloud-speedup`` in both.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from edgeml.decision.cloud import CloudService
from edgeml.runtime.calibration import batch_time, cloud_slowdown, stack_of
from edgeml.runtime.demo import find_traces_dir, load_bundle, resolve_policy
from edgeml.runtime.emulate import child_env
from edgeml.runtime.fleet_config import FleetConfig
from edgeml.runtime.fleet_report import (
    format_lead,
    format_table,
    live_metrics,
    plot_fleet,
    ppo_lead,
)
from edgeml.runtime.fleet_twin import edge_inputs, simulate

log = logging.getLogger(__name__)

__all__ = ["FleetConfig", "run_fleet_live"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(cfg: FleetConfig, bundle: Path, port: int, out: Path) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "edgeml.cli", "serve", str(bundle), "--port", str(port),
           "--max-batch", str(cfg.max_batch), "--max-wait-us", str(cfg.max_wait_us)]  # fmt: skip
    if cfg.pace == "profile":  # the cloud, like the edges, runs at its profile's speed
        cmd += ["--pace-speedup", str(cfg.cloud_speedup)]
    err = (out / "serve.log").open("w")
    proc = subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT, text=True, env=child_env())
    deadline = time.monotonic() + cfg.startup_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"edgeml serve exited {proc.returncode}: see {out / 'serve.log'}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"edgeml serve did not listen on port {port} in time")


def pick_edges(cfg: FleetConfig, traces_dir: Path) -> list[tuple[Path, float, int]]:
    """``(trace file, start offset s, seed)`` per edge: test-split traces (of
    ``cfg.families``) in name order, cycled, each at a seeded offset that leaves room for
    the run."""
    from edgeml.rl_agent.traces import load_traces

    picked = load_traces(traces_dir, split="test", families=cfg.families)
    traces = sorted(picked, key=lambda t: t.name)
    rng = np.random.default_rng(cfg.seed)
    need_s = cfg.inputs / cfg.rate * 2 + 10
    out = []
    for i in range(cfg.edges):
        tr = traces[i % len(traces)]
        off = float(rng.uniform(0, max(tr.duration_s - need_s, 1.0)))
        out.append((traces_dir / tr.name, round(off, 1), cfg.seed * 1000 + i))
    return out


def start_phases_s(cfg: FleetConfig, n: int) -> list[float]:
    """When each of ``n`` live edges starts (s after the first): the phases of the simulated
    fleet that :func:`~edgeml.runtime.fleet_twin.simulate` plays (fleet 0 of ``cfg.seed``)."""
    from edgeml.rl_agent.fleet import fleet_rng, frame_phases

    interval_ms = 1000.0 / cfg.rate if cfg.rate > 0 else 0.0
    return [ms / 1000.0 for ms in frame_phases(n, interval_ms, fleet_rng(cfg.seed))]


def _run_round(
    cfg: FleetConfig, bundle: Path, port: int, policy: str, name: str, source: str,
    edges: list[tuple[Path, float, int]], out: Path, tag: str,
) -> list[list[dict[str, Any]]]:  # fmt: skip
    """One policy on every edge at once; each edge's records (logs ``TAG.edgeI.jsonl``).

    Once all are ready, edge ``i`` starts at its own phase within the frame interval: the
    phase the simulation of this fleet (:func:`~edgeml.runtime.fleet_twin.simulate`, fleet
    0 of ``cfg.seed``) gives it, so live and simulated edges offload with the same timing
    relative to each other."""
    gos = [out / f"{tag}.go{i}" for i in range(len(edges))]
    for go in gos:
        go.unlink(missing_ok=True)
    phases = start_phases_s(cfg, len(edges))
    procs, logs, readies = [], [], []
    try:
        for i, (trace, offset, seed) in enumerate(edges):
            log_path = out / f"{tag}.edge{i}.jsonl"
            log_path.unlink(missing_ok=True)
            ready = log_path.with_suffix(".ready")
            ready.unlink(missing_ok=True)
            cmd = [
                sys.executable, "-m", "edgeml.cli", "edge", str(bundle),
                "--cloud", f"127.0.0.1:{port}", "--policy", policy,
                "--source", f"{source}:{seed}", "--rate", str(cfg.rate),
                "--deadline-ms", str(cfg.deadline_ms), "--edge-slowdown", str(cfg.edge_slowdown),
                "--pace", cfg.pace, "--cloud-speedup", str(cfg.cloud_speedup),
                "--codec", cfg.codec, "--max-inputs", str(cfg.inputs), "--rtt-ms", str(cfg.rtt_ms),
                "--link-trace", str(trace), "--link-offset-s", str(offset),
                "--link-rtt-ms", str(cfg.rtt_ms), "--log", str(log_path), "--run", name,
                "--seed", str(seed), "--ready-file", str(ready), "--go-file", str(gos[i]),
            ]  # fmt: skip
            err = log_path.with_suffix(".stderr").open("w")
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err,
                                          text=True, env=child_env()))  # fmt: skip
            logs.append(log_path)
            readies.append(ready)
        deadline = time.monotonic() + cfg.startup_timeout_s
        while not all(r.exists() for r in readies):
            for p, lp in zip(procs, logs, strict=True):
                if p.poll() is not None:
                    text = lp.with_suffix(".stderr").read_text()[-2000:]
                    raise RuntimeError(f"edge ({name}) exited {p.returncode}:\n{text}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"edges ({name}) not ready in {cfg.startup_timeout_s:g} s")
            time.sleep(0.05)
        t0 = time.monotonic()
        for i in sorted(range(len(edges)), key=lambda i: phases[i]):
            time.sleep(max(t0 + phases[i] - time.monotonic(), 0.0))
            gos[i].write_text("go\n")
        for p in procs:
            p.wait()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for go in gos:
            go.unlink(missing_ok=True)
    bad = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0]
    if bad:
        raise RuntimeError(f"edges ({name}) failed: {bad}; see {out}/*.stderr")
    return [[json.loads(line) for line in lp.read_text().splitlines()] for lp in logs]


def run_fleet_live(cfg: FleetConfig) -> int:
    from edgeml.runtime.sources import default_source

    t_start = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(cfg.bundle, out)
    policy, origin = resolve_policy(cfg.policy, bundle, out, cfg)
    traces_dir = Path(cfg.traces) if cfg.traces else find_traces_dir()
    edges = pick_edges(cfg, traces_dir)
    source = default_source(bundle.manifest.dataset)
    names = ("ppo", *cfg.baselines)
    spec = {n: (policy if n == "ppo" else n) for n in names}
    print(f"edgeml fleet: {cfg.edges} edges on one cloud (max batch {cfg.max_batch}, wait "
          f"{cfg.max_wait_us} us), {cfg.inputs} inputs per edge per policy at {cfg.rate:g}/s, "
          f"{cfg.rounds} rounds, policies {', '.join(names)}; policy {policy} ({origin})",
          flush=True)  # fmt: skip
    port = _free_port()
    server = _start_server(cfg, bundle.path, port, out)
    runs: dict[str, list[list[dict[str, Any]]]] = {n: [[] for _ in edges] for n in names}
    per_round: dict[str, list[float]] = {n: [] for n in names}  # live timely accuracy
    first: dict[str, list[list[dict[str, Any]]]] = {}
    try:
        for r in range(cfg.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                t0 = time.perf_counter()
                per_edge = _run_round(cfg, bundle.path, port, spec[name], name, source, edges,
                                      out, f"{name}.r{r}")  # fmt: skip
                first.setdefault(name, per_edge)
                for acc, recs in zip(runs[name], per_edge, strict=True):
                    acc.extend(recs)
                m = live_metrics(per_edge)
                per_round[name].append(m["timely_accuracy"])
                print(f"  round {r + 1} {name:<13} timely {m['timely_accuracy']:.3f} latency "
                      f"{m['latency_ms_mean']:.1f} ms queue {m['cloud_queue_ms_mean']:.2f} ms "
                      f"cpu {m['cpu_load_mean']:.2f} [{time.perf_counter() - t0:.0f} s]",
                      flush=True)  # fmt: skip
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
    pooled = [e for n in names for e in runs[n]]
    planned = CloudService.from_profile(bundle.profile, cfg.cloud_speedup)
    slow = cloud_slowdown(pooled, batch_time(planned))
    stack = stack_of(pooled, cfg.rtt_ms)
    inputs = edge_inputs(cfg, bundle, source, edges)  # the frames each live edge saw
    results = {n: {"live": {**live_metrics(runs[n]), "rounds": per_round[n]},
                   "sim": simulate(cfg, bundle, spec[n], edges, slow, stack, inputs)}
               for n in names}  # fmt: skip
    title = (f"edgeml fleet: {cfg.edges} edges, {cfg.rounds} rounds x {cfg.inputs} inputs/edge,"
             f" deadline {cfg.deadline_ms:g} ms, edge x{cfg.edge_slowdown:g}, cloud "
             f"x{1 / cfg.cloud_speedup:g} ({cfg.pace}-paced); sim = the same fleet in the "
             f"simulator, as measured live: cloud x{slow:.2f} that, RTT {stack.rtt_ms:.1f} "
             f"ms, call overhead {stack.call_overhead_ms:.1f} ms")  # fmt: skip
    print(format_table(results, title))
    lead = ppo_lead(results)
    if lead:
        print(format_lead(lead))
    png = plot_fleet(first, out / "fleet.png", title)
    report = {
        "config": cfg.as_dict(), "policy": policy, "policy_origin": origin,
        "edges": [{"trace": str(t), "offset_s": o, "seed": s} for t, o, s in edges],
        "cloud_slowdown": round(slow, 4), "stack": asdict(stack), "results": results,
        "lead": lead,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }  # fmt: skip
    (out / "fleet.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out / 'fleet.json'}, {png} and the per-edge logs in {out}/ "
          f"({report['wall_s']:.0f} s)")  # fmt: skip
    return 0
