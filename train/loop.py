"""The training loop: epochs of Feather sparse training, evaluation, checkpoints and outputs.

Recipe (docs/algorithms.md sec. 3): SGD with momentum, cosine learning rate per iteration to 0 (with
optional linear warm-up), grad-norm clipping, cross-entropy (optional label smoothing), weight decay
on conv/linear weights only (the dense latent weights; biases and BN get none). The threshold is
recomputed before every iteration's forward pass and once more after each epoch's last step.

EAST options (docs/algorithms.md sec. 5, ``train.east``): weight sharing and DyReLU-B are applied to
the built model before Feather wraps it and undone when it is finalized (shared weights
materialized, DyReLU swapped back to ReLU once its phase-out weight beta has reached 0); ERK
allocation and cyclic sparsity choose the per-layer thresholds, and cyclic runs regrow pruned
weights by gradient magnitude right after the optimizer step of the iteration before an update.

Reproducibility: data order and augmentation of epoch e depend only on (seed, e), so a run resumed
from the checkpoint of epoch e continues exactly as the uninterrupted run (same device/threads).
Works on CPU, on CUDA (mixed precision, threshold math in fp32) and under ``torchrun`` (DDP: gloo on
CPU, nccl on GPU; rank 0 broadcasts the thresholds and writes every file).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from featherdeploy.runtime.atomic import atomic_write_json, atomic_write_text
from featherdeploy.train.artifact import (
    ModelMeta,
    atomic_torch_save,
    non_finite_tensor,
    save_model_artifact,
)
from featherdeploy.train.config import ConfigError, TrainConfig, to_yaml
from featherdeploy.train.east.cyclic import CyclicSchedule
from featherdeploy.train.east.dyrelu import dyrelu_beta, set_dyrelu_beta
from featherdeploy.train.east.lifecycle import finalize_east_model, prepare_east_model
from featherdeploy.train.prunable import prunable_parameters
from featherdeploy.train.schedule import cubic_sparsity
from featherdeploy.train.sparsify import FeatherSparsifier, SparsityConfig

__all__ = ["RunExistsError", "RunWriteError", "TrainingDivergedError", "TrainResult",
           "run_training", "select_device", "cosine_lr", "epoch_divergence"]

CHECKPOINT_FORMAT = "featherdeploy.checkpoint"
CHECKPOINT_VERSION = 1
# Config fields that may differ between a run and its resumption: how it runs and where its
# folder and data are, not what it trains (so a moved or renamed run folder resumes).
RESUMABLE_DIFFERENCES = {"progress", "device", "data_dir", "name", "runs_dir"}
RUN_FILES = ("config.yaml", "metrics.jsonl", "checkpoint.pt", "model.pt", "sparsity.json",
             "summary.json")
# What a run has written before its first checkpoint is in place (config.yaml, an empty
# metrics.jsonl, maybe a checkpoint's unfinished temp file): nothing a restart could lose.
BEFORE_FIRST_CHECKPOINT = frozenset({"config.yaml", "metrics.jsonl", "checkpoint.pt"})
# The temp file runtime.atomic writes beside TARGET before renaming it: .TARGET.XXXXXXXX.tmp
_ATOMIC_TEMP = re.compile(r"\.(?P<target>.+)\.\w+\.tmp")


class RunExistsError(ConfigError):
    """The run directory already holds a run and neither resume nor overwrite was asked for."""


class RunWriteError(Exception):
    """A run file could not be written (disk full, no permission, a file where a folder goes).
    Every write is atomic, so the files written before are intact."""


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn an OSError of the writes inside into one RunWriteError naming ``path``."""
    try:
        yield
    except OSError as exc:
        raise RunWriteError(f"cannot write {path}: {exc.strerror or exc}") from exc


class TrainingDivergedError(Exception):
    """The loss or the weights became NaN/Inf; nothing of the diverged epoch was saved."""


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


@dataclass
class TrainResult:
    run_dir: Path
    test_acc: float
    test_loss: float
    sparsity: float
    epochs: int
    seconds: float
    model: nn.Module


def select_device(spec: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA (this process's local rank) when available, else CPU."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' requested but CUDA is not available")
        return torch.device(spec if ":" in spec else f"cuda:{local_rank}")
    return torch.device(spec)


def _init_distributed(device: torch.device) -> DistContext:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def cosine_lr(step: int, total_steps: int, base_lr: float, warmup_steps: int = 0) -> float:
    """lr(t) = base * t / W during warm-up, then base * (1 + cos(pi * (t - W) / (T - W))) / 2."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * (step - warmup_steps) / span))


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD; weight decay on >= 2-D parameters (conv/linear weights) only."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)


def _limit(dataset, limit: int | None):
    return dataset if limit is None or limit >= len(dataset) else Subset(dataset, range(limit))


def _loaders(config: TrainConfig, ctx: DistContext, device: torch.device):
    from featherdeploy.train.data import build_datasets

    train_ds, test_ds, info = build_datasets(config.dataset, config.data_dir, augment=True,
                                             seed=config.seed)
    train_ds, test_ds = _limit(train_ds, config.limit_train), _limit(test_ds, config.limit_test)
    sampler = DistributedSampler(train_ds, num_replicas=ctx.world_size, rank=ctx.rank,
                                 shuffle=True, seed=config.seed, drop_last=True)
    per_rank_batch = max(config.batch_size // ctx.world_size, 1)
    pin = device.type == "cuda"
    train_loader = DataLoader(train_ds, batch_size=per_rank_batch, sampler=sampler,
                              drop_last=True, pin_memory=pin)
    # Each rank evaluates a disjoint shard; sums are all-reduced.
    test_shard = Subset(test_ds, range(ctx.rank, len(test_ds), ctx.world_size))
    test_loader = DataLoader(test_shard, batch_size=config.eval_batch_size, shuffle=False,
                             pin_memory=pin)
    if len(train_loader) == 0:
        raise ConfigError(f"batch size {config.batch_size} exceeds the {len(train_ds)} "
                          "training images")
    return train_loader, sampler, test_loader, info


def _reduce(values: list[float], device: torch.device, ctx: DistContext) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if ctx.distributed:
        dist.all_reduce(tensor)
    return tensor.tolist()


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device,
             ctx: DistContext) -> tuple[float, float]:
    """(mean loss, accuracy) over the whole test set (all ranks' shards)."""
    model.eval()
    loss_sum = correct = count = 0.0
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        logits = model(images).float()
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        correct += float((logits.argmax(1) == labels).sum())
        count += labels.numel()
    loss_sum, correct, count = _reduce([loss_sum, correct, count], device, ctx)
    return loss_sum / max(count, 1), correct / max(count, 1)


class _Trainer:
    """Holds the state of one run; methods are the steps of the loop."""

    def __init__(self, config: TrainConfig, device: torch.device, ctx: DistContext) -> None:
        from featherdeploy.train.models import build_model

        self.config, self.device, self.ctx = config, device, ctx
        self.train_loader, self.sampler, self.test_loader, self.info = _loaders(config, ctx, device)
        torch.manual_seed(config.seed)
        try:
            model = build_model(config.model, in_channels=self.info.in_channels,
                                num_classes=self.info.num_classes,
                                image_size=self.info.image_size, **config.model_kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"cannot build model {config.model!r}: {exc}") from exc
        input_shape = (self.info.in_channels, self.info.image_size, self.info.image_size)
        try:
            prepare_east_model(model, input_shape, weight_sharing=config.weight_sharing,
                               dyrelu=config.dyrelu_phasing)
        except ValueError as exc:
            raise ConfigError(f"EAST options do not fit {config.model!r}: {exc}") from exc
        theta = None if config.theta == "auto" else float(config.theta)
        self.sparsifier = FeatherSparsifier(model, SparsityConfig(
            target=config.sparsity, backbone=config.backbone, alpha=config.alpha,
            operator=config.operator, p=config.p, theta=theta,
            keep_first_conv_dense=config.keep_first_conv_dense, allocation=config.allocation))
        self.model = model.to(device)
        # Phased-out DyReLU layers take no part in the loss: DDP must expect unused parameters.
        self.net = (nn.parallel.DistributedDataParallel(
            self.model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=config.dyrelu_phasing)
            if ctx.distributed else self.model)
        self.optimizer = _optimizer(self.model, config)
        self.use_amp = config.amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.steps_per_epoch = len(self.train_loader)
        self.total_steps = config.epochs * self.steps_per_epoch
        self.warmup_steps = round(config.warmup_epochs * self.steps_per_epoch)
        self.epoch = 0  # completed epochs
        self.history: list[dict[str, Any]] = []
        self.cyclic = _cyclic_schedule(config, self.total_steps)
        start, end = config.dyrelu_window
        self.dyrelu_steps = (math.floor(start * self.steps_per_epoch),
                             max(math.floor(end * self.steps_per_epoch),
                                 math.floor(start * self.steps_per_epoch) + 1))
        self.regrown = 0  # weights regrown by cyclic sparsity in the current epoch
        self.step_skipped = False  # the GradScaler skipped the last optimizer step

    # --- schedule -------------------------------------------------------------------------
    def target_k(self, step: int) -> float:
        if self.cyclic is not None:
            return self.cyclic.target_k(step)
        return cubic_sparsity(step, self.total_steps, self.config.sparsity,
                              self.config.prune_start, self.config.prune_end)

    def beta(self, step: int) -> float:
        """DyReLU phase-out weight before iteration ``step`` (1 -> 0 linearly)."""
        return dyrelu_beta(step, *self.dyrelu_steps)

    def before_step(self, step: int) -> None:
        """Thresholds (and DyReLU's beta) for iteration ``step``."""
        self.sparsifier.update(self.target_k(step))
        if self.config.dyrelu_phasing:
            set_dyrelu_beta(self.model, self.beta(step))

    def after_step(self, step: int) -> None:
        """Cyclic regrowth for the next iteration, with this step's fresh gradients.

        Not after a step the GradScaler skipped: its gradients hold inf/NaN (all of them once
        clipped), so a choice by |grad| would be arbitrary; that update then regrows nothing.
        """
        nxt = step + 1
        if self.cyclic is not None and self.cyclic.is_update(nxt) and not self.step_skipped:
            self.regrown += self.sparsifier.regrow(self.target_k(nxt),
                                                   self.cyclic.death_fraction(nxt))

    # --- checkpoints ----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                "config": self.config.to_dict(), "epoch": self.epoch,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "history": self.history}

    def load(self, path: Path) -> None:
        try:
            ckpt = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as exc:
            raise ConfigError(f"cannot read checkpoint {path}: {exc}") from exc
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError(f"{path} is not a {CHECKPOINT_FORMAT} file")
        if ckpt.get("version") != CHECKPOINT_VERSION:
            raise ConfigError(f"{path} has checkpoint version {ckpt.get('version')}")
        _check_resumable(ckpt["config"], self.config.to_dict())
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.history = int(ckpt["epoch"]), list(ckpt["history"])

    # --- one epoch ------------------------------------------------------------------------
    def train_epoch(self, progress) -> dict[str, float]:
        self.net.train()
        self.sampler.set_epoch(self.epoch)
        torch.manual_seed(self.config.seed * 100_003 + self.epoch)  # augmentation RNG
        loss_sum = correct = count = 0.0
        self.regrown = 0
        step = self.epoch * self.steps_per_epoch
        for images, labels in self.train_loader:
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            self.before_step(step)
            lr = cosine_lr(step, self.total_steps, self.config.lr, self.warmup_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            logits, loss = self._step(images, labels)
            self.after_step(step)
            self._check_step_loss(float(loss), step)
            loss_sum += float(loss) * labels.numel()
            correct += float((logits.argmax(1) == labels).sum())
            count += labels.numel()
            step += 1
            progress.update(1)
            if step % 10 == 0:
                progress.set_postfix(loss=f"{loss_sum / count:.3f}", acc=f"{correct / count:.3f}",
                                     k=f"{self.sparsifier.current_k:.3f}")
        # Same k once more, so evaluation sees the thresholds of the final weights.
        self.sparsifier.update(self.target_k(step - 1))
        if self.config.dyrelu_phasing:  # evaluate with the next step's beta (0 after the end)
            set_dyrelu_beta(self.model, self.beta(step))
        loss_sum, correct, count = _reduce([loss_sum, correct, count], self.device, self.ctx)
        return {"train_loss": loss_sum / count, "train_acc": correct / count, "lr": lr}

    def _check_step_loss(self, loss: float, step: int) -> None:
        """Stop at the first NaN/Inf loss instead of training on for the rest of the epoch.

        Not under DDP (a rank that stopped alone would leave the others waiting in all-reduce:
        the epoch-end check sees the reduced loss on every rank) nor AMP (the grad scaler skips
        a batch whose fp16 forward overflowed; only the weights tell whether the run is lost).
        """
        if math.isfinite(loss) or self.ctx.distributed or self.use_amp:
            return
        raise self.diverged(f"the training loss is {loss} at step "
                            f"{step % self.steps_per_epoch + 1}/{self.steps_per_epoch}")

    def diverged(self, what: str) -> TrainingDivergedError:
        config = self.config
        return TrainingDivergedError(
            f"training diverged: {what} of epoch {self.epoch + 1}; lower --lr ({config.lr:g}) or "
            f"--weight-decay ({config.weight_decay:g}). Nothing of this epoch was saved")

    def _step(self, images: torch.Tensor, labels: torch.Tensor):
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
            logits = self.net(images)
            loss = F.cross_entropy(logits.float(), labels,
                                   label_smoothing=self.config.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        scale = self.scaler.get_scale() if self.cyclic is not None else 0.0
        self.scaler.step(self.optimizer)
        self.scaler.update()
        # The scaler lowers its scale exactly when it skipped the step (inf/NaN gradients).
        self.step_skipped = self.cyclic is not None and self.scaler.get_scale() < scale
        return logits.detach(), loss.detach()


def epoch_divergence(model: nn.Module, train_loss: float, test_loss: float, *,
                     check_train_loss: bool) -> str | None:
    """What is non-finite after an epoch (None: all finite); checked before the checkpoint.

    ``check_train_loss`` is False under AMP, where a skipped overflowing batch may leave an
    infinite mean training loss behind healthy weights.
    """
    bad = non_finite_tensor(model)
    if bad is not None:
        return f"{bad} holds NaN or Inf at the end"
    if check_train_loss and not math.isfinite(train_loss):
        return f"the training loss is {train_loss} at the end"
    if not math.isfinite(test_loss):
        return f"the test loss is {test_loss} at the end"
    return None


def _cyclic_schedule(config: TrainConfig, total_steps: int) -> CyclicSchedule | None:
    if not config.cyclic_sparsity:
        return None
    return CyclicSchedule(total_steps, config.sparsity, config.cyclic_multiple,
                          config.cyclic_cycles, config.cyclic_period, config.prune_start,
                          config.prune_end, config.cyclic_end)


def _check_resumable(saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse to resume when a field changed; a field the saved config predates must be default."""
    defaults = TrainConfig().to_dict()
    changed = sorted(k for k in current
                     if k not in RESUMABLE_DIFFERENCES
                     and saved.get(k, defaults.get(k)) != current[k])
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        raise ConfigError(f"cannot resume: the config changed ({detail})")


def _prepare_run_dir(config: TrainConfig, resume: bool, overwrite: bool,
                     is_main: bool = True) -> Path | None:
    """Return the checkpoint to resume from (or None); refuse to clobber an existing run.

    A run stopped before its first checkpoint starts again, with or without --resume. Only
    the main process tidies up (the unfinished temp files of killed atomic writes).
    """
    run_dir = config.run_dir
    checkpoint = run_dir / "checkpoint.pt"
    if run_dir.exists() and not run_dir.is_dir():
        raise RunExistsError(f"run directory {run_dir} exists and is not a directory")
    if _stopped_before_first_checkpoint(run_dir):
        if is_main:
            print(f"note: run {run_dir} was stopped before its first checkpoint; starting it "
                  "again", file=sys.stderr)
            _remove_temp_files(run_dir)
        return None
    if resume:
        if not checkpoint.is_file():
            raise ConfigError(f"--resume: no checkpoint at {checkpoint}")
        if is_main:
            _remove_temp_files(run_dir)
        return checkpoint
    if run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
        raise RunExistsError(f"run directory {run_dir} is not empty; pass --resume to continue "
                             "it or --overwrite to start again")
    return None


def _temp_target(name: str) -> str | None:
    """The run file a leftover atomic-write temp file was meant to become, or None."""
    match = _ATOMIC_TEMP.fullmatch(name)
    return match["target"] if match and match["target"] in RUN_FILES else None


def _stopped_before_first_checkpoint(run_dir: Path) -> bool:
    """config.yaml, an empty metrics.jsonl, perhaps an unfinished checkpoint temp file: no more."""
    try:
        names = [entry.name for entry in run_dir.iterdir()]
    except OSError:  # no folder yet
        return False
    metrics = run_dir / "metrics.jsonl"
    return ("config.yaml" in names
            and all((_temp_target(n) or n) in BEFORE_FIRST_CHECKPOINT for n in names)
            and (not metrics.is_file() or metrics.stat().st_size == 0))


def _remove_temp_files(run_dir: Path) -> None:
    for entry in run_dir.iterdir():
        if _temp_target(entry.name) and entry.is_file():
            entry.unlink(missing_ok=True)


def _epoch_record(trainer: _Trainer, train_stats: dict[str, float], test_loss: float,
                  test_acc: float, seconds: float) -> dict[str, Any]:
    taus = list(trainer.sparsifier.thresholds().values())
    record = {"epoch": trainer.epoch, **train_stats, "test_loss": test_loss,
              "test_acc": test_acc, "sparsity": trainer.sparsifier.sparsity(),
              "target_k": trainer.sparsifier.current_k, "tau": max(taus), "tau_min": min(taus),
              "theta": trainer.sparsifier.config.resolved_theta, "seconds": seconds}
    if trainer.config.dyrelu_phasing:
        record["dyrelu_beta"] = trainer.beta(trainer.epoch * trainer.steps_per_epoch)
    if trainer.cyclic is not None:
        record["regrown"] = trainer.regrown
    return record


def _write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    path = run_dir / "metrics.jsonl"
    with _writing(path):
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in history))


def _write_checkpoint(trainer: _Trainer) -> None:
    path = trainer.config.run_dir / "checkpoint.pt"
    with _writing(path):
        atomic_torch_save(trainer.state(), path)


def _finish(trainer: _Trainer, seconds: float) -> TrainResult:
    """Finalize into a plain model, check it equals the wrapped one, write the outputs."""
    from featherdeploy.train.flops import sparsity_report

    config, run_dir = trainer.config, trainer.config.run_dir
    unique_zeros, unique_numel = trainer.sparsifier.counts()  # each shared tensor once
    model = finalize_east_model(trainer.sparsifier.finalize())
    # Materialized shared convs are separate layers now; compile packs every one of them.
    fqns = list(prunable_parameters(model, keep_first_conv_dense=config.keep_first_conv_dense))
    test_loss, test_acc = evaluate(model, trainer.test_loader, trainer.device, trainer.ctx)
    if not trainer.ctx.is_main:
        return TrainResult(run_dir, test_acc, test_loss, 0.0, config.epochs, seconds, model)
    info = trainer.info
    input_shape = (info.in_channels, info.image_size, info.image_size)
    cpu_model = model.to("cpu").eval()
    report = sparsity_report(cpu_model, input_shape, fqns)
    meta = ModelMeta(model_name=config.model, model_kwargs=config.model_kwargs,
                     input_shape=input_shape, num_classes=info.num_classes,
                     dataset=config.dataset, data_dir=config.data_dir, mean=tuple(info.mean),
                     std=tuple(info.std), prunable=fqns, config=config.to_dict())
    with _writing(run_dir / "model.pt"):
        save_model_artifact(run_dir / "model.pt", cpu_model, meta)
    with _writing(run_dir / "sparsity.json"):
        atomic_write_json(run_dir / "sparsity.json", report)
    totals = report["totals"]
    summary = {"test_acc": test_acc, "test_loss": test_loss, "sparsity": totals["sparsity"],
               "dense_macs": totals["dense_macs"], "sparse_macs": totals["sparse_macs"],
               "seconds": seconds, "epochs": config.epochs,
               "wrapped_test_acc": trainer.history[-1]["test_acc"],
               "unique_sparsity": unique_zeros / unique_numel, "unique_numel": unique_numel}
    with _writing(run_dir / "summary.json"):  # last: sweeps take it for a finished run
        atomic_write_json(run_dir / "summary.json", summary)
    return TrainResult(run_dir, test_acc, test_loss, totals["sparsity"], config.epochs, seconds,
                       cpu_model)


def run_training(config: TrainConfig, *, resume: bool = False, overwrite: bool = False,
                 on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train ``config`` to completion (or continue it) and write ``runs/NAME/``.

    ``on_epoch_end`` is called with each epoch's metrics record after the checkpoint is written
    (tests use it to simulate a run killed between epochs).
    """
    from tqdm import tqdm

    device = select_device(config.device, int(os.environ.get("LOCAL_RANK", 0)))
    ctx = _init_distributed(device)
    checkpoint = _prepare_run_dir(config, resume, overwrite, ctx.is_main)
    trainer = _Trainer(config, device, ctx)
    run_dir = config.run_dir
    if checkpoint is not None:
        trainer.load(checkpoint)
    if ctx.is_main:
        with _writing(run_dir / "config.yaml"):
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / "config.yaml", to_yaml(config))
        _write_history(run_dir, trainer.history)  # drop lines written after the checkpoint
    elapsed = sum(r["seconds"] for r in trainer.history)
    while trainer.epoch < config.epochs:
        start = time.perf_counter()
        with tqdm(total=trainer.steps_per_epoch, desc=f"epoch {trainer.epoch + 1}/{config.epochs}",
                  disable=not (config.progress and ctx.is_main), leave=True) as progress:
            train_stats = trainer.train_epoch(progress)
            test_loss, test_acc = evaluate(trainer.net, trainer.test_loader, device, ctx)
            progress.set_postfix(loss=f"{train_stats['train_loss']:.3f}",
                                 test_acc=f"{test_acc:.4f}",
                                 sparsity=f"{trainer.sparsifier.sparsity():.4f}")
        problem = epoch_divergence(trainer.model, train_stats["train_loss"], test_loss,
                                   check_train_loss=not trainer.use_amp)
        if problem is not None:  # every rank sees the same reduced losses and weights
            raise trainer.diverged(problem)
        seconds = time.perf_counter() - start
        elapsed += seconds
        trainer.epoch += 1
        record = _epoch_record(trainer, train_stats, test_loss, test_acc, seconds)
        trainer.history.append(record)
        if ctx.is_main:
            _write_checkpoint(trainer)
            _write_history(run_dir, trainer.history)
        if on_epoch_end is not None:
            on_epoch_end(record)
    result = _finish(trainer, elapsed)
    if ctx.distributed:
        dist.barrier()
    return result
