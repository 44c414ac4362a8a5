"""Dynamic batching: concurrent requests for the same (split, exit) run as one batch.

A small conv net on a CPU core costs several times less per row at batch 8-16 than at batch
1 (per-op overhead dominates at batch 1), so when many edges talk to one server it pays to
wait a few hundred microseconds for company. One worker thread owns the model: it takes the
oldest waiting request, waits until ``max_batch`` requests with the same key are queued or
``max_wait_us`` has passed since that oldest request arrived, and runs them together.
``max_batch=1`` turns batching off (requests still run one at a time on the worker).

Waiting only pays when company comes: a request that finds the server idle, with no request
having arrived while another was queued or running in the last second, runs at once. So a
lone edge does not pay ``max_wait_us`` on every offload, and under load batches still form.

The batcher knows nothing about gRPC or torch: ``run_batch(key, jobs)`` returns one result per
job, and any exception it raises is confined to the jobs of that batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Batcher", "BatcherClosed", "Job", "JobCancelled", "JobExpired"]

log = logging.getLogger(__name__)


class BatcherClosed(RuntimeError):
    """The batcher is shutting down and takes no new jobs."""


class JobCancelled(RuntimeError):
    """The caller gave up on the job (its RPC was cancelled) before it ran."""


class JobExpired(TimeoutError):
    """The job's deadline passed while it waited for a batch; it was not run."""


_COMPANY_WINDOW_NS = 1_000_000_000


def _now_ns() -> int:
    return time.perf_counter_ns()


@dataclass(eq=False)
class Job:
    """One request waiting for (or done with) its batch.

    :param key: requests with equal keys may share a batch, e.g. ``(split, exit)``.
    :param x: the input row, shaped ``(1, ...)``.
    :param tau: the row's early-exit threshold (rows of one batch may differ).
    :param expires_ns: ``time.perf_counter_ns()`` after which running the job is pointless.
    """

    key: Hashable
    x: np.ndarray
    tau: float
    expires_ns: int | None = None
    enqueued_ns: int = field(default_factory=_now_ns)
    result: Any = None
    error: BaseException | None = None
    batch_size: int = 0
    queue_ms: float = 0.0
    compute_ms: float = 0.0
    queued_after: int = 0  # jobs waiting for a batch when this job's batch finished
    _event: threading.Event = field(default_factory=threading.Event, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _cancelled: bool = field(default=False, repr=False)

    @property
    def done(self) -> bool:
        return self._event.is_set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has a result or an error; False on timeout."""
        return self._event.wait(timeout)

    def cancel(self) -> None:
        """Give up on the job: the worker skips it if it has not started it yet."""
        if self._finish(error=JobCancelled("cancelled before it ran")):
            self._cancelled = True

    def _finish(self, result: Any = None, error: BaseException | None = None) -> bool:
        """Record the outcome once; False if the job already had one."""
        with self._lock:
            if self._event.is_set():
                return False
            self.result, self.error = result, error
            self._event.set()
            return True


RunBatch = Callable[[Hashable, Sequence[Job]], Sequence[Any]]


class Batcher:
    """Groups jobs by key and runs them on one worker thread.

    :param run_batch: ``run_batch(key, jobs) -> results``, one result per job, in order.
    :param max_batch: most jobs per batch; 1 disables batching.
    :param max_wait_us: longest a job waits for company, from its arrival.
    :param on_batch: called after each batch with ``(size, compute seconds)`` (metrics).
    :param wait_alone: also wait for company when the server is idle (always ``max_wait_us``).
    """

    def __init__(
        self,
        run_batch: RunBatch,
        max_batch: int = 1,
        max_wait_us: int = 0,
        on_batch: Callable[[int, float], None] | None = None,
        name: str = "edgeml-batcher",
        wait_alone: bool = False,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch: must be >= 1, got {max_batch}")
        if max_wait_us < 0:
            raise ValueError(f"max_wait_us: must be >= 0, got {max_wait_us}")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_ns = 0 if max_batch == 1 else int(max_wait_us) * 1000
        self.on_batch = on_batch
        self.wait_alone = wait_alone
        self._queues: dict[Hashable, deque[Job]] = {}
        self._running = False
        self._company_ns = -_COMPANY_WINDOW_NS  # last arrival that found others in the server
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> Batcher:
        self._thread.start()
        return self

    @property
    def pending(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._queues.values())

    def submit(self, job: Job) -> Job:
        """Queue ``job``; raises :class:`BatcherClosed` once :meth:`close` was called."""
        with self._cond:
            if self._closed:
                raise BatcherClosed("server is shutting down")
            if self._running or self._queues:
                self._company_ns = job.enqueued_ns
            self._queues.setdefault(job.key, deque()).append(job)
            self._cond.notify()
        return job

    def close(self, timeout: float | None = None) -> None:
        """Stop taking jobs, run what is queued without further waiting, stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ----------------------------------------------------------------- worker

    def _next_batch(self) -> list[Job] | None:
        """The next batch to run, or None when closed and empty."""
        with self._cond:
            while True:
                if not self._queues:
                    if self._closed:
                        return None
                    self._cond.wait()
                    continue
                key = min(self._queues, key=lambda k: self._queues[k][0].enqueued_ns)
                queue = self._queues[key]
                now = _now_ns()
                wait_ns = queue[0].enqueued_ns + self.max_wait_ns - now
                alone = not self.wait_alone and now - self._company_ns > _COMPANY_WINDOW_NS
                if len(queue) >= self.max_batch or wait_ns <= 0 or alone or self._closed:
                    batch = [queue.popleft() for _ in range(min(len(queue), self.max_batch))]
                    if not queue:
                        del self._queues[key]
                    self._running = True
                    return batch
                self._cond.wait(wait_ns / 1e9)

    def _loop(self) -> None:
        while True:
            try:
                batch = self._next_batch()
                if batch is None:
                    return
                self._run(batch)
            except Exception:  # the worker must outlive any batch
                log.exception("batcher: unexpected error")
            finally:
                with self._cond:
                    self._running = False

    def _run(self, batch: list[Job]) -> None:
        now = _now_ns()
        live = []
        for job in batch:
            if job.done:  # cancelled while queued
                continue
            if job.expires_ns is not None and now >= job.expires_ns:
                late_ms = (now - job.expires_ns) / 1e6
                job._finish(error=JobExpired(f"deadline passed {late_ms:.1f} ms before it ran"))
                continue
            live.append(job)
        if not live:
            return
        t0 = _now_ns()
        for job in live:
            job.queue_ms = (t0 - job.enqueued_ns) / 1e6
        outcomes = self._run_isolated(live)
        seconds = (_now_ns() - t0) / 1e9
        queued = self.pending
        for job, (result, error) in zip(live, outcomes, strict=True):
            job.batch_size = len(live)
            job.compute_ms = seconds * 1e3
            job.queued_after = queued
            job._finish(result, error)
        if self.on_batch is not None:
            self.on_batch(len(live), seconds)

    def _run_isolated(self, jobs: list[Job]) -> list[tuple[Any, BaseException | None]]:
        """Run ``jobs`` as one batch; if that fails, one by one, so a bad row fails alone."""
        try:
            results = list(self.run_batch(jobs[0].key, jobs))
            if len(results) != len(jobs):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(jobs)}")
            return [(r, None) for r in results]
        except Exception as exc:
            if len(jobs) == 1:
                log.exception("batch of 1 failed (key %s)", jobs[0].key)
                return [(None, exc)]
            log.warning("batch of %d failed (%s); retrying rows one by one", len(jobs), exc)
            return [out for job in jobs for out in self._run_isolated([job])]
