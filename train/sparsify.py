"""The sparse-training lifecycle: wrap -> update thresholds each step -> finalize.

``FeatherSparsifier`` registers a :class:`train.feather.FeatherWeight` parametrization on every
prunable weight (``train.prunable`` decides which), sets the thresholds chosen by a backbone
(``train.backbones``) before every forward pass, and finally writes T_p(w) into plain weights and
removes every parametrization, leaving an ordinary torch model with exact zeros.

Allocation: ``allocation="backbone"`` lets the backbone choose tau (global, FLOPs-biased or
uniform); ``allocation="erk"`` gives each layer its own threshold at its ERK share of the target
(``train.east.erk``, exact integer counts). ``regrow`` implements EAST's gradient regrowth on top of
the thresholds (``train.east.cyclic`` explains the mapping).

Weight sharing (``train.east.weight_sharing``): a shared conv reuses its source's weight, so the
model has N = U + H weights of which only U are unique (H: the weights its shared convs reuse).
Every sparsity k passed to ``update`` / ``regrow`` is the sparsity of the unshared model, and the
unique weights keep its nonzero count, as EAST's code does (``adjusted_density = total_params *
density / non_shared_params``): U - P_u = N - P(N, k) with P(N, k) = floor((N - 1) k) + 1, the
pruned count of an N-weight model. ``unique_k`` maps k to the sparsity of the unique weights that
prunes exactly P_u = max(P(N, k) - H, 0) of them. Without sharing it is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.utils import parametrize

from featherdeploy.train.backbones import compute_thresholds
from featherdeploy.train.east.cyclic import regrow_layer
from featherdeploy.train.east.erk import erk_pruned_counts, erk_thresholds, pruned_count
from featherdeploy.train.east.weight_sharing import SharedConv2d
from featherdeploy.train.feather import FeatherWeight, auto_theta
from featherdeploy.train.prunable import prunable_modules, weight_fqn

__all__ = ["ALLOCATIONS", "SparsityConfig", "FeatherSparsifier"]

ALLOCATIONS: tuple[str, ...] = ("backbone", "erk")


@dataclass(frozen=True)
class SparsityConfig:
    """What and how to prune; ``theta=None`` means the automatic g(S)."""

    target: float
    backbone: str = "global"
    alpha: float = 1.0
    operator: str = "feather"
    p: float = 3.0
    theta: float | None = None
    keep_first_conv_dense: bool = False
    allocation: str = "backbone"

    def __post_init__(self) -> None:
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"unknown allocation {self.allocation!r}; choose from {ALLOCATIONS}")

    @property
    def resolved_theta(self) -> float:
        return auto_theta(self.target) if self.theta is None else self.theta


class FeatherSparsifier:
    """Owns the parametrizations of one model (pass the bare model, not a DDP wrapper)."""

    def __init__(self, model: nn.Module, config: SparsityConfig) -> None:
        self.model = model
        self.config = config
        self.modules = prunable_modules(model, keep_first_conv_dense=config.keep_first_conv_dense)
        if not self.modules:
            raise ValueError("model has no prunable (Conv2d/Linear) layers")
        self.current_k = 0.0
        self.unique_numel = sum(m.weight.numel() for m in self.modules.values())
        # Weights that shared convs reuse from a prunable source (each copy counts once).
        sources = {id(m) for m in self.modules.values()}
        self.shared_numel = sum(m.source.weight.numel() for m in model.modules()
                                if isinstance(m, SharedConv2d) and id(m.source) in sources)
        for module in self.modules.values():
            parametrize.register_parametrization(
                module, "weight",
                FeatherWeight(config.operator, config.p, config.resolved_theta))

    @property
    def fqns(self) -> list[str]:
        """Weight FQNs of the prunable layers, as in the unwrapped model."""
        return [weight_fqn(name) for name in self.modules]

    def _parametrization(self, module: nn.Module) -> FeatherWeight:
        return module.parametrizations.weight[0]

    def latent_weights(self) -> dict[str, Tensor]:
        """Weight FQN -> dense latent weight (what the optimizer updates)."""
        return {weight_fqn(name): module.parametrizations.weight.original
                for name, module in self.modules.items()}

    def thresholds(self) -> dict[str, float]:
        return {weight_fqn(name): float(self._parametrization(m).tau)
                for name, m in self.modules.items()}

    @property
    def model_numel(self) -> int:
        """N: prunable weights of the unshared model (unique + reused by shared convs)."""
        return self.unique_numel + self.shared_numel

    def unique_k(self, k: float) -> float:
        """Sparsity of the unique weights that keeps the unshared model's nonzeros at k.

        Prunes P_u = max(P(N, k) - H, 0) unique weights: (P_u - 1/2) / (U - 1) puts the
        linear-quantile rule (global backbone and ERK counts) halfway between the P_u-th and the
        (P_u + 1)-th smallest magnitude, so exactly P_u are pruned (no rounding at the boundary).
        """
        if self.shared_numel == 0 or k <= 0.0:
            return k
        pruned = pruned_count(self.model_numel, k) - self.shared_numel
        if pruned <= 0:
            return 0.0
        return min((pruned - 0.5) / max(self.unique_numel - 1, 1), 1.0)

    @torch.no_grad()
    def local_thresholds(self, k: float) -> Tensor:
        """This process's taus for sparsity k (of the unshared model), in ``modules`` order."""
        unique_k = self.unique_k(k)
        if self.config.allocation == "erk":
            taus = erk_thresholds(self.latent_weights(), unique_k)
        else:
            taus = compute_thresholds(self.config.backbone, self.latent_weights(), unique_k,
                                      self.config.alpha)
        return torch.stack([taus[weight_fqn(name)].float() for name in self.modules])

    @torch.no_grad()
    def update(self, k: float) -> None:
        """Recompute every tau for sparsity ratio k (same value on every DDP rank)."""
        self.current_k = k
        stacked = self.local_thresholds(k)
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(stacked, src=0)  # rank 0's thresholds are everyone's
        for tau, module in zip(stacked, self.modules.values(), strict=True):
            self._parametrization(module).set_tau(tau)

    @torch.no_grad()
    def regrow(self, k: float, death_fraction: float = 0.0) -> int:
        """EAST regrowth before a step at sparsity k (ERK counts); returns the weights lifted.

        Per layer with a' = weights kept at k and a = weights active now: regrow
        max(a' - a, 0) + round(death_fraction * a') pruned weights with the largest |grad|
        (``train.east.cyclic.regrow_layer``); the next ``update(k)`` prunes the weakest.
        Deterministic given weights and gradients, so every DDP rank lifts the same weights.
        Regrows nothing when any gradient is not finite (a step the GradScaler skipped).
        """
        latents = self.latent_weights()
        if any(w.grad is not None and not bool(torch.isfinite(w.grad).all())
               for w in latents.values()):
            return 0
        pruned = erk_pruned_counts({fqn: tuple(w.shape) for fqn, w in latents.items()},
                                   self.unique_k(k))
        lifted = 0
        for name, module in self.modules.items():
            latent = latents[weight_fqn(name)]
            tau = self._parametrization(module).tau
            keep = latent.numel() - pruned[weight_fqn(name)]
            active = int((latent.abs() > tau).sum()) if tau > 0 else latent.numel()
            grow = max(keep - active, 0) + round(death_fraction * keep)
            lifted += regrow_layer(latent, latent.grad, tau, keep, grow)
        return lifted

    @torch.no_grad()
    def counts(self) -> tuple[int, int]:
        """(zeros, total) of the effective (thresholded) prunable weights."""
        zeros = total = 0
        for module in self.modules.values():
            latent = module.parametrizations.weight.original
            tau = self._parametrization(module).tau
            pruned = latent.abs() <= tau if tau > 0 else latent == 0
            zeros += int(pruned.sum())
            total += latent.numel()
        return zeros, total

    def sparsity(self) -> float:
        zeros, total = self.counts()
        return zeros / total

    @torch.no_grad()
    def finalize(self) -> nn.Module:
        """Write T_p(w) into the weights, remove every parametrization; return the plain model."""
        for module in self.modules.values():
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        self.modules = {}
        return self.model
