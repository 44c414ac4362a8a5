"""Split your own ``nn.Module`` for edge/cloud inference and see what each split costs.

Run:  .venv/bin/python examples/split_and_profile.py

Replace ``MyNet`` and ``example`` with your model and one input of its real shape. For each
place the model can be cut (a point where a single tensor is live), this prints the tensor
that would cross the network, its size per codec, and the measured time of the head (edge
side) and tail (cloud side) on this machine; it checks that tail(head(x)) == model(x).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from edgeml.partition.codecs import encode, to_bytes
from edgeml.partition.graph import find_cut_points, split

torch.set_num_threads(1)


class MyNet(nn.Module):
    """A small residual CNN standing in for your model."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.block(x)  # a residual: no cut inside it (two tensors are live there)
        return self.head(self.down(x))


def median_ms(fn: Callable[[torch.Tensor], object], x: torch.Tensor, repeats: int = 20) -> float:
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(x)
            times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


def main() -> None:
    model = MyNet().eval()
    example = torch.randn(1, 3, 64, 64)
    cuts = find_cut_points(model, example)
    print(f"{'cut':>3} {'node':<14} {'shape':<18} {'raw kB':>7} {'int8 kB':>8} "
          f"{'head ms':>8} {'tail ms':>8}")  # fmt: skip
    for cut in cuts:
        head, tail = split(model, cut)
        with torch.inference_mode():
            h = head(example)
            assert torch.allclose(tail(h), model(example), atol=1e-5)
        raw = len(to_bytes(encode(h, "raw"))) / 1e3
        int8 = len(to_bytes(encode(h, "int8"))) / 1e3
        print(f"{cut.index:>3} {cut.node:<14} {str(tuple(h.shape)):<18} {raw:7.1f} {int8:8.1f} "
              f"{median_ms(head, example):8.3f} {median_ms(tail, h):8.3f}")  # fmt: skip
    print(
        "\nThe edge runs the head and sends the cut tensor; the cloud runs the tail. To use "
        "early exits and the RL agent, express the model as a ProgressiveNet (blocks + exit "
        "heads, see edgeml/models/progressive_cnn.py) and run `edgeml build` + `edgeml profile`."
    )


if __name__ == "__main__":
    main()
