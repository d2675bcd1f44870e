"""The integer-exact simulation of tflite artifacts (backends/_tflite_sim.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import qcc
from qcc.backends._tflite_litert import interpreter, run
from qcc.runtime import session
from tests.conftest import build_model, random_feeds
from tests.e2e.synthetic import synthetic_model

_POINTWISE = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,16,6,6] x, float[24,16,1,1] w, float[24] b) => (float[1,24,6,6] y) {
 y = Conv(x, w, b)
}
"""


def _initializers(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}


def test_conv_is_exact_integer_accumulation_with_one_float32_requantization():
    model = build_model(_POINTWISE)
    feeds = random_feeds(model, 8)
    result = qcc.compile(model, target="tflite", calibration=feeds)
    sim = result.artifact.simulation
    ops = [n.op_type for n in sim.graph.node]
    assert "Conv" in ops and ops.count("Mul") == 1
    inits = _initializers(sim)
    # The rewritten Conv reads integer-valued float32 weights and bias.
    weight = next(a for a in inits.values() if a.dtype == np.float32 and a.shape == (24, 16, 1, 1))
    bias = next(a for a in inits.values() if a.dtype == np.float32 and a.shape == (24,))
    assert np.array_equal(weight, np.rint(weight)) and np.array_equal(bias, np.rint(bias))
    feed = random_feeds(model, 1, seed=9)[0]
    # Reference in numpy integers, with the parameters the simulation's Q nodes carry.
    q_in = next(n for n in sim.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "x")
    q_out = next(n for n in sim.graph.node if n.op_type == "QuantizeLinear" and n.input[0] != "x")
    s_x, z_x = (inits[name] for name in q_in.input[1:3])
    z_y = inits[q_out.input[2]]
    tensors = result.report["tensors"]
    s_w, s_y = (np.asarray(tensors[name]["scale"], np.float32) for name in ("w", "y"))
    multiplier = ((np.float32(s_x) * s_w) / np.float32(s_y)).reshape(24, 1, 1)
    x_q_values = np.clip(np.rint(feed["x"] / s_x) + z_x, -128, 127).astype(np.int64) - int(z_x)
    acc = np.einsum("nchw,oc->nohw", x_q_values, weight[:, :, 0, 0].astype(np.int64))
    acc += bias.astype(np.int64)[:, None, None]
    expected = np.clip(np.rint(acc.astype(np.float32) * multiplier) + z_y, -128, 127)
    outputs = _run_unoptimized(_with_output(sim, q_out.output[0]), feed)
    np.testing.assert_array_equal(outputs[-1].astype(np.int64), expected.astype(np.int64))


def _run_unoptimized(proto: onnx.ModelProto, feed) -> list[np.ndarray]:
    # As verify() runs the simulation: ONNX Runtime's QDQ fusions would round differently.
    return session(proto, level="disable").run(None, feed)


def _with_output(proto: onnx.ModelProto, name: str) -> onnx.ModelProto:
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT8, None))
    return proto


@pytest.mark.parametrize("name", ["depthwise_cnn", "residual_cnn"])
def test_xnnpack_output_is_bit_identical_to_the_simulation(name):
    model = synthetic_model(name)
    result = qcc.compile(model, target="tflite", calibration=random_feeds(model, 8))
    xnnpack = result.report["verify"]["resolvers"]["xnnpack"]
    assert xnnpack["ok"] and xnnpack["max_error_steps"] == 0.0, xnnpack
    # Held-out inputs too, not only the calibration samples verify() used.
    interp = interpreter(result.artifact.data, "xnnpack")
    for feed in random_feeds(model, 4, seed=11):
        expected = _run_unoptimized(result.artifact.simulation, feed)
        got = run(interp, feed, [np.shape(e) for e in expected])
        for e, g in zip(expected, got, strict=True):
            np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("opset", [13, 17])
def test_residual_add_and_global_pool_match_xnnpack_at_any_opset(opset):
    text = f"""<ir_version: 7, opset_import: ["" : {opset}]>
g (float[1,8,6,6] x, float[8,8,1,1] w1, float[8,8,3,3] w2, float[8] b2) => (float[1,8,1,1] y) {{
 a = Conv(x, w1)
 r = Relu(a)
 c = Conv<pads=[1,1,1,1]>(r, w2, b2)
 s = Add(c, a)
 y = GlobalAveragePool(s)
}}
"""
    model = build_model(text)
    result = qcc.compile(model, target="tflite", calibration=random_feeds(model, 8))
    ops = {n.op_type for n in result.artifact.simulation.graph.node}
    assert "GlobalAveragePool" not in ops and "Floor" in ops  # MEAN and ADD modelled
    interp = interpreter(result.artifact.data, "xnnpack")
    for feed in random_feeds(model, 8, seed=13):
        expected = _run_unoptimized(result.artifact.simulation, feed)
        got = run(interp, feed, [np.shape(e) for e in expected])
        np.testing.assert_array_equal(got[0], expected[0])


@pytest.mark.parametrize(
    ("weight", "output"),
    [("float[8] w", "float[2,3]"), ("float[2,8,5] w", "float[2,3,5]")],
    ids=["vector_weight", "batched_weight"],
)
def test_matmul_with_a_constant_that_is_not_2d_keeps_the_qdq_simulation(weight, output):
    # Both crashed the rewrite: an IndexError on the 1-D weight's column axis, and a requantize Mul
    # over the wrong axis of the batched one that ONNX Runtime refused to load.
    model = build_model(
        f"""<ir_version: 8, opset_import: ["" : 17]>
        g ({weight}, float[2,3,8] x) => ({output} y) {{
          y = MatMul(x, w)
        }}"""
    )
    result = qcc.compile(model, target="tflite", calibration=random_feeds(model, 8))
    assert "Mul" not in [n.op_type for n in result.artifact.simulation.graph.node]
    for resolver, entry in result.report["verify"]["resolvers"].items():
        assert entry["ok"] and entry["within_one_step"] >= 0.99, (resolver, entry)
