"""Output agreement between the torch model, ORT on ``model.onnx`` and ORT on ``model.sparse.onnx``.

Criterion (the compile contract): elementwise ``|a - b| <= ATOL + RTOL * |b|`` with ``b`` the
reference, and the same top-1 class on every image. Accuracy is measured with ONNX Runtime on
the dense ONNX, batched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from featherdeploy.compile.errors import CompileError
from featherdeploy.compile.onnx_export import INPUT_NAME
from featherdeploy.runtime.formats import PackFormatError, read_pack

__all__ = ["ATOL", "RTOL", "Agreement", "ort_session", "run_ort", "run_torch", "compare",
           "verify_agreement", "ort_accuracy", "verify_pack"]

ATOL = 1e-4
RTOL = 1e-4


@dataclass(frozen=True)
class Agreement:
    """How closely ``candidate`` matches ``reference`` on the verification images."""

    candidate: str
    reference: str
    images: int
    max_abs_diff: float
    max_excess: float  # max of |a-b| - (ATOL + RTOL|b|); <= 0 means within tolerance
    top1_mismatches: int

    @property
    def ok(self) -> bool:
        """Within tolerance everywhere and identical top-1 everywhere."""
        return self.max_excess <= 0 and self.top1_mismatches == 0

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form for report.json."""
        return {**asdict(self), "ok": self.ok}


def ort_session(model: bytes | str, threads: int | None = None) -> ort.InferenceSession:
    """A CPU ONNX Runtime session from a file path or serialized model."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph types
        where = model if isinstance(model, str) else "the model"
        raise CompileError(f"ONNX Runtime cannot load {where}: {exc}") from exc


def run_ort(session: ort.InferenceSession, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits for ``images`` (N, C, H, W) float32, run in batches."""
    try:
        chunks = [session.run(None, {INPUT_NAME: images[i:i + batch_size]})[0]
                  for i in range(0, len(images), batch_size)]
    except Exception as exc:  # onnxruntime's Fail / InvalidArgument / RuntimeException
        raise CompileError(f"ONNX Runtime failed to run the model: {exc}") from exc
    return np.concatenate(chunks)


def run_torch(model: nn.Module, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits of the eval-mode torch model, batched, as float32 numpy."""
    model.eval()
    chunks = []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            chunks.append(model(torch.from_numpy(images[i:i + batch_size])).float().numpy())
    return np.concatenate(chunks)


def compare(candidate_name: str, candidate: np.ndarray, reference_name: str,
            reference: np.ndarray) -> Agreement:
    """Tolerance and top-1 agreement of two (N, classes) logit arrays."""
    if candidate.shape != reference.shape:
        raise CompileError(f"{candidate_name} output shape {candidate.shape} != "
                           f"{reference_name} output shape {reference.shape}")
    diff = np.abs(candidate.astype(np.float64) - reference.astype(np.float64))
    excess = diff - (ATOL + RTOL * np.abs(reference.astype(np.float64)))
    mismatches = int((candidate.argmax(axis=1) != reference.argmax(axis=1)).sum())
    return Agreement(candidate_name, reference_name, int(len(reference)),
                     float(diff.max(initial=0.0)), float(excess.max(initial=-ATOL)), mismatches)


def verify_agreement(outputs: dict[str, np.ndarray], reference: str) -> list[Agreement]:
    """Compare every output with ``outputs[reference]``; raises :class:`CompileError` on failure."""
    if any(not np.isfinite(out).all() for out in outputs.values()):
        raise CompileError("verification failed: an output holds NaN or Inf")
    results = [compare(name, out, reference, outputs[reference])
               for name, out in outputs.items() if name != reference]
    failed = [r for r in results if not r.ok]
    if failed:
        details = "; ".join(f"{r.candidate} vs {r.reference}: max |diff| {r.max_abs_diff:.3g}, "
                            f"{r.top1_mismatches}/{r.images} top-1 mismatches" for r in failed)
        raise CompileError(f"verification failed (tolerance {ATOL} + {RTOL}*|ref|, identical "
                           f"top-1 required): {details}")
    return results


def ort_accuracy(session: ort.InferenceSession, images: np.ndarray, labels: np.ndarray,
                 batch_size: int) -> float:
    """Top-1 accuracy (fraction) of the session's logits on ``images``."""
    if len(images) == 0:
        raise CompileError("accuracy needs at least one test image")
    predictions = run_ort(session, images, batch_size).argmax(axis=1)
    return float((predictions == labels).mean())


def verify_pack(path: str, expected: Mapping[str, np.ndarray]) -> int:
    """Re-read the written pack and check every layer's CSR rebuilds its ONNX weight exactly.

    ``expected`` maps weight FQN -> the initializer array in ``model.onnx``. Returns the number
    of layers checked; raises :class:`CompileError` on any difference, so the engine can trust
    that ``read_pack`` gives the weights ONNX Runtime ran.
    """
    try:
        layers = read_pack(path)
    except PackFormatError as exc:
        raise CompileError(f"the written pack does not read back: {exc}") from exc
    if list(layers) != list(expected):
        raise CompileError(f"pack layers {list(layers)} != expected {list(expected)}")
    for fqn, weight in expected.items():
        if not np.array_equal(layers[fqn].to_weight(), weight):
            raise CompileError(f"pack layer {fqn} does not rebuild its ONNX weight exactly")
    return len(layers)
