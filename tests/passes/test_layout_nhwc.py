"""The NCHW -> NHWC layout pass: transposes left after propagation and cancellation, and numbers."""

from __future__ import annotations

import numpy as np
import pytest

import qcc
from qcc import frontend
from qcc.backends import get_backend
from qcc.backends._tflite_litert import interpreter, run
from qcc.context import PassContext
from qcc.options import CompileOptions
from qcc.passes.layout_nhwc import LAYOUT_KEY, LAYOUT_NAMES, LayoutNhwcPass
from qcc.pipeline import run_pipeline
from tests.backends.test_tflite_ops import float_tflite
from tests.conftest import build_model, random_feeds
from tests.conftest import run as run_ort

_HEAD = '<ir_version: 8, opset_import: ["" : 17]>\n'

# name -> (model text, constants, Transpose nodes left after the pass)
CASES = {
    "conv_chain": (
        """g (float[8,4,3,3] w1, float[8,8,3,3] w2, float[1,4,8,8] x) => (float[1,8,8,8] y) {
          c = Conv<pads=[1,1,1,1]>(x, w1)
          r = Relu(c)
          y = Conv<pads=[1,1,1,1]>(r, w2)
        }""",
        {},
        2,
    ),
    "concat_across_channels": (
        """g (float[8,4,1,1] w1, float[8,4,1,1] w2, float[8,16,1,1] w3, float[1,4,8,8] x) => (float[1,8,8,8] y) {
          a = Conv(x, w1)
          b = Conv(x, w2)
          s = Sigmoid(b)
          c = Concat<axis=1>(a, s)
          y = Conv(c, w3)
        }""",
        {},
        2,
    ),
    "flatten_across_channels": (
        """g (float[8,4,1,1] w1, float[512,10] wf, float[1,4,8,8] x) => (float[1,10] y) {
          a = Conv(x, w1)
          f = Flatten(a)
          y = MatMul(f, wf)
        }""",
        {},
        2,
    ),
    "user_transpose_cancels": (
        """g (float[8,4,1,1] w1, int64[3] shape, float[1,4,8,8] x) => (float[1,64,8] y) {
          a = Conv(x, w1)
          t = Transpose<perm=[0,2,3,1]>(a)
          y = Reshape(t, shape)
        }""",
        {"shape": np.array([1, 64, 8])},
        1,
    ),
    "softmax_and_reduce_over_channels": (
        """g (float[8,4,1,1] w1, float[1,4,8,8] x) => (float[1,8,8] y) {
          a = Conv(x, w1)
          s = Softmax<axis=1>(a)
          y = ReduceMax<axes=[1], keepdims=0>(s)
        }""",
        {},
        1,
    ),
    "channel_shuffle": (
        """g (float[8,4,1,1] w1, float[8,8,1,1] w2, int64[5] split, int64[4] merged, float[1,4,8,8] x)
          => (float[1,8,8,8] y) {
          a = Conv(x, w1)
          r = Reshape(a, split)
          t = Transpose<perm=[0,2,1,3,4]>(r)
          m = Reshape(t, merged)
          y = Conv(m, w2)
        }""",
        {"split": np.array([1, 2, 4, 8, 8]), "merged": np.array([1, 8, 8, 8])},
        5,
    ),
    "pad_and_slice_channels": (
        """g (float[8,4,1,1] w1, int64[8] pads, int64[1] st, int64[1] en, int64[1] ax, float[1,4,8,8] x)
          => (float[1,4,10,10] y) {
          a = Conv(x, w1)
          p = Pad(a, pads)
          y = Slice(p, st, en, ax)
        }""",
        {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1]), "st": np.array([2]), "en": np.array([6]), "ax": np.array([1])},
        2,
    ),
    # 1-D layout ops run NLC: T(0,2,1) on both sides, cancelled between them like the 4-D ones.
    "conv1d_chain": (
        """g (float[8,4,3] w1, float[8,6,3] w2, int64[1] st, int64[1] en, int64[1] ax, float[1,4,16] x)
          => (float[1,8,8] y) {
          c = Conv<pads=[1,1]>(x, w1)
          r = Relu(c)
          p = MaxPool<kernel_shape=[2], strides=[2]>(r)
          s = Slice(p, st, en, ax)
          y = Conv<pads=[1,1]>(s, w2)
        }""",
        {"st": np.array([2]), "en": np.array([8]), "ax": np.array([1])},
        2,
    ),
    # Magika's pattern: a 2-D conv of width 1, Squeeze of W, 1-D global pooling. The NCHW
    # transpose passes below the Squeeze as T(0,2,1) and cancels against the pooling's NLC one.
    "squeeze_into_1d_pool": (
        """g (float[8,4,3,1] w1, int64[1] ax, float[1,4,16,1] x) => (float[1,8,1] y) {
          c = Conv(x, w1)
          s = Squeeze(c, ax)
          y = GlobalMaxPool(s)
        }""",
        {"ax": np.array([3])},
        2,
    ),
}


def _model(name: str):
    text, constants, _ = CASES[name]
    return build_model(_HEAD + text, constants=constants)


def _layout(model, **options):
    loaded = frontend.load(model)
    ctx = PassContext(CompileOptions(target="tflite", **options), get_backend("tflite").spec)
    run_pipeline(loaded.model, ctx, float_only=True)
    LayoutNhwcPass(ctx)(loaded.model)
    return loaded.model


@pytest.mark.parametrize("name", sorted(CASES))
def test_transposes_left_after_cancellation(name):
    graph = _layout(_model(name)).graph
    transposes = [n for n in graph if n.op_type == "Transpose"]
    assert len(transposes) == CASES[name][2], [(n.name, n.attributes["perm"].as_ints()) for n in transposes]
    assert all(n.meta.get(LAYOUT_KEY) == LAYOUT_NAMES[len(n.inputs[0].shape)] for n in graph if n.op_type == "Conv")


@pytest.mark.parametrize("name", sorted(CASES))
def test_float_numbers_match_onnxruntime(name):
    model = _model(name)
    feed = random_feeds(model, 1, seed=4)[0]
    expected = run_ort(model, feed)
    got = run(interpreter(float_tflite(model)), feed, [np.shape(e) for e in expected])
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(CASES))
def test_int8_matches_the_simulation(name):
    model = _model(name)
    result = qcc.compile(model, target="tflite", calibration=random_feeds(model, 16, seed=1))
    assert result.report["verify"]["ok"], result.report["verify"]


def test_nhwc_io_removes_the_edge_transposes():
    graph = _layout(_model("conv_chain"), nhwc_io=True).graph
    assert [n for n in graph if n.op_type == "Transpose"] == []
    assert tuple(graph.inputs[0].shape) == (1, 8, 8, 4)
    assert tuple(graph.outputs[0].shape) == (1, 8, 8, 8)


# Element-wise ops between two NHWC convs: the transpose passes through them, so only the two
# edge transposes are left. Each entry is the op's expression on ``s`` = Sigmoid(conv) in (0, 1)
# (inside every op's domain) and the opset it needs.
_BETWEEN_CONVS = {
    "Log": ("e = Log(s)", 17),
    "Ceil": ("e = Ceil(s)", 17),
    "Floor": ("e = Floor(s)", 17),
    "Round": ("e = Round(s)", 17),
    "Sign": ("e = Sign(s)", 17),
    "Sin": ("e = Sin(s)", 17),
    "Cos": ("e = Cos(s)", 17),
    "Tan": ("e = Tan(s)", 17),
    "Asin": ("e = Asin(s)", 17),
    "Acos": ("e = Acos(s)", 17),
    "Atan": ("e = Atan(s)", 17),
    "Sinh": ("e = Sinh(s)", 17),
    "Cosh": ("e = Cosh(s)", 17),
    "Asinh": ("e = Asinh(s)", 17),
    "Acosh": ("e = Acosh(s2)", 17),
    "Atanh": ("e = Atanh(s)", 17),
    "Selu": ("e = Selu(c)", 17),
    "Celu": ("e = Celu(c)", 17),
    "Softsign": ("e = Softsign(c)", 17),
    "Mish": ("e = Mish(c)", 18),
    "ThresholdedRelu": ("e = ThresholdedRelu<alpha=0.1>(c)", 17),
    "Shrink": ("e = Shrink<lambd=0.2, bias=0.1>(c)", 17),
    "Mod": ("e = Mod<fmod=1>(c, two)", 17),
    "Sum": ("e = Sum(c, s, c)", 17),
    "Mean": ("e = Mean(c, s)", 17),
}


def _between_convs(name: str):
    expression, opset = _BETWEEN_CONVS[name]
    text = f"""<ir_version: 8, opset_import: ["" : {opset}]>
        g (float[8,4,3,3] w1, float[8,8,3,3] w2, float[1] one, float[1] two, float[1,4,8,8] x)
          => (float[1,8,8,8] y) {{
          c = Conv<pads=[1,1,1,1]>(x, w1)
          s = Sigmoid(c)
          s2 = Add(s, one)
          {expression}
          y = Conv<pads=[1,1,1,1]>(e, w2)
        }}"""
    return build_model(text, constants={"one": np.array([1.0], np.float32), "two": np.array([0.7], np.float32)})


def _only_the_edge_transposes(graph) -> None:
    transposes = [n for n in graph if n.op_type == "Transpose"]
    assert len(transposes) == 2, [(n.name, n.attributes["perm"].as_ints()) for n in transposes]


def _float_matches_onnxruntime_on_both_resolvers(model) -> None:
    feed = random_feeds(model, 1, seed=4)[0]
    expected = run_ort(model, feed)
    data = float_tflite(model)
    for resolver in ("xnnpack", "builtin"):
        got = run(interpreter(data, resolver), feed, [np.shape(e) for e in expected])
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-4, atol=1e-4, err_msg=resolver)


@pytest.mark.parametrize("name", sorted(_BETWEEN_CONVS))
def test_elementwise_between_convs_adds_no_transpose(name):
    model = _between_convs(name)
    graph = _layout(model).graph
    _only_the_edge_transposes(graph)
    op = next(n for n in graph if n.op_type == name)
    assert all(v.producer() is None or v.producer().op_type != "Transpose" for v in op.inputs if v is not None)
    _float_matches_onnxruntime_on_both_resolvers(model)


def test_isinf_follows_the_conv_layout():
    model = build_model(
        _HEAD
        + """g (float[8,4,1,1] w1, float[1,4,8,8] x) => (bool[1,8,8,8] y) {
          c = Conv(x, w1)
          y = IsInf(c)
        }"""
    )
    graph = _layout(model).graph
    op = next(n for n in graph if n.op_type == "IsInf")
    assert op.inputs[0].producer().op_type == "Conv"
    feed = random_feeds(model, 1, seed=4)[0]
    got = run(interpreter(float_tflite(model)), feed, [(1, 8, 8, 8)])
    np.testing.assert_array_equal(got[0], run_ort(model, feed)[0])


# Layout ops whose rules read either layout: between two convs they run NHWC themselves, so the
# transposes around them cancel.
_NORM_BETWEEN_CONVS = {
    "LpPool": "e = LpPool<kernel_shape=[3,3], pads=[1,1,1,1], p=2>(c)",
    "GlobalLpPool": "g = GlobalLpPool<p=3>(c)\n          e = Add(c, g)",
    "LRN": "e = LRN<size=3, alpha=0.001, beta=0.75, bias=1.0>(c)",
    "InstanceNormalization": "e = InstanceNormalization(c, gamma, beta)",
    "BatchNormalization": "e = BatchNormalization(r, gamma, beta, mean, var)",
}


@pytest.mark.parametrize("name", sorted(_NORM_BETWEEN_CONVS))
def test_norm_and_lp_pool_run_nhwc_between_convs(name):
    model = build_model(
        _HEAD
        + f"""g (float[8,4,3,3] w1, float[8,8,3,3] w2, float[8] gamma, float[8] beta, float[8] mean, float[8] var,
               float[1,4,8,8] x) => (float[1,8,8,8] y) {{
          c = Conv<pads=[1,1,1,1]>(x, w1)
          r = Relu(c)
          {_NORM_BETWEEN_CONVS[name]}
          y = Conv<pads=[1,1,1,1]>(e, w2)
        }}"""
    )
    graph = _layout(model).graph
    _only_the_edge_transposes(graph)
    assert next(n for n in graph if n.op_type == name).meta.get(LAYOUT_KEY) == "NHWC"
    _float_matches_onnxruntime_on_both_resolvers(model)
    result = qcc.compile(model, target="tflite", calibration=random_feeds(model, 16, seed=1))
    assert result.report["verify"]["ok"], result.report["verify"]


def test_lp_pool_1d_runs_nlc():
    model = build_model(
        _HEAD
        + """g (float[8,4,3] w1, float[1,4,16] x) => (float[1,8,8] y) {
          c = Conv<pads=[1,1]>(x, w1)
          y = LpPool<kernel_shape=[2], strides=[2], p=2>(c)
        }"""
    )
    graph = _layout(model).graph
    assert next(n for n in graph if n.op_type == "LpPool").meta.get(LAYOUT_KEY) == "NLC"
    assert len([n for n in graph if n.op_type == "Transpose"]) == 2
    feed = random_feeds(model, 1, seed=4)[0]
    expected = run_ort(model, feed)
    got = run(interpreter(float_tflite(model)), feed, [np.shape(e) for e in expected])
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-4, atol=1e-4)


def test_training_batch_norm_with_running_statistics_stays_channels_first():
    model = build_model(
        """<ir_version: 8, opset_import: ["" : 15]>
        g (float[8,4,1,1] w1, float[8] gamma, float[8] beta, float[8] mean, float[8] var, float[1,4,8,8] x)
          => (float[1,8,8,8] y, float[8] m, float[8] v) {
          c = Conv(x, w1)
          y, m, v = BatchNormalization<training_mode=1>(c, gamma, beta, mean, var)
        }"""
    )
    graph = _layout(model).graph
    assert LAYOUT_KEY not in next(n for n in graph if n.op_type == "BatchNormalization").meta
    feed = random_feeds(model, 1, seed=4)[0]
    expected = run_ort(model, feed)
    got = run(interpreter(float_tflite(model)), feed, [np.shape(e) for e in expected])
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)
