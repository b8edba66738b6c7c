"""Command-line pieces shared by ``featherdeploy run|describe|bench``: the engine option
flags (which only fill in :class:`runtime.options.EngineOptions`) and the ``NAME=DxDxD`` /
``NAME=FILE`` input specs. Parsing only; errors are :class:`runtime.errors.InputError` (one
line, exit code 2 in every CLI).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from featherdeploy.runtime.errors import InputError
from featherdeploy.runtime.options import EngineOptions

__all__ = ["add_engine_option_arguments", "engine_option_overrides", "engine_options_from_args",
           "parse_shape_specs", "parse_input_specs"]


def add_engine_option_arguments(parser: argparse.ArgumentParser) -> None:
    """``--backend``, ``--strict``, ``--isa``, ``--no-jit`` (threads are each command's own)."""
    parser.add_argument("--backend", choices=("auto", "native", "onnxruntime"), default=None,
                        help="auto (default): ONNX Runtime for near-dense models, else native")
    parser.add_argument("--strict", action="store_true",
                        help="refuse models with operators the native engine lacks (no ONNX "
                             "Runtime fallback)")
    parser.add_argument("--isa", choices=("auto", "generic", "avx2", "avx512"), default=None,
                        help="kernel variant (default: the widest this CPU runs)")
    parser.add_argument("--no-jit", action="store_true", help="no generated conv code")


def engine_option_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The options the flags set (None: keep the FEATHERDEPLOY_* / built-in default)."""
    return {"backend": args.backend, "fallback": False if args.strict else None,
            "isa": args.isa, "jit": False if args.no_jit else None}


def engine_options_from_args(args: argparse.Namespace) -> EngineOptions:
    """EngineOptions from the environment defaults, then the flags."""
    return EngineOptions.from_env(**engine_option_overrides(args))


def parse_shape_specs(specs: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """``["images=1x3x640x640", "scale=1x2"]`` -> ``{"images": (1, 3, 640, 640), ...}``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        name, sep, dims = spec.partition("=")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) < 1:
            raise InputError(f"--shape must be NAME=DxDxD with positive dims, got {spec!r}")
        if name in shapes:
            raise InputError(f"--shape gives input {name!r} twice")
        shapes[name] = shape
    return shapes


def parse_input_specs(specs: Sequence[str], names: Sequence[str]) -> dict[str, str]:
    """``--input`` values -> ``{input name: file}``; a bare FILE is allowed only for a model
    with one input."""
    files: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            if len(names) != 1 or len(specs) != 1:
                raise InputError(f"the model has inputs {list(names)}: pass --input NAME=FILE "
                                 "for each")
            name, path = names[0], spec
        if name not in names:
            raise InputError(f"--input names {name!r}, but the model's inputs are {list(names)}")
        if name in files:
            raise InputError(f"--input gives input {name!r} twice")
        files[name] = path
    return files
