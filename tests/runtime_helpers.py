"""Helpers for the runtime tests: real ``edgeml serve`` / ``edgeml edge`` processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

START_TIMEOUT_S = 90.0  # a cold torch import on a loaded 2-core machine takes a while


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Server:
    """``edgeml serve`` in a child process; ``ready_at`` is when it printed 'listening'."""

    def __init__(self, bundle: Path, port: int, metrics_port: int | None = None) -> None:
        cmd = [sys.executable, "-m", "edgeml.cli", "serve", str(bundle), "--port", str(port)]
        if metrics_port is not None:
            cmd += ["--metrics-port", str(metrics_port)]
        self.port = port
        self.metrics_port = metrics_port
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env()
        )
        self.output: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                if "listening" in line:
                    self.ready_at = time.time()
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(START_TIMEOUT_S):
            self.kill()
            raise RuntimeError(f"server did not start: {''.join(self.output)}")

    def kill(self) -> float:
        """SIGKILL (no drain): the cloud vanishes mid-stream. Returns the time of the kill."""
        t = time.time()
        self.proc.kill()
        self.proc.wait(10)
        return t

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def infer_ok(self) -> float:
        """Successful Infer calls this server has answered (from its /metrics)."""
        assert self.metrics_port is not None
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        total = 0.0
        for line in text.splitlines():
            ok = 'code="OK"' in line and 'method="Infer"' in line
            if line.startswith("edgeml_requests_total{") and ok:
                total += float(line.rsplit(" ", 1)[1])
        return total


class Edge:
    """``edgeml edge`` in a child process writing ``log``."""

    def __init__(self, bundle: Path, cloud: str, log: Path, *extra: str) -> None:
        cmd = [
            sys.executable, "-m", "edgeml.cli", "edge", str(bundle), "--cloud", cloud,
            "--log", str(log), *extra,
        ]  # fmt: skip
        self.log = log
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env()
        )

    def records(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        lines = self.log.read_text().splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    def wait_for(self, predicate: Any, timeout_s: float, what: str) -> list[dict[str, Any]]:
        t_end = time.time() + timeout_s
        while time.time() < t_end:
            recs = self.records()
            if predicate(recs):
                return recs
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        out = self.stop()
        raise AssertionError(f"timed out waiting for {what}; edge output:\n{out}")

    def stop(self) -> str:
        """SIGTERM, wait, return its output."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate(timeout=5)
        return out or ""
