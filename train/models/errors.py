"""The one exception for bad model requests (unknown name, unknown or invalid option)."""

from __future__ import annotations

__all__ = ["ModelError"]


class ModelError(ValueError):
    """Bad model name or option; a ValueError so callers catching ValueError still work.

    CLIs map it to exit code 2.
    """
