"""Fuzzing of the runtime against ONNX Runtime: seed models (seeds.py), mutations (mutate.py),
the forked-child harness and its classes (harness.py), the CI sample (test_fuzz_sample.py)."""
