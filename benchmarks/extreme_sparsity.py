"""Extreme sparsity: plain Feather vs Feather + EAST tricks at 99.5 % and 99.9 % (top-1).

The claim under test (EAST, Li et al., arXiv 2411.13545): at extreme sparsity the EAST options
(DyReLU phasing, weight sharing, cyclic sparsity with ERK allocation) keep accuracy well above
plain magnitude pruning. Each (sparsity, variant, seed) point is one training run of the default
model on the default dataset (``configs/default.yaml``) with the same epochs for both variants:

    feather : the config as it is (Feather-Global, cubic ramp)
    east    : + --init erk --dyrelu-phasing --weight-sharing --cyclic-sparsity

Resumable: every point has its own run directory under ``RUNS/<setting>/``; a finished point
(``summary.json`` present) is skipped, an interrupted one continues from its checkpoint. The
Markdown table is printed and written atomically to ``benchmarks/results/extreme_sparsity.md``.
The whole grid takes long on a shared 2-core CPU; ``--epochs`` and ``--limit-train`` reduce it
(the setting is printed in the table's header).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.atomic import atomic_write_text

__all__ = ["VARIANTS", "Point", "Setting", "grid", "point_overrides", "run_point",
           "results_markdown", "main"]

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "default.yaml"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "extreme_sparsity.md"
EAST_OPTIONS = {"init": "erk", "dyrelu_phasing": True, "weight_sharing": True,
                "cyclic_sparsity": True}
VARIANTS: dict[str, dict[str, Any]] = {"feather": {}, "east": EAST_OPTIONS}


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
        parts = [f"e{self.epochs}" if self.epochs else "e-config",
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
    """Train one point (or skip / resume it) and return its summary.json content."""
    from train.config import resolve_config
    from train.loop import run_training

    config = resolve_config(file_values, overrides)
    summary_path = config.run_dir / "summary.json"
    if summary_path.is_file():
        return json.loads(summary_path.read_text())
    resume = (config.run_dir / "checkpoint.pt").is_file()
    run_training(config, resume=resume, overwrite=not resume)
    return json.loads(summary_path.read_text())


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def results_markdown(results: dict[Point, dict[str, Any]], seeds: Sequence[int],
                     header: str) -> str:
    """A Markdown table: one row per (sparsity, variant), top-1 per seed, mean, EAST gain."""
    lines = [header, "",
             "| sparsity | variant | " + " | ".join(f"top-1 seed {s}" for s in seeds)
             + " | mean top-1 | achieved sparsity (unique weights) | sparse MACs |",
             "|---|---|" + "---|" * len(seeds) + "---|---|---|"]
    means: dict[tuple[float, str], float] = {}
    for sparsity in sorted({p.sparsity for p in results}):
        for variant in VARIANTS:
            points = [p for p in results if p.sparsity == sparsity and p.variant == variant]
            if not points:
                continue
            by_seed = {p.seed: results[p] for p in points}
            accs = [by_seed[s]["test_acc"] for s in seeds if s in by_seed]
            means[(sparsity, variant)] = _mean(accs)
            cells = [f"{100 * by_seed[s]['test_acc']:.2f}" if s in by_seed else "-"
                     for s in seeds]
            achieved = [r.get("unique_sparsity", r["sparsity"]) for r in by_seed.values()]
            macs = [r["sparse_macs"] for r in by_seed.values()]
            lines.append(f"| {100 * sparsity:g} % | {variant} | " + " | ".join(cells)
                         + f" | {100 * means[(sparsity, variant)]:.2f} | "
                         f"{100 * min(achieved):.3f} % | {round(_mean(macs)):,} |")
    lines.append("")
    for sparsity in sorted({s for s, _ in means}):
        if (sparsity, "east") in means and (sparsity, "feather") in means:
            gain = means[(sparsity, "east")] - means[(sparsity, "feather")]
            lines.append(f"- {100 * sparsity:g} %: EAST - Feather = {100 * gain:+.2f} points "
                         "(mean top-1)")
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.995, 0.999])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--epochs", type=int, help="override the config's epochs")
    parser.add_argument("--limit-train", type=int, help="use only the first N training images")
    parser.add_argument("--limit-test", type=int, help="use only the first N test images")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs-dir", default=str(REPO / "runs" / "extreme_sparsity"))
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from train.config import ConfigError, load_yaml_config
    from train.data_arrays import DatasetNotFoundError

    setting = Setting(args.epochs, args.limit_train, args.limit_test, args.device)
    try:
        points = grid(args.sparsities, args.seeds, args.variants)
        file_values = load_yaml_config(args.config)
        results: dict[Point, dict[str, Any]] = {}
        for index, point in enumerate(points, 1):
            print(f"[{index}/{len(points)}] {point.name} ({setting.tag})", flush=True)
            overrides = point_overrides(point, setting, Path(args.runs_dir))
            results[point] = run_point(file_values, overrides)
            print(f"    top-1 {100 * results[point]['test_acc']:.2f} %", flush=True)
    except (ConfigError, DatasetNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    epochs = args.epochs or file_values.get("epochs")
    header = (f"## Extreme sparsity: Feather vs Feather + EAST ({file_values.get('model')} on "
              f"{file_values.get('dataset')}, {epochs} epochs, train images: "
              f"{args.limit_train or 'all'}, test images: {args.limit_test or 'all'}, "
              f"seeds {', '.join(map(str, args.seeds))})")
    table = results_markdown(results, args.seeds, header)
    print(table)
    atomic_write_text(args.out, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
