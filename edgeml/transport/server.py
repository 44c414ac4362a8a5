"""The cloud side of split inference: a gRPC server that runs blocks ``s+1..e`` of a bundle.

The edge ran blocks ``1..s`` and sends the tensor leaving block ``s``; the server checks every
field (:mod:`~edgeml.transport.validation`), queues the decoded row for the dynamic batcher
(:mod:`~edgeml.transport.batching`), and runs the batch with
:func:`~edgeml.progressive.infer.run_segment` from ``start=s`` -- the very early-exit rule the
edge and the simulator use, with each row's own ``tau``. Next to ``edgeml.v1.Offload`` it
serves the standard ``grpc.health.v1`` health service and server reflection, exports
Prometheus metrics, and drains in-flight requests on SIGTERM.

    server = OffloadServer(ServerConfig(bundle="bundles/default", port=0)).start()
    print(server.port)
    ...
    server.stop(grace=5)

or, blocking until SIGTERM/SIGINT, ``serve(config)`` (what ``edgeml serve`` runs).
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any, TypeVar, cast

import grpc
import numpy as np
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from edgeml.bundle import MANIFEST, Bundle
from edgeml.decision.cloud import CloudService
from edgeml.progressive.infer import Answer, run_segment
from edgeml.transport.auth import BearerTokenInterceptor, server_credentials
from edgeml.transport.batching import Batcher, BatcherClosed, Job, JobCancelled, JobExpired
from edgeml.transport.config import ServerConfig
from edgeml.transport.metrics import ServerMetrics
from edgeml.transport.proto.edgeml.v1 import offload_pb2, offload_pb2_grpc
from edgeml.transport.streams import StreamGate, peer_address
from edgeml.transport.validation import (
    RequestError,
    RequestValidator,
    ValidRequest,
    parse_infer_request,
)

__all__ = [
    "SERVICE_NAME",
    "OffloadServer",
    "OffloadServicer",
    "ServerConfig",
    "add_offload_servicer",
    "serve",
]

log = logging.getLogger(__name__)

SERVICE_NAME: str = offload_pb2.DESCRIPTOR.services_by_name["Offload"].full_name
MAX_PROFILE_REPEATS = 200
_NO_DEADLINE_S = 1e6  # time_remaining() of a call without a deadline is ~infinite

T = TypeVar("T")


_NEVER_MS = 2**31 - 1  # gRPC's "infinite" for its millisecond channel arguments


def _ms(seconds: float) -> int:
    return min(int(seconds * 1000), _NEVER_MS)


def _endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _job_error(job: Job) -> RequestError:
    """Map a job's failure to the status the caller gets."""
    err = job.error
    if isinstance(err, JobExpired):
        return RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline_ms: {err}")
    if isinstance(err, JobCancelled):
        return RequestError(grpc.StatusCode.CANCELLED, str(err))
    return RequestError(
        grpc.StatusCode.INTERNAL, f"internal error running the batch: {type(err).__name__}: {err}"
    )


class OffloadServicer(offload_pb2_grpc.OffloadServicer):
    """``edgeml.v1.Offload`` over one loaded bundle; owns the batcher.

    Every handler runs through :meth:`_guarded`: a refused request ends with its
    :class:`RequestError` status, anything unexpected with INTERNAL and a logged traceback --
    never with a dead server.
    """

    def __init__(self, bundle: Bundle, config: ServerConfig, metrics: ServerMetrics) -> None:
        self.bundle = bundle
        self.net = bundle.net.eval()
        self.config = config
        self.metrics = metrics
        self.model_id = config.model_id or str(bundle.manifest.model.get("name", ""))
        self.validator = RequestValidator(bundle.manifest, self.model_id, config.max_payload_bytes)
        self.streams = StreamGate(config.max_streams, config.max_streams_per_client)
        self.batcher = Batcher(
            self._run_batch,
            max_batch=config.max_batch,
            max_wait_us=config.max_wait_us,
            on_batch=metrics.observe_batch,
            wait_alone=config.batch_wait_alone,
        )
        self._paced = (
            None
            if config.pace_speedup is None
            else CloudService.from_profile(bundle.profile, config.pace_speedup)
        )
        self._manifest_json = (Path(bundle.path) / MANIFEST).read_text()
        self._profile_lock = threading.Lock()
        self._measured: offload_pb2.ProfileReply | None = None

    # ----------------------------------------------------------------- compute

    def _run_batch(self, key: Hashable, jobs: Sequence[Job]) -> list[Answer]:
        """Blocks ``split+1..exit`` for all rows at once, each with its own tau."""
        start = time.perf_counter()
        split, exit_index = cast(tuple[int, int], key)  # the batcher keys by (split, exit)
        h = torch.from_numpy(np.concatenate([j.x for j in jobs]))
        taus = torch.tensor([j.tau for j in jobs], dtype=torch.float32)
        stop = self.net.exit_block(exit_index)
        with torch.inference_mode():
            res = run_segment(self.net, h, split, stop, exit_index, taus)
        if any(a is None for a in res.answers):
            raise RuntimeError(f"run_segment left rows {res.pending} without an answer")
        answers: list[Answer] = list(res.answers)  # type: ignore[arg-type]
        if self._paced is not None:  # the emulated cloud's time for this batch
            rows = [(a.exit_block, j.tau < 1.0) for a, j in zip(answers, jobs, strict=True)]
            left = self._paced.batch_ms(split, rows) / 1e3 - (time.perf_counter() - start)
            if left > 0:
                time.sleep(left)
        return answers

    def warm_up(self) -> None:
        """One full pass so the first request does not pay for lazy initialisation."""
        m = self.bundle.manifest
        with torch.inference_mode():
            run_segment(self.net, torch.zeros(1, *m.input_shape), 0, m.blocks, m.num_exits - 1, 1.0)

    def _submit(self, v: ValidRequest, received_ns: int) -> Job:
        expires = None
        if v.deadline_ms is not None:
            expires = received_ns + int(v.deadline_ms * 1e6)
        job = Job(key=(v.split, v.exit_index), x=v.tensor, tau=v.tau, expires_ns=expires)
        try:
            return self.batcher.submit(job)
        except BatcherClosed as exc:
            raise RequestError(grpc.StatusCode.UNAVAILABLE, str(exc)) from None

    @staticmethod
    def _reply(v: ValidRequest, job: Job, decode_ms: float) -> offload_pb2.InferReply:
        if job.error is not None:
            raise _job_error(job)
        a: Answer = job.result
        return offload_pb2.InferReply(
            request_id=v.request_id,
            class_id=a.class_id,
            confidence=a.confidence,
            exit_taken=a.exit_index,
            exit_block=a.exit_block,
            queue_ms=job.queue_ms,
            decode_ms=decode_ms,
            compute_ms=job.compute_ms,
            batch_size=job.batch_size,
            queued=job.queued_after,
            running=job.batch_size,
        )

    def _accept(self, request: offload_pb2.InferRequest) -> tuple[ValidRequest, Job, float]:
        """Validate, decode and queue one request; returns it, its job and the decode ms."""
        t0 = time.perf_counter_ns()
        v = self.validator.validate(request)
        decode_ms = (time.perf_counter_ns() - t0) / 1e6
        return v, self._submit(v, t0), decode_ms

    # ----------------------------------------------------------------- RPCs

    def _guarded(self, method: str, context: grpc.ServicerContext, fn: Callable[[], T]) -> T:
        """Run ``fn``; count it; turn any failure into a status instead of a crash."""
        t0 = time.perf_counter()
        self.metrics.inflight.inc()
        try:
            result = fn()
            code, message = grpc.StatusCode.OK, ""
        except RequestError as exc:
            code, message = exc.code, exc.message
            log.debug("%s from %s: %s %s", method, context.peer(), code.name, message)
        except Exception as exc:
            code = grpc.StatusCode.INTERNAL
            message = f"internal error: {type(exc).__name__}: {exc}"[:1000]
            log.exception("%s from %s failed", method, context.peer())
        finally:
            self.metrics.inflight.dec()
        self.metrics.observe(method, code, time.perf_counter() - t0)
        if code is grpc.StatusCode.OK:
            return result
        context.abort(code, message)
        raise AssertionError("unreachable: context.abort raises")

    def Infer(  # noqa: N802 (gRPC method name)
        self, request: offload_pb2.InferRequest, context: grpc.ServicerContext
    ) -> offload_pb2.InferReply:
        def run() -> offload_pb2.InferReply:
            v, job, decode_ms = self._accept(request)
            context.add_callback(job.cancel)
            remaining = context.time_remaining()
            timeout = None if remaining is None or remaining > _NO_DEADLINE_S else remaining
            if not job.wait(timeout):
                job.cancel()
                raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed in queue")
            return self._reply(v, job, decode_ms)

        return self._guarded("Infer", context, run)

    def InferStream(  # noqa: N802
        self, request_iterator: Iterator[offload_pb2.InferRequest], context: grpc.ServicerContext
    ) -> Iterator[offload_pb2.InferReply]:
        """Pipelined: requests are validated and queued as they arrive; replies go out in
        request order. A bad request ends the stream with its status (gRPC has no
        per-message status), after the replies to the requests before it.

        Admission is bounded (:class:`~edgeml.transport.streams.StreamGate`) and a stream
        silent for ``stream_idle_s`` with nothing in flight is ended, so silent streams
        cannot take the server's threads."""
        client = peer_address(context.peer())
        refused = self.streams.enter(client)
        if refused is not None:
            self.metrics.observe("InferStream", grpc.StatusCode.RESOURCE_EXHAUSTED, 0.0)
            log.info("InferStream from %s refused: %s", context.peer(), refused)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refused)
        try:
            yield from self._stream(request_iterator, context)
        finally:
            self.streams.leave(client)

    def _stream(
        self, request_iterator: Iterator[offload_pb2.InferRequest], context: grpc.ServicerContext
    ) -> Iterator[offload_pb2.InferReply]:
        """The body of an admitted :meth:`InferStream`."""
        idle_s = self.config.stream_idle_s
        last_arrival = [time.monotonic()]
        pending: queue.Queue[Any] = queue.Queue(maxsize=self.config.stream_window)
        ended = threading.Event()
        open_jobs: set[Job] = set()
        end = object()

        def on_done() -> None:
            ended.set()
            for job in list(open_jobs):
                job.cancel()

        context.add_callback(on_done)

        def put(item: Any) -> None:
            while not ended.is_set():
                try:
                    pending.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        def read() -> None:
            try:
                for request in request_iterator:
                    last_arrival[0] = time.monotonic()
                    t0 = time.perf_counter()
                    try:
                        v, job, decode_ms = self._accept(request)
                    except RequestError as exc:
                        put((t0, exc))
                        return
                    except Exception as exc:
                        log.exception("InferStream: accepting a request failed")
                        put((t0, RequestError(grpc.StatusCode.INTERNAL, f"internal error: {exc}")))
                        return
                    open_jobs.add(job)
                    put((t0, (v, job, decode_ms)))
            except Exception as exc:  # the RPC ended under us (cancel, deadline, disconnect)
                log.debug("InferStream reader stopped: %s", exc)
            finally:
                put(end)

        threading.Thread(target=read, name="edgeml-stream-reader", daemon=True).start()
        while True:
            try:
                item = pending.get(timeout=0.5)
            except queue.Empty:
                if ended.is_set() or not context.is_active():
                    return
                silent = time.monotonic() - last_arrival[0]
                if not open_jobs and silent > idle_s:
                    self.metrics.observe("InferStream", grpc.StatusCode.DEADLINE_EXCEEDED, 0.0)
                    context.abort(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"stream idle for {silent:.0f} s (stream_idle_s={idle_s:g}); "
                        "send requests or close the stream",
                    )
                continue
            if item is end:
                return
            t0, body = item

            def answer(body: Any = body) -> offload_pb2.InferReply:
                if isinstance(body, RequestError):
                    raise body
                v, job, decode_ms = body
                while not job.wait(0.5):
                    if not context.is_active():
                        job.cancel()
                open_jobs.discard(job)
                return self._reply(v, job, decode_ms)

            yield self._guarded_since("InferStream", context, answer, t0)

    def _guarded_since(
        self, method: str, context: grpc.ServicerContext, fn: Callable[[], T], t0: float
    ) -> T:
        """:meth:`_guarded`, but the latency counts from ``t0`` (when the message arrived)."""
        try:
            result = fn()
        except RequestError as exc:
            self.metrics.observe(method, exc.code, time.perf_counter() - t0)
            context.abort(exc.code, exc.message)
            raise
        except Exception as exc:
            log.exception("%s failed", method)
            self.metrics.observe(method, grpc.StatusCode.INTERNAL, time.perf_counter() - t0)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
            raise
        self.metrics.observe(method, grpc.StatusCode.OK, time.perf_counter() - t0)
        return result

    def GetModelInfo(  # noqa: N802
        self, request: offload_pb2.ModelInfoRequest, context: grpc.ServicerContext
    ) -> offload_pb2.ModelInfo:
        def run() -> offload_pb2.ModelInfo:
            self.validator.check_model_id(request.model_id)
            m = self.bundle.manifest
            return offload_pb2.ModelInfo(
                manifest_json=self._manifest_json,
                weights_sha256=m.weights_sha256,
                cut_points=[
                    offload_pb2.CutPoint(
                        split=c.split, shape=c.shape, dtype=c.dtype, bytes_per_codec=c.bytes
                    )
                    for c in m.cut_points
                ],
            )

        return self._guarded("GetModelInfo", context, run)

    def Profile(  # noqa: N802
        self, request: offload_pb2.ProfileRequest, context: grpc.ServicerContext
    ) -> offload_pb2.ProfileReply:
        def run() -> offload_pb2.ProfileReply:
            self.validator.check_model_id(request.model_id)
            if request.repeats > MAX_PROFILE_REPEATS:
                raise RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"repeats: {request.repeats}; allowed 0..{MAX_PROFILE_REPEATS} "
                    "(0: the bundle's profile.json, or the server's choice)",
                )
            return self.profile(request.repeats)

        return self._guarded("Profile", context, run)

    # ----------------------------------------------------------------- profile

    def profile(self, repeats: int = 0) -> offload_pb2.ProfileReply:
        """The bundle's profile.json when ``repeats == 0`` and it has one; else measure here."""
        if repeats == 0:
            stored = self._stored_profile()
            if stored is not None:
                return stored
        with self._profile_lock:
            if repeats == 0 and self._measured is not None:
                return self._measured
            reply = self._measure(repeats or self.config.profile_repeats)
            if repeats == 0:
                self._measured = reply
            return reply

    def _stored_profile(self) -> offload_pb2.ProfileReply | None:
        p = self.bundle.profile
        if not p:
            return None
        try:
            exits = self.bundle.manifest.exits
            blocks = [float(v) for v in p["blocks_ms"]]
            heads = [float(p["heads_ms"][str(b)]) for b in exits]
            if len(blocks) != self.bundle.manifest.blocks:
                raise ValueError(f"{len(blocks)} block latencies")
            host = p.get("host", {})
            device = f"{host.get('cpu', 'unknown CPU')} ({p.get('devices', {}).get('cloud', '')})"
            return offload_pb2.ProfileReply(
                block_ms=blocks, head_ms=heads, device=device, threads=int(host.get("threads", 0))
            )
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("unusable profile.json in %s (%s); measuring", self.bundle.path, exc)
            return None

    def _measure(self, repeats: int) -> offload_pb2.ProfileReply:
        """Median per-block and per-head latency at batch 1 on this server, right now."""
        from edgeml.partition.profiler import cpu_model, interleaved_medians

        net, m = self.net, self.bundle.manifest
        with torch.inference_mode():
            hidden = [torch.rand(1, *m.input_shape)]
            for block in net.blocks:
                hidden.append(block(hidden[-1]))
            blocks_ms = interleaved_medians(
                [lambda r, k=k: net.blocks[k](hidden[k]) for k in range(m.blocks)],  # type: ignore[misc]
                repeats,
            )
            heads_ms = interleaved_medians(
                [lambda r, b=b: net.head(b, hidden[b]) for b in m.exits],  # type: ignore[misc]
                repeats,
            )
        threads = torch.get_num_threads()
        return offload_pb2.ProfileReply(
            block_ms=blocks_ms,
            head_ms=heads_ms,
            device=f"{cpu_model()} (measured by the server, {threads} torch thread(s))",
            threads=threads,
        )


def add_offload_servicer(servicer: OffloadServicer, server: grpc.Server) -> None:
    """Register like the generated ``add_OffloadServicer_to_server``, except that
    ``InferRequest`` bytes are parsed by :func:`parse_infer_request`, so undecodable bytes
    get INVALID_ARGUMENT from the servicer instead of INTERNAL from gRPC."""
    pb = offload_pb2
    handlers = {
        "Infer": grpc.unary_unary_rpc_method_handler(
            servicer.Infer,
            request_deserializer=parse_infer_request,
            response_serializer=pb.InferReply.SerializeToString,
        ),
        "InferStream": grpc.stream_stream_rpc_method_handler(
            servicer.InferStream,
            request_deserializer=parse_infer_request,
            response_serializer=pb.InferReply.SerializeToString,
        ),
        "GetModelInfo": grpc.unary_unary_rpc_method_handler(
            servicer.GetModelInfo,
            request_deserializer=pb.ModelInfoRequest.FromString,
            response_serializer=pb.ModelInfo.SerializeToString,
        ),
        "Profile": grpc.unary_unary_rpc_method_handler(
            servicer.Profile,
            request_deserializer=pb.ProfileRequest.FromString,
            response_serializer=pb.ProfileReply.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


class OffloadServer:
    """A started gRPC server: Offload + health + reflection (+ metrics endpoint).

    :param config: see :class:`ServerConfig`.
    :param bundle: an already loaded bundle (tests share one); None loads ``config.bundle``.
    """

    def __init__(self, config: ServerConfig, bundle: Bundle | None = None) -> None:
        self.config = config
        torch.set_num_threads(config.torch_threads)
        self.bundle = bundle if bundle is not None else Bundle.load(config.bundle, False)
        self.metrics = ServerMetrics()
        self.servicer = OffloadServicer(self.bundle, config, self.metrics)
        self.health = health.HealthServicer()
        self.port: int = 0
        self.metrics_port: int | None = None
        self._server: grpc.Server | None = None
        self._stopped = threading.Event()

    @property
    def address(self) -> str:
        """``host:port`` the server listens on (after :meth:`start`)."""
        return _endpoint(self.config.host, self.port)

    def _interceptors(self) -> list[grpc.ServerInterceptor]:
        if not self.config.tokens:
            return []

        def rejected(method: str) -> None:
            self.metrics.observe(method.rsplit("/", 1)[-1], grpc.StatusCode.UNAUTHENTICATED, 0.0)

        return [BearerTokenInterceptor(self.config.tokens, on_reject=rejected)]

    def start(self) -> OffloadServer:
        cfg = self.config
        self.servicer.warm_up()
        options = [
            # a little above the payload cap, so the servicer (not the transport) reports it
            ("grpc.max_receive_message_length", cfg.max_payload_bytes + 64 * 1024),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", _ms(cfg.min_client_ping_s)),
            ("grpc.http2.max_ping_strikes", 2),
            ("grpc.keepalive_time_ms", _ms(cfg.keepalive_s) or _NEVER_MS),
            ("grpc.keepalive_timeout_ms", _ms(cfg.keepalive_timeout_s)),
            ("grpc.max_connection_age_ms", _ms(cfg.max_connection_age_s) or _NEVER_MS),
            ("grpc.max_connection_age_grace_ms", _ms(cfg.max_connection_age_grace_s)),
            ("grpc.so_reuseport", 0),  # a taken port is an error, not a silently shared one
        ]
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="edgeml-rpc"),
            interceptors=self._interceptors(),
            options=options,
        )
        add_offload_servicer(self.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        endpoint = _endpoint(cfg.host, cfg.port)
        try:
            if cfg.tls:
                assert cfg.tls_cert is not None and cfg.tls_key is not None
                creds = server_credentials(cfg.tls_cert, cfg.tls_key, cfg.client_ca)
                port = server.add_secure_port(endpoint, creds)
            else:
                port = server.add_insecure_port(endpoint)
        except RuntimeError as exc:
            raise OSError(f"port: cannot listen on {endpoint} ({exc})") from None
        if port == 0:
            raise OSError(f"port: cannot listen on {endpoint}")
        if cfg.tokens and not cfg.tls and cfg.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("token auth without TLS on %s: tokens cross the network in clear", endpoint)
        self.port = port
        self.servicer.batcher.start()
        server.start()
        self._server = server
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if cfg.metrics_port is not None:
            self.metrics_port = self.metrics.serve_http(cfg.metrics_port, cfg.host)
        log.info(
            "serving %s (%s) on %s: max_batch=%d max_wait_us=%d tls=%s mtls=%s token=%s",
            self.bundle.path, self.servicer.model_id, self.address, cfg.max_batch,
            cfg.max_wait_us, cfg.tls, cfg.client_ca is not None, bool(cfg.tokens),
        )  # fmt: skip
        return self

    def stop(self, grace: float | None = None) -> None:
        """Drain: health NOT_SERVING, refuse new RPCs, let in-flight ones finish for up to
        ``grace`` seconds (default ``config.grace_s``), then stop the batcher. Idempotent."""
        if self._server is None or self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.config.grace_s if grace is None else grace
        self.health.enter_graceful_shutdown()
        t0 = time.perf_counter()
        self._server.stop(grace).wait()
        self.servicer.batcher.close(timeout=max(grace, 1.0))
        self.metrics.close()
        log.info("stopped %s after draining %.2f s", self.address, time.perf_counter() - t0)

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        assert self._server is not None, "start() first"
        return self._server.wait_for_termination(timeout)

    def __enter__(self) -> OffloadServer:
        return self if self._server is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(0 if exc[0] is not None else None)


def serve(config: ServerConfig, ready: Callable[[OffloadServer], None] | None = None) -> int:
    """Run until SIGTERM or SIGINT, then drain and return 0 (``edgeml serve``).

    ``ready`` is called once the server listens (the CLI prints the bound port there).
    """
    server = OffloadServer(config).start()
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s: draining in-flight requests", signal.Signals(signum).name)
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    else:
        log.warning("serve() outside the main thread: no signal handling")
    try:
        if ready is not None:
            ready(server)
        while not stop.wait(0.25):
            pass
    finally:
        server.stop(config.grace_s)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
