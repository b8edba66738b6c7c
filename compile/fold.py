"""Explicit BatchNorm folding: Conv2d followed directly by BatchNorm2d -> one Conv2d with bias.

For a conv output ``y = W*x + b`` normalised by an eval-mode BN,
``BN(y) = gamma * (y - mean) / sqrt(var + eps) + beta``, so with ``s = gamma / sqrt(var + eps)``:
``W' = W * s`` (per output channel) and ``b' = (b - mean) * s + beta`` (Ioffe & Szegedy 2015,
section 3.2; the same rewrite every inference compiler applies). Zeros of ``W`` stay zeros.

Pairs are found on a ``torch.fx`` trace, so only a BN whose input is a conv's output, used by
nothing else, is folded. A BN that precedes a conv (DenseNet's pre-activation) is left alone and
exports as a BatchNormalization node. The folded copy keeps the original module names, so weight
FQNs (``"layer1.0.conv1.weight"``) still refer to the same layers.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import fx, nn

__all__ = ["FoldResult", "fold_conv_bn", "find_conv_bn_pairs", "fold_batchnorms"]


@dataclass
class FoldResult:
    """The folded model copy, the (conv, bn) module names folded, and how they were found."""

    model: nn.Module
    pairs: list[tuple[str, str]] = field(default_factory=list)
    method: str = "fx"  # "fx", or "none" when tracing failed (then the ONNX exporter folds)
    note: str = ""


def fold_conv_bn(weight: torch.Tensor, bias: torch.Tensor | None,
                 bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Folded ``(W', b')`` for conv weight ``(out, in/g, kh, kw)`` and an eval-mode BN.

    The per-channel scale and the bias are computed in float64; the weight is multiplied by the
    rounded scale in its own dtype (one rounding, and no float64 copy of ResNet-50's weights).
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm2d without running statistics")
    out_channels = weight.shape[0]
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(mean)
    b = bias.double() if bias is not None else torch.zeros(out_channels, dtype=torch.float64)
    scale = gamma / torch.sqrt(var + bn.eps)  # (out,)
    folded_w = weight * scale.to(weight.dtype).reshape(-1, 1, 1, 1)
    folded_b = (b - mean) * scale + beta
    return folded_w, folded_b.to(weight.dtype)


def find_conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv, bn) module names where the BN's only input is the conv's output and neither the
    conv output nor either module is used anywhere else. Raises if ``torch.fx`` cannot trace."""
    graph = fx.symbolic_trace(model).graph
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        source = node.args[0] if node.args else None
        if (isinstance(source, fx.Node) and source.op == "call_module"
                and isinstance(modules.get(source.target), nn.Conv2d)
                and len(source.users) == 1 and calls[source.target] == 1
                and calls[node.target] == 1 and len(node.args) == 1 and not node.kwargs):
            pairs.append((str(source.target), str(node.target)))
    return pairs


def _replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def fold_batchnorms(model: nn.Module) -> FoldResult:
    """An eval-mode deep copy of ``model`` with every conv -> BN pair folded (BN -> Identity).

    The input model is not modified. If ``torch.fx`` cannot trace the model, the copy is returned
    unfolded with ``method="none"``; the legacy ONNX exporter still folds BN in eval mode.
    """
    folded = copy.deepcopy(model).eval()
    try:
        pairs = find_conv_bn_pairs(folded)
    except Exception as exc:  # fx raises many types on untraceable Python control flow
        return FoldResult(folded, [], "none", f"torch.fx could not trace the model: {exc}")
    with torch.no_grad():
        for conv_name, bn_name in pairs:
            conv = folded.get_submodule(conv_name)
            weight, bias = fold_conv_bn(conv.weight, conv.bias, folded.get_submodule(bn_name))
            conv.weight = nn.Parameter(weight, requires_grad=False)  # no extra copy
            conv.bias = nn.Parameter(bias, requires_grad=False)
            _replace_module(folded, bn_name, nn.Identity())
    return FoldResult(folded, pairs, "fx")
