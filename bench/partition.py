"""Partition bench: what each cut costs, whether the cost model predicts real runs, what
the codecs cost in bytes, time and accuracy.

Sections (each printed as a table and stored in the JSON):

* ``resnet50``: every fx cut of ResNet-50 at 224x224 (random weights and input, so the
  entropy-coded sizes are only indicative): tensor shape, head and tail latency, bytes
  per codec.
* ``bundle.splits``: the same per split ``0..N`` of a bundle, from a fresh profile.
* ``bundle.cost_check``: for every (split s, exit e), the cost model's edge + cloud compute
  (``edge_slowdown=1`` so both sides are this machine) against a measured run of the edge
  segment (blocks ``1..s`` and heads) plus the cloud segment. ``tau1`` rows run the real
  early-exit rule (:func:`edgeml.progressive.infer.run_segment`) with tau = 1; ``all_heads``
  rows run it with a tau < 1 that the chosen (least confident) input never reaches, so
  every head up to ``e`` is evaluated and the run still ends at ``e``. Target: relative
  error within 15%. The headline (``concurrent``) takes block and head times from profiling
  passes that run inside the same shuffled rounds as the checked runs, so load from other
  processes hits both alike and the check is of the model, not of the machine's mood; the
  profile measured just before (``fresh_profile``) and the bundle's ``profile.json``
  (``stored_profile``) are scored against the same runs to show how much load drift adds.
* ``bundle.codec_check``: bytes vs fp32 (``raw``) per split, and top-1 at every exit when
  the tensor at split s crosses as int8 / int8c, against fp32, on the test split
  (target: within 0.5 points).
* ``codec_speed``: encode + decode of a 1 MB float32 post-ReLU activation per codec.

    .venv/bin/python bench/partition.py                       # default bundle, full run
    .venv/bin/python bench/partition.py --bundle /tmp/dev_scene_bundle --repeats 5 --samples 300
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeml.bundle import Bundle
from edgeml.models import build_model
from edgeml.models.progressive_net import ProgressiveNet
from edgeml.partition.codecs import CODECS, decode, encode, from_bytes, to_bytes
from edgeml.partition.cost import CostModel
from edgeml.partition.graph import find_cut_points, split
from edgeml.partition.profiler import (
    PassTimer,
    bundle_inputs,
    clock_name,
    cpu_model,
    interleaved_medians,
    measure,
    pick_clock,
)
from edgeml.progressive.infer import run_segment

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_BUNDLE = ROOT / "edgeml" / "assets" / "bundles" / "default"
SHOWN = ("raw", "fp16", "int8", "int8c", "int8+zstd")  # columns of the printed tables
TOLERANCE = 0.15
TOP1_MARGIN = 0.5  # points


def _kb(n: float) -> str:
    return f"{n / 1e3:9.1f}"


# --------------------------------------------------------------------------- ResNet-50


@torch.inference_mode()
def resnet_cuts(size: int, repeats: int) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_model("resnet50").eval()
    x = torch.randn(1, 3, size, size)
    cuts = find_cut_points(model, x)
    parts = [split(model, c) for c in cuts]
    mids = [head(x) for head, _ in parts]
    fns: list[Callable[[int], object]] = []
    for (head, tail), mid in zip(parts, mids, strict=True):
        fns += [lambda r, h=head: h(x), lambda r, t=tail, m=mid: t(m)]
    ms = interleaved_medians(fns, repeats, warmup=1)
    rows = []
    for i, (cut, mid) in enumerate(zip(cuts, mids, strict=True)):
        rows.append({
            "cut": cut.index, "node": cut.node, "shape": list(cut.shape),
            "head_ms": round(ms[2 * i], 3), "tail_ms": round(ms[2 * i + 1], 3),
            "bytes": {c: len(to_bytes(encode(mid, c))) for c in CODECS},
        })  # fmt: skip
    return {"input": [1, 3, size, size], "weights": "random init", "cuts": rows}


def print_resnet(res: dict[str, Any]) -> None:
    print(f"\nResNet-50 at {res['input'][2]}x{res['input'][3]} ({res['weights']}), batch 1")
    print(f"{'cut':>3} {'node':<18} {'shape':<18} {'head ms':>8} {'tail ms':>8} "
          + " ".join(f"{c + ' kB':>9}" for c in SHOWN))  # fmt: skip
    for r in res["cuts"]:
        shape = "x".join(map(str, r["shape"][1:]))
        print(f"{r['cut']:>3} {r['node']:<18} {shape:<18} {r['head_ms']:8.2f} {r['tail_ms']:8.2f} "
              + " ".join(_kb(r["bytes"][c]) for c in SHOWN))  # fmt: skip


# --------------------------------------------------------------------------- cost model check


@torch.inference_mode()
def unsure_input(bundle: Bundle, candidates: int = 32) -> tuple[torch.Tensor, float]:
    """The validation input least confident at every exit, and a tau < 1 above all of its
    confidences: with it the rule evaluates every head up to ``e`` and never stops early."""
    xs = bundle_inputs(bundle, "val", candidates)[0]
    confs = torch.stack([torch.softmax(z, 1).max(1).values for z in bundle.net.forward_exits(xs)])
    top = confs.max(0).values
    i = int(top.argmin())
    if float(top[i]) >= 1.0:
        raise RuntimeError("every candidate input is fully confident at some exit")
    return xs[i : i + 1], (float(top[i]) + 1.0) / 2


@torch.no_grad()  # the runtime's mode (run_segment's own); inference_mode would be faster
def measure_actions(
    net: ProgressiveNet, x: torch.Tensor, tau: float, repeats: int
) -> tuple[dict[tuple, float], PassTimer]:
    """Median ms of the edge and cloud segment of every (s, e), with tau = 1 and ``tau``.

    One profiling pass (per-block and per-head times) joins every round, so the parts the
    cost model adds up are measured under the same conditions as the runs it is checked
    against.
    """
    n = net.num_blocks
    hidden = [x]
    for k in range(n):
        hidden.append(net.blocks[k](hidden[-1]))
    for e in range(len(net.exits)):  # the whole run with ``tau`` must end at ``e``
        (answer,) = run_segment(net, x, 0, n, e, tau).answers
        assert answer is not None and answer.exit_index == e, (e, answer)
    timer = PassTimer(net)
    keys: list[tuple] = [("profile_pass",)]
    fns: list[Callable[[int], object]] = [lambda r: timer.run(x)]
    for s in range(n + 1):
        for e, b in enumerate(net.exits):
            for policy, t in (("tau1", 1.0), ("all_heads", tau)):
                keys.append((s, e, policy, "edge"))
                fns.append(lambda r, s=s, e=e, t=t: run_segment(net, x, 0, s, e, t))
                if b > s:
                    keys.append((s, e, policy, "cloud"))
                    fns.append(lambda r, s=s, e=e, t=t: run_segment(net, hidden[s], s, n, e, t))
    ms = interleaved_medians(fns, repeats, warmup=2, shuffle=True)
    return dict(zip(keys, ms, strict=True)), timer


def score(cm: CostModel, measured: dict[tuple, float]) -> dict[str, Any]:
    rows = []
    for s in range(cm.num_blocks + 1):
        for e in range(cm.num_exits):
            for policy in ("tau1", "all_heads"):
                tau1 = policy == "tau1"
                b = cm.breakdown(s, e, e, tau1, cm.codecs[0])
                edge = measured[(s, e, policy, "edge")]
                cloud = measured.get((s, e, policy, "cloud"), 0.0)
                pred, meas = b.edge_ms + b.cloud_ms, edge + cloud
                rows.append({
                    "split": s, "exit": e, "policy": policy,
                    "pred_edge_ms": round(b.edge_ms, 4), "pred_cloud_ms": round(b.cloud_ms, 4),
                    "meas_edge_ms": round(edge, 4), "meas_cloud_ms": round(cloud, 4),
                    "rel_error": round(abs(pred - meas) / meas, 4),
                })  # fmt: skip
    return {"rows": rows, **_summary([r["rel_error"] for r in rows])}


def _summary(errors: list[float]) -> dict[str, float]:
    return {
        "fraction_within": round(float(np.mean(np.asarray(errors) <= TOLERANCE)), 4),
        "median_rel_error": round(statistics.median(errors), 4),
        "max_rel_error": round(max(errors), 4),
    }


def cost_check(bundle: Bundle, profile: dict[str, Any], repeats: int) -> dict[str, Any]:
    """Score three profiles against the same measured runs (see the module docstring)."""
    x, tau = unsure_input(bundle)
    measured, timer = measure_actions(bundle.net, x, tau, repeats)
    exits = tuple(bundle.manifest.exits)
    blocks, heads = timer.medians()
    concurrent = {
        **profile,
        "blocks_ms": blocks,
        "heads_ms": dict(zip(map(str, exits), heads, strict=True)),
    }
    out: dict[str, Any] = {"tolerance": TOLERANCE}
    named = {"concurrent": concurrent, "fresh_profile": profile}
    if bundle.profile is not None:
        named["stored_profile"] = bundle.profile
    for name, prof in named.items():
        scored = score(CostModel.from_profile(prof, exits, edge_slowdown=1.0), measured)
        if name != "concurrent":
            scored.pop("rows")
        out[name] = scored
    rows = out["concurrent"]["rows"]
    for policy in ("tau1", "all_heads"):
        out[policy] = _summary([r["rel_error"] for r in rows if r["policy"] == policy])
    return out


def print_cost(check: dict[str, Any]) -> None:
    print(f"\ncost model vs measured runs (edge_slowdown=1; target: within {TOLERANCE:.0%})")
    print(f"{'s':>2} {'e':>2} {'policy':<9} {'pred ms':>8} {'meas ms':>8} {'error':>7}")
    for r in check["concurrent"]["rows"]:
        pred = r["pred_edge_ms"] + r["pred_cloud_ms"]
        meas = r["meas_edge_ms"] + r["meas_cloud_ms"]
        print(f"{r['split']:>2} {r['exit']:>2} {r['policy']:<9} {pred:8.3f} {meas:8.3f} "
              f"{r['rel_error']:7.1%}")  # fmt: skip
    for name in ("concurrent", "tau1", "all_heads", "fresh_profile", "stored_profile"):
        if name in check:
            c = check[name]
            print(f"{name:>15}: {c['fraction_within']:.0%} within {TOLERANCE:.0%}, median error "
                  f"{c['median_rel_error']:.1%}, max {c['max_rel_error']:.1%}")  # fmt: skip


# --------------------------------------------------------------------------- codec check


def _roundtrip(h: torch.Tensor, codec: str) -> tuple[torch.Tensor, int]:
    """Each row encoded on its own (batch 1, as the edge sends it); returns decoded + bytes."""
    frames = [to_bytes(encode(h[i : i + 1], codec)) for i in range(len(h))]
    out = torch.cat([torch.from_numpy(decode(from_bytes(f)).copy()) for f in frames])
    return out, sum(len(f) for f in frames)


@torch.inference_mode()
def codec_check(bundle: Bundle, samples: int, codecs: tuple[str, ...], chunk: int = 250) -> dict:
    net, n, exits = bundle.net, bundle.net.num_blocks, bundle.net.exits
    x_all, y_all = bundle_inputs(bundle, "test", samples)
    y = y_all.numpy()
    fp32 = np.zeros((len(y), len(exits)), dtype=np.int64)
    # pred[codec][s] -> (samples, exits); exits at or before s are unaffected (fp32).
    pred = {c: np.zeros((n + 1, len(y), len(exits)), dtype=np.int64) for c in codecs}
    nbytes = {c: np.zeros(n + 1) for c in codecs}
    for lo in range(0, len(y), chunk):
        x = x_all[lo : lo + chunk]
        rows = slice(lo, lo + len(x))
        fp32[rows] = np.stack([z.argmax(1).numpy() for z in net.forward_exits(x)], axis=1)
        h = x
        for s in range(n + 1):
            if s:
                h = net.blocks[s - 1](h)
            for c in codecs:
                g, size = _roundtrip(h, c)
                nbytes[c][s] += size
                pred[c][s, rows] = fp32[rows]
                for k in range(s + 1, n + 1):
                    g = net.blocks[k - 1](g)
                    if k in exits:
                        pred[c][s, rows, exits.index(k)] = net.head(k, g).argmax(1).numpy()
    acc32 = (fp32 == y[:, None]).mean(axis=0)
    out: dict[str, Any] = {
        "samples": len(y),
        "split": "test",
        "fp32_top1": [round(float(a), 4) for a in acc32],
        "margin_points": TOP1_MARGIN,
        "codecs": {},
    }
    worst = 0.0
    for c in codecs:
        per_split = []
        for s in range(n + 1):
            acc = (pred[c][s] == y[:, None]).mean(axis=0)
            delta = (acc - acc32) * 100
            worst = max(worst, float(np.abs(delta).max()))
            per_split.append({
                "split": s, "top1": [round(float(a), 4) for a in acc],
                "delta_points": [round(float(d), 2) for d in delta],
                "final_agreement": round(float((pred[c][s][:, -1] == fp32[:, -1]).mean()), 4),
                "bytes_mean": round(float(nbytes[c][s] / len(y)), 1),
            })  # fmt: skip
        out["codecs"][c] = per_split
    out["max_abs_delta_points"] = round(worst, 2)
    out["within_margin"] = worst <= TOP1_MARGIN
    return out


def print_codec_check(check: dict[str, Any], profile: dict[str, Any], shapes: list) -> None:
    table = profile["codecs"]
    print("\nbytes per split vs fp32 (raw), mean over profile inputs")
    print(f"{'s':>2} {'shape':<12} {'raw kB':>8} " + " ".join(f"{c:>10}" for c in CODECS[1:]))
    for s, shape in enumerate(shapes):
        raw = table["raw"]["bytes"][s]
        ratios = " ".join(f"{table[c]['bytes'][s] / raw:10.3f}" for c in CODECS[1:])
        print(f"{s:>2} {'x'.join(map(str, shape)):<12} {raw / 1e3:8.1f} {ratios}")
    print(f"\ntop-1 with the tensor at split s quantized, {check['samples']} {check['split']} "
          f"samples; fp32 per exit {check['fp32_top1']}")  # fmt: skip
    for c, rows in check["codecs"].items():
        print(f"{c}: split -> delta points per exit (fp32 -> {c}), final-exit agreement")
        for r in rows:
            print(f"  {r['split']:>2}  {r['delta_points']}  {r['final_agreement']:.4f}")
    verdict = "OK" if check["within_margin"] else "EXCEEDED"
    print(f"max |delta| {check['max_abs_delta_points']} points (margin {TOP1_MARGIN}): {verdict}")


# --------------------------------------------------------------------------- codec speed


def codec_speed(repeats: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    shape = (1, 64, 64, 64)  # 1 MiB of float32
    x = rng.standard_normal(shape).astype(np.float32)
    x *= np.geomspace(0.1, 10, shape[1], dtype=np.float32).reshape(1, -1, 1, 1)
    x = np.maximum(x, 0)  # post-ReLU: about half zeros, channels on different scales
    frames = {c: to_bytes(encode(x, c)) for c in CODECS}
    fns: list[Callable[[int], object]] = []
    for c in CODECS:
        fns += [lambda r, c=c: to_bytes(encode(x, c)), lambda r, c=c: decode(from_bytes(frames[c]))]
    ms = interleaved_medians(fns, repeats, warmup=2)
    out = {}
    for i, c in enumerate(CODECS):
        enc, dec = ms[2 * i], ms[2 * i + 1]
        out[c] = {
            "bytes": len(frames[c]), "ratio": round(len(frames[c]) / x.nbytes, 4),
            "encode_ms": round(enc, 3), "decode_ms": round(dec, 3),
            "total_ms": round(enc + dec, 3),
        }  # fmt: skip
    return {"tensor": {"shape": list(shape), "bytes": x.nbytes, "kind": "relu(randn)"}, **out}


def print_speed(res: dict[str, Any]) -> None:
    print(f"\ncodecs on a 1 MiB float32 activation {res['tensor']['shape']}, median")
    print(f"{'codec':>12} {'kB':>8} {'ratio':>6} {'enc ms':>7} {'dec ms':>7} {'total':>7}")
    for c in CODECS:
        r = res[c]
        print(f"{c:>12} {r['bytes'] / 1e3:8.1f} {r['ratio']:6.3f} {r['encode_ms']:7.3f} "
              f"{r['decode_ms']:7.3f} {r['total_ms']:7.3f}")  # fmt: skip


# --------------------------------------------------------------------------- main


def bundle_section(bundle: Bundle, repeats: int, samples: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    profile = measure(bundle, repeats=repeats, edge_slowdown=1.0, threads=torch.get_num_threads())
    cost = cost_check(bundle, profile, repeats)
    shapes = [list(c.shape) for c in bundle.manifest.cut_points]
    # Head = blocks 1..s; tail = blocks s+1..N + final head (measured, tau = 1, final exit).
    final = len(bundle.net.exits) - 1
    by_key = {(r["split"], r["exit"], r["policy"]): r for r in cost["concurrent"]["rows"]}
    splits = []
    for s, shape in enumerate(shapes):
        r = by_key[(s, final, "tau1")]
        splits.append({
            "split": s, "shape": shape, "head_ms": r["meas_edge_ms"], "tail_ms": r["meas_cloud_ms"],
            "bytes": {c: profile["codecs"][c]["bytes"][s] for c in CODECS},
        })  # fmt: skip
    print(f"\nbundle {bundle.path} ({bundle.manifest.model['name']} on {bundle.manifest.dataset}), "
          "per split, batch 1")  # fmt: skip
    print(f"{'s':>2} {'shape':<12} {'head ms':>8} {'tail ms':>8} "
          + " ".join(f"{c + ' kB':>9}" for c in SHOWN))  # fmt: skip
    for r in splits:
        print(f"{r['split']:>2} {'x'.join(map(str, r['shape'])):<12} {r['head_ms']:8.3f} "
              f"{r['tail_ms']:8.3f} " + " ".join(_kb(r["bytes"][c]) for c in SHOWN))  # fmt: skip
    print_cost(cost)
    acc = codec_check(bundle, samples, ("int8", "int8c"))
    print_codec_check(acc, profile, shapes)
    return {
        "path": str(bundle.path), "model": bundle.manifest.model,
        "dataset": bundle.manifest.dataset, "weights_sha256": bundle.weights_sha256,
        "profile": profile, "splits": splits,
        "cost_check": cost, "codec_check": acc, "elapsed_s": round(time.perf_counter() - t0, 1),
    }  # fmt: skip


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    if "bundle" in doc:
        rows = doc["bundle"]["cost_check"]["concurrent"]["rows"]
        for policy, marker in (("tau1", "o"), ("all_heads", "x")):
            pr = [r["pred_edge_ms"] + r["pred_cloud_ms"] for r in rows if r["policy"] == policy]
            me = [r["meas_edge_ms"] + r["meas_cloud_ms"] for r in rows if r["policy"] == policy]
            axes[0].scatter(me, pr, marker=marker, label=policy, s=18)
        hi = max(r["meas_edge_ms"] + r["meas_cloud_ms"] for r in rows) * 1.1
        grid = np.linspace(0, hi, 2)
        axes[0].plot(grid, grid, "k-", lw=0.8)
        for f in (1 - TOLERANCE, 1 + TOLERANCE):
            axes[0].plot(grid, grid * f, "k:", lw=0.8)
        axes[0].set(xlabel="measured ms (edge + cloud segment)", ylabel="cost model ms",
                    title="cost model vs measured, every (split, exit)")  # fmt: skip
        axes[0].legend()
        splits = doc["bundle"]["splits"]
        for c in SHOWN:
            axes[1].plot(
                [r["split"] for r in splits], [r["bytes"][c] for r in splits], "o-", label=c
            )
        axes[1].set(yscale="log", xlabel="split", ylabel="bytes per input",
                    title="what crosses the link")  # fmt: skip
        axes[1].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    p.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help=f"bundle to check (default: {DEFAULT_BUNDLE.relative_to(ROOT)} if built)",
    )
    p.add_argument("--repeats", type=int, default=15, help="timed runs per entry (median kept)")
    p.add_argument("--samples", type=int, default=2000, help="test samples for the top-1 check")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--resnet-size", type=int, default=224, help="ResNet-50 input size")
    p.add_argument("--skip-resnet", action="store_true", help="skip the ResNet-50 table")
    p.add_argument("--skip-bundle", action="store_true", help="skip the bundle checks")
    p.add_argument("--json", type=Path, default=HERE / "results" / "partition.json")
    p.add_argument("--png", type=Path, default=None, help="also write a plot here")
    args = p.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # tables as they come
    torch.set_num_threads(args.threads)
    bundle_path = args.bundle
    if bundle_path is None and not args.skip_bundle:
        if not (DEFAULT_BUNDLE / "manifest.json").is_file():
            p.error(f"--bundle: {DEFAULT_BUNDLE} is not built yet; pass a bundle directory")
        bundle_path = DEFAULT_BUNDLE
    t0 = time.perf_counter()
    doc: dict[str, Any] = {
        "bench": "partition",
        "command": " ".join(
            ["python", "bench/partition.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "host": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "threads": args.threads,
            "torch": torch.__version__,
            "load_avg_1m_start": round(os.getloadavg()[0], 2),
            "clock": clock_name(pick_clock()),
        },  # fmt: skip
        "settings": {"repeats": args.repeats, "samples": args.samples, "tolerance": TOLERANCE},
    }
    if not args.skip_resnet:
        doc["resnet50"] = resnet_cuts(args.resnet_size, max(3, args.repeats // 3))
        print_resnet(doc["resnet50"])
    if not args.skip_bundle:
        doc["bundle"] = bundle_section(Bundle.load(bundle_path), args.repeats, args.samples)
    doc["codec_speed"] = codec_speed(max(10, args.repeats))
    print_speed(doc["codec_speed"])
    doc["host"]["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    doc["elapsed_s"] = round(time.perf_counter() - t0, 1)
    if "bundle" in doc:
        cc = doc["bundle"]["cost_check"]
        c, f = cc["concurrent"], cc["fresh_profile"]
        q = doc["bundle"]["codec_check"]
        doc["summary"] = {
            "cost_fraction_within_15pct": c["fraction_within"],
            "cost_median_rel_error": c["median_rel_error"],
            "cost_fresh_profile_fraction_within_15pct": f["fraction_within"],
            "cost_fresh_profile_median_rel_error": f["median_rel_error"],
            "int8_max_abs_delta_points": q["max_abs_delta_points"],
            "int8_within_margin": q["within_margin"],
        }
        print(f"\nsummary: {json.dumps(doc['summary'])}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.json} ({doc['elapsed_s']:.0f} s)")
    if args.png is not None:
        plot(doc, args.png)
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
