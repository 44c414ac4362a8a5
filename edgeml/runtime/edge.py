"""The edge daemon: per input, observe, decide ``(s, e, tau)``, run the head, offload or not.

For every input of its source the daemon

1. estimates its edge load (how much slower than profiled its core computes now: psutil's
   reading of other processes, or its own measured compute speed, whichever is higher)
   and the input's cheap difficulty feature, and builds the agent's observation from its
   own measurements (:class:`~edgeml.decision.observation.EdgeKnowledge`);
2. asks the policy for ``(split, exit, tau)``;
3. runs blocks ``1..s`` with the early-exit rule on its runtime (ONNX Runtime or torch,
   :mod:`.edge_net`), then encodes the tensor; the emulated edge slowdown is applied
   by sleeping after the measured compute (:class:`~.speed.Pacer`): ``(factor - 1) x``
   that time, or up to ``factor x`` the profile's when many emulated edges share a host;
4. if the run did not stop on the edge, sends the tensor with a gRPC deadline
   (:class:`~edgeml.transport.client.EdgeClient`), optionally through the user-space link
   emulation (:mod:`.link`); on a timeout, an error or an unreachable cloud it answers
   locally from the deepest exit it can still reach before the input's deadline (the
   shallowest one past ``s`` once the deadline has passed), so no input is ever lost.
   The gRPC deadline is the input's deadline plus a grace as long as that cheapest local
   answer: a reply due just after the deadline is worth waiting for (the input is late
   either way, and the cloud's answer is deeper), a dead link costs at most the grace;
5. writes one JSON line (schema below) and updates its Prometheus metrics.

Before its first input the daemon warms the network up, times its local exits from an idle
core and probes the link ``history`` times (:meth:`EdgeDaemon.prepare`), so the first input
neither runs cold nor is decided blind.
A background thread probes the link (:mod:`.cloud_link`); the records and their schema are
in :mod:`.records`, the speed and load measurements in :mod:`.speed`, the configuration in
:mod:`.edge_config`.

The daemon runs until its source ends, ``max_inputs`` were answered, or SIGTERM/SIGINT;
a signal lets the input in flight finish, flushes the log and exits 0.

Each input's JSONL record, its schema and the meaning of its fields are in :mod:`.records`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from edgeml.bundle import Bundle
from edgeml.data.features import difficulty_feature
from edgeml.decision.policies import Policy, World, make_policy
from edgeml.partition.codecs import encode
from edgeml.partition.cost import CostModel
from edgeml.progressive.rule import Answer
from edgeml.runtime.cloud_link import CloudLink
from edgeml.runtime.edge_config import EdgeConfig
from edgeml.runtime.edge_net import EdgeNet, describe, load_edge_net
from edgeml.runtime.metrics import EdgeMetrics
from edgeml.runtime.records import (
    FALLBACK_REASONS,
    LATENCY_KEYS,
    LOG_SCHEMA,
    RecordContext,
    RunSummary,
    input_record,
    strict_json,
)
from edgeml.runtime.sources import Item, default_source, open_source, paced
from edgeml.runtime.speed import CpuLoad, Pacer, SpeedTracker
from edgeml.transport.client import EdgeClient

log = logging.getLogger(__name__)

__all__ = [
    "FALLBACK_REASONS",
    "LATENCY_KEYS",
    "LOG_SCHEMA",
    "EdgeConfig",
    "EdgeDaemon",
    "RunSummary",
    "SpeedTracker",
    "run_edge",
]


class EdgeDaemon:
    """One edge: bundle, policy, client, estimator, link emulation, log, metrics.

    ``client`` and ``bundle`` may be passed in (the demo shares one bundle across runs).
    """

    def __init__(
        self, config: EdgeConfig, bundle: Bundle | None = None, client: EdgeClient | None = None
    ) -> None:
        self.config = cfg = config
        self.bundle = bundle or _load_bundle(cfg)
        if self.bundle.profile is None:
            raise ValueError(
                f"{self.bundle.path}: no profile.json; run `edgeml profile {self.bundle.path}`"
            )
        self.net: EdgeNet = load_edge_net(
            self.bundle, cfg.edge_runtime, cfg.edge_precision, cfg.threads
        )
        log.info("edge runtime %s", describe(self.net))
        self.world = World.from_bundle(self.bundle, cfg.scenario)
        self.cost: CostModel = self.world.cost
        self.rule = self.world.rule
        self.policy: Policy = make_policy(
            cfg.policy, self.world, device=True, bundle_sha256=self.bundle.weights_sha256,
            seed=cfg.seed,
        )  # fmt: skip
        self.policy.reset(cfg.seed)
        self.state = self.world.knowledge(self.policy.history)
        self.speed = SpeedTracker(self.cost, cfg.codec)
        self.pacer = Pacer(self.cost, cfg.codec, cfg.pace)
        self.metrics = EdgeMetrics(cfg.edge_slowdown)
        self.cloud = CloudLink(
            cfg, self.bundle, self.cost, self.metrics, self.policy.history, client
        )
        self.load = CpuLoad()
        self.stop_event = threading.Event()
        self.summary = RunSummary(cfg.run, self.policy.name, cfg.scenario)
        self._t0 = time.monotonic()

    def check_cloud(self, timeout_s: float = 5.0) -> bool:
        """See :meth:`CloudLink.check_cloud` (a cloud with other weights is refused)."""
        return self.cloud.check_cloud(timeout_s)

    # ------------------------------------------------------------------ one input

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
            run=cfg.run, seq=seq, item=item, t_unix=time.time() - took_s, t_s=start - self._t0,
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
        where, fallback_reason, nbytes, batch = "edge", None, 0, None
        if answer is None:
            assert res.hidden is not None
            t0 = time.perf_counter()
            enc = encode(res.hidden, cfg.codec)
            enc_s = time.perf_counter() - t0
            lat["encode"] = enc_s * 1e3
            lat["slowdown_sleep"] = self.pacer.after_run(compute + enc_s, s, e, None, tau) * 1e3
            grace = self.rule.grace_ms(s, e, load)
            answer, where, fallback_reason, nbytes, batch = self._offload(
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
            "trace_s": None if trace_s is None else round(trace_s, 3), "cloud_batch": batch,
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
    ) -> tuple[Answer, str, str | None, int, int | None]:
        """Send to the cloud and wait for it until ``give_up``; on any failure answer locally
        (the outcome rule's fallback exit). Returns (answer, where, fallback reason, bytes
        sent, cloud batch size)."""
        out = self.cloud.send(enc, s, e, tau, give_up, lat)
        r = out.result
        if r is not None:
            answer = Answer(r.class_id, r.confidence, r.exit_index, r.exit_block)
            return answer, "cloud", None, r.sent_bytes, r.batch_size
        answer, compute, extra = self._fallback(hidden, s, e, tau, deadline, load)
        lat["fallback_compute"] = compute * 1e3
        lat["slowdown_sleep"] += extra * 1e3
        return answer, "fallback", out.reason, out.nbytes, None

    # ------------------------------------------------------------------ start-up

    def prepare(self, rounds: int = 2) -> None:
        """Warm the network up, measure the edge's speed and the link before the first input.

        A freshly loaded network runs its first passes well above its profile (lazy
        allocations, cold caches): in the emulation runs the first input's exit 1 took
        11.7-14.3 ms against 7.8 ms profiled, so at 12x it missed the deadline under every
        policy. Warm, the core is still slower than the back-to-back profile once it idles
        between inputs (exit 1: 8.3-10 ms), and until a local answer had measured that, the
        planners took the profile at its word and chose exit 1 for ~100 ms answers; so the
        local path to each exit is timed, ``rounds`` times after an input interval of idle,
        and seeds :attr:`speed`. And a daemon that starts blind decides its first input with
        no bandwidth sample, whereas the simulator's edge has ``history`` probes behind it
        when its first input arrives, so the policy never learnt what to do blind. All this
        costs about a second at start-up instead of the first inputs of every run.
        """
        cfg = self.config
        x = np.zeros((1, *self.bundle.manifest.input_shape), np.float32)
        for _ in range(rounds):
            for k, block in enumerate(self.cost.exits):
                self.net.run_segment(x, 0, block, k, 1.0)
            for cut in self.bundle.manifest.cut_points[: self.cost.num_blocks]:
                encode(np.zeros((1, *cut.shape), np.float32), cfg.codec)
        idle_s = min(1.0 / cfg.rate, 0.1) if cfg.rate > 0 else 0.0
        for _ in range(rounds):
            for k, block in enumerate(self.cost.exits):
                if self.stop_event.wait(idle_s):
                    return
                t0 = time.perf_counter()
                self.net.run_segment(x, 0, block, k, 1.0)
                lat = dict.fromkeys(LATENCY_KEYS, 0.0)
                lat["edge_compute"] = (time.perf_counter() - t0) * 1e3
                self.speed.update(block, k, 1.0, k, lat)
        if self.cloud.down:
            return
        for _ in range(self.policy.history):
            if self.stop_event.is_set():
                return
            self.cloud.probe_once()
            if self.cloud.down:
                return

    # ------------------------------------------------------------------ the loop

    def inputs(self) -> Iterator[Item]:
        cfg = self.config
        spec = cfg.source or default_source(self.bundle.manifest.dataset)
        m = self.bundle.manifest
        return open_source(spec, m.input_shape, rate=cfg.rate or 10.0, preprocessing=m.prep)

    def run(self, items: Iterator[Item] | None = None) -> RunSummary:
        """Process inputs until the source ends, ``max_inputs``, or :attr:`stop_event`."""
        cfg = self.config
        items = items if items is not None else self.inputs()
        log_file: IO[str] | None = None
        if cfg.log is not None:
            Path(cfg.log).parent.mkdir(parents=True, exist_ok=True)
            log_file = open(cfg.log, "a", buffering=1)  # noqa: SIM115 - closed in finally
        if cfg.metrics_port is not None:
            self.metrics_port = self.metrics.serve(cfg.metrics_port)
        self.prepare()
        prober = threading.Thread(
            target=self.cloud.probe_loop, args=(self.stop_event,), name="edgeml-probe", daemon=True
        )
        prober.start()
        if cfg.ready_file is not None:
            Path(cfg.ready_file).write_text(json.dumps({"pid": os.getpid()}) + "\n")
        while cfg.go_file is not None and not Path(cfg.go_file).exists():
            if self.stop_event.wait(0.005):
                break
        self._t0 = time.monotonic()
        try:
            for seq, (item, arrival) in enumerate(
                paced(items, cfg.rate, self.stop_event, cfg.max_inputs)
            ):
                rec = self.answer(item, arrival, seq)
                self.summary.add(rec)
                self.metrics.observe_input(rec)
                if log_file is not None:
                    log_file.write(strict_json(rec) + "\n")
        finally:
            self.stop_event.set()
            if cfg.ready_file is not None:
                Path(cfg.ready_file).unlink(missing_ok=True)
            prober.join(timeout=5.0)
            if log_file is not None:
                log_file.flush()
                log_file.close()
            self.metrics.close()
            self.cloud.close()
        return self.summary


def _load_bundle(cfg: EdgeConfig) -> Bundle:
    """The daemon's bundle: without its torch weights when the edge runs ONNX (no torch
    import), with them for a torch edge."""
    light = Bundle.load(cfg.bundle, weights=False)
    if light.manifest.edge_runtime(cfg.edge_runtime, cfg.edge_precision).startswith("onnx/"):
        return light
    return Bundle.load(cfg.bundle)


def run_edge(config: EdgeConfig) -> int:
    """Run a daemon in the foreground (``edgeml edge``): SIGTERM/SIGINT stop it cleanly.

    Prints one line when it starts taking inputs (``edgeml edge: running ...``) and the run's
    report when it stops.
    """
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s: finishing the input in flight", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        daemon = EdgeDaemon(config)
        daemon.stop_event = stop  # a signal during start-up ends the run before the first input
        daemon.check_cloud()
        print(
            f"edgeml edge: running policy {daemon.policy.name} against {config.cloud}, "
            f"edge slowdown x{config.edge_slowdown:g}",
            flush=True,
        )
        summary = daemon.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(summary.report(), flush=True)
    return 0
