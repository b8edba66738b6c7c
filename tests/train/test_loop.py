"""The training loop end to end on synthetic data: outputs, exact resume, bad input, DDP."""

import errno
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from featherdeploy.train.__main__ import main as train_main
from featherdeploy.train.artifact import (
    ArtifactError,
    ModelMeta,
    load_model_artifact,
    save_model_artifact,
)
from featherdeploy.train.config import ConfigError, resolve_config
from featherdeploy.train.loop import RunExistsError, RunWriteError, epoch_divergence, run_training

REPO = Path(__file__).resolve().parents[2]
TINY = {"dataset": "synthetic", "model": "resnet20", "batch_size": 64, "progress": False,
        "device": "cpu", "seed": 3}


def _config(runs_dir: Path, name: str, **extra):
    return resolve_config(None, {**TINY, "name": name, "runs_dir": str(runs_dir), **extra})


class _Killed(Exception):
    pass


def _kill_after(epoch: int):
    def callback(record):
        if record["epoch"] == epoch:
            raise _Killed
    return callback


def test_end_to_end_run_reaches_target_sparsity(tmp_path):
    result = run_training(_config(tmp_path, "e2e", epochs=3, sparsity=0.9))
    run = tmp_path / "e2e"
    for name in ("config.yaml", "checkpoint.pt", "model.pt", "metrics.jsonl", "sparsity.json",
                 "summary.json"):
        assert (run / name).is_file(), name
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    assert {"train_loss", "train_acc", "test_loss", "test_acc", "sparsity", "tau", "theta", "lr",
            "seconds"} <= set(lines[-1])
    assert lines[-1]["sparsity"] == pytest.approx(0.9, abs=1e-5)
    report = json.loads((run / "sparsity.json").read_text())
    assert report["totals"]["sparsity"] >= 0.9 - 1e-5
    assert report["totals"]["sparse_macs"] < report["totals"]["dense_macs"]
    model, meta = load_model_artifact(run / "model.pt")
    weights = [model.get_parameter(f) for f in meta.prunable]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == report["totals"]["numel"] - report["totals"]["nnz"]
    summary = json.loads((run / "summary.json").read_text())
    # The finalized plain model scores exactly what the wrapped model scored.
    assert summary["test_acc"] == summary["wrapped_test_acc"] == result.test_acc
    assert result.test_acc > 0.4  # 4 classes: chance is 0.25
    assert yaml.safe_load((run / "config.yaml").read_text())["sparsity"] == 0.9


def test_resume_after_kill_gives_identical_weights(tmp_path):
    run_training(_config(tmp_path, "whole", epochs=3, sparsity=0.8))
    with pytest.raises(_Killed):
        run_training(_config(tmp_path, "killed", epochs=3, sparsity=0.8),
                     on_epoch_end=_kill_after(1))
    assert not (tmp_path / "killed" / "model.pt").exists()
    run_training(_config(tmp_path, "killed", epochs=3, sparsity=0.8), resume=True)
    whole = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)["state_dict"]
    resumed = torch.load(tmp_path / "killed" / "model.pt", weights_only=True)["state_dict"]
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key
    lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_missing_dataset_exits_2_with_howto(tmp_path, capsys):
    code = train_main(["--name", "x", "--runs-dir", str(tmp_path), "--dataset", "cifar10",
                       "--data-dir", str(tmp_path / "nothing-here"), "--epochs", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "cifar" in err.lower() and "error:" in err


@pytest.mark.parametrize("flags, message", [
    (["--sparsity", "1.5"], "sparsity"),
    (["--backbone", "nope"], "backbone"),
    (["--model", "nope", "--dataset", "synthetic"], "nope"),
])
def test_bad_values_exit_2(tmp_path, capsys, flags, message):
    code = train_main(["--name", "x", "--runs-dir", str(tmp_path), "--epochs", "1",
                       "--dataset", "synthetic", *flags])
    assert code == 2
    assert message in capsys.readouterr().err


def test_unknown_yaml_key_and_existing_run(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochz: 3\n")
    assert train_main(["--config", str(bad), "--name", "x", "--runs-dir", str(tmp_path)]) == 2
    assert "epochz" in capsys.readouterr().err
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "checkpoint.pt").write_bytes(b"junk")
    args = ["--name", "x", "--runs-dir", str(tmp_path), "--dataset", "synthetic", "--epochs", "1"]
    assert train_main(args) == 2
    assert "--resume" in capsys.readouterr().err
    assert train_main([*args, "--resume"]) == 2  # corrupt checkpoint: clear error
    assert "checkpoint" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_ddp_run_agrees_before_the_broadcast_on_disjoint_shards(tmp_path):
    """Two gloo processes on CPU. Fails if (a) the ranks computed different thresholds before
    rank 0's broadcast (it would hide that), (b) their training shards overlap or miss images,
    or (c) their final models differ."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(REPO / "tests" / "train" / "ddp_worker.py"), str(tmp_path / "runs"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads((tmp_path / f"record_rank{r}.json").read_text()) for r in (0, 1)]

    # (a) Thresholds: one broadcast per update on both ranks; what each rank computed on its own
    # equals what rank 0 sent, and the model then holds exactly that.
    steps = 2 * 5  # 2 epochs of 320 images / 64 per batch (32 per rank)
    updates = steps + 2  # every step plus the one after each epoch
    for rank, record in enumerate(records):
        assert len(record["broadcasts"]) == len(record["thresholds"]) == updates, rank
    for call, (mine, theirs) in enumerate(zip(records[0]["broadcasts"], records[1]["broadcasts"],
                                               strict=True)):
        assert mine["before"] == theirs["before"], f"ranks disagree before broadcast {call}"
        assert mine["after"] == theirs["after"] == mine["before"], call
    for record in records:
        assert [b["after"] for b in record["broadcasts"]] == record["thresholds"]
    assert max(records[0]["thresholds"][-1]) > 0

    # (b) Data: per epoch, disjoint shards of 160 images that together cover the 320.
    for epoch in range(2):
        shards = [record["indices"][epoch] for record in records]
        assert all(len(shard) == len(set(shard)) == 160 for shard in shards), epoch
        assert not set(shards[0]) & set(shards[1]), f"shards overlap in epoch {epoch}"
        assert set(shards[0]) | set(shards[1]) == set(range(320))
    assert records[0]["indices"][0] != records[0]["indices"][1]  # reshuffled per epoch

    # (c) Final models: identical weights and BatchNorm buffers on both ranks.
    finals = [torch.load(tmp_path / f"final_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert finals[0].keys() == finals[1].keys()
    differing = [key for key in finals[0] if not torch.equal(finals[0][key], finals[1][key])]
    assert not differing, f"final models differ in {differing}"

    run = tmp_path / "runs" / "ddp"
    assert (run / "model.pt").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["sparsity"] >= 0.9 - 1e-5


def test_diverging_run_exits_2_and_writes_no_model(tmp_path, capsys):
    code = train_main(["--name", "nan", "--runs-dir", str(tmp_path), "--dataset", "synthetic",
                       "--epochs", "2", "--lr", "1e30", "--no-progress", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: training diverged") and err.count("\n") == 1, err
    assert "lr" in err
    left = sorted(p.name for p in (tmp_path / "nan").iterdir())
    assert left == ["config.yaml", "metrics.jsonl"]  # no checkpoint, model or summary of NaNs


def test_epoch_end_check_catches_non_finite_weights_and_losses():
    model = torch.nn.Linear(2, 2)
    assert epoch_divergence(model, 0.5, 0.7, check_train_loss=True) is None
    assert "test loss is inf" in epoch_divergence(model, 0.5, math.inf, check_train_loss=True)
    assert "training loss is nan" in epoch_divergence(model, math.nan, 0.7, check_train_loss=True)
    # Under AMP an overflowing batch is skipped by the grad scaler: only the weights count.
    assert epoch_divergence(model, math.nan, 0.7, check_train_loss=False) is None
    with torch.no_grad():
        model.bias[1] = math.nan
    assert "bias holds NaN or Inf" in epoch_divergence(model, 0.5, 0.7, check_train_loss=True)


def test_model_artifact_refuses_non_finite_weights(tmp_path):
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = math.inf
    meta = ModelMeta(model_name="x", model_kwargs={}, input_shape=(1, 1, 2), num_classes=2,
                     dataset="synthetic", data_dir=None, mean=(0.0,), std=(1.0,),
                     prunable=["weight"])
    with pytest.raises(ArtifactError, match="weight holds NaN or Inf"):
        save_model_artifact(tmp_path / "model.pt", model, meta)
    assert list(tmp_path.iterdir()) == []


def _disk_full_after(monkeypatch, flag: dict):
    """Every fsync fails with ENOSPC once ``flag["full"]`` is set (the atomic writer's fsync)."""
    real_fsync = os.fsync

    def fsync(fd):
        if flag["full"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)
    monkeypatch.setattr(os, "fsync", fsync)


def test_disk_full_mid_run_is_one_error_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    flag, saved = {"full": False}, {}
    _disk_full_after(monkeypatch, flag)

    def fill_disk(record):
        saved["checkpoint"] = (tmp_path / "full" / "checkpoint.pt").read_bytes()
        saved["metrics"] = (tmp_path / "full" / "metrics.jsonl").read_bytes()
        flag["full"] = True
    with pytest.raises(RunWriteError, match=r"cannot write .*checkpoint.pt: No space left"):
        run_training(_config(tmp_path, "full", epochs=2), on_epoch_end=fill_disk)
    run = tmp_path / "full"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "config.yaml",
                                                     "metrics.jsonl"]  # no temp files
    assert (run / "checkpoint.pt").read_bytes() == saved["checkpoint"]
    assert (run / "metrics.jsonl").read_bytes() == saved["metrics"]


def test_cli_environment_errors_exit_2_with_one_line(tmp_path, monkeypatch, capsys):
    base = ["--dataset", "synthetic", "--epochs", "1", "--no-progress", "--device", "cpu"]
    (tmp_path / "file").write_text("not a folder")
    code = train_main(["--name", "x", "--runs-dir", str(tmp_path / "file"), *base])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: cannot write") and err.count("\n") == 1, err
    assert "Not a directory" in err
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "taken").write_text("a file where the run folder goes")
    code = train_main(["--name", "taken", "--runs-dir", str(tmp_path / "runs"), *base])
    err = capsys.readouterr().err
    assert code == 2 and "is not a directory" in err and err.count("\n") == 1, err

    def no_permission(self, *args, **kwargs):  # the tests may run as root, who may write anywhere
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
    with monkeypatch.context() as patch:
        patch.setattr(Path, "mkdir", no_permission)
        code = train_main(["--name", "x", "--runs-dir", str(tmp_path / "ro"), *base])
    err = capsys.readouterr().err
    assert code == 2 and "Permission denied" in err and err.count("\n") == 1, err
    _disk_full_after(monkeypatch, {"full": True})
    code = train_main(["--name", "x", "--runs-dir", str(tmp_path / "runs"), *base])
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err and err.count("\n") == 1, err
    assert list((tmp_path / "runs" / "x").iterdir()) == []  # nothing half-written


def test_empty_data_dir_is_an_error_not_the_system_dataset(tmp_path, monkeypatch, capsys):
    import torchvision.datasets

    def offline(root, **kwargs):
        raise OSError("offline")
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    empty = tmp_path / "empty"
    empty.mkdir()
    code = train_main(["--name", "x", "--runs-dir", str(tmp_path / "runs"), "--data-dir",
                       str(empty), "--epochs", "1", "--batch-size", "32", "--limit-train", "32",
                       "--limit-test", "32", "--no-progress", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: Fashion-MNIST not found: looked for ") and str(empty) in err
    assert not (tmp_path / "runs" / "x").exists()


SHORT = {"epochs": 1, "limit_train": 128, "limit_test": 64}  # two steps per epoch


def _killed_in_first_epoch(runs_dir: Path, name: str, monkeypatch) -> Path:
    """A run SIGKILLed before its first checkpoint: config.yaml, an empty metrics.jsonl and the
    temp file of a checkpoint write that never finished."""
    def killed(*args, **kwargs):
        raise _Killed
    with monkeypatch.context() as patch:
        patch.setattr("featherdeploy.train.loop.evaluate", killed)
        with pytest.raises(_Killed):
            run_training(_config(runs_dir, name, **SHORT))
    run = runs_dir / name
    (run / ".checkpoint.pt.k1ll3d00.tmp").write_bytes(b"half a checkpoint")
    return run


@pytest.mark.parametrize("resume", [False, True])
def test_run_killed_before_its_first_checkpoint_starts_again(tmp_path, monkeypatch, capsys,
                                                             resume):
    run = _killed_in_first_epoch(tmp_path, "early", monkeypatch)
    assert sorted(p.name for p in run.iterdir()) == [".checkpoint.pt.k1ll3d00.tmp",
                                                     "config.yaml", "metrics.jsonl"]
    capsys.readouterr()
    run_training(_config(tmp_path, "early", **SHORT), resume=resume)
    assert "stopped before its first checkpoint; starting it again" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoint.pt", "config.yaml", "metrics.jsonl", "model.pt", "sparsity.json",
        "summary.json"]


def test_a_folder_with_other_files_is_never_taken_for_an_incomplete_run(tmp_path, monkeypatch):
    run = _killed_in_first_epoch(tmp_path, "mine", monkeypatch)
    (run / "notes.txt").write_text("the user's")
    with pytest.raises(RunExistsError, match="not empty"):
        run_training(_config(tmp_path, "mine", **SHORT))
    with pytest.raises(ConfigError, match="no checkpoint"):
        run_training(_config(tmp_path, "mine", **SHORT), resume=True)
    assert (run / "notes.txt").read_text() == "the user's"


def test_a_moved_and_renamed_run_folder_resumes(tmp_path):
    with pytest.raises(_Killed):
        run_training(_config(tmp_path / "runs", "orig", **{**SHORT, "epochs": 2}),
                     on_epoch_end=_kill_after(1))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "runs" / "orig").rename(tmp_path / "elsewhere" / "renamed")
    run_training(_config(tmp_path / "elsewhere", "renamed", **{**SHORT, "epochs": 2}),
                 resume=True)
    run = tmp_path / "elsewhere" / "renamed"
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]  # continued, not restarted
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["name"], saved["runs_dir"]) == ("renamed", str(tmp_path / "elsewhere"))
    assert (run / "model.pt").is_file() and not (tmp_path / "runs" / "orig").exists()


def test_an_unexpected_os_error_is_still_one_line(tmp_path, monkeypatch, capsys):
    def unreadable(*args, **kwargs):  # e.g. a dataset file another user made unreadable
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path / "data"))
    monkeypatch.setattr("featherdeploy.train.loop.run_training", unreadable)
    code = train_main(["--name", "x", "--runs-dir", str(tmp_path), "--dataset", "synthetic"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Permission denied" in err
    assert err.count("\n") == 1
