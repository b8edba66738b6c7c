"""Kernel-level API: every native kernel family with a NumPy reference of the same signature.

``runtime.kernels.reference`` (NumPy, the definition) and ``runtime.kernels.native`` (one-step
native plans through the engine's planner) expose the same functions: ``conv2d``, ``pool2d``,
``global_pool``, ``affine``, ``add``, ``softmax``, ``gemm``, ``concat``; tests make them agree.
"""

__all__ = ["KERNEL_NAMES"]

KERNEL_NAMES = ("conv2d", "pool2d", "global_pool", "affine", "add", "softmax", "gemm", "concat")
