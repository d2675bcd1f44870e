from __future__ import annotations

import numpy as np

import qcc
from tests.conftest import build_model, fidelity, random_feeds


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
