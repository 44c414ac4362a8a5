"""The PPO actor without stable-baselines3: numpy weights and a tiny forward pass.

The edge daemon only needs the deterministic action: the actor MLP's logits, split per
action dimension, argmax of each. Exporting the weights to ``.npz`` keeps SB3 and torch out
of the edge's decision path (a decision costs microseconds, see ``bench/actor.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeml.errors import InputError, load_npz

__all__ = ["NumpyActor", "export_actor"]

_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
}


@dataclass(frozen=True)
class NumpyActor:
    """``act(obs)`` = per-dimension argmax of ``W_out f(... f(W_0 obs + b_0)) + b_out``."""

    weights: tuple[np.ndarray, ...]  # hidden layers then the action head, each (out, in)
    biases: tuple[np.ndarray, ...]
    nvec: tuple[int, ...]  # sizes of the MultiDiscrete dimensions
    activation: str = "tanh"

    def __post_init__(self) -> None:
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation: {self.activation!r} not one of {sorted(_ACTIVATIONS)}")
        if len(self.weights) != len(self.biases) or not self.weights:
            raise ValueError("weights/biases: need one bias per weight matrix, at least one layer")
        if self.weights[-1].shape[0] != sum(self.nvec):
            raise ValueError(
                f"nvec: head has {self.weights[-1].shape[0]} logits, nvec sums to {sum(self.nvec)}"
            )
        # Transposed float64 copies for ``x @ W.T`` without per-call transposes.
        object.__setattr__(
            self, "_wt", tuple(np.ascontiguousarray(w.T, np.float64) for w in self.weights)
        )
        object.__setattr__(self, "_b", tuple(np.asarray(b, np.float64) for b in self.biases))
        object.__setattr__(self, "_splits", np.cumsum(self.nvec)[:-1].tolist())

    @property
    def obs_size(self) -> int:
        return self.weights[0].shape[1]

    def logits(self, obs: np.ndarray) -> np.ndarray:
        f = _ACTIVATIONS[self.activation]
        x = np.asarray(obs, dtype=np.float64)
        wt, bs = self._wt, self._b  # type: ignore[attr-defined]
        for w, b in zip(wt[:-1], bs[:-1], strict=True):
            x = f(x @ w + b)
        return x @ wt[-1] + bs[-1]

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The deterministic action for one observation (or a batch: one row per obs)."""
        z = self.logits(obs)
        parts = np.split(z, self._splits, axis=-1)  # type: ignore[attr-defined]
        return np.stack([p.argmax(axis=-1) for p in parts], axis=-1)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        arrays: dict[str, Any] = {
            "nvec": np.asarray(self.nvec),
            "activation": np.asarray(self.activation),
        }
        for k, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            arrays[f"w{k}"], arrays[f"b{k}"] = w.astype(np.float32), b.astype(np.float32)
        np.savez(path, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> NumpyActor:
        what = "an exported actor .npz from `edgeml train-agent` (arrays w0, b0, ..., nvec)"
        z = load_npz(path, what, need=("w0", "b0", "nvec"))
        n = sum(1 for k in z if k.startswith("w"))
        try:
            weights = tuple(np.asarray(z[f"w{k}"]) for k in range(n))
            biases = tuple(np.asarray(z[f"b{k}"]) for k in range(n))
            nvec = tuple(int(v) for v in np.asarray(z["nvec"]).reshape(-1))
            for k, (w, b) in enumerate(zip(weights, biases, strict=True)):
                fan_in = weights[k - 1].shape[0] if k and weights[k - 1].ndim == 2 else None
                if w.ndim != 2 or b.shape != (w.shape[0],) or fan_in not in (None, w.shape[1]):
                    raise ValueError(f"w{k} {w.shape} and b{k} {b.shape} do not chain")
            actor = cls(weights, biases, nvec, str(z.get("activation", "tanh")))
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise InputError(f"{path}: not {what}: {exc}") from None
        return actor


def export_actor(model: Any, path: str | Path | None = None) -> NumpyActor:
    """Pull the actor out of an SB3 PPO ``model`` (MlpPolicy, MultiDiscrete actions).

    Only flat Box observations and a plain MLP actor (Linear + Tanh/ReLU) are supported;
    anything else is refused rather than exported wrong.
    """
    import torch.nn as nn
    from gymnasium import spaces
    from stable_baselines3.common.torch_layers import FlattenExtractor

    policy = model.policy
    if not isinstance(policy.action_space, spaces.MultiDiscrete):
        raise ValueError("export_actor: needs a MultiDiscrete action space")
    if not isinstance(policy.pi_features_extractor, FlattenExtractor):
        raise ValueError("export_actor: needs the default FlattenExtractor")
    weights, biases, acts = [], [], set()
    for layer in policy.mlp_extractor.policy_net:
        if isinstance(layer, nn.Linear):
            weights.append(layer.weight.detach().cpu().numpy())
            biases.append(layer.bias.detach().cpu().numpy())
        elif isinstance(layer, nn.Tanh):
            acts.add("tanh")
        elif isinstance(layer, nn.ReLU):
            acts.add("relu")
        else:
            raise ValueError(f"export_actor: unsupported layer {type(layer).__name__}")
    if len(acts) > 1:
        raise ValueError(f"export_actor: mixed activations {sorted(acts)}")
    head = policy.action_net
    weights.append(head.weight.detach().cpu().numpy())
    biases.append(head.bias.detach().cpu().numpy())
    actor = NumpyActor(
        tuple(weights), tuple(biases), tuple(int(n) for n in policy.action_space.nvec),
        acts.pop() if acts else "tanh",
    )  # fmt: skip
    if path is not None:
        actor.save(path)
    return actor
