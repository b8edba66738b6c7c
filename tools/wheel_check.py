"""Run inside the fresh venv of tools/wheel_check.sh, where only the wheel and its core
dependencies are installed: what an edge CPU gets from ``pip install featherdeploy``.

Usage: python -I tools/wheel_check.py WORK_DIR   (from WORK_DIR, never from the checkout)

Checks: no top-level ``train``/``compile``/``runtime`` package; featherdeploy comes from the
venv; torch is not installed; the engine runs a small sparse conv model natively and matches
ONNX Runtime; ``featherdeploy describe|run|bench|--help`` and ``python -m featherdeploy.runtime``
work; an unknown subcommand exits 2, and so does compile (torch missing), with a hint; nothing
imported torch. Exits non-zero on the first failure.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np

STAGES = ("train", "compile", "runtime")
TOLERANCE = 1e-4  # |a - b| <= TOLERANCE * (1 + |b|), as the engine's own tests against ORT


def fail(message: str) -> None:
    print(f"wheel check FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def check_layout(venv_prefix: str) -> None:
    """Only featherdeploy.* is installed, from this venv, without torch."""
    for name in STAGES:
        if importlib.util.find_spec(name) is not None:
            fail(f"`import {name}` works: the wheel installs a top-level {name!r} package")
    import featherdeploy.runtime

    where = Path(featherdeploy.runtime.__file__).resolve()
    if not where.is_relative_to(Path(venv_prefix).resolve()):
        fail(f"featherdeploy.runtime comes from {where}, not from the venv {venv_prefix}")
    for name in STAGES:
        if importlib.util.find_spec(f"featherdeploy.{name}") is None:
            fail(f"featherdeploy.{name} is missing from the wheel")
    if importlib.util.find_spec("torch") is not None:
        fail("torch is installed: a core dependency pulled it in")
    print(f"layout ok: featherdeploy {featherdeploy.__version__} at {where.parent}")


def write_model(path: Path) -> None:
    """A tiny CNN with 80%-zero conv weights (Conv-Relu-Conv-GlobalAveragePool-Flatten-Gemm)."""
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(0)

    def sparse(*shape: int) -> np.ndarray:
        w = rng.standard_normal(shape).astype(np.float32)
        return np.where(rng.random(shape) < 0.8, 0.0, w).astype(np.float32)

    weights = {"w1": sparse(8, 3, 3, 3), "b1": rng.standard_normal(8).astype(np.float32),
               "w2": sparse(8, 8, 3, 3), "wf": rng.standard_normal((10, 8)).astype(np.float32),
               "bf": rng.standard_normal(10).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c2"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "wheel_check",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])],
        initializer=[numpy_helper.from_array(w, name) for name, w in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # what the project's ONNX Runtime versions all load
    save(model, str(path))


def ort_reference(model: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def assert_close(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    error = np.abs(actual - expected) - TOLERANCE * (1 + np.abs(expected))
    if actual.shape != expected.shape or error.max() > 0:
        fail(f"{what} differs from ONNX Runtime (max excess {error.max():.3g})")


def check_engine(model: Path, x: np.ndarray) -> None:
    """The Python API on the native backend: every node native, same answer as ORT."""
    from featherdeploy.runtime import Engine, native_isa

    engine = Engine(model, threads=2, backend="native")
    assert_close(engine.run(x), ort_reference(model, x), "Engine.run")
    coverage = engine.coverage()
    if coverage is None or coverage.ort_nodes:
        fail(f"not every node ran natively ({coverage and coverage.ort_summary()})")
    print(f"engine ok: {coverage.native_nodes} nodes native, isa {native_isa()}")


def command(*argv: str, expect: int = 0) -> str:
    """Run a command of the venv (its bin/ next to this python); its stdout."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if done.returncode != expect:
        fail(f"`{' '.join(argv)}` exited {done.returncode}, expected {expect}:\n"
             f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout + done.stderr


def check_commands(work: Path, model: Path, x: np.ndarray) -> None:
    fd = str(Path(sys.executable).with_name("featherdeploy"))
    listing = command(fd, "--help")
    missing = [name for name in ("train", "compile", "run", "describe", "bench")
               if name not in listing]
    if missing:
        fail(f"`featherdeploy --help` does not list {missing}")
    command(fd, "no-such-subcommand", expect=2)
    command(fd, "train", "--help")  # the stage's own parser; it imports torch only to train
    if "featherdeploy[train]" not in command(fd, "compile", str(work / "no-run"), "--out",
                                             str(work / "artifacts"), expect=2):
        fail("`featherdeploy compile` without torch does not say to install the train extra")
    if "| Conv | native |" not in command(fd, "describe", str(model), "--backend", "native"):
        fail("`featherdeploy describe` does not show native Conv nodes")
    np.save(work / "x.npy", x)
    command(fd, "run", str(model), "--input", str(work / "x.npy"), "--output",
            str(work / "y.npy"), "--backend", "native", "--threads", "1")
    assert_close(np.load(work / "y.npy"), ort_reference(model, x), "featherdeploy run")
    # Peak memory on: its child process must find featherdeploy in the venv too.
    command(fd, "bench", str(model), "--batch", "1", "--threads", "1", "--rounds", "1",
            "--warmup", "0", "--json", str(work / "bench.json"))
    command(sys.executable, "-m", "featherdeploy.runtime", "describe", str(model))
    print("commands ok: featherdeploy --help, describe, run, bench; python -m "
          "featherdeploy.runtime")


def main(work: Path) -> int:
    check_layout(sys.prefix)
    model = work / "model.onnx"
    write_model(model)
    x = np.random.default_rng(1).standard_normal((2, 3, 12, 12)).astype(np.float32)
    check_engine(model, x)
    check_commands(work, model, x)
    if any(m == "torch" or m.startswith("torch.") for m in sys.modules):
        fail("torch was imported")
    print("wheel check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
