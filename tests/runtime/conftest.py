"""Runtime tests exercise the native kernels: pin the engine's backend to ``native`` for them.

(``auto`` would hand near-dense test graphs to ONNX Runtime; test_backend.py covers ``auto``.)
"""

import pytest


@pytest.fixture(autouse=True)
def _native_backend(monkeypatch):
    monkeypatch.setenv("FEATHERDEPLOY_BACKEND", "native")


@pytest.fixture
def conv_specs(monkeypatch):
    """The native ConvSpec of every conv the planner emits, in order (the objects the plan is
    built from, so later planner decisions on them show too; their arrays move into the plan)."""
    from featherdeploy.runtime import _native
    from featherdeploy.runtime.planner.builder import Builder

    specs = []
    original = Builder.emit

    def emit(self, spec, **kwargs):
        if isinstance(spec, _native.ConvSpec):
            specs.append(spec)
        return original(self, spec, **kwargs)

    monkeypatch.setattr(Builder, "emit", emit)
    return specs
