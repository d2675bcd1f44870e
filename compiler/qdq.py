"""Materialize annotations as QuantizeLinear/DequantizeLinear nodes (shared by ONNX targets).

Works on a clone of the annotated model; the input model is never touched. Core (it imports no
pass and no backend): the simulation and the refit run its output in ONNX Runtime, and the ONNX
backends (``ort``, ``trt``) write it (``backends/_onnx_artifact.py``).

* A constant (weight, int32 bias, constant activation) is stored as integers behind one
  DequantizeLinear that feeds only the quantized nodes reading it; float consumers keep the float
  constant.
* A computed activation gets ``Q -> DQ`` right after its producer (or at the top for a graph
  input) and every reader, float or int8, reads the DQ output. Graph outputs keep their names:
  the DQ output takes the name, the float tensor is renamed.
* Absorbed activations (Relu/Clip) are removed unless the target keeps them; their output's
  parameters move to the producer's output.
"""

from __future__ import annotations

import onnx_ir as ir
import onnx_ir.passes.common as common

from qcc.annotations import Decision, Role, TensorQuant, get_decision, get_quant, quantized_values, set_quant
from qcc.irutils import NameAllocator, add_initializer, remove_node_bypassing
from qcc.optable import quantizable_inputs
from qcc.quantmath import quantize


def materialize_qdq(model: ir.Model, *, keep_fused_activations: bool, float_weights: bool = False) -> ir.Model:
    """Returns a new model with Q/DQ nodes for every annotated tensor (see module docstring).

    Args:
        model: the annotated model (not modified).
        keep_fused_activations: keep absorbed Relu/Clip nodes (TensorRT fuses them itself).
        float_weights: store weights as float initializers behind Q -> DQ (TensorRT's default
            form, folded at engine build) instead of integer initializers behind DQ.
    """
    model = model.clone()
    graph = model.graph
    if not keep_fused_activations:
        _remove_absorbed(graph)
    names = NameAllocator(graph)
    front: list[ir.Node] = []
    for value in quantized_values(graph):
        quant = get_quant(value)
        if value.const_value is not None and float_weights and quant.role == Role.WEIGHT:
            front.extend(_qdq_constant(graph, value, quant, names))
        elif value.const_value is not None:
            front.append(_dequantize_constant(graph, value, quant, names))
        else:
            _insert_qdq(graph, value, quant, names, front)
    if front:
        first = next(iter(graph), None)
        if first is None:
            graph.extend(front)
        else:
            graph.insert_before(first, front)
    # The float weights now behind int8 copies are dead; dropping them is what makes the file small.
    common.RemoveUnusedNodesPass()(model)
    return model


def _remove_absorbed(graph: ir.Graph) -> None:
    for node in list(graph):
        decision = get_decision(node)
        if decision is None or decision.decision != Decision.FUSED:
            continue
        out = node.outputs[0]
        quant, name = get_quant(out), out.name
        source = node.inputs[0]
        if remove_node_bypassing(graph, node):
            # The producer's output now stands for the activation's: same values, same name.
            set_quant(source, quant)
            out.name = None
            source.name = name


def _params(graph: ir.Graph, base: str, quant: TensorQuant, names: NameAllocator) -> tuple[ir.Value, ir.Value]:
    scale = add_initializer(graph, names.new(f"{base}_scale"), quant.scale.astype("float32"), exact=True)
    zero_point = add_initializer(
        graph, names.new(f"{base}_zero_point"), quant.zero_point.astype(quant.dtype.numpy()), exact=True
    )
    return scale, zero_point


def _axis_attrs(quant: TensorQuant) -> dict[str, int]:
    if quant.block_size is not None:
        return {"axis": quant.axis, "block_size": quant.block_size}
    return {"axis": quant.axis} if quant.axis is not None and quant.scale.ndim == 1 else {}


def _dequantize_constant(graph: ir.Graph, value: ir.Value, quant: TensorQuant, names: NameAllocator) -> ir.Node:
    base = value.name
    data = quantize(value.const_value.numpy(), quant.scale, quant.zero_point, quant.axis, quant.dtype, quant.block_size)
    q_value = add_initializer(graph, names.new(f"{base}_quantized"), data, exact=True)
    scale, zero_point = _params(graph, base, quant, names)
    dq = ir.node(
        "DequantizeLinear",
        [q_value, scale, zero_point],
        attributes=_axis_attrs(quant),
        name=names.new(f"{base}_DequantizeLinear"),
    )
    _rewire_int8_uses(value, dq.outputs[0], names, base)
    return dq


def _qdq_constant(graph: ir.Graph, value: ir.Value, quant: TensorQuant, names: NameAllocator) -> list[ir.Node]:
    base = value.name
    scale, zero_point = _params(graph, base, quant, names)
    q = ir.node(
        "QuantizeLinear",
        [value, scale, zero_point],
        attributes=_axis_attrs(quant),
        name=names.new(f"{base}_QuantizeLinear"),
    )
    q.outputs[0].name = names.new(f"{base}_quantized")
    q.outputs[0].type, q.outputs[0].shape = ir.TensorType(quant.dtype), value.shape
    dq = ir.node(
        "DequantizeLinear",
        [q.outputs[0], scale, zero_point],
        attributes=_axis_attrs(quant),
        name=names.new(f"{base}_DequantizeLinear"),
    )
    _rewire_int8_uses(value, dq.outputs[0], names, base)
    return [q, dq]


def _rewire_int8_uses(value: ir.Value, out: ir.Value, names: NameAllocator, base: str) -> None:
    """Points the int8 nodes reading a constant at its dequantized form; float readers keep it."""
    out.name = names.new(f"{base}_dequantized")
    out.type, out.shape = ir.TensorType(ir.DataType.FLOAT), value.shape
    for use in list(value.uses()):
        decision = get_decision(use.node)
        quantized = decision is not None and decision.decision in (Decision.INT8, Decision.WEIGHT_ONLY)
        if quantized and use.idx in quantizable_inputs(use.node):
            use.node.replace_input_with(use.idx, out)


def _insert_qdq(
    graph: ir.Graph, value: ir.Value, quant: TensorQuant, names: NameAllocator, front: list[ir.Node]
) -> None:
    base = value.name
    scale, zero_point = _params(graph, base, quant, names)
    q = ir.node("QuantizeLinear", [value, scale, zero_point], name=names.new(f"{base}_QuantizeLinear"))
    q.outputs[0].name = names.new(f"{base}_quantized")
    q.outputs[0].type, q.outputs[0].shape = ir.TensorType(quant.dtype), value.shape
    dq = ir.node("DequantizeLinear", [q.outputs[0], scale, zero_point], name=names.new(f"{base}_DequantizeLinear"))
    out = dq.outputs[0]
    out.type, out.shape = ir.TensorType(ir.DataType.FLOAT), value.shape
    was_output = value.is_graph_output()
    uses = [u for u in value.uses() if u.node is not q]
    for use in uses:
        use.node.replace_input_with(use.idx, out)
    if was_output:
        for i, o in enumerate(graph.outputs):
            if o is value:
                graph.outputs[i] = out
        value.name = names.new(f"{base}_float")
        out.name = base
    else:
        out.name = names.new(f"{base}_dequantized")
    producer = value.producer()
    if producer is None:
        front.extend([q, dq])
    else:
        graph.insert_after(producer, [q, dq])
