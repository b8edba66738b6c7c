"""Row wavefronts (PlannerOptions.wavefront_layers, native exec/wavefront.cpp): runs of convs
compute a few rows at a time, each behind the rows it reads: batch-interleaved strided convs row
by row, planar convs of one image in ranges of whole vectors (the last running into the next row).

What can go wrong is ordering: a member computing a row before its input rows or residual row
exist, or writing storage an earlier member has not finished reading (the residual it overwrites,
or a tensor whose storage the planner reuses within the run). Results must be bit-identical to
the same plan run layer by layer (each output element sums the same taps in the same order), and
equal ONNX Runtime; the tests check that the cases that need a guard really occur."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

import featherdeploy.runtime.ops.conv as conv_ops
import featherdeploy.runtime.planner.wavefront as wavefront
from featherdeploy.runtime import Engine, _native
from featherdeploy.runtime.graph import load_graph
from featherdeploy.runtime.kernels.native import plan_graph, run_plan, use_options
from featherdeploy.runtime.options import EngineOptions, PlannerOptions
from featherdeploy.runtime.planner.layout import SymView, pair_chunk_vectors
from featherdeploy.runtime.planner.wavefront import views_disjoint_or_equal
from tests.runtime.onnx_cases import assert_close, graph_model, ort_run, random_input


def _sparse(rng: np.random.Generator, shape: tuple[int, ...], density: float) -> np.ndarray:
    w = rng.standard_normal(shape).astype(np.float32) * np.float32(0.5)
    w[rng.random(shape) >= density] = 0.0
    return w


def _resnet(width: int = 8, size: int = 16) -> onnx.ModelProto:
    """Stem 3x3, two residual blocks, a stride-2 block with a 1x1 stride-2 shortcut, one more
    block, global pool: every conv after the stem a wavefront candidate."""
    rng = np.random.default_rng(3)
    inits: dict[str, np.ndarray] = {}
    nodes = []

    def conv(x: str, out: str, cin: int, cout: int, k: int, stride: int = 1,
             density: float = 0.4) -> str:
        inits[f"{out}_w"] = _sparse(rng, (cout, cin, k, k), density)
        inits[f"{out}_b"] = rng.standard_normal(cout).astype(np.float32) * np.float32(0.1)
        pad = k // 2
        nodes.append(helper.make_node("Conv", [x, f"{out}_w", f"{out}_b"], [out], name=out,
                                      pads=[pad] * 4, strides=[stride, stride]))
        return out

    def relu(x: str) -> str:
        nodes.append(helper.make_node("Relu", [x], [f"{x}_r"], name=f"{x}_relu"))
        return f"{x}_r"

    def block(x: str, name: str, cin: int, cout: int, stride: int) -> str:
        h = relu(conv(x, f"{name}a", cin, cout, 3, stride))
        y = conv(h, f"{name}b", cout, cout, 3)
        short = conv(x, f"{name}s", cin, cout, 1, stride, density=0.3) if stride > 1 else x
        nodes.append(helper.make_node("Add", [y, short], [f"{name}_sum"], name=f"{name}_add"))
        return relu(f"{name}_sum")

    x = relu(conv("x", "stem", 3, width, 3, density=1.0))
    x = block(x, "b1", width, width, 1)
    x = block(x, "b2", width, width, 1)
    x = block(x, "b3", width, 2 * width, 2)
    x = block(x, "b4", 2 * width, 2 * width, 1)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["y"], name="pool"))
    return graph_model(nodes, ["N", 3, size, size], inits, name="resnet")


# Some scenarios of reused storage need the stem's output (channel-major: the dense stem runs
# on BSR) and a member's output in one layout: storage of two layouts is never shared within a
# group (buffers_disjoint_or_equal), so those tests plan channel-major throughout.
CHANNEL_MAJOR = False


def _plan(path, shape, layers=3, threads=1, position_major=True):
    planner = PlannerOptions(wavefront_layers=layers, position_major=position_major)
    with use_options(EngineOptions(planner=planner)):
        return plan_graph(load_graph(path), shape, threads, interleave=shape[0] > 1)


def _run(plan, x: np.ndarray) -> np.ndarray:
    return run_plan(plan, x)


def _assert_exact(path, wave, x: np.ndarray, position_major: bool = True) -> np.ndarray:
    """The wavefront plan's output is bit-identical to the same plan layer by layer, and equals
    ONNX Runtime. Returns the layer-by-layer output."""
    result = _run(wave, x)
    plain = _plan(path, x.shape, layers=0, position_major=position_major)
    assert plain.wavefronts == []
    expected = _run(plain, x)
    np.testing.assert_array_equal(result, expected)
    assert_close(result, ort_run(path, x))
    return expected


@pytest.fixture
def resnet_path(tmp_path):
    path = tmp_path / "resnet.onnx"
    onnx.save(_resnet(), str(path))
    return path


# (batch, size): a batch-interleaved group (strided members, one row per sweep), and one planar
# image whose rows are not whole vectors (planar members, ranges cut at whole vectors).
LAYOUTS = [(16, 16), (1, 44)]


def _wave_fields(record) -> dict:
    wave, spec = record.spec.wave, record.spec
    return {"wave_in": wave.in_from, "wave_res": wave.res_from,
            "wave_guard_in": list(wave.guard_in), "wave_guard_res": list(wave.guard_res),
            "wave_step": wave.step, "wave_overhang": wave.overhang, "wave_bands": wave.bands,
            "halo": spec.halo,
            "direct": spec.direct}


@pytest.fixture
def marked(monkeypatch):
    """The wave fields of every marked member, group by group."""
    groups: list[list[dict]] = []
    original = wavefront._mark_group

    def spy(members, *args):
        original(members, *args)
        groups.append([_wave_fields(r) for r in members])

    monkeypatch.setattr(wavefront, "_mark_group", spy)
    return groups


@pytest.mark.parametrize("batch,size", LAYOUTS)
@pytest.mark.parametrize("layers", [2, 3, 5])
def test_wavefront_equals_layer_by_layer_and_ort(tmp_path, monkeypatch, marked, layers, batch,
                                                  size):
    """Groups of 2, 3 and 5 convs (residuals written in place, storage reused within a group;
    stride 2 in the interleaved group) give exactly the layer-by-layer result, which equals
    ORT."""
    resnet_path = tmp_path / "resnet.onnx"
    onnx.save(_resnet(size=size), str(resnet_path))
    x = random_input((batch, 3, size, size), seed=layers)
    wave = _plan(resnet_path, x.shape, layers)
    # Nine convs in one run when interleaved; the planar stride-2 3x3 conv reads stride phases
    # and is no member, which leaves runs of 4 and 4 (the 1x1 shortcut, read directly, joins).
    longest = 9 if batch > 1 else 4
    assert wave.wavefronts and max(len(g) for g in wave.wavefronts) == min(layers, longest)
    # Planar members run into the next row, except direct ones (exact rows).
    overhangs = {(m["direct"], m["wave_overhang"]) for g in marked for m in g}
    if batch > 1:
        assert overhangs == {(False, 0)}
    else:
        assert {(False, 1)} <= overhangs <= {(False, 1), (True, 0)}
    members = [m for group in marked for m in group]
    assert any(m["wave_in"] >= 0 for m in members)
    # A block's second conv overwrites the residual its first conv still reads.
    assert any(m["wave_guard_in"] for m in members)
    if layers == 5:  # a residual written by an earlier member
        assert any(m["wave_res"] >= 0 for m in members)
    first = _run(wave, x)  # the arena is reused between calls: both calls must be exact
    np.testing.assert_array_equal(first, _assert_exact(resnet_path, wave, x))


def test_wavefront_guards_reused_storage(resnet_path, monkeypatch, marked):
    """Three-conv groups starting at a block's first conv: the third member writes the next
    block's hidden tensor into the storage of this block's hidden tensor, which the second
    member is still reading; its guard on the second member is what keeps the result exact."""
    x = random_input((16, 3, 16, 16), seed=7)
    wave = _plan(resnet_path, x.shape, 3)
    first = marked[0]
    assert [m["wave_in"] for m in first] == [-1, 0, 1]
    assert first[1]["wave_guard_in"] == [0]  # block output over the residual conv a still reads
    assert first[2]["wave_guard_in"] == [1]  # next hidden tensor over the one conv b reads
    _assert_exact(resnet_path, wave, x)


def _branches(size: int) -> onnx.ModelProto:
    """A dense stem (not a member) writes t; then p = 3x3(t), p2 = 3x3(p), p3 = 1x1(p),
    q = 3x3(t) + p2 (t's last reader), r = 1x1(p3) (its storage is t's, freed by q), 3x3(q) + r,
    and a 1x1 into the caller's array. q trails p2, which trails p by a row; r trails only p3
    and p, not q: its guard on q is all that stops it overwriting rows of t q has yet to read."""
    rng = np.random.default_rng(5)
    inits = {"w0": _sparse(rng, (8, 3, 3, 3), 1.0), "wo": _sparse(rng, (4, 8, 1, 1), 0.6)}
    for name in ("wp", "wp2", "wq", "ws"):
        inits[name] = _sparse(rng, (8, 8, 3, 3), 0.4)
    for name in ("wp3", "wr"):
        inits[name] = _sparse(rng, (8, 8, 1, 1), 0.3)
    same = {"pads": [1, 1, 1, 1]}
    nodes = [helper.make_node("Conv", ["x", "w0"], ["t"], name="stem", **same),
             helper.make_node("Conv", ["t", "wp"], ["p"], name="p", **same),
             helper.make_node("Conv", ["p", "wp2"], ["p2"], name="p2", **same),
             helper.make_node("Conv", ["p", "wp3"], ["p3"], name="p3"),
             helper.make_node("Conv", ["t", "wq"], ["q0"], name="q", **same),
             helper.make_node("Add", ["q0", "p2"], ["q"], name="q_add"),
             helper.make_node("Conv", ["p3", "wr"], ["r"], name="r"),
             helper.make_node("Conv", ["q", "ws"], ["s0"], name="s", **same),
             helper.make_node("Add", ["s0", "r"], ["s"], name="s_add"),
             helper.make_node("Conv", ["s", "wo"], ["y"], name="o")]
    return graph_model(nodes, ["N", 3, size, size], inits, name="branches")


@pytest.mark.parametrize("batch,size", LAYOUTS)
def test_guard_keeps_reused_storage_until_read(tmp_path, monkeypatch, marked, batch, size):
    """r writes into the storage of t while q still reads t: exact only if r waits for q."""
    path = tmp_path / "branches.onnx"
    onnx.save(_branches(size), str(path))
    x = random_input((batch, 3, size, size), seed=11)
    wave = _plan(path, x.shape, 6, position_major=CHANNEL_MAJOR)
    assert [len(g) for g in wave.wavefronts] == [6]
    members = marked[0]  # planned order: p, p2, p3, q, r, s
    assert [m["wave_in"] for m in members] == [-1, 0, 0, -1, 2, 3]
    assert [m["wave_res"] for m in members] == [-1, -1, -1, 1, -1, 4]
    assert members[4]["wave_guard_in"] == [0, 3]  # r after p and q, the readers of t
    _assert_exact(path, wave, x, position_major=CHANNEL_MAJOR)


def _wide_chain() -> onnx.ModelProto:
    """Dense stem, then 3x3 -> 3x3 (+ the first) -> 3x3 -> 1x1 on 12 x 300 planes: a planar
    row is more than a kernel chunk, so planar members sweep one row at a time."""
    rng = np.random.default_rng(9)
    inits = {"w0": _sparse(rng, (8, 3, 3, 3), 1.0), "wo": _sparse(rng, (4, 8, 1, 1), 0.6)}
    for name in ("w1", "w2", "w3"):
        inits[name] = _sparse(rng, (8, 8, 3, 3), 0.3)
    same = {"pads": [1, 1, 1, 1]}
    nodes = [helper.make_node("Conv", ["x", "w0"], ["t"], name="stem", **same),
             helper.make_node("Conv", ["t", "w1"], ["a"], name="c1", **same),
             helper.make_node("Conv", ["a", "w2"], ["b0"], name="c2", **same),
             helper.make_node("Add", ["b0", "a"], ["b"], name="add"),
             helper.make_node("Conv", ["b", "w3"], ["c"], name="c3", **same),
             helper.make_node("Conv", ["c", "wo"], ["y"], name="o")]
    return graph_model(nodes, ["N", 3, 12, 300], inits, name="wide")


def test_planar_ranges_wait_for_the_row_they_run_into(tmp_path, monkeypatch, marked):
    """One planar row per sweep: a range's last vector computes the first positions of the
    next row, so a member must wait for the input rows of that row too (WaveInfo::overhang)."""
    path = tmp_path / "wide.onnx"
    onnx.save(_wide_chain(), str(path))
    x = random_input((1, 3, 12, 300), seed=2)
    wave = _plan(path, x.shape, 3)
    assert [len(g) for g in wave.wavefronts] == [3]
    assert [(m["wave_step"], m["wave_overhang"]) for m in marked[0]] == [(1, 1)] * 3
    _assert_exact(path, wave, x)


def _inverted_residuals(strides: list[int], size: int) -> onnx.ModelProto:
    """Dense stem to 8 channels, then one MobileNetV2-style block per stride: 1x1 expand to 48
    channels and Relu, 3x3 depthwise at that stride and Relu, 1x1 project to 8 channels, plus
    the block input when the stride is 1."""
    rng = np.random.default_rng(13)
    inits = {"w0": _sparse(rng, (8, 3, 3, 3), 1.0)}
    same = {"pads": [1, 1, 1, 1]}
    nodes = [helper.make_node("Conv", ["x", "w0"], ["t0"], name="stem", **same)]
    for k, stride in enumerate(strides):
        x, e, d, p = f"t{k}", f"e{k}", f"d{k}", f"p{k}"
        inits[f"we{k}"] = _sparse(rng, (48, 8, 1, 1), 0.4)
        inits[f"wd{k}"] = _sparse(rng, (48, 1, 3, 3), 0.8)
        inits[f"wp{k}"] = _sparse(rng, (8, 48, 1, 1), 0.4)
        nodes += [helper.make_node("Conv", [x, f"we{k}"], [e], name=e),
                  helper.make_node("Relu", [e], [f"{e}r"], name=f"{e}_relu"),
                  helper.make_node("Conv", [f"{e}r", f"wd{k}"], [d], name=d, group=48,
                                   strides=[stride, stride], **same),
                  helper.make_node("Relu", [d], [f"{d}r"], name=f"{d}_relu")]
        if stride == 1:
            nodes += [helper.make_node("Conv", [f"{d}r", f"wp{k}"], [p], name=p),
                      helper.make_node("Add", [p, x], [f"t{k + 1}"], name=f"add{k}")]
        else:
            nodes.append(helper.make_node("Conv", [f"{d}r", f"wp{k}"], [f"t{k + 1}"], name=p))
    nodes.append(helper.make_node("GlobalAveragePool", [f"t{len(strides)}"], ["y"],
                                  name="pool"))
    return graph_model(nodes, ["N", 3, size, size], inits, name="inverted")


@pytest.mark.parametrize("batch,size", LAYOUTS)
def test_groups_cut_where_the_fewest_floats_cross(tmp_path, batch, size):
    """A run of inverted-residual blocks is cut between blocks, where only the 8-channel
    block output crosses: a cut inside a block would send a 48-channel tensor through memory.
    (Cutting every 4 convs from the run's start lands on every position of a block.)"""
    path = tmp_path / "inverted.onnx"
    onnx.save(_inverted_residuals([1, 1, 1], size), str(path))
    x = random_input((batch, 3, size, size), seed=4)
    wave = _plan(path, x.shape, 4)
    names = [[wave.records[i].node for i in group] for group in wave.wavefronts]
    assert names == [[f"e{k}", f"d{k}", f"p{k}"] for k in range(3)]
    _assert_exact(path, wave, x)


@pytest.mark.parametrize("size", [44, 70])
def test_direct_strided_conv_joins_its_block(tmp_path, marked, size):
    """A stride-2 depthwise conv read directly (conv_csr_direct) computes exact row ranges:
    it joins its block's wavefront between the expand conv it waits for and the project conv
    waiting for it; exact against layer by layer and ORT, on both calls."""
    path = tmp_path / "inverted.onnx"
    onnx.save(_inverted_residuals([1, 2, 1], size), str(path))
    x = random_input((1, 3, size, size), seed=size)
    wave = _plan(path, x.shape, 3)
    names = [[wave.records[i].node for i in group] for group in wave.wavefronts]
    assert ["e1", "d1", "p1"] in names
    group = wave.wavefronts[names.index(["e1", "d1", "p1"])]
    assert wave.records[group[1]].spec.direct
    member = marked[names.index(["e1", "d1", "p1"])][1]
    assert (member["wave_in"], member["wave_overhang"]) == (0, 0)
    assert marked[names.index(["e1", "d1", "p1"])][2]["wave_in"] == 1
    first = _run(wave, x)
    np.testing.assert_array_equal(first, _assert_exact(path, wave, x))


def _banded_plan(path, shape, layers, threads, band_min_bytes=0, poison=False,
                 position_major=True):
    planner = PlannerOptions(wavefront_layers=layers, wave_band_min_bytes=band_min_bytes,
                             poison_arena=poison, position_major=position_major)
    with use_options(EngineOptions(planner=planner)):
        return plan_graph(load_graph(path), shape, threads, interleave=True)


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("layers", [2, 3])
def test_row_bands_equal_layer_by_layer(tmp_path, marked, threads, layers):
    """Parallel runs of wavefront groups in row bands (a block's output written over the
    residual its first conv still reads, a stride-2 member, a middle band with neighbours on
    both sides) give exactly the layer-by-layer result, call after call, from a NaN-poisoned
    arena."""
    path = tmp_path / "resnet.onnx"
    onnx.save(_resnet(size=32), str(path))
    x = random_input((16, 3, 32, 32), seed=threads + layers)
    banded = _banded_plan(path, x.shape, layers, threads, poison=True)
    assert banded.native.banded_groups >= 1
    assert any(m["wave_guard_in"] for group in marked for m in group)
    expected = _run(_plan(path, x.shape, layers=0), x)
    for _ in range(3):
        np.testing.assert_array_equal(_run(banded, x), expected)


def test_row_bands_keep_storage_until_every_band_read_it(tmp_path, marked):
    """r writes into t's storage while q still reads t: in bands, r leaves alone the rows q
    reads in the other band and in the fill."""
    path = tmp_path / "branches.onnx"
    onnx.save(_branches(32), str(path))
    x = random_input((16, 3, 32, 32), seed=5)
    banded = _banded_plan(path, x.shape, 6, 2, poison=True, position_major=CHANNEL_MAJOR)
    assert banded.native.banded_groups == 1 and marked[0][4]["wave_guard_in"] == [0, 3]
    np.testing.assert_array_equal(
        _run(banded, x), _run(_plan(path, x.shape, layers=0, position_major=CHANNEL_MAJOR), x))


def test_row_bands_skip_groups_writing_storage_twice(tmp_path, marked):
    """Groups of five: a member writes the next block's hidden tensor where an earlier member
    wrote this block's (not its residual). Bands and the fill would write those rows in their
    own order, so such a group runs layer by layer."""
    path = tmp_path / "resnet.onnx"
    onnx.save(_resnet(size=32), str(path))
    banded = _banded_plan(path, (16, 3, 32, 32), 5, 2)
    flags = [all(m["wave_bands"] for m in group) for group in marked]
    assert False in flags
    assert banded.native.banded_groups == flags.count(True)


def _fill_reads_overwritten_rows() -> onnx.ModelProto:
    """A dense stem (not a member) writes t; p = 3x3(t), q = 3x3(p), k = 3x3(t) + q and
    i = 1x1(k) + t, written over t (its last reader). k's rows next to a band's edge wait for q
    and so run in the fill, reading rows of t that i's band rows would otherwise overwrite."""
    rng = np.random.default_rng(9)
    inits = {"w0": _sparse(rng, (8, 3, 3, 3), 1.0), "wo": _sparse(rng, (8, 8, 1, 1), 0.3),
             "wi": _sparse(rng, (8, 8, 1, 1), 0.3)}  # sparse enough for the CSR kernel
    for name in ("wp", "wq", "wk"):
        inits[name] = _sparse(rng, (8, 8, 3, 3), 0.4)
    same = {"pads": [1, 1, 1, 1]}
    nodes = [helper.make_node("Conv", ["x", "w0"], ["t"], name="stem", **same),
             helper.make_node("Conv", ["t", "wp"], ["p"], name="p", **same),
             helper.make_node("Conv", ["p", "wq"], ["q"], name="q", **same),
             helper.make_node("Conv", ["t", "wk"], ["k0"], name="k", **same),
             helper.make_node("Add", ["k0", "q"], ["k"], name="k_add"),
             helper.make_node("Conv", ["k", "wi"], ["i0"], name="i"),
             helper.make_node("Add", ["i0", "t"], ["i"], name="i_add"),
             helper.make_node("Conv", ["i", "wo"], ["o"], name="o"),
             helper.make_node("Add", ["o", "p"], ["y"], name="o_add")]  # p stays live
    return graph_model(nodes, ["N", 3, 32, 32], inits, name="fill")


def test_row_bands_leave_rows_the_fill_still_reads(tmp_path, marked):
    path = tmp_path / "fill.onnx"
    onnx.save(_fill_reads_overwritten_rows(), str(path))
    x = random_input((16, 3, 32, 32), seed=13)
    banded = _banded_plan(path, x.shape, 5, 2, poison=True, position_major=CHANNEL_MAJOR)
    assert banded.native.banded_groups == 1
    group = marked[0]  # p, q, k, i, o
    assert [m["wave_bands"] for m in group] == [True] * 5
    assert group[3]["wave_guard_in"] == [0, 2] and group[2]["wave_res"] == 1
    np.testing.assert_array_equal(
        _run(banded, x), _run(_plan(path, x.shape, layers=0, position_major=CHANNEL_MAJOR), x))


def test_row_bands_only_for_big_tensors_and_threads(tmp_path):
    path = tmp_path / "resnet.onnx"
    onnx.save(_resnet(size=32), str(path))
    shape = (16, 3, 32, 32)
    small = _banded_plan(path, shape, 3, 2, band_min_bytes=PlannerOptions().wave_band_min_bytes)
    assert small.wavefronts and small.native.banded_groups == 0  # 0.5 MB tensors
    assert _banded_plan(path, shape, 3, 1).native.banded_groups == 0  # one thread: serial


@pytest.mark.parametrize("threads", [1, 2])
def test_engine_batches_run_wavefronts(resnet_path, threads):
    """Batches of whole groups (each thread runs its own images serially, so wavefronts run
    on both threads) and a tail group equal ORT."""
    engine = Engine(resnet_path, threads=threads, backend="native")
    x = random_input((37, 3, 16, 16), seed=threads)
    assert_close(engine.run(x), ort_run(resnet_path, x))
    program = engine._program((("x", (16, 3, 16, 16)),), interleave=True)
    assert program.single_plan.wavefronts


def test_short_rows_and_column_segments_stay_layer_by_layer(tmp_path, monkeypatch, marked,
                                                           conv_specs):
    """Interleaved rows shorter than a kernel chunk (computed several rows per chunk) and
    batch-1 convs on column segments (their epilogue writes halos) join no wavefront; the
    batch-1 plan's planar convs do."""
    # A chunk is pair_chunk_vectors(V) vectors: 8 at V = 16, 4 at V = 8 and V = 4.
    vector_floats = _native.vector_floats(EngineOptions().isa)
    chunk = pair_chunk_vectors(vector_floats)
    # A group of V images (one vector per position) on 3x3 planes: rows of 3 vectors.
    assert chunk > 3
    path = tmp_path / "small.onnx"
    onnx.save(_resnet(size=3), str(path))
    assert _plan(path, (vector_floats, 3, 3, 3)).wavefronts == []
    # Every conv but the dense stem (BSR) runs in place on the interleaved rows, as members do:
    # only the row length keeps them out.
    assert [s.strided for s in conv_specs] == [False] + [True] * 9
    # One image of chunk * V columns: a row of `chunk` vectors is too long for column segments
    # (at most chunk / 2 positions), so the first convs are planar; after the stride-2 block
    # rows of chunk / 2 vectors go onto segments.
    size = chunk * vector_floats
    big = tmp_path / "big.onnx"
    onnx.save(_resnet(size=size), str(big))
    segment_calls = []
    original = conv_ops._segment_conv
    monkeypatch.setattr(conv_ops, "_segment_conv",
                        lambda *a: segment_calls.append(original(*a)) or segment_calls[-1])
    plan = _plan(big, (1, 3, size, size))
    assert any(segment_calls) and plan.wavefronts
    assert all(not m.get("halo") and m["wave_overhang"] == 1 for g in marked for m in g)


def test_member_referring_forward_is_refused(resnet_path, monkeypatch):
    """A wavefront member whose producer is not an earlier member is refused when the native
    plan is built (it would wait for ever), as is a guard on a later member."""
    original = wavefront._mark_group

    def forward(key):
        def spy(members, *args):
            original(members, *args)
            setattr(members[0].spec.wave, key, [1] if key.startswith("guard") else 1)
        return spy

    for key in ("in_from", "res_from", "guard_in", "guard_res"):
        monkeypatch.setattr(wavefront, "_mark_group", forward(key))
        with pytest.raises(ValueError, match="wavefront member"):
            _plan(resnet_path, (16, 3, 16, 16))


def _view(origin: int, dims: tuple, strides: tuple) -> SymView:
    return SymView(None, 0, origin, dims, strides)


def testviews_disjoint_or_equal():
    """Same view twice, or views that share no float: fine; any partial overlap is not."""
    a = _view(0, (1, 2, 3, 4), (0, 16, 4, 1))  # floats [0, 28)
    b = _view(28, (1, 2, 3, 4), (0, 16, 4, 1))
    channel_slice = _view(16, (1, 1, 3, 4), (0, 16, 4, 1))
    assert views_disjoint_or_equal([a, a, b])
    assert not views_disjoint_or_equal([a, channel_slice])
    assert not views_disjoint_or_equal([a, _view(0, (1, 1, 3, 4), (0, 16, 4, 1))])


def _timeline(plan, x: np.ndarray) -> tuple[list[tuple[int, int, float]], np.ndarray]:
    out = np.empty(plan.output_shapes[0], np.float32)
    spans = plan.native.timeline([np.ascontiguousarray(x, np.float32)], [out], 2)
    return spans, out


@pytest.mark.parametrize("threads", [1, 2])
def test_timeline_spans_cover_every_step_of_a_real_run(tmp_path, threads):
    """Plan.timeline times real runs: one span per stage in order (a banded group's bands as
    one span over its members, then each member's fill inside it) or per serial entry (a
    wavefront group as one span); every step is in exactly one non-fill span, and the run
    computes the plan's output."""
    path = tmp_path / "resnet.onnx"
    onnx.save(_resnet(size=32), str(path))
    x = random_input((16, 3, 32, 32), seed=21)
    plan = _banded_plan(path, x.shape, 3, threads)
    spans, out = _timeline(plan, x)
    np.testing.assert_array_equal(out, _run(_plan(path, x.shape, layers=0), x))
    assert all(np.isfinite(s) and 0 <= s < 10 for _, _, s in spans)
    covered, group = -1, None
    for first, last, _ in spans:
        if group and group[0] <= first == last <= group[1] and first <= covered:
            continue  # a member's fill
        assert first == covered + 1 and last >= first
        covered, group = last, (first, last) if last > first else None
    assert covered == len(plan.native.step_names()) - 1
    groups = [(f, lst) for f, lst, _ in spans if lst > f]
    assert len(groups) == (plan.native.banded_groups if threads > 1 else len(plan.wavefronts))
    assert groups


@pytest.mark.parametrize("batch,size", LAYOUTS)
def test_serial_runs_can_compute_groups_member_by_member(tmp_path, batch, size):
    """Plan.serial_wavefronts off: each wavefront group runs member by member on the same
    buffers, bit-identical (one run, two images each on a thread of its own, and the timeline,
    whose spans are then single steps); back on, groups are one span again."""
    path = tmp_path / "resnet.onnx"
    onnx.save(_resnet(size=size), str(path))
    x = random_input((batch, 3, size, size), seed=5)
    plan = _plan(path, x.shape)
    native = plan.native
    assert native.serial_wave_groups == len(plan.wavefronts) > 0 and native.serial_wavefronts
    waves = _run(plan, x)
    native.serial_wavefronts = False
    np.testing.assert_array_equal(_run(plan, x), waves)
    spans, out = _timeline(plan, x)
    np.testing.assert_array_equal(out, waves)
    assert [(f, lst) for f, lst, _ in spans] == [(i, i) for i in range(len(native.step_names()))]
    two = _plan(path, x.shape, threads=2)
    two.native.serial_wavefronts = False
    pair = np.concatenate([x, x[::-1].copy()])
    outs = np.empty((2 * plan.output_shapes[0][0], *plan.output_shapes[0][1:]), np.float32)
    two.native.run_images([pair], [outs], 2)
    np.testing.assert_array_equal(outs[:batch], waves)
    native.serial_wavefronts = True
    assert any(lst > f for f, lst, _ in _timeline(plan, x)[0])


@pytest.mark.parametrize("member_by_member_s", [0.5, 2.0])
def test_engine_times_serial_wavefronts_once_per_plan(resnet_path, monkeypatch,
                                                      member_by_member_s):
    """With tuning on, a plan about to run serially keeps row wavefronts unless member by
    member measured WAVEFRONT_MARGIN faster (timed once, whatever the batch); the report says
    which. With tuning off nothing is timed and wavefronts stay."""
    import featherdeploy.runtime.tuning as tuning

    calls = []

    def timed(first, second, *args, **kwargs):
        first(), second()
        calls.append(1)
        return 1.0, member_by_member_s

    monkeypatch.setattr(tuning, "compare_streams", timed)
    x = random_input((1, 3, 16, 16), seed=9)
    engine = Engine(resnet_path, threads=1, backend="native")
    for _ in range(2):
        assert_close(engine.run(x), ort_run(resnet_path, x))
    plan = engine._single_image_program((("x", (1, 3, 16, 16)),)).single_plan
    assert plan.native.serial_wavefronts == (member_by_member_s > 1.0)
    assert len(calls) == 1
    choice = engine.describe(input_shapes={"x": x.shape}).choice
    assert ("member by member" in choice) == (member_by_member_s < 1.0)
    off = Engine(resnet_path, threads=1, backend="native",
                 options=EngineOptions(tuning="off"))
    assert_close(off.run(x), ort_run(resnet_path, x))
    assert off._single_image_program((("x", (1, 3, 16, 16)),)).single_plan.native.serial_wavefronts
    assert len(calls) == 1
