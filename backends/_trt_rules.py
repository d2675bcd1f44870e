"""TensorRT explicit-quantization rules, checked on any QDQ ONNX model (qcc's or another tool's).

Each rule is what the TensorRT ONNX parser enforces or what makes TensorRT fall back or fail to
fuse (``shared/targets/TENSORRT.md`` §2, §4, §9):

* ``zero-point``: every Q/DQ zero point is 0 and of a signed type (INT8/FP8/INT4): no uint8.
* ``scale``: scales are constants, finite and > 0; per-tensor (one value) for activations; a
  per-channel scale only on constant weights, with one value per channel along ``axis``.
* ``opset``: 13 for per-channel, 19 for FP8, 21 for ``block_size``.
* ``bias``: no Q/DQ on a Conv/Gemm bias (TensorRT adds the bias in high precision).
* ``epilogue``: no Q/DQ between a weighted op and the BatchNorm/Relu/Clip it fuses.
* ``concat``: all quantized Concat inputs share one scale.
* ``weighted-input`` (a warning): a Conv/ConvTranspose/Gemm/MatMul whose inputs are not both
  dequantized runs in float.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

_WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_EPILOGUE = ("BatchNormalization", "Relu", "Clip", "LeakyRelu")
_SIGNED = {onnx.TensorProto.INT8, onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.INT4}


@dataclasses.dataclass(frozen=True)
class Violation:
    """One broken rule: which, where, and what TensorRT would do about it."""

    rule: str
    node: str
    message: str
    severity: str = "error"  # "error": the parser rejects or the graph is wrong; "warning": slower


def check_tensorrt_rules(model: onnx.ModelProto) -> list[Violation]:
    """Checks a QDQ model against the rules of the module docstring.

    Returns:
        Every violation found (an empty list for a model TensorRT accepts and fuses).
    """
    graph = model.graph
    constants = {t.name: _constant(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    found: list[Violation] = []
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            found += _check_qdq(node, constants, producer, opset)
        if node.op_type in _WEIGHTED:
            found += _check_weighted(node, producer, consumers)
        if node.op_type == "Concat":
            found += _check_concat(node, producer, constants)
    return found


def _constant(tensor: onnx.TensorProto) -> np.ndarray:
    """The tensor's values; for one in external data (a large weight, not loaded) a zero-strided
    stand-in with its shape and type: the rules read only the values of scales and zero points."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
        return np.broadcast_to(np.zeros((), dtype), tuple(tensor.dims))
    return numpy_helper.to_array(tensor)


def _check_qdq(node: onnx.NodeProto, constants: dict[str, np.ndarray], producer: dict, opset: int) -> list[Violation]:
    found = []
    name = node.name or node.output[0]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    scale = constants.get(node.input[1])
    if scale is None:
        found.append(Violation("scale", name, f"scale {node.input[1]!r} is not a constant (needed at build time)"))
    elif not np.all(np.isfinite(scale)) or not np.all(scale > 0):
        found.append(Violation("scale", name, "scale has zero, negative or non-finite values; the parser rejects them"))
    zero_point = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    data = constants.get(node.input[0])
    if data is not None and data.dtype.name == "int4" and data.shape and data.shape[-1] % 2:
        found.append(Violation("int4", name, "INT4 weights need an even last dimension (two values per byte)"))
    if zero_point is not None and zero_point.dtype.name.startswith("float8") and opset < 19:
        found.append(Violation("opset", name, f"FP8 Q/DQ needs opset 19, the model has {opset}"))
    if zero_point is not None:
        if zero_point.dtype == np.uint8:
            found.append(Violation("zero-point", name, "uint8 Q/DQ: TensorRT supports signed symmetric types only"))
        elif np.any(zero_point.astype(np.float64) != 0):
            found.append(Violation("zero-point", name, "non-zero zero point: TensorRT is symmetric only"))
    if scale is not None and scale.size > 1:
        data = node.input[0]
        source = producer.get(data)
        if node.op_type == "DequantizeLinear" and source is not None and source.op_type == "QuantizeLinear":
            data = source.input[0]  # float weight -> Q -> DQ
        if "block_size" in attrs and opset < 21:
            found.append(Violation("opset", name, f"block_size needs opset 21, the model has {opset}"))
        elif opset < 13:
            found.append(Violation("opset", name, f"per-channel Q/DQ needs opset 13, the model has {opset}"))
        weight = constants.get(data)
        if weight is None:
            found.append(Violation("scale", name, "per-channel scale on an activation; TensorRT needs per tensor"))
        if weight is not None and "block_size" not in attrs:
            axis = attrs.get("axis", 1)
            if weight.shape[axis] != scale.size:
                message = f"{scale.size} scales for {weight.shape[axis]} channels on axis {axis}"
                found.append(Violation("scale", name, message))
    return found


def _check_weighted(node, producer, consumers) -> list[Violation]:
    found = []
    name = node.name or node.output[0]
    if node.op_type in ("Conv", "ConvTranspose", "Gemm") and len(node.input) > 2 and node.input[2]:
        bias_src = producer.get(node.input[2])
        if bias_src is not None and bias_src.op_type == "DequantizeLinear":
            found.append(Violation("bias", name, "Q/DQ on the bias; TensorRT adds the bias in float"))
    dequantized = [
        producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in node.input[:2] if i
    ]
    if not all(dequantized):
        found.append(Violation("weighted-input", name, f"{node.op_type} inputs are not all quantized: it runs in float",
                               severity="warning"))
    for out in node.output:
        for consumer in consumers.get(out, []):
            if consumer.op_type == "QuantizeLinear":
                for after in consumers.get(_dq_after(consumer, consumers), []):
                    if after.op_type in _EPILOGUE:
                        found.append(Violation("epilogue", name, f"Q/DQ between {node.op_type} and its {after.op_type} "
                                               "blocks TensorRT's epilogue fusion"))
    return found


def _dq_after(q: onnx.NodeProto, consumers) -> str:
    for node in consumers.get(q.output[0], []):
        if node.op_type == "DequantizeLinear":
            return node.output[0]
    return ""


def _check_concat(node, producer, constants) -> list[Violation]:
    scales = []
    for name in node.input:
        dq = producer.get(name)
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[1] in constants:
            scales.append(float(np.ravel(constants[dq.input[1]])[0]))
    if len(set(scales)) > 1:
        return [Violation("concat", node.name or node.output[0],
                          f"Concat inputs carry {len(set(scales))} scales; TensorRT inserts requantize layers")]
    return []


def summarize(violations: list[Violation]) -> dict[str, Any]:
    """Returns the violations as report data: counts by severity and the list."""
    return {
        "errors": sum(v.severity == "error" for v in violations),
        "warnings": sum(v.severity == "warning" for v in violations),
        "violations": [dataclasses.asdict(v) for v in violations],
    }
