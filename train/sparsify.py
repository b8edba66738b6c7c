"""The sparse-training lifecycle: wrap -> update thresholds each step -> finalize.

``FeatherSparsifier`` registers a :class:`train.feather.FeatherWeight` parametrization on every
prunable weight (``train.prunable`` decides which), sets the thresholds chosen by a backbone
(``train.backbones``) before every forward pass, and finally writes T_p(w) into plain weights and
removes every parametrization, leaving an ordinary torch model with exact zeros.

Allocation: ``allocation="backbone"`` lets the backbone choose tau (global, FLOPs-biased or
uniform); ``allocation="erk"`` gives each layer its own threshold at its ERK share of the target
(``train.east.erk``, exact integer counts). ``regrow`` implements EAST's gradient regrowth on top of
the thresholds (``train.east.cyclic`` explains the mapping).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.utils import parametrize

from train.backbones import compute_thresholds
from train.east.cyclic import regrow_layer
from train.east.erk import erk_pruned_counts, erk_thresholds
from train.feather import FeatherWeight, auto_theta
from train.prunable import prunable_modules, weight_fqn

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

    @torch.no_grad()
    def update(self, k: float) -> None:
        """Recompute every tau for sparsity ratio k (same value on every DDP rank)."""
        self.current_k = k
        if self.config.allocation == "erk":
            taus = erk_thresholds(self.latent_weights(), k)
        else:
            taus = compute_thresholds(self.config.backbone, self.latent_weights(), k,
                                      self.config.alpha)
        stacked = torch.stack([taus[weight_fqn(name)].float() for name in self.modules])
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
        """
        latents = self.latent_weights()
        pruned = erk_pruned_counts({fqn: tuple(w.shape) for fqn, w in latents.items()}, k)
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
