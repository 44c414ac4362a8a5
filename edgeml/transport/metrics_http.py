"""The ``/metrics`` HTTP endpoint of the server and the edge, hardened against junk.

prometheus_client's own ``start_http_server`` lets socketserver print a traceback to
stderr for every client that resets its connection mid-request or sends bytes that are not
HTTP, so anyone who can reach the port can fill the process's log. This endpoint serves
the same WSGI app, logs such connections at DEBUG, and never writes a request line to
stderr.
"""

from __future__ import annotations

import logging
import socket
import threading
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

__all__ = ["MetricsHTTP", "check_port"]

log = logging.getLogger(__name__)


def check_port(name: str, port: int | None) -> None:
    """A clear error for a port outside 0..65535 (None: no endpoint)."""
    if port is not None and not 0 <= port <= 65535:
        raise ValueError(f"{name}: {port} not in 0..65535 (0: pick a free port)")


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib name)
        log.debug("metrics %s: " + format, self.address_string(), *args)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics: dropped a bad request from %s", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsHTTP:
    """``/metrics`` of ``registry`` on ``host:port`` (0: a free port) in a daemon thread."""

    def __init__(self, registry: CollectorRegistry, port: int, host: str = "127.0.0.1") -> None:
        check_port("metrics_port", port)
        cls = _Server6 if ":" in host else _Server
        try:
            self._httpd = make_server(
                host.strip("[]"), port, make_wsgi_app(registry), cls, handler_class=_QuietHandler
            )
        except OSError as exc:
            raise OSError(f"metrics_port: cannot listen on {host}:{port} ({exc})") from None
        self.port = int(self._httpd.server_port)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="edgeml-metrics", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
