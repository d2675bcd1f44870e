"""Residual-stream equalization keeps the float function, evens out the stream's channel ranges
and lowers the int8 model's error; streams it cannot rescale exactly are left alone."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import qcc
from qcc.backends import get_backend
from qcc.context import PassContext
from qcc.data import CalibrationData
from qcc.frontend import load
from qcc.irutils import const_array
from qcc.options import CompileOptions
from qcc.passes.equalize_residual import ResidualEqualizationPass
from tests.conftest import build_model, fidelity, random_feeds, run, to_proto

# A linear bottleneck block: the stream {a, s} is written by the project convs wa and wb and read
# by the expand conv we and the head conv wc.
BLOCK = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[8,4,1,1] w0, float[8] b0, float[6,8,1,1] wa, float[6] ba, float[12,6,1,1] we, float[12] be,
   float[6,12,1,1] wb, float[6] bb, float[4,6,1,1] wc, float[4] bc, float[1,4,8,8] x) => (float[1,4,8,8] y) {
  h = Conv(x, w0, b0)
  r = Relu(h)
  a = Conv(r, wa, ba)
  e = Conv(a, we, be)
  q = Relu(e)
  b = Conv(q, wb, bb)
  s = Add(a, b)
  y = Conv(s, wc, bc)
}
"""
LOUD = np.array([30, 0.05, 1, 5, 0.2, 10])  # the stream's channels, wildly unequal


def _block(text: str = BLOCK) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    constants = {
        name: rng.normal(0, 0.3, shape) * LOUD.reshape((-1,) + (1,) * (len(shape) - 1))
        for name, shape in (("wa", (6, 8, 1, 1)), ("wb", (6, 12, 1, 1)))
    }
    return build_model(text, seed=1, constants=constants)


def _equalized(model: onnx.ModelProto, feeds, **options):
    loaded = load(model)
    data = CalibrationData(feeds, loaded.input_specs())
    ctx = PassContext(CompileOptions(**options), get_backend("ort").spec, data, statistics={})
    ResidualEqualizationPass(ctx)(loaded.model)
    return loaded.model


def _weights(model):
    return {n.inputs[1].name: const_array(n.inputs[1]) for n in model.graph if n.op_type == "Conv"}


def _stream_ranges(model: onnx.ModelProto, feeds) -> np.ndarray:
    """Each channel's largest magnitude over the stream tensors a and s on ``feeds``."""
    probed = onnx.ModelProto.FromString(model.SerializeToString())
    for name in ("a", "s"):
        probed.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return np.max([np.abs(out).max(axis=(0, 2, 3)) for feed in feeds for out in run(probed, feed)[1:]], axis=0)


def test_the_float_function_is_kept_and_the_stream_channels_even_out():
    model, feeds = _block(), random_feeds(_block(), 8)
    equalized = to_proto(_equalized(model, feeds))
    for feed in random_feeds(model, 4, seed=5):
        np.testing.assert_allclose(run(equalized, feed)[0], run(model, feed)[0], rtol=1e-4, atol=1e-4)
    before, after = _stream_ranges(model, feeds), _stream_ranges(equalized, feeds)
    spread = lambda r: r.max() / np.median(r)  # noqa: E731
    assert spread(after) < spread(before) / 3  # the loud channels came down towards the rest ...
    assert np.all(after <= before * (1 + 1e-5))  # ... and no quiet channel was amplified
    untouched = _weights(load(model).model)["w0"]  # the stem conv writes no stream
    np.testing.assert_array_equal(_weights(load(equalized).model)["w0"], untouched)


def test_it_lowers_the_int8_error_and_can_be_turned_off():
    model = _block()
    feeds, held_out = random_feeds(model, 16), random_feeds(model, 6, seed=4)
    plain = qcc.compile(model, calibration=feeds, equalize=False, tolerance=None)
    equal = qcc.compile(model, calibration=feeds, tolerance=None)
    assert fidelity(model, equal.artifact.data, held_out) > fidelity(model, plain.artifact.data, held_out)
    off = _equalized(model, feeds, equalize=False)
    for name, weight in _weights(off).items():
        np.testing.assert_array_equal(weight, _weights(load(model).model)[name])


@pytest.mark.parametrize(
    "variant",
    [
        # the expand conv is depthwise with channel multiplier 2
        (("float[12,6,1,1] we", "float[12,1,3,3] we"),
         ("e = Conv(a, we, be)", "e = Conv<group=6, pads=[1,1,1,1]>(a, we, be)")),
        # symbolic spatial sizes: each Conv output gets dims of its own
        (("float[1,4,8,8] x", "float[1,4,H,W] x"), ("(float[1,4,8,8] y)", "(float[1,4,H,W] y)")),
    ],
    ids=["depthwise-reader", "symbolic-dims"],
)
def test_variants_are_rewritten_exactly(variant):
    text = BLOCK
    for old, new in variant:
        text = text.replace(old, new)
    model = _block(text)
    equalized = to_proto(_equalized(model, random_feeds(model, 4, batch=8)))  # symbolic dims: 8
    assert not np.array_equal(_weights(load(equalized).model)["wa"], _weights(load(model).model)["wa"])
    for feed in random_feeds(model, 3, seed=5, batch=8):
        np.testing.assert_allclose(run(equalized, feed)[0], run(model, feed)[0], rtol=1e-4, atol=1e-4)


def _assert_untouched(model: onnx.ModelProto, feeds) -> None:
    equalized = _equalized(model, feeds)
    for name, weight in _weights(equalized).items():
        np.testing.assert_array_equal(weight, _weights(load(model).model)[name], err_msg=name)


def test_streams_that_cannot_be_rescaled_exactly_are_left_alone():
    # the stream is a graph output
    exposed = _block(BLOCK.replace("(float[1,4,8,8] y)", "(float[1,4,8,8] y, float[1,6,8,8] s)"))
    _assert_untouched(exposed, random_feeds(exposed, 4))
    # a Relu reads the stream: only a Conv reader takes the factors back into its weights
    relu = _block(BLOCK.replace("y = Conv(s, wc, bc)", "t = Relu(s)\n  y = Conv(t, wc, bc)"))
    _assert_untouched(relu, random_feeds(relu, 4))
    # a Relu writes into the stream: b = Relu(Conv) is not divided by a weight factor
    nonlinear = _block(BLOCK.replace("b = Conv(q, wb, bb)", "p = Conv(q, wb, bb)\n  b = Relu(p)"))
    _assert_untouched(nonlinear, random_feeds(nonlinear, 4))


def test_a_one_shot_iterator_is_not_read():
    model = _block()
    feeds = random_feeds(model, 4)
    loaded = load(model)
    data = CalibrationData(iter(feeds), loaded.input_specs())
    ResidualEqualizationPass(PassContext(CompileOptions(), get_backend("ort").spec, data))(loaded.model)
    for name, weight in _weights(loaded.model).items():
        np.testing.assert_array_equal(weight, _weights(load(model).model)[name])
