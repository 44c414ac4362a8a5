"""How long does one edge decision take? The exported numpy actor vs SB3's ``predict``.

The edge daemon calls the actor once per input, before any compute, so its cost adds to
every latency. Target: <= 0.1 ms median on one core. The process is pinned to one CPU and
BLAS is limited to one thread before numpy loads; observations are real ones from the
simulator (a rollout of the policy itself), timed one at a time as the edge calls it.

    .venv/bin/python bench/actor.py                    # shipped default policy
    .venv/bin/python bench/actor.py --actor P.npz --zip P.zip --bundle B
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from edgeml.assets import ASSETS, default_bundle  # noqa: E402
from edgeml.decision.actor import NumpyActor  # noqa: E402

TARGET_MS = 0.1


def pin_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"cpu {cpu}"
    return "not pinned (no sched_setaffinity)"


def observations(actor: NumpyActor, bundle: Path | None, n: int) -> np.ndarray:
    """Real observations from a rollout of the actor; random ones without a bundle."""
    if bundle is not None and (bundle / "profile.json").is_file():
        from edgeml.rl_agent.env import EdgeCloudEnv

        env = EdgeCloudEnv(bundle=str(bundle))
        obs, _ = env.reset(seed=0)
        out = []
        for _ in range(n):
            out.append(obs)
            obs, _, _, trunc, _ = env.step(actor.act(obs))
            if trunc:
                obs, _ = env.reset()
        return np.stack(out)
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, (n, actor.obs_size)).astype(np.float32)


def time_calls(fn, obs: np.ndarray, repeats: int) -> list[float]:  # type: ignore[no-untyped-def]
    for o in obs[:50]:
        fn(o)  # warm-up
    clock = time.perf_counter_ns
    out = []
    for r in range(repeats):
        o = obs[r % len(obs)]
        t0 = clock()
        fn(o)
        out.append((clock() - t0) / 1e6)
    return out


def main() -> int:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=fmt)
    ap.add_argument("--actor", type=Path, default=ASSETS / "policies" / "default.npz")
    ap.add_argument("--zip", type=Path, default=None, help="SB3 policy to compare (default: "
                    "the .zip next to the actor, if any)")  # fmt: skip
    ap.add_argument("--bundle", type=Path, default=default_bundle())
    ap.add_argument("--repeats", type=int, default=20_000)
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "actor.json")
    args = ap.parse_args()
    if not args.actor.is_file():
        ap.error(f"--actor: {args.actor} does not exist; train one with `edgeml train-agent`")
    pinned = pin_one_core()
    actor = NumpyActor.load(args.actor)
    obs = observations(actor, args.bundle, 2000)
    rows = {"numpy_actor": time_calls(actor.act, obs, args.repeats)}
    zip_path = args.zip or args.actor.with_suffix(".zip")
    if zip_path.is_file():
        import torch
        from stable_baselines3 import PPO

        torch.set_num_threads(1)
        model = PPO.load(zip_path, device="cpu")
        rows["sb3_predict"] = time_calls(
            lambda o: model.predict(o, deterministic=True), obs, max(args.repeats // 10, 500)
        )
    result = {
        "bench": "actor decision time (one observation per call)",
        "actor": str(args.actor),
        "obs_size": actor.obs_size,
        "layers": [list(w.shape) for w in actor.weights],
        "pinned": pinned,
        "cpu": platform.processor() or platform.machine(),
        "numpy": np.__version__,
        "target_ms": TARGET_MS,
        "results": {
            name: {
                "calls": len(t),
                "median_ms": round(statistics.median(t), 5),
                "p99_ms": round(float(np.percentile(t, 99)), 5),
                "mean_ms": round(statistics.fmean(t), 5),
            }
            for name, t in rows.items()
        },
    }
    result["meets_target"] = result["results"]["numpy_actor"]["median_ms"] <= TARGET_MS
    print(f"{'decider':<14}{'median ms':>11}{'p99 ms':>10}{'calls':>8}")
    for name, r in result["results"].items():
        print(f"{name:<14}{r['median_ms']:>11.4f}{r['p99_ms']:>10.4f}{r['calls']:>8}")
    print(f"target <= {TARGET_MS} ms median: {'met' if result['meets_target'] else 'NOT met'}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
