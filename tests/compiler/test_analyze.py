"""qcc analyze: per-tensor SQNR of the compiled model against the float model."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from qcc.analyze import analyze_model
from qcc.options import CompileOptions
from tests.conftest import random_feeds
from tests.e2e.synthetic import synthetic_model


@pytest.mark.parametrize("target", ["ort", "trt", "tflite"])
def test_the_input_tensor_sqnr_is_its_quantization_noise_and_every_tensor_is_measured(target):
    model = synthetic_model("residual_cnn")
    feeds = random_feeds(model, 6)
    report = analyze_model(model, feeds, CompileOptions(target=target), samples=3)
    tensors = {t["name"]: t for t in report["tensors"]}
    assert report["samples"] == 3 and len(tensors) >= 4
    assert all(np.isfinite(t["sqnr_db"]) for t in tensors.values())
    # The graph input's noise is only its own rounding: recompute it from the scale qcc chose.
    import qcc

    compiled = qcc.compile(model, target=target, calibration=feeds, verify=False).report["tensors"]["x"]
    scale, zero_point = float(compiled["scale"]), float(compiled["zero_point"])
    low, high = (-128, 127) if compiled["dtype"] == "int8" else (0, 255)
    signal = noise = 0.0
    for feed in feeds[:3]:
        x = feed["x"].astype(np.float64)
        q = (np.clip(np.rint(x / np.float32(scale)) + zero_point, low, high) - zero_point) * scale
        signal, noise = signal + np.sum(x * x), noise + np.sum((x - q) ** 2)
    assert tensors["x"]["sqnr_db"] == pytest.approx(10 * np.log10(signal / noise), abs=0.05)
    assert tensors["x"]["drop_db"] is None  # nothing quantized upstream of the input


def test_cli_ranks_the_worst_tensors_and_writes_json(tmp_path):
    model = synthetic_model("depthwise_cnn")
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=np.stack([f["x"] for f in random_feeds(model, 6)]))
    out = tmp_path / "analysis.json"
    cmd = [sys.executable, "-m", "qcc.cli", "analyze", str(tmp_path / "m.onnx"), "-c", str(tmp_path / "calib.npz"),
           "--top", "3", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "SQNR" in proc.stdout and "output" in proc.stdout
    data = json.loads(out.read_text())
    assert data["target"] == "ort" and data["tensors"]
    missing = subprocess.run([*cmd[:5], "-c", str(tmp_path / "nope.npz")], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and missing.stderr.strip().startswith("error:")
