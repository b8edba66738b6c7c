"""Model registry: `build_model(name, in_channels=, num_classes=, image_size=, **kwargs)`.

Families (one file each): CIFAR ResNet-20 (`resnet_cifar.py`), CIFAR MobileNetV1
(`mobilenet_v1.py`), DenseNet-BC-40-24 (`densenet.py`) and torchvision ResNet-18/50
(`torchvision_resnet.py`). Every model uses only Conv2d, Linear, BatchNorm2d, nn.ReLU, pooling,
add and concat, ends in global average pooling (any image size works) and exports to ONNX opset 13.
Construction is deterministic given `torch.manual_seed`. Bad requests raise `ModelError` (a
ValueError) naming the valid choices.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from featherdeploy.train.models.errors import ModelError

if TYPE_CHECKING:  # importing the registry must not import torch (config validation uses it)
    from torch import nn

__all__ = ["MODEL_NAMES", "ModelError", "build_model", "model_kwargs"]

MODEL_NAMES: tuple[str, ...] = ("resnet20", "mobilenet_v1", "densenet40_24", "resnet18", "resnet50")

_REQUIRED = ("in_channels", "num_classes", "image_size")


def _factory(name: str) -> Callable[..., nn.Module]:
    """The constructor of a model family; imported lazily so unused families cost nothing."""
    if name == "resnet20":
        from featherdeploy.train.models.resnet_cifar import resnet20
        return resnet20
    if name == "mobilenet_v1":
        from featherdeploy.train.models.mobilenet_v1 import mobilenet_v1
        return mobilenet_v1
    if name == "densenet40_24":
        from featherdeploy.train.models.densenet import densenet40_24
        return densenet40_24
    if name == "resnet18":
        from featherdeploy.train.models.torchvision_resnet import resnet18
        return resnet18
    if name == "resnet50":
        from featherdeploy.train.models.torchvision_resnet import resnet50
        return resnet50
    raise ModelError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")


def model_kwargs(name: str) -> dict[str, Any]:
    """The optional keyword arguments of a model and their defaults, e.g. {'width': 1}."""
    parameters = inspect.signature(_factory(name)).parameters
    return {key: p.default for key, p in parameters.items() if key not in _REQUIRED}


def build_model(name: str, *, in_channels: int, num_classes: int, image_size: int,
                **kwargs: Any) -> nn.Module:
    """Build model `name` for (in_channels, image_size, image_size) inputs and num_classes logits.

    Raises ModelError (a ValueError) for an unknown name, an unknown keyword (naming the valid
    ones) or a non-positive size.
    """
    factory = _factory(name)
    unknown = sorted(set(kwargs) - set(model_kwargs(name)))
    if unknown:
        valid = ", ".join(model_kwargs(name)) or "none"
        raise ModelError(f"model {name!r} has no option(s) {', '.join(unknown)}; valid: {valid}")
    for label, value in (("in_channels", in_channels), ("num_classes", num_classes),
                         ("image_size", image_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelError(f"{label} must be a positive int, got {value!r}")
    return factory(in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                   **kwargs)
