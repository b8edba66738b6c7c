"""Compile stage: sparse torch model -> folded ONNX, sparse-initializer ONNX, CSR/BSR packs."""
