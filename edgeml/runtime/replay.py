"""The inputs a live edge sees, as a table the simulator replays.

The simulator draws an episode's inputs from the bundle's calibration set; a live edge reads
its ``--source``. Set side by side, the two score the same policy on different frames: at
150 inputs an edge visits about five difficulty regimes, so a live run and its simulation
can differ by points of accuracy that no timing explains. :func:`source_inputs` runs the
edge's own network on the very frames a daemon's source gives, in its order (the daemon
answers frame ``k`` of its source as its ``k``-th input, late or not), so the simulated
edge meets the same inputs with the same per-exit outcomes: what is left between live and
simulated is the timing.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np

from edgeml.bundle import Bundle
from edgeml.data.features import difficulty_feature
from edgeml.errors import InputError
from edgeml.progressive.calibrate import Calibration, confidence_bins
from edgeml.runtime.edge_net import EdgeNet, exit_table, load_edge_net
from edgeml.runtime.sources import open_source

__all__ = ["source_inputs"]


def source_inputs(
    bundle: Bundle, source: str, n: int, rate: float = 10.0, net: EdgeNet | None = None
) -> Calibration:
    """The first ``n`` inputs of ``--source`` ``source`` as the daemon reads them (the
    bundle's input shape and preprocessing), with ``net``'s outcome at every exit (default:
    the edge runner the bundle picks). A frame without a difficulty level gets the level
    the bundle's calibration would give it (the quintile of its first exit's confidence)."""
    m = bundle.manifest
    items = list(itertools.islice(open_source(source, m.input_shape, rate, loop=True,
                                              preprocessing=m.prep), n))  # fmt: skip
    if len(items) < n:
        raise InputError(f"source: {source!r} gives {len(items)} inputs, {n} are replayed")
    if any(it.label is None for it in items):
        raise InputError(f"source: {source!r} has unlabelled frames; replaying needs labels")
    x = np.concatenate([it.x for it in items]).astype(np.float32, copy=False)
    label = np.array([it.label for it in items])
    net = net or load_edge_net(bundle)
    feature = difficulty_feature(x, m.difficulty_feature)
    table = exit_table(net, x, label, np.zeros(n), feature)
    if all(it.level is not None for it in items):
        return replace(table, difficulty=np.array([it.level for it in items], dtype=np.int8))
    cal = bundle.calibration
    if cal is None:
        raise InputError(f"{bundle.path}: no calibration.npz; rebuild with `edgeml build`")
    return replace(table, difficulty=confidence_bins(table.conf[:, 0], cal.conf[:, 0]))
