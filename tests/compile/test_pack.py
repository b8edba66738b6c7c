"""compile/pack.py: block-shape parsing and what goes into weights.fdpack."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from featherdeploy.compile.errors import CompileError
from featherdeploy.compile.pack import parse_block_shapes
from featherdeploy.compile.pipeline import CompileOptions, compile_model
from featherdeploy.compile.verify import verify_pack
from featherdeploy.runtime.formats import ConvAttributes, pack_weight, read_pack, write_pack
from featherdeploy.train.prunable import prunable_parameters
from tests.compile.helpers import TinyNet, randomize_batchnorm_, sparsify_


def test_parse_block_shapes() -> None:
    assert parse_block_shapes("1x1,1x4,4x1,4x4") == ((1, 1), (1, 4), (4, 1), (4, 4))
    assert parse_block_shapes(" 2x3 , 2x3") == ((2, 3),)


@pytest.mark.parametrize("text", ["", "4", "0x4", "ax4", "1x4,", "1*4"])
def test_parse_block_shapes_rejects_bad_text(text: str) -> None:
    with pytest.raises(CompileError, match="block shape"):
        parse_block_shapes(text)


def test_pack_holds_the_deployed_weights_with_conv_attributes(tmp_path: Path) -> None:
    model = randomize_batchnorm_(sparsify_(TinyNet(), 0.8, seed=1), seed=2).eval()
    out = tmp_path / "art"
    result = compile_model(model, (1, 12, 12), out, CompileOptions(verify_images=4))
    pack = read_pack(out / "weights.fdpack")
    assert list(pack) == list(prunable_parameters(model))
    initializers = {init.name: numpy_helper.to_array(init)
                    for init in onnx.load(str(out / "model.onnx")).graph.initializer}
    for fqn, layer in pack.items():
        assert layer.onnx_initializer == result.report["initializer_map"][fqn]
        onnx_weight = initializers[layer.onnx_initializer]
        assert np.array_equal(layer.to_weight(), onnx_weight)  # bit-exact (+-0 equal)
        assert layer.nnz == np.count_nonzero(onnx_weight)
        assert sorted(layer.encodings) == [(1, 1), (1, 4), (4, 1), (4, 4)]
        for encoding in layer.encodings.values():
            assert np.array_equal(encoding.to_dense(), layer.csr.to_dense())
    assert pack["conv1.weight"].conv == ConvAttributes((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1)
    assert pack["dw.weight"].conv == ConvAttributes((3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 8)
    assert pack["pw.weight"].conv == ConvAttributes((1, 1))
    assert pack["fc.weight"].op == "Gemm" and pack["fc.weight"].conv is None
    # The pack holds the BN-folded weight, not the trained one.
    assert not np.array_equal(pack["conv1.weight"].to_weight(),
                              model.conv1.weight.detach().numpy())


def test_verify_pack_catches_a_weight_that_does_not_round_trip(tmp_path: Path) -> None:
    weight = np.zeros((4, 2, 3, 3), dtype=np.float32)
    weight[1, 0, 2, 2] = 0.5
    write_pack(tmp_path / "w.fdpack", [pack_weight("c.weight", weight, op="Conv")])
    assert verify_pack(str(tmp_path / "w.fdpack"), {"c.weight": weight}) == 1
    changed = weight.copy()
    changed[1, 0, 2, 2] = np.nextafter(np.float32(0.5), np.float32(1))  # one ulp
    with pytest.raises(CompileError, match="does not rebuild"):
        verify_pack(str(tmp_path / "w.fdpack"), {"c.weight": changed})
    with pytest.raises(CompileError, match="pack layers"):
        verify_pack(str(tmp_path / "w.fdpack"), {"other.weight": weight})
