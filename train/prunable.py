"""The single definition of which weights are prunable, used by every stage.

Feather (arXiv 2310.02448) and the authors' code prune every Conv2d and Linear weight: the first
conv, the classifier, 1x1 downsample convs and depthwise convs included. The only option is to keep
the first conv dense. Weights are named by fully-qualified parameter name, e.g.
``"layer1.0.conv1.weight"``; these keys are used in checkpoints, reports and compile manifests.
"""

from __future__ import annotations

from torch import nn

__all__ = [
    "PRUNABLE_TYPES", "is_prunable", "prunable_modules", "prunable_parameters", "weight_fqn",
]

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)


def weight_fqn(module_fqn: str) -> str:
    """FQN of a module's weight: ``"layer1.0.conv1"`` -> ``"layer1.0.conv1.weight"``."""
    return f"{module_fqn}.weight" if module_fqn else "weight"


def _first_conv_name(model: nn.Module) -> str | None:
    """Module name of the first Conv2d in registration order (the stem), or None."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name
    return None


def is_prunable(module: nn.Module, module_fqn: str, *, keep_first_conv_dense: bool = False,
                first_conv_fqn: str | None = None) -> bool:
    """True when ``module``'s weight is pruned: a Conv2d or Linear, unless it is the kept stem."""
    if not isinstance(module, PRUNABLE_TYPES):
        return False
    return not (keep_first_conv_dense and module_fqn == first_conv_fqn)


def prunable_modules(model: nn.Module, *, keep_first_conv_dense: bool = False
                     ) -> dict[str, nn.Module]:
    """Module FQN -> module for every prunable layer, in registration order."""
    first = _first_conv_name(model) if keep_first_conv_dense else None
    return {
        name: module for name, module in model.named_modules()
        if is_prunable(module, name, keep_first_conv_dense=keep_first_conv_dense,
                       first_conv_fqn=first)
    }


def prunable_parameters(model: nn.Module, *, keep_first_conv_dense: bool = False
                        ) -> dict[str, nn.Parameter]:
    """Weight FQN (``"<module>.weight"``) -> weight parameter for every prunable layer."""
    return {
        weight_fqn(name): module.weight
        for name, module in prunable_modules(
            model, keep_first_conv_dense=keep_first_conv_dense).items()
    }
