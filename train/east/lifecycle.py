"""Apply and undo EAST's model transformations around Feather training (arXiv 2411.13545).

    build_model -> prepare_east_model (weight sharing, DyReLU) -> FeatherSparsifier wraps
    -> train -> FeatherSparsifier.finalize -> finalize_east_model -> ordinary model

``finalize_east_model`` materializes shared weights into plain per-block convs and swaps DyReLU
(which must have phased out to beta = 0) back to nn.ReLU, so the result has exactly the modules and
state_dict keys of the model ``build_model`` returns and exports to a plain ONNX graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from featherdeploy.train.east.dyrelu import DyReLUB, attach_dyrelu, remove_dyrelu
from featherdeploy.train.east.weight_sharing import (
    SharedConv2d,
    materialize_shared_weights,
    share_resnet_weights,
)

__all__ = ["EastModelChanges", "prepare_east_model", "finalize_east_model", "has_east_modules"]


@dataclass
class EastModelChanges:
    """Module names changed by prepare_east_model."""

    shared_convs: list[str] = field(default_factory=list)
    dyrelus: list[str] = field(default_factory=list)


def prepare_east_model(model: nn.Module, input_shape: tuple[int, int, int], *,
                       weight_sharing: bool, dyrelu: bool) -> EastModelChanges:
    """Share ResNet block weights and/or replace ReLUs by DyReLU-B, in place.

    Call before wrapping the model with Feather, so the shared convs are never parametrized
    themselves (they read their source's thresholded weight). Raises ValueError when the model
    does not allow the change.
    """
    changes = EastModelChanges()
    if weight_sharing:
        changes.shared_convs = share_resnet_weights(model)
    if dyrelu:
        changes.dyrelus = attach_dyrelu(model, input_shape)
    return changes


def finalize_east_model(model: nn.Module) -> nn.Module:
    """Materialize shared weights and remove DyReLU (after Feather's finalize); return model."""
    materialize_shared_weights(model)
    remove_dyrelu(model)
    return model


def has_east_modules(model: nn.Module) -> bool:
    """True while any SharedConv2d or DyReLUB is left in ``model``."""
    return any(isinstance(m, (SharedConv2d, DyReLUB)) for m in model.modules())
