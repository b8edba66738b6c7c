"""The one exception the bench / frontier / ablation stage raises for bad input.

CLIs catch it and exit with code 2 and a one-line message (house rule: no deep tracebacks for
user mistakes such as a missing artifact directory or a malformed sweep file).
"""

from __future__ import annotations

__all__ = ["BenchInputError"]


class BenchInputError(Exception):
    """Bad input to a benchmark or report: missing files, unknown keys, invalid values."""
