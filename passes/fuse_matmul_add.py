"""Fuse ``MatMul(A, B) + C`` into ``Gemm(A, B, C)`` where that is legal.

Gemm computes ``A @ B + C`` for rank-2 ``A``; with ``B`` a constant (K, N) matrix and ``C`` a
constant broadcastable to (N,), the pair is exactly one Gemm. That matters for quantization: the
bias becomes an int32 input of one integer kernel (ONNX Runtime's QGemm) instead of a separate
quantized Add. Conditions: ``A`` is known to be rank 2, the MatMul output feeds only the Add and
is not a graph output, ``C`` has at most N elements along its last axis and no other non-unit axis.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from qcc.irutils import add_initializer, const_array, take_over
from qcc.passes._base import QccPass

logger = logging.getLogger(__name__)


class FuseMatMulAddPass(QccPass):
    """Rewrites MatMul followed by a bias Add into Gemm (see module docstring)."""

    name = "fuse-matmul-add"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for add in list(graph):
            if add.op_type == "Add" and add.domain == "" and _fuse(graph, add):
                modified = True
        return ir.passes.PassResult(model, modified)


def _fuse(graph: ir.Graph, add: ir.Node) -> bool:
    for mm_index in (0, 1):
        mm_out = add.inputs[mm_index]
        matmul = mm_out.producer() if mm_out is not None else None
        if matmul is None or matmul.op_type != "MatMul" or matmul.domain != "":
            continue
        a, b = matmul.inputs
        weight = const_array(b)
        bias = const_array(add.inputs[1 - mm_index])
        if weight is None or bias is None or weight.ndim != 2 or not np.all(np.isfinite(bias)):
            continue
        if a is None or a.shape is None or len(a.shape) != 2:
            continue
        if len(mm_out.uses()) != 1 or mm_out.is_graph_output():
            continue
        n = weight.shape[1]
        if bias.size not in (1, n) or (bias.ndim >= 1 and bias.shape[-1] not in (1, n)):
            continue
        if bias.ndim > 1 and any(d != 1 for d in bias.shape[:-1]):
            continue
        bias_n = np.broadcast_to(bias.reshape(-1), (n,)).astype(weight.dtype)
        c = add_initializer(graph, f"{matmul.name or 'matmul'}_bias", bias_n)
        gemm = ir.node("Gemm", [a, b, c], name=matmul.name)
        graph.insert_before(matmul, gemm)
        take_over(add.outputs[0], gemm.outputs[0])
        graph.remove([add, matmul], safe=True)
        logger.debug("fused %s + %s into Gemm", matmul.name, add.name)
        return True
    return False


