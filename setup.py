"""Build script: the native runtime extension `runtime._native` (pyproject.toml holds the metadata).

All native build flags live here. The hot kernels (`runtime/native/kernels/*.cpp`) are compiled once
per instruction set into their own C++ namespace (`isa_generic`, `isa_avx2`, `isa_avx512`);
`runtime/native/exec/isa.cpp` picks one at plan time (EngineOptions.isa, "auto" = the widest this
CPU runs). Everything else (the executor, the steps with their bindings, the code generator) is
compiled once. No `-march=native`: the wheel must run on the CPU it
is deployed to. On aarch64 NEON is baseline, so only the generic variant is built.
"""

from __future__ import annotations

import glob
import os
import platform

from pybind11.setup_helpers import Pybind11Extension
from setuptools import setup
from setuptools.command.build_ext import build_ext

NATIVE_DIR = os.path.join("runtime", "native")
COMMON_FLAGS = ["-O3", "-ffp-contract=fast", "-fno-math-errno", "-pthread"]
LINK_FLAGS = ["-pthread"]
DRIVER_DIRS = ("exec", "steps", "jit")  # plus module.cpp
ISA_DIR = "kernels"


def _sources(*parts: str) -> list[str]:
    return sorted(glob.glob(os.path.join(NATIVE_DIR, *parts)))


DRIVER_SOURCES = [os.path.join(NATIVE_DIR, "module.cpp")] + [
    src for folder in DRIVER_DIRS for src in _sources(folder, "*.cpp")]
ISA_SOURCES = _sources(ISA_DIR, "*.cpp")
HEADERS = _sources("*.h") + [
    h for folder in (*DRIVER_DIRS, ISA_DIR) for h in _sources(folder, "*.h")]
# name -> (floats per vector, target flags)
X86_VARIANTS = {
    "generic": (4, []),
    "avx2": (8, ["-mavx2", "-mfma"]),
    "avx512": (16, ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma"]),
}
PORTABLE_VARIANTS = {"generic": (4, [])}


def isa_variants() -> dict[str, tuple[int, list[str]]]:
    """The kernel variants this machine's architecture gets."""
    machine = platform.machine().lower()
    return X86_VARIANTS if machine in ("x86_64", "amd64") else PORTABLE_VARIANTS


class BuildWithIsaVariants(build_ext):
    """Compile ISA_SOURCES once per variant (own namespace and flags), then link them in."""

    def build_extension(self, ext):  # noqa: D102 - setuptools hook
        objects = []
        for name, (vlen, flags) in isa_variants().items():
            out_dir = os.path.join(self.build_temp, f"isa_{name}")
            objects += self.compiler.compile(
                ISA_SOURCES,
                output_dir=out_dir,
                macros=[("FD_NS", f"isa_{name}"), ("FD_VLEN", str(vlen))],
                include_dirs=ext.include_dirs + [NATIVE_DIR],
                extra_postargs=ext.extra_compile_args + flags,
                depends=ext.depends,
            )
        ext.extra_objects = list(ext.extra_objects or []) + objects
        super().build_extension(ext)


native = Pybind11Extension(
    "runtime._native",
    sources=DRIVER_SOURCES,
    include_dirs=[NATIVE_DIR],
    extra_compile_args=COMMON_FLAGS,
    extra_link_args=LINK_FLAGS,
    depends=HEADERS,
    cxx_std=17,
)

setup(ext_modules=[native], cmdclass={"build_ext": BuildWithIsaVariants})
