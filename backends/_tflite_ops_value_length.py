"""TFLite lowering rules whose output length the values decide: Compress, NonZero and Unique.

qcc writes TFLite tensors with static shapes, so a run-time ``Compress`` condition, ``NonZero``
and ``Unique`` are lowered when the model declares that length ``k``, and refused otherwise (a
constant Compress condition GATHERs positions known at compile time):

* The positions of the ``k`` true entries are ``SCATTER_ND(CUMSUM(flags, exclusive), arange)``
  (see :func:`_true_positions`); Compress GATHERs them.
* ``NonZero``: those flat positions unravelled, ``coords[d] = FLOOR_MOD(FLOOR_DIV(pos, stride_d),
  dim_d)``.
* ``Unique`` compares every pair of slices (see :func:`unique`).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_rule import BOOL, F32, I32, MAX_PAIRWISE_ELEMENTS, Rule
from qcc.backends._tflite_ops_window import unsupported
from qcc.backends._tflite_writer import Tensor
from qcc.irutils import attr_int, const_array


def compress(lw: Lowering, node: ir.Node) -> None:
    """Compress -> GATHER of the selected positions (computed at run time for a run-time condition)."""
    rule = Rule(lw, node)
    x = rule.data(0)
    attr = node.attributes.get("axis")
    if attr is None:
        x = rule.reshape(x, [int(np.prod(x.shape))])
        axis = 0
    else:
        axis = attr.as_int() % len(x.shape)
    y = rule.result(like=x)
    condition = const_array(node.inputs[1])
    if condition is not None:
        keep = rule.const(np.flatnonzero(np.ravel(condition)[: x.shape[axis]].astype(bool)).astype(np.int32))
    else:
        flags = rule.lw.read(node.inputs[1], False)
        if flags.shape[0] > x.shape[axis]:
            raise unsupported(node, f"a condition of {flags.shape[0]} entries for an axis of {x.shape[axis]}")
        keep = _true_positions(rule, flags, y.shape[axis])
    kept = rule.op("GATHER", [x, keep], y.shape, x.dtype, "GatherOptions", out=y, axis=axis, batch_dims=0)
    rule.finish(kept)


def _true_positions(rule: Rule, flags: Tensor, count: int) -> Tensor:
    """The int32 positions of the ``count`` true entries of a 1-D boolean tensor, in order.

    The output length is the static one (the artifact's shapes are those of the first calibration
    sample): true entry ``p`` goes to slot ``CUMSUM(flags, exclusive)[p]``, false entries to a spare
    slot ``count`` that is dropped: ``SCATTER_ND(slot, arange, [count + 1])[:count]``. More true
    entries than ``count`` at run time index past the buffer, which SCATTER_ND refuses at invoke.
    """
    length = flags.shape[0]
    ones = rule.cast(flags, I32)
    rank = rule.op("CUMSUM", [ones, rule.const(0, np.int32)], [length], I32, "CumsumOptions", exclusive=True)
    slot = rule.op("SELECT_V2", [flags, rank, rule.const(count, np.int32)], [length], I32, "SelectV2Options")
    slots = rule.reshape(slot, [length, 1])
    shape = rule.const([count + 1], np.int32)
    spread = rule.op("SCATTER_ND", [slots, rule.const(np.arange(length, dtype=np.int32)), shape], [count + 1], I32)
    begin, size = rule.const([0], np.int32), rule.const([count], np.int32)
    return rule.op("SLICE", [spread, begin, size], [count], I32, "SliceOptions")


def _static_count(node: ir.Node, index: int, axis: int) -> int:
    """The static length of output ``index`` along ``axis`` (the values decide it in ONNX)."""
    value = node.outputs[index]
    if value.shape is None or not isinstance(value.shape[axis], int):
        raise unsupported(
            node,
            f"an output length that depends on the input values ({value.name!r} is {value.shape}), and qcc "
            "writes TFLite tensors with static shapes; it is lowered when the model declares that length",
        )
    return int(value.shape[axis])


def non_zero(lw: Lowering, node: ir.Node) -> None:
    """NonZero with a static count ``k`` -> the flat positions of the non-zero entries, unravelled.

    ``coords[d] = FLOOR_MOD(FLOOR_DIV(pos, stride_d), dim_d)`` for the positions of
    :func:`_true_positions`; ``k`` is the length the model declares.
    """
    rule = Rule(lw, node)
    k = _static_count(node, 0, 1)
    if k == 0:
        raise unsupported(node, "a declared length of 0 (an empty output)")
    x = rule.cast(lw.read(node.inputs[0], False), F32) if node.inputs[0].dtype.is_floating_point() else None
    x = lw.read(node.inputs[0], False) if x is None else x
    dims = list(x.shape)
    if not dims:
        raise unsupported(node, "a scalar input")
    flat = rule.reshape(x, [int(np.prod(dims))])
    if flat.dtype == BOOL:
        flags = flat
    else:
        zero = rule.const(np.zeros((), flat.dtype))
        flags = rule.op("NOT_EQUAL", [flat, zero], flat.shape, BOOL, "NotEqualOptions")
    positions = rule.reshape(_true_positions(rule, flags, k), [1, k])
    strides = np.array([int(np.prod(dims[d + 1 :])) for d in range(len(dims))], np.int32).reshape(-1, 1)
    shape = [len(dims), k]
    outer = rule.op("FLOOR_DIV", [positions, rule.const(strides)], shape, I32, "FloorDivOptions")
    sizes = rule.const(np.array(dims, np.int32).reshape(-1, 1))
    rule.finish(rule.op("FLOOR_MOD", [outer, sizes], shape, I32, "FloorModOptions"))


def unique(lw: Lowering, node: ir.Node) -> None:
    """Unique with a static count ``k`` -> pairwise comparisons of the ``n`` slices (module docstring).

    ``eq[i, j]``: slices ``i`` and ``j`` are equal; slice ``i`` is a first occurrence when no
    ``j < i`` equals it. Its slot is the number of distinct slices lexicographically below it
    (sorted) or of first occurrences before it (not sorted). Then ``indices`` scatter each first
    occurrence's position into its slot, ``Y = GATHER(x, indices)``, ``inverse = slot`` and
    ``counts = SCATTER_ND(slot, 1)`` (which sums).
    """
    rule = Rule(lw, node)
    x = rule.data(0)
    attr = node.attributes.get("axis")
    axis = 0 if attr is None else attr.as_int() % len(x.shape)
    k = _static_count(node, 0, axis)
    data = rule.reshape(x, [int(np.prod(x.shape))]) if attr is None else x
    n = data.shape[axis]
    width = int(np.prod(data.shape)) // n
    rows = rule.reshape(rule.transpose(data, [axis, *[a for a in range(len(data.shape)) if a != axis]]), [n, width])
    if n * n * width > MAX_PAIRWISE_ELEMENTS:
        raise unsupported(node, f"Unique over {n} slices of {width} (it compares every pair)")
    left, right = rule.reshape(rows, [n, 1, width]), rule.reshape(rows, [1, n, width])
    cube = [n, n, width]
    same = rule.op("EQUAL", [left, right], cube, BOOL, "EqualOptions")
    differ = rule.op("LOGICAL_NOT", [same], cube, BOOL, "LogicalNotOptions")
    last = rule.const([2], np.int32)
    any_differ = rule.op("REDUCE_ANY", [differ, last], [n, n], BOOL, "ReducerOptions", keep_dims=False)
    equal = rule.op("LOGICAL_NOT", [any_differ], [n, n], BOOL, "LogicalNotOptions")
    earlier = rule.const(np.arange(n)[None, :] < np.arange(n)[:, None])  # [i, j]: j < i
    seen = rule.op("LOGICAL_AND", [equal, earlier], [n, n], BOOL, "LogicalAndOptions")
    repeated = rule.op("REDUCE_ANY", [seen, rule.const([1], np.int32)], [n], BOOL, "ReducerOptions", keep_dims=False)
    first = rule.op("LOGICAL_NOT", [repeated], [n], BOOL, "LogicalNotOptions")
    first_column = rule.reshape(first, [1, n])
    zero = rule.const(0, np.int32)
    if attr_int(node, "sorted", 1):
        # below[i, j]: slice j < slice i at the first position where they differ.
        differ_count = rule.cast(differ, I32)
        prefix = rule.op("CUMSUM", [differ_count, rule.const(2, np.int32)], cube, I32, "CumsumOptions", exclusive=True)
        undecided = rule.op("EQUAL", [prefix, zero], cube, BOOL, "EqualOptions")
        less = rule.op("LESS", [right, left], cube, BOOL, "LessOptions")
        decided = rule.op("LOGICAL_AND", [undecided, less], cube, BOOL, "LogicalAndOptions")
        below = rule.op("REDUCE_ANY", [decided, last], [n, n], BOOL, "ReducerOptions", keep_dims=False)
        counted = rule.op("LOGICAL_AND", [below, first_column], [n, n], BOOL, "LogicalAndOptions")
        slot = rule.op("SUM", [rule.cast(counted, I32), rule.const([1], np.int32)], [n], I32, "ReducerOptions")
    else:
        order = rule.op("CUMSUM", [rule.cast(first, I32), zero], [n], I32, "CumsumOptions", exclusive=True)
        owner = rule.op("LOGICAL_AND", [equal, first_column], [n, n], BOOL, "LogicalAndOptions")
        picked = rule.op("SELECT_V2", [owner, rule.reshape(order, [1, n]), zero], [n, n], I32, "SelectV2Options")
        slot = rule.op("SUM", [picked, rule.const([1], np.int32)], [n], I32, "ReducerOptions")
    target = rule.op("SELECT_V2", [first, slot, rule.const(k, np.int32)], [n], I32, "SelectV2Options")
    spread = rule.op(
        "SCATTER_ND",
        [rule.reshape(target, [n, 1]), rule.const(np.arange(n, dtype=np.int32)), rule.const([k + 1], np.int32)],
        [k + 1],
        I32,
    )
    indices = rule.op("SLICE", [spread, rule.const([0], np.int32), rule.const([k], np.int32)], [k], I32, "SliceOptions")
    values_shape = list(data.shape)
    values_shape[axis] = k
    values = rule.op("GATHER", [data, indices], values_shape, data.dtype, "GatherOptions", axis=axis, batch_dims=0)
    ones = rule.const(np.ones(n, np.int32))
    counts = rule.op("SCATTER_ND", [rule.reshape(slot, [n, 1]), ones, rule.const([k], np.int32)], [k], I32)
    for index, written in enumerate((values, indices, slot, counts)[: len(node.outputs)]):
        if node.outputs[index] is not None and node.outputs[index].name:
            rule.finish(written, index)
