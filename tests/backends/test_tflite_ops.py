"""Single-op models lowered to TFLite, int8 and float, run in LiteRT under both resolvers.

int8: compiled for ``tflite`` and checked by ``verify()`` against qcc's ORT QDQ simulation (within
one quantization step) on both resolvers. float: the float pipeline written by the same emitter,
compared with ONNX Runtime on the float model.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import qcc
from qcc import frontend
from qcc.backends import get_backend
from qcc.backends._tflite_litert import interpreter, run
from qcc.backends.tflite import write_tflite
from qcc.context import PassContext
from qcc.options import CompileOptions
from qcc.pipeline import run_pipeline
from tests.conftest import build_model, random_feeds
from tests.conftest import run as run_ort

_HEAD = '<ir_version: 8, opset_import: ["" : 17]>\n'
_X = "float[1,8,8,8] x"

# name -> (graph signature, body, constants)
OPS = {
    "conv": ("float[16,8,3,3] w, float[16] b", "y = Conv<pads=[1,1,1,1]>(x, w, b)", {}),
    "conv_stride2_pads": ("float[16,8,3,3] w, float[16] b", "y = Conv<pads=[1,1,1,1], strides=[2,2]>(x, w, b)", {}),
    "conv_same_upper": ("float[8,8,3,3] w", 'y = Conv<auto_pad="SAME_UPPER", strides=[2,2]>(x, w)', {}),
    "depthwise": ("float[8,1,3,3] w, float[8] b", "y = Conv<pads=[1,1,1,1], group=8>(x, w, b)", {}),
    "depthwise_multiplier": ("float[16,1,3,3] w, float[16] b", "y = Conv<group=8>(x, w, b)", {}),
    "grouped": ("float[8,4,1,1] w, float[8] b", "y = Conv<group=2>(x, w, b)", {}),
    "conv_relu": ("float[8,8,1,1] w, float[8] b", "c = Conv(x, w, b)\n y = Relu(c)", {}),
    "conv_relu6": (
        "float[8,8,1,1] w, float[8] b, float[] lo, float[] hi",
        "c = Conv(x, w, b)\n y = Clip(c, lo, hi)",
        {"lo": np.float32(0), "hi": np.float32(6)},
    ),
    "add": ("float[8,8,1,1] w", "c = Conv(x, w)\n y = Add(c, x)", {}),
    "add_const": ("float[8,8,1,1] w, float[1,8,1,1] bc", "c = Conv(x, w)\n y = Add(c, bc)", {}),
    "sub": ("float[8,8,1,1] w", "c = Conv(x, w)\n y = Sub(c, x)", {}),
    "mul": ("float[8,8,1,1] w", "c = Conv(x, w)\n y = Mul(c, x)", {}),
    "maxpool": ("float[8,8,1,1] w", "c = Conv(x, w)\n y = MaxPool<kernel_shape=[2,2], strides=[2,2]>(c)", {}),
    "maxpool_pads": (
        "float[8,8,1,1] w",
        "c = Conv(x, w)\n y = MaxPool<kernel_shape=[3,3], strides=[2,2], pads=[1,1,1,1]>(c)",
        {},
    ),
    "avgpool": ("float[8,8,1,1] w", "c = Conv(x, w)\n y = AveragePool<kernel_shape=[2,2], strides=[2,2]>(c)", {}),
    "global_avgpool": ("float[8,8,1,1] w", "c = Conv(x, w)\n y = GlobalAveragePool(c)", {}),
    "reduce_mean": ("float[8,8,1,1] w", "c = Conv(x, w)\n y = ReduceMean<axes=[1], keepdims=1>(c)", {}),
    "concat_channels": ("float[8,8,1,1] w", "c = Conv(x, w)\n y = Concat<axis=1>(c, x)", {}),
    "sigmoid": ("float[8,8,1,1] w", "c = Conv(x, w)\n y = Sigmoid(c)", {}),
    "silu": ("float[8,8,1,1] w", "c = Conv(x, w)\n s = Sigmoid(c)\n y = Mul(c, s)", {}),
    "tanh": ("float[8,8,1,1] w", "c = Conv(x, w)\n y = Tanh(c)", {}),
    "hardswish": ("float[8,8,1,1] w", "c = Conv(x, w)\n y = HardSwish(c)", {}),
    "leaky_relu": ("float[8,8,1,1] w", "c = Conv(x, w)\n y = LeakyRelu<alpha=0.1>(c)", {}),
    "softmax_channels": ("float[8,8,1,1] w", "c = Conv(x, w)\n y = Softmax<axis=1>(c)", {}),
    "pad": (
        "float[8,8,1,1] w, int64[8] pads",
        "c = Conv(x, w)\n y = Pad(c, pads)",
        {"pads": np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64)},
    ),
    "resize_nearest": (
        "float[8,8,1,1] w, float[4] scales",
        'c = Conv(x, w)\n y = Resize<mode="nearest">(c, , scales)',
        {"scales": np.array([1, 1, 2, 2], np.float32)},
    ),
    "resize_bilinear": (
        "float[8,8,1,1] w, float[4] scales",
        'c = Conv(x, w)\n y = Resize<mode="linear">(c, , scales)',
        {"scales": np.array([1, 1, 2, 2], np.float32)},
    ),
    "slice_channels": (
        "float[8,8,1,1] w, int64[1] st, int64[1] en, int64[1] ax",
        "c = Conv(x, w)\n y = Slice(c, st, en, ax)",
        {"st": np.array([2]), "en": np.array([6]), "ax": np.array([1])},
    ),
    "split_channels": (
        "float[8,8,1,1] w",
        "c = Conv(x, w)\n a, b2 = Split<axis=1, num_outputs=2>(c)\n y = Add(a, b2)",
        {},
    ),
    "transpose_reshape": (
        "float[8,8,1,1] w, int64[2] shape",
        "c = Conv(x, w)\n y = Reshape(c, shape)",
        {"shape": np.array([1, 512])},
    ),
    "flatten_gemm": (
        "float[8,8,1,1] w, float[10,512] wf, float[10] bf",
        "c = Conv(x, w)\n f = Flatten(c)\n y = Gemm<transB=1>(f, wf, bf)",
        {},
    ),
    "conv_transpose": ("float[8,4,2,2] w, float[4] b", "y = ConvTranspose<strides=[2,2]>(x, w, b)", {}),
    "conv_transpose_same": ("float[8,4,3,3] w", "y = ConvTranspose<strides=[2,2], pads=[0,0,1,1]>(x, w)", {}),
    "softmax_spatial": ("float[8,8,1,1] w", "c = Conv(x, w)\n y = Softmax<axis=2>(c)", {}),
    "erf_island": ("float[8,8,1,1] w", "c = Conv(x, w)\n y = Erf(c)", {}),
    "layer_norm_island": (
        "float[8,8,1,1] w, float[8] gamma, float[8] beta",
        "c = Conv(x, w)\n y = LayerNormalization<axis=-1>(c, gamma, beta)",
        {},
    ),
    "resize_nearest_3x_asymmetric": (
        "float[8,8,1,1] w, float[4] scales",
        'c = Conv(x, w)\n y = Resize<mode="nearest", coordinate_transformation_mode="asymmetric", '
        'nearest_mode="floor">(c, , scales)',
        {"scales": np.array([1, 1, 3, 2], np.float32)},
    ),
    "gemm_no_trans": ("float[8,8,1,1] w, float[512,10] wf", "c = Conv(x, w)\n f = Flatten(c)\n y = Gemm(f, wf)", {}),
    "matmul_3d": ("float[8,8,1,1] w, float[8,4] wm", "c = Conv(x, w)\n y = MatMul(c, wm)", {}),
    "batch_matmul": ("float[8,8,1,1] w", "c = Conv(x, w)\n t = Transpose<perm=[0,1,3,2]>(c)\n y = MatMul(c, t)", {}),
    "prelu": ("float[8,8,1,1] w, float[1,8,1,1] slope", "c = Conv(x, w)\n y = PRelu(c, slope)", {}),
    "transpose": ("float[8,8,1,1] w", "c = Conv(x, w)\n y = Transpose<perm=[0,2,1,3]>(c)", {}),
    "unsqueeze_squeeze": (
        "float[8,8,1,1] w, int64[1] ax",
        "c = Conv(x, w)\n u = Unsqueeze(c, ax)\n y = Squeeze(u, ax)",
        {"ax": np.array([2])},
    ),
    "strided_slice": (
        "float[8,8,1,1] w, int64[2] st, int64[2] en, int64[2] ax, int64[2] sp",
        "c = Conv(x, w)\n y = Slice(c, st, en, ax, sp)",
        {"st": np.array([0, 1]), "en": np.array([8, 8]), "ax": np.array([2, 3]), "sp": np.array([2, 2])},
    ),
    "split_unequal": (
        "float[8,8,1,1] w, int64[2] sizes",
        "c = Conv(x, w)\n a, b2 = Split<axis=1>(c, sizes)\n y = Concat<axis=1>(b2, a)",
        {"sizes": np.array([3, 5])},
    ),
    "concat_fixed_and_free": ("float[8,8,1,1] w", "c = Conv(x, w)\n s = Sigmoid(c)\n y = Concat<axis=1>(s, c)", {}),
    "clip_other": (
        "float[8,8,1,1] w, float[] lo, float[] hi",
        "c = Conv(x, w)\n y = Clip(c, lo, hi)",
        {"lo": np.float32(-0.5), "hi": np.float32(0.7)},
    ),
    "div_const_island": ("float[8,8,1,1] w, float[] d", "c = Conv(x, w)\n y = Div(c, d)", {"d": np.float32(3)}),
    "hardsigmoid_island": ("float[8,8,1,1] w", "c = Conv(x, w)\n h = HardSigmoid(c)\n y = Mul(c, h)", {}),
    "gather_channels": (
        "float[8,8,1,1] w, int64[3] idx",
        "c = Conv(x, w)\n y = Gather<axis=1>(c, idx)",
        {"idx": np.array([5, -1, 0])},
    ),
    "gather_scalar_index": ("float[8,8,1,1] w, int64 idx", "c = Conv(x, w)\n y = Gather<axis=2>(c, idx)", {"idx": -2}),
    "expand_broadcast": (
        "float[8,8,1,1] w, int64[4] shape",
        "c = Conv(x, w)\n r = ReduceMean<axes=[1]>(c)\n e = Expand(r, shape)\n y = Add(e, c)",
        {"shape": np.array([1, 8, 1, 1])},
    ),
    "expand_unit": (
        "float[8,8,1,1] w, int64[3] shape",
        "c = Conv(x, w)\n y = Expand(c, shape)",
        {"shape": np.array([1, 1, 1])},
    ),
    "where_const_condition": (
        "float[8,8,1,1] w, bool[1,1,8,8] cond",
        "c = Conv(x, w)\n y = Where(cond, c, x)",
        {"cond": np.random.default_rng(0).random((1, 1, 8, 8)) > 0.5},
    ),
    "isnan_where": (
        "float[8,8,1,1] w, float[1] zero",
        "c = Conv(x, w)\n n = IsNaN(c)\n y = Where(n, zero, c)",
        {"zero": np.zeros(1, np.float32)},
    ),
    "compare_select": (
        "float[8,8,1,1] w",
        "c = Conv(x, w)\n g = GreaterOrEqual(c, x)\n l = Less(c, x)\n k = Or(g, l)\n y = Where(k, c, x)",
        {},
    ),
    "cast_truncates": (
        "float[8,8,1,1] w, float[] four",
        "c = Conv(x, w)\n s = Mul(c, four)\n i = Cast<to=6>(s)\n y = Cast<to=1>(i)",
        {"four": np.float32(4)},
    ),
    "reciprocal_island": ("float[8,8,1,1] w", "c = Conv(x, w)\n e = Exp(c)\n y = Reciprocal(e)", {}),
    "reduce_l2_island": ("float[8,8,1,1] w", "c = Conv(x, w)\n y = ReduceL2<axes=[1], keepdims=1>(c)", {}),
    "pad_reflect": (
        "float[8,8,1,1] w, int64[8] pads",
        'c = Conv(x, w)\n y = Pad<mode="reflect">(c, pads)',
        {"pads": np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64)},
    ),
    "pow_square": (
        "float[8,8,1,1] w, float[] two",
        "c = Conv(x, w)\n y = Pow(c, two)",
        {"two": np.float32(2)},
    ),
    # A standalone int8 Relu (nothing to fuse into): written DEQUANTIZE -> RELU -> QUANTIZE in float.
    "relu_after_float": (
        "float[8,8,1,1] w, float[8,8,1,1] w2",
        "c = Conv(x, w)\n e = Exp(c)\n r = Relu(e)\n y = Conv(r, w2)",
        {},
    ),
    # 1-D ops on [N, C, L] (input _X_1D): 2-D ops of height 1 on NLC data.
    "conv1d": ("float[16,8,3] w, float[16] b", "y = Conv<pads=[1,1]>(x, w, b)", {}),
    "conv1d_stride_pads_dilation": (
        "float[8,8,3] w, float[8] b",
        "y = Conv<pads=[2,1], strides=[2], dilations=[2]>(x, w, b)",
        {},
    ),
    "conv1d_same_upper": ("float[8,8,4] w", 'y = Conv<auto_pad="SAME_UPPER", strides=[2]>(x, w)', {}),
    "depthwise_conv1d": ("float[8,1,5] w, float[8] b", "y = Conv<pads=[2,2], group=8>(x, w, b)", {}),
    "conv1d_relu_maxpool": (
        "float[8,8,1] w",
        "c = Conv(x, w)\n r = Relu(c)\n y = MaxPool<kernel_shape=[3], strides=[2], pads=[1,1]>(r)",
        {},
    ),
    "conv1d_avgpool": ("float[8,8,1] w", "c = Conv(x, w)\n y = AveragePool<kernel_shape=[2], strides=[2]>(c)", {}),
    "conv1d_global_maxpool": ("float[8,8,1] w", "c = Conv(x, w)\n y = GlobalMaxPool(c)", {}),
    "conv_transpose_1d": ("float[8,4,2] w, float[4] b", "y = ConvTranspose<strides=[2]>(x, w, b)", {}),
}
_X_1D = "float[1,8,16] x"
_ONE_D = {
    "conv1d",
    "conv1d_stride_pads_dilation",
    "conv1d_same_upper",
    "depthwise_conv1d",
    "conv1d_relu_maxpool",
    "conv1d_avgpool",
    "conv1d_global_maxpool",
    "conv_transpose_1d",
}
_OUT = {
    "conv1d": "float[1,16,16] y",
    "conv1d_stride_pads_dilation": "float[1,8,8] y",
    "conv1d_same_upper": "float[1,8,8] y",
    "depthwise_conv1d": "float[1,8,16] y",
    "conv1d_relu_maxpool": "float[1,8,8] y",
    "conv1d_avgpool": "float[1,8,8] y",
    "conv1d_global_maxpool": "float[1,8,1] y",
    "conv_transpose_1d": "float[1,4,32] y",
    "gather_channels": "float[1,3,8,8] y",
    "gather_scalar_index": "float[1,8,8] y",
    "expand_broadcast": "float[1,8,8,8] y",
    "reduce_l2_island": "float[1,1,8,8] y",
    "pad_reflect": "float[1,8,11,11] y",
    "resize_nearest_3x_asymmetric": "float[1,8,24,16] y",
    "conv_transpose": "float[1,4,16,16] y",
    "conv_transpose_same": "float[1,4,16,16] y",
    "gemm_no_trans": "float[1,10] y",
    "matmul_3d": "float[1,8,8,4] y",
    "transpose": "float[1,8,8,8] y",
    "strided_slice": "float[1,8,4,4] y",
    "concat_fixed_and_free": "float[1,16,8,8] y",
    "global_avgpool": "float[1,8,1,1] y",
    "reduce_mean": "float[1,1,8,8] y",
    "maxpool": "float[1,8,4,4] y",
    "maxpool_pads": "float[1,8,4,4] y",
    "avgpool": "float[1,8,4,4] y",
    "concat_channels": "float[1,16,8,8] y",
    "conv_stride2_pads": "float[1,16,4,4] y",
    "conv_same_upper": "float[1,8,4,4] y",
    "conv": "float[1,16,8,8] y",
    "depthwise_multiplier": "float[1,16,6,6] y",
    "pad": "float[1,8,11,11] y",
    "resize_nearest": "float[1,8,16,16] y",
    "resize_bilinear": "float[1,8,16,16] y",
    "slice_channels": "float[1,4,8,8] y",
    "split_channels": "float[1,4,8,8] y",
    "transpose_reshape": "float[1,512] y",
    "flatten_gemm": "float[1,10] y",
}


def op_model(name: str):
    """The single-op model ``name`` of ``OPS`` with random weights."""
    signature, body, constants = OPS[name]
    out = _OUT.get(name, "float[1,8,8,8] y")
    x = _X_1D if name in _ONE_D else _X
    text = f"{_HEAD}g ({signature}, {x}) => ({out}) {{\n {body}\n}}\n"
    if name == "split_channels":
        text = text.replace('"" : 17', '"" : 18')
    return build_model(text, constants=constants)


def float_tflite(model, **options) -> bytes:
    """The float model written by the tflite emitter (float pipeline, no quantization)."""
    loaded = frontend.load(model)
    ctx = PassContext(CompileOptions(target="tflite", **options), get_backend("tflite").spec)
    run_pipeline(loaded.model, ctx, float_only=True)
    return write_tflite(loaded.model, ctx, None)


@pytest.mark.parametrize("name", sorted(OPS))
def test_int8_op_matches_the_qdq_simulation_on_both_resolvers(name):
    model = op_model(name)
    result = qcc.compile(model, target="tflite", calibration=random_feeds(model, 8))
    verify = result.report["verify"]
    for resolver, entry in verify["resolvers"].items():
        assert entry["ok"], (resolver, entry)
        assert entry["within_one_step"] >= 0.99, (resolver, entry)


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("resolver", ["xnnpack", "builtin"])
def test_float_op_matches_onnxruntime(name, resolver):
    model = op_model(name)
    data = float_tflite(model)
    feed = random_feeds(model, 1, seed=3)[0]
    expected = run_ort(model, feed)
    got = run(interpreter(data, resolver), feed, [np.shape(e) for e in expected])
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


# Models with integer or boolean inputs (token ids, byte values, masks): name -> (ONNX text, constants,
# input name -> (low, high) of the random integers fed).
_INT_HEAD = '<ir_version: 8, opset_import: ["" : 17]>\n'
INT_OPS = {
    "embedding_int64_ids": (
        "g (int64[1,6] ids) => (float[1,6,8] y) {\n e = Gather(table, ids)\n y = MatMul(e, wm)\n}",
        "float[10,8] table, float[8,8] wm",
        {"table": np.random.default_rng(1).normal(0, 1, (10, 8))},
        {"ids": (-10, 10)},
    ),
    "one_hot_int32_bytes": (
        "g (int32[1,16] octets) => (float[1,16,8] y) {\n"
        " r = Reshape(octets, shape)\n e = Equal(r, classes)\n f = Cast<to=1>(e)\n y = MatMul(f, wm)\n}",
        "int64[3] shape, int32[1,1,5] classes, float[5,8] wm",
        {"shape": np.array([1, 16, 1]), "classes": np.arange(5, dtype=np.int32).reshape(1, 1, 5)},
        {"octets": (0, 6)},
    ),
    "mask_logic": (
        "g (int64[1,6] m, float[1,6,8] x) => (float[1,6,8] y) {\n"
        " c = MatMul(x, wm)\n bm = Cast<to=9>(m)\n l = Less(m, three)\n k = And(bm, l)\n n = Not(k)\n"
        " o = Xor(n, bm)\n u = Unsqueeze(o, ax)\n y = Where(u, c, fill)\n}",
        "float[8,8] wm, int64[] three, int64[1] ax, float[1] fill",
        {"three": np.int64(3), "ax": np.array([2]), "fill": np.array([-3.0], np.float32)},
        {"m": (0, 5)},
    ),
}


def int_op_model(name: str):
    """The model ``name`` of ``INT_OPS`` (constants as initializers, random weights)."""
    graph, constants_signature, constants, _ = INT_OPS[name]
    header, body = graph.split(") => (", 1)
    text = f"{_INT_HEAD}{header}, {constants_signature}) => ({body}\n"
    return build_model(text, constants=constants)


def int_feeds(name: str, model, count: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    """Random feeds: integers in the op's range for integer inputs, N(0, 1) for float inputs."""
    ranges = INT_OPS[name][3]
    rng = np.random.default_rng(seed)
    feeds = []
    for feed in random_feeds(model, count, seed=seed):
        for value in model.graph.input:
            if value.name in ranges:
                dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
                feed[value.name] = rng.integers(*ranges[value.name], size=feed[value.name].shape).astype(dtype)
        feeds.append(feed)
    return feeds


@pytest.mark.parametrize("name", sorted(INT_OPS))
def test_integer_input_op_int8_matches_the_simulation(name):
    model = int_op_model(name)
    result = qcc.compile(model, target="tflite", calibration=int_feeds(name, model, 8))
    verify = result.report["verify"]
    for resolver, entry in verify["resolvers"].items():
        assert entry["ok"], (resolver, entry)
        assert entry["within_one_step"] >= 0.99, (resolver, entry)
    # Integer inputs stay integer at the interface.
    details = interpreter(result.artifact.data).get_input_details()
    kinds = {d["name"]: np.dtype(d["dtype"]).kind for d in details}
    assert all(kinds[v] in "iub" for v in INT_OPS[name][3]), kinds


@pytest.mark.parametrize("name", sorted(INT_OPS))
@pytest.mark.parametrize("resolver", ["xnnpack", "builtin"])
def test_integer_input_op_float_matches_onnxruntime(name, resolver):
    model = int_op_model(name)
    data = float_tflite(model)
    feed = int_feeds(name, model, 1, seed=3)[0]
    expected = run_ort(model, feed)
    got = run(interpreter(data, resolver), feed, [np.shape(e) for e in expected])
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)
