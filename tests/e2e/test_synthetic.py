"""Whole synthetic models compiled for ort and run in ONNX Runtime."""

from __future__ import annotations

import pytest

import qcc
from tests.conftest import fidelity, random_feeds
from tests.e2e.synthetic import synthetic_model

# Minimum output cosine vs fp32 on held-out random inputs (random weights; MinMax calibration).
BOUNDS = {"residual_cnn": 0.998, "depthwise_cnn": 0.998, "mlp": 0.995, "transformer_block": 0.995, "yolo_block": 0.995}


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_compiles_to_integer_kernels_with_bounded_error(name):
    model = synthetic_model(name)
    calibration = random_feeds(model, 16, seed=1)
    result = qcc.compile(model, target="ort", calibration=calibration, verify_each=True)
    verify = result.report["verify"]
    assert verify["ok"], verify
    assert verify["quantized_but_float"] == []
    planned = sum(
        1 for n in result.report["nodes"] if n["op_type"] in ("Conv", "MatMul", "Gemm") and n["decision"] == "int8"
    )
    assert planned > 0
    assert verify["integer_kernels"] == planned
    assert fidelity(model, result.model, random_feeds(model, 8, seed=2)) >= BOUNDS[name]
