"""TFLite lowering rule for Det: Leibniz's formula over a constant table of permutations.

``det(A) = sum over permutations p of sign(p) * prod_i A[i, p(i)]``. With the ``n x n`` matrices
flattened to ``[B, n*n]``, one GATHER (axis 1) of the constant index table ``[n!, n]`` (entry
``i*n + p(i)``) gives every product's factors ``[B, n!, n]``; REDUCE_PROD over the last axis, a
MUL by the constant signs and a SUM over the permutations give ``[B]``, reshaped to the batch
shape. That is the closed form for 1x1 (one term), 2x2 (``ad - bc``) and 3x3 (six terms), and
stays short up to ``_MAX_ORDER``; larger matrices are refused (n! terms, and cancellation in
float32 without pivoting).
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_rule import F32, Rule
from qcc.backends._tflite_ops_window import unsupported

# The largest matrix order Det is expanded for (4! = 24 products of 4 factors).
_MAX_ORDER = 4


def _permutations(order: int) -> tuple[np.ndarray, np.ndarray]:
    """The flat factor indices ``[n!, n]`` and signs ``[n!]`` of Leibniz's formula."""
    rows, signs = [], []
    for perm in itertools.permutations(range(order)):
        inversions = sum(1 for i in range(order) for j in range(i + 1, order) if perm[i] > perm[j])
        rows.append([i * order + p for i, p in enumerate(perm)])
        signs.append(-1.0 if inversions % 2 else 1.0)
    return np.array(rows, np.int32), np.array(signs, np.float32)


def det(lw: Lowering, node: ir.Node) -> None:
    """Det -> GATHER, REDUCE_PROD, MUL, SUM (module docstring)."""
    rule = Rule(lw, node)
    x = rule.data(0)
    if len(x.shape) < 2 or x.shape[-1] != x.shape[-2]:
        raise unsupported(node, f"an input shaped {list(x.shape)} (Det takes square matrices [..., n, n])")
    order = x.shape[-1]
    if order > _MAX_ORDER:
        raise unsupported(
            node,
            f"a {order}x{order} determinant: qcc expands Leibniz's formula up to {_MAX_ORDER}x{_MAX_ORDER} and TFLite "
            "has no LU decomposition builtin",
        )
    batch = int(np.prod(x.shape[:-2]))
    table, signs = _permutations(order)
    flat = rule.reshape(x, [batch, order * order])
    factors = rule.op(
        "GATHER", [flat, rule.const(table)], [batch, *table.shape], F32, "GatherOptions", axis=1, batch_dims=0
    )
    last = rule.const(np.array([2], np.int32))
    products = rule.op("REDUCE_PROD", [factors, last], [batch, len(signs)], F32, "ReducerOptions", keep_dims=False)
    signed = rule.op("MUL", [products, rule.const(signs)], [batch, len(signs)], F32, "MulOptions")
    total = rule.op(
        "SUM", [signed, rule.const(np.array([1], np.int32))], [batch], F32, "ReducerOptions", keep_dims=False
    )
    rule.finish(rule.reshape(total, list(x.shape[:-2])))


LOWERINGS = {"Det": det}
