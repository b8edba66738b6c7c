"""The operators the engine knows, one module per op family (see ``registry``)."""

from featherdeploy.runtime.ops.registry import (
    OpContext,
    OpDef,
    get_op,
    known_ops,
    native_ops,
    register,
)

__all__ = ["OpContext", "OpDef", "get_op", "known_ops", "native_ops", "register"]
