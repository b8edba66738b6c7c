"""Command line: ``python -m benchmarks.zoo {build,ops,list}``.

  build --out DIR [--models a,b] [--sparsity 0.9] [--seed 0] [--cache DIR]
  ops --dir DIR [--models a,b] [--threads 1] [--strict]
  list

A bad option prints one ``zoo: error: ...`` line and exits with code 2. ``build`` exits 1 when a
model failed (skipped published models, e.g. without network, are not failures); ``ops --strict``
exits 1 when a file does not run or gives degenerate outputs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from benchmarks.zoo.common import DEFAULT_SPARSITY, ZooError, check_sparsity

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"zoo: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    """The parser of the three commands."""
    parser = OneLineParser(prog="python -m benchmarks.zoo", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="write the ONNX files and manifest.json")
    build.add_argument("--out", type=Path, required=True, help="output folder")
    build.add_argument("--models", help="comma-separated names (default: all)")
    build.add_argument("--sparsity", type=float, default=DEFAULT_SPARSITY,
                       help="fraction of every weight tensor set to zero (default 0.9)")
    build.add_argument("--seed", type=int, default=0, help="seed of the torch models")
    build.add_argument("--cache", type=Path, default=None,
                       help="download cache of the published packages "
                            "(default ~/.cache/featherdeploy/zoo)")
    ops = commands.add_parser("ops", help="op types and an ONNX Runtime check of a built zoo")
    ops.add_argument("--dir", type=Path, required=True, help="a folder written by build")
    ops.add_argument("--models", help="comma-separated names (default: all in the manifest)")
    ops.add_argument("--threads", type=int, default=1, help="ORT intra-op threads (default 1)")
    ops.add_argument("--strict", action="store_true", help="exit 1 on any problem")
    commands.add_parser("list", help="print the model names")
    return parser


def _names(value: str | None) -> list[str] | None:
    """A comma-separated list, or None."""
    return None if value is None else [n.strip() for n in value.split(",") if n.strip()]


def _run_build(args: argparse.Namespace) -> int:
    from benchmarks.zoo.build import build_zoo, select_models
    from benchmarks.zoo.published import default_cache_dir

    check_sparsity(args.sparsity)
    names = select_models(args.models)
    report = build_zoo(args.out, names, sparsity=args.sparsity, seed=args.seed,
                       cache_dir=args.cache or default_cache_dir())
    print(f"built {len(report.built)}, skipped {len(report.skipped)}, "
          f"failed {len(report.failed)} -> {args.out}")
    return EXIT_FAILED if report.failed else EXIT_OK


def _run_ops(args: argparse.Namespace) -> int:
    from benchmarks.zoo.ops_report import zoo_report

    if not args.dir.is_dir():
        raise ZooError(f"--dir {args.dir} is not a folder")
    if args.threads < 1:
        raise ZooError(f"--threads must be >= 1, got {args.threads}")
    problems = zoo_report(args.dir, threads=args.threads, names=_names(args.models))
    return EXIT_FAILED if problems and args.strict else EXIT_OK


def _run_list(_: argparse.Namespace) -> int:
    from benchmarks.zoo.build import all_model_names

    print("\n".join(all_model_names()))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; the exit code."""
    args = build_parser().parse_args(argv)
    runners = {"build": _run_build, "ops": _run_ops, "list": _run_list}
    try:
        return runners[args.command](args)
    except ZooError as exc:
        print(f"zoo: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
