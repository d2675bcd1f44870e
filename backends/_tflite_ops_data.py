"""Lowering rules for data, logic and comparison ops: Gather, Expand, Where, Cast, comparisons,
boolean logic, IsNaN, Reciprocal and ReduceL2.

These ops carry the non-float parts of a model (token ids, attention masks, one-hot encodings):
integer and boolean tensors keep their ONNX type in the flatbuffer (TFLite's GATHER, CAST,
EQUAL, SELECT_V2 ... take int32/int64/bool), so integer model inputs stay integer at the
interface. Gather and Expand move data: int8 when the plan makes them int8 (their output shares
the input's parameters, so the bytes are copied as they are; ``TFLITE_SPEC`` lists Gather only),
float otherwise.

Rewrites where TFLite has no single builtin:

* ``Gather`` with run-time indices: ``GATHER(x, FLOOR_MOD(i, n))``, since ONNX allows negative
  indices (``-1`` is the last row) and TFLite's GATHER does not; constant indices are wrapped at
  compile time.
* ``IsNaN(x) = NOT_EQUAL(x, x)`` (NaN is the only value unequal to itself).
* ``Reciprocal(x) = DIV(1, x)``; ``ReduceL2(x) = SQRT(SUM(x * x))``.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_float import FloatChain
from qcc.backends._tflite_ops_rule import type_names
from qcc.backends._tflite_ops_window import int_list, unsupported
from qcc.backends._tflite_writer import TENSOR_TYPES, Tensor
from qcc.irutils import attr_int, const_array

# TFLite's comparison kernels broadcast up to 4-D only (comparisons.cc, BroadcastComparison4D).
_MAX_COMPARE_BROADCAST_RANK = 4


def gather(lw: Lowering, node: ir.Node) -> None:
    """Gather -> GATHER on ``axis``; int8 data keeps its parameters (the plan shares them)."""
    x = lw.input(node, 0)
    rank = len(x.shape)
    axis = attr_int(node, "axis", 0) % rank
    size = x.shape[axis]
    indices = const_array(node.inputs[1])
    dynamic = x.signature[axis] == -1
    if indices is not None and not (dynamic and np.any(indices < 0)):
        # Wrapped here, so GATHER never sees a negative index; int32 is its native index type.
        positions = lw.constant(f"{node.name}_indices", np.mod(indices, size).astype(np.int32))
    else:
        ids = lw.read(node.inputs[1], False)
        if ids.dtype not in (np.dtype(np.int32), np.dtype(np.int64)):
            raise unsupported(node, f"{ids.dtype} indices (GATHER takes int32 or int64)")
        positions = lw.model.tensor(f"{node.name}_indices", ids.shape, ids.dtype)
        positions.shape_signature = ids.shape_signature
        if dynamic:
            # The axis' size at run time: SHAPE(x)[axis].
            modulus = lw.model.tensor(f"{node.name}_size", (), ids.dtype)
            dims = lw.shape_tensor(x, node.name)
            picked = lw.model.tensor(f"{node.name}_size_int32", (), np.int32)
            gather_constant(lw, dims, f"{node.name}_axis", np.array(axis, np.int32), picked, node.name)
            cast_from_int32(lw, picked, modulus, node.name)
        else:
            modulus = lw.constant(f"{node.name}_size", np.array(size, ids.dtype))
        lw.op("FLOOR_MOD", [ids, modulus], [positions], "FloorModOptions", source=node.name)
    lw.op(
        "GATHER",
        [x, positions],
        [lw.output(node)],
        "GatherOptions",
        source=node.name,
        axis=axis,
        batch_dims=0,
    )


def gather_constant(lw: Lowering, vector: Tensor, name: str, indices: np.ndarray, out: Tensor, source: str) -> None:
    """Emits ``out = GATHER(vector, indices)`` on axis 0, ``indices`` a constant named ``name``.

    Args:
        lw: the lowering.
        vector: the tensor whose entries (along axis 0) are picked, e.g. a SHAPE result.
        name: the name of the indices' constant.
        indices: the int32 positions (a scalar picks one entry, a vector several).
        out: the result tensor.
        source: the ONNX node name the op is attributed to.
    """
    lw.op(
        "GATHER",
        [vector, lw.constant(name, indices)],
        [out],
        "GatherOptions",
        source=source,
        axis=0,
        batch_dims=0,
    )


def cast_from_int32(lw: Lowering, x: Tensor, out: Tensor, source: str) -> None:
    """Emits ``out = CAST(x)`` from int32 to ``out``'s type (e.g. an int32 shape entry back to int64).

    Args:
        lw: the lowering.
        x: the int32 tensor.
        out: the result tensor, of the type wanted.
        source: the ONNX node name the op is attributed to.
    """
    lw.op(
        "CAST",
        [x],
        [out],
        "CastOptions",
        source=source,
        in_data_type=TENSOR_TYPES[np.dtype(np.int32)],
        out_data_type=TENSOR_TYPES[out.dtype],
    )


def expand(lw: Lowering, node: ir.Node) -> None:
    """Expand -> RESHAPE when no element is repeated, BROADCAST_TO otherwise.

    ONNX broadcasts both ways (a target entry 1 keeps the input's size); BROADCAST_TO takes the
    final shape. With a run-time target or a dynamic output, the final shape is computed at run
    time as ``MAXIMUM(target, SHAPE(x))`` (both padded to one rank with leading ones: each pair is
    equal or has a 1).
    """
    x = lw.input(node, 0)
    y = lw.output(node)
    target = const_array(node.inputs[1])
    if target is not None and -1 not in y.signature:
        if int(np.prod(x.shape)) == int(np.prod(y.shape)):
            lw.reshape(x, y, node.name)  # only unit dimensions are added: the bytes stay as they are
            return
        shape = lw.constant(f"{node.name}_shape", np.array(y.shape, np.int32))
        lw.op("BROADCAST_TO", [x, shape], [y], source=node.name)
        return
    wanted = lw.int32(lw.read(node.inputs[1], False), node.name)
    rank = len(y.shape)
    parts = []
    for vector, length in ((wanted, wanted.shape[0]), (lw.shape_tensor(x, node.name), len(x.shape))):
        if length < rank:
            ones = lw.constant(f"{node.name}_ones{len(parts)}", np.ones(rank - length, np.int32))
            padded = lw.model.tensor(f"{node.name}_padded{len(parts)}", (rank,), np.int32)
            lw.op("CONCATENATION", [ones, vector], [padded], "ConcatenationOptions", source=node.name, axis=0)
            vector = padded
        parts.append(vector)
    final = lw.model.tensor(f"{node.name}_final", (rank,), np.int32)
    lw.op("MAXIMUM", parts, [final], source=node.name)
    lw.op("BROADCAST_TO", [x, final], [y], source=node.name)


def where(lw: Lowering, node: ir.Node) -> None:
    """Where -> SELECT_V2 (broadcasting); the condition stays boolean."""
    condition = lw.read(node.inputs[0], False)
    lw.op(
        "SELECT_V2",
        [condition, lw.input(node, 1), lw.input(node, 2)],
        [lw.output(node)],
        "SelectV2Options",
        source=node.name,
    )


def cast(lw: Lowering, node: ir.Node) -> None:
    """Cast -> CAST (float -> int truncates toward zero in both); a same-type Cast moves nothing."""
    x = lw.input(node, 0)
    y = lw.output(node)
    for tensor in (x, y):
        if tensor.dtype not in TENSOR_TYPES:
            raise unsupported(node, f"a {tensor.dtype} tensor (TFLite CAST in qcc takes {type_names()})")
    if x.dtype == y.dtype:
        _copy(lw, node, x, y)
        return
    lw.op(
        "CAST",
        [x],
        [y],
        "CastOptions",
        source=node.name,
        in_data_type=TENSOR_TYPES[x.dtype],
        out_data_type=TENSOR_TYPES[y.dtype],
    )


def compare(name: str, options: str):
    """Returns the rule for a comparison or boolean op (EQUAL, GREATER_EQUAL, LOGICAL_AND, ...)."""

    def rule(lw: Lowering, node: ir.Node) -> None:
        a, b = lw.read(node.inputs[0], False), lw.read(node.inputs[1], False)
        _check_broadcast(node, a, b)
        lw.op(name, [a, b], [lw.output(node)], options, source=node.name)

    return rule


def logical_not(lw: Lowering, node: ir.Node) -> None:
    """Not -> LOGICAL_NOT."""
    lw.op("LOGICAL_NOT", [lw.read(node.inputs[0], False)], [lw.output(node)], "LogicalNotOptions", source=node.name)


def is_nan(lw: Lowering, node: ir.Node) -> None:
    """IsNaN(x) -> NOT_EQUAL(x, x), read in float (an int8 tensor is never NaN, and stays correct)."""
    x = lw.read(node.inputs[0], False)
    lw.op("NOT_EQUAL", [x, x], [lw.output(node)], "NotEqualOptions", source=node.name)


def reciprocal(lw: Lowering, node: ir.Node) -> None:
    """Reciprocal (float) -> DIV(1, x)."""
    chain = FloatChain(lw, node)
    x = lw.input(node, 0)
    chain.op("DIV", [chain.const(1.0), x], x.shape, "DivOptions", out=lw.output(node))


def reduce_l2(lw: Lowering, node: ir.Node) -> None:
    """ReduceL2 (float) -> MUL(x, x), SUM over the axes, SQRT."""
    chain = FloatChain(lw, node)
    x = lw.input(node, 0)
    y = lw.output(node)
    axes = reduce_axes(node, len(x.shape))
    keep = bool(attr_int(node, "keepdims", 1))
    reduced = tuple(1 if i in axes else d for i, d in enumerate(x.shape)) if keep else y.shape
    square = chain.op("MUL", [x, x], x.shape, "MulOptions")
    axes_t = lw.constant(f"{node.name}_axes", np.array(axes, np.int32))
    total = chain.op("SUM", [square, axes_t], reduced, "ReducerOptions", keep_dims=keep)
    chain.op("SQRT", [total], y.shape, out=y)


def reduce_axes(node: ir.Node, rank: int) -> list[int]:
    """The sorted, non-negative axes a Reduce* node reduces over (input 1 from opset 18, else the attribute).

    Raises:
        BackendError: the axes are a run-time tensor, or empty with ``noop_with_empty_axes``.
    """
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        axes = const_array(node.inputs[1])
        if axes is None:
            raise unsupported(node, "axes that are not constant")
        axes = [int(a) for a in np.ravel(axes)]
    else:
        axes = int_list(node, "axes", [])
    if not axes:
        if attr_int(node, "noop_with_empty_axes", 0):
            raise unsupported(node, "empty axes with noop_with_empty_axes=1")
        axes = list(range(rank))
    return sorted({a % rank for a in axes})


def _copy(lw: Lowering, node: ir.Node, x: Tensor, y: Tensor) -> None:
    """Writes ``y`` as a copy of ``x`` (a RESHAPE to the same shape: TFLite has no identity op)."""
    lw.reshape(x, y, node.name)


def _check_broadcast(node: ir.Node, a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape and max(len(a.shape), len(b.shape)) > _MAX_COMPARE_BROADCAST_RANK:
        raise unsupported(node, f"broadcasting {a.shape} with {b.shape} (TFLite compares up to 4-D)")


LOWERINGS = {
    "Gather": gather,
    "Expand": expand,
    "Where": where,
    "Cast": cast,
    "Equal": compare("EQUAL", "EqualOptions"),
    "Greater": compare("GREATER", "GreaterOptions"),
    "GreaterOrEqual": compare("GREATER_EQUAL", "GreaterEqualOptions"),
    "Less": compare("LESS", "LessOptions"),
    "LessOrEqual": compare("LESS_EQUAL", "LessEqualOptions"),
    "And": compare("LOGICAL_AND", "LogicalAndOptions"),
    "Or": compare("LOGICAL_OR", "LogicalOrOptions"),
    "Xor": compare("NOT_EQUAL", "NotEqualOptions"),
    "Not": logical_not,
    "IsNaN": is_nan,
    "Reciprocal": reciprocal,
    "ReduceL2": reduce_l2,
}
