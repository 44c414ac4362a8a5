"""Convert between :class:`~edgeml.partition.codecs.EncodedTensor` and ``edgeml.v1.Tensor``.

The payload crosses as the proto's ``bytes`` field: protobuf (upb) owns its own copy of the
message bytes, so one copy per direction is the floor; nothing here adds another for
``bytes`` payloads. Validation is the codec's: a malformed ``Tensor`` becomes a
:class:`~edgeml.partition.codecs.CodecError` naming the field, which a servicer maps to
``INVALID_ARGUMENT``.
"""

from __future__ import annotations

import numpy as np

from edgeml.partition.codecs import CodecError, EncodedTensor, parse_codec
from edgeml.transport.proto.edgeml.v1 import offload_pb2

__all__ = ["from_proto", "to_proto"]


def to_proto(
    e: EncodedTensor, out: offload_pb2.Tensor | None = None, *, with_data: bool = True
) -> offload_pb2.Tensor:
    """Fill ``out`` (e.g. ``request.tensor``, avoiding a sub-message copy) or a new Tensor.

    ``with_data=False`` leaves ``data`` empty for callers that send the payload out of band.
    """
    msg = offload_pb2.Tensor() if out is None else out
    msg.Clear()
    msg.dtype = e.dtype
    msg.codec = e.codec
    msg.shape.extend(e.shape)
    if e.scale is not None and e.zero_point is not None:
        msg.scale.extend(e.scale.tolist())
        msg.zero_point.extend(e.zero_point.tolist())
    if with_data:
        # upb's bytes fields accept only bytes; a memoryview payload (from from_bytes) is copied.
        msg.data = e.payload if isinstance(e.payload, bytes) else bytes(e.payload)
    return msg


def from_proto(msg: offload_pb2.Tensor, payload: bytes | memoryview | None = None) -> EncodedTensor:
    """Validate and convert; raises :class:`CodecError` for any inconsistent field.

    ``payload`` carries the tensor bytes when they travel outside the message (e.g. as the raw
    gRPC message body while the request rides in metadata, saving protobuf's copies); the
    message's ``data`` must then be empty.
    """
    if not isinstance(msg, offload_pb2.Tensor):
        raise CodecError(f"tensor: expected edgeml.v1.Tensor, got {type(msg).__name__}")
    if payload is not None and msg.data:
        raise CodecError("data: given both in the message and out of band; send one")
    spec = parse_codec(msg.codec)
    n_scale, n_zp = len(msg.scale), len(msg.zero_point)
    if spec.quantized:
        scale = np.array(msg.scale, dtype=np.float32)
        zero_point = np.array(msg.zero_point, dtype=np.int32)
    elif n_scale or n_zp:
        raise CodecError(
            f"scale/zero_point: codec {msg.codec!r} takes none; got {n_scale} and {n_zp}"
        )
    else:
        scale = zero_point = None  # type: ignore[assignment]
    return EncodedTensor(
        codec=msg.codec,
        dtype=msg.dtype,
        shape=tuple(msg.shape),
        scale=scale,
        zero_point=zero_point,
        payload=msg.data if payload is None else payload,
    )
