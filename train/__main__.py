"""CLI: ``featherdeploy train [--config FILE] --name NAME [overrides]`` (also ``python -m
featherdeploy.train``, e.g. under torchrun); argparse only (see loop)."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main", "build_parser"]

EXIT_BAD_INPUT = 2
PROG = "python -m featherdeploy.train"


def _theta(value: str) -> str | float:
    if value.lower() == "auto":
        return "auto"
    try:
        return float(value)
    except ValueError as exc:
        message = f"theta must be 'auto' or a number, got {value!r}"
        raise argparse.ArgumentTypeError(message) from exc


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Feather sparse training. Flags override values from --config (YAML).")
    add = parser.add_argument
    add("--config", help="YAML file with TrainConfig fields (e.g. configs/default.yaml)")
    add("--name", help="run name: outputs go to RUNS_DIR/NAME/")
    add("--runs-dir", help="parent directory of runs (default: runs)")
    add("--dataset", help="fashion-mnist | cifar10 | cifar100 | imagefolder | synthetic")
    add("--data-dir", help="where the dataset lives (default: the dataset's standard place)")
    add("--model", help="resnet20 | mobilenet_v1 | densenet40_24 | resnet18 | resnet50")
    add("--model-kwargs", type=json.loads, help='JSON constructor arguments, e.g. \'{"width": 2}\'')
    add("--epochs", type=int)
    add("--batch-size", type=int)
    add("--eval-batch-size", type=int)
    add("--lr", type=float)
    add("--momentum", type=float)
    add("--weight-decay", type=float)
    add("--warmup-epochs", type=float)
    add("--label-smoothing", type=float)
    add("--grad-clip", type=float)
    add("--sparsity", type=float, help="final target sparsity in [0, 1), e.g. 0.95")
    add("--backbone", help="global | flops | uniform")
    add("--alpha", type=float, help="FLOPs-biased layer-constant exponent (default 1)")
    add("--operator", help="feather | hard | soft")
    add("--p", type=float, help="Feather exponent p (default 3)")
    add("--theta", type=_theta, help="STE scale for pruned weights: auto (g(S)) or a number")
    add("--prune-start", type=float, help="fraction of iterations where pruning starts (0)")
    add("--prune-end", type=float, help="fraction of iterations where the target is reached (0.5)")
    add("--keep-first-conv-dense", action="store_const", const=True, default=None)
    east = parser.add_argument_group("EAST tricks for extreme sparsity (99%+)")
    east.add_argument("--init", help="none | erk: per-layer ERK density allocation instead of "
                      "the backbone's (needs backbone global)")
    east.add_argument("--dyrelu-phasing", action="store_const", const=True, default=None,
                      help="DyReLU-B activations phased linearly into ReLU")
    east.add_argument("--dyrelu-start", type=float, help="epoch where the phase-out starts (E/4)")
    east.add_argument("--dyrelu-end", type=float, help="epoch from which it is plain ReLU (E/2-1)")
    east.add_argument("--weight-sharing", action="store_const", const=True, default=None,
                      help="ResNet blocks >= 2 of a stage reuse block 1's convs x a scalar")
    east.add_argument("--cyclic-sparsity", action="store_const", const=True, default=None,
                      help="density cycles between target and a multiple of it, regrowth by "
                      "gradient, ERK allocation; then settles at the target")
    east.add_argument("--cyclic-multiple", type=float, help="peak density / target density (3)")
    east.add_argument("--cyclic-cycles", type=int, help="number of cosine cycles (2)")
    east.add_argument("--cyclic-period", type=int,
                      help="iterations between density updates (default: 20 per cycle, "
                      "clipped to 25..100)")
    east.add_argument("--cyclic-end", type=float,
                      help="fraction of iterations where the cycles end (0.65)")
    add("--device", help="auto | cpu | cuda | cuda:N")
    add("--no-amp", dest="amp", action="store_const", const=False, default=None,
        help="disable mixed precision on CUDA")
    add("--seed", type=int)
    add("--limit-train", type=int, help="use only the first N training images")
    add("--limit-test", type=int, help="use only the first N test images")
    add("--no-progress", dest="progress", action="store_const", const=False, default=None)
    add("--resume", action="store_true", help="continue RUNS_DIR/NAME from its checkpoint")
    add("--overwrite", action="store_true", help="replace an existing run directory's contents")
    return parser


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    from featherdeploy.train.artifact import ArtifactError
    from featherdeploy.train.config import ConfigError, load_yaml_config, resolve_config
    from featherdeploy.train.data_arrays import DatasetError
    from featherdeploy.train.loop import RunWriteError, TrainingDivergedError, run_training
    from featherdeploy.train.models import ModelError

    overrides = {k: v for k, v in vars(args).items()
                 if k not in ("config", "resume", "overwrite") and v is not None}
    try:
        file_values = load_yaml_config(args.config) if args.config else {}
        config = resolve_config(file_values, overrides)
        result = run_training(config, resume=args.resume, overwrite=args.overwrite)
    except (ConfigError, DatasetError, ModelError, ArtifactError, TrainingDivergedError,
            RunWriteError, OSError) as exc:  # OSError: a file the core did not expect
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"run {result.run_dir}: test accuracy {result.test_acc:.4f}, "
          f"sparsity {result.sparsity:.4f}, {result.seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
