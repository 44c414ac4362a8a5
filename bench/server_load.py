"""Cloud server under load: 16 concurrent edge clients, dynamic batching off vs on.

Two real ``edgeml serve`` processes run on 127.0.0.1 -- one with ``--max-batch 1`` (batching
off), one with batching on -- and the same closed-loop load hits each in turn: every client
sends its next request as soon as the previous answer arrives, so the server is saturated
and requests/s measures its capacity. The clients live in their own processes (threads
in a few processes, one ``EdgeClient`` channel each), never sharing a GIL with a server.
Rounds alternate between the configurations so background load hits both alike; the table
shows the median over rounds.

Each request is what an edge sends at the middle split of the bundle: the real tensor that
leaves block ``s`` for a validation input, encoded once up front (``--codec``), with
``tau = 1.0`` so every request runs the whole tail (the worst case for the server).

    .venv/bin/python bench/server_load.py                          # default bundle
    .venv/bin/python bench/server_load.py --bundle /tmp/b --rounds 1 --duration-s 3
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # no INFO lines (GOAWAY) at shutdown

import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from multiprocessing.connection import Connection  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_BUNDLE = REPO / "edgeml" / "assets" / "bundles" / "default"
TARGET_SPEEDUP = 1.5


@dataclass(frozen=True)
class ServerSetup:
    """One server configuration under test."""

    name: str
    max_batch: int
    max_wait_us: int


# --------------------------------------------------------------------------- load workers


def _closed_loop(
    client: Any, tensors: list[Any], meta: dict[str, Any], first: int, step: int,
    t_start: float, t_end: float, out: dict[str, Any],
) -> None:  # fmt: skip
    """One edge device: send, wait for the answer, send the next, until ``t_end``."""
    from edgeml.transport.client import OffloadError

    k = first
    while True:
        now = time.time()
        if now >= t_end:
            return
        enc = tensors[k % len(tensors)]
        k += step
        try:
            r = client.infer(enc, meta["split"], meta["exit"], meta["tau"])
        except OffloadError as exc:  # counted in warm-up too: the target is zero
            out["errors"][exc.code.name if exc.code else "CLIENT"] += 1
            continue
        if t_start <= now and time.time() <= t_end:  # the whole call inside the window
            out["latency_ms"].append(r.rtt_ms)
            out["batch_size"].append(r.batch_size)
            out["queue_ms"].append(r.queue_ms)
            out["decode_ms"].append(r.decode_ms)
            out["compute_ms"].append(r.compute_ms)


def _worker(conn: Connection, threads: int, payloads: list[bytes], meta: dict[str, Any]) -> None:
    """A client process: ``threads`` closed-loop clients per command received on ``conn``."""
    import torch

    torch.set_num_threads(1)
    from edgeml.partition.codecs import from_bytes
    from edgeml.transport.client import ClientConfig, EdgeClient

    tensors = [from_bytes(p) for p in payloads]
    clients: dict[tuple[str, int], EdgeClient] = {}
    while True:
        cmd = conn.recv()
        if cmd is None:
            break
        address = cmd["address"]
        for i in range(threads):  # one channel per simulated edge device, connected up front
            if (address, i) not in clients:
                c = EdgeClient(ClientConfig(targets=address, max_attempts=1), meta["sha"])
                c.wait_ready(60)
                clients[address, i] = c
        conn.send("ready")
        cmd.update(conn.recv())  # the measurement window, once every process is connected
        keys = ("latency_ms", "batch_size", "queue_ms", "decode_ms", "compute_ms")
        outs: list[dict[str, Any]] = [{k: [] for k in keys} for _ in range(threads)]
        for o in outs:
            o["errors"] = Counter()
        ts = [
            threading.Thread(
                target=_closed_loop,
                args=(
                    clients[address, i],
                    tensors,
                    meta,
                    i,
                    threads,
                    cmd["t_start"],
                    cmd["t_end"],
                    outs[i],
                ),
            )  # fmt: skip
            for i in range(threads)
        ]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        reply: dict[str, Any] = {k: [v for o in outs for v in o[k]] for k in keys}
        reply["errors"] = dict(sum((o["errors"] for o in outs), Counter()))
        conn.send(reply)
    for c in clients.values():
        c.close()


# --------------------------------------------------------------------------- servers


def start_server(bundle: Path, setup: ServerSetup) -> tuple[subprocess.Popen[str], str]:
    """``edgeml serve`` in a child process on a free port; returns it and its address."""
    cmd = [sys.executable, "-m", "edgeml.cli", "serve", str(bundle), "--port", "0"]
    cmd += ["--max-batch", str(setup.max_batch), "--max-wait-us", str(setup.max_wait_us)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "listening on" in line:
            return proc, line.split("listening on", 1)[1].split(",")[0].strip()
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"server {setup.name} did not start (exit {proc.poll()})")


def stop_server(proc: subprocess.Popen[str]) -> int:
    proc.terminate()  # SIGTERM: drains, exits 0
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


# --------------------------------------------------------------------------- inputs


def edge_payloads(bundle_path: Path, split: int, codec: str, n: int) -> tuple[list[bytes], Any]:
    """Encoded tensors leaving block ``split`` for ``n`` validation inputs, and the bundle."""
    import torch

    from edgeml.bundle import Bundle
    from edgeml.partition.codecs import encode, to_bytes
    from edgeml.partition.profiler import validation_inputs

    bundle = Bundle.load(bundle_path, need_calibration=False)
    try:
        xs = validation_inputs(bundle, n)
    except Exception as exc:  # dataset not installed here: shapes are what matter for load
        print(f"(no validation inputs: {exc}; using noise)")
        xs = torch.rand(n, *bundle.manifest.input_shape)
    with torch.no_grad():
        hs = [bundle.net.run_blocks(xs[i : i + 1], 0, split) for i in range(len(xs))]
    return [to_bytes(encode(h, codec)) for h in hs], bundle


# --------------------------------------------------------------------------- main


def _summary(
    latency: list[float], batch: list[int], errors: dict[str, int], secs: float,
    server: dict[str, list[float]] | None = None,
) -> dict:  # fmt: skip
    lat = np.asarray(latency, dtype=float)
    means = {f"{k}_mean": round(float(np.mean(v)), 3) if v else None
             for k, v in (server or {}).items()}  # fmt: skip
    return {
        **means,
        "requests": int(lat.size),
        "requests_per_s": round(lat.size / secs, 1),
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 3) if lat.size else None,
        "latency_ms_p99": round(float(np.percentile(lat, 99)), 3) if lat.size else None,
        "latency_ms_mean": round(float(lat.mean()), 3) if lat.size else None,
        "batch_size_mean": round(float(np.mean(batch)), 2) if batch else None,
        "batch_size_max": int(max(batch)) if batch else None,
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE, help="bundle to serve")
    p.add_argument("--clients", type=int, default=16, help="concurrent edge clients")
    p.add_argument("--processes", type=int, default=2, help="client processes (threads split)")
    p.add_argument("--split", type=int, default=None, help="split (default: blocks // 2)")
    p.add_argument("--codec", default="raw", help="tensor codec of the requests")
    p.add_argument("--max-batch", type=int, default=16, help="batching-on max batch")
    p.add_argument("--max-wait-us", type=int, default=1000, help="batching-on max wait")
    p.add_argument("--duration-s", type=float, default=8.0, help="measured seconds per cell")
    p.add_argument("--warmup-s", type=float, default=1.5, help="unmeasured seconds per cell")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    p.add_argument("--json", type=Path, default=HERE / "results" / "server_load.json")
    p.add_argument("--plot", type=Path, default=HERE / "results" / "server_load.png")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    if not (args.bundle / "manifest.json").is_file():
        print(f"no bundle at {args.bundle} (manifest.json missing); pass --bundle", file=sys.stderr)
        return 2
    if args.clients % args.processes:
        print("--clients must be a multiple of --processes", file=sys.stderr)
        return 2

    from edgeml.partition.profiler import cpu_model

    manifest = json.loads((args.bundle / "manifest.json").read_text())
    split = manifest["blocks"] // 2 if args.split is None else args.split
    exit_index = len(manifest["exits"]) - 1
    payloads, bundle = edge_payloads(args.bundle, split, args.codec, 16)
    meta = {"sha": bundle.weights_sha256, "split": split, "exit": exit_index, "tau": 1.0}
    setups = [
        ServerSetup("batching_off", 1, 0),
        ServerSetup("batching_on", args.max_batch, args.max_wait_us),
    ]
    print(
        f"{args.bundle}: split {split} of {manifest['blocks']}, exit {exit_index}, "
        f"{args.codec} {len(payloads[0]) / 1e3:.1f} kB/request, {args.clients} clients in "
        f"{args.processes} processes, {args.rounds} x {args.duration_s:g} s per config"
    )

    ctx = mp.get_context("spawn")
    per_proc = args.clients // args.processes
    pipes, procs = [], []
    servers = {}
    t_begin = time.perf_counter()
    try:
        for s in setups:
            servers[s.name] = start_server(args.bundle, s)
        for _ in range(args.processes):
            parent, child = ctx.Pipe()
            w = ctx.Process(target=_worker, args=(child, per_proc, payloads, meta), daemon=True)
            w.start()
            pipes.append(parent)
            procs.append(w)
        rounds: dict[str, list[dict]] = {s.name: [] for s in setups}
        for r in range(args.rounds):
            order = setups if r % 2 == 0 else setups[::-1]
            for s in order:
                address = servers[s.name][1]
                for c in pipes:
                    c.send({"address": address})
                assert all(c.recv() == "ready" for c in pipes)
                t0 = time.time() + 0.2 + args.warmup_s
                for c in pipes:
                    c.send({"t_start": t0, "t_end": t0 + args.duration_s})
                parts = [c.recv() for c in pipes]
                lat = [v for part in parts for v in part["latency_ms"]]
                bs = [v for part in parts for v in part["batch_size"]]
                errs: Counter[str] = Counter()
                for part in parts:
                    errs.update(part["errors"])
                srv = {k: [v for part in parts for v in part[k]]
                       for k in ("queue_ms", "decode_ms", "compute_ms")}  # fmt: skip
                cell = _summary(lat, bs, dict(errs), args.duration_s, srv)
                rounds[s.name].append(cell)
                print(
                    f"  round {r + 1} {s.name:>13}: {cell['requests_per_s']:8.1f} req/s  "
                    f"p50 {cell['latency_ms_p50']} ms  p99 {cell['latency_ms_p99']} ms  "
                    f"batch {cell['batch_size_mean']}  errors {sum(errs.values())}"
                )
    finally:
        for c in pipes:
            c.send(None)
        for w in procs:
            w.join(timeout=10)
        exit_codes = {name: stop_server(proc) for name, (proc, _) in servers.items()}

    results: dict[str, Any] = {}
    for s in setups:
        cells = rounds[s.name]

        def med(key: str, cells: list[dict] = cells) -> float | None:
            values = [c[key] for c in cells if c[key] is not None]  # None: no call finished
            return round(statistics.median(values), 3) if values else None

        errors: Counter[str] = Counter()
        for c in cells:
            errors.update(c["errors"])
        results[s.name] = {
            "server": asdict(s),
            "requests_per_s": med("requests_per_s"),
            "latency_ms_p50": med("latency_ms_p50"),
            "latency_ms_p99": med("latency_ms_p99"),
            "batch_size_mean": med("batch_size_mean"),
            "queue_ms_mean": med("queue_ms_mean"),
            "decode_ms_mean": med("decode_ms_mean"),
            "compute_ms_mean": med("compute_ms_mean"),
            "latency_ms_mean": med("latency_ms_mean"),
            "batch_size_max": max((c["batch_size_max"] or 0) for c in cells),
            "requests": sum(c["requests"] for c in cells),
            "errors": sum(errors.values()),
            "errors_by_code": dict(errors),
            "rounds": cells,
        }
    off, on = results["batching_off"], results["batching_on"]
    speedup = round(on["requests_per_s"] / off["requests_per_s"], 2)
    total_errors = off["errors"] + on["errors"]

    print()
    print(f"{'config':>13} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'batch':>6} {'errors':>6}")
    for name, r in results.items():
        print(
            f"{name:>13} {r['requests_per_s']:8.1f} {r['latency_ms_p50']:8.2f} "
            f"{r['latency_ms_p99']:8.2f} {r['batch_size_mean']:6.2f} {r['errors']:6d}"
        )
    verdict = "meets" if speedup >= TARGET_SPEEDUP and total_errors == 0 else "MISSES"
    print(f"batching speed-up {speedup}x ({verdict} the >= {TARGET_SPEEDUP}x, zero-error target)")

    out = {
        "command": "python bench/server_load.py " + " ".join(argv or sys.argv[1:]),
        "bundle": {
            "path": _display(args.bundle),
            "weights_sha256": bundle.weights_sha256,
            "model": manifest["model"]["name"],
            "input_shape": manifest["input_shape"],
        },
        "request": {
            "split": split,
            "exit": exit_index,
            "tau": 1.0,
            "codec": args.codec,
            "payload_bytes": len(payloads[0]),
        },
        "load": {
            "clients": args.clients,
            "client_processes": args.processes,
            "closed_loop": True,
            "duration_s": args.duration_s,
            "warmup_s": args.warmup_s,
            "rounds": args.rounds,
        },
        "host": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
            "server_torch_threads": 1,
        },
        "results": results,
        "speedup_requests_per_s": speedup,
        "target_speedup": TARGET_SPEEDUP,
        "errors": total_errors,
        "server_exit_codes": exit_codes,
        "elapsed_s": round(time.perf_counter() - t_begin, 1),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")
    if not args.no_plot:
        _plot(results, speedup, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _display(path: Path) -> str:
    """Repo-relative when inside the repo, so the committed JSON holds no local paths."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def _plot(results: dict[str, Any], speedup: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.bar(names, [results[n]["requests_per_s"] for n in names], color=["#999", "#2a7"])
    a.set_ylabel("requests/s")
    a.set_title(f"throughput ({speedup}x with batching)")
    x = np.arange(len(names))
    b.bar(x - 0.2, [results[n]["latency_ms_p50"] for n in names], 0.4, label="p50")
    b.bar(x + 0.2, [results[n]["latency_ms_p99"] for n in names], 0.4, label="p99")
    b.set_xticks(x, names)
    b.set_ylabel("round-trip ms")
    b.set_title("latency, 16 closed-loop clients")
    b.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
