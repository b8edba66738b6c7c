"""The planner: a native graph with concrete shapes -> a native plan.

Split by concern: ``layout`` (where tensors live), ``pads`` (zero borders, stride phases),
``memory`` (arena placement), ``conv_select`` (kernel choice, weight packing), ``threads``
(work splits), ``wavefront`` (row wavefronts), ``batch`` (batch policy) and ``builder`` (the
bookkeeping op emitters share). Each op's emitter lives with its op in ``runtime/ops/``.
"""

from featherdeploy.runtime.planner.builder import Builder, CompiledPlan, StepRecord, build_plan

__all__ = ["Builder", "CompiledPlan", "StepRecord", "build_plan"]
