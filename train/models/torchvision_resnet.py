"""torchvision ResNet-18/50 (He et al., 2016), adapted to the dataset's channels and image size.

`weights=None` (trained from scratch). If the input has other than 3 channels, conv1 is replaced by
a conv of the same shape on `in_channels`. For small inputs (CIFAR / Fashion-MNIST,
`image_size < 64`) the default `small_input=True` swaps the 7x7 stride-2 stem and the max-pool for a
3x3 stride-1 stem and no pooling, the common CIFAR adaptation, so 28-32 px images are not shrunk to
1x1 before the last stage.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision.models import ResNet
from torchvision.models import resnet18 as tv_resnet18
from torchvision.models import resnet50 as tv_resnet50

from featherdeploy.train.models.errors import ModelError

__all__ = ["SMALL_INPUT_LIMIT", "resnet18", "resnet50"]

SMALL_INPUT_LIMIT = 64  # below this image size the CIFAR-style stem is the default
STEM_CHANNELS = 64


def _build(factory: Callable[..., ResNet], in_channels: int, num_classes: int, image_size: int,
           small_input: bool | None) -> ResNet:
    """Build a torchvision ResNet and adapt its stem to the input."""
    if small_input is None:
        small_input = image_size < SMALL_INPUT_LIMIT
    if not isinstance(small_input, bool):
        raise ModelError(f"small_input must be a bool, got {small_input!r}")
    model = factory(weights=None, num_classes=num_classes)
    if small_input:
        model.conv1 = _kaiming_conv(in_channels, kernel=3, stride=1, padding=1)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = _kaiming_conv(in_channels, kernel=7, stride=2, padding=3)
    return model


def _kaiming_conv(in_channels: int, kernel: int, stride: int, padding: int) -> nn.Conv2d:
    """A bias-free stem conv with torchvision's init (kaiming normal, fan_out, ReLU)."""
    conv = nn.Conv2d(in_channels, STEM_CHANNELS, kernel, stride, padding, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def resnet18(*, in_channels: int, num_classes: int, image_size: int,
             small_input: bool | None = None) -> ResNet:
    """torchvision ResNet-18 from scratch; see the module docstring for `small_input`."""
    return _build(tv_resnet18, in_channels, num_classes, image_size, small_input)


def resnet50(*, in_channels: int, num_classes: int, image_size: int,
             small_input: bool | None = None) -> ResNet:
    """torchvision ResNet-50 from scratch; see the module docstring for `small_input`."""
    return _build(tv_resnet50, in_channels, num_classes, image_size, small_input)
