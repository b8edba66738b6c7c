"""Seeded tiny models with exact-zero unstructured sparsity, shared by the compile tests."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TinyNet", "sparsify_", "randomize_batchnorm_"]


class TinyNet(nn.Module):
    """conv-BN-ReLU (stride 2, pad 1) -> depthwise conv-BN-ReLU -> 1x1 conv -> GAP -> Linear."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 8, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))  # (N, 8, H/2, W/2)
        x = torch.relu(self.bn2(self.dw(x)))
        x = torch.relu(self.pw(x))  # (N, 16, H/2, W/2)
        return self.fc(x.mean(dim=(2, 3)))


def sparsify_(model: nn.Module, sparsity: float, seed: int = 0) -> nn.Module:
    """Zero exactly round(sparsity * numel) random entries of every Conv2d/Linear weight."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                flat = module.weight.view(-1)
                order = torch.randperm(flat.numel(), generator=generator)
                flat[order[: round(sparsity * flat.numel())]] = 0.0
    return model


def randomize_batchnorm_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so folding is actually exercised."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                if module.affine:
                    module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                    module.bias.copy_(torch.rand(n, generator=generator) - 0.5)
    return model
