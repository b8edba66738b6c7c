"""Per-layer dense and sparse MACs of a torch model, counted the way the papers count them.

Only Conv2d and Linear count; one multiply-add is one MAC (FLOPs ~= 2 x MACs); BN, activations,
pooling and additions are ignored (docs/algorithms.md sec. 6). The formulas live in `runtime.macs`
(the single definition); this module only measures each layer's output size with forward hooks on
one dummy input (batch 1, eval mode, no grad) and reads each weight's zeros.

Check: torchvision ResNet-50 at 3x224x224 has 4,089,184,256 dense MACs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from featherdeploy.runtime.macs import conv_macs, linear_macs, sparse_macs

__all__ = ["LayerMacs", "layer_macs", "sparsity_report"]

_COUNTED_TYPES = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class LayerMacs:
    """MACs and sparsity of one Conv2d ("Conv") or Linear ("Gemm") weight, for one image."""

    fqn: str
    op: str
    weight_shape: tuple[int, ...]
    numel: int
    nnz: int
    sparsity: float
    dense_macs: int
    sparse_macs: int


def layer_macs(model: nn.Module, input_shape: Sequence[int]) -> dict[str, LayerMacs]:
    """MACs of every Conv2d and Linear of `model` for one (C, H, W) input, keyed by weight FQN.

    Runs one forward pass on zeros (batch 1) in eval mode without grad; the hooks are removed
    and the model's training mode restored afterwards, even if the forward pass fails. Modules
    called several times (shared layers) count once per call.
    """
    if len(input_shape) != 3 or any(int(d) < 1 for d in input_shape):
        raise ValueError(f"input_shape must be (C, H, W) positive ints, got {tuple(input_shape)}")
    dense: dict[str, int] = {}
    handles = [module.register_forward_hook(_make_hook(name, dense))
               for name, module in model.named_modules() if isinstance(module, _COUNTED_TYPES)]
    was_training = model.training
    try:
        model.eval()
        weight = next(model.parameters(), None)
        device = weight.device if weight is not None else torch.device("cpu")
        dtype = weight.dtype if weight is not None and weight.is_floating_point() else None
        with torch.no_grad():
            model(torch.zeros(1, *(int(d) for d in input_shape), device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {fqn: _describe(fqn, module, dense[fqn])
            for fqn, module in _counted_weights(model) if fqn in dense}


def _make_hook(module_name: str, dense: dict[str, int]) -> Callable[..., None]:
    """A forward hook adding the module's dense MACs for this call to `dense[weight FQN]`."""
    fqn = f"{module_name}.weight" if module_name else "weight"

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        dense[fqn] = dense.get(fqn, 0) + _dense_macs(module, output)

    return hook


def _dense_macs(module: nn.Module, output: torch.Tensor) -> int:
    """Dense MACs of one call for a batch of 1 (Linear: every leading output row counts)."""
    if isinstance(module, nn.Conv2d):
        out_h, out_w = output.shape[-2:]
        kernel_h, kernel_w = module.kernel_size
        return conv_macs(module.out_channels, module.in_channels, module.groups, kernel_h,
                         kernel_w, int(out_h), int(out_w))
    rows = output.numel() // module.out_features  # 1 for a (1, out_features) output
    return rows * linear_macs(module.out_features, module.in_features)


def _counted_weights(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(weight FQN, module) of every Conv2d / Linear, in module order."""
    return [(f"{name}.weight" if name else "weight", module)
            for name, module in model.named_modules() if isinstance(module, _COUNTED_TYPES)]


def _describe(fqn: str, module: nn.Module, dense: int) -> LayerMacs:
    """Shape, zeros and MACs of one layer's weight."""
    weight = module.weight.detach()
    numel = weight.numel()
    nnz = int(torch.count_nonzero(weight))
    return LayerMacs(
        fqn=fqn,
        op="Conv" if isinstance(module, nn.Conv2d) else "Gemm",
        weight_shape=tuple(weight.shape),
        numel=numel,
        nnz=nnz,
        sparsity=(numel - nnz) / numel,
        dense_macs=dense,
        sparse_macs=sparse_macs(dense, nnz, numel),
    )


def sparsity_report(model: nn.Module, input_shape: Sequence[int],
                    fqns: Sequence[str]) -> dict[str, Any]:
    """The `sparsity.json` content: per-layer and total sparsity and MACs over `fqns`.

    `fqns` are the prunable weight FQNs (each must be a Conv2d/Linear weight, else ValueError).
    Totals: numel, nnz, sparsity = zeros / numel, dense_macs, sparse_macs over `fqns`;
    `all_layers_dense_macs` / `all_layers_sparse_macs` cover every Conv2d/Linear of the model.
    """
    layers = layer_macs(model, input_shape)
    unknown = [fqn for fqn in fqns if fqn not in layers]
    if unknown:
        raise ValueError(f"not Conv2d/Linear weights reached by the forward pass: {unknown}; "
                         f"known: {list(layers)}")
    selected = [layers[fqn] for fqn in dict.fromkeys(fqns)]  # de-duplicated, order kept
    numel = sum(layer.numel for layer in selected)
    nnz = sum(layer.nnz for layer in selected)
    return {
        "input_shape": [int(d) for d in input_shape],
        "layers": {layer.fqn: _layer_json(layer) for layer in selected},
        "totals": {
            "numel": numel,
            "nnz": nnz,
            "sparsity": (numel - nnz) / numel if numel else 0.0,
            "dense_macs": sum(layer.dense_macs for layer in selected),
            "sparse_macs": sum(layer.sparse_macs for layer in selected),
        },
        "all_layers_dense_macs": sum(layer.dense_macs for layer in layers.values()),
        "all_layers_sparse_macs": sum(layer.sparse_macs for layer in layers.values()),
    }


def _layer_json(layer: LayerMacs) -> dict[str, Any]:
    """JSON-able dict of one layer (lists instead of tuples, no FQN: it is the key)."""
    record = asdict(layer)
    record.pop("fqn")
    record["weight_shape"] = list(layer.weight_shape)
    return record
