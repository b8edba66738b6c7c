"""The CI sample of the fuzz harness (``make fuzz`` runs 10,000 cases): a fixed-seed sample of
mutated models and bad inputs must give no crash, hang, raw exception or answer that differs
from ONNX Runtime; and the harness itself must tell those classes apart."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from tests.fuzz.harness import (
    CLASSES,
    FAILURES,
    Outcome,
    _fork_call,
    classify,
    compare_outputs,
    format_report,
    run_cases,
)
from tests.fuzz.mutate import make_case

SAMPLE_CASES = 300
SAMPLE_SEED = 20240611


def test_fuzz_sample_has_no_failures(tmp_path):
    start = time.monotonic()
    report = run_cases(list(range(SAMPLE_CASES)), SAMPLE_SEED, out=tmp_path)
    counts = report["counts"]
    assert sum(counts.values()) == SAMPLE_CASES
    assert not report["failures"], format_report(report)
    assert all(counts[c] == 0 for c in FAILURES)
    # The sample exercises both sides: models that run (and match) and models refused.
    assert counts["match"] >= SAMPLE_CASES // 5, counts
    assert counts["both_refuse"] + counts["clean_error"] >= SAMPLE_CASES // 5, counts
    assert time.monotonic() - start < 90, f"{time.monotonic() - start:.0f} s"


def test_cases_are_reproducible():
    a, b = make_case(17, 3), make_case(17, 3)
    assert a.model == b.model and a.mutations == b.mutations and a.options == b.options
    assert all(np.array_equal(np.asarray(a.feeds[k]), np.asarray(b.feeds[k])) for k in a.feeds)
    assert make_case(18, 3).mutations != a.mutations or make_case(18, 3).model != a.model


def _segfault() -> Outcome:
    os.kill(os.getpid(), signal.SIGSEGV)
    return Outcome("ok")


def _sleep() -> Outcome:
    time.sleep(60)
    return Outcome("ok")


def _exits() -> Outcome:
    os._exit(5)


def test_children_crashing_hanging_or_exiting_are_classified(tmp_path):
    log = tmp_path / "child.log"
    crash = _fork_call(_segfault, tmp_path, 30, log)
    assert crash.status == "crash" and "SIGSEGV" in crash.detail
    hang = _fork_call(_sleep, tmp_path, 0.5, log)
    assert hang.status == "hang"
    gone = _fork_call(_exits, tmp_path, 30, log)
    assert gone.status == "crash" and "exit code 5" in gone.detail
    ok = _fork_call(lambda: Outcome("ok", ["y"], [np.ones(2)]), tmp_path, 30, log)
    assert ok.status == "ok" and ok.outputs[0].tolist() == [1.0, 1.0]
    ort_ok = Outcome("ok", ["y"], [np.ones(2)])
    assert classify(crash, ort_ok)[0] == "crash"
    assert classify(hang, ort_ok)[0] == "hang"


@pytest.mark.parametrize("engine, ort, cls", [
    (Outcome("error", error_type="ModelLoadError", message="bad", engine_error=True),
     Outcome("ok", ["y"], [np.ones(1)]), "clean_error"),
    (Outcome("error", error_type="ModelLoadError", message="bad", engine_error=True),
     Outcome("error", message="refused"), "both_refuse"),
    (Outcome("error", error_type="TypeError", message="oops"), Outcome("ok"), "other_exception"),
    (Outcome("error", error_type="EngineError", message=" ", engine_error=False),
     Outcome("error"), "other_exception"),
    (Outcome("ok", ["y"], [np.ones(1)]), Outcome("error", message="refused"),
     "ort_refuses_engine_runs"),
    (Outcome("ok", ["y"], [np.ones(1)], detail="nondeterministic: y"),
     Outcome("ok", ["y"], [np.ones(1)]), "differs"),
])
def test_classify(engine, ort, cls):
    assert cls in CLASSES
    assert classify(engine, ort)[0] == cls


def _cmp(got, want) -> str | None:
    return compare_outputs(Outcome("ok", ["y"], [np.asarray(got, np.float32)]),
                           Outcome("ok", ["y"], [np.asarray(want, np.float32)]))


def test_compare_outputs_nan_inf_and_scale():
    assert _cmp([1.0, np.nan], [1.0, np.nan]) is None
    assert "NaN positions" in _cmp([1.0, 0.0], [1.0, np.nan])  # NaN in, NaN out
    assert "NaN positions" in _cmp([np.nan, 0.0], [1.0, 0.0])
    assert "infinities" in _cmp([np.inf, 0.0], [-np.inf, 0.0])
    assert _cmp([1e6 + 50, 0.0], [1e6, 0.0]) is None  # within 1e-4 of the output's scale
    assert "max |diff|" in _cmp([1.001, 0.0], [1.0, 0.0])
    assert "shape" in _cmp([1.0], [1.0, 2.0])
    assert compare_outputs(Outcome("ok", ["a"], [np.ones(1)]),
                           Outcome("ok", ["b"], [np.ones(1)])) is not None


def test_reproducer_round_trip(tmp_path):
    from tests.fuzz.harness import CaseResult, load_reproducer, save_reproducer

    case = make_case(5, 1)
    result = CaseResult(case.index, case.seed, case.kind, case.mutations, "differs", "x", "", "",
                        0.0)
    folder = save_reproducer(case, result, Outcome("ok"), Outcome("ok"), Path(tmp_path))
    again = load_reproducer(folder)
    assert again.model == case.model and again.files == case.files
    assert again.mutations == case.mutations and again.options == case.options


def test_float64_arbiter_runs_the_seed_models(tmp_path):
    """The arbiter of differing cases computes what ORT computes, in float64, on every seed
    (sparse initializers included)."""
    from tests.fuzz.harness import _float64_child, _ort_child, _write_case
    from tests.fuzz.mutate import Case
    from tests.fuzz.seeds import build_seeds

    rng = np.random.default_rng(0)
    for seed in build_seeds():
        feeds = {k: rng.standard_normal(v).astype(np.float32)
                 for k, v in seed.feed_shapes.items()}
        case = Case(0, seed.name, "baseline", [], seed.model.SerializeToString(), seed.files,
                    feeds, {}, {})
        path = _write_case(case, tmp_path / seed.name)
        reference, ort = _float64_child(path, case), _ort_child(path, case)
        assert reference.status == "ok", (seed.name, reference.message)
        assert compare_outputs(ort, reference) is None, seed.name
