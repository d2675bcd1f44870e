"""The model's own quantization ops and the other float islands of ``backends/_tflite_ops_quant.py``.

Each single-op model is compiled for ``tflite`` (the ops have no int8 kernel entry, so they are
float islands), run in LiteRT under both resolvers and compared with ONNX Runtime: integer
outputs exactly, float outputs within float32 rounding. BitCast (opset 26) is compared with a
numpy view. Refusals name their reason.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
import pytest

import qcc
from qcc.errors import QccError
from tests.conftest import build_model
from tests.conftest import run as run_ort
from tests.e2e.conformance import run_tflite

_RNG = np.random.default_rng(11)
_RESOLVERS = ("xnnpack", "builtin")


def _model(opset: int, graph: str) -> onnx.ModelProto:
    return onnx.parser.parse_model(f'<ir_version: 10, opset_import: ["" : {opset}]>\n{graph}')


def _compiled(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> bytes:
    return qcc.compile(model, target="tflite", calibration=[feed], verify=False).artifact.data


def _check(model: onnx.ModelProto, feed: dict[str, np.ndarray], expected=None) -> None:
    data = _compiled(model, feed)
    expected = run_ort(model, feed) if expected is None else expected
    for resolver in _RESOLVERS:
        got = run_tflite(data, feed, resolver)
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            g = np.asarray(g).reshape(np.shape(e))
            if np.issubdtype(np.asarray(e).dtype, np.integer):
                np.testing.assert_array_equal(g.astype(np.asarray(e).dtype), e, err_msg=resolver)
            else:
                np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5, err_msg=resolver)


def _x(*shape, scale=1.0) -> np.ndarray:
    return (_RNG.normal(0, 1, shape) * scale).astype(np.float32)


# Ties at every half step (ONNX and LiteRT's ROUND both round half to even) and values past saturation.
_TIES = np.array([[-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 300.0, -300.0]], np.float32)

# name -> (opset, graph text, feed)
CASES = {
    "quantize_per_tensor_uint8_ties": (
        13,
        "g (float[1,8] x) => (uint8[1,8] y) { s = Constant<value=float {1.0}>()\n"
        " z = Constant<value=uint8 {10}>()\n y = QuantizeLinear(x, s, z) }",
        {"x": _TIES},
    ),
    "dynamic_quantize_ties_unit_scale": (
        11,
        "g (float[2,4] x) => (uint8[2,4] y, float s, uint8 z) { y, s, z = DynamicQuantizeLinear(x) }",
        # min -128 and max 127 give scale 1 and zero point 128: every x.5 is a tie ROUND breaks to even.
        {"x": np.array([[-128.0, 127.0, -0.5, 0.5], [3.5, -2.5, 1.5, -101.5]], np.float32)},
    ),
    "dynamic_quantize_positive_only": (
        11,
        "g (float[1,3,4,5] x) => (uint8[1,3,4,5] y, float s, uint8 z) { y, s, z = DynamicQuantizeLinear(x) }",
        {"x": np.abs(_x(1, 3, 4, 5, scale=4))},
    ),
    "dynamic_quantize_negative_only": (
        11,
        "g (float[3,7] x) => (uint8[3,7] y, float s, uint8 z) { y, s, z = DynamicQuantizeLinear(x) }",
        {"x": -np.abs(_x(3, 7, scale=0.01))},
    ),
    "dynamic_quantize_all_zero": (
        11,
        "g (float[5] x) => (uint8[5] y, float s, uint8 z) { y, s, z = DynamicQuantizeLinear(x) }",
        {"x": np.zeros(5, np.float32)},
    ),
    "quantize_int8_raw_output": (
        13,
        "g (float[1,8] x) => (int8[1,8] y) { s = Constant<value=float {0.5}>()\n"
        " z = Constant<value=int8 {-3}>()\n y = QuantizeLinear(x, s, z) }",
        {"x": _TIES},
    ),
    "quantize_int16_per_axis": (
        21,
        "g (float[2,3,4] x, float[3] s, int16[3] z) => (int16[2,3,4] y) { y = QuantizeLinear<axis=1>(x, s, z) }",
        {
            "x": _x(2, 3, 4, scale=100),
            "s": np.array([0.01, 0.1, 0.003], np.float32),
            "z": np.array([5, -7, 100], np.int16),
        },
    ),
    "quantize_blocked_runtime_scale": (
        21,
        "g (float[2,6] x, float[2,2] s, uint8[2,2] z) => (uint8[2,6] y) "
        "{ y = QuantizeLinear<axis=1, block_size=3>(x, s, z) }",
        {
            "x": _x(2, 6, scale=3),
            "s": np.array([[0.02, 0.05], [0.1, 0.03]], np.float32),
            "z": np.array([[128, 100], [3, 250]], np.uint8),
        },
    ),
    "dequantize_int8_runtime_zero_point": (
        13,
        "g (int8[2,4] x, float s, int8 z, float[2,4] f) => (float[2,4] y, float[2,4] r) "
        "{ y = DequantizeLinear(x, s, z)\n r = Relu(f) }",
        {
            "x": np.array([[-128, -1, 0, 127], [5, 6, -7, 8]], np.int8),
            "s": np.array(0.25, np.float32),
            "z": np.array(-2, np.int8),
            "f": _x(2, 4),
        },
    ),
    "dequantize_int32_bias": (
        13,
        "g (int32[5] x, float[5] f) => (float[5] y, float[5] r) { s = Constant<value=float {0.001}>()\n"
        " z = Constant<value=int32 {7}>()\n y = DequantizeLinear(x, s, z)\n r = Relu(f) }",
        {"x": np.array([-100000, -5, 0, 7, 2000000], np.int32), "f": _x(5)},
    ),
    "dequantize_int16_per_axis_float16": (
        21,
        "g (int16[3,2] x, float16[2] s) => (float16[3,2] y) { y = DequantizeLinear<axis=1>(x, s) }",
        {"x": np.array([[-300, 20], [7, -8], [32767, -32768]], np.int16), "s": np.array([0.5, 0.001], np.float16)},
    ),
    "qlinear_matmul_int8": (
        21,
        "g (int8[2,3,4] a, float sa, int8 za, int8[4,5] b, float sb, int8 zb, float sy, int8 zy, float[1] f)"
        " => (int8[2,3,5] y, float[1] r) { y = QLinearMatMul(a, sa, za, b, sb, zb, sy, zy)\n r = Relu(f) }",
        {
            "a": _RNG.integers(-128, 128, (2, 3, 4)).astype(np.int8),
            "sa": np.array(0.02, np.float32),
            "za": np.array(3, np.int8),
            "b": _RNG.integers(-128, 128, (4, 5)).astype(np.int8),
            "sb": np.array(0.01, np.float32),
            "zb": np.array(-1, np.int8),
            "sy": np.array(0.05, np.float32),
            "zy": np.array(-4, np.int8),
            "f": _x(1),
        },
    ),
    "qlinear_conv_per_channel_pads_stride_bias": (
        13,
        "g (uint8[1,3,7,7] x, float sx, uint8 zx, int8[4,3,3,3] w, float[4] sw, int8[4] zw, float sy, uint8 zy, "
        "int32[4] b) => (uint8[1,4,4,4] y) "
        "{ y = QLinearConv<pads=[1,1,1,1], strides=[2,2]>(x, sx, zx, w, sw, zw, sy, zy, b) }",
        {
            "x": _RNG.integers(0, 256, (1, 3, 7, 7)).astype(np.uint8),
            "sx": np.array(0.02, np.float32),
            "zx": np.array(120, np.uint8),
            "w": _RNG.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8),
            "sw": np.array([0.01, 0.02, 0.005, 0.03], np.float32),
            "zw": np.zeros(4, np.int8),
            "sy": np.array(0.3, np.float32),
            "zy": np.array(100, np.uint8),
            "b": np.array([100, -2000, 0, 5000], np.int32),
        },
    ),
    "qlinear_conv_depthwise_int8": (
        13,
        "g (int8[1,2,5,5] x, float sx, int8 zx, int8[4,1,3,3] w, float sw, int8 zw, float sy, int8 zy) "
        '=> (int8[1,4,5,5] y) { y = QLinearConv<group=2, auto_pad="SAME_UPPER">(x, sx, zx, w, sw, zw, sy, zy) }',
        {
            "x": _RNG.integers(-128, 128, (1, 2, 5, 5)).astype(np.int8),
            "sx": np.array(0.05, np.float32),
            "zx": np.array(-3, np.int8),
            "w": _RNG.integers(-127, 128, (4, 1, 3, 3)).astype(np.int8),
            "sw": np.array(0.01, np.float32),
            "zw": np.array(0, np.int8),
            "sy": np.array(0.2, np.float32),
            "zy": np.array(5, np.int8),
        },
    ),
    "max_unpool": (
        11,
        "g (float[1,2,2,2] x, int64[1,2,2,2] i) => (float[1,2,4,4] y) "
        "{ y = MaxUnpool<kernel_shape=[2,2], strides=[2,2]>(x, i) }",
        {"x": _x(1, 2, 2, 2), "i": np.array([0, 3, 9, 14, 16, 22, 25, 31], np.int64).reshape(1, 2, 2, 2)},
    ),
    "det_3x3_batched": (11, "g (float[2,2,3,3] x) => (float[2,2] y) { y = Det(x) }", {"x": _x(2, 2, 3, 3)}),
    "det_4x4": (11, "g (float[4,4] x) => (float y) { y = Det(x) }", {"x": _x(4, 4)}),
    "det_1x1": (11, "g (float[3,1,1] x) => (float[3] y) { y = Det(x) }", {"x": _x(3, 1, 1)}),
    "nms_centre_boxes_two_classes_runtime_thresholds": (
        11,
        "g (float[1,6,4] boxes, float[1,2,6] scores, int64[1] m, float[1] iou, float[1] st) => (int64[5,3] y) "
        "{ y = NonMaxSuppression<center_point_box=1>(boxes, scores, m, iou, st) }",
        {
            "boxes": np.array(
                [
                    [
                        [0.5, 0.5, 1, 1],
                        [0.5, 0.6, 1, 1],
                        [0.5, 0.4, 1, 1],
                        [0.5, 10.5, 1, 1],
                        [0.5, 10.6, 1, 1],
                        [0.5, 100.5, 1, 1],
                    ]
                ],
                np.float32,
            ),
            "scores": np.array([[[0.9, 0.75, 0.6, 0.95, 0.5, 0.3], [0.1, 0.2, 0.9, 0.3, 0.8, 0.05]]], np.float32),
            "m": np.array([3], np.int64),
            "iou": np.array([0.5], np.float32),
            "st": np.array([0.15], np.float32),
        },
    ),
    "tfidf_uni_and_bigrams_tfidf_weights": (
        9,
        "g (int64[2,7] x) => (float[2,5] y) { y = TfIdfVectorizer<max_gram_length=2, min_gram_length=1, "
        'max_skip_count=1, mode="TFIDF", ngram_counts=[0, 3], ngram_indexes=[4, 0, 2, 1, 3], '
        "pool_int64s=[2, 3, 5, 2, 3, 5, 5], weights=[0.5, 1.5, 2.0, 3.0, 0.25]>(x) }",
        {"x": np.array([[2, 3, 2, 3, 5, 5, 7], [5, 5, 5, 2, 9, 3, 2]], np.int64)},
    ),
    "tfidf_idf": (
        9,
        "g (int32[8] x) => (float[3] y) { y = TfIdfVectorizer<max_gram_length=1, min_gram_length=1, "
        'max_skip_count=0, mode="IDF", ngram_counts=[0], ngram_indexes=[0, 1, 2], pool_int64s=[4, 1, 9]>(x) }',
        {"x": np.array([4, 4, 1, 7, 4, 0, 2, 1], np.int32)},
    ),
    "nll_mean_ignore_index_weight": (
        13,
        "g (float[3,4,2] x, int64[3,2] t, float[4] w) => (float y) "
        '{ y = NegativeLogLikelihoodLoss<reduction="mean", ignore_index=2>(x, t, w) }',
        {
            "x": _x(3, 4, 2),
            "t": np.array([[0, 2], [3, 1], [2, 1]], np.int64),
            "w": np.array([0.5, 2, 1, 3], np.float32),
        },
    ),
    "sce_sum_log_prob": (
        13,
        "g (float[2,5,3] x, int64[2,3] t) => (float z, float[2,5,3] lp) "
        '{ z, lp = SoftmaxCrossEntropyLoss<reduction="sum">(x, t) }',
        {"x": _x(2, 5, 3, scale=3), "t": np.array([[0, 4, 2], [1, 1, 3]], np.int64)},
    ),
}


def _weights_variant(model: onnx.ModelProto, feed: dict[str, np.ndarray]):
    """The model with every input after the first an initializer (constant scales, zero points, weights)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    first, *rest = list(model.graph.input)
    for value in rest:
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(feed[value.name]), value.name))
    del model.graph.input[:]
    model.graph.input.append(first)
    return model, {first.name: feed[first.name]}


@pytest.mark.parametrize("variant", ["inputs", "weights"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_float_island_matches_onnxruntime_on_both_resolvers(name, variant):
    opset, graph, feed = CASES[name]
    model = _model(opset, graph)
    if variant == "weights":
        model, feed = _weights_variant(model, feed)
    _check(model, feed)


@pytest.mark.parametrize(
    ("source", "target", "values"),
    [
        ("float", "int32", np.array([1.0, -2.5, 3.75, 0.1], np.float32)),
        ("int32", "float", np.array([1065353216, -1071644672, 7, 0], np.int32)),
        ("float16", "int16", np.array([1.0, -2.5, 65504.0, 0.1], np.float16)),
        ("double", "int64", np.array([1.0, -2.5, 1e300, 0.1], np.float64)),
    ],
)
def test_bitcast_reinterprets_the_bits(source, target, values):
    model = _model(26, f"g ({source}[4] x) => ({target}[4] y) {{ y = BitCast<to={_onnx_type(target)}>(x) }}")
    expected = values.view({"int32": np.int32, "float": np.float32, "int16": np.int16, "int64": np.int64}[target])
    _check(model, {"x": values}, [expected])


def _onnx_type(name: str) -> int:
    return {"float": 1, "int32": 6, "int16": 5, "int64": 7}[name]


def test_the_models_own_quantize_dequantize_is_a_float_island_between_int8_convolutions():
    model = build_model(
        '<ir_version: 8, opset_import: ["" : 13]>\n'
        "g (float[1,4,6,6] x, float[4,4,1,1] w1, float[4,4,1,1] w2) => (float[1,4,6,6] y) {"
        " c = Conv(x, w1)\n s = Constant<value=float {0.05}>()\n z = Constant<value=uint8 {128}>()\n"
        " q = QuantizeLinear(c, s, z)\n d = DequantizeLinear(q, s, z)\n y = Conv(d, w2) }"
    )
    feeds = [{"x": _x(1, 4, 6, 6)} for _ in range(4)]
    result = qcc.compile(model, target="tflite", calibration=feeds)
    decisions = {node["op_type"]: node["decision"] for node in result.report["nodes"]}
    assert decisions == {"Conv": "int8", "QuantizeLinear": "float", "DequantizeLinear": "float"}
    for resolver, entry in result.report["verify"]["resolvers"].items():
        assert entry["ok"], (resolver, entry)
        assert entry["within_one_step"] >= 0.99, (resolver, entry)


@pytest.mark.parametrize(
    ("opset", "graph", "feed", "message"),
    [
        (
            21,
            "g (float[4] x) => (uint16[4] y) { s = Constant<value=float {1.0}>()\n"
            " z = Constant<value=uint16 {3}>()\n y = QuantizeLinear(x, s, z) }",
            {"x": _x(4)},
            "uint16 quantized data",
        ),
        (11, "g (float[5,5] x) => (float y) { y = Det(x) }", {"x": _x(5, 5)}, "5x5 determinant"),
        (
            11,
            "g (float[1,3,4] b, float[1,1,3] s) => (int64[0,3] y) { y = NonMaxSuppression(b, s) }",
            {"b": _x(1, 3, 4), "s": _x(1, 1, 3)},
            "declares a number of selected boxes above 0",
        ),
    ],
)
def test_refusals_name_the_reason(opset, graph, feed, message):
    with pytest.raises(QccError, match=message):
        _compiled(_model(opset, graph), feed)
