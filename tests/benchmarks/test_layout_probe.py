"""The layout probe (benchmarks/layout_probe.py): it builds against the engine's code generator,
runs the same tiles over both layouts with outputs that agree, and refuses what it cannot run."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from benchmarks.layout_probe import (
    MAX_REL_DIFF,
    ProbeConv,
    ProbeError,
    build_probe,
    format_table,
    main,
    run_probe,
)
from featherdeploy.runtime.machine import cpu_model_name, widest_simd

needs_avx512 = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64") or widest_simd() != "AVX-512",
    reason="the generated tiles are x86-64 AVX-512 code")

CONVS = (ProbeConv("pointwise + residual", 48, 40, 5, 9, 1, True),
         ProbeConv("3x3", 24, 30, 6, 7, 3, False),
         ProbeConv("3x3 stride 2", 20, 24, 4, 5, 3, False, 2))


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_probe(tmp_path_factory.mktemp("probe"))


@needs_avx512
def test_both_layouts_compute_the_same_conv(probe: Path):
    rows = run_probe(probe, CONVS, density=0.5, reps=2)
    assert [r.conv for r in rows] == list(CONVS)
    for row in rows:
        assert row.channel_major_ms > 0 and row.position_major_ms > 0
        assert row.max_rel_diff < MAX_REL_DIFF
    table = format_table(rows, 0.5, 2)
    assert cpu_model_name() in table and "| 3x3 | 24 -> 30 | 6x7 | 3x3 / 1 |" in table
    assert "| 3x3 stride 2 | 20 -> 24 | 4x5 | 3x3 / 2 |" in table


@needs_avx512
def test_the_probe_refuses_a_bad_conv(probe: Path):
    for bad in (ProbeConv("even kernel", 8, 8, 4, 4, 2, False),
                ProbeConv("stride 0", 8, 8, 4, 4, 3, False, 0)):
        with pytest.raises(ProbeError, match="bad conv"):
            run_probe(probe, (bad,), density=0.5, reps=1)


def test_missing_compiler_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ProbeError, match="no C\\+\\+ compiler"):
        build_probe(tmp_path, compiler="no-such-compiler-featherdeploy")


@pytest.mark.parametrize("args", [["--density", "0"], ["--density", "1.5"], ["--reps", "0"]])
def test_bad_arguments_exit_2(args: list[str]):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
