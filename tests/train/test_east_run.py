"""A short synthetic run with every EAST option: exact target sparsity, an ordinary finalized
model (plain build_model state_dict, no DyReLU / shared convs) whose ONNX matches torch."""

import io
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from featherdeploy.train.artifact import load_model_artifact
from featherdeploy.train.config import resolve_config
from featherdeploy.train.east.erk import pruned_count
from featherdeploy.train.loop import run_training
from featherdeploy.train.models import build_model
from featherdeploy.train.sparsify import FeatherSparsifier, SparsityConfig

ONNX_ATOL = 1e-4
ONNX_RTOL = 1e-4
# What an ordinary ResNet-20 exports to; DyReLU would add Sigmoid/Max/ReduceMean/Mul nodes and an
# unmaterialized shared conv a Mul.
ORDINARY_OPS = {"Conv", "Relu", "Add", "BatchNormalization", "GlobalAveragePool", "Flatten",
                "Gemm", "Reshape", "Constant", "Identity"}
SHARED_CONVS = [f"layer{s}.2.conv{c}.weight" for s in (1, 2, 3) for c in (1, 2)]
TARGET = 0.995
EAST = {"init": "erk", "dyrelu_phasing": True, "weight_sharing": True, "cyclic_sparsity": True,
        "cyclic_period": 1}


def _config(runs_dir, name, **extra):
    return resolve_config(None, {"dataset": "synthetic", "model": "resnet20", "batch_size": 64,
                                 "progress": False, "device": "cpu", "seed": 1,
                                 "limit_train": 256, "limit_test": 128, "epochs": 4,
                                 "sparsity": TARGET, "name": name, "runs_dir": str(runs_dir),
                                 **EAST, **extra})


def _onnx_outputs(model: nn.Module, x: torch.Tensor) -> tuple[onnx.ModelProto, np.ndarray]:
    buffer = io.BytesIO()
    torch.onnx.export(model.eval(), x, buffer, dynamo=False, opset_version=13)
    graph = onnx.load_from_string(buffer.getvalue())
    graph.ir_version = 8
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    return graph, output


@pytest.fixture(scope="module")
def east_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    result = run_training(_config(runs, "east"))
    return runs / "east", result


def test_unique_weights_keep_the_unshared_models_nonzeros(east_run):
    run, result = east_run
    model, meta = load_model_artifact(run / "model.pt")  # strict load into a plain build_model
    unique = [fqn for fqn in meta.prunable if fqn not in SHARED_CONVS]
    assert len(meta.prunable) == len(unique) + len(SHARED_CONVS)  # copies are packed too
    weights = [model.get_parameter(fqn) for fqn in unique]
    numel = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    # The unique weights keep the nonzeros of the unshared model at the target (EAST's
    # adjusted density), not the target's share of the unique weights.
    full = sum(model.get_parameter(fqn).numel() for fqn in meta.prunable)
    assert numel - zeros == full - pruned_count(full, TARGET)
    assert numel - zeros > numel - pruned_count(numel, TARGET)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["unique_numel"] == numel
    assert summary["unique_sparsity"] == zeros / numel
    assert summary["test_acc"] == summary["wrapped_test_acc"] == result.test_acc
    # Materialized copies: same mask as their source, one scalar apart.
    for fqn in SHARED_CONVS:
        copy = model.get_parameter(fqn)
        source = model.get_parameter(fqn.replace(".2.", ".1."))
        assert torch.equal(copy == 0, source == 0)
        ratio = copy[source != 0] / source[source != 0]
        assert torch.allclose(ratio, ratio[0].expand_as(ratio))


def test_run_records_phasing_and_cycles(east_run):
    run, _ = east_run
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["dyrelu_beta"] for r in records] == [1.0, 0.0, 0.0, 0.0]  # E/4 = 1, 3E/8 = 1.5
    assert sum(r["regrown"] for r in records) > 0
    assert records[-1]["target_k"] == TARGET
    saved = (run / "config.yaml").read_text()
    for line in ("init: erk", "dyrelu_phasing: true", "weight_sharing: true",
                 "cyclic_sparsity: true", "dyrelu_start: 1.0", "dyrelu_end: 1.5"):
        assert line in saved


def test_finalized_model_is_ordinary_and_onnx_matches_torch(east_run):
    run, _ = east_run
    model, meta = load_model_artifact(run / "model.pt")
    torch.manual_seed(0)
    plain = build_model("resnet20", in_channels=1, num_classes=4, image_size=12)
    assert list(model.state_dict()) == list(plain.state_dict())
    assert {type(m) for m in model.modules() if "relu" in type(m).__name__.lower()} == {nn.ReLU}
    x = torch.randn(5, *meta.input_shape)
    graph, onnx_out = _onnx_outputs(model, x)
    ops = {node.op_type for node in graph.graph.node}
    assert ops <= ORDINARY_OPS, ops - ORDINARY_OPS
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(onnx_out, expected, rtol=ONNX_RTOL, atol=ONNX_ATOL)


def test_east_run_resumes_exactly(tmp_path):
    # 2 epochs of 4 steps; cycles over steps 2..5, so regrowth for step 4 happens after the
    # last step of epoch 1, before its checkpoint is written.
    schedule = {"epochs": 2, "prune_end": 0.25, "cyclic_end": 0.75}
    run_training(_config(tmp_path, "whole", **schedule))
    first = json.loads((tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["regrown"] > 0

    def kill_after_first(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(_config(tmp_path, "killed", **schedule), on_epoch_end=kill_after_first)
    run_training(_config(tmp_path, "killed", **schedule), resume=True)
    whole = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)["state_dict"]
    resumed = torch.load(tmp_path / "killed" / "model.pt", weights_only=True)["state_dict"]
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key


class _SkippingScaler:
    """A GradScaler stand-in that reports every step as skipped (an overflow under AMP).

    It never steps the optimizer and halves its scale on every update, as torch's GradScaler
    does when it finds inf/NaN gradients. The gradients stay finite, so only the skip report
    can tell the loop not to regrow.
    """

    def __init__(self, *args, **kwargs):
        self._scale = 65536.0

    def scale(self, loss):
        return loss

    def unscale_(self, optimizer):
        pass

    def step(self, optimizer):
        pass

    def update(self):
        self._scale /= 2

    def get_scale(self):
        return self._scale

    def state_dict(self):
        return {"scale": self._scale}

    def load_state_dict(self, state):
        self._scale = state["scale"]


def test_no_regrowth_after_a_step_the_grad_scaler_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.amp, "GradScaler", _SkippingScaler)
    schedule = {"epochs": 2, "prune_end": 0.25, "cyclic_end": 0.75}
    run_training(_config(tmp_path, "skipped", **schedule))
    records = [json.loads(line)
               for line in (tmp_path / "skipped" / "metrics.jsonl").read_text().splitlines()]
    assert [r["regrown"] for r in records] == [0, 0]


def test_sparsifier_regrows_nothing_from_non_finite_gradients():
    torch.manual_seed(0)
    model = build_model("resnet20", in_channels=1, num_classes=4, image_size=12)
    sparsifier = FeatherSparsifier(model, SparsityConfig(target=0.99, allocation="erk"))
    sparsifier.update(0.99)
    torch.nn.functional.cross_entropy(model(torch.randn(8, 1, 12, 12)),
                                      torch.randint(0, 4, (8,))).backward()
    latents = sparsifier.latent_weights()
    latents["layer2.0.conv1.weight"].grad[0, 0, 0, 0] = float("nan")
    before = {fqn: w.detach().clone() for fqn, w in latents.items()}
    assert sparsifier.regrow(0.97, death_fraction=0.3) == 0
    assert all(torch.equal(before[fqn], w) for fqn, w in latents.items())
