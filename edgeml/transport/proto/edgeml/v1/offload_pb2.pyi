from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "codec", "scale", "zero_point", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    ZERO_POINT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    codec: str
    scale: _containers.RepeatedScalarFieldContainer[float]
    zero_point: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., codec: _Optional[str] = ..., scale: _Optional[_Iterable[float]] = ..., zero_point: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class InferRequest(_message.Message):
    __slots__ = ("request_id", "model_id", "weights_sha256", "split", "exit", "tau", "tensor", "deadline_ms", "sent_unix_ns")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_SHA256_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    EXIT_FIELD_NUMBER: _ClassVar[int]
    TAU_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    SENT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model_id: str
    weights_sha256: str
    split: int
    exit: int
    tau: float
    tensor: Tensor
    deadline_ms: float
    sent_unix_ns: int
    def __init__(self, request_id: _Optional[str] = ..., model_id: _Optional[str] = ..., weights_sha256: _Optional[str] = ..., split: _Optional[int] = ..., exit: _Optional[int] = ..., tau: _Optional[float] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ..., deadline_ms: _Optional[float] = ..., sent_unix_ns: _Optional[int] = ...) -> None: ...

class InferReply(_message.Message):
    __slots__ = ("request_id", "class_id", "confidence", "exit_taken", "exit_block", "queue_ms", "decode_ms", "compute_ms", "batch_size", "queued", "running")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    EXIT_TAKEN_FIELD_NUMBER: _ClassVar[int]
    EXIT_BLOCK_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    class_id: int
    confidence: float
    exit_taken: int
    exit_block: int
    queue_ms: float
    decode_ms: float
    compute_ms: float
    batch_size: int
    queued: int
    running: int
    def __init__(self, request_id: _Optional[str] = ..., class_id: _Optional[int] = ..., confidence: _Optional[float] = ..., exit_taken: _Optional[int] = ..., exit_block: _Optional[int] = ..., queue_ms: _Optional[float] = ..., decode_ms: _Optional[float] = ..., compute_ms: _Optional[float] = ..., batch_size: _Optional[int] = ..., queued: _Optional[int] = ..., running: _Optional[int] = ...) -> None: ...

class ModelInfoRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class CutPoint(_message.Message):
    __slots__ = ("split", "shape", "dtype", "bytes_per_codec")
    class BytesPerCodecEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    BYTES_PER_CODEC_FIELD_NUMBER: _ClassVar[int]
    split: int
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    bytes_per_codec: _containers.ScalarMap[str, int]
    def __init__(self, split: _Optional[int] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ..., bytes_per_codec: _Optional[_Mapping[str, int]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("manifest_json", "weights_sha256", "cut_points")
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_SHA256_FIELD_NUMBER: _ClassVar[int]
    CUT_POINTS_FIELD_NUMBER: _ClassVar[int]
    manifest_json: str
    weights_sha256: str
    cut_points: _containers.RepeatedCompositeFieldContainer[CutPoint]
    def __init__(self, manifest_json: _Optional[str] = ..., weights_sha256: _Optional[str] = ..., cut_points: _Optional[_Iterable[_Union[CutPoint, _Mapping]]] = ...) -> None: ...

class ProfileRequest(_message.Message):
    __slots__ = ("model_id", "repeats")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    REPEATS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    repeats: int
    def __init__(self, model_id: _Optional[str] = ..., repeats: _Optional[int] = ...) -> None: ...

class ProfileReply(_message.Message):
    __slots__ = ("block_ms", "head_ms", "device", "threads")
    BLOCK_MS_FIELD_NUMBER: _ClassVar[int]
    HEAD_MS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    block_ms: _containers.RepeatedScalarFieldContainer[float]
    head_ms: _containers.RepeatedScalarFieldContainer[float]
    device: str
    threads: int
    def __init__(self, block_ms: _Optional[_Iterable[float]] = ..., head_ms: _Optional[_Iterable[float]] = ..., device: _Optional[str] = ..., threads: _Optional[int] = ...) -> None: ...
