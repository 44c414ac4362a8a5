"""The torch-free part of the early-exit rule: the tau grid, an answer, when an exit stops.

Shared by the torch runner (:mod:`edgeml.progressive.infer`) and the ONNX edge runner
(:mod:`edgeml.runtime.edge_net`), so both stop at exactly the same exits.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TAUS", "Answer", "stops_at"]

# The tau grid of the action space; index 0 means "no early stop".
TAUS: tuple[float, ...] = (1.0, 0.99, 0.97, 0.95, 0.9, 0.8, 0.7)


@dataclass(frozen=True)
class Answer:
    class_id: int
    confidence: float
    exit_index: int  # position in ``net.exits``
    exit_block: int


def stops_at(confidence: float, tau: float) -> bool:
    """True when an exit with this confidence ends the run under threshold ``tau``."""
    return tau < 1.0 and confidence >= tau
