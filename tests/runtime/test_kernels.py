"""Each native kernel equals its NumPy reference (runtime.kernels.native vs .reference) on both
activation layouts, and the portable (generic) kernel variant equals the one chosen for this CPU."""

from __future__ import annotations

import math

import numpy as np
import pytest

from featherdeploy.runtime.kernels import KERNEL_NAMES
from featherdeploy.runtime.kernels import native as nat
from featherdeploy.runtime.kernels import reference as ref
from featherdeploy.runtime.options import EngineOptions, PlannerOptions
from tests.runtime.onnx_cases import assert_close, random_input

pytestmark = pytest.mark.aarch64  # every kernel, also on aarch64 (make test-aarch64)

# Both sides accumulate in a different order (the reference in float64).
KERNEL_ATOL = 1e-5
KERNEL_RTOL = 1e-5


@pytest.fixture(autouse=True, params=["planar", "interleaved"])
def layout(request):
    """Every kernel test runs on both activation layouts: planar NCHW planes, and the
    batch-interleaved layout of batched plans (build_plan(interleave=True))."""
    if request.param == "planar":
        yield request.param
        return
    with nat.batch_interleaved():
        yield request.param


def _sparse_weight(shape, density, seed=2):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * (rng.random(shape) < density)).astype(np.float32)


def test_every_kernel_has_native_and_reference_with_same_signature():
    import inspect

    for name in KERNEL_NAMES:
        assert inspect.signature(getattr(nat, name)) == inspect.signature(getattr(ref, name))


CONV_GEOMETRIES = [
    dict(stride=(1, 1), pads=(1, 1, 1, 1)),
    dict(stride=(2, 2), pads=(1, 1, 1, 1)),
    dict(stride=(2, 1), pads=(0, 2, 1, 0), dilation=(1, 2)),
    dict(stride=(1, 1), pads=(2, 2, 2, 2), dilation=(2, 2)),
    dict(stride=(3, 3), pads=(0, 0, 0, 0)),
]


@pytest.mark.parametrize("kernel", ["csr", "bsr"])
@pytest.mark.parametrize("density", [0.02, 0.3, 1.0])
@pytest.mark.parametrize("geometry", CONV_GEOMETRIES, ids=str)
def test_conv2d_native_equals_reference(kernel, density, geometry):
    x = random_input((3, 8, 11, 13))
    w = _sparse_weight((12, 8, 3, 3), density)
    b = np.linspace(-1, 1, 12, dtype=np.float32)
    r = random_input((3, 12, *ref.conv2d(x, w, **geometry).shape[2:]), seed=9)
    for extras in ({}, {"residual": r, "clamp": (0.0, 6.0)}, {"clamp": (0.0, np.inf)}):
        args = dict(geometry, kernel=kernel, **extras)
        assert_close(nat.conv2d(x, w, b, **args), ref.conv2d(x, w, b, **args),
                     KERNEL_ATOL, KERNEL_RTOL)


@pytest.mark.parametrize("kernel", ["csr", "bsr"])
@pytest.mark.parametrize("geometry", [
    dict(stride=(1, 1), pads=(1, 1, 1, 1)),
    dict(stride=(2, 2), pads=(1, 1, 1, 1)),
    dict(stride=(2, 2), pads=(0, 2, 1, 0)),
    dict(stride=(1, 2), pads=(2, 3, 2, 1), dilation=(1, 2)),
], ids=str)
@pytest.mark.parametrize("ksize", [1, 3])
def test_conv2d_wide_planes(kernel, geometry, ksize):
    """Planes wider than a vector: aligned plane interiors (runtime/planner/layout.py
    spatial_tensor) and the vectorised stride-2 phase split with its scalar tail
    (phase_split.cpp). (The output over the residual needs a conv that is not the graph output:
    test_in_place.py.)"""
    x = random_input((2, 8, 21, 37))
    w = _sparse_weight((12, 8, ksize, ksize), 0.3)
    b = np.linspace(-1, 1, 12, dtype=np.float32)
    r = random_input((2, 12, *ref.conv2d(x, w, **geometry).shape[2:]), seed=5)
    for extras in ({}, {"residual": r, "clamp": (0.0, 6.0)}):
        args = dict(geometry, kernel=kernel, **extras)
        assert_close(nat.conv2d(x, w, b, **args), ref.conv2d(x, w, b, **args),
                     KERNEL_ATOL, KERNEL_RTOL)


@pytest.mark.parametrize("hole", [False, True])
@pytest.mark.parametrize("pads", [(1, 1, 1, 1), (0, 2, 1, 0)], ids=str)
def test_conv2d_dense_rows_on_vector_wide_batches(hole, pads):
    """A batch as wide as a vector, interleaved: a position is one vector, so the kernel columns
    of a dense BSR block read inputs one vector apart and the kernel loads each kernel row once
    (conv_bsr.cpp bsr_chunk_rows). A tap missing from one block (``hole``) breaks the runs: the
    plain path then runs that conv."""
    from featherdeploy.runtime import _native

    x = random_input((_native.vector_floats(), 5, 9, 19))
    w = _sparse_weight((10, 5, 3, 3), 1.0)
    if hole:
        w[4:8, 2, 1, 0] = 0.0
    b = np.linspace(-1, 1, 10, dtype=np.float32)
    r = random_input((x.shape[0], 10, *ref.conv2d(x, w, pads=pads).shape[2:]), seed=3)
    for extras in ({}, {"residual": r, "clamp": (0.0, 6.0)}):
        args = dict(pads=pads, kernel="bsr", **extras)
        assert_close(nat.conv2d(x, w, b, **args), ref.conv2d(x, w, b, **args),
                     KERNEL_ATOL, KERNEL_RTOL)


@pytest.mark.parametrize("kernel", ["csr", "bsr"])
def test_conv2d_grouped_and_odd_channels(kernel):
    x = random_input((2, 8, 7, 5))
    w = _sparse_weight((16, 2, 3, 3), 0.5)  # 4 channels per group
    kw = dict(pads=(1, 1, 1, 1), group=4, kernel=kernel)
    assert_close(nat.conv2d(x, w, **kw), ref.conv2d(x, w, **kw), KERNEL_ATOL, KERNEL_RTOL)
    w_odd = _sparse_weight((7, 8, 1, 1), 0.5)  # BSR pads the last block of 4 channels
    kw = dict(kernel=kernel)
    assert_close(nat.conv2d(x, w_odd, **kw), ref.conv2d(x, w_odd, **kw), KERNEL_ATOL, KERNEL_RTOL)


@pytest.mark.parametrize("kernel", ["csr", "bsr"])
@pytest.mark.parametrize("hw", [(1, 1), (2, 2), (4, 4), (3, 5)])
def test_conv2d_small_planes(kernel, hw):
    """Tiny planes (<= SMALL_PLANE pixels): input and output layouts differ, general epilogue."""
    x = random_input((2, 8, *hw))
    w = _sparse_weight((8, 8, 3, 3), 0.4)
    r = random_input((2, 8, *hw), seed=7)
    kw = dict(pads=(1, 1, 1, 1), kernel=kernel, residual=r, clamp=(0.0, np.inf))
    assert_close(nat.conv2d(x, w, **kw), ref.conv2d(x, w, **kw), KERNEL_ATOL, KERNEL_RTOL)
    kw = dict(pads=(0, 1, 2, 1), kernel=kernel)  # asymmetric
    assert_close(nat.conv2d(x, w, **kw), ref.conv2d(x, w, **kw), KERNEL_ATOL, KERNEL_RTOL)


def test_conv2d_depthwise():
    x = random_input((2, 6, 9, 9))
    w = _sparse_weight((6, 1, 3, 3), 0.8)
    for stride in ((1, 1), (2, 2)):
        kw = dict(stride=stride, pads=(1, 1, 1, 1), group=6, kernel="csr", clamp=(0.0, 6.0))
        assert_close(nat.conv2d(x, w, **kw), ref.conv2d(x, w, **kw), KERNEL_ATOL, KERNEL_RTOL)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("options", [
    dict(kernel=(3, 3), stride=(2, 2), pads=(1, 1, 1, 1), ceil_mode=True, count_include_pad=True),
    dict(kernel=(2, 3), stride=(2, 1), pads=(0, 1, 1, 0)),
    dict(kernel=(3, 3), dilation=(2, 1), ceil_mode=True),
], ids=str)
def test_pool2d_native_equals_reference(kind, options):
    if kind == "avg" and options.get("dilation"):
        options = dict(options, dilation=(1, 1))
    x = random_input((2, 3, 10, 9))
    assert_close(nat.pool2d(x, kind=kind, **options), ref.pool2d(x, kind=kind, **options),
                 KERNEL_ATOL, KERNEL_RTOL)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("hw,kernel,stride,dilation,pads", [
    ((37, 111), (3, 3), (2, 2), (1, 1), (0, 0, 0, 0)),  # SqueezeNet's stem pool, ceil mode
    ((20, 33), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
    ((17, 50), (2, 5), (3, 3), (1, 2), (1, 2, 0, 1)),
    ((9, 16), (1, 7), (1, 2), (1, 3), (0, 3, 0, 3)),
    ((5, 3), (5, 5), (2, 2), (1, 1), (2, 2, 2, 2)),  # rows and columns mostly padding
], ids=str)
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_planar_pool_rows_equal_reference(kind, hw, kernel, stride, dilation, pads, ceil_mode):
    """One image's planes (rows combined, then columns, then every stride-th picked): planes
    wider and narrower than a vector, strides 1-3, dilations, asymmetric pads, ceil mode."""
    if kind == "avg":
        dilation = (1, 1)
    x = random_input((1, 3, *hw), seed=hw[1])
    options = dict(kernel=kernel, stride=stride, dilation=dilation, pads=pads,
                   ceil_mode=ceil_mode)
    assert_close(nat.pool2d(x, kind=kind, **options), ref.pool2d(x, kind=kind, **options),
                 KERNEL_ATOL, KERNEL_RTOL)


def test_planar_max_pool_propagates_nan():
    x = np.asarray(random_input((1, 2, 12, 40)))
    x[0, 0, 4, 16] = np.nan  # on the border of 2 x 2 windows
    got = np.asarray(nat.pool2d(x, kind="max", kernel=(3, 3), stride=(2, 2), ceil_mode=True))
    want = np.asarray(ref.pool2d(x, kind="max", kernel=(3, 3), stride=(2, 2), ceil_mode=True))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got).sum() == 4
    np.testing.assert_array_equal(got[~np.isnan(got)], want[~np.isnan(want)])


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_global_pool_native_equals_reference(kind):
    x = random_input((3, 5, 6, 7))
    assert_close(nat.global_pool(x, kind=kind), ref.global_pool(x, kind=kind),
                 KERNEL_ATOL, KERNEL_RTOL)


def test_affine_native_equals_reference():
    x = random_input((2, 4, 5, 6))
    scale, shift = np.array([0.5, 2, -1, 1], np.float32), np.array([0, 1, 2, -3], np.float32)
    assert_close(nat.affine(x, scale, shift), ref.affine(x, scale, shift), KERNEL_ATOL, KERNEL_RTOL)
    assert_close(nat.affine(x, None, None, (0.0, 0.5)), ref.affine(x, None, None, (0.0, 0.5)),
                 KERNEL_ATOL, KERNEL_RTOL)


@pytest.mark.parametrize("b_shape", [(2, 4, 5, 6), (4, 1, 1), (6,), (1,)])
def test_add_native_equals_reference(b_shape):
    a, b = random_input((2, 4, 5, 6)), random_input(b_shape, seed=3)
    assert_close(nat.add(a, b), ref.add(a, b), KERNEL_ATOL, KERNEL_RTOL)


@pytest.mark.parametrize("axis", [0, 1, 3])
def test_softmax_native_equals_reference(axis):
    x = random_input((2, 3, 4, 5)) * 5
    assert_close(nat.softmax(x, axis), ref.softmax(x, axis), KERNEL_ATOL, KERNEL_RTOL)


# (M, K, N): K below, at and off a vector multiple; N off the 4-column blocks; a classifier.
@pytest.mark.parametrize("m,k,n", [(7, 19, 11), (1, 3, 5), (5, 32, 4), (3, 17, 9),
                                   (16, 1024, 100)], ids=str)
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, True), (False, True)])
def test_gemm_native_equals_reference(trans_a, trans_b, m, k, n):
    # Scaled so outputs stay O(1) whatever K (the tolerance is float32 rounding of O(1) values).
    a = random_input((k, m) if trans_a else (m, k)) / np.float32(np.sqrt(k))
    b = random_input((n, k) if trans_b else (k, n), seed=4)
    c = random_input((n,), seed=5)
    kw = dict(alpha=0.5, beta=2.0, trans_a=trans_a, trans_b=trans_b)
    assert_close(nat.gemm(a, b, c, **kw), ref.gemm(a, b, c, **kw), KERNEL_ATOL, KERNEL_RTOL)


@pytest.mark.parametrize("axis", [1, 2, 3])
def test_concat_native_equals_reference(axis):
    xs = [random_input((2, 3, 4, 5), seed=s) for s in range(3)]
    np.testing.assert_array_equal(nat.concat(xs, axis), ref.concat(xs, axis))


def test_generic_isa_equals_native_isa():
    """The portable kernel build computes the same as the CPU-specific one."""
    from featherdeploy.runtime import native_isa

    chosen = native_isa()
    x = random_input((2, 16, 12, 12))
    w = _sparse_weight((16, 16, 3, 3), 0.2)
    results = {}
    for isa in ("generic", chosen):
        assert native_isa(isa) == isa
        with nat.use_options(EngineOptions(isa=isa)):
            results[isa] = [nat.conv2d(x, w, pads=(1, 1, 1, 1), kernel=k, clamp=(0.0, np.inf))
                            for k in ("csr", "bsr")]
    for fast, portable in zip(results[chosen], results["generic"], strict=True):
        assert_close(fast, portable.astype(np.float64), KERNEL_ATOL, KERNEL_RTOL)


def test_unknown_isa_is_rejected():
    from featherdeploy.runtime import EngineError, native_isa

    with pytest.raises(ValueError, match="isa must be"):
        native_isa("sse9")
    with pytest.raises(EngineError, match="isa must be one of"):
        EngineOptions(isa="sse9")


@pytest.mark.parametrize("hw", [(2, 2), (4, 4), (5, 7)])
@pytest.mark.parametrize("stride", [(1, 1), (2, 2)])
def test_conv2d_image_groups(hw, stride):
    """Batches of 9 images: tiny planes share each weight load between groups of 4 images."""
    x = random_input((9, 16, *hw))
    w = _sparse_weight((16, 16, 3, 3), 0.3)
    b = np.linspace(-1, 1, 16, dtype=np.float32)
    out_hw = ref.conv2d(x[:1], w, stride=stride, pads=(1, 1, 1, 1)).shape[2:]
    r = random_input((9, 16, *out_hw), seed=3)
    kw = dict(stride=stride, pads=(1, 1, 1, 1), kernel="csr", residual=r, clamp=(0.0, 6.0))
    assert_close(nat.conv2d(x, w, b, **kw), ref.conv2d(x, w, b, **kw), KERNEL_ATOL, KERNEL_RTOL)


@pytest.mark.parametrize("hw", [(1, 1), (2, 2), (2, 3)])
def test_conv2d_tiny_plane_dense_1x1_gemm(hw):
    """Dense 1x1 convs on tiny planes run as a GEMM over output channels (incl. 16-padding)."""
    x = random_input((2, 24, *hw))
    w = _sparse_weight((21, 24, 1, 1), 0.9)
    b = np.linspace(-1, 1, 21, dtype=np.float32)
    r = random_input((2, 21, *hw), seed=5)
    for extras in ({}, {"residual": r, "clamp": (0.0, 6.0)}):
        assert_close(nat.conv2d(x, w, b, **extras), ref.conv2d(x, w, b, **extras),
                     KERNEL_ATOL, KERNEL_RTOL)


@pytest.mark.parametrize("kernel", ["csr", "bsr"])
@pytest.mark.parametrize("hw,geometry", [
    ((20, 20), dict(stride=(2, 2), pads=(1, 1, 1, 1))),  # planar in -> gathered stride phases
    ((21, 19), dict(stride=(2, 3), pads=(0, 1, 2, 0), dilation=(1, 2))),
    ((17, 17), dict(stride=(1, 1), pads=(0, 0, 0, 0))),  # planar in -> interleaved copy
    ((15, 15), dict(stride=(1, 1), pads=(2, 2, 2, 2))),  # interleaved in -> planar copy
], ids=str)
def test_conv2d_across_the_interleave_threshold(kernel, hw, geometry):
    """Input and output planes on both sides of interleave_max_pixels (set to 256 here): in the
    interleaved layout the conv switches layouts on the way (phase-split gather or a relayout)."""
    INTERLEAVE_MAX_PIXELS = 256

    x = random_input((3, 8, *hw))
    w = _sparse_weight((12, 8, 3, 3), 0.3)
    out_hw = ref.conv2d(x, w, **geometry).shape[2:]
    big_in, big_out = (math.prod(p) > INTERLEAVE_MAX_PIXELS for p in (hw, out_hw))
    assert big_in != big_out
    b = np.linspace(-1, 1, 12, dtype=np.float32)
    r = random_input((3, 12, *out_hw), seed=5)
    kw = dict(geometry, kernel=kernel, residual=r, clamp=(0.0, 6.0))
    options = EngineOptions(planner=PlannerOptions(interleave_max_pixels=INTERLEAVE_MAX_PIXELS))
    with nat.use_options(options):
        got = nat.conv2d(x, w, b, **kw)
    assert_close(got, ref.conv2d(x, w, b, **kw), KERNEL_ATOL, KERNEL_RTOL)


STRIDED_GEOMETRIES = [
    dict(stride=(1, 1), pads=(1, 1, 1, 1)),
    dict(stride=(1, 1), pads=(2, 2, 2, 2), dilation=(2, 2)),
    dict(stride=(2, 2), pads=(1, 1, 1, 1)),
    dict(stride=(2, 1), pads=(0, 2, 1, 0), dilation=(1, 2)),
    dict(stride=(3, 2), pads=(2, 1, 0, 1)),
    dict(stride=(2, 2), pads=(1, 1, 1, 1), group=8),  # depthwise
    dict(stride=(1, 1), pads=(1, 1, 1, 1), group=8),  # depthwise: channel pairs over all rows
]


# Images as vectors per position (V images: one; 2V: two), so every vector width runs the same
# paths: with one vector per position rows of at most half a chunk (pair_chunk_vectors: 8
# vectors at V = 16, 4 at V = 8 and 4) go in chunks of 2/4/8 whole rows with tails, longer rows
# ((6, 37)) in balanced pieces, and stride 2 steps two vectors; two vectors per position take
# the offset-table path at stride > 1.
@pytest.mark.parametrize("position_vectors,hw", [(1, (7, 9)), (1, (4, 4)), (1, (16, 16)),
                                                 (1, (13, 5)), (1, (6, 37)), (2, (7, 9)),
                                                 (2, (5, 12))], ids=str)
@pytest.mark.parametrize("geometry", STRIDED_GEOMETRIES, ids=str)
def test_conv2d_strided_in_place_on_interleaved_planes(layout, position_vectors, hw, geometry):
    """Interleaved positions are whole vectors, so convs compute only valid positions and read
    their taps in place at any stride (conv_csr_strided); equal to the reference."""
    from featherdeploy.runtime import _native
    from featherdeploy.runtime.graph import Graph, Node

    images = position_vectors * _native.vector_floats(EngineOptions().isa)
    x = random_input((images, 8, *hw))
    group = geometry.get("group", 1)
    w = _sparse_weight((8, 8 // group, 3, 3), 0.4)
    b = np.linspace(-1, 1, 8, dtype=np.float32)
    out_hw = ref.conv2d(x, w, **geometry).shape[2:]
    r = random_input((images, 8, *out_hw), seed=5)
    kw = dict(geometry, kernel="csr", residual=r, clamp=(0.0, 6.0))
    assert_close(nat.conv2d(x, w, b, **kw), ref.conv2d(x, w, b, **kw), KERNEL_ATOL, KERNEL_RTOL)
    attrs = {"strides": list(geometry["stride"]), "pads": list(geometry["pads"]),
             "dilations": list(geometry.get("dilation", (1, 1))), "group": group}
    graph = Graph.simple([Node("Conv", "conv", ["x", "w"], ["y"], attrs)], {"w": w}, "x",
                         x.shape, "y")
    plan = nat.plan_graph(graph, x.shape, 1, interleave=layout == "interleaved")
    interleaved = any(d.startswith("interleaved") for d in plan.native.step_details())
    assert interleaved == (layout == "interleaved")


# Output widths around the direct kernel's register blocks (4 vectors, 1 vector, a partial one)
# at every vector width: 2, 5, 16, 57 and 70 columns.
DIRECT_HW = [(9, 9), (4, 4), (32, 32), (3, 113), (5, 140)]


@pytest.mark.parametrize("hw", DIRECT_HW)
@pytest.mark.parametrize("stride,pads", [((2, 2), (1, 1, 1, 1)), ((3, 2), (0, 1, 2, 0)),
                                         ((1, 2), (1, 0, 1, 1)), ((2, 3), (1, 1, 1, 1))])
@pytest.mark.parametrize("density", [0.15, 1.0])
@pytest.mark.parametrize("isa", ["generic", "auto"])
def test_conv2d_direct_strided_for_few_taps(layout, hw, stride, pads, density, isa):
    """Planar strided convs with <= direct_max_taps taps per output channel skip the phase
    split (conv_csr_direct): a pruned depthwise conv, and a dense one under a limit of 9; on
    the portable build (4-float vectors) and this CPU's; equal to the reference with bias,
    residual and clamp."""
    from featherdeploy.runtime.graph import Graph, Node

    x = random_input((2, 16, *hw))
    w = _sparse_weight((16, 1, 3, 3), density)
    b = np.linspace(-1, 1, 16, dtype=np.float32)
    geometry = dict(stride=stride, pads=pads, group=16)
    out_hw = ref.conv2d(x, w, **geometry).shape[2:]
    r = random_input((2, 16, *out_hw), seed=5)
    kw = dict(geometry, residual=r, clamp=(0.0, 6.0))
    options = EngineOptions(isa=isa, planner=PlannerOptions(direct_max_taps=9.0))
    with nat.use_options(options):
        assert_close(nat.conv2d(x, w, b, **kw), ref.conv2d(x, w, b, **kw), KERNEL_ATOL,
                     KERNEL_RTOL)
        attrs = {"strides": list(stride), "pads": list(pads), "group": 16}
        graph = Graph.simple([Node("Conv", "conv", ["x", "w"], ["y"], attrs)], {"w": w}, "x",
                             x.shape, "y")
        plan = nat.plan_graph(graph, x.shape, 1, interleave=layout == "interleaved")
    assert ("conv_csr_direct" in plan.native.step_names()) == (layout == "planar")
