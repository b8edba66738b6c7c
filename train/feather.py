"""Feather thresholding operators with a scaled straight-through estimator (arXiv 2310.02448).

Forward, for a weight tensor w and threshold tau >= 0:

    T_p(w) = sign(w) * (|w|^p - tau^p)^(1/p)   if |w| > tau
           = 0                                 otherwise

p = 3 is Feather's operator; p = 1 is soft thresholding (ST-3's operator); p -> infinity is hard
thresholding (w unchanged above tau). Backward is not the true derivative but a straight-through
estimator whose gradient for pruned weights is scaled by theta:

    dL/dw = dL/dT * m,   m = 1 where |w| > tau,  m = theta where |w| <= tau

theta = 0 is "no STE", theta = 1 is plain STE. The math runs in float32 even under autocast
(|w|^3 underflows in fp16) and clamps |w|^p - tau^p at 0 so no NaN is formed.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

__all__ = [
    "OPERATORS",
    "Operator",
    "FeatherWeight",
    "auto_theta",
    "feather_threshold",
    "threshold_values",
]

Operator = Literal["feather", "hard", "soft"]
OPERATORS: tuple[str, ...] = ("feather", "hard", "soft")
HIGH_SPARSITY_THETA = 0.5
HIGH_SPARSITY_FROM = 0.95


def auto_theta(final_sparsity: float) -> float:
    """theta = g(S): 0.5 when the final target S >= 0.95, else 1.0.

    The paper states S >= 95%; the authors' code uses a strict S > 95%. We follow the paper.
    """
    return HIGH_SPARSITY_THETA if final_sparsity >= HIGH_SPARSITY_FROM else 1.0


def threshold_values(w: Tensor, tau: Tensor, operator: str = "feather", p: float = 3.0) -> Tensor:
    """T_p(w) in float32 (no autograd trickery): the values a finalized model stores."""
    w32 = w.float()
    magnitude = w32.abs()
    tau32 = tau.float()
    keep = magnitude > tau32
    if operator == "hard":
        shrunk = w32
    elif operator == "soft":
        shrunk = w32 - torch.sign(w32) * tau32
    elif operator == "feather":
        gap = (magnitude.pow(p) - tau32.pow(p)).clamp_min(0.0)
        shrunk = torch.sign(w32) * gap.pow(1.0 / p)
    else:
        raise ValueError(f"unknown operator {operator!r}; choose from {OPERATORS}")
    return torch.where(keep, shrunk, torch.zeros((), dtype=w32.dtype, device=w32.device))


class _ThresholdSTE(torch.autograd.Function):
    """T_p forward, theta-scaled straight-through backward (see module docstring)."""

    @staticmethod
    def forward(ctx, w: Tensor, tau: Tensor, operator: str, p: float, theta: float) -> Tensor:
        out = threshold_values(w, tau, operator, p).to(w.dtype)
        ctx.save_for_backward(w.abs() > tau.to(w.dtype))
        ctx.theta = theta
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (keep,) = ctx.saved_tensors
        if ctx.theta == 1.0:
            return grad_out, None, None, None, None
        scale = torch.where(keep, 1.0, ctx.theta).to(grad_out.dtype)
        return grad_out * scale, None, None, None, None


def feather_threshold(w: Tensor, tau: Tensor, *, operator: str = "feather", p: float = 3.0,
                      theta: float = 1.0) -> Tensor:
    """Differentiable T_p(w) with the theta-scaled STE; the identity while tau == 0."""
    if operator not in OPERATORS:
        raise ValueError(f"unknown operator {operator!r}; choose from {OPERATORS}")
    if not float(tau) > 0.0:
        return w
    return _ThresholdSTE.apply(w, tau, operator, p, theta)


class FeatherWeight(nn.Module):
    """A ``torch.nn.utils.parametrize`` parametrization: weight -> T_p(weight; tau).

    ``tau`` is a float32 buffer set by the backbone before every forward pass; it is saved in
    checkpoints so a resumed run continues with the same threshold.
    """

    def __init__(self, operator: str = "feather", p: float = 3.0, theta: float = 1.0) -> None:
        super().__init__()
        if operator not in OPERATORS:
            raise ValueError(f"unknown operator {operator!r}; choose from {OPERATORS}")
        self.operator = operator
        self.p = p
        self.theta = theta
        self.register_buffer("tau", torch.zeros((), dtype=torch.float32))
        self._active = False  # mirrors tau > 0 without a device sync on every forward
        self.register_load_state_dict_post_hook(lambda module, _keys: module._sync_active())

    def _sync_active(self) -> None:
        self._active = bool(self.tau > 0)

    def set_tau(self, tau: Tensor | float) -> None:
        value = torch.as_tensor(tau, dtype=torch.float32, device=self.tau.device)
        self.tau.copy_(value)
        self._active = bool(value > 0)

    def forward(self, w: Tensor) -> Tensor:
        if not self._active:
            return w
        return _ThresholdSTE.apply(w, self.tau, self.operator, self.p, self.theta)

    def extra_repr(self) -> str:
        return f"operator={self.operator}, p={self.p}, theta={self.theta}"
