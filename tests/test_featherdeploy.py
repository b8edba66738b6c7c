"""The ``featherdeploy`` package from a checkout (stage folders mapped under it) and its command
(featherdeploy/cli.py). The installed wheel is checked by tools/wheel_check.sh (`make test`)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

import featherdeploy
from featherdeploy.cli import COMMANDS, main
from tests.runtime.onnx_cases import assert_close, graph_model, ort_run, random_input, save_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def conv_model(tmp_path: Path) -> Path:
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    w[np.abs(w) < 0.8] = 0.0  # sparse, as the engine's real inputs
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    return save_model(graph_model(nodes, ["n", 3, 6, 6], {"w": w}), tmp_path / "conv.onnx")


@pytest.mark.parametrize("stage", ["train", "compile", "runtime"])
def test_stages_resolve_to_the_checkout_folders(stage: str) -> None:
    import importlib

    module = importlib.import_module(f"featherdeploy.{stage}")
    assert Path(module.__file__).resolve() == REPO / stage / "__init__.py"
    assert featherdeploy.__version__


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("train", "compile", "run", "describe", "bench"))
    assert set(COMMANDS) == {"train", "compile", "run", "describe", "bench"}


@pytest.mark.parametrize("argv", [["nonsense"], [], ["--threads", "2"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: featherdeploy") and "error:" in err


def test_stage_help_is_the_stage_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:  # argparse's --help, inside the stage CLI
        main(["compile", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: featherdeploy compile") and "--block-shapes" in out


def test_run_and_describe_reach_the_runtime(conv_model: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    x = random_input((2, 3, 6, 6))
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(conv_model), "--input", str(tmp_path / "x.npy"),
                 "--output", str(tmp_path / "y.npy"), "--threads", "1"]) == 0
    assert_close(np.load(tmp_path / "y.npy"), ort_run(conv_model, x))
    assert main(["describe", str(conv_model), "--backend", "native"]) == 0
    assert "| Conv | native |" in capsys.readouterr().out
    assert main(["run", str(tmp_path / "missing.onnx"), "--input", str(tmp_path / "x.npy"),
                 "--output", str(tmp_path / "z.npy")]) == 2


def test_bench_never_imports_torch(conv_model: Path) -> None:
    """`featherdeploy bench` and `describe` in a process where importing torch raises."""
    script = textwrap.dedent(f"""
        import sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is forbidden here")
                return None
        sys.meta_path.insert(0, NoTorch())
        from featherdeploy.cli import main
        assert main(["bench", {str(conv_model)!r}, "--batch", "1", "--threads", "1",
                     "--rounds", "1", "--warmup", "0", "--no-memory"]) == 0
        assert main(["describe", {str(conv_model)!r}]) == 0
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "ok"


def test_python_m_featherdeploy(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "featherdeploy", "run", str(tmp_path / "no.onnx"),
                           "--input", "x.npy", "--output", str(tmp_path / "y.npy")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
