"""``DIR/manifest.json``: what the zoo holds, per model, for the runtime team's harnesses.

``{"format": "featherdeploy-zoo", "version": 1, "models": [entry, ...]}``; see
:func:`model_entry` for an entry's fields. Declared dims are kept as the file has them: an int
(``dim_value``, which can be -1 in published files), a string (``dim_param``) or null (unset).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx

from benchmarks.zoo.common import ZooError, atomic_write_bytes, sha256_bytes
from benchmarks.zoo.onnx_weights import weight_zero_fractions

__all__ = ["MANIFEST_NAME", "MANIFEST_FORMAT", "MANIFEST_VERSION", "tensor_dtype",
           "declared_shape", "graph_inputs", "graph_outputs", "opset_imports", "file_record",
           "model_entry", "read_manifest", "write_manifest", "validate_manifest", "merge_models"]

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "featherdeploy-zoo"
MANIFEST_VERSION = 1
ENTRY_KEYS = ("name", "kind", "task", "source", "opset", "ir_version", "opset_imports", "inputs",
              "outputs", "num_outputs", "batch_sizes", "files", "published", "notes")
KINDS = ("torchvision", "timm", "custom", "published")


def tensor_dtype(value: onnx.ValueInfoProto) -> str:
    """numpy name of a value's element type ("float32", "int64", ...)."""
    elem = value.type.tensor_type.elem_type
    return str(onnx.helper.tensor_dtype_to_np_dtype(elem))


def declared_shape(value: onnx.ValueInfoProto) -> list[int | str | None]:
    """Declared dims: int dim_value, str dim_param, or None when neither is set."""
    dims: list[int | str | None] = []
    for dim in value.type.tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(dim.dim_value)
        else:
            dims.append(dim.dim_param or None)
    return dims


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are not initializers (old IR versions list weights as inputs too)."""
    weights = {t.name for t in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in weights]


def graph_outputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The graph outputs."""
    return list(model.graph.output)


def opset_imports(model: onnx.ModelProto) -> dict[str, int]:
    """Domain ("" for the default one) -> opset version."""
    return {imp.domain: imp.version for imp in model.opset_import}


def file_record(path: Path, data: bytes) -> dict[str, Any]:
    """File name, size and SHA-256 of a written model file."""
    return {"file": path.name, "bytes": len(data), "sha256": sha256_bytes(data)}


def pruned_record(path: Path, data: bytes, sparsity: float) -> dict[str, Any]:
    """:func:`file_record` plus the target sparsity and the weights' measured zero fractions."""
    fractions = weight_zero_fractions(onnx.load_from_string(data))
    return {**file_record(path, data), "sparsity": sparsity, "pruned_tensors": len(fractions),
            "min_zero_fraction": round(min(fractions.values(), default=0.0), 6)}


def _check_feed_shape(value: onnx.ValueInfoProto, shape: tuple[int, ...]) -> None:
    """:class:`ZooError` when a concrete feed shape contradicts a fixed declared dim."""
    declared = declared_shape(value)
    fits = len(declared) == len(shape) and all(
        not isinstance(d, int) or d <= 0 or d == s for d, s in zip(declared, shape, strict=True))
    if not fits:
        raise ZooError(f"input {value.name}: feed shape {list(shape)} does not fit the "
                       f"declared {declared}")


def io_fields(model: onnx.ModelProto, feeds: dict[str, tuple[int, ...]],
              layout: str) -> dict[str, Any]:
    """The inputs/outputs/opset part of an entry; ``feeds`` gives every input's feed shape."""
    inputs = []
    for value in graph_inputs(model):
        if value.name not in feeds:
            raise ZooError(f"no feed shape for input {value.name!r}")
        _check_feed_shape(value, feeds[value.name])
        inputs.append({"name": value.name, "shape": list(feeds[value.name]),
                       "declared_shape": declared_shape(value), "dtype": tensor_dtype(value),
                       "layout": layout})
    outputs = [{"name": v.name, "declared_shape": declared_shape(v), "dtype": tensor_dtype(v)}
               for v in graph_outputs(model)]
    imports = opset_imports(model)
    return {"opset": imports.get("", imports.get("ai.onnx", 0)), "ir_version": model.ir_version,
            "opset_imports": imports, "inputs": inputs, "outputs": outputs,
            "num_outputs": len(outputs)}


def model_entry(*, name: str, kind: str, task: str, source: str, io: dict[str, Any],
                batch_sizes: tuple[int, ...], files: dict[str, Any],
                published: dict[str, Any] | None, notes: tuple[str, ...],
                seed: int | None) -> dict[str, Any]:
    """One manifest entry (keys in :data:`ENTRY_KEYS` order, plus ``seed``)."""
    return {"name": name, "kind": kind, "task": task, "source": source, **io,
            "batch_sizes": list(batch_sizes), "files": files, "published": published,
            "notes": list(notes), "seed": seed}


def validate_manifest(data: Any, folder: Path | None = None) -> list[dict[str, Any]]:
    """The entries of a manifest, or :class:`ZooError` naming what is wrong. With ``folder``,
    every listed file must exist there with the recorded size."""
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise ZooError(f"not a {MANIFEST_FORMAT} manifest")
    if data.get("version") != MANIFEST_VERSION:
        raise ZooError(f"manifest version {data.get('version')!r}, expected {MANIFEST_VERSION}")
    models = data.get("models")
    if not isinstance(models, list):
        raise ZooError("manifest 'models' is not a list")
    for entry in models:
        _validate_entry(entry, folder)
    return models


def _validate_entry(entry: Any, folder: Path | None) -> None:
    """:class:`ZooError` when an entry lacks a key, has a bad kind, or a file is missing."""
    if not isinstance(entry, dict):
        raise ZooError("manifest entry is not an object")
    missing = [key for key in ENTRY_KEYS if key not in entry]
    if missing:
        raise ZooError(f"manifest entry {entry.get('name')!r} lacks {', '.join(missing)}")
    if entry["kind"] not in KINDS:
        raise ZooError(f"manifest entry {entry['name']!r}: unknown kind {entry['kind']!r}")
    for role in ("dense", "pruned"):
        record = entry["files"].get(role)
        if record is None:
            raise ZooError(f"manifest entry {entry['name']!r} has no {role} file")
        path = folder / record["file"] if folder is not None else None
        if path is not None and (not path.is_file() or path.stat().st_size != record["bytes"]):
            raise ZooError(f"{path} is missing or not the recorded size")


def read_manifest(folder: Path) -> list[dict[str, Any]]:
    """The validated entries of ``folder/manifest.json`` ([] when there is none)."""
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ZooError(f"{path} is not JSON: {exc}") from exc
    return validate_manifest(data)


def merge_models(old: list[dict[str, Any]], new: list[dict[str, Any]],
                 order: list[str]) -> list[dict[str, Any]]:
    """``old`` entries replaced by the ``new`` ones of the same name, sorted by ``order``
    (names not in it last, by name)."""
    by_name = {e["name"]: e for e in old} | {e["name"]: e for e in new}
    rank = {name: index for index, name in enumerate(order)}
    return sorted(by_name.values(), key=lambda e: (rank.get(e["name"], len(rank)), e["name"]))


def write_manifest(folder: Path, models: list[dict[str, Any]]) -> Path:
    """Write ``folder/manifest.json`` atomically."""
    path = folder / MANIFEST_NAME
    data = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "models": models}
    atomic_write_bytes(path, (json.dumps(data, indent=1) + "\n").encode())
    return path
