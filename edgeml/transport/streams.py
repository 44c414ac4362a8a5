"""Admission of ``InferStream`` calls: a bound in total and per client address.

gRPC's threaded server gives every open call a handler thread until it ends, so a client
that opens streams and sends nothing can hold every worker: then nothing is answered, the
health check included. The server therefore admits at most ``total`` streams (fewer than
its workers) and ``per_client`` from one address; a stream beyond either bound is refused
at once with RESOURCE_EXHAUSTED, and an admitted one that stays silent is ended by the
servicer's idle timeout.
"""

from __future__ import annotations

import threading
from collections import Counter

__all__ = ["StreamGate", "peer_address"]


def peer_address(peer: str) -> str:
    """``"ipv4:127.0.0.1:5123"`` -> ``"127.0.0.1"``; ``"ipv6:[::1]:5123"`` -> ``"::1"``.

    Streams are counted per address, not per connection: one client may open many.
    """
    scheme, _, rest = peer.partition(":")
    if scheme not in ("ipv4", "ipv6") or not rest:
        return peer  # unix sockets and the like: the whole string
    host = rest.rsplit(":", 1)[0]
    return host.strip("[]")


class StreamGate:
    """Counts open streams; :meth:`enter` admits one or says why not (thread-safe)."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total, self.per_client = total, per_client
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def enter(self, client: str) -> str | None:
        """Admit a stream from ``client``; None if admitted, else the refusal's message."""
        with self._lock:
            n = sum(self._open.values())
            if n >= self.total:
                return (
                    f"streams: {n} open, the server's limit is {self.total} (max_streams); "
                    "retry later or use unary Infer"
                )
            if self._open[client] >= self.per_client:
                return (
                    f"streams: {self._open[client]} open from {client}, the limit per client "
                    f"is {self.per_client} (max_streams_per_client)"
                )
            self._open[client] += 1
            return None

    def leave(self, client: str) -> None:
        with self._lock:
            self._open[client] -= 1
            if self._open[client] <= 0:
                del self._open[client]

    @property
    def open(self) -> int:
        with self._lock:
            return sum(self._open.values())
