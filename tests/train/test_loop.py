"""The training loop end to end on synthetic data: outputs, exact resume, bad input, DDP."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from train.__main__ import main as train_main
from train.artifact import load_model_artifact
from train.config import resolve_config
from train.loop import run_training

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
