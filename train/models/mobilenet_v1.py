"""CIFAR MobileNetV1 (Howard et al., "MobileNets", 2017) as used by the Feather paper.

Layout: 3x3 stem conv (32 channels, stride 1) -> 13 depthwise-separable blocks (3x3 depthwise conv
+ BN + ReLU, then 1x1 pointwise conv + BN + ReLU) with output channels and strides
64, 128/2, 128, 256/2, 256, 512/2, 5 x 512, 1024/2, 1024 -> global average pooling -> Linear.

Variant choice: with a stride-1 stem and the four stride-2 blocks above (the usual CIFAR port of
the ImageNet network, whose stem stride 2 is dropped) the count at 3x32x32 / 100 classes is
3,287,488 conv/linear weights and 46.4M MACs, the numbers the paper reports
(docs/algorithms.md section 3); the spatial sizes are 32 -> 16 -> 8 -> 4 -> 2.
"""

from __future__ import annotations

import torch
from torch import nn

from featherdeploy.train.models._init import init_weights
from featherdeploy.train.models.errors import ModelError

__all__ = ["BLOCK_SPEC", "DepthwiseSeparable", "MobileNetV1", "mobilenet_v1"]

STEM_CHANNELS = 32
# (output channels, stride) of the 13 depthwise-separable blocks.
BLOCK_SPEC: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv-BN-ReLU followed by a 1x1 pointwise conv-BN-ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels,
                                 bias=False)
        self.bn_dw = nn.BatchNorm2d(in_channels)
        self.relu_dw = nn.ReLU(inplace=True)
        self.conv_pw = nn.Conv2d(in_channels, out_channels, 1, 1, 0, bias=False)
        self.bn_pw = nn.BatchNorm2d(out_channels)
        self.relu_pw = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu_dw(self.bn_dw(self.conv_dw(x)))
        return self.relu_pw(self.bn_pw(self.conv_pw(x)))


class MobileNetV1(nn.Module):
    """Stem conv, 13 depthwise-separable blocks, global average pooling, Linear classifier."""

    def __init__(self, in_channels: int, num_classes: int, width_mult: float) -> None:
        super().__init__()
        stem = _scaled(STEM_CHANNELS, width_mult)
        self.conv1 = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        blocks = []
        previous = stem
        for channels, stride in BLOCK_SPEC:
            out_channels = _scaled(channels, width_mult)
            blocks.append(DepthwiseSeparable(previous, out_channels, stride))
            previous = out_channels
        self.features = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(previous, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.relu(self.bn1(self.conv1(x))))  # (N, 1024, H/16, W/16)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _scaled(channels: int, width_mult: float) -> int:
    """Channels times the width multiplier, rounded, at least 1."""
    return max(1, int(round(channels * width_mult)))


def mobilenet_v1(*, in_channels: int, num_classes: int, image_size: int,
                 width_mult: float = 1.0) -> MobileNetV1:
    """CIFAR MobileNetV1 with a stride-1 stem; `width_mult` scales every layer's channels."""
    del image_size  # global pooling makes the network size-agnostic
    if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or width_mult <= 0:
        raise ModelError(f"mobilenet_v1: width_mult must be a positive number, got {width_mult!r}")
    return MobileNetV1(in_channels, num_classes, float(width_mult))
