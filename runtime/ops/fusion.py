"""What graph rewrites (``runtime/passes/``) attach to the nodes they fuse, read by the op
emitters: private attribute keys and the fused-activation description.

A fused activation is a kind plus parameters, the way ONNX Runtime's FusedConv carries an
activation name and its parameters; ``runtime/ops/activation.py`` says which ONNX operators map
to which kind, and the native side implements each kind once (activation.h).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["ACT_KEY", "RESIDUAL_KEY", "SKIP_EMPTY_KEY", "KERNEL_KEY", "GATE_KEY",
           "SHUFFLE_KEY", "FusedActivation", "CLAMP_NONE"]

ACT_KEY = "_fd_activation"          # FusedActivation applied after bias (+ residual)
RESIDUAL_KEY = "_fd_residual"       # tensor added in the conv's epilogue
SKIP_EMPTY_KEY = "_fd_skip_empty_channels"  # output channels without weights are not computed
KERNEL_KEY = "_fd_kernel"           # "csr" / "bsr": forces a conv kernel (tests, benchmarks)
GATE_KEY = "_fd_input_gate"         # (1, C, 1, 1) tensor scaling the conv's input channels
SHUFFLE_KEY = "_fd_channel_shuffle"  # G: a channel Concat's output shuffled in G groups


@dataclass(frozen=True)
class FusedActivation:
    """One activation: ``kind`` names a native kind (runtime._native.ACTIVATION_KINDS).
    Clip uses ``lo`` / ``hi``; LeakyRelu and Elu ``alpha``; HardSigmoid ``alpha`` and
    ``beta``; PRelu one slope per channel."""

    kind: str
    lo: float = -math.inf
    hi: float = math.inf
    alpha: float = 0.0
    beta: float = 0.0
    slopes: tuple[float, ...] = field(default=())

    @property
    def is_clamp(self) -> bool:
        return self.kind in ("none", "clip")

    def to_native(self, channels: int) -> object:
        """The native ActivationSpec (slopes for ``channels`` channels)."""
        from featherdeploy.runtime import _native

        spec = _native.ActivationSpec()
        spec.kind = int(_native.ACTIVATION_KINDS[self.kind])
        spec.lo, spec.hi, spec.alpha, spec.beta = self.lo, self.hi, self.alpha, self.beta
        if self.slopes:
            slopes = np.asarray(self.slopes, np.float32)
            spec.slopes = np.ascontiguousarray(np.broadcast_to(slopes, (channels,)))
        return spec


CLAMP_NONE = FusedActivation("none")
