"""Results of the full-size peer suite (``benchmarks/fullsize.py``) and their tables.

One :class:`SuiteRow` per (model, sparsity, batch, threads); in it one :class:`ContenderResult`
per contender (our engine, DeepSparse, MNN, OpenVINO), each measured in its own process against
ONNX Runtime dense in that same process (alternating blocks), so every speedup is a ratio
measured side by side. Pure code: no timing, no processes; the tests feed it fake timings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from featherdeploy.runtime.bench import Timing

__all__ = [
    "CONTENDERS",
    "CONTENDER_LABELS",
    "OUTPUT_REL_TOL",
    "ContenderResult",
    "SuiteRow",
    "format_report",
    "row_from_dict",
]

CONTENDERS = ("engine", "deepsparse", "mnn", "openvino")
CONTENDER_LABELS = {"engine": "engine", "deepsparse": "DeepSparse", "mnn": "MNN",
                    "openvino": "OpenVINO"}
OUTPUT_REL_TOL = 1e-3  # max|out - ORT| / max|ORT| above this marks a contender's output wrong
NOT_INSTALLED = "not installed"
FAILED = "failed"
OK = "ok"
MIB = 1024.0  # KiB per MiB


@dataclass(frozen=True)
class ContenderResult:
    """One contender on one row: its timings and ORT dense's, from the same worker process."""

    name: str
    status: str  # OK, NOT_INSTALLED or FAILED
    note: str = ""  # why not OK (or what went wrong after the numbers were taken)
    version: str = ""
    ort_version: str = ""  # of the ORT in this contender's venv
    ort: Timing | None = None  # ORT dense, alternating with this contender in its process
    timing: Timing | None = None
    rel_err: float | None = None  # max|out - ORT| / max|ORT| on the benchmark input
    max_abs_ref: float | None = None  # max|ORT output|
    rss_mib: float | None = None  # VmHWM of the fresh worker after loading and 2+ runs, alone
    base_rss_mib: float | None = None  # the same worker's VmRSS before loading (Python, numpy)
    load_s: float | None = None
    calls_per_round: int = 0

    @property
    def speedup(self) -> float | None:
        """ORT dense median / this contender's median, both from the same process."""
        if self.ort is None or self.timing is None or self.timing.median_ms <= 0:
            return None
        return self.ort.median_ms / self.timing.median_ms

    @property
    def wrong_output(self) -> bool:
        """True when the output was checked and is off ORT's by more than the tolerance (or has
        another shape)."""
        return self.status == OK and (self.rel_err is None or self.rel_err > OUTPUT_REL_TOL)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for the JSON report, with the derived speedup."""
        def timing(value: Timing | None) -> dict[str, Any] | None:
            return None if value is None else value.to_dict()
        return {"name": self.name, "status": self.status, "note": self.note,
                "version": self.version, "ort_version": self.ort_version,
                "ort": timing(self.ort), "timing": timing(self.timing),
                "speedup": self.speedup, "rel_err": self.rel_err,
                "max_abs_ref": self.max_abs_ref, "wrong_output": self.wrong_output,
                "rss_mib": self.rss_mib, "base_rss_mib": self.base_rss_mib,
                "load_s": self.load_s, "calls_per_round": self.calls_per_round}


@dataclass(frozen=True)
class SuiteRow:
    """All contenders on one (model, sparsity, batch, threads)."""

    model: str
    sparsity: float
    batch: int
    threads: int
    dense_macs: int
    sparse_macs: int
    contenders: Mapping[str, ContenderResult] = field(default_factory=dict)
    ort_rss_mib: float | None = None  # VmHWM of a fresh process running ORT dense alone
    ort_note: str = ""
    load_average: float = 0.0  # 1-minute load average when the row was done
    wall_s: float = 0.0  # time the row took, processes and compiles included

    def speedup(self, name: str) -> float | None:
        """The speedup of contender ``name`` over ORT dense, or None."""
        result = self.contenders.get(name)
        return None if result is None else result.speedup

    def ratio(self, ours: str, theirs: str) -> float | None:
        """Speedup of ``ours`` / speedup of ``theirs`` (each over ORT dense in its own process)."""
        a, b = self.speedup(ours), self.speedup(theirs)
        return None if a is None or b is None or b == 0 else a / b

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for the JSON report."""
        return {"model": self.model, "sparsity": self.sparsity, "batch": self.batch,
                "threads": self.threads, "dense_macs": self.dense_macs,
                "sparse_macs": self.sparse_macs, "ort_rss_mib": self.ort_rss_mib,
                "ort_note": self.ort_note, "load_average": self.load_average,
                "wall_s": self.wall_s,
                "contenders": {name: r.to_dict() for name, r in self.contenders.items()},
                "engine_vs": {other: self.ratio("engine", other)
                              for other in self.contenders if other != "engine"}}


def _timing_from_dict(data: Mapping[str, Any] | None) -> Timing | None:
    return None if data is None else Timing.from_dict(data)


def row_from_dict(data: Mapping[str, Any]) -> SuiteRow:
    """The inverse of :meth:`SuiteRow.to_dict` (derived fields are recomputed)."""
    contenders = {}
    for name, item in data["contenders"].items():
        contenders[name] = ContenderResult(
            name=item["name"], status=item["status"], note=item["note"],
            version=item["version"], ort_version=item["ort_version"],
            ort=_timing_from_dict(item["ort"]),
            timing=_timing_from_dict(item["timing"]), rel_err=item["rel_err"],
            max_abs_ref=item["max_abs_ref"], rss_mib=item["rss_mib"],
            base_rss_mib=item["base_rss_mib"], load_s=item["load_s"],
            calls_per_round=item["calls_per_round"])
    return SuiteRow(model=data["model"], sparsity=data["sparsity"], batch=data["batch"],
                    threads=data["threads"], dense_macs=data["dense_macs"],
                    sparse_macs=data["sparse_macs"], contenders=contenders,
                    ort_rss_mib=data["ort_rss_mib"], ort_note=data["ort_note"],
                    load_average=data["load_average"], wall_s=data["wall_s"])


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------

class _Notes:
    """Footnotes: each distinct text gets a number, in order of first use."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def ref(self, text: str) -> str:
        if text not in self.texts:
            self.texts.append(text)
        return f"[{self.texts.index(text) + 1}]"


def _num(value: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else format(value, spec) + suffix


def _speedup_cell(result: ContenderResult | None, notes: _Notes) -> str:
    """'2.14x', '2.14x (wrong output)', 'not installed' or 'failed [n]'."""
    if result is None:
        return "n/a"
    if result.status == NOT_INSTALLED:
        return NOT_INSTALLED
    if result.status != OK or result.speedup is None:
        return f"{FAILED} {notes.ref(f'{CONTENDER_LABELS[result.name]}: {result.note}')}"
    cell = f"{result.speedup:.2f}x"
    if result.wrong_output:
        cell += " (wrong output)"
    if result.note:  # numbers taken, something worth knowing happened (e.g. timing restarted)
        cell += f" {notes.ref(f'{CONTENDER_LABELS[result.name]}: {result.note}')}"
    return cell


def _rss_cell(result: ContenderResult | None) -> str:
    if result is None or result.status == NOT_INSTALLED:
        return "-"
    return _num(result.rss_mib, ".0f")


def _contender_label(name: str, versions: Mapping[str, str]) -> str:
    version = versions.get(name, "")
    return f"{CONTENDER_LABELS[name]} {version}".strip()


def _speed_table(rows: Sequence[SuiteRow], peers: Sequence[str], versions: Mapping[str, str],
                 notes: _Notes) -> list[str]:
    """Speedups over ORT dense, engine / peer ratios, peak RSS per contender."""
    others = [p for p in peers if p != "engine"]
    ratios = others if "engine" in peers else []
    header = (["model", "sparsity", "batch", "threads"]
              + [_contender_label(p, versions) for p in peers]
              + [f"engine / {CONTENDER_LABELS[p]}" for p in ratios]
              + ["ORT MiB"] + [f"{CONTENDER_LABELS[p]} MiB" for p in peers])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        ort_rss = (_num(row.ort_rss_mib, ".0f") if not row.ort_note
                   else f"{FAILED} {notes.ref(f'ORT alone: {row.ort_note}')}")
        cells = ([row.model, f"{row.sparsity:.0%}", str(row.batch), str(row.threads)]
                 + [_speedup_cell(row.contenders.get(p), notes) for p in peers]
                 + [_num(row.ratio("engine", p), ".2f") for p in ratios]
                 + [ort_rss] + [_rss_cell(row.contenders.get(p)) for p in peers])
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _error_cell(result: ContenderResult | None) -> str:
    if result is None or result.status != OK:
        return "-"
    if result.rel_err is None:
        return "shape differs"
    return f"{result.rel_err:.1e}" + (" (!)" if result.rel_err > OUTPUT_REL_TOL else "")


def _error_table(rows: Sequence[SuiteRow], peers: Sequence[str]) -> list[str]:
    """max|out - ORT| / max|ORT out| per contender, and max|ORT out| itself."""
    header = (["model", "sparsity", "batch", "threads", "max abs ORT"]
              + [CONTENDER_LABELS[p] for p in peers])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        refs = [r.max_abs_ref for r in row.contenders.values() if r.max_abs_ref is not None]
        cells = ([row.model, f"{row.sparsity:.0%}", str(row.batch), str(row.threads),
                  _num(refs[0] if refs else None, ".3g")]
                 + [_error_cell(row.contenders.get(p)) for p in peers])
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def format_report(rows: Sequence[SuiteRow], *, peers: Sequence[str],
                  versions: Mapping[str, str], header: Sequence[str] = (),
                  context: str = "") -> str:
    """The Markdown report: ``header`` lines (CPU, versions), the speedup table, the output
    check table, ``context`` and the footnotes (every failure's reason in full)."""
    notes = _Notes()
    lines = list(header)
    if header:
        lines.append("")
    lines.append("Speedup over ONNX Runtime dense on the same file (each contender against ORT "
                 "in its own process, alternating blocks); peak RSS in MiB (VmHWM of a fresh "
                 "process running that contender alone):")
    lines.append("")
    lines.extend(_speed_table(rows, peers, versions, notes))
    lines.extend(["", f"Output check: max |out - ORT| / max |ORT out| (tolerance "
                      f"{OUTPUT_REL_TOL:g}; (!) above it):", ""])
    lines.extend(_error_table(rows, peers))
    if context:
        lines.extend(["", context])
    if notes.texts:
        lines.append("")
        lines.extend(f"{notes.ref(text)} {text}" for text in notes.texts)
    return "\n".join(lines) + "\n"
