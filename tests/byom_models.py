"""User-side model factories for the bring-your-own-model tests, imported by reference
(``byom_models:small_resnet``) in this process and in the child processes they start."""

from __future__ import annotations

import torch
from torch import nn


class Residual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride > 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.skip is None else self.skip(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        out += identity
        return self.relu(out)


class SmallResNet(nn.Module):
    """A torchvision-shaped ResNet, tiny: stem, three stages, pool, fc."""

    def __init__(self, num_classes: int = 5, in_channels: int = 3, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = Residual(width, width)
        self.layer2 = Residual(width, 2 * width, 2)
        self.layer3 = Residual(2 * width, 2 * width, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def small_resnet(num_classes: int = 5, in_channels: int = 3, width: int = 8) -> SmallResNet:
    return SmallResNet(num_classes, in_channels, width)


def flat_head(shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A user's exit head factory: flatten + linear."""
    return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.Size(shape).numel()), num_classes))
