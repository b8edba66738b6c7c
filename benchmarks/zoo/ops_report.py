"""``ops``: per model of a built zoo, the op types (with counts), inputs and outputs, and whether
ONNX Runtime runs the dense and pruned files with non-degenerate outputs; then a histogram of op
types over the whole zoo (op -> number of models using it) and the list of problems."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx

from benchmarks.zoo.common import ZooError, format_bytes
from benchmarks.zoo.manifest import MANIFEST_NAME, read_manifest
from benchmarks.zoo.ortcheck import RunResult, run_and_check

__all__ = ["op_counts", "format_dims", "model_report", "zoo_report"]

Log = Callable[[str], None]


def op_counts(model: onnx.ModelProto) -> Counter[str]:
    """Op type -> node count of the main graph; ops outside the default domain are prefixed
    with their domain (``com.microsoft:DynamicQuantizeLSTM``)."""
    return Counter(f"{n.domain}:{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
                   for n in model.graph.node)


def format_dims(dims: list[Any]) -> str:
    """``[batch,3,224,224]``; an unset dim prints as ``?``."""
    return "[" + ",".join("?" if d is None else str(d) for d in dims) + "]"


def _format_run(role: str, record: dict[str, Any], result: RunResult) -> list[str]:
    """The lines for one file's ORT run."""
    size = format_bytes(record["bytes"])
    extra = ""
    if "min_zero_fraction" in record:
        extra = (f"; {record['pruned_tensors']} weight tensors, min zero fraction "
                 f"{record['min_zero_fraction']:.4f}")
    if result.error is not None:
        return [f"  {role:6} {record['file']} ({size}{extra}): ORT FAILED: {result.error}"]
    verdict = "ok" if result.ok else "DEGENERATE"
    if result.ok and any(o.warnings for o in result.outputs):
        verdict += " (some input-insensitive)"
    lines = [f"  {role:6} {record['file']} ({size}{extra}): ORT runs, {result.run_ms:.1f} ms "
             f"(batch 1), outputs {verdict}"]
    for out in result.outputs:
        state = ", ".join(out.problems + out.warnings) or "finite, non-degenerate"
        lines.append(f"           {out.name} {list(out.shape)} {out.dtype}: std {out.std:.3g}, "
                     f"max|y| {out.max_abs:.3g}, change between inputs {out.rel_change:.2g}: "
                     f"{state}")
    return lines


def model_report(entry: dict[str, Any], folder: Path, threads: int) -> tuple[list[str], Counter,
                                                                               list[str]]:
    """(report lines, op counts of the dense file, findings) for one manifest entry."""
    dense = onnx.load(str(folder / entry["files"]["dense"]["file"]), load_external_data=False)
    ops = op_counts(dense)
    domains = {d: v for d, v in entry["opset_imports"].items() if d not in ("", "ai.onnx")}
    lines = [f"== {entry['name']} [{entry['kind']}] {entry['task']}: opset {entry['opset']}"
             f"{f' + {domains}' if domains else ''}, IR {entry['ir_version']}, {entry['source']}"]
    lines.append(f"  inputs ({len(entry['inputs'])}):")
    for spec in entry["inputs"]:
        lines.append(f"    {spec['name']} {spec['dtype']} {spec['layout']} declared "
                     f"{format_dims(spec['declared_shape'])} feed {format_dims(spec['shape'])}; "
                     f"batch sizes {','.join(map(str, entry['batch_sizes']))}")
    lines.append(f"  outputs ({entry['num_outputs']}): " + "; ".join(
        f"{o['name']} {format_dims(o['declared_shape'])}" for o in entry["outputs"]))
    lines.append(f"  ops ({sum(ops.values())} nodes, {len(ops)} types): " + ", ".join(
        f"{op} x{count}" for op, count in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))))
    findings = []
    for role in ("dense", "pruned"):
        record = entry["files"][role]
        result = run_and_check(folder / record["file"], entry["inputs"], threads=threads)
        lines.extend(_format_run(role, record, result))
        findings.extend(_findings(record["file"], result))
    return lines, ops, findings


def _findings(file: str, result: RunResult) -> list[str]:
    """``FAILED``/``DEGENERATE``/``input-insensitive`` lines for one file's run."""
    if result.error is not None:
        return [f"FAILED {file}: {result.error}"]
    found = []
    for out in result.outputs:
        if out.problems:
            found.append(f"DEGENERATE {file}: {out.name}: {', '.join(out.problems)}")
        elif out.warnings:
            found.append(f"input-insensitive {file}: {out.name} (relative change between two "
                         f"random inputs {out.rel_change:.2g})")
    return found


def zoo_report(folder: Path, *, threads: int = 1, names: list[str] | None = None,
               log: Log = print) -> list[str]:
    """Print the report of every model in ``folder``'s manifest; returns the problems."""
    entries = read_manifest(folder)
    if not entries:
        raise ZooError(f"{folder / MANIFEST_NAME} is missing or lists no model")
    if names is not None:
        entries = [e for e in entries if e["name"] in names]
    usage: Counter[str] = Counter()
    findings: list[str] = []
    for entry in entries:
        lines, ops, model_findings = model_report(entry, folder, threads)
        log("\n".join(lines))
        usage.update(set(ops))
        findings.extend(model_findings)
    log(f"\n== op types across the zoo ({len(entries)} models): op -> models using it")
    for op, count in sorted(usage.items(), key=lambda kv: (-kv[1], kv[0])):
        log(f"  {op:34} {count}")
    problems = [f for f in findings if not f.startswith("input-insensitive")]
    log(f"\n== problems: {len(problems)} (files ORT cannot run or with degenerate outputs)")
    log(f"== warnings: {len(findings) - len(problems)} (input-insensitive outputs)")
    for finding in findings:
        log(f"  {finding}")
    return problems
