"""What actually runs: per node its device (native or ONNX Runtime, and why), and for native
nodes the steps serving it (kernel family, layout, thread split, wavefront, generated code);
and the coverage by op type (nodes and MACs native vs ONNX Runtime), like DeepSparse's fraction
of supported ops. ``Engine.describe()`` and ``featherdeploy describe`` print it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from featherdeploy.runtime.errors import EngineError
from featherdeploy.runtime.ops.registry import get_op
from featherdeploy.runtime.partition import NATIVE, node_key

if TYPE_CHECKING:
    from featherdeploy.runtime.engine import Engine
    from featherdeploy.runtime.program import Program

__all__ = ["NodeReport", "OpCoverage", "Coverage", "EngineReport", "coverage",
           "coverage_line", "describe_program"]


@dataclass
class NodeReport:
    node: str
    op: str
    device: str          # "native" or "onnxruntime"
    macs: int            # sparse MACs (dense when the weights are not constant)
    steps: list[str] = field(default_factory=list)  # native: "conv_jit: interleaved ..."
    reason: str = ""     # onnxruntime: why not native


@dataclass
class OpCoverage:
    op: str
    native_nodes: int = 0
    ort_nodes: int = 0
    native_macs: int = 0
    ort_macs: int = 0


@dataclass
class Coverage:
    by_op: dict[str, OpCoverage]

    @property
    def native_macs(self) -> int:
        return sum(c.native_macs for c in self.by_op.values())

    @property
    def ort_macs(self) -> int:
        return sum(c.ort_macs for c in self.by_op.values())

    @property
    def ort_mac_fraction(self) -> float:
        total = self.native_macs + self.ort_macs
        return self.ort_macs / total if total else 0.0

    @property
    def native_nodes(self) -> int:
        return sum(c.native_nodes for c in self.by_op.values())

    @property
    def ort_nodes(self) -> int:
        return sum(c.ort_nodes for c in self.by_op.values())

    def ort_summary(self) -> str:
        ops = sorted((c for c in self.by_op.values() if c.ort_nodes), key=lambda c: -c.ort_macs)
        return ", ".join(f"{c.op} x{c.ort_nodes}" for c in ops) or "none"

    def to_dict(self) -> dict[str, Any]:
        return {"native_nodes": self.native_nodes, "ort_nodes": self.ort_nodes,
                "native_macs": self.native_macs, "ort_macs": self.ort_macs,
                "native_mac_fraction": 1.0 - self.ort_mac_fraction,
                "by_op": {op: vars(c) for op, c in sorted(self.by_op.items())}}


@dataclass
class EngineReport:
    model: str
    backend: str
    threads: int
    isa: str
    input_shapes: dict[str, tuple[int, ...]]
    choice: str
    nodes: list[NodeReport]
    coverage: Coverage | None

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "backend": self.backend, "threads": self.threads,
                "isa": self.isa, "input_shapes": {k: list(v) for k, v in
                                                  self.input_shapes.items()},
                "choice": self.choice, "nodes": [vars(n) for n in self.nodes],
                "coverage": self.coverage.to_dict() if self.coverage else None}

    def format(self) -> str:
        lines = [f"model {self.model}: backend {self.backend}, {self.threads} thread(s), "
                 f"kernels {self.isa}",
                 "inputs " + ", ".join(f"{k} {v}" for k, v in self.input_shapes.items()),
                 f"batch: {self.choice}"]
        if self.coverage is not None:
            lines += ["", coverage_table(self.coverage)]
        if self.nodes:
            lines += ["", "| node | op | device | MACs | what runs |", "|---|---|---|---|---|"]
            for n in self.nodes:
                what = "; ".join(n.steps) if n.device == NATIVE else n.reason
                lines.append(f"| {n.node} | {n.op} | {n.device} | {n.macs:,} | {what} |")
        return "\n".join(lines)


def coverage_line(engine: Engine) -> str:
    """One line: the coverage of the program the engine ran last."""
    cov = engine.coverage()
    if cov is None:
        return f"coverage: the whole model runs on ONNX Runtime (backend {engine.backend})"
    return coverage_table(cov).splitlines()[0] + (
        f"; on ONNX Runtime: {cov.ort_summary()}" if cov.ort_nodes else "")


def coverage_table(cov: Coverage) -> str:
    total = cov.native_macs + cov.ort_macs
    macs = (f"{100.0 * cov.native_macs / total:.1f}% of {total:,} MACs" if total
            else "no Conv / Gemm MACs")
    lines = [f"coverage: {cov.native_nodes} of {cov.native_nodes + cov.ort_nodes} nodes and "
             f"{macs} native",
             "| op | native nodes | ORT nodes | native MACs | ORT MACs |",
             "|---|---|---|---|---|"]
    for op, c in sorted(cov.by_op.items()):
        lines.append(f"| {op} | {c.native_nodes} | {c.ort_nodes} | {c.native_macs:,} | "
                     f"{c.ort_macs:,} |")
    return "\n".join(lines)


def _node_macs(program: Program) -> dict[str, int]:
    """Sparse MACs of every node of the specialized graph that has a MAC rule, by node key."""
    ctx = program.spec.context()
    macs = {}
    for node in program.spec.graph.nodes:
        op = get_op(node)
        if op is None or op.macs is None:
            continue
        try:
            macs[node_key(node)] = op.macs(node, ctx)[1]
        except EngineError:
            continue
    return macs


def coverage(program: Program) -> Coverage:
    """Nodes and MACs native vs ONNX Runtime, by op type (MACs as counted before fusion)."""
    macs = _node_macs(program)
    reasons = program.partition.reasons
    by_op: dict[str, OpCoverage] = defaultdict(lambda: OpCoverage(""))
    for node in program.spec.graph.nodes:
        entry = by_op[node.op]
        entry.op = node.op
        key = node_key(node)
        if key in reasons:
            entry.ort_nodes += 1
            entry.ort_macs += macs.get(key, 0)
        else:
            entry.native_nodes += 1
            entry.native_macs += macs.get(key, 0)
    return Coverage(dict(by_op))


def describe_program(program: Program | None, engine: Engine,
                     shapes: tuple[tuple[str, tuple[int, ...]], ...], choice: str
                     ) -> EngineReport:
    """The report of ``program`` (None: the whole model on ONNX Runtime)."""
    from featherdeploy.runtime import _native

    isa = _native.native_isa(engine.options.isa)
    if program is None:
        return EngineReport(engine.path.name, engine.backend, engine.threads, isa, dict(shapes),
                            choice, [], None)
    steps: dict[str, list[str]] = defaultdict(list)
    for runner in program.runners:
        plan = getattr(runner, "plan", None)
        if plan is None:
            continue
        for record, name, detail in plan.steps():
            if record.node is not None:
                steps[record.node].append(f"{name}: {detail}" if detail else name)
    macs = _node_macs(program)
    nodes = []
    for node in program.spec.graph.nodes:
        key = node_key(node)
        reason = program.partition.reasons.get(key, "")
        nodes.append(NodeReport(node.name, node.op, "onnxruntime" if reason else NATIVE,
                                macs.get(key, 0), steps.get(node.name, []), reason))
    _attach_fused(program, nodes, steps)
    return EngineReport(engine.path.name, engine.backend, program.threads, isa, dict(shapes),
                        choice, nodes, coverage(program))


def _attach_fused(program: Program, nodes: list[NodeReport], steps: dict[str, list[str]]
                  ) -> None:
    """Native nodes a pass removed (BN folded, Add and activations fused, Identity renamed)
    say which node they went into; channel slices stored as views of their input say so."""
    final = {node_key(n): n.name for n in program.partition.graph.nodes}
    merged = program.partition.graph.merged
    for report, node in zip(nodes, program.spec.graph.nodes, strict=True):
        if report.device != NATIVE or report.steps:
            continue
        key = node_key(node)
        seen = set()
        while key in merged and key not in seen and (key not in final or key == node_key(node)):
            seen.add(key)
            key = merged[key]
        owner = final.get(key)
        if owner == node.name:  # kept, yet no steps: a channel slice stored as a view
            report.steps = ["view of its input (no copy)"]
        else:
            report.steps = [f"fused into {owner}" if owner else "renamed away"]
