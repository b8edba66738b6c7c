"""Every activation the engine maps to a native kind (runtime/ops/activation.py), standalone and
fused into the preceding conv on each conv path (planar, column segments, two threads, the
interleaved CSR kernel, generated code, the tiny-plane GEMM, the direct strided loop), against
ONNX Runtime; fused equals unfused; NaN in gives NaN out."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from featherdeploy.runtime import Engine, EngineOptions, _native
from tests.runtime.onnx_cases import (
    assert_close,
    graph_model,
    ort_run,
    random_input,
    save_model,
)

pytestmark = pytest.mark.aarch64  # the SIMD activations, also on aarch64 (make test-aarch64)

# op -> (attributes, extra initializers by input position) with non-default parameters.
ACTIVATIONS = {
    "Relu": ({}, {}),
    "Clip": ({}, {1: np.float32(-0.5), 2: np.float32(1.5)}),
    "LeakyRelu": ({"alpha": 0.1}, {}),
    "PRelu": ({}, {1: "slopes"}),
    "Sigmoid": ({}, {}),
    "HardSigmoid": ({"alpha": 0.3, "beta": 0.4}, {}),
    "Tanh": ({}, {}),
    "Elu": ({"alpha": 0.7}, {}),
    "HardSwish": ({}, {}),
    "Mish": ({}, {}),
    "Gelu": ({}, {}),
}
# The first opset with every operator above (HardSwish 14, Mish 18, Gelu 20).
OPSET = 20
NATIVE_OPTIONS = EngineOptions(backend="native", batch_layout="interleaved")
# Floats per vector of the kernels these options run (16 on AVX-512, 8 on AVX2, 4 on NEON/SSE2).
VECTOR_FLOATS = _native.vector_floats(NATIVE_OPTIONS.isa)


def _activation(op: str, x: str, y: str, channels: int, inits: dict) -> object:
    attrs, extra = ACTIVATIONS[op]
    inputs = [x]
    for position in sorted(extra):
        name = f"{y}_p{position}"
        value = extra[position]
        if isinstance(value, str):  # PRelu: one slope per channel, some positive
            value = np.linspace(-0.5, 1.5, channels, dtype=np.float32).reshape(channels, 1, 1)
        inits[name] = np.asarray(value, np.float32)
        inputs.append(name)
    return helper.make_node(op, inputs, [y], name=f"{y}_act", **attrs)


def _conv_act(op: str, cin: int, cout: int, kernel: int, group: int = 1, stride: int = 1,
              density: float = 0.5, expose_conv: bool = False, chain: bool = False):
    """x -> Conv(+bias) -> activation -> y (and the conv output too, which blocks fusion); with
    ``chain`` a second 3x3 conv and a pool follow (convs feeding convs run on column
    segments)."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((cout, cin // group, kernel, kernel)).astype(np.float32)
    w[rng.random(w.shape) >= density] = 0.0
    inits = {"w": w, "b": rng.standard_normal(cout).astype(np.float32)}
    pad = kernel // 2
    act_out = "a" if chain else "y"
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", group=group,
                              pads=[pad] * 4, strides=[stride, stride]),
             _activation(op, "c", act_out, cout, inits)]
    if chain:
        w2 = rng.standard_normal((cout, cout, 3, 3)).astype(np.float32)
        w2[rng.random(w2.shape) >= density] = 0.0
        inits["w2"] = w2
        nodes += [helper.make_node("Conv", ["a", "w2"], ["c2"], name="conv2", pads=[1] * 4),
                  helper.make_node("GlobalAveragePool", ["c2"], ["y"], name="pool")]
    model = graph_model(nodes, ["N", cin, "H", "W"], inits, name="conv_act", opset=OPSET)
    if expose_conv:
        model.graph.output.append(helper.make_tensor_value_info("c", 1, None))
    return model


# (name, cin, cout, kernel, group, stride, density, batch, hw, threads); "segments": rows of two
# vectors, which cut into column segments of 2 positions at every vector width (1 to
# pair_chunk_vectors / 2 positions do: 4 at V = 16, 2 at V = 8 and 4).
CONV_PATHS = [
    ("planar_1_thread", 8, 12, 3, 1, 1, 0.5, 1, (9, 13), 1),
    ("segments", 8, 12, 3, 1, 1, 0.3, 1, (6, 2 * VECTOR_FLOATS), 1),
    ("planar_2_threads", 8, 12, 3, 1, 1, 0.5, 1, (20, 20), 2),
    ("interleaved_csr", 8, 12, 3, 1, 1, 0.15, 16, (6, 7), 1),
    ("interleaved_jit", 24, 32, 3, 1, 1, 0.5, 16, (6, 7), 2),
    ("tiny_gemm", 24, 20, 1, 1, 1, 1.0, 2, (2, 2), 1),
    ("direct_strided", 16, 16, 3, 16, 2, 0.15, 1, (9, 9), 1),
    # rows of 35 outputs: whole vectors whose stride-2 taps share their loads
    ("direct_strided", 16, 16, 3, 16, 2, 1.0, 1, (5, 70), 1),
]


def _check_fused(tmp_path, op, path_case, options=NATIVE_OPTIONS):
    name, cin, cout, kernel, group, stride, density, batch, hw, threads = path_case
    chain = name == "segments"
    path = save_model(_conv_act(op, cin, cout, kernel, group, stride, density, chain=chain),
                      tmp_path / "m.onnx")
    x = random_input((batch, cin, *hw), seed=3)
    jit = options.jit and name != "interleaved_csr"  # that case checks the CSR kernel
    engine = Engine(path, options=EngineOptions(**{**vars(options), "threads": threads,
                                                   "jit": jit}))
    got = engine.run(x)
    assert_close(got, ort_run(path, x))
    steps = {n.node: n.steps for n in engine.describe(batch, {"x": x.shape}).nodes}
    assert steps["a_act" if chain else "y_act"] == ["fused into conv"], steps
    return engine, got, steps["conv"]


@pytest.mark.parametrize("op", list(ACTIVATIONS))
@pytest.mark.parametrize("case", CONV_PATHS, ids=[c[0] for c in CONV_PATHS])
def test_fused_activation_equals_ort(tmp_path, op, case):
    _, _, conv_steps = _check_fused(tmp_path, op, case)
    expected = {"segments": "segments", "interleaved_csr": "conv_csr_strided",
                "tiny_gemm": "conv_tiny", "direct_strided": "conv_csr_direct"}.get(case[0])
    if expected:
        assert any(expected in s for s in conv_steps), conv_steps


@pytest.mark.parametrize("op", list(ACTIVATIONS))
def test_generated_code_applies_the_activation(tmp_path, op):
    """On AVX-512 the interleaved conv runs on generated tiles; their outputs, activation
    included, equal the CSR kernel's bit for bit."""
    if _native.native_isa() != "avx512":
        pytest.skip("the code generator targets x86-64 AVX-512 (not this CPU)")
    case = CONV_PATHS[4]
    engine, got, steps = _check_fused(tmp_path, op, case)
    assert any(s.startswith("conv_jit") for s in steps), steps
    csr_options = EngineOptions(backend="native", batch_layout="interleaved", jit=False)
    _, csr, csr_steps = _check_fused(tmp_path, op, case, csr_options)
    assert not any(s.startswith("conv_jit") for s in csr_steps)
    np.testing.assert_array_equal(got, csr)


@pytest.mark.parametrize("op", list(ACTIVATIONS))
@pytest.mark.parametrize("shape", [(2, 5, 7, 9), (3, 7), (2, 6, 11), (1, 3, 2, 2, 5)], ids=str)
def test_standalone_activation_equals_ort(tmp_path, op, shape):
    inits: dict = {}
    node = _activation(op, "x", "y", shape[1], inits)
    if op == "PRelu":  # slopes along axis 1 of this rank
        inits[node.input[1]] = np.linspace(-0.5, 1.5, shape[1], dtype=np.float32).reshape(
            (shape[1],) + (1,) * (len(shape) - 2))
    model = graph_model([node], list(shape), inits, name="act", opset=OPSET)
    path = save_model(model, tmp_path / "a.onnx")
    x = random_input(shape, seed=5) * np.float32(3.0)
    for threads in (1, 2):
        engine = Engine(path, options=EngineOptions(backend="native", threads=threads))
        assert_close(engine.run(x), ort_run(path, x))
        report = engine.describe(input_shapes={"x": shape})
        assert [n.device for n in report.nodes] == ["native"]


@pytest.mark.parametrize("op", list(ACTIVATIONS))
def test_fused_equals_unfused(tmp_path, op):
    """With the conv's output also a graph output the activation cannot fuse and runs as its
    own step: same result as the fused epilogue."""
    fused_path = save_model(_conv_act(op, 8, 12, 3), tmp_path / "fused.onnx")
    plain_path = save_model(_conv_act(op, 8, 12, 3, expose_conv=True), tmp_path / "plain.onnx")
    x = random_input((3, 8, 10, 11), seed=9)
    fused = Engine(fused_path, options=NATIVE_OPTIONS)
    plain = Engine(plain_path, options=NATIVE_OPTIONS)
    y_fused = fused.run(x)
    y_plain, conv = plain.run(x)
    steps = {n.node: n.steps for n in plain.describe(3, {"x": x.shape}).nodes}
    assert steps["y_act"] and steps["y_act"][0].startswith("unary"), steps
    np.testing.assert_allclose(y_fused, y_plain, rtol=1e-6, atol=1e-6)
    assert_close(conv, ort_run(plain_path, x, output="c"))


@pytest.mark.parametrize("op", list(ACTIVATIONS))
def test_nan_in_nan_out(tmp_path, op):
    """NaN inputs give NaN where ONNX Runtime gives NaN, fused or standalone."""
    path = save_model(_conv_act(op, 8, 12, 3, density=1.0), tmp_path / "m.onnx")
    x = random_input((2, 8, 6, 6), seed=1)
    x[0, :, 2, 3] = np.nan
    expected = ort_run(path, x)
    got = Engine(path, options=NATIVE_OPTIONS).run(x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    assert np.isnan(got).any()
    finite = ~np.isnan(expected)
    assert_close(np.where(finite, got, 0), np.where(finite, expected, 0))


@pytest.mark.parametrize("gate,kind", [("Sigmoid", "silu"), ("HardSigmoid", "hard_swish"),
                                       ("TanhSoftplus", "mish")])
@pytest.mark.parametrize("after", ["conv", "add", "pool"])
def test_self_gating_fuses_into_one_activation(tmp_path, gate, kind, after):
    """x * Sigmoid(x) (SiLU), x * HardSigmoid(x) (HardSwish as exported below opset 14) and
    x * Tanh(Softplus(x)) (Mish below opset 18) become one activation: fused into the conv
    that makes x (also after a residual Add fused into it), or one step of its own after
    another op (a pool)."""
    rng = np.random.default_rng(4)
    inits = {"w": (rng.standard_normal((8, 8, 3, 3)) * (rng.random((8, 8, 3, 3)) < 0.5)
                   ).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1] * 4)]
    source = "c"
    if after == "add":
        nodes.append(helper.make_node("Add", ["c", "x"], ["s"], name="add"))
        source = "s"
    elif after == "pool":
        nodes.append(helper.make_node("MaxPool", ["c"], ["s"], name="pool", kernel_shape=[2, 2]))
        source = "s"
    attrs = {"alpha": 1.0 / 6.0, "beta": 0.5} if gate == "HardSigmoid" else {}
    if gate == "TanhSoftplus":
        nodes += [helper.make_node("Softplus", [source], ["sp"], name="softplus"),
                  helper.make_node("Tanh", ["sp"], ["g"], name="gate")]
    else:
        nodes.append(helper.make_node(gate, [source], ["g"], name="gate", **attrs))
    nodes.append(helper.make_node("Mul", ["g", source], ["y"], name="mul"))
    path = save_model(graph_model(nodes, ["N", 8, 9, 11], inits, name="gated"),
                      tmp_path / "g.onnx")
    x = random_input((2, 8, 9, 11), seed=2) * np.float32(3.0)
    engine = Engine(path, options=NATIVE_OPTIONS)
    assert_close(engine.run(x), ort_run(path, x))
    steps = {n.node: n.steps for n in engine.describe(2, {"x": x.shape}).nodes}
    owner = "mul" if after == "pool" else "conv"
    assert any(f"act={kind}" in s for s in steps[owner]), steps
    assert steps["gate"] == [f"fused into {owner}"], steps
    if gate == "TanhSoftplus":
        assert steps["softplus"] == [f"fused into {owner}"], steps
