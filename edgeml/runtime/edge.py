"""The edge daemon: its start-up, its loop over the inputs, and ``edgeml edge``.

An :class:`EdgeDaemon` loads the bundle and its edge runtime (:mod:`.edge_net`), the policy
and the link to the cloud (:mod:`.cloud_link`, with its background prober), warms up and
measures itself before the first input (:meth:`EdgeDaemon.prepare`), then hands each input
of its source to :class:`~.edge_input.InputPath` (observe, decide, run, offload or fall back)
and writes the record it gets back as one JSON line (:mod:`.records`) and to its Prometheus
metrics (:mod:`.metrics`); configuration is :mod:`.edge_config`.

The daemon runs until its source ends, ``max_inputs`` were answered, or SIGTERM/SIGINT;
a signal lets the input in flight finish, flushes the log and exits 0.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np

from edgeml.bundle import Bundle
from edgeml.decision.policies import Policy, World, make_policy
from edgeml.partition.codecs import encode
from edgeml.runtime.cloud_link import CloudLink
from edgeml.runtime.edge_config import EdgeConfig
from edgeml.runtime.edge_input import InputPath
from edgeml.runtime.edge_net import EdgeNet, describe, load_edge_net
from edgeml.runtime.metrics import EdgeMetrics
from edgeml.runtime.records import (
    FALLBACK_REASONS,
    LATENCY_KEYS,
    LOG_SCHEMA,
    RunSummary,
    strict_json,
)
from edgeml.runtime.sources import Item, default_source, open_source, paced
from edgeml.runtime.speed import SpeedTracker
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
    """One edge: bundle, runtime, policy, link to the cloud, log, metrics.

    ``client`` and ``bundle`` may be passed in (the demo shares one bundle across runs).
    :attr:`path` answers each input; its policy, state and cost model are this daemon's.
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
        world = World.from_bundle(self.bundle, cfg.scenario)
        self.cost, self.rule = world.cost, world.rule
        policy: Policy = make_policy(
            cfg.policy, world, device=True, bundle_sha256=self.bundle.weights_sha256,
            seed=cfg.seed,
        )  # fmt: skip
        policy.reset(cfg.seed)
        self.metrics = EdgeMetrics(cfg.edge_slowdown)
        self.cloud = CloudLink(cfg, self.bundle, self.cost, self.metrics, policy.history, client)
        self.path = InputPath(cfg, self.bundle, self.net, world, policy, self.cloud)
        self.state, self.speed = self.path.state, self.path.speed
        self.stop_event = threading.Event()
        self.summary = RunSummary(cfg.run, policy.name, cfg.scenario)

    @property
    def policy(self) -> Policy:
        """The policy that decides each input (set it to drive the daemon by another)."""
        return self.path.policy

    @policy.setter
    def policy(self, policy: Policy) -> None:
        self.path.policy = policy

    def check_cloud(self, timeout_s: float = 5.0) -> bool:
        """See :meth:`CloudLink.check_cloud` (a cloud with other weights is refused)."""
        return self.cloud.check_cloud(timeout_s)

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
        # The source's set-up (a dataset to load, the first frame to make) before ready:
        # else the first input starts that long after the go, and edges started at set
        # phases (a live fleet) lose them while they run behind the frame grid.
        first = next(items, None)
        items = itertools.chain([first] if first is not None else [], items)
        prober = threading.Thread(
            target=self.cloud.probe_loop, args=(self.stop_event,), name="edgeml-probe", daemon=True
        )
        prober.start()
        if cfg.ready_file is not None:
            Path(cfg.ready_file).write_text(json.dumps({"pid": os.getpid()}) + "\n")
        while cfg.go_file is not None and not Path(cfg.go_file).exists():
            if self.stop_event.wait(0.005):
                break
        self.path.t0 = time.monotonic()
        if self.cloud.link is not None:  # the inputs start the trace at --link-offset-s
            self.cloud.link.anchor(self.path.t0)
        try:
            for seq, (item, arrival) in enumerate(
                paced(items, cfg.rate, self.stop_event, cfg.max_inputs)
            ):
                rec = self.path.answer(item, arrival, seq)
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
