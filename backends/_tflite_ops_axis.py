"""TFLite lowering rules along one axis: ArgMax/ArgMin, TopK, CumSum and CumProd.

Rewrites where TFLite has no single builtin:

* ``ArgMax(select_last_index=1)``: ``n - 1 - ARG_MAX(REVERSE_V2(x))``; keepdims by RESHAPE.
* ``TopK`` on axis ``a``: TOPK_V2 works on the last axis, so TRANSPOSE swaps ``a`` there and back;
  ``largest=0`` is ``-TOPK_V2(-x)`` (ties keep the lower index first in both).
* ``CumProd`` on an axis of length ``n``: ``REDUCE_PROD_j(SELECT_V2(M, x[j], 1))`` with the
  constant ``[n, n]`` mask ``M[i, j] = j <= i`` (``j < i`` exclusive, ``>=``/``>`` reversed); a
  run-time axis computes every axis and SELECT_V2 keeps the one it names. CumSum is CUMSUM.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_rule import BOOL, F32, I32, I64, MAX_PAIRWISE_ELEMENTS, MAX_SELECT_RANK, Rule
from qcc.backends._tflite_ops_window import unsupported
from qcc.backends._tflite_writer import TENSOR_TYPES, Tensor
from qcc.irutils import attr_int, const_array


def arg_extreme(lw: Lowering, node: ir.Node) -> None:
    """ArgMax/ArgMin -> ARG_MAX/ARG_MIN (int64 out); keepdims by RESHAPE; last index by REVERSE_V2."""
    rule = Rule(lw, node)
    x = rule.data(0)
    axis = attr_int(node, "axis", 0) % len(x.shape)
    reduced = [d for i, d in enumerate(x.shape) if i != axis]
    axis_t = rule.const([axis], np.int32)
    last = attr_int(node, "select_last_index", 0)
    source = rule.op("REVERSE_V2", [x, axis_t], x.shape, x.dtype, "ReverseV2Options") if last else x
    name = "ARG_MAX" if node.op_type == "ArgMax" else "ARG_MIN"
    options = "ArgMaxOptions" if name == "ARG_MAX" else "ArgMinOptions"
    index = rule.op(name, [source, axis_t], reduced, I64, options, output_type=TENSOR_TYPES[I64])
    if last:
        index = rule.op("SUB", [rule.const(x.shape[axis] - 1, np.int64), index], reduced, I64, "SubOptions")
    rule.finish(index)


def top_k(lw: Lowering, node: ir.Node) -> None:
    """TopK -> TOPK_V2 on the last axis (TRANSPOSE for another, NEG for the smallest)."""
    rule = Rule(lw, node)
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
    indices = rule.tensor(shape, I32)
    lw.op("TOPK_V2", [inner, rule.const(k, np.int32)], [values, indices], "TopKV2Options", source=node.name)
    if not largest:
        values = rule.op("NEG", [values], shape, values.dtype, "NegOptions", quant=values.quant)
    rule.finish(rule.transpose(values, perm), 0)
    rule.finish(rule.transpose(indices, perm), 1)


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
    rule = Rule(lw, node)
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
    rule = Rule(lw, node)
    x = rule.data(0)
    if x.dtype not in (F32, I32, I64):
        raise unsupported(node, f"a {x.dtype} CumProd (REDUCE_PROD in qcc takes float32, int32 and int64)")
    rank = len(x.shape)
    if const_array(node.inputs[1]) is not None or rank == 1:
        rule.finish(_cumprod_along(rule, x, _axis_input(node, rank)))
        return
    if rank > MAX_SELECT_RANK:
        raise unsupported(node, f"a run-time axis on a rank-{rank} input")
    axis = rule.reshape(rule.int32(1), [])
    axis = rule.op("FLOOR_MOD", [axis, rule.const(rank, np.int32)], [], I32, "FloorModOptions")
    result = _cumprod_along(rule, x, rank - 1)
    for a in reversed(range(rank - 1)):
        chosen = rule.op("EQUAL", [axis, rule.const(a, np.int32)], [], BOOL, "EqualOptions")
        candidate = _cumprod_along(rule, x, a)
        result = rule.op("SELECT_V2", [chosen, candidate, result], x.shape, x.dtype, "SelectV2Options")
    rule.finish(result)


def _cumprod_along(rule: Rule, x: Tensor, axis: int) -> Tensor:
    node = rule.node
    n = x.shape[axis]
    if int(np.prod(x.shape)) * n > MAX_PAIRWISE_ELEMENTS:
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
