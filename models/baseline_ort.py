"""The anchor qcc is compared against: onnxruntime.quantization's static QDQ recipe on a zoo model.

    python models/baseline_ort.py FP32.onnx CALIB.npz OUT.onnx [--activation-type {QUInt8,QInt8}]

Recipe (zoo.md section 3): ``quant_pre_process`` (shape inference + ORT graph optimisation), then
``quantize_static(QuantFormat.QDQ, per_channel=True, CalibrationMethod.MinMax, activation QUInt8, weight
QInt8)`` on every sample of CALIB.npz. When a step raises, fall back in order to pre-processing with
``skip_optimization=True`` (per-channel), then that with per-tensor weights. Within each recipe, when ORT's
symbolic shape inference cannot complete (dynamic-shape models: nudenet's free height/width, MiniLM, magika),
pre-processing is redone with ``skip_symbolic_shape=True`` (ONNX shape inference only); the result says
whether that happened. Prints JSON {recipe, seconds, failed: [{recipe, error}], ...}. The output is written to
a temporary file and moved into place, so OUT.onnx is either complete or absent.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from evaluate import load_feeds  # noqa: E402

logger = logging.getLogger("baseline_ort")

# (name, quant_pre_process skip_optimization, per_channel), tried in order.
RECIPES = (
    ("preprocess+per_channel", False, True),
    ("preprocess_skip_optimization+per_channel", True, True),
    ("preprocess_skip_optimization+per_tensor", True, False),
)


def preprocess(fp32: str, out: str, skip_optimization: bool) -> bool:
    """Runs quant_pre_process; returns False when symbolic shape inference had to be skipped, else True."""
    try:
        quant_pre_process(fp32, out, skip_optimization=skip_optimization)
        return True
    except Exception as error:  # noqa: BLE001 - ORT raises a bare Exception here
        if "symbolic shape inference" not in str(error):
            raise
    logger.info("symbolic shape inference incomplete on %s; using ONNX shape inference only", fp32)
    quant_pre_process(fp32, out, skip_optimization=skip_optimization, skip_symbolic_shape=True)
    return False


class NpzReader(CalibrationDataReader):
    """Feeds the samples of a zoo .npz to ORT's calibrator, one feed dict per get_next call."""

    def __init__(self, path: str):
        self.feeds = load_feeds(path)
        self.rewind()

    def get_next(self):
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self.feeds)


def quantize(fp32: str, calib: str, out: str, activation_type: QuantType = QuantType.QUInt8) -> dict:
    """Quantizes fp32 into out with the first recipe of RECIPES that succeeds.

    Returns:
        {"recipe", "seconds" (pre-processing + calibration + quantisation of the successful recipe), "failed",
        "symbolic_shape_inference", "activation_type", "weight_type", "calibration_samples", "int8_mb"}.

    Raises:
        RuntimeError: every recipe failed (the errors are in the message).
    """
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    failed = []
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".baseline_ort.") as tmp:
        for name, skip_optimization, per_channel in RECIPES:
            start = time.perf_counter()
            preprocessed = os.path.join(tmp, f"{name}.pre.onnx")
            quantized = os.path.join(tmp, f"{name}.int8.onnx")
            reader = NpzReader(calib)
            try:
                symbolic_shape = preprocess(fp32, preprocessed, skip_optimization)
                quantize_static(
                    preprocessed,
                    quantized,
                    reader,
                    quant_format=QuantFormat.QDQ,
                    per_channel=per_channel,
                    calibrate_method=CalibrationMethod.MinMax,
                    activation_type=activation_type,
                    weight_type=QuantType.QInt8,
                )
            except Exception as error:  # noqa: BLE001 - any failure moves on to the next recipe, recorded
                logger.warning("recipe %s failed: %s: %s", name, type(error).__name__, error)
                failed.append({"recipe": name, "error": f"{type(error).__name__}: {error}"})
                continue
            seconds = time.perf_counter() - start
            os.replace(quantized, out_path)
            return {
                "recipe": name,
                "seconds": round(seconds, 2),
                "failed": failed,
                "symbolic_shape_inference": symbolic_shape,
                "activation_type": activation_type.name,
                "weight_type": "QInt8",
                "calibration_samples": len(reader.feeds),
                "int8_mb": round(out_path.stat().st_size / 1e6, 3),
            }
    raise RuntimeError(f"every ORT recipe failed on {fp32}: {json.dumps(failed)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fp32")
    parser.add_argument("calib_npz")
    parser.add_argument("out")
    parser.add_argument("--activation-type", choices=["QUInt8", "QInt8"], default="QUInt8")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result = quantize(args.fp32, args.calib_npz, args.out, QuantType[args.activation_type])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
