"""Memory report (issue 21): the engine's activation arena under both planner policies and the
peak resident memory of the engine and of ONNX Runtime dense, per model and batch.

Models: torchvision ResNet-18, ResNet-50, MobileNetV2 and DenseNet-121 at 3x224x224 with random
weights and 90% magnitude pruning of every conv and Linear layer (the model zoo's recipe,
``benchmarks/zoo``: seeded init, calibrated BatchNorms, TorchScript export, dynamic batch),
built once and cached in ``--models-dir``.

Arena columns come from the plans the engine runs (runtime/planner/memory.py): the arena of one
workspace under ``by_layout`` (a freed buffer serves only a tensor of the same layout) and
``shared`` (the default), the peak of live buffers (a lower bound of any arena) and the border
floats the zero steps clear per call, for the layout a batch takes without timing
(``PlannerOptions.untimed_lanes_budget_bytes``: every model here at 224 px runs its images one by
one, one workspace per thread, so the arena counts once per thread there; with timing the engine may
choose interleaved groups, which the peak RSS columns include). Peak RSS is VmHWM of a fresh child
process per contender (``runtime.peak_memory``: load, then 3 runs), which includes the weights, the
interpreter and the libraries both children import; the engine with its default options (lazy
tuning: a batch-1 shape on several threads also builds and times the one-thread program, so two
programs and two workspaces exist at the peak) and with tuning off. Memory, not time: a busy machine
does not change it (which program wins a timed choice may vary).

    python -m benchmarks.memory --models-dir /tmp/fd-memory-models
    python -m benchmarks.memory --models-dir DIR --models resnet18 --batches 1 --threads 1
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from featherdeploy.runtime.machine import cpu_model_name
from featherdeploy.runtime.options import EngineOptions, PlannerOptions

__all__ = ["MemoryConfig", "PlanMemory", "MemoryRow", "model_path", "plan_memory",
           "measure_row", "format_table", "main"]

MODELS = ("resnet18", "resnet50", "mobilenet_v2", "densenet121")
IMAGE = (3, 224, 224)
MIB = float(1 << 20)
FLOAT_BYTES = 4
POLICIES = ("by_layout", "shared")


@dataclass(frozen=True)
class MemoryConfig:
    """What to measure; the CLI fills it in."""

    models_dir: Path
    models: tuple[str, ...] = MODELS
    batches: tuple[int, ...] = (1, 16)
    threads: int = 2
    sparsity: float = 0.9
    seed: int = 0
    runs: int = 3
    image: tuple[int, int, int] = IMAGE  # (C, H, W) of one input image


@dataclass(frozen=True)
class PlanMemory:
    """Arena figures of the plan serving a batch under one policy (MiB, per call)."""

    arena_mib: float        # one workspace
    workspaces: int         # workspaces the batch uses at once (one per thread taking images)
    peak_live_mib: float    # most bytes of buffers live at one step
    zeroed_kib: float       # border bytes the zero steps clear


@dataclass
class MemoryRow:
    """One (model, batch): both policies' arenas and the peak RSS of each contender (MiB)."""

    model: str
    batch: int
    plans: dict[str, PlanMemory] = field(default_factory=dict)
    # "engine:<policy>" (default options), "engine:shared:untuned" (tuning off), "ort"
    rss_mib: dict[str, float] = field(default_factory=dict)


def model_path(name: str, config: MemoryConfig) -> Path:
    """The cached pruned ONNX file of ``name`` (the zoo's file name), built when missing."""
    from benchmarks.zoo.common import pruned_filename

    path = config.models_dir / pruned_filename(name, config.sparsity)
    if not path.is_file():
        from benchmarks.zoo.torch_zoo import (
            export_onnx_bytes,
            prepare_torch_model,
            pruned_torch_model,
            torch_spec,
        )
        from featherdeploy.runtime.atomic import atomic_write_bytes

        spec = torch_spec(name)
        model = prepare_torch_model(spec, config.seed)
        pruned_torch_model(model, spec, config.sparsity, config.seed)
        config.models_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, export_onnx_bytes(model, spec))
    return path


def _options(policy: str, threads: int, planner: PlannerOptions | None = None) -> EngineOptions:
    base = planner if planner is not None else PlannerOptions()
    return EngineOptions(threads=threads, backend="native", tuning="off",
                         planner=replace(base, memory=policy))


def plan_memory(path: Path, batch: int, threads: int, policy: str,
                image: tuple[int, int, int] = IMAGE,
                planner: PlannerOptions | None = None) -> PlanMemory:
    """Arena figures of the native plan serving ``batch`` images: the one-image plan, run by
    each thread on its own images, when they run one by one (runtime.planner.batch), else the
    plan of the group or of the whole batch. ``planner`` (default options otherwise) with its
    memory policy set to ``policy``."""
    from featherdeploy.runtime.graph import load_graph
    from featherdeploy.runtime.planner.batch import batch_separable, interleave_lanes
    from featherdeploy.runtime.program import build_program

    graph = load_graph(path)
    name = graph.input_names[0]
    options = _options(policy, threads, planner)
    images = {name: image}
    separable = batch > 1 and batch_separable(graph, images)
    lanes = interleave_lanes(graph, images, batch, options.planner, timed=False) if separable else 1
    group = lanes if separable else batch
    program = build_program(graph, {name: (group, *image)}, options, threads, lanes > 1)
    plan = program.single_plan
    if plan is None:
        raise RuntimeError(f"{path.name}: the model does not run as one native plan")
    workspaces = min(threads, batch // group) if separable else 1
    return PlanMemory(plan.native.arena_floats * FLOAT_BYTES / MIB, workspaces,
                      plan.peak_live_floats * FLOAT_BYTES / MIB,
                      plan.zeroed_floats * FLOAT_BYTES / 1024)


def measure_row(name: str, batch: int, config: MemoryConfig) -> MemoryRow:
    """Arena figures and peak RSS (a child process each) of one model at one batch size."""
    from featherdeploy.runtime.graph import load_graph
    from featherdeploy.runtime.peak_memory import measure_peak_memory

    path = model_path(name, config)
    row = MemoryRow(name, batch)
    feeds = {load_graph(path).input_names[0]:
             np.random.default_rng(config.seed).standard_normal((batch, *config.image),
                                                                np.float32)}
    for policy in POLICIES:
        row.plans[policy] = plan_memory(path, batch, config.threads, policy, config.image)
        peak = measure_peak_memory("engine", path, config.threads, feeds, runs=config.runs,
                                   engine_overrides={"planner": {"memory": policy}})
        row.rss_mib[f"engine:{policy}"] = peak.peak_mb
    # Without the timed choices, which build and run the one-thread program of a batch-1 shape
    # beside the all-threads one (two sets of packed weights and two workspaces at the peak).
    row.rss_mib["engine:shared:untuned"] = measure_peak_memory(
        "engine", path, config.threads, feeds, runs=config.runs,
        engine_overrides={"planner": {"memory": "shared"}, "tuning": "off"}).peak_mb
    row.rss_mib["ort"] = measure_peak_memory("ort", path, config.threads, feeds,
                                             runs=config.runs).peak_mb
    return row


def format_table(rows: Sequence[MemoryRow], config: MemoryConfig) -> str:
    """A markdown table of the rows, with the CPU and the setup above it."""
    c, h, w = config.image
    lines = [f"CPU: {cpu_model_name()}; {config.threads} thread(s); models "
             f"{config.sparsity:.0%} magnitude-pruned, {c}x{h}x{w}; peak RSS = VmHWM of a child "
             f"process after load + {config.runs} runs",
             "",
             "| model | batch | arena by_layout MiB | arena shared MiB | workspaces | "
             "peak live MiB | zeroed KiB/call | RSS engine by_layout MiB | RSS engine shared MiB "
             "| RSS engine shared, tuning off MiB | RSS ORT dense MiB | shared <= ORT |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        old, new = row.plans["by_layout"], row.plans["shared"]
        engine, ort = row.rss_mib["engine:shared"], row.rss_mib["ort"]
        lines.append(f"| {row.model} | {row.batch} | {old.arena_mib:.1f} | {new.arena_mib:.1f} "
                     f"| {new.workspaces} | {new.peak_live_mib:.1f} | {new.zeroed_kib:.0f} | "
                     f"{row.rss_mib['engine:by_layout']:.0f} | {engine:.0f} | "
                     f"{row.rss_mib['engine:shared:untuned']:.0f} | {ort:.0f} | "
                     f"{'yes' if engine <= ort else 'NO'} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, required=True,
                        help="where the pruned ONNX files are cached (built when missing)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = MemoryConfig(args.models_dir, tuple(args.models), tuple(args.batches), args.threads)
    rows = [measure_row(name, batch, config) for name in config.models
            for batch in config.batches]
    table = format_table(rows, config)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
