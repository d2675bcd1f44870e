"""The validator: the TFLite int8 rules checked on the flat model before it is written.

LiteRT checks only some of these and fails silently on the rest (TFLITE.md §8), so every emitted
model is checked here: every quantized int8 tensor has parameters (finite positive scales, zero
points in [-128, 127]); plain integer int8 data (an ONNX ``Cast`` to INT8: written or read by
CAST, and moved from there by ops that only move integers) has none and needs none; weights
are symmetric with a legal ``quantized_dimension`` and one scale per channel or one in all;
int32 bias scales equal ``s_in * s_w``; ops that move integers carry the same parameters in and
out (SELECT_V2: both branches); Softmax/Logistic/Tanh outputs hold their fixed parameters.
"""

from __future__ import annotations

import numpy as np

from qcc.backends._tflite_writer import FlatModel, Op, Tensor, builtin
from qcc.errors import BackendError

_SAME_PARAMS = {
    builtin(n)
    for n in (
        "AVERAGE_POOL_2D",
        "MAX_POOL_2D",
        "RESHAPE",
        "TRANSPOSE",
        "PAD",
        "PADV2",
        "SLICE",
        "STRIDED_SLICE",
        "SPLIT",
        "SPLIT_V",
        "RESIZE_BILINEAR",
        "RESIZE_NEAREST_NEIGHBOR",
        "CONCATENATION",
        "REDUCE_MAX",
        "GATHER",
        "BROADCAST_TO",
        "MIRROR_PAD",
        "TILE",
        "DEPTH_TO_SPACE",
        "SPACE_TO_DEPTH",
        "GATHER_ND",
        "SELECT_V2",
    )
}
# Where the moved data sits when it is not input 0: SPLIT leads with the axis, SELECT_V2 with the
# condition (both branches are copied to the output unchanged, so both share its parameters).
_MOVED_INPUTS = {builtin("SPLIT"): (1,), builtin("SELECT_V2"): (1, 2)}
_FIXED = {builtin("SOFTMAX"): (1 / 256, -128), builtin("LOGISTIC"): (1 / 256, -128), builtin("TANH"): (1 / 128, 0)}
_WEIGHT_DIM = {builtin("CONV_2D"): 0, builtin("DEPTHWISE_CONV_2D"): 3, builtin("FULLY_CONNECTED"): 0}
# Where the data, weight and bias inputs sit (TRANSPOSE_CONV leads with the output shape).
_OPERANDS = {builtin("TRANSPOSE_CONV"): (2, 1, 3)}
_INT8 = np.dtype(np.int8)


def validate(model: FlatModel) -> None:
    """Checks the flat model (see module docstring).

    Raises:
        BackendError: the first violation, naming the ONNX node it came from.
    """
    plain = _plain_integers(model)
    for index, tensor in enumerate(model.tensors):
        if tensor.dtype == _INT8 and not (tensor.quant is None and index in plain):
            _check_params(tensor)
    for op in model.ops:
        tensors = [model.tensors[i] if i >= 0 else None for i in op.inputs]
        outputs = [model.tensors[i] for i in op.outputs]
        if op.code in _WEIGHT_DIM | _OPERANDS:
            order = _OPERANDS.get(op.code, (0, 1, 2))
            operands = [tensors[i] if i < len(tensors) else None for i in order]
            if operands[0].dtype == _INT8:
                _check_weighted(op, operands)
        data = [tensors[i] for i in _MOVED_INPUTS.get(op.code, (0,))]
        if op.code in _SAME_PARAMS and data[0].dtype == _INT8:
            moved = (
                [t for t in tensors if t is not None and t.data is None]
                if op.code == builtin("CONCATENATION")
                else data
            )
            for source in moved:
                for out in outputs:
                    if not _same(source, out):
                        _fail(op, f"int8 input {source.name!r} and output {out.name!r} must share parameters")
        if op.code in _FIXED and outputs[0].dtype == _INT8:
            scale, zero_point = _FIXED[op.code]
            quant = outputs[0].quant
            if abs(float(quant.scale[0]) - scale) > 1e-6 * scale or int(quant.zero_point[0]) != zero_point:
                _fail(op, f"output {outputs[0].name!r} must be quantized with ({scale}, {zero_point})")


def _plain_integers(model: FlatModel) -> set[int]:
    """Indices of the int8 tensors that hold plain integers rather than quantized reals.

    They are the tensors CAST writes or reads, and those reached from them through ops that only
    move data (``_SAME_PARAMS``): an ONNX Cast to INT8 and the reshapes and gathers of its result.
    """
    cast = builtin("CAST")
    plain = {i for op in model.ops if op.code == cast for i in (*op.inputs, *op.outputs) if i >= 0}
    moving = [op for op in model.ops if op.code in _SAME_PARAMS]
    grown = True
    while grown:
        grown = False
        for op in moving:
            linked = [
                i
                for i in (*op.inputs, *op.outputs)
                if i >= 0 and model.tensors[i].dtype == _INT8 and model.tensors[i].quant is None
            ]
            if any(i in plain for i in linked) and not all(i in plain for i in linked):
                plain.update(linked)
                grown = True
    return {i for i in plain if model.tensors[i].dtype == _INT8 and model.tensors[i].quant is None}


def _check_params(tensor: Tensor) -> None:
    quant = tensor.quant
    if quant is None:
        raise BackendError(f"int8 tensor {tensor.name!r} has no quantization parameters.", "this is a qcc bug.")
    scale, zero_point = np.asarray(quant.scale), np.asarray(quant.zero_point)
    if scale.shape != zero_point.shape or not np.all(np.isfinite(scale)) or not np.all(scale > 0):
        raise BackendError(f"int8 tensor {tensor.name!r} has invalid scales.", "this is a qcc bug.")
    if np.any(zero_point < -128) or np.any(zero_point > 127):
        raise BackendError(f"int8 tensor {tensor.name!r} has a zero point outside [-128, 127].", "this is a qcc bug.")
    if scale.size > 1 and (quant.axis >= len(tensor.shape) or tensor.shape[quant.axis] != scale.size):
        raise BackendError(
            f"int8 tensor {tensor.name!r}: {scale.size} scales on dimension {quant.axis} of {tensor.shape}.",
            "this is a qcc bug.",
        )


def _check_weighted(op: Op, tensors: list[Tensor | None]) -> None:
    x, w, b = tensors
    if w.dtype != _INT8 or w.quant is None:
        _fail(op, f"weight {w.name!r} of an int8 op is not int8")
    if np.any(np.asarray(w.quant.zero_point) != 0):
        _fail(op, f"weight {w.name!r} has a non-zero zero point")
    dim = _WEIGHT_DIM.get(op.code, 0)
    if w.quant.scale.size > 1 and w.quant.axis != dim:
        _fail(op, f"weight {w.name!r} is quantized on dimension {w.quant.axis}, not {dim}")
    if b is None:
        return
    expected = (np.float64(x.quant.scale[0]) * w.quant.scale.astype(np.float64)).astype(np.float32)
    expected = np.broadcast_to(expected, b.quant.scale.shape)
    if b.dtype != np.dtype(np.int32) or not np.allclose(b.quant.scale, expected, rtol=1e-6, atol=0):
        _fail(op, f"bias {b.name!r} must be int32 with scale input scale x weight scale")


def _same(a: Tensor, b: Tensor) -> bool:
    if a.quant is None or b.quant is None:
        return a.quant is None and b.quant is None
    return bool(
        np.allclose(a.quant.scale, b.quant.scale, rtol=1e-6, atol=0)
        and np.array_equal(a.quant.zero_point, b.quant.zero_point)
    )


def _fail(op: Op, problem: str) -> None:
    raise BackendError(f"TFLite rule broken at node {op.source!r}: {problem}.", "this is a qcc bug; please report it.")
