"""Describe the machine a benchmark ran on, for every table we publish.

The definition lives in the torch-free runtime (``runtime.machine``) so that ``featherdeploy
bench`` reports the same record; the report code imports it from here as before.
"""

from __future__ import annotations

from featherdeploy.runtime.machine import MachineInfo, cpu_model_name, machine_info, widest_simd

__all__ = ["MachineInfo", "machine_info", "cpu_model_name", "widest_simd"]
