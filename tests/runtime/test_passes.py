"""Graph passes: constant-channel folding and the reader counts the fusions rely on, checked
against ONNX Runtime on small hand-built graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from featherdeploy.runtime import Engine
from featherdeploy.runtime.graph import load_graph
from featherdeploy.runtime.ops.fusion import RESIDUAL_KEY, SKIP_EMPTY_KEY
from featherdeploy.runtime.partition import partition
from featherdeploy.runtime.specialize import specialize
from tests.runtime.onnx_cases import assert_close, graph_model, ort_run, random_input

EMPTY = (0, 3, 5)  # depthwise channels without a nonzero weight


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    dw = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)
    dw[list(EMPTY)] = 0.0
    return {
        "dw_w": dw,
        "dw_b": rng.standard_normal(8).astype(np.float32),
        "pw_w": rng.standard_normal((6, 8, 1, 1)).astype(np.float32),
        "pw_b": rng.standard_normal(6).astype(np.float32),
        "k3_w": rng.standard_normal((6, 8, 3, 3)).astype(np.float32),
    }


def _model(nodes: list, inits: dict[str, np.ndarray], output: str = "y") -> onnx.ModelProto:
    return graph_model(nodes, ["N", 8, 7, 7], inits, output=output, name="g")


def _depthwise(activation: str) -> list:
    nodes = [helper.make_node("Conv", ["x", "dw_w", "dw_b"], ["d"], name="dw", group=8,
                              pads=[1, 1, 1, 1])]
    if activation == "relu":
        nodes.append(helper.make_node("Relu", ["d"], ["a"], name="act"))
    else:
        nodes.append(helper.make_node("Clip", ["d", "lo", "hi"], ["a"], name="act"))
    return nodes


def _check(model: onnx.ModelProto, tmp_path: Path, batch: int = 2) -> Engine:
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    x = random_input((batch, 8, 7, 7))
    for threads in (1, 2):
        engine = Engine(path, threads=threads)
        assert_close(engine.run(x), ort_run(path, x))
    return engine


def _fused(model: onnx.ModelProto, tmp_path: Path):
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    return partition(specialize(load_graph(path), {"x": (2, 8, 7, 7)})).graph


@pytest.mark.parametrize("activation", ["relu", "clip"])
def test_empty_depthwise_channels_fold_into_the_pointwise_bias(activation, tmp_path):
    """Empty depthwise channels are constants clamp(bias): the pointwise conv gets them in its
    bias and stops reading them, the depthwise conv skips them; outputs equal ORT's."""
    inits = _weights()
    inits.update(lo=np.array(0.0, np.float32), hi=np.array(0.5, np.float32))
    pw = helper.make_node("Conv", ["a", "pw_w", "pw_b"], ["y"], name="pw")
    model = _model([*_depthwise(activation), pw], inits)
    fused = _fused(model, tmp_path)
    dw, pw_node = fused.nodes
    assert dw.attrs.get(SKIP_EMPTY_KEY) is True
    w = fused.constants[pw_node.inputs[1]]
    assert not w[:, list(EMPTY)].any() and w[:, [1, 2, 4, 6, 7]].all()
    assert not np.allclose(fused.constants[pw_node.inputs[2]], inits["pw_b"])
    for batch in (1, 2, 16):
        _check(model, tmp_path, batch)


def test_no_fold_when_a_reader_pads_or_is_not_a_pointwise_conv(tmp_path):
    """A 3x3 padded conv sees zeros at the border, not the constant: nothing is folded."""
    inits = _weights()
    nodes = [*_depthwise("relu"),
             helper.make_node("Conv", ["a", "pw_w", "pw_b"], ["p"], name="pw"),
             helper.make_node("Conv", ["a", "k3_w"], ["q"], name="k3", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["p", "q"], ["y"], name="add")]
    model = _model(nodes, inits)
    fused = _fused(model, tmp_path)
    assert not any(n.attrs.get(SKIP_EMPTY_KEY) for n in fused.nodes)
    assert any(n.inputs[1] == "pw_w" for n in fused.nodes if n.op == "Conv")
    _check(model, tmp_path)


def test_no_fold_into_a_residual_reader(tmp_path):
    """The depthwise output is also added as a residual elsewhere: it must stay computed."""
    inits = _weights()
    inits["pw2_w"] = np.random.default_rng(3).standard_normal((8, 8, 1, 1)).astype(np.float32)
    nodes = [*_depthwise("relu"),
             helper.make_node("Conv", ["a", "pw2_w"], ["p"], name="pw2"),
             helper.make_node("Add", ["p", "a"], ["y"], name="add")]
    model = _model(nodes, inits)
    fused = _fused(model, tmp_path)
    assert any(RESIDUAL_KEY in n.attrs for n in fused.nodes)
    assert not any(n.attrs.get(SKIP_EMPTY_KEY) for n in fused.nodes)
    _check(model, tmp_path)


def test_activation_not_fused_into_a_conv_whose_output_is_a_residual(tmp_path):
    """conv1 -> c is read by a Relu and, after fusing conv2 + Add, as conv2's residual: fusing the
    Relu into conv1 would rename c away. Reader counts include fused residuals."""
    rng = np.random.default_rng(1)
    inits = {"w1": rng.standard_normal((8, 8, 3, 3)).astype(np.float32),
             "w2": rng.standard_normal((8, 8, 3, 3)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["d"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["d", "c"], ["y"], name="add")]
    _check(_model(nodes, inits), tmp_path)


# ----------------------------------------------------------------------------- sparse Gemm


def _sparse(shape: tuple[int, ...], density: float, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * (rng.random(shape) < density)).astype(np.float32)


GEMMS = [  # (op, attributes, C shape or None, input from global pooling)
    ("Gemm", {"transB": 1}, (11,), True),
    ("Gemm", {"transB": 0, "alpha": 0.5, "beta": 2.0}, (1, 11), True),
    ("Gemm", {"transB": 1}, (), False),
    ("Gemm", {"transB": 1}, None, False),
    ("MatMul", {}, None, True),
    ("MatMul", {}, None, False),
]


@pytest.mark.parametrize("op,attrs,c_shape,pooled", GEMMS, ids=str)
@pytest.mark.parametrize("density", [0.1, 0.9])
def test_sparse_gemm_runs_as_a_conv(tmp_path, op, attrs, c_shape, pooled, density):
    """A classifier with a sparse constant weight runs on the conv kernels (a dense one on the
    GEMM), equal to ONNX Runtime at batch 1 and 3, on 1 and 2 threads."""
    from tests.runtime.op_harness import check_model, make_model

    k, m = 13, 11
    b_shape = (m, k) if attrs.get("transB") else (k, m)
    inits = {"B": _sparse(b_shape, density)}
    if pooled:
        nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"], name="pool"),
                 helper.make_node("Flatten", ["p"], ["a"], name="flatten")]
        x_shape: list = ["N", k, 4, 5]
    else:
        nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu")]
        x_shape = ["N", k]
    inputs = ["a", "B"]
    if c_shape is not None:
        inits["C"] = np.asarray(_sparse(c_shape or (1,), 1.0, seed=4).reshape(c_shape))
        inputs.append("C")
    nodes.append(helper.make_node(op, inputs, ["y"], name="fc", **attrs))
    feeds = [np.asarray(random_input((b, *x_shape[1:]), seed=b)) for b in (1, 3)]
    engine = check_model(tmp_path, make_model(nodes, {"x": x_shape}, ["y"], inits), feeds,
                         {"fc": "native"}, threads=(1, 2))
    steps = {n.node: n.steps for n in engine.describe(
        input_shapes={"x": feeds[0].shape}).nodes}
    assert any(s.startswith("conv_") for s in steps["fc"]) == (density < 0.35), steps


@pytest.mark.parametrize("batch_layout", ["interleaved", "planar"])
def test_sparse_gemm_batches_with_tiny_planes_on_the_general_path(tmp_path, batch_layout):
    """Fuzz cases 4171 / 8441: a pooled classifier at batch 2 on two threads, 1x1 planes on
    the general conv path (small_plane=0): equal to ONNX Runtime (several rows stay on the
    GEMM; at batch 1 the conv runs)."""
    from featherdeploy.runtime import Engine, EngineOptions, PlannerOptions
    from tests.runtime.onnx_cases import assert_close, ort_run
    from tests.runtime.op_harness import make_model

    k, m = 16, 10
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["a"], name="flatten"),
             helper.make_node("Gemm", ["a", "B", "C"], ["y"], name="fc", transB=1)]
    inits = {"B": _sparse((m, k), 0.2), "C": _sparse((m,), 1.0, seed=5)}
    path = tmp_path / "fc.onnx"
    onnx.save(make_model(nodes, {"x": ["N", k, 4, 4]}, ["y"], inits), str(path))
    options = EngineOptions(threads=2, backend="native", tuning="off",
                            batch_layout=batch_layout, planner=PlannerOptions(small_plane=0))
    engine = Engine(path, options=options)
    for batch in (1, 2, 5):
        x = np.asarray(random_input((batch, k, 4, 4), seed=batch))
        assert_close(engine.run(x), ort_run(path, x))


def _shuffle_model(channels: tuple[int, ...], groups: int, size: int = 6,
                   extra_reader: bool = False) -> onnx.ModelProto:
    """Convs of ``channels`` output channels, concatenated and channel-shuffled in ``groups``
    (Concat, Reshape to 5-D, Transpose (0, 2, 1, 3, 4), Reshape back), then a 1x1 conv. With
    ``extra_reader`` the transposed tensor is also read by a Relu added to the result."""
    rng = np.random.default_rng(len(channels) + groups)
    total = sum(channels)
    inits: dict[str, np.ndarray] = {
        "to5": np.array([0, groups, total // groups, size, size], np.int64),
        "to4": np.array([0, total, size, size], np.int64),
        "wz": rng.standard_normal((4, total, 1, 1)).astype(np.float32)}
    nodes, parts = [], []
    for i, c in enumerate(channels):
        inits[f"w{i}"] = rng.standard_normal((c, 3, 3, 3)).astype(np.float32)
        nodes.append(helper.make_node("Conv", ["x", f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        parts.append(f"c{i}")
    nodes += [helper.make_node("Concat", parts, ["cat"], axis=1, name="cat"),
              helper.make_node("Reshape", ["cat", "to5"], ["g5"], name="to_groups"),
              helper.make_node("Transpose", ["g5"], ["t5"], perm=[0, 2, 1, 3, 4], name="swap"),
              helper.make_node("Reshape", ["t5", "to4"], ["shuffled"], name="back")]
    if extra_reader:
        nodes += [helper.make_node("Relu", ["t5"], ["t5r"]),
                  helper.make_node("Reshape", ["t5r", "to4"], ["side"]),
                  helper.make_node("Add", ["shuffled", "side"], ["both"])]
    nodes.append(helper.make_node("Conv", ["both" if extra_reader else "shuffled", "wz"], ["y"]))
    return graph_model(nodes, ["N", 3, size, size], inits, name="shuffle")


@pytest.mark.parametrize("channels,groups", [((4, 4), 2), ((2, 7, 3), 3), ((5, 1), 2)])
@pytest.mark.parametrize("batch", [1, 16])
def test_channel_shuffle_is_one_copy(tmp_path, channels, groups, batch):
    """Concat + shuffle become one copy per input piece of a group (inputs that cross group
    boundaries, three groups, one channel per input), equal to ORT planar and interleaved."""
    path = tmp_path / "shuffle.onnx"
    onnx.save(_shuffle_model(channels, groups), str(path))
    engine = Engine(path, backend="native", threads=1)
    x = random_input((batch, 3, 6, 6), seed=batch)
    assert_close(engine.run(x), ort_run(path, x))
    steps = {n.node: n.steps for n in engine.describe(input_shapes={"x": (batch, 3, 6, 6)}).nodes}
    assert all(steps[name] == ["fused into cat"] for name in ("to_groups", "swap", "back"))
    pieces = sum(len({a // (sum(channels) // groups) for a in range(s, s + c)})
                 for s, c in zip(np.cumsum((0, *channels[:-1])), channels, strict=True))
    assert len(steps["cat"]) == pieces


def test_channel_shuffle_read_midway_is_not_fused(tmp_path):
    path = tmp_path / "shuffle.onnx"
    onnx.save(_shuffle_model((4, 4), 2, extra_reader=True), str(path))
    engine = Engine(path, backend="native", threads=1)
    x = random_input((1, 3, 6, 6))
    assert_close(engine.run(x), ort_run(path, x))
    steps = {n.node: n.steps for n in engine.describe(input_shapes={"x": (1, 3, 6, 6)}).nodes}
    assert steps["swap"] and not steps["swap"][0].startswith("fused")


def _split_then_overwrite(op: str) -> onnx.ModelProto:
    """t = conv(x); s1, s2 = channel halves of t (Split or two Slices); z = 1x1(1x1(s2)) + t,
    t's last reader, whose output could go over t's storage; then 3x3(s1), read after z,
    and a 1x1 over their concat. s1 and s2 are views of t, so z must not overwrite t."""
    rng = np.random.default_rng(17)
    inits = {"w0": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
             "wa": rng.standard_normal((8, 4, 1, 1)).astype(np.float32),
             "wz": rng.standard_normal((8, 8, 1, 1)).astype(np.float32),
             "w1": rng.standard_normal((4, 4, 3, 3)).astype(np.float32),
             "wy": rng.standard_normal((3, 12, 1, 1)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w0"], ["t"], pads=[1, 1, 1, 1])]
    if op == "Split":
        inits["halves"] = np.array([4, 4], np.int64)
        nodes.append(helper.make_node("Split", ["t", "halves"], ["s1", "s2"], axis=1))
    else:
        for name, (lo, hi) in (("s1", (0, 4)), ("s2", (4, 8))):
            inits[f"{name}_lo"], inits[f"{name}_hi"] = (np.array([v], np.int64) for v in (lo, hi))
            inits[f"{name}_ax"] = np.array([1], np.int64)
            nodes.append(helper.make_node("Slice", ["t", f"{name}_lo", f"{name}_hi",
                                                    f"{name}_ax"], [name], name=name))
    nodes += [helper.make_node("Conv", ["s2", "wa"], ["a"]),
              helper.make_node("Conv", ["a", "wz"], ["z0"]),
              helper.make_node("Add", ["z0", "t"], ["z"]),
              helper.make_node("Conv", ["s1", "w1"], ["y1"], pads=[1, 1, 1, 1]),
              helper.make_node("Concat", ["z", "y1"], ["cat"], axis=1),
              helper.make_node("Conv", ["cat", "wy"], ["y"])]
    return graph_model(nodes, ["N", 3, 12, 12], inits, name="split")


@pytest.mark.parametrize("op", ["Split", "Slice"])
@pytest.mark.parametrize("batch,threads", [(1, 1), (3, 2), (16, 1), (16, 2)])
def test_channel_slices_are_views_of_their_input(tmp_path, op, batch, threads):
    """Channel halves read by a padded 3x3 conv and a 1x1 conv are views of the split tensor
    (no copy); the conv whose residual is that tensor leaves it alone while a view is still
    to be read. Equal to ORT planar, batched and interleaved, on one and two threads."""
    path = tmp_path / "split.onnx"
    onnx.save(_split_then_overwrite(op), str(path))
    engine = Engine(path, backend="native", threads=threads)
    x = random_input((batch, 3, 12, 12), seed=batch + threads)
    assert_close(engine.run(x), ort_run(path, x))
    report = engine.describe(input_shapes={"x": (batch, 3, 12, 12)})
    sliced = [n for n in report.nodes if n.op == op]
    assert sliced and all(n.steps == ["view of its input (no copy)"] for n in sliced)
