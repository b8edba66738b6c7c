"""Constant tables (runtime/const_tables.py): plans read them without copying, a large
initializer is read where the model holds it, and the programs of one model share each large
constant they compute (one copy of a classifier's weights however many programs the engine
builds for shapes, threads and batch layouts)."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from onnx import helper

from featherdeploy.runtime import Engine
from featherdeploy.runtime import const_tables as consts
from featherdeploy.runtime.const_tables import (
    SHARED_CONST_MIN_FLOATS,
    TABLE_SLACK_FLOATS,
    as_table_view,
    constant_table,
    shared_constant,
)
from featherdeploy.runtime.planner.layout import VMAX, native
from tests.runtime.onnx_cases import assert_close, graph_model, ort_run, random_input, save_model


def test_constant_table_is_an_aligned_padded_read_only_copy():
    data = np.arange(37, dtype=np.float64).reshape(37, 1)
    table = constant_table(data)
    assert table.dtype == np.float32 and table.ndim == 1
    assert table.ctypes.data % 64 == 0
    assert table.size % VMAX == 0 and table.size >= 37 + TABLE_SLACK_FLOATS
    np.testing.assert_array_equal(table[:37], np.arange(37, dtype=np.float32))
    assert not table[37:].any()  # kernels may read past the end: zeros there
    assert not table.flags.writeable
    assert not np.shares_memory(table, data)


def test_equal_constants_share_one_table_while_held():
    rng = np.random.default_rng(7)
    a = rng.standard_normal(5 * SHARED_CONST_MIN_FLOATS, dtype=np.float32)
    first = shared_constant(a)
    assert shared_constant(a.copy()) is first
    assert shared_constant(a.reshape(5, -1)) is first  # the shape is the view's business
    other = a.copy()
    other[-1] += 1.0
    assert shared_constant(other) is not first
    key = next(k for k, v in consts._by_content.items() if v is first)
    del first
    gc.collect()
    assert key not in consts._by_content  # nothing holds it: the store does not keep it alive


def test_a_constant_already_in_a_table_is_used_in_place():
    rng = np.random.default_rng(8)
    value = as_table_view(rng.standard_normal((300, 160), dtype=np.float32))
    assert not value.flags.writeable
    table = shared_constant(value)
    assert table.ctypes.data == value.ctypes.data
    # A prefix is not: the floats after it are not zeros.
    prefix = value.reshape(-1)[:1000]
    other = shared_constant(prefix)
    assert other.ctypes.data != value.ctypes.data and not other[1000:].any()


def _classifier_model(tmp_path, features: int, classes: int, trans_b: int = 1):
    """Conv -> global pool -> Gemm with a weight matrix large enough for a shared table."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((features, 3, 3, 3), dtype=np.float32) * 0.2
    fc = rng.standard_normal((classes, features), dtype=np.float32) * 0.1
    fc = fc if trans_b else np.ascontiguousarray(fc.T)
    bias = rng.standard_normal(classes, dtype=np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "b"], ["y"], transB=trans_b)]
    model = graph_model(nodes, ["N", 3, 12, 12], {"w": w, "fc": fc, "b": bias})
    return save_model(model, tmp_path / "classifier.onnx")


@pytest.mark.parametrize("threads", [1, 2])
def test_programs_of_one_model_share_the_classifier_weights(tmp_path, threads):
    path = _classifier_model(tmp_path, features=160, classes=300)  # 48k floats: shared
    engine = Engine(path, threads=threads)
    x1, x3 = random_input((1, 3, 12, 12), 1), random_input((3, 3, 12, 12), 2)
    assert_close(engine.run(x1), ort_run(path, x1))
    one = engine._program((("x", (1, 3, 12, 12)),)).single_plan.native
    serial = engine._program((("x", (1, 3, 12, 12)),), 1).single_plan.native
    batch = engine._program((("x", (3, 3, 12, 12)),)).single_plan.native
    plans = list({id(p): p for p in (one, serial, batch)}.values())  # threads=1: one is serial
    tables = [p.const_addresses for p in plans]
    assert all(len(t) == 2 for t in tables)  # the small constants, then the classifier's
    assert {t[1] for t in tables} == {engine.graph.constants["fc"].ctypes.data}
    assert len({t[0] for t in tables}) == len(plans)  # each plan packs its own small constants
    # The table outlives the plans that are dropped while one still reads it.
    engine._drop_program((("x", (1, 3, 12, 12)),))
    engine._drop_program((("x", (1, 3, 12, 12)),), 1)
    del one, serial
    gc.collect()
    assert_close(engine._program((("x", (3, 3, 12, 12)),)).run({"x": x3})[0], ort_run(path, x3))


def test_programs_share_a_constant_they_compute(tmp_path):
    path = _classifier_model(tmp_path, features=160, classes=300, trans_b=0)  # stored transposed
    engine = Engine(path, threads=2)
    for batch in (1, 2):
        x = random_input((batch, 3, 12, 12), batch)
        assert_close(engine.run(x), ort_run(path, x))
    shared = {engine._program((("x", (n, 3, 12, 12)),)).single_plan.native.const_addresses[1]
              for n in (1, 2)}
    assert len(shared) == 1 and shared != {engine.graph.constants["fc"].ctypes.data}


def test_small_constants_stay_in_the_plan_table(tmp_path):
    path = _classifier_model(tmp_path, features=8, classes=10)
    engine = Engine(path, threads=1)
    x = random_input((1, 3, 12, 12), 4)
    assert_close(engine.run(x), ort_run(path, x))
    assert len(engine._program((("x", (1, 3, 12, 12)),)).single_plan.native.const_addresses) == 1


def test_plan_refuses_bad_constant_tables():
    n = native()
    options = n.PlanOptions()
    with pytest.raises(TypeError, match="constant tables"):
        n.Plan(options, 16, [np.zeros(4, np.float64)], [4], [4])
    with pytest.raises(TypeError, match="constant tables"):
        n.Plan(options, 16, [np.zeros(0, np.float32)], [4], [4])
    with pytest.raises(ValueError, match="no constant table"):
        n.Plan(options, 16, [], [4], [4])
