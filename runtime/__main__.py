"""Command line of the runtime: ``python -m runtime run|bench``.

    python -m runtime run MODEL.onnx --input x.npy --output y.npy [--threads T]
    python -m runtime bench MODEL.onnx [--batch 1,32] [--threads 1,2] [--json FILE]

Parsing only; the work lives in :class:`runtime.Engine` and :mod:`runtime.bench` (imported when its
subcommand runs). Bad input (missing files, unsupported models, wrong input arrays) prints one
line to stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main", "run_command"]

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree; ``bench`` options come from runtime.bench when it is importable."""
    parser = argparse.ArgumentParser(prog="python -m runtime",
                                     description="featherdeploy sparse CPU inference engine")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a model on one input array (.npy)")
    run.add_argument("model", help="ONNX model (dense zeros or sparse initializers)")
    run.add_argument("--input", required=True, help="input array, float32 .npy")
    run.add_argument("--output", required=True, help="where to write the output .npy")
    run.add_argument("--threads", type=int, default=None, help="worker threads (default: all)")
    run.add_argument("--backend", choices=("auto", "native", "onnxruntime"), default=None,
                     help="auto (default): ONNX Runtime for near-dense models, else native")
    bench = sub.add_parser("bench", help="time the engine against ONNX Runtime dense")
    try:
        from runtime.bench import add_bench_arguments
    except ImportError as exc:  # keep `run` usable if the benchmark module is broken
        bench.set_defaults(bench_unavailable=str(exc))
        bench.add_argument("rest", nargs=argparse.REMAINDER)
    else:
        add_bench_arguments(bench)
    return parser


def run_command(args: argparse.Namespace) -> int:
    """`run`: load, infer, write the output atomically."""
    import numpy as np

    from runtime.atomic import atomic_write_bytes
    from runtime.engine import Engine
    from runtime.errors import InputError

    try:
        x = np.load(args.input, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read input array {args.input!r}: {exc}") from None
    y = Engine(args.model, threads=args.threads, backend=args.backend).run(x)
    atomic_write_bytes(args.output, _npy_bytes(y))
    print(f"wrote {args.output}: shape {tuple(y.shape)} float32")
    return 0


def _npy_bytes(array) -> bytes:
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    from runtime.errors import EngineError

    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return run_command(args)
        if getattr(args, "bench_unavailable", None):
            print(f"error: bench is unavailable ({args.bench_unavailable})", file=sys.stderr)
            return EXIT_BAD_INPUT
        from runtime.bench import run_bench

        return run_bench(args)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
