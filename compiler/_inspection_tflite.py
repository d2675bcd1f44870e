"""The TFLite reader of ``qcc.inspection``: per operator int8, int16 or float, per tensor its scale
and zero point, read from the flatbuffer without running it.

An op runs in int8 (int16) when its main inputs are int8/uint8 (int16) tensors: for the weighted
ops (convolutions, FULLY_CONNECTED) the input and the weight, for the rest every data input (not
shape or index tensors). ``QUANTIZE``/``DEQUANTIZE`` convert. A weighted op with a float input and
an int8 weight is hybrid: LiteRT quantizes the input at run time. Every tensor that carries
quantization parameters is reported, per channel (with its axis) where it has several scales.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from qcc.errors import ModelLoadError

TFLITE_MAGIC = b"TFL3"  # the flatbuffer's file identifier, bytes 4-8

# Weighted ops: the positions of their input and weight (the bias is a parameter).
_WEIGHTED = {"CONV_2D": (0, 1), "DEPTHWISE_CONV_2D": (0, 1), "FULLY_CONNECTED": (0, 1), "TRANSPOSE_CONV": (2, 1)}
_INTEGER = {"int8": "int8", "uint8": "int8", "int16": "int16"}
# Tensor types that carry data (the others hold shapes, indices or booleans).
_DATA = frozenset({"float32", "float16", "float64", "bfloat16", "int8", "uint8", "int16"})


def inspect_tflite(path: Path) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Reads a ``.tflite`` flatbuffer's operators and quantized tensors.

    Returns:
        ``(nodes, tensors)`` in the layout of :func:`qcc.inspection.inspect_artifact`: nodes
        (``name``: the first output's, ``op``, ``precision``, ``why``) in the order of each
        subgraph, later subgraphs' names prefixed ``subgraph<i>/``; tensors by name with
        ``dtype``, ``scale``, ``zero_point`` and ``axis`` (None: per tensor).

    Raises:
        ModelLoadError: the file has the TFLite signature but its flatbuffer cannot be read.
    """
    import tflite
    from tflite.Model import Model

    op_names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k.lower() for k, v in vars(tflite.TensorType).items() if not k.startswith("_")}
    data = path.read_bytes()
    try:
        model = Model.GetRootAs(data, 0)
        subgraphs = [model.Subgraphs(i) for i in range(model.SubgraphsLength())]
        if not subgraphs:
            raise ValueError("no subgraphs")
        codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
        nodes: list[dict[str, Any]] = []
        tensors: dict[str, dict[str, Any]] = {}
        for index, graph in enumerate(subgraphs):
            prefix = "" if index == 0 else f"subgraph{index}/"
            details = []
            for t in range(graph.TensorsLength()):
                tensor = graph.Tensors(t)
                name = prefix + (tensor.Name() or b"").decode(errors="replace")
                details.append((name, type_names.get(tensor.Type(), "unknown")))
                quantization = tensor.Quantization()
                if quantization is not None and quantization.ScaleLength() > 0:
                    tensors[name] = _parameters(quantization, details[-1][1])
            for i in range(graph.OperatorsLength()):
                operator = graph.Operators(i)
                code = codes[operator.OpcodeIndex()]
                builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
                op = op_names.get(builtin, str(builtin))
                if op == "CUSTOM":
                    op = (code.CustomCode() or b"CUSTOM").decode(errors="replace")
                inputs = [details[t] if t >= 0 else None for t in operator.InputsAsNumpy()]
                outputs = [details[t] for t in operator.OutputsAsNumpy() if t >= 0]
                name = outputs[0][0] if outputs else f"{prefix}{op}_{i}"
                precision, why = _precision(op, inputs, outputs)
                nodes.append({"name": name, "op": op, "precision": precision, "why": why})
    except (IndexError, ValueError, TypeError, AttributeError, struct.error) as error:
        # The tflite package reads offsets without checking them: a truncated file fails here.
        raise ModelLoadError(
            f"{path} has the TFLite signature but its flatbuffer cannot be read: it is truncated or corrupt ({error}).",
            "check that the file is complete (export or copy it again).",
        ) from error
    return nodes, tensors


def _parameters(quantization: Any, dtype: str) -> dict[str, Any]:
    """A tensor's quantization parameters as JSON: numbers per tensor, lists per channel."""
    scale, zero_point = quantization.ScaleAsNumpy(), quantization.ZeroPointAsNumpy()
    per_channel = quantization.ScaleLength() > 1
    if quantization.ZeroPointLength():
        zero_point = (zero_point if per_channel else zero_point[0]).tolist()
    else:
        zero_point = 0
    return {
        "dtype": dtype,
        "scale": (scale if per_channel else scale[0]).tolist(),
        "zero_point": zero_point,
        "axis": quantization.QuantizedDimension() if per_channel else None,
    }


def _precision(op: str, inputs: list[tuple[str, str] | None], outputs: list[tuple[str, str]]) -> tuple[str, str]:
    """int8 (int16) when the op's main inputs are int8/uint8 (int16) tensors; see module docstring."""
    if op in ("SHAPE", "RANK"):
        return "shape", "reads only the tensor's shape"
    if op in ("QUANTIZE", "DEQUANTIZE"):
        source, target = inputs[0], outputs[0]
        return "conversion", f"{source[0]!r} ({source[1]}) to {target[1]}"
    if op in _WEIGHTED:
        main = [inputs[i] for i in _WEIGHTED[op] if i < len(inputs) and inputs[i] is not None]
    else:
        main = [t for t in inputs if t is not None and t[1] in _DATA]
    if not main:
        return "shape", "integer (shape) arithmetic only"
    floats = [t for t in main if t[1] not in _INTEGER]
    if not floats:
        precision = _INTEGER[main[0][1]]
        return precision, f"{main[0][1]} inputs"
    if op in _WEIGHTED and len(main) == 2 and main[1][1] in _INTEGER and floats == [main[0]]:
        return "int8", f"hybrid: float input {main[0][0]!r} quantized at run time, {main[1][1]} weight {main[1][0]!r}"
    return "float", f"input {floats[0][0]!r} is {floats[0][1]}"
