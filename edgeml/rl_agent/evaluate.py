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
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from edgeml.errors import InputError
from edgeml.rl_agent.actor import NumpyActor
from edgeml.rl_agent.baselines import BASELINES, Policy, make_baseline
from edgeml.rl_agent.env import EdgeCloudEnv, Scenario
from edgeml.rl_agent.traces import Trace

log = logging.getLogger(__name__)

__all__ = [
    "METRICS",
    "ActorPolicy",
    "EvalConfig",
    "Episode",
    "POLICY_KINDS",
    "SB3Policy",
    "check_policy",
    "episodes_for",
    "evaluate",
    "format_table",
    "load_policy",
    "make_env",
    "run_policy",
    "summarize",
]

METRICS = (
    "timely_accuracy", "reward", "accuracy", "latency_ms_mean", "latency_ms_p95",
    "deadline_hit_rate", "bytes_sent_mean",
)  # fmt: skip
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


class SB3Policy:
    """A stable-baselines3 model, deterministic."""

    name = "ppo"

    def __init__(self, model: Any, name: str = "ppo", source: str = "") -> None:
        self.model, self.name, self.source = model, name, source

    def reset(self, seed: int | None = None) -> None:
        pass

    def act(self, obs: np.ndarray, env: EdgeCloudEnv) -> np.ndarray:
        return self.model.predict(obs, deterministic=True)[0]


class ActorPolicy:
    """The exported numpy actor (what the edge daemon runs)."""

    name = "ppo"

    def __init__(self, actor: NumpyActor, name: str = "ppo", source: str = "") -> None:
        self.actor, self.name, self.source = actor, name, source

    def reset(self, seed: int | None = None) -> None:
        pass

    def act(self, obs: np.ndarray, env: EdgeCloudEnv) -> np.ndarray:
        return self.actor.act(obs)


POLICY_KINDS = "a policy .zip from `edgeml train-agent` or its exported actor .npz"


def load_policy(path: str | Path, name: str = "ppo") -> Policy:
    """A policy from an SB3 ``.zip`` or an exported actor ``.npz``.

    (The baselines and the oracles always run next to it, so no baseline names here.)
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "no such file"
        raise InputError(f"policy: {path}: {what}; expected {POLICY_KINDS}")
    if path.suffix == ".npz":
        return ActorPolicy(NumpyActor.load(path), name, source=str(path))
    if path.suffix != ".zip":
        raise InputError(f"policy: {path}: unknown kind {path.suffix!r}; expected {POLICY_KINDS}")
    import zipfile

    from stable_baselines3 import PPO

    try:
        model = PPO.load(path, device="cpu")
    except (ValueError, KeyError, EOFError, AssertionError, zipfile.BadZipFile) as exc:
        reason = "not a zip file" if "zip-file" in str(exc) else f"not readable ({exc!r})"
        raise InputError(f"policy: {path}: {reason}; expected {POLICY_KINDS}") from None
    return SB3Policy(model, name, source=str(path))


def check_policy(policy: Policy, env: EdgeCloudEnv) -> None:
    """An :class:`InputError` when a loaded policy does not fit ``env``'s spaces."""
    if isinstance(policy, ActorPolicy):
        nvec, obs = tuple(policy.actor.nvec), (policy.actor.obs_size,)
    elif isinstance(policy, SB3Policy):
        space = policy.model.action_space
        nvec = tuple(int(n) for n in getattr(space, "nvec", ()))
        obs = tuple(policy.model.observation_space.shape or ())
    else:
        return
    want_nvec = tuple(int(n) for n in env.action_space.nvec)
    want_obs = tuple(env.observation_space.shape or ())
    if nvec != want_nvec or obs != want_obs:
        raise InputError(
            f"policy: {policy.source or policy.name} acts on (splits, exits, taus) = {nvec} "
            f"from {obs} observations; this bundle and scenario need {want_nvec} from "
            f"{want_obs}; train it on this bundle"
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
            obs, reward, term, trunc, info = env.step(policy.act(obs, env))
            done = term or trunc
            for k in _FIELDS:
                cols[k].append(info[k])
            cols["reward"].append(reward)
            cols["family"].append(ep.family)
            cols["episode"].append(n)
    return {k: np.asarray(v) for k, v in cols.items()}


def summarize(rec: Mapping[str, np.ndarray], deadline_ms: float) -> dict[str, Any]:
    """The contract's metrics overall and per family."""

    def metrics(mask: np.ndarray) -> dict[str, float]:
        lat = rec["latency_ms"][mask]
        return {
            "timely_accuracy": float(rec["timely"][mask].mean()),
            "reward": float(rec["reward"][mask].mean()),
            "accuracy": float(rec["correct"][mask].mean()),
            "latency_ms_mean": float(lat.mean()),
            "latency_ms_p95": float(np.percentile(lat, 95)),
            "deadline_hit_rate": float((lat <= deadline_ms).mean()),
            "bytes_sent_mean": float(rec["bytes"][mask].mean()),
        }

    out: dict[str, Any] = metrics(np.ones(len(rec["reward"]), dtype=bool))
    out["per_family"] = {
        fam: metrics(rec["family"] == fam) for fam in sorted(set(rec["family"].tolist()))
    }
    return out


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
        results[pol.name] = summarize(rec, scenario.deadline_ms)
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


def all_baselines() -> list[Policy]:
    return [make_baseline(name) for name in BASELINES]


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
