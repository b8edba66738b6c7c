"""Dynamic ReLU (DyReLU-B) with linear phasing into plain ReLU (EAST, arXiv 2411.13545).

DyReLU-B (Chen et al., "Dynamic ReLU", ECCV 2020), channel-wise with k = 2 pieces and reduction 4:

    theta = 2 * sigmoid(fc2(relu(fc1(GAP(x))))) - 1            shape (B, C, 4)
    coefs = theta * [1, 1, 0.5, 0.5] + [1, 0, 0, 0]             = (a1, a2, b1, b2) per channel
    y     = max(a1 * x + b1, a2 * x + b2)

EAST phases DyReLU out during training: coefs <- beta * coefs + (1 - beta) * [1, 0, 0, 0] with beta
going linearly from 1 to 0 between two steps (default epochs E/4 and E/2 - 1, as the paper and the
authors' code: ``default_window``). At beta = 0 the
coefficients are exactly (1, 0, 0, 0), so y = max(x, 0) = ReLU(x); the module then calls F.relu
directly and its own parameters receive no gradient. ``remove_dyrelu`` swaps every DyReLU back to
the ``nn.ReLU`` it replaced, so the finalized model is the original network and exports to an
ordinary ONNX graph (no Sigmoid/Max/ReduceMean nodes).

The coefficient layers are stored as plain parameters used through ``F.linear`` rather than
``nn.Linear`` modules: they are not Conv2d/Linear layers, so ``train.prunable`` never prunes them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DyReLUB", "attach_dyrelu", "default_window", "dyrelu_beta", "set_dyrelu_beta",
           "remove_dyrelu"]

PIECES = 2  # k: max of two linear functions
REDUCTION = 4
COEF_SCALE = (1.0, 1.0, 0.5, 0.5)  # lambda for (a1, a2, b1, b2)
COEF_INIT = (1.0, 0.0, 0.0, 0.0)  # the ReLU point: a1 = 1, a2 = b1 = b2 = 0


class DyReLUB(nn.Module):
    """Channel-wise dynamic ReLU for (N, C, H, W) inputs; ``beta`` blends it into ReLU."""

    def __init__(self, channels: int, reduction: int = REDUCTION, inplace: bool = False) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be positive, got {channels}")
        hidden = max(channels // reduction, 1)
        self.channels = channels
        self.inplace = inplace  # of the nn.ReLU this module replaced, restored by remove_dyrelu
        self.fc1_weight = nn.Parameter(torch.empty(hidden, channels))
        self.fc1_bias = nn.Parameter(torch.empty(hidden))
        self.fc2_weight = nn.Parameter(torch.empty(2 * PIECES * channels, hidden))
        self.fc2_bias = nn.Parameter(torch.empty(2 * PIECES * channels))
        self.register_buffer("beta", torch.ones((), dtype=torch.float32))
        self.register_buffer("coef_scale", torch.tensor(COEF_SCALE), persistent=False)
        self.register_buffer("coef_init", torch.tensor(COEF_INIT), persistent=False)
        self._beta = 1.0  # mirrors the buffer without a device sync per forward
        self.register_load_state_dict_post_hook(lambda module, _keys: module._sync_beta())
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases, as for nn.Linear."""
        for weight, bias in ((self.fc1_weight, self.fc1_bias), (self.fc2_weight, self.fc2_bias)):
            bound = 1.0 / math.sqrt(weight.shape[1])
            nn.init.uniform_(weight, -bound, bound)
            nn.init.uniform_(bias, -bound, bound)

    def _sync_beta(self) -> None:
        self._beta = float(self.beta)

    def set_beta(self, beta: float) -> None:
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        self.beta.fill_(beta)
        self._beta = float(beta)

    def coefficients(self, x: Tensor) -> Tensor:
        """(a1, a2, b1, b2) per sample and channel, blended with the ReLU point: (B, C, 4)."""
        pooled = x.mean(dim=(2, 3))  # (B, C)
        hidden = F.relu(F.linear(pooled, self.fc1_weight, self.fc1_bias))  # (B, C / 4)
        logits = F.linear(hidden, self.fc2_weight, self.fc2_bias)  # (B, 4C)
        theta = (2.0 * torch.sigmoid(logits) - 1.0).view(x.shape[0], self.channels, 2 * PIECES)
        init = self.coef_init.to(theta.dtype)
        coefs = theta * self.coef_scale.to(theta.dtype) + init
        return self.beta.to(theta.dtype) * coefs + (1.0 - self.beta.to(theta.dtype)) * init

    def forward(self, x: Tensor) -> Tensor:
        if self._beta == 0.0:
            return F.relu(x)  # exactly ReLU: the coefficients are (1, 0, 0, 0)
        coefs = self.coefficients(x)[..., None, None]  # (B, C, 4, 1, 1)
        a1, a2, b1, b2 = coefs.unbind(dim=2)  # each (B, C, 1, 1)
        return torch.maximum(a1 * x + b1, a2 * x + b2)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, beta={self._beta:.4f}"


def default_window(epochs: float) -> tuple[float, float]:
    """(start, end) epochs of the phase-out: (E/4, E/2 - 1), EAST's default.

    The authors' code starts at half the first LR milestone (E/4) and ends one epoch before it
    (E/2 - 1), so the last epoch before the milestone already trains plain ReLU. For E <= 4 that
    window is empty (E/2 - 1 <= E/4); it then ends at 3E/8, halfway to E/2 (the same end, 1.5, as
    E = 5 gets from E/2 - 1).
    """
    start, end = epochs / 4, epochs / 2 - 1
    return (start, end) if end > start else (start, 3 * epochs / 8)


def dyrelu_beta(step: int, start_step: int, end_step: int) -> float:
    """beta(t) = 1 for t <= t_s, 1 - (t - t_s) / (t_e - t_s) in between, 0 for t >= t_e."""
    if end_step <= start_step:
        raise ValueError(f"need start_step < end_step, got {start_step}, {end_step}")
    if step <= start_step:
        return 1.0
    if step >= end_step:
        return 0.0
    return 1.0 - (step - start_step) / (end_step - start_step)


def _relu_input_shapes(model: nn.Module, input_shape: tuple[int, ...]
                       ) -> dict[str, list[torch.Size]]:
    """Input shape of every call of every nn.ReLU module in one eval forward pass on zeros."""
    calls: dict[str, list[torch.Size]] = {}
    relus = {name: m for name, m in model.named_modules() if type(m) is nn.ReLU}

    def recorder(name: str):
        def hook(_module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            calls.setdefault(name, []).append(inputs[0].shape)
        return hook

    handles = [m.register_forward_pre_hook(recorder(name)) for name, m in relus.items()]
    was_training = model.training
    try:
        model.eval()
        parameter = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=parameter.device, dtype=parameter.dtype))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return calls


def _replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent_name), attribute, new)


def attach_dyrelu(model: nn.Module, input_shape: tuple[int, int, int]) -> list[str]:
    """Replace every nn.ReLU module with a DyReLUB of its channel count; return their names.

    Each ReLU must be called exactly once per forward pass on an (N, C, H, W) tensor; a ReLU
    module reused at several places (torchvision ResNets) gets a ValueError saying so.
    """
    calls = _relu_input_shapes(model, tuple(input_shape))
    if not calls:
        raise ValueError("model has no nn.ReLU modules to replace with DyReLU")
    for name, shapes in calls.items():
        if len(shapes) != 1 or len(shapes[0]) != 4:
            raise ValueError(f"ReLU {name!r} is called {len(shapes)} time(s) with shapes "
                             f"{[tuple(s) for s in shapes]}; DyReLU needs one (N, C, H, W) call "
                             "per ReLU module")
    device = next(model.parameters()).device
    for name, shapes in calls.items():
        old = model.get_submodule(name)
        _replace_module(model, name, DyReLUB(shapes[0][1], inplace=old.inplace).to(device))
    return list(calls)


def set_dyrelu_beta(model: nn.Module, beta: float) -> None:
    """Set the phasing weight of every DyReLUB in ``model``."""
    for module in model.modules():
        if isinstance(module, DyReLUB):
            module.set_beta(beta)


def remove_dyrelu(model: nn.Module) -> list[str]:
    """Swap every DyReLUB (which must have beta == 0) back to nn.ReLU; return their names."""
    names = [name for name, m in model.named_modules() if isinstance(m, DyReLUB)]
    for name in names:
        module = model.get_submodule(name)
        if module._beta != 0.0:
            raise ValueError(f"DyReLU {name!r} still has beta = {module._beta}; the phasing must "
                             "reach 0 before the model is finalized")
        _replace_module(model, name, nn.ReLU(inplace=module.inplace))
    return names
