"""The CLI end to end, as a user runs it: exit codes, one-line errors, untouched inputs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest

from tests.conftest import random_feeds
from tests.e2e.synthetic import synthetic_model

QCC = [sys.executable, "-m", "qcc.cli"]


def qcc_run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*QCC, *args], capture_output=True, text=True, timeout=120)


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def model_and_calib(tmp_path):
    model = synthetic_model("residual_cnn")
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=np.stack([f["x"] for f in random_feeds(model, 8)]))
    return tmp_path / "m.onnx", tmp_path / "calib.npz"


def test_compile_writes_artifact_and_report(model_and_calib, tmp_path):
    model, calib = model_and_calib
    before = digest(model)
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    proc = qcc_run(
        "compile", str(model), "--calib", str(calib), "-o", str(out), "--report", str(report), "--verify-each"
    )
    assert proc.returncode == 0, proc.stderr
    assert "verify ok" in proc.stdout
    assert digest(model) == before
    data = json.loads(report.read_text())
    assert data["verify"]["ok"] and data["totals"]["int8"] > 0
    onnx.checker.check_model(onnx.load(out))
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing_model", "does not exist"),
        ("garbage_model", "not an ONNX model"),
        ("missing_calib", "does not exist"),
        ("wrong_input_name", "not model inputs"),
        ("nan_calib", "NaN or Inf"),
        ("output_is_input", "never overwrites its inputs"),
        ("missing_folder", "does not exist"),
        ("bad_target", "unknown target"),
        ("bad_activation_type", "Invalid value"),
        ("bad_input_shape", "is not NAME=SIZES"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_leaves_no_trace(model_and_calib, tmp_path, case, message):
    model, calib = model_and_calib
    out = tmp_path / "out.onnx"
    args = ["compile", str(model), "--calib", str(calib), "-o", str(out)]
    if case == "missing_model":
        args[1] = str(tmp_path / "nope.onnx")
    elif case == "garbage_model":
        (tmp_path / "garbage.onnx").write_bytes(b"\x08\x01garbage" * 10)
        args[1] = str(tmp_path / "garbage.onnx")
    elif case == "missing_calib":
        args[3] = str(tmp_path / "nope.npz")
    elif case == "wrong_input_name":
        np.savez(tmp_path / "bad.npz", image=np.zeros((2, 1, 3, 16, 16), np.float32))
        args[3] = str(tmp_path / "bad.npz")
    elif case == "nan_calib":
        np.savez(tmp_path / "bad.npz", x=np.full((2, 1, 3, 16, 16), np.nan, np.float32))
        args[3] = str(tmp_path / "bad.npz")
    elif case == "output_is_input":
        args[5] = str(model)
    elif case == "missing_folder":
        args[5] = str(tmp_path / "no" / "such" / "out.onnx")
    elif case == "bad_target":
        args += ["--target", "nope"]
    elif case == "bad_activation_type":
        args += ["--activation-type", "int4"]
    elif case == "bad_input_shape":
        args += ["--input-shape", "x=1,3,a,16"]
    before = digest(model)
    proc = qcc_run(*args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    if case not in ("bad_activation_type",):  # typer's own usage errors draw a box
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert digest(model) == before
    assert not out.exists()
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []


def test_input_shape_pins_a_static_tflite(model_and_calib, tmp_path):
    from qcc.backends._tflite_litert import interpreter

    model, calib = model_and_calib
    out, report = tmp_path / "m.tflite", tmp_path / "report.json"
    proc = qcc_run(
        "compile", str(model), "-c", str(calib), "-t", "tflite", "-o", str(out), "--report", str(report),
        "--input-shape", "x=1,3,16,16",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (detail,) = interpreter(out.read_bytes()).get_input_details()
    assert list(detail["shape_signature"]) == [1, 3, 16, 16]
    assert json.loads(report.read_text())["options"]["input_shapes"] == {"x": [1, 3, 16, 16]}
    assert "--input-shape" in qcc_run("compile", "--help").stdout


def test_inspect_and_targets(model_and_calib):
    model, _ = model_and_calib
    proc = qcc_run("inspect", str(model), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["targets"]["ort"]["int8"] > 0
    assert data["model"]["inputs"][0]["name"] == "x"
    proc = qcc_run("targets")
    assert proc.returncode == 0 and "ort" in proc.stdout


def test_trt_compile_writes_calibration_cache_and_check_passes(model_and_calib, tmp_path):
    model, calib = model_and_calib
    out, cache = tmp_path / "m.trt.onnx", tmp_path / "m.cache"
    proc = qcc_run("compile", str(model), "-t", "trt", "-c", str(calib), "-o", str(out), "--calib-cache", str(cache))
    assert proc.returncode == 0, proc.stderr
    assert cache.read_text().startswith("TRT-")
    proc = qcc_run("check", "--target", "trt", str(out))
    assert proc.returncode == 0 and "0 error(s)" in proc.stdout


def test_check_rejects_an_ort_uint8_model(model_and_calib, tmp_path):
    model, calib = model_and_calib
    out = tmp_path / "m.ort.onnx"
    assert (
        qcc_run("compile", str(model), "-c", str(calib), "-o", str(out), "--activation-type", "uint8").returncode == 0
    )
    proc = qcc_run("check", "--target", "trt", str(out))
    assert proc.returncode == 1 and "zero-point" in proc.stdout


def test_dynamic_compile_needs_no_calibration_file(tmp_path):
    model = synthetic_model("transformer_block")
    onnx.save(model, tmp_path / "m.onnx")
    out = tmp_path / "out.onnx"
    proc = qcc_run("compile", str(tmp_path / "m.onnx"), "--dynamic", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "verify ok" in proc.stdout and "not compared" in proc.stdout
    kinds = {n.op_type for n in onnx.load(out).graph.node}
    assert "DynamicQuantizeLinear" in kinds and "MatMulInteger" in kinds


def test_static_compile_without_calibration_is_a_one_line_error(tmp_path):
    model = synthetic_model("residual_cnn")
    onnx.save(model, tmp_path / "m.onnx")
    proc = qcc_run("compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "out.onnx"))
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: calibration data is required") and "Traceback" not in proc.stderr
    assert not (tmp_path / "out.onnx").exists()


def test_tolerance_and_mode_selection_are_reported(tmp_path):
    from tests.passes.test_mixed_precision import _calibration, _sensitive_model

    model = _sensitive_model()
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "c.npz", **_calibration(model))
    out = tmp_path / "o.onnx"
    proc = qcc_run("compile", str(tmp_path / "m.onnx"), "-c", str(tmp_path / "c.npz"), "-o", str(out),
                   "--tolerance", "1e-7")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())  # rich wraps long lines
    assert "above the bound 1e-07" in text or "within the bound 1e-07" in text
    assert "mode: " in text and "kept (output error static" in text
    proc = qcc_run("compile", str(tmp_path / "m.onnx"), "-c", str(tmp_path / "c.npz"), "-o", str(out),
                   "--tolerance", "off")
    assert proc.returncode == 0 and "tolerance:" not in proc.stdout and "mode: " not in proc.stdout
