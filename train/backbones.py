"""Backbones: how the pruning thresholds tau are chosen each iteration (Feather, 2310.02448).

- ``global``  (Feather-Global): one tau for every prunable weight, the linear-interpolated
  quantile of |w| over all prunable weights at ratio k.
- ``flops``   (FLOPs-biased global, paper A.6 after ST-3's "sigma" variant): magnitudes are
  scaled by a layer constant c_l = (sum of the weight tensor's dims)^(alpha/2) before the
  global quantile;
  tau_l = tau / c_l. Layers with small c_l (early convs, most MACs per weight) are pruned harder.
- ``uniform`` (GMP baseline): every layer pruned to the same ratio k with its own quantile.

Pruned means |w| <= tau_l, so the achieved sparsity equals k up to ties.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

__all__ = [
    "BACKBONES",
    "layer_constant",
    "linear_quantile",
    "compute_thresholds",
    "global_thresholds",
    "flops_biased_thresholds",
    "uniform_thresholds",
]

BACKBONES: tuple[str, ...] = ("global", "flops", "uniform")


def linear_quantile(values: Tensor, k: float) -> Tensor:
    """Linear-interpolated quantile of a flat tensor at ratio k (float32 scalar).

    With s the ascending sort of the N values and m = (N - 1) k:
        q = s[floor m] + (s[ceil m] - s[floor m]) * (m - floor m)
    Uses kthvalue rather than torch.quantile, which refuses more than 16M elements.
    """
    flat = values.reshape(-1).float()
    n = flat.numel()
    if n == 0:
        raise ValueError("cannot take a quantile of an empty tensor")
    if not 0.0 <= k <= 1.0:
        raise ValueError(f"quantile ratio must be in [0, 1], got {k}")
    m = (n - 1) * k
    lo, hi = math.floor(m), math.ceil(m)
    s_lo = torch.kthvalue(flat, lo + 1).values
    s_hi = s_lo if hi == lo else torch.kthvalue(flat, hi + 1).values
    return s_lo + (s_hi - s_lo) * (m - lo)


def layer_constant(shape: Sequence[int], alpha: float = 1.0) -> float:
    """c_l = (sum of the weight dims)^(alpha/2): out+in+kh+kw (conv), out+in (linear)."""
    return float(sum(shape)) ** (alpha / 2.0)


def _zero_thresholds(weights: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {name: torch.zeros((), dtype=torch.float32, device=w.device)
            for name, w in weights.items()}


def global_thresholds(weights: Mapping[str, Tensor], k: float) -> dict[str, Tensor]:
    """One tau for all layers: the k-quantile of |w| over every prunable weight."""
    if k <= 0.0:
        return _zero_thresholds(weights)
    magnitudes = torch.cat([w.detach().abs().reshape(-1).float() for w in weights.values()])
    tau = linear_quantile(magnitudes, k)
    return {name: tau for name in weights}


def flops_biased_thresholds(weights: Mapping[str, Tensor], k: float, alpha: float = 1.0
                            ) -> dict[str, Tensor]:
    """FLOPs-biased global: tau = quantile(|w| * c_l, k), tau_l = tau / c_l."""
    if k <= 0.0:
        return _zero_thresholds(weights)
    constants = {name: layer_constant(w.shape, alpha) for name, w in weights.items()}
    scores = torch.cat([w.detach().abs().reshape(-1).float() * constants[name]
                        for name, w in weights.items()])
    tau = linear_quantile(scores, k)
    return {name: tau / constants[name] for name in weights}


def uniform_thresholds(weights: Mapping[str, Tensor], k: float) -> dict[str, Tensor]:
    """Layer-wise GMP: each layer's own k-quantile of |w|."""
    if k <= 0.0:
        return _zero_thresholds(weights)
    return {name: linear_quantile(w.detach().abs(), k) for name, w in weights.items()}


def compute_thresholds(backbone: str, weights: Mapping[str, Tensor], k: float,
                       alpha: float = 1.0) -> dict[str, Tensor]:
    """Dispatch to the named backbone; ``weights`` maps weight FQN -> latent dense weight."""
    if not weights:
        raise ValueError("no prunable weights")
    if backbone == "global":
        return global_thresholds(weights, k)
    if backbone == "flops":
        return flops_biased_thresholds(weights, k, alpha)
    if backbone == "uniform":
        return uniform_thresholds(weights, k)
    raise ValueError(f"unknown backbone {backbone!r}; choose from {BACKBONES}")
