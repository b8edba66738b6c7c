"""Interleaved CSR convs with wide input windows run input-channel block by block, partial sums
in a per-thread scratch (planner/conv_select.py input_channel_blocks, ConvKernelArgs::blocks)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from featherdeploy.runtime import _native
from featherdeploy.runtime.graph import load_graph
from featherdeploy.runtime.kernels.native import plan_graph, run_plan, use_options
from featherdeploy.runtime.options import EngineOptions, PlannerOptions
from featherdeploy.runtime.planner.conv_select import channel_block_ptr, input_channel_blocks
from tests.runtime.onnx_cases import assert_close, graph_model, ort_run, random_input


def _block_model(channels: int, stride: int) -> onnx.ModelProto:
    """conv3x3 (channels -> channels, stride) + relu -> conv3x3 (+ residual) + relu, 90% sparse,
    the residual being the first conv's output (stride 1) or a 1x1 projection (stride 2)."""
    rng = np.random.default_rng(3)

    def weight(shape, density=0.1):
        w = rng.standard_normal(shape).astype(np.float32)
        w[rng.random(shape) >= density] = 0.0
        return w

    inits = {"w1": weight((channels, channels, 3, 3)), "w2": weight((channels, channels, 3, 3)),
             "wp": weight((channels, channels, 1, 1), 0.5),
             "b2": rng.standard_normal(channels).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1],
                              strides=[stride, stride], name="c1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["x", "wp"], ["p"], strides=[stride, stride], name="proj"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="c2"),
             helper.make_node("Add", ["c2", "p"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["y"], name="relu2")]
    return graph_model(nodes, ["N", channels, 12, 12], inits, name="blocks")


# Channels (by vector width V, stride) whose 3x3 convs sweep an input window of more than twice
# PlannerOptions.ic_block_bytes (96 KB) per chunk at 16 images per position. A chunk covers
# pair_chunk_vectors(V) vectors: 8 positions at V = 16, 2 at V = 8, 1 at V = 4, so a window is
# channels x 3 rows x ((positions - 1) * stride + 3) columns x 64 bytes: 64 channels at
# V = 16 make 123 KB (3 blocks), where V = 8 and V = 4 need 192 (147 and 111 KB, 3 blocks).
BLOCKED_CHANNELS = {(16, 1): 64, (16, 2): 128, (8, 1): 192, (8, 2): 192, (4, 1): 192,
                    (4, 2): 192}


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("threads", [1, 2])
def test_channel_blocked_convs_equal_ort(tmp_path, conv_specs, stride, threads):
    """Batch-interleaved groups of 16 (a position is 16 / V vectors): the 3x3 convs run in
    input-channel blocks, with a residual and a clamp, on 1 and 2 threads (each thread its own
    scratch and channel range), and equal ONNX Runtime at every call."""
    channels = BLOCKED_CHANNELS[_native.vector_floats(EngineOptions().isa), stride]
    path = tmp_path / "blocks.onnx"
    onnx.save(_block_model(channels, stride), str(path))
    x = random_input((16, channels, 12, 12), seed=channels)
    # Blocks cut channel-major planes (a position-major input has none to cut).
    with use_options(EngineOptions(planner=PlannerOptions(position_major=False))):
        plan = plan_graph(load_graph(path), x.shape, threads, interleave=True)
    blocked = [s.blocks for s in conv_specs if s.blocks > 1]
    # Both 3x3 convs (at V = 16 and stride 2 the projection too: 123 KB).
    assert len(blocked) >= 2 and min(blocked) >= 3
    for _ in range(3):
        assert_close(run_plan(plan, x), ort_run(path, x))


def test_channel_block_ptr_marks_where_each_block_starts():
    """Against a direct count: channel c's taps of block b start at ptr[c] plus its taps in
    earlier blocks; empty blocks and empty channels included."""
    rng = np.random.default_rng(0)
    channel_stride, block_channels, blocks = 100, 3, 4
    ptr, off = [0], []
    for _ in range(6):
        taps = sorted(int(t) for t in rng.choice(12 * channel_stride, rng.integers(0, 9),
                                                 replace=False))
        off += taps
        ptr.append(len(off))
    ptr_a, off_a = np.array(ptr, np.int32), np.array(off, np.int32)
    got = channel_block_ptr(ptr_a, off_a, channel_stride, block_channels, blocks).reshape(6, -1)
    for c in range(6):
        taps = off_a[ptr_a[c]:ptr_a[c + 1]]
        for b in range(blocks + 1):
            assert got[c, b] == ptr_a[c] + np.count_nonzero(
                taps // channel_stride < b * block_channels)


def test_few_taps_per_block_stay_unblocked():
    """A block must keep min_block_taps taps per output channel on average (else the partial
    sums cost more than L1 saves), and small windows stay whole."""
    opts = PlannerOptions()
    assert input_channel_blocks(64, 3, 3, 1, 16, 16, 57.6, opts) > 1
    blocks = input_channel_blocks(64, 3, 3, 1, 16, 16, 57.6, opts)
    assert input_channel_blocks(64, 3, 3, 1, 16, 16, opts.min_block_taps * blocks - 1, opts) == 1
    assert input_channel_blocks(32, 3, 3, 1, 16, 16, 1000.0, opts) == 1  # 61 KB window: whole
