"""The one exception type of the compile stage; the CLI maps it to exit code 2."""

from __future__ import annotations

__all__ = ["CompileError"]


class CompileError(ValueError):
    """Bad input or a failed check: the message says what is wrong and, where known, what to do."""
