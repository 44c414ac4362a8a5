"""PPO training and warm-start settings, apart from the training code so reading them needs
no torch or stable-baselines3 (the ``edgeml`` parser builds its ``--help`` from these)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["TrainConfig", "WarmStartConfig"]


@dataclass(frozen=True)
class WarmStartConfig:
    """:param teacher: a name of :data:`.baselines.TEACHERS`; ``none`` turns the warm start off.
    :param steps: labelled states to collect.
    :param explore: share of steps that execute a random action (the label stays the teacher's).
    """

    teacher: str = "edgent-last"
    steps: int = 80_000
    explore: float = 0.2
    epochs: int = 20
    batch_size: int = 512
    learning_rate: float = 1e-3


@dataclass
class TrainConfig:
    """PPO and training-loop settings (defaults finish in well under 15 min on 2 cores).

    :param gamma: short horizon: an action's effects (a fresh throughput measurement, time
        spent) fade within a few inputs.
    :param eval_freq: environment steps (all envs together) between evaluations.
    :param eval_episodes: fixed validation episodes per evaluation.
    :param fleet_sizes: see the field (:class:`~edgeml.rl_agent.fleet.FleetEnv`).
    :param warm_start: behaviour cloning from a teacher before PPO (see :mod:`.warm_start`);
        ``WarmStartConfig(teacher="none")`` starts PPO from scratch.
    """

    timesteps: int = 1_000_000
    n_envs: int = 8
    seed: int = 0
    n_steps: int = 256
    batch_size: int = 512
    n_epochs: int = 5
    learning_rate: float = 1e-4  # small: PPO refines a cloned policy, it does not start cold
    lr_final_fraction: float = 1.0  # linear decay to this fraction of ``learning_rate``
    gamma: float = 0.9
    gae_lambda: float = 0.9
    ent_coef: float = 0.01
    clip_range: float = 0.2
    net_arch: tuple[int, ...] = (128, 128)
    eval_freq: int = 50_000
    eval_episodes: int = 12
    reward: str = "expected"  # the training env's reward mode (see ``env``: less noise)
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig)
    threads: int = 1
    progress: bool = True
    tensorboard: str | None = None  # default: <out dir>/tb
    extra: dict[str, Any] = field(default_factory=dict)  # more PPO keyword arguments
    #: Train on a shared cloud: each episode one learning edge among ``N - 1`` edges driven
    #: by a snapshot of the policy (refreshed every rollout), ``N`` drawn from these; ``()``
    #: trains one edge on a cloud of its own.
    fleet_sizes: tuple[int, ...] = ()
    #: Share of the other edges' decisions that offload everything (see ``train._Others``).
    fleet_herd: float = 0.1
    #: Train one policy for these edge slowdowns (env ``k`` runs ``edge_slowdowns[k % n]``,
    #: so a repeated value gets more of the training; the observation holds the slowdown);
    #: ``()`` trains for the scenario's alone.
    edge_slowdowns: tuple[float, ...] = ()
    #: Train with the busy regime's edge load drawn from this ``(low, high)`` instead of the
    #: scenario's ``load.busy``: a machine slower than its bundle's profile shows as a
    #: steady load above 1 (2.2x slower: 1.2), beyond the default's 1.0; ``()``: the
    #: scenario's. A policy is not warned about a busy range inside it.
    edge_load_busy: tuple[float, ...] = ()
