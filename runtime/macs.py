"""Multiply-accumulate (MAC) counting, the one definition every stage uses.

Rules (docs/algorithms.md section 6, as the Feather / ST-3 / EAST papers count): only Conv and
Gemm/Linear layers count; one multiply-add is one MAC (FLOPs ~= 2 x MACs); BN, activations,
pooling and additions are ignored. Sparse MACs scale dense MACs by the layer's density.

Checks: torchvision ResNet-50 at 224x224 has 4,089,184,256 dense MACs.
"""

from __future__ import annotations

__all__ = ["conv_macs", "linear_macs", "sparse_macs", "conv_output_size"]


def conv_output_size(size: int, kernel: int, stride: int = 1, pad_total: int = 0,
                     dilation: int = 1) -> int:
    """Output length of a convolution along one axis: floor((n + pads - d(k-1) - 1) / s) + 1."""
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def conv_macs(out_channels: int, in_channels: int, groups: int, kernel_h: int, kernel_w: int,
              out_h: int, out_w: int) -> int:
    """Dense MACs of one Conv2d image: out_ch * (in_ch / groups) * kh * kw * H_out * W_out."""
    if in_channels % groups:
        raise ValueError(f"in_channels={in_channels} is not divisible by groups={groups}")
    return out_channels * (in_channels // groups) * kernel_h * kernel_w * out_h * out_w


def linear_macs(out_features: int, in_features: int) -> int:
    """Dense MACs of one Linear/Gemm row: out_features * in_features."""
    return out_features * in_features


def sparse_macs(dense: int, nnz: int, numel: int) -> int:
    """Sparse MACs = dense MACs * nnz / numel, rounded to the nearest integer."""
    if numel <= 0:
        raise ValueError("numel must be positive")
    if not 0 <= nnz <= numel:
        raise ValueError(f"nnz={nnz} outside [0, {numel}]")
    return (dense * nnz + numel // 2) // numel
