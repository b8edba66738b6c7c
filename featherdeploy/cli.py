"""The ``featherdeploy`` command: one entry point for the three stages.

    featherdeploy train --config configs/default.yaml --name default
    featherdeploy compile runs/default --out artifacts/default
    featherdeploy run|describe|bench MODEL.onnx ...

Each subcommand hands the rest of its line to the stage's own CLI (the same code as
``python -m featherdeploy.<stage>``); ``featherdeploy SUBCOMMAND --help`` shows its options. A stage
is imported only when its subcommand runs, so ``run``, ``describe`` and ``bench`` work without
torch installed and never import it. Exit codes are the stage's; usage errors here exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["COMMANDS", "build_parser", "main"]

PROG = "featherdeploy"
EXIT_USAGE = 2
# Top-level modules of the `train` extra (pyproject.toml): train and compile import them.
TRAIN_EXTRA_MODULES = ("torch", "torchvision", "yaml", "tqdm")


@dataclass(frozen=True)
class Command:
    """Where a subcommand goes: ``module.main(argv, prog=...)``."""

    module: str
    help: str
    # The runtime CLI has its own run/describe/bench subparsers: it gets the word back.
    passes_name: bool = False


_RUNTIME_CLI = "featherdeploy.runtime.__main__"
COMMANDS: dict[str, Command] = {
    "train": Command("featherdeploy.train.__main__",
                     "Feather sparse training of a run (needs torch: the train extra)"),
    "compile": Command("featherdeploy.compile.__main__",
                       "a trained run -> model.onnx, model.sparse.onnx, weights.fdpack, report "
                       "(needs torch)"),
    "run": Command(_RUNTIME_CLI, "run a model on input arrays (.npy) with the sparse engine",
                   passes_name=True),
    "describe": Command(_RUNTIME_CLI, "what runs where: per node native kernel or ONNX Runtime",
                        passes_name=True),
    "bench": Command(_RUNTIME_CLI, "time the engine against ONNX Runtime dense",
                     passes_name=True),
}


def _version() -> str:
    from featherdeploy import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: it only names the subcommands (each stage parses its own options)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Sparse CNN training, ONNX compile and a native sparse CPU engine.",
        epilog=f"`{PROG} SUBCOMMAND --help` shows a subcommand's options.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    for name, command in COMMANDS.items():
        # add_help=False: `featherdeploy train --help` is the stage's help, not an empty one.
        sub.add_parser(name, help=command.help, add_help=False)
    return parser


def _stage_argv(name: str, rest: Sequence[str]) -> tuple[list[str], str]:
    """The stage CLI's argv and the program name its usage lines show."""
    if COMMANDS[name].passes_name:
        return [name, *rest], PROG  # the runtime's subparser adds " run" itself
    return list(rest), f"{PROG} {name}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    # Only the first word is ours (or top-level --help / --version); the rest is the stage's.
    head = args[:1]
    try:
        name = build_parser().parse_args(head).command
    except SystemExit as exc:  # --help, --version, or a usage error argparse has printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    stage_argv, prog = _stage_argv(name, args[1:])
    stage = importlib.import_module(COMMANDS[name].module)
    try:
        return int(stage.main(stage_argv, prog=prog))
    except ModuleNotFoundError as exc:
        if exc.name not in TRAIN_EXTRA_MODULES:
            raise
        # A runtime-only install: say what to install instead of a traceback.
        print(f"{PROG} {name}: error: needs {exc.name}, which is not installed "
              "(pip install 'featherdeploy[train]')", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
