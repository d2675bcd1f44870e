"""Normalizations, reductions, pooling variants and weighted-op corner cases lowered to TFLite.

Float: each single-op model is compiled for ``tflite`` (these ops run as float islands, or the
whole model is float) and run in LiteRT under both resolvers, compared with ONNX Runtime.
int8: the op after an int8 Conv, checked by ``verify()`` against qcc's simulation on both resolvers.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import qcc
from qcc.backends._tflite_litert import interpreter, run
from qcc.errors import QccError
from tests.conftest import build_model, random_feeds
from tests.conftest import run as run_ort

_X4 = "float[1,4,6,6] x"

# name -> (opset, graph inputs, outputs, body, constants); inputs named w*/b*/gamma*/beta*/mean*/var*
# become random initializers (tests.conftest.build_model), the others are fed.
FLOAT_OPS = {
    "batchnorm": (15, f"{_X4}, float[4] gamma, float[4] beta, float[4] mean, float[4] var",
                  "float[1,4,6,6] y", "y = BatchNormalization(x, gamma, beta, mean, var)", {}),
    "batchnorm_run_time_statistics": (15, f"{_X4}, float[4] s, float[4] o, float[4] m, float[4] v",
                                      "float[1,4,6,6] y", "y = BatchNormalization<epsilon=0.01>(x, s, o, m, v)", {}),
    "batchnorm_training": (
        15, f"{_X4}, float[4] gamma, float[4] beta, float[4] m, float[4] v",
        "float[1,4,6,6] y, float[4] rm, float[4] rv",
        "y, rm, rv = BatchNormalization<training_mode=1, momentum=0.8>(x, gamma, beta, m, v)", {},
    ),
    "instance_norm": (17, f"{_X4}, float[4] gamma, float[4] beta", "float[1,4,6,6] y",
                      "y = InstanceNormalization<epsilon=0.001>(x, gamma, beta)", {}),
    "group_norm": (21, f"{_X4}, float[4] gamma, float[4] beta", "float[1,4,6,6] y",
                   "y = GroupNormalization<num_groups=2>(x, gamma, beta)", {}),
    "rms_norm": (23, f"{_X4}, float[6] gamma", "float[1,4,6,6] y", "y = RMSNormalization<axis=-1>(x, gamma)", {}),
    "mean_variance_norm": (13, _X4, "float[1,4,6,6] y", "y = MeanVarianceNormalization(x)", {}),
    "lp_norm_1": (17, _X4, "float[1,4,6,6] y", "y = LpNormalization<axis=1, p=1>(x)", {}),
    "lp_norm_2": (17, _X4, "float[1,4,6,6] y", "y = LpNormalization<axis=-1, p=2>(x)", {}),
    "lrn_odd": (17, _X4, "float[1,4,6,6] y", "y = LRN<size=3, alpha=0.3, beta=0.75, bias=2.0>(x)", {}),
    "layer_norm_statistics": (
        17, f"{_X4}, float[6,6] gamma, float[6,6] beta", "float[1,4,6,6] y, float[1,4,1,1] mu, float[1,4,1,1] inv",
        "y, mu, inv = LayerNormalization<axis=2>(x, gamma, beta)", {},
    ),
    "reduce_l1": (18, f"{_X4}, int64[1] axes", "float[1,6,6] y", "y = ReduceL1<keepdims=0>(x, axes)",
                  {"axes": np.array([1])}),
    "reduce_l2_all": (18, _X4, "float[1,1,1,1] y", "y = ReduceL2(x)", {}),
    "reduce_sum_square": (18, f"{_X4}, int64[2] axes", "float[1,4,1,1] y", "y = ReduceSumSquare(x, axes)",
                          {"axes": np.array([2, -1])}),
    "reduce_log_sum_exp": (18, f"{_X4}, int64[1] axes", "float[1,4,6] y",
                           "y = ReduceLogSumExp<keepdims=0>(x, axes)", {"axes": np.array([3])}),
    "reduce_prod": (18, f"{_X4}, int64[1] axes", "float[1,1,6,6] y", "y = ReduceProd(x, axes)",
                    {"axes": np.array([1])}),
    "reduce_sum_noop": (18, f"{_X4}, int64[0] axes", "float[1,4,6,6] y",
                        "y = ReduceSum<noop_with_empty_axes=1>(x, axes)", {"axes": np.zeros(0, np.int64)}),
    "reduce_sum_square_noop": (18, f"{_X4}, int64[0] axes", "float[1,4,6,6] y",
                               "y = ReduceSumSquare<noop_with_empty_axes=1>(x, axes)",
                               {"axes": np.zeros(0, np.int64)}),
    "log_softmax_last": (13, _X4, "float[1,4,6,6] y", "y = LogSoftmax(x)", {}),
    "log_softmax_channels": (13, _X4, "float[1,4,6,6] y", "y = LogSoftmax<axis=1>(x)", {}),
    "hardmax": (13, _X4, "float[1,4,6,6] y", "y = Hardmax<axis=1>(x)", {}),
    "maxpool_ceil": (17, _X4, "float[1,4,3,3] y", "y = MaxPool<kernel_shape=[3,3], strides=[2,2], ceil_mode=1>(x)", {}),
    "avgpool_ceil_include_pad": (
        17, _X4, "float[1,4,3,3] y",
        "y = AveragePool<kernel_shape=[3,3], strides=[3,3], pads=[1,1,1,1], ceil_mode=1, count_include_pad=1>(x)", {},
    ),
    "avgpool_pads_exclude": (17, _X4, "float[1,4,8,8] y",
                             "y = AveragePool<kernel_shape=[3,3], pads=[2,2,2,2]>(x)", {}),
    "avgpool_dilated": (19, _X4, "float[1,4,5,5] y",
                        "y = AveragePool<kernel_shape=[2,2], dilations=[2,2], pads=[1,0,0,1]>(x)", {}),
    "maxpool_dilated": (17, _X4, "float[1,4,2,2] y",
                        "y = MaxPool<kernel_shape=[3,3], dilations=[2,2], strides=[1,1]>(x)", {}),
    "maxpool_indices": (17, _X4, "float[1,4,3,3] y, int64[1,4,3,3] i",
                        "y, i = MaxPool<kernel_shape=[3,3], strides=[2,2], pads=[1,1,1,1]>(x)", {}),
    "maxpool_indices_column_major": (
        17, _X4, "float[1,4,3,3] y, int64[1,4,3,3] i",
        "y, i = MaxPool<kernel_shape=[2,2], strides=[2,2], storage_order=1>(x)", {},
    ),
    "lp_pool_2": (18, _X4, "float[1,4,5,5] y", "y = LpPool<kernel_shape=[2,2], p=2>(x)", {}),
    "lp_pool_3_pads": (18, _X4, "float[1,4,3,3] y",
                       "y = LpPool<kernel_shape=[3,3], strides=[2,2], pads=[1,1,1,1], p=3>(x)", {}),
    "lp_pool_1d": (18, "float[1,4,9] x", "float[1,4,8] y", "y = LpPool<kernel_shape=[2], p=1>(x)", {}),
    "global_lp_pool": (17, _X4, "float[1,4,1,1] y", "y = GlobalLpPool<p=3>(x)", {}),
    "conv_run_time_weight": (17, f"{_X4}, float[3,4,3,3] k, float[3] c", "float[1,3,6,6] y",
                             "y = Conv<pads=[1,1,1,1]>(x, k, c)", {}),
    "conv1d_run_time_weight": (17, "float[1,4,9] x, float[3,4,3] k", "float[1,3,4] y",
                               "y = Conv<strides=[2]>(x, k)", {}),
    "conv_transpose_run_time_weight": (17, f"{_X4}, float[4,2,3,3] k", "float[1,2,13,13] y",
                                       "y = ConvTranspose<strides=[2,2]>(x, k)", {}),
    "conv_transpose_pads_output_padding": (
        17, f"{_X4}, float[4,2,3,3] w", "float[1,2,13,11] y",
        "y = ConvTranspose<strides=[2,2], pads=[1,1,0,1], output_padding=[1,0]>(x, w)", {},
    ),
    "conv_transpose_dilated": (17, f"{_X4}, float[4,2,2,2] w", "float[1,2,9,9] y",
                               "y = ConvTranspose<dilations=[3,3]>(x, w)", {}),
    "conv_transpose_grouped": (17, f"{_X4}, float[4,3,3,3] w, float[6] b", "float[1,6,11,11] y",
                               "y = ConvTranspose<group=2, strides=[2,2], pads=[1,1,1,1]>(x, w, b)", {}),
    "conv3d": (17, "float[1,2,5,6,7] x, float[3,2,3,3,3] w, float[3] b", "float[1,3,3,3,2] y",
               "y = Conv<strides=[2,2,2], pads=[1,1,0,1,0,1], dilations=[1,1,2]>(x, w, b)", {}),
    "conv3d_transpose": (17, "float[1,2,3,4,3] x, float[2,3,2,3,2] w, float[3] b", "float[1,3,7,8,6] y",
                         "y = ConvTranspose<strides=[2,2,2], pads=[0,1,0,0,0,0], output_padding=[1,0,0]>(x, w, b)",
                         {}),
    "maxpool3d": (17, "float[1,2,5,6,7] x", "float[1,2,3,3,4] y",
                  "y = MaxPool<kernel_shape=[2,3,2], strides=[2,2,2], pads=[1,0,1,0,1,0], ceil_mode=1>(x)", {}),
    "avgpool3d_include_pad": (19, "float[1,2,5,6,7] x", "float[1,2,3,3,3] y",
                              "y = AveragePool<kernel_shape=[3,3,2], strides=[2,2,2], pads=[1,1,1,1,1,0], "
                              "count_include_pad=1, dilations=[1,1,2]>(x)", {}),
    "lp_pool_3d": (18, "float[1,2,5,6,7] x", "float[1,2,4,5,6] y", "y = LpPool<kernel_shape=[2,2,2], p=3>(x)", {}),
    "matmul_1d_1d": (13, "float[5] a, float[5] c, int64[1] ax", "float[1] y", "p = MatMul(a, c)\n y = Unsqueeze(p, ax)",
                     {"ax": np.array([0])}),
    "matmul_1d_constant": (13, "float[5] a, float[5,3] w", "float[3] y", "y = MatMul(a, w)", {}),
    "matmul_constant_1d": (13, "float[2,5] a, float[5] w", "float[2] y", "y = MatMul(a, w)", {}),
    "gemm_run_time_b": (13, "float[4,3] a, float[5,4] k, float[1,5] c", "float[3,5] y",
                        "y = Gemm<transA=1, transB=1, alpha=0.5, beta=2.0>(a, k, c)", {}),
    "gemm_run_time_b_relu": (13, "float[3,4] a, float[4,5] k", "float[3,5] y", "g = Gemm(a, k)\n y = Relu(g)", {}),
    "conv3d_relu": (17, "float[1,2,4,4,4] x, float[3,2,1,1,1] w", "float[1,3,4,4,4] y", "c = Conv(x, w)\n y = Relu(c)",
                    {}),
    "gemm_scalar_bias": (13, "float[2,3] a, float[3,4] w, float bs", "float[2,4] y", "y = Gemm(a, w, bs)",
                         {"bs": np.float32(0.75)}),
}
# Kept float in the float tests (qcc quantizes them when their weights are constants).
_WEIGHTED = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def _weighted(model) -> list[str]:
    """The weighted op types the model has: kept float, so the case tests the float rule."""
    return [op for op in _WEIGHTED if any(node.op_type == op for node in model.graph.node)]
# Inputs fed with positive values (variances).
_POSITIVE = {"v"}


def float_model(name: str) -> onnx.ModelProto:
    """The single-op model ``name`` of ``FLOAT_OPS``."""
    opset, inputs, outputs, body, constants = FLOAT_OPS[name]
    text = f'<ir_version: 9, opset_import: ["" : {opset}]>\ng ({inputs}) => ({outputs}) {{\n {body}\n}}\n'
    return build_model(text, constants=constants)


def _feed(model: onnx.ModelProto, seed: int = 3) -> dict[str, np.ndarray]:
    feed = random_feeds(model, 1, seed=seed)[0]
    for name in _POSITIVE & set(feed):
        feed[name] = np.abs(feed[name]) + 0.1
    return feed


def _reference(name: str, model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    if name != "batchnorm_training":
        return run_ort(model, feed)
    # ONNX Runtime's CPU kernel has no training mode: ONNX's definition, with the batch statistics.
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    x, v, m = feed["x"], feed["v"], feed["m"]
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    shape = (1, -1, 1, 1)
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + 1e-5)
    y = y * inits["gamma"].reshape(shape) + inits["beta"].reshape(shape)
    return [y, m * 0.8 + mean * 0.2, v * 0.8 + var * 0.2]


@pytest.mark.parametrize("name", sorted(FLOAT_OPS))
def test_float_op_matches_onnxruntime_on_both_resolvers(name):
    model = float_model(name)
    feed = _feed(model)
    result = qcc.compile(model, target="tflite", calibration=[feed], verify=False, exclude=_weighted(model))
    expected = _reference(name, model, feed)
    for resolver in ("xnnpack", "builtin"):
        got = run(interpreter(result.artifact.data, resolver), feed, [np.shape(e) for e in expected])
        for e, g in zip(expected, got, strict=True):
            np.testing.assert_allclose(np.asarray(g, np.float64), e, rtol=1e-4, atol=1e-4, err_msg=resolver)


_INT8_HEAD = '<ir_version: 9, opset_import: ["" : 17]>\n'
# name -> (body after c = Conv(x, w), output, extra inputs, constants): the op reads an int8 Conv's output.
INT8_OPS = {
    "maxpool_ceil": ("y = MaxPool<kernel_shape=[3,3], strides=[2,2], pads=[1,1,1,1], ceil_mode=1>(c)",
                     "float[1,8,5,5] y", "", {}),
    "maxpool_dilated": ("y = MaxPool<kernel_shape=[2,2], dilations=[2,2], pads=[1,1,1,1]>(c)", "float[1,8,8,8] y",
                        "", {}),
    "avgpool_ceil_include_pad": (
        "y = AveragePool<kernel_shape=[3,3], strides=[2,2], pads=[1,1,1,1], ceil_mode=1, count_include_pad=1>(c)",
        "float[1,8,5,5] y", "", {},
    ),
    # Without a bias: quantize-bias cannot yet size a grouped ConvTranspose's bias scales.
    "conv_transpose_grouped": ("y = ConvTranspose<group=2, strides=[2,2]>(c, wt)", "float[1,6,17,17] y",
                               ", float[8,3,3,3] wt", {}),
    "conv_transpose_cropped": ("y = ConvTranspose<strides=[2,2], pads=[1,0,0,1]>(c, wt)", "float[1,3,16,16] y",
                               ", float[8,3,3,3] wt", {}),
    "lrn_island": ("y = LRN<size=3, alpha=0.1>(c)", "float[1,8,8,8] y", "", {}),
    "instance_norm_island": ("y = InstanceNormalization(c, gamma, beta)", "float[1,8,8,8] y",
                             ", float[8] gamma, float[8] beta", {}),
    "gemm_scalar_bias": (
        "f = Flatten(c)\n g = Gemm(f, wf, bs)\n y = Relu(g)", "float[1,6] y", ", float[512,6] wf, float bs",
        {"bs": np.float32(0.5)},
    ),
}


def int8_model(name: str) -> onnx.ModelProto:
    """``x -> Conv -> <op>`` for the op ``name`` of ``INT8_OPS``."""
    body, out, extra, constants = INT8_OPS[name]
    text = (f"{_INT8_HEAD}g (float[1,8,8,8] x, float[8,8,1,1] w{extra}) => ({out}) {{\n"
            f" c = Conv(x, w)\n {body}\n}}\n")
    return build_model(text, constants=constants)


@pytest.mark.parametrize("name", sorted(INT8_OPS))
def test_int8_context_matches_the_simulation_on_both_resolvers(name):
    model = int8_model(name)
    result = qcc.compile(model, target="tflite", calibration=random_feeds(model, 8))
    for resolver, entry in result.report["verify"]["resolvers"].items():
        assert entry["ok"], (resolver, entry)


def test_int8_maxpool_keeps_its_input_parameters_through_the_padding():
    result = qcc.compile(int8_model("maxpool_ceil"), target="tflite", calibration=random_feeds(int8_model(
        "maxpool_ceil"), 4))
    ops = [op["op_name"] for op in interpreter(result.artifact.data, "builtin")._get_ops_details()]  # noqa: SLF001
    assert "PADV2" in ops and "MAX_POOL_2D" in ops, ops


@pytest.mark.parametrize(
    ("body", "inputs", "output", "message"),
    [
        ("y = ReduceL1(x, axes)", "float[1,4,6,6] x, int64[1] axes", "float[1,1,6,6] y", "axes given at run time"),
        ("y = ConvTranspose<group=2>(x, k)", "float[1,4,6,6] x, float[4,1,3,3] k", "float[1,2,8,8] y",
         "grouped ConvTranspose whose weight is not a constant"),
        ("y, i = MaxPool<kernel_shape=[2,2,2]>(x)", "float[1,4,6,6,6] x", "float[1,4,5,5,5] y, int64[1,4,5,5,5] i",
         "Indices of a 3-D window"),
    ],
)
def test_unsupported_cases_are_refused_with_the_reason(body, inputs, output, message):
    text = f'<ir_version: 9, opset_import: ["" : 18]>\ng ({inputs}) => ({output}) {{\n {body}\n}}\n'
    model = build_model(text)
    feed = random_feeds(model, 1)[0]
    if "axes" in feed:
        feed["axes"] = np.array([1], np.int64)
    with pytest.raises(QccError, match=message):
        qcc.compile(model, target="tflite", calibration=[feed], verify=False)


@pytest.mark.parametrize(
    ("name", "op_type"),
    [
        ("batchnorm", "BatchNormalization"),
        ("instance_norm", "InstanceNormalization"),
        ("lrn_odd", "LRN"),
        ("lp_pool_3_pads", "LpPool"),
        ("lp_pool_1d", "LpPool"),
        ("global_lp_pool", "GlobalLpPool"),
    ],
)
def test_channel_ops_also_lower_channels_last(name, op_type, monkeypatch):
    # If layout-nhwc moves these ops to channels-last, their rules follow the node's layout mark.
    from qcc.passes import layout_nhwc

    monkeypatch.setattr(layout_nhwc, "LAYOUT_OPS", layout_nhwc.LAYOUT_OPS | {op_type})
    monkeypatch.setattr(layout_nhwc, "ONE_D_LAYOUT_OPS", layout_nhwc.ONE_D_LAYOUT_OPS | {op_type})
    model = float_model(name)
    feed = _feed(model)
    result = qcc.compile(model, target="tflite", calibration=[feed], verify=False, exclude=_weighted(model))
    interp = interpreter(result.artifact.data, "builtin")
    ops = [op["op_name"] for op in interp._get_ops_details()]  # noqa: SLF001 - no public op listing
    assert ops[0] == "TRANSPOSE", ops  # the layout pass's, before the op
    expected = run_ort(model, feed)
    got = run(interp, feed, [np.shape(e) for e in expected])
    np.testing.assert_allclose(np.asarray(got[0], np.float64), expected[0], rtol=1e-4, atol=1e-4)
