"""The model-zoo benchmark: real CNNs (``benchmarks/zoo``: torchvision, timm, a YOLOv8-style and a
DB-style detector, and ONNX files that PyPI packages ship), 90%-pruned, run by our engine and by
ONNX Runtime (ORT) dense on the same file.

Per model: whether every output matches ORT at the check batch sizes (max |diff| <= 1e-4 x
max |ORT output|; when it does not, both are compared with a float64 run of the model's NumPy
references, which says which of the two is off), the share of the MACs the engine runs natively
(the rest runs on ORT inside the engine), and the speedup over ORT dense at each batch size and
thread count, timed side by side (``runtime.bench.compare_interleaved``: contenders alternate,
each turn opening with an idle gap and settling calls). Time it on a quiet machine.

    python -m benchmarks.zoo build --out ZOO            # once: the ONNX files and manifest
    python -m benchmarks.model_zoo --zoo ZOO [--models a,b] [--batches 1,16] [--threads 1,2]
        [--markdown FILE] [--json FILE]
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.reporting.machine import machine_info
from featherdeploy.runtime.atomic import atomic_write_json, atomic_write_text
from featherdeploy.runtime.bench import (
    TURN_GAP_S,
    TURN_SETTLE_CALLS,
    TURN_SETTLE_S,
    compare_interleaved,
    make_ort_session,
)

__all__ = ["ZooConfig", "ModelResult", "run_model_zoo", "format_markdown", "main"]

MATCH_RTOL = 1e-4  # max |engine - ORT| / max |ORT| for "matches"
ROUND_TARGET_MS = 40.0
MAX_CALLS_PER_ROUND = 10


class ZooBenchError(Exception):
    """Bad options or a missing zoo; the CLI exits with code 2."""


@dataclass(frozen=True)
class ZooConfig:
    zoo: Path
    models: tuple[str, ...] = ()
    batches: tuple[int, ...] = (1, 16)
    threads: tuple[int, ...] = (1, 2)
    check_batches: tuple[int, ...] = (1, 4)
    rounds: int = 7
    seed: int = 0


@dataclass
class ModelResult:
    name: str
    kind: str
    native_mac_share: float | None = None
    ort_ops: str = ""
    checks: dict[int, str] = field(default_factory=dict)       # batch -> "ok" / detail
    speedups: dict[str, float | None] = field(default_factory=dict)  # "b1t2" -> ORT / engine
    auto_speedups: dict[str, float | None] = field(default_factory=dict)  # backend="auto"
    ms: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # ORT, native, auto
    note: str = ""


def _batch_ok(entry: dict[str, Any], batch: int) -> bool:
    """A dynamic leading dim takes any batch; a fixed one only its own size."""
    dims = [i.get("declared_shape") or [] for i in entry["inputs"]]
    fixed = [d[0] for d in dims if d and isinstance(d[0], int) and d[0] > 0]
    return all(f == batch for f in fixed)


def _feeds(entry: dict[str, Any], batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in entry["inputs"]:
        shape = [batch, *spec["shape"][1:]]
        dtype = np.dtype(spec["dtype"])
        if np.issubdtype(dtype, np.floating):
            feeds[spec["name"]] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[spec["name"]] = rng.integers(0, 2, size=shape).astype(dtype)
    return feeds


def _rel_error(actual: list[np.ndarray], expected: list[np.ndarray]) -> float:
    worst = 0.0
    for a, e in zip(actual, expected, strict=True):
        if a.shape != e.shape:
            return math.inf
        scale = float(np.max(np.abs(e))) if e.size else 0.0
        diff = float(np.max(np.abs(a.astype(np.float64) - e))) if e.size else 0.0
        worst = max(worst, diff / scale if scale > 0 else diff)
    return worst


def _check(path: Path, engine: Any, session: Any, feeds: dict[str, np.ndarray]) -> str:
    """"ok" when every output matches ORT, else the errors against ORT and a float64 run."""
    from featherdeploy.runtime.errors import EngineError
    from featherdeploy.runtime.graph import load_graph
    from featherdeploy.runtime.specialize import reference_outputs

    names = [o.name for o in session.get_outputs()]
    expected = session.run(names, feeds)
    got = engine.run(feeds, output_names=names)
    error = _rel_error(got, expected)
    if error <= MATCH_RTOL:
        return "ok"
    try:
        exact = reference_outputs(load_graph(path), feeds)
    except EngineError as exc:  # (float64 widening breaks quantize ops' dtype rules)
        return f"{error:.1e} vs ORT (no float64 reference: {' '.join(str(exc).split())[:80]})"
    if exact is None:
        return f"{error:.1e} vs ORT (no float64 reference)"
    exact = [exact[[o.name for o in engine.outputs].index(n)] for n in names]
    return (f"{error:.1e} vs ORT; vs float64: engine {_rel_error(got, exact):.1e}, "
            f"ORT {_rel_error(expected, exact):.1e}")


def _time_cell(engine: Any, auto: Any, session: Any, feeds: dict[str, np.ndarray], batch: int,
               rounds: int) -> tuple[float, float, float]:
    """Median ms of ORT, of the engine's native backend and of its default (``auto``: ORT for
    the shapes where it measured faster), interleaved."""
    import time

    start = time.perf_counter()
    session.run(None, feeds)
    ort_ms = (time.perf_counter() - start) * 1000.0
    calls = max(1, min(MAX_CALLS_PER_ROUND, int(ROUND_TARGET_MS / max(ort_ms, 1e-3))))
    timings = compare_interleaved({"ort": lambda: session.run(None, feeds),
                                   "engine": lambda: engine.run(feeds),
                                   "auto": lambda: auto.run(feeds)},
                                  batch=batch, rounds=rounds, calls_per_round=calls,
                                  gap_s=TURN_GAP_S, settle_calls=TURN_SETTLE_CALLS,
                                  settle_s=TURN_SETTLE_S)
    return timings["ort"].median_ms, timings["engine"].median_ms, timings["auto"].median_ms


def _measure(entry: dict[str, Any], config: ZooConfig) -> ModelResult:
    from featherdeploy.runtime import Engine, EngineOptions

    result = ModelResult(entry["name"], entry["kind"])
    path = config.zoo / entry["files"]["pruned"]["file"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the coverage warning: we report it
        engines = {t: Engine(path, options=EngineOptions(backend="native", threads=t))
                   for t in config.threads}
        autos = {t: Engine(path, options=EngineOptions(threads=t)) for t in config.threads}
    first = engines[config.threads[0]]
    for batch in config.check_batches:
        if _batch_ok(entry, batch):
            session = make_ort_session(path, config.threads[0])
            result.checks[batch] = _check(path, first, session, _feeds(entry, batch, config.seed))
    coverage = first.coverage()
    total = coverage.native_macs + coverage.ort_macs
    result.native_mac_share = coverage.native_macs / total if total else None
    result.ort_ops = coverage.ort_summary() if coverage.ort_nodes else ""
    for threads, engine in engines.items():
        session = make_ort_session(path, threads)
        for batch in config.batches:
            key = f"b{batch}t{threads}"
            if not _batch_ok(entry, batch):
                result.speedups[key] = result.auto_speedups[key] = None
                continue
            ms = _time_cell(engine, autos[threads], session, _feeds(entry, batch, config.seed),
                            batch, config.rounds)
            result.ms[key] = ms
            result.speedups[key] = ms[0] / ms[1] if ms[1] > 0 else None
            result.auto_speedups[key] = ms[0] / ms[2] if ms[2] > 0 else None
    return result


def run_model_zoo(config: ZooConfig, stream: Any = sys.stdout) -> list[ModelResult]:
    from benchmarks.zoo.manifest import read_manifest

    try:
        entries = read_manifest(config.zoo)
    except Exception as exc:  # a missing or invalid manifest is the user's input
        raise ZooBenchError(f"cannot read the zoo in {config.zoo}: {exc}") from None
    known = [e["name"] for e in entries]
    unknown = sorted(set(config.models) - set(known))
    if unknown:
        raise ZooBenchError(f"unknown models {unknown}; the zoo has {known}")
    results = []
    for entry in entries:
        if config.models and entry["name"] not in config.models:
            continue
        try:
            result = _measure(entry, config)
        except Exception as exc:  # a model the engine cannot run is a row, not a crash
            result = ModelResult(entry["name"], entry["kind"],
                                 note=f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
        results.append(result)
        print(_row(result, config), file=stream, flush=True)
    return results


def _cell(native: float | None, auto: float | None) -> str:
    if native is None or auto is None:
        return "n/a"
    return f"{native:.2f}x / {auto:.2f}x"


def _header(config: ZooConfig) -> list[str]:
    cells = [f"b{b} t{t} native / auto" for t in config.threads for b in config.batches]
    checks = [f"check b{b}" for b in config.check_batches]
    return ["| model | kind | native MACs | " + " | ".join(checks) + " | "
            + " | ".join(cells) + " | ORT runs |",
            "|---|---|---|" + "---|" * (len(checks) + len(cells)) + "---|"]


def _row(r: ModelResult, config: ZooConfig) -> str:
    if r.note:
        return f"| {r.name} | {r.kind} | failed: {r.note} |"
    share = "n/a" if r.native_mac_share is None else f"{100 * r.native_mac_share:.1f}%"
    checks = [r.checks.get(b, "n/a") for b in config.check_batches]
    cells = [_cell(r.speedups.get(f"b{b}t{t}"), r.auto_speedups.get(f"b{b}t{t}"))
             for t in config.threads for b in config.batches]
    return (f"| {r.name} | {r.kind} | {share} | " + " | ".join(checks) + " | "
            + " | ".join(cells) + f" | {r.ort_ops or '-'} |")


def format_markdown(results: Sequence[ModelResult], config: ZooConfig, machine: str) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"Model zoo at 90% sparsity, {when}, {machine}. Speedup = ORT dense median / "
             "engine median on the same pruned file, for backend='native' / backend='auto' "
             "(the default: ONNX Runtime for shapes where it measured faster, and for "
             "near-dense models); checks (native): every output within "
             f"{MATCH_RTOL:g} x max |ORT output| of ORT.", "", *_header(config)]
    lines += [_row(r, config) for r in results]
    return "\n".join(lines) + "\n"


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated integers expected, got {text!r}") \
            from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"positive integers expected, got {text!r}")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.model_zoo",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--zoo", type=Path, required=True, help="folder of benchmarks.zoo build")
    parser.add_argument("--models", default="", help="comma-separated names (default: all)")
    parser.add_argument("--batches", type=_ints, default=(1, 16))
    parser.add_argument("--threads", type=_ints, default=(1, 2))
    parser.add_argument("--check-batches", type=_ints, default=(1, 4))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    config = ZooConfig(args.zoo, tuple(m for m in args.models.split(",") if m), args.batches,
                       args.threads, args.check_batches, args.rounds)
    machine = machine_info().describe()
    print(f"machine: {machine}", flush=True)
    print("\n".join(_header(config)), flush=True)
    try:
        results = run_model_zoo(config)
        if args.markdown:
            atomic_write_text(args.markdown, format_markdown(results, config, machine))
        if args.json:
            atomic_write_json(args.json, {"machine": machine_info().to_dict(),
                                          "config": {k: str(v) if isinstance(v, Path) else v
                                                     for k, v in asdict(config).items()},
                                          "results": [asdict(r) for r in results]})
    except ZooBenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write results: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
