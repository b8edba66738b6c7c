"""Weight initialisation shared by the CIFAR model families.

Reference: He et al., "Delving Deep into Rectifiers" (2015) for the kaiming (fan_out, ReLU) conv
init; BatchNorm starts as the identity (gamma 1, beta 0), as in torchvision's ResNet.
"""

from __future__ import annotations

from torch import nn

__all__ = ["init_weights"]


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convs, identity BatchNorm, small-normal Linear with zero bias, in place."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.01)
            nn.init.zeros_(module.bias)
