"""Behaviour-cloning warm start of the PPO policy from a teacher (default: Edgent planning
at the newest measured throughput).

Why: the action is factorised (split, exit, tau) and its payoffs are coupled. Offloading
pays only together with a deeper exit (the input goes to the cloud *and* the cloud runs
more blocks); either change alone loses. From a uniform start, PPO first learns the safe
local action (exit 1 on the edge) and the joint move (split 0, exit 2-3) then has
probability ~1e-6 per input, so it is never tried. Cloning a teacher's choices from the
edge's own observations starts PPO where offloading is already in the policy's support,
and PPO refines from there.

The teacher is Edgent, not the oracle: Edgent's choice is a function of the observation
(estimate, load, deadline), so it can be cloned almost exactly (98-99% of states), while the
oracle's depends on the true future bandwidth and level, which the observation does not
hold; cloning it gives the oracle's most frequent choice per observation (~70% agreement),
a worse start (measured on validation episodes of the earlier stride-4 default bundle: PPO
0.813 from the oracle vs 0.819 from Edgent, timely accuracy).

The default teacher, ``edgent-last``, plans at the newest measured throughput instead of
the harmonic mean of the last four. Most of the oracle's margin over Edgent is inputs that
Edgent answered from a weak local exit while the link could have carried them, because the
harmonic mean lags a recovered link; PPO cloned from plain Edgent and refined for 1M steps
did not learn to correct that (its validation reward stayed flat). On train-file segments
of the default bundle, Edgent at the newest sample scores 0.788 timely accuracy against
Edgent's 0.783; both read only what is in the observation.

States come from the teacher's own rollouts with a share ``explore`` of random actions (so
the student also sees states off the teacher's path, as a DAgger round would); each is
labelled with the teacher's action. The value head is fitted to the discounted returns of
those rollouts, so PPO's first advantages are not noise that would undo the cloning.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from edgeml.decision.policies import make_policy
from edgeml.rl_agent.config import WarmStartConfig
from edgeml.rl_agent.env import EdgeCloudEnv
from edgeml.rl_agent.fleet import FleetEnv

log = logging.getLogger(__name__)

__all__ = ["WarmStartConfig", "collect", "warm_start"]


def collect(
    env: EdgeCloudEnv | FleetEnv, cfg: WarmStartConfig, gamma: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observations, teacher actions and discounted returns of ``cfg.steps`` steps."""
    teacher = make_policy(cfg.teacher, env.world)
    rng = np.random.default_rng(seed)
    obs_l, act_l, rew_l, end_l = [], [], [], []
    obs, _ = env.reset(seed=seed)
    teacher.reset(seed)
    for _ in range(cfg.steps):
        label = np.asarray(env.act(teacher), dtype=np.int64)
        explore = rng.random() < cfg.explore
        action = rng.integers(0, env.world.space.nvec) if explore else label
        obs_l.append(obs)
        act_l.append(label)
        obs, reward, term, trunc, _ = env.step(action)
        rew_l.append(reward)
        end_l.append(term or trunc)
        if term or trunc:
            obs, _ = env.reset()
    rewards, ends = np.asarray(rew_l), np.asarray(end_l)
    returns = np.zeros_like(rewards)
    acc = 0.0
    for k in range(len(rewards) - 1, -1, -1):
        acc = rewards[k] + gamma * acc * (not ends[k])
        returns[k] = acc
    return np.stack(obs_l), np.stack(act_l), returns


def warm_start(
    model: Any,
    env: EdgeCloudEnv | FleetEnv | Sequence[EdgeCloudEnv | FleetEnv],
    cfg: WarmStartConfig,
    seed: int,
) -> dict[str, Any]:
    """Fit ``model``'s policy to the teacher and its value head to the returns, in place.

    Several ``env`` (one per edge speed a policy is trained for) share ``cfg.steps``; the
    teacher plans with each env's own world."""
    envs = [env] if isinstance(env, EdgeCloudEnv | FleetEnv) else list(env)
    steps = replace(cfg, steps=max(cfg.steps // len(envs), 1))
    parts = [collect(e, steps, model.gamma, seed + 7 * k) for k, e in enumerate(envs)]
    obs, actions, returns = (np.concatenate(x) for x in zip(*parts, strict=True))
    policy = model.policy
    policy.set_training_mode(True)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate)
    o = torch.as_tensor(obs)
    a = torch.as_tensor(actions)
    r = torch.as_tensor(returns, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    n = len(o)
    for _ in range(cfg.epochs):
        for idx in torch.randperm(n, generator=gen).split(cfg.batch_size):
            dist = policy.get_distribution(o[idx])
            bc = -dist.log_prob(a[idx]).mean()
            value = torch.nn.functional.mse_loss(policy.predict_values(o[idx]).flatten(), r[idx])
            opt.zero_grad()
            (bc + 0.5 * value).backward()
            opt.step()
    policy.set_training_mode(False)
    with torch.no_grad():
        pred = policy.get_distribution(o).mode().numpy()
    agree = float((pred == actions).all(axis=1).mean())
    stats = {"teacher": cfg.teacher, "states": n, "agreement": round(agree, 4)}
    log.info("warm start from %s on %d states: %.1f%% agreement", cfg.teacher, n, 100 * agree)
    return stats
