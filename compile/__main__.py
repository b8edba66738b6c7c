"""``python -m compile RUN_DIR --out artifacts/NAME``: argparse only; the work is in pipeline.py."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from compile.errors import CompileError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m compile",
        description="Compile a trained run into model.onnx, model.sparse.onnx, weights.fdpack "
                    "and report.json/.md, verified against torch with ONNX Runtime.")
    parser.add_argument("run", help="run directory from `python -m train` (or its model.pt)")
    parser.add_argument("--out", required=True, help="artifacts directory (replaced atomically)")
    parser.add_argument("--opset", type=int, default=13, help="ONNX opset (>= 13; default 13)")
    parser.add_argument("--ir-version", type=int, default=8,
                        help="ONNX IR version written (default 8: ORT and DeepSparse load it)")
    parser.add_argument("--block-shapes", default="1x1,1x4,4x1,4x4",
                        help="BSR block shapes RxC over [out, in*kh*kw] (default 1x1,1x4,4x1,4x4;"
                             " CSR is always written)")
    parser.add_argument("--verify-images", type=int, default=32,
                        help="test images compared across torch / ORT dense / ORT sparse")
    parser.add_argument("--no-accuracy", action="store_true",
                        help="skip the full-test-set ONNX Runtime accuracy")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="batch size of the torch / ORT passes (default 32)")
    parser.add_argument("--data-dir", default=None, help="dataset directory (default: the run's)")
    parser.add_argument("--inputs", default=None,
                        help=".npy float32 (N, C, H, W) to verify on instead of test images")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, compile, print a summary; returns 0, or 2 on bad input / failed verification."""
    args = build_parser().parse_args(argv)
    from compile.pack import parse_block_shapes
    from compile.pipeline import CompileOptions, compile_run

    try:
        options = CompileOptions(
            opset=args.opset, ir_version=args.ir_version,
            block_shapes=parse_block_shapes(args.block_shapes),
            verify_images=args.verify_images, accuracy=not args.no_accuracy,
            batch_size=args.batch_size, data_dir=args.data_dir, inputs=args.inputs)
        result = compile_run(args.run, args.out, options)
    except CompileError as exc:
        message = " ".join(str(exc).split())  # one line, even if a library's text had several
        print(f"compile: error: {message}", file=sys.stderr)
        return 2
    print(_summary(result.out_dir, result.report))
    return 0


def _summary(out_dir: object, report: dict) -> str:
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
