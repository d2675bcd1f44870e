"""TFLite lowering rules: indexing and data movement (ArgMax, TopK, Scatter*, Tile, Einsum, ...).

Rules follow docs/tflite.md "Adding a lowering". ``LOWERINGS`` is merged into the registry in
``_tflite_ops`` after the base rules (a key here replaces a base rule of the same op; the
run-time shape rules of ``_tflite_ops_shape`` still take Shape, Size, Range and ConstantOfShape
when a dimension is dynamic). ``SHARED_SCALE_OPS`` extends ``TFLITE_SPEC`` with the ops that
only move (or zero) the bytes of input 0 and whose builtins have int8 kernels (TILE,
DEPTH_TO_SPACE, SPACE_TO_DEPTH, GATHER_ND, GATHER, SLICE, PAD, SELECT_V2): next to int8
neighbours they run int8 with their input's parameters. The plan treats only the inputs
``compiler/optable.py`` lists as data, so GatherND, Compress, CenterCropPad and Trilu with ``k``
stay float until it lists them as ``(0,)``. REVERSE_SEQUENCE has no int8 kernel; every other op
here runs in float (float16/float64 data is float32 inside the artifact).

The rules live by concept, each module stating its rewrites and their maths:

* ``_tflite_ops_axis``: ArgMax/ArgMin, TopK, CumSum, CumProd.
* ``_tflite_ops_gather_scatter``: GatherND, GatherElements, ScatterND, ScatterElements/Scatter.
* ``_tflite_ops_movement``: Tile, DepthToSpace, SpaceToDepth, ReverseSequence, CenterCropPad,
  Trilu, OneHot.
* ``_tflite_ops_value_length``: Compress, NonZero, Unique (output lengths the values decide).
* ``_tflite_ops_einsum``: Einsum.
* ``_tflite_ops_rule``: the :class:`Rule` plumbing they share.

This module holds the constants and shapes where every shape is static: Shape, Size, EyeLike and
Constant are written as constants, ConstantOfShape is a FILL and Range a RANGE of the static
output shape. Where a Shape, Size, Range or ConstantOfShape node reads or writes a value with a
dynamic dimension (a dynamic artifact, ``_tflite_shapes``), ``Lowering.lower`` takes the
run-time rules of ``_tflite_ops_shape`` instead (SHAPE, REDUCE_PROD of SHAPE, RANGE and FILL
computed when the model runs), so the output follows the input's size.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_axis import arg_extreme, cumprod, cumsum, top_k
from qcc.backends._tflite_ops_einsum import einsum
from qcc.backends._tflite_ops_gather_scatter import gather_elements, gather_nd, scatter_elements, scatter_nd
from qcc.backends._tflite_ops_movement import (
    center_crop_pad,
    depth_to_space,
    one_hot,
    reverse_sequence,
    space_to_depth,
    tile,
    trilu,
)
from qcc.backends._tflite_ops_rule import F32, Rule, static_rank, write_constant
from qcc.backends._tflite_ops_value_length import compress, non_zero, unique
from qcc.backends._tflite_ops_window import unsupported
from qcc.irutils import attr_int, const_array


def constant(lw: Lowering, node: ir.Node) -> None:
    """Constant that reached the lowering (a graph output): the value, copied into the output."""
    array = const_array(node.outputs[0])
    if array is None:
        attr = node.attributes.get("value")
        if attr is None:
            raise unsupported(node, "a Constant without a tensor 'value' (sparse or list values)")
        array = attr.as_tensor().numpy()
    write_constant(lw, node, array)


def shape(lw: Lowering, node: ir.Node) -> None:
    """Shape (start, end) -> the static shape as an int64 constant."""
    dims = np.array(static_rank(node, node.inputs[0]), np.int64)
    rank = len(dims)
    start = attr_int(node, "start", 0)
    end = attr_int(node, "end", rank)
    write_constant(lw, node, dims[slice(start, end)])


def size(lw: Lowering, node: ir.Node) -> None:
    """Size -> the static element count as an int64 constant."""
    write_constant(lw, node, np.array(np.prod(static_rank(node, node.inputs[0])), np.int64))


def eye_like(lw: Lowering, node: ir.Node) -> None:
    """EyeLike -> a constant identity (shifted by ``k``) of the static shape and the output dtype."""
    rows, cols = static_rank(node, node.inputs[0])
    y = node.outputs[0]
    dtype = y.dtype.numpy() if y.dtype is not None else np.float32
    write_constant(lw, node, np.eye(rows, cols, attr_int(node, "k", 0), dtype=dtype))


def constant_of_shape(lw: Lowering, node: ir.Node) -> None:
    """ConstantOfShape -> FILL of the static output shape with the value."""
    rule = Rule(lw, node)
    y = rule.result()
    attr = node.attributes.get("value")
    value = attr.as_tensor().numpy().reshape(()) if attr is not None else np.zeros((), np.float32)
    fill = [rule.const(y.shape, np.int32), rule.const(value.astype(y.dtype))]
    rule.finish(rule.op("FILL", fill, y.shape, y.dtype, "FillOptions", out=y))


def range_(lw: Lowering, node: ir.Node) -> None:
    """Range -> RANGE of scalars; the output length must be static."""
    rule = Rule(lw, node)
    static_rank(node, node.outputs[0])
    y = rule.result()
    dtype = y.dtype
    parts = []
    for i in range(3):
        t = lw.read(node.inputs[i], False)
        t = rule.cast(t, dtype if dtype.kind != "f" else F32)
        parts.append(rule.reshape(t, []))
    rule.finish(rule.op("RANGE", parts, y.shape, parts[0].dtype, "RangeOptions", out=y))


LOWERINGS: dict = {
    "ArgMax": arg_extreme,
    "ArgMin": arg_extreme,
    "TopK": top_k,
    "CumSum": cumsum,
    "CumProd": cumprod,
    "GatherND": gather_nd,
    "GatherElements": gather_elements,
    "ScatterND": scatter_nd,
    "ScatterElements": scatter_elements,
    "Scatter": scatter_elements,
    "Tile": tile,
    "DepthToSpace": depth_to_space,
    "SpaceToDepth": space_to_depth,
    "ReverseSequence": reverse_sequence,
    "Compress": compress,
    "CenterCropPad": center_crop_pad,
    "Trilu": trilu,
    "OneHot": one_hot,
    "Constant": constant,
    "Shape": shape,
    "Size": size,
    "EyeLike": eye_like,
    "ConstantOfShape": constant_of_shape,
    "Range": range_,
    "Einsum": einsum,
    "NonZero": non_zero,
    "Unique": unique,
}
INT8_OPS: frozenset[str] = frozenset()
SHARED_SCALE_OPS: frozenset[str] = frozenset(
    {
        "Tile",
        "DepthToSpace",
        "SpaceToDepth",
        "GatherND",
        "GatherElements",
        "Compress",
        "CenterCropPad",
        "Trilu",
    }
)
