"""Weight sharing across ResNet blocks (EAST, Li et al., arXiv 2411.13545).

In each ResNet stage (``layer1``, ``layer2``, ... : an ``nn.Sequential`` of residual blocks), every
block with index i >= r (r = 2) reuses the convolution weights of block r - 1, each times its own
learnable scalar s_i, and keeps its own BatchNorm layers:

    conv_i(x) = conv2d(x, s_i * W_{r-1})        (same stride, padding, groups; no bias)

The shared block's conv is replaced by a :class:`SharedConv2d`, which is not a Conv2d: it holds the
source conv by plain reference (not as a registered sub-module), so the source weight is one
storage, appears once in ``parameters()`` / ``state_dict()`` and is counted once by
``train.prunable``. Pruning the source (a Feather parametrization on its weight) therefore prunes
every block that shares it with the same mask. The density is corrected as in EAST's code
(``adjusted_density = total_params * density / non_shared_params``): the unique weights keep as
many nonzeros as the unshared model keeps at the target (``FeatherSparsifier.unique_k``), so
sharing spends the budget of the removed copies on the unique weights. The scalar is a 0-d
parameter: never pruned and, being < 2-D, given no weight decay by the loop.

``materialize_shared_weights`` turns each SharedConv2d back into a plain ``nn.Conv2d`` whose weight
is s_i * W_{r-1} (the exact product the forward pass computed), so the finalized model has the
topology and state_dict keys of the unshared model and exports to an ordinary ONNX graph.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FIRST_SHARED_BLOCK", "SharedConv2d", "share_resnet_weights",
           "materialize_shared_weights"]

FIRST_SHARED_BLOCK = 2  # r: blocks r, r+1, ... reuse block r-1
_STAGE_NAME = re.compile(r"^layer\d+$")
_BLOCK_CONVS = ("conv1", "conv2", "conv3")  # BasicBlock has conv1/2, Bottleneck also conv3


def _conv_signature(conv: nn.Conv2d) -> tuple:
    return (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.dilation, conv.groups, conv.padding_mode, conv.bias is None)


class SharedConv2d(nn.Module):
    """A conv computing conv2d(x, scale * source.weight) with the geometry of ``source``."""

    def __init__(self, source: nn.Conv2d, replaced: nn.Conv2d) -> None:
        super().__init__()
        if _conv_signature(source) != _conv_signature(replaced):
            raise ValueError("a shared conv must have the same shape and geometry as its source")
        if source.bias is not None or source.padding_mode != "zeros":
            raise ValueError("weight sharing supports bias-free, zero-padded convs only")
        self._source = (source,)  # a tuple hides it from module registration: counted once
        self.scale = nn.Parameter(torch.ones((), device=source.weight.device,
                                             dtype=source.weight.dtype))

    @property
    def source(self) -> nn.Conv2d:
        return self._source[0]

    def shared_weight(self) -> Tensor:
        """scale * W_source, the (possibly thresholded) source weight this conv applies."""
        return self.source.weight * self.scale

    def forward(self, x: Tensor) -> Tensor:
        conv = self.source
        return F.conv2d(x, self.shared_weight(), None, conv.stride, conv.padding,
                        conv.dilation, conv.groups)

    def extra_repr(self) -> str:
        return f"shares {tuple(self.source.weight.shape)}, scale={float(self.scale):.4f}"


def _stages(model: nn.Module) -> list[tuple[str, nn.Sequential]]:
    return [(name, child) for name, child in model.named_children()
            if _STAGE_NAME.match(name) and isinstance(child, nn.Sequential)]


def share_resnet_weights(model: nn.Module, first_shared: int = FIRST_SHARED_BLOCK) -> list[str]:
    """Make blocks >= ``first_shared`` of every stage reuse block ``first_shared - 1``'s convs.

    Returns the module names of the replaced convs, e.g. ``["layer1.2.conv1", ...]``. Raises
    ValueError when the model has no ResNet stage with more than ``first_shared`` blocks.
    """
    if first_shared < 1:
        raise ValueError(f"first_shared must be >= 1, got {first_shared}")
    replaced: list[str] = []
    for stage_name, stage in _stages(model):
        source_block = stage[first_shared - 1] if len(stage) > first_shared else None
        for index in range(first_shared, len(stage)):
            for conv_name in _BLOCK_CONVS:
                source = getattr(source_block, conv_name, None)
                target = getattr(stage[index], conv_name, None)
                if isinstance(source, nn.Conv2d) and isinstance(target, nn.Conv2d):
                    setattr(stage[index], conv_name, SharedConv2d(source, target))
                    replaced.append(f"{stage_name}.{index}.{conv_name}")
    if not replaced:
        raise ValueError(f"weight sharing needs ResNet stages (layer1, layer2, ...) with more than "
                         f"{first_shared} blocks; this model has none")
    return replaced


@torch.no_grad()
def materialize_shared_weights(model: nn.Module) -> list[str]:
    """Replace every SharedConv2d by a plain nn.Conv2d holding scale * W_source; return names."""
    names = [name for name, m in model.named_modules() if isinstance(m, SharedConv2d)]
    for name in names:
        shared = model.get_submodule(name)
        source = shared.source
        weight = shared.shared_weight().detach()
        conv = nn.Conv2d(source.in_channels, source.out_channels, source.kernel_size,
                         source.stride, source.padding, source.dilation, source.groups,
                         bias=False, device=weight.device, dtype=weight.dtype)
        conv.weight.copy_(weight)
        parent_name, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent_name), attribute, conv)
    return names
