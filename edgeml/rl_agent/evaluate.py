"""Evaluate policies in the simulator: the agent, the baselines and the oracles, side by side.

Every policy runs the very same episodes: for each trace file, ``segments`` windows at
evenly spaced start times, each reset with the same seed, so the input stream, the edge
load and the starting point in the trace are identical for all policies (only time drift
from slower actions moves them apart along the trace). Metrics pool every input of the
episodes (overall) or of one family's episodes (``per_family``); the JSON layout is the
contract of ARCHITECTURE.md.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from edgeml.decision.metrics import METRICS, summarize
from edgeml.decision.policies import BASELINES, Policy, make_policy
from edgeml.decision.scenario import Scenario
from edgeml.errors import InputError
from edgeml.rl_agent.env import EdgeCloudEnv
from edgeml.rl_agent.traces import Trace

log = logging.getLogger(__name__)

__all__ = [
    "METRICS",
    "EvalConfig",
    "Episode",
    "all_baselines",
    "check_policy",
    "episodes_for",
    "evaluate",
    "format_table",
    "make_env",
    "run_policy",
]

# Per-step fields kept for metrics and the plot.
_FIELDS = ("timely", "correct", "latency_ms", "bytes", "split", "exit", "stop_exit",
           "bandwidth_mbps", "estimate_mbps", "time_s")  # fmt: skip


@dataclass(frozen=True)
class EvalConfig:
    """Which episodes are played.

    :param segments: windows per trace file (start times evenly spaced over the file).
    :param episode_steps: inputs per window.
    :param seed: base seed; episode ``k`` of file ``f`` gets a seed derived from all three.
    """

    segments: int = 4
    episode_steps: int = 600
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("segments", "episode_steps"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise InputError(f"{name}: must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class Episode:
    trace: str
    family: str
    start_s: float
    seed: int


def episodes_for(traces: Sequence[Trace], cfg: EvalConfig) -> list[Episode]:
    """The fixed episode list: same for every policy and every run with the same config."""
    eps = []
    for f, tr in enumerate(sorted(traces, key=lambda t: t.name)):
        for k in range(cfg.segments):
            start = (k + 0.5) / cfg.segments * tr.duration_s
            eps.append(Episode(tr.name, tr.family, start, cfg.seed * 1_000_003 + f * 1009 + k))
    return eps


def check_policy(policy: Policy, env: EdgeCloudEnv) -> None:
    """An :class:`InputError` when a policy's observation does not fit ``env``'s."""
    if policy.history != env.scenario.history:
        raise InputError(
            f"policy: {getattr(policy, 'source', '') or policy.name} observes "
            f"{policy.history} throughput measurements, the scenario keeps "
            f"{env.scenario.history} (--history); train it for this scenario"
        )


def make_env(
    scenario: Scenario,
    traces: Sequence[Trace],
    cfg: EvalConfig = EvalConfig(),  # noqa: B008 - frozen dataclass
    bundle: Any = None,
) -> EdgeCloudEnv:
    """The environment :func:`evaluate` plays (built first by callers that validate input)."""
    scenario = replace(scenario, episode_steps=cfg.episode_steps)
    kwargs: dict[str, Any] = {"traces": list(traces)}
    if bundle is not None:
        kwargs["bundle"] = bundle
    return EdgeCloudEnv(scenario, **kwargs)


def run_policy(
    env: EdgeCloudEnv, policy: Policy, episodes: Sequence[Episode], progress: bool = False
) -> dict[str, np.ndarray]:
    """Play ``episodes`` and return per-step arrays (plus ``family`` and ``episode``)."""
    cols: dict[str, list[Any]] = {k: [] for k in (*_FIELDS, "reward", "family", "episode")}
    for n, ep in enumerate(tqdm(episodes, desc=policy.name, disable=not progress, leave=False)):
        policy.reset(ep.seed)
        obs, _ = env.reset(seed=ep.seed, options={"trace": ep.trace, "start_s": ep.start_s})
        done = False
        while not done:
            obs, reward, term, trunc, info = env.step(np.asarray(env.act(policy)))
            done = term or trunc
            for k in _FIELDS:
                cols[k].append(info[k])
            cols["reward"].append(reward)
            cols["family"].append(ep.family)
            cols["episode"].append(n)
    return {k: np.asarray(v) for k, v in cols.items()}


def evaluate(
    policies: Sequence[Policy],
    scenario: Scenario,
    traces: Sequence[Trace],
    cfg: EvalConfig = EvalConfig(),  # noqa: B008 - frozen dataclass
    bundle: Any = None,
    progress: bool = True,
    env: EdgeCloudEnv | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """Run every policy on the same episodes; returns the contract JSON and raw records.

    ``env`` (from :func:`make_env` with the same arguments) skips building it again.
    """
    if env is None:
        env = make_env(scenario, traces, cfg, bundle)
    scenario = env.scenario
    for pol in policies:
        check_policy(pol, env)
    episodes = episodes_for(traces, cfg)
    records: dict[str, dict[str, np.ndarray]] = {}
    results: dict[str, Any] = {}
    for pol in tqdm(policies, desc="evaluate", disable=not progress):
        rec = run_policy(env, pol, episodes, progress=progress)
        records[pol.name] = rec
        results[pol.name] = summarize(rec, scenario)
        log.info("%s: timely accuracy %.4f", pol.name, results[pol.name]["timely_accuracy"])
    sc = env.scenario.to_dict()
    sc["eval"] = {"segments": cfg.segments, "episode_steps": cfg.episode_steps, "seed": cfg.seed}
    names = sorted(t.name for t in traces)
    out = {
        "scenario": sc,
        "traces": {"files": names, "families": sorted({t.family for t in traces})},
        "policies": results,
    }
    return out, records


def all_baselines(env: EdgeCloudEnv) -> list[Policy]:
    """Every baseline and oracle of the registry, for ``env``'s world."""
    return [make_policy(name, env.world) for name in BASELINES]


def format_table(result: Mapping[str, Any], reference: str = "oracle") -> str:
    """A plain-text table: overall metrics per policy, timely accuracy per family."""
    pols = result["policies"]
    fams = result["traces"]["families"]
    ref = pols.get(reference, {}).get("timely_accuracy")
    head = f"{'policy':<14}{'timely':>8}{'/oracle':>8}{'reward':>8}{'acc':>7}{'lat ms':>8}"
    head += f"{'p95':>8}{'hit':>7}{'bytes':>9}" + "".join(f"{f[:10]:>11}" for f in fams)
    lines = [head, "-" * len(head)]
    for name, m in sorted(pols.items(), key=lambda kv: -kv[1]["timely_accuracy"]):
        rel = m["timely_accuracy"] / ref if ref else math.nan
        row = f"{name:<14}{m['timely_accuracy']:>8.4f}{rel:>8.3f}{m['reward']:>8.4f}"
        row += f"{m['accuracy']:>7.3f}{m['latency_ms_mean']:>8.1f}{m['latency_ms_p95']:>8.1f}"
        row += f"{m['deadline_hit_rate']:>7.3f}{m['bytes_sent_mean']:>9.0f}"
        row += "".join(f"{m['per_family'][f]['timely_accuracy']:>11.4f}" for f in fams)
        lines.append(row)
    return "\n".join(lines)
