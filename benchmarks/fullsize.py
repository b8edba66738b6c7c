"""The full-size peer suite of issue 21: our engine, DeepSparse, MNN and OpenVINO against ONNX
Runtime dense on 224-px torchvision networks.

ResNet-18, ResNet-50, MobileNetV2, DenseNet-121 and four modern CNNs (EfficientNet-B0,
MobileNetV3-Large, RegNetY-400MF, ShuffleNetV2; ``benchmarks/fullsize_models.py``: random
weights, calibrated BatchNorms folded, random unstructured sparsity on every conv but the stem and
the depthwise convs, opset 13, IR 8, dynamic batch) at 90/95/98%, batch 1 and 16, 1 and 2 threads.

Every contender runs in a fresh worker process of its own venv (``benchmarks/_peer_worker.py``;
our engine in this project's Python) per row: the worker loads the contender, runs it, reports
its peak RSS (VmHWM: the contender alone), then loads ONNX Runtime dense into the same process,
checks the contender's output against ORT's and times both in alternating blocks through the
shared harness (``runtime.bench.compare_interleaved_samplers``; each worker times itself, no IPC
in a sample). Each cell is that contender's speedup over ORT dense measured side by side, which
is what survives the noise of a shared VM. ORT's own peak RSS comes from one more fresh process
running it alone. A peer that is not installed, crashes, or gives a wrong output gets a cell
saying so, never a number that was not measured.

    python -m benchmarks.fullsize --json benchmarks/results/fullsize.json \\
        --markdown benchmarks/results/fullsize.md
    python -m benchmarks.fullsize --quick --models resnet18 --sparsities 90 --batches 1 \\
        --threads 1 --peers engine

Peers' venvs: docs/peers.md (defaults /tmp/ds, /tmp/mnn, /tmp/ov).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_models import BenchModelError
from benchmarks.engine_vs_peers import _calls_per_round, _csv, _positive_ints, _sparsities
from benchmarks.fullsize_models import FULLSIZE_MODELS, FullsizeModelSpec, fullsize_model_path
from benchmarks.fullsize_report import (
    CONTENDER_LABELS,
    CONTENDERS,
    FAILED,
    MIB,
    NOT_INSTALLED,
    OK,
    ContenderResult,
    SuiteRow,
    format_report,
    row_from_dict,
)
from benchmarks.reporting.machine import checkout_commit, cpu_description, cpu_line
from benchmarks.workers import WorkerError, WorkerProcess
from featherdeploy.runtime.atomic import atomic_write_json, atomic_write_text, atomic_writer
from featherdeploy.runtime.bench import (
    TURN_GAP_S,
    TURN_SETTLE_CALLS,
    TURN_SETTLE_S,
    BenchError,
    compare_interleaved_samplers,
    count_model_macs,
    input_shape_for_batch,
    load_onnx_model,
)

__all__ = ["SuiteConfig", "SuiteError", "run_suite", "measure_contender", "cpu_description",
           "main", "DEFAULT_PYTHONS"]

REPO_ROOT = Path(__file__).resolve().parents[1]
PEER_WORKER = Path(__file__).with_name("_peer_worker.py")
EXIT_MISSING = 3  # _peer_worker.py convert-mnn: MNN is not installed
DEFAULT_MODELS_DIR = Path("/tmp/featherdeploy-bench/fullsize")
DEFAULT_PYTHONS = {"deepsparse": Path("/tmp/ds/bin/python"), "mnn": Path("/tmp/mnn/bin/python"),
                   "openvino": Path("/tmp/ov/bin/python")}
RSS_RUNS = 2  # calls after loading before a contender's VmHWM is read (first calls may tune)
MNN_CONVERT_TIMEOUT_S = 900.0
JSON_FORMAT = "featherdeploy-fullsize"
JSON_VERSION = 1


class SuiteError(Exception):
    """Bad options or an unusable output path; the CLI exits with code 2."""


@dataclass(frozen=True)
class SuiteConfig:
    """What to measure, with which contenders, and where files go."""

    models: tuple[str, ...] = tuple(FULLSIZE_MODELS)
    sparsities: tuple[float, ...] = (0.9, 0.95, 0.98)
    batches: tuple[int, ...] = (1, 16)
    threads: tuple[int, ...] = (1, 2)
    peers: tuple[str, ...] = CONTENDERS
    pythons: Mapping[str, Path] = field(default_factory=lambda: dict(DEFAULT_PYTHONS))
    rounds: int = 10
    warmup: int = 3
    models_dir: Path = DEFAULT_MODELS_DIR
    seed: int = 0
    rebuild: bool = False

    def python_for(self, peer: str) -> Path:
        """The Python running ``peer``'s worker: this one for our engine."""
        return Path(sys.executable) if peer == "engine" else Path(self.pythons[peer])

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["pythons"] = {k: str(v) for k, v in self.pythons.items()}
        data["models_dir"] = str(self.models_dir)
        return data


# --------------------------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------------
# Files: models, inputs, MNN conversions
# --------------------------------------------------------------------------------------------

def _input_file(models_dir: Path, proto: Any, batch: int, seed: int) -> Path:
    """The N(0, 1) benchmark input of ``batch`` images for this model's input shape (cached)."""
    _, shape = input_shape_for_batch(proto, batch)
    path = models_dir / "inputs" / f"x-{'x'.join(map(str, shape))}-seed{seed}.npy"
    if not path.is_file():
        x = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
        with atomic_writer(path) as handle:
            np.save(handle, x)
    return path


class _MnnFiles:
    """MNN conversions of the model files (``X.onnx`` -> ``X.mnn`` beside it), converted once,
    by MNN's own Python, in a process of its own; a failure is remembered for the run."""

    def __init__(self, python: Path, log_dir: Path, rebuild: bool) -> None:
        self.python, self.log_dir, self.rebuild = python, log_dir, rebuild
        self.failures: dict[Path, WorkerError] = {}
        self.converted: set[Path] = set()  # in this run (--rebuild converts each file once)

    def get(self, onnx_path: Path) -> Path:
        target = onnx_path.with_suffix(".mnn")
        if onnx_path in self.failures:
            raise self.failures[onnx_path]
        if target.is_file() and (not self.rebuild or onnx_path in self.converted):
            return target
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        log = self.log_dir / f"mnnconvert-{onnx_path.stem}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(log, "w", encoding="utf-8") as handle:
                code = subprocess.run([str(self.python), str(PEER_WORKER), "convert-mnn",
                                       str(onnx_path), str(tmp)], stdout=handle, stderr=handle,
                                      timeout=MNN_CONVERT_TIMEOUT_S, env=_peer_env()).returncode
            if code != 0:
                tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
                raise WorkerError(f"MNN conversion of {onnx_path.name} failed (exit code {code}"
                                  f"): {tail}", missing=code == EXIT_MISSING)
            os.replace(tmp, target)
            self.converted.add(onnx_path)
        except WorkerError as exc:
            tmp.unlink(missing_ok=True)
            self.failures[onnx_path] = exc
            raise
        except (OSError, subprocess.SubprocessError) as exc:
            tmp.unlink(missing_ok=True)
            error = WorkerError(f"MNN conversion of {onnx_path.name} failed: "
                                f"{type(exc).__name__}: {exc}")
            self.failures[onnx_path] = error
            raise error from exc
        return target


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------

def _peer_env() -> dict[str, str]:
    """A peer worker's environment: ours without PYTHONPATH (its venv only), no analytics."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["NM_DISABLE_ANALYTICS"] = "1"
    return env


def _engine_env() -> dict[str, str]:
    """Our engine's worker: this checkout first on the path (its freshly built extension)."""
    paths = [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))


@dataclass(frozen=True)
class RowJob:
    """One row to measure: the model file, the input file, batch and threads."""

    model: str
    sparsity: float
    onnx_path: Path
    input_path: Path
    batch: int
    threads: int
    log_dir: Path


def _mib(kib: int) -> float:
    return kib / MIB


def _start_worker(name: str, python: Path, job: RowJob) -> WorkerProcess:
    env = _engine_env() if name == "engine" else _peer_env()
    log = job.log_dir / f"{name}-{job.onnx_path.stem}-b{job.batch}-t{job.threads}.log"
    return WorkerProcess(python, PEER_WORKER, log, label=CONTENDER_LABELS.get(name, name), env=env)


def _load(worker: WorkerProcess, slot: str, backend: str, model: Path,
          job: RowJob) -> dict[str, Any]:
    return worker.request({"op": "load", "slot": slot, "backend": backend, "model": str(model),
                           "input": str(job.input_path), "threads": job.threads})


def measure_ort_rss(job: RowJob) -> tuple[float | None, str]:
    """Peak RSS (MiB) of a fresh process running ORT dense alone on the row, or (None, why)."""
    try:
        with _start_worker("ort", Path(sys.executable), job) as worker:
            _load(worker, "ort", "ort", job.onnx_path, job)
            worker.request({"op": "run", "slot": "ort", "runs": RSS_RUNS})
            return _mib(worker.request({"op": "memory"})["vm_hwm_kib"]), ""
    except WorkerError as exc:
        return None, str(exc)


def measure_contender(name: str, python: Path, job: RowJob, *, rounds: int, warmup: int,
                      model_file: Callable[[Path], Path] | None = None) -> ContenderResult:
    """Measure contender ``name`` on one row in a fresh worker (see the module docstring).
    ``model_file`` maps the ONNX file to the file the contender loads (MNN's conversion).
    Never raises for a contender's failure: the result says what happened."""
    partial: dict[str, Any] = {}
    if not python.is_file():
        return ContenderResult(name, NOT_INSTALLED, note=f"{CONTENDER_LABELS[name]}: no {python}")
    try:
        stage = "model conversion"
        model = job.onnx_path if model_file is None else model_file(job.onnx_path)
        stage = "start"
        with _start_worker(name, python, job) as worker:
            partial["base_rss_mib"] = _mib(worker.request({"op": "memory"})["vm_rss_kib"])
            stage = "load"
            loaded = _load(worker, "peer", name, model, job)
            partial.update(version=loaded["version"], load_s=loaded["load_s"])
            worker.request({"op": "run", "slot": "peer", "runs": RSS_RUNS})
            partial["rss_mib"] = _mib(worker.request({"op": "memory"})["vm_hwm_kib"])
            stage = "load of ONNX Runtime beside it"
            partial["ort_version"] = _load(worker, "ort", "ort", job.onnx_path, job)["version"]
            stage = "output check"
            check = worker.request({"op": "compare", "slot": "peer", "reference": "ort"})
            partial.update(rel_err=check["rel_err"], max_abs_ref=check["max_abs_ref"])
            stage = "timing"
            ort_sampler = worker.sampler(slot="ort")
            calls = _calls_per_round(min(ort_sampler(2)))
            timings = compare_interleaved_samplers(
                {"ort": ort_sampler, name: worker.sampler(slot="peer")}, batch=job.batch,
                rounds=rounds, warmup=warmup, calls_per_round=calls,
                settle_calls=TURN_SETTLE_CALLS, gap_s=TURN_GAP_S, settle_s=TURN_SETTLE_S)
    except WorkerError as exc:
        missing = exc.missing and stage in ("model conversion", "start", "load")
        note = str(exc) if missing else f"{stage}: {exc}"
        return ContenderResult(name, NOT_INSTALLED if missing else FAILED, note=note, **partial)
    except BenchError as exc:  # the harness refused the samples (a worker's wrong count)
        return ContenderResult(name, FAILED, note=f"{stage}: {exc}", **partial)
    return ContenderResult(name, OK, ort=timings["ort"], timing=timings[name],
                           calls_per_round=calls, **partial)


def _progress(row: SuiteRow) -> str:
    """One line per row on stderr while the suite runs."""
    parts = []
    for name, result in row.contenders.items():
        value = (f"{result.speedup:.2f}x" if result.speedup is not None
                 else result.status)
        parts.append(f"{CONTENDER_LABELS[name]} {value}")
    return (f"{row.model} s={row.sparsity:.0%} B={row.batch} T={row.threads}: "
            f"{', '.join(parts) or 'ORT only'} ({row.wall_s:.0f} s)")


def _measure_row(job: RowJob, macs: Any, config: SuiteConfig, mnn: _MnnFiles | None) -> SuiteRow:
    """ORT's RSS, then each contender in turn, each in its own fresh process."""
    start = time.monotonic()
    ort_rss, ort_note = measure_ort_rss(job)
    contenders = {}
    for name in config.peers:
        model_file = mnn.get if name == "mnn" and mnn is not None else None
        contenders[name] = measure_contender(name, config.python_for(name), job,
                                             rounds=config.rounds, warmup=config.warmup,
                                             model_file=model_file)
    return SuiteRow(model=job.model, sparsity=job.sparsity, batch=job.batch,
                    threads=job.threads, dense_macs=macs.dense, sparse_macs=macs.sparse,
                    contenders=contenders, ort_rss_mib=ort_rss, ort_note=ort_note,
                    load_average=os.getloadavg()[0], wall_s=time.monotonic() - start)


def _row_key(model: str, sparsity: float, batch: int, threads: int) -> tuple[Any, ...]:
    return (model, round(sparsity, 6), batch, threads)


def run_suite(config: SuiteConfig, *, done: Mapping[tuple[Any, ...], SuiteRow] | None = None,
              on_row: Callable[[SuiteRow], None] | None = None,
              models: Mapping[str, FullsizeModelSpec] | None = None) -> list[SuiteRow]:
    """Every (model, sparsity, threads, batch) of ``config`` in that order; rows in ``done``
    (same key) are reused, not measured again. ``on_row`` sees each row as it is finished.
    All model files are built (or found in the cache) before anything is measured, so a model
    that cannot be built stops the run at its start, not hours into it."""
    registry = FULLSIZE_MODELS if models is None else models
    for name in config.models:
        if name not in registry:
            raise SuiteError(f"unknown model {name!r}; valid: {', '.join(registry)}")
    log_dir = config.models_dir / "logs"
    mnn = (_MnnFiles(config.python_for("mnn"), log_dir, config.rebuild)
           if "mnn" in config.peers else None)
    done = done or {}
    keys = {(name, sparsity): [_row_key(name, sparsity, b, t)
                               for t in config.threads for b in config.batches]
            for name in config.models for sparsity in config.sparsities}
    paths = {}
    for (name, sparsity), row_keys in keys.items():
        if not all(key in done for key in row_keys):
            print(f"model file: {name} at {sparsity:.0%}", file=sys.stderr, flush=True)
            paths[name, sparsity] = fullsize_model_path(
                name, sparsity, config.models_dir, seed=config.seed, rebuild=config.rebuild,
                models=registry)
    rows = []
    for (name, sparsity), row_keys in keys.items():
        if (name, sparsity) not in paths:
            rows.extend(done[key] for key in row_keys)
            continue
        path = paths[name, sparsity]
        proto = load_onnx_model(path)
        macs = count_model_macs(proto)
        for threads in config.threads:
            for batch in config.batches:
                key = _row_key(name, sparsity, batch, threads)
                if key in done:
                    rows.append(done[key])
                    continue
                job = RowJob(name, sparsity, path,
                             _input_file(config.models_dir, proto, batch, config.seed),
                             batch, threads, log_dir)
                row = _measure_row(job, macs, config, mnn)
                print(_progress(row), file=sys.stderr, flush=True)
                rows.append(row)
                if on_row is not None:
                    on_row(row)
    return rows


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------

def _versions(rows: Sequence[SuiteRow], commit: str) -> dict[str, str]:
    """Each contender's version as its worker reported it (our engine: the commit)."""
    versions = {"engine": f"({commit})"}
    for row in rows:
        for name, result in row.contenders.items():
            if name != "engine" and result.version:
                versions.setdefault(name, result.version.split("-")[0])
    return versions


def _header(cpu: Mapping[str, Any], commit: str, config: SuiteConfig,
            rows: Sequence[SuiteRow]) -> list[str]:
    ort = sorted({f"{r.ort_version} ({CONTENDER_LABELS[r.name]} venv)" for row in rows
                  for r in row.contenders.values() if r.ort_version})
    if len({item.split()[0] for item in ort}) == 1:
        ort = [ort[0].split()[0]]
    return [cpu_line(cpu),
            f"Engine commit {commit}; ONNX Runtime {', '.join(ort) or 'n/a'}; "
            f"{config.rounds} interleaved rounds after {config.warmup} warm-up calls per "
            f"contender; models in {config.models_dir}"]


def _context(started: datetime, load_before: float, rows: Sequence[SuiteRow]) -> str:
    wall = sum(row.wall_s for row in rows)
    return (f"Measured from {started:%Y-%m-%d %H:%M} UTC; 1-minute load average "
            f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (a load "
            f"above the CPU count means other tenants shared the cores); rows took "
            f"{wall / 60:.1f} min. Each turn of the alternation opens with "
            f"{1000 * TURN_GAP_S:g} ms idle and >= {TURN_SETTLE_CALLS} untimed calls "
            f"(>= {1000 * TURN_SETTLE_S:g} ms); cells are medians.")


@dataclass
class _Report:
    """The JSON document, rewritten atomically after every row (a killed run keeps its rows)."""

    path: Path | None
    document: dict[str, Any]

    def add(self, row: SuiteRow) -> None:
        self.document["rows"].append(row.to_dict())
        self.write()

    def write(self) -> None:
        if self.path is not None:
            self.document["updated"] = datetime.now(timezone.utc).isoformat()
            atomic_write_json(self.path, self.document)


def _resumable_rows(path: Path | None, cpu: Mapping[str, Any], commit: str,
                    config: SuiteConfig) -> dict[tuple[Any, ...], SuiteRow]:
    """Rows of an earlier run in ``path`` that may be reused: same CPU, commit, peers and
    settings; otherwise none (with a note on stderr)."""
    import json

    if path is None or not path.is_file():
        return {}
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        same = (old.get("format") == JSON_FORMAT and old.get("machine") == dict(cpu)
                and old.get("commit") == commit and "+dirty" not in commit
                and old["config"]["peers"] == list(config.peers)
                and old["config"]["rounds"] == config.rounds
                and old["config"]["seed"] == config.seed)
        rows = [row_from_dict(item) for item in old["rows"]] if same else []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"note: not resuming from {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return {}
    if not same:
        print(f"note: not resuming from {path}: another machine, commit, peer set or settings",
              file=sys.stderr)
    return {_row_key(r.model, r.sparsity, r.batch, r.threads): r for r in rows}


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def _peers(text: str) -> tuple[str, ...]:
    """'engine,mnn' -> ('engine', 'mnn'), in the suite's column order."""
    names = _csv(str, text)
    unknown = [n for n in names if n not in CONTENDERS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown contender(s) {unknown or text!r}; valid: "
                                         f"{', '.join(CONTENDERS)}")
    return tuple(n for n in CONTENDERS if n in names)


def build_parser() -> argparse.ArgumentParser:
    """The command line of the suite."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=lambda t: _csv(str, t), default=tuple(FULLSIZE_MODELS),
                        help=f"comma-separated, from {', '.join(FULLSIZE_MODELS)}")
    parser.add_argument("--sparsities", type=_sparsities, default=(0.9, 0.95, 0.98),
                        help="percents (default 90,95,98)")
    parser.add_argument("--batches", type=_positive_ints, default=(1, 16))
    parser.add_argument("--threads", type=_positive_ints, default=(1, 2))
    parser.add_argument("--peers", type=_peers, default=CONTENDERS,
                        help=f"contenders besides ORT dense (default all: {','.join(CONTENDERS)})")
    for peer, python in DEFAULT_PYTHONS.items():
        parser.add_argument(f"--{peer}-python", type=Path, default=python,
                            help=f"python of the {CONTENDER_LABELS[peer]} venv "
                                 f"(default %(default)s)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 3 rounds, 1 warm-up call")
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR,
                        help="cache of the ONNX and MNN files, inputs and worker logs "
                             "(default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rebuild", action="store_true", help="rebuild cached model files")
    parser.add_argument("--json", type=Path, default=None,
                        help="write every statistic here (rewritten after each row)")
    parser.add_argument("--markdown", type=Path, default=None, help="write the tables here")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the rows of --json from an earlier run of the same commit, "
                             "machine, peers and settings")
    return parser


def config_from_args(args: argparse.Namespace) -> SuiteConfig:
    """Resolve the CLI flags into a :class:`SuiteConfig`."""
    if args.rounds < 1 or args.warmup < 0:
        raise SuiteError("--rounds must be >= 1 and --warmup >= 0")
    return SuiteConfig(
        models=tuple(args.models), sparsities=args.sparsities, batches=args.batches,
        threads=args.threads, peers=args.peers,
        pythons={peer: getattr(args, f"{peer}_python") for peer in DEFAULT_PYTHONS},
        rounds=3 if args.quick else args.rounds, warmup=1 if args.quick else args.warmup,
        models_dir=args.models_dir, seed=args.seed, rebuild=args.rebuild)


def main(argv: Sequence[str] | None = None,
         models: Mapping[str, FullsizeModelSpec] | None = None) -> int:
    """Parse flags, run the suite, print and write the report. Exit 2 on bad input."""
    args = build_parser().parse_args(argv)
    started, load_before = datetime.now(timezone.utc), os.getloadavg()[0]
    cpu, commit = cpu_description(), checkout_commit()
    try:
        config = config_from_args(args)
        for path in (args.json, args.markdown):
            if path is not None and path.exists() and not path.is_file():
                raise SuiteError(f"not a regular file: {path}")
        done = _resumable_rows(args.json, cpu, commit, config) if args.resume else {}
        report = _Report(args.json, {
            "format": JSON_FORMAT, "version": JSON_VERSION, "started": started.isoformat(),
            "finished": False, "machine": cpu, "commit": commit, "config": config.to_dict(),
            "settings": {"turn_gap_s": TURN_GAP_S, "settle_calls": TURN_SETTLE_CALLS,
                         "settle_s": TURN_SETTLE_S, "rss_runs": RSS_RUNS,
                         "load_average_start": load_before},
            "rows": [row.to_dict() for row in done.values()]})
        report.write()
        rows = run_suite(config, done=done, on_row=report.add, models=models)
    except (SuiteError, BenchError, BenchModelError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    versions = _versions(rows, commit)
    text = format_report(rows, peers=config.peers, versions=versions,
                         header=_header(cpu, commit, config, rows),
                         context=_context(started, load_before, rows))
    print(text, end="")
    try:
        report.document.update(rows=[row.to_dict() for row in rows], finished=True,
                               versions=versions)
        report.write()
        if args.markdown is not None:
            atomic_write_text(args.markdown, text)
    except OSError as exc:
        print(f"error: cannot write the report: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
