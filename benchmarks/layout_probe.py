"""Channel-major against position-major batch-interleaved convs, side by side in one process.

The engine stores a group of 16 interleaved images channel by channel: each channel a plane of
positions, each position one 16-lane vector. A conv with C input channels then reads C streams
at every position. Position-major storage keeps a position's C vectors together instead. This
probe builds ``benchmarks/native/layout_probe.cpp`` against the engine's code generator
(``runtime/native/jit/jit_x86.cpp``). It runs the same generated tiles, with the same random
weights, over both layouts, one conv at a time. It prints the times, their ratio and how far the
two outputs differ (the layouts sum a channel's taps in different orders). It needs a C++17
compiler and an x86-64 CPU with AVX-512.

    python -m benchmarks.layout_probe [--density 0.1] [--reps 7] [--markdown F] [--json F]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from featherdeploy.runtime.atomic import atomic_write_json, atomic_write_text
from featherdeploy.runtime.machine import cpu_model_name

ROOT = Path(__file__).resolve().parents[1]
PROBE_SOURCE = ROOT / "benchmarks" / "native" / "layout_probe.cpp"
NATIVE = ROOT / "runtime" / "native"
# Largest relative output difference accepted between the layouts (summation order only).
MAX_REL_DIFF = 1e-4


@dataclass(frozen=True)
class ProbeConv:
    """One conv: where it occurs, channels in and out, output plane, kernel, residual, stride
    (the input plane is ``stride`` times the output's, padded by ``kernel // 2``)."""

    label: str
    c: int
    k: int
    h: int
    w: int
    kernel: int
    residual: bool
    stride: int = 1


# The interleaved convs that dominate ResNet-18/50, MobileNetV2 and DenseNet-121 at 224 px.
DEFAULT_CONVS = (
    ProbeConv("ResNet-50 layer1 conv1", 256, 64, 56, 56, 1, False),
    ProbeConv("ResNet-50 layer1 conv3 + residual", 64, 256, 56, 56, 1, True),
    ProbeConv("ResNet layer1 3x3", 64, 64, 56, 56, 3, False),
    ProbeConv("ResNet-50 layer2 conv1", 512, 128, 28, 28, 1, False),
    ProbeConv("ResNet-50 layer2 conv3 + residual", 128, 512, 28, 28, 1, True),
    ProbeConv("ResNet layer2 3x3", 128, 128, 28, 28, 3, False),
    ProbeConv("ResNet-50 layer3 conv1", 1024, 256, 14, 14, 1, False),
    ProbeConv("ResNet-50 layer3 conv3 + residual", 256, 1024, 14, 14, 1, True),
    ProbeConv("ResNet layer3 3x3", 256, 256, 14, 14, 3, False),
    ProbeConv("ResNet-50 layer4 conv1", 2048, 512, 7, 7, 1, False),
    ProbeConv("ResNet layer4 3x3", 512, 512, 7, 7, 3, False),
    ProbeConv("ResNet-50 layer2 downsample", 256, 512, 28, 28, 1, False, 2),
    ProbeConv("ResNet-50 layer2 3x3 stride 2", 128, 128, 28, 28, 3, False, 2),
    ProbeConv("ResNet-18 layer2 3x3 stride 2", 64, 128, 28, 28, 3, False, 2),
    ProbeConv("ResNet-50 layer3 downsample", 512, 1024, 14, 14, 1, False, 2),
    ProbeConv("MobileNetV2 block 13 project", 576, 96, 14, 14, 1, False),
    ProbeConv("MobileNetV2 block 13 expand", 96, 576, 14, 14, 1, False),
    ProbeConv("MobileNetV2 block 17 project", 960, 160, 7, 7, 1, False),
    ProbeConv("DenseNet-121 block 1 bottleneck", 256, 128, 56, 56, 1, False),
    ProbeConv("DenseNet-121 block 1 3x3", 128, 32, 56, 56, 3, False),
)


@dataclass(frozen=True)
class ProbeRow:
    conv: ProbeConv
    channel_major_ms: float
    position_major_ms: float
    max_rel_diff: float

    @property
    def speedup(self) -> float:
        """Channel-major time over position-major time (> 1: position-major is faster)."""
        return self.channel_major_ms / self.position_major_ms


class ProbeError(RuntimeError):
    """The probe cannot run here (no compiler, no AVX-512) or it failed."""


def build_probe(workdir: Path, compiler: str | None = None) -> Path:
    """Compiles the probe with the engine's code generator; returns the executable."""
    cxx = compiler or os.environ.get("CXX") or "g++"
    if shutil.which(cxx) is None:
        raise ProbeError(f"no C++ compiler {cxx!r} on PATH (set CXX)")
    if platform.machine().lower() not in ("x86_64", "amd64"):
        raise ProbeError(f"the generated tiles are x86-64 code; this is {platform.machine()}")
    exe = workdir / "layout_probe"
    command = [cxx, "-O2", "-std=c++17", f"-I{NATIVE}", f"-I{NATIVE / 'kernels'}",
               str(PROBE_SOURCE), str(NATIVE / "jit" / "jit_x86.cpp"), "-o", str(exe)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ProbeError(f"building the probe failed:\n{done.stderr.strip()[-2000:]}")
    return exe


def run_probe(exe: Path, convs: Sequence[ProbeConv], density: float, reps: int) -> list[ProbeRow]:
    """Times every conv in both layouts (the fastest of ``reps`` sweeps each)."""
    args = [str(exe), str(reps)]
    for c in convs:
        args += [str(v) for v in (c.c, c.k, c.h, c.w, c.kernel, c.stride, int(c.residual),
                                  density)]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ProbeError(done.stderr.strip() or f"the probe exited with {done.returncode}")
    lines = done.stdout.strip().splitlines()
    if len(lines) != len(convs):
        raise ProbeError(f"the probe printed {len(lines)} rows for {len(convs)} convs")
    rows = []
    for conv, line in zip(convs, lines, strict=True):
        fields = line.split("\t")
        rows.append(ProbeRow(conv, float(fields[7]), float(fields[8]), float(fields[9])))
    return rows


def format_table(rows: Sequence[ProbeRow], density: float, reps: int) -> str:
    """Markdown, with the CPU and the setup above it."""
    lines = [f"CPU: {cpu_model_name()}; one thread; 16 images a vector; {density:.0%} of the "
             f"weights nonzero; fastest of {reps} sweeps per conv and layout",
             "",
             "| conv | in -> out | output plane | kernel / stride | channel-major ms | "
             "position-major ms | "
             "speedup | max rel diff |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r.conv
        lines.append(f"| {c.label} | {c.c} -> {c.k} | {c.h}x{c.w} | "
                     f"{c.kernel}x{c.kernel} / {c.stride} | "
                     f"{r.channel_major_ms:.3f} | {r.position_major_ms:.3f} | "
                     f"{r.speedup:.2f}x | {r.max_rel_diff:.1e} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--density", type=float, default=0.1,
                        help="fraction of nonzero weights (default 0.1: 90%% sparsity)")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0.0 < args.density <= 1.0:
        parser.error("--density must be in (0, 1]")
    if args.reps < 1:
        parser.error("--reps must be >= 1")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rows = run_probe(build_probe(Path(tmp)), DEFAULT_CONVS, args.density, args.reps)
    except ProbeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = format_table(rows, args.density, args.reps)
    print(table)
    worst = max(r.max_rel_diff for r in rows)
    if worst > MAX_REL_DIFF:
        print(f"error: the layouts' outputs differ by {worst:.1e} (> {MAX_REL_DIFF:.0e})",
              file=sys.stderr)
        return 1
    if args.markdown:
        atomic_write_text(args.markdown, table + "\n")
    if args.json:
        atomic_write_json(args.json, {"format": "featherdeploy-layout-probe", "version": 1,
                                      "cpu": cpu_model_name(), "density": args.density,
                                      "reps": args.reps,
                                      "rows": [{**asdict(r.conv),
                                                "channel_major_ms": r.channel_major_ms,
                                                "position_major_ms": r.position_major_ms,
                                                "max_rel_diff": r.max_rel_diff} for r in rows]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
