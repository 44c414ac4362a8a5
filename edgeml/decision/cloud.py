"""The shared cloud in the simulator: the server's batching rule, replayed on simulated time.

:class:`CloudModel` is :class:`edgeml.transport.batching.Batcher` as a discrete-event model:
one worker takes the oldest waiting request's ``(split, exit)``, waits until ``max_batch``
requests with that key are queued or ``max_wait`` has passed since the oldest arrived, and
runs them as one batch; a request that finds the server idle, with no request having arrived
while another was queued or running in the last second, runs at once; a request whose
deadline passed while it waited is dropped unrun. Same arrival sequence, same batches
(``tests/test_cloud_model.py`` holds it against the real batcher).

How long a batch runs comes from :class:`CloudService`, the cloud-side profile that
``edgeml profile`` measures (:mod:`edgeml.partition.cloud_profile`): each block and exit head
at each batch size, interpolated in between. Rows that stop at an early exit leave the
batch, as in :func:`~edgeml.progressive.infer.run_segment`, so later blocks run smaller.
A request alone takes what the cost model says (the profile's per-block and per-head times,
which the single-edge simulator charges); the batch table gives how each block's time grows
with the batch. The two were measured in separate passes and disagree at batch 1 (the
shipped profile's table reads 1.3-2.4x the cost model per block), so the table is scaled
per block to the cost model: one cloud time for a lone request everywhere.

Times are milliseconds on the caller's clock. The caller drives the model: :meth:`arrive`
at a request's arrival, :meth:`advance` up to a time (which returns the jobs finished by
then), :meth:`next_event_ms` for when something happens next.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeml.errors import InputError

__all__ = ["BatchingRule", "CloudJob", "CloudModel", "CloudReply", "CloudService"]

COMPANY_WINDOW_MS = 1000.0  # the batcher's _COMPANY_WINDOW_NS


@dataclass(frozen=True)
class BatchingRule:
    """The server's batching settings (``edgeml serve --max-batch --max-wait-us``)."""

    max_batch: int = 16
    max_wait_ms: float = 1.0
    wait_alone: bool = False

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise InputError(f"max_batch: must be >= 1, got {self.max_batch}")
        if self.max_wait_ms < 0:
            raise InputError(f"max_wait_ms: must be >= 0, got {self.max_wait_ms}")

    @property
    def wait_ms(self) -> float:
        return 0.0 if self.max_batch == 1 else self.max_wait_ms


def _ratio(alone: Any, table_alone: list[float]) -> np.ndarray:
    """Per column, the cost model's alone time over the table's (1 where the table has 0)."""
    a, t = np.asarray(alone, dtype=np.float64), np.asarray(table_alone, dtype=np.float64)
    return np.where(t > 0, a / np.where(t > 0, t, 1.0), 1.0)


@dataclass(frozen=True)
class CloudService:
    """How long the cloud computes a batch: per-block and per-head ms at measured sizes.

    :param sizes: the measured batch sizes, ascending.
    :param blocks_ms: ``(len(sizes), blocks)`` ms of each block per batch size.
    :param heads_ms: ``(len(sizes), exits)`` ms of each exit head (softmax/max included).
    :param exits: block index of each exit.
    """

    sizes: np.ndarray
    blocks_ms: np.ndarray
    heads_ms: np.ndarray
    exits: tuple[int, ...]

    @classmethod
    def from_profile(
        cls, profile: dict[str, Any] | None, cloud_speedup: float = 1.0
    ) -> CloudService:
        cb = (profile or {}).get("cloud_batch")
        if cb is None:
            raise InputError(
                "profile: no cloud_batch timings (a shared cloud needs them); "
                "re-run `edgeml profile BUNDLE`"
            )
        prof = profile or {}
        raw = cls(
            np.asarray(cb["batch_sizes"], dtype=np.float64),
            np.asarray(cb["blocks_ms"], dtype=np.float64),
            np.asarray(cb["heads_ms"], dtype=np.float64),
            tuple(int(b) for b in prof["exits"]),
        )
        blocks, heads = raw.blocks_ms, raw.heads_ms
        if "blocks_ms" in prof and "heads_ms" in prof:  # anchored to the cost model's batch 1
            alone_h = [float(prof["heads_ms"][str(e)]) for e in raw.exits]
            blocks = blocks * _ratio(prof["blocks_ms"], raw._alone(blocks))
            heads = heads * _ratio(alone_h, raw._alone(heads))
        return cls(raw.sizes, blocks / cloud_speedup, heads / cloud_speedup, raw.exits)

    def _alone(self, table: np.ndarray) -> list[float]:
        """Every column of ``table`` at batch 1."""
        return [self._at(table, col, 1) for col in range(table.shape[1])]

    def _at(self, table: np.ndarray, col: int, n: int) -> float:
        """``table[:, col]`` at batch ``n``: linear between measured sizes, beyond the
        largest at its per-row cost."""
        sizes = self.sizes
        if n >= sizes[-1]:
            return float(table[-1, col] * n / sizes[-1])
        return float(np.interp(n, sizes, table[:, col]))

    def batch_ms(self, split: int, rows: list[tuple[int, bool]]) -> float:
        """A batch from ``split`` whose rows stop at blocks ``rows[i][0]`` (each with
        ``rows[i][1]``: may stop early, i.e. tau < 1, so every exit head on its way runs)."""
        deepest = max(stop for stop, _ in rows)
        total = 0.0
        for k in range(split + 1, deepest + 1):
            live = [(stop, early) for stop, early in rows if stop >= k]
            total += self._at(self.blocks_ms, k - 1, len(live))
            if k in self.exits and any(stop == k or early for stop, early in live):
                total += self._at(self.heads_ms, self.exits.index(k), len(live))
        return total

    def alone_ms(self, split: int, stop: int, early: bool) -> float:
        return self.batch_ms(split, [(stop, early)])


@dataclass(frozen=True)
class CloudReply:
    """What a shared cloud did to one request: its queue wait, how much later than alone it
    answered (``extra_ms``: wait plus the batch's longer run), the requests it had waiting
    or running (the reply's load fields) and whether it dropped it unrun (``expired``)."""

    queue_ms: float
    extra_ms: float
    load: int
    expired: bool = False


@dataclass(eq=False)
class CloudJob:
    """One request in the cloud. ``stop_block``: the block its answer comes from;
    ``early``: its tau < 1 (the exit heads on the way run for it)."""

    key: tuple[int, int]
    arrival_ms: float
    stop_block: int
    early: bool = False
    expires_ms: float = math.inf
    owner: Any = None
    start_ms: float = math.nan
    done_ms: float = math.nan
    batch_size: int = 0
    expired: bool = False
    queued_at_done: int = 0  # requests waiting when its batch finished (the reply's load)

    @property
    def queue_ms(self) -> float:
        return self.start_ms - self.arrival_ms


@dataclass
class CloudModel:
    """The batching server on simulated time (see the module docstring)."""

    service: CloudService
    rule: BatchingRule = field(default_factory=BatchingRule)

    def __post_init__(self) -> None:
        self._queues: dict[tuple[int, int], deque[CloudJob]] = {}
        self._running: list[CloudJob] = []
        self._end_ms = math.inf
        self._wake_ms = math.inf
        self._company_ms = -math.inf
        self._now = -math.inf
        self._finished: list[CloudJob] = []
        self.batches: list[list[CloudJob]] = []  # every batch run, in order (for tests)
        self.keep_batches = False

    @property
    def pending(self) -> int:
        """Requests waiting for a batch."""
        return sum(len(q) for q in self._queues.values())

    @property
    def load(self) -> int:
        """Requests waiting or running."""
        return self.pending + len(self._running)

    def next_event_ms(self) -> float:
        """When the worker next acts on its own (a batch ends, a wait runs out)."""
        return self._end_ms if self._running else self._wake_ms

    def arrive(self, job: CloudJob) -> None:
        """``job`` arrives at ``job.arrival_ms`` (not before the last time the model saw)."""
        t = job.arrival_ms
        if t < self._now - 1e-9:
            raise ValueError(f"arrival at {t} ms is before the model's clock {self._now} ms")
        self._run_until(t)
        if self._running or self._queues:
            self._company_ms = t
        self._queues.setdefault(job.key, deque()).append(job)
        self._try_start(t)

    def advance(self, t: float) -> list[CloudJob]:
        """Run the worker up to ``t``; the jobs finished (answered or expired) since the
        last call."""
        self._run_until(t)
        done, self._finished = self._finished, []
        return done

    def backlog_ms(self, t: float, coming: Iterable[CloudJob] = ()) -> float:
        """Work ahead of a request arriving at ``t`` (ms): the running batch's rest, then the
        waiting requests and ``coming`` (sent, not yet arrived) in batches of ``max_batch``
        per (split, exit). What the load-aware oracle knows."""
        self._run_until(t)
        left = max(self._end_ms - t, 0.0) if self._running else 0.0
        ahead: dict[tuple[int, int], list[CloudJob]] = {}
        for key, queue in self._queues.items():
            ahead.setdefault(key, []).extend(queue)
        for job in coming:
            ahead.setdefault(job.key, []).append(job)
        size = self.rule.max_batch
        for (split, _), jobs in ahead.items():
            for k in range(0, len(jobs), size):
                rows = [(j.stop_block, j.early) for j in jobs[k : k + size]]
                left += self.service.batch_ms(split, rows)
        return left

    def _run_until(self, t: float) -> None:
        while True:
            ev = self.next_event_ms()
            if ev > t:
                break
            self._now = ev
            if self._running:
                left = self.pending
                for job in self._running:
                    job.done_ms, job.queued_at_done = ev, left
                self._finished.extend(self._running)
                self._running = []
            self._wake_ms = math.inf
            self._try_start(ev)
        self._now = max(self._now, t)

    def _try_start(self, now: float) -> None:
        rule = self.rule
        while not self._running and self._queues:
            key = min(self._queues, key=lambda k: self._queues[k][0].arrival_ms)
            queue = self._queues[key]
            wait_end = queue[0].arrival_ms + rule.wait_ms
            alone = not rule.wait_alone and now - self._company_ms > COMPANY_WINDOW_MS
            if not (len(queue) >= rule.max_batch or now >= wait_end - 1e-9 or alone):
                self._wake_ms = wait_end
                return
            batch = [queue.popleft() for _ in range(min(len(queue), rule.max_batch))]
            if not queue:
                del self._queues[key]
            live = []
            for job in batch:
                if now >= job.expires_ms:
                    job.expired, job.done_ms = True, now
                    self._finished.append(job)
                else:
                    live.append(job)
            if not live:
                continue
            ms = self.service.batch_ms(key[0], [(j.stop_block, j.early) for j in live])
            for job in live:
                job.start_ms, job.batch_size = now, len(live)
            self._running, self._end_ms = live, now + ms
            if self.keep_batches:
                self.batches.append(live)
