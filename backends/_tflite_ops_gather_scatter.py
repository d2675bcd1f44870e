"""TFLite lowering rules for gathers and scatters: GatherND, GatherElements, ScatterND, ScatterElements.

Negative indices (ONNX allows them) are wrapped by FLOOR_MOD by the size (folded when constant).

* ``GatherND(batch_dims=b)``: the batch coordinates are concatenated in front of the indices.
  ``GatherElements``: ``out[p] = data[p with p[axis] = idx[p]]``, a GATHER_ND whose coordinates
  are a constant grid with the indices put on ``axis``.
* ``ScatterND``: TFLite's SCATTER_ND writes into zeros and sums repeats, so
  ``none: SELECT_V2(mask, S(u), data)``, ``add: data + S(u)``, ``mul/max/min: SELECT_V2(mask,
  op(data, S(u)), data)`` where ``S(u) = SCATTER_ND(idx, u, shape)`` and ``mask = S(true)``.
  Repeated constant indices (and run-time ones for mul/max/min) apply the updates one at a time.
  ``ScatterElements`` becomes ScatterND with the GatherElements coordinates.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_rule import BOOL, I32, Rule, attr_str, slice_row, static_rank
from qcc.backends._tflite_ops_window import unsupported
from qcc.backends._tflite_writer import Tensor
from qcc.irutils import attr_int, const_array

# Updates applied one by one (mul/max/min with repeated or run-time indices): beyond this, refused.
_MAX_SEQUENTIAL_UPDATES = 64


def _wrapped_indices(rule: Rule, index: int, sizes, dtype=I32) -> Tensor:
    """Indices input ``index`` wrapped into ``[0, size)`` (ONNX allows negative ones), as int32.

    ``sizes`` broadcasts against the indices (a scalar, or one size per coordinate).
    """
    sizes = np.asarray(sizes)
    array = const_array(rule.node.inputs[index])
    if array is not None:
        return rule.const(np.mod(array, sizes).astype(dtype))
    ids = rule.cast(rule.lw.read(rule.node.inputs[index], False), dtype)
    # TFLite broadcasts FLOOR_MOD up to 4-D: a per-coordinate modulus sees [points, depth].
    flat = rule.reshape(ids, [int(np.prod(ids.shape[:-1])), ids.shape[-1]]) if sizes.ndim else ids
    wrapped = rule.op("FLOOR_MOD", [flat, rule.const(sizes.astype(dtype))], flat.shape, dtype, "FloorModOptions")
    return rule.reshape(wrapped, ids.shape)


def gather_nd(lw: Lowering, node: ir.Node) -> None:
    """GatherND -> GATHER_ND, batch coordinates concatenated in front for ``batch_dims``."""
    rule = Rule(lw, node)
    x = rule.data(0)
    batch = attr_int(node, "batch_dims", 0)
    index_shape = static_rank(node, node.inputs[1])
    depth = index_shape[-1]
    coords = _wrapped_indices(rule, 1, np.array(x.shape[batch : batch + depth]))
    if batch:
        points = index_shape[:-1]
        grid = np.stack(np.indices(points[:batch]), -1).reshape(*points[:batch], *[1] * (len(points) - batch), batch)
        grid = np.broadcast_to(grid, (*points, batch)).astype(np.int32)
        coords = _concat_coords(rule, [rule.const(grid), coords], (*index_shape[:-1], batch + depth))
    y = rule.result(like=x)
    rule.finish(rule.op("GATHER_ND", [x, coords], y.shape, x.dtype, "GatherNdOptions", out=y))


def _concat_coords(rule: Rule, pieces: list[Tensor], shape) -> Tensor:
    """Concatenates int32 coordinate pieces along the last axis (constants folded here)."""
    arrays = [p.data for p in pieces]
    if all(a is not None for a in arrays):
        return rule.const(np.concatenate(arrays, -1).astype(np.int32))
    return rule.op(
        "CONCATENATION",
        pieces,
        shape,
        I32,
        "ConcatenationOptions",
        axis=len(shape) - 1,
        fused_activation_function=0,
    )


def _element_coords(rule: Rule, index: int, data_shape, axis: int) -> Tensor:
    """Full GATHER_ND/SCATTER_ND coordinates ``[*idx.shape, rank]`` for GatherElements/ScatterElements."""
    shape = static_rank(rule.node, rule.node.inputs[index])
    rank = len(shape)
    idx = _wrapped_indices(rule, index, data_shape[axis])
    column = rule.reshape(idx, [*shape, 1])
    grid = np.stack(np.indices(shape), -1).astype(np.int32)
    pieces = []
    if axis > 0:
        pieces.append(rule.const(grid[..., :axis]))
    pieces.append(column)
    if axis < rank - 1:
        pieces.append(rule.const(grid[..., axis + 1 :]))
    return _concat_coords(rule, pieces, (*shape, rank))


def gather_elements(lw: Lowering, node: ir.Node) -> None:
    """GatherElements -> GATHER_ND with coordinates built from the indices (see module docstring)."""
    rule = Rule(lw, node)
    x = rule.data(0)
    axis = attr_int(node, "axis", 0) % len(x.shape)
    coords = _element_coords(rule, 1, x.shape, axis)
    y = rule.result(like=x)
    rule.finish(rule.op("GATHER_ND", [x, coords], y.shape, x.dtype, "GatherNdOptions", out=y))


def scatter_nd(lw: Lowering, node: ir.Node) -> None:
    """ScatterND -> SCATTER_ND combined with the data by mask (see module docstring)."""
    rule = Rule(lw, node)
    x = rule.data(0)
    index_shape = static_rank(node, node.inputs[1])
    coords = _wrapped_indices(rule, 1, np.array(x.shape[: index_shape[-1]]))
    _scatter(rule, x, coords, rule.data(2))


def scatter_elements(lw: Lowering, node: ir.Node) -> None:
    """ScatterElements/Scatter -> ScatterND with the GatherElements coordinates."""
    rule = Rule(lw, node)
    x = rule.data(0)
    axis = attr_int(node, "axis", 0) % len(x.shape)
    coords = _element_coords(rule, 1, x.shape, axis)
    _scatter(rule, x, coords, rule.data(2))


def _scatter(rule: Rule, x: Tensor, coords: Tensor, updates: Tensor) -> None:
    node = rule.node
    reduction = attr_str(node, "reduction", "none")
    combine = {"add": "ADD", "mul": "MUL", "max": "MAXIMUM", "min": "MINIMUM", "none": None}
    if reduction not in combine:
        raise unsupported(node, f"reduction {reduction!r}")
    if updates.dtype != x.dtype:
        raise unsupported(node, f"updates of {updates.dtype} into {x.dtype} data")
    y = rule.result()
    depth = coords.shape[-1]
    points = coords.shape[:-1]
    unique = coords.data is not None and len({tuple(c) for c in coords.data.reshape(-1, depth)}) == int(np.prod(points))
    # Repeated run-time indices are undefined for "none" in ONNX; repeated constant ones are applied
    # in order (the last one wins, as in ONNX Runtime).
    if reduction == "add" or unique or (reduction == "none" and coords.data is None):
        _scatter_once(rule, x, coords, updates, combine[reduction], y)
    else:
        count = int(np.prod(points))
        if count > _MAX_SEQUENTIAL_UPDATES:
            raise unsupported(
                node,
                f"reduction {reduction!r} with {count} run-time or repeated indices (TFLite's SCATTER_ND sums "
                f"repeats; qcc applies up to {_MAX_SEQUENTIAL_UPDATES} updates one at a time)",
            )
        flat_coords = rule.reshape(coords, [count, depth])
        tail = list(updates.shape[len(points) :])
        flat_updates = rule.reshape(updates, [count, *tail])
        current = x
        for i in range(count):
            one_coord = slice_row(rule, flat_coords, i)
            one_update = slice_row(rule, flat_updates, i)
            _target = y if i == count - 1 else None
            current = _scatter_once(rule, current, one_coord, one_update, combine[reduction], _target)
    rule.finish(y)


def _scatter_once(rule: Rule, x: Tensor, coords: Tensor, updates: Tensor, combine: str | None, out) -> Tensor:
    """``x`` with ``updates`` scattered at ``coords`` (no repeated coordinates unless ``combine`` is ADD)."""
    shape = rule.const(np.array(x.shape, np.int32))
    scattered = rule.op("SCATTER_ND", [coords, updates, shape], x.shape, x.dtype, "ScatterNdOptions")
    if combine == "ADD":
        return rule.op("ADD", [x, scattered], x.shape, x.dtype, "AddOptions", out=out)
    if coords.data is not None:
        mask = np.zeros(x.shape, bool)
        mask[tuple(np.moveaxis(coords.data.reshape(-1, coords.shape[-1]), -1, 0))] = True
        mask_t = rule.const(mask)
    else:
        hits = rule.const(np.ones(updates.shape, bool))
        mask_t = rule.op("SCATTER_ND", [coords, hits, shape], x.shape, BOOL, "ScatterNdOptions")
    chosen = scattered
    if combine is not None:
        chosen = rule.op(combine, [x, scattered], x.shape, x.dtype, _OPTIONS[combine])
    return rule.op("SELECT_V2", [mask_t, chosen, x], x.shape, x.dtype, "SelectV2Options", out=out)


_OPTIONS = {"MUL": "MulOptions", "MAXIMUM": "MaximumMinimumOptions", "MINIMUM": "MaximumMinimumOptions"}
