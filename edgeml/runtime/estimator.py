"""Uplink bandwidth and RTT estimates from the edge's own transfers (no extra traffic).

Every offload is a measurement: ``nbytes`` crossed the link in ``network_s`` (the call's
wall time minus the time the server says it spent). Small transfers (under ``min_bytes``:
health pings, tiny tensors) measure the RTT: the smallest recent one is the estimate.
What a large transfer took beyond the RTT is serialization, so its throughput is
``8 * nbytes / (network_s - rtt)``.

The estimate is the harmonic mean of the last ``window`` throughput samples (as in
FESTIVE/MPC video players): one lucky fast sample cannot inflate it, and a slow one pulls
it down at once, which is the safe direction for a deadline. A timed-out transfer is a
censored sample: the link carried at most ``8 * nbytes / elapsed``, recorded as such.

When the edge has not offloaded for ``probe_after_s`` the estimate is stale (the policy may
have stopped offloading *because* the link looked bad); :meth:`should_probe` says so, and the
daemon sends one background probe transfer to refresh it.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BandwidthEstimator", "EstimatorConfig", "Sample"]


@dataclass(frozen=True)
class EstimatorConfig:
    """Knobs of :class:`BandwidthEstimator`.

    :param window: throughput samples in the harmonic mean.
    :param rtt_window: small-transfer network times kept for the RTT (their minimum).
    :param min_bytes: smaller transfers update the RTT only.
    :param min_serialization_ms: floor of the time beyond the RTT (a transfer that took no
        longer than the RTT says "fast", not "infinitely fast").
    :param max_mbps: ceiling of one sample (guards a near-zero serialization time).
    :param probe_after_s: a sample older than this makes :meth:`should_probe` true.
    :param prior_rtt_ms: RTT assumed before the first measurement.
    """

    window: int = 5
    rtt_window: int = 20
    min_bytes: int = 2048
    min_serialization_ms: float = 0.5
    max_mbps: float = 1000.0
    probe_after_s: float = 1.0
    prior_rtt_ms: float = 40.0

    def __post_init__(self) -> None:
        if self.window < 1 or self.rtt_window < 1:
            raise ValueError(
                f"window/rtt_window: must be >= 1, got {self.window}/{self.rtt_window}"
            )
        if self.probe_after_s <= 0:
            raise ValueError(f"probe_after_s: must be > 0, got {self.probe_after_s}")
        if self.max_mbps <= 0:
            raise ValueError(f"max_mbps: must be > 0, got {self.max_mbps}")


@dataclass(frozen=True)
class Sample:
    """One throughput sample: when it ended, its rate, and whether it was censored."""

    t: float
    mbps: float
    censored: bool = False


class BandwidthEstimator:
    """Robust uplink estimate from measured transfers; thread-safe enough for one writer.

    ``clock`` is injectable so tests and the simulator can drive time.
    """

    def __init__(
        self, config: EstimatorConfig | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config or EstimatorConfig()
        self._clock = clock
        self._samples: deque[Sample] = deque(maxlen=self.config.window)
        self._net_ms: deque[float] = deque(maxlen=self.config.rtt_window)
        self._last_transfer_t: float | None = None

    # ------------------------------------------------------------------ updates

    def observe(self, nbytes: int, network_s: float, now: float | None = None) -> Sample | None:
        """Record a completed transfer of ``nbytes`` whose network part took ``network_s``.

        Returns the throughput sample it produced, or None when it only updated the RTT.
        """
        now = self._clock() if now is None else now
        if network_s < 0 or not math.isfinite(network_s):
            raise ValueError(f"network_s: must be finite and >= 0, got {network_s}")
        self._last_transfer_t = now
        net_ms = network_s * 1e3
        if nbytes < self.config.min_bytes:
            self._net_ms.append(net_ms)
            return None
        ser_ms = max(net_ms - self.rtt_ms(), self.config.min_serialization_ms)
        mbps = min(nbytes * 8.0 / (ser_ms * 1e3), self.config.max_mbps)
        sample = Sample(now, mbps)
        self._samples.append(sample)
        return sample

    def observe_timeout(self, nbytes: int, elapsed_s: float, now: float | None = None) -> Sample:
        """Record a transfer that did not finish in ``elapsed_s``: an upper bound on the rate."""
        now = self._clock() if now is None else now
        self._last_transfer_t = now
        mbps = nbytes * 8.0 / max(elapsed_s, 1e-6) / 1e6
        sample = Sample(now, min(mbps, self.config.max_mbps), censored=True)
        self._samples.append(sample)
        return sample

    # ------------------------------------------------------------------ queries

    def mbps(self) -> float | None:
        """Harmonic mean of the recent samples; None before the first one."""
        if not self._samples:
            return None
        rates = [s.mbps for s in self._samples]
        if min(rates) <= 0:
            return 0.0
        return statistics.harmonic_mean(rates)

    def samples(self) -> list[Sample]:
        """The recent samples, oldest first."""
        return list(self._samples)

    def rtt_ms(self) -> float:
        """Minimum recent small-transfer time: the RTT plus the fixed per-call overhead."""
        return min(self._net_ms) if self._net_ms else self.config.prior_rtt_ms

    def age_s(self, now: float | None = None) -> float:
        """Seconds since the newest throughput sample (``inf`` before the first)."""
        if not self._samples:
            return math.inf
        now = self._clock() if now is None else now
        return max(0.0, now - self._samples[-1].t)

    def should_probe(self, now: float | None = None) -> bool:
        """True when no transfer has happened for ``probe_after_s`` (the estimate is stale)."""
        now = self._clock() if now is None else now
        last = self._last_transfer_t
        return last is None or now - last >= self.config.probe_after_s

    def mark_probe(self, now: float | None = None) -> None:
        """Note that a probe was started, so a slow probe is not followed by another at once."""
        self._last_transfer_t = self._clock() if now is None else now
