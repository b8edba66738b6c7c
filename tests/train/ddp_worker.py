"""Run under torchrun by test_loop.py: a tiny synthetic run that records, on each rank, what the
DDP test checks.

- ``broadcasts``: every threshold vector ``FeatherSparsifier.update`` broadcasts, as this rank
  computed it *before* the broadcast and as it came back *after* it (the broadcast makes rank 0's
  values everyone's, so only the "before" values show whether the ranks agreed on their own);
- ``thresholds``: the taus each update left in the model;
- ``indices``: per epoch, the training-set indices this rank's loader fetched;
- ``final.pt``: the finalized model's state_dict (weights and BatchNorm buffers).
"""

import json
import os
import sys

import torch
import torch.distributed as dist

import featherdeploy.train.sparsify as sparsify
from featherdeploy.train.config import resolve_config
from featherdeploy.train.data import InMemoryImageDataset
from featherdeploy.train.loop import run_training

CONFIG = {"name": "ddp", "dataset": "synthetic", "model": "resnet20", "epochs": 2,
          "batch_size": 64, "limit_train": 320, "limit_test": 128, "sparsity": 0.9,
          "cyclic_sparsity": True, "cyclic_period": 1, "progress": False, "device": "cpu"}


def main() -> None:
    runs_dir, out_dir = sys.argv[1], sys.argv[2]
    rank = int(os.environ["RANK"])
    record = {"broadcasts": [], "thresholds": [], "indices": [[]]}

    broadcast = dist.broadcast

    def recording_broadcast(tensor, src, *args, **kwargs):
        before = tensor.tolist()
        result = broadcast(tensor, src, *args, **kwargs)
        record["broadcasts"].append({"before": before, "after": tensor.tolist()})
        return result

    update = sparsify.FeatherSparsifier.update

    def recording_update(self, k):
        update(self, k)
        record["thresholds"].append(list(self.thresholds().values()))

    getitems = InMemoryImageDataset.__getitems__

    def recording_getitems(self, indices):
        if self.augment is not None:  # the training set
            record["indices"][-1].extend(int(i) for i in indices)
        return getitems(self, indices)

    # Only the sparsifier's calls go through the recorder (DDP's own syncs use other paths).
    sparsify.dist = _DistProxy(recording_broadcast)
    sparsify.FeatherSparsifier.update = recording_update
    InMemoryImageDataset.__getitems__ = recording_getitems

    config = resolve_config(None, {**CONFIG, "runs_dir": runs_dir})
    result = run_training(config, on_epoch_end=lambda _record: record["indices"].append([]))
    record["indices"].pop()  # the list opened after the last epoch
    torch.save(result.model.state_dict(), os.path.join(out_dir, f"final_rank{rank}.pt"))
    with open(os.path.join(out_dir, f"record_rank{rank}.json"), "w") as handle:
        json.dump(record, handle)


class _DistProxy:
    """torch.distributed with ``broadcast`` replaced, as seen by train.sparsify only."""

    def __init__(self, broadcast) -> None:
        self.broadcast = broadcast

    def __getattr__(self, name):
        return getattr(dist, name)


if __name__ == "__main__":
    main()
