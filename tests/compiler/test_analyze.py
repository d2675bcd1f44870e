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
    cmd = [
        sys.executable,
        "-m",
        "qcc.cli",
        "analyze",
        str(tmp_path / "m.onnx"),
        "-c",
        str(tmp_path / "calib.npz"),
        "--top",
        "3",
        "--json-out",
        str(out),
    ]
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
    assert notes == [  # nothing to plot the decisions from
        "no mixed_precision.png: the compile ran no mixed precision (--tolerance off or --no-verify), "
        "so its report has no mixed_precision section"
    ]
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
        [
            sys.executable,
            "-m",
            "qcc.cli",
            "compile",
            str(path),
            "-c",
            str(tmp_path / "c.npz"),
            "-o",
            str(tmp_path / "o.onnx"),
            "--report-dir",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["mixed_precision"]["bound"] == DEFAULT_TOLERANCE
    for name in ("sqnr.png", "clip_ranges.png", "mixed_precision.png"):  # as `qcc compile --help` promises
        assert _png_title(tmp_path / "r" / name).startswith("qcc compile -> ort")


def test_tensors_come_in_graph_order_and_a_fused_relu_gives_its_drop_to_the_conv():
    model = synthetic_model("residual_cnn")
    report = analyze_model(model, random_feeds(model, 4), CompileOptions(target="ort"), samples=2)
    tensors = {t["name"]: t for t in report["tensors"]}
    # Topological order (r1 < r2 < c3 < ...), where the report's tensor table is alphabetical (c3, f, gp, ...).
    assert list(tensors) == ["x", "r1", "r2", "c3", "r3", "p", "r4", "gp", "f", "logits"]
    # Conv c1 writes r1 through its fused Relu: the Conv is the node to exclude, and it has a drop.
    assert tensors["r1"]["producer"] == "c1" and tensors["r1"]["op_type"] == "Conv"
    assert tensors["r1"]["fused"] == ["r1"] and tensors["r1"]["drop_db"] is not None
    assert tensors["r4"]["producer"] == "c4" and tensors["r4"]["drop_db"] is not None
    assert tensors["c3"]["fused"] == [] and tensors["x"]["producer"] is None


EXP_BETWEEN_CONVS = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[8,3,3,3] w1, float[8] b1, float[4,8,1,1] w2, float[4] b2, float[1,3,8,8] x) => (float[1,4,6,6] y) {
  c1 = Conv(x, w1, b1)
  m = Exp(c1)
  y = Conv(m, w2, b2)
}
"""


def test_excluded_nodes_are_marked_and_not_ranked():
    from qcc.analyze import worst_first
    from tests.conftest import build_model

    # Exp of a wide c1 has a long tail: its int8 grid (for Conv y) loses most, though the Exp runs in float.
    wide = np.random.default_rng(0).normal(0, 1, (8, 3, 3, 3)).astype(np.float32)
    model = build_model(EXP_BETWEEN_CONVS, constants={"w1": wide})
    report = analyze_model(model, random_feeds(model, 4), CompileOptions(target="ort", exclude=("m",)), samples=2)
    tensors = {t["name"]: t for t in report["tensors"]}
    assert tensors["m"]["excluded"] and tensors["m"]["decision"] == "float"
    assert tensors["m"]["drop_db"] == max(t["drop_db"] for t in report["tensors"] if t["drop_db"] is not None)
    ranked = worst_first(report)
    assert [t["name"] for t in ranked] == ["y", "c1"]  # by drop, worst first; m is not ranked
    assert not any(t["excluded"] for t in report["tensors"] if t["name"] != "m")


def test_a_one_shot_reader_is_read_once_for_the_compile_and_the_analysis():
    model = synthetic_model("residual_cnn")
    feeds = random_feeds(model, 5)

    class Reader:  # onnxruntime.quantization's CalibrationDataReader interface, without rewind()
        def __init__(self):
            self.it, self.reads = iter(feeds), 0

        def get_next(self):
            self.reads += 1
            return next(self.it, None)

    reader = Reader()
    report = analyze_model(model, reader, CompileOptions(target="ort"), samples=3)
    assert report["samples"] == 3 and reader.reads == len(feeds) + 1  # one pass, to its end


def _png_title(path) -> str:
    from PIL import Image

    with Image.open(path) as image:
        return image.info["Title"]


@pytest.fixture(scope="module")
def tight_compile():
    """A compile whose mixed precision kept nodes float (a tight tolerance), and its analysis."""
    import qcc

    model = synthetic_model("residual_cnn")
    feeds = random_feeds(model, 6)
    result = qcc.compile(model, "ort", feeds, tolerance=1e-5, refit=False, weight_rounding="nearest")
    assert result.report["mixed_precision"]["kept_float"]
    options = CompileOptions(target="ort", tolerance=1e-5, refit=False)
    return result.report, analyze_model(model, feeds, options, samples=2, result=result)


def test_sqnr_plot_is_in_graph_order_with_node_names_on_its_ticks(tight_compile):
    pytest.importorskip("matplotlib")
    from qcc.plots import _sqnr_figure

    _, analysis = tight_compile
    fig, _ = _sqnr_figure(analysis, [], "analyze")
    labels = [label.get_text() for label in fig.axes[1].get_xticklabels()]
    # Graph order, not alphabetical (c3, p, r1, ...); a tensor a fused Relu writes is labelled by its Conv.
    assert labels[:7] == ["x", "c1", "c2", "c3", "a", "p", "c4"]
    assert labels == [t["producer"] or t["name"] for t in analysis["tensors"]]


def test_compile_report_dir_plots_mixed_precision_and_titles_name_the_command(tight_compile, tmp_path):
    pytest.importorskip("matplotlib")
    from qcc.plots import _mixed_figure, mixed_precision_choices, write_report_dir

    report, analysis = tight_compile
    files, notes = write_report_dir(tmp_path, analysis, report, command="compile")
    assert not notes and str(tmp_path / "mixed_precision.png") in files
    for name in ("sqnr.png", "clip_ranges.png", "mixed_precision.png"):
        assert _png_title(tmp_path / name).startswith("qcc compile -> ort")
    kept = report["mixed_precision"]["kept_float"]
    choices = mixed_precision_choices(report["mixed_precision"])
    assert [c["node"] for c in choices] == [k["node"] for k in kept]
    assert all(c["saved"] > 0 and c["after"] < c["before"] for c in choices)
    fig, _ = _mixed_figure(report["mixed_precision"], report, "compile")
    bars = fig.axes[0].patches
    assert [round(b.get_width(), 12) for b in bars] == [round(c["saved"], 12) for c in choices]
    assert [t.get_text().split(" (")[0] for t in fig.axes[0].get_yticklabels()] == [k["node"] for k in kept]
    write_report_dir(tmp_path / "a", analysis, None, command="analyze")
    assert _png_title(tmp_path / "a" / "sqnr.png").startswith("qcc analyze -> ort")
    assert not (tmp_path / "a" / "mixed_precision.png").exists()
