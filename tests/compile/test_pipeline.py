"""The compile pipeline end to end: artifacts, report, MAC totals, atomicity, bad input, CLI."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from featherdeploy.compile.__main__ import main
from featherdeploy.compile.errors import CompileError
from featherdeploy.compile.pipeline import (
    CompileOptions,
    EvalData,
    compile_model,
    compile_run,
    options_from_mapping,
)
from featherdeploy.compile.pipeline import _make_work_dir as make_work_dir
from featherdeploy.runtime.formats import FORMAT_NAME, FORMAT_VERSION, read_pack
from featherdeploy.train.artifact import ModelMeta, save_model_artifact
from featherdeploy.train.flops import sparsity_report
from featherdeploy.train.models import build_model
from featherdeploy.train.prunable import prunable_parameters
from tests.compile.helpers import TinyNet, randomize_batchnorm_, sparsify_

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
ARTIFACT_FILES = {"model.onnx", "model.sparse.onnx", "weights.fdpack", "report.json", "report.md"}
QUICK = CompileOptions(verify_images=8)


def tiny_model(sparsity: float = 0.95, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_batchnorm_(sparsify_(TinyNet(), sparsity, seed=seed), seed=seed).eval()


def leftovers(directory: Path) -> list[str]:
    """Temporary or renamed-away directories the pipeline must never leave behind."""
    return [p.name for p in directory.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_compile_model_writes_artifacts_and_report(tmp_path: Path) -> None:
    model = tiny_model()
    out = tmp_path / "art"
    report = compile_model(model, (1, 12, 12), out, QUICK).report
    assert {p.name for p in out.iterdir()} == ARTIFACT_FILES
    assert json.loads((out / "report.json").read_text()) == report
    assert "| `conv1.weight` | Conv |" in (out / "report.md").read_text()
    fqns = list(prunable_parameters(model))
    assert [row["fqn"] for row in report["layers"]] == fqns
    assert set(report["initializer_map"]) == set(fqns)
    for row, (fqn, weight) in zip(report["layers"], prunable_parameters(model).items(),
                                  strict=True):
        assert row["fqn"] == fqn and row["weight_shape"] == list(weight.shape)
        assert row["nnz"] == int(torch.count_nonzero(weight))
        assert row["dense_bytes"] == 4 * weight.numel()
        assert set(row["packed_bytes"]) == {"csr", "bsr_1x4", "bsr_4x1", "bsr_4x4"}
    files = report["files"]["bytes"]
    assert files == {name: (out / name).stat().st_size
                     for name in ("model.onnx", "model.sparse.onnx", "weights.fdpack")}
    assert report["files"]["sparse_onnx_ratio"] == files["model.sparse.onnx"] / files["model.onnx"]
    assert report["options"]["block_shapes"] == ["1x1", "1x4", "4x1", "4x4"]
    assert report["pack"] == {"file": "weights.fdpack", "format": FORMAT_NAME,
                              "version": FORMAT_VERSION, "conv_layout": "OIHW",
                              "block_shapes": ["1x1", "1x4", "4x1", "4x4"]}
    assert report["accuracy"] is None  # no labelled data given
    assert [(a["candidate"], a["reference"], a["ok"])
            for a in report["verification"]["agreements"]] == [
        ("model.onnx", "torch", True), ("model.sparse.onnx", "torch", True),
        ("model.sparse.onnx", "model.onnx", True)]
    assert report["verification"]["pack_layers_rebuilt_exactly"] == len(fqns)
    assert leftovers(tmp_path) == []


class TwinConvs(nn.Module):
    """Two convs with equal weight shapes: when both are all zeros the exporter shares them."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 2, 3, padding=1)
        self.b = nn.Conv2d(2, 2, 3, padding=1)
        self.fc = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.b(torch.relu(self.a(x)))).mean(dim=(2, 3)))


@pytest.mark.parametrize("sparsity", [0.0, 1.0])
def test_dense_and_fully_sparse_models_compile(tmp_path: Path, sparsity: float) -> None:
    torch.manual_seed(0)
    model = sparsify_(TwinConvs(), sparsity).eval()
    report = compile_model(model, (2, 6, 6), tmp_path / "art", QUICK).report
    assert report["totals"]["prunable_sparsity"] == sparsity
    pack = read_pack(tmp_path / "art" / "weights.fdpack")
    for fqn, layer in pack.items():
        assert np.array_equal(layer.to_weight(), model.get_parameter(fqn).detach().numpy())
    assert report["totals"]["sparse_macs"] == (0 if sparsity == 1.0 else
                                               report["totals"]["dense_macs"])


def test_report_macs_equal_training_sparsity_report(tmp_path: Path) -> None:
    model = build_model("resnet20", in_channels=1, num_classes=10, image_size=28)
    model = sparsify_(model, 0.9, seed=3).eval()
    fqns = list(prunable_parameters(model))
    expected = sparsity_report(model, (1, 28, 28), fqns)
    report = compile_model(model, (1, 28, 28), tmp_path / "art", QUICK).report
    assert report["totals"]["dense_macs"] == expected["all_layers_dense_macs"]
    assert report["totals"]["sparse_macs"] == expected["all_layers_sparse_macs"]
    assert report["totals"]["prunable_sparse_macs"] == expected["totals"]["sparse_macs"]
    assert report["totals"]["prunable_nnz"] == expected["totals"]["nnz"]
    for row in report["layers"]:
        assert row["dense_macs"] == expected["layers"][row["fqn"]]["dense_macs"]
        assert row["sparse_macs"] == expected["layers"][row["fqn"]]["sparse_macs"]


def test_sizes_at_95_percent(tmp_path: Path) -> None:
    model = build_model("resnet20", in_channels=3, num_classes=10, image_size=32, width=2)
    model = sparsify_(model, 0.95, seed=4).eval()
    report = compile_model(model, (3, 32, 32), tmp_path / "art", QUICK).report
    assert report["files"]["sparse_onnx_ratio"] <= 0.15
    for row in report["layers"]:
        assert row["packed_bytes"]["csr"] <= 0.11 * row["dense_bytes"], row["fqn"]


def test_accuracy_is_measured_with_onnx_runtime_on_all_test_images(tmp_path: Path) -> None:
    model = tiny_model(0.5)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((300, 1, 12, 12)).astype(np.float32)
    with torch.no_grad():
        torch_predictions = model(torch.from_numpy(images)).argmax(1).numpy()
    labels = np.where(np.arange(300) % 3 == 0, torch_predictions, (torch_predictions + 1) % 10)
    data = EvalData(images[:8], "given", images, labels.astype(np.int64))
    report = compile_model(model, (1, 12, 12), tmp_path / "art", QUICK, data=data).report
    assert report["accuracy"]["images"] == 300
    assert report["accuracy"]["top1"] == pytest.approx(100 / 300, abs=1e-12)


def test_existing_artifacts_are_replaced_and_survive_a_failed_compile(tmp_path: Path) -> None:
    out = tmp_path / "art"
    compile_model(tiny_model(seed=1), (1, 12, 12), out, QUICK)
    first = (out / "weights.fdpack").read_bytes()
    compile_model(tiny_model(seed=2), (1, 12, 12), out, QUICK)
    second = (out / "weights.fdpack").read_bytes()
    assert second != first
    broken = tiny_model(seed=3)
    with torch.no_grad():
        broken.pw.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(CompileError, match=r"pw\.weight holds NaN or Inf"):
        compile_model(broken, (1, 12, 12), out, QUICK)
    assert (out / "weights.fdpack").read_bytes() == second
    assert leftovers(tmp_path) == []


class GridSampler(nn.Module):
    """grid_sample exists in ONNX only from opset 16: the exporter refuses it at opset 13."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = torch.zeros(x.shape[0], 2, 2, 2)
        return nn.functional.grid_sample(self.conv(x), grid, align_corners=False).flatten(1)


def test_unexportable_model_gives_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CompileError, match="exporter cannot handle.*grid_sampler"):
        compile_model(GridSampler(), (1, 8, 8), tmp_path / "art", QUICK)
    assert list(tmp_path.iterdir()) == []


class SignFlip(nn.Module):
    """A data-dependent branch: tracing bakes in one branch, so ONNX disagrees with torch."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x.flatten(1))
        return y if float(x.sum()) > 0 else -y


def test_disagreeing_outputs_fail_the_compile(tmp_path: Path) -> None:
    inputs = np.ones((4, 1, 2, 2), dtype=np.float32)  # export traced zeros: the other branch
    with pytest.raises(CompileError, match="verification failed"):
        compile_model(SignFlip(), (1, 2, 2), tmp_path / "art", QUICK,
                      data=EvalData(inputs, "given"))
    assert list(tmp_path.iterdir()) == []


def test_plain_model_verifies_on_given_inputs_file(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.ones((3, 1, 12, 12), dtype=np.float32))
    options = CompileOptions(inputs=str(tmp_path / "x.npy"))
    report = compile_model(tiny_model(), (1, 12, 12), tmp_path / "art", options).report
    assert report["verification"]["images"] == 3
    assert report["verification"]["source"] == str(tmp_path / "x.npy")


def test_bad_arguments_are_compile_errors(tmp_path: Path) -> None:
    with pytest.raises(CompileError, match="input_shape"):
        compile_model(tiny_model(), (12, 12), tmp_path / "a", QUICK)
    with pytest.raises(CompileError, match="not the weight of a Conv2d/Linear"):
        compile_model(tiny_model(), (1, 12, 12), tmp_path / "a", QUICK, prunable=["bn1.weight"])
    with pytest.raises(CompileError, match="opset"):
        CompileOptions(opset=11)
    (tmp_path / "file").write_text("x")
    with pytest.raises(CompileError, match="not a directory"):
        compile_model(tiny_model(), (1, 12, 12), tmp_path / "file", QUICK)


# ----------------------------------------------------------------------------- runs and CLI


def make_run(run_dir: Path, sparsity: float = 0.9, dataset: str = "fashion-mnist",
             data_dir: Path = FMNIST_DIR) -> nn.Module:
    """A run directory as the training stage writes it (model.pt, config.yaml, sparsity.json)."""
    torch.manual_seed(0)
    model = build_model("resnet20", in_channels=1, num_classes=10, image_size=28)
    model = randomize_batchnorm_(sparsify_(model, sparsity, seed=5), seed=6).eval()
    fqns = list(prunable_parameters(model))
    meta = ModelMeta(model_name="resnet20", model_kwargs={"width": 1}, input_shape=(1, 28, 28),
                     num_classes=10, dataset=dataset, data_dir=str(data_dir),
                     mean=(0.2860,), std=(0.3530,), prunable=fqns, config={"seed": 0})
    run_dir.mkdir(parents=True)
    save_model_artifact(run_dir / "model.pt", model, meta)
    (run_dir / "config.yaml").write_text("seed: 0\n")
    (run_dir / "sparsity.json").write_text(
        json.dumps(sparsity_report(model, (1, 28, 28), fqns)))
    return model


@pytest.mark.slow
def test_compile_run_on_fashion_mnist_via_cli(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert FMNIST_DIR.is_dir(), "Fashion-MNIST must be installed (make dataset)"
    make_run(tmp_path / "run")
    out = tmp_path / "artifacts" / "demo"
    code = main([str(tmp_path / "run"), "--out", str(out), "--verify-images", "16",
                 "--block-shapes", "1x1,4x1", "--batch-size", "500"])
    assert code == 0
    assert "verification passed on 16 images" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["accuracy"]["images"] == 10000
    assert 0.0 <= report["accuracy"]["top1"] <= 1.0
    assert report["verification"]["source"] == "fashion-mnist test set"
    assert report["training_sparsity_check"]["matches"] is True
    assert report["config"] == {"seed": 0}
    assert (out / "config.yaml").read_text() == "seed: 0\n"
    assert sorted(next(iter(read_pack(out / "weights.fdpack").values())).encodings) == \
        [(1, 1), (4, 1)]


def test_compile_run_with_given_inputs_and_no_accuracy(tmp_path: Path) -> None:
    model = make_run(tmp_path / "run")
    inputs = np.random.default_rng(1).standard_normal((5, 1, 28, 28)).astype(np.float32)
    np.save(tmp_path / "inputs.npy", inputs)
    options = CompileOptions(inputs=str(tmp_path / "inputs.npy"), accuracy=False)
    report = compile_run(tmp_path / "run" / "model.pt", tmp_path / "art", options).report
    assert report["verification"]["images"] == 5 and report["accuracy"] is None
    assert report["model"]["name"] == "resnet20"
    assert report["totals"]["prunable_nnz"] == sum(
        int(torch.count_nonzero(w)) for w in prunable_parameters(model).values())


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "art")
    code, err = run_cli([str(tmp_path / "missing"), "--out", out], capsys)
    assert code == 2 and "no model.pt" in err and err.count("\n") == 1
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "model.pt").write_bytes(b"not a checkpoint")
    code, err = run_cli([str(tmp_path / "corrupt"), "--out", out], capsys)
    assert code == 2 and "cannot load" in err and err.count("\n") == 1
    make_run(tmp_path / "run")
    code, err = run_cli([str(tmp_path / "run"), "--out", out, "--block-shapes", "4"], capsys)
    assert code == 2 and "bad block shape" in err
    np.save(tmp_path / "wrong.npy", np.zeros((2, 3, 28, 28), dtype=np.float32))
    code, err = run_cli([str(tmp_path / "run"), "--out", out, "--no-accuracy", "--inputs",
                         str(tmp_path / "wrong.npy")], capsys)
    assert code == 2 and "expected inputs of shape (N, 1, 28, 28)" in err
    make_run(tmp_path / "cifar_run", dataset="cifar10", data_dir=tmp_path / "nowhere")
    code, err = run_cli([str(tmp_path / "cifar_run"), "--out", out], capsys)
    assert code == 2 and "cannot load the cifar10 test set" in err
    code, err = run_cli([str(tmp_path / "run"), "--out", str(tmp_path)], capsys)
    assert code == 2 and "contains the run being compiled" in err
    assert (tmp_path / "run" / "model.pt").is_file()
    (tmp_path / "run" / "sparsity.json").write_text("{not json")
    code, err = run_cli([str(tmp_path / "run"), "--out", out], capsys)
    assert code == 2 and "corrupt run directory" in err
    assert not (tmp_path / "art").exists() and leftovers(tmp_path) == []


class ShapeBranch(nn.Module):
    """conv -> BN with a shape-dependent branch: torch.fx cannot trace it, jit tracing can."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        if x.shape[-1] > 4:  # fx: "symbolically traced variables cannot be used in control flow"
            y = y * 2.0
        return self.fc(y.mean(dim=(2, 3)))


def test_untraceable_model_falls_back_to_exporter_folding(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = randomize_batchnorm_(sparsify_(ShapeBranch(), 0.5, seed=1), seed=2).eval()
    report = compile_model(model, (1, 6, 6), tmp_path / "art", QUICK).report
    assert report["onnx"]["bn_folding"]["method"] == "none"
    assert "BatchNormalization" not in report["onnx"]["op_types"]  # the exporter folded it
    pack = read_pack(tmp_path / "art" / "weights.fdpack")
    conv_zeros = model.conv.weight.detach().numpy() == 0
    assert np.array_equal(pack["conv.weight"].to_weight() == 0, conv_zeros)
    assert pack["conv.weight"].onnx_initializer == report["initializer_map"]["conv.weight"]


def test_options_from_mapping() -> None:
    options = options_from_mapping({"block_shapes": ["4x1", [1, 4]], "layout": "OHWI"})
    assert options.block_shapes == ((4, 1), (1, 4)) and options.layout == "OHWI"
    assert options_from_mapping({"block_shapes": "2x2"}).block_shapes == ((2, 2),)
    with pytest.raises(CompileError, match="unknown compile option"):
        options_from_mapping({"blocks": "1x4"})
    with pytest.raises(CompileError, match="layout"):
        options_from_mapping({"layout": "NHWC"})


def test_cli_reads_yaml_config_and_flags_override_it(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    make_run(tmp_path / "run")
    np.save(tmp_path / "inputs.npy",
            np.random.default_rng(2).standard_normal((3, 1, 28, 28)).astype(np.float32))
    (tmp_path / "compile.yaml").write_text(
        f"inputs: {tmp_path / 'inputs.npy'}\naccuracy: false\nlayout: OHWI\n"
        "block_shapes: [1x4]\nopset: 13\n")
    out = tmp_path / "art"
    code = main([str(tmp_path / "run"), "--out", str(out), "--config",
                 str(tmp_path / "compile.yaml"), "--opset", "14"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["options"]["opset"] == 14 and report["options"]["layout"] == "OHWI"
    pack = read_pack(out / "weights.fdpack")
    conv = pack["layer1.0.conv1.weight"]
    assert conv.layout == "OHWI" and sorted(conv.encodings) == [(1, 1), (1, 4)]
    assert pack["fc.weight"].layout == "OI"
    (tmp_path / "bad.yaml").write_text("- not a mapping\n")
    assert main([str(tmp_path / "run"), "--out", str(out), "--config",
                 str(tmp_path / "bad.yaml")]) == 2


@pytest.mark.parametrize("values, message", [
    ({"batch_size": 2.5}, r"batch_size must be an integer, got 2.5"),
    ({"batch_size": True}, r"batch_size must be an integer, got True"),
    ({"verify_images": "8"}, r"verify_images must be an integer, got '8'"),
    ({"opset": 13.0}, r"opset must be an integer"),
    ({"accuracy": 1}, r"accuracy must be true or false"),
    ({"inputs": 5}, r"inputs must be a string or null"),
    ({"seed": -1}, r"seed must be >= 0"),
    ({"block_shapes": 4}, r"block_shapes .* 4 .*quote"),
    ({"block_shapes": ["1x4", 4]}, r"block_shapes .* 4 .*quote"),
    ({"block_shapes": [[1, 4.5]]}, r"block shape"),
])
def test_option_types_are_checked(values: dict, message: str) -> None:
    with pytest.raises(CompileError, match=message):
        options_from_mapping(values)


def test_yaml_hex_block_shape_is_a_clear_cli_error(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    make_run(tmp_path / "run")
    for text in ("block_shapes: 0x4\n", "block_shapes: [1x4, 0x4]\n", "batch_size: 2.5\n"):
        (tmp_path / "c.yaml").write_text(text)
        code, err = run_cli([str(tmp_path / "run"), "--out", str(tmp_path / "art"), "--config",
                             str(tmp_path / "c.yaml"), "--no-accuracy"], capsys)
        assert code == 2 and err.startswith("compile: error: ") and err.count("\n") == 1, err
        assert "0x4" in err or "batch_size" in err, err
    assert not (tmp_path / "art").exists()


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_disk_full_and_bad_out_paths_are_one_line_and_keep_old_artifacts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    make_run(tmp_path / "run")
    out = tmp_path / "art"
    args = [str(tmp_path / "run"), "--no-accuracy", "--verify-images", "4"]
    assert main([*args, "--out", str(out)]) == 0
    before = _snapshot(out)

    def disk_full(directory: Path, report: object) -> None:
        (directory / "report.json").write_text("{")  # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with monkeypatch.context() as patch:
        patch.setattr("featherdeploy.compile.pipeline.write_report_files", disk_full)
        code, err = run_cli([*args, "--out", str(out)], capsys)
    assert code == 2 and "No space left on device" in err and err.count("\n") == 1, err
    assert _snapshot(out) == before and leftovers(tmp_path) == []
    for bad_out in ("/dev/null", str(tmp_path / "run" / "config.yaml"),
                    str(tmp_path / "run" / "config.yaml" / "art")):
        code, err = run_cli([*args, "--out", bad_out], capsys)
        assert code == 2 and err.startswith("compile: error: ") and err.count("\n") == 1, err
    assert (tmp_path / "run" / "config.yaml").read_text() == "seed: 0\n"


def _killed_compile_work_dir(out: Path) -> Path:
    """The work folder of a compile of ``out`` SIGKILLed mid-way (a real, now dead, pid)."""
    code = ("import os, signal, sys; from pathlib import Path; "
            "from featherdeploy.compile.pipeline import _make_work_dir; "
            "print(_make_work_dir(Path(sys.argv[1])), flush=True); "
            "os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[2], timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    work = Path(proc.stdout.strip())
    (work / "model.onnx").write_bytes(b"half")
    return work


def test_a_killed_compiles_work_dir_is_removed_by_the_next_compile(tmp_path: Path) -> None:
    out = tmp_path / "art"
    stale = _killed_compile_work_dir(out)
    assert stale.is_dir() and stale.name.startswith("art.tmp-")
    other_output = _killed_compile_work_dir(tmp_path / "other")  # another output's: not ours
    foreign = tmp_path / "art.tmp-notours"  # no pid: cannot prove it is stale
    foreign.mkdir()
    live = make_work_dir(out)  # this (live) process's: a compile still running
    # Killed between renaming the old artifacts away and installing the new ones: while `art`
    # does not exist this folder is the only copy of the last artifacts and must stay.
    stale_old = tmp_path / stale.name.replace(".tmp-", ".old-")
    stale_old.mkdir()
    compile_model(tiny_model(), (1, 12, 12), out, QUICK)
    assert not stale.exists() and stale_old.is_dir()
    assert other_output.is_dir() and foreign.is_dir() and live.is_dir()
    assert {p.name for p in out.iterdir()} == ARTIFACT_FILES
    compile_model(tiny_model(), (1, 12, 12), out, QUICK)
    assert not stale_old.exists() and live.is_dir()


def test_empty_data_dir_is_an_error_not_the_system_dataset(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_run(tmp_path / "run")  # trained on the system Fashion-MNIST
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = run_cli([str(tmp_path / "run"), "--out", str(tmp_path / "art"), "--data-dir",
                         str(empty), "--no-accuracy", "--verify-images", "4"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "Fashion-MNIST not found" in err and f"in {empty}, {empty}/FashionMNIST/raw;" in err
    assert not (tmp_path / "art").exists()


def test_an_unexpected_os_error_is_still_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    def unreadable(*args: object) -> None:  # e.g. a run folder another user made unreadable
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path / "run"))
    monkeypatch.setattr("featherdeploy.compile.pipeline.compile_run", unreadable)
    code, err = run_cli([str(tmp_path / "run"), "--out", str(tmp_path / "art")], capsys)
    assert code == 2 and err.startswith("compile: error: ") and "Permission denied" in err
    assert err.count("\n") == 1
