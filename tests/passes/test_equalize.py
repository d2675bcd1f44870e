"""Cross-layer equalization keeps the float function and evens out per-channel weight ranges."""

from __future__ import annotations

import numpy as np
import onnx

import qcc
from qcc.backends import get_backend
from qcc.context import PassContext
from qcc.frontend import load
from qcc.irutils import const_array
from qcc.options import CompileOptions
from qcc.passes.equalize import CrossLayerEqualizationPass
from tests.conftest import build_model, fidelity, random_feeds, run, to_proto

# conv -> relu -> depthwise -> relu -> pointwise -> clip -> conv: the first two pairs equalize,
# the Clip (not positively homogeneous) stops the third.
CHAIN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[8,3,3,3] w1, float[8] b1, float[8,1,3,3] wd, float[8] bd, float[16,8,1,1] wp, float[16] bp,
   float[4,16,1,1] wq, float[4] bq, float[] lo, float[] hi, float[1,3,12,12] x) => (float[1,4,12,12] y) {
  c1 = Conv<pads=[1,1,1,1]>(x, w1, b1)
  r1 = Relu(c1)
  d = Conv<pads=[1,1,1,1], group=8>(r1, wd, bd)
  r2 = Relu(d)
  p = Conv(r2, wp, bp)
  k = Clip(p, lo, hi)
  y = Conv(k, wq, bq)
}
"""


def _unbalanced():
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.3, (8, 3, 3, 3))
    w1 *= np.array([50, 0.02, 1, 3, 0.1, 8, 0.5, 20])[:, None, None, None]  # wildly unequal channels
    constants = {"w1": w1, "lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32)}
    return build_model(CHAIN, seed=1, constants=constants)


def _equalized(model, **options):
    loaded = load(model)
    ctx = PassContext(CompileOptions(**options), get_backend("ort").spec)
    CrossLayerEqualizationPass(ctx)(loaded.model)
    return loaded.model


def _weights(model):
    return {n.name or n.outputs[0].name: const_array(n.inputs[1]) for n in model.graph if n.op_type == "Conv"}


def test_the_float_function_is_kept_and_the_ranges_meet():
    model = _unbalanced()
    equalized = _equalized(model, per_channel=False)
    feeds = random_feeds(model, 4)
    for feed in feeds:
        np.testing.assert_allclose(run(to_proto(equalized), feed)[0], run(model, feed)[0], rtol=1e-4, atol=1e-4)
    weights = list(_weights(equalized).values())
    before = list(_weights(load(model).model).values())
    # conv1's output channels and the depthwise conv's channels now span the same range ...
    r1 = np.abs(weights[0]).reshape(8, -1).max(axis=1)
    rd = np.abs(weights[1]).reshape(8, -1).max(axis=1)
    spread = lambda r: r.max() / r.min()  # noqa: E731
    assert spread(r1) < spread(np.abs(before[0]).reshape(8, -1).max(axis=1)) / 10
    np.testing.assert_allclose(r1, np.sqrt(r1 * rd), rtol=0.2)
    # ... and the Clip stopped the last pair: the final conv is untouched.
    np.testing.assert_array_equal(weights[3], before[3])


def test_default_only_with_per_tensor_weights_and_it_helps_there():
    model = _unbalanced()
    untouched = _equalized(model)  # per-channel weights: off by default
    for name, w in _weights(untouched).items():
        np.testing.assert_array_equal(w, _weights(load(model).model)[name])
    feeds = random_feeds(model, 16)
    held_out = random_feeds(model, 6, seed=4)
    plain = qcc.compile(model, calibration=feeds, per_channel=False, equalize=False, tolerance=None)
    equal = qcc.compile(model, calibration=feeds, per_channel=False, tolerance=None)
    assert fidelity(model, equal.artifact.data, held_out) > fidelity(model, plain.artifact.data, held_out)
    assert isinstance(onnx.load_from_string(equal.artifact.data), onnx.ModelProto)


def test_a_weight_that_is_also_a_graph_output_is_left_alone():
    model = _unbalanced()
    w1 = next(i for i in model.graph.initializer if i.name == "w1")
    model.graph.output.append(onnx.helper.make_tensor_value_info("w1", onnx.TensorProto.FLOAT, list(w1.dims)))
    equalized = _equalized(model, per_channel=False)
    feed = random_feeds(model, 1)[0]
    for got, expected in zip(run(to_proto(equalized), feed), run(model, feed), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
