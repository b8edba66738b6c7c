"""The memory report (benchmarks/memory.py) on a tiny DenseNet-like model placed in the model
cache: its arena figures come from the plans the engine runs, each peak RSS from a child process
given the planner options asked for, and the table names the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from benchmarks.memory import MemoryConfig, format_table, measure_row, plan_memory
from benchmarks.zoo.common import pruned_filename
from featherdeploy.runtime.machine import cpu_model_name
from featherdeploy.runtime.options import PlannerOptions
from featherdeploy.runtime.peak_memory import PeakMemoryError, measure_peak_memory
from tests.runtime.test_memory import _densenet

IMAGE = (3, 16, 16)


@pytest.fixture
def config(tmp_path: Path) -> MemoryConfig:
    """A cache holding the tiny model under the name of a zoo model (used as is, not built)."""
    onnx.save(_densenet(IMAGE[1]), str(tmp_path / pruned_filename("resnet18", 0.9)))
    return MemoryConfig(tmp_path, models=("resnet18",), batches=(1,), threads=2, runs=1,
                        image=IMAGE)


def test_plan_memory_follows_the_engine_plans(config):
    """Batch 1: one workspace; a batch of images run one by one or in groups: one workspace per
    thread taking them; shared packs tighter than by_layout, never below the live peak, once the
    workspace is above the planner's floor (this 16x16 model's is below it: kept as it is)."""
    path = config.models_dir / pruned_filename("resnet18", 0.9)
    packing = PlannerOptions(pack_arena_above_bytes=0)
    one = {p: plan_memory(path, 1, 2, p, IMAGE, packing) for p in ("by_layout", "shared")}
    assert one["shared"].workspaces == 1
    assert one["by_layout"].arena_mib > one["shared"].arena_mib >= one["shared"].peak_live_mib
    assert one["shared"].zeroed_kib > 0 and one["by_layout"].zeroed_kib == 0
    kept = plan_memory(path, 1, 2, "shared", IMAGE)
    assert kept.arena_mib == one["by_layout"].arena_mib and kept.zeroed_kib == 0
    assert plan_memory(path, 64, 2, "shared", IMAGE).workspaces == 2


def test_row_and_table(config):
    """A whole row (three children) and its table line."""
    row = measure_row("resnet18", 1, config)
    assert set(row.rss_mib) == {"engine:by_layout", "engine:shared", "engine:shared:untuned",
                                "ort"}
    assert all(value > 0 for value in row.rss_mib.values())
    table = format_table([row], config)
    assert cpu_model_name() in table and "3x16x16" in table
    line = next(text for text in table.splitlines() if text.startswith("| resnet18 | 1 |"))
    assert line.endswith("| yes |" if row.rss_mib["engine:shared"] <= row.rss_mib["ort"]
                         else "| NO |")


def test_planner_options_reach_the_child(config):
    """featherdeploy.runtime.peak_memory builds PlannerOptions from the JSON object: a bad
    policy fails there."""
    path = config.models_dir / pruned_filename("resnet18", 0.9)
    feeds = {"x": np.zeros((1, *IMAGE), np.float32)}
    with pytest.raises(PeakMemoryError, match="memory"):
        measure_peak_memory("engine", path, 1, feeds, runs=1,
                            engine_overrides={"planner": {"memory": "bogus"}})
