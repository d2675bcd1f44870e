"""canonicalize inlines an ``If`` whose condition is constant (passes/canonicalize.py).

The taken branch replaces the node: its nodes move into the graph (renamed where names clash),
references to outer values stay wired, its outputs take over the ``If`` outputs (graph output
names survive), nested constant ``If``s are inlined in turn. Each model is checked against ONNX
Runtime on the original, and compiled for ``ort``, ``trt`` and ``tflite`` end to end.
"""

from __future__ import annotations

import numpy as np
import pytest

import qcc
from qcc.passes.canonicalize import CanonicalizePass
from tests.conftest import build_model, float_passes, op_types, random_feeds, run, to_proto

_HEAD = '<ir_version: 8, opset_import: ["" : 17]>\n'

# The condition is an initializer; the branches read outer values (x, w, m), and the two Ifs'
# branches define the same names (t, a), which must not clash once inlined.
IF_INITIALIZER = (
    _HEAD
    + """g (bool c, float[1,4] w, float[1,4] x) => (float[1,4] y) {
  m = Mul(x, w)
  r = If(c) <then_branch = g1 () => (float[1,4] a) { t = Add(x, w)
 a = Relu(t) }, else_branch = g2 () => (float[1,4] b) { b = Sigmoid(x) }>
  r2 = If(c) <then_branch = g3 () => (float[1,4] a) { t = Add(m, w)
 a = Relu(t) }, else_branch = g4 () => (float[1,4] b) { b = Sigmoid(m) }>
  y = Add(r, r2)
}
"""
)

# The condition is folded: Shape(x)[1] == 4; the taken branch ends in the graph output itself.
IF_FOLDED = (
    _HEAD
    + """g (float[1,4] x, int64[] one, int64 four) => (float[1,4] y) {
  s = Shape(x)
  n = Gather<axis=0>(s, one)
  c = Equal(n, four)
  y = If(c) <then_branch = g1 () => (float[1,4] a) { k = Constant<value=float {2.0}>()
 a = Mul(x, k) }, else_branch = g2 () => (float[1,4] b) { b = Neg(x) }>
}
"""
)

# A constant branch output, a pass-through of a graph input, and an If nested in the taken branch.
IF_NESTED = (
    _HEAD
    + """g (bool c, bool d, float[1,4] x) => (float[1,4] y, float[1,4] z, float[4] v) {
  y, z, v = If(c) <then_branch = g1 () => (float[1,4] a, float[1,4] b, float[4] e) {
      a = If(d) <then_branch = h1 () => (float[1,4] p) { p = Tanh(x) },
                 else_branch = h2 () => (float[1,4] q) { q = Exp(x) }>
      b = Identity(x)
      e = Constant<value=float[4] {1.0, 2.0, 3.0, 4.0}>() },
    else_branch = g2 () => (float[1,4] f, float[1,4] g, float[4] h) {
      f = Neg(x)
      g = Neg(x)
      h = Constant<value=float[4] {0.0, 0.0, 0.0, 0.0}>() }>
}
"""
)

CASES = {
    "initializer_then": (IF_INITIALIZER, {"c": np.array(True)}, ["Mul", "Add", "Relu", "Add", "Relu", "Add"]),
    "initializer_else": (IF_INITIALIZER, {"c": np.array(False)}, ["Mul", "Sigmoid", "Sigmoid", "Add"]),
    "folded_condition": (IF_FOLDED, {"one": np.array(1), "four": np.array(4)}, ["Mul"]),
    "nested_and_pass_through": (IF_NESTED, {"c": np.array(True), "d": np.array(False)}, ["Exp", "Identity"]),
}


def _model(name: str):
    text, constants, _ = CASES[name]
    return build_model(text, constants=constants)


@pytest.mark.parametrize("name", sorted(CASES))
def test_constant_if_is_inlined_with_the_same_outputs(name):
    model = _model(name)
    ir_model = float_passes(model, CanonicalizePass)
    assert sorted(op_types(ir_model)) == sorted(CASES[name][2])
    assert [o.name for o in ir_model.graph.outputs] == [o.name for o in model.graph.output]
    feed = random_feeds(model, 1)[0]
    for expected, got in zip(run(model, feed), run(to_proto(ir_model), feed), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_run_time_if_is_kept():
    model = build_model(IF_INITIALIZER)  # c stays a graph input
    assert "If" in op_types(float_passes(model, CanonicalizePass))


@pytest.mark.parametrize("target", ["ort", "trt", "tflite"])
@pytest.mark.parametrize("name", ["initializer_then", "folded_condition", "nested_and_pass_through"])
def test_constant_if_compiles_and_matches(name, target):
    model = _model(name)
    calibration = random_feeds(model, 8)
    result = qcc.compile(model, target=target, calibration=calibration)
    assert result.report["verify"]["ok"], result.report["verify"]
    assert "If" not in {n["op_type"] for n in result.report["nodes"]}


# The condition depends on a dynamic dimension: canonicalize keeps the If, the TFLite writer's
# folding with the sample's static shapes inlines it (fold_constants inlines an If whose
# condition folds).
IF_ON_SHAPE = (
    _HEAD
    + """g (float[1,n] x, int64[] one, int64 four) => (float[1,n] y) {
  s = Shape(x)
  k = Gather<axis=0>(s, one)
  c = Equal(k, four)
  y = If(c) <then_branch = g1 () => (float[1,n] a) { a = Relu(x) }, else_branch = g2 () => (float[1,n] b) {
      b = Neg(x) }>
}
"""
)


def test_if_on_a_dynamic_dimension_is_inlined_once_shapes_are_static():
    model = build_model(IF_ON_SHAPE, constants={"one": np.array(1), "four": np.array(4)})
    assert "If" in op_types(float_passes(model, CanonicalizePass))
    feeds = [{"x": np.random.default_rng(i).normal(0, 1, (1, 4)).astype(np.float32)} for i in range(4)]
    result = qcc.compile(model, target="tflite", calibration=feeds)
    assert result.report["verify"]["ok"], result.report["verify"]


# Silero VAD's decoder pattern: an If on the batch size whose branches differ in rank (Squeeze or
# not), then an If on the rank of its result. Both conditions fold only with static shapes.
IF_ON_RANK = (
    _HEAD
    + """g (float[n,4] x, int64[1] zero, int64 one) => (float[n,4] y) {
  s = Shape(x)
  k = Gather<axis=0>(s, zero)
  c = Equal(k, one)
  u = If(c) <then_branch = g1 () => (float[4] a) { a = Squeeze(x, zero) }, else_branch = g2 () => (float[n,4] e) {
      e = Identity(x) }>
  s2 = Shape(u)
  rank = Size(s2)
  c2 = Equal(rank, one)
  v = If(c2) <then_branch = h1 () => (float[1,4] p) { p = Unsqueeze(u, zero) }, else_branch = h2 () => (float[n,4] q) {
      q = Identity(u) }>
  y = Relu(v)
}
"""
)


def test_if_on_the_rank_of_an_if_output_compiles_for_tflite():
    model = build_model(IF_ON_RANK, constants={"zero": np.array([0]), "one": np.array(1)})
    feeds = [{"x": np.random.default_rng(i).normal(0, 1, (1, 4)).astype(np.float32)} for i in range(4)]
    result = qcc.compile(model, target="tflite", calibration=feeds)
    assert result.report["verify"]["ok"], result.report["verify"]
