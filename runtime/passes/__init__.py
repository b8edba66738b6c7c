"""Graph rewrites before planning, one pass per module, run in order by :func:`run_passes`.

Every pass takes the graph, the tensors' shapes and the set of nodes that will run natively,
and returns a new graph; only native nodes are fused (ONNX Runtime segments keep their nodes
as the file has them). Fused attributes live under the keys of ``runtime.ops.fusion``.
"""

from __future__ import annotations

from collections.abc import Callable

from featherdeploy.runtime.graph import Graph, Node
from featherdeploy.runtime.options import PlannerOptions
from featherdeploy.runtime.passes.activation_fusion import fuse_activation
from featherdeploy.runtime.passes.batchnorm import fold_batchnorm
from featherdeploy.runtime.passes.channel_gate import fold_channel_gate
from featherdeploy.runtime.passes.channel_shuffle import fuse_channel_shuffle
from featherdeploy.runtime.passes.common import consumers, reads
from featherdeploy.runtime.passes.constant_channels import fold_constant_channels
from featherdeploy.runtime.passes.conv_add import fuse_conv_add
from featherdeploy.runtime.passes.conv_transpose import expand_conv_transpose
from featherdeploy.runtime.passes.identities import drop_identities
from featherdeploy.runtime.passes.sparse_gemm import sparse_gemm_as_conv

__all__ = ["PASSES", "run_passes", "reads", "consumers"]

Shapes = dict[str, tuple[int, ...]]
Pass = Callable[[Graph, Shapes, Callable[[Node], bool], PlannerOptions], Graph]

# In order: renames first, then folds that need the conv's plain weights, ConvTranspose into
# phase convs, sparse classifiers into convs, then fusions; gates last (after constant channels
# are folded: a gated conv's bias must not absorb them).
PASSES: tuple[Pass, ...] = (drop_identities, fold_batchnorm, expand_conv_transpose,
                            sparse_gemm_as_conv, fuse_conv_add, fuse_activation,
                            fuse_channel_shuffle, fold_constant_channels, fold_channel_gate)


def run_passes(graph: Graph, shapes: Shapes, native: Callable[[Node], bool],
               opts: PlannerOptions | None = None) -> Graph:
    """The rewritten graph; ``shapes`` gains the shapes of the tensors the passes make."""
    for rewrite in PASSES:
        graph = rewrite(graph, shapes, native, opts or PlannerOptions())
    return graph
