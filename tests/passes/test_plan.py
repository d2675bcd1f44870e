from __future__ import annotations

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
