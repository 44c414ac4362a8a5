"""Arguments and handlers of ``edgeml edge``, ``demo``, ``emulate`` and ``fleet``.

``edgeml.cli`` stays thin: its ``_add_runtime`` creates the sub-parsers and hands them to
the functions here. At parse time only argparse and the torch-free decision core (for the
scenario's flags and the baseline names) are imported; torch, gRPC and the rest load when a
command runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from edgeml.decision.policies import LIVE_BASELINES, POLICY_KINDS
from edgeml.decision.scenario import (
    Scenario,
    add_scenario_flags,
    families_arg,
    scenario_from_args,
)
from edgeml.runtime.speed import PACES

# Scenario fields a live run takes from elsewhere: the bundle argument, the link's trace.
SOURCE_FIELDS = ("bundle", "traces", "trace_split", "families")
LIVE_FIELDS = ("input_rate", "deadline_ms", "edge_slowdown", "rtt_ms", "codec")  # it carries

__all__ = [
    "add_demo_args",
    "add_fleet_args",
    "add_edge_args",
    "add_emulate_args",
    "cmd_demo",
    "cmd_fleet",
    "cmd_edge",
    "cmd_emulate",
]

log = logging.getLogger(__name__)


def add_edge_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="bundle directory (same weights as the cloud's; profiled)")
    p.add_argument(
        "--cloud",
        required=True,
        metavar="HOST:PORT[,HOST:PORT...]",
        help="cloud server(s); several are balanced round-robin",
    )
    p.add_argument(
        "--policy",
        required=True,
        help=POLICY_KINDS,
    )
    p.add_argument(
        "--source",
        default=None,
        help="scenes[:SEED], fashion-mnist[:SEED], a directory of .png/.npy, or a "
        ".npy/.npz file (default: the stream matching the bundle's dataset)",
    )
    p.add_argument("--log", default=None, metavar="OUT.jsonl", help="one JSON line per input")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="Prometheus /metrics port on 127.0.0.1 (unset: off)",
    )
    p.add_argument("--max-inputs", type=int, default=None, help="stop after this many inputs")
    p.add_argument(
        "--link-trace",
        default=None,
        metavar="CSV",
        help="emulate the uplink in user space from this time_s,mbps trace",
    )
    p.add_argument("--link-offset-s", type=float, default=0.0, help="start offset in the trace")
    p.add_argument(
        "--link-rtt-ms",
        type=float,
        default=None,
        help="add this RTT in user space (default with --link-trace: --rtt-ms)",
    )
    p.add_argument(
        "--ready-file",
        default=None,
        help="write this file once taking inputs (removed on exit): a readiness signal",
    )
    p.add_argument(
        "--pace",
        choices=PACES,
        default="measured",
        help="apply the edge slowdown to the measured compute (this machine's load slows the "
        "edge too) or to the profile (the edge runs at slowdown x profile whatever this "
        "machine runs: many emulated edges on one machine)",
    )
    p.add_argument(
        "--go-file",
        default=None,
        help="once ready, wait for this file to exist before the first input (fleet start)",
    )
    p.add_argument(
        "--recheck-s",
        type=float,
        default=2.0,
        help="ask a replica left out of rotation for other weights for its model this often",
    )
    p.add_argument(
        "--token-env",
        default=None,
        metavar="VAR",
        help="environment variable holding the bearer token for the cloud",
    )
    p.add_argument("--root-ca", default=None, help="PEM CA of the cloud's certificate (TLS)")
    p.add_argument(
        "--tls-cert", default=None, help="PEM client certificate (mutual TLS: serve --client-ca)"
    )
    p.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--run", default="", help="label written into every log line")
    p.add_argument(
        "--rate",
        type=float,
        default=Scenario.input_rate,
        help="inputs per second (0: flat out; the scenario's input_rate)",
    )
    # a live edge pays its own stack's call overhead: nothing to set
    add_scenario_flags(p, skip=(*SOURCE_FIELDS, "input_rate", "call_overhead_ms"))
    p.add_argument("--seed", type=int, default=0, help="seed of the random policy")
    p.add_argument(
        "--no-malloc-tuning",
        action="store_true",
        help="leave glibc malloc alone (default: keep freed multi-MB tensor buffers mapped; "
        "see edgeml/transport/malloc.py)",
    )


def cmd_edge(args: argparse.Namespace) -> int:
    import os

    from edgeml.bundle import BundleError
    from edgeml.runtime.edge import EdgeConfig, run_edge
    from edgeml.transport.client import WeightsMismatchError
    from edgeml.transport.malloc import tune_malloc

    tune_malloc(enabled=not args.no_malloc_tuning)
    token = os.environ.get(args.token_env) if args.token_env else None
    if args.token_env and token is None:
        print(f"edgeml edge: --token-env: ${args.token_env} is not set", file=sys.stderr)
        return 2
    try:
        sc = scenario_from_args(args, bundle=args.bundle, input_rate=args.rate or 10.0)
        cfg = EdgeConfig(
            bundle=args.bundle, cloud=args.cloud, policy=args.policy, source=args.source,
            rate=args.rate, deadline_ms=sc.deadline_ms, edge_slowdown=sc.edge_slowdown,
            pace=args.pace, codec=sc.codec, edge_runtime=sc.edge_runtime,
            edge_precision=sc.edge_precision, log=args.log, metrics_port=args.metrics_port,
            max_inputs=args.max_inputs, rtt_ms=sc.rtt_ms, link_trace=args.link_trace,
            link_offset_s=args.link_offset_s, link_rtt_ms=args.link_rtt_ms,
            probe_after_s=sc.probe_interval_s, probe_bytes=int(sc.probe_bytes),
            grace_ms=sc.grace_ms, recheck_s=args.recheck_s, base_scenario=sc,
            ready_file=args.ready_file, go_file=args.go_file, token=token,
            root_ca=args.root_ca, tls_cert=args.tls_cert, tls_key=args.tls_key,
            threads=args.threads, run=args.run, seed=args.seed,
        )  # fmt: skip
        return run_edge(cfg)
    except (ValueError, OSError, BundleError, WeightsMismatchError) as exc:
        print(f"edgeml edge: {exc}", file=sys.stderr)
        return 2


DEFAULT_BASELINES = ",".join(LIVE_BASELINES)


def _add_live_run_args(p: argparse.ArgumentParser, inputs_help: str, out: str) -> None:
    """The scenario of the live comparisons, the same for ``demo`` and ``emulate``."""
    p.add_argument(
        "--baselines",
        default=DEFAULT_BASELINES,
        help="comma-separated baselines run on the same trace and inputs",
    )
    p.add_argument("--inputs", type=int, default=300, help=inputs_help)
    p.add_argument("--out", default=out, help="directory for logs, JSON and PNG")
    p.add_argument("--seed", type=int, default=0, help="input stream seed")
    p.add_argument(
        "--pace",
        choices=PACES,
        default="profile",
        help="each edge takes edge slowdown x its profile, whatever this machine is (profile), "
        "or x what it measured here, so this machine's speed and load slow it too (measured)",
    )
    add_scenario_flags(p, skip=SOURCE_FIELDS)


def _live_run_fields(args: argparse.Namespace, *extra: str) -> dict[str, Any]:
    """The config fields that ``--bundle``, ``--policy`` and :func:`_add_live_run_args` set
    (and the scenario fields ``extra``); other scenario flags are refused."""
    sc = scenario_from_args(args, (*LIVE_FIELDS, *extra), bundle=args.bundle)
    return {**{name: getattr(sc, name) for name in extra},
        "bundle": args.bundle, "policy": args.policy,
        "baselines": tuple(b for b in args.baselines.split(",") if b), "inputs": args.inputs,
        "rate": sc.input_rate, "deadline_ms": sc.deadline_ms, "edge_slowdown": sc.edge_slowdown,
        "rtt_ms": sc.rtt_ms, "codec": sc.codec, "out": args.out, "seed": args.seed,
        "pace": args.pace,
    }  # fmt: skip


def add_demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", default=None, help="bundle (default: the shipped default)")
    p.add_argument(
        "--policy",
        default=None,
        help="PPO actor .npz/.zip (default: the shipped policy, else a quick one)",
    )
    p.add_argument(
        "--trace",
        default=None,
        help="time_s,mbps CSV (default: a file of ../shared/traces or the sample)",
    )
    _add_live_run_args(p, "inputs per policy", out="demo-out")
    p.add_argument(
        "--time-budget-s",
        type=float,
        default=420.0,
        help="time for all live runs together (each policy gets an equal share)",
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from edgeml.runtime.demo import DemoConfig, run_demo

    try:
        fields = _live_run_fields(args)
        cfg = DemoConfig(**fields, trace=args.trace, time_budget_s=args.time_budget_s)
        return run_demo(cfg)
    except (ValueError, OSError) as exc:
        print(f"edgeml demo: {exc}", file=sys.stderr)
        return 2


def add_emulate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trace",
        required=True,
        action="append",
        help="time_s,mbps CSV; repeat for several traces (one run each)",
    )
    p.add_argument("--offset-s", type=float, default=0.0, help="start offset in each trace")
    p.add_argument("--bundle", default=None, help="bundle (default: the shipped default)")
    p.add_argument(
        "--policy", default=None, help="PPO actor .npz/.zip (default: the shipped policy)"
    )
    _add_live_run_args(p, "inputs per policy and trace", out="emulate-out")
    p.add_argument("--port", type=int, default=50051, help="cloud port inside its namespace")
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs of every policy per trace, in rotating order; results pool them",
    )


def cmd_emulate(args: argparse.Namespace) -> int:
    from edgeml.runtime.emulate import EmulateConfig, EmulationError, run_emulate

    try:
        cfg = EmulateConfig(
            **_live_run_fields(args), traces=tuple(args.trace), offset_s=args.offset_s,
            port=args.port, repeats=args.repeats,
        )  # fmt: skip
        return run_emulate(cfg)
    except (ValueError, OSError, EmulationError) as exc:
        print(f"edgeml emulate: {exc}", file=sys.stderr)
        return 2


def add_fleet_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--edges", type=int, default=8, help="edge daemons sharing the cloud")
    p.add_argument("--rounds", type=int, default=3, help="rounds of every policy, rotating")
    p.add_argument("--bundle", default=None, help="bundle (default: the shipped default)")
    p.add_argument(
        "--policy", default=None, help="PPO actor .npz/.zip (default: the shipped policy)"
    )
    p.add_argument(
        "--traces", default=None,
        help="directory of time_s,mbps CSVs; edges take its test split (default: the shared)",
    )  # fmt: skip
    p.add_argument(
        "--families", default=None, type=families_arg,
        help="comma-separated trace families the edges' links are drawn from (default: all)",
    )  # fmt: skip
    p.add_argument("--max-batch", type=int, default=16, help="the cloud's max batch")
    p.add_argument("--max-wait-us", type=int, default=1000, help="the cloud's batch wait")
    _add_live_run_args(p, "inputs per edge, policy and round", out="fleet-out")
    p.set_defaults(inputs=150)


def cmd_fleet(args: argparse.Namespace) -> int:
    from edgeml.errors import InputError
    from edgeml.runtime.fleet_live import FleetConfig, run_fleet_live

    try:
        cfg = FleetConfig(
            **_live_run_fields(args, "cloud_speedup"), edges=args.edges, rounds=args.rounds,
            traces=args.traces, max_batch=args.max_batch, max_wait_us=args.max_wait_us,
            families=args.families or None,
        )  # fmt: skip
        return run_fleet_live(cfg)
    except (InputError, ValueError, OSError, RuntimeError) as exc:
        print(f"edgeml fleet: {exc}", file=sys.stderr)
        return 2
