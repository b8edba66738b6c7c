"""Run under torchrun by test_loop.py: trains a tiny synthetic run and records each rank's taus."""

import json
import os
import sys

from train.config import resolve_config
from train.loop import run_training


def main() -> None:
    runs_dir, out_dir = sys.argv[1], sys.argv[2]
    rank = int(os.environ["RANK"])
    config = resolve_config(None, {
        "name": "ddp", "runs_dir": runs_dir, "dataset": "synthetic", "model": "resnet20",
        "epochs": 2, "batch_size": 64, "sparsity": 0.8, "progress": False, "device": "cpu"})
    taus = []
    run_training(config, on_epoch_end=lambda record: taus.append(record["tau"]))
    with open(os.path.join(out_dir, f"taus_rank{rank}.json"), "w") as handle:
        json.dump(taus, handle)


if __name__ == "__main__":
    main()
