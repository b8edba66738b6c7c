"""CIFAR DenseNet-BC (Huang et al., "Densely Connected Convolutional Networks", 2017).

DenseNet-BC-40 with growth rate k = 24 and compression 0.5, the Feather paper's third CIFAR model:
3x3 stem conv (2k channels) -> 3 dense blocks of (40 - 4) / 6 = 6 bottleneck layers, each
BN-ReLU-1x1 conv (4k)-BN-ReLU-3x3 conv (k) whose output is concatenated to its input -> transitions
BN-ReLU-1x1 conv (half the channels)-2x2 average pool between blocks -> BN-ReLU -> global average
pooling -> Linear. At 3x32x32 / 100 classes: 703,920 conv/linear weights, 288.2M MACs.

Pre-activation BN (BN before its conv) cannot be folded into the preceding conv; the model stays
standard anyway and the compile stage handles the unfolded BNs.
"""

from __future__ import annotations

import torch
from torch import nn

from featherdeploy.train.models._init import init_weights

__all__ = ["Bottleneck", "DenseNetBC", "Transition", "densenet40_24"]

BOTTLENECK_FACTOR = 4  # the 1x1 conv of a bottleneck outputs 4k channels
NUM_DENSE_BLOCKS = 3


class Bottleneck(nn.Module):
    """BN-ReLU-1x1 conv(4k)-BN-ReLU-3x3 conv(k); returns the input with k new channels appended."""

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        inner = BOTTLENECK_FACTOR * growth
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, inner, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(inner)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(inner, growth, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # No in-place ReLU on x itself: x is also concatenated into the output.
        out = self.conv1(self.relu1(self.bn1(x)))
        out = self.conv2(self.relu2(self.bn2(out)))
        return torch.cat([x, out], dim=1)  # (N, C + k, H, W)


class Transition(nn.Module):
    """BN-ReLU-1x1 conv (compressing the channels)-2x2 average pooling."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(self.relu(self.bn(x))))


class DenseNetBC(nn.Module):
    """Stem conv, dense blocks separated by transitions, final BN-ReLU, GAP and Linear."""

    def __init__(self, in_channels: int, num_classes: int, depth: int, growth: int,
                 reduction: float) -> None:
        super().__init__()
        layers_per_block = (depth - 4) // 6  # BC: two convs per bottleneck layer
        channels = 2 * growth
        self.conv1 = nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False)
        stages: list[nn.Module] = []
        for block in range(NUM_DENSE_BLOCKS):
            dense = [Bottleneck(channels + i * growth, growth) for i in range(layers_per_block)]
            stages.append(nn.Sequential(*dense))
            channels += layers_per_block * growth
            if block < NUM_DENSE_BLOCKS - 1:
                compressed = int(channels * reduction)
                stages.append(Transition(channels, compressed))
                channels = compressed
        self.dense1, self.trans1, self.dense2, self.trans2, self.dense3 = stages
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.trans1(self.dense1(self.conv1(x)))
        x = self.dense3(self.trans2(self.dense2(x)))  # (N, 264, H/4, W/4) for k = 24
        x = self.relu(self.bn(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def densenet40_24(*, in_channels: int, num_classes: int, image_size: int) -> DenseNetBC:
    """DenseNet-BC, depth 40, growth rate 24, compression 0.5."""
    del image_size  # global pooling makes the network size-agnostic
    return DenseNetBC(in_channels, num_classes, depth=40, growth=24, reduction=0.5)
