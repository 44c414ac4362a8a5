"""The dynamic batcher on its own: a lone request runs at once, company makes it wait."""

from __future__ import annotations

import threading
import time

import numpy as np

from edgeml.transport.batching import Batcher, Job

WAIT_US = 400_000  # long enough that "did not wait" and "waited" cannot be confused


def _job(i: int) -> Job:
    return Job(key=(1, 2), x=np.full((1, 1), i, np.float32), tau=1.0)


def test_a_request_that_finds_the_server_idle_does_not_wait_for_company() -> None:
    b = Batcher(lambda _k, jobs: [float(j.x[0, 0]) for j in jobs], max_batch=8,
                max_wait_us=WAIT_US).start()  # fmt: skip
    try:
        job = b.submit(_job(7))
        assert job.wait(5) and job.result == 7.0
        assert job.batch_size == 1 and job.queue_ms < WAIT_US / 1e3 / 2, job.queue_ms
    finally:
        b.close(5)


def test_requests_arriving_while_others_run_wait_and_share_a_batch() -> None:
    release = threading.Event()

    def run(_key, jobs):  # type: ignore[no-untyped-def]
        if any(j.x[0, 0] == 0 for j in jobs):
            release.wait(5)  # the first request keeps the worker busy
        return [float(j.x[0, 0]) for j in jobs]

    b = Batcher(run, max_batch=8, max_wait_us=WAIT_US).start()
    try:
        first = b.submit(_job(0))
        time.sleep(0.05)
        second = b.submit(_job(1))  # arrives while the first runs: the server has company
        release.set()
        assert first.wait(5) and first.batch_size == 1
        time.sleep(0.05)  # the second now waits alone in the queue, for company
        third = b.submit(_job(2))
        assert second.wait(5) and third.wait(5)
        assert (second.result, third.result) == (1.0, 2.0)
        assert second.batch_size == third.batch_size == 2
    finally:
        b.close(5)


def test_wait_alone_keeps_the_fixed_wait() -> None:
    b = Batcher(lambda _k, jobs: [0.0] * len(jobs), max_batch=8, max_wait_us=WAIT_US,
                wait_alone=True).start()  # fmt: skip
    try:
        job = b.submit(_job(1))
        assert job.wait(5) and job.queue_ms >= WAIT_US / 1e3 * 0.9, job.queue_ms
    finally:
        b.close(5)


def test_a_reply_reports_the_requests_left_waiting_when_its_batch_finished() -> None:
    """The load fields of a reply (``InferReply.queued``/``running``) come from here."""
    release = threading.Event()

    def run(_key, jobs):  # type: ignore[no-untyped-def]
        if any(j.x[0, 0] == 0 for j in jobs):
            release.wait(5)
        return [0.0] * len(jobs)

    b = Batcher(run, max_batch=2, max_wait_us=WAIT_US).start()
    try:
        first = b.submit(_job(0))
        time.sleep(0.05)
        rest = [b.submit(_job(i)) for i in range(1, 6)]  # five wait while the first runs
        release.set()
        assert first.wait(5) and all(j.wait(5) for j in rest)
        assert (first.batch_size, first.queued_after) == (1, 5)
        # Then batches of two: 3 left after the first pair, 1 after the second, 0 at the end.
        assert [(j.batch_size, j.queued_after) for j in rest] == [
            (2, 3), (2, 3), (2, 1), (2, 1), (1, 0)
        ]  # fmt: skip
    finally:
        b.close(5)
