"""The simulated cloud against the real server: queue wait and throughput at 4, 16, 32 clients.

``bench/server_load.py`` drives a real ``edgeml serve`` (batching off and on) with N
closed-loop clients on loopback and records, per reply, the queue wait, decode and compute
time the server reports. Here the same closed loop runs on the fleet simulator's cloud
(:class:`edgeml.decision.cloud.CloudModel`: the server's batching rule, the bundle's
measured batch service times from ``profile.json``): each client sends its next request
as soon as the answer is back, and what is not the cloud's (the client and gRPC's own time
per call, measured latency minus server time, and the server's decode) is taken from the
measured run. The table compares simulated and measured requests/s and mean queue wait per
N and configuration; the target is agreement within 15%.

A second simulation (``calibrated``) scales the profile's batch times by the compute the
server measured (its mean batch compute over the profile's for a batch of the mean size), as
``edgeml fleet`` scales its simulated cloud: it checks the batching and queueing rule apart
from the service times, which on an oversubscribed host are the clients' contention.

    .venv/bin/python bench/cloud_model_check.py                          # ~4 min here
    .venv/bin/python bench/cloud_model_check.py --clients 4 --rounds 1 --duration-s 3
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import server_load  # noqa: E402

from edgeml.bundle import Bundle  # noqa: E402
from edgeml.decision.cloud import BatchingRule, CloudJob, CloudModel, CloudService  # noqa: E402

TOLERANCE = 0.15


def simulate(
    service: CloudService, rule: BatchingRule, clients: int, split: int, stop_block: int,
    outside_ms: float, duration_s: float, warmup_s: float,
) -> dict[str, float]:  # fmt: skip
    """Closed loop on the simulated cloud: requests/s and mean queue wait (ms) in the window.
    ``outside_ms``: a call's time outside the batcher (client, gRPC, decode)."""
    model = CloudModel(service, rule)
    rng = np.random.default_rng(0)
    heap = [(float(rng.uniform(0, outside_ms)), i) for i in range(clients)]
    heapq.heapify(heap)
    t0, t1 = warmup_s * 1e3, (warmup_s + duration_s) * 1e3
    done, waits = 0, []
    while True:
        t_arr = heap[0][0] if heap else np.inf
        t_model = model.next_event_ms()
        if min(t_arr, t_model) > t1 + 1e3:
            break
        if t_model <= t_arr:
            for job in model.advance(t_model):
                if t0 <= job.arrival_ms and job.done_ms <= t1:
                    done += 1
                    waits.append(job.queue_ms)
                heapq.heappush(heap, (job.done_ms + outside_ms, job.owner))
            continue
        t, i = heapq.heappop(heap)
        model.arrive(CloudJob((split, 0), t, stop_block, owner=i))
    return {"requests_per_s": done / duration_s, "queue_ms_mean": float(np.mean(waits))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=server_load.DEFAULT_BUNDLE)
    p.add_argument("--clients", default="4,16,32")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--duration-s", type=float, default=6.0)
    p.add_argument("--warmup-s", type=float, default=1.5)
    p.add_argument("--work", type=Path, default=Path("/tmp/edgeml-cloud-check"))
    p.add_argument("--out", type=Path, default=HERE / "results" / "cloud_model_check.json")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    bundle = Bundle.load(args.bundle, weights=False)
    service = CloudService.from_profile(bundle.profile)
    results: dict[str, Any] = {}
    for n in [int(v) for v in args.clients.split(",")]:
        path = args.work / f"server_load_{n}.json"
        server_load.main([
            "--bundle", str(args.bundle), "--clients", str(n), "--processes", "2",
            "--rounds", str(args.rounds), "--duration-s", str(args.duration_s),
            "--warmup-s", str(args.warmup_s), "--json", str(path), "--no-plot",
        ])  # fmt: skip
        measured = json.loads(path.read_text())
        req = measured["request"]
        stop_block = int(bundle.manifest.exits[req["exit"]])
        for name, cell in measured["results"].items():
            srv = cell["server"]
            rule = BatchingRule(srv["max_batch"], srv["max_wait_us"] / 1e3)
            server_ms = cell["queue_ms_mean"] + cell["compute_ms_mean"]
            outside = cell["latency_ms_mean"] - server_ms  # client + gRPC + decode
            sim = simulate(service, rule, n, req["split"], stop_block, outside,
                           args.duration_s, args.warmup_s)  # fmt: skip
            rows = [(stop_block, False)] * max(round(cell["batch_size_mean"]), 1)
            slow = cell["compute_ms_mean"] / service.batch_ms(req["split"], rows)
            scaled = CloudService.from_profile(bundle.profile, 1.0 / slow)
            cal = simulate(scaled, rule, n, req["split"], stop_block, outside,
                           args.duration_s, args.warmup_s)  # fmt: skip
            row = {
                "measured_requests_per_s": cell["requests_per_s"],
                "simulated_requests_per_s": round(sim["requests_per_s"], 1),
                "measured_queue_ms": cell["queue_ms_mean"],
                "simulated_queue_ms": round(sim["queue_ms_mean"], 3),
                "measured_compute_ms": cell["compute_ms_mean"],
                "measured_batch": cell["batch_size_mean"],
                "outside_ms": round(outside, 3),
                "compute_over_profile": round(slow, 3),
                "calibrated_requests_per_s": round(cal["requests_per_s"], 1),
                "calibrated_queue_ms": round(cal["queue_ms_mean"], 3),
            }
            for k in ("requests_per_s", "queue_ms"):
                m = row[f"measured_{k}"]
                for sim_kind, tag in (("simulated", ""), ("calibrated", "calibrated_")):
                    s_ = row[f"{sim_kind}_{k}"]
                    row[f"{tag}{k}_error"] = round(abs(s_ - m) / m, 3) if m else None
            results[f"{n}/{name}"] = row
    print("\n| clients / server | req/s measured | simulated | error | calibrated | error | "
          "queue ms measured | simulated | error | calibrated | error | batch | compute / "
          "profile |")  # fmt: skip
    print("|---" * 13 + "|")

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.0f}%"

    for key, r in results.items():
        print(f"| {key} | {r['measured_requests_per_s']:.1f} | {r['simulated_requests_per_s']:.1f}"
              f" | {pct(r['requests_per_s_error'])} | {r['calibrated_requests_per_s']:.1f} | "
              f"{pct(r['calibrated_requests_per_s_error'])} | {r['measured_queue_ms']:.2f} | "
              f"{r['simulated_queue_ms']:.2f} | {pct(r['queue_ms_error'])} | "
              f"{r['calibrated_queue_ms']:.2f} | {pct(r['calibrated_queue_ms_error'])} | "
              f"{r['measured_batch']} | {r['compute_over_profile']:.2f} |")  # fmt: skip

    def holds(tag: str) -> bool:
        return all((r[f"{tag}{k}"] or 0) <= TOLERANCE for r in results.values()
                   for k in ("requests_per_s_error", "queue_ms_error"))  # fmt: skip

    within, within_cal = holds(""), holds("calibrated_")
    print(
        f"within {100 * TOLERANCE:.0f}%: profile {'yes' if within else 'NO'}, "
        f"calibrated {'yes' if within_cal else 'NO'}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"tolerance": TOLERANCE, "within": within,
                                    "within_calibrated": within_cal,
                                    "profile_clock": bundle.profile.get("clock"),
                                    "results": results}, indent=2) + "\n")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
