"""The anchor of qcc's trt target: NVIDIA Model Optimizer's ONNX PTQ on a zoo model.

    python models/baseline_modelopt.py FP32.onnx CALIB.npz OUT.onnx [--precision {int8,fp8}]
        [--calibration-method {entropy,max}]

Runs in models/.venv-modelopt (models/modelopt.mk), never in the project env: modelopt 0.47.0 pins onnx 1.21 and
onnxruntime 1.24 and monkey-patches onnxruntime.quantization process-wide (shared/targets/TENSORRT.md section 8).

Recipe: ``modelopt.onnx.quantization.quantize(quantize_mode=PRECISION, calibration_method=entropy,
high_precision_dtype="fp32", calibration_eps=["cpu"])``, every other option at its default. "entropy" is the
documented default for int8/fp8; ``high_precision_dtype`` is set to fp32 because the default fp16 graph loses
fidelity under ONNX Runtime <= 1.24 (fp16 QuantizeLinear truncation, section 8 defect 1), which would measure
ORT, not the placement. fp8 output needs ORT with graph optimisations off to evaluate (defect 4).

Calibration data: CALIB.npz in qcc's contract (``evaluate.load_feeds``). When every sample has the same shapes,
modelopt gets its documented form, one array per input with the samples concatenated on axis 0, plus
``calibration_shapes`` (one sample's shapes) when the model's own axis 0 is not one sample long (silero's
``sequence_length``), so that modelopt's split returns exactly the original samples. When shapes differ between
samples (OCR, MiniLM), the feeds go through ``calibration_data_reader`` one by one.

modelopt rewrites its input model in place and writes intermediate models next to it (defect 5), so it runs on a
copy in a temporary folder beside OUT.onnx; the result is moved into place, so OUT.onnx is complete or absent.

Prints one JSON object: {precision, calibration_method, calibration_data, calibration_shapes, seconds, q, dq,
opset, calibration_samples, int8_mb, modelopt, onnxruntime}; when modelopt raises, {precision,
calibration_method, seconds, failed: "<Type>: <message>"} instead, exit code 0 (a bench needs a row, not a crash).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import modelopt
import numpy as np
import onnx
import onnxruntime
from modelopt.onnx.quantization import quantize as modelopt_quantize
from onnxruntime.quantization import CalibrationDataReader

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from evaluate import Feed, load_feeds  # noqa: E402

logger = logging.getLogger("baseline_modelopt")

PRECISIONS = ("int8", "fp8")
CALIBRATION_METHODS = ("entropy", "max")


class FeedReader(CalibrationDataReader):
    """Feeds a list of feed dicts to modelopt's calibrator, one per get_next call (shapes may differ)."""

    def __init__(self, feeds: list[Feed]):
        self.feeds = feeds
        self.rewind()

    def get_next(self) -> Feed | None:
        return next(self._iter, None)

    def get_first(self) -> Feed:
        """The first feed without advancing; modelopt calls it for its GEMV shape probe."""
        return self.feeds[0]

    def rewind(self) -> None:
        self._iter = iter(self.feeds)


def _model_axis0(model: onnx.ModelProto) -> dict[str, int]:
    """Axis-0 length of each graph input as modelopt infers it (a symbolic or missing dim counts as 1)."""
    initializers = {init.name for init in model.graph.initializer}
    lengths = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        lengths[value.name] = dims[0].dim_value if dims and dims[0].HasField("dim_value") else 1
    return lengths


def calibration_arguments(model: onnx.ModelProto, feeds: list[Feed]) -> dict:
    """Returns the calibration keyword arguments of ``quantize`` for these feeds.

    Same shapes in every sample: ``calibration_data`` (samples concatenated on axis 0), with
    ``calibration_shapes`` when modelopt's inferred axis 0 of some input is not one sample long. Otherwise
    ``calibration_data_reader``.
    """
    shapes = {name: array.shape for name, array in feeds[0].items()}
    if any({name: array.shape for name, array in feed.items()} != shapes for feed in feeds[1:]):
        return {"calibration_data_reader": FeedReader(feeds)}
    data = {name: np.concatenate([feed[name] for feed in feeds], axis=0) for name in shapes}
    arguments: dict = {"calibration_data": data}
    axis0 = _model_axis0(model)
    if any(axis0.get(name) != shape[0] for name, shape in shapes.items() if shape):
        arguments["calibration_shapes"] = ",".join(
            f"{name}:{'x'.join(str(d) for d in shape)}" for name, shape in shapes.items()
        )
    return arguments


def copy_model(src: str, dst: str) -> None:
    """Copies an ONNX model to dst, inlining external data (modelopt must never see the original's folder)."""
    model = onnx.load(src, load_external_data=False)
    external = any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer)
    if external:
        onnx.save(onnx.load(src), dst)
    else:
        shutil.copyfile(src, dst)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Sends file descriptor 1 to stderr, so that modelopt's and ORT's prints never mix with the JSON line."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def count_qdq(path: Path) -> tuple[int, int, int]:
    """(QuantizeLinear count, DequantizeLinear count, default-domain opset) of a model."""
    model = onnx.load(path, load_external_data=False)
    ops = [node.op_type for node in model.graph.node]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return ops.count("QuantizeLinear"), ops.count("DequantizeLinear"), opset


def failure_reason(error: BaseException) -> str:
    """'<Type>: <message>', or '<Type> at <file>:<line>' of the raising frame when the message is empty.

    modelopt validates its inputs with bare asserts, whose message is empty.
    """
    message = str(error).strip()
    if message:
        return f"{type(error).__name__}: {message}"
    frame = traceback.extract_tb(error.__traceback__)[-1]
    where = frame.filename.split("site-packages/")[-1]
    return f"{type(error).__name__} at {where}:{frame.lineno}: {frame.line}"


def quantize(fp32: str, calib: str, out: str, precision: str = "int8", calibration_method: str = "entropy") -> dict:
    """Quantizes fp32 into out with modelopt; see the module docstring for the recipe.

    Returns:
        The result dict printed by the CLI: on success {precision, calibration_method, calibration_data,
        calibration_shapes, seconds, q, dq, opset, calibration_samples, int8_mb, modelopt, onnxruntime};
        when modelopt (or reading the inputs) raises, {precision, calibration_method, seconds, failed}.
    """
    result: dict = {"precision": precision, "calibration_method": calibration_method}
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".baseline_modelopt.") as tmp:
        model_copy = os.path.join(tmp, "model.onnx")
        quantized = os.path.join(tmp, "model.quant.onnx")
        try:
            copy_model(fp32, model_copy)
            feeds = load_feeds(calib)
            calibration = calibration_arguments(onnx.load(model_copy, load_external_data=False), feeds)
            with stdout_to_stderr():
                modelopt_quantize(
                    model_copy,
                    quantize_mode=precision,
                    calibration_method=calibration_method,
                    calibration_eps=["cpu"],
                    high_precision_dtype="fp32",
                    output_path=quantized,
                    log_level="WARNING",
                    **calibration,
                )
            q, dq, opset = count_qdq(Path(quantized))
        except Exception as error:  # noqa: BLE001 - one row per model: the reason is the result
            result["seconds"] = round(time.perf_counter() - start, 2)
            result["failed"] = failure_reason(error)
            logger.warning("modelopt failed on %s: %s", fp32, result["failed"])
            return result
        seconds = time.perf_counter() - start
        os.replace(quantized, out_path)
    result.update(
        calibration_data="reader" if "calibration_data_reader" in calibration else "arrays",
        calibration_shapes=calibration.get("calibration_shapes"),
        seconds=round(seconds, 2),
        q=q,
        dq=dq,
        opset=opset,
        calibration_samples=len(feeds),
        int8_mb=round(out_path.stat().st_size / 1e6, 3),
        modelopt=modelopt.__version__,
        onnxruntime=onnxruntime.__version__,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fp32")
    parser.add_argument("calib_npz")
    parser.add_argument("out")
    parser.add_argument("--precision", choices=PRECISIONS, default="int8")
    parser.add_argument("--calibration-method", choices=CALIBRATION_METHODS, default="entropy")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result = quantize(args.fp32, args.calib_npz, args.out, args.precision, args.calibration_method)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
