"""Runtime tests exercise the native kernels: pin the engine's backend to ``native`` for them.

(``auto`` would hand near-dense test graphs to ONNX Runtime; test_backend.py covers ``auto``.)
"""

import pytest


@pytest.fixture(autouse=True)
def _native_backend(monkeypatch):
    monkeypatch.setenv("FEATHERDEPLOY_BACKEND", "native")


@pytest.fixture
def conv_specs(monkeypatch):
    """The spec dict of every conv the planner emits, in order (the same objects the plan is
    built from, so later planner decisions on them show too)."""
    import runtime.plan

    specs = []
    original = runtime.plan._Builder.emit

    def emit(self, method, *args):
        if method == "add_conv":
            specs.append(args[0])
        return original(self, method, *args)

    monkeypatch.setattr(runtime.plan._Builder, "emit", emit)
    return specs
