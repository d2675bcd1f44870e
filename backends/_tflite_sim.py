"""The integer-exact simulation of a tflite artifact: what LiteRT's int8 kernels compute, in ONNX.

The QDQ simulation computes each int8 Conv/Gemm/MatMul as ``Q(op(DQ(x), DQ(w)) + DQ(b))`` in
float32, so the float accumulation lands on the other side of a rounding tie on about one output
in 10^5. XNNPACK computes the exact int32 accumulation and requantizes once::

    acc = sum((x_q - z_x) * w_q) + b_q                      # exact integers
    y_q = saturate(round_half_even(f32(acc) * m) + z_y)     # m = (f32(s_x) * f32(s_w)) / f32(s_y)

Deep depthwise networks amplify those rare flips layer by layer (MobileNetV2: a single-element
gain of up to 17 steps), so the float simulation is a poor oracle there. This rewrite makes each
such node compute the formula above: ``DQ(x_q, 1, z_x)`` is ``x_q - z_x`` exactly, the op runs on
integer-valued float32 weights and bias (exact while every partial sum stays below 2^24, true for
the accumulations these kernels see), ``Mul(m)`` is XNNPACK's float32 product and
``QuantizeLinear(., 1, z_y)`` its rounding and saturation. Measured on the zoo (LiteRT 2.3.0):
EfficientNet-Lite0's XNNPACK output becomes bit-identical to the simulation (was 98% within one
step). The builtin kernels round twice (a fixed-point multiply, then a rounding shift) and stay
about as far from either simulation.

Works on the materialized simulation in place (a model ``materialize_qdq`` already cloned).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common

from qcc.irutils import NameAllocator, add_initializer, attr_float, attr_int, const_array

_EXACT_OPS = ("Conv", "Gemm", "MatMul")


def integer_exact(model: ir.Model) -> ir.Model:
    """Rewrites every int8 Conv/Gemm/MatMul of a QDQ simulation as integer arithmetic (module docstring).

    Returns:
        The same model, rewritten in place.
    """
    graph = model.graph
    names = NameAllocator(graph)
    for node in list(graph):
        if node.op_type in _EXACT_OPS and node.domain in ("", "ai.onnx"):
            _rewrite(graph, node, names)
    # The float weights and DequantizeLinear nodes the rewritten ops read are dead now.
    common.RemoveUnusedNodesPass()(model)
    return model


def _dequantized(value: ir.Value | None) -> tuple[ir.Node, np.ndarray, np.ndarray] | None:
    """The DequantizeLinear producing ``value`` with its constant scale and zero point, or None."""
    node = value.producer() if value is not None else None
    if node is None or node.op_type != "DequantizeLinear" or len(node.inputs) < 3:
        return None
    scale, zero_point = const_array(node.inputs[1]), const_array(node.inputs[2])
    if scale is None or zero_point is None:
        return None
    return node, scale.astype(np.float32), zero_point


def _rewrite(graph: ir.Graph, node: ir.Node, names: NameAllocator) -> None:
    out = node.outputs[0]
    quantizers = out.consumers()
    if len(quantizers) != 1 or quantizers[0].op_type != "QuantizeLinear" or out.is_graph_output():
        return
    q = quantizers[0]
    if node.op_type == "Gemm" and (attr_float(node, "alpha", 1.0) != 1.0 or attr_float(node, "beta", 1.0) != 1.0):
        return
    x, w = _dequantized(node.inputs[0]), _dequantized(node.inputs[1])
    out_scale = const_array(q.inputs[1])
    if x is None or w is None or out_scale is None or x[1].size != 1 or out_scale.size != 1:
        return
    w_q = const_array(w[0].inputs[0])
    if w_q is None or w_q.dtype != np.int8 or np.any(w[2]):
        return
    bias = None
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        b = _dequantized(node.inputs[2])
        b_q = const_array(b[0].inputs[0]) if b is not None else None
        if b_q is None or b_q.dtype != np.int32:
            return
        bias = b_q
    channels = w_q.shape[_channel_axis(node)]
    # float32 throughout and in XNNPACK's order: another order or double precision flips roundings.
    input_scale, output_scale = np.float32(x[1].reshape(())), np.float32(out_scale.reshape(()))
    multiplier = (input_scale * np.broadcast_to(w[1].reshape(-1), (channels,))) / output_scale
    base = node.name
    one = add_initializer(graph, names.new(f"{base}_unit_scale"), np.array(1.0, np.float32), exact=True)
    centered = ir.node("DequantizeLinear", [x[0].inputs[0], one, x[0].inputs[2]], name=names.new(f"{base}_centered"))
    weight = add_initializer(graph, names.new(f"{base}_integer_weight"), w_q.astype(np.float32), exact=True)
    inputs = [centered.outputs[0], weight]
    if bias is not None:
        inputs.append(add_initializer(graph, names.new(f"{base}_integer_bias"), bias.astype(np.float32), exact=True))
    accumulate = ir.node(node.op_type, inputs, attributes=node.attributes, name=names.new(f"{base}_integer"))
    # Per output channel: axis 1 of a Conv output (C, then spatial axes), the last axis otherwise.
    shape = [channels] + [1] * (w_q.ndim - 2) if node.op_type == "Conv" else [channels]
    multiplier = add_initializer(graph, names.new(f"{base}_multiplier"), multiplier.reshape(shape), exact=True)
    scaled = ir.node("Mul", [accumulate.outputs[0], multiplier], name=names.new(f"{base}_requantize"))
    for step in (centered, accumulate, scaled):
        step.outputs[0].name = names.new(f"{step.name}_out")
    graph.insert_before(node, [centered, accumulate, scaled])
    q.replace_input_with(0, scaled.outputs[0])
    q.replace_input_with(1, one)
    graph.remove(node, safe=True)


def _channel_axis(node: ir.Node) -> int:
    """The output-channel axis of the node's (ONNX-layout) weight."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        return 0 if attr_int(node, "transB", 0) else 1
    return 1
