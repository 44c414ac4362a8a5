"""Check an ``InferRequest`` field by field before the server spends any compute on it.

Every rejection is a :class:`RequestError` carrying the gRPC status code and one message
that names the field and the values it allows, as the architecture's error convention asks.
The checks run cheapest first and stop at the first problem; decoding the tensor is the last
check, because only a decoded payload proves that entropy-coded bytes match the shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import grpc
import numpy as np

from edgeml.bundle import Manifest
from edgeml.partition.codecs import CodecError, decode, parse_codec
from edgeml.transport.proto.edgeml.v1 import offload_pb2
from edgeml.transport.tensor_proto import from_proto

__all__ = [
    "MAX_REQUEST_ID_CHARS",
    "MalformedRequest",
    "RequestError",
    "RequestValidator",
    "ValidRequest",
    "parse_infer_request",
]

MAX_REQUEST_ID_CHARS = 128


class RequestError(Exception):
    """A request the server refuses; ``code`` is the gRPC status to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


@dataclass(frozen=True)
class MalformedRequest:
    """Bytes that are no ``InferRequest``: kept so the handler answers INVALID_ARGUMENT
    (a deserializer that raises makes gRPC answer INTERNAL, which blames the server)."""

    reason: str


def parse_infer_request(data: bytes) -> offload_pb2.InferRequest | MalformedRequest:
    """The server's request deserializer for ``Infer`` and ``InferStream``; never raises."""
    try:
        return offload_pb2.InferRequest.FromString(data)
    except Exception as exc:  # DecodeError, or anything else a hostile message provokes
        return MalformedRequest(f"{type(exc).__name__}: {exc}"[:200])


@dataclass(frozen=True)
class ValidRequest:
    """A request that passed every check.

    ``tensor`` is the decoded float32 array shaped ``(1, *cut)``; for ``raw`` it is a read-only
    view of the message bytes (no copy), which the batcher copies once when it stacks a batch.
    """

    request_id: str
    split: int
    exit_index: int
    exit_block: int
    tau: float
    tensor: np.ndarray
    deadline_ms: float | None
    payload_bytes: int


class RequestValidator:
    """Validates requests against one bundle's manifest.

    :param manifest: the served bundle's manifest (blocks, exits, cut point shapes).
    :param model_id: the name this server answers to; an empty ``model_id`` also matches.
    :param max_payload_bytes: cap on ``tensor.data`` (``RESOURCE_EXHAUSTED`` above it).
    """

    def __init__(self, manifest: Manifest, model_id: str, max_payload_bytes: int) -> None:
        if max_payload_bytes < 1:
            raise ValueError(f"max_payload_bytes: must be >= 1, got {max_payload_bytes}")
        self.manifest = manifest
        self.model_id = model_id
        self.max_payload_bytes = max_payload_bytes
        self.exits = tuple(manifest.exits)
        self.cut_shapes = {c.split: tuple(c.shape) for c in manifest.cut_points}

    # ----------------------------------------------------------------- shared checks

    def check_model_id(self, model_id: str) -> None:
        """An unknown model is NOT_FOUND: the request is well formed, the model is not here."""
        if model_id and model_id != self.model_id:
            raise RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"model_id: {model_id[:64]!r} is not served here; allowed: '' or {self.model_id!r}",
            )

    def allowed_exits(self, split: int) -> list[int]:
        """Exit indices whose block lies after ``split`` (the cloud has blocks to run)."""
        return [k for k, b in enumerate(self.exits) if b > split]

    def check_action(self, split: int, exit_index: int, tau: float) -> int:
        """Range-check ``(split, exit, tau)``; returns the exit's block index."""
        n = self.manifest.blocks
        if not 0 <= split < n:
            raise _invalid(
                f"split: {split} not in 0..{n - 1} (blocks 1..split ran on the edge; "
                f"split {n} runs entirely on the edge and sends nothing)"
            )
        if not 0 <= exit_index < len(self.exits):
            raise _invalid(
                f"exit: {exit_index} not in 0..{len(self.exits) - 1} "
                f"(exit blocks {list(self.exits)})"
            )
        block = self.exits[exit_index]
        if block <= split:
            allowed = ", ".join(f"{k} (block {self.exits[k]})" for k in self.allowed_exits(split))
            raise _invalid(
                f"exit: {exit_index} is block {block}, at or before split {split}, so the edge "
                f"answers it; allowed for split {split}: {allowed}"
            )
        if not (math.isfinite(tau) and 0.0 <= tau <= 1.0):
            raise _invalid(f"tau: {tau}; allowed: 0.0..1.0 (1.0 = no early stop)")
        return block

    # ----------------------------------------------------------------- the request

    def validate(self, req: offload_pb2.InferRequest | MalformedRequest) -> ValidRequest:
        """All checks, then decode; raises :class:`RequestError` at the first failure."""
        if isinstance(req, MalformedRequest):
            raise _invalid(f"request: not a valid edgeml.v1.InferRequest ({req.reason})")
        if not isinstance(req, offload_pb2.InferRequest):
            raise _invalid(f"request: expected edgeml.v1.InferRequest, got {type(req).__name__}")
        payload = len(req.tensor.data)
        if payload > self.max_payload_bytes:
            raise RequestError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"tensor.data: {payload} bytes; allowed at most {self.max_payload_bytes} "
                "(server's --max-payload-bytes)",
            )
        if len(req.request_id) > MAX_REQUEST_ID_CHARS:
            raise _invalid(
                f"request_id: {len(req.request_id)} characters; allowed at most "
                f"{MAX_REQUEST_ID_CHARS}"
            )
        self.check_model_id(req.model_id)
        if req.weights_sha256 != self.manifest.weights_sha256:
            got = req.weights_sha256[:16] or "(empty)"
            raise RequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"weights_sha256: request has {got}..., this server runs "
                f"{self.manifest.weights_sha256[:16]}...; edge and cloud must load the same "
                "bundle",
            )
        block = self.check_action(req.split, req.exit, req.tau)
        deadline_ms = None
        if req.HasField("deadline_ms"):
            deadline_ms = req.deadline_ms
            if not math.isfinite(deadline_ms):
                raise _invalid(f"deadline_ms: {deadline_ms}; allowed: a finite number of ms")
            if deadline_ms <= 0:
                raise RequestError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"deadline_ms: {deadline_ms:.3f}; the request arrived already late",
                )
        tensor = self._tensor(req)
        return ValidRequest(
            request_id=req.request_id,
            split=req.split,
            exit_index=req.exit,
            exit_block=block,
            tau=float(req.tau),
            tensor=tensor,
            deadline_ms=deadline_ms,
            payload_bytes=payload,
        )

    def _tensor(self, req: offload_pb2.InferRequest) -> np.ndarray:
        if not req.HasField("tensor"):
            raise _invalid("tensor: missing; the tensor leaving block `split` is required")
        msg = req.tensor
        cut = self.cut_shapes[req.split]
        shape = tuple(msg.shape)
        if shape not in (cut, (1, *cut)):
            raise _invalid(
                f"tensor.shape: {list(shape)[:9]} does not fit split {req.split}; allowed: "
                f"{[1, *cut]} or {list(cut)}"
            )
        try:
            spec = parse_codec(msg.codec)
            enc = from_proto(msg)
            if spec.entropy is not None:
                # zstd/lz4 never expand data by more than a small fraction plus a header.
                bound = enc.stored_nbytes + enc.stored_nbytes // 64 + 1024
                if len(enc.payload) > bound:
                    raise CodecError(
                        f"data: {len(enc.payload)} bytes of {msg.codec} for shape {list(shape)}; "
                        f"allowed at most {bound}"
                    )
            x = decode(enc)
        except CodecError as exc:
            raise _invalid(f"tensor.{exc}") from None
        if not np.isfinite(x).all():
            raise _invalid("tensor.data: contains NaN or inf; allowed: finite values")
        return x.reshape((1, *cut))
