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
@pytest.mark.parametrize("constant_first", [False, True])
def test_constant_channel_affine_folds_into_conv(add_shape, mul_shape, folded, constant_first):
    """Paddle writes the constant first (``Mul(scale, x)``): Mul and Add commute, so it folds too."""
    add, mul = ("Add(bias, c)", "Mul(wm, a)") if constant_first else ("Add(c, bias)", "Mul(a, wm)")
    mul_decl = f", float[{mul_shape}] wm" if mul_shape else ", float[] wm"
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[6,4,3,3] w, float[{add_shape}] bias{mul_decl}, float[1,4,8,8] x) => (float[1,6,8,8] y) {{
      c = Conv<pads=[1,1,1,1]>(x, w)
      a = {add}
      y = {mul}
    }}
    """
    model = build_model(text)
    result = float_passes(model, CanonicalizePass, FoldBatchNormPass)
    assert op_types(result) == (["Conv"] if folded else ["Conv", "Add", "Mul"])
    for feed in random_feeds(model, 2):
        np.testing.assert_allclose(run(to_proto(result), feed)[0], run(model, feed)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("pads", "group", "add_shape", "folded_ops"),
    [
        ("0,0,0,0", 1, "1,4,1,1", ["Conv"]),  # no padding: the shift folds into the bias
        ("1,1,1,1", 1, "1,4,1,1", ["Add", "Conv"]),  # padded border reads zeros: only the Mul folds
        ("0,0,0,0", 2, "1", ["Conv"]),
        ("0,0,0,0", 4, "4,1,1", ["Conv"]),  # depthwise
    ],
)
def test_affine_ahead_of_a_conv_folds_into_it(pads, group, add_shape, folded_ops):
    """An activation's learnable affine block (Paddle: HardSwish -> Mul(scale, x) -> Add) folds into the next Conv."""
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[8,{4 // group},3,3] w, float[8] b, float[1,4,1,1] wscale, float[{add_shape}] bshift, float[1,4,8,8] x)
        => (float y) {{
      h = HardSwish(x)
      m = Mul(wscale, h)
      a = Add(m, bshift)
      y = Conv<pads=[{pads}], group={group}>(a, w, b)
    }}
    """
    model = build_model(text)
    result = float_passes(model, CanonicalizePass, FoldBatchNormPass)
    assert op_types(result) == ["HardSwish", *folded_ops]
    for feed in random_feeds(model, 2):
        np.testing.assert_allclose(run(to_proto(result), feed)[0], run(model, feed)[0], rtol=1e-4, atol=1e-4)


def test_affine_that_broadcasts_channels_is_not_folded_into_the_conv():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[8,4,1,1] w, float[1,4,1,1] wscale, float[1,1,8,8] x) => (float y) {
      m = Mul(x, wscale)
      y = Conv(m, w)
    }
    """
    assert op_types(float_passes(build_model(text), CanonicalizePass, FoldBatchNormPass)) == ["Mul", "Conv"]
