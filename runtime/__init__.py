"""featherdeploy runtime: torch-free sparse CPU inference of ONNX CNNs.

``Engine`` (and the native extension behind it) load lazily, so ``import
featherdeploy.runtime.macs`` or ``runtime.formats`` stays cheap: nothing heavy runs at import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Engine", "EngineOptions", "PlannerOptions", "OptionsError", "EngineError",
           "ModelLoadError", "UnsupportedOpError", "InputError", "native_isa"]

if TYPE_CHECKING:
    from featherdeploy.runtime.engine import Engine
    from featherdeploy.runtime.errors import (
        EngineError,
        InputError,
        ModelLoadError,
        UnsupportedOpError,
    )
    from featherdeploy.runtime.options import EngineOptions, OptionsError, PlannerOptions

_ERRORS = ("EngineError", "ModelLoadError", "UnsupportedOpError", "InputError")


def native_isa(isa: str = "auto") -> str:
    """Kernel variant the native code runs for ``isa`` on this CPU ("auto": the widest):
    "avx512", "avx2" or "generic"."""
    from featherdeploy.runtime import _native

    return _native.native_isa(isa)


def __getattr__(name: str) -> Any:
    if name == "Engine":
        from featherdeploy.runtime.engine import Engine

        return Engine
    if name in ("EngineOptions", "PlannerOptions", "OptionsError"):
        from featherdeploy.runtime import options

        return getattr(options, name)
    if name in _ERRORS:
        from featherdeploy.runtime import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'featherdeploy.runtime' has no attribute {name!r}")
