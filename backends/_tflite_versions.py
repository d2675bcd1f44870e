"""Operator versions, stamped after lowering from a table (as the TFLite converter's ``op_version.cc``).

LiteRT accepts any version up to its kernel's maximum, so a too-low version still runs on CPU;
older runtimes and other delegates read the number, so qcc stamps what the converter would for
the int8 flavour of each op. Float ops are version 1 except where an option raises it.
"""

from __future__ import annotations

import numpy as np

from qcc.backends._tflite_writer import FlatModel, builtin

_INT8_VERSIONS = {
    "CONV_2D": 3,
    "DEPTHWISE_CONV_2D": 3,
    "TRANSPOSE_CONV": 2,
    "FULLY_CONNECTED": 4,
    "BATCH_MATMUL": 2,
    "ADD": 2,
    "SUB": 2,
    "MUL": 2,
    "MEAN": 2,
    "AVERAGE_POOL_2D": 2,
    "MAX_POOL_2D": 2,
    "CONCATENATION": 2,
    "RESHAPE": 1,
    "TRANSPOSE": 2,
    "PAD": 2,
    "PADV2": 2,
    "SOFTMAX": 2,
    "LOGISTIC": 2,
    "TANH": 2,
    "HARD_SWISH": 1,
    "RELU": 2,
    "RELU6": 2,
    "LEAKY_RELU": 1,
    "PRELU": 1,
    "GELU": 2,
    "RESIZE_BILINEAR": 2,
    "RESIZE_NEAREST_NEIGHBOR": 2,
    "STRIDED_SLICE": 2,
    "SLICE": 2,
    "SPLIT": 2,
    "SPLIT_V": 2,
    "QUANTIZE": 1,
    "DEQUANTIZE": 2,
    "MAXIMUM": 2,
    "MINIMUM": 2,
    "REDUCE_MAX": 2,
    "SUM": 2,
    "GATHER": 2,
    "BROADCAST_TO": 3,
    "MIRROR_PAD": 2,
    "CAST": 3,
    "TILE": 3,
    "DEPTH_TO_SPACE": 2,
    "SPACE_TO_DEPTH": 2,
    "TOPK_V2": 2,
    "ARG_MAX": 2,
    "ARG_MIN": 2,
    "REVERSE_V2": 3,
}
# Versions that follow from a non-int8 signature (op_version.cc): BROADCAST_TO has no version 1
# (it was rolled back and renumbered), bool data raises GATHER and TRANSPOSE.
_FLOAT_VERSIONS = {"BROADCAST_TO": 2}
_BOOL_VERSIONS = {"GATHER": 3, "TRANSPOSE": 3, "STRIDED_SLICE": 3}
# int64 data raises these (op_version.cc): the run-time shape arithmetic of dynamic artifacts.
_INT64_VERSIONS = {"RANGE": 2}
# CAST from or to a 16- or 64-bit float is version 5 (op_version.cc).
_WIDE_FLOATS = (np.dtype(np.float16), np.dtype(np.float64))
_CODES = {builtin(name): name for name in {**_INT8_VERSIONS, **_FLOAT_VERSIONS, **_BOOL_VERSIONS, **_INT64_VERSIONS}}


def stamp_versions(model: FlatModel) -> None:
    """Sets ``op.version`` of every operator from the table and the op's signature."""
    for op in model.ops:
        name = _CODES.get(op.code)
        first = model.tensors[op.inputs[0]] if op.inputs and op.inputs[0] >= 0 else None
        quantized = first is not None and first.dtype in (np.dtype(np.int8), np.dtype(np.int16))
        if name == "DEQUANTIZE" or (name == "QUANTIZE" and quantized):
            quantized = True
        version = _INT8_VERSIONS.get(name, 1) if quantized else _FLOAT_VERSIONS.get(name, 1)
        if first is not None and first.dtype == np.dtype(np.bool_):
            version = max(version, _BOOL_VERSIONS.get(name, 1))
        if first is not None and first.dtype == np.dtype(np.int64):
            version = max(version, _INT64_VERSIONS.get(name, 1))
        if name == "CAST":
            dtypes = {model.tensors[i].dtype for i in (*op.inputs, *op.outputs) if i >= 0}
            if np.dtype(np.int8) in dtypes:
                version = max(version, 3)
            if dtypes & set(_WIDE_FLOATS):
                version = max(version, 5)
        if name == "GATHER" and op.option_fields.get("batch_dims", 0) != 0:
            version = max(version, 5)
        if name == "CONV_2D" and _grouped(model, op):
            version = max(version, 6)
        if name == "FULLY_CONNECTED" and op.option_fields.get("keep_num_dims"):
            version = max(version, 5)
        if name in ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR") and op.option_fields.get("half_pixel_centers"):
            version = max(version, 3)
        if name == "TRANSPOSE_CONV":
            quantized = model.tensors[op.inputs[2]].dtype == np.dtype(np.int8)
            version = (3 if op.inputs[3] >= 0 else 2) if quantized else 1
        if name == "TRANSPOSE" and first is not None and len(first.shape) > 4:
            version = max(version, 4)
        op.version = version


def _grouped(model: FlatModel, op) -> bool:
    data, weight = model.tensors[op.inputs[0]], model.tensors[op.inputs[1]]
    return len(data.shape) == 4 and data.shape[3] != weight.shape[3]
