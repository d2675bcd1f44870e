"""Every case of the bad-input corpus, through the CLI, for every target (issue 7)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from tests.bad_inputs import write_corpus

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
    before = (_digest(model), _digest(data))
    out = tmp_path / f"out.{target}"
    proc = subprocess.run(
        [sys.executable, "-m", "qcc.cli", "compile", str(model), "-t", target, "-c", str(data), "-o", str(out)],
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
    assert (_digest(model), _digest(data)) == before
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []
