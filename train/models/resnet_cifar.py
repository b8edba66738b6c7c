"""CIFAR ResNet-20 (He et al., "Deep Residual Learning", 2016, section 4.2) with a width multiplier.

Layout: 3x3 stem (stride 1) -> three stages of three BasicBlocks (strides 1/2/2, channels
16w/32w/64w) -> global average pooling -> Linear. When a block changes shape its shortcut is a 1x1
conv + BN (option B), as in the Feather paper's ResNet-20x2 (width 2 = 32/64/128 channels:
1,092,960 conv/linear weights and 162.4M MACs at 3x32x32 with 100 classes).

Each stage is an `nn.Sequential` named `layer1/2/3` of `BasicBlock`s with `conv1, bn1, conv2, bn2,
shortcut` attributes, so a later weight-sharing variant (EAST: blocks >= 2 of a stage reuse the
previous block's conv weights) can swap the convs of a block without touching the topology.
"""

from __future__ import annotations

import torch
from torch import nn

from featherdeploy.train.models._init import init_weights
from featherdeploy.train.models.errors import ModelError

__all__ = ["BasicBlock", "CifarResNet", "resnet20"]

BLOCKS_PER_STAGE = 3  # ResNet-20: 6n + 2 layers with n = 3
BASE_CHANNELS = (16, 32, 64)
STAGE_STRIDES = (1, 2, 2)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection; ReLU after the sum."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Identity (empty Sequential) when the shape is kept, else a 1x1 conv + BN projection."""
    if stride == 1 and in_channels == out_channels:
        return nn.Sequential()
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class CifarResNet(nn.Module):
    """Stem, three stages of BasicBlocks, global average pooling and a Linear classifier."""

    def __init__(self, in_channels: int, num_classes: int, width: int,
                 blocks_per_stage: int = BLOCKS_PER_STAGE) -> None:
        super().__init__()
        channels = [base * width for base in BASE_CHANNELS]
        self.conv1 = nn.Conv2d(in_channels, channels[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0])
        self.relu = nn.ReLU(inplace=True)
        stages = []
        previous = channels[0]
        for out_channels, stride in zip(channels, STAGE_STRIDES, strict=True):
            stages.append(_stage(previous, out_channels, stride, blocks_per_stage))
            previous = out_channels
        self.layer1, self.layer2, self.layer3 = stages
        # Global pooling (not a fixed 8x8 pool) so odd inputs such as 28x28 work.
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(previous, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (N, 16w, H, W)
        x = self.layer3(self.layer2(self.layer1(x)))  # (N, 64w, H/4, W/4)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _stage(in_channels: int, out_channels: int, stride: int, blocks: int) -> nn.Sequential:
    """One stage: the first block may downsample, the rest keep the shape."""
    layers = [BasicBlock(in_channels, out_channels, stride)]
    layers += [BasicBlock(out_channels, out_channels, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def resnet20(*, in_channels: int, num_classes: int, image_size: int, width: int = 1) -> CifarResNet:
    """CIFAR ResNet-20; `width` multiplies the 16/32/64 channels (2 = the paper's ResNet-20x2)."""
    del image_size  # global pooling makes the network size-agnostic
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ModelError(f"resnet20: width must be a positive int, got {width!r}")
    return CifarResNet(in_channels, num_classes, width)
