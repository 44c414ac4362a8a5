"""The torch-free part of the early-exit rule: an answer, and when an exit stops (the tau
grid is the decision core's, :data:`edgeml.decision.action.TAUS`).

Shared by the torch runner (:mod:`edgeml.progressive.infer`) and the ONNX edge runner
(:mod:`edgeml.runtime.edge_net`), so both stop at exactly the same exits.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Answer", "stops_at"]


@dataclass(frozen=True)
class Answer:
    class_id: int
    confidence: float
    exit_index: int  # position in ``net.exits``
    exit_block: int


def stops_at(confidence: float, tau: float) -> bool:
    """True when an exit with this confidence ends the run under threshold ``tau``."""
    return tau < 1.0 and confidence >= tau
