"""``build``: write ``DIR/NAME.onnx``, ``DIR/NAME.prunedNN.onnx`` and ``DIR/manifest.json``.

The manifest is rewritten after every model, so an interrupted build keeps what it finished;
a build of a few models (``--models``) keeps the other entries of an existing manifest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from benchmarks.zoo.common import (
    ZooError,
    atomic_write_bytes,
    check_sparsity,
    dense_filename,
    format_bytes,
    pruned_filename,
    sha256_bytes,
    sha256_file,
)
from benchmarks.zoo.manifest import (
    file_record,
    io_fields,
    merge_models,
    model_entry,
    pruned_record,
    read_manifest,
    write_manifest,
)
from benchmarks.zoo.onnx_weights import prune_onnx_weights
from benchmarks.zoo.published import (
    PUBLISHED_MODELS,
    PublishedSpec,
    PublishedUnavailable,
    load_published,
)

__all__ = ["all_model_names", "BuildReport", "select_models", "build_torch_entry",
           "build_published_entry", "build_zoo"]

if TYPE_CHECKING:
    from benchmarks.zoo.torch_zoo import TorchModelSpec

Log = Callable[[str], None]


def _torch_names() -> list[str]:
    """Names of the torch models (importing the registry does not import torch)."""
    from benchmarks.zoo.torch_zoo import TORCH_MODELS
    return list(TORCH_MODELS)


def all_model_names() -> list[str]:
    """Every model of the zoo, torch ones first."""
    return _torch_names() + list(PUBLISHED_MODELS)


@dataclass
class BuildReport:
    """What a build did: built names, and name -> reason for skipped and failed ones."""

    built: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def select_models(spec: str | None) -> list[str]:
    """The names in a comma-separated ``--models`` value (all models when None), or
    :class:`ZooError` naming the unknown ones."""
    known = all_model_names()
    if spec is None:
        return known
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        raise ZooError(f"unknown model(s) {', '.join(unknown) or '(none given)'}; "
                       f"valid: {', '.join(known)}")
    return list(dict.fromkeys(names))


def _write_pair(out_dir: Path, name: str, dense: bytes, pruned: bytes,
                sparsity: float) -> dict[str, Any]:
    """Write both files atomically; their manifest records."""
    dense_path = out_dir / dense_filename(name)
    pruned_path = out_dir / pruned_filename(name, sparsity)
    atomic_write_bytes(dense_path, dense)
    atomic_write_bytes(pruned_path, pruned)
    return {"dense": file_record(dense_path, dense),
            "pruned": pruned_record(pruned_path, pruned, sparsity)}


def build_torch_entry(name: str, out_dir: Path, sparsity: float, seed: int, *,
                      randomize_bn: bool = True,
                      spec: TorchModelSpec | None = None) -> dict[str, Any]:
    """Build, export, prune and export again one torch model; its manifest entry. ``spec``
    overrides the registry's (tests use a smaller input)."""
    from benchmarks.zoo.torch_zoo import (
        export_onnx_bytes,
        prepare_torch_model,
        pruned_torch_model,
        torch_spec,
    )

    spec = spec or torch_spec(name)
    model = prepare_torch_model(spec, seed, randomize_bn=randomize_bn)
    dense = export_onnx_bytes(model, spec)
    pruned_torch_model(model, spec, sparsity, seed)
    pruned = export_onnx_bytes(model, spec)
    files = _write_pair(out_dir, name, dense, pruned, sparsity)
    io = io_fields(onnx.load_from_string(dense), {"input": spec.input_shape}, "NCHW")
    notes = spec.notes + (() if randomize_bn else ("BatchNorm NOT randomized",))
    return model_entry(name=name, kind=spec.kind, task=spec.task, source=spec.source, io=io,
                       batch_sizes=spec.batch_sizes, files=files, published=None,
                       notes=notes, seed=seed)


def _prepared(spec: PublishedSpec, raw: bytes) -> tuple[onnx.ModelProto, bytes]:
    """The model after the package's own load-time transform, and its bytes (as shipped when
    there is none)."""
    model = onnx.load_from_string(raw)
    if spec.prepare is None:
        return model, raw
    model = spec.prepare(model)
    return model, model.SerializeToString()


def build_published_entry(name: str, out_dir: Path, sparsity: float,
                          cache_dir: Path) -> dict[str, Any]:
    """Fetch (or reuse from the cache) one published model, write it and its pruned copy; its
    manifest entry. :class:`PublishedUnavailable` when it cannot be had."""
    spec = PUBLISHED_MODELS[name]
    archive, raw = load_published(spec, cache_dir)
    model, dense = _prepared(spec, raw)
    pruned_model = onnx.ModelProto()
    pruned_model.CopyFrom(model)
    prune_onnx_weights(pruned_model, sparsity)
    files = _write_pair(out_dir, name, dense, pruned_model.SerializeToString(), sparsity)
    published = {"package": spec.package, "version": spec.version,
                 "requirement": spec.requirement, "archive": archive.name,
                 "archive_sha256": sha256_file(archive), "member": spec.member,
                 "member_sha256": sha256_bytes(raw),
                 "prepared": spec.prepare_note or None}
    io = io_fields(model, dict(spec.inputs), spec.layout)
    return model_entry(name=name, kind="published", task=spec.task,
                       source=f"pypi:{spec.requirement}", io=io, batch_sizes=spec.batch_sizes,
                       files=files, published=published, notes=spec.notes, seed=None)


def _build_one(name: str, out_dir: Path, sparsity: float, seed: int,
               cache_dir: Path) -> dict[str, Any]:
    """The entry of one model of either source."""
    if name in PUBLISHED_MODELS:
        return build_published_entry(name, out_dir, sparsity, cache_dir)
    return build_torch_entry(name, out_dir, sparsity, seed)


def build_zoo(out_dir: Path, names: list[str], *, sparsity: float, seed: int, cache_dir: Path,
              log: Log = print) -> BuildReport:
    """Build ``names`` into ``out_dir``; unavailable published models are skipped, a model that
    fails is reported and the build goes on."""
    check_sparsity(sparsity)
    out_dir.mkdir(parents=True, exist_ok=True)
    models, report, order = read_manifest(out_dir), BuildReport(), all_model_names()
    for name in names:
        start = time.perf_counter()
        try:
            entry = _build_one(name, out_dir, sparsity, seed, cache_dir)
        except PublishedUnavailable as exc:
            report.skipped[name] = str(exc)
            log(f"skipped {name}: {exc}")
            continue
        except Exception as exc:  # noqa: BLE001 - one broken model must not stop the zoo
            report.failed[name] = f"{type(exc).__name__}: {exc}"
            log(f"FAILED {name}: {type(exc).__name__}: {exc}")
            continue
        models = merge_models(models, [entry], order)
        write_manifest(out_dir, models)
        report.built.append(name)
        sizes = entry["files"]
        log(f"built {name} [{entry['kind']}] in {time.perf_counter() - start:.1f} s: "
            f"{format_bytes(sizes['dense']['bytes'])} dense, "
            f"{format_bytes(sizes['pruned']['bytes'])} pruned "
            f"(min zero fraction {sizes['pruned']['min_zero_fraction']:.3f})")
    return report
