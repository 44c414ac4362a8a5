"""The kernel-shaped link of ``edgeml emulate``: two network namespaces joined by a veth
pair, and a tbf on the edge's egress whose rate follows a bandwidth trace.

Layout (needs root and iproute2)::

    netns eml-c-<pid>                          netns eml-e-<pid>
    edgeml serve  10.77.0.1  <--- veth --->  10.77.0.2  edgeml edge
                                              egress: tc tbf, rate set every second
                                              from the trace (the uplink)

:class:`Shaper` changes the tbf rate once per second to follow the trace (a 0 Mbps second
becomes the smallest rate tbf takes, 8 kbit/s: an outage). Namespaces whose creating
process died are swept (:func:`sweep_stale`) before new ones are made.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)

__all__ = [
    "CLOUD_IP", "EDGE_IP", "EmulationError", "Netns", "Shaper", "run_cmd", "sweep_stale",
    "tbf_args",
]  # fmt: skip

PREFIX = "eml-"
CLOUD_IP, EDGE_IP = "10.77.0.1", "10.77.0.2"
MIN_RATE_KBIT = 8  # tbf needs a positive rate: an outage becomes 1 kB/s
LIMIT_BYTES = 4_000_000  # queue: large enough that tbf delays rather than drops


class EmulationError(RuntimeError):
    """The sandbox does not allow part of the emulation; the message has the exact error."""


def run_cmd(cmd: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command; with ``check`` a failure raises :class:`EmulationError` with its stderr."""
    res = subprocess.run(list(cmd), capture_output=True, text=True)
    if check and res.returncode != 0:
        raise EmulationError(f"`{' '.join(cmd)}` failed ({res.returncode}): {res.stderr.strip()}")
    return res


def tbf_args(mbps: float) -> list[str]:
    """``tc`` arguments of a tbf at ``mbps``: a burst of ~1 ms (at least one packet)."""
    kbit = max(int(round(mbps * 1000)), MIN_RATE_KBIT)
    burst = max(1600, int(kbit * 1000 / 8 * 0.001))
    return ["tbf", "rate", f"{kbit}kbit", "burst", str(burst), "limit", str(LIMIT_BYTES)]


class Netns:
    """Two namespaces joined by a veth pair, with a tbf on the edge's egress."""

    def __init__(self, tag: str | None = None) -> None:
        tag = tag or str(os.getpid())
        self.cloud, self.edge = f"{PREFIX}c-{tag}", f"{PREFIX}e-{tag}"
        short = tag[-8:]
        self.cloud_if, self.edge_if = f"emc{short}", f"eme{short}"
        self._created: list[str] = []
        self._lock = threading.Lock()

    def up(self) -> None:
        if os.geteuid() != 0:
            raise EmulationError("edgeml emulate needs root (network namespaces and tc)")
        for tool in ("ip", "tc"):
            if shutil.which(tool) is None:
                raise EmulationError(f"`{tool}` not found: apt-get install -y iproute2")
        sweep_stale()
        for ns in (self.cloud, self.edge):
            run_cmd(["ip", "netns", "add", ns])
            self._created.append(ns)
        run_cmd(["ip", "link", "add", self.cloud_if, "type", "veth", "peer", "name", self.edge_if])
        run_cmd(["ip", "link", "set", self.cloud_if, "netns", self.cloud])
        run_cmd(["ip", "link", "set", self.edge_if, "netns", self.edge])
        for ns, dev, ip in (
            (self.cloud, self.cloud_if, CLOUD_IP),
            (self.edge, self.edge_if, EDGE_IP),
        ):
            run_cmd(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev])
            run_cmd(["ip", "-n", ns, "link", "set", dev, "up"])
            run_cmd(["ip", "-n", ns, "link", "set", "lo", "up"])
        # A request after an idle gap must not restart TCP slow start (the trace sets the rate).
        res = run_cmd(
            ["ip", "netns", "exec", self.edge, "sysctl", "-w",
             "net.ipv4.tcp_slow_start_after_idle=0"], check=False,
        )  # fmt: skip
        if res.returncode != 0:
            log.warning("could not disable slow start after idle: %s", res.stderr.strip())
        run_cmd(["ip", "netns", "exec", self.edge, "tc", "qdisc", "add", "dev", self.edge_if,
              "root", *tbf_args(1000.0)])  # fmt: skip

    def set_rate(self, mbps: float) -> None:
        with self._lock:
            run_cmd(["ip", "netns", "exec", self.edge, "tc", "qdisc", "change", "dev", self.edge_if,
                  "root", *tbf_args(mbps)])  # fmt: skip

    def exec_cmd(self, ns: str, cmd: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *cmd]

    def down(self) -> None:
        """Delete the namespaces (which removes the veth pair and its qdisc). Idempotent."""
        for ns in self._created:
            run_cmd(["ip", "netns", "del", ns], check=False)
        self._created.clear()


def sweep_stale() -> None:
    """Remove ``eml-*`` namespaces whose creating process is gone (a killed earlier run)."""
    res = run_cmd(["ip", "netns", "list"], check=False)
    for line in res.stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        m = re.fullmatch(rf"{PREFIX}[ce]-(\d+)", name)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            log.info("removing stale namespace %s", name)
            run_cmd(["ip", "netns", "del", name], check=False)


class Shaper:
    """Follows a trace: sets the tbf rate at every whole second after :meth:`start`."""

    def __init__(self, net: Netns, trace: Any, offset_s: float) -> None:
        self.net, self.trace, self.offset_s = net, trace, offset_s
        self.t0: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    def start(self) -> float:
        self.net.set_rate(self.trace.mbps_at(self.offset_s))
        self.t0 = time.time()
        self._thread = threading.Thread(target=self._loop, name="edgeml-shaper", daemon=True)
        self._thread.start()
        return self.t0

    def _loop(self) -> None:
        assert self.t0 is not None
        k = 1
        while not self._stop.wait(max(0.0, self.t0 + k - time.time())):
            try:
                self.net.set_rate(self.trace.mbps_at(self.offset_s + k))
            except EmulationError as exc:
                self.errors += 1
                log.warning("shaper: %s", exc)
            k += 1

    def trace_s(self, t_unix: float) -> float:
        assert self.t0 is not None
        return self.offset_s + max(0.0, t_unix - self.t0)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
