"""gRPC vs raw TCP for the edge->cloud tensor: how close can Python gRPC get to a socket?

Both servers run for real on 127.0.0.1 in a child process (the client never shares a GIL
with them). The client sends an already-encoded float32 tensor (codec ``raw``) of each
payload size and waits for a tiny reply: a checksum of the decoded tensor, which the client
verifies. The server only decodes, so the numbers are transport: framing, copies, HTTP/2
flow control, thread hops.

Each gRPC row is one variant; ``change`` says what it alters relative to the row it builds
on. Some variants change a process-wide setting (glibc malloc), so variants are grouped in
*phases*: one client process + one server process per phase, each with its own raw-socket
baselines. ``ratio_vs_raw`` divides by the fastest raw median of any phase (the strict bar;
the raw socket itself runs faster in malloc-tuned processes); the JSON also has the ratio
against the raw run beside each variant and against ``raw_simple`` (typical socket code).
Rounds alternate between phases and visit every (variant, size) cell once per round, so
load from other processes on the machine hits all cells alike.

Pipelined variants (``inflight`` > 1) send several tensors before reading the replies and
report time per tensor; they are compared with ``raw_pipe4``, the raw socket pipelined the
same way. The malloc phase uses :func:`edgeml.transport.malloc.tune_malloc`, the function
``edgeml serve`` and ``edgeml edge`` apply at start-up.

What bounds Python gRPC here (grpcio 1.85.3, read off its sources and perf): the send path
copies each message once into a slice (``grpc_slice_from_copied_buffer``); grpc core reads
the socket into 64 KiB slices, and the receive path turns each slice into ``bytes`` and
joins them, two more copies under the GIL; and every call costs 0.2-0.8 ms of thread
hand-offs and Python call machinery. A raw socket with ``recv_into`` does none of that.
``raw_grpcio_copies`` is the raw socket plus exactly those three copies, and the summary's
``grpcio_ceiling`` turns it and the 1 KB per-call cost into the best ratio any variant can
reach with this grpcio, measured in the same run.

    .venv/bin/python bench/transport.py                     # table + JSON + PNG
    .venv/bin/python bench/transport.py --rounds 1 --budget-s 0.1   # quick look
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # no INFO lines (GOAWAY) at shutdown

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import platform  # noqa: E402
import queue  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from concurrent import futures  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from multiprocessing.connection import Connection  # noqa: E402
from pathlib import Path  # noqa: E402

import grpc  # noqa: E402
import numpy as np  # noqa: E402

from edgeml.partition import codecs  # noqa: E402
from edgeml.transport.malloc import tune_malloc  # noqa: E402 - what edgeml serve/edge apply
from edgeml.transport.proto.edgeml.v1 import offload_pb2, offload_pb2_grpc  # noqa: E402
from edgeml.transport.tensor_proto import from_proto, to_proto  # noqa: E402

MiB = 1 << 20
READ_SLICE = 64 << 10  # grpc core's posix endpoint reads into slices of this size (kBigAlloc)
COPIES = "raw_grpcio_copies"  # the raw baseline that pays grpcio's Python-layer copies
SIZES = {"1KB": 1 << 10, "100KB": 100 << 10, "1MB": MiB, "8MB": 8 * MiB}
PIPE = 4  # tensors in flight for the pipelined variants and their raw baseline
BIG = 64 * MiB  # message limit for the variants that lift gRPC's 4 MiB default
BYTES_UNARY = "/edgeml.bench.Transport/InferFrame"
BYTES_STREAM = "/edgeml.bench.Transport/InferFrameStream"
SPLIT_UNARY = "/edgeml.bench.Transport/InferSplit"
CHUNKED_STREAM = "/edgeml.bench.Transport/InferChunked"
SPLIT_KEY = "edgeml-request-bin"  # '-bin' metadata: gRPC carries it as raw bytes
_REPLY = struct.Struct("<dQ")  # checksum, frame bytes
_LEN = struct.Struct("<Q")

Options = tuple[tuple[str, object], ...]

# --------------------------------------------------------------------------- variants

SIZE_LIMITS: Options = (
    ("grpc.max_send_message_length", BIG),
    ("grpc.max_receive_message_length", BIG),
)
NO_COMPRESSION: Options = (("grpc.default_compression_algorithm", 0),)
THROUGHPUT: Options = (("grpc.optimization_target", "throughput"),)
# A stream window that covers the largest message so the sender never waits for
# WINDOW_UPDATEs, no BDP pings, the largest HTTP/2 frames, and big socket reads.
FLOW: Options = (
    ("grpc.http2.lookahead_bytes", BIG),
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.max_frame_size", 16 * MiB - 1),
    ("grpc.http2.write_buffer_size", BIG),
    ("grpc.experimental.tcp_read_chunk_size", 4 * MiB),
    ("grpc.experimental.tcp_min_read_chunk_size", 256 << 10),
    ("grpc.experimental.tcp_max_read_chunk_size", 16 * MiB),
)
TUNED = SIZE_LIMITS + NO_COMPRESSION + THROUGHPUT + FLOW
# Linux MSG_ZEROCOPY sends from grpc core for writes above 64 KiB.
TX_ZEROCOPY: Options = (
    ("grpc.experimental.tcp_tx_zerocopy_enabled", 1),
    ("grpc.experimental.tcp_tx_zerocopy_send_bytes_threshold", 64 << 10),
)

SERVER_OPTIONS: dict[str, Options] = {
    "default": (),
    "big": SIZE_LIMITS,
    "nocomp": SIZE_LIMITS + NO_COMPRESSION,
    "throughput": SIZE_LIMITS + NO_COMPRESSION + THROUGHPUT,
    "tuned": TUNED,
    "aio_tuned": TUNED,  # the same options on a grpc.aio (asyncio) server
    "zerocopy": TUNED + TX_ZEROCOPY,
}


@dataclass(frozen=True)
class Variant:
    """One gRPC configuration: client options, which server, which call shape, which phase."""

    name: str
    change: str
    server: str
    client_options: Options
    call: str  # unary_{proto,frame,split} | stream_{proto,frame,chunked}
    no_compression_per_call: bool = False
    malloc: bool = False  # phase: glibc malloc tuned in client and server processes
    chunk_bytes: int = 0  # stream_chunked: largest message; a tensor spans several
    inflight: int = 1  # tensors sent back to back before their replies are read (pipelining)
    aio_client: bool = False  # a grpc.aio channel driven by the caller's own event loop


VARIANTS = [
    Variant("naive", "defaults: protobuf unary Infer, 4 MiB limit", "default", (), "unary_proto"),
    Variant("max_msg", "max send/receive 64 MiB so 8 MB fits", "big", SIZE_LIMITS, "unary_proto"),
    Variant(
        "no_compress",
        "+ compression explicitly off (channel default and per call)",
        "nocomp",
        SIZE_LIMITS + NO_COMPRESSION,
        "unary_proto",
        no_compression_per_call=True,
    ),
    Variant(
        "opt_target",
        "+ grpc.optimization_target=throughput",
        "throughput",
        SIZE_LIMITS + NO_COMPRESSION + THROUGHPUT,
        "unary_proto",
        no_compression_per_call=True,
    ),
    Variant(
        "flow",
        "+ 64 MiB stream window, bdp_probe off, 16 MiB frames, 4-16 MiB socket reads",
        "tuned",
        TUNED,
        "unary_proto",
        no_compression_per_call=True,
    ),
    Variant(
        "malloc",
        "+ glibc keeps freed big buffers mapped (mallopt): no page faults per message",
        "tuned",
        TUNED,
        "unary_proto",
        no_compression_per_call=True,
        malloc=True,
    ),
    Variant(
        "frame",
        "+ message = codecs frame bytes, identity serializers (no protobuf copies)",
        "tuned",
        TUNED,
        "unary_frame",
        no_compression_per_call=True,
        malloc=True,
    ),
    Variant(
        "split",
        "+ InferRequest in '-bin' metadata, message = payload itself (no frame concat copy)",
        "tuned",
        TUNED,
        "unary_split",
        no_compression_per_call=True,
        malloc=True,
    ),
    Variant(
        "stream",
        "malloc + one long-lived bidi InferStream (protobuf) instead of unary calls",
        "tuned",
        TUNED,
        "stream_proto",
        malloc=True,
    ),
    Variant(
        "stream_frame",
        "stream + codecs frame bytes instead of protobuf",
        "tuned",
        TUNED,
        "stream_frame",
        malloc=True,
    ),
    Variant(
        "tx_zerocopy",
        "split + grpc core sends with MSG_ZEROCOPY (grpc.experimental.tcp_tx_zerocopy_*)",
        "zerocopy",
        TUNED + TX_ZEROCOPY,
        "unary_split",
        no_compression_per_call=True,
        malloc=True,
    ),
    Variant(
        "aio_split",
        "split, served by a grpc.aio (asyncio) server: no thread-pool hand-off per call",
        "aio_tuned",
        TUNED,
        "unary_split",
        no_compression_per_call=True,
        malloc=True,
    ),
    Variant(
        "aio_stream",
        "stream_frame, served by a grpc.aio (asyncio) server",
        "aio_tuned",
        TUNED,
        "stream_frame",
        malloc=True,
    ),
    Variant(
        "aio_both_split",
        "aio_split with a grpc.aio client too: calls run on the caller's event loop",
        "aio_tuned",
        TUNED,
        "unary_split",
        no_compression_per_call=True,
        malloc=True,
        aio_client=True,
    ),
    Variant(
        "aio_both_stream",
        "aio_stream with a grpc.aio client too: no thread hand-off on either side",
        "aio_tuned",
        TUNED,
        "stream_frame",
        malloc=True,
        aio_client=True,
    ),
    Variant(
        f"pipe{PIPE}_stream",
        f"stream_frame with {PIPE} tensors in flight on the one stream; vs raw_pipe{PIPE}",
        "tuned",
        TUNED,
        "stream_frame",
        malloc=True,
        inflight=PIPE,
    ),
    Variant(
        f"pipe{PIPE}_split",
        f"split with {PIPE} concurrent unary calls on the one channel; vs raw_pipe{PIPE}",
        "tuned",
        TUNED,
        "unary_split",
        no_compression_per_call=True,
        malloc=True,
        inflight=PIPE,
    ),
    *(
        Variant(
            f"chunk_{kb}k",
            f"stream_frame, but a tensor spans messages of <= {kb} KiB (cache-sized copies in "
            "grpcio), gathered into one reused buffer by the server",
            "tuned",
            TUNED,
            "stream_chunked",
            malloc=True,
            chunk_bytes=kb << 10,
        )
        for kb in (1024,)
    ),
]


RAW_BASELINES = {
    "raw": "baseline: length-prefixed TCP, sendmsg scatter-gather, recv_into one reused buffer",
    f"raw_pipe{PIPE}": f"baseline for pipelined variants: raw, {PIPE} frames sent back to back, "
    f"then {PIPE} replies read; time per tensor",
    "raw_simple": "context: sendall(prefix + frame), recv chunks + b''.join (typical socket code)",
    COPIES: "ceiling: raw, plus the copies grpcio's Python layer makes (client: payload into a "
    "new buffer; server: every 64 KiB read slice to bytes, then joined); no HTTP/2, no threads",
}


# --------------------------------------------------------------------------- server side


def checksum(x: np.ndarray) -> float:
    """Cheap integrity check: sum of ~1024 evenly strided elements (not a transport cost)."""
    flat = x.reshape(-1)
    return float(flat[:: max(1, flat.size // 1024)].sum(dtype=np.float64))


class _Servicer(offload_pb2_grpc.OffloadServicer):
    """The generated service doing only the transport part: decode, answer a checksum."""

    def Infer(self, request, context):  # noqa: N802 - gRPC method name
        x = codecs.decode(from_proto(request.tensor))
        return offload_pb2.InferReply(request_id=request.request_id, confidence=checksum(x))

    def InferStream(self, request_iterator, context):  # noqa: N802
        for request in request_iterator:
            yield self.Infer(request, context)


def _frame_reply(frame: bytes | memoryview) -> bytes:
    x = codecs.decode(codecs.from_bytes(frame))
    return _REPLY.pack(checksum(x), len(frame))


def _split_infer(payload: bytes, context: grpc.ServicerContext) -> offload_pb2.InferReply:
    """Request fields from metadata, tensor bytes from the message body."""
    meta = dict(context.invocation_metadata())
    request = offload_pb2.InferRequest.FromString(meta[SPLIT_KEY])
    x = codecs.decode(from_proto(request.tensor, payload=payload))
    return offload_pb2.InferReply(request_id=request.request_id, confidence=checksum(x))


def _chunked_replies(requests: Iterator[bytes]) -> Iterator[bytes]:
    """A frame spread over several messages: the first starts with the frame's u64 length.

    A frame that fits one message is decoded in place; a longer one is gathered into one
    buffer reused across frames (each message is small enough to stay in cache)."""
    buf = bytearray()
    for first in requests:
        (n,) = _LEN.unpack_from(first)
        if len(first) - _LEN.size == n:
            frame = memoryview(first)[_LEN.size :]
        else:
            if len(buf) < n:
                buf = bytearray(n)
            got = len(first) - _LEN.size
            buf[:got] = memoryview(first)[_LEN.size :]
            while got < n:
                piece = next(requests)
                buf[got : got + len(piece)] = piece
                got += len(piece)
            frame = memoryview(buf)[:n]
        x = codecs.decode(codecs.from_bytes(frame))
        yield _REPLY.pack(checksum(x), n)
        del x, frame


def chunk_frame(e: codecs.EncodedTensor, chunk: int) -> list[bytes]:
    """Messages of at most ``chunk`` bytes carrying one frame (see :func:`_chunked_replies`);
    each is built straight from the payload, the whole frame is never joined."""
    header = codecs.header_bytes(e)
    n = len(header) + len(e.payload)
    payload = memoryview(e.payload).cast("B")
    first = max(0, chunk - _LEN.size - len(header))
    out = [b"".join((_LEN.pack(n), header, payload[:first]))]
    out += [bytes(payload[i : i + chunk]) for i in range(first, len(payload), chunk)]
    return out


class _BenchHandler(grpc.GenericRpcHandler):
    """Methods outside the .proto with identity (de)serializers: bytes in, bytes out."""

    def __init__(self) -> None:
        def stream(requests: Iterator[bytes], context) -> Iterator[bytes]:
            for request in requests:
                yield _frame_reply(request)

        self.handlers = {
            BYTES_UNARY: grpc.unary_unary_rpc_method_handler(lambda req, ctx: _frame_reply(req)),
            BYTES_STREAM: grpc.stream_stream_rpc_method_handler(stream),
            CHUNKED_STREAM: grpc.stream_stream_rpc_method_handler(
                lambda requests, ctx: _chunked_replies(requests)
            ),
            SPLIT_UNARY: grpc.unary_unary_rpc_method_handler(
                _split_infer, response_serializer=offload_pb2.InferReply.SerializeToString
            ),
        }

    def service(self, handler_call_details):
        return self.handlers.get(handler_call_details.method)


def _recv_exact(conn: socket.socket, view: memoryview) -> bool:
    got = 0
    while got < len(view):
        n = conn.recv_into(view[got:])
        if n == 0:
            return False
        got += n
    return True


def _serve_frames(conn: socket.socket, reply: Callable[[memoryview], bytes]) -> None:
    """Length-prefixed frames into one reused buffer; ``reply`` answers each frame."""
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray(1 << 16)
    head = bytearray(_LEN.size)
    with conn:
        while _recv_exact(conn, memoryview(head)):
            (n,) = _LEN.unpack(head)
            if n > len(buf):
                buf = bytearray(n)
            view = memoryview(buf)[:n]
            if not _recv_exact(conn, view):
                return
            conn.sendall(reply(view))
            del view


def _serve_raw_conn(conn: socket.socket) -> None:
    """The baseline server: decode is zero-copy from the reused buffer."""
    _serve_frames(conn, _frame_reply)


def _serve_copying_conn(conn: socket.socket) -> None:
    """:func:`_serve_raw_conn` plus grpcio 1.85's receive copies: ``ReceiveMessageOperation``
    turns each read slice into ``bytes`` and joins them into the message."""

    def reply(view: memoryview) -> bytes:
        n = len(view)
        return _frame_reply(
            b"".join([bytes(view[i : i + READ_SLICE]) for i in range(0, n, READ_SLICE)])
        )

    _serve_frames(conn, reply)


def _serve_simple_conn(conn: socket.socket) -> None:
    """The socket code most people write: recv chunks, join them, parse the joined bytes."""
    with conn:
        while True:
            head = conn.recv(_LEN.size, socket.MSG_WAITALL)
            if len(head) < _LEN.size:
                return
            (n,) = _LEN.unpack(head)
            chunks, got = [], 0
            while got < n:
                chunk = conn.recv(min(n - got, 1 << 20))
                if not chunk:
                    return
                chunks.append(chunk)
                got += len(chunk)
            conn.sendall(_frame_reply(b"".join(chunks)))


def _serve_raw(listener: socket.socket, handler: Callable[[socket.socket], None]) -> None:
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handler, args=(conn,), daemon=True).start()


def _aio_handler() -> grpc.GenericRpcHandler:
    """The bench's bytes methods as asyncio handlers (same work as :class:`_BenchHandler`)."""

    async def unary(request: bytes, context) -> bytes:
        return _frame_reply(request)

    async def stream(requests, context):
        async for request in requests:
            yield _frame_reply(request)

    async def split(payload: bytes, context) -> offload_pb2.InferReply:
        return _split_infer(payload, context)

    handlers = {
        BYTES_UNARY: grpc.unary_unary_rpc_method_handler(unary),
        BYTES_STREAM: grpc.stream_stream_rpc_method_handler(stream),
        SPLIT_UNARY: grpc.unary_unary_rpc_method_handler(
            split, response_serializer=offload_pb2.InferReply.SerializeToString
        ),
    }
    return grpc.method_handlers_generic_handler("edgeml.bench.Transport", {
        path.rsplit("/", 1)[1]: h for path, h in handlers.items()
    })  # fmt: skip


def _start_aio_server(options: Options, wait_stop: Callable[[], object]) -> int:
    """A grpc.aio server on its own event-loop thread; returns its port."""
    port: queue.SimpleQueue[int] = queue.SimpleQueue()

    async def main() -> None:
        server = grpc.aio.server(options=list(options))
        server.add_generic_rpc_handlers((_aio_handler(),))
        port.put(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        await asyncio.get_running_loop().run_in_executor(None, wait_stop)
        await server.stop(None)

    threading.Thread(target=asyncio.run, args=(main(),), daemon=True).start()
    return port.get(timeout=30)


def serve(ports: mp.Queue, stop: mp.Event, server_options: dict, malloc: bool) -> None:  # type: ignore[type-arg,valid-type]
    """Server process: the raw TCP server plus one gRPC server per option set."""
    if malloc:
        tune_malloc()
    out = {}
    raw_handlers = (
        ("raw", _serve_raw_conn),
        ("raw_simple", _serve_simple_conn),
        (COPIES, _serve_copying_conn),
    )
    for name, handler in raw_handlers:
        listener = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=_serve_raw, args=(listener, handler), daemon=True).start()
        out[name] = listener.getsockname()[1]
    servers = []
    for name, options in server_options.items():
        if name.startswith("aio_"):
            out[name] = _start_aio_server(options, stop.wait)
            continue
        # Long-lived streams each hold a worker for their lifetime: room for all of them.
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=list(options))
        offload_pb2_grpc.add_OffloadServicer_to_server(_Servicer(), server)
        server.add_generic_rpc_handlers((_BenchHandler(),))
        out[name] = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
    ports.put(out)
    stop.wait()
    for server in servers:
        server.stop(None)


# --------------------------------------------------------------------------- client side

Call = Callable[[], "float | list[float]"]  # round trip(s); the server's checksum(s)


class RawClient:
    """The baseline: one TCP connection, scatter-gather send, no serialization library."""

    def __init__(self, port: int, inflight: int = 1) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reply = bytearray(_REPLY.size)
        self.inflight = inflight

    def _payload(self, e: codecs.EncodedTensor) -> bytes | memoryview:
        return e.payload

    def _send(self, e: codecs.EncodedTensor) -> None:
        header, payload = codecs.header_bytes(e), self._payload(e)
        self.sock.sendmsg([_LEN.pack(len(header) + len(payload)), header, payload])

    def call_for(self, e: codecs.EncodedTensor) -> Call:
        def one() -> float:
            self._send(e)
            if not _recv_exact(self.sock, memoryview(self.reply)):
                raise ConnectionError("raw server closed the connection")
            return _REPLY.unpack(self.reply)[0]

        def pipelined() -> list[float]:
            # Replies are 16 bytes: they wait in the socket buffer while the frames go out.
            for _ in range(self.inflight):
                self._send(e)
            out = []
            for _ in range(self.inflight):
                if not _recv_exact(self.sock, memoryview(self.reply)):
                    raise ConnectionError("raw server closed the connection")
                out.append(_REPLY.unpack(self.reply)[0])
            return out

        return one if self.inflight == 1 else pipelined

    def close(self) -> None:
        self.sock.close()


class CopyingRawClient(RawClient):
    """:class:`RawClient` plus grpcio 1.85's send copy (``grpc_slice_from_copied_buffer``)."""

    def _payload(self, e: codecs.EncodedTensor) -> bytes:
        return memoryview(e.payload).tobytes()  # a fresh buffer, one memcpy


class SimpleRawClient(RawClient):
    """Context baseline: one joined buffer per message, sendall, and a naive server."""

    def call_for(self, e: codecs.EncodedTensor) -> Call:
        def call() -> float:
            frame = codecs.to_bytes(e)
            self.sock.sendall(_LEN.pack(len(frame)) + frame)
            if not _recv_exact(self.sock, memoryview(self.reply)):
                raise ConnectionError("raw server closed the connection")
            return _REPLY.unpack(self.reply)[0]

        return call


def _call_kwargs(variant: Variant) -> dict[str, object]:
    return (
        {"compression": grpc.Compression.NoCompression} if variant.no_compression_per_call else {}
    )


def _split_metadata(e: codecs.EncodedTensor) -> tuple[tuple[str, bytes], ...]:
    """The ``split`` call shape's request: InferRequest without its data, as '-bin' metadata."""
    req = offload_pb2.InferRequest(request_id="b")
    to_proto(e, req.tensor, with_data=False)
    return ((SPLIT_KEY, req.SerializeToString()),)


class AioGrpcClient:
    """A grpc.aio channel on an event loop that the calling thread runs for each call, so
    no other thread touches a request or a reply on the client side."""

    def __init__(self, variant: Variant, port: int) -> None:
        self.variant = variant
        self.loop = asyncio.new_event_loop()
        self.kw = _call_kwargs(variant)

        async def connect() -> grpc.aio.Channel:
            channel = grpc.aio.insecure_channel(
                f"127.0.0.1:{port}", options=list(variant.client_options)
            )
            await asyncio.wait_for(channel.channel_ready(), 30)
            return channel

        self.channel = self.loop.run_until_complete(connect())
        self._stream = None
        if variant.call == "stream_frame":

            async def open_stream():  # the call must be created inside the loop
                return self.channel.stream_stream(BYTES_STREAM)()

            self._stream = self.loop.run_until_complete(open_stream())

    def call_for(self, e: codecs.EncodedTensor) -> Call:
        kind, kw, run = self.variant.call, self.kw, self.loop.run_until_complete
        if kind == "unary_split":
            split = self.channel.unary_unary(
                SPLIT_UNARY, response_deserializer=offload_pb2.InferReply.FromString
            )

            async def one() -> float:
                meta = _split_metadata(e)
                return (await split(e.payload, metadata=meta, timeout=60, **kw)).confidence

        elif kind == "stream_frame":
            stream = self._stream
            assert stream is not None

            async def one() -> float:
                await stream.write(codecs.to_bytes(e))
                return _REPLY.unpack(await stream.read())[0]

        else:
            raise ValueError(f"call: no asyncio client for call shape {kind!r}")
        return lambda: run(one())

    def close(self) -> None:
        async def done() -> None:
            if self._stream is not None:
                await self._stream.done_writing()
            await self.channel.close()

        self.loop.run_until_complete(done())
        self.loop.close()


class GrpcClient:
    """One channel per variant; builds the per-call function for its call shape."""

    def __init__(self, variant: Variant, port: int) -> None:
        self.variant = variant
        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{port}", options=list(variant.client_options)
        )
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.kw = _call_kwargs(variant)
        self._requests: queue.SimpleQueue | None = None
        self._replies: Iterator | None = None
        if variant.call.startswith("stream"):
            self._requests = queue.SimpleQueue()
            if variant.call == "stream_proto":
                method = offload_pb2_grpc.OffloadStub(self.channel).InferStream
            elif variant.call == "stream_chunked":
                method = self.channel.stream_stream(CHUNKED_STREAM)
            else:
                method = self.channel.stream_stream(BYTES_STREAM)
            self._replies = method(iter(self._requests.get, None), **self.kw)

    def call_for(self, e: codecs.EncodedTensor) -> Call:
        kind, kw = self.variant.call, self.kw
        if kind == "unary_proto":
            infer = offload_pb2_grpc.OffloadStub(self.channel).Infer

            def call() -> float:
                req = offload_pb2.InferRequest(request_id="b")
                to_proto(e, req.tensor)
                return infer(req, timeout=60, **kw).confidence

        elif kind == "unary_frame":
            frame = self.channel.unary_unary(BYTES_UNARY)

            def call() -> float:
                return _REPLY.unpack(frame(codecs.to_bytes(e), timeout=60, **kw))[0]

        elif kind == "unary_split" and self.variant.inflight > 1:
            split = self.channel.unary_unary(
                SPLIT_UNARY, response_deserializer=offload_pb2.InferReply.FromString
            )
            k = self.variant.inflight

            def call() -> list[float]:
                meta = _split_metadata(e)
                futs = [split.future(e.payload, metadata=meta, timeout=60, **kw) for _ in range(k)]
                return [f.result().confidence for f in futs]

        elif kind == "unary_split":
            split = self.channel.unary_unary(
                SPLIT_UNARY, response_deserializer=offload_pb2.InferReply.FromString
            )

            def call() -> float:
                meta = _split_metadata(e)
                return split(e.payload, metadata=meta, timeout=60, **kw).confidence

        elif kind == "stream_proto":
            requests, replies = self._requests, self._replies
            assert requests is not None and replies is not None

            def call() -> float:
                req = offload_pb2.InferRequest(request_id="b")
                to_proto(e, req.tensor)
                requests.put(req)
                return next(replies).confidence

        elif kind == "stream_frame" and self.variant.inflight > 1:
            requests, replies = self._requests, self._replies
            assert requests is not None and replies is not None
            k = self.variant.inflight

            def call() -> list[float]:
                for _ in range(k):
                    requests.put(codecs.to_bytes(e))
                return [_REPLY.unpack(next(replies))[0] for _ in range(k)]

        elif kind == "stream_frame":
            requests, replies = self._requests, self._replies
            assert requests is not None and replies is not None

            def call() -> float:
                requests.put(codecs.to_bytes(e))
                return _REPLY.unpack(next(replies))[0]

        elif kind == "stream_chunked":
            requests, replies = self._requests, self._replies
            assert requests is not None and replies is not None
            chunk = self.variant.chunk_bytes

            def call() -> float:
                for message in chunk_frame(e, chunk):
                    requests.put(message)
                return _REPLY.unpack(next(replies))[0]

        else:
            raise ValueError(f"call: unknown call shape {kind!r}")
        return call

    def close(self) -> None:
        if self._requests is not None:
            self._requests.put(None)
        self.channel.close()


def _time_calls(call: Call, expect: float, budget_s: float, max_calls: int) -> list[float]:
    out: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(out) < max_calls and (len(out) < 3 or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        got = call()
        dt = time.perf_counter() - t0
        replies = got if isinstance(got, list) else [got]
        out.append(dt / len(replies))  # pipelined: time per tensor
        for r in replies:
            if np.float32(r) != np.float32(expect):  # InferReply.confidence is a float32
                raise AssertionError(f"checksum mismatch: got {r}, expected {expect}")
    return out


def _tensors() -> dict[str, tuple[codecs.EncodedTensor, float]]:
    rng = np.random.default_rng(0)
    out = {}
    for label, nbytes in SIZES.items():
        x = rng.standard_normal(nbytes // 4).astype(np.float32).reshape(1, -1)
        out[label] = (codecs.encode(x, "raw"), checksum(x))
    return out


def phase_worker(conn: Connection, variants: list[Variant], malloc: bool) -> None:
    """Client process of one phase: owns its server process, measures a round per request."""
    tuned = tune_malloc() if malloc else False
    ctx = mp.get_context("spawn")
    ports_q, stop = ctx.Queue(), ctx.Event()
    server_options = {v.server: SERVER_OPTIONS[v.server] for v in variants}
    proc = ctx.Process(target=serve, args=(ports_q, stop, server_options, malloc), daemon=True)
    proc.start()
    try:
        ports = ports_q.get(timeout=120)
        data = _tensors()
        raws = {
            "raw": RawClient(ports["raw"]),
            f"raw_pipe{PIPE}": RawClient(ports["raw"], inflight=PIPE),
            "raw_simple": SimpleRawClient(ports["raw_simple"]),
            COPIES: CopyingRawClient(ports[COPIES]),
        }
        clients = {
            v.name: (AioGrpcClient if v.aio_client else GrpcClient)(v, ports[v.server])
            for v in variants
        }
        calls: dict[tuple[str, str], Call] = {}
        for label, (e, _) in data.items():
            for name, raw in raws.items():
                calls[(name, label)] = raw.call_for(e)
            for name, client in clients.items():
                calls[(name, label)] = client.call_for(e)
        errors: dict[tuple[str, str], str] = {}
        for key, call in calls.items():  # warm-up; find cells that cannot work
            try:
                for _ in range(2):
                    call()
            except grpc.RpcError as exc:
                errors[key] = f"{exc.code().name}: {exc.details()}"
        conn.send({"errors": errors, "malloc_tuned": tuned})
        while (cmd := conn.recv())[0] == "round":
            _, budget_s, max_calls = cmd
            samples = {
                key: _time_calls(call, data[key[1]][1], budget_s, max_calls)
                for key, call in calls.items()
                if key not in errors
            }
            conn.send(samples)
        for raw in raws.values():
            raw.close()
        for client in clients.values():
            client.close()
    finally:
        stop.set()
        proc.join(timeout=10)
        conn.close()


def run(rounds: int, budget_s: float, max_calls: int, variants: list[Variant]) -> dict[str, dict]:
    """Measure every variant and size; returns rows keyed by name (raw baselines included)."""
    ctx = mp.get_context("spawn")
    phases = {}
    for malloc in sorted({v.malloc for v in variants}):
        mine = [v for v in variants if v.malloc == malloc]
        here, there = ctx.Pipe()
        proc = ctx.Process(target=phase_worker, args=(there, mine, malloc))
        proc.start()
        phases[malloc] = (here, proc, mine)
    samples: dict[tuple[bool, str, str], list[float]] = {}
    info = {}
    try:
        for malloc, (pipe, _, _) in phases.items():
            info[malloc] = pipe.recv()
        for r in range(rounds):
            for malloc, (pipe, _, _) in phases.items():
                pipe.send(("round", budget_s, max_calls))
                for (name, label), s in pipe.recv().items():
                    samples.setdefault((malloc, name, label), []).extend(s)
            print(f"round {r + 1}/{rounds} done", file=sys.stderr)
    finally:
        for pipe, proc, _ in phases.values():
            with contextlib.suppress(OSError):  # a dead worker: its own error is the one to see
                pipe.send(("close",))
            proc.join(timeout=30)
    return _report(samples, info, {m: mine for m, (_, _, mine) in phases.items()})


def _report(
    samples: dict[tuple[bool, str, str], list[float]],
    info: dict[bool, dict],
    phases: dict[bool, list[Variant]],
) -> dict[str, dict]:
    """Rows per raw baseline and variant. ``ratio_vs_raw`` uses the fastest median of any
    phase (a conservative bar for gRPC) of the raw baseline measured the same way
    (``raw_reference``: ``raw``, or ``raw_pipe4`` for pipelined variants);
    ``ratio_vs_same_phase_raw`` the one beside it."""
    rows: dict[str, dict] = {}
    base: dict[tuple[bool, str], dict[str, dict]] = {}
    for malloc in phases:
        for raw, change in RAW_BASELINES.items():
            sizes = {lab: _summary(samples.get((malloc, raw, lab)), n) for lab, n in SIZES.items()}
            base[(malloc, raw)] = sizes
            rows[raw + ("+malloc" if malloc else "")] = {
                "change": change + (" (malloc-tuned processes)" if malloc else ""),
                "malloc_tuned": info[malloc]["malloc_tuned"],
                "sizes": sizes,
            }
    best = {
        (raw, lab): min(
            (
                b[lab]["median_ms"]
                for (_, r), b in base.items()
                if r == raw and "median_ms" in b[lab]
            ),
            default=None,
        )
        for raw in RAW_BASELINES
        for lab in SIZES
    }
    for malloc, mine in phases.items():
        for v in mine:
            sizes = {}
            for lab, n in SIZES.items():
                err = info[malloc]["errors"].get((v.name, lab))
                s = {"error": err} if err else _summary(samples.get((malloc, v.name, lab)), n)
                if "median_ms" in s:
                    ref = f"raw_pipe{PIPE}" if v.inflight > 1 else "raw"
                    s["raw_reference"] = ref
                    if best[(ref, lab)] is not None:
                        s["ratio_vs_raw"] = best[(ref, lab)] / s["median_ms"]
                    if best[("raw_simple", lab)] is not None:
                        s["ratio_vs_raw_simple"] = best[("raw_simple", lab)] / s["median_ms"]
                    same = base[(malloc, ref)][lab]
                    if "median_ms" in same:
                        s["ratio_vs_same_phase_raw"] = same["median_ms"] / s["median_ms"]
                sizes[lab] = s
            rows[v.name] = {"change": v.change, "malloc_tuned_phase": malloc, "sizes": sizes}
    return rows


def _summary(s: list[float] | None, nbytes: int) -> dict[str, object]:
    if not s:
        return {"error": "no samples"}
    med = statistics.median(s)
    return {
        "calls": len(s),
        "median_ms": med * 1e3,
        "p90_ms": float(np.percentile(s, 90)) * 1e3,
        "throughput_MBps": nbytes / med / 1e6,
    }


# --------------------------------------------------------------------------- output


def summarize(rows: dict[str, dict]) -> dict[str, object]:
    """Best variant per size and the bench's targets (>= 0.5x raw at 1-8 MB, <= 1.5 ms at 1 KB)."""
    best = {}
    for lab in SIZES:
        cands = [
            (row["sizes"][lab]["ratio_vs_raw"], name)
            for name, row in rows.items()
            if "ratio_vs_raw" in row["sizes"][lab]
        ]
        if cands:
            ratio, name = max(cands)
            best[lab] = {
                "variant": name,
                "ratio_vs_raw": round(ratio, 3),
                "median_ms": round(rows[name]["sizes"][lab]["median_ms"], 3),
            }
    one_kb = [
        row["sizes"]["1KB"]["median_ms"]
        for name, row in rows.items()
        if not name.startswith("raw") and "median_ms" in row["sizes"]["1KB"]
    ]
    return {
        "best_per_size": best,
        "grpcio_ceiling": grpcio_ceiling(rows),
        "target_ratio_0.5_at_1MB_and_8MB_met": all(
            best.get(lab, {}).get("ratio_vs_raw", 0) >= 0.5 for lab in ("1MB", "8MB")
        ),
        "target_1KB_le_1.5ms_met": bool(one_kb) and min(one_kb) <= 1.5,
    }


def _best_median(rows: dict[str, dict], names: list[str], lab: str) -> float | None:
    cells = [rows[n]["sizes"][lab] for n in names]
    meds = [c["median_ms"] for c in cells if "median_ms" in c]
    return min(meds) if meds else None


def grpcio_ceiling(rows: dict[str, dict]) -> dict[str, dict[str, float]]:
    """The best gRPC/raw ratio this grpcio can reach, per size, measured in this run.

    ``copies_only``: raw / ``raw_grpcio_copies``, a socket that pays grpcio's Python-layer
    copies and nothing else (no HTTP/2, no thread hand-offs). ``with_per_call`` also adds
    gRPC's fixed cost per call: the fastest non-pipelined 1 KB gRPC round trip minus the
    raw one. A variant cannot beat ``copies_only`` without fewer copies than grpcio makes;
    ``best_share_of_bound`` is how much of ``with_per_call`` the best variant reaches.
    """
    raws = [n for n in rows if n in ("raw", "raw+malloc")]
    copies = [n for n in rows if n.startswith(COPIES)]
    grpc_rows = [n for n, r in rows.items() if "malloc_tuned_phase" in r]
    unpiped = [n for n in grpc_rows if not n.startswith(f"pipe{PIPE}_")]
    raw_1kb, grpc_1kb = _best_median(rows, raws, "1KB"), _best_median(rows, unpiped, "1KB")
    per_call = max(0.0, grpc_1kb - raw_1kb) if raw_1kb and grpc_1kb else 0.0
    out = {}
    for lab in SIZES:
        raw, cop = _best_median(rows, raws, lab), _best_median(rows, copies, lab)
        if raw is None or cop is None:
            continue
        best = max((rows[n]["sizes"][lab].get("ratio_vs_raw", 0.0) for n in unpiped), default=0.0)
        bound = raw / (cop + per_call)
        out[lab] = {
            "copies_only": round(raw / cop, 3),
            "with_per_call": round(bound, 3),
            "per_call_ms": round(per_call, 3),
            "best_unpipelined": round(best, 3),
            "best_share_of_bound": round(best / bound, 3),
        }
    return out


def print_table(rows: dict[str, dict]) -> None:
    labels = list(SIZES)
    print(
        "per size: median ms per call | MB/s | gRPC/raw throughput (raw = fastest raw median; "
        f"raw_pipe{PIPE} for pipelined variants)"
    )
    head = f"{'variant':13s}" + "".join(f"{lab:>25s}" for lab in labels)
    print(head)
    print("-" * len(head))
    for name, row in rows.items():
        cols = []
        for lab in labels:
            s = row["sizes"][lab]
            if "median_ms" not in s:
                cols.append(f"{'failed':>25s}")
                continue
            ratio = s.get("ratio_vs_raw")
            rtxt = f"{ratio:.2f}x" if ratio is not None else "-"
            cols.append(f"{s['median_ms']:8.3f} {s['throughput_MBps']:7.1f} {rtxt:>7s}")
        print(f"{name:13s}" + "".join(cols))
    print()
    print("gRPC/raw_simple throughput ratio (context: typical socket code)")
    print(f"{'variant':13s}" + "".join(f"{lab:>9s}" for lab in labels))
    for name, row in rows.items():
        if name.startswith("raw"):
            continue
        vals = [row["sizes"][lab].get("ratio_vs_raw_simple") for lab in labels]
        print(f"{name:13s}" + "".join(f"{v:8.2f}x" if v else f"{'-':>9s}" for v in vals))
    print()
    for name, row in rows.items():
        print(f"{name:13s} {row['change']}")
        for lab in labels:
            if "error" in row["sizes"][lab]:
                print(f"{'':13s}   {lab} failed: {row['sizes'][lab]['error']}")


def _raw_linestyle(name: str) -> str:
    for key, style in (("simple", "--"), ("pipe", ":"), (COPIES, "-.")):
        if key in name:
            return style
    return "-"


def print_ceiling(ceiling: dict[str, dict[str, float]]) -> None:
    print("ceiling for grpcio (gRPC/raw), from raw_grpcio_copies and the 1 KB per-call cost")
    print(f"{'':22s}" + "".join(f"{lab:>9s}" for lab in SIZES))
    for key in ("copies_only", "with_per_call", "best_unpipelined", "best_share_of_bound"):
        vals = [ceiling.get(lab, {}).get(key) for lab in SIZES]
        print(f"{key:22s}" + "".join(f"{v:9.2f}" if v is not None else f"{'-':>9s}" for v in vals))


def plot(rows: dict[str, dict], ceiling: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(SIZES)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    for name, row in rows.items():
        xs = [i for i, lab in enumerate(labels) if "median_ms" in row["sizes"][lab]]
        ys = [row["sizes"][labels[i]]["throughput_MBps"] for i in xs]
        is_raw = name.startswith("raw")
        style: dict[str, object] = {}
        if is_raw:
            style = {
                "color": "black",
                "linestyle": _raw_linestyle(name),
                "linewidth": 1.2 if "malloc" in name else 2.5,
            }
        ax1.plot(xs, ys, marker="o", label=name, **style)
        if not is_raw:
            rs = [row["sizes"][labels[i]].get("ratio_vs_raw", np.nan) for i in xs]
            ax2.plot(xs, rs, marker="o", label=name)
    for ax in (ax1, ax2):
        ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel("payload")
        ax.grid(alpha=0.3)
    ax1.set_yscale("log")
    ax1.set_ylabel("MB/s (payload / median round trip)")
    ax1.legend(fontsize=7, ncol=2)
    ax2.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    xs = [i for i, lab in enumerate(labels) if lab in ceiling]
    for key, style in (("copies_only", "-."), ("with_per_call", "-")):
        ys = [ceiling[labels[i]][key] for i in xs]
        ax2.plot(xs, ys, color="black", linestyle=style, linewidth=2.5, label=f"ceiling: {key}")
    ax2.set_ylabel("gRPC / raw socket throughput")
    ax2.set_ylim(0, 1.0)
    ax2.legend(fontsize=7, ncol=2)
    fig.suptitle("edge->cloud tensor round trip on loopback: gRPC variants vs raw TCP")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--budget-s", type=float, default=0.25, help="seconds per cell per round")
    p.add_argument("--max-calls", type=int, default=300, help="calls per cell per round")
    p.add_argument("--variants", nargs="*", help="subset of variant names (default: all)")
    p.add_argument("--json", type=Path, default=here / "results" / "transport.json")
    p.add_argument("--plot", type=Path, default=here / "results" / "transport.png")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    variants = [v for v in VARIANTS if not args.variants or v.name in args.variants]
    t0 = time.perf_counter()
    rows = run(args.rounds, args.budget_s, args.max_calls, variants)
    elapsed = time.perf_counter() - t0
    print_table(rows)
    summary = summarize(rows)
    print()
    print_ceiling(summary["grpcio_ceiling"])
    print(f"\nsummary: {json.dumps(summary)}")
    doc = {
        "bench": "transport",
        "host": {
            "python": platform.python_version(),
            "grpcio": grpc.__version__,
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "loadavg_1m_at_end": os.getloadavg()[0],
        },
        "settings": {
            "rounds": args.rounds,
            "budget_s": args.budget_s,
            "max_calls": args.max_calls,
            "codec": "raw",
            "sizes_bytes": SIZES,
            "elapsed_s": round(elapsed, 1),
        },
        "variants": [asdict(v) for v in variants],
        "summary": summary,
        "results": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"wrote {args.json} ({elapsed:.0f} s)")
    if not args.no_plot:
        plot(rows, summary["grpcio_ceiling"], args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
