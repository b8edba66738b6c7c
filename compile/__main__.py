"""``featherdeploy compile RUN_DIR --out artifacts/NAME`` (or ``python -m featherdeploy.compile
...``): argparse only; the work is in pipeline.py.

Option precedence: CompileOptions defaults < ``--config FILE.yaml`` < flags given on the line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from featherdeploy.compile.errors import CompileError

__all__ = ["build_parser", "main"]

PROG = "python -m featherdeploy.compile"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The CLI's argument parser (option defaults live in CompileOptions, not here)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Compile a trained run into model.onnx, model.sparse.onnx, weights.fdpack "
                    "and report.json/.md, verified against torch with ONNX Runtime.")
    parser.add_argument("run", help="run directory from `featherdeploy train` (or its model.pt)")
    parser.add_argument("--out", required=True, help="artifacts directory (replaced atomically)")
    parser.add_argument("--config", help="YAML file with CompileOptions fields")
    parser.add_argument("--opset", type=int, help="ONNX opset (>= 13; default 13)")
    parser.add_argument("--ir-version", type=int, dest="ir_version",
                        help="ONNX IR version written (default 8: ORT and DeepSparse load it)")
    parser.add_argument("--block-shapes", dest="block_shapes",
                        help="BSR block shapes RxC over [out, in*kh*kw] (default 1x1,1x4,4x1,4x4;"
                             " CSR is always written)")
    parser.add_argument("--layout", choices=("OIHW", "OHWI"),
                        help="column order of conv matrices in the pack (default OIHW)")
    parser.add_argument("--verify-images", type=int, dest="verify_images",
                        help="test images compared across torch / ORT dense / ORT sparse "
                             "(default 32)")
    parser.add_argument("--no-accuracy", action="store_const", const=False, dest="accuracy",
                        help="skip the full-test-set ONNX Runtime accuracy")
    parser.add_argument("--batch-size", type=int, dest="batch_size",
                        help="batch size of the torch / ORT passes (default 32)")
    parser.add_argument("--data-dir", dest="data_dir",
                        help="dataset directory (default: the run's)")
    parser.add_argument("--inputs", help=".npy float32 (N, C, H, W) to verify on instead of "
                                         "test images")
    return parser


_OPTION_FLAGS = ("opset", "ir_version", "block_shapes", "layout", "verify_images", "accuracy",
                 "batch_size", "data_dir", "inputs")


def _read_yaml(path: str) -> dict[str, Any]:
    from featherdeploy.train.config import ConfigError, load_yaml_config

    try:
        return load_yaml_config(path)
    except ConfigError as exc:
        raise CompileError(f"compile config: {exc}") from exc


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Parse, compile, print a summary; returns 0, or 2 on bad input / failed verification."""
    args = build_parser(prog).parse_args(argv)
    from featherdeploy.compile.pipeline import compile_run, options_from_mapping

    try:
        values = _read_yaml(args.config) if args.config else {}
        values.update({key: getattr(args, key) for key in _OPTION_FLAGS
                       if getattr(args, key) is not None})
        result = compile_run(args.run, args.out, options_from_mapping(values))
    except (CompileError, OSError) as exc:  # OSError: a file the pipeline did not expect
        message = " ".join(str(exc).split())  # one line, even if a library's text had several
        print(f"compile: error: {message}", file=sys.stderr)
        return 2
    print(_summary(result.out_dir, result.report))
    return 0


def _summary(out_dir: object, report: dict[str, Any]) -> str:
    totals, files = report["totals"], report["files"]
    accuracy = report.get("accuracy")
    lines = [f"compiled -> {out_dir}",
             f"  prunable sparsity {totals['prunable_sparsity']:.4f}, MACs "
             f"{totals['dense_macs']:,} dense / {totals['sparse_macs']:,} sparse",
             f"  model.sparse.onnx / model.onnx = {files['sparse_onnx_ratio']:.4f}",
             "  verification passed on "
             f"{report['verification']['images']} images ({report['verification']['source']})"]
    if accuracy:
        lines.append(f"  ORT test accuracy {accuracy['top1']:.4f} on {accuracy['images']} images")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
