"""The shared timing harness, the model facts every benchmark needs (MACs, inputs) and the two
contenders of ``featherdeploy bench`` (torch-free; the subcommand is ``runtime.bench_cli``).

Every benchmark in this project times through this module, so all figures mean the same thing:
warm-up calls first, then per-call wall-clock samples (``time.perf_counter``), reported as mean,
sample standard deviation, min, max and the p50 (median) / p90 / p99 percentiles (linear
interpolation between order statistics, like ``numpy.percentile``). On this noisy shared VM
absolute times drift between runs (docs/performance.md), so contenders are compared with
:func:`compare_interleaved`, which alternates them round by round so that noise hits all alike,
and quotes ratios of medians measured side by side; a fixed number of rounds, or rounds until a
duration has passed (``duration_s``, the peers' time-based mode). docs/benchmarking.md relates
these figures to what deepsparse.benchmark, benchmark_app and onnxruntime_perf_test print.
"""

from __future__ import annotations

import importlib
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from featherdeploy.runtime.macs import conv_macs, linear_macs, sparse_macs

__all__ = [
    "BenchError",
    "Timing",
    "timing_from_samples",
    "time_callable",
    "compare_interleaved",
    "Sampler",
    "local_sampler",
    "compare_interleaved_samplers",
    "TURN_GAP_S",
    "TURN_SETTLE_CALLS",
    "TURN_SETTLE_S",
    "ModelMacs",
    "count_model_macs",
    "load_onnx_model",
    "input_shape_for_batch",
    "make_ort_session",
    "ORT_SESSION_SETTINGS",
    "ort_reference",
    "load_engine",
]

DEFAULT_WARMUP = 3
DEFAULT_MIN_RUNS = 10
DEFAULT_MIN_SECONDS = 0.5
DEFAULT_ROUNDS = 20
DEFAULT_CALLS_PER_ROUND = 5  # 20 rounds x 5 calls = 100 samples, enough for a p99
# Each contender's turn opens with an idle gap and untimed settling calls. The gap lets thread
# pools that spin after returning stop (ONNX Runtime's spin ~30 ms on this VM: our engine at 2
# threads, batch 32, ran 2x slower right after an ORT call, and so did DeepSparse); the settling
# calls (at least TURN_SETTLE_CALLS, for at least TURN_SETTLE_S) bring the idle cores back to
# speed (2-thread batch-1 runs stayed ~1.5x slow for tens of ms after the gap). The timed calls
# see each contender alone and warm, as a server under load would.
TURN_GAP_S = 0.1
TURN_SETTLE_CALLS = 2
TURN_SETTLE_S = 0.05
INPUT_SEED = 0


class BenchError(Exception):
    """Bad benchmark input (missing or invalid model file, bad option); CLIs exit with code 2."""


# --------------------------------------------------------------------------------------------
# Timing statistics
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Timing:
    """Latency statistics of one contender, in milliseconds per call of ``batch`` images."""

    median_ms: float  # = p50
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float  # sample standard deviation (0 for a single sample)
    min_ms: float
    max_ms: float
    runs: int
    batch: int
    throughput_ips: float  # images per second at the median latency

    @property
    def p50_ms(self) -> float:
        return self.median_ms

    def to_dict(self) -> dict[str, float | int]:
        """Plain-dict form for JSON reports."""
        return {**asdict(self), "p50_ms": self.median_ms}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Timing:
        """The inverse of :meth:`to_dict` (derived keys such as p50_ms are ignored)."""
        return cls(**{f.name: data[f.name] for f in fields(cls)})


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """q-th percentile (0..100) by linear interpolation between order statistics."""
    position = (len(sorted_values) - 1) * q / 100.0
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    weight = position - lower
    return sorted_values[lower] * (1.0 - weight) + sorted_values[upper] * weight


def timing_from_samples(samples_ms: Sequence[float], *, batch: int) -> Timing:
    """Summarize per-call latencies (ms) of calls that each process ``batch`` images."""
    if not samples_ms:
        raise BenchError("no timing samples")
    if batch < 1:
        raise BenchError(f"batch must be >= 1, got {batch}")
    ordered = sorted(float(s) for s in samples_ms)
    count = len(ordered)
    median = _percentile(ordered, 50.0)
    mean = sum(ordered) / count
    variance = sum((s - mean) ** 2 for s in ordered) / (count - 1) if count > 1 else 0.0
    return Timing(
        median_ms=median,
        p90_ms=_percentile(ordered, 90.0),
        p99_ms=_percentile(ordered, 99.0),
        mean_ms=mean,
        std_ms=math.sqrt(variance),
        min_ms=ordered[0],
        max_ms=ordered[-1],
        runs=count,
        batch=batch,
        throughput_ips=batch * 1000.0 / median if median > 0 else math.inf,
    )


def _time_one_call(fn: Callable[[], Any], clock: Callable[[], float]) -> float:
    """Wall time of one call in milliseconds."""
    start = clock()
    fn()
    return (clock() - start) * 1000.0


def time_callable(fn: Callable[[], Any], *, batch: int, warmup: int = DEFAULT_WARMUP,
                  min_runs: int = DEFAULT_MIN_RUNS, min_seconds: float = DEFAULT_MIN_SECONDS,
                  max_runs: int = 10_000,
                  clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Time ``fn()`` alone: ``warmup`` untimed calls, then at least ``min_runs`` timed calls and
    at least ``min_seconds`` of timed calls (capped at ``max_runs``)."""
    if min_runs < 1 or max_runs < min_runs:
        raise BenchError(f"need 1 <= min_runs <= max_runs, got {min_runs}, {max_runs}")
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    while len(samples) < max_runs and (len(samples) < min_runs
                                       or sum(samples) < min_seconds * 1000.0):
        samples.append(_time_one_call(fn, clock))
    return timing_from_samples(samples, batch=batch)


Sampler = Callable[[int], Sequence[float]]
"""Runs a contender ``k`` times and returns the ``k`` per-call latencies in ms (lets a contender
in another process time itself, so IPC overhead never enters its figures)."""


def local_sampler(fn: Callable[[], Any],
                  clock: Callable[[], float] = time.perf_counter) -> Sampler:
    """A :data:`Sampler` timing an in-process callable, one wall-clock sample per call."""
    def sample(count: int) -> list[float]:
        return [_time_one_call(fn, clock) for _ in range(count)]
    return sample


def compare_interleaved_samplers(samplers: Mapping[str, Sampler], *, batch: int,
                                 rounds: int = DEFAULT_ROUNDS, warmup: int = DEFAULT_WARMUP,
                                 calls_per_round: int = 1,
                                 settle_calls: int = 0,
                                 gap_s: float = 0.0, settle_s: float = 0.0,
                                 duration_s: float = 0.0,
                                 sleep: Callable[[float], None] = time.sleep,
                                 clock: Callable[[], float] = time.perf_counter
                                 ) -> dict[str, Timing]:
    """Time several contenders side by side (see :func:`compare_interleaved`), each given as a
    :data:`Sampler`; warm-up samples are discarded. After ``rounds`` rounds, whole rounds go on
    until ``duration_s`` seconds have passed since the first timed round began (the time-based
    mode; gaps and settling calls count, so the phase takes about ``duration_s``).

    ``gap_s`` seconds of idle open every turn (see ``TURN_GAP_S``), then ``settle_calls``
    untimed calls, and more until ``settle_s`` seconds have passed: thread pools of the previous
    contender may still spin after it returns, which would otherwise be charged to this one, and
    idle cores take a while to come back to speed.
    """
    if not samplers:
        raise BenchError("compare_interleaved needs at least one contender")
    if (rounds < 1 or calls_per_round < 1 or warmup < 0 or settle_calls < 0 or gap_s < 0
            or settle_s < 0 or duration_s < 0):
        raise BenchError(f"need rounds >= 1, calls_per_round >= 1, warmup >= 0, "
                         f"settle_calls >= 0, gap_s >= 0, duration_s >= 0, got {rounds}, "
                         f"{calls_per_round}, {warmup}, {settle_calls}, {gap_s}, {duration_s}")
    names = list(samplers)
    for name in names:
        if warmup:
            if gap_s:  # a first call may tune itself (our engine times its options once)
                sleep(gap_s)
            samplers[name](warmup)
    samples: dict[str, list[float]] = {name: [] for name in names}
    began = clock()
    round_index = 0
    while round_index < rounds or clock() - began < duration_s:
        shift = round_index % len(names)
        round_index += 1
        for name in names[shift:] + names[:shift]:
            if gap_s:
                sleep(gap_s)
            start = clock()
            if settle_calls:
                samplers[name](settle_calls)
            while clock() - start < settle_s:
                samplers[name](1)
            got = list(samplers[name](calls_per_round))
            if len(got) != calls_per_round:
                raise BenchError(f"contender {name!r} returned {len(got)} samples, "
                                 f"expected {calls_per_round}")
            samples[name].extend(got)
    return {name: timing_from_samples(samples[name], batch=batch) for name in names}


def compare_interleaved(fns: Mapping[str, Callable[[], Any]], *, batch: int,
                        rounds: int = DEFAULT_ROUNDS, warmup: int = DEFAULT_WARMUP,
                        calls_per_round: int = 1,
                        clock: Callable[[], float] = time.perf_counter,
                        gap_s: float = 0.0, settle_calls: int = 0,
                        settle_s: float = 0.0, duration_s: float = 0.0) -> dict[str, Timing]:
    """Time several in-process callables side by side.

    Each contender gets ``warmup`` untimed calls; then in each of ``rounds`` rounds every contender
    makes ``calls_per_round`` timed calls, the order rotating by one each round so no contender
    always runs right after another (cache, turbo and scheduler effects are shared fairly).
    This is how ratios are measured on this noisy VM (docs/performance.md).
    """
    return compare_interleaved_samplers(
        {name: local_sampler(fn, clock) for name, fn in fns.items()}, batch=batch,
        rounds=rounds, warmup=warmup, calls_per_round=calls_per_round, gap_s=gap_s,
        settle_calls=settle_calls, settle_s=settle_s, duration_s=duration_s, clock=clock)


# --------------------------------------------------------------------------------------------
# ONNX model facts: input shape, MACs
# --------------------------------------------------------------------------------------------

def load_onnx_model(path: str | os.PathLike[str]) -> Any:
    """Load and minimally validate an ONNX model; :class:`BenchError` for a missing/bad file."""
    import onnx  # lazy: keeps importing this module cheap

    model_path = Path(path)
    if not model_path.is_file():
        raise BenchError(f"model file not found: {model_path}")
    try:
        model = onnx.load(str(model_path))
    except Exception as exc:  # onnx raises DecodeError, ValueError, OSError... for bad bytes
        raise BenchError(f"not a valid ONNX model: {model_path} ({type(exc).__name__}: {exc})") \
            from exc
    if len(model.graph.node) == 0:
        raise BenchError(f"ONNX model has no nodes: {model_path}")
    return model


def _data_inputs(model: Any) -> list[Any]:
    """Graph inputs that are not initializers (old exporters list weights as inputs too)."""
    weight_names = {t.name for t in model.graph.initializer}
    weight_names |= {t.values.name for t in model.graph.sparse_initializer}
    return [value for value in model.graph.input if value.name not in weight_names]


def input_shape_for_batch(model: Any, batch: int) -> tuple[str, tuple[int, ...]]:
    """Name and concrete shape of the model's single data input, with the batch dim set.

    Dim 0 is the batch dim (symbolic, or fixed to ``batch``); every other dim must be fixed.
    """
    inputs = _data_inputs(model)
    if len(inputs) != 1:
        raise BenchError(f"bench needs a model with exactly one data input, found {len(inputs)}")
    value = inputs[0]
    dims = value.type.tensor_type.shape.dim
    if len(dims) < 1:
        raise BenchError(f"input {value.name!r} has no shape")
    if dims[0].HasField("dim_value") and dims[0].dim_value > 0 and dims[0].dim_value != batch:
        raise BenchError(f"input {value.name!r} has a fixed batch size of {dims[0].dim_value}; "
                         f"cannot run batch {batch}")
    shape = [batch]
    for index, dim in enumerate(dims[1:], start=1):
        if not dim.HasField("dim_value") or dim.dim_value <= 0:
            raise BenchError(f"input {value.name!r} dim {index} is not a fixed size")
        shape.append(int(dim.dim_value))
    return value.name, tuple(shape)


@dataclass(frozen=True)
class LayerMacs:
    """MACs per image of one Conv / Gemm / MatMul node and its weight's nonzero count."""

    node: str
    op_type: str
    dense: int
    sparse: int
    nnz: int
    numel: int


@dataclass(frozen=True)
class ModelMacs:
    """Dense and sparse MACs per image of a model (docs/algorithms.md section 6)."""

    dense: int
    sparse: int
    nnz: int
    numel: int
    layers: tuple[LayerMacs, ...] = field(default=())

    @property
    def weight_sparsity(self) -> float:
        """Fraction of zero weights over all counted layers (0 when there are none)."""
        return 1.0 - self.nnz / self.numel if self.numel else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for JSON reports (without the per-layer list)."""
        return {"dense_macs": self.dense, "sparse_macs": self.sparse, "nnz": self.nnz,
                "numel": self.numel, "weight_sparsity": self.weight_sparsity}


def _weight_tensors(model: Any) -> dict[str, tuple[tuple[int, ...], int]]:
    """Map name -> (shape, nonzero count) for every initializer, sparse initializer and
    Constant-node tensor in the main graph."""
    from onnx import numpy_helper

    weights: dict[str, tuple[tuple[int, ...], int]] = {}
    for tensor in model.graph.initializer:
        array = numpy_helper.to_array(tensor)
        weights[tensor.name] = (tuple(array.shape), int(np.count_nonzero(array)))
    for sparse in model.graph.sparse_initializer:
        values = numpy_helper.to_array(sparse.values)
        weights[sparse.values.name] = (tuple(int(d) for d in sparse.dims),
                                       int(np.count_nonzero(values)))
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    array = numpy_helper.to_array(attr.t)
                    weights[node.output[0]] = (tuple(array.shape), int(np.count_nonzero(array)))
    return weights


def _inferred_shapes(model: Any, input_shapes: Mapping[str, Sequence[int]] | None = None
                     ) -> dict[str, tuple[int | None, ...]]:
    """Shapes of all graph values after ONNX shape inference with the batch dim fixed to 1
    (and the other dims of the inputs named in ``input_shapes`` set from there)."""
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in _data_inputs(fixed):
        dims = value.type.tensor_type.shape.dim
        given = (input_shapes or {}).get(value.name)
        if given is not None and len(given) == len(dims):
            for dim, size in zip(dims[1:], given[1:], strict=True):
                dim.ClearField("dim_param")
                dim.dim_value = int(size)
        if len(dims) > 0:
            dims[0].ClearField("dim_param")
            dims[0].dim_value = 1
    # Conv/Gemm shape inference rejects sparse tensor types: only shapes matter here, so the
    # sparse initializers become dense-typed graph inputs of the same shape.
    for sparse in fixed.graph.sparse_initializer:
        fixed.graph.input.append(onnx.helper.make_tensor_value_info(
            sparse.values.name, sparse.values.data_type, list(sparse.dims)))
    del fixed.graph.sparse_initializer[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed)
    except Exception as exc:  # InferenceError and friends
        raise BenchError(f"ONNX shape inference failed: {exc}") from exc
    shapes: dict[str, tuple[int | None, ...]] = {}
    graph = inferred.graph
    for value in list(graph.value_info) + list(graph.input) + list(graph.output):
        if value.type.tensor_type.HasField("shape"):
            shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                       for d in value.type.tensor_type.shape.dim)
    if any(None in shapes.get(node.output[0], (None,)) for node in model.graph.node
           if node.op_type in ("Conv", "MatMul")):
        shapes.update(_specialized_shapes(model, shapes))
    return shapes


def _specialized_shapes(model: Any, shapes: Mapping[str, tuple[int | None, ...]]
                        ) -> dict[str, tuple[int, ...]]:
    """Shapes the engine's own specialization finds where ONNX shape inference stops (a
    Reshape whose target is computed by Shape -> Gather -> Concat: ShuffleNet's channel
    shuffle); empty when the inputs' shapes are not all known or the model does not load."""
    from featherdeploy.runtime.errors import EngineError
    from featherdeploy.runtime.graph import parse_model_bytes
    from featherdeploy.runtime.specialize import specialize

    try:
        graph = parse_model_bytes(model.SerializeToString())
        inputs = {info.name: shapes.get(info.name) for info in graph.inputs}
        if any(shape is None or None in shape for shape in inputs.values()):
            return {}
        specialized = specialize(graph, inputs)  # type: ignore[arg-type]
    except EngineError:  # the MAC count then names the shape it lacks
        return {}
    return {name: shape for name, shape in specialized.shapes.items() if shape is not None}


def _attribute(node: Any, name: str, default: Any) -> Any:
    """Integer or int-list attribute of a node, or ``default``."""
    for attr in node.attribute:
        if attr.name == name:
            return list(attr.ints) if attr.ints else attr.i
    return default


def _known(shape: tuple[int | None, ...] | None, what: str) -> tuple[int, ...]:
    """``shape`` with every dim known, else :class:`BenchError` naming ``what``."""
    if shape is None or any(d is None for d in shape):
        raise BenchError(f"cannot infer the shape of {what}")
    return tuple(int(d) for d in shape)  # type: ignore[arg-type]


def _node_dense_macs(node: Any, weight_shape: tuple[int, ...],
                     shapes: dict[str, tuple[int | None, ...]]) -> int:
    """Dense MACs per image of one Conv / Gemm / MatMul node (batch fixed to 1)."""
    label = node.name or node.output[0]
    if node.op_type == "Conv":
        out = _known(shapes.get(node.output[0]), f"the output of Conv {label!r}")
        if len(weight_shape) not in (3, 4) or len(out) != len(weight_shape):
            raise BenchError(f"Conv {label!r}: only 1-D and 2-D convolutions are counted")
        groups = int(_attribute(node, "group", 1))
        kernel = weight_shape[2:] + (1,) * (4 - len(weight_shape))
        spatial = out[2:] + (1,) * (4 - len(out))
        return conv_macs(weight_shape[0], weight_shape[1] * groups, groups,
                         kernel[0], kernel[1], spatial[0], spatial[1])
    if node.op_type == "Gemm":
        trans_b = int(_attribute(node, "transB", 0))
        out_features, in_features = weight_shape if trans_b else weight_shape[::-1]
        return linear_macs(out_features, in_features)
    out = _known(shapes.get(node.output[0]), f"the output of MatMul {label!r}")
    rows = math.prod(out[1:-1]) if len(out) > 2 else 1
    return rows * linear_macs(weight_shape[1], weight_shape[0])


def count_model_macs(model: Any, input_shapes: Mapping[str, Sequence[int]] | None = None
                     ) -> ModelMacs:
    """Dense and sparse MACs per image from the weights of Conv, Gemm and MatMul nodes.

    Only nodes whose weight (input 1) is a stored tensor count; sparse MACs of a layer are its
    dense MACs times its weight density (``runtime.macs.sparse_macs``). ``input_shapes`` sizes
    dynamic dims other than the batch (e.g. a detector's image size).
    """
    weights = _weight_tensors(model)
    shapes = _inferred_shapes(model, input_shapes)
    layers = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        if node.input[1] not in weights:
            continue
        weight_shape, nnz = weights[node.input[1]]
        if node.op_type != "Conv" and len(weight_shape) != 2:
            continue
        numel = math.prod(weight_shape)
        dense = _node_dense_macs(node, weight_shape, shapes)
        layers.append(LayerMacs(node=node.name or node.output[0], op_type=node.op_type,
                                dense=dense, sparse=sparse_macs(dense, nnz, numel),
                                nnz=nnz, numel=numel))
    return ModelMacs(dense=sum(layer.dense for layer in layers),
                     sparse=sum(layer.sparse for layer in layers),
                     nnz=sum(layer.nnz for layer in layers),
                     numel=sum(layer.numel for layer in layers), layers=tuple(layers))


# --------------------------------------------------------------------------------------------
# Contenders: ONNX Runtime dense and our engine
# --------------------------------------------------------------------------------------------

ORT_SESSION_SETTINGS = "intra_op=T, inter_op=1, sequential, ORT_ENABLE_ALL, CPU provider"


def make_ort_session(path: str | os.PathLike[str], threads: int) -> Any:
    """ONNX Runtime CPU session, the dense baseline: ``threads`` intra-op threads, one inter-op
    thread, sequential execution, all graph optimizations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), sess_options=options,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
        raise BenchError(f"ONNX Runtime cannot load {path}: {exc}") from exc


def load_engine(path: str | os.PathLike[str], threads: int,
                options: Any | None = None) -> tuple[Any | None, str]:
    """Our engine for ``path`` (with these ``runtime.EngineOptions``, default: the environment's)
    or ``(None, reason)`` when it is missing or refuses the model.

    The benchmark reports the reason in the engine column instead of any number.
    """
    try:
        engine_class = importlib.import_module("featherdeploy.runtime").Engine
    except (ImportError, AttributeError) as exc:
        return None, f"engine not available ({type(exc).__name__}: {exc})"
    try:
        return engine_class(str(path), threads=threads, options=options), ""
    except Exception as exc:  # report any load failure in the table, never a fake number
        return None, f"engine failed to load ({type(exc).__name__}: {exc})"


def ort_reference(session: Any, input_name: str, x: np.ndarray) -> np.ndarray:
    """ORT's first output on ``x``; :class:`BenchError` if ORT cannot run the model."""
    try:
        return session.run(None, {input_name: x})[0]
    except Exception as exc:  # ORT raises its own exception types
        raise BenchError(f"ONNX Runtime cannot run the model on shape {x.shape}: {exc}") \
            from exc
