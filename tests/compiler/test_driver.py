"""The driver's recovery paths: non-finite tensors are kept float, with the reason reported."""

from __future__ import annotations

import numpy as np

import qcc
from tests.conftest import build_model, random_feeds


def test_constant_mask_stays_float_with_reason():
    model = build_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[8,8] w, float[1,8] mask, float[1,2,8] x) => (float[1,2,8] y) {
          s = MatMul(x, w)
          y = Add(s, mask)
        }
        """,
        constants={"mask": np.array([[0, 0, 0, 0, -np.inf, -np.inf, 0, 0]], np.float32)},
    )
    result = qcc.compile(model, calibration=random_feeds(model, 4))
    add = next(n for n in result.report["nodes"] if n["op_type"] == "Add")
    assert add["decision"] == "float" and "cannot represent" in add["reason"]
    assert result.report["verify"]["ok"]


def test_weighted_op_with_non_finite_bias_stays_float():
    model = build_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[8,8] w, float[8] b, float[1,8] x) => (float[1,8] y) {
          y = Gemm(x, w, b)
        }
        """,
        constants={"b": np.array([0, 0, 0, -np.inf, 0, 0, 0, 0], np.float32)},
    )
    result = qcc.compile(model, calibration=random_feeds(model, 4))
    gemm = result.report["nodes"][0]
    assert gemm["decision"] == "float" and "NaN or Inf" in gemm["reason"]


def test_tensors_that_calibrate_to_inf_are_replanned_float():
    # Log(Relu(x)) is -inf wherever x <= 0: the MatMul reading it cannot be int8.
    model = build_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[8,8] w1, float[8,8] w2, float[1,8] x) => (float[1,8] y) {
          h = MatMul(x, w1)
          r = Relu(h)
          l = Log(r)
          e = Exp(l)
          y = MatMul(l, w2)
        }
        """
    )
    result = qcc.compile(model, calibration=random_feeds(model, 8))
    by_name = {n["name"]: n for n in result.report["nodes"]}
    assert by_name["y"]["decision"] == "float" and "non-finite" in by_name["y"]["reason"]
    assert by_name["h"]["decision"] == "int8"
    assert result.report["verify"]["quantized_but_float"] == []


def test_auto_method_compiles_each_method_and_keeps_the_closest():
    from tests.e2e.synthetic import synthetic_model

    model = synthetic_model("residual_cnn")
    result = qcc.compile(model, calibration=random_feeds(model, 8), method="auto")
    selection = result.report["method_selection"]
    scores = selection["output_cosine"]
    assert set(scores) == {"minmax", "meanmax", "percentile", "mse", "entropy"}
    assert scores[selection["chosen"]] >= max(scores.values()) - 0.002
    assert result.report["verify"]["ok"]


def test_auto_method_reads_a_one_shot_iterator_once_for_every_compile():
    from tests.e2e.synthetic import synthetic_model

    model = synthetic_model("mlp")
    feeds = random_feeds(model, 4)
    from_iterator = qcc.compile(model, calibration=iter(feeds), method="auto")
    from_list = qcc.compile(model, calibration=feeds, method="auto")
    assert from_iterator.report["method_selection"] == from_list.report["method_selection"]
    assert from_iterator.artifact.data == from_list.artifact.data
