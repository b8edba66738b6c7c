"""Generated conv code against the CSR kernel, side by side in one process.

For each benchmark model (``benchmarks/bench_models.py``), sparsity, batch and thread count, two
engines on the same ONNX file: one planned with ``EngineOptions(jit=False)`` (every conv on the CSR
kernel) and one with the code generator on (``runtime/native/jit/jit_x86.cpp``: convs of groups of
16 images on x86-64 Linux AVX-512, where it pays). Calls alternate round by round
(``runtime.bench.compare_interleaved``); the table gives both medians and their ratio, and the
two outputs must be bit-identical.

    python -m benchmarks.jit_ab --models resnet20x2,mobilenet_v1 --sparsities 90,95,98
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from benchmarks.bench_models import bench_model_path
from benchmarks.engine_vs_peers import DEFAULT_WORK_DIR
from featherdeploy.runtime import Engine, EngineOptions
from featherdeploy.runtime.bench import compare_interleaved

MODELS = ("resnet20x2", "mobilenet_v1", "resnet50_conv2x")


def measure(path: Path, batch: int, threads: int, rounds: int) -> tuple[float, float]:
    """Median ms of the CSR-only engine and of the generated-code engine."""
    csr = Engine(path, options=EngineOptions(threads=threads, jit=False))
    jit = Engine(path, options=EngineOptions(threads=threads, jit=True))
    x = np.random.default_rng(0).random((batch, *csr.input_shape[1:]), dtype=np.float32)
    if not np.array_equal(csr.run(x), jit.run(x)):
        raise SystemExit(f"error: {path.name}: generated code and CSR outputs differ")
    timings = compare_interleaved({"csr": lambda: csr.run(x), "jit": lambda: jit.run(x)},
                                  batch=batch, rounds=rounds, calls_per_round=3)
    return timings["csr"].median_ms, timings["jit"].median_ms


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="resnet20x2,mobilenet_v1")
    parser.add_argument("--sparsities", default="90,95,98", help="percent, comma-separated")
    parser.add_argument("--batches", default="32")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR,
                        help="where the benchmark models are built (shared with engine_vs_peers)")
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    try:
        sparsities, batches, threads = (_ints(args.sparsities), _ints(args.batches),
                                        _ints(args.threads))
    except ValueError as exc:
        parser.error(f"comma-separated integers expected: {exc}")
    if not all(0 <= s < 100 for s in sparsities) or min(batches + threads, default=0) < 1:
        parser.error("sparsities must be 0..99 (percent), batches and threads >= 1")
    print("| model | sparsity | batch | threads | CSR ms | generated ms | generated / CSR |")
    print("|---|---|---|---|---|---|---|")
    for model in models:
        for sparsity in sparsities:
            path = bench_model_path(model, sparsity / 100.0, args.work_dir)
            for batch in batches:
                for count in threads:
                    csr_ms, jit_ms = measure(path, batch, count, args.rounds)
                    print(f"| {model} | {sparsity}% | {batch} | {count} | {csr_ms:.3f} | "
                          f"{jit_ms:.3f} | {jit_ms / csr_ms:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
