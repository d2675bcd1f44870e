"""tflite keeps float a Concat whose inputs' ranges differ too much for one int8 scale (YOLO's head)."""

from __future__ import annotations

import numpy as np
import pytest

import qcc
from tests.conftest import build_model, random_feeds, run
from tests.e2e.conformance import run_tflite

YOLO_HEAD = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[4,8,1,1] wbox, float[4] bbox, float[3,8,1,1] wcls, float[3] bcls, float[] pixels, float[N,8,4,4] x)
  => (float[N,7,4,4] y) {
  box = Conv(x, wbox, bbox)
  scaled = Mul(box, pixels)
  logits = Conv(x, wcls, bcls)
  probs = Sigmoid(logits)
  y = Concat<axis=1>(scaled, probs)
}
"""


@pytest.mark.parametrize("pixels, floated", [(640.0, True), (2.0, False)])
def test_concat_of_very_different_ranges_stays_float(pixels, floated):
    model = build_model(YOLO_HEAD, constants={"pixels": np.float32(pixels)})
    calibration = random_feeds(model, 8)
    result = qcc.compile(model, target="tflite", calibration=calibration, tolerance=None)
    concat = next(n for n in result.report["nodes"] if n["op_type"] == "Concat")
    assert (concat["decision"] == "float") == floated, concat
    if not floated:
        return
    assert "ranges differ" in concat["reason"]
    for feed in calibration[:2]:
        (want,) = run(model, feed)
        (got,) = run_tflite(result.artifact.data, feed, "xnnpack")
        probs_error = np.abs(got[:, 4:] - want[:, 4:]).max()
        assert probs_error < 0.01, f"class probabilities off by {probs_error:.3f}"  # int8 alone: up to 2.5


def test_a_zero_size_output_beside_another_verifies():
    model = build_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[4,3] x, int64[1] starts, int64[1] ends, int64[1] axes) => (float[4,3] y, float[0,3] empty) {
          y = Relu(x)
          empty = Slice(x, starts, ends, axes)
        }
        """,
        constants={"starts": np.array([2]), "ends": np.array([2]), "axes": np.array([0])},
    )
    result = qcc.compile(model, target="tflite", calibration=random_feeds(model, 4))
    assert result.report["verify"]["ok"], result.report["verify"]
