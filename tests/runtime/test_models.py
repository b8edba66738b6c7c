"""Whole models: engine == ONNX Runtime for ResNet-20x2, MobileNetV1, DenseNet-40-24 and
torchvision ResNet-18 at 0-99% random unstructured sparsity, batch 1 and 7, threads 1 and 2.

Each family is exported once per module (torch, BN folded by the exporter); the sparsity variants
are made by zeroing conv weights directly in the ONNX initializers (stem conv kept dense), so the
matrix costs one export per family.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from featherdeploy.runtime import Engine, EngineOptions
from tests.runtime.onnx_cases import assert_close, conv_kernels, ort_run, random_input

# A folder of the families already exported (`{family}.onnx`, as _export writes them) replaces the
# export: `make test-aarch64` exports them on the host, as torch is not in the emulated Python.
MODELS_DIR = os.environ.get("FEATHERDEPLOY_TEST_MODELS")
if not MODELS_DIR:
    torch = pytest.importorskip("torch", reason="model tests export torch models")

SPARSITIES = (0.0, 0.5, 0.9, 0.95, 0.98, 0.99)
BATCHES = (1, 7)
THREADS = (1, 2)
IMAGE = (3, 32, 32)
FAMILIES = {
    "resnet20x2": ("resnet20", {"width": 2}),
    "mobilenet_v1": ("mobilenet_v1", {}),
    "densenet40_24": ("densenet40_24", {}),
    "resnet18": ("resnet18", {}),
}


def _export(family: str, path: Path) -> Path:
    from featherdeploy.train.models import build_model

    name, kwargs = FAMILIES[family]
    torch.manual_seed(0)
    model = build_model(name, in_channels=3, num_classes=10, image_size=32, **kwargs).eval()
    with torch.no_grad():  # non-trivial BN statistics, so folding is exercised
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.3, 0.3)
                module.running_var.uniform_(0.5, 1.5)
    torch.onnx.export(model, torch.randn(1, *IMAGE), str(path), dynamo=False, opset_version=13,
                      input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    proto = onnx.load(str(path))
    proto.ir_version = 8
    onnx.save(proto, str(path))
    return path


def sparsify(proto: onnx.ModelProto, sparsity: float, seed: int = 0) -> onnx.ModelProto:
    """Copy of ``proto``: a random fraction ``sparsity`` of each non-stem conv weight zeroed."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    conv_weights = {n.input[1] for n in out.graph.node if n.op_type == "Conv"}
    rng = np.random.default_rng(seed)
    for init in out.graph.initializer:
        w = numpy_helper.to_array(init)
        if init.name not in conv_weights or w.shape[1] <= 3:
            continue
        w = np.where(rng.random(w.shape) < sparsity, 0, w).astype(np.float32)
        init.CopyFrom(numpy_helper.from_array(w, init.name))
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, onnx.ModelProto]:
    if MODELS_DIR:
        return {f: onnx.load(str(Path(MODELS_DIR) / f"{f}.onnx")) for f in FAMILIES}
    folder = tmp_path_factory.mktemp("models")
    return {f: onnx.load(str(_export(f, folder / f"{f}.onnx"))) for f in FAMILIES}


def _check_family(exported, tmp_path, family):
    inputs = {b: random_input((b, *IMAGE), seed=b) for b in BATCHES}
    for sparsity in SPARSITIES:
        path = tmp_path / f"{family}_{sparsity}.onnx"
        onnx.save(sparsify(exported[family], sparsity), str(path))
        expected = {b: ort_run(path, x) for b, x in inputs.items()}
        for threads in THREADS:
            engine = Engine(path, threads=threads)
            for b, x in inputs.items():
                try:
                    assert_close(engine.run(x), expected[b])
                except AssertionError as exc:
                    where = f"{family} s={sparsity} B={b} T={threads}"
                    raise AssertionError(f"{where}: {exc}") from None


@pytest.mark.parametrize("family", list(FAMILIES))
def test_model_matches_ort(exported, tmp_path, family):
    _check_family(exported, tmp_path, family)


def to_sparse_initializers(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Copy with every conv weight moved to a COO sparse_initializer (linear indices)."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    conv_weights = {n.input[1] for n in out.graph.node if n.op_type == "Conv"}
    keep = []
    for init in out.graph.initializer:
        if init.name not in conv_weights:
            keep.append(init)
            continue
        w = numpy_helper.to_array(init)
        idx = np.flatnonzero(w).astype(np.int64)
        values = numpy_helper.from_array(w.reshape(-1)[idx], init.name)
        sparse = onnx.helper.make_sparse_tensor(values, numpy_helper.from_array(idx), w.shape)
        out.graph.sparse_initializer.append(sparse)
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep)
    return out


@pytest.mark.aarch64
def test_sparse_initializer_model_equals_dense(exported, tmp_path):
    dense = sparsify(exported["resnet20x2"], 0.95)
    dense_path, sparse_path = tmp_path / "dense.onnx", tmp_path / "sparse.onnx"
    onnx.save(dense, str(dense_path))
    sparse = to_sparse_initializers(dense)
    assert len(sparse.graph.sparse_initializer) > 0
    onnx.save(sparse, str(sparse_path))
    x = random_input((2, *IMAGE))
    expected = ort_run(dense_path, x)
    # One batch layout for both engines (auto times both per engine; they round differently).
    options = EngineOptions(threads=2, backend="native", batch_layout="interleaved")
    got = Engine(sparse_path, options=options).run(x)
    assert_close(got, expected)
    np.testing.assert_array_equal(got, Engine(dense_path, options=options).run(x))


def test_kernel_choice_follows_density(exported, tmp_path):
    """Dense convs run BSR, sparse ones CSR (planner/conv_select.py choose_conv_kernel). The CSR
    taps of a strided conv with <= 9 per output channel are read directly ("direct": at 95% a
    1x1 shortcut with 32 input channels, unless its input is on column segments, which depends
    on the vector width)."""
    for sparsity, expected in ((0.0, "bsr"), (0.95, "csr")):
        path = tmp_path / f"m{sparsity}.onnx"
        onnx.save(sparsify(exported["resnet20x2"], sparsity), str(path))
        choices = conv_kernels(Engine(path, threads=1))
        kinds = ["csr" if kind == "direct" else kind for kind in choices.values()]
        assert len(kinds) == 21  # the stem, 18 block convs, 2 shortcut 1x1 convs
        assert kinds.count(expected) >= len(kinds) - 1, choices  # the dense stem may differ


@pytest.mark.aarch64  # whole models vs ORT, and no generated code off x86-64 AVX-512
@pytest.mark.parametrize("family", ["resnet20x2", "mobilenet_v1"])
def test_generated_conv_code_in_batch_groups_matches_ort(exported, tmp_path, family):
    """Batches of 16+ images run as interleaved groups of 16, whose convs run on code generated
    for their weights (runtime/native/jit/jit_x86.cpp) where it pays: equal to ONNX Runtime, and
    bit for bit equal to the CSR kernel (EngineOptions(jit=False))."""
    from featherdeploy.runtime import _native

    x = random_input((33, *IMAGE), seed=3)  # two groups of 16 and one image on its own
    for sparsity in (0.9, 0.95):
        path = tmp_path / f"{family}_{sparsity}.onnx"
        onnx.save(sparsify(exported[family], sparsity), str(path))
        expected = ort_run(path, x)
        for threads in THREADS:
            options = EngineOptions(threads=threads, backend="native",
                                    batch_layout="interleaved")
            engine = Engine(path, options=options)
            got = engine.run(x)
            assert_close(got, expected)
            generates = _native.native_isa() == "avx512" and sys.platform.startswith("linux")
            assert ("jit" in conv_kernels(engine, batch=33).values()) == generates
            csr = Engine(path, options=replace(options, jit=False))
            np.testing.assert_array_equal(csr.run(x), got)
