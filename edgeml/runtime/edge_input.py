"""One input through the edge: observe, decide ``(s, e, tau)``, run the head, offload or not.

For every input the daemon (:mod:`.edge`) hands it, :class:`InputPath`

1. estimates its edge load (how much slower than profiled its core computes now: psutil's
   reading of other processes, or its own measured compute speed, whichever is higher)
   and the input's cheap difficulty feature, and updates the agent's observation from its
   own measurements (:class:`~edgeml.decision.observation.EdgeKnowledge`);
2. asks the policy for ``(split, exit, tau)``;
3. runs blocks ``1..s`` with the early-exit rule on its runtime (ONNX Runtime or torch,
   :mod:`.edge_net`), then encodes the tensor; the emulated edge slowdown is applied
   by sleeping after the measured compute (:class:`~.speed.Pacer`);
4. if the run did not stop on the edge, sends the tensor through :class:`~.cloud_link.CloudLink`
   and waits until the input's deadline plus the outcome rule's grace (as long as the
   cheapest local answer: a reply due just after the deadline is worth waiting for, a dead
   link costs at most the grace); on a timeout, an error or an unreachable cloud it answers
   locally from the deepest exit it can still reach before the deadline (the shallowest one
   past ``s`` once the deadline has passed), so no input is ever lost;
5. returns one record (:mod:`.records`); a frame the network cannot take, or whose
   processing failed, gets an error record instead and the daemon goes on.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from edgeml.bundle import Bundle
from edgeml.data.features import difficulty_feature
from edgeml.decision.policies import Policy, World
from edgeml.partition.codecs import encode
from edgeml.progressive.rule import Answer
from edgeml.runtime.cloud_link import CloudLink
from edgeml.runtime.edge_config import EdgeConfig
from edgeml.runtime.edge_net import EdgeNet, describe
from edgeml.runtime.records import LATENCY_KEYS, RecordContext, input_record
from edgeml.runtime.sources import Item
from edgeml.runtime.speed import CpuLoad, Pacer, SpeedTracker

log = logging.getLogger(__name__)

__all__ = ["InputPath"]


class InputPath:
    """The per-input half of an edge daemon: what it knows, its policy, its runtime, its link.

    :attr:`t0` is when the run started (records' ``t_s`` count from it).
    """

    def __init__(
        self,
        config: EdgeConfig,
        bundle: Bundle,
        net: EdgeNet,
        world: World,
        policy: Policy,
        cloud: CloudLink,
    ) -> None:
        self.config, self.bundle, self.net, self.policy, self.cloud = (
            config, bundle, net, policy, cloud,
        )  # fmt: skip
        self.cost, self.rule = world.cost, world.rule
        self.state = world.knowledge(policy.history)
        self.speed = SpeedTracker(self.cost, config.codec)
        self.pacer = Pacer(self.cost, config.codec, config.pace)
        self.load = CpuLoad()
        self.t0 = time.monotonic()

    def _fallback(
        self, hidden: np.ndarray, s: int, e: int, tau: float, deadline: float, load: float
    ) -> tuple[Answer, float, float]:
        """Answer locally from the deepest exit past ``s`` that fits before ``deadline``.

        Returns the answer, its compute time and the slowdown sleep (seconds).
        """
        cost = self.cost
        elapsed_ms = self.config.deadline_ms - (deadline - time.monotonic()) * 1e3
        k = self.rule.fallback_exit(s, e, elapsed_ms, load)
        t0 = time.perf_counter()
        res = self.net.run_segment(hidden, s, cost.exits[k], k, tau)
        compute = time.perf_counter() - t0
        answer = res.answers[0]
        assert answer is not None  # a segment always answers at exit k
        return answer, compute, self.pacer.after_fallback(compute, s, k)

    def unusable(self, item: Item) -> str | None:
        """Why the network cannot take this frame (None: it can)."""
        want = (1, *self.bundle.manifest.input_shape)
        if tuple(item.x.shape) != want:
            return f"input: shape {tuple(item.x.shape)}, the bundle takes {want}"
        bad = int(item.x.size - np.count_nonzero(np.isfinite(item.x)))
        if bad:
            return f"input: {bad} non-finite value(s) (NaN or inf); the frame is not used"
        return None

    def answer(self, item: Item, arrival: float, seq: int) -> dict[str, Any]:
        """One record per input, whatever happens: :meth:`process` for a usable frame, an
        error record (``where: "error"``, the reason in ``error``) for a frame the network
        cannot take or one whose processing failed; the daemon goes on with the next."""
        start = time.monotonic()
        reason = self.unusable(item)
        if reason is None:
            try:
                return self.process(item, arrival, seq)
            except Exception as exc:  # a corrupt frame must not end the run
                log.exception("input %s (%s) failed", seq, item.name)
                reason = f"internal: {type(exc).__name__}: {exc}"[:500]
        log.warning("input %s (%s) not answered: %s", seq, item.name, reason)
        lat = dict.fromkeys(LATENCY_KEYS, 0.0)
        lat["total"] = (time.monotonic() - start) * 1e3
        return input_record(self._context(item, seq, start, arrival, 0.0), lat, error=reason)

    def _context(
        self, item: Item, seq: int, start: float, arrival: float, took_s: float
    ) -> RecordContext:
        cfg = self.config
        return RecordContext(
            run=cfg.run, seq=seq, item=item, t_unix=time.time() - took_s, t_s=start - self.t0,
            wait_ms=max(0.0, (start - arrival) * 1e3), policy=self.policy.name,
            deadline_ms=cfg.deadline_ms, edge_slowdown=cfg.edge_slowdown,
            edge_runtime=describe(self.net),
        )  # fmt: skip

    def process(self, item: Item, arrival: float, seq: int) -> dict[str, Any]:
        """Answer one input; never raises for a cloud problem (falls back instead)."""
        cfg = self.config
        start = time.monotonic()
        deadline = start + cfg.deadline_ms / 1e3
        lat = dict.fromkeys(LATENCY_KEYS, 0.0)
        cpu_load = self.load.sample()
        edge_speed, cloud_speed = self.speed.edge, self.speed.cloud  # known before this input
        load = max(cpu_load, edge_speed - 1.0) if self.pacer.real_load else 0.0
        st = self.state
        st.edge_load = load
        st.feature = float(difficulty_feature(item.x, self.bundle.manifest.difficulty_feature)[0])
        meas, st.rtt_ms, bw_est = self.cloud.measurements()
        for rep in self.cloud.cloud_reports():
            st.record_cloud(rep.queue_ms, rep.extra_ms, rep.load)
        st.set_measurements(meas)
        st.now_s = start
        link = self.cloud.link
        link_mbps = link.mbps_now(start) if link and link.trace else None
        trace_s = link.trace_time(start) if link and link.trace else None

        t0 = time.perf_counter()
        s, e, ti = action = self.policy.act(st)
        tau = action.tau
        lat["decide"] = (time.perf_counter() - t0) * 1e3

        t0 = time.perf_counter()
        res = self.net.run_segment(item.x, 0, s, e, tau)
        compute = time.perf_counter() - t0
        answer = res.answers[0]
        lat["edge_compute"] = compute * 1e3
        where, fallback_reason, nbytes = "edge", None, 0
        load_fields: dict[str, int] = {}
        if answer is None:
            assert res.hidden is not None
            t0 = time.perf_counter()
            enc = encode(res.hidden, cfg.codec)
            enc_s = time.perf_counter() - t0
            lat["encode"] = enc_s * 1e3
            lat["slowdown_sleep"] = self.pacer.after_run(compute + enc_s, s, e, None, tau) * 1e3
            grace = self.rule.grace_ms(s, e, load)
            answer, where, fallback_reason, nbytes, load_fields = self._offload(
                enc, res.hidden, s, e, tau, deadline, deadline + grace / 1e3, load, lat
            )
        else:
            stop = answer.exit_index
            lat["slowdown_sleep"] = self.pacer.after_run(compute, s, e, stop, tau) * 1e3
        end = time.monotonic()
        lat["total"] = (end - start) * 1e3
        in_deadline = end <= deadline
        if where != "fallback":
            self.speed.update(s, e, tau, answer.exit_index, lat)
        st.record_answer(lat["total"], answer.confidence, answer.exit_index, where != "edge")
        measured = {
            "cpu_load": cpu_load, "edge_load": round(load, 4),
            "bw_estimate_mbps": None if bw_est is None else round(bw_est, 4),
            "rtt_estimate_ms": round(st.rtt_ms, 3), "link_mbps": link_mbps,
            "trace_s": None if trace_s is None else round(trace_s, 3), **load_fields,
            "edge_speed": round(edge_speed, 4), "cloud_speed": round(cloud_speed, 4),
        }  # fmt: skip
        return input_record(
            self._context(item, seq, start, arrival, end - start), lat,
            action={"split": s, "exit": e, "tau": tau, "codec": cfg.codec}, where=where,
            answer=answer, fallback_reason=fallback_reason, nbytes=nbytes,
            in_deadline=in_deadline, measured=measured,
        )  # fmt: skip

    def _offload(
        self,
        enc: Any,
        hidden: np.ndarray,
        s: int,
        e: int,
        tau: float,
        deadline: float,
        give_up: float,
        load: float,
        lat: dict[str, float],
    ) -> tuple[Answer, str, str | None, int, dict[str, int]]:
        """Send to the cloud and wait for it until ``give_up``; on any failure answer locally
        (the outcome rule's fallback exit). Returns (answer, where, fallback reason, bytes
        sent, the reply's load fields: empty without a reply)."""
        out = self.cloud.send(enc, s, e, tau, give_up, lat)
        r = out.result
        if r is not None:
            answer = Answer(r.class_id, r.confidence, r.exit_index, r.exit_block)
            fields = {
                "cloud_batch": r.batch_size, "cloud_queued": r.queued, "cloud_running": r.running,
            }  # fmt: skip
            return answer, "cloud", None, r.sent_bytes, fields
        answer, compute, extra = self._fallback(hidden, s, e, tau, deadline, load)
        lat["fallback_compute"] = compute * 1e3
        lat["slowdown_sleep"] += extra * 1e3
        return answer, "fallback", out.reason, out.nbytes, {}
