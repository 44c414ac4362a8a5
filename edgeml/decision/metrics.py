"""One ``summarize(records)`` with the evaluation contract's keys, for every kind of run.

``evaluate`` (simulated steps), the edge daemon's report, ``demo``, ``emulate`` and the live
comparison all hand it per-input records with ``correct`` (bool or None: unlabelled),
``latency_ms``, ``bytes``, and optionally ``family`` and ``answered`` (False: the input got
no answer, e.g. a frame the network cannot take); an input is in time when it was answered
and ``latency_ms <= deadline_ms``, and the reward is :func:`edgeml.decision.outcome.reward`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from edgeml.decision.outcome import reward
from edgeml.decision.scenario import Scenario

__all__ = ["METRICS", "summarize"]

METRICS = (
    "timely_accuracy", "reward", "accuracy", "latency_ms_mean", "latency_ms_p95",
    "deadline_hit_rate", "bytes_sent_mean",
)  # fmt: skip


def _metrics(
    correct: np.ndarray, lat: np.ndarray, nbytes: np.ndarray, answered: np.ndarray, sc: Scenario
) -> dict[str, Any]:
    if len(lat) == 0:
        return dict.fromkeys(METRICS)
    labelled = ~np.isnan(correct)
    hit = (lat <= sc.deadline_ms) & answered
    ok = np.where(labelled, correct, 0.0) > 0.5
    late = np.where(answered, lat, np.inf)
    rewards = [reward(bool(c), float(x), sc) for c, x in zip(ok, late, strict=True)]
    lab = labelled.any()
    return {
        "timely_accuracy": float((ok & hit)[labelled].mean()) if lab else None,
        "reward": float(np.mean(np.asarray(rewards)[labelled])) if lab else None,
        "accuracy": float(ok[labelled].mean()) if lab else None,
        "latency_ms_mean": float(lat.mean()),
        "latency_ms_p95": float(np.percentile(lat, 95)),
        "deadline_hit_rate": float(hit.mean()),
        "bytes_sent_mean": float(nbytes.mean()),
    }


def summarize(
    records: Iterable[Mapping[str, Any]] | Mapping[str, np.ndarray], scenario: Scenario
) -> dict[str, Any]:
    """The contract's metrics over all records and per ``family`` (when records have one).

    ``records`` is a list of per-input dicts or a dict of per-input columns.
    """
    if isinstance(records, Mapping):
        cols = {k: list(v) for k, v in records.items()}
    else:
        rows = list(records)
        keys = {"correct", "latency_ms", "bytes", "family", "answered"}
        cols = {k: [r.get(k) for r in rows] for k in keys}
    n = len(cols.get("latency_ms", []))
    correct = np.asarray([np.nan if c is None else float(c) for c in cols["correct"]], float)
    lat = np.asarray(cols["latency_ms"], float)
    nbytes = np.asarray(cols.get("bytes", [0.0] * n), float)
    ans = cols.get("answered")
    answered = np.asarray([a is not False for a in ans] if ans else [True] * n, bool)
    out: dict[str, Any] = _metrics(correct, lat, nbytes, answered, scenario)
    fams = cols.get("family") or [None] * n
    if any(f is not None for f in fams):
        fam = np.asarray(fams, dtype=object)
        out["per_family"] = {
            f: _metrics(
                correct[fam == f], lat[fam == f], nbytes[fam == f], answered[fam == f], scenario
            )
            for f in sorted({f for f in fams if f is not None})
        }
    return out
