"""featherdeploy: Feather sparse training (``featherdeploy.train``), ONNX compile
(``featherdeploy.compile``) and the torch-free sparse CPU engine (``featherdeploy.runtime``).

The stage packages live in the repository's top-level folders ``train/``, ``compile/`` and
``runtime/``. An installed wheel has them under ``featherdeploy/`` (setup.py maps them there).
A source checkout on ``PYTHONPATH`` (the tests, ``.ci/run``) has no such copies, so this module
adds the repository root to the package's search path: ``featherdeploy.runtime`` is then the
checkout's ``runtime/`` folder. Importing this package loads nothing heavy.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

__all__ = ["__version__"]

# A file only a source checkout has at that place (the wheel ships the compiled extension only).
_CHECKOUT_MARKER = ("runtime", "native", "module.cpp")


def _version() -> str:
    try:
        return metadata.version("featherdeploy")
    except metadata.PackageNotFoundError:  # a checkout that was never pip-installed
        return "0+unknown"


def _checkout_root() -> Path | None:
    """The repository root when this file is the checkout's ``featherdeploy/__init__.py``."""
    root = Path(__file__).resolve().parent.parent
    return root if root.joinpath(*_CHECKOUT_MARKER).is_file() else None


def _add_checkout_stages(path: list[str]) -> None:
    # Appended, not prepended: featherdeploy/'s own modules (cli) win over same-named folders.
    root = _checkout_root()
    if root is not None and str(root) not in path:
        path.append(str(root))


__version__ = _version()
_add_checkout_stages(__path__)
