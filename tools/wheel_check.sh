#!/usr/bin/env bash
# `make test-wheel` (and the end of `make test`, so CI): the distribution as an edge CPU installs
# it. The tests import the checkout (featherdeploy/__init__.py maps the stage folders); this
# builds the wheel once, installs it with its core dependencies only (from the package index)
# into a fresh venv without system site-packages, and runs tools/wheel_check.py there, outside
# the checkout: no top-level train/compile/runtime, the engine and the `featherdeploy` command
# work and agree with ONNX Runtime, torch is neither installed nor imported.
#
# Environment: PY (python whose pip builds the wheel and whose base interpreter makes the venv;
# default .venv/bin/python; it needs setuptools, wheel and pybind11, as `make setup` installs),
# KEEP_WHEEL_CHECK=1 keeps the scratch folder. Time: the wheel build compiles the native
# extension (~5 min on 2 cores), then ~1 min.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
case "$PY" in /*) ;; */*) PY="$PWD/$PY" ;; esac
WORK="$(mktemp -d "${TMPDIR:-/tmp}/featherdeploy-wheel.XXXXXX")"
if [ "${KEEP_WHEEL_CHECK:-0}" = 1 ]; then
    echo "scratch folder kept: $WORK"
else
    trap 'rm -rf "$WORK"' EXIT
fi
START=$SECONDS
say() { printf '== [%3ds] %s\n' $((SECONDS - START)) "$*"; }

# 1. A copy of the working tree (tracked and untracked files, not ignored ones): a stale build/
# or an in-place extension of the checkout cannot leak into the wheel.
mkdir -p "$WORK/src"
git -C "$ROOT" ls-files -z --cached --others --exclude-standard \
    | tar -C "$ROOT" --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -C "$WORK/src" -xf -

# 2. The wheel. No build isolation: PY already has the build requirements, so nothing is
# downloaded for the build.
say "build the wheel (compiles the native extension)"
"$PY" -m pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation \
    --wheel-dir "$WORK/dist" "$WORK/src"
wheels=("$WORK"/dist/featherdeploy-*.whl)
[ -f "${wheels[0]}" ] || { echo "no featherdeploy wheel in $WORK/dist" >&2; exit 1; }
say "built $(basename "${wheels[0]}")"

# 3. A fresh venv (from PY's base interpreter, none of PY's packages) with the wheel and the core
# dependencies it declares.
"$PY" -m venv "$WORK/venv"
say "install the wheel and its dependencies into a fresh venv"
"$WORK/venv/bin/python" -m pip install --quiet --disable-pip-version-check "${wheels[0]}"

# 4. The checks, from the scratch folder (-I: no PYTHONPATH, no user site, no script folder).
say "run tools/wheel_check.py in that venv"
(cd "$WORK" && env -u PYTHONPATH "$WORK/venv/bin/python" -I "$ROOT/tools/wheel_check.py" "$WORK")
say "done"
