"""``edgeml emulate``: the edge and the cloud in two network namespaces, a kernel-shaped link.

Layout (needs root and iproute2)::

    netns eml-c-<pid>                          netns eml-e-<pid>
    edgeml serve  10.77.0.1  <--- veth --->  10.77.0.2  edgeml edge
                                              egress: tc tbf, rate set every second
                                              from the trace (the uplink)

The uplink is shaped by ``tc qdisc ... tbf`` on the edge's end of the veth pair, its rate
following the trace (:mod:`.netns`). This kernel has no ``netem``, so the base RTT is added
in user space by the edge (half before a request leaves, half after the reply,
``--link-rtt-ms``). Replies are a few bytes; the downlink is not shaped.

For every trace, PPO and each baseline run in turn on the same input stream (same seed),
each starting at the same trace offset (the shaper restarts when the edge prints that it
runs). With ``--repeats N`` every policy runs N times per trace, the order rotating from one
round to the next, and the results pool the rounds: on a shared machine the cloud has
stretches of tens of seconds at 1.2-1.3x its usual compute time, and with one run each such
a stretch falls on one policy alone and decides a trace whose offloads land near the
deadline. Each input's measured latency is set against the simulator's prediction for the
same action at the same trace time (:mod:`.compare`); the table, a JSON and a PNG per trace
are written to ``--out``.

Namespaces and qdiscs are removed on every exit path: ``try/finally``, SIGINT/SIGTERM
handlers that unwind through it, and a sweep of namespaces left by dead earlier runs.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgeml.runtime.demo import LiveConfig
from edgeml.runtime.netns import CLOUD_IP, EDGE_IP, EmulationError, Netns, Shaper, run_cmd

log = logging.getLogger(__name__)

__all__ = ["EmulateConfig", "EmulationError", "run_emulate"]

START_TIMEOUT_S = 120.0


@dataclass(kw_only=True)
class EmulateConfig(LiveConfig):
    """Everything ``edgeml emulate`` can set (defaults: the CLI's)."""

    traces: tuple[str, ...]
    offset_s: float = 0.0
    out: str = "emulate-out"
    port: int = 50051
    repeats: int = 1

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ValueError(f"repeats: must be >= 1, got {self.repeats}")


class _Interrupted(Exception):
    pass


# Run inside the edge's namespace: is the cloud SERVING on the health service, seen from
# where the edge will reach it? (exit 0 iff so)
_HEALTH_PROBE = (
    "import sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; "
    "ch = grpc.insecure_channel(sys.argv[1]); "
    "r = g.HealthStub(ch).Check(h.HealthCheckRequest(service='edgeml.v1.Offload'), "
    "timeout=float(sys.argv[2]), wait_for_ready=True); "
    "sys.exit(0 if r.status == h.HealthCheckResponse.SERVING else 1)"
)


def _wait_serving(net: Netns, server: subprocess.Popen[str], target: str, log: Path) -> None:
    """Until the cloud answers SERVING on the gRPC health service (from the edge's side)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            out = log.read_text()
            raise EmulationError(f"the cloud exited {server.returncode} before serving:\n{out}")
        probe = net.exec_cmd(net.edge, [sys.executable, "-c", _HEALTH_PROBE, target, "5"])
        if run_cmd(probe, check=False).returncode == 0:
            return
        time.sleep(0.2)
    raise EmulationError(f"the cloud at {target} did not answer SERVING in {START_TIMEOUT_S:g} s")


def _wait_ready_file(proc: subprocess.Popen[str], path: Path, what: str) -> None:
    """Until ``proc`` (``edgeml edge --ready-file``) has written its readiness file."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not path.exists():
        if proc.poll() is not None:
            raise EmulationError(f"{what} exited {proc.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise EmulationError(f"{what} not ready after {START_TIMEOUT_S:g} s")
        time.sleep(0.05)


def child_env() -> dict[str, str]:
    """The environment of a child edgeml process: one OpenMP thread, unbuffered output."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_emulate(cfg: EmulateConfig) -> int:
    """Set up, run every policy on every trace, report, and always clean up."""
    from edgeml.rl_agent.traces import load_trace
    from edgeml.runtime.compare import format_table, plot_runs, summarize, summarize_runs
    from edgeml.runtime.demo import daemon_cost, load_bundle, resolve_policy
    from edgeml.runtime.sources import default_source

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(cfg.bundle, out)
    policy, origin = resolve_policy(cfg.policy, bundle, out, cfg)
    traces = [(Path(t), load_trace(t)) for t in cfg.traces]
    cost = daemon_cost(bundle, cfg.edge_slowdown, cfg.codec)
    source = default_source(bundle.manifest.dataset)

    net = Netns()
    procs: list[subprocess.Popen[str]] = []
    previous: dict[int, Any] = {}

    def on_signal(signum: int, _frame: object) -> None:
        raise _Interrupted(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, on_signal)
    report: dict[str, Any] = {
        "config": cfg.as_dict(),
        "bundle": str(bundle.path), "policy": policy, "policy_origin": origin,
        "traces": {},
        "calibration": {},  # per trace: the cloud and stack the simulator was told
    }  # fmt: skip
    py = sys.executable
    serve_log = (out / "serve.log").open("w")
    try:
        net.up()
        print(
            f"edgeml emulate: namespaces {net.cloud} (cloud {CLOUD_IP}) and {net.edge} "
            f"(edge {EDGE_IP}), tbf on {net.edge_if}; RTT {cfg.rtt_ms:g} ms in user space; "
            f"policy {policy} ({origin}); edge slowdown x{cfg.edge_slowdown:g}",
            flush=True,
        )
        server = subprocess.Popen(
            net.exec_cmd(net.cloud, [py, "-m", "edgeml.cli", "serve", str(bundle.path),
                                     "--host", CLOUD_IP, "--port", str(cfg.port)]),
            stdout=subprocess.DEVNULL, stderr=serve_log, text=True, env=child_env(),
        )  # fmt: skip
        procs.append(server)
        _wait_serving(net, server, f"{CLOUD_IP}:{cfg.port}", out / "serve.log")
        for trace_path, trace in traces:
            runs: dict[str, list[dict[str, Any]]] = {}
            times: dict[str, list[float]] = {}
            tdir = out / trace_path.stem
            tdir.mkdir(parents=True, exist_ok=True)
            names = ["ppo", *cfg.baselines]
            # Per policy, every round's records and their trace times.
            done: dict[str, list[tuple[list[dict[str, Any]], list[float]]]] = {n: [] for n in names}
            for k in range(cfg.repeats):
                for name in names[k % len(names) :] + names[: k % len(names)]:
                    stem = name if cfg.repeats == 1 else f"{name}.r{k}"
                    recs, tts = _run_policy(
                        cfg, net, bundle.path, policy if name == "ppo" else name, name, source,
                        trace, tdir / f"{stem}.jsonl", procs,
                    )  # fmt: skip
                    if k == 0:
                        runs[name], times[name] = recs, tts
                    done[name].append((recs, tts))
                    r = summarize(recs)
                    tag = f" (round {k + 1})" if cfg.repeats > 1 else ""
                    print(
                        f"  {trace_path.name} {name}{tag}: timely acc {r['timely_accuracy']}, "
                        f"mean {r['latency_ms_mean']:.1f} ms",
                        flush=True,
                    )
            results, slow, stack = summarize_runs(done, cost, trace, cfg.rtt_ms, cfg.pace)
            for name in names:
                results[name]["repeats"] = cfg.repeats
                results[name]["timely_accuracy_per_round"] = [
                    summarize(rs)["timely_accuracy"] for rs, _ in done[name]
                ]
            title = (
                f"edgeml emulate: {trace_path.name} (kernel tbf, edge x{cfg.edge_slowdown:g} "
                f"{cfg.pace}-paced{f', {cfg.repeats} rounds pooled' if cfg.repeats > 1 else ''}); "
                f"sim with this machine's cloud x{slow:.2f} the profile, RTT "
                f"{stack.rtt_ms:.1f} + {stack.call_overhead_ms:.1f} ms per call; "
                "cal = simulator told the compute speeds measured before each input"
            )
            print(format_table(results, title), flush=True)
            plot_runs(
                runs, trace, cfg.offset_s, tdir / "emulate.png", cfg.deadline_ms,
                title=f"edgeml emulate on {trace_path.name} (tc tbf, RTT {cfg.rtt_ms:g} ms "
                f"user space, edge x{cfg.edge_slowdown:g})", trace_times=times,
            )  # fmt: skip
            report["traces"][trace_path.name] = results
            report["calibration"][trace_path.name] = {
                "cloud_slowdown": round(slow, 4), "stack": asdict(stack)
            }  # fmt: skip
            (out / "emulate.json").write_text(json.dumps(report, indent=2) + "\n")
    except _Interrupted as exc:
        print(f"edgeml emulate: interrupted ({exc}); cleaning up", file=sys.stderr)
        return 130
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        net.down()
        serve_log.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(f"wrote {out / 'emulate.json'} and per-trace logs and PNGs under {out}/")
    return 0


def _run_policy(
    cfg: EmulateConfig,
    net: Netns,
    bundle: Path,
    policy: str,
    name: str,
    source: str,
    trace: Any,
    log_path: Path,
    procs: list[subprocess.Popen[str]],
) -> tuple[list[dict[str, Any]], list[float]]:
    """One edge run in the edge namespace; returns its records and their trace times."""
    log_path.unlink(missing_ok=True)
    ready = log_path.with_suffix(".ready")
    ready.unlink(missing_ok=True)
    cmd = [
        sys.executable, "-m", "edgeml.cli", "edge", str(bundle),
        "--cloud", f"{CLOUD_IP}:{cfg.port}", "--policy", policy, "--source", f"{source}:{cfg.seed}",
        "--rate", str(cfg.rate), "--deadline-ms", str(cfg.deadline_ms),
        "--edge-slowdown", str(cfg.edge_slowdown), "--codec", cfg.codec,
        "--max-inputs", str(cfg.inputs), "--rtt-ms", str(cfg.rtt_ms),
        "--link-rtt-ms", str(cfg.rtt_ms), "--log", str(log_path), "--run", name,
        "--seed", str(cfg.seed), "--ready-file", str(ready), "--pace", cfg.pace,
    ]  # fmt: skip
    shaper = Shaper(net, trace, cfg.offset_s)
    net.set_rate(trace.mbps_at(cfg.offset_s))
    err_path = log_path.with_suffix(".stderr")
    with err_path.open("w") as err:
        edge = subprocess.Popen(
            net.exec_cmd(net.edge, cmd), stdout=subprocess.DEVNULL, stderr=err, text=True,
            env=child_env(),
        )  # fmt: skip
        procs.append(edge)
        try:
            _wait_ready_file(edge, ready, f"edge ({name})")
            shaper.start()
            edge.wait()
        finally:
            shaper.stop()
    if edge.returncode != 0:
        raise EmulationError(f"edge ({name}) exited {edge.returncode}:\n{err_path.read_text()}")
    recs = [json.loads(line) for line in log_path.read_text().splitlines()]
    (log_path.parent / f"{name}.shaper.json").write_text(
        json.dumps({"t0_unix": shaper.t0, "offset_s": cfg.offset_s, "errors": shaper.errors})
    )
    return recs, [shaper.trace_s(r["t_unix"]) for r in recs]
