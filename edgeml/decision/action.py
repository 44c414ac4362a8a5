"""The action: ``(split, exit, tau)`` as one type, and the space of them for a bundle.

Semantics (ARCHITECTURE.md, "Action semantics"): blocks ``<= split`` run on the edge, the
rest in the cloud; exits up to ``exit`` are evaluated and the run stops at the first whose
confidence is ``>= tau`` (``tau = 1``: no early stop); a run that stops at or before block
``split`` sends nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = ["TAUS", "Action", "ActionSpace"]

#: The threshold grid; index 0 (1.0) means "no early stop".
TAUS: tuple[float, ...] = (1.0, 0.99, 0.97, 0.95, 0.9, 0.8, 0.7)


class Action(NamedTuple):
    """One decision; ``tau_index`` indexes :data:`TAUS`."""

    split: int
    exit: int
    tau_index: int

    @property
    def tau(self) -> float:
        return TAUS[self.tau_index]

    @classmethod
    def of(cls, a: object) -> Action:
        """From any ``(s, e, t)`` sequence (an SB3 / numpy action included)."""
        s, e, t = (int(v) for v in a)  # type: ignore[attr-defined]
        return cls(s, e, t)


@dataclass(frozen=True)
class ActionSpace:
    """All actions of a bundle with ``n_splits = blocks + 1`` and ``n_exits`` exits."""

    n_splits: int
    n_exits: int

    @property
    def nvec(self) -> tuple[int, int, int]:
        return (self.n_splits, self.n_exits, len(TAUS))

    def contains(self, a: Action) -> bool:
        return (
            0 <= a.split < self.n_splits
            and 0 <= a.exit < self.n_exits
            and (0 <= a.tau_index < len(TAUS))
        )

    def sample(self, rng: np.random.Generator) -> Action:
        return Action.of(rng.integers(0, self.nvec))

    def parse_fixed(self, spec: str) -> Action:
        """``fixed:S,E,TAU`` (TAU a value of the grid) -> the action."""
        try:
            s, e, tau = spec.removeprefix("fixed:").split(",")
            a = Action(int(s), int(e), TAUS.index(float(tau)))
        except ValueError:
            raise ValueError(
                f"policy: {spec!r} must be fixed:SPLIT,EXIT,TAU with TAU one of {list(TAUS)}"
            ) from None
        if not self.contains(a):
            raise ValueError(
                f"policy: {spec!r} needs split in 0..{self.n_splits - 1}, "
                f"exit in 0..{self.n_exits - 1}"
            )
        return a
