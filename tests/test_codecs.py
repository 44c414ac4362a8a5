"""Tensor codecs: round trips, sizes, framing, error messages and robustness to junk."""

from __future__ import annotations

import contextlib
import struct
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeml.partition import codecs as C
from edgeml.partition.codecs import CodecError, EncodedTensor, decode, encode, from_bytes, to_bytes

BASES = list(C.BASE_CODECS)


def activation(shape=(2, 8, 6, 5), seed=0) -> np.ndarray:
    """A post-ReLU-like activation: about half zeros, channels on different scales."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    if len(shape) >= 2:
        x *= np.geomspace(0.1, 10, shape[1], dtype=np.float32).reshape(
            (1, -1) + (1,) * (len(shape) - 2)
        )
    return np.maximum(x, 0)


def test_codec_list_is_every_base_with_and_without_entropy():
    assert len(C.CODECS) == len(set(C.CODECS)) == 12
    for name in ["raw", "fp16", "int8", "int8c", "int8+zstd", "int8c+lz4", "raw+zstd"]:
        assert name in C.CODECS
        assert C.parse_codec(name).name == name
    assert C.parse_codec("fp16+lz4") == C.CodecSpec("fp16+lz4", "fp16", "lz4")


@pytest.mark.parametrize("codec", C.CODECS)
def test_round_trip_within_tolerance(codec):
    x = activation()
    e = encode(x, codec)
    y = decode(e)
    assert y.dtype == np.float32 and y.shape == x.shape
    base = C.parse_codec(codec).base
    if base == "raw":
        assert y.tobytes() == x.tobytes()
    elif base == "fp16":
        np.testing.assert_allclose(y, x, rtol=2**-10, atol=1e-7)
    else:
        # Affine rounding error is at most half a step (per tensor or per channel).
        step = e.scale.reshape((1, -1, 1, 1) if base == "int8c" else ())
        assert np.all(np.abs(y - x) <= 0.5 * step * (1 + 1e-4) + 1e-7)
        assert np.all(y[x == 0] == 0), "zeros must decode exactly"


def test_raw_is_bit_exact_for_special_values():
    x = np.array([[0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, 3.4e38]], dtype=np.float32)
    assert decode(encode(x, "raw+lz4")).tobytes() == x.tobytes()


def test_per_channel_beats_per_tensor_when_channels_differ_in_scale():
    x = activation((4, 16, 8, 8))
    err_tensor = np.abs(decode(encode(x, "int8")) - x)[:, 0].max()
    err_channel = np.abs(decode(encode(x, "int8c")) - x)[:, 0].max()
    assert err_channel < err_tensor / 10  # channel 0 has a 100x smaller range than channel 15


def test_int8_keeps_top1_of_a_linear_classifier():
    rng = np.random.default_rng(1)
    feats = activation((2000, 256), seed=2)
    w = rng.standard_normal((256, 10)).astype(np.float32)
    ref = (feats @ w).argmax(1)
    for codec in ("int8", "int8c"):
        agree = ((decode(encode(feats, codec)) @ w).argmax(1) == ref).mean()
        assert agree >= 0.99, (codec, agree)


def test_bytes_ratio_vs_fp32_before_entropy():
    x = activation((1, 64, 32, 32))
    raw = encode(x, "raw").nbytes
    assert raw == x.nbytes
    assert encode(x, "fp16").nbytes * 2 == raw
    assert raw / encode(x, "int8").nbytes == pytest.approx(4, rel=1e-3)
    assert raw / encode(x, "int8c").nbytes == pytest.approx(4, rel=0.01)


@pytest.mark.parametrize("base", BASES)
def test_entropy_stage_is_lossless_and_shrinks_redundant_data(base):
    x = activation((1, 16, 32, 32))
    x[:, ::2] = 0  # half the channels dead: plenty of redundancy
    plain = encode(x, base)
    for stage in C.ENTROPY_STAGES:
        packed = encode(x, f"{base}+{stage}")
        assert np.array_equal(decode(packed), decode(plain))
        assert len(packed.payload) < 0.8 * len(plain.payload)


def test_torch_input_and_non_contiguous_and_other_dtypes():
    t = torch.arange(24, dtype=torch.float32, requires_grad=True).reshape(2, 3, 4) * 1.0
    assert np.array_equal(decode(encode(t, "raw")), t.detach().numpy())
    x = np.arange(24, dtype=np.float64).reshape(2, 3, 4).transpose(2, 1, 0)
    assert np.array_equal(decode(encode(x, "fp16")), x.astype(np.float32))
    assert np.array_equal(decode(encode(np.arange(6, dtype=np.int64), "raw")), np.arange(6))
    bf = torch.tensor([[1.5, -2.0, 0.25]], dtype=torch.bfloat16)
    assert np.array_equal(decode(encode(bf, "fp16")), [[1.5, -2.0, 0.25]])


@pytest.mark.parametrize("codec", ["raw", "int8", "int8c+zstd"])
@pytest.mark.parametrize("shape", [(0,), (3, 0, 2), (1, 1), ()])
def test_empty_and_scalar_shapes(codec, shape):
    if codec.startswith("int8c") and len(shape) < 2:
        with pytest.raises(CodecError, match="dim"):
            encode(np.zeros(shape, np.float32), codec)
        return
    x = np.full(shape, 0.5, np.float32)
    e = from_bytes(to_bytes(encode(x, codec)))
    np.testing.assert_allclose(decode(e), x, atol=0.002)


@pytest.mark.parametrize("codec", C.CODECS)
def test_frame_round_trip(codec):
    e = encode(activation(), codec)
    b = to_bytes(e)
    assert b[:4] == C.MAGIC
    for buf in (b, bytearray(b), memoryview(b)):
        back = from_bytes(buf)
        assert back == e
        assert np.array_equal(decode(back), decode(e))


def test_from_bytes_does_not_copy_the_payload():
    buf = bytearray(to_bytes(encode(np.ones((4, 4), np.float32), "raw")))
    y = decode(from_bytes(buf))
    buf[-4:] = struct.pack("<f", 7.0)
    assert y[-1, -1] == 7.0  # the decoded array is a view of buf


def test_fast_enough_for_a_1mb_tensor():
    x = activation((1, 64, 64, 64))  # 262144 floats = 1 MiB
    for codec in ("raw", "fp16", "int8"):
        times = []
        for _ in range(30):
            t0 = time.perf_counter()
            decode(encode(x, codec))
            times.append(time.perf_counter() - t0)
        assert np.median(times) < 2e-3, (codec, np.median(times))


# ---------------------------------------------------------------------------- errors


def error(fn, *args, **kwargs) -> str:
    with pytest.raises(CodecError) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, ValueError)
    return str(info.value)


def test_unknown_codec_names_field_and_allowed_values():
    for bad in ["int4", "int8+gzip", "raw+", "", "INT8"]:
        msg = error(C.parse_codec, bad)
        assert msg.startswith("codec:") and repr(bad) in msg
        assert all(name in msg for name in C.CODECS)
    assert error(encode, np.ones(3), "bf16").startswith("codec:")


def test_payload_length_must_match_shape_and_dtype():
    msg = error(EncodedTensor, "raw", "float32", (2, 3), None, None, b"\0" * 20)
    assert msg.startswith("payload:") and "24" in msg and "20" in msg
    msg = error(EncodedTensor, "int8", "uint8", (10,), [0.1], [0], b"\0" * 11)
    assert msg.startswith("payload:") and "10" in msg


def test_bad_shapes():
    assert error(EncodedTensor, "raw", "float32", (2, -1), None, None, b"").startswith("shape:")
    msg = error(EncodedTensor, "raw", "float32", (1,) * 9, None, None, b"\0" * 4)
    assert msg.startswith("shape:") and str(C.MAX_NDIM) in msg
    assert error(encode, np.zeros((1,) * 9, np.float32), "raw").startswith("shape:")
    assert error(EncodedTensor, "raw", "float32", (1 << 20, 1 << 20), None, None, b"").startswith(
        "shape:"
    )


def test_dtype_and_quant_params_are_checked():
    assert error(EncodedTensor, "raw", "uint8", (1,), None, None, b"\0").startswith("dtype:")
    msg = error(EncodedTensor, "int8c", "uint8", (1, 3), [1.0], [0], b"\0" * 3)
    assert "scale/zero_point" in msg and "3" in msg
    assert error(EncodedTensor, "int8", "uint8", (1,), [0.0], [0], b"\0").startswith("scale:")
    assert error(EncodedTensor, "int8", "uint8", (1,), [1.0], [256], b"\0").startswith("zero_point")
    assert "takes none" in error(EncodedTensor, "raw", "float32", (1,), [1.0], [0], b"\0" * 4)
    msg = error(encode, np.array([1.0, np.nan], np.float32), "int8")
    assert msg.startswith("tensor:") and "NaN" in msg
    assert error(encode, np.ones(3, np.complex64), "raw").startswith("tensor:")
    assert "dim 1" in error(encode, np.ones(3, np.float32), "int8c")


@pytest.mark.parametrize("stage", C.ENTROPY_STAGES)
def test_corrupt_entropy_stream(stage):
    e = encode(activation(), f"int8+{stage}")
    payload = bytearray(e.payload)
    payload[len(payload) // 2 :] = b"\xff" * (len(payload) - len(payload) // 2)
    # [:-4] drops only the lz4 end mark: all data present, frame unfinished.
    for bad in (bytes(payload), bytes(e.payload[:-4]), bytes(e.payload[:-5]), b"junk"):
        forged = EncodedTensor(e.codec, e.dtype, e.shape, e.scale, e.zero_point, bad)
        msg = error(decode, forged)
        assert msg.startswith("payload:") and stage in msg


@pytest.mark.parametrize("stage", C.ENTROPY_STAGES)
def test_entropy_stream_of_the_wrong_size(stage):
    e = encode(np.ones((4, 4), np.float32), f"raw+{stage}")
    forged = EncodedTensor(e.codec, e.dtype, (4, 5), None, None, e.payload)
    assert error(decode, forged).startswith("payload:")


def test_frame_errors_name_the_field():
    b = to_bytes(encode(activation(), "int8c"))
    assert error(from_bytes, b"XXXX" + b[4:]).startswith("magic:")
    assert error(from_bytes, b[:4] + b"\x09" + b[5:]).startswith("version:")
    assert error(from_bytes, b[:-1]).startswith("payload_length:")
    assert error(from_bytes, b + b"\0").startswith("payload_length:")
    assert error(from_bytes, b[:3]).startswith("header:")
    assert error(from_bytes, b[:20]).startswith("shape:")
    assert error(from_bytes, b[:56]).startswith("scale:")  # header 50 + n_params 4


# ---------------------------------------------------------------------------- robustness


def _decode_frame(data: bytes) -> None:
    """What a server does with untrusted bytes: parse and decode."""
    decode(from_bytes(data))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_random_bytes_only_raise_codec_error(data):
    with contextlib.suppress(CodecError):
        _decode_frame(data)


_VALID_FRAMES = [
    to_bytes(encode(activation((1, 3, 4, 2), seed=i), codec)) for i, codec in enumerate(C.CODECS)
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(_VALID_FRAMES),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6),
    st.integers(0, 500),
)
def test_mutated_frames_only_raise_codec_error(frame, flips, cut):
    """Valid frames with flipped bytes and truncation reach the deep checks, unlike pure noise."""
    buf = bytearray(frame)
    for pos, value in flips:
        buf[pos % len(buf)] = value
    with contextlib.suppress(CodecError):
        _decode_frame(bytes(buf[: len(buf) - cut % 8]))
