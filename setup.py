"""Build script: the native runtime extension `runtime._native` (pyproject.toml holds the metadata).

All native build flags live here. The hot kernels (ISA_SOURCES) are compiled once per instruction
set into their own C++ namespace (`isa_generic`, `isa_avx2`, `isa_avx512`); `runtime/native/isa.cpp`
picks one at run time from the CPU it runs on. No `-march=native`: the wheel must run on the CPU it
is deployed to. On aarch64 NEON is baseline, so only the generic variant is built.
"""

from __future__ import annotations

import os
import platform

from pybind11.setup_helpers import Pybind11Extension
from setuptools import setup
from setuptools.command.build_ext import build_ext

NATIVE_DIR = os.path.join("runtime", "native")
COMMON_FLAGS = ["-O3", "-ffp-contract=fast", "-fno-math-errno", "-pthread"]
LINK_FLAGS = ["-pthread"]
DRIVER_SOURCES = ["module.cpp", "plan.cpp", "wavefront.cpp", "conv_step.cpp", "eltwise.cpp",
                  "pool.cpp", "gemm.cpp", "isa.cpp", "jit_x86.cpp"]
ISA_SOURCES = ["conv_csr.cpp", "conv_bsr.cpp", "phase_split.cpp", "segments.cpp", "conv_tiny.cpp",
               "gemm_dot.cpp"]
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
                [os.path.join(NATIVE_DIR, src) for src in ISA_SOURCES],
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
    sources=[os.path.join(NATIVE_DIR, src) for src in DRIVER_SOURCES],
    include_dirs=[NATIVE_DIR],
    extra_compile_args=COMMON_FLAGS,
    extra_link_args=LINK_FLAGS,
    depends=[os.path.join(NATIVE_DIR, h) for h in
             ("common.h", "simd.h", "conv_kernels.h", "conv_epilogue.h", "conv_step.h", "plan.h",
              "jit_x86.h")],
    cxx_std=17,
)

setup(ext_modules=[native], cmdclass={"build_ext": BuildWithIsaVariants})
