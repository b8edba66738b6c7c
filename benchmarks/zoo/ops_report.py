"""``ops``: per model of a built zoo, the op types (with counts), inputs and outputs, and whether
ONNX Runtime runs the dense and pruned files with non-degenerate outputs; then a histogram of op
types over the whole zoo (op -> number of models using it) and the list of problems."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from benchmarks.zoo.common import ZooError, format_bytes
from benchmarks.zoo.manifest import MANIFEST_NAME, read_manifest
from benchmarks.zoo.ortcheck import RunResult, run_and_check

__all__ = ["op_counts", "format_dims", "format_table", "ModelReport", "model_report",
           "zoo_report"]

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


@dataclass
class ModelReport:
    """One model's report lines, the op counts of its dense file, its findings (``FAILED``,
    ``DEGENERATE``, ``input-insensitive``) and its row of the summary table."""

    lines: list[str]
    ops: Counter[str]
    findings: list[str]
    row: list[str]


def _header_lines(entry: dict[str, Any], ops: Counter[str]) -> list[str]:
    """Name, opset, inputs, outputs and op counts of one entry."""
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
    return lines


def _status(result: RunResult) -> str:
    """``ok``, ``ok*`` (some output input-insensitive), ``DEGENERATE`` or ``FAILED``."""
    if result.error is not None:
        return "FAILED"
    if not result.ok:
        return "DEGENERATE"
    return "ok*" if any(o.warnings for o in result.outputs) else "ok"


def model_report(entry: dict[str, Any], folder: Path, threads: int) -> ModelReport:
    """Op counts, inputs/outputs and the ORT runs of one manifest entry's two files."""
    dense = onnx.load(str(folder / entry["files"]["dense"]["file"]), load_external_data=False)
    ops = op_counts(dense)
    lines, findings = _header_lines(entry, ops), []
    times, states = [], []
    for role in ("dense", "pruned"):
        record = entry["files"][role]
        result = run_and_check(folder / record["file"], entry["inputs"], threads=threads)
        lines.extend(_format_run(role, record, result))
        findings.extend(_findings(record["file"], result))
        times.append("-" if result.error else f"{result.run_ms:.1f}")
        states.append(_status(result))
    row = [entry["name"], entry["kind"], " ".join(format_dims(i["shape"]) for i in entry["inputs"]),
           str(entry["num_outputs"]), str(entry["opset"]),
           format_bytes(entry["files"]["dense"]["bytes"]), *times, "/".join(states)]
    return ModelReport(lines, ops, findings, row)


SUMMARY_HEADER = ["model", "kind", "feed shape", "outs", "opset", "size", "ms dense",
                  "ms pruned", "dense/pruned"]


def format_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Left-aligned columns separated by two spaces."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
            for r in [header, *rows]]


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
    rows: list[list[str]] = []
    for entry in entries:
        report = model_report(entry, folder, threads)
        log("\n".join(report.lines))
        usage.update(set(report.ops))
        findings.extend(report.findings)
        rows.append(report.row)
    log(f"\n== summary (ORT CPU, {threads} thread(s), batch 1, one run; ok* = some output "
        "input-insensitive)")
    log("\n".join("  " + line for line in format_table(SUMMARY_HEADER, rows)))
    log(f"\n== op types across the zoo ({len(entries)} models): op -> models using it")
    for op, count in sorted(usage.items(), key=lambda kv: (-kv[1], kv[0])):
        log(f"  {op:34} {count}")
    problems = [f for f in findings if not f.startswith("input-insensitive")]
    log(f"\n== problems: {len(problems)} (files ORT cannot run or with degenerate outputs)")
    log(f"== warnings: {len(findings) - len(problems)} (input-insensitive outputs)")
    for finding in findings:
        log(f"  {finding}")
    return problems
