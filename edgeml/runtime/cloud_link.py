"""The edge's way to the cloud: client, optional link emulation, bandwidth estimate, probes.

:class:`CloudLink` owns everything the daemon needs from the network side: the
:class:`~edgeml.transport.client.EdgeClient` (and a fresh one while the cloud is
unreachable, since a channel in reconnect backoff may wait a second before its next try),
the user-space link emulation (:class:`~edgeml.runtime.link.TraceLink`), the bandwidth and
RTT estimator and the background prober, which measures the link when nothing was measured
for ``probe_after_s`` (a health ping for the RTT and a ~``probe_bytes`` request for the
throughput), as the simulator's edge does, so a policy that stays local does not blind
itself. :meth:`CloudLink.send` makes one offload and says how it ended; what to answer
then is the daemon's (the decision core's outcome rule).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from edgeml.bundle import Bundle
from edgeml.decision.cloud import CloudReply
from edgeml.partition.codecs import encode
from edgeml.partition.cost import CostModel
from edgeml.runtime.edge_config import EdgeConfig
from edgeml.runtime.estimator import BandwidthEstimator, EstimatorConfig
from edgeml.runtime.link import LinkTimeout, TraceLink
from edgeml.runtime.metrics import EdgeMetrics
from edgeml.transport.client import (
    ClientConfig,
    DeadlineExpired,
    EdgeClient,
    InferResult,
    OffloadError,
    WeightsMismatchError,
)

log = logging.getLogger(__name__)

__all__ = ["CloudLink", "Sent"]


@dataclass(frozen=True)
class Sent:
    """How one offload ended: the cloud's ``result``, or the fallback ``reason``
    (deadline, unavailable, error, mismatch); ``sent`` says whether the tensor left."""

    result: InferResult | None
    reason: str | None
    sent: bool
    nbytes: int


class CloudLink:
    """Client, link emulation, estimator and prober of one edge daemon.

    ``client`` may be passed in (then it is not replaced while the cloud is down, nor
    closed here).
    """

    def __init__(
        self,
        config: EdgeConfig,
        bundle: Bundle,
        cost: CostModel,
        metrics: EdgeMetrics,
        history: int,
        client: EdgeClient | None = None,
    ) -> None:
        self.config, self.bundle, self.cost, self.metrics = config, bundle, cost, metrics
        self.estimator = BandwidthEstimator(
            EstimatorConfig(
                window=history, probe_after_s=config.probe_after_s,
                prior_rtt_ms=config.rtt_ms, min_bytes=512,
            )
        )  # fmt: skip
        self.lock = threading.Lock()  # guards the estimator (prober thread vs inputs)
        self.link = self._make_link()
        self.client = client or self._new_client()
        self._own_client = client is None
        self._old_clients: list[EdgeClient] = []
        self.down = False
        self._last_reconnect = 0.0
        self._overhead = 160  # request bytes beyond the tensor's; learnt from the first reply
        self._probe_split = cost.probe_split(config.probe_bytes)
        self._loads: list[CloudReply] = []  # cloud load reports not yet read (under lock)

    def cloud_reports(self) -> list[CloudReply]:
        """The cloud load reports of the edge's offloads and probes since the last call,
        oldest first (an edge that stays local still learns when the cloud is free again,
        as the simulator's edge does from its probes)."""
        with self.lock:
            out, self._loads = self._loads, []
        return out

    def _report(self, r: InferResult, s: int, e: int, tau: float) -> None:
        """Keep a reply's load fields: its queue wait, how much later than the profiled
        compute alone it came (``extra``: the wait plus a batch's longer run), its load."""
        alone = self.cost.breakdown(s, e, r.exit_index, tau >= 1.0, self.config.codec).cloud_ms
        extra = r.queue_ms + max(r.compute_ms - alone, 0.0)
        with self.lock:
            self._loads.append(CloudReply(r.queue_ms, extra, r.cloud_load))

    # ------------------------------------------------------------------ set-up

    def _make_link(self) -> TraceLink | None:
        cfg = self.config
        rtt = cfg.link_rtt_ms if cfg.link_rtt_ms is not None else cfg.rtt_ms
        if cfg.link_trace is not None:
            from edgeml.rl_agent.traces import load_trace

            return TraceLink(load_trace(cfg.link_trace), rtt, cfg.link_offset_s)
        if cfg.link_rtt_ms is not None:
            return TraceLink(None, rtt)
        return None

    def _new_client(self) -> EdgeClient:
        cfg = self.config
        return EdgeClient(
            ClientConfig(
                targets=cfg.cloud,
                token=cfg.token,
                root_ca=cfg.root_ca,
                tls_cert=cfg.tls_cert,
                tls_key=cfg.tls_key,
                max_attempts=2,
            ),  # fmt: skip
            weights_sha256=self.bundle.weights_sha256,
        )

    def close(self) -> None:
        if self._own_client:
            for c in [*self._old_clients, self.client]:
                c.close()

    # ------------------------------------------------------------------ reachability

    def check_cloud(self, timeout_s: float = 5.0) -> bool:
        """Verify the cloud serves the same weights; False if it cannot be reached now.

        A cloud with other weights is refused (:class:`WeightsMismatchError` propagates).
        """
        try:
            self.client.wait_ready(timeout_s)
            self.client.check_model()
            return True
        except WeightsMismatchError:
            raise
        except OffloadError as exc:
            self.down = True
            log.warning("cloud %s not reachable yet (%s); answering locally until it is",
                        self.config.cloud, exc)  # fmt: skip
            return False

    def _reconnect(self) -> None:
        """Try a fresh channel while the cloud is unreachable; swap it in once it answers.

        The old channel's reconnect backoff (capped by ``ClientConfig.max_reconnect_backoff_s``)
        may still be up to a second away from its next try; a fresh channel, with its own
        subchannel, connects at once. The old one is closed at shutdown (a call in flight on
        it may finish).
        """
        self._last_reconnect = time.monotonic()
        fresh = self._new_client()
        try:
            fresh.wait_ready(0.3)
        except OffloadError:
            fresh.close()
            return
        log.info("cloud %s reachable again: switched to a fresh channel", self.config.cloud)
        self._old_clients.append(self.client)
        self.client = fresh
        self.down = False

    # ------------------------------------------------------------------ measurements

    def measurements(self) -> tuple[list[tuple[float, float]], float, float | None]:
        """``(throughput samples (t, mbps), RTT ms, estimate Mbps or None)`` now."""
        with self.lock:
            samples = [(s.t, s.mbps) for s in self.estimator.samples()]
            return samples, self.estimator.rtt_ms(), self.estimator.mbps()

    # ------------------------------------------------------------------ one offload

    def send(
        self, enc: Any, s: int, e: int, tau: float, give_up: float, lat: dict[str, float]
    ) -> Sent:
        """Send one encoded tensor and wait for the reply until ``give_up`` (monotonic);
        fills the network stages of ``lat`` and feeds the estimator."""
        t_send = time.monotonic()
        nbytes = int(enc.nbytes) + self._overhead  # the exact size comes with the reply
        reason: str | None = None
        sent = t_send < give_up  # too late already: nothing leaves, nothing learnt
        result: InferResult | None = None
        try:
            if not sent:
                raise DeadlineExpired("deadline: passed before the tensor was ready; not sent")
            if not self.client.in_rotation():  # every replica runs other weights
                sent = False
                raise WeightsMismatchError("no cloud replica runs the edge's weights; not sent")
            if self.link is not None:
                up = self.link.send(nbytes, give_up)
                lat["uplink"] = (up.queued_s + up.serialization_s + up.propagation_s) * 1e3
            result = self.client.infer(enc, s, e, tau, self.config.codec, deadline=give_up)
            if self.link is not None:
                self.link.receive(give_up)
        except WeightsMismatchError as exc:
            log.debug("%s", exc)  # the client logs a replica leaving the rotation once
            reason = "mismatch"
        except (DeadlineExpired, LinkTimeout):
            reason = "deadline"
        except OffloadError as exc:
            reason = "unavailable" if exc.code is grpc.StatusCode.UNAVAILABLE else "error"
            log.debug("offload failed: %s", exc)
        if reason in (None, "unavailable"):
            self.down = reason is not None
        elapsed = time.monotonic() - t_send
        if reason is None:
            assert result is not None
            self._overhead = result.sent_bytes - int(enc.nbytes)
            lat["network"] = max(elapsed * 1e3 - result.server_ms, 0.0)
            lat["cloud_queue"] = result.queue_ms
            lat["cloud_decode"] = result.decode_ms
            lat["cloud_compute"] = result.compute_ms
            self._report(result, s, e, tau)
            with self.lock:
                self.estimator.observe(result.sent_bytes, max(elapsed - result.server_ms / 1e3, 0))
            return Sent(result, None, True, result.sent_bytes)
        lat["network"] = elapsed * 1e3
        if reason == "deadline" and sent:
            with self.lock:
                self.estimator.observe_timeout(nbytes, elapsed)
        return Sent(None, reason, sent, nbytes if reason == "deadline" and sent else 0)

    # ------------------------------------------------------------------ probes

    def probe_once(self) -> None:
        """A health ping (RTT) and a ~probe_bytes request (throughput) over the link.

        A probe the link does not carry within ``probe_timeout_s`` is a censored sample,
        its bytes over its timeout (as a timed-out offload is, and as the simulator's edge
        records it): the link is that slow at most, and an edge that stays local learns so.
        """
        with self.lock:
            self.estimator.mark_probe()
        deadline_s = self.config.scenario.probe_timeout_s
        p = self._probe_split
        enc = encode(np.zeros((1, *self.bundle.manifest.cut_points[p].shape), np.float32), "int8")
        nbytes = int(enc.nbytes) + self._overhead
        in_call = False  # a deadline before the call is an unreachable cloud, not a slow link
        try:
            t0 = time.monotonic()
            if self.link is not None:
                self.link.send(64, t0 + deadline_s)
            self.client.wait_ready(deadline_s)
            if self.link is not None:
                self.link.receive(t0 + deadline_s)
            with self.lock:
                self.estimator.observe(64, time.monotonic() - t0)
            t0 = time.monotonic()
            dl = t0 + deadline_s
            in_call = True
            if self.link is not None:
                self.link.send(nbytes, dl)
            last = len(self.cost.exits) - 1
            r = self.client.infer(enc, p, last, 1.0, "int8", deadline=dl)
            if self.link is not None:
                self.link.receive(dl)
            with self.lock:
                self.estimator.observe(r.sent_bytes, time.monotonic() - t0 - r.server_ms / 1e3)
            self._report(r, p, last, 1.0)
            self.metrics.bytes_sent.inc(r.sent_bytes)
            self.metrics.probes.labels("ok").inc()
            self.down = False
        except (OffloadError, LinkTimeout) as exc:
            if isinstance(exc, LinkTimeout) or (in_call and isinstance(exc, DeadlineExpired)):
                with self.lock:
                    self.estimator.observe_timeout(nbytes, deadline_s)
            if isinstance(exc, OffloadError) and exc.code in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            ):
                self.down = True
            self.metrics.probes.labels("failed").inc()
            log.debug("probe failed: %s", exc)

    def probe_loop(self, stop: threading.Event) -> None:
        """Until ``stop``: reconnect while down, recheck quarantined replicas, probe when due."""
        while not stop.wait(0.05):
            if self._own_client and self.down:
                # While down, the fresh-channel attempt is the probe: a probe on the old
                # channel would block this loop for its whole deadline and push the next
                # attempt (and so the resume after a restart) back by a second or more.
                if time.monotonic() - self._last_reconnect >= self.config.reconnect_every_s:
                    self._reconnect()
                continue
            self.client.recheck(self.config.recheck_s)
            with self.lock:
                due = self.estimator.should_probe()
            if due:
                self.probe_once()
