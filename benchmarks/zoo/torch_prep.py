"""Non-degenerate random weights and magnitude pruning for torch models.

Random init leaves some models degenerate: torchvision's MobileNetV2 and EfficientNet give logits
of ~1e-9 and ~1e-14 (activations shrink layer by layer while BatchNorm keeps its default
statistics), and timm zero-initializes the last BatchNorm of every residual block, so GhostNet and
RepVGG outputs barely depend on the input. The fix: every BatchNorm gets a random affine and
running statistics measured on N(0, 1) inputs (train mode with ``momentum=None``, i.e. the
cumulative mean over a few random batches), then eval mode.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["BN_TYPES", "PRUNABLE_TYPES", "randomize_bn_affine", "calibrate_bn",
           "prune_by_magnitude", "prune_model", "has_batchnorm"]

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
PRUNABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)
GAMMA_LOW, GAMMA_HIGH = 0.5, 1.5
BETA_STD = 0.2
CALIBRATION_BATCH = 4
CALIBRATION_STEPS = 2


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has any BatchNorm layer."""
    return any(isinstance(m, BN_TYPES) for m in model.modules())


def randomize_bn_affine(model: nn.Module, generator: torch.Generator) -> None:
    """gamma ~ U(0.5, 1.5), beta ~ N(0, 0.2) for every BatchNorm (affine ones)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, BN_TYPES) and module.affine:
                size = module.num_features
                module.weight.copy_(GAMMA_LOW + (GAMMA_HIGH - GAMMA_LOW)
                                    * torch.rand(size, generator=generator))
                module.bias.copy_(BETA_STD * torch.randn(size, generator=generator))


def _random_inputs(shapes: list[tuple[int, ...]], generator: torch.Generator) -> list[torch.Tensor]:
    """One N(0, 1) float tensor per input shape."""
    return [torch.randn(shape, generator=generator) for shape in shapes]


def calibrate_bn(model: nn.Module, input_shapes: list[tuple[int, ...]],
                 generator: torch.Generator, *, steps: int = CALIBRATION_STEPS) -> nn.Module:
    """Measure every BatchNorm's running mean/var on ``steps`` random N(0, 1) batches
    (cumulative average, ``momentum=None``); every other module stays in eval mode. Returns
    ``model`` in eval mode."""
    model.eval()
    bns = [m for m in model.modules() if isinstance(m, BN_TYPES)]
    saved = [m.momentum for m in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    with torch.no_grad():
        for _ in range(steps if bns else 0):
            model(*_random_inputs(input_shapes, generator))
    for bn, momentum in zip(bns, saved, strict=True):
        bn.momentum = momentum
    return model.eval()


def prune_by_magnitude(weight: torch.Tensor, sparsity: float) -> int:
    """Zero the ``ceil(sparsity * numel)`` smallest-|w| entries of ``weight`` in place (ties
    broken by position, so exactly that many are chosen). Returns that count."""
    flat = weight.detach().view(-1)
    count = min(flat.numel(), math.ceil(sparsity * flat.numel() - 1e-9))
    order = torch.argsort(flat.abs(), stable=True)
    with torch.no_grad():
        flat[order[:count]] = 0.0
    return count


def prune_model(model: nn.Module, sparsity: float) -> dict[str, int]:
    """Magnitude-prune every conv and Linear weight per tensor. Returns module name -> zeros."""
    return {name: prune_by_magnitude(module.weight, sparsity)
            for name, module in model.named_modules() if isinstance(module, PRUNABLE_TYPES)}
