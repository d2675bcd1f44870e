"""TFLite lowering rules for Gemm and MatMul: FULLY_CONNECTED and BATCH_MATMUL.

Gemm is ``Y = alpha * A' @ B' + beta * C`` (``A' = A^T`` with transA, ``B' = B^T`` with transB).
With a constant B, alpha 1, no transA and C absent or a constant vector (one value per output
channel, or one for all, with beta 1) it is FULLY_CONNECTED with ``[N, K]`` weights (TFLITE.md §4) and C as the
bias; otherwise BATCH_MATMUL(A, B, adj_x=transA, adj_y=transB), MUL alpha, ADD beta * C in float.

MatMul is FULLY_CONNECTED for a constant 1-D/2-D B, BATCH_MATMUL otherwise. A 1-D A is ``[1, K]``
and a 1-D B ``[K, 1]`` (numpy's rule); a RESHAPE drops the unit dimension from the result.

Where TFLite has no int8 kernel for what an int8 node needs (BATCH_MATMUL with per-channel
weights, Gemm with transA/alpha/beta), the rule computes in float on the dequantized operands
(``DQ(Q(.))``, what the simulation reads) and QUANTIZEs the result, which is the simulation's
``DQ -> op -> Q``.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.annotations import get_quant
from qcc.backends._tflite_lower import ACT_NONE, ACT_RELU, ACT_RELU6, ACT_RELU_N1_TO_1, FUSED_KEY, Lowering, shape_of
from qcc.backends._tflite_ops_window import dequantized, float_result, fused_code, quantize_result
from qcc.backends._tflite_writer import Quant, Tensor
from qcc.irutils import attr_float, attr_int, const_array
from qcc.quantmath import quantize


def gemm(lw: Lowering, node: ir.Node) -> None:
    """Gemm -> FULLY_CONNECTED with [N, K] weights for a constant B (alpha 1, no transA, C a vector).

    Otherwise BATCH_MATMUL(A, B, adj_x=transA, adj_y=transB), MUL alpha, ADD beta * C in float;
    an int8 node computes that on its dequantized inputs and QUANTIZEs the result, which is the
    simulation's DQ -> Gemm -> Q.
    """
    trans_a, trans_b = attr_int(node, "transA", 0), attr_int(node, "transB", 0)
    alpha, beta = attr_float(node, "alpha", 1.0), attr_float(node, "beta", 1.0)
    c = node.inputs[2] if len(node.inputs) > 2 else None
    c_array = const_array(c) if c is not None else None
    channels = shape_of(node.inputs[1])[0 if trans_b else 1]
    vector_c = c is None or (c_array is not None and beta == 1.0 and _is_vector(c_array.shape, channels))
    if not trans_a and alpha == 1.0 and const_array(node.inputs[1]) is not None and vector_c:
        _fully_connected(lw, node, (lambda a: a) if trans_b else (lambda a: a.T.copy()), 2)
        return
    y = lw.output(node)
    result = float_result(lw, node, y)
    steps = [("BATCH_MATMUL", [dequantized(lw, node, 0), dequantized(lw, node, 1)], "BatchMatMulOptions",
              {"adj_x": bool(trans_a), "adj_y": bool(trans_b)})]
    if alpha != 1.0:
        steps.append(("MUL", [None, lw.constant(f"{node.name}_alpha", np.array(alpha, np.float32))], "MulOptions", {}))
    if c is not None:
        addend = dequantized(lw, node, 2)
        if beta != 1.0:
            weighted = lw.model.tensor(f"{node.name}_c_beta", addend.shape, np.float32)
            beta_t = lw.constant(f"{node.name}_beta", np.array(beta, np.float32))
            lw.op("MUL", [addend, beta_t], [weighted], "MulOptions", source=node.name)
            addend = weighted
        steps.append(("ADD", [None, addend], "AddOptions", {}))
    # A fused activation (float Gemm + Relu) goes on the last MUL/ADD, or after a lone BATCH_MATMUL.
    code = node.meta.get(FUSED_KEY, ACT_NONE)
    current = None
    for k, (name, inputs, options, fields) in enumerate(steps):
        last = k == len(steps) - 1
        if last and name != "BATCH_MATMUL":
            fields["fused_activation_function"] = code
        out = result if last and (name != "BATCH_MATMUL" or code == ACT_NONE) else lw.model.tensor(
            f"{node.name}_{name.lower()}", y.shape, np.float32)
        lw.op(name, [current if t is None else t for t in inputs], [out], options, source=node.name, **fields)
        current = out
    if current is not result:
        lw.op(_ACTIVATIONS[code], [current], [result], source=node.name)
    quantize_result(lw, node, result, y)


# Standalone ops for the fused activation codes (when the op that would carry one cannot).
_ACTIVATIONS = {ACT_RELU: "RELU", ACT_RELU_N1_TO_1: "RELU_N1_TO_1", ACT_RELU6: "RELU6"}


def _is_vector(shape: tuple[int, ...], channels: int) -> bool:
    """True if a Gemm C of ``shape`` is one value per output channel, or one value for all."""
    size = int(np.prod(shape)) if shape else 1
    return size == 1 or (size == channels and (len(shape) == 1 or shape[-1] == channels))


def matmul(lw: Lowering, node: ir.Node) -> None:
    """MatMul -> FULLY_CONNECTED for a constant 1-D/2-D B, BATCH_MATMUL otherwise.

    A 1-D A is ``[1, K]`` and a 1-D B ``[K, 1]`` (numpy's rule); the unit dimension is dropped
    from the result by a RESHAPE. An int8 MatMul with a constant B of rank > 2 runs float on
    the dequantized operands and QUANTIZEs its result.
    """
    a_shape, b_shape = shape_of(node.inputs[0]), shape_of(node.inputs[1])
    constant_b = const_array(node.inputs[1]) is not None
    if constant_b and len(b_shape) in (1, 2):
        _fully_connected(lw, node, lambda a: a.reshape(1, -1) if a.ndim == 1 else a.T.copy(), None)
        return
    int8_weights = constant_b and lw.is_int8(node)
    if int8_weights:
        # BATCH_MATMUL takes per-tensor int8 operands and the plan quantizes B per channel:
        # float on the dequantized operands, as the simulation computes it (DQ -> MatMul -> Q).
        a_t, b_t = dequantized(lw, node, 0), dequantized(lw, node, 1)
    else:
        a_t, b_t = lw.input(node, 0), lw.input(node, 1)
    y = lw.output(node)
    result = float_result(lw, node, y) if int8_weights else y
    if len(a_shape) == 1:
        a_t = lw.reshape(a_t, lw.model.tensor(f"{a_t.name}_row", (1, a_shape[0]), a_t.dtype, quant=a_t.quant),
                         node.name)
    if len(b_shape) == 1:
        b_t = lw.reshape(b_t, lw.model.tensor(f"{b_t.name}_column", (b_shape[0], 1), b_t.dtype, quant=b_t.quant),
                         node.name)
    batch = np.broadcast_shapes(a_t.shape[:-2], b_t.shape[:-2])
    full = (*batch, a_t.shape[-2], b_t.shape[-1])
    out = result
    if tuple(full) != tuple(y.shape):
        out = lw.model.tensor(f"{node.name}_full", full, result.dtype, quant=result.quant)
    lw.op("BATCH_MATMUL", [a_t, b_t], [out], "BatchMatMulOptions", source=node.name, adj_x=False, adj_y=False)
    if out is not result:
        lw.reshape(out, result, node.name)
    quantize_result(lw, node, result, y)


def _fully_connected(lw: Lowering, node: ir.Node, transform, bias_index) -> None:
    x = lw.input(node, 0)
    if len(x.shape) == 1:
        x = lw.reshape(x, lw.model.tensor(f"{x.name}_row", (1, x.shape[0]), x.dtype, quant=x.quant), node.name)
    w = lw.weight(node, 1, transform, axis=0)
    channels = w.shape[0]
    b = _vector_bias(lw, node, bias_index, channels, x, w) if bias_index is not None else -1
    y = lw.output(node)
    keep = len(x.shape) > 2
    full = (*x.shape[:-1], channels) if keep else (int(np.prod(x.shape[:-1])), channels)
    out = y if tuple(full) == tuple(y.shape) else lw.model.tensor(f"{node.name}_full", full, y.dtype, quant=y.quant)
    lw.op(
        "FULLY_CONNECTED",
        [x, w, b],
        [out],
        "FullyConnectedOptions",
        source=node.name,
        fused_activation_function=fused_code(node, "FULLY_CONNECTED"),
        keep_num_dims=keep,
    )
    if out is not y:
        lw.reshape(out, y, node.name)


def _vector_bias(lw: Lowering, node: ir.Node, index: int, channels: int, x: Tensor, w: Tensor) -> Tensor | int:
    """The FULLY_CONNECTED bias: ``channels`` values (LiteRT checks it), a one-value C broadcast."""
    value = node.inputs[index] if len(node.inputs) > index else None
    array = const_array(value) if value is not None else None
    if array is None or array.size == channels:
        return lw.bias(node, index, channels, x, w)
    full = np.broadcast_to(np.asarray(array).reshape(-1), (channels,))
    if not lw.is_int8(node):
        return lw.constant(f"{value.name}_{channels}", full.astype(np.float32))
    quant = get_quant(value)
    width = channels if w.quant.scale.size > 1 else 1
    scale = np.broadcast_to(np.asarray(quant.scale, np.float32).reshape(-1), (width,)).copy()
    data = quantize(full, scale, np.zeros(width, np.int32), 0, ir.DataType.INT32)
    return lw.constant(f"{value.name}_{channels}", data, Quant(scale, np.zeros(width, np.int64), 0))
