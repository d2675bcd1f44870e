from __future__ import annotations

import numpy as np
import pytest

from qcc.annotations import Decision, get_decision, get_quant
from qcc.passes.canonicalize import CanonicalizePass
from qcc.passes.fold_batchnorm import FoldBatchNormPass
from qcc.passes.plan import PlanPass
from tests.conftest import build_model, float_passes
from tests.e2e.synthetic import synthetic_model


def _decisions(model):
    return {n.name: get_decision(n).decision for n in model.graph}


def test_residual_cnn_plan():
    planned = float_passes(synthetic_model("residual_cnn"), CanonicalizePass, FoldBatchNormPass, PlanPass)
    d = _decisions(planned)
    assert d["c1"] == d["c2"] == d["c3"] == d["c4"] == Decision.INT8  # Conv
    assert d["r1"] == d["r2"] == d["r3"] == d["r4"] == Decision.FUSED  # Relu into its producer
    assert d["a"] == Decision.INT8  # residual Add joins: both neighbours are quantized
    assert d["p"] == d["f"] == Decision.INT8  # MaxPool, Flatten move quantized data
    values = {v.name: v for n in planned.graph for v in n.outputs}
    assert get_quant(values["c1"]) is None  # absorbed: the Relu output carries the quantization
    assert get_quant(values["r1"]) is not None
    assert get_quant(values["f"]).shared_with == "gp"


def test_ops_without_int8_kernels_stay_float_with_a_reason():
    planned = float_passes(synthetic_model("transformer_block"), CanonicalizePass, PlanPass)
    for node in planned.graph:
        if node.op_type in ("LayerNormalization", "Erf", "Div"):
            decision = get_decision(node)
            assert decision.decision == Decision.FLOAT and "no int8 kernel" in decision.reason


def test_isolated_int8_op_stays_float():
    model = build_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1,4] x, float[1,4] y) => (float[1,4] z) {
          z = Add(x, y)
        }
        """
    )
    planned = float_passes(model, PlanPass)
    decision = get_decision(next(iter(planned.graph)))
    assert decision.decision == Decision.FLOAT and "no quantized neighbour" in decision.reason


@pytest.mark.parametrize("low", [0.0, 0.5])
def test_clip_is_absorbed_only_when_its_lower_bound_is_not_positive(low):
    import numpy as np

    model = build_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[4,4] w, float[] lo, float[] hi, float[1,4] x) => (float[1,4] y) {
          m = MatMul(x, w)
          y = Clip(m, lo, hi)
        }
        """,
        constants={"lo": np.array(low, np.float32), "hi": np.array(6, np.float32)},
    )
    planned = float_passes(model, CanonicalizePass, PlanPass)
    clip = next(n for n in planned.graph if n.op_type == "Clip")
    assert get_decision(clip).decision == (Decision.FUSED if low <= 0 else Decision.INT8)


# MatMul -> tanh-approximated GELU (as exported by JAX and TF) -> MatMul: the cubic and the Tanh.
GELU = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[16,16] w1, float[16,16] w2, float[] k, float[] c, float[] one, float[] half, float[N,16] x)
    => (float[N,16] y) {
  h = MatMul(x, w1)
  sq = Mul(h, h)
  cube = Mul(sq, h)
  kc = Mul(cube, k)
  inner = Add(h, kc)
  scaled = Mul(inner, c)
  t = Tanh(scaled)
  t1 = Add(t, one)
  th = Mul(t1, half)
  g = Mul(h, th)
  y = MatMul(g, w2)
}
"""
GELU_CONSTANTS = {
    "k": np.array(0.044715, np.float32),
    "c": np.array(0.7978846, np.float32),
    "one": np.array(1.0, np.float32),
    "half": np.array(0.5, np.float32),
}


def _gelu_plan(target):
    model = build_model(GELU, seed=2, constants=GELU_CONSTANTS)
    return {
        n.outputs[0].name: get_decision(n) for n in float_passes(model, CanonicalizePass, PlanPass, target=target).graph
    }


def test_ort_runs_elementwise_ops_float_outside_int8_chains():
    decisions = _gelu_plan("ort")
    assert decisions["h"].decision == decisions["y"].decision == Decision.INT8
    for name in ("sq", "cube", "kc", "inner", "scaled", "t1", "th", "g"):
        assert decisions[name].decision == Decision.FLOAT, name
    assert "between float neighbours" in decisions["kc"].reason
    # Inside a chain (both inputs written by int8 nodes, the output read by one) an Add stays int8.
    residual = _decisions(float_passes(synthetic_model("residual_cnn"), CanonicalizePass, FoldBatchNormPass, PlanPass))
    assert residual["a"] == Decision.INT8


def test_tflite_keeps_the_whole_chain_int8():
    decisions = _gelu_plan("tflite")
    assert decisions["sq"].decision == decisions["g"].decision == Decision.INT8


def test_elementwise_ops_outside_chains_run_float_without_losing_integer_kernels():
    """With the GELU float, both MatMuls still run integer kernels in ONNX Runtime's optimized graph,
    and the output is no further from fp32 (on Magika, whose eval files leave the calibration range
    of the GELU's cubic term, it is much closer: README, "ort plan")."""
    import dataclasses

    from qcc.backends import get_backend
    from qcc.backends.onnxruntime import INTEGER_KERNELS, fusion_census
    from qcc.context import PassContext
    from qcc.data import open_calibration
    from qcc.frontend import load
    from qcc.options import CompileOptions
    from qcc.pipeline import run_pipeline
    from tests.conftest import random_feeds, run

    model = build_model(GELU, seed=2, constants=GELU_CONSTANTS)
    calibration, held_out = random_feeds(model, 16, batch=8), random_feeds(model, 8, seed=5, batch=8)
    backend = get_backend("ort")
    found = {}
    for chains_only in (True, False):
        loaded = load(model)
        spec = dataclasses.replace(backend.spec, int8_chains_only=chains_only)
        ctx = PassContext(CompileOptions(tolerance=None), spec, open_calibration(calibration, loaded.input_specs()))
        run_pipeline(loaded.model, ctx)
        artifact = backend.emit(loaded.model, ctx).runtime_model
        census, float_compute = fusion_census(artifact)
        error = np.mean(
            [
                np.linalg.norm(run(artifact, f)[0] - run(model, f)[0]) / np.linalg.norm(run(model, f)[0])
                for f in held_out
            ]
        )
        found[chains_only] = (sum(census[op] for op in INTEGER_KERNELS), float_compute, error)
    assert found[True][0] == found[False][0] == 2 and not found[True][1]
    assert found[True][2] <= found[False][2]


TAILS = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4,6,6] x, float[8,4,3,3] w1, float[8] b1, float[8,8,1,1] w2, float[8] b2)
  => (float[1,8,6,6] prob, float[1,8,6,6] act) {
  c = Conv<pads=[1,1,1,1]>(x, w1, b1)
  s = Sigmoid(c)
  silu = Mul(c, s)
  act = Conv(silu, w2, b2)
  logits = Conv(silu, w2, b2)
  prob = Sigmoid(logits)
}
"""


@pytest.mark.parametrize("io", ["float", "int8"])
def test_tflite_runs_a_fixed_step_tail_float_unless_the_output_is_int8(io):
    """A LOGISTIC read only in float would round its output to 1/256 for nothing; inside SiLU its int8
    reader needs it int8, and with --io int8 the graph output itself is int8."""
    from qcc.backends import get_backend
    from qcc.context import PassContext
    from qcc.frontend import load
    from qcc.options import CompileOptions

    model = build_model(TAILS, seed=3)
    loaded = load(model).model
    ctx = PassContext(CompileOptions(target="tflite", io=io), get_backend("tflite").spec)
    for cls in (CanonicalizePass, PlanPass):
        cls(ctx)(loaded)
    decisions = {n.outputs[0].name: get_decision(n) for n in loaded.graph}
    assert decisions["s"].decision == Decision.INT8
    if io == "float":
        assert decisions["prob"].decision == Decision.FLOAT
        assert "fixed steps of 0.00390625" in decisions["prob"].reason
    else:
        assert decisions["prob"].decision == Decision.INT8


def test_tflite_fixed_step_tail_output_is_not_rounded_to_its_steps():
    """In LiteRT the probabilities come out between the 1/256 steps, closer to float than a step allows."""
    from ai_edge_litert.interpreter import Interpreter

    import qcc
    from tests.conftest import random_feeds, run

    model = build_model(TAILS, seed=3)
    calibration, held_out = random_feeds(model, 8), random_feeds(model, 4, seed=9)
    result = qcc.compile(model, target="tflite", calibration=calibration)
    interpreter = Interpreter(model_content=result.artifact.data)
    interpreter.allocate_tensors()
    (x,) = interpreter.get_input_details()
    prob = next(d for d in interpreter.get_output_details() if d["name"] == "prob")
    assert prob["dtype"] == np.float32
    off_grid = []
    for feed in held_out:
        interpreter.set_tensor(x["index"], feed["x"])
        interpreter.invoke()
        got = interpreter.get_tensor(prob["index"])
        want = run(model, feed)[0]
        off_grid.append(np.mean(np.abs(got * 256 - np.round(got * 256)) > 1e-3))
        assert np.abs(got - want).max() < 0.05
    assert np.mean(off_grid) > 0.5


def test_a_chain_of_fixed_step_ops_read_in_float_runs_float_from_its_end():
    from qcc.backends import get_backend
    from qcc.context import PassContext
    from qcc.frontend import load
    from qcc.options import CompileOptions

    model = build_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1,4,6,6] x, float[8,4,3,3] w1, float[8] b1) => (float[1,8,6,6] y) {
          c = Conv<pads=[1,1,1,1]>(x, w1, b1)
          s = Sigmoid(c)
          y = Tanh(s)
        }
        """,
        seed=3,
    )
    loaded = load(model).model
    ctx = PassContext(CompileOptions(target="tflite"), get_backend("tflite").spec)
    for cls in (CanonicalizePass, PlanPass):
        cls(ctx)(loaded)
    decisions = {n.outputs[0].name: get_decision(n).decision for n in loaded.graph}
    assert decisions == {"c": Decision.INT8, "s": Decision.FLOAT, "y": Decision.FLOAT}


@pytest.mark.parametrize("target", ["ort", "trt", "tflite"])
def test_plans_sharing_node_reasons_decide_as_plans_made_afresh(target):
    """Mixed precision plans one graph for many float sets, sharing what keeps a node float by
    itself: each plan must decide exactly as a fresh one, whatever the plans before it floated."""
    import dataclasses

    from qcc.annotations import clear_annotations
    from qcc.backends import get_backend
    from qcc.context import PassContext
    from qcc.options import CompileOptions

    model = float_passes(synthetic_model("transformer_block"), CanonicalizePass, target=target)
    ctx = PassContext(options=CompileOptions(target=target), target=get_backend(target).spec)
    names = [n.name for n in model.graph]
    float_sets = [set(), set(names[::3]), {names[1]}, set(names), set(names[1::2]), set()]
    shared: dict = {}
    for floating in float_sets:
        planned_ctx = dataclasses.replace(ctx, keep_float=dict.fromkeys(floating, "kept float"))
        clear_annotations(model.graph)
        PlanPass(planned_ctx, shared)(model)
        with_shared = {n.name: (get_decision(n).decision, get_decision(n).reason) for n in model.graph}
        clear_annotations(model.graph)
        PlanPass(planned_ctx)(model)
        assert {n.name: (get_decision(n).decision, get_decision(n).reason) for n in model.graph} == with_shared
    assert shared  # the reasons were shared, not recomputed
