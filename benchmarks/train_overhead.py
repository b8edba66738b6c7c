"""One Feather training step vs one dense step (ResNet-20x2, batch 128, CPU), as a ratio.

Both steps run interleaved in one process, so machine noise hits both alike; the printed ratio
(median Feather step / median dense step) is the figure to compare with the target <= 1.10.
The Feather step includes everything a real step does: the global threshold recomputation
(quantile over all prunable weights), the T_p forward and the theta-scaled STE backward.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from featherdeploy.train.models import build_model
from featherdeploy.train.sparsify import FeatherSparsifier, SparsityConfig

__all__ = ["measure_overhead", "main"]


def _make(sparse: bool, width: int, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model("resnet20", in_channels=3, num_classes=100, image_size=32, width=width)
    sparsifier = None
    if sparse:
        sparsifier = FeatherSparsifier(model, SparsityConfig(target=0.9))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    return model.train(), sparsifier, optimizer


def _step(model: nn.Module, sparsifier: FeatherSparsifier | None, optimizer, x, y) -> float:
    start = time.perf_counter()
    if sparsifier is not None:
        sparsifier.update(0.9)
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 3.0)
    optimizer.step()
    return time.perf_counter() - start


def measure_overhead(batch: int = 128, width: int = 2, rounds: int = 10, warmup: int = 2
                     ) -> dict[str, float]:
    """Median seconds per step for dense and Feather, measured alternately, and their ratio."""
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 100, (batch,))
    dense, feather = _make(False, width), _make(True, width)
    times: dict[str, list[float]] = {"dense": [], "feather": []}
    for i in range(warmup + rounds):
        for name, parts in (("dense", dense), ("feather", feather)):
            elapsed = _step(*parts, x, y)
            if i >= warmup:
                times[name].append(elapsed)
    d, f = statistics.median(times["dense"]), statistics.median(times["feather"])
    return {"dense_s": d, "feather_s": f, "ratio": f / d}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--width", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)
    result = measure_overhead(args.batch, args.width, args.rounds)
    print(f"ResNet-20x{args.width}, batch {args.batch}, CPU, {torch.get_num_threads()} threads")
    print(f"dense step   {result['dense_s'] * 1e3:8.1f} ms (median)")
    print(f"feather step {result['feather_s'] * 1e3:8.1f} ms (median)")
    print(f"ratio feather/dense = {result['ratio']:.3f}  (target <= 1.10)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
