"""Calibration alone: qcc's streamed histograms against onnxruntime.quantization's calibrators.

    .venv/bin/python models/bench_calib.py --out build/bench-calib [--models mobilenet_v2_imagenet ...]
        [--samples 16 64]

Per zoo model and sample count N (the model's calib.npz samples, cycled up to N), each in its own child
process so that its peak RSS is its own:

* ``qcc-minmax`` and ``qcc-entropy``: the float rewrites, the ``ort`` plan and ``CalibratePass`` (ranges
  only, or 2x2048-bin histograms streamed per tensor, then TensorRT-style KL thresholds);
* ``ort-minmax`` and ``ort-entropy``: ``onnxruntime.quantization.calibrate.create_calibrator`` with
  MinMax / Entropy, ``collect_data`` then ``compute_data`` (ORT's default options; its Entropy
  calibrator keeps every sample's activations until ``compute_data``).

Reported: seconds of calibration (model loading and the calibrator's augmented-model setup included,
for both), peak RSS, tensors calibrated (ORT calibrates every float tensor of the op types it
quantizes, qcc only those it quantizes), and the ratios qcc / ORT measured in this run. Writes
``OUT/report.json`` and ``OUT/report.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as h  # noqa: E402

TOOLS = ("qcc-minmax", "qcc-entropy", "ort-minmax", "ort-entropy")
DEFAULT_MODELS = ("mobilenet_v2_imagenet", "efficientnet_lite0", "nudenet_yolov8n")


def _feeds(calib: Path, count: int) -> list[dict[str, np.ndarray]]:
    """The model's calibration samples, cycled up to ``count`` feeds."""
    with np.load(calib) as data:
        arrays = {k: data[k] for k in data.files}
    samples = len(next(iter(arrays.values())))
    return [{k: v[i % samples] for k, v in arrays.items()} for i in range(count)]


def _child(tool: str, model: str, calib: str, count: int) -> dict:
    feeds = _feeds(Path(calib), count)
    start = time.perf_counter()
    if tool.startswith("qcc-"):
        from qcc import frontend
        from qcc.backends import get_backend
        from qcc.context import PassContext
        from qcc.data import open_calibration
        from qcc.options import CompileOptions
        from qcc.passes.calibrate import CalibratePass
        from qcc.passes.plan import PlanPass
        from qcc.pipeline import FLOAT_PASSES

        loaded = frontend.load(model)
        options = CompileOptions(target="ort", method=tool.removeprefix("qcc-"), tolerance=None)
        ctx = PassContext(options, get_backend("ort").spec, open_calibration(feeds, loaded.input_specs()))
        for cls in (*FLOAT_PASSES, PlanPass):
            cls(ctx)(loaded.model)
        tensors = len(CalibratePass(ctx)._observe(loaded.model, _targets(loaded.model)).names)  # noqa: SLF001
    else:
        from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.it = iter(feeds)

            def get_next(self):
                return next(self.it, None)

        method = CalibrationMethod.MinMax if tool == "ort-minmax" else CalibrationMethod.Entropy
        with tempfile.TemporaryDirectory() as folder:
            calibrator = create_calibrator(
                model, None, augmented_model_path=os.path.join(folder, "augmented.onnx"), calibrate_method=method
            )
            calibrator.collect_data(Reader())
            tensors = len(calibrator.compute_data().data)
    return {"seconds": round(time.perf_counter() - start, 3), "tensors": tensors}


def _targets(model) -> list[str]:
    from qcc.annotations import Role, get_quant, quantized_values

    return [
        v.name for v in quantized_values(model.graph)
        if get_quant(v).role == Role.ACTIVATION and v.const_value is None and get_quant(v).shared_with is None
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/bench-calib"))
    parser.add_argument("--models-dir", type=Path, default=Path(__file__).parent / "build")
    parser.add_argument("--models", nargs="*", default=list(DEFAULT_MODELS))
    parser.add_argument("--samples", nargs="*", type=int, default=[16, 64])
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--child", nargs=4, metavar=("TOOL", "MODEL", "CALIB", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        tool, model, calib, count = args.child
        print(json.dumps(_child(tool, model, calib, int(count))))
        return 0
    rows = []
    for name in args.models:
        folder = args.models_dir / name
        for count in args.samples:
            for tool in TOOLS:
                model, calib = folder / "model.onnx", folder / "calib.npz"
                cmd = [sys.executable, __file__, "--child", tool, model, calib, str(count)]
                child = h.run_child(cmd, args.out / "logs" / f"{name}-{tool}-{count}", args.timeout)
                row = {"model": name, "samples": count, "tool": tool, "peak_rss_mb": child.peak_rss_mb,
                       "error": child.reason}
                if child.reason is None:
                    out = Path(args.out / "logs" / f"{name}-{tool}-{count}.out").read_text().strip().splitlines()
                    row.update(json.loads(out[-1]))  # ORT prints progress lines before it
                rows.append(row)
                print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(rows, indent=2))
    (args.out / "report.md").write_text(render(rows))
    print(render(rows))
    return 0


def render(rows: list[dict]) -> str:
    """One line per (model, samples, method): qcc and ORT seconds and peak RSS, and the ratios."""
    by = {(r["model"], r["samples"], r["tool"]): r for r in rows}
    lines = [
        "| model | samples | method | qcc s | ORT s | qcc/ORT time | qcc MB | ORT MB | qcc/ORT memory "
        "| tensors qcc / ORT |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, samples, tool in by:
        if not tool.startswith("qcc-"):
            continue
        method = tool.removeprefix("qcc-")
        q, o = by[(model, samples, tool)], by.get((model, samples, f"ort-{method}"), {})
        if q.get("error") or o.get("error") or not o:
            lines.append(f"| {model} | {samples} | {method} | failed: {q.get('error') or o.get('error')} |")
            continue
        lines.append(
            f"| {model} | {samples} | {method} | {q['seconds']:.2f} | {o['seconds']:.2f} "
            f"| {q['seconds'] / o['seconds']:.2f} "
            f"| {q['peak_rss_mb']:.0f} | {o['peak_rss_mb']:.0f} | {q['peak_rss_mb'] / o['peak_rss_mb']:.2f} "
            f"| {q['tensors']} / {o['tensors']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
