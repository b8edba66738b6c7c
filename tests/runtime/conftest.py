"""Runtime tests exercise the native kernels: pin the engine's backend to ``native`` for them.

(``auto`` would hand near-dense test graphs to ONNX Runtime; test_backend.py covers ``auto``.)
"""

import pytest


@pytest.fixture(autouse=True)
def _native_backend(monkeypatch):
    monkeypatch.setenv("FEATHERDEPLOY_BACKEND", "native")
