"""Every case of the bad-input corpus, through the CLI, for every target (issues 7 and 18)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from tests.bad_inputs import OPTION_CASES, write_corpus

TARGETS = ("ort", "trt", "tflite")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


CASES = [
    "empty_file",
    "random_bytes",
    "truncated",
    "tensor_not_model",
    "nan_weights",
    "inf_weights",
    "custom_domain_op",
    "opset_9",
    "future_opset",
    "empty_graph",
    "constant_activation",
    "qdq_model",
    "qdq_model_symmetric",
    "qoperator_model",
    "nothing_quantizable",
    "calib_zero_samples",
    "calib_wrong_rank",
    "calib_int_dtype",
    "calib_inf",
    "calib_missing_input",
    "calib_not_npz",
]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("case", CASES)
def test_bad_input_gets_a_clear_answer_and_loses_nothing(corpus, tmp_path, case, target):
    model, data, outcome = corpus[case]
    outcome = outcome[target] if isinstance(outcome, dict) else outcome
    before = (_digest(model), _digest(data))
    out = tmp_path / ("out.tflite" if target == "tflite" else f"out.{target}.onnx")
    report = tmp_path / "report.json"
    command = ["compile", str(model), "-t", target, "-c", str(data), "-o", str(out), "--report", str(report)]
    proc = subprocess.run(
        [sys.executable, "-m", "qcc.cli", *command],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    if outcome == "error":
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and "Fix:" in lines[0], proc.stderr
        assert not out.exists()
    else:
        assert proc.returncode == 0, proc.stderr
        assert out.stat().st_size > 0
        warnings = json.loads(report.read_text())["warnings"]
        expected = outcome.removeprefix("warn:").split(",") if outcome.startswith("warn:") else []
        assert [w["code"] for w in warnings] == expected
        for warning in warnings:  # the mistake is named where the user looks, not passed silently
            assert warning["message"] in " ".join(proc.stderr.split()), proc.stderr
    assert (_digest(model), _digest(data)) == before
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_option_mistakes_are_never_silent(corpus, tmp_path, case, target):
    """A mistake in the options is an error or, with --strict, exit code 3 after writing."""
    model, data, _ = corpus["good"]
    args, outcome = OPTION_CASES[case]
    suffix = ".tflite" if target == "tflite" else ".onnx"
    other = tmp_path / ("out.onnx" if target == "tflite" else "out.tflite")
    out = tmp_path / f"out{suffix}"
    args = tuple(str(other) if a == "{other}" else a for a in args)
    command = ["compile", str(model), "-t", target, "-c", str(data), "--report", str(tmp_path / "r.json")]
    if "-o" not in args:
        command += ["-o", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "qcc.cli", *command, *args], capture_output=True, text=True, timeout=120
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    if outcome == "error":
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and "Fix:" in lines[0], proc.stderr
        assert not out.exists() and not other.exists()
    else:
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert out.stat().st_size > 0
        codes = [w["code"] for w in json.loads((tmp_path / "r.json").read_text())["warnings"]]
        assert set(codes) & set(outcome.removeprefix("strict:").split(",")), codes
        assert "warning:" in proc.stderr
