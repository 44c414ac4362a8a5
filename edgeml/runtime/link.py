"""Application-level link emulation: pace the edge's uploads by a bandwidth trace, add RTT.

Used where the kernel cannot shape traffic (``edgeml demo`` on loopback): before a request
goes out, the edge waits as long as the emulated uplink would take to carry its bytes
(integrated over the trace from the moment the link is free, so one transfer queues behind
another and a transfer spanning a slow second is slow), plus half the RTT; after the reply,
the other half. The trace arithmetic is :class:`edgeml.rl_agent.traces.Trace`'s, the very
one the simulator uses, so a run here and the simulator's prediction see the same link.

``edgeml emulate`` shapes bandwidth in the kernel instead and uses :class:`TraceLink` with
no trace, for the RTT only (the kernel here has no netem).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from edgeml.rl_agent.traces import Trace

__all__ = ["LinkTimeout", "TraceLink", "Uplink"]


class LinkTimeout(TimeoutError):
    """The emulated link could not deliver the bytes before the caller's deadline."""


@dataclass(frozen=True)
class Uplink:
    """What one upload cost on the emulated link (seconds, on the link's clock)."""

    queued_s: float  # waiting for an earlier transfer to leave the link
    serialization_s: float  # bytes at the trace's rate
    propagation_s: float  # half the RTT


class TraceLink:
    """One shared uplink that follows ``trace`` (Mbps per second, looping) plus a fixed RTT.

    :param trace: bandwidth over time; None means unlimited bandwidth (RTT only).
    :param rtt_ms: round-trip time added in user space, half on the way up, half down.
    :param offset_s: trace time at construction, and again at :meth:`anchor` (runs that
        start at the same offset see the same bandwidth at the same moment of the run).
    """

    def __init__(
        self,
        trace: Trace | None,
        rtt_ms: float = 40.0,
        offset_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rtt_ms < 0 or offset_s < 0:
            raise ValueError(f"rtt_ms/offset_s: must be >= 0, got {rtt_ms}/{offset_s}")
        self.trace = trace
        self.rtt_ms = float(rtt_ms)
        self.offset_s = float(offset_s)
        self._clock = clock
        self._sleep = sleep
        self._t0 = clock()
        self._busy_until = self._t0
        self._lock = threading.Lock()

    def anchor(self, now: float | None = None) -> None:
        """Put the trace back at ``offset_s`` at clock time ``now`` (default: now). A daemon
        anchors its link at its first input, so its inputs meet the trace from ``offset_s``
        on however long its start-up and warm-up probes took, as a simulated episode's do."""
        with self._lock:
            self._t0 = self._clock() if now is None else now

    def trace_time(self, now: float | None = None) -> float:
        """Position in the trace (seconds, before looping) at clock time ``now``."""
        now = self._clock() if now is None else now
        return self.offset_s + max(0.0, now - self._t0)

    def mbps_now(self, now: float | None = None) -> float:
        """The trace's bandwidth at ``now`` (``inf`` without a trace)."""
        if self.trace is None:
            return math.inf
        return self.trace.mbps_at(self.trace_time(now))

    def _wait_until(self, t: float) -> None:
        delay = t - self._clock()
        if delay > 0:
            self._sleep(delay)

    def send(self, nbytes: int, deadline: float | None = None) -> Uplink:
        """Block while ``nbytes`` cross the uplink; :class:`LinkTimeout` past ``deadline``.

        ``deadline`` is a time on the link's clock. On timeout the sender gives up at the
        deadline, and the link is busy only until then (the rest of the bytes never go).
        """
        half_rtt = self.rtt_ms / 2e3
        with self._lock:
            now = self._clock()
            start = max(now, self._busy_until)
            if self.trace is None or nbytes <= 0:
                ser = 0.0
            else:
                ser = self.trace.transfer_s(nbytes, self.trace_time(start))
            end = start + ser
            late = deadline is not None and end + half_rtt > deadline
            self._busy_until = min(end, deadline) if late and deadline is not None else end
        if late and deadline is not None:
            self._wait_until(deadline)
            raise LinkTimeout(
                f"uplink: {nbytes} bytes need {ser * 1e3:.1f} ms at "
                f"{self.mbps_now(start):.3g} Mbps after {(start - now) * 1e3:.1f} ms queued; "
                "past the deadline"
            )
        self._wait_until(end + half_rtt)
        return Uplink(start - now, ser, half_rtt)

    def receive(self, deadline: float | None = None) -> float:
        """Block for the downlink half of the RTT (the reply is a few bytes)."""
        half_rtt = self.rtt_ms / 2e3
        now = self._clock()
        if deadline is not None and now + half_rtt > deadline:
            self._wait_until(deadline)
            raise LinkTimeout("downlink: the reply's half RTT ends past the deadline")
        self._sleep(half_rtt)
        return half_rtt
