from __future__ import annotations

import numpy as np
import pytest

import qcc
from tests.conftest import build_model, fidelity, random_feeds, run


def test_huge_bias_enlarges_the_weight_scale_instead_of_overflowing():
    # Weights ~1e-9 and a bias of 1e4: at s_x * s_w the int32 bias would overflow.
    model = build_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[3,4] w, float[3] b, float[1,4] x) => (float[1,3] y) {
          y = Gemm<transB=1>(x, w, b)
        }
        """,
        constants={"w": np.full((3, 4), 1e-9, np.float32), "b": np.array([1e4, -2e4, 3.0], np.float32)},
    )
    result = qcc.compile(model, calibration=random_feeds(model, 8))
    bias = next(t for t in result.report["tensors"].values() if t["role"] == "bias")
    x_scale = next(t["scale"] for name, t in result.report["tensors"].items() if name == "x")
    assert np.all(np.abs(np.array([1e4, -2e4, 3.0]) / np.array(bias["scale"])) < 2**31)
    weight = next(t for t in result.report["tensors"].values() if t["role"] == "weight")
    np.testing.assert_allclose(np.float32(x_scale) * np.float32(weight["scale"]), bias["scale"], rtol=1e-6)
    assert fidelity(model, result.model, random_feeds(model, 4, seed=9)) > 0.9999


@pytest.mark.parametrize(
    "target, text",
    [
        (
            "ort",  # Gemm's C with one value, per-channel weights
            """
            <ir_version: 8, opset_import: ["" : 17]>
            g (float[6,5] w, float[1] b, float[N,5] x) => (float[N,6] y) {
              y = Gemm<transB=1>(x, w, b)
            }
            """,
        ),
        (
            "tflite",  # grouped ConvTranspose: per-channel scales cover one group's output channels
            """
            <ir_version: 8, opset_import: ["" : 17]>
            g (float[4,3,3,3] w, float[6] b, float[1,4,6,6] x) => (float[1,6,8,8] y) {
              y = ConvTranspose<group=2>(x, w, b)
            }
            """,
        ),
    ],
)
def test_one_value_bias_and_grouped_conv_transpose_bias_get_per_channel_int32(target, text):
    from tests.e2e.conformance import run_tflite

    model = build_model(text)
    calibration = random_feeds(model, 16)
    result = qcc.compile(model, target=target, calibration=calibration, tolerance=None)
    assert [n["decision"] for n in result.report["nodes"]] == ["int8"]
    bias = next(t for t in result.report["tensors"].values() if t["role"] == "bias")
    assert np.size(bias["scale"]) == 6
    for feed in calibration[:4]:  # inside the calibrated ranges: no clipping, only rounding
        (want,) = run(model, feed)
        (got,) = run_tflite(result.artifact.data, feed, "xnnpack") if target == "tflite" else run(result.model, feed)
        assert np.abs(got - want).max() < 0.05 * np.abs(want).max()
