"""Errors of the runtime engine: one base class, one subclass per kind of bad input.

Every failure a user can cause (a missing or garbled model, an operator we do not run, an input of
the wrong rank / shape / dtype) raises one of these with a message naming the culprit; the CLI maps
them to exit code 2.
"""

from __future__ import annotations

__all__ = ["EngineError", "ModelLoadError", "UnsupportedOpError", "InputError",
           "DataDependentShapeError"]


class EngineError(Exception):
    """Base class of every error the engine raises on bad input."""


class ModelLoadError(EngineError):
    """The model file is missing, truncated, not ONNX, or internally inconsistent."""


class UnsupportedOpError(EngineError):
    """The model uses an operator (or an operator option) the engine does not implement."""


class InputError(EngineError):
    """The array passed to ``Engine.run`` has the wrong dtype, rank or shape."""


class DataDependentShapeError(ModelLoadError):
    """An input that decides a node's output shape (axes, pads, sizes, starts, ...) is computed
    at run time. Not a model error: the node's shapes come from ONNX Runtime while it runs, so
    the node and what depends on its shape run there (``runtime.specialize``)."""
