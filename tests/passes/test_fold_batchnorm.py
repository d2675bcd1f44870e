from __future__ import annotations

import numpy as np
import pytest

from qcc.passes.canonicalize import CanonicalizePass
from qcc.passes.fold_batchnorm import FoldBatchNormPass
from tests.conftest import build_model, float_passes, op_types, random_feeds, run, to_proto

CONV_BN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4,8,8] x) => (float[1,6,8,8] y) {
  c = Conv<pads=[1,1,1,1], group=GROUP>(x, w, b)
  y = BatchNormalization<epsilon=0.001>(c, gamma, beta, mean, var)
}
"""

CONVT_BN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4,8,8] x) => (float[1,6,16,16] y) {
  c = ConvTranspose<strides=[2,2], group=2>(x, w)
  y = BatchNormalization(c, gamma, beta, mean, var)
}
"""

GEMM_BN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[3,5] x) => (float[3,6] y) {
  c = Gemm<transB=TRANSB, beta=0.5>(x, w, b)
  y = BatchNormalization(c, gamma, beta, mean, var)
}
"""


def _decl(text: str, decls: str) -> str:
    return text.replace("(float[", f"({decls}, float[", 1)


@pytest.mark.parametrize("group", [1, 2])
def test_conv(group):
    text = _decl(
        CONV_BN.replace("GROUP", str(group)),
        f"float[6,{4 // group},3,3] w, float[6] b, float[6] gamma, float[6] beta, float[6] mean, float[6] var",
    )
    _check_folded(build_model(text), "Conv")


def test_conv_transpose_grouped():
    text = _decl(CONVT_BN, "float[4,3,2,2] w, float[6] gamma, float[6] beta, float[6] mean, float[6] var")
    _check_folded(build_model(text), "ConvTranspose")


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm(trans_b):
    shape = "6,5" if trans_b else "5,6"
    text = _decl(
        GEMM_BN.replace("TRANSB", str(trans_b)),
        f"float[{shape}] w, float[6] b, float[6] gamma, float[6] beta, float[6] mean, float[6] var",
    )
    _check_folded(build_model(text), "Gemm")


def test_not_folded_when_conv_output_is_shared():
    text = _decl(
        CONV_BN.replace("GROUP", "1").replace("=> (float[1,6,8,8] y)", "=> (float[1,6,8,8] y, float[1,6,8,8] c)"),
        "float[6,4,3,3] w, float[6] b, float[6] gamma, float[6] beta, float[6] mean, float[6] var",
    )
    assert "BatchNormalization" in op_types(float_passes(build_model(text), CanonicalizePass, FoldBatchNormPass))


def _check_folded(model, op_type):
    folded = float_passes(model, CanonicalizePass, FoldBatchNormPass)
    assert op_types(folded) == [op_type]
    assert [o.name for o in folded.graph.outputs] == ["y"]
    for feed in random_feeds(model, 3):
        np.testing.assert_allclose(run(to_proto(folded), feed)[0], run(model, feed)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("add_shape", "mul_shape", "folded"),
    [("1,6,1,1", "", True), ("6,1,1", "6,1,1", True), ("1", "1,6,1,1", True), ("1,6,8,8", "", False)],
)
def test_constant_channel_affine_folds_into_conv(add_shape, mul_shape, folded):
    mul_decl = f", float[{mul_shape}] wm" if mul_shape else ", float[] wm"
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[6,4,3,3] w, float[{add_shape}] bias{mul_decl}, float[1,4,8,8] x) => (float[1,6,8,8] y) {{
      c = Conv<pads=[1,1,1,1]>(x, w)
      a = Add(c, bias)
      y = Mul(a, wm)
    }}
    """
    model = build_model(text)
    result = float_passes(model, CanonicalizePass, FoldBatchNormPass)
    assert op_types(result) == (["Conv"] if folded else ["Conv", "Add", "Mul"])
    for feed in random_feeds(model, 2):
        np.testing.assert_allclose(run(to_proto(result), feed)[0], run(model, feed)[0], rtol=1e-4, atol=1e-4)
