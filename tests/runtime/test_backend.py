"""Backend choice: auto delegates near-dense models to ONNX Runtime, keeps sparse ones native."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from runtime.engine import DENSE_DELEGATE_DENSITY, Engine, weight_density
from runtime.errors import EngineError, UnsupportedOpError

TOL = 1e-4


def _conv_model(path, sparsity: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    weight[rng.random(weight.shape) < sparsity] = 0.0
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 10, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 10, 10])],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return float(np.count_nonzero(weight)) / weight.size


def _ort(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None,
                                                                                  {"x": x})[0]


@pytest.mark.parametrize("sparsity, expected", [(0.0, "onnxruntime"), (0.9, "native")])
def test_auto_backend_by_density(tmp_path, monkeypatch, sparsity, expected):
    monkeypatch.setenv("FEATHERDEPLOY_BACKEND", "auto")
    path = tmp_path / "m.onnx"
    density = _conv_model(path, sparsity)
    engine = Engine(path, threads=1)
    assert weight_density(engine.graph) == pytest.approx(density)
    assert (density > DENSE_DELEGATE_DENSITY) == (expected == "onnxruntime")
    assert engine.backend == expected
    x = np.random.default_rng(1).standard_normal((3, 4, 10, 10)).astype(np.float32)
    np.testing.assert_allclose(engine.run(x), _ort(path, x), rtol=TOL, atol=TOL)


def test_explicit_backends_agree(tmp_path):
    path = tmp_path / "m.onnx"
    _conv_model(path, 0.0)
    x = np.random.default_rng(2).standard_normal((2, 4, 10, 10)).astype(np.float32)
    native = Engine(path, threads=2, backend="native")
    delegated = Engine(path, threads=2, backend="onnxruntime")
    assert (native.backend, delegated.backend) == ("native", "onnxruntime")
    np.testing.assert_allclose(native.run(x), delegated.run(x), rtol=TOL, atol=TOL)


def test_bad_backend_and_validation_before_delegation(tmp_path):
    path = tmp_path / "m.onnx"
    _conv_model(path, 0.0)
    with pytest.raises(EngineError, match="backend"):
        Engine(path, backend="gpu")
    model = onnx.load(path)
    model.graph.node.append(helper.make_node("Erf", ["y"], ["z"], name="erf"))
    model.graph.output[0].name = "z"
    onnx.save(model, path)
    with pytest.raises(UnsupportedOpError, match="Erf"):
        Engine(path, backend="onnxruntime")  # the graph is validated whichever backend runs it


def test_batch_one_thread_probe(tmp_path, monkeypatch):
    import runtime.engine as engine_module

    path = tmp_path / "m.onnx"
    _conv_model(path, 0.9)
    x = np.random.default_rng(3).standard_normal((1, 4, 10, 10)).astype(np.float32)
    engine = Engine(path, threads=2, backend="native")
    got = engine.run(x)
    assert engine._single_threads[(1, 4, 10, 10)] in (1, 2)
    np.testing.assert_allclose(got, _ort(path, x), rtol=TOL, atol=TOL)
    # A plan slower than the probe limit keeps every thread without being probed serially.
    monkeypatch.setattr(engine_module, "SERIAL_PROBE_MAX_S", 0.0)
    parallel_only = Engine(path, threads=2, backend="native")
    np.testing.assert_array_equal(parallel_only.run(x), got)
    assert parallel_only._single_threads[(1, 4, 10, 10)] == 2
    assert ((1, 4, 10, 10), 1, False) not in parallel_only._plans
