"""``report.json`` / ``report.md``: per-layer sparsity, MACs and bytes, totals, files, checks.

MACs follow docs/algorithms.md section 6 through ``runtime/macs.py`` (Conv2d and Linear only; sparse
MACs = dense MACs * nnz / numel), with output sizes taken from one forward pass of the model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from featherdeploy.runtime.formats import PackedLayer
from featherdeploy.runtime.macs import conv_macs, linear_macs, sparse_macs

__all__ = ["REPORT_FORMAT", "REPORT_VERSION", "LayerRow", "dense_layer_macs", "layer_rows",
           "totals", "write_report"]

REPORT_FORMAT = "featherdeploy.compile-report"
REPORT_VERSION = 1


@dataclass(frozen=True)
class LayerRow:
    """One Conv2d / Linear layer of the report."""

    fqn: str
    op: str
    weight_shape: tuple[int, ...]
    prunable: bool
    onnx_initializer: str | None
    nnz: int
    numel: int
    dense_macs: int
    packed_bytes: dict[str, int]  # "csr", "bsr_1x4", ... (prunable layers only)

    @property
    def sparsity(self) -> float:
        """Fraction of exact zeros."""
        return 1.0 - self.nnz / self.numel

    @property
    def sparse_macs(self) -> int:
        """Dense MACs scaled by density (runtime.macs.sparse_macs)."""
        return sparse_macs(self.dense_macs, self.nnz, self.numel)

    @property
    def dense_bytes(self) -> int:
        """fp32 bytes of the dense weight."""
        return 4 * self.numel

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form for report.json."""
        return {"fqn": self.fqn, "op": self.op, "weight_shape": list(self.weight_shape),
                "prunable": self.prunable, "onnx_initializer": self.onnx_initializer,
                "nnz": self.nnz, "numel": self.numel, "sparsity": self.sparsity,
                "dense_macs": self.dense_macs, "sparse_macs": self.sparse_macs,
                "dense_bytes": self.dense_bytes, "packed_bytes": self.packed_bytes}


def dense_layer_macs(model: nn.Module, example: torch.Tensor
                     ) -> tuple[dict[str, int], torch.Tensor]:
    """Weight FQN -> dense MACs per image of every Conv2d / Linear, and the model's output.

    Measured with forward hooks during one eval-mode pass over ``example`` (N, C, H, W); the
    output is returned so the pass can double as the first batch of the torch reference (on
    ResNet-50 a separate pass would cost seconds).
    """
    macs: dict[str, int] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            handles.append(module.register_forward_hook(_mac_hook(f"{name}.weight", macs)))
    try:
        with torch.inference_mode():
            output = model.eval()(example)
    finally:
        for handle in handles:
            handle.remove()
    return macs, output


def _mac_hook(fqn: str, macs: dict[str, int]):
    def hook(module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            count = conv_macs(module.out_channels, module.in_channels, module.groups, kh, kw,
                              output.shape[-2], output.shape[-1])
        else:  # Linear: once per output row (1 for (N, features) inputs)
            rows = output[0].numel() // module.out_features
            count = linear_macs(module.out_features, module.in_features) * rows
        macs[fqn] = macs.get(fqn, 0) + count  # a module called twice does twice the work
    return hook


def layer_rows(model: nn.Module, dense_macs: Mapping[str, int],
               packed: Mapping[str, PackedLayer]) -> list[LayerRow]:
    """Report rows for every Conv2d / Linear of the (folded) model, in registration order."""
    rows = []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        fqn = f"{name}.weight"
        layer = packed.get(fqn)
        weight = module.weight.detach().numpy()
        packed_bytes = ({_encoding_key(shape): enc.nbytes
                         for shape, enc in layer.encodings.items()} if layer else {})
        rows.append(LayerRow(
            fqn=fqn, op="Conv" if isinstance(module, nn.Conv2d) else "Gemm",
            weight_shape=tuple(weight.shape), prunable=layer is not None,
            onnx_initializer=layer.onnx_initializer if layer else None,
            nnz=layer.nnz if layer else int(np.count_nonzero(weight)), numel=int(weight.size),
            dense_macs=int(dense_macs.get(fqn, 0)), packed_bytes=packed_bytes))
    return rows


def _encoding_key(shape: tuple[int, int]) -> str:
    return "csr" if shape == (1, 1) else f"bsr_{shape[0]}x{shape[1]}"


def totals(rows: list[LayerRow]) -> dict[str, Any]:
    """Sums over all layers (MACs) and over prunable layers (sparsity, bytes)."""
    prunable = [r for r in rows if r.prunable]
    numel = sum(r.numel for r in prunable)
    nnz = sum(r.nnz for r in prunable)
    dense_bytes = sum(r.dense_bytes for r in prunable)
    keys = sorted({key for r in prunable for key in r.packed_bytes})
    packed = {key: sum(r.packed_bytes.get(key, 0) for r in prunable) for key in keys}
    return {"layers": len(rows), "prunable_layers": len(prunable),
            "dense_macs": sum(r.dense_macs for r in rows),
            "sparse_macs": sum(r.sparse_macs for r in rows),
            "prunable_dense_macs": sum(r.dense_macs for r in prunable),
            "prunable_sparse_macs": sum(r.sparse_macs for r in prunable),
            "prunable_numel": numel, "prunable_nnz": nnz,
            "prunable_sparsity": 1.0 - nnz / numel if numel else 0.0,
            "prunable_dense_bytes": dense_bytes, "prunable_packed_bytes": packed,
            "packed_fraction_of_dense": {k: v / dense_bytes for k, v in packed.items()}
            if dense_bytes else {}}


def write_report(directory: Path, report: Mapping[str, Any]) -> None:
    """Write report.json and report.md into ``directory`` (the compile's temp dir)."""
    (directory / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (directory / "report.md").write_text(render_markdown(report))


def render_markdown(report: Mapping[str, Any]) -> str:
    """Human-readable summary of ``report`` (the JSON is the source of truth)."""
    tot, files = report["totals"], report["files"]
    lines = [f"# Compile report: {report['model']['name']}", "",
             f"- input `{report['onnx']['input_name']}` {report['onnx']['input_shape']}, output "
             f"`{report['onnx']['output_name']}`, opset {report['onnx']['opset']}, "
             f"IR version {report['onnx']['ir_version']}",
             f"- dense MACs {tot['dense_macs']:,}, sparse MACs {tot['sparse_macs']:,} "
             f"(FLOPs ~ 2 x MACs)",
             f"- prunable sparsity {tot['prunable_sparsity']:.4f} "
             f"({tot['prunable_nnz']:,} / {tot['prunable_numel']:,} nonzero)",
             *[f"- `{name}`: {size:,} bytes" for name, size in files["bytes"].items()],
             f"- model.sparse.onnx / model.onnx = {files['sparse_onnx_ratio']:.4f}",
             "- packed / dense fp32 bytes (prunable layers): " + ", ".join(
                 f"{key} {value:.4f}" for key, value in tot["packed_fraction_of_dense"].items()),
             *_training_check_lines(report), ""]
    lines += _verification_lines(report)
    lines += ["", "| layer | op | weight shape | nnz | sparsity | dense MACs | sparse MACs | "
              "dense bytes | CSR bytes |", "|---|---|---|---|---|---|---|---|---|"]
    for row in report["layers"]:
        csr = row["packed_bytes"].get("csr", "-")
        lines.append(f"| `{row['fqn']}` | {row['op']} | {row['weight_shape']} | {row['nnz']:,} |"
                     f" {row['sparsity']:.4f} | {row['dense_macs']:,} | {row['sparse_macs']:,} |"
                     f" {row['dense_bytes']:,} | {csr if isinstance(csr, str) else f'{csr:,}'} |")
    lines += ["", "Options: `" + json.dumps(report["options"]) + "`", ""]
    return "\n".join(lines)


def _training_check_lines(report: Mapping[str, Any]) -> list[str]:
    check = report.get("training_sparsity_check")
    if not check:
        return []
    verdict = "match" if check["matches"] else "DIFFER (BN folding zeroed weights?)"
    return [f"- MAC totals vs the run's sparsity.json: {verdict}"]


def _verification_lines(report: Mapping[str, Any]) -> list[str]:
    verification = report["verification"]
    lines = [f"Verification on {verification['images']} images "
             f"({verification['source']}), tolerance {verification['atol']} + "
             f"{verification['rtol']}*|ref|:"]
    for item in verification["agreements"]:
        lines.append(f"- {item['candidate']} vs {item['reference']}: max |diff| "
                     f"{item['max_abs_diff']:.3g}, top-1 mismatches {item['top1_mismatches']}")
    accuracy = report.get("accuracy")
    if accuracy:
        lines.append(f"- test accuracy (ORT, model.onnx, {accuracy['images']} images): "
                     f"{accuracy['top1']:.4f}")
    return lines
