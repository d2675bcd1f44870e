"""Bias correction: the corrected int8 model's mean output equals the float model's."""

from __future__ import annotations

import numpy as np
import onnx

import qcc
from qcc.annotations import get_quant
from qcc.backends import get_backend
from qcc.context import PassContext
from qcc.data import open_calibration
from qcc.frontend import load
from qcc.irutils import const_array
from qcc.options import CompileOptions
from qcc.passes.bias_correction import BiasCorrectionPass
from qcc.pipeline import build_passes
from qcc.quantmath import dequantize, quantize
from tests.conftest import build_model, random_feeds, run

# 1x1 convolution (no padding, so the correction is exact) into a Gemm, both with biases; the
# inputs have non-zero channel means, which is what turns weight rounding into a shift.
MODEL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[8,4,1,1] w1, float[8] b1, float[3,8] w2, float[3] b2, float[N,4,5,5] x) => (float[N,3] y) {
  c = Conv(x, w1, b1)
  r = Relu(c)
  p = GlobalAveragePool(r)
  f = Flatten(p)
  y = Gemm<transB=1>(f, w2, b2)
}
"""


def _feeds(model, count=12):
    feeds = random_feeds(model, count, batch=2)
    for feed in feeds:
        feed["x"] = feed["x"] + np.arange(1, 5, dtype=np.float32)[None, :, None, None]  # channel means 1..4
    return feeds


def _annotated(model, feeds, whole=False, **options):
    loaded = load(model)
    options = {"bias_correction": True, **options}
    ctx = PassContext(CompileOptions(tolerance=None, **options), get_backend("ort").spec,
                      open_calibration(feeds, loaded.input_specs()))
    for pass_ in build_passes(ctx):
        pass_(loaded.model)
        if isinstance(pass_, BiasCorrectionPass) and not whole:
            break
    return loaded.model


def _initializer(model, name):
    return onnx.numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == name))


def _dequantized(value):
    quant = get_quant(value)
    array = const_array(value)
    axis = quant.axis if quant.scale.ndim == 1 else None
    integers = quantize(array, quant.scale, quant.zero_point, axis, quant.dtype)
    return dequantize(integers, quant.scale, quant.zero_point, axis)


def test_the_corrected_conv_has_the_float_mean_output():
    model = build_model(MODEL, seed=3)
    feeds = _feeds(model)
    annotated = _annotated(model, feeds)
    conv = next(n for n in annotated.graph if n.op_type == "Conv")
    w_float, b_float = _initializer(model, "w1")[:, :, 0, 0], _initializer(model, "b1")
    w_int8 = _dequantized(conv.inputs[1])[:, :, 0, 0]
    b_corrected = const_array(conv.inputs[2])
    assert not np.allclose(b_corrected, b_float)  # the rounding did shift the mean
    x = np.concatenate([f["x"] for f in feeds]).transpose(0, 2, 3, 1).reshape(-1, 4)
    float_mean = (x @ w_float.T + b_float).mean(axis=0)
    corrected_mean = (x @ w_int8.T + b_corrected).mean(axis=0)
    uncorrected_mean = (x @ w_int8.T + b_float).mean(axis=0)
    np.testing.assert_allclose(corrected_mean, float_mean, atol=1e-5)
    assert np.abs(uncorrected_mean - float_mean).max() > 10 * np.abs(corrected_mean - float_mean).max()


def test_weights_on_the_int8_grid_need_no_correction_and_off_means_off():
    w1 = np.random.default_rng(0).integers(-127, 128, (8, 4, 1, 1)).astype(np.float32) / 127.0
    w1[:, 0, 0, 0] = 1.0  # every channel's max is 1: its scale is 1/127 and every weight is on the grid
    model = build_model(MODEL, seed=3, constants={"w1": w1})
    feeds = _feeds(model)
    conv = next(n for n in _annotated(model, feeds).graph if n.op_type == "Conv")
    np.testing.assert_allclose(const_array(conv.inputs[2]), _initializer(model, "b1"), atol=1e-7)
    off = _annotated(build_model(MODEL, seed=3), feeds, bias_correction=False)
    gemm = next(n for n in off.graph if n.op_type == "Gemm")
    np.testing.assert_array_equal(const_array(gemm.inputs[2]), _initializer(build_model(MODEL, seed=3), "b2"))


def test_the_artifact_mean_shift_shrinks_in_onnx_runtime():
    model = build_model(MODEL, seed=3)
    feeds = _feeds(model, 24)
    shifts = {}
    for correct in (False, True):
        artifact = qcc.compile(model, calibration=feeds, tolerance=None, bias_correction=correct).artifact.data
        diffs = [run(artifact, f)[0] - run(model, f)[0] for f in feeds]
        shifts[correct] = float(np.abs(np.mean(np.concatenate(diffs), axis=0)).mean())
    assert shifts[True] < shifts[False]


def test_the_simulation_gives_a_float_node_its_original_bias():
    from qcc.passes._simulation import Simulation

    model = build_model(MODEL, seed=3)
    feeds = _feeds(model)
    annotated = _annotated(model, feeds, whole=True)
    conv = next(n for n in annotated.graph if n.op_type == "Conv")
    assert not np.allclose(const_array(conv.inputs[2]), _initializer(model, "b1"))  # corrected
    floating = Simulation(annotated, feeds[:2]).run(quantized=())
    for feed, outputs in zip(feeds[:2], floating, strict=True):
        np.testing.assert_allclose(outputs[0], run(model, feed)[0], rtol=1e-4, atol=1e-5)
