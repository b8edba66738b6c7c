"""The machine and software a measurement ran on: CPU model, cores, vector ISA, versions.

Latency numbers mean nothing without the machine, so the bench JSON, bench.json, the frontier
and the ablation reports all carry this record (docs/benchmarking.md). Torch-free and cheap:
versions come from package metadata, nothing heavy is imported.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from featherdeploy.runtime.options import default_threads

__all__ = ["MachineInfo", "machine_info", "cpu_model_name", "widest_simd", "package_versions",
           "VERSIONED_PACKAGES"]

_CPUINFO = Path("/proc/cpuinfo")
# The distributions whose versions explain a number: ours, the baseline, and what both use.
VERSIONED_PACKAGES = ("featherdeploy", "onnxruntime", "onnx", "numpy", "scipy")


@dataclass(frozen=True)
class MachineInfo:
    """CPU model, logical cores usable by this process, OS and Python versions."""

    cpu_model: str
    cores: int
    simd: str
    system: str
    python: str
    arch: str = ""

    def describe(self) -> str:
        """One line for table captions, e.g. 'AMD EPYC 9R14 (AVX-512), 2 cores, Linux 6.1'."""
        return f"{self.cpu_model} ({self.simd}), {self.cores} cores, {self.system}"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict."""
        return asdict(self)


def _cpuinfo_text() -> str:
    try:
        return _CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _lscpu_model() -> str:
    """'Model name' from lscpu (aarch64 /proc/cpuinfo has no model name line)."""
    lscpu = shutil.which("lscpu")
    if lscpu is None:
        return ""
    try:
        out = subprocess.run([lscpu], capture_output=True, text=True, timeout=5,
                             env={**os.environ, "LC_ALL": "C"}).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name" and value.strip() not in ("", "-"):
            return value.strip()
    return ""


def cpu_model_name(cpuinfo_text: str | None = None) -> str:
    """The 'model name' line of /proc/cpuinfo, else lscpu's 'Model name' (probed only when
    reading the live machine), else platform.processor(), else 'unknown CPU'."""
    live = cpuinfo_text is None
    text = _cpuinfo_text() if live else cpuinfo_text
    for line in (text or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    return (live and _lscpu_model()) or platform.processor() or "unknown CPU"


def widest_simd(cpuinfo_text: str | None = None) -> str:
    """Widest vector extension in the cpuinfo flags (AVX-512, AVX2, ..., NEON on aarch64)."""
    text = _cpuinfo_text() if cpuinfo_text is None else cpuinfo_text
    flags: set[str] = set()
    for line in (text or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags = set(value.split())
            break
    for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse2", "SSE2"),
                       ("asimd", "NEON")):
        if flag in flags:
            return name
    return platform.machine() or "unknown ISA"


def machine_info() -> MachineInfo:
    """Probe the current machine."""
    return MachineInfo(
        cpu_model=cpu_model_name(),
        cores=default_threads(),
        simd=widest_simd(),
        system=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
        arch=platform.machine(),
    )


def package_versions(names: tuple[str, ...] = VERSIONED_PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (None when it is not installed), and Python's.

    Read from package metadata, so nothing is imported; a source checkout that was never
    installed reports featherdeploy as None.
    """
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    return versions
