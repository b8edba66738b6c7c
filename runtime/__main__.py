"""Command line of the runtime: ``featherdeploy run|bench|describe`` (featherdeploy/cli.py hands
these subcommands here; ``python -m featherdeploy.runtime run|bench|describe`` is the same).

    featherdeploy run MODEL.onnx --input x.npy --output y.npy [--threads T]
    featherdeploy run MODEL.onnx --input images=x.npy --input scale=s.npy --output out.npz
    featherdeploy bench MODEL.onnx [--batch 1,32] [--threads 1,2] [-t SECONDS] [--streams N]
        [--shape name=1x3x640x640] [--input name=x.npy | --seed S] [--profile] [--json FILE]
    featherdeploy describe MODEL.onnx [--batch N] [--shape name=1x3x640x640] [--json FILE]

A model with several outputs writes them all to one ``.npz`` (by output name). ``run`` and
``describe`` print the coverage (nodes and MACs run natively vs by ONNX Runtime). Parsing only;
the work lives in :class:`runtime.Engine`, :mod:`runtime.describe` and :mod:`runtime.bench_cli`.
Bad input (missing files, unsupported models, wrong input arrays, unwritable outputs) prints
one line to stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["build_parser", "main", "run_command", "describe_command"]

EXIT_BAD_INPUT = 2
PROG = "python -m featherdeploy.runtime"


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    from featherdeploy.runtime.cli import add_engine_option_arguments

    parser.add_argument("--threads", type=int, default=None, help="worker threads (default: all)")
    add_engine_option_arguments(parser)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The argparse tree; ``bench`` options come from featherdeploy.runtime.bench_cli when it
    is importable.
    ``prog``: how usage lines name the command (the ``featherdeploy`` CLI passes its own)."""
    parser = argparse.ArgumentParser(prog=prog,
                                     description="featherdeploy sparse CPU inference engine")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a model on input arrays (.npy)")
    run.add_argument("model", help="ONNX model (dense zeros or sparse initializers)")
    run.add_argument("--input", action="append", required=True,
                     help="input array (.npy): FILE for a single-input model, else NAME=FILE "
                          "(repeat per input)")
    run.add_argument("--output", required=True,
                     help="where to write the output: .npy (one output) or .npz (every output)")
    _add_engine_options(run)
    describe = sub.add_parser("describe", help="show what runs: per node device and kernel, "
                                               "coverage by op type")
    describe.add_argument("model", help="ONNX model")
    describe.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    describe.add_argument("--shape", action="append", default=[],
                          help="NAME=DxDxD input shape, for inputs with dynamic dims")
    describe.add_argument("--json", default=None, help="also write the report as JSON")
    _add_engine_options(describe)
    bench = sub.add_parser("bench", help="time the engine against ONNX Runtime dense")
    try:
        from featherdeploy.runtime.bench_cli import add_bench_arguments
    except ImportError as exc:  # keep `run` usable if the benchmark module is broken
        bench.set_defaults(bench_unavailable=str(exc))
        bench.add_argument("rest", nargs=argparse.REMAINDER)
    else:
        add_bench_arguments(bench)
    return parser


def _engine(args: argparse.Namespace) -> Any:
    from featherdeploy.runtime.cli import engine_options_from_args
    from featherdeploy.runtime.engine import Engine

    return Engine(args.model, threads=args.threads, options=engine_options_from_args(args))


def _read_inputs(specs: list[str], names: list[str]) -> dict[str, Any]:
    import numpy as np

    from featherdeploy.runtime.cli import parse_input_specs
    from featherdeploy.runtime.errors import InputError

    arrays = {}
    for name, path in parse_input_specs(specs, names).items():
        try:
            arrays[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read input array {path!r}: {exc}") from None
    return arrays


def run_command(args: argparse.Namespace) -> int:
    """`run`: load, infer, write the outputs atomically."""
    from featherdeploy.runtime.atomic import atomic_write_bytes, check_writable_target
    from featherdeploy.runtime.describe import coverage_line

    check_writable_target(args.output)
    engine = _engine(args)
    inputs = _read_inputs(args.input, [t.name for t in engine.inputs])
    names = [t.name for t in engine.outputs]
    outputs = engine.run(inputs, output_names=names)
    if args.output.endswith(".npz"):
        data = _npz_bytes(dict(zip(names, outputs, strict=True)))
    elif len(outputs) == 1:
        data = _npy_bytes(outputs[0])
    else:
        raise _bad(f"the model has {len(outputs)} outputs {names}: write them to a .npz file")
    atomic_write_bytes(args.output, data)
    shapes = ", ".join(f"{n} {tuple(y.shape)}" for n, y in zip(names, outputs, strict=True))
    print(f"wrote {args.output}: {shapes}")
    print(coverage_line(engine))
    return 0


def _bad(message: str) -> Exception:
    from featherdeploy.runtime.errors import InputError

    return InputError(message)


def describe_command(args: argparse.Namespace) -> int:
    from featherdeploy.runtime.atomic import atomic_write_json
    from featherdeploy.runtime.cli import parse_shape_specs

    shapes = parse_shape_specs(args.shape) if args.shape else None
    if args.batch < 1:
        raise _bad("--batch must be >= 1")
    report = _engine(args).describe(batch=args.batch, input_shapes=shapes)
    print(report.format())
    if args.json:
        atomic_write_json(args.json, report.to_dict())
    return 0


def _npy_bytes(array: Any) -> bytes:
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _npz_bytes(arrays: dict[str, Any]) -> bytes:
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Entry point; returns the process exit code."""
    from featherdeploy.runtime.errors import EngineError

    args = build_parser(prog).parse_args(argv)
    try:
        if args.command == "run":
            return run_command(args)
        if args.command == "describe":
            return describe_command(args)
        if getattr(args, "bench_unavailable", None):
            print(f"error: bench is unavailable ({args.bench_unavailable})", file=sys.stderr)
            return EXIT_BAD_INPUT
        from featherdeploy.runtime.bench_cli import run_bench

        return run_bench(args)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
              file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
