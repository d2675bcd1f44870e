"""qcc analyze: per-tensor SQNR of the compiled model against the float model."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from qcc.analyze import analyze_model
from qcc.options import DEFAULT_TOLERANCE, CompileOptions
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


def test_report_dir_writes_json_and_plots(tmp_path):
    pytest.importorskip("matplotlib")
    from qcc.plots import write_report_dir

    model = synthetic_model("residual_cnn")
    feeds = random_feeds(model, 6)
    analysis = analyze_model(model, feeds, CompileOptions(target="ort"), samples=3)
    for t in analysis["tensors"]:
        # Every float value of every sample lands in one bin; the clip range is inside the edges.
        elements = t["histogram"]["counts"]
        assert sum(elements) > 0 and len(t["histogram"]["edges"]) == len(elements) + 1
        low, high = t["clip_range"]
        assert t["histogram"]["edges"][0] < low < high < t["histogram"]["edges"][-1]
    files, notes = write_report_dir(tmp_path / "r", analysis, {"mixed_precision": None})
    assert not notes
    names = sorted(p.rsplit("/", 1)[-1] for p in files)
    assert names == ["clip_ranges.png", "layers.json", "report.json", "sqnr.png"]
    for name in ("sqnr.png", "clip_ranges.png"):
        assert (tmp_path / "r" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "r" / "layers.json").read_text())["tensors"] == analysis["tensors"]


def test_compile_report_dir_from_the_cli(tmp_path):
    pytest.importorskip("matplotlib")
    model = synthetic_model("residual_cnn")
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    feeds = random_feeds(model, 6)
    np.savez(tmp_path / "c.npz", x=np.stack([f["x"] for f in feeds]))
    done = subprocess.run(
        [sys.executable, "-m", "qcc.cli", "compile", str(path), "-c", str(tmp_path / "c.npz"), "-o",
         str(tmp_path / "o.onnx"), "--report-dir", str(tmp_path / "r")],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["mixed_precision"]["bound"] == DEFAULT_TOLERANCE
    assert (tmp_path / "r" / "sqnr.png").exists() and (tmp_path / "r" / "clip_ranges.png").exists()
