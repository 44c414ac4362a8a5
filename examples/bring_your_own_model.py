"""Bring your own model: a torchvision-style ResNet-18 and RGB data -> a served, adaptive bundle.

    PYTHONPATH=examples python examples/bring_your_own_model.py            # the full run
    PYTHONPATH=examples python examples/bring_your_own_model.py --quick    # CI: tiny, ~30 s

1. writes a 6-class, 3x64x64 RGB data set as ``.npz`` (Fashion-MNIST items of random
   size, position and colour on coloured noise; no download);
2. ``edgeml.build``: cuts the ResNet at its stage outputs (``exits_after="auto"``), adds an
   exit head to each, trains, calibrates and profiles -> a bundle;
3. loads the bundle in a fresh process (``edgeml.Bundle.load``, as every side does);
4. ``edgeml.train_agent``: PPO for this bundle on the project's bandwidth traces (training
   files), then ``edgeml evaluate`` against the baselines and the oracle (held-out files);
5. ``edgeml serve`` runs it as the cloud; the edge sends a pure red frame, once as the input
   (split 0) and once after running block 1 itself, and checks the answers against its own;
   then ``edgeml edge`` runs the trained policy on the held-out images against that cloud.

The model below is ordinary PyTorch: EdgeML imports it by reference
(``bring_your_own_model:resnet18``), so every process that loads the bundle needs this
file's directory on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger("byom")
CLASSES = (0, 1, 2, 3, 5, 8)  # T-shirt, Trouser, Pullover, Dress, Sandal, Bag
SIZE = 64


# --- the user's model: torchvision's ResNet-18, written out (its wheel does not import here)
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    def __init__(self, layers: list[int], num_classes: int = 1000, width: int = 64) -> None:
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], 2)
        self.layer3 = self._make_layer(width * 4, layers[2], 2)
        self.layer4 = self._make_layer(width * 8, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8, num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [BasicBlock(self.inplanes, planes, stride)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 1000, width: int = 64) -> ResNet:
    return ResNet([2, 2, 2, 2], num_classes, width)


# --- the user's data: coloured Fashion-MNIST items on coloured noise, written as .npz
def make_rgb_set(split: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` RGB 64x64 uint8 images (N, H, W, C) and labels 0..5."""
    from edgeml.data.fashion_mnist import source_split

    src = source_split(split)
    keep = np.flatnonzero(np.isin(src.labels, CLASSES))
    rng = np.random.default_rng(seed)
    pick = rng.choice(keep, n, replace=False)
    x = np.empty((n, SIZE, SIZE, 3), np.uint8)
    for i, k in enumerate(pick):
        bg = rng.uniform(0, 0.5, 3) * rng.uniform(0.5, 1.0, (SIZE, SIZE, 1))
        side = int(rng.integers(32, 57))
        idx = (np.arange(side) * 28 / side).astype(int)
        item = src.images[k][idx][:, idx, None] / 255.0 * rng.uniform(0.4, 1.0, 3)
        r, c = rng.integers(0, SIZE - side + 1, 2)
        img = bg + rng.normal(0, 0.05, (SIZE, SIZE, 3))
        view = img[r : r + side, c : c + side]
        np.maximum(view, item, out=view)
        x[i] = np.clip(img * 255, 0, 255).astype(np.uint8)
    y = np.searchsorted(CLASSES, src.labels[pick]).astype(np.int64)
    return x, y


def serve(bundle: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """``edgeml serve`` on a free loopback port; returns the process and its address."""
    cmd = [sys.executable, "-m", "edgeml.cli", "serve", str(bundle), "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if "listening on" in line:
            return proc, line.split("listening on", 1)[1].split(",")[0].strip()
    raise RuntimeError(f"edgeml serve ended with {proc.wait()} before listening")


def main(argv: list[str] | None = None) -> dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny data and width (CI)")
    p.add_argument("--out", default="runs/byom", help="work directory")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    import edgeml
    from edgeml.runtime.compare import summarize
    from edgeml.runtime.demo import find_traces_dir
    from edgeml.runtime.sources import array_items
    from edgeml.transport.client import ClientConfig, EdgeClient

    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_train, n_val, width, epochs = (400, 200, 8, 1) if args.quick else (8000, 2000, 64, 3)
    for split, n, seed, name in (("train", n_train, 1, "train"), ("val", n_val, 2, "val")):
        x, y = make_rgb_set(split, n, seed)
        np.savez(out / f"{name}.npz", x=x, y=y)

    # ---- from "I have an nn.Module and data" to a bundle: one call
    bundle = edgeml.build(
        resnet18, out / "train.npz", out / "val.npz", out=out / "bundle",
        model_kwargs={"num_classes": len(CLASSES), "width": width}, exits_after="auto",
        epochs=args.epochs or epochs, lr=3e-3 if args.quick else 2e-3, batch_size=64,
        test_fraction=0.5, threads=args.threads, progress=not args.quick,
    )  # fmt: skip
    m = bundle.manifest
    t_build = time.perf_counter() - t0
    acc = m.build["test_accuracy"]["overall"]
    log.info("bundle: %d blocks, exits %s after %s; held-out accuracy per exit %s",
             m.blocks, list(m.exits), m.model["progressive"]["exits_after"], acc)  # fmt: skip

    # ---- every other side loads it from the manifest alone, here in a fresh process
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    here = str(Path(__file__).resolve().parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH", "")) if p)
    code = (
        f"import edgeml; b = edgeml.Bundle.load({str(out / 'bundle')!r}); print(b.weights_sha256)"
    )
    fresh = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                           check=True).stdout.strip()  # fmt: skip
    assert fresh == bundle.weights_sha256, (fresh, bundle.weights_sha256)

    # ---- the cloud serves it; the edge sends a red frame through its own input path
    red = np.zeros((1, SIZE, SIZE, 3), np.uint8)
    red[..., 0] = 255
    (item,) = array_items(red, m.input_shape, name="red", loop=False, prep=m.prep)
    x = torch.from_numpy(item.x)
    with torch.no_grad():
        local = int(bundle.net(x).argmax(1))
    # ---- the agent for this bundle: PPO on real bandwidth traces (their training files)
    quick = {"warm_start": {"steps": 2000, "epochs": 2}, "eval_episodes": 2} if args.quick else {}
    agent = edgeml.train_agent(bundle, find_traces_dir(), out=out / "ppo.zip", n_envs=4,
                               timesteps=2048 if args.quick else 150_000, **quick)  # fmt: skip
    # ... against the baselines and the oracle on the held-out traces (test split)
    steps = ["--segments", "1", "--steps", "100"] if args.quick else []
    cli = [sys.executable, "-m", "edgeml.cli"]
    subprocess.run([*cli, "evaluate", str(bundle.path), "--traces", str(find_traces_dir()),
                    "--policy", str(agent.actor), "--json", str(out / "evaluate.json"),
                    "--no-progress", *steps], env=env, check=True)  # fmt: skip
    evaluation = json.loads((out / "evaluate.json").read_text())

    proc, address = serve(bundle.path, env)
    try:
        client = EdgeClient(ClientConfig(targets=address), bundle.weights_sha256)
        client.wait_ready(30.0)
        last = len(m.exits) - 1
        replies = {}
        for split in (0, 1):
            with torch.no_grad():
                hidden = bundle.net.run_blocks(x, 0, split)
            replies[split] = client.infer(hidden, split, last, 1.0, codec="raw")
        client.close()
        # ---- the edge daemon: the trained policy on the held-out images, this cloud
        n_edge = 30 if args.quick else 300
        (out / "edge.jsonl").unlink(missing_ok=True)  # the daemon appends
        edge_cmd = [*cli, "edge", str(bundle.path), "--cloud", address, "--policy",
                    str(agent.actor), "--source", str(out / "val.npz"), "--max-inputs",
                    str(n_edge), "--log", str(out / "edge.jsonl")]  # fmt: skip
        subprocess.run(edge_cmd, env=env, check=True)
    finally:
        proc.terminate()
        proc.wait(10)
    for split, r in replies.items():
        assert r.class_id == local, (split, r.class_id, local)
        log.info("split %d: cloud answered class %d (edge: %d) in %.1f ms, %d bytes sent",
                 split, r.class_id, local, r.rtt_ms, r.sent_bytes)  # fmt: skip
    rows = [json.loads(line) for line in (out / "edge.jsonl").read_text().splitlines()]
    edge = summarize(rows)
    pols = evaluation["policies"]
    timely = {k: round(v["timely_accuracy"], 4) for k, v in pols.items()}
    log.info("simulated timely accuracy: %s", timely)
    log.info("edge daemon: %d inputs, timely accuracy %.3f, offloaded %.0f%%", len(rows),
             edge["timely_accuracy"], 100 * edge["offload_rate"])  # fmt: skip
    result = {
        "quick": args.quick, "classes": len(CLASSES), "input_shape": list(m.input_shape),
        "width": width, "train": n_train, "val": n_val, "epochs": args.epochs or epochs,
        "blocks": m.blocks, "exits_after": m.model["progressive"]["exits_after"],
        "accuracy_per_exit": acc, "build_s": round(t_build, 1),
        "train_agent_s": round(agent.seconds, 1), "timesteps": agent.timesteps,
        "total_s": round(time.perf_counter() - t0, 1), "weights_sha256": bundle.weights_sha256,
        "profile_blocks_ms": (bundle.profile or {}).get("blocks_ms"),
        "cloud_answers": {str(s): r.class_id for s, r in replies.items()}, "edge_answer": local,
        "evaluate": timely,
        "headroom": evaluation.get("headroom"),
        "edge_daemon": {"inputs": len(rows), "timely_accuracy": edge["timely_accuracy"],
                        "offload_rate": edge["offload_rate"]},
    }  # fmt: skip
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
