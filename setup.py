"""Build script: the package layout and the native runtime extension `featherdeploy.runtime._native`
(pyproject.toml holds the metadata).

Layout: the repository keeps its stage folders at the top (train/, compile/, runtime/); the
distribution installs them as featherdeploy.train, featherdeploy.compile and
featherdeploy.runtime (STAGES below), next to featherdeploy/ itself, and no top-level stage
package. `build_ext --inplace` puts the extension into runtime/ (package_dir maps it there).

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
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension
from setuptools import setup
from setuptools.command.build_ext import build_ext

PACKAGE = "featherdeploy"
# package name -> repository folder; subpackages follow their folders (featherdeploy.runtime.ops ->
# runtime/ops).
STAGES = {PACKAGE: "featherdeploy", f"{PACKAGE}.train": "train",
          f"{PACKAGE}.compile": "compile", f"{PACKAGE}.runtime": "runtime"}
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
        # setuptools decides to relink from the driver sources and headers only: an ISA object
        # newer than the extension (a kernel source changed) must relink it too.
        target = self.get_ext_fullpath(ext.name)
        if os.path.exists(target) and any(
                os.path.getmtime(o) > os.path.getmtime(target) for o in objects):
            os.remove(target)
        super().build_extension(ext)


def stage_packages() -> list[str]:
    """Every package of STAGES: each folder below a stage root that has an __init__.py."""
    packages = []
    for name, folder in STAGES.items():
        for init in sorted(Path(folder).rglob("__init__.py")):
            parts = init.parent.relative_to(folder).parts
            packages.append(".".join((name, *parts)))
    return packages


# The PyInit symbol is the name's last component (PyInit__native): module.cpp is unchanged.
native = Pybind11Extension(
    f"{PACKAGE}.runtime._native",
    sources=DRIVER_SOURCES,
    include_dirs=[NATIVE_DIR],
    extra_compile_args=COMMON_FLAGS,
    extra_link_args=LINK_FLAGS,
    depends=HEADERS,
    cxx_std=17,
)

# The runtime reads no data files at run time (the C++ sources are compiled into the
# extension): no package data. Without include_package_data=False setuptools would copy the
# sources under runtime/native/ into the wheel as data of featherdeploy.runtime (and warn that
# those folders look like packages). The sdist still carries them (extension sources/depends).
setup(packages=stage_packages(), package_dir=STAGES, include_package_data=False,
      ext_modules=[native], cmdclass={"build_ext": BuildWithIsaVariants})
