#!/usr/bin/env bash
# `make test-aarch64`: build featherdeploy.runtime._native for aarch64 from the current working
# tree and run the tests marked `aarch64` (pyproject.toml) under qemu-user emulation, on an x86-64
# Debian machine, from Debian and PyPI packages only. Needs root the first time (apt-get, mmdebstrap).
#
# How, without binfmt_misc, a chroot or a VM:
#   - sysroot: Debian arm64 python3, its headers and libstdc++, extracted by mmdebstrap
#     --variant=extract (nothing arm64 runs to make it) into the cache;
#   - site: PyPI manylinux aarch64 wheels (tools/aarch64/requirements.txt), installed by the
#     host's pip with --platform into the cache;
#   - qemu-aarch64-static runs the arm64 python with QEMU_LD_PREFIX=sysroot: absolute paths
#     resolve in the sysroot first, then on the host. QEMU_CPU is a Cortex-A72 (Raspberry Pi 4:
#     ARMv8.0 + NEON), so an instruction newer than the baseline fails as SIGILL;
#   - the extension: setup.py, unchanged, run by that emulated python, so it sees
#     platform.machine() == "aarch64" and arm64 sysconfig (compiler aarch64-linux-gnu-gcc, suffix
#     .cpython-3XX-aarch64-linux-gnu.so). That compiler is Debian's cross compiler, a host binary
#     (without binfmt_misc the emulated python can only start host binaries): full-speed builds;
#   - models: the families of tests/runtime/test_models.py exported on the host (torch is not in
#     the emulated python) and read from FEATHERDEPLOY_TEST_MODELS.
# The emulated python cannot start arm64 programs (no binfmt_misc), so tests that run
# `sys.executable` in a subprocess are not in the `aarch64` subset.
#
# Environment: PY (host python with torch, default .venv/bin/python), FD_AARCH64_CACHE (sysroot
# and wheels, default ~/.cache/featherdeploy-aarch64, shared by clones), QEMU_CPU (default
# cortex-a72), PYTEST_ARGS (default "-m aarch64 tests/runtime"). Scratch: build/aarch64 (the
# copy of the tree that is built and tested, the exported models, build.log).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
case "$PY" in /*) ;; */*) PY="$PWD/$PY" ;; esac
CACHE="${FD_AARCH64_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/featherdeploy-aarch64}"
WORK="$ROOT/build/aarch64"
SYSROOT="$CACHE/sysroot"
SITE="$CACHE/site"
export QEMU_CPU="${QEMU_CPU:-cortex-a72}"
SUITE="$(. /etc/os-release && echo "$VERSION_CODENAME")"
DEB_PACKAGES="python3 libpython3-dev libstdc++6"
START=$SECONDS
say() { printf '== [%3ds] %s\n' $((SECONDS - START)) "$*"; }

[ "$(uname -m)" = x86_64 ] || { echo "test-aarch64 runs on an x86-64 host" >&2; exit 1; }
mkdir -p "$CACHE" "$WORK"

# 1. Host tools (Debian): the emulator, the cross compiler, the sysroot maker, ccache.
need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v ccache >/dev/null || need+=(ccache)
if [ ${#need[@]} -gt 0 ]; then
    say "apt-get install ${need[*]}"
    [ "$(id -u)" = 0 ] || { echo "run as root, or: sudo apt-get install ${need[*]}" >&2; exit 1; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# 2. The arm64 sysroot, rebuilt when the suite or the package list changes.
key="$SUITE $DEB_PACKAGES"
if [ "$(cat "$SYSROOT/.fd-key" 2>/dev/null)" != "$key" ]; then
    say "sysroot: Debian $SUITE arm64 ($DEB_PACKAGES)"
    rm -rf "$SYSROOT" "$SYSROOT.tmp"
    # ${FD_AARCH64_MIRROR} (a mirror URI or sources file) replaces Debian's default mirrors.
    mmdebstrap --quiet --variant=extract --mode=root --architectures=arm64 --skip=check/qemu \
        --include="${DEB_PACKAGES// /,}" "$SUITE" "$SYSROOT.tmp" ${FD_AARCH64_MIRROR:-}
    # An empty /tmp there would take the emulated python's temporary files away from the host's.
    rmdir "$SYSROOT.tmp/tmp" 2>/dev/null || true
    echo "$key" > "$SYSROOT.tmp/.fd-key"
    mv "$SYSROOT.tmp" "$SYSROOT"
fi
# qemu 7.2 shows the guest the host's x86 /proc/cpuinfo; ONNX Runtime's cpuinfo cannot parse it
# and crashes on import. The sysroot's copy (QEMU_LD_PREFIX) comes first: describe the emulated
# CPU (a Cortex-A72) once per host processor, as /sys/devices/system/cpu lists them.
mkdir -p "$SYSROOT/proc"
for ((i = 0; i < $(getconf _NPROCESSORS_CONF); i++)); do
    printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$i"
    printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n'
    printf 'CPU revision\t: 3\n\n'
done > "$SYSROOT/proc/cpuinfo"

# The emulated python (arguments as for python).
apy() {
    QEMU_LD_PREFIX="$SYSROOT" PYTHONPATH="$SITE${PYTHONPATH_EXTRA:+:$PYTHONPATH_EXTRA}" \
        qemu-aarch64-static "$SYSROOT/usr/bin/python3" "$@"
}
read -r PYVER GLIBC < <(apy -c 'import platform, sys
print("%d.%d" % sys.version_info[:2], platform.libc_ver()[1])') || true
[ -n "${GLIBC:-}" ] || { echo "the emulated python does not start (sysroot $SYSROOT)" >&2; exit 1; }

# 3. PyPI aarch64 wheels for that python, rebuilt when requirements.txt changes.
REQ="$ROOT/tools/aarch64/requirements.txt"
key="$PYVER $GLIBC $(sha256sum < "$REQ")"
if [ "$(cat "$SITE/.fd-key" 2>/dev/null)" != "$key" ]; then
    say "site: PyPI aarch64 wheels for python $PYVER, glibc $GLIBC"
    rm -rf "$SITE" "$SITE.tmp"
    # Every manylinux tag this glibc runs (pip does not widen a manylinux_2_X tag by itself).
    platforms=(--platform manylinux2014_aarch64)
    for ((v = 17; v <= ${GLIBC#2.}; v++)); do platforms+=(--platform "manylinux_2_${v}_aarch64"); done
    "$PY" -m pip install --quiet --target "$SITE.tmp" --only-binary=:all: "${platforms[@]}" \
        --implementation cp --python-version "$PYVER" --abi "cp${PYVER/./}" -r "$REQ" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; }
    echo "$key" > "$SITE.tmp/.fd-key"
    mv "$SITE.tmp" "$SITE"
fi
say "cache ready: $CACHE"

# 4. A copy of the working tree (tracked and untracked files, not ignored ones: no x86 build).
rm -rf "$WORK/src" && mkdir -p "$WORK/src"
git -C "$ROOT" ls-files -z --cached --others --exclude-standard \
    | tar -C "$ROOT" --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -C "$WORK/src" -xf -
PYTHONPATH_EXTRA="$WORK/src"

# 5. Build the extension: setup.py under emulation, the cross compiler on the host. Python.h
# comes from the sysroot; its pyconfig.h includes <aarch64-linux-gnu/python3.X/pyconfig.h>,
# found last (-idirafter), after the cross toolchain's own headers. The compiler names come
# first on PATH as ccache (which hashes each source with its headers and flags): unchanged
# sources are not compiled again.
say "build featherdeploy.runtime._native for aarch64 (setup.py build_ext, aarch64-linux-gnu-g++)"
mkdir -p "$CACHE/ccache-bin"
for cc in aarch64-linux-gnu-gcc aarch64-linux-gnu-g++; do
    ln -sf "$(command -v ccache)" "$CACHE/ccache-bin/$cc"
done
if ! (cd "$WORK/src" && export PATH="$CACHE/ccache-bin:$PATH" CCACHE_DIR="$CACHE/ccache" \
        CPPFLAGS="-I$SYSROOT/usr/include/python$PYVER -idirafter $SYSROOT/usr/include" \
        && apy setup.py build_ext --inplace) > "$WORK/build.log" 2>&1; then
    cat "$WORK/build.log"; echo "aarch64 build failed (log: $WORK/build.log)" >&2; exit 1
fi
grep -E '(warning|error):' "$WORK/build.log" || true  # compiler diagnostics

# 6. The model families of test_models.py, exported on the host (torch), for the emulated run.
say "export model families on the host"
rm -rf "$WORK/models" && mkdir -p "$WORK/models"
(cd "$ROOT" && "$PY" -c 'import sys
from pathlib import Path
from tests.runtime.test_models import FAMILIES, _export
for family in FAMILIES:
    _export(family, Path(sys.argv[1]) / f"{family}.onnx")' "$WORK/models")

# 7. What the tests run on, then the tests.
say "tests under qemu-aarch64 (QEMU_CPU=$QEMU_CPU)"
cd "$WORK/src"
export FEATHERDEPLOY_TEST_MODELS="$WORK/models"
apy tools/aarch64/preflight.py "$WORK/models/resnet20x2.onnx"
# Left out: assertions on the plan's structure that hold only for 16-float vectors (AVX-512);
# the same cases fail on x86-64 with the generic or AVX2 variant. Their numbers are checked first.
width16=(--deselect "tests/runtime/test_activations.py::test_fused_activation_equals_ort[segments-")
# shellcheck disable=SC2086  # PYTEST_ARGS is a list of words
apy -m pytest -p no:cacheprovider --durations=10 ${PYTEST_ARGS:--m aarch64 tests/runtime} \
    "${width16[@]}"
say "done"
