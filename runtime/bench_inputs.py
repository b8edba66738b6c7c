"""The arrays a benchmark feeds: from the model's declared inputs, ``--shape`` for dynamic dims,
``--input`` .npy files, or a seeded generator; one set per batch size.

Shapes: an input's declared shape, with a dynamic leading (batch) dim set to the batch size;
``--shape NAME=DxDxD`` gives a whole shape (its leading dim is the batch unless ``--batch``
overrides it). Files fix the shape of their input; with ``--batch`` their rows are cycled
(``x[i % len(x)]``) to the batch size. Generated values (``--seed``): standard normal for
floats, 0 or 1 for integers and booleans. A file of the wrong dtype, rank or fixed dims, or a
dynamic dim nobody sized, is a :class:`runtime.bench.BenchError` (exit code 2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["InputSpec", "model_inputs", "read_input_files", "make_feeds", "batch_of",
           "InputsError"]


class InputsError(ValueError):
    """An input shape or array that cannot feed the model (bench turns it into BenchError)."""


@dataclass(frozen=True)
class InputSpec:
    """A data input of the model: name, element type and declared dims (None = dynamic)."""

    name: str
    dtype: np.dtype
    dims: tuple[int | None, ...]

    def describe(self) -> str:
        return f"{self.name} ({'x'.join('?' if d is None else str(d) for d in self.dims)}, " \
               f"{self.dtype.name})"


def model_inputs(model: Any) -> list[InputSpec]:
    """The data inputs (graph inputs that are not initializers) of an ONNX ModelProto."""
    from onnx import helper

    weights = {t.name for t in model.graph.initializer}
    weights |= {t.values.name for t in model.graph.sparse_initializer}
    specs = []
    for value in model.graph.input:
        if value.name in weights:
            continue
        tensor = value.type.tensor_type
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        except (KeyError, TypeError) as exc:
            raise InputsError(f"input {value.name!r} has an element type bench cannot "
                              f"generate ({tensor.elem_type})") from exc
        dims = tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None
                     for d in tensor.shape.dim)
        specs.append(InputSpec(value.name, dtype, dims))
    if not specs:
        raise InputsError("the model has no data inputs")
    return specs


def read_input_files(files: Mapping[str, str], specs: Sequence[InputSpec]
                     ) -> dict[str, np.ndarray]:
    """Load ``{input name: .npy path}`` and check dtype, rank and fixed dims (not the batch)."""
    by_name = {s.name: s for s in specs}
    arrays = {}
    for name, path in files.items():
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputsError(f"cannot read input array {path!r}: "
                              f"{' '.join(str(exc).split())}") from None
        if not isinstance(array, np.ndarray):  # an .npz archive
            raise InputsError(f"{path!r} is not a single .npy array")
        spec = by_name[name]
        if array.dtype != spec.dtype:
            raise InputsError(f"input {name!r} must be {spec.dtype.name}, {path!r} holds "
                              f"{array.dtype.name}")
        _check_fits(spec, tuple(array.shape), f"{path!r} has shape {array.shape}")
        arrays[name] = array
    return arrays


def batch_of(shapes: Mapping[str, tuple[int, ...]]) -> int:
    """Images per call: the leading dim of the first input (1 for a scalar)."""
    first = next(iter(shapes.values()))
    return int(first[0]) if first else 1


def make_feeds(specs: Sequence[InputSpec], batch: int | None, *,
               shapes: Mapping[str, tuple[int, ...]], arrays: Mapping[str, np.ndarray],
               seed: int) -> dict[str, np.ndarray]:
    """One array per input for this batch size (None: as the shapes and files give it)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        if spec.name in arrays:
            feeds[spec.name] = _cycled(arrays[spec.name], batch, spec)
            continue
        shape = _shape(spec, batch, shapes.get(spec.name))
        feeds[spec.name] = _generated(rng, shape, spec.dtype)
    return feeds


def _shape(spec: InputSpec, batch: int | None, given: tuple[int, ...] | None
           ) -> tuple[int, ...]:
    if given is not None:
        dims = list(given)
        if batch is not None and dims:
            dims[0] = batch
        _check_fits(spec, tuple(dims), f"--shape gives {'x'.join(map(str, dims))}")
        return tuple(dims)
    dims = list(spec.dims)
    if dims and dims[0] is None:
        dims[0] = 1 if batch is None else batch
    elif dims and batch is not None and dims[0] != batch:
        raise InputsError(f"input {spec.name!r} has a fixed batch size of {dims[0]}; "
                          f"cannot run batch {batch}")
    missing = [axis for axis, d in enumerate(dims) if d is None]
    if missing:
        example = "x".join("D" if d is None else str(d) for d in dims)
        raise InputsError(f"input {spec.describe()} has dynamic dim(s) {missing}: pass "
                          f"--shape {spec.name}={example} with each D set")
    return tuple(int(d) for d in dims)  # type: ignore[arg-type]


def _check_fits(spec: InputSpec, shape: tuple[int, ...], what: str) -> None:
    if len(shape) != len(spec.dims):
        raise InputsError(f"input {spec.describe()} has rank {len(spec.dims)}; {what}")
    for axis, (got, want) in enumerate(zip(shape, spec.dims, strict=True)):
        if (want is not None and got != want) or got < 1:
            raise InputsError(f"input {spec.describe()} dim {axis} must be "
                              f"{want if want else '>= 1'}; {what}")


def _cycled(array: np.ndarray, batch: int | None, spec: InputSpec) -> np.ndarray:
    if batch is None or array.ndim == 0 or array.shape[0] == batch:
        return np.ascontiguousarray(array)
    if spec.dims and spec.dims[0] is not None and spec.dims[0] != batch:
        raise InputsError(f"input {spec.name!r} has a fixed batch size of {spec.dims[0]}; "
                          f"cannot run batch {batch}")
    return np.ascontiguousarray(np.take(array, np.arange(batch) % array.shape[0], axis=0))


def _generated(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if dtype.kind == "f":
        return rng.standard_normal(shape, dtype=np.float32).astype(dtype)
    if dtype.kind in "iub":
        return rng.integers(0, 2, size=shape).astype(dtype)
    raise InputsError(f"cannot generate {dtype.name} input values: pass --input NAME=FILE")
