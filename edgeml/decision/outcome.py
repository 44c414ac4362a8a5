"""The one outcome rule: what an action's answer is, given what happened on the link.

This is exactly what the edge daemon does, so the simulator trains on the fallback that
really runs: an offloaded input is waited for until ``deadline + grace``; if the cloud has
not answered by then (or the tensor was not even ready), the edge goes on locally from the
split to the deepest exit past it that still fits before the deadline (else the shallowest:
late either way, so as soon as possible). ``grace`` is the scenario's ``grace_ms``, or by
default as long as the cheapest local answer takes, so waiting costs at most that.

Reward per input (the headline metric plus a small latency tie-breaker)::

    1[correct and latency <= deadline] - latency_weight * min(latency / deadline, latency_cap)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeml.decision.scenario import Scenario
from edgeml.partition.cost import CostModel

__all__ = ["Outcome", "OutcomeRule", "reward"]


def reward(correct: bool, latency_ms: float, scenario: Scenario) -> float:
    """The reward of one answer (see the module docstring)."""
    d = scenario.deadline_ms
    timely = float(bool(correct) and latency_ms <= d)
    return timely - scenario.latency_weight * min(latency_ms / d, scenario.latency_cap)


@dataclass(frozen=True)
class Outcome:
    """How one input was answered: ``where`` is edge, cloud or fallback; ``exit_index`` the
    exit that answered (for a fallback, the local one) and ``bytes`` what was sent."""

    latency_ms: float
    where: str
    exit_index: int
    bytes: float


class OutcomeRule:
    """The deadline/grace/fallback rule for one cost model and scenario."""

    def __init__(self, cost: CostModel, scenario: Scenario) -> None:
        self.cost = cost
        self.deadline_ms = scenario.deadline_ms
        self.fixed_grace_ms = scenario.grace_ms

    def grace_ms(self, split: int, exit_index: int, edge_load: float) -> float:
        if self.fixed_grace_ms is not None:
            return self.fixed_grace_ms
        return self.cost.cheapest_fallback_ms(split, exit_index, edge_load)

    def give_up_ms(self, split: int, exit_index: int, edge_load: float) -> float:
        """When, after the input's start, the edge stops waiting for the cloud."""
        return self.deadline_ms + self.grace_ms(split, exit_index, edge_load)

    def fallback_exit(
        self, split: int, exit_index: int, elapsed_ms: float, edge_load: float
    ) -> int:
        """The local exit answered ``elapsed_ms`` after the input's start."""
        budget = self.deadline_ms - elapsed_ms
        return self.cost.fallback_exit(split, exit_index, budget, edge_load)

    def resolve(
        self,
        split: int,
        exit_index: int,
        stop_exit: int,
        offloaded: bool,
        pre_ms: float,
        reply_ms: float,
        nbytes: float,
        edge_load: float,
    ) -> Outcome:
        """The answer of an action whose edge part took ``pre_ms`` and whose cloud reply
        (if offloaded) arrives ``reply_ms`` after the input's start (``inf``: never)."""
        if not offloaded:
            return Outcome(pre_ms, "edge", stop_exit, 0.0)
        give_up = self.give_up_ms(split, exit_index, edge_load)
        sent = pre_ms < give_up
        if sent and reply_ms <= give_up:
            return Outcome(reply_ms, "cloud", stop_exit, nbytes)
        at = give_up if sent else pre_ms
        k = self.fallback_exit(split, exit_index, at, edge_load)
        finish = self.cost.local_finish_ms(split, k, edge_load)
        return Outcome(at + finish, "fallback", k, nbytes if sent else 0.0)

    def apply_to_table(
        self, latency: np.ndarray, offloaded: np.ndarray, edge_load: float
    ) -> np.ndarray:
        """Every ``(s, e, tau, stop)`` latency of an offloading action past its give-up time
        replaced by the fallback's latency (the oracle's view of the rule)."""
        out = latency.copy()
        n_s, n_e = latency.shape[:2]
        for s in range(n_s):
            for e in range(n_e):
                late = offloaded[s, e] & (np.nan_to_num(latency[s, e], nan=0.0) > 0)
                give_up = None
                if late.any():
                    give_up = self.give_up_ms(s, e, edge_load)
                    late &= latency[s, e] > give_up
                if give_up is None or not late.any():
                    continue
                k = self.fallback_exit(s, e, give_up, edge_load)
                out[s, e][late] = give_up + self.cost.local_finish_ms(s, k, edge_load)
        return out
