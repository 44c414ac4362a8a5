"""Measure a bundle on this machine: per-block and per-head latency, per-split codec costs.

The result (``profile.json``) is the only input of the cost model
(:mod:`edgeml.partition.cost`), so the simulator, the baselines and the runtime's latency
checks all rest on these numbers. Everything is batch 1 and runs under ``torch.no_grad``,
as the edge daemon and the cloud run it. Timings are medians after a warm-up: blocks and
heads are timed inside whole forward passes (at least ``repeats`` of them, spread over at
least ``min_seconds``), the early-exit rule's own bookkeeping and the codecs in rounds that
visit every entry once, so a load spike from another process hits all entries alike.

With one torch thread (the default) the clock is the thread's CPU time, not wall time: on
a shared machine other processes would otherwise inflate every number by however much
they happen to preempt us, while a dedicated edge core or server sees the CPU time.

This machine is the cloud; the edge is one core of it slowed by ``edge_slowdown`` (the
factor is recorded here and applied by the cost model, never baked into the numbers).
"""

from __future__ import annotations

import logging
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from edgeml.bundle import Bundle
from edgeml.decision.scenario import Scenario
from edgeml.models.progressive_net import ProgressiveNet
from edgeml.partition.cloud_profile import cloud_batch_timings
from edgeml.partition.codecs import CODECS, decode, encode, from_bytes, to_bytes
from edgeml.partition.edge_profile import cold_path_ms, edge_runtime_timings
from edgeml.progressive.infer import run_segment

log = logging.getLogger(__name__)

PROFILE_FORMAT_VERSION = 1
DEFAULT_EDGE_SLOWDOWN = Scenario.edge_slowdown


def cpu_model() -> str:
    """Human-readable CPU name (``/proc/cpuinfo`` on Linux, ``platform`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads and restore the previous count afterwards."""
    if n < 1:
        raise ValueError(f"threads: must be >= 1, got {n}")
    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def pick_clock() -> Callable[[], int]:
    """The nanosecond clock timings use: the thread's CPU time when torch runs on one thread
    (other processes on a shared machine then cannot inflate it; a dedicated edge core or
    server sees the same), wall time when intra-op threads would escape a thread clock."""
    return time.thread_time_ns if torch.get_num_threads() == 1 else time.perf_counter_ns


def clock_name(clock: Callable[[], int]) -> str:
    return "thread_cpu" if clock is time.thread_time_ns else "wall"


def interleaved_medians(
    fns: Sequence[Callable[[int], object]],
    repeats: int,
    warmup: int = 3,
    shuffle: bool = False,
    clock: Callable[[], int] | None = None,
) -> list[float]:
    """Median wall time in ms of each ``fn(round)``, measured round-robin.

    Each function gets the round number so it can cycle through inputs. Interleaving keeps
    slow drifts (another job starting, frequency changes) from biasing one entry.
    ``shuffle`` visits the functions in a new random order every round, so no function
    always runs right after one that warmed its caches (use it when they share work).
    ``clock`` defaults to :func:`pick_clock`.
    """
    if repeats < 1:
        raise ValueError(f"repeats: must be >= 1, got {repeats}")
    rng = random.Random(0)
    order = list(range(len(fns)))
    for r in range(warmup):
        for fn in fns:
            fn(r)
    samples: list[list[float]] = [[] for _ in fns]
    clock = clock or pick_clock()
    for r in range(repeats):
        if shuffle:
            rng.shuffle(order)
        for i in order:
            t0 = clock()
            fns[i](r)
            samples[i].append((clock() - t0) / 1e6)
    return [statistics.median(s) for s in samples]


def bundle_inputs(bundle: Bundle, split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``n`` inputs and labels of the bundle's dataset (``split``: val or test).

    A bundle of your own data carries its inputs (``samples.npz``: validation pixels),
    scaled here by the bundle's recorded preprocessing, as the edge scales its frames.
    """
    from edgeml.data.torch_datasets import FashionMNISTDataset, SceneDataset

    dataset = bundle.manifest.dataset
    samples = bundle.path / "samples.npz"
    if dataset not in ("scenes", "fashion-mnist") or samples.is_file():
        from edgeml.errors import InputError, load_npz

        if not samples.is_file():
            raise InputError(
                f"{bundle.path}: no samples.npz (the inputs to profile with) and dataset "
                f"{dataset!r} is not built in; rebuild the bundle with `edgeml build`"
            )
        z = load_npz(samples, "the bundle's sample inputs (uint8 'x' (N, C, H, W), 'y')",
                     ("x", "y"))  # fmt: skip
        prep = bundle.manifest.prep
        prep.check(z["x"].shape[1:], str(samples))
        x = prep.normalize(z["x"][:n].astype(np.float32) / 255.0)
        return torch.from_numpy(x), torch.from_numpy(z["y"][:n].astype(np.int64))
    if dataset == "scenes":
        seed = int(bundle.manifest.build.get("config", {}).get("seed", 0))
        ds: Any = SceneDataset(split, n, seed)
    elif dataset == "fashion-mnist":
        ds = FashionMNISTDataset(split, n)
    else:
        raise ValueError(f"dataset: {dataset!r} has no inputs here; allowed: fashion-mnist, scenes")
    items = [ds[i] for i in range(min(n, len(ds)))]
    return torch.stack([it[0] for it in items]), torch.tensor([it[1] for it in items])


def validation_inputs(bundle: Bundle, n: int) -> torch.Tensor:
    """``n`` validation inputs of the bundle's dataset (what the link will really carry)."""
    return bundle_inputs(bundle, "val", n)[0]


@torch.no_grad()  # as run_segment does: inference_mode would time blocks a few % faster
def measure(
    bundle: Bundle,
    repeats: int = 30,
    edge_slowdown: float = DEFAULT_EDGE_SLOWDOWN,
    threads: int = 1,
    samples: int = 8,
    codecs: Sequence[str] = tuple(CODECS),
    min_seconds: float = 1.0,
) -> dict[str, Any]:
    """Measure ``bundle`` and return the profile dict (see :func:`profile_bundle`)."""
    if edge_slowdown <= 0:
        raise ValueError(f"edge_slowdown: must be > 0, got {edge_slowdown}")
    t_start = time.perf_counter()
    net = bundle.net.eval()
    n_blocks = net.num_blocks
    warmup = max(2, min(10, repeats // 5))
    with torch_threads(threads):
        clock = clock_name(pick_clock())
        xs = validation_inputs(bundle, samples)
        # hidden[s] holds the tensors at split s, one per input (batch 1 each).
        hidden: list[list[torch.Tensor]] = [[x.unsqueeze(0) for x in xs]]
        for s in range(n_blocks):
            hidden.append([net.blocks[s](h) for h in hidden[-1]])

        blocks_ms, heads, rounds = sequential_timings(net, hidden[0], repeats, warmup, min_seconds)
        forward_ms = interleaved_medians(
            [lambda r: net(hidden[0][0])], max(3, repeats // 3), warmup
        )[0]
        overheads = rule_overheads_ms(net, [hs[0] for hs in hidden], repeats, warmup)
        codec_table = {c: _profile_codec(c, hidden, repeats, warmup) for c in codecs}
        cloud_batch = cloud_batch_timings(net, hidden[0], max(3, repeats // 3), 2)
        offload_codec = "int8" if "int8" in codecs else codecs[0]
        edge_runtimes = edge_runtime_timings(
            bundle, [h.numpy() for h in hidden[0]], repeats, warmup, min_seconds, offload_codec
        )
        fixed = offload_fixed_ms(
            net, hidden[0][0], offload_codec, feature=bundle.manifest.difficulty_feature
        )
    profile: dict[str, Any] = {
        "format_version": PROFILE_FORMAT_VERSION,
        "host": {
            "cpu": cpu_model(),
            "threads": threads,
            "torch": torch.__version__,
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        },
        "devices": {
            "cloud": f"this machine, {threads} torch thread(s)",
            "edge": f"one core of this machine slowed {edge_slowdown:g}x (by the cost model)",
        },
        "edge_slowdown": float(edge_slowdown),
        "repeats": repeats,
        "warmup": warmup,
        "compute_passes": rounds,
        "clock": clock,
        "min_seconds": min_seconds,
        "samples": len(xs),
        "bundle": {
            "weights_sha256": bundle.weights_sha256,
            "model": bundle.manifest.model.get("name"),
            "dataset": bundle.manifest.dataset,
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "exits": list(net.exits),
        "blocks_ms": [round(v, 5) for v in blocks_ms],
        "heads_ms": {str(b): round(v, 5) for b, v in zip(net.exits, heads, strict=True)},
        "rule_overhead_ms": {k: round(v, 5) for k, v in overheads.items()},
        "forward_ms": round(forward_ms, 5),
        "codecs": codec_table,
        "offload_fixed_ms": round(fixed, 5),
        "edge_runtimes": edge_runtimes,
        "cloud_batch": cloud_batch,
    }
    profile["elapsed_s"] = round(time.perf_counter() - t_start, 2)
    return profile


def _decide(net: ProgressiveNet, block: int, h: torch.Tensor) -> object:
    """An exit head plus the confidence the early-exit rule judges it by."""
    return torch.softmax(net.head(block, h), dim=1).max(dim=1)


class PassTimer:
    """Times every block and exit head inside whole forward passes.

    Timing each block where a real run executes it (its input just written, the previous
    block's weights just used) makes the parts add up to the runs the cost model predicts;
    blocks timed one by one on a stored input came out a few percent optimistic.
    """

    def __init__(self, net: ProgressiveNet, clock: Callable[[], int] | None = None) -> None:
        self.net = net
        self.clock = clock or pick_clock()
        self._exit_pos = {b: i for i, b in enumerate(net.exits)}
        self.blocks: list[list[float]] = [[] for _ in net.blocks]
        self.heads: list[list[float]] = [[] for _ in net.exits]

    def run(self, x: torch.Tensor, record: bool = True) -> None:
        clock = self.clock
        h = x
        for k, block in enumerate(self.net.blocks, start=1):
            t0 = clock()
            h = block(h)
            t1 = clock()
            if record:
                self.blocks[k - 1].append((t1 - t0) / 1e6)
            if k in self._exit_pos:
                _decide(self.net, k, h)
                if record:
                    self.heads[self._exit_pos[k]].append((clock() - t1) / 1e6)

    @property
    def rounds(self) -> int:
        return len(self.blocks[0])

    def medians(self) -> tuple[list[float], list[float]]:
        """Median ms per block and per exit head (in exit order)."""
        return [statistics.median(v) for v in self.blocks], [
            statistics.median(v) for v in self.heads
        ]


def sequential_timings(
    net: ProgressiveNet,
    inputs: Sequence[torch.Tensor],
    repeats: int,
    warmup: int,
    min_seconds: float = 0.0,
) -> tuple[list[float], list[float], int]:
    """Block and head medians over at least ``repeats`` passes and ``min_seconds``.

    The time floor spreads the passes out, so a burst of load from another process that is
    shorter than half the window cannot move the medians. Returns the pass count too.
    """
    timer = PassTimer(net)
    for r in range(warmup):
        timer.run(inputs[r % len(inputs)], record=False)
    end = time.perf_counter() + min_seconds
    r = 0
    while r < repeats or time.perf_counter() < end:
        timer.run(inputs[r % len(inputs)])
        r += 1
    return (*timer.medians(), r)


def rule_overheads_ms(
    net: ProgressiveNet, hidden: Sequence[torch.Tensor], repeats: int, warmup: int
) -> dict[str, float]:
    """What the early-exit rule (``run_segment``) adds to the blocks and heads it runs.

    ``segment``: a call's fixed cost; ``exit_check``: an exit passed without its head
    (tau = 1, before ``e``); ``exit_decide``: the bookkeeping after an evaluated head
    (beyond the head and its softmax/max, which ``heads_ms`` holds). Each is a difference
    of medians of one-block runs with and without the rule, measured in shuffled rounds so
    neither side always runs on caches the other just warmed. ``hidden[s]``: tensor at split s.
    """
    n, last = net.num_blocks, len(net.exits) - 1
    first = net.exits[0]
    fns: list[Callable[[int], object]] = [
        lambda r: run_segment(net, hidden[n], n, n, last, 1.0),
        lambda r: run_segment(net, hidden[n - 1], n - 1, n, last, 1.0),
        lambda r: _decide(net, n, net.blocks[n - 1](hidden[n - 1])),
    ]
    if last > 0:  # a side exit to pass without evaluating it
        fns += [
            lambda r: run_segment(net, hidden[first - 1], first - 1, first, last, 1.0),
            lambda r: net.blocks[first - 1](hidden[first - 1]),
        ]
    ms = interleaved_medians(fns, max(repeats, 60), warmup, shuffle=True)
    segment = ms[0]
    decide = ms[1] - ms[2] - segment
    check = ms[3] - ms[4] - segment if last > 0 else 0.0
    return {
        "segment": max(segment, 0.0),
        "exit_check": max(check, 0.0),
        "exit_decide": max(decide, 0.0),
    }


def offload_fixed_ms(
    net: ProgressiveNet,
    x: torch.Tensor,
    codec: str = "int8",
    rounds: int = 20,
    idle_s: float = 0.1,
    clock: Callable[[], int] | None = None,
    feature: str = "bright_share",
) -> float:
    """What an offload costs a torch edge beyond the codec's warm encode, from an idle core
    (:func:`~edgeml.partition.edge_profile.cold_path_ms` of its split-0 path: segment
    set-up, quantization, framing). On the development VM that path took 0.35 ms per input
    in the daemon against a 0.06 ms back-to-back encode, and slowed 12x the difference is
    4 ms on every offload."""
    from edgeml.data.features import difficulty_feature

    arr = x[:1].numpy()
    last = len(net.exits) - 1

    def path() -> None:
        res = run_segment(net, torch.from_numpy(arr), 0, 0, last, 1.0)
        to_bytes(encode(res.hidden, codec))

    return cold_path_ms(
        path, lambda: difficulty_feature(arr, feature), rounds, idle_s, clock or pick_clock()
    )


def _profile_codec(
    codec: str, hidden: list[list[torch.Tensor]], repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Mean framed bytes and median encode/decode ms of ``codec`` at every split."""
    frames = [[to_bytes(encode(h, codec)) for h in hs] for hs in hidden]
    nbytes = [float(np.mean([len(f) for f in fs])) for fs in frames]
    enc_fns, dec_fns = [], []
    for s, hs in enumerate(hidden):
        n = len(hs)
        enc_fns.append(lambda r, hs=hs, n=n: to_bytes(encode(hs[r % n], codec)))
        dec_fns.append(lambda r, fs=frames[s], n=n: decode(from_bytes(fs[r % n])))
    enc = interleaved_medians(enc_fns, repeats, warmup)
    dec = interleaved_medians(dec_fns, repeats, warmup)
    return {
        "bytes": [round(b, 1) for b in nbytes],
        "encode_ms": [round(v, 5) for v in enc],
        "decode_ms": [round(v, 5) for v in dec],
    }


def profile_bundle(
    bundle: Bundle,
    repeats: int = 30,
    edge_slowdown: float = DEFAULT_EDGE_SLOWDOWN,
    threads: int = 1,
    samples: int = 8,
    min_seconds: float = 1.0,
    save: bool = True,
) -> dict[str, Any]:
    """Measure ``bundle`` on this machine; write ``profile.json`` into it unless ``save=False``.

    :param repeats: timed runs per entry; the median is kept.
    :param edge_slowdown: how much slower the edge is than this machine (recorded, and the
        cost model's default).
    :param threads: torch intra-op threads while measuring (the cloud's setting).
    :param samples: validation inputs used for the byte sizes of data-dependent codecs.
    :param min_seconds: least time spent on block/head passes (more passes than ``repeats``
        on fast nets), so short load bursts from other processes cannot move the medians.
    """
    profile = measure(bundle, repeats, edge_slowdown, threads, samples, min_seconds=min_seconds)
    log.info(
        "profiled %s in %.1f s: blocks %s ms",
        bundle.path,
        profile["elapsed_s"],
        profile["blocks_ms"],
    )
    if save:
        bundle.save_profile(profile)
    return profile


def format_profile(profile: dict[str, Any], codecs: Sequence[str] | None = None) -> str:
    """Plain-text tables of a profile (for ``edgeml profile`` and the bench)."""
    table = profile["codecs"]
    shown = [c for c in (codecs or ("raw", "fp16", "int8", "int8c", "int8+zstd")) if c in table]
    blocks, heads = profile["blocks_ms"], profile["heads_ms"]
    host = profile["host"]
    lines = [
        f"{host['cpu']}, {host['threads']} thread(s), torch {host['torch']}, "
        f"median of {profile['repeats']}; edge = this machine x{profile['edge_slowdown']:g}",
        f"{'split':>5} {'block ms':>9} {'head ms':>8} "
        + " ".join(f"{c + ' kB':>11}" for c in shown),
    ]
    for s in range(len(blocks) + 1):
        block = f"{blocks[s - 1]:9.3f}" if s else f"{'-':>9}"
        head = f"{heads[str(s)]:8.3f}" if str(s) in heads else f"{'':>8}"
        sizes = " ".join(f"{table[c]['bytes'][s] / 1e3:11.1f}" for c in shown)
        lines.append(f"{s:>5} {block} {head} {sizes}")
    lines.append(f"{'codec':>12} {'kB (min..max)':>18} {'encode ms':>10} {'decode ms':>10}")
    for c, t in table.items():
        kb = f"{min(t['bytes']) / 1e3:.1f}..{max(t['bytes']) / 1e3:.1f}"
        enc, dec = statistics.mean(t["encode_ms"]), statistics.mean(t["decode_ms"])
        lines.append(f"{c:>12} {kb:>18} {enc:10.3f} {dec:10.3f}")
    lines.append("(encode/decode: mean over splits of the per-split median, on this machine)")
    rule = profile.get("rule_overhead_ms")
    if rule:
        lines.append(
            "early-exit rule bookkeeping ms: "
            + ", ".join(f"{k} {v:.3f}" for k, v in rule.items())
            + f"; clock: {profile.get('clock', 'wall')}"
        )
    if "offload_fixed_ms" in profile:
        per = "".join(
            f", {rt} {v['offload_fixed_ms']:.3f} ms"
            for rt, v in (profile.get("edge_runtimes") or {}).items()
            if "offload_fixed_ms" in v
        )
        lines.append(
            f"offload fixed cost from an idle core: torch {profile['offload_fixed_ms']:.3f} ms"
            f"{per} beyond the warm encode (edge side, slowed like it)"
        )
    return "\n".join(lines)
