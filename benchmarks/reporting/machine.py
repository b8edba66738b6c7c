"""Describe the machine a benchmark ran on (CPU model, core count), for every table we publish.

Latency numbers mean nothing without the machine, so bench.json, the frontier and the ablation
reports all carry this record (docs/performance.md: compare ratios measured in one run).
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["MachineInfo", "machine_info", "cpu_model_name", "widest_simd"]

_CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class MachineInfo:
    """CPU model, logical cores usable by this process, OS and Python versions."""

    cpu_model: str
    cores: int
    simd: str
    system: str
    python: str

    def describe(self) -> str:
        """One line for table captions, e.g. 'AMD EPYC 9R14 (AVX-512), 2 cores, Linux 6.1'."""
        return f"{self.cpu_model} ({self.simd}), {self.cores} cores, {self.system}"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict."""
        return asdict(self)


def cpu_model_name(cpuinfo_text: str | None = None) -> str:
    """The 'model name' line of /proc/cpuinfo, else platform.processor(), else 'unknown CPU'."""
    if cpuinfo_text is None and _CPUINFO.exists():
        cpuinfo_text = _CPUINFO.read_text(encoding="utf-8", errors="replace")
    for line in (cpuinfo_text or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    return platform.processor() or "unknown CPU"


def widest_simd(cpuinfo_text: str | None = None) -> str:
    """Widest x86 vector extension listed in the cpuinfo 'flags' line (AVX-512, AVX2, ...)."""
    if cpuinfo_text is None and _CPUINFO.exists():
        cpuinfo_text = _CPUINFO.read_text(encoding="utf-8", errors="replace")
    flags: set[str] = set()
    for line in (cpuinfo_text or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags = set(value.split())
            break
    for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse2", "SSE2")):
        if flag in flags:
            return name
    return platform.machine() or "unknown ISA"


def _usable_cores() -> int:
    """Cores this process may run on (affinity mask when the OS offers it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def machine_info() -> MachineInfo:
    """Probe the current machine."""
    return MachineInfo(
        cpu_model=cpu_model_name(),
        cores=_usable_cores(),
        simd=widest_simd(),
        system=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
    )
