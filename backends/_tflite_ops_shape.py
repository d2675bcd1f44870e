"""Run-time shape rules: Shape, Size, Range and ConstantOfShape on tensors with dynamic dimensions.

A static artifact folds these ops to constants (``_tflite_ops_index`` writes them from the static
shapes). When a dimension is dynamic (``-1`` in a signature, ``_tflite_shapes``), they are
computed when the model runs instead, so shape subgraphs such as ``Shape -> Gather -> Concat ->
Reshape`` or ``Range(0, Shape(x)[1])`` follow the input's size:

* ``Shape(x)[start:end]`` -> ``SHAPE`` (int64, as ONNX), then ``SLICE`` for a start or end;
* ``Size(x)`` -> ``REDUCE_PROD(SHAPE(x))``;
* ``Range(start, limit, delta)`` -> ``RANGE`` of the three scalars;
* ``ConstantOfShape(shape)`` -> ``FILL(shape, value)``.

``Lowering.lower`` picks these rules (``RUNTIME_LOWERINGS``) over the registry's when the node
reads or writes a value with a dynamic dimension.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_window import unsupported
from qcc.backends._tflite_writer import TENSOR_TYPES
from qcc.irutils import attr_int


def shape(lw: Lowering, node: ir.Node) -> None:
    """Shape (start, end) -> SHAPE, and SLICE of its entries when start or end is given."""
    x = lw.native(node.inputs[0])  # only its shape is read: no DEQUANTIZE
    y = lw.output(node)
    rank = len(x.shape)
    start = attr_int(node, "start", 0)
    end = attr_int(node, "end", rank)
    start, end = (max(0, min(rank, v + rank if v < 0 else v)) for v in (start, end))
    out_type = {"out_type": TENSOR_TYPES[np.dtype(np.int64)]}
    if (start, end) == (0, rank):
        lw.op("SHAPE", [x], [y], "ShapeOptions", source=node.name, **out_type)
        return
    full = lw.model.tensor(f"{node.name}_full", (rank,), np.int64)
    lw.op("SHAPE", [x], [full], "ShapeOptions", source=node.name, **out_type)
    begin = lw.constant(f"{node.name}_begin", np.array([start], np.int32))
    size = lw.constant(f"{node.name}_size", np.array([max(end - start, 0)], np.int32))
    lw.op("SLICE", [full, begin, size], [y], "SliceOptions", source=node.name)


def size(lw: Lowering, node: ir.Node) -> None:
    """Size -> REDUCE_PROD of SHAPE (int64)."""
    x = lw.native(node.inputs[0])
    full = lw.model.tensor(f"{node.name}_shape", (len(x.shape),), np.int64)
    lw.op("SHAPE", [x], [full], "ShapeOptions", source=node.name, out_type=TENSOR_TYPES[np.dtype(np.int64)])
    axes = lw.constant(f"{node.name}_axes", np.array([0], np.int32))
    lw.op("REDUCE_PROD", [full, axes], [lw.output(node)], "ReducerOptions", source=node.name, keep_dims=False)


def range_(lw: Lowering, node: ir.Node) -> None:
    """Range -> RANGE of three scalars of the output's type (a run-time length)."""
    y = lw.output(node)
    if y.dtype not in (np.dtype(np.int32), np.dtype(np.int64), np.dtype(np.float32)):
        raise unsupported(node, f"a {y.dtype} Range (TFLite's RANGE takes int32, int64 and float32)")
    parts = []
    for i in range(3):
        t = lw.read(node.inputs[i], False)
        if t.data is not None:
            t = lw.constant(f"{node.name}_{i}", np.asarray(t.data, y.dtype).reshape(()))
        elif t.dtype != y.dtype or t.shape != ():
            raise unsupported(node, f"a run-time input {node.inputs[i].name!r} that is not a {y.dtype} scalar")
        parts.append(t)
    lw.op("RANGE", parts, [y], "RangeOptions", source=node.name)


def constant_of_shape(lw: Lowering, node: ir.Node) -> None:
    """ConstantOfShape -> FILL of the run-time shape with the value."""
    y = lw.output(node)
    attr = node.attributes.get("value")
    value = attr.as_tensor().numpy().reshape(()) if attr is not None else np.zeros((), np.float32)
    dims = lw.read(node.inputs[0], False)
    fill = lw.constant(f"{node.name}_value", np.asarray(value, y.dtype).reshape(()))
    lw.op("FILL", [dims, fill], [y], "FillOptions", source=node.name)


RUNTIME_LOWERINGS = {
    "Shape": shape,
    "Size": size,
    "Range": range_,
    "ConstantOfShape": constant_of_shape,
}
