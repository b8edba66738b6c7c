"""The compile pipeline: a trained run (or a plain torch model with zeros) -> artifacts/NAME/.

Steps: check weights are finite -> fold BN (``fold.py``) -> export the dense ONNX
(``onnx_export.py``) -> map weight FQNs to ONNX initializers -> sparse-initializer ONNX
(``sparse_onnx.py``) -> CSR/BSR pack (``pack.py``) -> verify torch == ORT dense == ORT sparse
(``verify.py``) -> ORT test accuracy -> report (``report.py``). Everything is written into a
temporary sibling directory that replaces ``out_dir`` only once every check has passed, so a
failed compile leaves the previous artifacts untouched. Contract: docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from featherdeploy.compile.errors import CompileError
from featherdeploy.compile.fold import FoldResult, fold_batchnorms
from featherdeploy.compile.onnx_export import (
    INPUT_NAME,
    OUTPUT_NAME,
    export_onnx,
    map_weights_to_initializers,
    save_onnx,
    weight_initializers,
)
from featherdeploy.compile.pack import (
    DEFAULT_BLOCK_SHAPES,
    LayerSource,
    build_pack_layers,
    parse_block_shapes,
    write_weights_pack,
)
from featherdeploy.compile.report import (
    REPORT_FORMAT,
    REPORT_VERSION,
    dense_layer_macs,
    layer_rows,
    totals,
)
from featherdeploy.compile.report import write_report as write_report_files
from featherdeploy.compile.run_inputs import (
    EvalData,
    load_artifact,
    load_inputs,
    model_pt_path,
    read_sparsity_json,
    run_eval_data,
)
from featherdeploy.compile.sparse_onnx import with_sparse_initializers
from featherdeploy.compile.verify import (
    ATOL,
    RTOL,
    ort_accuracy,
    ort_session,
    run_ort,
    run_torch,
    verify_agreement,
    verify_pack,
)
from featherdeploy.runtime.formats import FORMAT_NAME, FORMAT_VERSION
from featherdeploy.train.artifact import non_finite_tensor
from featherdeploy.train.config import type_problem

__all__ = ["CompileError", "CompileOptions", "CompileResult", "EvalData", "compile_run",
           "options_from_mapping",
           "compile_model", "DENSE_ONNX", "SPARSE_ONNX", "PACK_FILE"]

DENSE_ONNX = "model.onnx"
SPARSE_ONNX = "model.sparse.onnx"
PACK_FILE = "weights.fdpack"


@dataclass(frozen=True)
class CompileOptions:
    """Everything that changes what compile writes (CLI flags fill this in)."""

    opset: int = 13
    ir_version: int = 8
    block_shapes: tuple[tuple[int, int], ...] = DEFAULT_BLOCK_SHAPES
    verify_images: int = 32
    accuracy: bool = True
    batch_size: int = 32
    data_dir: str | None = None  # overrides the run's data_dir
    inputs: str | None = None  # .npy float32 (N, C, H, W) used for verification instead
    seed: int = 0  # random verification inputs when a plain model has no data
    layout: str = "OIHW"  # conv matrix column order in the pack: OIHW (in,kh,kw) or OHWI

    def __post_init__(self) -> None:
        problem = type_problem(self)  # first: the checks below compare numbers
        if problem is not None:
            raise CompileError(problem)
        if self.layout not in ("OIHW", "OHWI"):
            raise CompileError(f"layout must be OIHW or OHWI, got {self.layout!r}")
        if self.opset < 13:
            raise CompileError(f"opset must be >= 13, got {self.opset}")
        if self.ir_version < 7:
            raise CompileError(f"ir_version must be >= 7 (opset 13 needs IR 7), got "
                               f"{self.ir_version}")
        if self.verify_images < 1 or self.batch_size < 1:
            raise CompileError("verify_images and batch_size must be positive")
        if self.seed < 0:
            raise CompileError(f"seed must be >= 0, got {self.seed}")
        if not self.block_shapes or min(min(shape) for shape in self.block_shapes) < 1:
            raise CompileError(f"block_shapes must be RxC with positive ints, got "
                               f"{self.block_shapes}")


def options_from_mapping(values: Mapping[str, Any]) -> CompileOptions:
    """CompileOptions from a YAML/JSON-style mapping; ``block_shapes`` may be ``"1x1,4x1"`` or a
    list of ``"RxC"`` strings. Unknown keys and wrong types raise :class:`CompileError`."""
    known = {f.name for f in dataclasses.fields(CompileOptions)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise CompileError(f"unknown compile option(s) {unknown}; valid: {sorted(known)}")
    resolved = dict(values)
    if "block_shapes" in resolved:
        resolved["block_shapes"] = _block_shapes(resolved["block_shapes"])
    try:
        return CompileOptions(**resolved)
    except TypeError as exc:  # e.g. a string where a number belongs
        raise CompileError(f"bad compile options {dict(values)}: {exc}") from exc


def _block_shapes(value: Any) -> tuple[tuple[int, int], ...]:
    """``"1x1,4x1"`` or a list of ``"RxC"`` / ``[R, C]`` items -> ((R, C), ...)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    texts = []
    for item in items:
        if isinstance(item, (list, tuple)) and len(item) == 2:
            item = "x".join(map(str, item))
        if not isinstance(item, str):  # YAML turns unquoted 0x4 (hex) or 1:30 (base 60) to ints
            raise CompileError(
                f"block_shapes must be text like \"1x4,4x1\" or a list of \"RxC\", got "
                f"{item!r} (YAML reads an unquoted 0x4 as the hex number 4): quote the shapes")
        texts.append(item)
    return parse_block_shapes(",".join(texts))


@dataclass
class CompileResult:
    """Where the artifacts went and the report written there."""

    out_dir: Path
    report: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- runs


def compile_run(run: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                options: CompileOptions | None = None) -> CompileResult:
    """Compile a training run directory (or its ``model.pt``) into ``out_dir``."""
    options = options or CompileOptions()
    model_pt = model_pt_path(Path(run))
    if model_pt.resolve().is_relative_to(Path(out_dir).resolve()):
        raise CompileError(f"--out {out_dir} contains the run being compiled; replacing it would "
                           f"delete {model_pt}")
    model, meta = load_artifact(model_pt)
    data = run_eval_data(meta, options)
    run_dir = model_pt.parent
    return compile_model(model, tuple(meta.input_shape), out_dir, options,
                         prunable=meta.prunable, data=data, name=meta.model_name,
                         training_sparsity=read_sparsity_json(run_dir / "sparsity.json"),
                         run_config=meta.config, source={
                             "run_dir": str(run_dir), "model_pt": str(model_pt),
                             "dataset": meta.dataset, "model_kwargs": meta.model_kwargs},
                         extra_files=[run_dir / "config.yaml", run_dir / "sparsity.json"])


# ----------------------------------------------------------------------------- models


def compile_model(model: nn.Module, input_shape: Sequence[int], out_dir: str | os.PathLike[str],
                  options: CompileOptions | None = None, *, prunable: Sequence[str] | None = None,
                  data: EvalData | None = None, name: str = "model",
                  run_config: dict[str, Any] | None = None, source: dict[str, Any] | None = None,
                  extra_files: Sequence[Path] = (),
                  training_sparsity: dict[str, Any] | None = None) -> CompileResult:
    """Compile a plain torch model whose pruned weights are exact zeros.

    ``prunable`` defaults to ``train.prunable.prunable_parameters(model)``; ``data`` defaults to
    ``options.inputs`` or else ``options.verify_images`` seeded N(0, 1) inputs (no accuracy).
    ``training_sparsity`` (the run's ``sparsity.json``) is cross-checked against the report's
    MAC totals. Raises :class:`CompileError`.
    """
    options = options or CompileOptions()
    shape = _check_input_shape(input_shape)
    model = model.eval()
    _check_finite(model)
    fqns = _check_prunable(model, prunable)
    data = data or _default_eval_data(shape, options)
    out = Path(out_dir)
    try:
        work = _make_work_dir(out)
    except OSError as exc:
        raise CompileError(f"cannot create the output directory next to {out}: {exc}") from exc
    try:
        report = _build_artifacts(model, shape, fqns, data, options, work)
        report.update(model={"name": name, "input_shape": list(shape)},
                      source=source or {"kind": "torch model"}, config=run_config or {},
                      training_sparsity_check=_mac_check(report["totals"], training_sparsity))
        _copy_existing(extra_files, work)
        write_report_files(work, report)
        _install(work, out)
    except OSError as exc:  # disk full, permissions: bad environment, still one clear line
        shutil.rmtree(work, ignore_errors=True)
        raise CompileError(f"cannot write artifacts to {out}: {exc}") from exc
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return CompileResult(out, report)


def _mac_check(report_totals: dict[str, Any], training: dict[str, Any] | None
               ) -> dict[str, Any] | None:
    """Compare MAC totals with the training stage's sparsity.json (None when there is none)."""
    if training is None:
        return None
    pairs = {"dense_macs": (report_totals["dense_macs"], training.get("all_layers_dense_macs")),
             "sparse_macs": (report_totals["sparse_macs"],
                             training.get("all_layers_sparse_macs")),
             "prunable_sparse_macs": (report_totals["prunable_sparse_macs"],
                                      training.get("totals", {}).get("sparse_macs"))}
    return {"compared": {key: {"compile": a, "training": b} for key, (a, b) in pairs.items()},
            "matches": all(a == b for a, b in pairs.values())}


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise CompileError(f"input_shape must be (C, H, W) positive ints, got {input_shape!r}")
    return shape  # type: ignore[return-value]


def _check_finite(model: nn.Module) -> None:
    bad = non_finite_tensor(model)
    if bad is not None:
        raise CompileError(f"{bad} holds NaN or Inf; refusing to compile")


def _check_prunable(model: nn.Module, prunable: Sequence[str] | None) -> list[str]:
    if prunable is None:
        from featherdeploy.train.prunable import prunable_parameters

        return list(prunable_parameters(model))
    modules = dict(model.named_modules())
    for fqn in prunable:
        module = modules.get(fqn.removesuffix(".weight"))
        if not fqn.endswith(".weight") or not isinstance(module, (nn.Conv2d, nn.Linear)):
            raise CompileError(f"prunable weight {fqn!r} is not the weight of a Conv2d/Linear")
    return list(prunable)


def _default_eval_data(shape: tuple[int, int, int], options: CompileOptions) -> EvalData:
    """``options.inputs`` if given, else ``verify_images`` seeded N(0, 1) images."""
    if options.inputs:
        return EvalData(load_inputs(options.inputs, shape), options.inputs)
    rng = np.random.default_rng(options.seed)
    images = rng.standard_normal((options.verify_images, *shape)).astype(np.float32)
    return EvalData(images, f"N(0,1) random inputs, seed {options.seed}")


def _make_work_dir(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise CompileError(f"output path {out} exists and is not a directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_siblings(out)
    work = Path(tempfile.mkdtemp(prefix=_sibling_prefix(out, "tmp"), dir=out.parent))
    work.chmod(0o755)  # mkdtemp creates 0700; artifacts are meant to be shared
    return work


def _sibling_prefix(out: Path, kind: str) -> str:
    """``NAME.tmp-HOST.PID.`` (work folder) or ``NAME.old-HOST.PID.`` (replaced artifacts): the
    owner is in the name, so a later compile can tell a killed compile's leftovers."""
    return f"{out.name}.{kind}-{socket.gethostname()}.{os.getpid()}."


def _remove_stale_siblings(out: Path) -> None:
    """Delete the folders a compile of ``out`` killed on this host left behind (its pid is gone).

    Only provably ours: named by :func:`_sibling_prefix` for this output and host (another host
    sharing the folder has its own pids) and a real folder; ``.old-`` ones only while ``out``
    exists (else they hold the last artifacts). Anything else is left alone.
    """
    owned = re.compile(re.escape(out.name) + r"\.(tmp|old)-" + re.escape(socket.gethostname())
                       + r"\.(\d+)\.\w+")
    try:
        siblings = list(out.parent.iterdir())
    except OSError:
        return  # the compile's own mkdtemp will report the unusable folder
    for entry in siblings:
        match = owned.fullmatch(entry.name)
        if (match and entry.is_dir() and not entry.is_symlink() and not _pid_alive(match[2])
                and (match[1] == "tmp" or out.is_dir())):
            shutil.rmtree(entry, ignore_errors=True)


def _pid_alive(pid: str) -> bool:
    """False only when no process has this pid (a reused pid counts as alive: never delete)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError, ValueError):  # EPERM: another user's process; absurd pids
        return True
    return True


def _install(work: Path, out: Path) -> None:
    """Replace ``out`` by ``work``: rename the old one away, rename the new one in, delete old."""
    old = out.parent / f"{_sibling_prefix(out, 'old')}{uuid.uuid4().hex[:8]}"
    had_old = out.exists()
    if had_old:
        os.rename(out, old)
    try:
        os.rename(work, out)
    except OSError:
        if had_old:
            os.rename(old, out)
        raise
    if had_old:
        shutil.rmtree(old, ignore_errors=True)


def _copy_existing(paths: Sequence[Path], work: Path) -> None:
    for path in paths:
        if path.is_file():
            shutil.copyfile(path, work / path.name)  # fresh permissions, like the rest


# ----------------------------------------------------------------------------- core


def _build_artifacts(model: nn.Module, shape: tuple[int, int, int], fqns: list[str],
                     data: EvalData, options: CompileOptions, work: Path) -> dict[str, Any]:
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    folded = fold_batchnorms(model)
    dense = export_onnx(folded.model, shape, opset=options.opset, ir_version=options.ir_version)
    timings["fold_export_s"] = time.perf_counter() - clock
    sources = _layer_sources(dense, folded.model, fqns)
    clock = time.perf_counter()
    layers = build_pack_layers(sources, options.block_shapes, options.layout)
    sparse = with_sparse_initializers(dense, {src.initializer for src in sources})
    sizes = {DENSE_ONNX: save_onnx(dense, str(work / DENSE_ONNX)),
             SPARSE_ONNX: save_onnx(sparse, str(work / SPARSE_ONNX)),
             PACK_FILE: write_weights_pack(str(work / PACK_FILE), layers)}
    pack_layers_checked = verify_pack(str(work / PACK_FILE),
                                      {src.fqn: src.weight for src in sources})
    timings["sparse_pack_s"] = time.perf_counter() - clock
    clock = time.perf_counter()
    verification, accuracy, macs = _verify(model, work, data, options)
    verification["pack_layers_rebuilt_exactly"] = pack_layers_checked
    timings["verify_s"] = time.perf_counter() - clock
    rows = layer_rows(folded.model, macs, {layer.fqn: layer for layer in layers})
    return {"format": REPORT_FORMAT, "version": REPORT_VERSION,
            "onnx": _onnx_section(dense, shape, options, folded),
            "initializer_map": {src.fqn: src.initializer for src in sources},
            "layers": [row.to_json() for row in rows], "totals": totals(rows),
            "files": {"bytes": sizes,
                      "sparse_onnx_ratio": sizes[SPARSE_ONNX] / sizes[DENSE_ONNX]},
            "pack": {"file": PACK_FILE, "format": FORMAT_NAME, "version": FORMAT_VERSION,
                     "conv_layout": options.layout,
                     "block_shapes": [f"{r}x{c}" for r, c in options.block_shapes]},
            "verification": verification, "accuracy": accuracy,
            "options": _options_json(options), "timings_s": timings}


def _layer_sources(proto: onnx.ModelProto, folded: nn.Module, fqns: list[str]
                   ) -> list[LayerSource]:
    weights = {fqn: folded.get_parameter(fqn).detach().numpy() for fqn in fqns}
    mapping = map_weights_to_initializers(proto, weights)
    nodes = weight_initializers(proto)
    arrays = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer
              if init.name in set(mapping.values())}
    return [LayerSource(fqn, mapping[fqn], nodes[mapping[fqn]][1], arrays[mapping[fqn]])
            for fqn in fqns]


def _torch_reference(model: nn.Module, images: np.ndarray, batch: int
                     ) -> tuple[np.ndarray, dict[str, int]]:
    """Torch logits (N, classes) and per-layer dense MACs, measured on the first batch."""
    macs, first = dense_layer_macs(model, torch.from_numpy(images[:batch]))
    rest = run_torch(model, images[batch:], batch) if len(images) > batch else None
    logits = first.float().numpy().reshape(len(first), -1)
    return (logits if rest is None else np.concatenate([logits, rest.reshape(len(rest), -1)]),
            macs)


def _verify(model: nn.Module, work: Path, data: EvalData, options: CompileOptions
            ) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, int]]:
    dense_session = ort_session(str(work / DENSE_ONNX))
    sparse_session = ort_session(str(work / SPARSE_ONNX))
    batch = options.batch_size
    reference, macs = _torch_reference(model, data.verify, batch)
    outputs = {"torch": reference, DENSE_ONNX: run_ort(dense_session, data.verify, batch),
               SPARSE_ONNX: run_ort(sparse_session, data.verify, batch)}
    agreements = verify_agreement(outputs, reference="torch")
    agreements += verify_agreement({k: outputs[k] for k in (DENSE_ONNX, SPARSE_ONNX)},
                                   reference=DENSE_ONNX)
    verification = {"images": int(len(data.verify)), "source": data.source, "atol": ATOL,
                    "rtol": RTOL, "agreements": [a.to_json() for a in agreements]}
    accuracy = None
    if options.accuracy and data.test_images is not None and data.test_labels is not None:
        accuracy = {"images": int(len(data.test_images)), "evaluated_with": "onnxruntime",
                    "model": DENSE_ONNX, "top1": ort_accuracy(
                        dense_session, data.test_images, data.test_labels,
                        _accuracy_batch(data.test_images, batch))}
    return verification, accuracy, macs


def _accuracy_batch(images: np.ndarray, batch: int) -> int:
    """A larger batch for the full-test-set pass: ~16 MB of input per ORT call, at most 1024."""
    per_image = max(1, int(np.prod(images.shape[1:])))
    return max(batch, min(1024, (1 << 22) // per_image))


def _onnx_section(proto: onnx.ModelProto, shape: tuple[int, int, int], options: CompileOptions,
                  folded: FoldResult) -> dict[str, Any]:
    return {"input_name": INPUT_NAME, "input_shape": ["batch", *shape],
            "output_name": OUTPUT_NAME, "opset": options.opset, "ir_version": proto.ir_version,
            "op_types": sorted({node.op_type for node in proto.graph.node}),
            "bn_folding": {"method": folded.method, "folded": [list(p) for p in folded.pairs],
                           "note": folded.note}}


def _options_json(options: CompileOptions) -> dict[str, Any]:
    values = dataclasses.asdict(options)
    values["block_shapes"] = [f"{r}x{c}" for r, c in options.block_shapes]
    return values
