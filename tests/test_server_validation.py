"""Every request field is checked before compute, with a status code and a message naming
the field; malformed traffic (fuzzed) never kills the server or makes it answer wrongly."""

from __future__ import annotations

import math
from collections.abc import Callable

import grpc
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transport_helpers import edge_inputs, local_answer, make_request, start_server

from edgeml.bundle import Bundle
from edgeml.partition.codecs import CODECS
from edgeml.transport.proto.edgeml.v1 import offload_pb2
from edgeml.transport.server import OffloadServer

CAP = 64 * 1024  # the payload cap of the server under test
FUZZ_CODES: set[grpc.StatusCode] = set()  # what the fuzz provoked, checked after it
INFER = "/edgeml.v1.Offload/Infer"
Code = grpc.StatusCode


@pytest.fixture(scope="module")
def server(tiny_bundle: Bundle):
    srv = start_server(tiny_bundle, max_batch=4, max_wait_us=200, max_payload_bytes=CAP)
    yield srv
    srv.stop(0)


@pytest.fixture(scope="module")
def call(server: OffloadServer):
    """Send raw request bytes; returns (code, details, reply or None)."""
    channel = grpc.insecure_channel(
        server.address, options=[("grpc.max_send_message_length", 8 << 20)]
    )
    infer = channel.unary_unary(
        INFER, request_serializer=None, response_deserializer=offload_pb2.InferReply.FromString
    )

    def send(req: offload_pb2.InferRequest | bytes):
        data = req if isinstance(req, bytes) else req.SerializeToString()
        try:
            return Code.OK, "", infer(data, timeout=10)
        except grpc.RpcError as exc:
            return exc.code(), exc.details(), None

    yield send
    channel.close()


def _set(field: str, value: object) -> Callable[[offload_pb2.InferRequest], None]:
    def apply(req: offload_pb2.InferRequest) -> None:
        obj = req
        *path, last = field.split(".")
        for name in path:
            obj = getattr(obj, name)
        target = getattr(obj, last)
        if isinstance(value, list):
            del target[:]
            target.extend(value)
        else:
            setattr(obj, last, value)

    return apply


def _clear_tensor(req: offload_pb2.InferRequest) -> None:
    req.ClearField("tensor")


def _nan_data(req: offload_pb2.InferRequest) -> None:
    arr = np.frombuffer(req.tensor.data, dtype=np.float32).copy()
    arr[3] = np.nan
    req.tensor.data = arr.tobytes()


# (mutation of a valid split-1 raw request, expected code, text the message must contain)
CASES = {
    "split_out_of_range": (_set("split", 7), Code.INVALID_ARGUMENT, "split: 7 not in 0..2"),
    "split_edge_only": (_set("split", 3), Code.INVALID_ARGUMENT, "split: 3 not in 0..2"),
    "exit_out_of_range": (_set("exit", 9), Code.INVALID_ARGUMENT, "exit: 9 not in 0..2"),
    "exit_before_split": (_set("exit", 0), Code.INVALID_ARGUMENT, "allowed for split 1: 1"),
    "tau_nan": (_set("tau", math.nan), Code.INVALID_ARGUMENT, "tau: nan; allowed: 0.0..1.0"),
    "tau_above_1": (_set("tau", 1.5), Code.INVALID_ARGUMENT, "tau: 1.5"),
    "tau_negative": (_set("tau", -0.1), Code.INVALID_ARGUMENT, "tau:"),
    "no_tensor": (_clear_tensor, Code.INVALID_ARGUMENT, "tensor: missing"),
    "shape_of_other_split": (
        _set("tensor.shape", [1, 1, 28, 28]),
        Code.INVALID_ARGUMENT,
        "tensor.shape: [1, 1, 28, 28] does not fit split 1; allowed: [1, 32, 14, 14]",
    ),
    "unknown_codec": (_set("tensor.codec", "jpeg"), Code.INVALID_ARGUMENT, "tensor.codec: unknown"),
    "wrong_dtype": (
        _set("tensor.dtype", "float16"),
        Code.INVALID_ARGUMENT,
        "tensor.dtype: codec 'raw' stores 'float32'",
    ),
    "short_data": (
        _set("tensor.data", b"\0" * 100),
        Code.INVALID_ARGUMENT,
        "tensor.payload: 100 bytes",
    ),
    "scale_on_raw": (_set("tensor.scale", [1.0]), Code.INVALID_ARGUMENT, "scale/zero_point"),
    "nan_in_data": (_nan_data, Code.INVALID_ARGUMENT, "tensor.data: contains NaN"),
    "payload_over_cap": (
        _set("tensor.data", b"\0" * (CAP + 1)),
        Code.RESOURCE_EXHAUSTED,
        f"tensor.data: {CAP + 1} bytes; allowed at most {CAP}",
    ),
    "wrong_hash": (_set("weights_sha256", "ab" * 32), Code.FAILED_PRECONDITION, "weights_sha256"),
    "no_hash": (_set("weights_sha256", ""), Code.FAILED_PRECONDITION, "weights_sha256"),
    "unknown_model": (_set("model_id", "resnet999"), Code.NOT_FOUND, "model_id: 'resnet999'"),
    "long_request_id": (_set("request_id", "x" * 500), Code.INVALID_ARGUMENT, "request_id: 500"),
    "late_on_arrival": (_set("deadline_ms", -5.0), Code.DEADLINE_EXCEEDED, "deadline_ms"),
    "deadline_nan": (_set("deadline_ms", math.nan), Code.INVALID_ARGUMENT, "deadline_ms: nan"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_invalid_field_gets_its_code_and_a_message_naming_it(case, tiny_bundle, call):
    mutate, code, text = CASES[case]
    req = make_request(tiny_bundle, split=1)
    assert call(req)[0] is Code.OK  # the unmutated request is fine
    mutate(req)
    got, details, _ = call(req)
    assert got is code, details
    assert text in details


@pytest.mark.parametrize(
    ("codec", "mutate", "text"),
    [
        ("int8", _set("tensor.scale", [1.0, 2.0]), "needs 1 of each"),
        ("int8", _set("tensor.zero_point", [300]), "zero_point: every zero point"),
        ("int8c", _set("tensor.scale", [0.1]), "needs 32 of each"),
        ("int8+zstd", _set("tensor.data", b"\x28\xb5\x2f\xfd garbage"), "tensor.payload"),
        ("raw+lz4", _set("tensor.data", b"\x04\x22\x4d\x18" + b"\0" * 9), "tensor.payload"),
        ("fp16+zstd", _set("tensor.data", b"\0" * 30_000), "tensor.data: 30000 bytes of fp16+zstd"),
    ],
)
def test_codec_specific_fields(tiny_bundle, call, codec, mutate, text):
    req = make_request(tiny_bundle, split=1, codec=codec)
    assert call(req)[0] is Code.OK
    mutate(req)
    got, details, _ = call(req)
    assert got is Code.INVALID_ARGUMENT, details
    assert text in details


def test_bytes_that_are_no_request_are_invalid_argument(call):
    got, details, _ = call(b"\xff\xff\xff\xff not protobuf")
    assert got is Code.INVALID_ARGUMENT
    assert "request: not a valid edgeml.v1.InferRequest" in details


def test_message_over_the_transport_limit_is_resource_exhausted(tiny_bundle, call):
    req = make_request(tiny_bundle, split=1)
    req.tensor.data = b"\0" * (4 * CAP)  # above gRPC's receive limit (cap + 64 KiB)
    assert call(req)[0] is Code.RESOURCE_EXHAUSTED


def test_a_failing_batch_is_internal_and_the_server_keeps_serving(tiny_bundle, server, call):
    batcher = server.servicer.batcher
    real = batcher.run_batch

    def boom(key, jobs):
        raise RuntimeError("injected fault")

    batcher.run_batch = boom
    try:
        got, details, _ = call(make_request(tiny_bundle, split=1))
    finally:
        batcher.run_batch = real
    assert got is Code.INTERNAL and "injected fault" in details
    assert call(make_request(tiny_bundle, split=1))[0] is Code.OK


def test_stream_ends_with_the_status_of_the_first_bad_request(tiny_bundle, server):
    good = make_request(tiny_bundle, split=1, request_id="good")
    bad = make_request(tiny_bundle, split=1, request_id="bad")
    bad.tau = 7.0
    with grpc.insecure_channel(server.address) as ch:
        stream = ch.stream_stream(
            "/edgeml.v1.Offload/InferStream",
            request_serializer=offload_pb2.InferRequest.SerializeToString,
            response_deserializer=offload_pb2.InferReply.FromString,
        )
        replies = []
        with pytest.raises(grpc.RpcError) as err:
            for reply in stream(iter([good, good, bad, good]), timeout=10):
                replies.append(reply.request_id)
    assert replies == ["good", "good"]
    assert err.value.code() is Code.INVALID_ARGUMENT and "tau: 7.0" in err.value.details()


# ----------------------------------------------------------------------------- fuzzing

_floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
_requests = st.builds(
    dict,
    split=st.integers(0, 12),
    exit=st.integers(0, 6),
    tau=_floats,
    codec=st.one_of(st.sampled_from(CODECS), st.text(max_size=12)),
    dtype=st.sampled_from(["float32", "float16", "uint8", "int64", "", "float32\x00"]),
    shape=st.one_of(
        st.lists(st.integers(0, 64), max_size=5),
        st.sampled_from([[1, 32, 14, 14], [32, 14, 14], [1, 64, 7, 7], [1, 1, 28, 28]]),
        st.lists(st.integers(0, 2**63), max_size=9),
    ),
    scale=st.lists(_floats, max_size=40),
    zero_point=st.lists(st.integers(-(2**31), 2**31 - 1), max_size=40),
    data=st.one_of(
        st.binary(max_size=4096),
        st.sampled_from([0, 25_088, 30_000, CAP + 1]).map(lambda n: b"\0" * n),
    ),
    deadline=st.one_of(st.none(), _floats),
    hash_ok=st.booleans(),
)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(fields=_requests, garbage=st.one_of(st.none(), st.binary(min_size=1, max_size=256)))
def test_fuzzed_requests_get_client_errors_never_internal(tiny_bundle, call, fields, garbage):
    if garbage is not None and fields["split"] % 3 == 0:
        code, details, _ = call(garbage)
    else:
        req = offload_pb2.InferRequest(
            request_id="fuzz",
            weights_sha256=tiny_bundle.weights_sha256 if fields["hash_ok"] else "00",
            split=fields["split"],
            exit=fields["exit"],
            tau=fields["tau"],
        )
        t = req.tensor
        t.codec, t.dtype, t.data = fields["codec"], fields["dtype"], fields["data"]
        t.shape.extend(fields["shape"])
        t.scale.extend(fields["scale"])
        t.zero_point.extend(fields["zero_point"])
        if fields["deadline"] is not None:
            req.deadline_ms = fields["deadline"]
        code, details, _ = call(req)
    allowed = {
        Code.OK,
        Code.INVALID_ARGUMENT,
        Code.RESOURCE_EXHAUSTED,
        Code.FAILED_PRECONDITION,
        Code.DEADLINE_EXCEEDED,
    }
    assert code in allowed, (code, details)
    FUZZ_CODES.add(code)
    if code is not Code.OK:
        assert ":" in details  # "<field>: <what is wrong>"


def test_after_the_fuzz_the_server_still_answers_correctly(tiny_bundle, server, call):
    # runs after the fuzz test (file order): same server, same process
    assert len(FUZZ_CODES) >= 3, f"the fuzz reached only {FUZZ_CODES}"
    m = tiny_bundle.manifest
    x = edge_inputs(tiny_bundle, 1, seed=7)
    req = make_request(tiny_bundle, split=1, tau=0.8, x=x)
    code, details, reply = call(req)
    assert code is Code.OK, details
    h = tiny_bundle.net.run_blocks(x, 0, 1)
    want = local_answer(tiny_bundle, h, 1, m.num_exits - 1, 0.8)
    assert (reply.class_id, reply.exit_taken) == (want.class_id, want.exit_index)
    assert reply.confidence == pytest.approx(want.confidence, abs=1e-5)
    assert (
        server.metrics.value("edgeml_request_errors_total", {"method": "Infer", "code": "INTERNAL"})
        <= 1
    )
    assert torch.get_num_threads() == 1
