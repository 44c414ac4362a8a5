"""Helpers shared by the transport tests: real servers on loopback, requests, edge inputs."""

from __future__ import annotations

import torch

from edgeml.bundle import Bundle
from edgeml.partition.codecs import encode
from edgeml.progressive.infer import Answer, run_segment
from edgeml.transport.proto.edgeml.v1 import offload_pb2
from edgeml.transport.server import OffloadServer, ServerConfig
from edgeml.transport.tensor_proto import to_proto


def start_server(bundle: Bundle, **overrides: object) -> OffloadServer:
    """An in-process server on a free loopback port, sharing the already loaded bundle."""
    cfg = ServerConfig(bundle=bundle.path, host="127.0.0.1", port=0, torch_threads=1, grace_s=2.0)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    cfg.__post_init__()
    return OffloadServer(cfg, bundle=bundle).start()


def edge_inputs(bundle: Bundle, n: int, seed: int = 0) -> torch.Tensor:
    """Real validation images for a Fashion-MNIST bundle (varied confidences, so taus
    matter); deterministic noise for other datasets."""
    if bundle.manifest.dataset == "fashion-mnist":
        from edgeml.data.torch_datasets import FashionMNISTDataset

        ds = FashionMNISTDataset("val", seed * n + n)
        return torch.stack([ds[i][0] for i in range(seed * n, seed * n + n)])
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *bundle.manifest.input_shape, generator=g)


def exit_confidences(bundle: Bundle, xs: torch.Tensor) -> torch.Tensor:
    """Confidence of every exit head for every input, shaped (n, exits)."""
    with torch.no_grad():
        logits = bundle.net.forward_exits(xs)
    return torch.stack([torch.softmax(z, 1).max(1).values for z in logits], dim=1)


def hidden_at(bundle: Bundle, x: torch.Tensor, split: int) -> torch.Tensor:
    """The tensor leaving block ``split`` for a batch-1 input (blocks only, no exits)."""
    with torch.no_grad():
        return bundle.net.run_blocks(x, 0, split)


def make_request(
    bundle: Bundle,
    split: int,
    exit_index: int | None = None,
    tau: float = 1.0,
    x: torch.Tensor | None = None,
    codec: str = "raw",
    request_id: str = "r",
) -> offload_pb2.InferRequest:
    """A valid request for ``split`` (the last exit unless given)."""
    m = bundle.manifest
    if x is None:
        x = edge_inputs(bundle, 1)
    req = offload_pb2.InferRequest(
        request_id=request_id,
        weights_sha256=m.weights_sha256,
        split=split,
        exit=m.num_exits - 1 if exit_index is None else exit_index,
        tau=tau,
    )
    to_proto(encode(hidden_at(bundle, x, split), codec), req.tensor)
    return req


def local_answer(
    bundle: Bundle, h: torch.Tensor, split: int, exit_index: int, tau: float
) -> Answer:
    """What the cloud must answer: the shared early-exit rule run locally from ``split``."""
    res = run_segment(bundle.net, h, split, bundle.manifest.blocks, exit_index, tau)
    (answer,) = res.answers
    assert answer is not None
    return answer
