"""The edge's gRPC client: one channel to one or more cloud servers.

What the edge runtime needs from it, and how it gets it:

* **balancing** -- ``targets="10.0.0.5:50051,10.0.0.6:50051"`` gives one channel per replica,
  balanced round-robin here over the replicas whose channel is connected, with failover to the
  next one on ``UNAVAILABLE``; a target with a gRPC scheme (``dns:///svc:50051``) is one
  channel with gRPC's own ``round_robin`` over what it resolves to;
* **one model per rotation** -- a replica that answers with other weights is taken out of
  rotation (quarantined) until :meth:`EdgeClient.recheck` sees its hash match again, so a
  wrongly deployed replica costs one request, not every request;
* **deadlines** -- each call's gRPC deadline is what is left of the input's own deadline, so a
  late reply is never waited for (the edge falls back to local execution instead);
* **retries only where safe** -- a service-config retry policy for ``UNAVAILABLE`` only
  (connection refused, a draining server), bounded in attempts and by the call's deadline;
  inference is a pure function, so a repeated request cannot do harm;
* **measurements** -- every :class:`InferResult` carries the serialized request size and the
  round-trip time, which the bandwidth estimator turns into throughput samples;
* **one model** -- :meth:`EdgeClient.check_model` refuses a cloud whose weights hash differs
  from the edge's bundle, and every request carries the hash so the server checks it too.
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgeml.partition.codecs import EncodedTensor, encode
from edgeml.transport.auth import AUTH_HEADER, channel_credentials
from edgeml.transport.proto.edgeml.v1 import offload_pb2
from edgeml.transport.tensor_proto import to_proto

if TYPE_CHECKING:
    import torch

__all__ = [
    "ClientConfig",
    "DeadlineExpired",
    "EdgeClient",
    "InferResult",
    "InferStreamSession",
    "OffloadError",
    "WeightsMismatchError",
    "replica_targets",
    "service_config",
]

log = logging.getLogger(__name__)

SERVICE = "edgeml.v1.Offload"
_INFER = f"/{SERVICE}/Infer"
_INFER_STREAM = f"/{SERVICE}/InferStream"
MiB = 1 << 20


class OffloadError(RuntimeError):
    """A call to the cloud failed; ``code`` is the gRPC status (None if it never left)."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code

    @classmethod
    def from_rpc(cls, exc: grpc.RpcError, what: str) -> OffloadError:
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        name = code.name if code is not None else "UNKNOWN"
        if code is grpc.StatusCode.FAILED_PRECONDITION and "weights_sha256" in (details or ""):
            return WeightsMismatchError(f"{what}: {details}", code)
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return DeadlineExpired(f"{what}: {name}: {details}", code)
        return cls(f"{what}: {name}: {details}", code)


class WeightsMismatchError(OffloadError):
    """Edge and cloud run different weights; they must not talk (answers would be wrong)."""


class DeadlineExpired(OffloadError):
    """The input's deadline passed, before sending or while waiting for the reply."""


@dataclass
class ClientConfig:
    """How the edge reaches the cloud.

    :param targets: ``host:port`` or a comma-separated list of them (round-robin balanced);
        a target with a gRPC scheme (``dns:``, ``ipv4:``, ``unix:``) is used verbatim.
    :param root_ca: PEM CA that signed the server's certificate; enables TLS.
    :param tls_cert: PEM client certificate chain (mutual TLS), with ``tls_key``.
    :param tls_key: PEM private key of ``tls_cert``.
    :param tls_server_name: name to verify in the server's certificate (default: the host).
    :param tls: use TLS with the system's roots even without ``root_ca``.
    :param token: bearer token sent as ``authorization`` metadata.
    :param default_timeout_s: deadline of a call made without an input deadline.
    :param max_attempts: attempts per call on ``UNAVAILABLE`` (1 = no retries; gRPC caps it at 5).
    :param keepalive_s: interval of HTTP/2 keepalive pings; spots a dead link between inputs.
    :param keepalive_timeout_s: how long a ping may go unanswered before the link is dropped.
    :param max_message_bytes: largest request the channel may send.
    :param max_reconnect_backoff_s: cap of gRPC's reconnect backoff (its default, 120 s,
        would keep a restarted cloud idle for minutes after a long outage).
    """

    targets: str = "127.0.0.1:50051"
    root_ca: str | Path | None = None
    tls_cert: str | Path | None = None
    tls_key: str | Path | None = None
    tls_server_name: str | None = None
    tls: bool = False
    token: str | None = None
    default_timeout_s: float = 5.0
    max_attempts: int = 3
    keepalive_s: float = 30.0
    keepalive_timeout_s: float = 10.0
    max_message_bytes: int = 16 * MiB
    max_reconnect_backoff_s: float = 1.0

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert/tls_key: give both for mutual TLS, or neither")
        if not 1 <= self.max_attempts <= 5:
            raise ValueError(f"max_attempts: {self.max_attempts} not in 1..5")
        if self.max_reconnect_backoff_s <= 0:
            raise ValueError(
                f"max_reconnect_backoff_s: must be > 0, got {self.max_reconnect_backoff_s}"
            )
        if self.default_timeout_s <= 0:
            raise ValueError(f"default_timeout_s: must be > 0, got {self.default_timeout_s}")

    @property
    def secure(self) -> bool:
        return self.tls or self.root_ca is not None or self.tls_cert is not None


@dataclass(frozen=True)
class InferResult:
    """The cloud's answer plus what the call cost, as the edge measured it.

    ``sent_bytes`` is the serialized request (what crosses the uplink, before HTTP/2 and TCP
    framing) and ``rtt_ms`` the wall time from handing it to gRPC to having the reply; the
    server's own time is in ``server_ms``, so ``network_ms`` is what the link took.
    """

    request_id: str
    class_id: int
    confidence: float
    exit_index: int
    exit_block: int
    sent_bytes: int
    received_bytes: int
    rtt_ms: float
    encode_ms: float
    queue_ms: float
    decode_ms: float
    compute_ms: float
    batch_size: int
    queued: int = 0  # the server's load when the batch finished (requests waiting ...
    running: int = 0  # ... and running); see InferReply

    @property
    def cloud_load(self) -> int:
        """Requests the cloud had waiting or running as it answered."""
        return self.queued + self.running

    @property
    def server_ms(self) -> float:
        return self.queue_ms + self.decode_ms + self.compute_ms

    @property
    def network_ms(self) -> float:
        """Round trip minus server time: transfer both ways plus propagation (>= 0)."""
        return max(self.rtt_ms - self.server_ms, 0.0)

    @classmethod
    def from_reply(
        cls, reply: offload_pb2.InferReply, sent: int, rtt_ms: float, encode_ms: float
    ) -> InferResult:
        return cls(
            request_id=reply.request_id,
            class_id=reply.class_id,
            confidence=reply.confidence,
            exit_index=reply.exit_taken,
            exit_block=reply.exit_block,
            sent_bytes=sent,
            received_bytes=reply.ByteSize(),
            rtt_ms=rtt_ms,
            encode_ms=encode_ms,
            queue_ms=reply.queue_ms,
            decode_ms=reply.decode_ms,
            compute_ms=reply.compute_ms,
            batch_size=reply.batch_size,
            queued=reply.queued,
            running=reply.running,
        )


# --------------------------------------------------------------------------- channel set-up


def _split_hostport(target: str) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"targets: {target!r} is not host:port with a port in 1..65535")
    return host.strip("[]"), int(port)


def check_targets(targets: str) -> None:
    """A clear error for a malformed ``HOST:PORT[,HOST:PORT...]`` (gRPC would just never
    connect); targets with a scheme (``dns:``, ``ipv4:``, ``unix:``) are left to gRPC."""
    parts = [t.strip() for t in targets.split(",") if t.strip()]
    if not parts:
        raise ValueError("targets: empty; expected host:port[,host:port...]")
    if parts[0].split(":", 1)[0] in ("dns", "ipv4", "ipv6", "unix"):
        return
    for part in parts:
        _split_hostport(part)


def replica_targets(targets: str) -> list[str]:
    """``"a:1,b:2"`` -> ``["a:1", "b:2"]``: one channel per replica, each resolved by gRPC's
    DNS resolver; a target with a scheme (``dns:``, ``ipv4:``, ``unix:``) is one channel,
    used verbatim (gRPC balances over what it resolves to)."""
    check_targets(targets)
    parts = [t.strip() for t in targets.split(",") if t.strip()]
    if parts[0].split(":", 1)[0] in ("dns", "ipv4", "ipv6", "unix"):
        return [targets.strip()]
    return parts


def service_config(max_attempts: int) -> str:
    """round_robin over all addresses; retry UNAVAILABLE (and nothing else) a few times."""
    method: dict[str, Any] = {"name": [{"service": SERVICE}, {"service": "grpc.health.v1.Health"}]}
    if max_attempts > 1:
        method["retryPolicy"] = {
            "maxAttempts": max_attempts,
            "initialBackoff": "0.01s",
            "maxBackoff": "0.2s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
    return json.dumps({"loadBalancingConfig": [{"round_robin": {}}], "methodConfig": [method]})


def channel_options(cfg: ClientConfig) -> list[tuple[str, Any]]:
    opts: list[tuple[str, Any]] = [
        ("grpc.service_config", service_config(cfg.max_attempts)),
        ("grpc.enable_retries", 1),
        # a retry needs the request buffered; cover our largest message
        ("grpc.per_rpc_retry_buffer_size", cfg.max_message_bytes),
        ("grpc.max_send_message_length", cfg.max_message_bytes),
        ("grpc.keepalive_time_ms", int(cfg.keepalive_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(cfg.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.default_compression_algorithm", 0),  # tensors are already encoded
        ("grpc.initial_reconnect_backoff_ms", min(100, int(cfg.max_reconnect_backoff_s * 1000))),
        ("grpc.max_reconnect_backoff_ms", int(cfg.max_reconnect_backoff_s * 1000)),
        # Channels share subchannels (and so their backoff) process-wide by default; a
        # fresh channel opened to get past a long backoff must really be fresh.
        ("grpc.use_local_subchannel_pool", 1),
    ]
    if cfg.tls_server_name:
        opts.append(("grpc.ssl_target_name_override", cfg.tls_server_name))
    return opts


def _identity(b: bytes) -> bytes:
    return b


# --------------------------------------------------------------------------- the client


class _Replica:
    """One cloud replica: its channel, the raw callables on it, and whether it is usable.

    ``state`` follows the channel's connectivity (gRPC reconnects in the background);
    ``quarantined`` holds the other weights hash it answered with, until a recheck clears it.
    """

    def __init__(self, target: str, config: ClientConfig) -> None:
        self.target = target
        options = channel_options(config)
        if config.secure:
            creds = channel_credentials(config.root_ca, config.tls_cert, config.tls_key)
            self.channel = grpc.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        # raw-bytes callables: we serialize ourselves so the sent size is exact and free
        self.infer = self.channel.unary_unary(
            _INFER, request_serializer=_identity, response_deserializer=_identity
        )
        self.infer_stream = self.channel.stream_stream(
            _INFER_STREAM, request_serializer=_identity, response_deserializer=_identity
        )
        self.info = self.channel.unary_unary(
            f"/{SERVICE}/GetModelInfo",
            request_serializer=offload_pb2.ModelInfoRequest.SerializeToString,
            response_deserializer=offload_pb2.ModelInfo.FromString,
        )
        self.profile = self.channel.unary_unary(
            f"/{SERVICE}/Profile",
            request_serializer=offload_pb2.ProfileRequest.SerializeToString,
            response_deserializer=offload_pb2.ProfileReply.FromString,
        )
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.state = grpc.ChannelConnectivity.IDLE
        self.quarantined: str | None = None
        self.channel.subscribe(self._on_state, try_to_connect=True)

    def _on_state(self, state: grpc.ChannelConnectivity) -> None:
        self.state = state

    def close(self) -> None:
        """Unsubscribe, let grpc's connectivity poller see it, then close the channel.

        The poller re-checks its subscribers every 0.2 s between watches of the channel; a
        channel closed under it makes its next watch raise "Channel closed!" in its thread.
        So the channel closes once the poller has stopped (at most ~0.2 s)."""
        self.channel.unsubscribe(self._on_state)
        state = getattr(self.channel, "_connectivity_state", None)  # grpc's own, if there
        end = time.monotonic() + 0.5
        while state is not None and state.polling and time.monotonic() < end:
            time.sleep(0.01)
        self.channel.close()


class EdgeClient:
    """The edge's connection to the cloud: one channel per replica of ``config.targets``.

    :param config: see :class:`ClientConfig`.
    :param weights_sha256: the edge bundle's weights hash, sent with every request.
    :param model_id: the model name to ask for ('' = whatever the server serves).
    """

    def __init__(self, config: ClientConfig, weights_sha256: str = "", model_id: str = "") -> None:
        self.config = config
        self.weights_sha256 = weights_sha256
        self.model_id = model_id
        self.replicas = [_Replica(t, config) for t in replica_targets(config.targets)]
        self._rr = itertools.count()
        self._metadata: tuple[tuple[str, str], ...] = (
            ((AUTH_HEADER, f"Bearer {config.token}"),) if config.token else ()
        )
        self._ids = itertools.count()
        self._id_prefix = uuid.uuid4().hex[:8]
        self._last_recheck = time.monotonic()

    # ----------------------------------------------------------------- lifecycle

    def close(self) -> None:
        for r in self.replicas:
            r.close()

    def __enter__(self) -> EdgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Block until a replica in rotation answers health SERVING (waiting for one to
        come up); with several, each is asked in turn for a short while."""
        end = time.monotonic() + timeout_s
        err: OffloadError | None = None
        status = None
        while True:
            cands = self._in_rotation() or self.replicas
            step = timeout_s if len(cands) == 1 else min(0.2, timeout_s)
            for r in cands:
                left = end - time.monotonic()
                if left <= 0:
                    break
                try:
                    resp = r.health.Check(
                        health_pb2.HealthCheckRequest(service=SERVICE),
                        timeout=min(step, left),
                        wait_for_ready=True,
                        metadata=self._metadata,
                    )
                except grpc.RpcError as exc:
                    err = OffloadError.from_rpc(exc, f"wait_ready({self.config.targets})")
                    continue
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
            if time.monotonic() >= end:
                break
        if status is not None and err is None:
            raise OffloadError(f"wait_ready: {self.config.targets} is {status}")
        assert err is not None
        raise OffloadError(f"{err}{self._connect_error()}", err.code) from None

    def _connect_error(self) -> str:
        """Why the channels do not connect, as gRPC last saw it ('' if one does): a call
        that waited for readiness only says DEADLINE_EXCEEDED, a call that fails fast
        carries the last connection error (refused, TLS handshake, ...)."""
        details = ""
        for r in self.replicas:
            try:
                r.health.Check(
                    health_pb2.HealthCheckRequest(service=SERVICE), timeout=1.0,
                    metadata=self._metadata,
                )  # fmt: skip
                return ""
            except grpc.RpcError as exc:
                details = exc.details() if hasattr(exc, "details") else str(exc)
        hint, d = "", (details or "").lower()
        # With TLS 1.3 a client whose certificate the server refuses sees only its socket
        # close right after the handshake; the server logs the real reason.
        if self.config.secure and any(w in d for w in ("handshake", "ssl", "socket closed")):
            hint = (
                " (TLS handshake failed or the server refused this client: the edge's "
                "--root-ca must have signed the server's --tls-cert, and a server with "
                "--client-ca needs the edge's --tls-cert/--tls-key signed by that CA)"
            )
        return f"; last connection error: {details}{hint}"

    # ----------------------------------------------------------------- rotation

    def _in_rotation(self) -> list[_Replica]:
        return [r for r in self.replicas if r.quarantined is None]

    def _pick(self, tried: set[int]) -> _Replica | None:
        """Round-robin over the replicas in rotation not yet tried for this call, connected
        ones first (as gRPC's round_robin, which picks only READY subchannels)."""
        free = [r for r in self._in_rotation() if id(r) not in tried]
        ready = [r for r in free if r.state is grpc.ChannelConnectivity.READY]
        up = ready or [r for r in free if r.state is not grpc.ChannelConnectivity.SHUTDOWN]
        return up[next(self._rr) % len(up)] if up else None

    def in_rotation(self) -> bool:
        """Whether any replica may be sent to (False: every one runs other weights)."""
        return bool(self._in_rotation())

    def _quarantine(self, r: _Replica, exc: OffloadError) -> None:
        r.quarantined = str(exc)
        log.warning(
            "cloud replica %s runs other weights: out of rotation until it changes (%s)",
            r.target, exc,
        )  # fmt: skip

    def recheck(self, every_s: float = 2.0, timeout_s: float = 1.0) -> None:
        """Ask each quarantined replica for its model again (at most once per ``every_s``);
        one whose hash now matches goes back into rotation."""
        now = time.monotonic()
        if now - self._last_recheck < every_s or len(self._in_rotation()) == len(self.replicas):
            return
        self._last_recheck = now
        for r in self.replicas:
            if r.quarantined is None:
                continue
            try:
                info = self._model_info(r, timeout_s, wait=True)  # past a reconnect backoff
            except OffloadError:
                continue
            if info.weights_sha256 == self.weights_sha256:
                r.quarantined = None
                log.info("cloud replica %s runs the edge's weights again: back in rotation",
                         r.target)  # fmt: skip

    # ----------------------------------------------------------------- model

    def _model_info(
        self, r: _Replica, timeout_s: float | None, wait: bool = False
    ) -> offload_pb2.ModelInfo:
        try:
            return r.info(
                offload_pb2.ModelInfoRequest(model_id=self.model_id),
                timeout=timeout_s or self.config.default_timeout_s,
                metadata=self._metadata,
                wait_for_ready=wait,
            )
        except grpc.RpcError as exc:
            raise OffloadError.from_rpc(exc, f"get_model_info({r.target})") from None

    def get_model_info(self, timeout_s: float | None = None) -> offload_pb2.ModelInfo:
        r = self._pick(set()) or self.replicas[0]
        return self._model_info(r, timeout_s)

    def check_model(self, weights_sha256: str | None = None) -> offload_pb2.ModelInfo:
        """Ask every replica for its model: those with other weights leave the rotation
        (and those with ours return). Raises :class:`WeightsMismatchError` if no reachable
        replica runs our weights, :class:`OffloadError` if none is reachable."""
        want = weights_sha256 or self.weights_sha256
        if not want:
            raise ValueError("weights_sha256: unknown; pass the edge bundle's hash")
        good: offload_pb2.ModelInfo | None = None
        mismatch: WeightsMismatchError | None = None
        error: OffloadError | None = None
        for r in self.replicas:
            try:
                info = self._model_info(r, None)
            except OffloadError as exc:
                error = exc
                continue
            if info.weights_sha256 == want:
                r.quarantined = None
                good = good or info
                continue
            mismatch = WeightsMismatchError(
                f"weights_sha256: cloud {r.target} runs {info.weights_sha256[:16]}..., "
                f"the edge {want[:16]}...; load the same bundle on both sides"
            )
            if want == (self.weights_sha256 or want):  # not when asked about another hash
                r.quarantined = str(mismatch)
        if good is None:
            raise mismatch or error or OffloadError("check_model: no replica")
        self.weights_sha256 = want
        return good

    def profile(self, repeats: int = 0, timeout_s: float = 60.0) -> offload_pb2.ProfileReply:
        """The cloud's per-block and per-head latencies (``repeats > 0``: measure now)."""
        r = self._pick(set()) or self.replicas[0]
        try:
            return r.profile(
                offload_pb2.ProfileRequest(model_id=self.model_id, repeats=repeats),
                timeout=timeout_s,
                metadata=self._metadata,
            )
        except grpc.RpcError as exc:
            raise OffloadError.from_rpc(exc, "profile") from None

    # ----------------------------------------------------------------- inference

    def make_request(
        self,
        tensor: torch.Tensor | np.ndarray | EncodedTensor,
        split: int,
        exit_index: int,
        tau: float,
        codec: str = "raw",
        remaining_s: float | None = None,
        request_id: str | None = None,
    ) -> tuple[offload_pb2.InferRequest, float]:
        """Build a request (encoding ``tensor`` with ``codec`` unless already encoded);
        returns it and the encode time in ms."""
        if not self.weights_sha256:
            raise ValueError("weights_sha256: unknown; call check_model() or pass the hash")
        t0 = time.perf_counter()
        enc = tensor if isinstance(tensor, EncodedTensor) else encode(tensor, codec)
        encode_ms = (time.perf_counter() - t0) * 1e3
        req = offload_pb2.InferRequest(
            request_id=request_id or f"{self._id_prefix}-{next(self._ids)}",
            model_id=self.model_id,
            weights_sha256=self.weights_sha256,
            split=split,
            exit=exit_index,
            tau=tau,
        )
        to_proto(enc, req.tensor)
        if remaining_s is not None:
            req.deadline_ms = remaining_s * 1e3
        req.sent_unix_ns = time.time_ns()
        return req, encode_ms

    def _timeout(self, deadline: float | None) -> float:
        """gRPC timeout from the input's absolute ``time.monotonic()`` deadline."""
        if deadline is None:
            return self.config.default_timeout_s
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExpired(f"deadline: passed {-remaining * 1e3:.1f} ms ago; not sent")
        return remaining

    def infer(
        self,
        tensor: torch.Tensor | np.ndarray | EncodedTensor,
        split: int,
        exit_index: int,
        tau: float,
        codec: str = "raw",
        deadline: float | None = None,
        request_id: str | None = None,
    ) -> InferResult:
        """Send the tensor leaving block ``split``; the cloud runs the rest up to exit
        ``exit_index`` under threshold ``tau``.

        :param tensor: shaped ``(1, *cut)`` or ``cut`` (a torch/numpy array or pre-encoded).
        :param deadline: the input's deadline as a ``time.monotonic()`` instant; the call's
            gRPC deadline is what is left of it (``DeadlineExpired`` if nothing is).
        :raises OffloadError: any failure, with the gRPC status in ``code``.
        """
        timeout = self._timeout(deadline)
        req, encode_ms = self.make_request(
            tensor, split, exit_index, tau, codec, None if deadline is None else timeout, request_id
        )
        data = req.SerializeToString()
        timeout = self._timeout(deadline)  # encoding took some of it
        tried: set[int] = set()
        while True:
            r = self._pick(tried)
            if r is None:
                raise self._none_left(req.request_id)
            tried.add(id(r))
            t0 = time.perf_counter()
            try:
                raw = r.infer(data, timeout=timeout, metadata=self._metadata)
            except grpc.RpcError as exc:
                err = OffloadError.from_rpc(exc, f"infer {req.request_id} ({r.target})")
                if isinstance(err, WeightsMismatchError):
                    self._quarantine(r, err)
                elif err.code is not grpc.StatusCode.UNAVAILABLE:
                    raise err from None
                if len(tried) >= len(self.replicas):
                    raise err from None
                timeout = self._timeout(deadline)  # fail over to the next replica
                continue
            rtt_ms = (time.perf_counter() - t0) * 1e3
            reply = offload_pb2.InferReply.FromString(raw)
            return InferResult.from_reply(reply, len(data), rtt_ms, encode_ms)

    def _none_left(self, what: str) -> OffloadError:
        if not self.in_rotation():
            return WeightsMismatchError(
                f"infer {what}: no replica of {self.config.targets} runs the edge's weights "
                f"({self.weights_sha256[:16]}...); not sent"
            )
        return OffloadError(f"infer {what}: every replica failed", grpc.StatusCode.UNAVAILABLE)

    def stream(self, timeout_s: float | None = None) -> InferStreamSession:
        """Open a pipelined ``InferStream`` (see :class:`InferStreamSession`)."""
        return InferStreamSession(self, timeout_s)


class InferStreamSession:
    """Many requests in flight on one HTTP/2 stream; replies are matched by request_id.

    ``submit`` returns a :class:`~concurrent.futures.Future` of :class:`InferResult`; its
    ``rtt_ms`` runs from submit to the reply. A failed stream fails every open future.

        with client.stream() as s:
            futs = [s.submit(h, split=3, exit_index=3, tau=0.9) for h in hs]
            results = [f.result() for f in futs]
    """

    _END = object()

    def __init__(self, client: EdgeClient, timeout_s: float | None = None) -> None:
        self.client = client
        self._requests: queue.Queue[Any] = queue.Queue()
        self._open: dict[str, tuple[Future[InferResult], float, int, float]] = {}
        self._lock = threading.Lock()
        self._error: OffloadError | None = None
        replica = client._pick(set())
        if replica is None:
            raise client._none_left("stream")
        self._call = replica.infer_stream(
            self._outgoing(), timeout=timeout_s, metadata=client._metadata
        )
        self._reader = threading.Thread(target=self._read, name="edgeml-stream", daemon=True)
        self._reader.start()

    def _outgoing(self) -> Iterator[bytes]:
        while True:
            item = self._requests.get()
            if item is self._END:
                return
            yield item

    def submit(
        self,
        tensor: torch.Tensor | np.ndarray | EncodedTensor,
        split: int,
        exit_index: int,
        tau: float,
        codec: str = "raw",
        remaining_s: float | None = None,
    ) -> Future[InferResult]:
        fut: Future[InferResult] = Future()
        req, encode_ms = self.client.make_request(
            tensor, split, exit_index, tau, codec, remaining_s
        )
        data = req.SerializeToString()
        with self._lock:
            if self._error is not None:
                raise self._error
            self._open[req.request_id] = (fut, time.perf_counter(), len(data), encode_ms)
        self._requests.put(data)
        return fut

    def _read(self) -> None:
        try:
            for raw in self._call:
                reply = offload_pb2.InferReply.FromString(raw)
                with self._lock:
                    entry = self._open.pop(reply.request_id, None)
                if entry is None:
                    log.warning("stream: reply for unknown request_id %r", reply.request_id)
                    continue
                fut, t0, sent, encode_ms = entry
                rtt_ms = (time.perf_counter() - t0) * 1e3
                fut.set_result(InferResult.from_reply(reply, sent, rtt_ms, encode_ms))
            error = OffloadError("stream: closed with requests unanswered")
        except grpc.RpcError as exc:
            error = OffloadError.from_rpc(exc, "stream")
        except Exception as exc:  # a malformed reply: fail the open futures, do not hang
            error = OffloadError(f"stream: {type(exc).__name__}: {exc}")
        with self._lock:
            self._error = error
            open_now, self._open = list(self._open.values()), {}
        for fut, *_ in open_now:
            fut.set_exception(error)

    def close(self, timeout_s: float = 5.0) -> None:
        """Half-close the stream and wait for the replies still due."""
        self._requests.put(self._END)
        self._reader.join(timeout_s)
        if self._reader.is_alive():
            self._call.cancel()
            self._reader.join(1.0)

    def __enter__(self) -> InferStreamSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
