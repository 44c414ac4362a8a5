"""``edgeml demo``: the whole system on one machine, PPO against the baselines, live.

What it does, in order:

1. takes the shipped default bundle (profiling a copy if it has no ``profile.json``) and
   the shipped PPO policy; with no shipped policy it trains a small one for a couple of
   minutes and says so;
2. starts the cloud server in this process on 127.0.0.1 (a free port);
3. for PPO and each baseline in turn, runs the real edge daemon (real model, real gRPC,
   honest edge slowdown) over the same input stream (same seed) and the same stretch of a
   real bandwidth trace, emulated in user space (bytes paced by the trace, plus RTT);
4. prints a table (timely accuracy, latency mean/p95, bytes, fallbacks, and the
   simulator's prediction of each run's mean latency), and writes the JSON, the JSONL logs
   and a PNG of latency and decisions over time above the bandwidth.

Inputs run in real time (300 per policy at 10/s is about 30 s each, longer where latency
exceeds 100 ms). All live runs share a time budget (``time_budget_s``, 7 min) in equal
parts, so the demo ends in time even on a loaded machine; a run that uses up its share
stops early, says so, and the table shows how many inputs it answered.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeml.bundle import Bundle
from edgeml.decision.policies import LIVE_BASELINES, World
from edgeml.decision.scenario import Scenario

if TYPE_CHECKING:
    from edgeml.partition.cost import CostModel

log = logging.getLogger(__name__)

__all__ = [
    "DemoConfig",
    "daemon_cost",
    "LiveConfig",
    "find_traces_dir",
    "load_bundle",
    "pick_trace",
    "resolve_policy",
    "run_demo",
]

DEFAULT_FAMILY = "hsdpa"  # 3G: bandwidth around the point where the best split moves


QUICK_TRAIN_STEPS = 40_000  # the policy trained when none is shipped


@dataclass(kw_only=True)
class LiveConfig:
    """What every live comparison sets (``demo`` and ``emulate``; defaults: the CLI's):
    the bundle, PPO and the baselines it runs against, the inputs and the scenario."""

    bundle: str | None = None
    policy: str | None = None
    baselines: tuple[str, ...] = LIVE_BASELINES
    inputs: int = 300
    rate: float = Scenario.input_rate
    deadline_ms: float = Scenario.deadline_ms
    edge_slowdown: float = Scenario.edge_slowdown
    rtt_ms: float = Scenario.rtt_ms
    codec: str = Scenario.codec
    out: str = "demo-out"
    seed: int = 0
    # the edge at slowdown x its profile (a device of its own), not x this machine's speed
    pace: str = "profile"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples as lists), for the report."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


@dataclass(kw_only=True)
class DemoConfig(LiveConfig):
    """Everything ``edgeml demo`` can set (defaults: the CLI's)."""

    trace: str | None = None
    offset_s: float | None = None
    quick_train_steps: int = QUICK_TRAIN_STEPS
    time_budget_s: float = 420.0  # for all live runs together; each policy gets a share


def find_traces_dir() -> Path:
    """``/work/shared/traces``, else ``../shared/traces`` of the project, else the sample."""
    from edgeml.rl_agent.traces import default_traces_dir

    project = Path(__file__).resolve().parents[2]
    for cand in (Path("/work/shared/traces"), project.parent / "shared" / "traces"):
        if cand.is_dir() and any(cand.glob("*.csv")):
            return cand
    return default_traces_dir()


def pick_trace(spec: str | None) -> Path:
    """The demo's trace: ``spec`` if given, else the first test file of the 3G family."""
    if spec:
        path = Path(spec)
        if not path.is_file():
            raise ValueError(f"trace: {spec} is not a file")
        return path
    from edgeml.rl_agent.traces import split_traces

    folder = find_traces_dir()
    names = sorted(p.name for p in folder.glob("*.csv"))
    test = split_traces(names, "test")
    preferred = [n for n in test if n.startswith(DEFAULT_FAMILY + "_")]
    fallback = [n for n in names if n.startswith(DEFAULT_FAMILY + "_")]
    choice = (preferred or fallback or test or names)[0]
    return folder / choice


def _policy_candidates() -> list[Path]:
    from edgeml.assets import ASSETS

    base = ASSETS / "policies"
    return [base / "default.npz", base / "default.zip"]


def resolve_policy(
    spec: str | None,
    bundle: Bundle,
    out: Path,
    cfg: LiveConfig,
    quick_train_steps: int = QUICK_TRAIN_STEPS,
) -> tuple[str, str]:
    """``(policy path, where it came from)``; trains a quick one when nothing is shipped."""
    if spec:
        return spec, "given"
    for cand in _policy_candidates():
        if cand.is_file():
            return str(cand), "shipped"
    from edgeml.rl_agent.traces import load_traces
    from edgeml.rl_agent.train import TrainConfig, train_agent

    steps = quick_train_steps
    print(
        f"edgeml demo: no shipped policy ({_policy_candidates()[0]}); training a small one "
        f"({steps} steps) on the train traces first",
        flush=True,
    )
    traces = load_traces(find_traces_dir(), split="train")
    tcfg = TrainConfig(
        timesteps=steps, n_envs=4, eval_freq=max(steps // 2, 1), eval_episodes=4, progress=True
    )
    scenario = Scenario(
        bundle=str(bundle.path), codec=cfg.codec, edge_slowdown=cfg.edge_slowdown,
        rtt_ms=cfg.rtt_ms, deadline_ms=cfg.deadline_ms, input_rate=cfg.rate,
    )  # fmt: skip
    res = train_agent(bundle, traces, out / "quick_policy.zip", tcfg, scenario)
    return str(res.actor), f"trained here in {res.seconds:.0f} s ({steps} steps)"


def daemon_cost(bundle: Bundle, edge_slowdown: float, codec: str) -> CostModel:
    """The cost model a live run's daemons plan with (their edge runtime: onnx when the
    bundle has the files), so its predictions of their latency are like for like."""
    sc = Scenario(edge_slowdown=edge_slowdown, codec=codec)
    return World.from_bundle(bundle, sc).cost


def load_bundle(spec: str | None, out: Path) -> Bundle:
    """The bundle of a live run (``spec`` or the shipped default), profiled (a copy under
    ``out`` if it has no ``profile.json``)."""
    from edgeml.assets import default_bundle

    bundle_dir = Path(spec) if spec else default_bundle()
    if not (bundle_dir / "manifest.json").is_file():
        raise ValueError(
            f"bundle: {bundle_dir} has no manifest.json; build one with `edgeml build` "
            "or pass --bundle"
        )
    return Bundle.load(_ensure_profile(bundle_dir, out))


def _ensure_profile(bundle_dir: Path, out: Path) -> Path:
    """The bundle itself if profiled, else a profiled copy under ``out``."""
    if (bundle_dir / "profile.json").is_file():
        return bundle_dir
    from edgeml.partition.profiler import profile_bundle

    copy = out / "bundle"
    if not (copy / "profile.json").is_file():
        print(f"edgeml demo: {bundle_dir} has no profile.json; profiling a copy", flush=True)
        shutil.copytree(bundle_dir, copy, dirs_exist_ok=True)
        profile_bundle(Bundle.load(copy), repeats=10)
    return copy


def run_demo(cfg: DemoConfig) -> int:
    import torch

    from edgeml.rl_agent.traces import load_trace
    from edgeml.runtime.compare import format_table, plot_runs, summarize_runs
    from edgeml.runtime.edge import EdgeConfig, EdgeDaemon
    from edgeml.runtime.sources import default_source
    from edgeml.transport.server import OffloadServer, ServerConfig

    t_start = time.perf_counter()
    torch.set_num_threads(1)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(cfg.bundle, out)
    policy, policy_origin = resolve_policy(cfg.policy, bundle, out, cfg, cfg.quick_train_steps)
    trace_path = pick_trace(cfg.trace)
    trace = load_trace(trace_path)
    offset = cfg.offset_s if cfg.offset_s is not None else 0.0
    source = default_source(bundle.manifest.dataset)
    cost = daemon_cost(bundle, cfg.edge_slowdown, cfg.codec)
    print(
        f"edgeml demo: bundle {bundle.path} ({bundle.manifest.model['name']}), policy {policy} "
        f"({policy_origin}), trace {trace_path.name} from {offset:g} s, {cfg.inputs} inputs per "
        f"policy at {cfg.rate:g}/s, deadline {cfg.deadline_ms:g} ms, RTT {cfg.rtt_ms:g} ms, "
        f"edge slowdown x{cfg.edge_slowdown:g} (applied by sleeping)",
        flush=True,
    )
    server = OffloadServer(ServerConfig(bundle=bundle.path, port=0), bundle).start()
    runs: dict[str, list[dict[str, Any]]] = {}
    names = ("ppo", *cfg.baselines)
    t_runs = time.perf_counter()
    try:
        for i, name in enumerate(names):
            log_path = out / f"{name}.jsonl"
            log_path.unlink(missing_ok=True)
            ecfg = EdgeConfig(
                bundle=bundle.path, cloud=f"127.0.0.1:{server.port}",
                policy=policy if name == "ppo" else name, source=f"{source}:{cfg.seed}",
                rate=cfg.rate, deadline_ms=cfg.deadline_ms, edge_slowdown=cfg.edge_slowdown,
                codec=cfg.codec, log=log_path, max_inputs=cfg.inputs, rtt_ms=cfg.rtt_ms,
                link_trace=trace_path, link_offset_s=offset, link_rtt_ms=cfg.rtt_ms, run=name,
                seed=cfg.seed, pace=cfg.pace,
            )  # fmt: skip
            daemon = EdgeDaemon(ecfg, bundle=bundle)
            daemon.check_cloud()
            t0 = time.perf_counter()
            share = (cfg.time_budget_s - (t0 - t_runs)) / (len(names) - i)
            timer = threading.Timer(max(share, 10.0), daemon.stop_event.set)
            timer.start()
            try:
                summary = daemon.run()
            finally:
                timer.cancel()
            if summary.inputs < cfg.inputs:
                print(f"  {name}: time share of {share:.0f} s used up after {summary.inputs} "
                      f"inputs (a loaded machine slows the emulated edge {cfg.edge_slowdown:g}x "
                      "over)", flush=True)  # fmt: skip
            runs[name] = [json.loads(line) for line in log_path.read_text().splitlines()]
            print(f"  {summary.report()} [{time.perf_counter() - t0:.0f} s]", flush=True)
    finally:
        server.stop(0)
    timed = {name: [(recs, [r["trace_s"] for r in recs])] for name, recs in runs.items()}
    results, slow, stack = summarize_runs(timed, cost, trace, cfg.rtt_ms, cfg.pace)
    table = format_table(
        results,
        f"edgeml demo: {trace_path.name}, {cfg.inputs} inputs/policy, deadline "
        f"{cfg.deadline_ms:g} ms, edge slowdown x{cfg.edge_slowdown:g} ({cfg.pace}-paced); sim = "
        f"simulator (profile, edge load, this machine's cloud x{slow:.2f} the profile, "
        f"RTT {stack.rtt_ms:.1f} + {stack.call_overhead_ms:.1f} ms per call), cal = "
        "simulator told the compute speeds the edge measured before each input",
    )
    print(table)
    png = plot_runs(
        runs, trace, offset, out / "demo.png", cfg.deadline_ms,
        title=f"edgeml demo on {trace_path.name} (edge x{cfg.edge_slowdown:g}, "
        f"RTT {cfg.rtt_ms:g} ms)",
    )  # fmt: skip
    report = {
        "config": cfg.as_dict(),
        "bundle": str(bundle.path), "policy": policy, "policy_origin": policy_origin,
        "trace": str(trace_path), "cloud_slowdown": round(slow, 4),
        "stack": asdict(stack), "results": results,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }  # fmt: skip
    (out / "demo.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out / 'demo.json'}, {png} and the per-input logs in {out}/ "
          f"({report['wall_s']:.0f} s)")  # fmt: skip
    return 0
