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

Static shapes decide some outputs: Shape, Size, EyeLike and Constant are written as constants,
the repeats of Tile, the target of CenterCropPad and a run-time OneHot depth are read from the
output shape. An output whose *length* depends on the values (NonZero, Unique, Compress with a
run-time condition) is lowered when the model declares that length, and refused otherwise.
Rewrites where TFLite has no single builtin:

* ``ArgMax(select_last_index=1)``: ``n - 1 - ARG_MAX(REVERSE_V2(x))``; keepdims by RESHAPE.
* ``TopK`` on axis ``a``: TOPK_V2 works on the last axis, so TRANSPOSE swaps ``a`` there and back;
  ``largest=0`` is ``-TOPK_V2(-x)`` (ties keep the lower index first in both).
* ``DepthToSpace`` CRD: channel ``c * b^2 + i * b + j`` is DCR's ``(i * b + j) * C + c``, so a
  constant GATHER of the channels turns CRD into DEPTH_TO_SPACE's DCR order (the inverse for
  SpaceToDepth CRD). Both see NHWC data (``layout-nhwc`` lists them as layout ops).
* ``GatherND(batch_dims=b)``: the batch coordinates are concatenated in front of the indices.
  ``GatherElements``: ``out[p] = data[p with p[axis] = idx[p]]``, a GATHER_ND whose coordinates
  are a constant grid with the indices put on ``axis``. Negative indices: FLOOR_MOD by the size.
* ``ScatterND``: TFLite's SCATTER_ND writes into zeros and sums repeats, so
  ``none: SELECT_V2(mask, S(u), data)``, ``add: data + S(u)``, ``mul/max/min: SELECT_V2(mask,
  op(data, S(u)), data)`` where ``S(u) = SCATTER_ND(idx, u, shape)`` and ``mask = S(true)``.
  Repeated constant indices (and run-time ones for mul/max/min) apply the updates one at a time.
  ``ScatterElements`` becomes ScatterND with the GatherElements coordinates.
* ``CumProd`` on an axis of length ``n``: ``REDUCE_PROD_j(SELECT_V2(M, x[j], 1))`` with the
  constant ``[n, n]`` mask ``M[i, j] = j <= i`` (``j < i`` exclusive, ``>=``/``>`` reversed); a
  run-time axis computes every axis and SELECT_V2 keeps the one it names. CumSum is CUMSUM.
* ``Einsum`` with one or two operands: a letter repeated in one operand takes the diagonal
  (``SUM_j SELECT_V2(i == j, x, 0)``), letters of one operand only and not in the output are
  summed away (SUM), then ``A -> [batch, free_a, contracted]``, ``B -> [batch, contracted,
  free_b]`` by TRANSPOSE and RESHAPE, one BATCH_MATMUL, RESHAPE and TRANSPOSE to the output.
* ``Trilu``: ``SELECT_V2(col - row >= k, x, 0)`` (``<=`` for lower), ``k`` may be a tensor.
* ``OneHot``: negative indices count back (``i + depth``), out-of-range ones give an off row,
  as TFLite's ONE_HOT does for them.
* ``CenterCropPad``: SLICE then PAD, the start at ``(in - out) // 2`` (pad before ``(out - in) // 2``).
* ``NonZero``, ``Unique``, run-time ``Compress``: the positions of the ``k`` true entries are
  ``SCATTER_ND(CUMSUM(flags, exclusive), arange)`` (see :func:`_true_positions`); Unique
  compares every pair of slices (see :func:`unique`).
"""

from __future__ import annotations

import re
import string

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_window import unsupported
from qcc.backends._tflite_writer import TENSOR_TYPES, Tensor
from qcc.irutils import attr_int, const_array

_F32 = np.dtype(np.float32)
_I32 = np.dtype(np.int32)
_I64 = np.dtype(np.int64)
_BOOL = np.dtype(np.bool_)
# Updates applied one by one (mul/max/min with repeated or run-time indices): beyond this, refused.
_MAX_SEQUENTIAL_UPDATES = 64
# CumProd and Unique build [n, n] intermediates; beyond this many elements they are refused.
_MAX_PAIRWISE_ELEMENTS = 1 << 24
# TFLite's SELECT_V2 broadcasts up to 5-D.
_MAX_SELECT_RANK = 5


# -- helpers --------------------------------------------------------------------------------------


class _Rule:
    """Tensor plumbing for one node: float32 compute, casts to and from the ONNX dtypes, temporaries."""

    def __init__(self, lw: Lowering, node: ir.Node) -> None:
        self.lw, self.node, self.count = lw, node, 0
        self.outputs: dict[int, Tensor] = {}
        self.temporaries: set[int] = set()

    def name(self, tag: str) -> str:
        self.count += 1
        return f"{self.node.name}_{tag}{self.count}"

    def const(self, array, dtype=None) -> Tensor:
        """A constant (0-d arrays stay 0-d)."""
        return self.lw.constant(self.name("c"), np.array(array, dtype=dtype))

    def zero_like(self, x: Tensor) -> Tensor:
        """A 0-d zero of ``x``'s type: its zero point, with its parameters, when ``x`` is int8."""
        if x.quant is None:
            return self.const(np.zeros((), x.dtype))
        return self.lw.constant(self.name("zero"), np.array(x.quant.zero_point[0], x.dtype), x.quant)

    def tensor(self, shape, dtype, quant=None) -> Tensor:
        """A new intermediate tensor of this rule."""
        tensor = self.lw.model.tensor(self.name("t"), shape, dtype, quant=quant)
        self.temporaries.add(tensor.index)
        return tensor

    def op(self, builtin: str, inputs, shape, dtype=_F32, options: str | None = None, out=None, quant=None, **fields):
        """Appends ``builtin`` writing a new tensor (or ``out``) and returns it."""
        out = self.tensor(shape, dtype, quant) if out is None else out
        self.lw.op(builtin, inputs, [out], options, source=self.node.name, **fields)
        return out

    def cast(self, x: Tensor, dtype, out: Tensor | None = None) -> Tensor:
        """``x`` as ``dtype`` (CAST, or ``x`` itself when it already is)."""
        dtype = np.dtype(dtype)
        if x.dtype == dtype and out is None:
            return x
        for t in (x.dtype, dtype):
            if t not in TENSOR_TYPES:
                raise unsupported(self.node, f"a {t} tensor (qcc's TFLite writer stores {_type_names()})")
        if x.dtype == dtype:
            return self.lw.reshape(x, out, self.node.name)
        fields = {"in_data_type": TENSOR_TYPES[x.dtype], "out_data_type": TENSOR_TYPES[dtype]}
        return self.op("CAST", [x], x.shape, dtype, "CastOptions", out=out, **fields)

    def data(self, index: int) -> Tensor:
        """Input ``index`` in the node's precision, float16/float64 cast to float32."""
        x = self.lw.input(self.node, index)
        return self.cast(x, _F32) if x.dtype.kind == "f" else x

    def int32(self, index: int) -> Tensor:
        """An integer input as int32 (a constant when it is one)."""
        array = const_array(self.node.inputs[index])
        if array is not None:
            return self.const(array.astype(np.int32))
        return self.cast(self.lw.read(self.node.inputs[index], False), _I32)

    def output(self, index: int = 0) -> Tensor:
        """The node's output ``index`` (defined once)."""
        if index not in self.outputs:
            self.outputs[index] = self.lw.output(self.node, index)
        return self.outputs[index]

    def result(self, index: int = 0, like: Tensor | None = None) -> Tensor:
        """The tensor to write output ``index`` into: the output itself, or a float32 stand-in for a
        float16/float64 output (not for int8 data ``like``) that :meth:`finish` casts."""
        y = self.output(index)
        if y.dtype.kind == "f" and y.dtype != _F32 and (like is None or like.quant is None):
            return self.tensor(y.shape, _F32)
        return y

    def finish(self, written: Tensor, index: int = 0) -> None:
        """Writes output ``index`` from ``written``: nothing when it is the output, else RESHAPE and/or CAST."""
        y = self.output(index)
        if written is y:
            return
        last = self.lw.model.ops[-1] if self.lw.model.ops else None
        if last is not None and last.outputs == [written.index] and written.index in self.temporaries:
            if (written.shape, written.dtype) == (y.shape, y.dtype) and _same_quant(written, y):
                last.outputs = [y.index]  # the last op writes the output itself: no copy
                return
        if written.dtype == y.dtype:
            self.lw.reshape(written, y, self.node.name)
            return
        self.cast(self.reshape(written, y.shape), y.dtype, out=y)

    def transpose(self, x: Tensor, perm) -> Tensor:
        perm = [int(p) for p in perm]
        if perm == sorted(perm):
            return x
        shape = [x.shape[p] for p in perm]
        return self.op("TRANSPOSE", [x, self.const(perm, np.int32)], shape, x.dtype, "TransposeOptions", quant=x.quant)

    def reshape(self, x: Tensor, shape, out: Tensor | None = None) -> Tensor:
        if out is None and tuple(shape) == tuple(x.shape):
            return x
        out = self.tensor(shape, x.dtype, x.quant) if out is None else out
        return self.lw.reshape(x, out, self.node.name)


def _same_quant(a: Tensor, b: Tensor) -> bool:
    if a.quant is None or b.quant is None:
        return a.quant is None and b.quant is None
    return bool(np.array_equal(a.quant.scale, b.quant.scale) and np.array_equal(a.quant.zero_point, b.quant.zero_point))


def _type_names() -> str:
    return ", ".join(sorted(str(t) for t in TENSOR_TYPES))


def _attr_str(node: ir.Node, name: str, default: str) -> str:
    attr = node.attributes.get(name)
    return default if attr is None else attr.as_string()


def _write_constant(lw: Lowering, node: ir.Node, array: np.ndarray, index: int = 0) -> None:
    """Output ``index`` holds a constant known at compile time: a constant copied by RESHAPE."""
    rule = _Rule(lw, node)
    y = rule.output(index)
    if y.dtype not in TENSOR_TYPES:
        raise unsupported(node, f"a {y.dtype} output (qcc's TFLite writer stores {_type_names()})")
    rule.finish(rule.const(np.asarray(array).astype(y.dtype).reshape(y.shape)), index)


def _static_rank(node: ir.Node, value: ir.Value) -> list[int]:
    if value.shape is None or not all(isinstance(d, int) for d in value.shape):
        raise unsupported(node, f"{value.name!r} has no static shape")
    return [int(d) for d in value.shape]


# -- arg and top-k --------------------------------------------------------------------------------


def arg_extreme(lw: Lowering, node: ir.Node) -> None:
    """ArgMax/ArgMin -> ARG_MAX/ARG_MIN (int64 out); keepdims by RESHAPE; last index by REVERSE_V2."""
    rule = _Rule(lw, node)
    x = rule.data(0)
    axis = attr_int(node, "axis", 0) % len(x.shape)
    reduced = [d for i, d in enumerate(x.shape) if i != axis]
    axis_t = rule.const([axis], np.int32)
    last = attr_int(node, "select_last_index", 0)
    source = rule.op("REVERSE_V2", [x, axis_t], x.shape, x.dtype, "ReverseV2Options") if last else x
    name = "ARG_MAX" if node.op_type == "ArgMax" else "ARG_MIN"
    options = "ArgMaxOptions" if name == "ARG_MAX" else "ArgMinOptions"
    index = rule.op(name, [source, axis_t], reduced, _I64, options, output_type=TENSOR_TYPES[_I64])
    if last:
        index = rule.op("SUB", [rule.const(x.shape[axis] - 1, np.int64), index], reduced, _I64, "SubOptions")
    rule.finish(index)


def top_k(lw: Lowering, node: ir.Node) -> None:
    """TopK -> TOPK_V2 on the last axis (TRANSPOSE for another, NEG for the smallest)."""
    rule = _Rule(lw, node)
    x = rule.data(0)
    rank = len(x.shape)
    axis = attr_int(node, "axis", -1) % rank
    k = rule.output(0).shape[axis]
    perm = list(range(rank))
    perm[axis], perm[-1] = perm[-1], perm[axis]
    inner = rule.transpose(x, perm)
    largest = attr_int(node, "largest", 1)
    if not largest:
        inner = rule.op("NEG", [inner], inner.shape, inner.dtype, "NegOptions", quant=inner.quant)
    shape = [*inner.shape[:-1], k]
    values = rule.tensor(shape, inner.dtype, inner.quant)
    indices = rule.tensor(shape, _I32)
    lw.op("TOPK_V2", [inner, rule.const(k, np.int32)], [values, indices], "TopKV2Options", source=node.name)
    if not largest:
        values = rule.op("NEG", [values], shape, values.dtype, "NegOptions", quant=values.quant)
    rule.finish(rule.transpose(values, perm), 0)
    rule.finish(rule.transpose(indices, perm), 1)


# -- cumulative -----------------------------------------------------------------------------------


def _axis_input(node: ir.Node, rank: int) -> int:
    """The constant axis input (a rank-1 input has only axis 0, whatever the tensor holds)."""
    axis = const_array(node.inputs[1])
    if axis is None:
        if rank == 1:
            return 0
        raise unsupported(node, "an axis that is not constant")
    return int(np.ravel(axis)[0]) % rank


def cumsum(lw: Lowering, node: ir.Node) -> None:
    """CumSum -> CUMSUM (exclusive, reverse); a run-time axis is an int32 scalar (CUMSUM wraps negatives)."""
    rule = _Rule(lw, node)
    x = rule.data(0)
    if const_array(node.inputs[1]) is None and len(x.shape) > 1:
        axis_t = rule.reshape(rule.int32(1), [])
    else:
        axis_t = rule.const(_axis_input(node, len(x.shape)), np.int32)
    total = rule.op(
        "CUMSUM",
        [x, axis_t],
        x.shape,
        x.dtype,
        "CumsumOptions",
        exclusive=bool(attr_int(node, "exclusive", 0)),
        reverse=bool(attr_int(node, "reverse", 0)),
    )
    rule.finish(total)


def cumprod(lw: Lowering, node: ir.Node) -> None:
    """CumProd -> REDUCE_PROD of SELECT_V2(triangular mask, x, 1) (see module docstring).

    A run-time axis: the product is taken along every axis and SELECT_V2 keeps the one it names.
    """
    rule = _Rule(lw, node)
    x = rule.data(0)
    if x.dtype not in (_F32, _I32, _I64):
        raise unsupported(node, f"a {x.dtype} CumProd (REDUCE_PROD in qcc takes float32, int32 and int64)")
    rank = len(x.shape)
    if const_array(node.inputs[1]) is not None or rank == 1:
        rule.finish(_cumprod_along(rule, x, _axis_input(node, rank)))
        return
    if rank > _MAX_SELECT_RANK:
        raise unsupported(node, f"a run-time axis on a rank-{rank} input")
    axis = rule.reshape(rule.int32(1), [])
    axis = rule.op("FLOOR_MOD", [axis, rule.const(rank, np.int32)], [], _I32, "FloorModOptions")
    result = _cumprod_along(rule, x, rank - 1)
    for a in reversed(range(rank - 1)):
        chosen = rule.op("EQUAL", [axis, rule.const(a, np.int32)], [], _BOOL, "EqualOptions")
        candidate = _cumprod_along(rule, x, a)
        result = rule.op("SELECT_V2", [chosen, candidate, result], x.shape, x.dtype, "SelectV2Options")
    rule.finish(result)


def _cumprod_along(rule: _Rule, x: Tensor, axis: int) -> Tensor:
    node = rule.node
    n = x.shape[axis]
    if int(np.prod(x.shape)) * n > _MAX_PAIRWISE_ELEMENTS:
        raise unsupported(node, f"CumProd over {n} elements of {x.shape} (needs an [..., {n}, {n}] intermediate)")
    perm = [a for a in range(len(x.shape)) if a != axis] + [axis]
    moved = rule.transpose(x, perm)
    count = int(np.prod(moved.shape[:-1]))
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    exclusive, reverse = attr_int(node, "exclusive", 0), attr_int(node, "reverse", 0)
    mask = (j > i if exclusive else j >= i) if reverse else (j < i if exclusive else j <= i)
    row = rule.reshape(moved, [count, 1, n])
    one = rule.const(np.ones((), x.dtype))
    spread = rule.op("SELECT_V2", [rule.const(mask), row, one], [count, n, n], x.dtype, "SelectV2Options")
    product = rule.op("REDUCE_PROD", [spread, rule.const([2], np.int32)], [count, n], x.dtype, "ReducerOptions")
    return rule.transpose(rule.reshape(product, moved.shape), np.argsort(perm))


# -- gathers --------------------------------------------------------------------------------------


def _wrapped_indices(rule: _Rule, index: int, sizes, dtype=_I32) -> Tensor:
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
    rule = _Rule(lw, node)
    x = rule.data(0)
    batch = attr_int(node, "batch_dims", 0)
    index_shape = _static_rank(node, node.inputs[1])
    depth = index_shape[-1]
    coords = _wrapped_indices(rule, 1, np.array(x.shape[batch : batch + depth]))
    if batch:
        points = index_shape[:-1]
        grid = np.stack(np.indices(points[:batch]), -1).reshape(*points[:batch], *[1] * (len(points) - batch), batch)
        grid = np.broadcast_to(grid, (*points, batch)).astype(np.int32)
        coords = _concat_coords(rule, [rule.const(grid), coords], (*index_shape[:-1], batch + depth))
    y = rule.result(like=x)
    rule.finish(rule.op("GATHER_ND", [x, coords], y.shape, x.dtype, "GatherNdOptions", out=y))


def _concat_coords(rule: _Rule, pieces: list[Tensor], shape) -> Tensor:
    """Concatenates int32 coordinate pieces along the last axis (constants folded here)."""
    arrays = [p.data for p in pieces]
    if all(a is not None for a in arrays):
        return rule.const(np.concatenate(arrays, -1).astype(np.int32))
    return rule.op(
        "CONCATENATION",
        pieces,
        shape,
        _I32,
        "ConcatenationOptions",
        axis=len(shape) - 1,
        fused_activation_function=0,
    )


def _element_coords(rule: _Rule, index: int, data_shape, axis: int) -> Tensor:
    """Full GATHER_ND/SCATTER_ND coordinates ``[*idx.shape, rank]`` for GatherElements/ScatterElements."""
    shape = _static_rank(rule.node, rule.node.inputs[index])
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
    rule = _Rule(lw, node)
    x = rule.data(0)
    axis = attr_int(node, "axis", 0) % len(x.shape)
    coords = _element_coords(rule, 1, x.shape, axis)
    y = rule.result(like=x)
    rule.finish(rule.op("GATHER_ND", [x, coords], y.shape, x.dtype, "GatherNdOptions", out=y))


# -- scatters -------------------------------------------------------------------------------------


def scatter_nd(lw: Lowering, node: ir.Node) -> None:
    """ScatterND -> SCATTER_ND combined with the data by mask (see module docstring)."""
    rule = _Rule(lw, node)
    x = rule.data(0)
    index_shape = _static_rank(node, node.inputs[1])
    coords = _wrapped_indices(rule, 1, np.array(x.shape[: index_shape[-1]]))
    _scatter(rule, x, coords, rule.data(2))


def scatter_elements(lw: Lowering, node: ir.Node) -> None:
    """ScatterElements/Scatter -> ScatterND with the GatherElements coordinates."""
    rule = _Rule(lw, node)
    x = rule.data(0)
    axis = attr_int(node, "axis", 0) % len(x.shape)
    coords = _element_coords(rule, 1, x.shape, axis)
    _scatter(rule, x, coords, rule.data(2))


def _scatter(rule: _Rule, x: Tensor, coords: Tensor, updates: Tensor) -> None:
    node = rule.node
    reduction = _attr_str(node, "reduction", "none")
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
            one_coord = _slice_row(rule, flat_coords, i)
            one_update = _slice_row(rule, flat_updates, i)
            _target = y if i == count - 1 else None
            current = _scatter_once(rule, current, one_coord, one_update, combine[reduction], _target)
    rule.finish(y)


def _slice_row(rule: _Rule, x: Tensor, i: int) -> Tensor:
    if x.data is not None:
        return rule.const(x.data[i : i + 1])
    begin = rule.const([i] + [0] * (len(x.shape) - 1), np.int32)
    size = rule.const([1, *x.shape[1:]], np.int32)
    return rule.op("SLICE", [x, begin, size], [1, *x.shape[1:]], x.dtype, "SliceOptions")


def _scatter_once(rule: _Rule, x: Tensor, coords: Tensor, updates: Tensor, combine: str | None, out) -> Tensor:
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
        mask_t = rule.op("SCATTER_ND", [coords, hits, shape], x.shape, _BOOL, "ScatterNdOptions")
    chosen = scattered
    if combine is not None:
        chosen = rule.op(combine, [x, scattered], x.shape, x.dtype, _OPTIONS[combine])
    return rule.op("SELECT_V2", [mask_t, chosen, x], x.shape, x.dtype, "SelectV2Options", out=out)


_OPTIONS = {"MUL": "MulOptions", "MAXIMUM": "MaximumMinimumOptions", "MINIMUM": "MaximumMinimumOptions"}


# -- data movement --------------------------------------------------------------------------------


def tile(lw: Lowering, node: ir.Node) -> None:
    """Tile -> TILE; the repeats follow from the static shapes (int8 keeps its parameters)."""
    rule = _Rule(lw, node)
    x = rule.data(0)
    y = rule.result(like=x)
    if any(d == 0 for d in x.shape):
        raise unsupported(node, "an empty input")
    repeats = [o // i for o, i in zip(y.shape, x.shape, strict=True)]
    rule.finish(rule.op("TILE", [x, rule.const(repeats, np.int32)], y.shape, x.dtype, "TileOptions", out=y))


def depth_to_space(lw: Lowering, node: ir.Node) -> None:
    """DepthToSpace (NHWC) -> DEPTH_TO_SPACE; CRD mode first reorders the channels (module docstring)."""
    _space_depth(lw, node, "DEPTH_TO_SPACE", "DepthToSpaceOptions")


def space_to_depth(lw: Lowering, node: ir.Node) -> None:
    """SpaceToDepth (NHWC) -> SPACE_TO_DEPTH; CRD mode then reorders the channels."""
    _space_depth(lw, node, "SPACE_TO_DEPTH", "SpaceToDepthOptions")


def _space_depth(lw: Lowering, node: ir.Node, builtin: str, options: str) -> None:
    rule = _Rule(lw, node)
    if node.meta.get("qcc.layout") != "NHWC":
        raise unsupported(node, f"{node.op_type} on a rank-{len(node.inputs[0].shape or ())} tensor (4-D only)")
    x = rule.data(0)
    y = rule.result(like=x)
    block = attr_int(node, "blocksize", 1)
    mode = _attr_str(node, "mode", "DCR")
    if mode not in ("DCR", "CRD"):
        raise unsupported(node, f"mode {mode!r}")
    deep = x.shape[3] if builtin == "DEPTH_TO_SPACE" else y.shape[3]
    few = deep // (block * block)
    # CRD channel c*b*b + s (s = i*b + j) is DCR channel s*C + c.
    crd_of_dcr = np.arange(deep).reshape(few, block * block).T.reshape(-1)
    order = np.argsort(crd_of_dcr)  # DCR position of each CRD channel
    if mode == "CRD" and builtin == "DEPTH_TO_SPACE":
        x = _gather_channels(rule, x, crd_of_dcr)
    moved = rule.op(builtin, [x], y.shape, x.dtype, options, quant=x.quant, block_size=block)
    if mode == "CRD" and builtin == "SPACE_TO_DEPTH":
        moved = _gather_channels(rule, moved, order)
    rule.finish(moved)


def _gather_channels(rule: _Rule, x: Tensor, order) -> Tensor:
    return rule.op(
        "GATHER",
        [x, rule.const(np.asarray(order, np.int32))],
        x.shape,
        x.dtype,
        "GatherOptions",
        quant=x.quant,
        axis=3,
        batch_dims=0,
    )


def reverse_sequence(lw: Lowering, node: ir.Node) -> None:
    """ReverseSequence -> REVERSE_SEQUENCE (seq_dim = time_axis, batch_dim = batch_axis)."""
    rule = _Rule(lw, node)
    x = rule.data(0)
    lengths = rule.int32(1)
    y = rule.result(like=x)
    reversed_ = rule.op(
        "REVERSE_SEQUENCE",
        [x, lengths],
        y.shape,
        x.dtype,
        "ReverseSequenceOptions",
        out=y,
        seq_dim=attr_int(node, "time_axis", 0),
        batch_dim=attr_int(node, "batch_axis", 1),
    )
    rule.finish(reversed_)


def compress(lw: Lowering, node: ir.Node) -> None:
    """Compress -> GATHER of the selected positions (computed at run time for a run-time condition)."""
    rule = _Rule(lw, node)
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


def _true_positions(rule: _Rule, flags: Tensor, count: int) -> Tensor:
    """The int32 positions of the ``count`` true entries of a 1-D boolean tensor, in order.

    The output length is the static one (the artifact's shapes are those of the first calibration
    sample): true entry ``p`` goes to slot ``CUMSUM(flags, exclusive)[p]``, false entries to a spare
    slot ``count`` that is dropped: ``SCATTER_ND(slot, arange, [count + 1])[:count]``. More true
    entries than ``count`` at run time index past the buffer, which SCATTER_ND refuses at invoke.
    """
    length = flags.shape[0]
    ones = rule.cast(flags, _I32)
    rank = rule.op("CUMSUM", [ones, rule.const(0, np.int32)], [length], _I32, "CumsumOptions", exclusive=True)
    slot = rule.op("SELECT_V2", [flags, rank, rule.const(count, np.int32)], [length], _I32, "SelectV2Options")
    slots = rule.reshape(slot, [length, 1])
    shape = rule.const([count + 1], np.int32)
    spread = rule.op("SCATTER_ND", [slots, rule.const(np.arange(length, dtype=np.int32)), shape], [count + 1], _I32)
    begin, size = rule.const([0], np.int32), rule.const([count], np.int32)
    return rule.op("SLICE", [spread, begin, size], [count], _I32, "SliceOptions")


def center_crop_pad(lw: Lowering, node: ir.Node) -> None:
    """CenterCropPad -> SLICE (crop) then PAD (see module docstring); sizes from the static shapes."""
    rule = _Rule(lw, node)
    x = rule.data(0)
    y = rule.result()
    crop_size = [min(i, o) for i, o in zip(x.shape, y.shape, strict=True)]
    begin = [(i - o) // 2 if i > o else 0 for i, o in zip(x.shape, y.shape, strict=True)]
    current = x
    if crop_size != list(x.shape):
        current = rule.op(
            "SLICE",
            [x, rule.const(begin, np.int32), rule.const(crop_size, np.int32)],
            crop_size,
            x.dtype,
            "SliceOptions",
            quant=x.quant,
        )
    pads = [((o - i) // 2, o - i - (o - i) // 2) if o > i else (0, 0) for i, o in zip(x.shape, y.shape, strict=True)]
    if any(p != (0, 0) for p in pads):
        # int8 PAD fills with the zero point: exactly 0, as ONNX pads.
        paddings = rule.const(pads, np.int32)
        current = rule.op("PAD", [current, paddings], y.shape, x.dtype, "PadOptions", quant=x.quant)
    rule.finish(current)


def trilu(lw: Lowering, node: ir.Node) -> None:
    """Trilu -> SELECT_V2(GREATER_EQUAL/LESS_EQUAL(col - row, k), x, 0)."""
    rule = _Rule(lw, node)
    x = rule.data(0)
    rows, cols = x.shape[-2:]
    # SELECT_V2 broadcasts up to 5-D: the leading dimensions are folded into one.
    x = rule.reshape(x, [int(np.prod(x.shape[:-2])), rows, cols])
    offset = np.arange(cols)[None, :] - np.arange(rows)[:, None]
    upper = attr_int(node, "upper", 1)
    has_k = len(node.inputs) > 1 and node.inputs[1] is not None
    k_array = const_array(node.inputs[1]) if has_k else np.array(0)
    if k_array is not None:
        k = int(np.ravel(k_array)[0]) if np.size(k_array) else 0
        mask = rule.const(offset >= k if upper else offset <= k)
    else:
        k_t = rule.reshape(rule.int32(1), [])
        compare = ("GREATER_EQUAL", "GreaterEqualOptions") if upper else ("LESS_EQUAL", "LessEqualOptions")
        mask = rule.op(compare[0], [rule.const(offset.astype(np.int32)), k_t], [rows, cols], _BOOL, compare[1])
    kept = rule.op("SELECT_V2", [mask, x, rule.zero_like(x)], x.shape, x.dtype, "SelectV2Options", quant=x.quant)
    rule.finish(kept)


def one_hot(lw: Lowering, node: ir.Node) -> None:
    """OneHot -> ONE_HOT, negative indices moved up by ``depth`` (ONNX counts them back)."""
    rule = _Rule(lw, node)
    depth_array = const_array(node.inputs[1])
    y_shape = node.outputs[0].shape
    axis = attr_int(node, "axis", -1) % (len(node.inputs[0].shape or ()) + 1)
    if depth_array is not None:
        depth = int(np.ravel(depth_array)[0])
    elif y_shape is not None and isinstance(y_shape[axis], int):
        depth = int(y_shape[axis])  # a run-time depth: the static output shape holds it
    else:
        raise unsupported(node, "a run-time depth with no static output shape")
    indices = lw.read(node.inputs[0], False)
    if indices.dtype.kind == "f":
        indices = rule.cast(rule.cast(indices, _F32), _I32)  # ONNX casts non-integer indices, truncating
    shape = indices.shape
    # Flat while comparing with a scalar: TFLite broadcasts comparisons up to 4-D.
    indices = rule.reshape(rule.cast(indices, _I32), [int(np.prod(shape))])
    negative = rule.op("LESS", [indices, rule.const(0, np.int32)], indices.shape, _BOOL, "LessOptions")
    moved = rule.op("ADD", [indices, rule.const(depth, np.int32)], indices.shape, _I32, "AddOptions")
    indices = rule.op("SELECT_V2", [negative, moved, indices], indices.shape, _I32, "SelectV2Options")
    indices = rule.reshape(indices, shape)
    values = const_array(node.inputs[2])
    y = rule.result()
    if values is not None:
        off, on = (rule.const(np.array(v, y.dtype)) for v in np.ravel(values)[:2])
    else:
        pair = rule.data(2) if y.dtype.kind == "f" else lw.read(node.inputs[2], False)
        off, on = (rule.reshape(_slice_row(rule, pair, i), []) for i in (0, 1))
    inputs = [indices, rule.const(depth, np.int32), on, off]
    rule.finish(rule.op("ONE_HOT", inputs, y.shape, y.dtype, "OneHotOptions", out=y, axis=axis))


# -- constants and shapes -------------------------------------------------------------------------


def constant(lw: Lowering, node: ir.Node) -> None:
    """Constant that reached the lowering (a graph output): the value, copied into the output."""
    array = const_array(node.outputs[0])
    if array is None:
        attr = node.attributes.get("value")
        if attr is None:
            raise unsupported(node, "a Constant without a tensor 'value' (sparse or list values)")
        array = attr.as_tensor().numpy()
    _write_constant(lw, node, array)


def shape(lw: Lowering, node: ir.Node) -> None:
    """Shape (start, end) -> the static shape as an int64 constant."""
    dims = np.array(_static_rank(node, node.inputs[0]), np.int64)
    rank = len(dims)
    start = attr_int(node, "start", 0)
    end = attr_int(node, "end", rank)
    _write_constant(lw, node, dims[slice(start, end)])


def size(lw: Lowering, node: ir.Node) -> None:
    """Size -> the static element count as an int64 constant."""
    _write_constant(lw, node, np.array(np.prod(_static_rank(node, node.inputs[0])), np.int64))


def eye_like(lw: Lowering, node: ir.Node) -> None:
    """EyeLike -> a constant identity (shifted by ``k``) of the static shape and the output dtype."""
    rows, cols = _static_rank(node, node.inputs[0])
    y = node.outputs[0]
    dtype = y.dtype.numpy() if y.dtype is not None else np.float32
    _write_constant(lw, node, np.eye(rows, cols, attr_int(node, "k", 0), dtype=dtype))


def constant_of_shape(lw: Lowering, node: ir.Node) -> None:
    """ConstantOfShape -> FILL of the static output shape with the value."""
    rule = _Rule(lw, node)
    y = rule.result()
    attr = node.attributes.get("value")
    value = attr.as_tensor().numpy().reshape(()) if attr is not None else np.zeros((), np.float32)
    fill = [rule.const(y.shape, np.int32), rule.const(value.astype(y.dtype))]
    rule.finish(rule.op("FILL", fill, y.shape, y.dtype, "FillOptions", out=y))


def range_(lw: Lowering, node: ir.Node) -> None:
    """Range -> RANGE of scalars; the output length must be static."""
    rule = _Rule(lw, node)
    _static_rank(node, node.outputs[0])
    y = rule.result()
    dtype = y.dtype
    parts = []
    for i in range(3):
        t = lw.read(node.inputs[i], False)
        t = rule.cast(t, dtype if dtype.kind != "f" else _F32)
        parts.append(rule.reshape(t, []))
    rule.finish(rule.op("RANGE", parts, y.shape, parts[0].dtype, "RangeOptions", out=y))


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
    rule = _Rule(lw, node)
    k = _static_count(node, 0, 1)
    if k == 0:
        raise unsupported(node, "a declared length of 0 (an empty output)")
    x = rule.cast(lw.read(node.inputs[0], False), _F32) if node.inputs[0].dtype.is_floating_point() else None
    x = lw.read(node.inputs[0], False) if x is None else x
    dims = list(x.shape)
    if not dims:
        raise unsupported(node, "a scalar input")
    flat = rule.reshape(x, [int(np.prod(dims))])
    if flat.dtype == _BOOL:
        flags = flat
    else:
        zero = rule.const(np.zeros((), flat.dtype))
        flags = rule.op("NOT_EQUAL", [flat, zero], flat.shape, _BOOL, "NotEqualOptions")
    positions = rule.reshape(_true_positions(rule, flags, k), [1, k])
    strides = np.array([int(np.prod(dims[d + 1 :])) for d in range(len(dims))], np.int32).reshape(-1, 1)
    shape = [len(dims), k]
    outer = rule.op("FLOOR_DIV", [positions, rule.const(strides)], shape, _I32, "FloorDivOptions")
    sizes = rule.const(np.array(dims, np.int32).reshape(-1, 1))
    rule.finish(rule.op("FLOOR_MOD", [outer, sizes], shape, _I32, "FloorModOptions"))


def unique(lw: Lowering, node: ir.Node) -> None:
    """Unique with a static count ``k`` -> pairwise comparisons of the ``n`` slices (module docstring).

    ``eq[i, j]``: slices ``i`` and ``j`` are equal; slice ``i`` is a first occurrence when no
    ``j < i`` equals it. Its slot is the number of distinct slices lexicographically below it
    (sorted) or of first occurrences before it (not sorted). Then ``indices`` scatter each first
    occurrence's position into its slot, ``Y = GATHER(x, indices)``, ``inverse = slot`` and
    ``counts = SCATTER_ND(slot, 1)`` (which sums).
    """
    rule = _Rule(lw, node)
    x = rule.data(0)
    attr = node.attributes.get("axis")
    axis = 0 if attr is None else attr.as_int() % len(x.shape)
    k = _static_count(node, 0, axis)
    data = rule.reshape(x, [int(np.prod(x.shape))]) if attr is None else x
    n = data.shape[axis]
    width = int(np.prod(data.shape)) // n
    rows = rule.reshape(rule.transpose(data, [axis, *[a for a in range(len(data.shape)) if a != axis]]), [n, width])
    if n * n * width > _MAX_PAIRWISE_ELEMENTS:
        raise unsupported(node, f"Unique over {n} slices of {width} (it compares every pair)")
    left, right = rule.reshape(rows, [n, 1, width]), rule.reshape(rows, [1, n, width])
    cube = [n, n, width]
    same = rule.op("EQUAL", [left, right], cube, _BOOL, "EqualOptions")
    differ = rule.op("LOGICAL_NOT", [same], cube, _BOOL, "LogicalNotOptions")
    last = rule.const([2], np.int32)
    any_differ = rule.op("REDUCE_ANY", [differ, last], [n, n], _BOOL, "ReducerOptions", keep_dims=False)
    equal = rule.op("LOGICAL_NOT", [any_differ], [n, n], _BOOL, "LogicalNotOptions")
    earlier = rule.const(np.arange(n)[None, :] < np.arange(n)[:, None])  # [i, j]: j < i
    seen = rule.op("LOGICAL_AND", [equal, earlier], [n, n], _BOOL, "LogicalAndOptions")
    repeated = rule.op("REDUCE_ANY", [seen, rule.const([1], np.int32)], [n], _BOOL, "ReducerOptions", keep_dims=False)
    first = rule.op("LOGICAL_NOT", [repeated], [n], _BOOL, "LogicalNotOptions")
    first_column = rule.reshape(first, [1, n])
    zero = rule.const(0, np.int32)
    if attr_int(node, "sorted", 1):
        # below[i, j]: slice j < slice i at the first position where they differ.
        differ_count = rule.cast(differ, _I32)
        prefix = rule.op("CUMSUM", [differ_count, rule.const(2, np.int32)], cube, _I32, "CumsumOptions", exclusive=True)
        undecided = rule.op("EQUAL", [prefix, zero], cube, _BOOL, "EqualOptions")
        less = rule.op("LESS", [right, left], cube, _BOOL, "LessOptions")
        decided = rule.op("LOGICAL_AND", [undecided, less], cube, _BOOL, "LogicalAndOptions")
        below = rule.op("REDUCE_ANY", [decided, last], [n, n], _BOOL, "ReducerOptions", keep_dims=False)
        counted = rule.op("LOGICAL_AND", [below, first_column], [n, n], _BOOL, "LogicalAndOptions")
        slot = rule.op("SUM", [rule.cast(counted, _I32), rule.const([1], np.int32)], [n], _I32, "ReducerOptions")
    else:
        order = rule.op("CUMSUM", [rule.cast(first, _I32), zero], [n], _I32, "CumsumOptions", exclusive=True)
        owner = rule.op("LOGICAL_AND", [equal, first_column], [n, n], _BOOL, "LogicalAndOptions")
        picked = rule.op("SELECT_V2", [owner, rule.reshape(order, [1, n]), zero], [n, n], _I32, "SelectV2Options")
        slot = rule.op("SUM", [picked, rule.const([1], np.int32)], [n], _I32, "ReducerOptions")
    target = rule.op("SELECT_V2", [first, slot, rule.const(k, np.int32)], [n], _I32, "SelectV2Options")
    spread = rule.op(
        "SCATTER_ND",
        [rule.reshape(target, [n, 1]), rule.const(np.arange(n, dtype=np.int32)), rule.const([k + 1], np.int32)],
        [k + 1],
        _I32,
    )
    indices = rule.op(
        "SLICE", [spread, rule.const([0], np.int32), rule.const([k], np.int32)], [k], _I32, "SliceOptions"
    )
    values_shape = list(data.shape)
    values_shape[axis] = k
    values = rule.op("GATHER", [data, indices], values_shape, data.dtype, "GatherOptions", axis=axis, batch_dims=0)
    ones = rule.const(np.ones(n, np.int32))
    counts = rule.op("SCATTER_ND", [rule.reshape(slot, [n, 1]), ones, rule.const([k], np.int32)], [k], _I32)
    for index, written in enumerate((values, indices, slot, counts)[: len(node.outputs)]):
        if node.outputs[index] is not None and node.outputs[index].name:
            rule.finish(written, index)


# -- einsum ---------------------------------------------------------------------------------------


def einsum(lw: Lowering, node: ir.Node) -> None:
    """Einsum (one or two operands) -> SELECT_V2, SUM, TRANSPOSE, RESHAPE, BATCH_MATMUL (module docstring)."""
    equation = _attr_str(node, "equation", "").replace(" ", "")
    rule = _Rule(lw, node)
    operands = [rule.data(i) for i in range(len(node.inputs))]
    # A one-element operand under a letterless term is a scalar (0-d inputs can arrive as [1]).
    letters = equation.partition("->")[0].split(",")
    operands = [
        rule.reshape(t, []) if i < len(letters) and letters[i] == "" and int(np.prod(t.shape)) == 1 else t
        for i, t in enumerate(operands)
    ]
    terms, output = _parse_einsum(node, equation, [t.shape for t in operands])
    if len(operands) > 2:
        raise unsupported(node, f"Einsum {equation!r} with {len(operands)} operands (qcc lowers one or two)")
    if any(t.dtype != _F32 for t in operands):
        raise unsupported(node, f"Einsum {equation!r} on {operands[0].dtype} (qcc lowers float32)")
    sizes: dict[str, int] = {}
    for term, t in zip(terms, operands, strict=True):
        for letter, dim in zip(term, t.shape, strict=True):
            if sizes.setdefault(letter, dim) != dim:
                raise unsupported(node, f"Einsum {equation!r}: {letter!r} is {sizes[letter]} and {dim} (broadcast)")
    diagonals = [_diagonal(rule, term, t) for term, t in zip(terms, operands, strict=True)]
    terms, operands = [d[0] for d in diagonals], [d[1] for d in diagonals]
    # Letters in one operand only and not in the output are summed away first.
    reduced = []
    for n, (term, t) in enumerate(zip(terms, operands, strict=True)):
        others = set(output).union(*(terms[m] for m in range(len(terms)) if m != n))
        gone = [a for a, letter in enumerate(term) if letter not in others]
        if gone:
            shape = [d for a, d in enumerate(t.shape) if a not in gone]
            t = rule.op("SUM", [t, rule.const(gone, np.int32)], shape, options="ReducerOptions", keep_dims=False)
            term = "".join(letter for a, letter in enumerate(term) if a not in gone)
        reduced.append((term, t))
    if len(reduced) == 1:
        term, t = reduced[0]
        result, order = t, term
    else:
        (ta, a), (tb, b) = reduced
        batch = [c for c in ta if c in tb and c in output]
        contracted = [c for c in ta if c in tb and c not in output]
        free_a = [c for c in ta if c not in tb]
        free_b = [c for c in tb if c not in ta]
        size = lambda letters: int(np.prod([sizes[c] for c in letters]))  # noqa: E731
        bsz, m, k, n = size(batch), size(free_a), size(contracted), size(free_b)
        a = rule.transpose(a, [ta.index(c) for c in batch + free_a + contracted])
        b = rule.transpose(b, [tb.index(c) for c in batch + contracted + free_b])
        a = rule.reshape(a, [bsz, m, k])
        b = rule.reshape(b, [bsz, k, n])
        product = rule.op("BATCH_MATMUL", [a, b], [bsz, m, n], options="BatchMatMulOptions", adj_x=False, adj_y=False)
        order = "".join(batch + free_a + free_b)
        result = rule.reshape(product, [sizes[c] for c in order])
    if sorted(order) != sorted(output):
        raise unsupported(node, f"Einsum {equation!r} (an output letter missing from the operands)")
    rule.finish(rule.transpose(result, [order.index(c) for c in output]))


def _diagonal(rule: _Rule, term: str, t: Tensor) -> tuple[str, Tensor]:
    """A term with a repeated letter (``ii``) -> its diagonal: SELECT_V2(eye, t, 0) summed over the repeat."""
    while len(set(term)) != len(term):
        letter = next(c for c in term if term.count(c) > 1)
        first, second = term.index(letter), term.index(letter, term.index(letter) + 1)
        if len(t.shape) > _MAX_SELECT_RANK:
            raise unsupported(rule.node, f"an Einsum diagonal of a rank-{len(t.shape)} operand (SELECT_V2 takes 5-D)")
        n = t.shape[first]
        mask_shape = [1] * len(t.shape)
        mask_shape[first] = mask_shape[second] = n
        mask = np.eye(n, dtype=bool).reshape(mask_shape)
        kept = rule.op("SELECT_V2", [rule.const(mask), t, rule.const(0.0, np.float32)], t.shape)
        shape = [d for a, d in enumerate(t.shape) if a != second]
        t = rule.op("SUM", [kept, rule.const([second], np.int32)], shape, options="ReducerOptions", keep_dims=False)
        term = term[:second] + term[second + 1 :]
    return term, t


def _parse_einsum(node: ir.Node, equation: str, shapes) -> tuple[list[str], str]:
    """The operand terms and the output term with ``...`` spelled out as unused capital letters."""
    if not re.fullmatch(r"[a-zA-Z.,]*(->[a-zA-Z.]*)?", equation):
        raise unsupported(node, f"Einsum equation {equation!r}")
    left, arrow, right = equation.partition("->")
    terms = left.split(",")
    if len(terms) != len(shapes):
        raise unsupported(node, f"Einsum {equation!r} for {len(shapes)} operands")
    spare = [c for c in string.ascii_uppercase + string.ascii_lowercase if c not in equation]
    ellipsis_rank = max(
        (len(s) - len(t.replace("...", "")) for t, s in zip(terms, shapes, strict=True) if "..." in t), default=0
    )
    fill = "".join(spare[:ellipsis_rank])
    expanded = []
    for term, s in zip(terms, shapes, strict=True):
        if "..." in term:
            own = len(s) - len(term.replace("...", ""))
            term = term.replace("...", fill[ellipsis_rank - own :])
        if len(term) != len(s):
            raise unsupported(node, f"Einsum {equation!r}: term {term!r} for a rank-{len(s)} operand")
        expanded.append(term)
    if arrow:
        output = right.replace("...", fill)
    else:
        letters = "".join(expanded)
        output = fill + "".join(sorted(c for c in set(letters) if letters.count(c) == 1 and c not in fill))
    return expanded, output


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
