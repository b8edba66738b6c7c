"""The arena planner (runtime/planner/memory.py, PlannerOptions.memory).

``shared`` packs buffers of any layout into the same memory; what can go wrong is two buffers
in use at one step sharing a float, a padded tensor reading as its zero padding a border that
another layout's data occupies (in this call or left from the previous one), and a packing that
breaks row wavefronts. The allocator is checked alone on random live ranges; whole plans must
give outputs bit-identical to the previous policy (``by_layout``, which never shares memory
between layouts) on consecutive calls and equal ONNX Runtime, also in an arena poisoned with
NaN (PlannerOptions.poison_arena), where any border the planner fails to zero shows.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from featherdeploy.runtime.graph import load_graph
from featherdeploy.runtime.kernels.native import plan_graph, run_plan, use_options
from featherdeploy.runtime.options import EngineOptions, OptionsError, PlannerOptions
from featherdeploy.runtime.planner.builder import CompiledPlan
from featherdeploy.runtime.planner.layout import VMAX, Buf, flat_tensor, native, spatial_tensor
from featherdeploy.runtime.planner.memory import (
    ZeroNeed,
    border_zeroing,
    peak_live,
    place_buffers,
    zero_positions,
)
from featherdeploy.runtime.planner.wavefront import run_buffers
from tests.runtime.onnx_cases import assert_close, graph_model, ort_run, random_input
from tests.runtime.test_wavefront import _resnet

OPTS = PlannerOptions()


# ----------------------------------------------------------------------------- the allocator


def _random_bufs(rng: np.random.Generator, count: int, steps: int) -> list[Buf]:
    """Buffers of a few layouts (padded spatial ones with a read border, compact ones) with
    random live ranges."""
    shapes = [(1, int(c), int(s), int(s)) for c, s in rng.integers(1, 9, (4, 2))]
    bufs = []
    for _ in range(count):
        if rng.random() < 0.6:
            buf = spatial_tensor(shapes[rng.integers(len(shapes))], 1, OPTS).buf
            buf.border_read = bool(rng.random() < 0.7)
        else:
            buf = flat_tensor((int(rng.integers(1, 300)),)).buf
        buf.first = int(rng.integers(0, steps))
        buf.last = buf.first + int(rng.integers(0, 6))
        bufs.append(buf)
    return bufs


def _live_together(a: Buf, b: Buf) -> bool:
    return a.first <= b.last and b.first <= a.last


def _share_memory(a: Buf, b: Buf) -> bool:
    return a.offset < b.offset + b.size and b.offset < a.offset + a.size


@pytest.mark.parametrize("policy", ["shared", "by_layout"])
@pytest.mark.parametrize("seed", range(12))
def test_live_buffers_never_share_memory(policy, seed):
    """Random live ranges: buffers live at a common step share no float, offsets are VMAX
    aligned, the arena holds every buffer and is at least the peak of live buffers; buffers of a
    wavefront group either coincide or share no float."""
    rng = np.random.default_rng(seed)
    bufs = _random_bufs(rng, 40, 30)
    groups = [list(rng.choice(bufs, 4, replace=False)) for _ in range(3)]
    arena = place_buffers(bufs, 40, policy, groups)
    assert all(b.offset % VMAX == 0 for b in bufs)
    assert arena >= max(b.offset + b.size for b in bufs)
    assert arena >= peak_live(bufs)
    for a, b in itertools.combinations(bufs, 2):
        assert not (_live_together(a, b) and _share_memory(a, b))
    if policy == "shared":
        for group in groups:
            for a, b in itertools.combinations(group, 2):
                assert (a.key, a.offset) == (b.key, b.offset) or not _share_memory(a, b)


@pytest.mark.parametrize("seed", range(6))
def test_chain_of_shrinking_tensors_fits_the_peak(seed):
    """A chain (each tensor read once, by the next step) of tensors that shrink along it, as in
    a CNN: the shared arena is exactly the peak of two neighbours, the by_layout one (distinct
    layouts never share) the sum of all."""
    rng = np.random.default_rng(seed)
    sizes = sorted(rng.integers(1, 50_000, 25), reverse=True)
    chain = [Buf(("flat", i), int(size), i, i + 1) for i, size in enumerate(sizes)]
    assert place_buffers(chain, 26, "shared") == peak_live(chain)
    old = [Buf(b.key, b.size, b.first, b.last) for b in chain]
    assert place_buffers(old, 26, "by_layout") == sum(-(-b.size // VMAX) * VMAX for b in old)


def test_same_layout_chain_keeps_its_offset():
    """Padded tensors of one layout whose border is read, one after another with a bigger
    compact buffer live in between: they keep one offset (the bigger buffer goes elsewhere), so
    only the first needs its border zeroed."""
    pads = [spatial_tensor((1, 4, 8, 8), 1, OPTS).buf for _ in range(3)]
    for i, buf in enumerate(pads):
        buf.first, buf.last, buf.border_read = 3 * i, 3 * i + 1, True
    big = flat_tensor((4 * pads[0].size,)).buf
    big.first, big.last = 2, 2
    place_buffers([*pads, big], 9, "shared")
    assert len({b.offset for b in pads}) == 1
    assert not _share_memory(big, pads[0])
    assert border_zeroing([*pads, big]) == []
    assert [n.buf for n in border_zeroing([*pads, big], arena_zeroed=False)] == [pads[0]]


def _placed(buf: Buf, offset: int, first: int, last: int, read: bool = True) -> Buf:
    buf.offset, buf.first, buf.last, buf.border_read = offset, first, last, read
    return buf


def test_border_zeroing_follows_the_memory_history():
    """Which placed buffers need their border zeroed, and between which steps."""
    def padded() -> Buf:
        return spatial_tensor((1, 2, 6, 6), 1, OPTS).buf

    def flat() -> Buf:
        return flat_tensor((500,)).buf

    # Alone in a zeroed arena: clean; in a poisoned one: zeroed before anything runs.
    alone = _placed(padded(), 0, 3, 4)
    assert border_zeroing([alone]) == []
    assert [(n.earliest, n.latest) for n in border_zeroing([alone], arena_zeroed=False)] == [
        (0, 3)]
    # Another layout used the memory before: zeroed after its last step.
    a, b = _placed(flat(), 0, 0, 2), _placed(padded(), 0, 5, 6)
    assert [(n.buf, n.earliest, n.latest) for n in border_zeroing([a, b])] == [(b, 3, 5)]
    # ... or after (the previous call's data): zeroed before anything runs.
    a, b = _placed(padded(), 0, 1, 2), _placed(flat(), 0, 5, 6)
    assert [(n.buf, n.earliest) for n in border_zeroing([a, b])] == [(a, 0)]
    # Same layout at a shifted offset: its data lands in the border.
    a, b = _placed(padded(), 0, 0, 1), _placed(padded(), VMAX, 3, 4)
    assert {n.buf for n in border_zeroing([a, b])} == {a, b}
    # A border nothing reads is left alone; a chain is zeroed once, at its head, even when
    # the head's own border is not read.
    a, b = _placed(flat(), 0, 0, 1), _placed(padded(), 0, 2, 3, read=False)
    c = _placed(padded(), 0, 5, 6)
    assert border_zeroing([a, b]) == []
    assert [(n.buf, n.earliest, n.latest) for n in border_zeroing([a, b, c])] == [(b, 2, 2)]


def test_zero_positions_merge_and_stay_out_of_runs():
    """One step serves every window it falls in; none goes inside a run when its window
    reaches outside it."""
    bufs = [Buf(("flat", i), 16) for i in range(4)]
    needs = [ZeroNeed(bufs[0], 0, 6), ZeroNeed(bufs[1], 2, 7), ZeroNeed(bufs[2], 5, 6),
             ZeroNeed(bufs[3], 9, 9)]
    positions = zero_positions(needs, keep_together=[[4, 5, 6, 7]])
    assert {q: [n.buf for n in group] for q, group in positions.items()} == {
        4: bufs[:2], 6: [bufs[2]], 9: [bufs[3]]}


def test_memory_policy_is_validated():
    with pytest.raises(OptionsError, match="memory"):
        PlannerOptions(memory="bogus")


# ----------------------------------------------------------------------------- whole plans


def _sparse(rng: np.random.Generator, shape: tuple[int, ...], density: float) -> np.ndarray:
    w = rng.standard_normal(shape).astype(np.float32) * np.float32(0.5)
    w[rng.random(shape) >= density] = 0.0
    return w


def _densenet(size: int = 16) -> onnx.ModelProto:
    """A stem, two dense blocks of three layers (relu -> 1x1 bottleneck -> relu -> 3x3,
    concatenated to the block's features) with a 1x1 + average-pool transition, global pool:
    every concatenation a new layout, the bottlenecks padded and read by 3x3 convs."""
    rng = np.random.default_rng(4)
    inits: dict[str, np.ndarray] = {}
    nodes = []

    def node(op: str, inputs: list[str], out: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(x: str, out: str, cin: int, cout: int, k: int) -> str:
        inits[f"{out}_w"] = _sparse(rng, (cout, cin, k, k), 0.5)
        return node("Conv", [x, f"{out}_w"], out, pads=[k // 2] * 4)

    x, channels = conv("x", "stem", 3, 8, 3), 8
    for block in range(2):
        for layer in range(3):
            name = f"b{block}l{layer}"
            h = node("Relu", [conv(node("Relu", [x], f"{name}_r0"), f"{name}_a", channels, 16,
                                   1)], f"{name}_r1")
            x = node("Concat", [x, conv(h, f"{name}_b", 16, 4, 3)], f"{name}_cat", axis=1)
            channels += 4
        if block == 0:
            x = node("AveragePool", [conv(x, "trans", channels, channels // 2, 1)], "pool",
                     kernel_shape=[2, 2], strides=[2, 2])
            channels //= 2
    node("GlobalAveragePool", [x], "y")
    return graph_model(nodes, ["N", 3, size, size], inits, name="densenet")


def _mobilenet(size: int = 16) -> onnx.ModelProto:
    """MobileNetV1-like: a stem, then depthwise 3x3 + pointwise pairs, one depthwise strided."""
    rng = np.random.default_rng(6)
    inits: dict[str, np.ndarray] = {}
    nodes = []

    def conv(x: str, out: str, cin: int, cout: int, k: int, group: int = 1,
             stride: int = 1) -> str:
        inits[f"{out}_w"] = _sparse(rng, (cout, cin // group, k, k), 0.3)
        nodes.append(helper.make_node("Conv", [x, f"{out}_w"], [f"{out}_c"], name=out,
                                      pads=[k // 2] * 4, group=group, strides=[stride] * 2))
        nodes.append(helper.make_node("Relu", [f"{out}_c"], [out], name=f"{out}_relu"))
        return out

    x = conv("x", "stem", 3, 16, 3)
    for i, (cout, stride) in enumerate([(16, 1), (32, 2), (32, 1), (32, 1)]):
        cin = 16 if i < 2 else 32
        x = conv(conv(x, f"dw{i}", cin, cin, 3, cin, stride), f"pw{i}", cin, cout, 1)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["y"], name="pool"))
    return graph_model(nodes, ["N", 3, size, size], inits, name="mobilenet")


def _gated(size: int = 16) -> onnx.ModelProto:
    """EfficientNet / GhostNet-like: a squeeze-and-excitation gate folded into the 1x1
    projection after it (its weights scaled into an arena buffer each run), that projection the
    head of a run of stride-1 convs a row wavefront can take."""
    rng = np.random.default_rng(8)
    inits: dict[str, np.ndarray] = {}
    nodes = []

    def node(op: str, inputs: list[str], out: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(x: str, out: str, cin: int, cout: int, k: int, group: int = 1) -> str:
        inits[f"{out}_w"] = _sparse(rng, (cout, cin // group, k, k), 0.4)
        return node("Conv", [x, f"{out}_w"], out, pads=[k // 2] * 4, group=group)

    x = node("Relu", [conv("x", "stem", 3, 16, 3)], "stem_r")
    d = node("Relu", [conv(x, "dw", 16, 16, 3, group=16)], "dw_r")
    e = conv(node("Relu", [conv(node("GlobalAveragePool", [d], "gap"), "sq", 16, 4, 1)],
                  "sq_r"), "ex", 4, 16, 1)
    m = node("Mul", [d, node("Sigmoid", [e], "gate")], "scale")
    h = node("Relu", [conv(conv(m, "proj", 16, 16, 1), "pw", 16, 16, 1)], "pw_r")
    node("GlobalAveragePool", [conv(h, "head", 16, 16, 3)], "y")
    return graph_model(nodes, ["N", 3, size, size], inits, name="gated")


MODELS = {"densenet": _densenet, "resnet": _resnet, "mobilenet": _mobilenet, "gated": _gated}


def _plan(path, shape: tuple[int, ...], threads: int = 1, **planner) -> CompiledPlan:
    """The plan with the shared arena packing however small the workspace (these test models
    are, so the default keeps their by_layout placement), unless ``planner`` says otherwise."""
    planner.setdefault("pack_arena_above_bytes", 0)
    with use_options(EngineOptions(planner=PlannerOptions(**planner))):
        return plan_graph(load_graph(path), shape, threads, interleave=shape[0] > 1)


def _arena_bufs(plan: CompiledPlan) -> list[Buf]:
    found = {id(v.buf): v.buf for r in plan.records for v in r.views.values()
             if v.buf is not None}
    return list(found.values())


def _zero_steps(plan: CompiledPlan) -> int:
    return sum(name == "zero" for name in plan.native.step_names())


@pytest.fixture(params=sorted(MODELS))
def model_path(request, tmp_path):
    path = tmp_path / f"{request.param}.onnx"
    onnx.save(MODELS[request.param](), str(path))
    return path


@pytest.mark.parametrize("batch,threads", [(1, 1), (1, 2), (16, 1), (16, 2)])
def test_shared_arena_equals_by_layout_bit_for_bit(model_path, batch, threads):
    """Planar batch-1 plans (one thread: column segments; two: split convs) and interleaved
    groups of 16: the shared arena is no larger (smaller where its layouts share memory), and two
    consecutive calls (the second on the first's leftovers) give exactly the by_layout outputs,
    which equal ORT's."""
    x = random_input((batch, 3, 16, 16), seed=batch + threads)
    old = _plan(model_path, x.shape, threads, memory="by_layout")
    new = _plan(model_path, x.shape, threads)
    assert new.native.arena_floats <= old.native.arena_floats
    assert new.native.arena_floats >= new.peak_live_floats == old.peak_live_floats
    assert (new.native.arena_floats < old.native.arena_floats) == any(
        a.key != b.key and _share_memory(a, b)
        for a, b in itertools.combinations(_arena_bufs(new), 2))
    assert new.native.arena_floats < old.native.arena_floats or new.zeroed_floats == 0
    expected = run_plan(old, x)
    np.testing.assert_array_equal(run_plan(new, x), expected)
    np.testing.assert_array_equal(run_plan(new, x), expected)
    assert_close(expected, ort_run(model_path, x))


@pytest.mark.parametrize("batch,threads", [(1, 1), (1, 2), (16, 1)])
def test_poisoned_arena_gives_the_same_outputs(model_path, batch, threads):
    """Workspaces that start as NaN: every border a conv reads is zeroed by a zero step (or
    written by its producer), so the outputs are those of a zeroed arena, twice."""
    x = random_input((batch, 3, 16, 16), seed=3)
    poisoned = _plan(model_path, x.shape, threads, poison_arena=True)
    assert _zero_steps(poisoned) > 0 and poisoned.zeroed_floats > 0
    expected = run_plan(_plan(model_path, x.shape, threads), x)
    np.testing.assert_array_equal(run_plan(poisoned, x), expected)
    np.testing.assert_array_equal(run_plan(poisoned, x), expected)


@pytest.mark.parametrize("poison", [False, True])
def test_poison_reaches_memory_no_step_writes(poison):
    """The native debug aid itself: an arena float no step writes reads as NaN in a poisoned
    workspace and as 0 otherwise (so a border the planner forgets shows in the outputs)."""
    n = native()
    options = n.PlanOptions()
    options.poison_arena = poison
    plan = n.Plan(options, 64, [np.zeros(16, np.float32)], [4], [4])
    copy = n.CopySpec()
    copy.src = n.View(n.SPACES["arena"], 0, 32, (1, 1, 1, 4), (0, 0, 0, 1))
    copy.dst = n.View(n.SPACES["output"], 0, 0, (1, 1, 1, 4), (0, 0, 0, 1))
    plan.add(copy)
    out = np.ones(4, np.float32)
    plan.run([np.zeros(4, np.float32)], [out])
    assert np.isnan(out).all() if poison else (out == 0).all()


def test_densenet_arena_is_near_the_peak(tmp_path):
    """Concatenations make a new layout per layer, so by_layout never reuses their memory;
    the shared arena stays within 1.25x of the peak of live buffers and zeroes few floats."""
    path = tmp_path / "densenet.onnx"
    onnx.save(_densenet(32), str(path))
    new = _plan(path, (1, 3, 32, 32))
    old = _plan(path, (1, 3, 32, 32), memory="by_layout")
    assert new.native.arena_floats <= 1.25 * new.peak_live_floats
    assert old.native.arena_floats >= 2 * new.native.arena_floats
    assert 0 < new.zeroed_floats < new.peak_live_floats // 10


@pytest.mark.parametrize("batch,size", [(16, 16), (1, 44)])
@pytest.mark.parametrize("name", ["resnet", "mobilenet"])
def test_packing_keeps_every_wavefront(tmp_path, name, batch, size):
    """ResNet-20x2- and MobileNetV1-like models, interleaved groups of 16 and one planar image:
    the shared arena marks the same wavefront groups as by_layout (their members' buffers
    coincide or stay apart whatever their live ranges), and they run exactly as layer by
    layer."""
    path = tmp_path / f"{name}.onnx"
    onnx.save(MODELS[name](size=size), str(path))
    x = random_input((batch, 3, size, size), seed=5)
    old = _plan(path, x.shape, memory="by_layout")
    new = _plan(path, x.shape)
    assert new.wavefronts and len(new.wavefronts) == len(old.wavefronts)
    assert sorted(map(len, new.wavefronts)) == sorted(map(len, old.wavefronts))
    plain = _plan(path, x.shape, wavefront_layers=0)
    np.testing.assert_array_equal(run_plan(new, x), run_plan(plain, x))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_wavefront_members_never_overlap_live_memory(tmp_path, name):
    """Every arena buffer a wavefront's members touch (activations and the gated weights a
    ScaleWeights step writes for a member) coincides with or stays apart from the others: the
    members run interleaved, so step-order liveness would let a later member's output land on
    an earlier member's weights."""
    path = tmp_path / f"{name}.onnx"
    onnx.save(MODELS[name](size=44), str(path))
    plan = _plan(path, (1, 3, 44, 44))
    assert plan.wavefronts
    for group in plan.wavefronts:
        bufs = [v.buf for i in group for v in plan.records[i].views.values()
                if getattr(v, "buf", None) is not None]
        spans = {(b.offset, b.key): (b.offset, b.offset + b.size) for b in bufs}
        ordered = sorted(spans.values())
        assert all(end <= nxt for (_, end), (nxt, _) in itertools.pairwise(ordered)), group
    gated = [r.views["val_origin"].buf for group in plan.wavefronts for i in group
             if "val_origin" in (r := plan.records[i]).views]
    assert bool(gated) == (name == "gated")
    placed_together = [id(b) for run in run_buffers(plan.records, plan.wavefronts) for b in run]
    assert all(id(b) in placed_together for b in gated)


# ----------------------------------------------------------------------------- loading

_LOAD_CHILD = """
import sys
from pathlib import Path
from featherdeploy.runtime.graph import load_graph

def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)

Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
before = status("VmRSS")
graph = load_graph(sys.argv[1])
print(status("VmRSS") - before, status("VmHWM") - before)
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_loading_holds_the_weights_once(tmp_path):
    """A fresh process loading a model with one 64 MiB initializer: the graph then holds it once
    (nodes keep detached copies of their protos, not the parsed model), and the load peaks at
    two copies (the file's bytes are released before the initializers are copied out)."""
    weight = np.ones(1 << 24, np.float32)
    mib = weight.nbytes / (1 << 20)
    path = tmp_path / "big.onnx"
    onnx.save(graph_model([helper.make_node("Add", ["x", "w"], ["y"], name="add")],
                          [weight.size], {"w": weight}), str(path))
    done = subprocess.run([sys.executable, "-c", _LOAD_CHILD, str(path)], capture_output=True,
                          text=True, check=True, cwd=Path(__file__).resolve().parents[2])
    held, peak = map(float, done.stdout.split())
    assert held < 1.5 * mib
    assert peak < 2.5 * mib


@pytest.mark.parametrize("name", ["resnet", "mobilenet"])
def test_small_workspaces_keep_the_by_layout_placement(tmp_path, name):
    """A workspace whose by_layout arena is at most ``pack_arena_above_bytes`` is not packed:
    no zero steps, the by_layout arena; with the threshold at 0 the same model packs."""
    path = tmp_path / f"{name}.onnx"
    onnx.save(MODELS[name](), str(path))
    shape = (1, 3, 16, 16)
    old = _plan(path, shape, memory="by_layout")
    arena_bytes = old.native.arena_floats * 4
    kept = _plan(path, shape, pack_arena_above_bytes=arena_bytes)
    assert kept.native.arena_floats == old.native.arena_floats and _zero_steps(kept) == 0
    packed = _plan(path, shape, pack_arena_above_bytes=arena_bytes - 4)
    assert packed.native.arena_floats < old.native.arena_floats and _zero_steps(packed) > 0
    x = random_input(shape, seed=8)
    np.testing.assert_array_equal(run_plan(kept, x), run_plan(old, x))
