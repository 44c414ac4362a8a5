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
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from edgeml.decision.cloud import BatchingRule, CloudService
from edgeml.decision.metrics import METRICS, summarize
from edgeml.decision.policies import BASELINES, Policy, make_policy
from edgeml.decision.scenario import Scenario
from edgeml.errors import InputError
from edgeml.progressive.calibrate import Calibration
from edgeml.rl_agent.env import EdgeCloudEnv
from edgeml.rl_agent.fleet import EdgeEpisode, Fleet, fleet_rng
from edgeml.rl_agent.traces import Trace, select_families

log = logging.getLogger(__name__)

__all__ = [
    "METRICS",
    "EvalConfig",
    "Episode",
    "all_baselines",
    "check_policy",
    "episodes_for",
    "evaluate",
    "HEURISTICS",
    "fleet_metrics",
    "format_headroom",
    "headroom",
    "fleets_for",
    "run_fleet",
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
    inputs: Calibration | None = None  # inputs to replay (None: drawn), see EdgeCloudEnv.reset

    def edge(self) -> EdgeEpisode:
        """What an edge plays (:meth:`EdgeEpisode.options` resets its env)."""
        return EdgeEpisode(self.trace, self.start_s, self.seed, self.inputs)

    def repeat(self, k: int) -> Episode:
        """The ``k``-th replay of this episode (0: itself): the same trace, start and
        inputs, the episode's random draws seeded anew."""
        return replace(self, seed=self.seed + 7_919 * k) if k else self


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
        obs, _ = env.reset(seed=ep.seed, options=ep.edge().options())
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


def fleets_for(episodes: Sequence[Episode], edges: int) -> list[list[Episode]]:
    """The episodes in fleets of ``edges``: ``ceil(len / edges)`` fleets, edge ``k`` of
    fleet ``f`` playing episode ``(f * edges + k) mod len`` (a repeat gets a fresh seed),
    so every episode is played and each family keeps its share."""
    n_fleets = -(-len(episodes) // edges)
    out = []
    for f in range(n_fleets):
        fleet = []
        for k in range(edges):
            g = f * edges + k
            fleet.append(episodes[g % len(episodes)].repeat(g // len(episodes)))
        out.append(fleet)
    return out


def run_fleet(
    envs: Sequence[EdgeCloudEnv],
    service: CloudService,
    rule: BatchingRule,
    policy: Policy,
    fleets: Sequence[Sequence[Episode]],
    seed: int,
    progress: bool = False,
    planned: CloudService | None = None,
) -> dict[str, np.ndarray]:
    """Play every fleet (all its edges on ``policy``, one shared cloud) and return per-input
    arrays as :func:`run_policy` does, plus ``edge`` (a global edge id), ``cloud_wait_ms``
    (how much later than alone), ``cloud_queue_ms`` (the server's queue wait) and
    ``offloaded``. ``planned``: see :class:`~edgeml.rl_agent.fleet.Fleet`."""
    keys = (*_FIELDS, "reward", "family", "episode", "edge", "cloud_wait_ms", "cloud_queue_ms",
            "offloaded")  # fmt: skip
    cols: dict[str, list[Any]] = {k: [] for k in keys}
    for f, fleet_eps in enumerate(tqdm(fleets, desc=policy.name, disable=not progress)):
        fleet = Fleet(envs[: len(fleet_eps)], service, rule, planned)
        policy.reset(seed + f)
        eps = [ep.edge() for ep in fleet_eps]
        fleet.reset(eps, fleet_rng(seed, f))

        def record(
            i: int, reward: float, info: dict[str, Any],
            base: int = f * len(fleet_eps), eps_f: Sequence[Episode] = fleet_eps,
        ) -> None:  # fmt: skip
            for k in _FIELDS:
                cols[k].append(info[k])
            cols["reward"].append(reward)
            cols["family"].append(eps_f[i].family)
            cols["episode"].append(base + i)
            cols["edge"].append(base + i)
            for k in ("cloud_wait_ms", "cloud_queue_ms", "offloaded"):
                cols[k].append(info[k])

        fleet.play(lambda i, env: env.act(policy), record)
    return {k: np.asarray(v) for k, v in cols.items()}


def fleet_metrics(rec: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """What a fleet adds to :func:`summarize`: the worst edge's timely accuracy and the
    cloud's extra wait (mean, p95) over offloaded inputs."""
    timely = np.asarray(rec["timely"], float)
    edge = np.asarray(rec["edge"])
    per_edge = [float(timely[edge == e].mean()) for e in np.unique(edge)]
    wait = np.asarray(rec["cloud_wait_ms"], float)
    sent = wait[wait > 0]
    return {
        "edges_played": len(per_edge),
        "worst_edge_timely_accuracy": min(per_edge),
        "cloud_wait_ms_mean": float(wait.mean()) if len(wait) else 0.0,
        "cloud_wait_ms_p95": float(np.percentile(sent, 95)) if len(sent) else 0.0,
    }


def evaluate(
    policies: Sequence[Policy],
    scenario: Scenario,
    traces: Sequence[Trace],
    cfg: EvalConfig = EvalConfig(),  # noqa: B008 - frozen dataclass
    bundle: Any = None,
    progress: bool = True,
    env: EdgeCloudEnv | None = None,
    edges: int = 1,
    rule: BatchingRule | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """Run every policy on the same episodes; returns the contract JSON and raw records.

    ``env`` (from :func:`make_env` with the same arguments) skips building it again.
    ``edges > 1`` plays the episodes in fleets of that many edges on one cloud
    (:func:`fleets_for`, :class:`~edgeml.rl_agent.fleet.Fleet`, the server's batching
    ``rule``, default the server's defaults); every policy meets the same fleets.
    """
    if edges < 1:
        raise InputError(f"edges: must be >= 1, got {edges}")
    traces = select_families(traces, scenario.families)
    if env is None:
        env = make_env(scenario, traces, cfg, bundle)
    scenario = env.scenario
    for pol in policies:
        check_policy(pol, env)
    episodes = episodes_for(traces, cfg)
    rule = rule or BatchingRule()
    if edges > 1:
        service = CloudService.from_profile(env.bundle.profile, scenario.cloud_speedup)
        envs = [env] + [make_env(scenario, traces, cfg, env.bundle) for _ in range(edges - 1)]
        fleets = fleets_for(episodes, edges)
    records: dict[str, dict[str, np.ndarray]] = {}
    results: dict[str, Any] = {}
    for pol in tqdm(policies, desc="evaluate", disable=not progress):
        if edges == 1:
            rec = run_policy(env, pol, episodes, progress=progress)
            results[pol.name] = summarize(rec, scenario)
        else:
            rec = run_fleet(envs, service, rule, pol, fleets, cfg.seed, progress=progress)
            results[pol.name] = {**summarize(rec, scenario), **fleet_metrics(rec)}
        records[pol.name] = rec
        log.info("%s: timely accuracy %.4f", pol.name, results[pol.name]["timely_accuracy"])
    sc = env.scenario.to_dict()
    sc["eval"] = {"segments": cfg.segments, "episode_steps": cfg.episode_steps, "seed": cfg.seed,
                  "edges": edges}  # fmt: skip
    if edges > 1:
        sc["eval"]["batching"] = asdict(rule)
    names = sorted(t.name for t in traces)
    out = {
        "scenario": sc,
        "traces": {"files": names, "families": sorted({t.family for t in traces})},
        "policies": results,
    }
    room = headroom(results, next((p.name for p in policies if p.name not in BASELINES), "ppo"))
    if room is not None:
        out["headroom"] = room
    return out, records


#: The heuristics the headroom is measured from (the best of them on each run).
HEURISTICS = ("edgent-load", "edgent", "neurosurgeon", "spinn", "cloud_only", "edge_only")


def headroom(policies: Mapping[str, Any], learned: str = "ppo") -> dict[str, Any] | None:
    """How much the oracle leaves above the best heuristic, and the share ``learned``
    captures: ``(learned - best) / (oracle - best)``, overall and per family (timely
    accuracy; points are 100x). None unless ``learned``, ``oracle`` and a heuristic ran.

    On a shared cloud the oracle is myopic (it knows the backlog, not what the other edges
    will send), so it can fall below a heuristic: the headroom is then negative and
    ``captured`` None; ``vs_best_points`` (learned minus best) still says where it stands.
    """
    have = [h for h in HEURISTICS if h in policies]
    if learned not in policies or "oracle" not in policies or not have:
        return None

    def one(acc: Mapping[str, float]) -> dict[str, Any]:
        best = max(have, key=lambda k: acc[k])
        room = acc["oracle"] - acc[best]
        return {
            "best_heuristic": best, "best_heuristic_timely": acc[best],
            "oracle": acc["oracle"], "learned": acc[learned],
            "headroom_points": 100 * room, "vs_best_points": 100 * (acc[learned] - acc[best]),
            "captured": (acc[learned] - acc[best]) / room if room > 1e-9 else None,
        }  # fmt: skip

    names = [*have, "oracle", learned]
    out = {"learned_policy": learned, **one({k: policies[k]["timely_accuracy"] for k in names})}
    fams = policies[learned].get("per_family", {})
    out["per_family"] = {
        f: one({k: policies[k]["per_family"][f]["timely_accuracy"] for k in names}) for f in fams
    }
    return out


def format_headroom(h: Mapping[str, Any]) -> str:
    """One line per scope: best heuristic, oracle, the learned policy, headroom, captured."""
    rows = [("all", h), *sorted(h.get("per_family", {}).items())]
    learned = str(h.get("learned_policy", "ppo"))[:7]
    lines = [f"{'headroom':<12}{'best heuristic':>16}{'best':>8}{'oracle':>8}{learned:>8}"
             f"{'room pt':>9}{'ppo-best':>9}{'captured':>9}"]  # fmt: skip
    for name, r in rows:
        cap = "n/a" if r["captured"] is None else f"{100 * r['captured']:.0f}%"
        lines.append(
            f"{name:<12}{r['best_heuristic']:>16}{r['best_heuristic_timely']:>8.4f}"
            f"{r['oracle']:>8.4f}{r['learned']:>8.4f}{r['headroom_points']:>9.2f}"
            f"{r['vs_best_points']:>9.2f}{cap:>9}"
        )
    return "\n".join(lines)


def all_baselines(env: EdgeCloudEnv) -> list[Policy]:
    """Every baseline and oracle of the registry, for ``env``'s world."""
    return [make_policy(name, env.world) for name in BASELINES]


def format_table(result: Mapping[str, Any], reference: str = "oracle") -> str:
    """A plain-text table: overall metrics per policy, timely accuracy per family."""
    pols = result["policies"]
    fams = result["traces"]["families"]
    ref = pols.get(reference, {}).get("timely_accuracy")
    head = f"{'policy':<14}{'timely':>8}{'/oracle':>8}{'reward':>8}{'acc':>7}{'lat ms':>8}"
    fleet = any("worst_edge_timely_accuracy" in m for m in pols.values())
    head += f"{'p95':>8}{'hit':>7}{'bytes':>9}"
    head += f"{'worst':>7}{'wait':>7}" if fleet else ""
    head += "".join(f"{f[:10]:>11}" for f in fams)
    lines = [head, "-" * len(head)]
    for name, m in sorted(pols.items(), key=lambda kv: -kv[1]["timely_accuracy"]):
        rel = m["timely_accuracy"] / ref if ref else math.nan
        row = f"{name:<14}{m['timely_accuracy']:>8.4f}{rel:>8.3f}{m['reward']:>8.4f}"
        row += f"{m['accuracy']:>7.3f}{m['latency_ms_mean']:>8.1f}{m['latency_ms_p95']:>8.1f}"
        row += f"{m['deadline_hit_rate']:>7.3f}{m['bytes_sent_mean']:>9.0f}"
        if fleet:
            row += f"{m['worst_edge_timely_accuracy']:>7.3f}{m['cloud_wait_ms_mean']:>7.1f}"
        row += "".join(f"{m['per_family'][f]['timely_accuracy']:>11.4f}" for f in fams)
        lines.append(row)
    return "\n".join(lines)
