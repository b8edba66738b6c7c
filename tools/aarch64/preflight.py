"""Before the emulated tests (tools/aarch64/test.sh): print the machine and kernel variant they run
on, and check that the x86-only generated conv code (jit_x86.cpp) stays off there.

Usage: python tools/aarch64/preflight.py MODEL.onnx   (the exported ResNet-20x2)
"""

from __future__ import annotations

import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from featherdeploy import runtime
from featherdeploy.runtime import Engine, EngineOptions, _native


def batch_group_steps(model: str, sparsity: float = 0.9) -> set[str]:
    """Native step names (Engine.describe) of a batch of 16, batch-interleaved, for ``model``
    with ``sparsity`` of every non-stem conv weight zeroed: where x86-64 AVX-512 runs generated
    code (as in test_models.py test_generated_conv_code_in_batch_groups_matches_ort)."""
    proto = onnx.load(model)
    convs = {n.input[1] for n in proto.graph.node if n.op_type == "Conv"}
    rng = np.random.default_rng(0)
    for init in proto.graph.initializer:
        w = numpy_helper.to_array(init)
        if init.name in convs and w.shape[1] > 3:
            w = np.where(rng.random(w.shape) < sparsity, 0, w).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(w, init.name))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sparse.onnx"
        onnx.save(proto, str(path))
        options = EngineOptions(threads=1, backend="native", batch_layout="interleaved")
        report = Engine(path, options=options).describe(batch=16)
    return {step.split(":")[0] for node in report.nodes for step in node.steps
            if not step.startswith("fused into")}


def main(model: str) -> int:
    machine, isa = platform.machine(), runtime.native_isa()
    print(f"aarch64 run: platform.machine()={machine} runtime.native_isa()={isa} "
          f"vector_floats={_native.vector_floats()} python={platform.python_version()} "
          f"extension={_native.__file__.rsplit('/', 1)[-1]}")
    if machine != "aarch64" or isa != "generic":
        print("expected machine aarch64 and the generic kernel variant", file=sys.stderr)
        return 1
    steps = sorted(batch_group_steps(model))
    print(f"steps of a 90% sparse {Path(model).stem} batch-group plan: {' '.join(steps)}")
    if "conv_jit" in steps:
        print("conv_jit (x86-64 generated code) in an aarch64 plan", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
