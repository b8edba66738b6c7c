"""ERK per-layer density allocation (Evci et al., "Rigging the Lottery", 2020; used by EAST).

Erdos-Renyi-Kernel gives each prunable layer l a density proportional to

    raw_l = sum(shape_l) / prod(shape_l)      (conv: (out + in + kh + kw) / (out * in * kh * kw))

scaled by one factor eps so that the layers together keep the global density D:

    sum_l n_l * min(1, eps * raw_l) = D * N        (n_l = prod(shape_l), N = sum_l n_l)

Layers whose eps * raw_l would exceed 1 are clipped to density 1 and the weights that clipping
removes are redistributed over the other layers by solving for eps again. Clipping a layer only
raises eps, so every layer that exceeds 1 once stays clipped and they can be clipped together.

Exact counts. Feather's global backbone prunes floor((N - 1) k) + 1 weights at sparsity k > 0
(the linear-quantile rule of ``train.backbones``). ERK keeps that total: the per-layer ideal pruned
counts n_l (1 - d_l) are rounded by largest remainder so they sum to exactly that number, and each
layer's threshold is the magnitude of its count-th smallest weight (``kthvalue``), so exactly that
many weights satisfy |w| <= tau_l, up to ties.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

__all__ = [
    "erk_raw_density",
    "erk_densities",
    "pruned_count",
    "apportion_counts",
    "erk_pruned_counts",
    "count_threshold",
    "erk_thresholds",
]


def erk_raw_density(shape: Sequence[int]) -> float:
    """raw_l = sum(shape) / prod(shape): thin layers (few weights per dimension) stay denser."""
    numel = math.prod(int(d) for d in shape)
    if numel <= 0:
        raise ValueError(f"empty weight shape {tuple(shape)}")
    return sum(int(d) for d in shape) / numel


def erk_densities(shapes: Mapping[str, Sequence[int]], density: float) -> dict[str, float]:
    """Per-layer ERK densities d_l = min(1, eps * raw_l) keeping the global ``density``."""
    if not shapes:
        raise ValueError("no layers to allocate")
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    numels = {name: math.prod(int(d) for d in shape) for name, shape in shapes.items()}
    raws = {name: erk_raw_density(shape) for name, shape in shapes.items()}
    budget_total = density * sum(numels.values())
    dense: set[str] = set()
    while True:
        free = [name for name in shapes if name not in dense]
        if not free:
            return {name: 1.0 for name in shapes}
        budget = budget_total - sum(numels[name] for name in dense)
        eps = budget / sum(numels[name] * raws[name] for name in free)
        over = {name for name in free if eps * raws[name] > 1.0}
        if not over:
            break
        dense |= over
    return {name: 1.0 if name in dense else eps * raws[name] for name in shapes}


def pruned_count(numel: int, k: float) -> int:
    """Weights pruned at sparsity k by the linear-quantile rule: floor((N-1)k)+1, 0 if k <= 0."""
    if k <= 0.0:
        return 0
    return min(math.floor((numel - 1) * k) + 1, numel)


def apportion_counts(ideal: Mapping[str, float], capacity: Mapping[str, int],
                     total: int) -> dict[str, int]:
    """Round the real ``ideal`` counts to integers in [0, capacity] summing to ``total``.

    Largest remainder: floor every ideal, then add the missing units to the layers with the
    largest fractional parts (or take surplus units from the smallest), cycling if needed.
    """
    if not 0 <= total <= sum(capacity.values()):
        raise ValueError(f"cannot place {total} pruned weights in {sum(capacity.values())}")
    counts = {name: min(max(math.floor(value), 0), capacity[name])
              for name, value in ideal.items()}
    position = {name: index for index, name in enumerate(ideal)}
    by_remainder = sorted(ideal, key=lambda name: (math.floor(ideal[name]) - ideal[name],
                                                   position[name]))
    missing = total - sum(counts.values())
    step = 1 if missing > 0 else -1
    order = by_remainder if missing > 0 else by_remainder[::-1]
    while missing != 0:
        for name in order:
            if missing == 0:
                break
            if 0 <= counts[name] + step <= capacity[name]:
                counts[name] += step
                missing -= step
    return counts


def erk_pruned_counts(shapes: Mapping[str, Sequence[int]], k: float) -> dict[str, int]:
    """Per-layer pruned counts at global sparsity k: ERK densities, exact global total."""
    numels = {name: math.prod(int(d) for d in shape) for name, shape in shapes.items()}
    total = pruned_count(sum(numels.values()), k)
    if total == 0:
        return {name: 0 for name in shapes}
    densities = erk_densities(shapes, 1.0 - k)
    ideal = {name: numels[name] * (1.0 - densities[name]) for name in shapes}
    return apportion_counts(ideal, numels, total)


def count_threshold(weight: Tensor, count: int) -> Tensor:
    """tau such that exactly ``count`` entries have |w| <= tau (up to ties); 0 when count is 0."""
    flat = weight.detach().abs().reshape(-1).float()
    if count <= 0:
        return torch.zeros((), dtype=torch.float32, device=flat.device)
    if count > flat.numel():
        raise ValueError(f"cannot prune {count} of {flat.numel()} weights")
    return torch.kthvalue(flat, count).values


def erk_thresholds(weights: Mapping[str, Tensor], k: float) -> dict[str, Tensor]:
    """Per-layer tau_l: each layer pruned to its ERK share of global sparsity k (exact count)."""
    if not weights:
        raise ValueError("no prunable weights")
    counts = erk_pruned_counts({name: tuple(w.shape) for name, w in weights.items()}, k)
    return {name: count_threshold(w, counts[name]) for name, w in weights.items()}
