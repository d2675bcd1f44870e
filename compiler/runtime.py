"""ONNX Runtime sessions for calibration, verification and benchmarks.

One place sets the session options qcc relies on and turns ONNX Runtime's failures into
:class:`~qcc.errors.QccError` messages that say which model could not be loaded or run.
"""

from __future__ import annotations

import onnx
import onnxruntime as ort

from qcc.errors import UnsupportedModelError

# onnx >= 1.23 writes IR version 14 by default; onnxruntime 1.31 loads up to 10 reliably with
# every opset qcc emits (<= 21). The graph content does not depend on the IR version here.
MAX_ORT_IR_VERSION = 10

_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def model_bytes(model: onnx.ModelProto) -> bytes:
    """Serializes a model with an IR version ONNX Runtime accepts (the caller's proto is unchanged)."""
    if model.ir_version <= MAX_ORT_IR_VERSION:
        return model.SerializeToString()
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.ir_version = MAX_ORT_IR_VERSION
    return copy.SerializeToString()


def session(
    model: onnx.ModelProto | bytes,
    *,
    threads: int = 0,
    level: str = "all",
    optimized_path: str | None = None,
    what: str = "the model",
) -> ort.InferenceSession:
    """Creates a CPU inference session.

    Args:
        model: the model or its serialized bytes.
        threads: intra-op threads (0: ONNX Runtime's default).
        level: graph optimization level: disable, basic, extended or all.
        optimized_path: where ONNX Runtime saves the optimized graph, if given.
        what: how to name the model in an error.

    Raises:
        UnsupportedModelError: ONNX Runtime cannot load the model.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = _LEVELS[level]
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if optimized_path is not None:
        options.optimized_model_filepath = optimized_path
    data = model if isinstance(model, bytes) else model_bytes(model)
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedModelError(
            f"ONNX Runtime cannot load {what}: {first}",
            "check that the float model runs in onnxruntime; qcc calibrates by running it there.",
        ) from None
