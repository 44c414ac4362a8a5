"""Exit training: a joint weighted loss (BranchyNet), or exits only on a frozen backbone."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from edgeml.models.progressive_net import ProgressiveNet
from edgeml.progressive.config import ExitTrainConfig

log = logging.getLogger(__name__)


def train_exits(
    net: ProgressiveNet,
    datasets: Callable[[int], Dataset],
    cfg: ExitTrainConfig,
) -> list[float]:
    """Train ``net`` in place; ``datasets(epoch)`` gives that epoch's training set.

    Returns the mean loss per epoch. One-cycle AdamW: the best accuracy per image seen,
    which matters on a 2-core machine with a fixed time budget. Items may be ``(x, y)``
    or ``(x, y, level)``. ``exits-only`` freezes every block -- for a net made by
    ``edgeml.from_module`` that includes the model's own classifier, so the final
    exit stays bit-identical -- and keeps their batch norm in eval mode.
    """
    torch.manual_seed(cfg.seed)
    weights = list(cfg.exit_weights or [1.0] * len(net.exits))
    if len(weights) != len(net.exits):
        raise ValueError(f"exit_weights: need {len(net.exits)} weights, got {len(weights)}")
    if cfg.mode == "exits-only":
        for p in net.blocks.parameters():
            p.requires_grad_(False)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    net.to(memory_format=fmt)  # type: ignore[call-overload]  # torch's stubs lack it
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = -(-len(datasets(0)) // cfg.batch_size)  # type: ignore[arg-type]
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.2
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    history: list[float] = []
    for epoch in range(cfg.epochs):
        net.train()
        if cfg.mode == "exits-only":
            net.blocks.eval()
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        loader = DataLoader(
            datasets(epoch),
            batch_size=cfg.batch_size,
            shuffle=True,
            generator=gen,
            num_workers=cfg.num_workers,
            drop_last=True,
            persistent_workers=False,
        )
        total, count = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress)
        for batch in bar:  # (x, y) or (x, y, level): levels play no part in training
            x, y = batch[0], batch[1]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                outs = net.forward_exits(x.contiguous(memory_format=fmt))
            loss = sum(w * loss_fn(o.float(), y) for w, o in zip(weights, outs, strict=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(y)
            count += len(y)
            bar.set_postfix(loss=f"{total / count:.3f}")
        history.append(total / max(count, 1))
        log.info("epoch %d/%d: loss %.4f", epoch + 1, cfg.epochs, history[-1])
    net.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    net.eval()
    return history
