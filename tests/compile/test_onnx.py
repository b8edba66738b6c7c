"""ONNX export (dense and sparse-initializer) for every model family, checked in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from featherdeploy.compile.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx
from featherdeploy.compile.pipeline import CompileOptions, compile_model
from featherdeploy.compile.sparse_onnx import to_coo_sparse_tensor, with_sparse_initializers
from featherdeploy.train.models import build_model
from tests.compile.helpers import TinyNet, randomize_batchnorm_, sparsify_

ATOL = 1e-4  # the compile contract: |a - b| <= ATOL + RTOL * |b|
RTOL = 1e-4

FAMILIES = [  # (name, input shape): small inputs keep the test quick
    ("resnet20", (1, 28, 28)),
    ("mobilenet_v1", (3, 32, 32)),
    ("densenet40_24", (3, 32, 32)),
    ("resnet18", (3, 64, 64)),
]


def ort_run(path: Path | bytes, x: np.ndarray) -> np.ndarray:
    source = str(path) if isinstance(path, Path) else path
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, {INPUT_NAME: x})[0]


def test_coo_sparse_tensor_by_hand() -> None:
    dense = np.array([[0, 1.5, 0], [0, 0, -2]], dtype=np.float32)
    sparse = to_coo_sparse_tensor("w", dense)
    assert list(sparse.dims) == [2, 3]
    assert sparse.values.name == "w"
    assert numpy_helper.to_array(sparse.values).tolist() == [1.5, -2.0]
    assert sparse.indices.data_type == onnx.TensorProto.INT64
    assert list(sparse.indices.int64_data) == [1, 5]  # row-major linear positions


def test_dense_export_has_dynamic_batch_and_documented_names() -> None:
    model = sparsify_(TinyNet(), 0.5).eval()
    proto = export_onnx(model, (1, 12, 12), opset=13, ir_version=8)
    assert proto.ir_version == 8
    assert [i.name for i in proto.graph.input] == [INPUT_NAME]
    assert [o.name for o in proto.graph.output] == [OUTPUT_NAME]
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == "batch"
    assert "Identity" not in {node.op_type for node in proto.graph.node}
    x = np.random.default_rng(0).standard_normal((5, 1, 12, 12)).astype(np.float32)
    out = ort_run(proto.SerializeToString(), x)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize(("opset", "ir_version"), [(13, 7), (17, 8)])
def test_opset_and_ir_version_are_honoured(opset: int, ir_version: int) -> None:
    proto = export_onnx(sparsify_(TinyNet(), 0.5).eval(), (1, 12, 12), opset=opset,
                        ir_version=ir_version)
    assert proto.ir_version == ir_version
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", opset)]
    x = np.zeros((1, 1, 12, 12), dtype=np.float32)
    assert ort_run(proto.SerializeToString(), x).shape == (1, 10)


def test_sparse_initializer_model_equals_dense_in_ort() -> None:
    model = randomize_batchnorm_(sparsify_(TinyNet(), 0.9, seed=4)).eval()
    dense = export_onnx(model, (1, 12, 12))
    names = [node.input[1] for node in dense.graph.node if node.op_type in ("Conv", "Gemm")]
    sparse = with_sparse_initializers(dense, names)
    assert {s.values.name for s in sparse.graph.sparse_initializer} == set(names)
    assert not {i.name for i in sparse.graph.initializer} & set(names)
    x = np.random.default_rng(1).standard_normal((3, 1, 12, 12)).astype(np.float32)
    np.testing.assert_array_equal(ort_run(sparse.SerializeToString(), x),
                                  ort_run(dense.SerializeToString(), x))


@pytest.mark.parametrize(("name", "input_shape"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_model_family_compiles_and_matches_torch(tmp_path: Path, name: str,
                                                 input_shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = build_model(name, in_channels=input_shape[0], num_classes=10,
                        image_size=input_shape[1])
    model = randomize_batchnorm_(sparsify_(model, 0.9, seed=5), seed=6).eval()
    options = CompileOptions(verify_images=8, block_shapes=((1, 1), (4, 4)))
    result = compile_model(model, input_shape, tmp_path / "art", options)
    assert all(item["ok"] for item in result.report["verification"]["agreements"])
    x = np.random.default_rng(7).standard_normal((4, *input_shape)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    dense_out = ort_run(tmp_path / "art" / "model.onnx", x)
    np.testing.assert_allclose(dense_out, expected, atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(ort_run(tmp_path / "art" / "model.sparse.onnx", x), dense_out,
                               atol=ATOL, rtol=RTOL)
    assert (dense_out.argmax(1) == expected.argmax(1)).all()
    proto = onnx.load(str(tmp_path / "art" / "model.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    ops = {node.op_type for node in proto.graph.node}
    if name == "densenet40_24":  # pre-activation BN precedes convs and must stay
        assert "BatchNormalization" in ops
    else:
        assert "BatchNormalization" not in ops
