"""A batch split at one tensor (planner.batch.interleave_cut): images run one by one up to the
cut, then in batch-interleaved groups. Where the cut falls, what each part holds, and that a
split batch gives ONNX Runtime's answers, with the remainder images and on two threads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from featherdeploy.runtime import Engine, EngineOptions, PlannerOptions
from featherdeploy.runtime.graph import load_graph
from featherdeploy.runtime.planner.batch import interleave_cut
from featherdeploy.runtime.planner.layout import native
from tests.runtime.onnx_cases import (
    assert_close,
    ort_run,
    random_input,
    run_in_threads,
    save_model,
)

LANES = 16
IMAGE = {"x": (3, 16, 16)}
# Bytes of one image: r1 (8 x 16 x 16 floats) 8 KB, r2 and after (16 x 8 x 8) 4 KB, g 64 B.
R1_BYTES, R2_BYTES, G_BYTES = 8 * 256 * 4, 16 * 64 * 4, 16 * 4


def _net(path: Path, long_skip: bool = False) -> Path:
    """Conv(3->8) + Relu at 16x16 -> Conv(8->16, stride 2, bias through an Identity) + Relu ->
    Conv(16->16) + Add(residual) + Relu -> GlobalAveragePool -> Flatten -> Gemm(10).
    ``long_skip``: the output is instead the last Relu plus a conv of the input pooled to 8x8,
    computed at the very end."""
    rng = np.random.default_rng(0)

    def w(*shape, density=0.5):
        return (rng.standard_normal(shape) * (rng.random(shape) < density)).astype(np.float32)

    inits = {"w1": w(8, 3, 3, 3, density=1.0), "w2": w(16, 8, 3, 3), "b2src": w(16, density=1),
             "w3": w(16, 16, 3, 3), "fc": w(10, 16, density=1.0), "w4": w(16, 3, 3, 3)}
    nodes = [
        helper.make_node("Identity", ["b2src"], ["b2"], name="bias_copy"),
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3"], ["c3"], name="conv3", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c3", "r2"], ["a"], name="add"),
        helper.make_node("Relu", ["a"], ["r3"], name="relu3"),
    ]
    if long_skip:
        nodes += [helper.make_node("MaxPool", ["x"], ["p1"], name="pool", kernel_shape=[2, 2],
                                   strides=[2, 2]),
                  helper.make_node("Conv", ["p1", "w4"], ["q"], name="conv4", pads=[1, 1, 1, 1]),
                  helper.make_node("Add", ["r3", "q"], ["y"], name="out")]
        out_shape = ["n", 16, 8, 8]
    else:
        nodes += [helper.make_node("GlobalAveragePool", ["r3"], ["g"], name="gap"),
                  helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
                  helper.make_node("Gemm", ["f", "fc"], ["y"], name="fc", transB=1)]
        out_shape = ["n", 10]
    graph = helper.make_graph(
        nodes, "split", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return save_model(model, path)


def _cut(path: Path, budget_per_image: int, batch: int = LANES, vector_floats: int = LANES):
    opts = PlannerOptions(cut_lanes_budget_bytes=LANES * budget_per_image)
    return interleave_cut(load_graph(path), IMAGE, batch, opts, vector_floats)


@pytest.mark.parametrize("budget,tensor", [(R1_BYTES, "r1"), (R2_BYTES, "r2"),
                                           (G_BYTES, "g"), (G_BYTES // 2, None)])
def test_the_cut_is_the_earliest_within_the_budget(tmp_path, budget, tensor):
    """Never between a Conv and the Relu the passes fuse into it (c1, c2), never where two
    tensors cross (c3 with the residual r2), and the constant-only Identity neither blocks a
    cut nor goes missing: the tail computes it when it reads it."""
    cut = _cut(_net(tmp_path / "m.onnx"), budget)
    assert (cut.tensor if cut else None) == tensor
    if cut is None:
        return
    assert cut.lanes == LANES
    assert cut.head.output_names == [tensor] and cut.tail.input_names == [tensor]
    assert cut.head.input_names == ["x"] and cut.tail.output_names == ["y"]
    assert cut.head.outputs[0].shape[0] is None  # batch stays dynamic in both parts
    tail_ops = [n.name for n in cut.tail.nodes]
    assert ("bias_copy" in tail_ops) == (tensor == "r1")  # conv2 reads b2 only in that tail
    assert len(cut.head.nodes) + len(cut.tail.nodes) == 11 + (tensor == "r1")


def test_no_cut_where_an_early_tensor_is_read_at_the_end_or_groups_are_partial(tmp_path):
    # the input is read by the last nodes: every point has two tensors crossing
    assert _cut(_net(tmp_path / "skip.onnx", long_skip=True), R1_BYTES) is None
    path = _net(tmp_path / "m.onnx")
    assert _cut(path, R1_BYTES, batch=8, vector_floats=16) is None  # 8 lanes, vectors of 16
    assert _cut(path, R1_BYTES, batch=8, vector_floats=8).lanes == 8
    assert _cut(path, R1_BYTES, batch=1, vector_floats=1) is None


def _split_options(threads: int, layout: str = "split", **planner) -> EngineOptions:
    return EngineOptions(threads=threads, backend="native", batch_layout=layout,
                         planner=PlannerOptions(cut_lanes_budget_bytes=LANES * R2_BYTES,
                                                **planner))


@pytest.mark.parametrize("threads", [1, 2])
def test_a_split_batch_gives_ort_answers_with_a_remainder(tmp_path, threads):
    """Two groups of 16 after the cut and 3 images left over (run image by image)."""
    if LANES % int(native().vector_floats("auto")):
        pytest.fail("groups of 16 images must fill this CPU's vectors")
    path = _net(tmp_path / "m.onnx")
    engine = Engine(path, options=_split_options(threads))
    x = random_input((2 * LANES + 3, *IMAGE["x"]), seed=3)
    got = engine.run(x)
    assert_close(got, ort_run(path, x))
    assert engine.tune([2 * LANES + 3])[2 * LANES + 3].startswith(
        f"image by image up to 'r2', then interleaved groups of {LANES}")
    planar = Engine(path, options=_split_options(threads, "planar"))
    assert_close(got, planar.run(x))


@pytest.mark.parametrize("split_s,kept", [(0.5, True), (0.97, False), (2.0, False)])
def test_auto_keeps_a_split_only_when_it_measured_faster(tmp_path, monkeypatch, split_s, kept):
    """A batch that cannot interleave whole (no group fits lanes_budget_bytes) times the split
    once against image by image; kept only when it wins by SPLIT_MARGIN. Answers equal ORT's
    either way, and the cut is worked out once per shapes."""
    import featherdeploy.runtime.engine as engine_module

    timings, cuts = [], []

    def timed(first, second, **_):
        first()
        second()
        timings.append(1)
        return split_s, 1.0

    original = engine_module.interleave_cut

    def counted(*args, **kwargs):
        cuts.append(args[2])
        return original(*args, **kwargs)

    monkeypatch.setattr(engine_module, "compare_streams", timed)
    monkeypatch.setattr(engine_module, "interleave_cut", counted)
    path = _net(tmp_path / "m.onnx")
    engine = Engine(path, options=_split_options(1, "auto", lanes_budget_bytes=1,
                                                 untimed_lanes_budget_bytes=1))
    for seed in range(3):
        x = random_input((LANES, *IMAGE["x"]), seed=seed)
        assert_close(engine.run(x), ort_run(path, x))
    assert len(timings) == 1 and len(cuts) == 1
    choice = engine.tune([LANES])[LANES]
    assert choice.startswith("image by image up to 'r2'" if kept else "planar, image by image")


@pytest.mark.parametrize("split_s,kept", [(0.45, True), (0.49, False)])
def test_a_split_must_also_beat_whole_batch_interleaving_when_that_won(tmp_path, monkeypatch,
                                                                        split_s, kept):
    """Whole groups of 16 interleaved beat image by image (first timing: 0.5x its time); the
    split is then timed against image by image too and kept only when it beats whole groups'
    0.5x by SPLIT_MARGIN. The whole-group program is not alive while the split is timed (the
    two would hold memory together); it is rebuilt when the split loses."""
    import featherdeploy.runtime.engine as engine_module

    if LANES % int(native().vector_floats("auto")):
        pytest.fail("groups of 16 images must fill this CPU's vectors")
    results = [(0.5, 1.0), (split_s, 1.0)]  # (whole, planar), then (split, planar)
    path = _net(tmp_path / "m.onnx")
    engine = Engine(path, options=_split_options(1, "auto"))
    whole = ((("x", (LANES, *IMAGE["x"])),), 1, True)
    rivals, alive = [], []

    def timed(first, second, **_):
        first()
        second()
        rivals.append(getattr(second, "args", (None, None, None))[2])
        alive.append(whole in engine._programs)
        return results.pop(0)

    monkeypatch.setattr(engine_module, "compare_streams", timed)
    x = random_input((LANES, *IMAGE["x"]), seed=6)
    assert_close(engine.run(x), ort_run(path, x))
    assert not results and rivals[1] == LANES  # the split's rival ran the images one by one
    assert alive == [True, False]
    choice = engine.tune([LANES])[LANES]
    if kept:
        assert choice.startswith("image by image up to 'r2'")
        assert whole not in engine._programs
    else:
        assert choice.startswith(f"interleaved groups of {LANES}")
        assert whole in engine._programs


def test_no_split_without_timing(tmp_path):
    """tuning "off" with layout "auto": nothing is timed, so the batch runs image by image."""
    path = _net(tmp_path / "m.onnx")
    engine = Engine(path, options=EngineOptions(
        threads=1, backend="native", tuning="off",
        planner=PlannerOptions(lanes_budget_bytes=1, untimed_lanes_budget_bytes=1,
                               cut_lanes_budget_bytes=LANES * R2_BYTES)))
    x = random_input((LANES, *IMAGE["x"]), seed=5)
    assert_close(engine.run(x), ort_run(path, x))
    assert engine.tune([LANES])[LANES].startswith("planar, image by image")


def test_concurrent_split_runs_keep_their_own_cut_tensors(tmp_path):
    """Calls from several threads at once each get their own cut tensor (reused between calls,
    never shared by two at a time)."""
    path = _net(tmp_path / "m.onnx")
    engine = Engine(path, options=_split_options(2))
    inputs = [random_input((LANES, *IMAGE["x"]), seed=10 + i) for i in range(3)]
    expected = [ort_run(path, x) for x in inputs]

    def worker(i: int) -> None:
        for _ in range(4):
            assert_close(engine.run(inputs[i]), expected[i])

    errors = run_in_threads(worker, 3)
    assert not errors, errors[0]
    assert engine.tune([LANES])[LANES].startswith("image by image up to 'r2'")
