"""Kernel lab: would a code-generating (JIT) sparse conv beat the engine's CSR kernel?

Generates, for one random sparse 3x3 conv, a straight-line AVX-512 kernel specialised to its
weights, compiles it with the harness (``harness.cpp``) and times it against the engine's loop
structure on the same layer. Not part of the engine: an experiment, kept so it can be rerun.

The generated kernel is input-stationary within a tile of K output channels at one output
vector (16 images at one position):

    for each output position p, for each tile of K channels:
        acc[0..K) = 0
        for each tap (ic, kh, kw) that any channel of the tile stores:
            x = load(input[ic, p + (kh, kw)])            one 64-byte load ...
            acc[k] += x * broadcast(w[k, ic, kh, kw])    ... feeds every such channel k
        store relu(acc[k])

Every offset is a displacement and every weight an embedded-broadcast memory operand
(``vfmadd231ps zmm, zmm, [w]{1to16}``), so there is no per-tap index arithmetic, and a loaded
input vector feeds K x density FMAs instead of one. The engine's kernel (``run_pair``) loads one
input vector per FMA. Results are bit-identical: each accumulator adds its taps in the same
(ic, kh, kw) order.

    python -m benchmarks.kernel_lab.tile_codegen --tile 16 --density 0.1 --channels 32 --size 32
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HARNESS = Path(__file__).with_name("harness.cpp")
CXXFLAGS = ["-O2", "-march=native"]


def random_weights(channels: int, density: float, seed: int) -> np.ndarray:
    """(channels, channels, 3, 3) float32 weights, each kept with probability ``density``."""
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((channels, channels, 3, 3)).astype(np.float32)
    return weights * (rng.random(weights.shape) < density)


def tile_function(name: str, weights: np.ndarray, first: int, count: int,
                  table: list[float]) -> list[str]:
    """C++ for channels [first, first + count): one load per stored tap of the tile, one
    embedded-broadcast FMA per stored weight (appended to ``table``), ReLU stores."""
    lines = [f"__attribute__((noinline)) static void {name}(const float* in, float* out, "
             "long cs, long rs, long ocs) {"]
    lines += [f"  __m512 a{k} = _mm512_setzero_ps();" for k in range(count)]
    _, channels, kh_size, kw_size = weights.shape
    for ic in range(channels):
        for kh in range(kh_size):
            for kw in range(kw_size):
                users = [k for k in range(count) if weights[first + k, ic, kh, kw] != 0]
                if not users:
                    continue
                lines.append(f"  {{ const __m512 x = _mm512_loadu_ps(in + {ic} * cs + {kh} * rs"
                             f" + {kw * 16});")
                for k in users:
                    table.append(float(weights[first + k, ic, kh, kw]))
                    lines.append(f'    asm("vfmadd231ps %1%{{1to16%}}, %2, %0" : "+v"(a{k}) '
                                 f': "m"(wt[{len(table) - 1}]), "v"(x));')
                lines.append("  }")
    lines += [f"  _mm512_storeu_ps(out + {first + k} * ocs, _mm512_max_ps(a{k}, "
              "_mm512_setzero_ps()));" for k in range(count)]
    lines.append("}")
    return lines


def kernel_source(weights: np.ndarray, tile: int, tile_outer: bool) -> str:
    """The whole generated translation unit: tile functions, the weight table, and
    ``conv_tiles`` looping over positions (outer) and tiles, or tiles (outer) and positions."""
    table: list[float] = []
    tiles = [(first, min(tile, weights.shape[0] - first))
             for first in range(0, weights.shape[0], tile)]
    lines = ["#include <immintrin.h>", "extern const float wt[];"]
    for index, (first, count) in enumerate(tiles):
        lines += tile_function(f"tile{index}", weights, first, count, table)
    lines.append("void conv_tiles(const float* in, float* out, long cs, long rs, long ocs, "
                 "long ors, long H, long W) {")
    calls = [f"tile{i}(in + r * rs + p * 16, out + r * ors + p * 16, cs, rs, ocs);"
             for i in range(len(tiles))]
    loop = "  for (long r = 0; r < H; ++r) for (long p = 0; p < W; ++p) {"
    if tile_outer:
        for call in calls:
            lines += [loop, f"    {call}", "  }"]
    else:
        lines += [loop, *(f"    {call}" for call in calls), "  }"]
    lines.append("}")
    lines.append("alignas(64) extern const float wt[] = {"
                 + ", ".join(f"{w!r}f" for w in table) + "};")
    return "\n".join(lines) + "\n"


def build_and_run(weights: np.ndarray, size: int, tile: int, tile_outer: bool) -> str:
    """Writes the kernel, compiles it with the harness, runs it; returns the harness's line."""
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise SystemExit("error: no C++ compiler (g++ or c++) on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "dims.h").write_text(f"constexpr long C_ = {weights.shape[0]}, HW_ = {size};\n")
        (work / "kernel.cpp").write_text(kernel_source(weights, tile, tile_outer))
        weights.astype(np.float32).tofile(work / "weights.f32")
        binary = work / "harness"
        subprocess.run([compiler, *CXXFLAGS, f"-I{work}", str(HARNESS), str(work / "kernel.cpp"),
                        "-o", str(binary)], check=True)
        done = subprocess.run([str(binary), str(work / "weights.f32")], capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise SystemExit(f"error: harness failed: {done.stdout}{done.stderr}")
        return done.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tile", type=int, default=16, help="output channels per tile (<= 28)")
    parser.add_argument("--density", type=float, default=0.1, help="fraction of weights kept")
    parser.add_argument("--channels", type=int, default=32, help="input = output channels")
    parser.add_argument("--size", type=int, default=32, help="plane height = width")
    parser.add_argument("--tile-outer", action="store_true",
                        help="loop tiles outside positions (code of big layers stays in L1i)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if not 1 <= args.tile <= 28:
        parser.error("--tile must be 1..28 (accumulators and the input vector share 32 registers)")
    if args.channels < 2 or args.channels % 2 or args.size < 8 or args.size % 8:
        parser.error("--channels must be even and --size a multiple of 8 (pair kernel chunks)")
    if not 0.0 < args.density <= 1.0:
        parser.error("--density must be in (0, 1]")
    weights = random_weights(args.channels, args.density, args.seed)
    result = build_and_run(weights, args.size, args.tile, args.tile_outer)
    print(f"channels {args.channels}, {args.size}x{args.size}, density {args.density}, "
          f"tile {args.tile}{' (tiles outer)' if args.tile_outer else ''}: {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
