"""The ``edgeml`` command: one thin sub-command per user task."""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from edgeml import __version__

if TYPE_CHECKING:
    from edgeml.decision.scenario import Scenario

Handler = Callable[[argparse.Namespace], int]


def _exits_flag(value: str) -> str | list[str | int]:
    """``--exits``: ``auto`` or comma-separated cut indices / cut names / submodule paths."""
    if value == "auto":
        return value
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        from edgeml.errors import InputError

        raise InputError(f"--exits: {value!r}; give 'auto' or I,J,K (cut indices or names)")
    return [int(v) if v.isdigit() else v for v in items]


def _cmd_build_model(args: argparse.Namespace, command: str) -> int:
    """``edgeml build OUT --model MODULE:FACTORY --data PATH``: your own model and data."""
    from edgeml.build import build
    from edgeml.build_config import ModelBuildConfig
    from edgeml.errors import InputError, as_input_error

    if args.data is None:
        raise InputError("--data: required with --model (an .npz or an ImageFolder directory)")
    if args.preset is not None or args.train_size is not None:
        raise InputError("--preset/--train-size: presets build zoo nets; drop them with --model")
    try:
        kwargs = json.loads(args.model_kwargs)
    except json.JSONDecodeError as exc:
        raise InputError(f"--model-kwargs: not JSON ({exc})") from None
    if not isinstance(kwargs, dict):
        raise InputError(f"--model-kwargs: must be a JSON object, got {args.model_kwargs!r}")
    with as_input_error():
        cfg = ModelBuildConfig(
            epochs=1 if args.epochs is None else args.epochs, batch_size=args.batch_size,
            lr=args.lr,
            freeze_backbone=args.freeze_backbone, threads=args.threads, seed=args.seed,
            progress=True, profile=not args.no_profile, onnx=_onnx_flag(args.onnx),
        )  # fmt: skip
        exits = _exits_flag(args.exits)
    bundle = build(
        args.model, args.data, args.val_data, out=args.bundle, exits_after=exits,
        model_kwargs=kwargs, weights=args.weights, config=cfg, command=command,
    )  # fmt: skip
    m = bundle.manifest
    print(f"exits after blocks {list(m.exits)} of {m.blocks} ({m.model['progressive']})")
    print(json.dumps(m.build["test_accuracy"], indent=2))
    print(f"bundle written to {args.bundle}")
    return 0


def _onnx_flag(text: str) -> tuple[str, ...]:
    """``--onnx fp32,int8`` / ``none`` -> the precisions to export."""
    from edgeml.decision.scenario import EDGE_PRECISIONS
    from edgeml.errors import InputError

    values = () if text == "none" else tuple(v.strip() for v in text.split(",") if v.strip())
    bad = [v for v in values if v not in EDGE_PRECISIONS]
    if bad:
        raise InputError(f"--onnx: {bad} not allowed; allowed: fp32, int8, fp32,int8 or none")
    return values


def _cmd_build(args: argparse.Namespace) -> int:
    from edgeml.build import build_bundle, finish_bundle
    from edgeml.build_config import PRESETS
    from edgeml.errors import InputError

    command = "edgeml " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.model is not None:
        return _cmd_build_model(args, command)
    for flag in ("data", "val_data", "weights"):
        if getattr(args, flag) is not None:
            raise InputError(f"--{flag.replace('_', '-')}: only with --model MODULE:FACTORY")
    cfg = copy.deepcopy(PRESETS[args.preset or "default"])
    for flag, value in (("--epochs", args.epochs), ("--train-size", args.train_size)):
        if value is not None and value < 1:
            raise InputError(f"{flag}: must be >= 1, got {value}")
    if args.threads < 1:
        raise InputError(f"--threads: must be >= 1, got {args.threads}")
    if args.epochs is not None:
        cfg.train.epochs = args.epochs
    if args.train_size is not None:
        cfg.train_size = args.train_size
    cfg.threads = args.threads
    cfg.seed = cfg.train.seed = args.seed
    onnx = _onnx_flag(args.onnx)
    build_bundle(args.bundle, cfg, command=command)
    bundle = finish_bundle(args.bundle, onnx, not args.no_profile)
    print(json.dumps(bundle.manifest.build["test_accuracy"], indent=2))
    print(f"bundle written to {args.bundle}")
    return 0


def _add_build(sub: argparse._SubParsersAction) -> None:
    from edgeml.build_config import PRESETS, ModelBuildConfig

    d = ModelBuildConfig()
    p = sub.add_parser(
        "build",
        help="train exits, calibrate, profile -> bundle",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Build a bundle: a preset (zoo net on a built-in dataset), or your own "
        "classifier (--model MODULE:FACTORY, importable from PYTHONPATH) and data (--data).",
    )
    p.add_argument("bundle", help="output bundle directory")
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="default: ResNet-style net on 96x96 scenes; fixture: B-VGG on 28x28 "
        "(None: 'default' unless --model is given)",
    )
    g = p.add_argument_group("your own model and data")
    g.add_argument("--model", default=None, help="MODULE:FACTORY, a zoo name or a plugin name")
    g.add_argument("--model-kwargs", default="{}", help="JSON object passed to the factory")
    g.add_argument("--weights", default=None, help="state dict file loaded into the model")
    g.add_argument("--data", default=None, help="training data: .npz (x, y) or ImageFolder dir")
    g.add_argument(
        "--val-data", default=None, help=f"calibration data (None: {d.val_fraction} of --data)"
    )
    g.add_argument(
        "--exits", default="auto", help="side exits: auto, or I,J,K (cut indices or names)"
    )
    g.add_argument(
        "--freeze-backbone",
        action="store_true",
        help="train the exit heads only; the model (its classifier too) stays as it is",
    )
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--lr", type=float, default=d.lr)
    p.add_argument(
        "--epochs", type=int, default=None, help="override the preset's epochs (--model: 1)"
    )
    p.add_argument("--train-size", type=int, default=None, help="training samples per epoch")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-profile", action="store_true", help="skip writing profile.json")
    p.add_argument(
        "--onnx", default="fp32",
        help="edge precisions exported to ONNX before profiling: fp32, fp32,int8 or none",
    )  # fmt: skip
    p.set_defaults(func=_cmd_build)


def _cmd_profile(args: argparse.Namespace) -> int:
    from edgeml.bundle import Bundle
    from edgeml.errors import InputError
    from edgeml.partition.profiler import format_profile, profile_bundle

    for flag, value in (("--repeats", args.repeats), ("--threads", args.threads)):
        if value < 1:
            raise InputError(f"{flag}: must be >= 1, got {value}")
    if not args.edge_slowdown > 0:
        raise InputError(f"--edge-slowdown: must be > 0, got {args.edge_slowdown}")
    bundle = Bundle.load(args.bundle, need_calibration=False)
    profile = profile_bundle(
        bundle, repeats=args.repeats, edge_slowdown=args.edge_slowdown, threads=args.threads
    )
    print(format_profile(profile))
    print(f"profile written to {bundle.path / 'profile.json'} ({profile['elapsed_s']} s)")
    return 0


def _add_profile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="measure block, head and codec costs -> profile.json",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("bundle", help="bundle directory (profile.json is written into it)")
    p.add_argument("--repeats", type=int, default=30, help="timed runs per entry (median kept)")
    from edgeml.decision.scenario import Scenario

    p.add_argument(
        "--edge-slowdown",
        type=float,
        default=Scenario.edge_slowdown,
        help="how much slower the edge is than this machine",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads while measuring")
    p.set_defaults(func=_cmd_profile)


def _cmd_export(args: argparse.Namespace) -> int:
    from edgeml.export.onnx import export_onnx, total_bytes

    precisions = ("fp32", "int8") if args.int8 else ("fp32",)
    section = export_onnx(args.bundle, precisions, calibration_frames=args.calibration_frames)
    for prec in section["variants"]:
        n = len(section["variants"][prec])
        mb = total_bytes(args.bundle, prec) / 1e6
        print(f"{prec}: {n} files ({mb:.2f} MB) under {args.bundle}/onnx/")
    print(f"manifest {args.bundle}/manifest.json records their sha256 (onnx.variants)")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="ONNX files of the edge segments and exit heads -> bundle (torch-free edge)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "bundle", help="bundle directory (files go to BUNDLE/onnx/, hashes to its manifest)"
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="also a static int8 (QDQ) quantisation of the blocks, calibrated on validation frames",
    )
    p.add_argument(
        "--calibration-frames", type=int, default=256, help="validation frames for --int8"
    )
    p.set_defaults(func=_cmd_export)


def _add_scenario_args(p: argparse.ArgumentParser, split: str, what: str) -> None:
    """The flags behind :func:`_scenario`, shared by ``train-agent`` and ``evaluate``: the
    bundle, the traces, and one flag per field of the decision core's Scenario."""
    from edgeml.decision.scenario import add_scenario_flags

    p.add_argument("bundle", help="bundle directory (with profile.json)")
    p.add_argument("--traces", required=True, help="trace CSV or directory (time_s,mbps)")
    add_scenario_flags(p, skip=("bundle", "traces"), trace_split=split)


def _scenario(args: argparse.Namespace) -> Scenario:
    """The simulated scenario of ``train-agent`` and ``evaluate`` (same flags, same defaults)."""
    from edgeml.decision.scenario import scenario_from_args

    return scenario_from_args(args, bundle=args.bundle, traces=args.traces)


T = TypeVar("T", int, float)


def _numbers(flag: str, text: str, kind: type[T], example: str) -> tuple[T, ...]:
    """A comma-separated list of numbers of ``kind``, each >= 1; "" is none."""
    from edgeml.errors import InputError

    if not text:
        return ()
    try:
        values = tuple(kind(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise InputError(f"{flag}: comma-separated numbers >= 1 (e.g. {example}), got {text!r}")
    return values


def _cmd_train_agent(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from edgeml.bundle import Bundle
    from edgeml.decision.policies import TEACHERS
    from edgeml.errors import InputError, as_input_error
    from edgeml.rl_agent.config import TrainConfig, WarmStartConfig
    from edgeml.rl_agent.env import EdgeCloudEnv
    from edgeml.rl_agent.traces import load_traces
    from edgeml.rl_agent.train import train_agent

    # Set-up: every flag and file is checked here, before any training.
    with as_input_error():
        for flag, value in (
            ("--timesteps", args.timesteps),
            ("--n-envs", args.n_envs),
            ("--threads", args.threads),
            ("--eval-freq", args.eval_freq),
            ("--eval-episodes", args.eval_episodes),
        ):
            if value < 1:
                raise InputError(f"{flag}: must be >= 1, got {value}")
        if not args.learning_rate > 0:
            raise InputError(f"--learning-rate: must be > 0, got {args.learning_rate}")
        if not 0.0 < args.lr_final_fraction <= 1.0:
            raise InputError(
                f"--lr-final-fraction: must be in (0, 1], got {args.lr_final_fraction}"
            )
        if not 0.0 <= args.fleet_herd <= 1.0:
            raise InputError(f"--fleet-herd: must be in [0, 1], got {args.fleet_herd}")
        if args.teacher != "none" and args.teacher not in TEACHERS:
            raise InputError(
                f"--teacher: {args.teacher!r} is not one of {['none', *sorted(TEACHERS)]}"
            )
        cfg = TrainConfig(
            timesteps=args.timesteps,
            n_envs=args.n_envs,
            seed=args.seed,
            threads=args.threads,
            learning_rate=args.learning_rate,
            lr_final_fraction=args.lr_final_fraction,
            eval_freq=args.eval_freq,
            eval_episodes=args.eval_episodes,
            progress=not args.no_progress,
            tensorboard=args.tensorboard,
            fleet_sizes=_numbers("--fleet-sizes", args.fleet_sizes, int, "1,4,16"),
            fleet_herd=args.fleet_herd,
            edge_slowdowns=_numbers("--edge-slowdowns", args.edge_slowdowns, float, "4,8,12,24"),
            edge_load_busy=tuple(args.edge_load_busy or ()),
            warm_start=WarmStartConfig(teacher=args.teacher),
        )
        bundle = Bundle.load(args.bundle)
        scenario = _scenario(args)
        traces = load_traces(args.traces, scenario.trace_split, scenario.families)
        EdgeCloudEnv(replace(scenario, reward=cfg.reward), bundle=bundle, traces=traces)
    res = train_agent(bundle, traces, args.out, cfg, scenario)
    print(f"policy {res.policy}, actor {res.actor} ({res.timesteps} steps, {res.seconds:.0f} s)")
    return 0


def _add_train_agent(sub: argparse._SubParsersAction) -> None:
    from edgeml.rl_agent.config import TrainConfig

    d = TrainConfig()
    p = sub.add_parser(
        "train-agent",
        help="train the PPO agent in the simulator -> policy .zip",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_scenario_args(p, split="train", what="train")
    p.add_argument("--out", required=True, help="policy .zip (the numpy actor goes next to it)")
    p.add_argument("--timesteps", type=int, default=d.timesteps)
    p.add_argument("--n-envs", type=int, default=d.n_envs, help="vectorised environments")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads")
    p.add_argument("--learning-rate", type=float, default=d.learning_rate, help="PPO's")
    p.add_argument(
        "--lr-final-fraction", type=float, default=d.lr_final_fraction,
        help="the learning rate decays linearly to this fraction of --learning-rate",
    )  # fmt: skip
    p.add_argument(
        "--eval-freq", type=int, default=d.eval_freq,
        help="steps (all envs) between best-model evaluations",
    )  # fmt: skip
    p.add_argument(
        "--eval-episodes", type=int, default=d.eval_episodes,
        help="fixed validation episodes per evaluation (per edge slowdown)",
    )  # fmt: skip
    p.add_argument("--tensorboard", default=None, help="TensorBoard dir (None: next to OUT)")
    p.add_argument(
        "--fleet-sizes", default="",
        help="train on a shared cloud: one learning edge among N-1 policy snapshots, N drawn "
        "per episode from this comma list (e.g. 1,2,4,8,16,32); empty: one edge, idle cloud",
    )  # fmt: skip
    p.add_argument(
        "--fleet-herd", type=float, default=d.fleet_herd,
        help="share of the other edges' decisions that offload everything (congestion)",
    )  # fmt: skip
    p.add_argument(
        "--edge-slowdowns", default="",
        help="one policy for these edge slowdowns (comma list, e.g. 4,8,12,24; the "
        "observation holds the slowdown); empty: the scenario's --edge-slowdown alone",
    )  # fmt: skip
    p.add_argument(
        "--edge-load-busy", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None,
        help="train with the busy regime's edge load drawn from [LOW, HIGH] instead of the "
        "scenario's --load-busy (e.g. 0.25 1.5: a machine slower than its profile shows as "
        "load above 1); the policy is not warned about a range inside it",
    )  # fmt: skip
    p.add_argument(
        "--teacher", default=d.warm_start.teacher,
        help="warm-start teacher (a baseline, edgent-last, edgent-last-load) or none",
    )  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train_agent)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from edgeml.bundle import Bundle
    from edgeml.decision.cloud import BatchingRule, CloudService
    from edgeml.errors import InputError, as_input_error
    from edgeml.rl_agent import evaluate as ev
    from edgeml.rl_agent.traces import load_traces

    # Set-up: every flag and file is checked here, before the first episode.
    with as_input_error():
        cfg = ev.EvalConfig(segments=args.segments, episode_steps=args.steps, seed=args.seed)
        if args.edges < 1:
            raise InputError(f"--edges: must be >= 1, got {args.edges}")
        rule = BatchingRule(args.max_batch, args.max_wait_us / 1000.0)
        bundle = Bundle.load(args.bundle)
        scenario = _scenario(args)
        traces = load_traces(args.traces, scenario.trace_split, scenario.families)
        env = ev.make_env(scenario, traces, cfg, bundle=bundle)
        from edgeml.decision.policies import make_policy

        policies = ev.all_baselines(env)
        if args.policy:
            sha = bundle.weights_sha256
            policies.insert(0, make_policy(args.policy, env.world, bundle_sha256=sha))
        for policy in policies:
            ev.check_policy(policy, env)
        if args.edges > 1:
            CloudService.from_profile(bundle.profile)
    result, records = ev.evaluate(
        policies, scenario, traces, cfg, bundle=bundle, progress=not args.no_progress, env=env,
        edges=args.edges, rule=rule,
    )  # fmt: skip
    print(ev.format_table(result))
    if "headroom" in result:
        print(ev.format_headroom(result["headroom"]))
    if args.json:
        from pathlib import Path

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"results written to {args.json}")
    if args.plot:
        from edgeml.rl_agent.plot import plot_evaluation

        plot_evaluation(result, records, args.plot, n_blocks=bundle.manifest.blocks)
        print(f"plot written to {args.plot}")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="simulate: policy vs baselines vs oracle -> JSON, PNG",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_scenario_args(p, split="test", what="evaluate")
    p.add_argument("--policy", default=None, help="policy .zip or exported actor .npz")
    p.add_argument("--json", default=None, help="write the results JSON here")
    p.add_argument("--plot", default=None, help="write the PNG here")
    p.add_argument("--segments", type=int, default=4, help="episodes per trace file")
    p.add_argument("--steps", type=int, default=600, help="inputs per episode")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--edges", type=int, default=1,
        help="edges sharing one batching cloud (episodes are played in fleets of this size)",
    )  # fmt: skip
    p.add_argument("--max-batch", type=int, default=16, help="the cloud's max batch (serve's)")
    p.add_argument("--max-wait-us", type=int, default=1000, help="the cloud's batch wait (serve's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_serve(args: argparse.Namespace) -> int:
    from edgeml.transport.auth import load_tokens
    from edgeml.transport.malloc import tune_malloc
    from edgeml.transport.server import OffloadServer, ServerConfig, serve

    tune_malloc(enabled=not args.no_malloc_tuning)
    try:
        tokens = load_tokens(args.token_file, args.token_env)
        cfg = ServerConfig(
            bundle=args.bundle,
            host=args.host,
            port=args.port,
            max_batch=args.max_batch,
            max_wait_us=args.max_wait_us,
            batch_wait_alone=args.batch_wait_alone,
            pace_speedup=args.pace_speedup,
            metrics_port=args.metrics_port,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            client_ca=args.client_ca,
            tokens=tokens,
            max_payload_bytes=args.max_payload_bytes,
            workers=args.workers,
            torch_threads=args.threads,
            grace_s=args.grace_s,
            **{name: getattr(args, name) for name, _ in _SERVE_LIMITS},
        )
    except (ValueError, OSError) as exc:
        print(f"edgeml serve: {exc}", file=sys.stderr)
        return 2

    def ready(server: OffloadServer) -> None:
        extra = ""
        if server.metrics_port is not None:
            extra = f", metrics on http://{args.host}:{server.metrics_port}/metrics"
        print(f"edgeml serve: listening on {server.address}{extra}", flush=True)

    try:
        return serve(cfg, ready)
    except (ValueError, OSError) as exc:  # bad bundle, port taken, unreadable TLS files
        print(f"edgeml serve: {exc}", file=sys.stderr)
        return 2


# ServerConfig fields that are flags as they are (name, help); defaults come from the class.
_SERVE_LIMITS = (
    ("max_streams", "open InferStream calls at once, below --workers (RESOURCE_EXHAUSTED beyond)"),
    ("max_streams_per_client", "open InferStream calls per client address"),
    ("stream_idle_s", "end a stream that sends nothing for this long"),
    ("max_connection_age_s", "GOAWAY after this so clients re-resolve and rebalance (0: never)"),
    ("max_connection_age_grace_s", "how long calls on an aged connection may still run"),
    ("keepalive_s", "ping idle connections this often to find dead peers (0: never)"),
    ("keepalive_timeout_s", "drop a connection whose ping goes unanswered this long"),
    ("min_client_ping_s", "shortest client keepalive interval accepted"),
)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="cloud gRPC server: runs blocks s+1..e of a bundle",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("bundle", help="bundle directory (same weights as the edge's)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    p.add_argument("--port", type=int, default=50051, help="gRPC port (0: pick a free one)")
    p.add_argument(
        "--max-batch", type=int, default=16, help="requests per dynamic batch; 1 turns batching off"
    )
    p.add_argument(
        "--max-wait-us",
        type=int,
        default=1000,
        help="longest a request waits for others with the same (split, exit); "
        "a request that finds the server idle runs at once",
    )
    p.add_argument(
        "--batch-wait-alone",
        action="store_true",
        help="wait --max-wait-us even when the server is idle",
    )
    p.add_argument(
        "--pace-speedup",
        type=float,
        default=None,
        metavar="S",
        help="emulate a cloud S x as fast as the bundle's profiling machine: each batch takes "
        "its profiled time / S, sleeping out the rest (for fleets emulated on one host; "
        "default: this machine's own speed)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="Prometheus /metrics port on --host (unset: no endpoint)",
    )
    p.add_argument("--tls-cert", default=None, help="PEM server certificate (enables TLS)")
    p.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    p.add_argument("--client-ca", default=None, help="PEM CA for client certificates (mutual TLS)")
    p.add_argument(
        "--token-file",
        default=None,
        help="file of accepted bearer tokens, one per line (enables token auth)",
    )
    p.add_argument(
        "--token-env",
        default=None,
        metavar="VAR",
        help="environment variable holding an accepted bearer token",
    )
    p.add_argument(
        "--max-payload-bytes", type=int, default=4 << 20, help="largest tensor payload accepted"
    )
    p.add_argument("--workers", type=int, default=32, help="gRPC handler threads")
    from dataclasses import fields

    from edgeml.transport.config import ServerConfig

    defaults = {f.name: f.default for f in fields(ServerConfig)}
    for name, help_ in _SERVE_LIMITS:
        kind = type(defaults[name])
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=defaults[name], help=help_)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument(
        "--grace-s",
        type=float,
        default=10.0,
        help="on SIGTERM, how long in-flight requests may take to finish",
    )
    p.add_argument(
        "--no-malloc-tuning",
        action="store_true",
        help="leave glibc malloc alone (default: keep freed multi-MB tensor "
        "buffers mapped, ~4x faster 8 MB requests; see edgeml/transport/malloc.py)",
    )
    p.set_defaults(func=_cmd_serve)


def _add_runtime(sub: argparse._SubParsersAction) -> None:
    """``edge``, ``demo``, ``emulate`` and ``fleet``: their arguments and handlers live in
    :mod:`edgeml.runtime.commands` (argparse only at import; the rest loads when run)."""
    from edgeml.runtime import commands as c

    for name, help_, add_args, cmd in (
        (
            "edge",
            "edge daemon: decide, run the head, offload, fall back",
            c.add_edge_args,
            c.cmd_edge,
        ),
        (
            "demo",
            "cloud + edge on loopback over a real trace, vs baselines",
            c.add_demo_args,
            c.cmd_demo,
        ),
        (
            "emulate",
            "root: cloud and edge in network namespaces, tc-shaped",
            c.add_emulate_args,
            c.cmd_emulate,
        ),
        (
            "fleet",
            "N edge daemons (processes) on one batching cloud, every policy in turn",
            c.add_fleet_args,
            c.cmd_fleet,
        ),
    ):
        p = sub.add_parser(name, help=help_, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        add_args(p)
        p.set_defaults(func=cmd)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeml", description=__doc__)
    parser.add_argument("--version", action="version", version=f"edgeml {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_build,
        _add_profile,
        _add_export,
        _add_train_agent,
        _add_evaluate,
        _add_serve,
        _add_runtime,
    ):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    level = logging.WARNING - 10 * args.verbose
    logging.basicConfig(
        level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s"
    )
    from edgeml.errors import InputError, one_line

    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (InputError, OSError) as exc:
        # Bad input (a file, field or flag; see edgeml.errors): one line, exit 2 like
        # argparse. Anything else is a bug and keeps its traceback.
        if args.verbose:
            import traceback

            traceback.print_exc()
        print(f"edgeml {args.command}: {one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
