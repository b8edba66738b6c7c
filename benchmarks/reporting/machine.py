"""Describe the machine a benchmark ran on, for every table we publish.

The definition lives in the torch-free runtime (``runtime.machine``) so that ``featherdeploy
bench`` reports the same record; the report code imports it from here as before.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from featherdeploy.runtime.machine import MachineInfo, cpu_model_name, machine_info, widest_simd

__all__ = ["MachineInfo", "machine_info", "cpu_model_name", "widest_simd", "cpu_description",
           "cpu_line", "checkout_commit"]

REPO_ROOT = Path(__file__).resolve().parents[2]


def _lscpu() -> dict[str, str]:
    """``lscpu``'s 'Key: value' lines, or {} where it is missing."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=30,
                              env=dict(os.environ, LC_ALL="C")).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def cpu_description(lscpu: Mapping[str, str] | None = None) -> dict[str, Any]:
    """CPU model (lscpu 'Model name', else /proc/cpuinfo), logical CPUs, physical cores, SIMD."""
    fields = _lscpu() if lscpu is None else lscpu
    info = machine_info()
    try:
        cores = int(fields["Core(s) per socket"]) * int(fields.get("Socket(s)", "1"))
    except (KeyError, ValueError):
        cores = None
    return {"cpu_model": fields.get("Model name") or info.cpu_model,
            "logical_cpus": int(fields.get("CPU(s)", info.cores)), "cores": cores,
            "usable_cpus": info.cores, "simd": info.simd, "system": info.system}


def checkout_commit() -> str:
    """Short commit of this checkout (+dirty with uncommitted changes), or 'unknown'."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True,
                              text=True, timeout=30, check=True).stdout.strip()
    try:
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_line(cpu: Mapping[str, Any] | None = None) -> str:
    """'CPU: <model> (<SIMD>), N logical CPUs, M cores; <system>' for a table's first line."""
    cpu = cpu_description() if cpu is None else cpu
    cores = f", {cpu['cores']} cores" if cpu.get("cores") else ""
    return (f"CPU: {cpu['cpu_model']} ({cpu['simd']}), {cpu['logical_cpus']} logical CPUs"
            f"{cores}; {cpu['system']}")

