"""Target constraints: bend the activation parameters to what the target's int8 kernels require.

Runs after ``activation-qparams`` (every activation has a scale and zero point; groups of
``shared_with`` links and ``shared_group_ops`` share one set) and before ``quantize-bias`` (which
derives bias scales from the final input scales). Driven by the spec:

* ``fixed_output_params``: the output of a quantized op with a fixed output quantization
  (TFLite Softmax and Logistic: ``1/256``, zero point -128; Tanh: ``1/128``, 0) takes those
  parameters instead of its calibrated ones, and so does every tensor that shares its
  parameters through ``shared_with`` (a Reshape of a Softmax output).
* ``shared_group_ops`` (Concat on TFLite): a fixed output breaks its group, so any input of such
  an op whose parameters now differ from the output's is fed through an ``Identity`` that
  requantizes to the output's parameters; the TFLite backend writes it as an int8 -> int8
  QUANTIZE and the ORT simulation as Q/DQ, so both compute the same numbers.

For a spec without fixed outputs (``ort``, ``trt``) the pass changes nothing.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from qcc.annotations import (
    Decision,
    Role,
    Stage,
    TensorQuant,
    get_decision,
    get_quant,
    quantized_values,
    set_decision,
    set_quant,
)
from qcc.irutils import unique_name
from qcc.passes._base import QccPass
from qcc.quantmath import qrange

logger = logging.getLogger(__name__)


class TargetConstraintsPass(QccPass):
    """Applies fixed output parameters and repairs shared groups (see module docstring)."""

    name = "target-constraints"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        spec = self.ctx.target
        if not spec.fixed_output_params:
            return ir.passes.PassResult(model, False)
        graph = model.graph
        sharers: dict[str, list[ir.Value]] = {}
        for value in quantized_values(graph):
            if get_quant(value).shared_with is not None:
                sharers.setdefault(get_quant(value).shared_with, []).append(value)
        modified = False
        for node in graph:
            if node.op_type not in spec.fixed_output_params or not _is_int8(node):
                continue
            carrier = _carrier(node.outputs[0])
            if get_quant(carrier) is None:
                continue
            scale, zero_point = spec.fixed_output_params[node.op_type]
            pending = [carrier]
            while pending:
                value = pending.pop()
                quant = get_quant(value)
                shift = qrange(quant.dtype)[0] + 128
                quant.scale = np.array(scale, dtype=np.float32)
                quant.zero_point = np.array(zero_point + shift, dtype=quant.dtype.numpy())
                pending.extend(sharers.get(value.name, []))
            modified = True
        for node in list(graph):
            if node.op_type in spec.shared_group_ops and _is_int8(node):
                modified |= self._repair_group(graph, node)
        return ir.passes.PassResult(model, modified)

    def _repair_group(self, graph: ir.Graph, node: ir.Node) -> bool:
        target = get_quant(_carrier(node.outputs[0]))
        if target is None:
            return False
        modified = False
        for index, value in enumerate(node.inputs):
            quant = get_quant(value) if value is not None else None
            if quant is None or _same(quant, target):
                continue
            self._requantize(graph, node, index, target)
            modified = True
        return modified

    def _requantize(self, graph: ir.Graph, consumer: ir.Node, index: int, target: TensorQuant) -> None:
        source = consumer.inputs[index]
        name = unique_name(graph, f"{source.name}_requantized")
        node = ir.node("Identity", [source], name=name)
        out = node.outputs[0]
        out.name, out.type, out.shape = name, source.type, source.shape
        set_quant(
            out,
            TensorQuant(
                Role.ACTIVATION,
                target.dtype,
                target.symmetric,
                stage=Stage.FINAL,
                scale=target.scale.copy(),
                zero_point=target.zero_point.copy(),
            ),
        )
        set_decision(node, Decision.INT8, f"requantizes to the parameters {consumer.name} shares with its inputs")
        graph.insert_before(consumer, node)
        consumer.replace_input_with(index, out)
        logger.debug("requantize %s before %s", source.name, consumer.name)


def _is_int8(node: ir.Node) -> bool:
    decision = get_decision(node)
    return decision is not None and decision.decision == Decision.INT8


def _carrier(value: ir.Value) -> ir.Value:
    """The value holding ``value``'s parameters: itself, or an absorbed activation's output."""
    if get_quant(value) is None:
        consumers = value.consumers()
        if len(consumers) == 1 and getattr(get_decision(consumers[0]), "decision", None) == Decision.FUSED:
            return consumers[0].outputs[0]
    return value


def _same(a: TensorQuant, b: TensorQuant) -> bool:
    return bool(np.array_equal(a.scale, b.scale) and np.array_equal(a.zero_point, b.zero_point))
