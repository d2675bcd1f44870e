from __future__ import annotations

import numpy as np
import pytest

from qcc.passes.canonicalize import CanonicalizePass
from tests.conftest import build_model, float_passes, op_types, random_feeds, run, to_proto

SHAPE_SUBGRAPH = """
<ir_version: 8, opset_import: ["" : 17]>
g (int64[] zero, int64[1] zeros, int64[1] minus1, float[2,3,4,4] x) => (float[2,48] y) {
  i = Identity(x)
  d = Dropout(i)
  s = Shape(d)
  n = Gather<axis=0>(s, zero)
  n1 = Unsqueeze(n, zeros)
  shape = Concat<axis=0>(n1, minus1)
  y = Reshape(d, shape)
}
"""


def test_folds_shape_subgraph_and_removes_noops():
    model = build_model(
        SHAPE_SUBGRAPH,
        constants={"zero": np.array(0, np.int64), "zeros": np.array([0], np.int64), "minus1": np.array([-1], np.int64)},
    )
    ir_model = float_passes(model, CanonicalizePass)
    assert op_types(ir_model) == ["Reshape"]
    feed = random_feeds(model, 1)[0]
    np.testing.assert_array_equal(run(model, feed)[0], run(to_proto(ir_model), feed)[0])


def test_graph_output_name_survives_identity_removal():
    model = build_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1,4] x) => (float[1,4] y) {
          r = Relu(x)
          y = Identity(r)
        }
        """
    )
    ir_model = float_passes(model, CanonicalizePass)
    assert op_types(ir_model) == ["Relu"]
    assert [o.name for o in ir_model.graph.outputs] == ["y"]


def test_keeps_non_constant_nodes():
    model = build_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1,4] x) => (float[1,4] y) {
          y = Relu(x)
        }
        """
    )
    assert op_types(float_passes(model, CanonicalizePass)) == ["Relu"]


@pytest.mark.parametrize(("keepdims", "opset"), [(1, 17), (0, 17), (0, 18)])
def test_spatial_reduce_mean_becomes_global_average_pool(keepdims, opset):
    out = "float[2,3,1,1] y" if keepdims else "float[2,3] y"
    if opset >= 18:
        decl, call = "int64[2] axes, ", f"y = ReduceMean<keepdims={keepdims}>(x, axes)"
    else:
        decl, call = "", f"y = ReduceMean<axes=[2,3], keepdims={keepdims}>(x)"
    model = build_model(
        f"""
        <ir_version: 8, opset_import: ["" : {opset}]>
        g ({decl}float[2,3,5,5] x) => ({out}) {{
          {call}
        }}
        """,
        constants={"axes": np.array([2, 3], np.int64)},
    )
    result = float_passes(model, CanonicalizePass)
    assert op_types(result)[0] == "GlobalAveragePool"
    assert [o.name for o in result.graph.outputs] == ["y"]
    feed = random_feeds(model, 1)[0]
    np.testing.assert_allclose(run(to_proto(result), feed)[0], run(model, feed)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("pads", "value", "folded"),
    [
        ([0, 0, 1, 0, 0, 0, 2, 1], 0.0, True),
        ([1, 0, 0, 0, 0, 0, 0, 0], 0.0, False),
        ([0, 0, 1, 1, 0, 0, 1, 1], 0.5, False),
    ],
)
def test_zero_pad_folds_into_the_conv(pads, value, folded):
    model = build_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[4,3,3,3] w, int64[8] pads, float[] value, float[1,3,8,8] x) => (float[N,4,H,W] y) {
          p = Pad(x, pads, value)
          y = Conv<pads=[1,0,0,1]>(p, w)
        }
        """,
        constants={"pads": np.array(pads, np.int64), "value": np.array(value, np.float32)},
    )
    result = float_passes(model, CanonicalizePass)
    assert op_types(result) == (["Conv"] if folded else ["Pad", "Conv"])
    feed = random_feeds(model, 1)[0]
    np.testing.assert_allclose(run(to_proto(result), feed)[0], run(model, feed)[0], rtol=1e-5, atol=1e-5)


def test_gemm_factors_fold_into_its_constants_and_tflite_computes_them():
    import qcc

    model = build_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[16,8] w, float[8] b, float[4,16] x) => (float[4,8] y) {
          y = Gemm<alpha=0.5, beta=3.0>(x, w, b)
        }
        """,
    )
    result = float_passes(model, CanonicalizePass)
    gemm = next(iter(result.graph))
    assert gemm.attributes["alpha"].as_float() == 1.0 and gemm.attributes["beta"].as_float() == 1.0
    feed = random_feeds(model, 1)[0]
    np.testing.assert_allclose(run(to_proto(result), feed)[0], run(model, feed)[0], rtol=1e-5, atol=1e-5)
    feeds = random_feeds(model, 8)
    for target in ("ort", "trt", "tflite"):  # tflite's FULLY_CONNECTED ignored beta before
        compiled = qcc.compile(model, target=target, calibration=feeds, tolerance=None)
        assert compiled.report["verify"]["ok"]
        assert min(o["cosine_min"] for o in compiled.report["verify"]["fidelity"]["outputs"].values()) > 0.999
