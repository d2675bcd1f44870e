"""Materialize ``--dynamic`` MatMul/Gemm nodes: int8 weights, activations quantized at run time.

Each planned node ``y = alpha * A @ B + beta * C`` (B a constant ``[K, N]``, after transposing a
``transB`` weight at compile time) becomes the chain ONNX Runtime's CPU EP fuses into one
``DynamicQuantizeMatMul`` kernel, or, when several nodes share the quantized input, into
``MatMulIntegerToFloat`` kernels after one ``DynamicQuantizeLinear`` (``shared/targets/ORT.md`` §7)::

    A_q, s_A, z_A = DynamicQuantizeLinear(A)             # uint8, per tensor, range of this call
    acc  = MatMulInteger(A_q, B_q, z_A, z_B)             # int32, B_q int8, z_B = 0 per column
    y    = Cast<float>(acc) * (s_A * alpha * s_B) + beta * C

so ``y = alpha * (s_A (A_q - z_A)) @ (s_B B_q) + beta * C`` exactly as the float op on the
dequantized operands. ``s_B`` is per column (the weight annotation's axis) or one scale. One
``DynamicQuantizeLinear`` serves every planned node reading the same activation, and one int8 copy
every node reading the same weight.

Works on a clone; the weight annotations of rewritten nodes are consumed here, so the static
Q/DQ materialization that runs next leaves them alone.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.annotations import Decision, get_decision, get_quant, set_quant
from qcc.irutils import NameAllocator, add_initializer, attr_float, attr_int, const_array, take_over
from qcc.optable import WEIGHT_INPUT
from qcc.quantmath import quantize


def materialize_dynamic(model: ir.Model) -> ir.Model:
    """Returns a clone of ``model`` with every planned MatMul/Gemm rewritten (module docstring)."""
    model = model.clone()
    graph = model.graph
    names = NameAllocator(graph)
    quantized_inputs: dict[int, tuple[ir.Value, ir.Value, ir.Value]] = {}
    weights: dict[tuple, tuple[ir.Value, ir.Value, ir.Value]] = {}  # one int8 copy per weight layout
    rewritten: list[ir.Value] = []
    for node in list(graph):
        decision = get_decision(node)
        if decision is None or decision.decision != Decision.INT8 or node.op_type not in ("MatMul", "Gemm"):
            continue
        weight = node.inputs[WEIGHT_INPUT]
        quant = get_quant(weight)
        if quant is None:
            continue
        x = node.inputs[0]
        if id(x) not in quantized_inputs:
            dql = ir.node("DynamicQuantizeLinear", [x], num_outputs=3, name=names.new(f"{node.name}_DynamicQuantize"))
            for out, suffix in zip(dql.outputs, ("quantized", "scale", "zero_point"), strict=True):
                out.name = names.new(f"{x.name}_{suffix}")
            graph.insert_before(node, dql)
            quantized_inputs[id(x)] = tuple(dql.outputs)
        _rewrite(graph, node, _int8_weight(graph, node, weight, quant, weights, names), quantized_inputs[id(x)], names)
        rewritten.append(weight)
    for weight in rewritten:  # after the loop: a weight may feed several planned nodes
        set_quant(weight, None)
    return model


def _int8_weight(graph, node, weight, quant, cache, names) -> tuple[ir.Value, ir.Value, ir.Value]:
    """The weight as int8 ``[K, N]`` with its zero points and scales (alpha folded in), made once
    per weight and layout."""
    trans_b = node.op_type == "Gemm" and bool(attr_int(node, "transB", 0))
    alpha = attr_float(node, "alpha", 1.0) if node.op_type == "Gemm" else 1.0
    key = (id(weight), trans_b, alpha)
    if key not in cache:
        w = const_array(weight).astype(np.float32)
        axis = quant.axis
        if trans_b:
            w = w.T
            axis = None if axis is None else 1 - axis
        w_q = quantize(w, quant.scale, quant.zero_point, axis, quant.dtype)
        w_scale = np.asarray(quant.scale, np.float32) * np.float32(alpha)
        zeros = np.zeros(w_scale.shape, np.int8)  # symmetric weights, per column or one
        cache[key] = (
            add_initializer(graph, names.new(f"{weight.name}_quantized"), w_q, exact=True),
            add_initializer(graph, names.new(f"{weight.name}_zero_point"), zeros, exact=True),
            add_initializer(graph, names.new(f"{weight.name}_scale"), w_scale, exact=True),
        )
    return cache[key]


def _rewrite(graph, node, weight_parts, x_parts, names) -> None:
    """Replaces one planned node by the integer chain of the module docstring."""
    x_q, x_scale, x_zero_point = x_parts
    w_q_value, w_zero, w_scale_value = weight_parts
    base = node.name
    matmul = ir.node("MatMulInteger", [x_q, w_q_value, x_zero_point, w_zero], name=names.new(f"{base}_MatMulInteger"))
    cast = ir.node("Cast", [matmul.outputs[0]], attributes={"to": ir.DataType.FLOAT}, name=names.new(f"{base}_Cast"))
    scale = ir.node("Mul", [x_scale, w_scale_value], name=names.new(f"{base}_scale_Mul"))
    scaled = ir.node("Mul", [cast.outputs[0], scale.outputs[0]], name=names.new(f"{base}_Mul"))
    chain = [matmul, cast, scale, scaled]
    bias = node.inputs[2] if node.op_type == "Gemm" and len(node.inputs) > 2 else None
    if bias is not None:
        beta = np.float32(attr_float(node, "beta", 1.0))
        c = add_initializer(graph, names.new(f"{bias.name}_scaled"), (const_array(bias) * beta).astype(np.float32))
        chain.append(ir.node("Add", [scaled.outputs[0], c], name=names.new(f"{base}_Add")))
    for step in chain:
        step.outputs[0].name = names.new(f"{step.name}_out")
    graph.insert_before(node, chain)
    take_over(node.outputs[0], chain[-1].outputs[0])
    graph.remove(node, safe=True)
