"""Fused equals unfused (runtime/passes/): each fusable pattern runs once as written (the passes
fuse it) and once with the fusing node's input also a graph output (which blocks the fusion);
both equal ONNX Runtime, each other, and describe() shows which nodes fused into which."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from featherdeploy.runtime import Engine, EngineOptions
from tests.runtime.onnx_cases import random_input
from tests.runtime.op_harness import check_model, make_model

FUSED = "fused into"


def _weight(shape: tuple[int, ...], density: float = 0.5, seed: int = 0,
            positive: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape) * (rng.random(shape) < density)
    return (np.abs(w) if positive else w).astype(np.float32)


def _conv(name: str, x: str, y: str, cin: int, cout: int, inits: dict, kernel: int = 3,
          group: int = 1, seed: int = 0, positive: bool = False, **attrs: object):
    inits[f"{name}_w"] = _weight((cout, cin // group, kernel, kernel), seed=seed,
                                 positive=positive)
    rng = np.random.default_rng(seed + 100)
    bias = rng.standard_normal(cout).astype(np.float32)
    inits[f"{name}_b"] = np.abs(bias) + np.float32(0.1) if positive else bias
    attrs.setdefault("pads", [kernel // 2] * 4)
    return helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [y], name=name, group=group,
                            **attrs)


def _steps(engine, feeds) -> dict[str, list[str]]:
    shapes = {k: v.shape for k, v in feeds.items()}
    report = engine.describe(input_shapes=shapes)
    return {n.node: n.steps for n in report.nodes}


def _fused_vs_unfused(tmp_path, nodes: list, inits: dict, channels: int, hw: tuple[int, int],
                      expose: list[str], fused: dict[str, str], batches=(1, 3),
                      positive: bool = False, opset: int = 13,
                      epilogue: dict[str, str] | None = None,
                      blocked_fused: dict[str, str] | None = None, **options: object) -> None:
    """``nodes`` (graph input x, output y) as written, where the nodes of ``fused`` fuse into
    the named node (describe() says "fused into <node>", also for a node inside a fused chain)
    and the nodes of ``epilogue`` report that text in their last step, and with ``expose`` also
    graph outputs, where none of them fuses into the exposed producer (the nodes of
    ``blocked_fused`` then fuse into the named node instead)."""
    x_decl = ["N", channels, *hw]
    feeds = []
    for b in batches:
        x = np.asarray(random_input((b, channels, *hw), seed=b))
        feeds.append({"x": np.abs(x) if positive else x})
    written = make_model(nodes, {"x": x_decl}, ["y"], inits, opset)
    blocked = make_model(nodes, {"x": x_decl}, ["y", *expose], inits, opset)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    engine_a = check_model(tmp_path / "a", written, feeds, threads=(1, 2), **options)
    engine_b = check_model(tmp_path / "b", blocked, feeds, threads=(1, 2), **options)
    for f in feeds:
        y_a = engine_a.run(f)
        y_b = engine_b.run(f)[0]
        np.testing.assert_allclose(y_a, y_b, rtol=1e-5, atol=1e-5)
        steps_a, steps_b = _steps(engine_a, f), _steps(engine_b, f)
        for node, owner in fused.items():
            assert steps_a[node] == [f"{FUSED} {owner}"], (node, steps_a)
            if node in (blocked_fused or {}):
                assert steps_b[node] == [f"{FUSED} {blocked_fused[node]}"], (node, steps_b)
            else:
                assert steps_b[node] and not steps_b[node][0].startswith(FUSED), (node, steps_b)
        for node, text in (epilogue or {}).items():
            assert text in steps_a[node][-1], (node, steps_a)
            assert text not in steps_b[node][-1], (node, steps_b)


def _bn(name: str, x: str, y: str, channels: int, inits: dict, seed: int = 5):
    rng = np.random.default_rng(seed)
    names = [f"{name}_{p}" for p in ("g", "b", "m", "v")]
    values = [rng.random(channels, np.float32) + 0.5, rng.standard_normal(channels, np.float32),
              rng.standard_normal(channels, np.float32), rng.random(channels, np.float32) + 0.1]
    inits.update(zip(names, values, strict=True))
    return helper.make_node("BatchNormalization", [x, *names], [y], name=name, epsilon=1e-3)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize(("cin", "cout", "group"), [(3, 5, 1), (7, 7, 7), (6, 9, 3)])
def test_conv_batchnorm(tmp_path, relu, cin, cout, group):
    inits: dict = {}
    nodes = [_conv("conv", "x", "c", cin, cout, inits, group=group),
             _bn("bn", "c", "n" if relu else "y", cout, inits)]
    fused: dict = {"bn": "conv"}
    if relu:
        nodes.append(helper.make_node("Relu", ["n"], ["y"], name="relu"))
        fused = {"bn": "conv", "relu": "conv"}
    # with the conv's output exposed the BN stays a standalone step, which takes the Relu
    _fused_vs_unfused(tmp_path, nodes, inits, cin, (6, 7), ["c"], fused,
                      epilogue={"conv": "act=clip"} if relu else None,
                      blocked_fused={"relu": "bn"} if relu else None)


@pytest.mark.parametrize(("act", "kind"), [("Relu", "clip"), ("Sigmoid", "sigmoid"),
                                           ("PRelu", "prelu")])
@pytest.mark.parametrize("layout", ["planar", "interleaved"])
def test_standalone_batchnorm_takes_the_activation(tmp_path, act, kind, layout):
    """DenseNet's pre-activation: Concat -> BatchNormalization -> activation -> conv. The BN
    cannot fold into a conv, so it stays an affine step, and the activation runs in that same
    step; batch-interleaved groups (16 images, and 19 with a tail) walk every element."""
    channels = 7
    inits: dict = {}
    nodes = [_conv("stem", "x", "s", 3, 4, inits, seed=1),
             helper.make_node("Concat", ["x", "s"], ["cat"], name="concat", axis=1),
             _bn("bn", "cat", "n", channels, inits)]
    act_inputs = ["n"]
    if act == "PRelu":
        inits["slope"] = np.linspace(-0.5, 0.5, channels, dtype=np.float32).reshape(-1, 1, 1)
        act_inputs.append("slope")
    nodes += [helper.make_node(act, act_inputs, ["r"], name="act"),
              _conv("head", "r", "y", channels, 5, inits, seed=2)]
    batches = (16, 19) if layout == "interleaved" else (1, 3)
    _fused_vs_unfused(tmp_path, nodes, inits, 3, (9, 8), ["n"], {"act": "bn"},
                      batches=batches, epilogue={"bn": f"act={kind}"}, batch_layout=layout)


@pytest.mark.parametrize("act", [None, "Relu", "HardSigmoid"])
@pytest.mark.parametrize("order", ["conv_first", "residual_first"])
def test_conv_add_residual(tmp_path, act, order):
    inits: dict = {}
    nodes = [_conv("stem", "x", "s", 5, 5, inits, seed=1),
             _conv("conv", "s", "c", 5, 5, inits, seed=2),
             helper.make_node("Add", ["c", "s"] if order == "conv_first" else ["s", "c"],
                              ["a" if act else "y"], name="add")]
    fused: dict = {"add": "conv"}
    if act:
        nodes.append(helper.make_node(act, ["a"], ["y"], name="act"))
        fused = {"add": "conv", "act": "conv"}
    _fused_vs_unfused(tmp_path, nodes, inits, 5, (7, 6), ["c"], fused,
                      epilogue={"conv": {"Relu": "act=clip", "HardSigmoid": "act=hard_sigmoid"}
                                [act]} if act else None)


def test_conv_add_broadcast_or_constant_does_not_fuse(tmp_path):
    inits: dict = {"k": np.linspace(-1, 1, 5, dtype=np.float32).reshape(5, 1, 1)}
    nodes = [_conv("conv", "x", "c", 3, 5, inits),
             helper.make_node("Add", ["c", "k"], ["y"], name="add")]
    engine = check_model(tmp_path, make_model(nodes, {"x": ["N", 3, 6, 6]}, ["y"], inits),
                         [np.asarray(random_input((b, 3, 6, 6))) for b in (1, 3)],
                         {"conv": "native", "add": "native"}, threads=(1, 2))
    steps = _steps(engine, {"x": np.zeros((1, 3, 6, 6), np.float32)})
    assert not steps["add"][0].startswith(FUSED), steps


ELEMENTWISE = ["Erf", "Exp", "Abs", "Neg", "Floor", "Ceil", "Softplus", "Sqrt", "Log",
               "Reciprocal", "Tanh", "Elu", "LeakyRelu"]


@pytest.mark.parametrize("op", ELEMENTWISE)
def test_conv_elementwise(tmp_path, op):
    """Every element-wise kind fused into the conv's epilogue (positive conv outputs for
    Sqrt, Log and Reciprocal)."""
    positive = op in ("Sqrt", "Log", "Reciprocal")
    inits: dict = {}
    nodes = [_conv("conv", "x", "c", 3, 7, inits, positive=positive),
             helper.make_node(op, ["c"], ["y"], name="act")]
    _fused_vs_unfused(tmp_path, nodes, inits, 3, (5, 6), ["c"], {"act": "conv"},
                      positive=positive)


@pytest.mark.parametrize("order", ["conv_sigmoid", "sigmoid_conv"])
@pytest.mark.parametrize(("cin", "cout", "group", "stride"), [(3, 5, 1, 1), (8, 8, 8, 2)])
def test_silu(tmp_path, order, cin, cout, group, stride):
    """Conv -> Sigmoid -> Mul(conv, sigmoid): one conv with the SiLU epilogue; with the conv's
    output exposed, Sigmoid and Mul still become one standalone SiLU step."""
    inits: dict = {}
    nodes = [_conv("conv", "x", "c", cin, cout, inits, group=group, strides=[stride] * 2),
             helper.make_node("Sigmoid", ["c"], ["s"], name="sigmoid"),
             helper.make_node("Mul", ["c", "s"] if order == "conv_sigmoid" else ["s", "c"],
                              ["y"], name="mul")]
    _fused_vs_unfused(tmp_path, nodes, inits, cin, (9, 8), ["c"],
                      {"sigmoid": "conv", "mul": "conv"}, epilogue={"conv": "act=silu"},
                      blocked_fused={"sigmoid": "mul"})


def test_silu_batch_interleaved(tmp_path):
    inits: dict = {}
    nodes = [_conv("conv", "x", "c", 5, 7, inits),
             helper.make_node("Sigmoid", ["c"], ["s"], name="sigmoid"),
             helper.make_node("Mul", ["c", "s"], ["y"], name="mul")]
    _fused_vs_unfused(tmp_path, nodes, inits, 5, (6, 6), ["c"],
                      {"sigmoid": "conv", "mul": "conv"}, batches=(16, 19),
                      epilogue={"conv": "act=silu"}, blocked_fused={"sigmoid": "mul"},
                      batch_layout="interleaved")


@pytest.mark.parametrize("gate", ["HardSigmoid", "Sigmoid"])
@pytest.mark.parametrize("channels", [8, 7])
def test_squeeze_excitation(tmp_path, gate, channels):
    """MobileNetV3 / EfficientNet gate: GlobalAveragePool -> 1x1 Conv -> Relu -> 1x1 Conv ->
    HardSigmoid / Sigmoid -> Mul with the block input."""
    squeezed = max(channels // 4, 1) + 1
    inits: dict = {}
    nodes = [_conv("stem", "x", "b", 3, channels, inits, seed=1),
             helper.make_node("GlobalAveragePool", ["b"], ["p"], name="gap"),
             _conv("squeeze", "p", "q", channels, squeezed, inits, kernel=1, seed=2),
             helper.make_node("Relu", ["q"], ["r"], name="relu"),
             _conv("excite", "r", "e", squeezed, channels, inits, kernel=1, seed=3),
             helper.make_node(gate, ["e"], ["g"], name="gate"),
             helper.make_node("Mul", ["b", "g"], ["y"], name="scale")]
    _fused_vs_unfused(tmp_path, nodes, inits, 3, (7, 7), ["q", "e"],
                      {"relu": "squeeze", "gate": "excite"})


def test_squeeze_excitation_batch_interleaved(tmp_path):
    inits: dict = {}
    nodes = [_conv("stem", "x", "b", 3, 6, inits, seed=1),
             helper.make_node("GlobalAveragePool", ["b"], ["p"], name="gap"),
             _conv("squeeze", "p", "q", 6, 3, inits, kernel=1, seed=2),
             helper.make_node("Relu", ["q"], ["r"], name="relu"),
             _conv("excite", "r", "e", 3, 6, inits, kernel=1, seed=3),
             helper.make_node("HardSigmoid", ["e"], ["g"], name="gate", alpha=1 / 6, beta=0.5),
             helper.make_node("Mul", ["b", "g"], ["y"], name="scale")]
    _fused_vs_unfused(tmp_path, nodes, inits, 3, (8, 8), ["q", "e"],
                      {"relu": "squeeze", "gate": "excite"}, batches=(16, 3),
                      batch_layout="interleaved")


@pytest.mark.parametrize("projection,hw", [("csr", (7, 7)), ("csr", (12, 11)), ("bsr", (12, 11)),
                                           ("tiny", (7, 7)), ("3x3", (7, 7)), ("3x3", (12, 11))],
                         ids=str)
def test_gate_folds_into_the_projection_conv(tmp_path, projection, hw):
    """x * gate (per channel) read only by a conv: the conv reads x with its weights scaled by
    the gate each run (ScaleWeights), for every kernel family; equal to the Mul then the conv,
    at batch 1 and 3 (each image its own gate)."""
    channels = 8
    inits: dict = {}
    nodes = [_conv("dw", "x", "b", channels, channels, inits, group=channels, seed=1),
             helper.make_node("GlobalAveragePool", ["b"], ["p"], name="gap"),
             _conv("excite", "p", "e", channels, channels, inits, kernel=1, seed=3),
             helper.make_node("Sigmoid", ["e"], ["g"], name="gate"),
             helper.make_node("Mul", ["b", "g"], ["m"], name="scale")]
    kernel = 3 if projection == "3x3" else 1
    nodes.append(_conv("proj", "m", "y", channels, 6, inits, kernel=kernel, seed=5))
    if projection in ("bsr", "tiny"):  # dense weights: BSR stream, or the GEMM of small planes
        inits["proj_w"] = np.random.default_rng(9).standard_normal(
            inits["proj_w"].shape).astype(np.float32)
    # (planar: a batch runs image by image; interleaved groups keep the Mul, one gate per lane)
    _fused_vs_unfused(tmp_path, nodes, inits, channels, hw, ["m"],
                      {"scale": "proj", "gate": "excite"}, blocked_fused={"gate": "excite"},
                      batch_layout="planar")
    engine = Engine(tmp_path / "a" / "model.onnx",
                    options=EngineOptions(backend="native", tuning="off"))
    steps = {n.node: n.steps for n in engine.describe(input_shapes={
        "x": (1, channels, *hw)}).nodes}
    family = {"csr": "conv_csr", "bsr": "conv_bsr", "tiny": "conv_tiny", "3x3": "conv_"}
    assert steps["proj"][0] == "scale_weights", steps["proj"]
    assert steps["proj"][1].startswith(family[projection]), steps["proj"]
    model = make_model(nodes, {"x": ["N", channels, *hw]}, ["y"], inits)
    (tmp_path / "c").mkdir()
    check_model(tmp_path / "c", model, [np.asarray(random_input((16, channels, *hw), seed=7))],
                {"scale": "native"}, threads=(1, 2), batch_layout="interleaved")


@pytest.mark.parametrize("act", ["Relu", "Clip"])
def test_constant_channels_fold_into_pointwise(tmp_path, act):
    """Depthwise channels without weights are constant planes, folded into the 1x1 conv's bias;
    with the depthwise output exposed nothing folds."""
    inits: dict = {"lo": np.float32(0.0), "hi": np.float32(6.0)}
    nodes = [_conv("dw", "x", "d", 8, 8, inits, group=8, seed=4)]
    inits["dw_w"][[0, 3, 5]] = 0.0
    nodes += [helper.make_node(act, ["d", "lo", "hi"] if act == "Clip" else ["d"], ["a"],
                               name="act"),
              _conv("pw", "a", "y", 8, 5, inits, kernel=1, seed=6)]
    _fused_vs_unfused(tmp_path, nodes, inits, 8, (7, 7), ["d"], {"act": "dw"})


def test_batchnorm_on_shared_conv_output_stays(tmp_path):
    """A conv read by a BN and another node: the BN cannot fold and runs as its own step."""
    inits: dict = {}
    nodes = [_conv("conv", "x", "c", 3, 5, inits), _bn("bn", "c", "n", 5, inits),
             helper.make_node("Add", ["n", "c"], ["y"], name="add")]
    model = make_model(nodes, {"x": ["N", 3, 6, 6]}, ["y"], inits)
    feeds = [np.asarray(random_input((b, 3, 6, 6))) for b in (1, 3)]
    engine = check_model(tmp_path, model, feeds, {"bn": "native"}, threads=(1, 2))
    assert not _steps(engine, {"x": feeds[0]})["bn"][0].startswith(FUSED)
