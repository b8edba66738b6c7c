"""Extreme sparsity: a per-option ablation of the EAST tricks on top of Feather (top-1).

The claim under test (EAST, Li et al., arXiv 2411.13545): at extreme sparsity the EAST options
keep accuracy well above plain magnitude pruning. Each (sparsity, variant, seed) point is one
training run of the default model on the default dataset (``configs/default.yaml``), every
variant with the same epochs, data and seeds:

    feather : the config as it is (Feather-Global, cubic ramp)
    erk     : + ERK per-layer allocation                      (--init erk)
    cyclic  : + ERK + cyclic sparsity with gradient regrowth  (cyclic sparsity allocates by ERK)
    dyrelu  : + DyReLU phasing                                 (Feather-Global otherwise)
    sharing : + weight sharing                                 (Feather-Global otherwise)
    east    : all of them

Every variant of a sparsity keeps the same number of unique nonzero weights: N - P(N, k), N the
prunable weights of the unshared model, P(N, k) = floor((N - 1) k) + 1 (weight sharing spends
the budget of its removed copies on the unique weights, as EAST's adjusted density). The table
reports per row the unique nonzeros, the nonzeros of the deployed model (shared convs
materialized, so sharing deploys more) and its sparse MACs.

Resumable: every point has its own run directory under ``RUNS/<setting>/``; a finished point
(``summary.json`` present) is skipped, an interrupted one continues from its last epoch
checkpoint, so killing the script and running the same command again continues the grid.
``--workers N`` trains N points at once, each in its own process with ``--threads`` threads
(default 1). The Markdown table (``--out``) and a CSV with one line per run (``--csv``) are
rewritten atomically after every finished point. ``--epochs``, ``--limit-train`` and
``--limit-test`` run a smaller budget (the setting is in the directory name and the header).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import sys
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featherdeploy.runtime.atomic import atomic_write_text

__all__ = ["VARIANTS", "LABELS", "Point", "Setting", "grid", "point_overrides", "run_point",
           "point_row", "results_markdown", "results_csv", "main"]

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "default.yaml"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "extreme_sparsity.md"
DEFAULT_CSV = REPO / "benchmarks" / "results" / "extreme_sparsity.csv"
# Bumped when the training code changes what a finished point means, so a rerun never reuses
# runs of older code (v2: density-corrected sharing, short-run cyclic schedule, E/2 - 1 DyReLU).
ABLATION_VERSION = 2
EAST_OPTIONS = {"init": "erk", "dyrelu_phasing": True, "weight_sharing": True,
                "cyclic_sparsity": True}
VARIANTS: dict[str, dict[str, Any]] = {
    "feather": {},
    "erk": {"init": "erk"},
    "cyclic": {"init": "erk", "cyclic_sparsity": True},
    "dyrelu": {"dyrelu_phasing": True},
    "sharing": {"weight_sharing": True},
    "east": EAST_OPTIONS,
}
LABELS = {"feather": "Feather", "erk": "+ ERK", "cyclic": "+ ERK + cyclic",
          "dyrelu": "+ DyReLU phasing", "sharing": "+ weight sharing", "east": "full EAST"}
CSV_FIELDS = ("sparsity", "variant", "seed", "test_acc", "unique_nonzeros", "deployed_nonzeros",
              "sparse_macs", "dense_macs", "unique_sparsity", "seconds")


@dataclass(frozen=True)
class Setting:
    """What is shared by every point: training length and data limits."""

    epochs: int | None = None  # None: the config's
    limit_train: int | None = None
    limit_test: int | None = None
    device: str = "cpu"

    @property
    def tag(self) -> str:
        """Directory name of this setting, so runs of different settings never mix."""
        parts = [f"v{ABLATION_VERSION}",
                 f"e{self.epochs}" if self.epochs else "e-config",
                 f"n{self.limit_train}" if self.limit_train else "n-all",
                 f"t{self.limit_test}" if self.limit_test else "t-all"]
        return "_".join(parts)


@dataclass(frozen=True)
class Point:
    sparsity: float
    variant: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.variant}_s{self.sparsity * 100:g}_seed{self.seed}"


def grid(sparsities: Sequence[float], seeds: Sequence[int],
         variants: Sequence[str] = tuple(VARIANTS)) -> list[Point]:
    """Every (sparsity, variant, seed), sparsity-major."""
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    return [Point(s, v, seed) for s in sparsities for v in variants for seed in seeds]


def point_overrides(point: Point, setting: Setting, runs_dir: Path) -> dict[str, Any]:
    """TrainConfig overrides of one point (on top of the YAML config)."""
    overrides: dict[str, Any] = {"name": point.name, "runs_dir": str(runs_dir / setting.tag),
                                 "sparsity": point.sparsity, "seed": point.seed,
                                 "device": setting.device, "progress": False,
                                 **VARIANTS[point.variant]}
    for key in ("epochs", "limit_train", "limit_test"):
        value = getattr(setting, key)
        if value is not None:
            overrides[key] = value
    return overrides


def run_point(file_values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Train one point (or skip / resume it) and return its summary plus the deployed nnz."""
    from featherdeploy.train.config import resolve_config
    from featherdeploy.train.loop import run_training

    config = resolve_config(file_values, overrides)
    summary_path = config.run_dir / "summary.json"
    if not summary_path.is_file():
        resume = (config.run_dir / "checkpoint.pt").is_file()
        run_training(config, resume=resume, overwrite=not resume)
    summary = json.loads(summary_path.read_text())
    report = json.loads((config.run_dir / "sparsity.json").read_text())
    return {**summary, "deployed_nonzeros": report["totals"]["nnz"]}


def _worker_init(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def point_row(point: Point, result: dict[str, Any]) -> dict[str, Any]:
    """One CSV line: the point and what its run measured."""
    unique_numel = result.get("unique_numel")
    unique_sparsity = result.get("unique_sparsity", result["sparsity"])
    unique = (round(unique_numel * (1.0 - unique_sparsity)) if unique_numel is not None
              else result.get("deployed_nonzeros"))
    return {"sparsity": point.sparsity, "variant": point.variant, "seed": point.seed,
            "test_acc": result["test_acc"], "unique_nonzeros": unique,
            "deployed_nonzeros": result.get("deployed_nonzeros"),
            "sparse_macs": result["sparse_macs"], "dense_macs": result.get("dense_macs"),
            "unique_sparsity": unique_sparsity, "seconds": result.get("seconds")}


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def _count(values: Sequence[Any]) -> str:
    """One count if every seed agrees, else min-max."""
    known = sorted({v for v in values if v is not None})
    if not known:
        return "-"
    return f"{known[0]:,}" if len(known) == 1 else f"{known[0]:,}-{known[-1]:,}"


def results_markdown(results: dict[Point, dict[str, Any]], seeds: Sequence[int],
                     header: str) -> str:
    """One row per (sparsity, variant): top-1 per seed, mean, gain over Feather, counts."""
    lines = [header, "",
             "| sparsity | variant | " + " | ".join(f"top-1 seed {s}" for s in seeds)
             + " | mean top-1 | vs Feather | unique nonzeros | deployed nonzeros | sparse MACs |",
             "|---|---|" + "---|" * len(seeds) + "---|---|---|---|---|"]
    means: dict[tuple[float, str], float] = {}
    notes: list[str] = []
    for sparsity in sorted({p.sparsity for p in results}):
        uniques: dict[str, set[int]] = {}
        for variant in VARIANTS:
            points = [p for p in results if p.sparsity == sparsity and p.variant == variant]
            if not points:
                continue
            rows = {p.seed: point_row(p, results[p]) for p in points}
            accs = [rows[s]["test_acc"] for s in seeds if s in rows]
            means[(sparsity, variant)] = _mean(accs)
            base = means.get((sparsity, "feather"))
            gain = ("-" if base is None or variant == "feather"
                    else f"{100 * (means[(sparsity, variant)] - base):+.2f}")
            cells = [f"{100 * rows[s]['test_acc']:.2f}" if s in rows else "-" for s in seeds]
            unique = [r["unique_nonzeros"] for r in rows.values()]
            uniques[variant] = {u for u in unique if u is not None}
            deployed = [r["deployed_nonzeros"] for r in rows.values()]
            macs = [r["sparse_macs"] for r in rows.values()]
            lines.append(f"| {100 * sparsity:g} % | {LABELS[variant]} | " + " | ".join(cells)
                         + f" | {100 * means[(sparsity, variant)]:.2f} | {gain} | "
                         f"{_count(unique)} | {_count(deployed)} | {round(_mean(macs)):,} |")
        counts = set().union(*uniques.values()) if uniques else set()
        if len(counts) > 1:
            notes.append(f"- {100 * sparsity:g} %: unique nonzeros differ between variants "
                         f"({', '.join(f'{v}: {sorted(c)}' for v, c in uniques.items())})")
    lines.append("")
    for sparsity in sorted({s for s, _ in means}):
        base = means.get((sparsity, "feather"))
        if base is None:
            continue
        gains = [f"{LABELS[v]} {100 * (means[(sparsity, v)] - base):+.2f}" for v in VARIANTS
                 if v != "feather" and (sparsity, v) in means]
        if gains:
            lines.append(f"- {100 * sparsity:g} %: mean top-1 minus Feather's: "
                         + ", ".join(gains) + " points")
    return "\n".join(lines + notes) + "\n"


def results_csv(results: dict[Point, dict[str, Any]]) -> str:
    """One line per run, in grid order."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for point in sorted(results, key=lambda p: (p.sparsity, list(VARIANTS).index(p.variant),
                                                p.seed)):
        writer.writerow(point_row(point, results[point]))
    return buffer.getvalue()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.99, 0.995, 0.999])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS),
                        help=f"any of {', '.join(VARIANTS)}")
    parser.add_argument("--epochs", type=int, help="override the config's epochs")
    parser.add_argument("--limit-train", type=int, help="use only the first N training images")
    parser.add_argument("--limit-test", type=int, help="use only the first N test images")
    parser.add_argument("--workers", type=int, default=1,
                        help="points trained at once, each in its own process (default 1)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per worker process (default 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs-dir", default=str(REPO / "runs" / "extreme_sparsity"))
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--csv", default=str(DEFAULT_CSV))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from featherdeploy.train.config import ConfigError, load_yaml_config
    from featherdeploy.train.data_arrays import DatasetNotFoundError

    setting = Setting(args.epochs, args.limit_train, args.limit_test, args.device)
    results: dict[Point, dict[str, Any]] = {}
    try:
        if args.workers < 1 or args.threads < 1:
            raise ValueError("--workers and --threads must be >= 1")
        points = grid(args.sparsities, args.seeds, args.variants)
        file_values = load_yaml_config(args.config)
        epochs = args.epochs or file_values.get("epochs")
        header = (f"## Extreme sparsity: per-option EAST ablation ({file_values.get('model')} on "
                  f"{file_values.get('dataset')}, {epochs} epoch{'' if epochs == 1 else 's'}, "
                  "train images: "
                  f"{args.limit_train or 'all'}, test images: {args.limit_test or 'all'}, "
                  f"seeds {', '.join(map(str, args.seeds))})")

        def finished(point: Point, result: dict[str, Any], index: int) -> None:
            results[point] = result
            print(f"[{index}/{len(points)}] {point.name} ({setting.tag}): top-1 "
                  f"{100 * result['test_acc']:.2f} %", flush=True)
            atomic_write_text(args.out, results_markdown(results, args.seeds, header))
            atomic_write_text(args.csv, results_csv(results))

        jobs = [(point, point_overrides(point, setting, Path(args.runs_dir))) for point in points]
        if args.workers == 1:
            _worker_init(args.threads)
            for index, (point, overrides) in enumerate(jobs, 1):
                finished(point, run_point(file_values, overrides), index)
        else:
            _run_parallel(jobs, file_values, args.workers, args.threads, finished)
    except (ConfigError, DatasetNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(Path(args.out).read_text())
    return 0


def _run_parallel(jobs, file_values, workers: int, threads: int, finished) -> None:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                             initargs=(threads,)) as pool:
        pending = {pool.submit(run_point, file_values, overrides): point
                   for point, overrides in jobs}
        done_count = 0
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    point = pending.pop(future)
                    done_count += 1
                    finished(point, future.result(), done_count)
        except BaseException:
            for future in pending:
                future.cancel()
            raise


if __name__ == "__main__":
    raise SystemExit(main())
