"""Everything ``edgeml edge`` can set (:class:`EdgeConfig`), checked when it is made."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from edgeml.decision.scenario import Scenario
from edgeml.runtime.speed import PACES
from edgeml.transport.client import check_targets

__all__ = ["EdgeConfig"]

_D = Scenario()  # the scenario's defaults are the daemon's: written once, there


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
    :param pace: how the slowdown is applied (:class:`~edgeml.runtime.speed.Pacer`):
        ``measured`` (this machine's load slows the emulated edge too) or ``profile`` (the
        edge takes ``edge_slowdown`` x its profile whatever this machine runs: many emulated
        edges on one machine, ``edgeml fleet``).
    :param codec: tensor codec on the link.
    :param edge_runtime: onnx or torch runs the edge's blocks (None: onnx when the bundle
        has its ONNX files; then torch is never imported for the edge's own work).
    :param edge_precision: fp32 or int8 (int8: the bundle's quantised ONNX blocks).
    :param log: JSONL output path (None: no log).
    :param metrics_port: Prometheus ``/metrics`` port on 127.0.0.1 (None: off; 0: any).
    :param max_inputs: stop after this many inputs (None: run until stopped).
    :param rtt_ms: RTT assumed until measured; also what ``link_rtt_ms`` defaults to.
    :param link_trace: CSV trace: emulate the uplink in user space (``edgeml demo``).
    :param link_offset_s: where in the trace the run starts.
    :param link_rtt_ms: RTT added in user space (with or without ``link_trace``).
    :param probe_after_s: probe the link after this long without a measurement.
    :param probe_bytes: approximate size of a throughput probe (the int8 cut closest to it).
    :param token: bearer token for the cloud.
    :param root_ca: PEM CA of the cloud's certificate (enables TLS).
    :param tls_cert: PEM client certificate for mutual TLS (a server with ``--client-ca``).
    :param tls_key: PEM private key of ``tls_cert``.
    :param threads: intra-op threads of the edge's runtime (the edge is one core).
    :param grace_ms: how long past the deadline the edge still waits for the cloud before it
        answers locally (None: as long as the cheapest local answer would take, so waiting
        costs at most that; 0: give up at the deadline).
    :param reconnect_every_s: while the cloud is unreachable, try a fresh channel this often.
    :param ready_file: written (with the pid) once the daemon takes inputs, and removed when
        it stops: the readiness signal for a supervisor (``emulate``, a container probe).
    :param go_file: once ready, wait until this file exists before the first input (a
        supervisor starts many edges at once: ``edgeml fleet``).
    :param recheck_s: how often a replica taken out of rotation for other weights is asked
        for its model again (it returns once it runs the edge's).
    :param run: a label copied into every log line (e.g. the policy's name in the demo).
    :param seed: seed of the ``random`` policy.
    :param base_scenario: the rest of the scenario (``edgeml edge``'s scenario flags); the
        fields above override it, and the result is what the policy is checked against.
    """

    bundle: str | Path
    cloud: str
    policy: str
    source: str | None = None
    rate: float = _D.input_rate
    deadline_ms: float = _D.deadline_ms
    edge_slowdown: float = _D.edge_slowdown
    pace: str = "measured"
    codec: str = _D.codec
    edge_runtime: str | None = _D.edge_runtime
    edge_precision: str = _D.edge_precision
    log: str | Path | None = None
    metrics_port: int | None = None
    max_inputs: int | None = None
    rtt_ms: float = _D.rtt_ms
    link_trace: str | Path | None = None
    link_offset_s: float = 0.0
    link_rtt_ms: float | None = None
    probe_after_s: float = _D.probe_interval_s
    probe_bytes: int = int(_D.probe_bytes)
    token: str | None = None
    root_ca: str | Path | None = None
    tls_cert: str | Path | None = None
    tls_key: str | Path | None = None
    threads: int = 1
    grace_ms: float | None = _D.grace_ms
    reconnect_every_s: float = 0.5
    recheck_s: float = 2.0
    ready_file: str | Path | None = None
    go_file: str | Path | None = None
    run: str = ""
    seed: int = 0
    base_scenario: Scenario | None = None

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
        need("pace", self.pace in PACES, ", ".join(PACES))
        need("max_inputs", self.max_inputs is None or self.max_inputs >= 0, "an integer >= 0")
        need("metrics_port", self.metrics_port is None or 0 <= self.metrics_port <= 65535,
             "0..65535 (0: any free port)")  # fmt: skip
        need("tls_cert", (self.tls_cert is None) == (self.tls_key is None),
             "tls_cert and tls_key together (mutual TLS), or neither")  # fmt: skip
        check_targets(self.cloud)

    @property
    def scenario(self) -> Scenario:
        """The decision core's scenario of this daemon (what its policy plans for)."""
        return replace(
            self.base_scenario or _D,
            bundle=str(self.bundle), codec=self.codec, edge_slowdown=self.edge_slowdown,
            edge_runtime=self.edge_runtime, edge_precision=self.edge_precision,
            rtt_ms=self.rtt_ms, deadline_ms=self.deadline_ms, grace_ms=self.grace_ms,
            input_rate=self.rate or 10.0, probe_interval_s=self.probe_after_s,
            probe_bytes=float(self.probe_bytes),
        )  # fmt: skip
