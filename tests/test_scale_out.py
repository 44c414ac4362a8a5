"""Scale-out on loopback: real ``edgeml serve`` replicas behind one real ``edgeml edge``.

What a multi-replica deployment (deploy/compose.yaml, deploy/k8s) relies on, checked with the
shipped fixture bundle and ``--policy cloud_only`` (every input offloaded):

* round_robin spreads the requests over three replicas (each >= 20%, counted from each
  replica's own Prometheus ``/metrics``), while a 2 s ``--max-connection-age-s`` recycles the
  connections (GOAWAY) all the time;
* a replica drained with SIGTERM mid-run loses no input: every input the edge takes is
  answered (by the cloud or, at worst, a local fallback), and the drained replica exits 0;
* a replica started later receives traffic within the maximum connection age, through a
  ``dns:///localhost:PORT`` target: gRPC resolves ``localhost`` to both 127.0.0.1 and ::1,
  so two replicas can share one name and port on loopback (one per address family).

What loopback cannot show: there the second address is known from the start (the client
reconnects to it after its backoff), whereas in a cluster a new pod's IP appears only in a
later DNS answer, which the edge asks for when a GOAWAY (max connection age) or a failure
makes it re-resolve. That path needs a real headless Service (README, "Deployment").
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from runtime_helpers import START_TIMEOUT_S, Edge, Server, _env, free_port

BUNDLE = Path(__file__).resolve().parent.parent / "edgeml" / "assets" / "bundles" / "fixture"
MAX_AGE_S = 2.0  # --max-connection-age-s of every replica: connections recycle during the run
RATE = 40.0  # inputs per second from the edge
# "edgeml serve: listening on HOST:PORT, metrics on http://HOST:MPORT/metrics" (the metrics
# URL is built here from MPORT: the CLI prints an IPv6 host without brackets)
READY = re.compile(r"listening on \S+:(\d+), metrics on \S+:(\d+)/metrics")

pytestmark = pytest.mark.slow


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Replica(Server):
    """``edgeml serve`` on ``host:port`` (0: any) with Prometheus on a free port, started
    without waiting; :meth:`wait_ready` parses the ports from its 'listening' line. Stops and
    kills like :class:`runtime_helpers.Server`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:  # noqa: D107
        cmd = [
            sys.executable, "-m", "edgeml.cli", "serve", str(BUNDLE), "--host", host,
            "--port", str(port), "--metrics-port", "0", "--max-connection-age-s", str(MAX_AGE_S),
            "--max-connection-age-grace-s", "1", "--grace-s", "5", "--max-wait-us", "200",
        ]  # fmt: skip
        self.host, self.port, self.metrics_url = host, port, ""
        self.output: list[str] = []
        self._ready = threading.Event()
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env()
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            m = READY.search(line)
            if m and not self._ready.is_set():
                self.port = int(m.group(1))
                self.metrics_url = f"http://{hostport(self.host, int(m.group(2)))}/metrics"
                self.ready_at = time.time()
                self._ready.set()

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> Replica:
        if not self._ready.wait(timeout_s):
            self.kill()
            raise RuntimeError(f"replica did not start: {''.join(self.output)}")
        return self

    @property
    def target(self) -> str:
        return hostport(self.host, self.port)

    def infer_ok(self) -> float:
        """Infer calls this replica answered OK, from its /metrics (0 once it has gone)."""
        try:
            text = urllib.request.urlopen(self.metrics_url, timeout=5).read().decode()
        except OSError:
            return 0.0
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("edgeml_requests_total{")
            and 'method="Infer"' in line
            and 'code="OK"' in line
        )


def healthy(target: str) -> bool:
    """deploy/healthcheck.py (the cloud image's HEALTHCHECK) says SERVING."""
    probe = Path(__file__).resolve().parent.parent / "deploy" / "healthcheck.py"
    proc = subprocess.run([sys.executable, str(probe), target], capture_output=True, timeout=30)
    return proc.returncode == 0


def edge(cloud: str, log: Path, inputs: int) -> Edge:
    return Edge(
        BUNDLE, cloud, log, "--policy", "cloud_only", "--rate", str(RATE),
        "--max-inputs", str(inputs), "--deadline-ms", "250", "--edge-slowdown", "1",
    )  # fmt: skip


def finish(e: Edge, inputs: int, timeout_s: float) -> list[dict[str, Any]]:
    """Wait for the edge to answer its ``--max-inputs`` and exit by itself; its log records."""
    e.wait_for(lambda r: len(r) >= inputs, timeout_s, f"{inputs} answered inputs")
    with contextlib.suppress(subprocess.TimeoutExpired):
        e.proc.wait(30)
    out = e.stop()
    assert e.proc.returncode == 0, out
    return e.records()


def assert_all_answered(recs: list[dict[str, Any]], inputs: int) -> None:
    assert [r["seq"] for r in recs] == list(range(inputs)), "an input is missing from the log"
    assert all(r["where"] in ("cloud", "fallback") and r["answer"] for r in recs)


def test_three_replicas_spread_and_a_drain_loses_nothing(tmp_path: Path) -> None:
    inputs = 480  # 12 s at 40/s
    replicas = [Replica() for _ in range(3)]
    e: Edge | None = None
    try:
        for r in replicas:
            r.wait_ready()
            assert healthy(r.target), r.output
        cloud = ",".join(r.target for r in replicas)
        e = edge(cloud, tmp_path / "edge.jsonl", inputs)

        # phase 1: all three serve; the spread is measured on the replicas themselves
        e.wait_for(lambda recs: len(recs) >= 200, 60, "200 inputs")
        counts = [r.infer_ok() for r in replicas]
        shares = [c / sum(counts) for c in counts]
        assert min(shares) >= 0.20, f"uneven spread {counts}"

        # phase 2: drain one replica mid-run; the others take its share
        drained = replicas[2]
        drained.proc.terminate()  # SIGTERM: NOT_SERVING, finish in-flight calls, exit
        assert drained.proc.wait(15) == 0, "".join(drained.output)
        assert not healthy(drained.target)
        before = [r.infer_ok() for r in replicas[:2]]
        recs = finish(e, inputs, 60)
        after = [r.infer_ok() for r in replicas[:2]]
        assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)
    finally:
        if e is not None:
            e.stop()
        for r in replicas:
            r.stop()
    assert_all_answered(recs, inputs)
    reasons = [r["fallback_reason"] for r in recs if r["where"] == "fallback"]
    moved = [a - b for a, b in zip(after, before, strict=True)]
    print(f"spread {counts}, after the drain +{moved}, fallbacks {reasons}")
    assert len(reasons) <= inputs // 20, f"fallbacks {reasons}: the drain was not graceful"


def _ipv6_loopback(port: int) -> bool:
    """Whether [::1]:port can be bound (no IPv6 loopback: the late-replica test skips)."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", port))
        return True
    except OSError:
        return False


def test_late_replica_gets_traffic_within_max_connection_age(tmp_path: Path) -> None:
    port = free_port()
    if not _ipv6_loopback(port):
        pytest.skip("no IPv6 loopback: a second replica cannot share localhost:PORT")
    inputs = 400  # 10 s at 40/s
    first = Replica("127.0.0.1", port).wait_ready()
    late: Replica | None = None
    e = edge(f"dns:///localhost:{port}", tmp_path / "edge.jsonl", inputs)
    try:
        e.wait_for(lambda recs: len(recs) >= 80, 60, "80 inputs on the first replica")
        assert first.infer_ok() >= 80
        late = Replica("::1", port).wait_ready()
        # first traffic within the connection age (+ polling and a loaded machine's slack)
        t_end = late.ready_at + MAX_AGE_S + 3.0
        while late.infer_ok() == 0 and time.time() < t_end:
            time.sleep(0.1)
        waited = time.time() - late.ready_at
        assert late.infer_ok() > 0, f"no traffic {waited:.1f} s after the late replica was up"
        print(f"late replica: first request {waited:.2f} s after it was ready")
        start = [first.infer_ok(), late.infer_ok()]
        recs = finish(e, inputs, 60)
        gained = [first.infer_ok() - start[0], late.infer_ok() - start[1]]
    finally:
        e.stop()
        first.stop()
        if late is not None:
            late.stop()
    assert_all_answered(recs, inputs)
    assert min(gained) / sum(gained) >= 0.20, f"after the late start: {gained}"
