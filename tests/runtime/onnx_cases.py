"""Helpers for runtime tests: tiny ONNX graphs built by hand, ORT reference runs, tolerances."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["ATOL", "RTOL", "assert_close", "graph_model", "single_node_model", "save_model",
           "ort_run", "random_input", "conv_kernels"]

# The engine must match ONNX Runtime within |a - b| <= ATOL + RTOL * |b| (float32, different
# summation orders).
ATOL = 1e-4
RTOL = 1e-4


def assert_close(actual: np.ndarray, expected: np.ndarray, atol: float = ATOL,
                 rtol: float = RTOL) -> None:
    """Shape equal and every element within atol + rtol * |expected|."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == np.float32
    excess = np.abs(actual.astype(np.float64) - expected) - (atol + rtol * np.abs(expected))
    worst = float(excess.max()) if excess.size else 0.0
    assert worst <= 0.0, f"max violation {worst:.3g} (max |diff| " \
                         f"{float(np.abs(actual - expected).max()):.3g})"


def random_input(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def graph_model(nodes: list, x_shape: list | tuple, initializers: dict[str, np.ndarray],
                output: str = "y", opset: int = 13, name: str = "graph") -> onnx.ModelProto:
    """IR-8 model of ``nodes``: float32 input "x" (``x_shape``; str entries are symbolic dims),
    the named initializers, float32 output ``output`` (shape left to inference)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))
    y = helper.make_tensor_value_info(output, TensorProto.FLOAT, None)
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()]
    graph = helper.make_graph(nodes, name, [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def single_node_model(op: str, x_shape: tuple, y_shape: tuple | None = None,
                      initializers: dict[str, np.ndarray] | None = None,
                      inputs: list[str] | None = None, opset: int = 13,
                      **attrs) -> onnx.ModelProto:
    """Graph with one node: input "x" (float32, ``x_shape``; str entries are symbolic dims),
    the named initializers, output "y" (shape left to inference when ``y_shape`` is None)."""
    initializers = initializers or {}
    node = helper.make_node(op, inputs or ["x", *initializers], ["y"], name=f"{op.lower()}_0",
                            **attrs)
    model = graph_model([node], x_shape, initializers, opset=opset, name="single")
    if y_shape is not None:
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(y_shape))
        model.graph.output[0].CopyFrom(y)
    return model


def save_model(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def ort_run(path: Path, x: np.ndarray | dict[str, np.ndarray], threads: int = 1,
            output: str | None = None) -> np.ndarray:
    """ONNX Runtime's first output (or the output named ``output``) for one input array or a
    dict of inputs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = x if isinstance(x, dict) else {session.get_inputs()[0].name: x}
    return session.run([output] if output else None, feeds)[0]


def conv_kernels(engine, batch: int = 1) -> dict[str, str]:
    """Conv node name -> the kernel family its last native step runs ("csr", "bsr", "tiny",
    "direct", "jit"), from Engine.describe()."""
    families = {"conv_bsr": "bsr", "conv_tiny": "tiny", "conv_csr_direct": "direct",
                "conv_jit": "jit", "conv_csr": "csr", "conv_csr_strided": "csr"}
    kinds = {}
    for node in engine.describe(batch=batch).nodes:
        if node.op == "Conv" and node.steps:
            name = node.steps[-1].split(":")[0]
            kinds[node.node] = families.get(name, name)
    return kinds


def run_in_threads(worker: Callable[[int], None], count: int) -> list[BaseException]:
    """Runs worker(0) .. worker(count - 1) on their own threads at once; the exceptions they
    raised (a failed assertion in a thread does not fail the test by itself)."""
    errors: list[BaseException] = []

    def guarded(k: int) -> None:
        try:
            worker(k)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(k,)) for k in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors
