"""A live fleet's simulated twin: the fleet ``edgeml fleet`` ran, played in the simulator.

The same edges (traces, offsets, seeds), phases and rounds, each edge's own frames replayed
(:mod:`~edgeml.runtime.replay`), the cloud speed and call overhead the live run measured:
what is left between the live and the simulated columns is what the simulator does not
model. ``bench/fleet_resim.py`` plays stored runs again when the simulator changes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeml.bundle import Bundle
from edgeml.decision.cloud import BatchingRule, CloudService
from edgeml.progressive.calibrate import Calibration
from edgeml.runtime.calibration import Stack

if TYPE_CHECKING:
    from edgeml.runtime.fleet_config import FleetConfig

__all__ = ["edge_inputs", "simulate"]


def simulate(
    cfg: FleetConfig, bundle: Bundle, policy: str, edges: list[tuple[Path, float, int]],
    cloud_slow: float = 1.0, stack: Stack | None = None,
    inputs: list[Calibration] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The same fleet in the simulator (:func:`edgeml.rl_agent.evaluate.run_fleet`, the one
    fleet player), its cloud ``cloud_slow`` x slower than profiled, its link's RTT and call
    overhead ``stack`` (None: the link's RTT, an ideal stack), no background load on the
    edges (paced to the profile) and, per edge, ``inputs`` to replay (:func:`edge_inputs`:
    the live edge's own frames; None: drawn from the bundle's calibration set): its fleet
    metrics over ``cfg.rounds`` rounds, as
    :func:`~edgeml.runtime.fleet_report.live_metrics` reports the live ones. Each
    round replays the same frames, traces and phases, and draws the per-call stack noise
    anew, as a live round does: a policy whose edges herd can tip either way from one
    round to the next, live and simulated."""
    from edgeml.decision.policies import make_policy
    from edgeml.decision.scenario import LoadConfig, Scenario
    from edgeml.rl_agent.env import EdgeCloudEnv
    from edgeml.rl_agent.evaluate import Episode, fleet_metrics, run_fleet
    from edgeml.rl_agent.traces import family_of, load_traces

    stack = stack or Stack(cfg.rtt_ms, 0.0)
    sc = replace(
        Scenario(), deadline_ms=cfg.deadline_ms, edge_slowdown=cfg.edge_slowdown,
        rtt_ms=stack.rtt_ms, call_overhead_ms=stack.call_overhead_ms, codec=cfg.codec,
        cloud_speedup=cfg.cloud_speedup,
        input_rate=cfg.rate, episode_steps=cfg.inputs,
        load=LoadConfig(busy_share=0.0, idle=(0.0, 0.0), jitter=0.0),
    )  # fmt: skip
    traces = load_traces(sorted({str(t) for t, _, _ in edges}))
    envs = [EdgeCloudEnv(sc, bundle=bundle, traces=traces) for _ in edges]
    planned = CloudService.from_profile(bundle.profile, sc.cloud_speedup)
    service = CloudService.from_profile(bundle.profile, sc.cloud_speedup / cloud_slow)
    rule = BatchingRule(cfg.max_batch, cfg.max_wait_us / 1000.0)
    pol = make_policy(policy, envs[0].world, bundle_sha256=bundle.weights_sha256)
    replay: list[Calibration | None] = list(inputs) if inputs else [None] * len(edges)
    recs = []
    for r in range(cfg.rounds):  # every round is fleet 0 of cfg.seed: the live phases
        eps = [Episode(t.name, family_of(t.name), off, seed, x).repeat(r)
               for (t, off, seed), x in zip(edges, replay, strict=True)]  # fmt: skip
        recs.append(run_fleet(envs, service, rule, pol, [eps], cfg.seed, planned=planned))
    rec = {k: np.concatenate([one[k] for one in recs]) for k in recs[0]}
    sent = rec["offloaded"].astype(bool)
    return {
        "inputs": len(rec["timely"]),
        "timely_accuracy": float(np.mean(rec["timely"])),
        "worst_edge_timely_accuracy": fleet_metrics(rec)["worst_edge_timely_accuracy"],
        "latency_ms_mean": float(np.mean(rec["latency_ms"])),
        "cloud_queue_ms_mean": float(np.mean(rec["cloud_queue_ms"][sent])) if sent.any() else 0.0,
        "offload_rate": float(np.mean(sent)),
    }


def edge_inputs(
    cfg: FleetConfig, bundle: Bundle, source: str, edges: list[tuple[Path, float, int]]
) -> list[Calibration]:
    """Each live edge's ``cfg.inputs`` frames (its ``--source`` at its seed) with the edge
    runner's outcome at every exit, for its simulation to replay."""
    from edgeml.runtime.edge_net import load_edge_net
    from edgeml.runtime.replay import source_inputs

    net = load_edge_net(bundle)
    return [source_inputs(bundle, f"{source}:{seed}", cfg.inputs, cfg.rate, net)
            for _, _, seed in edges]  # fmt: skip
