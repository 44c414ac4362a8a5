"""The edge daemon: per input, observe, decide ``(s, e, tau)``, run the head, offload or not.

For every input of its source the daemon

1. estimates its edge load (how much slower than profiled its core computes now: psutil's
   reading of other processes, or its own measured compute speed, whichever is higher)
   and the input's cheap difficulty feature, and builds the agent's observation from its
   own measurements (:mod:`.observation`);
2. asks the policy for ``(split, exit, tau)``;
3. runs blocks ``1..s`` with the early-exit rule (:func:`~edgeml.progressive.infer.run_segment`),
   then encodes the tensor; the emulated edge slowdown is applied honestly: after measuring
   the compute it sleeps ``(factor - 1) x`` that time;
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
A background thread probes the link when nothing was measured for ``probe_after_s`` (a
health ping for the RTT and a ~``probe_bytes`` request for the throughput), as the
simulator's edge does, so a policy that stays local does not blind itself.

The daemon runs until its source ends, ``max_inputs`` were answered, or SIGTERM/SIGINT;
a signal lets the input in flight finish, flushes the log and exits 0.

Log schema (``edgeml.edge/1``), one object per input::

    schema, run, seq, input, t_unix, t_s, wait_ms, policy,
    action {split, exit, tau, codec}, where ("edge" | "cloud" | "fallback" | "error"),
    error (null | why the input got no answer), answer {class_id, confidence, exit_index,
    exit_block}, label, level, correct,
    offloaded, fallback, fallback_reason (null | "deadline" | "unavailable" | "error" |
    "mismatch"), bytes, deadline_ms, in_deadline, timely,
    latency_ms {total, decide, edge_compute, encode, slowdown_sleep, uplink, network,
                cloud_queue, cloud_decode, cloud_compute, fallback_compute},
    edge_slowdown, cpu_load, edge_load, bw_estimate_mbps, rtt_estimate_ms, link_mbps,
    trace_s, cloud_batch, edge_speed, cloud_speed

Latency stages add up to ``total`` (up to bookkeeping): ``network`` is everything between
handing the request over and having the reply, minus the server's own time; ``uplink`` is
the part of it spent in the emulated uplink (0 on a real network). ``slowdown_sleep`` is
the emulated edge slowness, ``(edge_slowdown - 1) x`` the measured edge compute.
``edge_speed``/``cloud_speed`` are measured over profiled compute so far (see
:class:`SpeedTracker`). ``cpu_load`` is psutil's reading (:class:`CpuLoad`); ``edge_load``
is what the policy and the fallback timing used, ``max(cpu_load, edge_speed - 1)``.
``t_s`` is seconds since the daemon started (monotonic); ``timely`` is ``correct and
in_deadline`` (null without a label); ``link_mbps`` and ``trace_s`` are the emulated
link's bandwidth and trace position when the input started (null on a real network).

An input the network cannot take (another shape, a NaN or infinite pixel) or whose
processing failed still gets its line: ``where`` is ``"error"``, ``error`` names the
reason, ``action`` and ``answer`` are null, and it counts as wrong and late. The log is
strict JSON (no NaN).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
import numpy as np
import psutil
import torch

from edgeml.bundle import Bundle
from edgeml.data.features import difficulty_feature
from edgeml.decision.metrics import summarize
from edgeml.decision.policies import Policy, World, make_policy
from edgeml.decision.scenario import Scenario
from edgeml.partition.codecs import encode
from edgeml.partition.cost import CostModel
from edgeml.progressive.infer import Answer, run_segment
from edgeml.runtime.estimator import BandwidthEstimator, EstimatorConfig
from edgeml.runtime.link import LinkTimeout, TraceLink
from edgeml.runtime.metrics import EdgeMetrics
from edgeml.runtime.sources import Item, default_source, open_source, paced
from edgeml.transport.client import (
    ClientConfig,
    DeadlineExpired,
    EdgeClient,
    OffloadError,
    WeightsMismatchError,
    check_targets,
)

log = logging.getLogger(__name__)

__all__ = ["LOG_SCHEMA", "EdgeConfig", "EdgeDaemon", "RunSummary", "run_edge"]

LOG_SCHEMA = "edgeml.edge/1"
LATENCY_KEYS = (
    "total", "decide", "edge_compute", "encode", "slowdown_sleep", "uplink", "network",
    "cloud_queue", "cloud_decode", "cloud_compute", "fallback_compute",
)  # fmt: skip
FALLBACK_REASONS = ("deadline", "unavailable", "error", "mismatch")


@dataclass
class EdgeConfig:
    """Everything ``edgeml edge`` can set; the defaults are the CLI's.

    :param bundle: bundle directory (must hold ``profile.json``: the fallback and the
        baselines plan with the cost model).
    :param cloud: ``HOST:PORT[,HOST:PORT...]`` (round-robin over several replicas).
    :param policy: exported actor ``.npz``/``.zip``, a baseline name, or ``fixed:S,E,TAU``.
    :param source: ``--source`` spec (None: the stream matching the bundle's dataset).
    :param rate: inputs per second (0: as fast as possible).
    :param deadline_ms: an answer later than this is a miss; also the offload's deadline.
    :param edge_slowdown: emulated edge slowness; the daemon sleeps ``factor - 1`` times its
        measured compute. 1 means this machine is the edge.
    :param codec: tensor codec on the link.
    :param log: JSONL output path (None: no log).
    :param metrics_port: Prometheus ``/metrics`` port on 127.0.0.1 (None: off; 0: any).
    :param max_inputs: stop after this many inputs (None: run until stopped).
    :param rtt_ms: RTT assumed until measured; also what ``link_rtt_ms`` defaults to.
    :param link_trace: CSV trace: emulate the uplink in user space (``edgeml demo``).
    :param link_offset_s: where in the trace the run starts.
    :param link_rtt_ms: RTT added in user space (with or without ``link_trace``).
    :param probe_after_s: probe the link after this long without a measurement.
    :param probe_bytes: approximate size of a throughput probe.
    :param token: bearer token for the cloud.
    :param root_ca: PEM CA of the cloud's certificate (enables TLS).
    :param tls_cert: PEM client certificate for mutual TLS (a server with ``--client-ca``).
    :param tls_key: PEM private key of ``tls_cert``.
    :param threads: torch intra-op threads (the edge is one core).
    :param grace_ms: how long past the deadline the edge still waits for the cloud before it
        answers locally (None: as long as the cheapest local answer would take, so waiting
        costs at most that; 0: give up at the deadline).
    :param reconnect_every_s: while the cloud is unreachable, try a fresh channel this often.
    :param ready_file: written (with the pid) once the daemon takes inputs, and removed when
        it stops: the readiness signal for a supervisor (``emulate``, a container probe).
    :param recheck_s: how often a replica taken out of rotation for other weights is asked
        for its model again (it returns once it runs the edge's).
    :param run: a label copied into every log line (e.g. the policy's name in the demo).
    :param seed: seed of the ``random`` policy.
    """

    bundle: str | Path
    cloud: str
    policy: str
    source: str | None = None
    rate: float = 10.0
    deadline_ms: float = 100.0
    edge_slowdown: float = 12.0
    codec: str = "int8"
    log: str | Path | None = None
    metrics_port: int | None = None
    max_inputs: int | None = None
    rtt_ms: float = 40.0
    link_trace: str | Path | None = None
    link_offset_s: float = 0.0
    link_rtt_ms: float | None = None
    probe_after_s: float = 1.0
    probe_bytes: int = 4000
    token: str | None = None
    root_ca: str | Path | None = None
    tls_cert: str | Path | None = None
    tls_key: str | Path | None = None
    threads: int = 1
    grace_ms: float | None = None
    reconnect_every_s: float = 0.5
    recheck_s: float = 2.0
    ready_file: str | Path | None = None
    run: str = ""
    seed: int = 0

    def __post_init__(self) -> None:
        def need(name: str, ok: bool, allowed: str) -> None:
            if not ok:
                raise ValueError(f"{name}: {getattr(self, name)!r}; allowed: {allowed}")

        def finite(name: str, low: float, strict: bool = False, optional: bool = False) -> None:
            v = getattr(self, name)
            if optional and v is None:
                return
            ok = isinstance(v, int | float) and math.isfinite(v)
            ok = ok and (v > low if strict else v >= low)
            need(name, ok, f"a finite number {'>' if strict else '>='} {low:g}")

        finite("edge_slowdown", 1.0)  # sleeping can only add time
        finite("deadline_ms", 0.0, strict=True)
        finite("rate", 0.0)
        finite("rtt_ms", 0.0)
        finite("link_offset_s", 0.0)
        finite("probe_after_s", 0.0, strict=True)
        finite("reconnect_every_s", 0.0, strict=True)
        finite("recheck_s", 0.0, strict=True)
        finite("grace_ms", 0.0, optional=True)
        finite("link_rtt_ms", 0.0, optional=True)
        need("threads", self.threads >= 1, "an integer >= 1")
        need("max_inputs", self.max_inputs is None or self.max_inputs >= 0, "an integer >= 0")
        need("metrics_port", self.metrics_port is None or 0 <= self.metrics_port <= 65535,
             "0..65535 (0: any free port)")  # fmt: skip
        need("tls_cert", (self.tls_cert is None) == (self.tls_key is None),
             "tls_cert and tls_key together (mutual TLS), or neither")  # fmt: skip
        check_targets(self.cloud)

    @property
    def scenario(self) -> Scenario:
        """The decision core's scenario of this daemon (what its policy plans for)."""
        return Scenario(
            bundle=str(self.bundle), codec=self.codec, edge_slowdown=self.edge_slowdown,
            rtt_ms=self.rtt_ms, deadline_ms=self.deadline_ms, grace_ms=self.grace_ms,
            input_rate=self.rate or 10.0, probe_interval_s=self.probe_after_s,
            probe_bytes=float(self.probe_bytes),
        )  # fmt: skip


@dataclass
class RunSummary:
    """What a run did, for the CLI's report and the demo's table: the decision core's
    :func:`~edgeml.decision.metrics.summarize` of its records, plus the live-only counts."""

    run: str
    policy: str
    scenario: Scenario
    rows: list[dict[str, Any]] = field(default_factory=list, repr=False)
    offloaded: int = 0
    fallbacks: int = 0
    errors: int = 0

    @property
    def inputs(self) -> int:
        return len(self.rows)

    @property
    def edge_slowdown(self) -> float:
        return self.scenario.edge_slowdown

    def add(self, rec: dict[str, Any]) -> None:
        self.errors += rec["where"] == "error"
        self.offloaded += bool(rec["offloaded"])
        self.fallbacks += bool(rec["fallback"])
        self.rows.append({
            "correct": rec["correct"], "latency_ms": rec["latency_ms"]["total"],
            "bytes": rec["bytes"], "answered": rec["where"] != "error",
        })  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        n = max(self.inputs, 1)
        return {
            "run": self.run, "policy": self.policy, "edge_slowdown": self.edge_slowdown,
            "inputs": self.inputs, **summarize(self.rows, self.scenario),
            "offload_rate": self.offloaded / n, "fallbacks": self.fallbacks,
            "errors": self.errors,
        }  # fmt: skip

    def report(self) -> str:
        d = self.as_dict()
        ta = "n/a" if d["timely_accuracy"] is None else f"{d['timely_accuracy']:.3f}"
        mean = d["latency_ms_mean"] or 0.0
        p95 = d["latency_ms_p95"] or 0.0
        return (
            f"{self.run or self.policy}: {self.inputs} inputs, timely accuracy {ta}, "
            f"latency mean {mean:.1f} ms p95 {p95:.1f} ms, "
            f"{d['bytes_sent_mean'] or 0:.0f} B/input, "
            f"offloaded {d['offload_rate']:.0%}, fallbacks {self.fallbacks}, "
            f"unanswered {self.errors}; "
            f"edge slowdown x{self.edge_slowdown:g} (applied by sleeping)"
        )


class CpuLoad:
    """Background CPU load the edge core sees, from psutil (the env's ``edge_load``).

    The cost model slows edge compute by ``1 + load``. Two psutil readings, the larger wins:

    * run-queue demand: with ``D`` runnable threads on ``n`` cores (1-minute load average)
      a thread gets ``n / D`` of a core, so ``load = D / n - 1``: slow to react, but it
      sees contention beyond 100% busy;
    * busy cores: other processes' busy cores beyond the ``n - 1`` the edge does not use,
      ``load = others - (n - 1)`` (on a one-core device: the share others take): quick,
      but it saturates at 1.
    """

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self._n = psutil.cpu_count() or 1
        psutil.cpu_percent(None)
        self._proc.cpu_percent(None)

    def sample(self) -> float:
        busy = psutil.cpu_percent(None) / 100.0 * self._n
        own = self._proc.cpu_percent(None) / 100.0
        by_busy = busy - own - (self._n - 1)
        by_queue = psutil.getloadavg()[0] / self._n - 1.0
        return round(max(0.0, by_busy, by_queue), 3)


def _sleep_extra(compute_s: float, factor: float) -> float:
    """Sleep the extra time a ``factor`` x slower edge would have needed; returns it (s)."""
    extra = max(compute_s, 0.0) * (factor - 1.0)
    if extra > 0:
        time.sleep(extra)
    return extra


class SpeedTracker:
    """How fast edge and cloud really compute, relative to the profile (1.0 = as profiled).

    Ratios of running sums (EWMA) over the inputs so far, measured over profiled compute:
    on the edge (blocks and heads, before the emulated slowdown) and in the cloud (decode
    and blocks, as the server reports them). Summing before dividing weighs each input by
    its work. Inputs that ran no block on the edge (split 0) leave the edge ratio alone:
    their encoding takes microseconds dominated by fixed overheads, 5x its profile, and a
    stream of them once drove the ratio (and so the edge load) to 5. Logged with every
    input as known *before* it, so a prediction that uses them stays causal.

    The edge ratio also feeds the edge load the policy sees. In the simulator that load
    means "edge compute runs ``1 + load`` times the profile", and a core that idles between
    inputs, as a camera's does, runs each one from cold caches: on the development VM the
    daemon measured 1.2-1.5x the back-to-back profile with nothing else running, which
    psutil cannot see and which made the policy pick edge work that missed the deadline.
    """

    def __init__(self, cost: CostModel, codec: str, alpha: float = 0.1) -> None:
        self.cost, self.codec, self.alpha = cost, codec, alpha
        self._edge = [0.0, 0.0]  # EWMA of measured ms, of profiled ms
        self._cloud = [0.0, 0.0]

    @staticmethod
    def _ratio(acc: list[float]) -> float:
        return min(max(acc[0] / acc[1], 0.1), 20.0) if acc[1] > 0 else 1.0

    @property
    def edge(self) -> float:
        return self._ratio(self._edge)

    @property
    def cloud(self) -> float:
        return self._ratio(self._cloud)

    def _mix(self, acc: list[float], measured: float, profiled: float) -> None:
        if acc[1] == 0:
            acc[0], acc[1] = measured, profiled
        else:
            acc[0] += self.alpha * (measured - acc[0])
            acc[1] += self.alpha * (profiled - acc[1])

    def update(self, s: int, e: int, tau: float, stop: int, lat: dict[str, float]) -> None:
        b = self.cost.breakdown(s, e, stop, tau >= 1.0, self.codec, 0.0)
        edge_prof = b.edge_ms / self.cost.edge_slowdown
        if edge_prof > 0:  # blocks ran; encoding alone is fixed overheads, not the core's speed
            self._mix(self._edge, lat["edge_compute"], edge_prof)
        served = lat["cloud_compute"] + lat["cloud_decode"]
        if b.offloaded and served > 0:
            self._mix(self._cloud, served, b.cloud_ms + b.decode_ms)


class EdgeDaemon:
    """One edge: bundle, policy, client, estimator, link emulation, log, metrics.

    ``client`` and ``bundle`` may be passed in (the demo shares one bundle across runs).
    """

    def __init__(
        self, config: EdgeConfig, bundle: Bundle | None = None, client: EdgeClient | None = None
    ) -> None:
        self.config = cfg = config
        torch.set_num_threads(cfg.threads)
        self.bundle = bundle or Bundle.load(cfg.bundle)
        if self.bundle.profile is None:
            raise ValueError(
                f"{self.bundle.path}: no profile.json; run `edgeml profile {self.bundle.path}`"
            )
        self.net = self.bundle.net.eval()
        self.world = World.from_bundle(self.bundle, cfg.scenario)
        self.cost: CostModel = self.world.cost
        self.rule = self.world.rule
        self.policy: Policy = make_policy(
            cfg.policy, self.world, device=True, bundle_sha256=self.bundle.weights_sha256,
            seed=cfg.seed,
        )  # fmt: skip
        self.policy.reset(cfg.seed)
        self.state = self.world.knowledge(self.policy.history)
        self.estimator = BandwidthEstimator(
            EstimatorConfig(
                window=self.policy.history, probe_after_s=cfg.probe_after_s,
                prior_rtt_ms=cfg.rtt_ms, min_bytes=512,
            )
        )  # fmt: skip
        self._est_lock = threading.Lock()
        self.link = self._make_link()
        self.client = client or self._new_client()
        self._own_client = client is None
        self._old_clients: list[EdgeClient] = []
        self._cloud_down = False
        self._last_reconnect = 0.0
        self._overhead = 160  # request bytes beyond the tensor's; learnt from the first reply
        self.speed = SpeedTracker(self.cost, cfg.codec)
        self.metrics = EdgeMetrics(cfg.edge_slowdown)
        self.load = CpuLoad()
        self.stop_event = threading.Event()
        self.summary = RunSummary(cfg.run, self.policy.name, cfg.scenario)
        self._t0 = time.monotonic()
        self._probe_split = self._pick_probe_split()

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

    def _note_cloud(self, up: bool) -> None:
        self._cloud_down = not up

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
        self._cloud_down = False

    def _pick_probe_split(self) -> int:
        """The split whose tensor (in int8) is closest to ``probe_bytes``, below the last."""
        sizes = (
            self.cost.bytes[self.cost.codec_index("int8")] if "int8" in self.cost.codecs else None
        )
        if sizes is None:
            return 0
        cands = range(self.cost.num_blocks)  # split N sends nothing
        return min(cands, key=lambda s: abs(sizes[s] - self.config.probe_bytes))

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
            self._cloud_down = True
            log.warning("cloud %s not reachable yet (%s); answering locally until it is",
                        self.config.cloud, exc)  # fmt: skip
            return False

    # ------------------------------------------------------------------ one input

    def _now_s(self) -> float:
        return time.monotonic() - self._t0

    def _fallback(
        self, hidden: torch.Tensor, s: int, e: int, tau: float, deadline: float, load: float
    ) -> tuple[Answer, float, float]:
        """Answer locally from the deepest exit past ``s`` that fits before ``deadline``.

        Returns the answer, its compute time and the slowdown sleep (seconds).
        """
        cost = self.cost
        elapsed_ms = self.config.deadline_ms - (deadline - time.monotonic()) * 1e3
        k = self.rule.fallback_exit(s, e, elapsed_ms, load)
        t0 = time.perf_counter()
        res = run_segment(self.net, hidden, s, cost.exits[k], k, tau)
        compute = time.perf_counter() - t0
        answer = res.answers[0]
        assert answer is not None  # run_segment always answers at exit k
        return answer, compute, _sleep_extra(compute, cost.edge_slowdown)

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
        return {
            "schema": LOG_SCHEMA, "run": self.config.run, "seq": seq, "input": item.name,
            "t_unix": time.time(), "t_s": start - self._t0,
            "wait_ms": max(0.0, (start - arrival) * 1e3), "policy": self.policy.name,
            "action": None, "where": "error", "error": reason, "answer": None,
            "label": item.label, "level": item.level,
            "correct": None if item.label is None else False, "offloaded": False,
            "fallback": False, "fallback_reason": None, "bytes": 0,
            "deadline_ms": self.config.deadline_ms, "in_deadline": False,
            "timely": None if item.label is None else False,
            "latency_ms": {k: round(v, 3) for k, v in lat.items()},
            "edge_slowdown": self.config.edge_slowdown, "cpu_load": None, "edge_load": None,
            "bw_estimate_mbps": None, "rtt_estimate_ms": None, "link_mbps": None,
            "trace_s": None, "cloud_batch": None, "edge_speed": None, "cloud_speed": None,
        }  # fmt: skip

    def process(self, item: Item, arrival: float, seq: int) -> dict[str, Any]:
        """Answer one input; never raises for a cloud problem (falls back instead)."""
        cfg = self.config
        start = time.monotonic()
        deadline = start + cfg.deadline_ms / 1e3
        lat = dict.fromkeys(LATENCY_KEYS, 0.0)
        cpu_load = self.load.sample()
        edge_speed, cloud_speed = self.speed.edge, self.speed.cloud  # known before this input
        load = max(cpu_load, edge_speed - 1.0)
        st = self.state
        st.edge_load = load
        st.feature = float(difficulty_feature(item.x, self.bundle.manifest.difficulty_feature)[0])
        with self._est_lock:
            st.set_measurements([(s.t, s.mbps) for s in self.estimator.samples()])
            st.rtt_ms = self.estimator.rtt_ms()
            bw_est = self.estimator.mbps()
        st.now_s = start
        link_mbps = self.link.mbps_now(start) if self.link and self.link.trace else None
        trace_s = self.link.trace_time(start) if self.link and self.link.trace else None

        t0 = time.perf_counter()
        s, e, ti = action = self.policy.act(st)
        tau = action.tau
        lat["decide"] = (time.perf_counter() - t0) * 1e3

        x = torch.from_numpy(item.x)
        t0 = time.perf_counter()
        res = run_segment(self.net, x, 0, s, e, tau)
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
            lat["slowdown_sleep"] = _sleep_extra(compute + enc_s, cfg.edge_slowdown) * 1e3
            grace = self.rule.grace_ms(s, e, load)
            answer, where, fallback_reason, nbytes, batch = self._offload(
                enc, res.hidden, s, e, tau, deadline, deadline + grace / 1e3, load, lat
            )
        else:
            lat["slowdown_sleep"] = _sleep_extra(compute, cfg.edge_slowdown) * 1e3
        end = time.monotonic()
        lat["total"] = (end - start) * 1e3
        in_deadline = end <= deadline
        if where != "fallback":
            self.speed.update(s, e, tau, answer.exit_index, lat)
        correct = None if item.label is None else answer.class_id == item.label
        offloaded = where == "cloud"
        st.record_answer(lat["total"], answer.confidence, answer.exit_index, where != "edge")
        rec: dict[str, Any] = {
            "schema": LOG_SCHEMA, "run": cfg.run, "seq": seq, "input": item.name,
            "t_unix": time.time() - (end - start), "t_s": start - self._t0,
            "wait_ms": max(0.0, (start - arrival) * 1e3), "policy": self.policy.name,
            "action": {"split": s, "exit": e, "tau": tau, "codec": cfg.codec},
            "where": where, "error": None,
            "answer": {
                "class_id": answer.class_id, "confidence": round(answer.confidence, 5),
                "exit_index": answer.exit_index, "exit_block": answer.exit_block,
            },
            "label": item.label, "level": item.level, "correct": correct,
            "offloaded": offloaded, "fallback": fallback_reason is not None,
            "fallback_reason": fallback_reason, "bytes": nbytes,
            "deadline_ms": cfg.deadline_ms, "in_deadline": in_deadline,
            "timely": None if correct is None else bool(correct and in_deadline),
            "latency_ms": {k: round(v, 3) for k, v in lat.items()},
            "edge_slowdown": cfg.edge_slowdown, "cpu_load": cpu_load,
            "edge_load": round(load, 4),
            "bw_estimate_mbps": None if bw_est is None else round(bw_est, 4),
            "rtt_estimate_ms": round(st.rtt_ms, 3),
            "link_mbps": link_mbps, "trace_s": None if trace_s is None else round(trace_s, 3),
            "cloud_batch": batch, "edge_speed": round(edge_speed, 4),
            "cloud_speed": round(cloud_speed, 4),
        }  # fmt: skip
        return rec

    def _offload(
        self,
        enc: Any,
        hidden: torch.Tensor,
        s: int,
        e: int,
        tau: float,
        deadline: float,
        give_up: float,
        load: float,
        lat: dict[str, float],
    ) -> tuple[Answer, str, str | None, int, int | None]:
        """Send to the cloud and wait for it until ``give_up``; on any failure answer locally
        (deepest exit that fits before ``deadline``). Returns (answer, where, fallback
        reason, bytes sent, cloud batch size)."""
        t_send = time.monotonic()
        nbytes = int(enc.nbytes) + self._overhead  # the exact size comes with the reply
        reason: str | None = None
        sent = t_send < give_up  # too late already: nothing leaves, nothing learnt
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
            self._note_cloud(reason is None)
        if reason is None:
            self._overhead = result.sent_bytes - int(enc.nbytes)
            total_s = time.monotonic() - t_send
            lat["network"] = max(total_s * 1e3 - result.server_ms, 0.0)
            lat["cloud_queue"] = result.queue_ms
            lat["cloud_decode"] = result.decode_ms
            lat["cloud_compute"] = result.compute_ms
            with self._est_lock:
                self.estimator.observe(result.sent_bytes, max(total_s - result.server_ms / 1e3, 0))
            answer = Answer(
                result.class_id, result.confidence, result.exit_index, result.exit_block
            )
            return answer, "cloud", None, result.sent_bytes, result.batch_size
        elapsed = time.monotonic() - t_send
        lat["network"] = elapsed * 1e3
        if reason == "deadline" and sent:
            with self._est_lock:
                self.estimator.observe_timeout(nbytes, elapsed)
        answer, compute, extra = self._fallback(hidden, s, e, tau, deadline, load)
        lat["fallback_compute"] = compute * 1e3
        lat["slowdown_sleep"] += extra * 1e3
        return answer, "fallback", reason, nbytes if reason == "deadline" and sent else 0, None

    # ------------------------------------------------------------------ probes

    def _probe_once(self) -> None:
        """A health ping (RTT) and a ~probe_bytes request (throughput) over the link."""
        with self._est_lock:
            self.estimator.mark_probe()
        deadline_s = 1.0
        try:
            t0 = time.monotonic()
            if self.link is not None:
                self.link.send(64, t0 + deadline_s)
            self.client.wait_ready(deadline_s)
            if self.link is not None:
                self.link.receive(t0 + deadline_s)
            with self._est_lock:
                self.estimator.observe(64, time.monotonic() - t0)
            p = self._probe_split
            shape = (1, *self.bundle.manifest.cut_points[p].shape)
            enc = encode(np.zeros(shape, np.float32), "int8")
            t0 = time.monotonic()
            dl = t0 + deadline_s
            if self.link is not None:
                self.link.send(int(enc.nbytes) + self._overhead, dl)
            last = len(self.cost.exits) - 1
            r = self.client.infer(enc, p, last, 1.0, "int8", deadline=dl)
            if self.link is not None:
                self.link.receive(dl)
            with self._est_lock:
                self.estimator.observe(r.sent_bytes, time.monotonic() - t0 - r.server_ms / 1e3)
            self.metrics.bytes_sent.inc(r.sent_bytes)
            self.metrics.probes.labels("ok").inc()
            self._note_cloud(True)
        except (OffloadError, LinkTimeout) as exc:
            if isinstance(exc, OffloadError) and exc.code in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            ):
                self._note_cloud(False)
            self.metrics.probes.labels("failed").inc()
            log.debug("probe failed: %s", exc)

    def _probe_loop(self) -> None:
        while not self.stop_event.wait(0.05):
            if self._own_client and self._cloud_down:
                # While down, the fresh-channel attempt is the probe: a probe on the old
                # channel would block this loop for its whole deadline and push the next
                # attempt (and so the resume after a restart) back by a second or more.
                if time.monotonic() - self._last_reconnect >= self.config.reconnect_every_s:
                    self._reconnect()
                continue
            self.client.recheck(self.config.recheck_s)
            with self._est_lock:
                due = self.estimator.should_probe()
            if due:
                self._probe_once()

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
        x = torch.zeros((1, *self.bundle.manifest.input_shape))
        for _ in range(rounds):
            for k, block in enumerate(self.cost.exits):
                run_segment(self.net, x, 0, block, k, 1.0)
            for cut in self.bundle.manifest.cut_points[: self.cost.num_blocks]:
                encode(np.zeros((1, *cut.shape), np.float32), cfg.codec)
        idle_s = min(1.0 / cfg.rate, 0.1) if cfg.rate > 0 else 0.0
        for _ in range(rounds):
            for k, block in enumerate(self.cost.exits):
                if self.stop_event.wait(idle_s):
                    return
                t0 = time.perf_counter()
                run_segment(self.net, x, 0, block, k, 1.0)
                lat = dict.fromkeys(LATENCY_KEYS, 0.0)
                lat["edge_compute"] = (time.perf_counter() - t0) * 1e3
                self.speed.update(block, k, 1.0, k, lat)
        if self._cloud_down:
            return
        for _ in range(self.policy.history):
            if self.stop_event.is_set():
                return
            self._probe_once()
            if self._cloud_down:
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
        prober = threading.Thread(target=self._probe_loop, name="edgeml-probe", daemon=True)
        prober.start()
        self._t0 = time.monotonic()
        if cfg.ready_file is not None:
            Path(cfg.ready_file).write_text(json.dumps({"pid": os.getpid()}) + "\n")
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
            if self._own_client:
                for c in [*self._old_clients, self.client]:
                    c.close()
        return self.summary


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


def _finite(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v


def strict_json(rec: dict[str, Any]) -> str:
    """One log line of strict JSON: a NaN or infinity (a model that overflowed) is null."""
    return json.dumps(_finite(rec), allow_nan=False)


def config_dict(config: EdgeConfig) -> dict[str, Any]:
    d = asdict(config)
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}
