"""Signal and sampling lowerings (``backends/_tflite_ops_signal.py`` and the modules it collects:
``_tflite_ops_sampling``, ``_tflite_ops_roi``, ``_tflite_ops_deform``)
run in LiteRT.

Each single-op model is compiled for ``tflite`` (the ops are float-only: float nodes read and
written in float32), run under both resolvers and compared with ONNX Runtime on the float model.
Integer inputs (sizes, steps, block shapes, batch indices) are checked both as constants and as
graph inputs. Inside an int8 model the ops are float islands, checked by ``verify()``.
"""

from __future__ import annotations

import numpy as np
import pytest

import qcc
from qcc.backends._tflite_litert import interpreter, run
from qcc.errors import QccError
from tests.backends._tflite_helpers import body_model, builtin_ops
from tests.conftest import build_model
from tests.conftest import run as run_ort


def _check(model, feed, atol=2e-5) -> bytes:
    """Compiles for tflite, runs under both resolvers, compares with ONNX Runtime; returns the artifact."""
    result = qcc.compile(model, target="tflite", calibration=[feed], verify=False)
    expected = run_ort(model, feed)
    for resolver in ("xnnpack", "builtin"):
        got = run(interpreter(result.artifact.data, resolver), feed, [np.shape(e) for e in expected])
        for e, g in zip(expected, got, strict=True):
            np.testing.assert_allclose(g, e.astype(np.float32), rtol=1e-4, atol=atol, err_msg=resolver)
    return result.artifact.data


def _normal(shape, seed=0):
    return np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32)


# name -> (x shape, attributes, dft_length, axis, output shape)
DFT_CASES = {
    "real_axis1": ([2, 8, 3, 1], "", None, 1, [2, 8, 3, 2]),
    "complex_last_signal_axis": ([2, 3, 8, 2], "", None, 2, [2, 3, 8, 2]),
    "onesided": ([2, 9, 1], "<onesided=1>", None, 1, [2, 5, 2]),
    "inverse": ([1, 6, 4, 2], "<inverse=1>", None, 1, [1, 6, 4, 2]),
    "truncated": ([1, 10, 1], "", 6, 1, [1, 6, 2]),
    "zero_padded": ([1, 5, 2], "", 8, 1, [1, 8, 2]),
}


@pytest.mark.parametrize("name", sorted(DFT_CASES))
def test_dft_matches_onnxruntime(name):
    shape, attrs, length, axis, out = DFT_CASES[name]
    dims = ",".join(map(str, shape))
    length_input = "n" if length is not None else ""
    constants = {"a": np.array(axis, np.int64)}
    if length is not None:
        constants["n"] = np.array(length, np.int64)
    inputs = f"float[{dims}] x, int64 a" + (", int64 n" if length is not None else "")
    model = body_model(
        inputs, f"float[{','.join(map(str, out))}] y", f"y = DFT{attrs}(x, {length_input}, a)", 20, constants
    )
    data = _check(model, {"x": _normal(shape)})
    assert "FULLY_CONNECTED" in builtin_ops(data)


def test_dft_run_time_axis_selects_among_the_axes_that_fit():
    model = body_model("float[2,6,6,2] x, int64 a", "float[2,6,6,2] y", "y = DFT<inverse=1>(x, , a)", 20)
    feed = {"x": _normal([2, 6, 6, 2]), "a": np.array(1, np.int64)}
    result = qcc.compile(model, target="tflite", calibration=[feed], verify=False)
    for axis in (1, 2, -2, -3):
        feed["a"] = np.array(axis, np.int64)
        for resolver in ("xnnpack", "builtin"):
            got = run(interpreter(result.artifact.data, resolver), feed)[0]
            np.testing.assert_allclose(got, run_ort(model, feed)[0], rtol=1e-4, atol=2e-5, err_msg=f"{axis}")


def test_dft_opset17_axis_attribute_and_float64():
    model = body_model("double[3,8,1] x", "double[3,8,2] y", "y = DFT<axis=1>(x)", 17)
    feed = {"x": _normal([3, 8, 1]).astype(np.float64)}
    result = qcc.compile(model, target="tflite", calibration=[feed], verify=False)
    got = run(interpreter(result.artifact.data, "builtin"), feed)[0]
    np.testing.assert_allclose(got, run_ort(model, feed)[0], atol=2e-5)


def test_dft_run_time_length_with_onesided_is_refused():
    model = body_model("float[1,8,1] x, int64 n", "float[1,5,2] y", "y = DFT<onesided=1>(x, n)", 20)
    feed = {"x": _normal([1, 8, 1]), "n": np.array(8, np.int64)}
    with pytest.raises(QccError, match="two lengths fit"):
        qcc.compile(model, target="tflite", calibration=[feed], verify=False)


@pytest.mark.parametrize("constant", [True, False])
@pytest.mark.parametrize("window", [True, False])
def test_stft_matches_onnxruntime(constant, window):
    if window:
        body, inputs, out = "y = STFT(x, s, hann)", "float[2,40,1] x, int64 s, float[10] hann", "float[2,8,6,2] y"
        consts = {"s": np.array(4, np.int64), "hann": np.hanning(10).astype(np.float32)}
    else:  # two-sided: the 10 bins fix a run-time frame_length
        body, inputs, out = "y = STFT<onesided=0>(x, s, , n)", "float[2,40,1] x, int64 s, int64 n", "float[2,8,10,2] y"
        consts = {"s": np.array(4, np.int64), "n": np.array(10, np.int64)}
    model = body_model(inputs, out, body, 17, consts if constant else {})
    feed = {"x": _normal([2, 40, 1])} if constant else {"x": _normal([2, 40, 1]), **consts}
    data = _check(model, feed)
    assert {"GATHER", "FULLY_CONNECTED"} <= builtin_ops(data)


def test_stft_run_time_frame_length_the_shapes_leave_open_is_refused():
    model = body_model("float[2,40,1] x, int64 s, int64 n", "float[2,8,6,2] y", "y = STFT(x, s, , n)", 17)
    feed = {"x": _normal([2, 40, 1]), "s": np.array(4, np.int64), "n": np.array(10, np.int64)}
    with pytest.raises(QccError, match=r"lengths \[10, 11\] fit"):
        qcc.compile(model, target="tflite", calibration=[feed], verify=False)


def test_stft_with_a_dynamic_batch_and_no_onesided_attribute():
    # ONNX's shape inference would give 16 bins (onesided read as 0) where ONNX Runtime computes 9;
    # the frontend writes out the default onesided=1, so both forms lower the same.
    text = (
        '<ir_version: 10, opset_import: ["" : 17]>\ng (float[N,64,1] x) => (float[N,7,9,2] y) {{\n'
        " s = Constant<value=int64 {{8}}>()\n n = Constant<value=int64 {{16}}>()\n y = STFT{attrs}(x, s, , n)\n}}\n"
    )
    feed = {"x": _normal([1, 64, 1])}
    for attrs in ("", "<onesided=1>"):
        _check(build_model(text.format(attrs=attrs)), feed)


def test_stft_complex_two_sided():
    model = body_model(
        "float[1,32,2] x, int64 s, int64 n",
        "float[1,3,16,2] y",
        "y = STFT<onesided=0>(x, s, , n)",
        17,
        {"s": np.array(8, np.int64), "n": np.array(16, np.int64)},
    )
    _check(model, {"x": _normal([1, 32, 2])})


@pytest.mark.parametrize(
    "attrs, x_shape, block",
    [
        ("", [2, 12, 12], [2, 3]),
        ("<strides=[2, 1], dilations=[1, 2], pads=[1, 0, 0, 1]>", [1, 8, 12], [2, 2]),
    ],
)
@pytest.mark.parametrize("constant", [True, False])
def test_col2im_matches_onnxruntime(attrs, x_shape, block, constant):
    channels = x_shape[1] // (block[0] * block[1])
    consts = {"i": np.array([5, 5], np.int64)}
    if constant:
        consts["k"] = np.array(block, np.int64)
    dims = ",".join(map(str, x_shape))
    model = body_model(
        f"float[{dims}] x, int64[2] i, int64[2] k",
        f"float[{x_shape[0]},{channels},5,5] y",
        f"y = Col2Im{attrs}(x, i, k)",
        18,
        consts,
    )
    feed = {"x": _normal(x_shape)}
    if not constant:
        feed["k"] = np.array(block, np.int64)
    data = _check(model, feed)
    assert "SCATTER_ND" in builtin_ops(data)


@pytest.mark.parametrize("align", [0, 1])
@pytest.mark.parametrize("size", [[3, 2, 4, 5], [3, 2, 2, 3, 4]])
def test_affine_grid_matches_onnxruntime(align, size):
    dims = len(size) - 2
    out = ",".join(map(str, [3, *size[2:], dims]))
    model = body_model(
        f"float[3,{dims},{dims + 1}] t, int64[{len(size)}] s",
        f"float[{out}] y",
        f"y = AffineGrid<align_corners={align}>(t, s)",
        20,
        {"s": np.array(size, np.int64)},
    )
    data = _check(model, {"t": _normal([3, dims, dims + 1])})
    assert "BATCH_MATMUL" in builtin_ops(data)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [0, 1])
def test_grid_sample_matches_onnxruntime(mode, padding, align):
    rng = np.random.default_rng(3)
    attrs = f'<mode="{mode}", padding_mode="{padding}", align_corners={align}>'
    model = body_model("float[2,3,5,6] x, float[2,4,7,2] g", "float[2,3,4,7] y", f"y = GridSample{attrs}(x, g)", 20)
    # Points well outside the image, and none on ties of nearest rounding.
    grid = rng.uniform(-1.8, 1.8, (2, 4, 7, 2)).astype(np.float32)
    _check(model, {"x": _normal([2, 3, 5, 6]), "g": grid}, atol=1e-4)


def test_grid_sample_volumetric_and_opset16_names():
    rng = np.random.default_rng(4)
    model = body_model(
        "float[1,2,3,4,5] x, float[1,2,3,4,3] g",
        "float[1,2,2,3,4] y",
        'y = GridSample<mode="linear", padding_mode="border">(x, g)',
        20,
    )
    _check(model, {"x": _normal([1, 2, 3, 4, 5]), "g": rng.uniform(-1.3, 1.3, (1, 2, 3, 4, 3)).astype(np.float32)})
    model = body_model(
        "float[1,2,4,4] x, float[1,3,3,2] g",
        "float[1,2,3,3] y",
        'y = GridSample<mode="bicubic", padding_mode="reflection">(x, g)',
        16,
    )
    _check(model, {"x": _normal([1, 2, 4, 4]), "g": rng.uniform(-1.3, 1.3, (1, 3, 3, 2)).astype(np.float32)})


_ROIS = np.array([[0.5, 1.0, 6.2, 5.5], [2.0, 0.0, 9.5, 9.9], [-2.0, 3.0, 4.0, 12.0]], np.float32)


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("transform", ["half_pixel", "output_half_pixel"])
@pytest.mark.parametrize("constant", [True, False])
def test_roi_align_matches_onnxruntime(mode, transform, constant):
    attrs = (
        f'<mode="{mode}", coordinate_transformation_mode="{transform}", output_height=3, output_width=4, '
        "sampling_ratio=2, spatial_scale=0.8>"
    )
    consts = {"r": _ROIS, "i": np.array([1, 0, 1], np.int64)} if constant else {}
    model = body_model(
        "float[2,3,10,11] x, float[3,4] r, int64[3] i", "float[3,3,3,4] y", f"y = RoiAlign{attrs}(x, r, i)", 16, consts
    )
    feed = {"x": _normal([2, 3, 10, 11])}
    if not constant:
        feed.update(r=_ROIS, i=np.array([1, 0, 1], np.int64))
    data = _check(model, feed)
    assert "BATCH_MATMUL" in builtin_ops(data)


@pytest.mark.parametrize("mode", ["avg", "max"])
def test_roi_align_adaptive_sampling(mode):
    rois = np.array([[0.0, 0.0, 7.0, 5.0], [1.0, 2.0, 8.0, 8.0], [2.0, 1.0, 3.5, 9.0]], np.float32)  # 3 grids
    text = (
        '<ir_version: 10, opset_import: ["" : 16]>\ng (float[1,2,10,10] x, float[3,4] r, int64[3] i) => '
        f'(float[3,2,2,3] y) {{\n y = RoiAlign<mode="{mode}", output_height=2, output_width=3, sampling_ratio=0>'
        "(x, r, i)\n}\n"
    )
    model = build_model(text, constants={"r": rois, "i": np.zeros(3, np.int64)})
    _check(model, {"x": _normal([1, 2, 10, 10])})
    feed = {"x": _normal([1, 2, 10, 10]), "r": rois, "i": np.zeros(3, np.int64)}
    with pytest.raises(QccError, match="adaptive"):
        qcc.compile(build_model(text), target="tflite", calibration=[feed], verify=False)


def test_grid_sample_is_a_float_island_in_an_int8_model():
    model = body_model(
        "float[1,3,8,8] x, float[4,3,3,3] w, float[4,4,3,3] w2, float[1,6,6,2] g",
        "float[1,4,4,4] y",
        "c = Conv(x, w)\n s = GridSample(c, g)\n y = Conv(s, w2)",
        20,
    )
    rng = np.random.default_rng(6)
    feeds = [
        {"x": _normal([1, 3, 8, 8], k), "g": rng.uniform(-1, 1, (1, 6, 6, 2)).astype(np.float32)} for k in range(4)
    ]
    result = qcc.compile(model, target="tflite", calibration=feeds, verify=True)
    assert {"CONV_2D", "GATHER"} <= builtin_ops(result.artifact.data)


@pytest.mark.parametrize("extras", [False, True])
def test_deform_conv_matches_onnxruntime(extras):
    attrs = "<kernel_shape=[3, 2], strides=[2, 1], dilations=[1, 2], pads=[1, 0, 1, 1]>"
    inputs = "float[2,3,7,6] x, float[4,3,3,2] w, float[2,12,4,5] off" + (
        ", float[4] bias, float[2,6,4,5] m" if extras else ""
    )
    body = f"y = DeformConv{attrs}(x, w, off" + (", bias, m)" if extras else ")")
    model = body_model(inputs, "float[2,4,4,5] y", body, 19)
    feed = {"x": _normal([2, 3, 7, 6]), "off": 2 * _normal([2, 12, 4, 5], 1)}
    if extras:
        feed.update(m=np.random.default_rng(3).uniform(0, 1, (2, 6, 4, 5)).astype(np.float32))
    data = _check(model, feed, atol=1e-4)
    assert {"GATHER", "BATCH_MATMUL"} <= builtin_ops(data)


def test_grouped_deform_conv_matches_onnxruntime():
    model = body_model(
        "float[2,4,6,6] x, float[6,2,2,2] w, float[2,16,5,5] off, float[2,8,5,5] m",
        "float[2,6,5,5] y",
        "y = DeformConv<group=2, offset_group=2>(x, w, off, , m)",
        19,
    )
    feed = {"x": _normal([2, 4, 6, 6]), "off": 1.5 * _normal([2, 16, 5, 5], 1)}
    feed["m"] = np.random.default_rng(4).uniform(0, 1, (2, 8, 5, 5)).astype(np.float32)
    _check(model, feed, atol=1e-4)
