"""Winograd F(3x3, 4x4) and F(5x5, 4x4) convs over stride-phase planes (kernels/
conv_winograd.cpp, runtime/planner/winograd.py): the native transforms compute a correlation,
and dense strided convs, planar or of batches one vector wide, run on them and equal the NumPy
reference."""

from __future__ import annotations

import numpy as np
import pytest

from featherdeploy.runtime import _native
from featherdeploy.runtime.kernels import native as nat
from featherdeploy.runtime.kernels import reference as ref
from featherdeploy.runtime.options import EngineOptions, PlannerOptions
from featherdeploy.runtime.planner.winograd import winograd_matrices, winograd_pays
from tests.runtime.onnx_cases import assert_close, random_input

# The transforms multiply by up to 16 and 1/90: an output's rounding error scales with its
# tile's largest terms, not with the output itself (measured: up to 6e-6 of the largest output
# for 5x5 tiles, 2e-6 for 3x3).
WINOGRAD_OF_LARGEST = 2e-5
WINOGRAD_RTOL = 1e-4


def assert_winograd_close(actual: np.ndarray, expected: np.ndarray,
                          unclamped: np.ndarray | None = None) -> None:
    """Within WINOGRAD_OF_LARGEST of the largest output before any clamp (``unclamped``)."""
    scale = expected if unclamped is None else unclamped
    atol = WINOGRAD_OF_LARGEST * max(1.0, float(np.abs(scale[np.isfinite(scale)]).max()))
    assert_close(actual, expected, atol, WINOGRAD_RTOL)


@pytest.fixture(params=[3, 5], ids=["tile3", "tile5"])
def interleaved_tile(request):
    """Output tile side of batch-interleaved Winograd convs (planar ones always have 3)."""
    with nat.use_options(EngineOptions(planner=PlannerOptions(
            winograd_interleaved_tile=request.param))):
        yield request.param


@pytest.mark.parametrize("tile", [3, 5])
def test_native_transforms_compute_a_tile_of_a_4x4_correlation(tile):
    mats = winograd_matrices(tile)
    at, g_mat, bt = (np.asarray(mats[k], np.float64) for k in ("AT", "G", "BT"))
    side = tile + 3
    assert at.shape == (tile, side) and g_mat.shape == (side, 4) and bt.shape == (side, side)
    rng = np.random.default_rng(0)
    for _ in range(20):
        d, g = rng.standard_normal((side, side)), rng.standard_normal((4, 4))
        y = at @ ((g_mat @ g @ g_mat.T) * (bt @ d @ bt.T)) @ at.T
        direct = np.array([[np.sum(d[i:i + 4, j:j + 4] * g) for j in range(tile)]
                           for i in range(tile)])
        # (float32 matrices: 2/9, 1/90 and 32/45 are rounded)
        np.testing.assert_allclose(y, direct, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="tile must be 3 or 5"):
        _native.winograd_matrices(4)


def _lanes() -> int:
    return _native.vector_floats()


def _conv(x, w, b, threads=1, **kw):
    """Step names and output of a one-conv plan: batch-interleaved unless x is 1-2 images."""
    if x.shape[0] <= 2:
        plan = nat.conv2d_plan(x.shape, w, b, threads=threads, **kw)
        return plan.native.step_names(), nat.run_plan(plan, x)
    with nat.batch_interleaved():
        plan = nat.conv2d_plan(x.shape, w, b, threads=threads, **kw)
        return plan.native.step_names(), nat.run_plan(plan, x)


@pytest.fixture(params=["planar-1", "planar-2", "interleaved"])
def images(request):
    """Planar planes of one or two images (V tiles per vector), or one interleaved group."""
    return {"planar-1": 1, "planar-2": 2, "interleaved": _lanes()}[request.param]


GEOMETRIES = [  # (in channels, out channels, H, W, kernel, stride, pads, dilation)
    (3, 64, 30, 30, 7, 2, (3, 3, 3, 3), 1),     # a ResNet stem, small plane
    (3, 13, 23, 19, 7, 2, (3, 3, 3, 3), 1),     # outputs not a multiple of 3, odd channels
    (2, 8, 9, 9, 5, 2, (2, 2, 2, 2), 1),
    (1, 9, 4, 5, 7, 2, (3, 3, 3, 3), 1),        # a 2x3 output: one partial tile
    (4, 5, 17, 20, 8, 2, (0, 1, 3, 2), 1),      # even kernel, asymmetric pads
    (2, 7, 25, 22, 9, 3, (4, 4, 4, 4), 1),      # stride 3: 3x3 phase windows
    (3, 6, 20, 21, 3, 2, (2, 2, 2, 2), 2),      # dilated
    (3, 10, 16, 16, 7, (2, 1), (3, 3, 3, 3), 1),  # stride 2 x 1: 4x7 taps per phase -> no
    (2, 4, 12, 110, 7, 2, (3, 3, 3, 3), 1),     # planar: 19 tiles a row, two tile vectors
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("density", [1.0, 0.5, 0.1])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_winograd_conv_equals_reference(geometry, density, threads, images, interleaved_tile):
    c, oc, h, w, k, stride, pads, dil = geometry
    stride = stride if isinstance(stride, tuple) else (stride, stride)
    x = random_input((images, c, h, w))
    rng = np.random.default_rng(3)
    wt = (rng.standard_normal((oc, c, k, k)) * (rng.random((oc, c, k, k)) < density))
    wt = wt.astype(np.float32)
    b = np.linspace(-1, 1, oc, dtype=np.float32)
    kw = dict(stride=stride, pads=pads, dilation=(dil, dil))
    applies = stride != (2, 1)
    unclamped = ref.conv2d(x, wt, b, **kw)
    for clamp in (None, (0.0, 6.0), (0.0, np.inf)):
        names, y = _conv(x, wt, b, threads, kernel="winograd", clamp=clamp, **kw)
        assert ("conv_winograd" in names) == applies, names
        assert_winograd_close(y, ref.conv2d(x, wt, b, clamp=clamp, **kw), unclamped)


def test_winograd_propagates_nan_and_inf_to_the_outputs_that_read_them(images,
                                                                        interleaved_tile):
    x = random_input((images, 3, 20, 20))
    x[-1, 1, 7, 9] = np.nan
    x[-1, 0, 12, 3] = np.inf
    wt = random_input((8, 3, 7, 7), seed=4)
    kw = dict(stride=(2, 2), pads=(3, 3, 3, 3))
    names, y = _conv(x, wt, None, kernel="winograd", **kw)
    assert "conv_winograd" in names
    expect = ref.conv2d(x, wt, None, **kw)
    # Every output the reference makes non-finite is non-finite here too; other images are
    # untouched.
    assert np.all(~np.isfinite(y[~np.isfinite(expect)]))
    assert np.isfinite(y[:-1]).all()


@pytest.mark.parametrize("k, stride, density, expect", [
    (7, 2, 1.0, True),    # ResNet / DenseNet stems: 147 taps against 4 x 12 products
    (3, 2, 1.0, False),   # a MobileNet stem: 27 taps
    (7, 2, 0.2, False),   # a pruned 7x7 conv
])
def test_auto_chooses_winograd_for_dense_wide_kernels(k, stride, density, expect, images):
    rng = np.random.default_rng(1)
    wt = (rng.standard_normal((16, 3, k, k)) * (rng.random((16, 3, k, k)) < density))
    wt = wt.astype(np.float32)
    assert winograd_pays(wt, 3 * stride * stride, PlannerOptions()) == expect
    x = random_input((images, 3, 18, 18))
    kw = dict(stride=(stride, stride), pads=(k // 2,) * 4)
    names, y = _conv(x, wt, None, **kw)
    assert ("conv_winograd" in names) == expect
    assert_winograd_close(y, ref.conv2d(x, wt, None, **kw))


def test_winograd_is_off_where_it_does_not_apply(images):
    x = random_input((images, 3, 18, 18))
    wt = random_input((16, 3, 7, 7), seed=2)
    kw = dict(stride=(2, 2), pads=(3, 3, 3, 3))
    for forced in ("bsr", "csr"):  # a forced stream kernel
        assert "conv_winograd" not in _conv(x, wt, None, kernel=forced, **kw)[0]
    with nat.use_options(EngineOptions(planner=PlannerOptions(winograd_min_gain=1e9))):
        assert "conv_winograd" not in _conv(x, wt, None, **kw)[0]
    r = random_input((images, 16, 9, 9), seed=5)  # a residual
    names, y = _conv(x, wt, None, kernel="winograd", residual=r, **kw)
    assert "conv_winograd" not in names
    assert_close(y, ref.conv2d(x, wt, None, residual=r, **kw), 1e-5, 1e-5)


def test_portable_build_runs_winograd_too():
    """The generic ISA variant (4 floats a vector): its own tile vectors and interleave."""
    wt = random_input((9, 3, 7, 7), seed=8)
    kw = dict(stride=(2, 2), pads=(3, 3, 3, 3), kernel="winograd", clamp=(0.0, np.inf))
    with nat.use_options(EngineOptions(isa="generic")):
        for shape in ((1, 3, 23, 41), (4, 3, 23, 41)):
            x = random_input(shape)
            names, y = _conv(x, wt, None, **kw)
            assert "conv_winograd" in names
            assert_winograd_close(y, ref.conv2d(x, wt, None, **kw))


def test_streamed_stores_equal_cached_ones(interleaved_tile):
    """Outputs past stream_store_min_bytes are stored past the caches (WinogradArgs::stream)."""
    x = random_input((_lanes(), 3, 40, 40))
    wt = random_input((24, 3, 7, 7), seed=6)
    kw = dict(stride=(2, 2), pads=(3, 3, 3, 3), kernel="winograd", clamp=(0.0, np.inf))
    results = []
    for limit in (1 << 40, 0):
        planner = PlannerOptions(stream_store_min_bytes=limit,
                                 winograd_interleaved_tile=interleaved_tile)
        with nat.use_options(EngineOptions(planner=planner)):
            results.append(_conv(x, wt, None, **kw)[1])
    np.testing.assert_array_equal(results[0], results[1])
    assert_winograd_close(results[1], ref.conv2d(x, wt, None, **kw))


@pytest.mark.parametrize("images", [1, _lanes()], ids=["planar", "interleaved"])
def test_winograd_conv_sharing_phase_planes_with_a_wider_padded_conv(images):
    """Two stride-2 convs read one input: the interleaved phase planes are shared, padded for
    the 9x9 conv (4), so the 7x7 conv's Winograd windows sit one position further in; a planar
    Winograd conv splits its own planes."""
    from featherdeploy.runtime.graph import Graph, Node
    from featherdeploy.runtime.kernels.native import plan_graph, run_plan

    rng = np.random.default_rng(5)
    w7 = rng.standard_normal((8, 3, 7, 7)).astype(np.float32)
    w9 = rng.standard_normal((8, 3, 9, 9)).astype(np.float32)
    nodes = [Node("Conv", "c7", ["x", "w7"], ["a"], {"strides": [2, 2], "pads": [3, 3, 3, 3]}),
             Node("Conv", "c9", ["x", "w9"], ["b"], {"strides": [2, 2], "pads": [4, 4, 4, 4]}),
             Node("Concat", "cat", ["a", "b"], ["y"], {"axis": 1})]  # (an Add would fuse)
    x = random_input((images, 3, 21, 26))
    graph = Graph.simple(nodes, {"w7": w7, "w9": w9}, "x", x.shape, "y")
    plan = plan_graph(graph, x.shape, 1, interleave=images > 1)
    assert "conv_winograd" in plan.native.step_names()
    expect = np.concatenate([ref.conv2d(x, w7, None, stride=(2, 2), pads=(3, 3, 3, 3)),
                             ref.conv2d(x, w9, None, stride=(2, 2), pads=(4, 4, 4, 4))], axis=1)
    assert_winograd_close(run_plan(plan, x), expect)


def _stem_pool_graph(pool: tuple[int, int, int], second_reader: bool = False):
    """A ResNet-like stem: a dense 7x7/2 conv with ReLU, a max pool (kernel, stride, pad), and a
    padded 3x3 conv reading the pool's output (its zero border); optionally a second pool of
    the conv's output, added to the first."""
    from featherdeploy.runtime.graph import Graph, Node

    k, s, p = pool
    rng = np.random.default_rng(7)
    w7 = rng.standard_normal((16, 3, 7, 7)).astype(np.float32)
    w3 = rng.standard_normal((8, 16, 3, 3)).astype(np.float32)
    b7 = np.linspace(-2, 2, 16, dtype=np.float32)
    attrs = {"kernel_shape": [k, k], "strides": [s, s], "pads": [p] * 4}
    nodes = [Node("Conv", "stem", ["x", "w7", "b7"], ["a"],
                  {"strides": [2, 2], "pads": [3, 3, 3, 3]}),
             Node("Relu", "relu", ["a"], ["r"], {}),
             Node("MaxPool", "pool", ["r"], ["m"], attrs)]
    if second_reader:
        nodes += [Node("MaxPool", "pool2", ["r"], ["m2"], attrs),
                  Node("Add", "add", ["m", "m2"], ["s"], {})]
    nodes.append(Node("Conv", "next", ["s" if second_reader else "m", "w3"], ["y"],
                      {"pads": [1, 1, 1, 1]}))
    return Graph.simple(nodes, {"w7": w7, "w3": w3, "b7": b7}, "x", (None, 3, 38, 34), "y")


def _stem_pool_plan(graph, shape, threads, fused):
    from featherdeploy.runtime.kernels.native import plan_graph

    planner = PlannerOptions(pool_in_winograd=fused, poison_arena=True)
    with nat.use_options(EngineOptions(planner=planner)):
        return plan_graph(graph, shape, threads, interleave=True)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("pool", [(3, 2, 1), (2, 2, 0), (3, 1, 1), (3, 3, 0), (5, 2, 2)],
                         ids=str)
def test_max_pool_inside_the_winograd_step_equals_the_separate_pool(pool, threads,
                                                                    interleaved_tile):
    """The stem's max pool runs inside its Winograd step (no max_pool step, the conv's output
    never stored: a smaller arena) and gives exactly the separate pool's result, whose border
    the next conv reads as zeros (NaN-poisoned arena), NaN and inf included."""
    from featherdeploy.runtime.kernels.native import run_plan

    graph = _stem_pool_graph(pool)
    x = random_input((_lanes(), 3, 38, 34), seed=sum(pool) + threads)
    x[3, 1, 10, 9] = np.nan
    x[5, 0, 20, 3] = np.inf
    fused = _stem_pool_plan(graph, x.shape, threads, True)
    apart = _stem_pool_plan(graph, x.shape, threads, False)
    assert "max_pool" not in fused.native.step_names() and "max_pool" in apart.native.step_names()
    assert any("max-pool=" in d for _, _, d in fused.steps())
    assert fused.native.arena_floats < apart.native.arena_floats
    expect = run_plan(apart, x)
    for _ in range(2):
        np.testing.assert_array_equal(run_plan(fused, x), expect)
    assert np.isnan(expect[3]).any() and np.isfinite(expect[:3]).all()


def test_max_pool_stays_apart_where_it_cannot_join():
    """Another reader of the conv's output, the option off, or a planar (one-image) plan: the
    pool is a step of its own."""
    from featherdeploy.runtime.kernels.native import plan_graph

    shape = (_lanes(), 3, 38, 34)
    graph = _stem_pool_graph((3, 2, 1), second_reader=True)
    assert _stem_pool_plan(graph, shape, 1, True).native.step_names().count("max_pool") == 2
    graph = _stem_pool_graph((3, 2, 1))
    assert "max_pool" not in _stem_pool_plan(graph, shape, 1, True).native.step_names()
    assert "max_pool" in _stem_pool_plan(graph, shape, 1, False).native.step_names()
    planar = plan_graph(graph, (1, 3, 38, 34), 1, interleave=False)
    assert "max_pool" in planar.native.step_names()
