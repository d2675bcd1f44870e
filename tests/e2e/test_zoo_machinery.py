"""Smoke test of the zoo/bench machinery (models/zoo.py, bench.py, _harness.py, _score.py) on a tiny CNN.

Builds its own model folders in the data contract of models/README.md, so it needs neither the zoo env nor
the built zoo, and runs the scripts the way `make zoo` / `make bench` do, as child processes.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import qcc
from tests.conftest import build_model

MODELS = Path(__file__).resolve().parents[2] / "models"

TINY_CNN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[8,3,3,3] w1, float[8] b1, float[4,8,3,3] w2, float[4] b2, float[1,3,16,16] x) => (float[1,4,16,16] y) {
  c1 = Conv<pads=[1,1,1,1]>(x, w1, b1)
  r1 = Relu(c1)
  c2 = Conv<pads=[1,1,1,1]>(r1, w2, b2)
  y = Relu(c2)
}
"""


def _harness():
    """models/_harness.py as a module (models/ is a folder of scripts, not a package)."""
    if "_harness" not in sys.modules:
        spec = importlib.util.spec_from_file_location("_harness", MODELS / "_harness.py")
        sys.modules["_harness"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["_harness"])
    return sys.modules["_harness"]


def _model_folder(root: Path, name: str, calib_key: str = "x") -> Path:
    """Writes model.onnx, calib.npz (16 samples) and eval.npz (8 samples), arrays (S, 1, 3, 16, 16)."""
    folder = root / name
    folder.mkdir(parents=True)
    onnx.save(build_model(TINY_CNN), folder / "model.onnx")
    rng = np.random.default_rng(0)
    np.savez(folder / "calib.npz", **{calib_key: rng.normal(0, 1, (16, 1, 3, 16, 16)).astype(np.float32)})
    np.savez(folder / "eval.npz", x=rng.normal(0, 1, (8, 1, 3, 16, 16)).astype(np.float32))
    return folder


def _run(script: str, *args) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, MODELS / script, *map(str, args)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    _model_folder(root, "tiny_cnn")
    _model_folder(root, "bad_calib", calib_key="not_an_input")
    return root


def test_zoo_scores_every_target_and_survives_a_failing_compile(models_dir, tmp_path):
    _run("zoo.py", "--out", tmp_path, "--models-dir", models_dir, "--repeats", 3)
    report = json.loads((tmp_path / "report.json").read_text())
    rows = {(r["model"], r["target"]): r for r in report["rows"]}
    assert set(rows) == {(m, t) for m in ("tiny_cnn", "bad_calib") for t in qcc.targets()}

    row = rows["tiny_cnn", "ort"]
    assert row["ok"], row["reason"]
    assert row["headline"][0] == "cosine_mean" and row["headline"][1] > 0.99  # output-cosine fallback metric
    assert row["float_compute_left"] == 0
    assert row["qcc"]["verify_ok"] and row["qcc"]["int8"] >= 2
    assert row["latency"]["fp32_ms"] > 0 and row["latency"]["int8_ms"] > 0
    assert row["size_mb"] > 0 and row["compile"]["seconds"] > 0

    if "tflite" in qcc.targets():  # the LiteRT runner: NHWC inputs/outputs, int8 I/O, by name or position
        tflite = rows["tiny_cnn", "tflite"]
        assert tflite["ok"], tflite["reason"]
        assert tflite["runtime"] == "litert" and tflite["headline"][1] > 0.99

    trt = rows["tiny_cnn", "trt"]  # scored as TensorRT computes its Q/DQ, not through ORT's integer fusion
    assert trt["ok"] and "simulated" in trt["runtime"] and rows["tiny_cnn", "ort"]["runtime"] == "onnxruntime"

    bad = rows["bad_calib", "ort"]
    assert not bad["ok"] and bad["stage"] == "compile"
    assert bad["reason"].startswith("exit 2: error:") and "not_an_input" in bad["reason"]
    markdown = (tmp_path / "report.md").read_text()
    assert "| tiny_cnn | ort | yes | cos " in markdown and "## Failures" in markdown


def test_bench_compares_qcc_with_the_anchor(models_dir, tmp_path):
    _run(
        "bench.py",
        "--out",
        tmp_path,
        "--models-dir",
        models_dir,
        "--only",
        "tiny_cnn",
        "--target",
        "ort",
        "--repeats",
        3,
        "--no-plot",
    )
    report = json.loads((tmp_path / "report.json").read_text())
    rows = {r["tool"]: r for r in report["rows"]}
    assert set(rows) == {"anchor-ort", "qcc-ort", "qcc-ort-quick"}  # quick: --tolerance off --no-refit
    for row in rows.values():
        assert row["ok"], row["reason"]
        assert row["headline"][1] > 0.99
        assert row["compile"]["peak_rss_mb"] > 50  # a Python process with onnxruntime loaded
        assert row["latency"]["fp32_ms"] == rows["qcc-ort"]["latency"]["fp32_ms"]  # one interleaved loop
    assert rows["anchor-ort"]["anchor"]["recipe"] == "preprocess+per_channel"
    quick = json.loads((tmp_path / "tiny_cnn" / "qcc-ort-quick.report.json").read_text())["options"]
    assert quick["tolerance"] is None and quick["refit"] is False
    assert [r["tool"] for r in report["ratios"]] == ["qcc-ort", "qcc-ort-quick"]
    for ratio in report["ratios"]:
        assert ratio["anchor"] == "anchor-ort" and 0.95 < ratio["fidelity"] < 1.05
    markdown = (tmp_path / "report.md").read_text()
    for tool in rows:
        assert f"| tiny_cnn | {tool} | yes |" in markdown
    assert not (tmp_path / "fidelity_vs_speedup.png").exists()


def test_bench_skips_the_modelopt_rows_without_its_env(models_dir, tmp_path):
    missing = tmp_path / "no-venv-modelopt" / "bin" / "python"
    args = ("--models-dir", models_dir, "--only", "tiny_cnn", "--target", "trt", "--repeats", 3, "--no-plot")
    _run("bench.py", "--out", tmp_path / "bench", *args, "--modelopt-python", missing)
    report = json.loads((tmp_path / "bench" / "report.json").read_text())
    rows = {r["tool"]: r for r in report["rows"]}
    assert list(rows) == ["anchor-ort", "qcc-trt", "anchor-modelopt", "anchor-modelopt-max", "qcc-trt-entropy"]
    for name in ("anchor-modelopt", "anchor-modelopt-max"):
        assert not rows[name]["ok"] and rows[name]["stage"] == "skipped"
        assert rows[name]["reason"].startswith("ModelOpt environment not built: make -C models venv-modelopt")
    for name in ("qcc-trt", "qcc-trt-entropy"):
        assert rows[name]["ok"], rows[name]["reason"]
    assert rows["qcc-trt-entropy"]["qcc"]["verify_ok"]
    assert [(r["tool"], r["anchor"]) for r in report["ratios"]] == [("qcc-trt", "anchor-ort")]
    markdown = (tmp_path / "bench" / "report.md").read_text()
    assert "| tiny_cnn | anchor-modelopt | no (skipped) |" in markdown
    assert "## Skipped" in markdown and "make -C models venv-modelopt" in markdown
    assert "## Failures" not in markdown and "- not measured: no ModelOpt anchor ran" in markdown


# Stands in for models/.venv-modelopt/bin/python: "quantizes" by copying the fp32 model and prints the JSON line
# baseline_modelopt.py prints; with --calibration-method it reports a modelopt failure the way the script does.
FAKE_MODELOPT = """#!/bin/sh
exec {python} -c '
import json, shutil, sys
script, fp32, calib, out, *options = sys.argv[1:]
if options:
    print(json.dumps({{"precision": "int8", "calibration_method": "max", "failed": "ValueError: no max here"}}))
else:
    shutil.copyfile(fp32, out)
    print(json.dumps({{"precision": "int8", "calibration_method": "entropy", "q": 0, "dq": 0}}))
' "$@"
"""


def test_bench_compares_qcc_trt_with_the_modelopt_anchor(models_dir, tmp_path):
    fake = tmp_path / "python"
    fake.write_text(FAKE_MODELOPT.format(python=sys.executable))
    fake.chmod(0o755)
    args = ("--models-dir", models_dir, "--only", "tiny_cnn", "--target", "trt", "--repeats", 3, "--no-plot")
    _run("bench.py", "--out", tmp_path / "bench", *args, "--modelopt-python", fake)
    report = json.loads((tmp_path / "bench" / "report.json").read_text())
    rows = {r["tool"]: r for r in report["rows"]}
    assert rows["anchor-modelopt"]["ok"] and rows["anchor-modelopt"]["headline"][1] > 0.999  # the fp32 copy
    assert rows["anchor-modelopt"]["anchor"]["calibration_method"] == "entropy"
    assert rows["anchor-modelopt"]["compile"]["peak_rss_mb"] > 0
    max_row = rows["anchor-modelopt-max"]
    assert not max_row["ok"] and max_row["reason"] == "modelopt: ValueError: no max here"
    pairs = {(r["tool"], r["anchor"]): r for r in report["ratios"]}
    assert set(pairs) == {
        ("qcc-trt", "anchor-ort"),
        ("qcc-trt", "anchor-modelopt"),
        ("qcc-trt-entropy", "anchor-modelopt"),
        ("qcc-trt", "anchor-modelopt-max"),
    }
    trt = pairs["qcc-trt", "anchor-modelopt"]
    assert 0.95 < trt["fidelity"] <= 1.0 and trt["size MB"] > 0 and trt["int8 ms"] is None  # no TensorRT here
    assert pairs["qcc-trt", "anchor-modelopt-max"]["fidelity"] is None
    markdown = (tmp_path / "bench" / "report.md").read_text()
    assert "## Geometric mean of qcc-trt / anchor-modelopt" in markdown
    assert "| qcc-trt | anchor-modelopt | 1 |" in markdown and "| qcc-trt | anchor-modelopt-max |" not in markdown
    assert "## Where qcc-trt is behind anchor-modelopt" in markdown


@pytest.mark.parametrize(
    ("code", "reason", "min_rss_mb"),
    [
        ("import sys; sys.exit(0)", None, 1),
        ("b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096])", None, 300),
        ("import sys; sys.exit('error: bad input')", "exit 1: error: bad input", 1),
        ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", "killed by SIGSEGV", 1),
        ("import time; time.sleep(30)", "timed out after 1 s", 0),
    ],
)
def test_run_child_reports_reason_and_peak_memory(tmp_path, code, reason, min_rss_mb):
    child = _harness().run_child([sys.executable, "-c", code], tmp_path / "child", timeout=1 if "sleep" in code else 60)
    assert child.reason == reason
    assert child.peak_rss_mb >= min_rss_mb
    assert child.seconds < 10


def test_bench_calib_runs_qcc_and_ort_calibrators_with_the_same_samples(tmp_path):
    _model_folder(tmp_path / "models", "tiny")
    _run("bench_calib.py", "--out", tmp_path / "out", "--models-dir", tmp_path / "models", "--models", "tiny",
         "--samples", "4")
    rows = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {r["tool"] for r in rows} == {"qcc-minmax", "qcc-entropy", "ort-minmax", "ort-entropy"}
    assert all(r["error"] is None and r["seconds"] > 0 and r["peak_rss_mb"] > 0 for r in rows)
    # qcc calibrates the tensors it quantizes (x and the two Relu outputs); ORT every float tensor.
    qcc_rows = [r for r in rows if r["tool"].startswith("qcc")]
    assert all(r["tensors"] == 3 for r in qcc_rows), qcc_rows
    assert "| tiny | 4 | minmax |" in (tmp_path / "out" / "report.md").read_text()
