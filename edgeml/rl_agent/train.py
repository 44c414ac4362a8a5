"""Train the PPO agent offline in the simulator and export it for the edge.

Vectorised envs (``DummyVecEnv``: the env steps in ~20 us, so subprocesses would only add
IPC), fixed seeds, TensorBoard logs, and an :class:`EvalCallback` that scores the policy on
a fixed set of validation episodes (train-split traces, fixed seeds, so scores are
comparable between rounds) and keeps the best model. The output is the policy ``.zip`` and
the exported numpy actor (``.npz`` next to it, see :mod:`.actor`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from edgeml.bundle import Bundle
from edgeml.decision.action import Action
from edgeml.decision.actor import NumpyActor, export_actor
from edgeml.decision.cloud import CloudService
from edgeml.decision.policies import ActorPolicy, Policy, World, make_policy
from edgeml.decision.scenario import Scenario
from edgeml.errors import InputError
from edgeml.rl_agent.config import TrainConfig, WarmStartConfig
from edgeml.rl_agent.env import EdgeCloudEnv
from edgeml.rl_agent.fleet import FleetEnv
from edgeml.rl_agent.traces import Trace, load_traces, select_families
from edgeml.rl_agent.warm_start import warm_start

log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TrainResult", "train_agent"]


@dataclass
class TrainResult:
    policy: Path
    actor: Path
    best: Path | None
    seconds: float
    timesteps: int


class _FixedEpisodes(gym.Wrapper):
    """Replays a fixed list of ``(seed, options)`` episodes, restarted by :meth:`rewind`."""

    def __init__(self, env: gym.Env, episodes: Sequence[tuple[int, dict[str, Any]]]) -> None:
        super().__init__(env)
        self.episodes = list(episodes)
        self._next = 0

    def rewind(self) -> None:
        self._next = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        ep_seed, ep_opts = self.episodes[self._next % len(self.episodes)]
        self._next += 1
        return self.env.reset(seed=ep_seed, options=ep_opts)


class _Others:
    """The policy of a training fleet's other edges: the teacher until PPO starts, then a
    snapshot of the learner taken at the start of every rollout (parameter sharing).

    A share ``herd`` of their decisions offloads everything (``cloud_only``) whatever the
    cloud's state: a fleet of planners that back off in time rarely congests, so without
    it the learner seldom sees a queued cloud and never learns to leave one.

    Heuristics plan with a world (its edge speed), so ``first`` and ``herd`` are per edge
    slowdown, picked by the view's; the snapshot reads the slowdown from the observation.
    """

    def __init__(
        self, first: dict[float, Policy] | None, herd: dict[float, Policy], share: float,
        seed: int,
    ) -> None:  # fmt: skip
        self.first, self.herd, self.share = first, herd, share
        self.policy: Policy | None = None
        self._rng = np.random.default_rng(seed)

    def act(self, view: Any) -> Action:
        if self.share > 0 and self._rng.random() < self.share:
            return self.herd[view.edge_slowdown].act(view)
        if self.policy is not None:
            return self.policy.act(view)
        if self.first is None:  # no teacher and no rollout yet
            raise RuntimeError("fleet others: no policy yet")
        return self.first[view.edge_slowdown].act(view)

    def follow(self, model: Any) -> Any:
        from stable_baselines3.common.callbacks import BaseCallback

        holder = self

        class _Snapshot(BaseCallback):
            def _on_rollout_start(self) -> None:
                holder.policy = ActorPolicy(export_actor(model))

            def _on_step(self) -> bool:
                return True

        return _Snapshot()


def _returns(env: gym.Env) -> Callable[[], gym.Env]:
    """A VecEnv factory for an env that already exists."""
    return lambda: env


def _schedule(cfg: TrainConfig) -> Any:
    """Constant, or linear from ``learning_rate`` to ``lr_final_fraction`` of it."""
    if cfg.lr_final_fraction == 1.0:
        return cfg.learning_rate
    lr, frac = cfg.learning_rate, cfg.lr_final_fraction
    return lambda remaining: lr * (frac + (1.0 - frac) * remaining)


def _progress_callback(total: int) -> Any:
    """A tqdm bar over environment steps (SB3's own bar needs ``rich``, not a dependency)."""
    from stable_baselines3.common.callbacks import BaseCallback
    from tqdm.auto import tqdm

    class _Progress(BaseCallback):
        def _on_training_start(self) -> None:
            self.bar = tqdm(total=total, desc="train-agent", unit="step", smoothing=0.05)

        def _on_step(self) -> bool:
            self.bar.update(self.training_env.num_envs)
            return True

        def _on_training_end(self) -> None:
            self.bar.close()

    return _Progress()


def _eval_episodes(traces: Sequence[Trace], n: int, seed: int) -> list[tuple[int, dict[str, Any]]]:
    """``n`` validation episodes spread over the traces (round-robin, evenly spaced starts)."""
    ordered = sorted(traces, key=lambda t: (t.family, t.name))
    rng = np.random.default_rng(seed + 7919)
    order = rng.permutation(len(ordered))
    eps = []
    for k in range(n):
        tr = ordered[int(order[k % len(ordered)])]
        start = float(rng.uniform(0, tr.duration_s))
        eps.append((seed + 100_000 + k, {"trace": tr.name, "start_s": start}))
    return eps


def _with_options(
    cfg: TrainConfig, scenario: Scenario, options: dict[str, Any]
) -> tuple[TrainConfig, Scenario]:
    """``options`` split into :class:`TrainConfig` and :class:`Scenario` fields (a name in
    neither is an error that lists both)."""
    train_names = {f.name for f in fields(TrainConfig)}
    scenario_names = {f.name for f in fields(Scenario)}
    unknown = sorted(set(options) - train_names - scenario_names)
    if unknown:
        raise InputError(
            f"train_agent: unknown options {unknown}; allowed: TrainConfig fields "
            f"{sorted(train_names)} and Scenario fields {sorted(scenario_names)}"
        )
    cfg = replace(cfg, **{k: v for k, v in options.items() if k in train_names})
    scenario = replace(scenario, **{k: v for k, v in options.items() if k in scenario_names})
    return cfg, scenario


def train_agent(
    bundle: Bundle | str | Path,
    traces: Sequence[Trace] | str | Path | None = None,
    out: str | Path | None = None,
    cfg: TrainConfig | None = None,
    scenario: Scenario | None = None,
    trace_split: str = "train",
    **options: Any,
) -> TrainResult:
    """Train PPO on ``traces`` and write ``out`` (.zip), its actor (.npz) and a best model.

    As a user calls it: ``edgeml.train_agent(bundle, "traces/", timesteps=200_000)``.

    :param bundle: a loaded :class:`~edgeml.bundle.Bundle` or its directory (profiled and
        calibrated: ``edgeml.build`` does both).
    :param traces: :class:`Trace` objects (used as given: pass the training split), or a
        CSV file or directory (default: the shipped sample), of which the ``trace_split``
        files are loaded. The validation episodes for best-model selection are drawn from
        them too, so the test split stays unseen.
    :param trace_split: ``train`` (default), ``test`` or ``all``, for a path only.
    :param out: the policy ``.zip`` (default ``<bundle>/policy.zip``).
    :param options: fields of :class:`TrainConfig` (``timesteps``, ``fleet_sizes`` ...) and
        of :class:`~edgeml.decision.scenario.Scenario` (``deadline_ms``, ``edge_slowdown``
        ...), applied over ``cfg`` and ``scenario``.
    """
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import EvalCallback
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.utils import set_random_seed
    from stable_baselines3.common.vec_env import DummyVecEnv

    cfg, scenario = _with_options(cfg or TrainConfig(), scenario or Scenario(), options)
    if isinstance(cfg.warm_start, dict):
        cfg = replace(cfg, warm_start=WarmStartConfig(**cfg.warm_start))
    scenario = replace(scenario, reward=cfg.reward)
    if not isinstance(bundle, Bundle):
        bundle = Bundle.load(bundle)
    out = Path(out) if out is not None else Path(bundle.path) / "policy.zip"
    if out.suffix != ".zip":
        raise InputError(f"out: the policy file must end in .zip, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if traces is None or isinstance(traces, str | Path):
        traces = load_traces(traces, split=trace_split)
    traces = select_families(traces, scenario.families)
    torch.set_num_threads(cfg.threads)
    set_random_seed(cfg.seed)

    slowdowns = tuple(float(v) for v in cfg.edge_slowdowns) or (scenario.edge_slowdown,)
    if any(v < 1.0 for v in slowdowns):
        raise InputError(f"edge_slowdowns: each must be >= 1, got {list(slowdowns)}")
    load = scenario.load
    if cfg.edge_load_busy:
        if len(cfg.edge_load_busy) != 2:
            raise InputError(f"edge_load_busy: (low, high), got {list(cfg.edge_load_busy)}")
        low, high = (float(v) for v in cfg.edge_load_busy)
        try:
            load = replace(load, busy=(low, high))
        except ValueError as exc:
            raise InputError(f"edge_load_busy: {exc}") from None
    scen = {v: replace(scenario, edge_slowdown=v, load=load) for v in slowdowns}
    worlds = {v: World.from_bundle(bundle, sc) for v, sc in scen.items()}
    teacher = cfg.warm_start.teacher
    first = {v: make_policy(teacher, w) for v, w in worlds.items()} if teacher != "none" else None
    herd = {v: make_policy("cloud_only", w) for v, w in worlds.items()}
    others = _Others(first, herd, cfg.fleet_herd, cfg.seed + 20_000)

    def one_env(slowdown: float) -> EdgeCloudEnv | FleetEnv:
        """The training env: one edge, or one learning edge in a fleet (of its speed)."""
        sc = scen[slowdown]
        if not cfg.fleet_sizes:
            return EdgeCloudEnv(sc, bundle=bundle, traces=traces)
        service = CloudService.from_profile(bundle.profile, sc.cloud_speedup)
        return FleetEnv(
            lambda: EdgeCloudEnv(sc, bundle=bundle, traces=traces),
            service, cfg.fleet_sizes, others.act,
        )  # fmt: skip

    def make(rank: int) -> Any:
        def _init() -> gym.Env:
            env = Monitor(one_env(slowdowns[rank % len(slowdowns)]))
            env.reset(seed=cfg.seed + rank)
            return env

        return _init

    venv = DummyVecEnv([make(r) for r in range(cfg.n_envs)])
    venv.seed(cfg.seed)
    # best-model selection on the same fixed episodes at every slowdown trained for
    episodes = _eval_episodes(traces, cfg.eval_episodes, cfg.seed)
    eval_wrapped = [_FixedEpisodes(Monitor(one_env(v)), episodes) for v in scen]
    eval_env = DummyVecEnv([_returns(w) for w in eval_wrapped])
    stem = out.with_suffix("")
    tb_dir = cfg.tensorboard or str(stem) + "_tb"
    best_dir = Path(str(stem) + "_best")

    class _RewindingEval(EvalCallback):
        def _on_step(self) -> bool:
            if self.eval_freq > 0 and self.n_calls % self.eval_freq == 0:
                for w in eval_wrapped:
                    w.rewind()
            return super()._on_step()

    callback = _RewindingEval(
        eval_env,
        n_eval_episodes=cfg.eval_episodes * len(scen),
        eval_freq=max(cfg.eval_freq // cfg.n_envs, 1),
        best_model_save_path=str(best_dir),
        log_path=str(best_dir),
        deterministic=True,
        verbose=0,
    )
    model = PPO(
        "MlpPolicy", venv, n_steps=cfg.n_steps, batch_size=cfg.batch_size,
        n_epochs=cfg.n_epochs, learning_rate=_schedule(cfg), gamma=cfg.gamma,
        gae_lambda=cfg.gae_lambda, ent_coef=cfg.ent_coef, clip_range=cfg.clip_range,
        policy_kwargs={"net_arch": list(cfg.net_arch)}, tensorboard_log=tb_dir,
        seed=cfg.seed, device="cpu", verbose=0, **cfg.extra,
    )  # fmt: skip
    t0 = time.perf_counter()
    warm: dict[str, Any] = {}
    if cfg.warm_start.teacher != "none":
        teacher_envs = [one_env(v) for v in slowdowns]
        warm = warm_start(model, teacher_envs, cfg.warm_start, cfg.seed + 10_000)
    callbacks: list[Any] = [callback]
    if cfg.fleet_sizes:
        callbacks.append(others.follow(model))
    if cfg.progress:
        per_rollout = cfg.n_steps * cfg.n_envs  # SB3 always finishes the rollout
        callbacks.append(_progress_callback(-(-cfg.timesteps // per_rollout) * per_rollout))
    model.learn(cfg.timesteps, callback=callbacks, tb_log_name="ppo")
    seconds = time.perf_counter() - t0
    best_zip = best_dir / "best_model.zip"
    final = model
    if best_zip.is_file() and callback.best_mean_reward > -np.inf:
        final = PPO.load(best_zip, device="cpu")
        log.info("best validation reward %.4f", callback.best_mean_reward)
    final.save(out)
    actor_path = out.with_suffix(".npz")
    export_actor(final, actor_path)
    meta = {
        "train": {k: v for k, v in asdict(cfg).items()},
        "scenario": venv.get_attr("scenario")[0].to_dict(),  # env 0's: edge_slowdowns[0]
        "traces": sorted(t.name for t in traces),
        "bundle_sha256": bundle.weights_sha256,
        "seconds": round(seconds, 1),
        "best_validation_reward": float(callback.best_mean_reward),
        "warm_start": warm,
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    log.info("trained %d steps in %.0f s -> %s", cfg.timesteps, seconds, out)
    return TrainResult(
        out, actor_path, best_zip if best_zip.is_file() else None, seconds, cfg.timesteps
    )


def check_actor(model: Any, actor: NumpyActor, obs: np.ndarray) -> bool:
    """True when the numpy actor picks SB3's deterministic action on every row of ``obs``."""
    sb3, _ = model.predict(obs, deterministic=True)
    return bool(np.array_equal(np.asarray(sb3), actor.act(obs)))
