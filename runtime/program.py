"""A model ready to run for one set of input shapes: specialized, partitioned, every native
segment planned and every ONNX Runtime segment opened as an in-process session.

``Program.run`` feeds the segments in order; values cross between segments as NumPy arrays.
A model that is one native segment runs in one native call.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from featherdeploy.runtime.errors import EngineError
from featherdeploy.runtime.graph import Graph, Node, TensorInfo
from featherdeploy.runtime.options import EngineOptions
from featherdeploy.runtime.partition import NATIVE, Partition, Segment, partition
from featherdeploy.runtime.planner.builder import CompiledPlan, build_plan
from featherdeploy.runtime.specialize import Specialized, specialize

__all__ = ["Program", "build_program", "ort_session"]


@dataclass
class NativeSegment:
    segment: Segment
    plan: CompiledPlan

    def run(self, values: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.plan.run([np.require(values[n], np.float32, "C")
                              for n in self.segment.inputs])


@dataclass
class OrtSegment:
    """An ONNX Runtime session over a segment, opened on first use when an input's type is
    known only from the values that reach it (produced by another ONNX Runtime segment)."""

    segment: Segment
    partition: Partition
    threads: int
    session: Any = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        if all(self.partition.dtypes.get(n) is not None for n in self.segment.inputs):
            self.session = _ort_segment(self.partition, self.segment, self.threads, {})

    def run(self, values: dict[str, np.ndarray]) -> list[np.ndarray]:
        feeds = {name: values[name] for name in self.segment.inputs}
        if self.session is None:
            with self._lock:
                if self.session is None:
                    types = {name: value.dtype for name, value in feeds.items()}
                    self.session = _ort_segment(self.partition, self.segment, self.threads,
                                                types)
        try:
            return list(self.session.run(self.segment.outputs, feeds))
        except Exception as exc:  # ORT raises its own exception types
            raise EngineError(f"ONNX Runtime failed in a segment of "
                              f"{len(self.segment.nodes)} node(s) (first "
                              f"{self.segment.nodes[0].describe()}): {_one_line(exc)}") from None


@dataclass
class Program:
    """What runs for one set of input shapes (see the module docstring)."""

    spec: Specialized
    partition: Partition
    runners: list[NativeSegment | OrtSegment]
    threads: int
    interleave: bool

    @property
    def single_plan(self) -> CompiledPlan | None:
        """The native plan when the whole model is one native segment."""
        if len(self.runners) == 1 and isinstance(self.runners[0], NativeSegment):
            return self.runners[0].plan
        return None

    @property
    def native_plans(self) -> list[CompiledPlan]:
        """The plans of its native segments, in order."""
        return [r.plan for r in self.runners if isinstance(r, NativeSegment)]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        values = dict(feeds)
        for runner in self.runners:
            outputs = runner.run(values)
            values.update(zip(runner.segment.outputs, outputs, strict=True))
        return self.graph_outputs(values)

    def graph_outputs(self, values: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The graph's outputs in its order, from computed values, inputs and constants."""
        constants = self.partition.graph.constants
        return [np.array(constants[name]) if name in constants else values[name]
                for name in self.partition.graph.output_names]


def build_program(graph: Graph, input_shapes: dict[str, tuple[int, ...]],
                  options: EngineOptions, threads: int, interleave: bool = False) -> Program:
    """Specialize, partition and plan ``graph`` for these input shapes."""
    spec = specialize(graph, input_shapes)
    part = partition(spec, strict=not options.fallback, opts=options.planner)
    runners: list[NativeSegment | OrtSegment] = []
    for segment in part.segments:
        if segment.kind == NATIVE:
            runners.append(NativeSegment(segment, _plan_segment(part, segment, options, threads,
                                                                interleave)))
        else:
            runners.append(OrtSegment(segment, part, threads))
    return Program(spec, part, runners, threads, interleave)


def _plan_segment(part: Partition, segment: Segment, options: EngineOptions, threads: int,
                  interleave: bool) -> CompiledPlan:
    shapes = {k: v for k, v in part.shapes.items() if v is not None}
    f32 = np.dtype(np.float32)
    sub = Graph(segment.nodes, part.graph.constants,
                [TensorInfo(n, f32, shapes[n]) for n in segment.inputs],
                [TensorInfo(n, f32, shapes[n]) for n in segment.outputs],
                part.graph.opset, part.graph.opsets, part.graph.ir_version)
    return build_plan(sub, shapes, threads, options, interleave=interleave)


def _ort_segment(part: Partition, segment: Segment, threads: int,
                 types: dict[str, np.dtype]) -> Any:
    """An ONNX Runtime session over the segment's nodes (their attributes verbatim; constants
    they read become initializers); ``types`` gives input types the partition does not know."""
    from onnx import helper, numpy_helper

    nodes = [_node_proto(n) for n in segment.nodes]
    used = {i for n in segment.nodes for i in n.inputs if i}
    used |= {i for i in _implicit(segment) if i}
    inits = [numpy_helper.from_array(np.asarray(part.graph.constants[name]), name)
             for name in sorted(used) if name in part.graph.constants]
    inputs = [_value_info(name, part, types.get(name)) for name in segment.inputs]
    outputs = [_value_info(name, part) for name in segment.outputs]
    graph = helper.make_graph(nodes, "segment", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v)
                                                    for d, v in part.graph.opsets.items()])
    model.ir_version = part.graph.ir_version
    return ort_session(model.SerializeToString(), threads, "a segment of the model")


def _implicit(segment: Segment) -> list[str]:
    from featherdeploy.runtime.partition import _implicit_inputs

    return [i for n in segment.nodes for i in _implicit_inputs(n)]


def _node_proto(node: Node) -> Any:
    from onnx import helper

    proto = helper.make_node(node.op, node.inputs, node.outputs, name=node.name,
                             domain=node.domain or None)
    if node.proto is not None:
        proto.attribute.extend(node.proto.attribute)
    return proto


def _value_info(name: str, part: Partition, dtype: np.dtype | None = None) -> Any:
    """A graph input or output of a segment; an output of unknown type is left for ONNX Runtime
    to infer."""
    from onnx import ValueInfoProto, helper

    dtype = part.dtypes.get(name) if dtype is None else dtype
    if dtype is None:
        info = ValueInfoProto()
        info.name = name
        return info
    shape = part.shapes.get(name)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    return helper.make_tensor_value_info(name, elem, None if shape is None else list(shape))


def ort_session(model: bytes | str, threads: int, what: str) -> Any:
    """An in-process ONNX Runtime session (sequential, ``threads`` intra-op threads)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types
        raise EngineError(f"ONNX Runtime cannot load {what}: {_one_line(exc)}") from None


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 400 else text[:397] + "..."

