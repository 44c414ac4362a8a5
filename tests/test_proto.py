"""The committed gRPC stubs match the .proto, and tensors survive the proto conversion."""

from __future__ import annotations

import pickle
import shutil
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest

from edgeml.partition import codecs as C
from edgeml.partition.codecs import CodecError
from edgeml.transport import protogen
from edgeml.transport.proto.edgeml.v1 import offload_pb2, offload_pb2_grpc
from edgeml.transport.tensor_proto import from_proto, to_proto


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_committed_stubs_equal_a_fresh_generation(tmp_path):
    protogen.generate(tmp_path)
    fresh, committed = _files(tmp_path), _files(protogen.OUT_DIR)
    assert sorted(fresh) == sorted(committed), "generated file set differs from the committed one"
    for name, content in fresh.items():
        assert committed[name] == content, (
            f"{name} is stale: run python -m edgeml.transport.protogen"
        )
    assert protogen.diff() == []


def test_drift_is_detected(tmp_path):
    protos = tmp_path / "protos"
    shutil.copytree(protogen.PROTO_ROOT, protos)
    proto = protos / "edgeml" / "v1" / "offload.proto"
    text = proto.read_text().replace(
        "  bytes data = 6;\n", "  bytes data = 6;\n  bool extra = 7;\n"
    )
    assert "extra" in text
    proto.write_text(text)
    assert protogen.diff(proto_root=protos) == [
        "edgeml/v1/offload_pb2.py",
        "edgeml/v1/offload_pb2.pyi",
    ]
    assert protogen.main(["--check", "--protos", str(protos)]) == 1
    assert protogen.main(["--check"]) == 0


def test_stub_layout_imports_without_path_hacks():
    # The stubs' message module is the very module we import, not a second copy.
    assert offload_pb2_grpc.edgeml_dot_v1_dot_offload__pb2 is offload_pb2
    req = offload_pb2.InferRequest(request_id="r1", split=2, exit=1, tau=0.8)
    assert type(req).__module__ == "edgeml.transport.proto.edgeml.v1.offload_pb2"
    assert req.DESCRIPTOR.file.name == "edgeml/v1/offload.proto"  # canonical name for reflection
    assert req.DESCRIPTOR.file.package == "edgeml.v1"
    assert pickle.loads(pickle.dumps(req)) == req
    assert not req.HasField("deadline_ms")  # proto3 optional: "no deadline" is distinguishable
    service = offload_pb2.DESCRIPTOR.services_by_name["Offload"]
    streaming = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
    assert streaming == {
        "Infer": (False, False),
        "InferStream": (True, True),
        "GetModelInfo": (False, False),
        "Profile": (False, False),
    }


@pytest.mark.parametrize("codec", C.CODECS)
def test_tensor_proto_round_trip(codec):
    x = np.maximum(np.random.default_rng(3).standard_normal((2, 4, 3, 3)), 0).astype(np.float32)
    e = C.encode(x, codec)
    wire = to_proto(e).SerializeToString()
    back = from_proto(offload_pb2.Tensor.FromString(wire))
    assert back == e
    assert np.array_equal(C.decode(back), C.decode(e))


def test_to_proto_fills_a_sub_message_and_accepts_memoryview_payloads():
    e = C.from_bytes(C.to_bytes(C.encode(np.ones((1, 2, 2), np.float32), "int8c")))
    assert isinstance(e.payload, memoryview)
    req = offload_pb2.InferRequest(request_id="x")
    to_proto(e, req.tensor)
    assert list(req.tensor.shape) == [1, 2, 2] and len(req.tensor.scale) == 2
    assert from_proto(req.tensor) == e


def test_payload_out_of_band():
    """The request rides without its bytes (e.g. in gRPC metadata); the payload comes apart."""
    e = C.encode(np.arange(12, dtype=np.float32).reshape(1, 3, 4), "int8c")
    head = to_proto(e, with_data=False)
    assert head.data == b"" and list(head.scale) == pytest.approx(list(e.scale))
    back = from_proto(offload_pb2.Tensor.FromString(head.SerializeToString()), payload=e.payload)
    assert back == e
    with pytest.raises(CodecError, match="^data:"):
        from_proto(to_proto(e), payload=e.payload)
    with pytest.raises(CodecError, match="^payload:"):
        from_proto(head, payload=bytes(e.payload)[:-1])


def _tensor(**fields) -> offload_pb2.Tensor:
    msg = to_proto(C.encode(np.ones((2, 3), np.float32), "raw"))
    for key, value in fields.items():
        field = getattr(msg, key)
        if hasattr(field, "extend"):
            del field[:]
            field.extend(value)
        else:
            setattr(msg, key, value)
    return msg


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"codec": "bogus"}, "codec:"),
        ({"dtype": "float16"}, "dtype:"),
        ({"shape": [2, 4]}, "payload:"),
        ({"shape": [1] * 9}, "shape:"),
        ({"data": b"\0" * 5}, "payload:"),
        ({"scale": [1.0]}, "scale/zero_point:"),
        ({"codec": "int8", "dtype": "uint8", "data": b"\0" * 6}, "scale/zero_point:"),
    ],
)
def test_from_proto_rejects_inconsistent_fields(fields, field):
    with pytest.raises(CodecError) as info:
        from_proto(_tensor(**fields))
    assert str(info.value).startswith(field)


class _Echo(offload_pb2_grpc.OffloadServicer):
    """Decodes the tensor and reports its sum as the confidence: proves the stubs carry data."""

    def Infer(self, request, context):  # noqa: N802 - gRPC method name
        try:
            x = C.decode(from_proto(request.tensor))
        except CodecError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return offload_pb2.InferReply(request_id=request.request_id, confidence=float(x.sum()))


def test_stubs_work_over_real_grpc():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    offload_pb2_grpc.add_OffloadServicer_to_server(_Echo(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = offload_pb2_grpc.OffloadStub(channel)
            req = offload_pb2.InferRequest(request_id="a")
            to_proto(C.encode(np.full((2, 5), 0.5, np.float32), "fp16+lz4"), req.tensor)
            reply = stub.Infer(req, timeout=10)
            assert reply.request_id == "a" and reply.confidence == pytest.approx(5.0)
            req.tensor.codec = "nope"
            with pytest.raises(grpc.RpcError) as info:
                stub.Infer(req, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "codec:" in info.value.details()
    finally:
        server.stop(None)
