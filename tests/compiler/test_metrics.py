"""Output fidelity per part of a concatenated output (compiler/metrics.py)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

import qcc
from qcc._cli_output import part_lines
from qcc.frontend import load
from qcc.metrics import OutputFidelity, concat_parts
from tests.conftest import build_model, random_feeds

# A detector's output: box coordinates in pixels next to class probabilities.
DETECTOR = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N,8,6] x, float[4,8] wb, float[3,8] wc, float scale) => (float[N,7,6] y) {
  b = MatMul(wb, x)
  box = Mul(b, scale)
  c = MatMul(wc, x)
  prob = Sigmoid(c)
  y = Concat<axis=1>(box, prob)
}
"""


def _detector():
    return build_model(DETECTOR, constants={"scale": np.array(300.0, np.float32)})


def test_parts_are_the_concat_inputs_with_their_extent():
    model = load(_detector()).model
    assert concat_parts(model) == {"y": [("box", 1, 0, 4), ("prob", 1, 4, 7)]}
    assert concat_parts(ir.serde.serialize_model(model)) == concat_parts(model)
    assert concat_parts(b"not a model") == {}


def test_a_part_that_is_off_shows_though_the_whole_output_looks_fine():
    rng = np.random.default_rng(0)
    expected = np.concatenate([rng.uniform(0, 640, (1, 4, 6)), rng.uniform(0, 0.3, (1, 3, 6))], axis=1)
    got = expected.copy()
    got[:, 4:] = np.clip(got[:, 4:] + rng.normal(0, 0.1, (1, 3, 6)), 0, 1)  # class scores off by ~0.1
    fidelity = OutputFidelity({"y": [("box", 1, 0, 4), ("prob", 1, 4, 7)]})
    fidelity.add("y", expected, got)
    fidelity.samples += 1
    y = fidelity.result()["outputs"]["y"]
    box, prob = y["parts"]
    assert y["cosine_min"] > 0.9999 and box["cosine_min"] == pytest.approx(1.0)
    assert prob["tensor"] == "prob" and (prob["start"], prob["stop"]) == (4, 7) and prob["cosine_min"] < 0.95
    assert prob["max_abs_error"] == pytest.approx(np.abs(expected - got).max())
    (line,) = part_lines({"y": y})
    assert "y[4:7] on axis 1 (from 'prob')" in line


@pytest.mark.parametrize("target", ["ort", "tflite"])
def test_every_verify_reports_the_parts(target):
    model = _detector()
    result = qcc.compile(model, target=target, calibration=random_feeds(model, 8))
    parts = result.report["verify"]["fidelity"]["outputs"]["y"]["parts"]
    assert [p["tensor"] for p in parts] == ["box", "prob"]
    assert all(0.0 <= p["cosine_min"] <= 1.0 + 1e-9 for p in parts)
