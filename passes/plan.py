"""Plan: decide which nodes run int8 on the target, which stay float, and why.

The decision is driven by the target's spec (``qcc.backends.base.TargetSpec``):

1. Weighted ops (``compute_ops``: Conv, MatMul, Gemm) are quantized when their data is float32
   and their weights meet the target's kernel rules; otherwise they stay float with the reason.
2. A fixed point grows the quantized regions: an op with an int8 kernel (``int8_ops``: Add,
   Concat, pooling, ...) joins when a neighbour is quantized; a shared-scale op (Reshape, MaxPool,
   ...) joins when its data input is quantized and then reuses that input's parameters; an
   activation in ``fused_activations`` (Relu, Clip) whose producer is quantized and feeds only it
   is absorbed: the producer's output is quantized with the activation's range, which clamps
   exactly as the activation would.
3. Every tensor read or written by a quantized node is annotated (role, dtype, scheme, axis).
   Ops never reached stay float; ``--exclude`` (node name or op type) overrides everything.

The annotations are PLANNED; later passes fill in ranges and parameters.
"""

from __future__ import annotations

import functools
import logging
import weakref

import numpy as np
import onnx_ir as ir

from qcc.annotations import Decision, Role, TensorQuant, get_decision, is_quantized, set_decision, set_quant
from qcc.irutils import attr_float, attr_int, const_array, is_float
from qcc.optable import BIAS_INPUT, WEIGHT_INPUT, quantizable_inputs, weight_axis
from qcc.options import IoType, Precision
from qcc.passes._base import QccPass
from qcc.target import TargetSpec

logger = logging.getLogger(__name__)

# Constants at or beyond this magnitude (float min/max used as masks, inf) are not quantized.
_HUGE = 1e30
# Constant tensor -> whether it holds a value int8 cannot represent. The plan is made again for
# every candidate of a search, and reading a large constant each time (MiniLM's 30522x384
# embedding table) took a sixth of its tflite compile.
_UNREPRESENTABLE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _unrepresentable(value: ir.Value | None) -> bool:
    """The value is a float constant holding a value int8 cannot represent (a -inf mask)."""
    tensor = value.const_value if value is not None else None
    if tensor is None:
        return False
    if tensor not in _UNREPRESENTABLE:
        array = const_array(value)
        _UNREPRESENTABLE[tensor] = bool(array.dtype.kind == "f" and array.size and not np.all(np.abs(array) < _HUGE))
    return _UNREPRESENTABLE[tensor]


class PlanPass(QccPass):
    """Annotates every node with a decision and every quantized tensor with its scheme.

    Args:
        ctx: the compile context.
        node_reasons: node -> why the node alone keeps it float (its op, types, constants, the
            target's rule), or None; filled as the plan goes. Mixed precision plans one graph for
            every candidate float set and shares it: only ``--exclude`` and the float set differ
            from one of those plans to the next.
    """

    name = "plan"

    def __init__(self, ctx, node_reasons: dict[ir.Node, str | None] | None = None) -> None:
        super().__init__(ctx)
        self._node_reasons = node_reasons

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        if self.ctx.options.precision == Precision.INT4:
            self._plan_weight_only(graph)
            return ir.passes.PassResult(model, True)
        if self.ctx.options.dynamic:
            self._plan_dynamic(graph)
            return ir.passes.PassResult(model, True)
        spec = self.ctx.target
        excluded = set(self.ctx.options.exclude)
        pending: list[ir.Node] = []
        for node in graph:
            reason = self._float_reason(node, excluded)
            if reason is not None:
                set_decision(node, Decision.FLOAT, reason)
            elif node.op_type in spec.compute_ops:
                set_decision(node, Decision.INT8, f"{node.op_type} has an int8 kernel on {spec.name}")
            else:
                pending.append(node)
        self._grow(pending)
        for node in pending:
            if get_decision(node) is None:
                set_decision(node, Decision.FLOAT, "no quantized neighbour; an isolated int8 op would only add Q/DQ")
        if spec.int8_chains_only:
            _prune_outside_chains(pending, spec)
        if spec.fixed_output_params:
            _float_fixed_output_tails(graph, spec, int8_outputs=self.ctx.options.io == IoType.INT8)
        self._annotate_tensors(graph)
        return ir.passes.PassResult(model, True)

    def _float_reason(self, node: ir.Node, excluded: set[str]) -> str | None:
        if node.name in excluded or node.op_type in excluded:
            return "excluded by the user (--exclude)"
        if node.name in self.ctx.keep_float:
            return self.ctx.keep_float[node.name]
        if self._node_reasons is None:
            return self._node_reason(node)
        if node not in self._node_reasons:
            self._node_reasons[node] = self._node_reason(node)
        return self._node_reasons[node]

    def _node_reason(self, node: ir.Node) -> str | None:
        """Why the node alone keeps it float on the target, whatever else is float, or None."""
        spec = self.ctx.target
        if any(attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for attr in node.attributes.values()):
            return f"control flow ({node.op_type}): its subgraphs stay float; qcc quantizes the main graph only"
        known = spec.int8_capable_ops
        if node.domain not in ("", "ai.onnx") or node.op_type not in known:
            return f"{node.op_type} has no int8 kernel on {spec.name}"
        data = [node.inputs[i] for i in quantizable_inputs(node)]
        if not data or not node.outputs:
            return "no data inputs"
        if any(v.dtype not in (ir.DataType.FLOAT, None) for v in data if v is not None):
            return "operates on non-float32 tensors"
        if any(not is_float(v) and v.dtype is not None for v in node.outputs):
            return "produces non-float tensors"
        if node.op_type in spec.compute_ops:
            return _compute_reason(node) or spec.float_reason(node)
        for value in data:
            if _unrepresentable(value):
                return f"constant {value.name!r} holds values int8 cannot represent (e.g. a -inf mask)"
        if node.op_type in spec.fused_activations and node.op_type == "Clip":
            if any(v is not None and v.const_value is None for v in node.inputs[1:]):
                return "Clip bounds are not constants"
        return None

    def _grow(self, pending: list[ir.Node]) -> None:
        """Decides pending nodes until nothing changes.

        Absorbing an activation into its producer is preferred over quantizing it on its own, so
        standalone activations are only considered once no other decision can be made.
        """
        spec = self.ctx.target
        standalone_activations = False
        while True:
            changed = False
            for node in pending:
                if get_decision(node) is not None:
                    continue
                activation = node.op_type in spec.fused_activations
                rule = spec.decide(node)
                if rule is not None:
                    set_decision(node, *rule)
                elif node.op_type in spec.rule_ops:
                    continue
                elif activation and _absorbable(node, spec.shared_scale_ops):
                    producer = node.inputs[0].producer()
                    set_decision(node, Decision.FUSED, f"absorbed into the quantized output of {producer.name}")
                elif activation and not standalone_activations:
                    continue
                elif activation and not _quantized_activation(node.inputs[0], spec):
                    set_decision(
                        node,
                        Decision.FLOAT,
                        "its input comes from a float node: it runs float, and a "
                        "quantized reader quantizes its (narrower) output instead of its input",
                    )
                elif node.op_type in spec.shared_scale_ops:
                    ends = [node.inputs[0], *node.outputs]
                    if not any(_quantized_activation(v, spec) for v in ends):
                        continue
                    set_decision(node, Decision.INT8, "moves quantized data; shares its input's parameters")
                elif _has_quantized_neighbour(node, spec):
                    set_decision(node, Decision.INT8, f"{node.op_type} has an int8 kernel and a quantized neighbour")
                else:
                    continue
                changed = True
            if not changed:
                if standalone_activations:
                    return
                standalone_activations = True

    def _annotate_tensors(self, graph: ir.Graph) -> None:
        spec = self.ctx.target
        # A fresh PLANNED per-tensor activation annotation of the target's scheme, per call.
        new_activation = functools.partial(
            TensorQuant, Role.ACTIVATION, self.ctx.activation_dtype, spec.symmetric_activations
        )
        per_channel = self.ctx.options.per_channel
        for node in graph:
            decision = get_decision(node)
            if decision is None or decision.decision == Decision.FLOAT:
                continue
            if decision.decision == Decision.FUSED:
                # Inputs not coming straight from the producer it fuses into (a residual's skip
                # input) are quantized; the output like any int8 output.
                for value in node.inputs:
                    if _fused_input(value) or value is None or value.const_value is not None or not is_float(value):
                        continue
                    if not is_quantized(value):
                        set_quant(value, new_activation())
                out = node.outputs[0]
                if not _absorbed_by_consumer(out) and self._output_quantized(node, out):
                    set_quant(out, new_activation())
                continue
            for i in quantizable_inputs(node):
                value = node.inputs[i]
                if not is_float(value) and value.dtype is not None:
                    continue
                if node.op_type in spec.compute_ops and i == WEIGHT_INPUT and value.const_value is not None:
                    axis = weight_axis(node) if per_channel else None
                    if axis is not None and axis < 0:
                        axis += len(value.shape)
                    if node.op_type == "MatMul" and axis is not None and len(value.shape) != 2:
                        axis = None
                    set_quant(value, TensorQuant(Role.WEIGHT, self.ctx.weight_dtype, True, axis))
                elif i == BIAS_INPUT.get(node.op_type):
                    if spec.bias_int32:
                        set_quant(value, TensorQuant(Role.BIAS, ir.DataType.INT32, True, 0 if per_channel else None))
                elif not is_quantized(value):
                    set_quant(value, new_activation())
            for out in node.outputs:
                if _absorbed_by_consumer(out) or not self._output_quantized(node, out):
                    continue
                quant = new_activation()
                if node.op_type in spec.shared_scale_ops:
                    quant.shared_with = node.inputs[0].name
                set_quant(out, quant)

    def _plan_weight_only(self, graph: ir.Graph) -> None:
        """INT4: only constant 2-D MatMul/Gemm weights are quantized, in blocks along K."""

        def reason_of(node: ir.Node) -> str | None:
            return _weight_only_reason(node) or self.ctx.target.weight_only_reason(node)

        for node, weight in self._matmul_weights(graph, "int4 (weight-only)", reason_of):
            k_axis = 1 if node.op_type == "Gemm" and attr_int(node, "transB", 0) == 1 else 0
            block = _block_size(weight.shape[k_axis])
            set_decision(node, Decision.WEIGHT_ONLY, f"int4 weight blocks of {block} along K; computes in float")
            set_quant(weight, TensorQuant(Role.WEIGHT, ir.DataType.INT4, True, k_axis, block_size=block))

    def _plan_dynamic(self, graph: ir.Graph) -> None:
        """``--dynamic``: constant MatMul/Gemm weights int8; activations are quantized at run time."""
        for node, weight in self._matmul_weights(graph, "--dynamic", _dynamic_reason):
            set_decision(node, Decision.INT8, "int8 weight; its input is quantized at run time (--dynamic)")
            axis = weight_axis(node) % 2 if self.ctx.options.per_channel else None
            set_quant(weight, TensorQuant(Role.WEIGHT, ir.DataType.INT8, True, axis))

    def _matmul_weights(self, graph: ir.Graph, mode: str, reason_of) -> list[tuple[ir.Node, ir.Value]]:
        """Modes that quantize only MatMul/Gemm weights: every other node, every MatMul/Gemm without
        a constant 2-D float32 weight and every one ``reason_of`` rejects stays float with its
        reason; returns the rest with their weights."""
        excluded = set(self.ctx.options.exclude)
        chosen = []
        for node in graph:
            if node.name in excluded or node.op_type in excluded:
                reason = "excluded by the user (--exclude)"
            elif node.op_type not in ("MatMul", "Gemm") or node.domain not in ("", "ai.onnx"):
                reason = f"{mode} quantizes only MatMul/Gemm weights; the rest runs float"
            elif not _constant_2d_float_weight(node):
                reason = f"{mode} needs a constant 2-D float32 weight (activation x activation stays float)"
            else:
                reason = reason_of(node)
            if reason is None:
                chosen.append((node, node.inputs[WEIGHT_INPUT]))
            else:
                set_decision(node, Decision.FLOAT, reason)
        return chosen

    def _output_quantized(self, node: ir.Node, out: ir.Value) -> bool:
        """Whether an int8 or fused node's output is quantized under the target's output policy."""
        spec = self.ctx.target
        if spec.quantize_all_outputs or node.op_type in spec.output_quantized_ops:
            return True
        for use in out.uses():
            decision = get_decision(use.node)
            if decision is not None and decision.decision == Decision.INT8 and use.idx in quantizable_inputs(use.node):
                return True
        return False


def _compute_reason(node: ir.Node) -> str | None:
    weight = node.inputs[WEIGHT_INPUT] if len(node.inputs) > WEIGHT_INPUT else None
    for value in node.inputs[1:]:
        array = const_array(value)
        if array is not None and array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            return f"constant {value.name!r} holds NaN or Inf"
    if node.op_type in ("Conv", "ConvTranspose"):
        if weight is None or weight.const_value is None:
            return f"{node.op_type} weight is not a constant"
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        if bias is not None and bias.const_value is None:
            return f"{node.op_type} bias is not a constant"
    if node.op_type == "Gemm":
        c = node.inputs[2] if len(node.inputs) > 2 else None
        if c is not None:
            array = const_array(c)
            if array is None or array.ndim != 1 or attr_float(node, "beta", 1.0) != 1.0:
                return "Gemm bias is not a 1-D constant with beta=1"
    return None


INT4_BLOCKS = (128, 64, 32, 16)


def _block_size(k: int) -> int | None:
    """The largest supported INT4 block that divides K (TensorRT needs K divisible by it)."""
    return next((b for b in INT4_BLOCKS if k % b == 0), None)


def _constant_2d_float_weight(node: ir.Node) -> bool:
    array = const_array(node.inputs[WEIGHT_INPUT]) if len(node.inputs) > WEIGHT_INPUT else None
    return array is not None and array.dtype == np.float32 and array.ndim == 2


def _weight_only_reason(node: ir.Node) -> str | None:
    array = const_array(node.inputs[WEIGHT_INPUT])
    if array.shape[-1] % 2:
        return "int4 needs an even last weight dimension (two values per byte)"
    k_axis = 1 if node.op_type == "Gemm" and attr_int(node, "transB", 0) == 1 else 0
    if _block_size(array.shape[k_axis]) is None:
        return f"K={array.shape[k_axis]} is not a multiple of 16, the smallest int4 block"
    return None


def _dynamic_reason(node: ir.Node) -> str | None:
    array = const_array(node.inputs[WEIGHT_INPUT])
    if not np.all(np.isfinite(array)):
        return f"constant {node.inputs[WEIGHT_INPUT].name!r} holds NaN or Inf"
    if node.inputs[0].dtype not in (ir.DataType.FLOAT, None) or node.inputs[0].const_value is not None:
        return "operates on non-float32 tensors"
    if node.op_type == "Gemm" and attr_int(node, "transA", 0):
        return "Gemm with transA=1"
    bias = node.inputs[2] if node.op_type == "Gemm" and len(node.inputs) > 2 else None
    if bias is not None and (const_array(bias) is None or const_array(bias).ndim != 1):
        return "Gemm bias is not a 1-D constant"
    return None


def _absorbed_by_consumer(out: ir.Value) -> bool:
    """True if the value's only reader is an absorbed activation, which quantizes in its place."""
    consumers = out.consumers()
    return (
        len(consumers) == 1
        and not out.is_graph_output()
        and getattr(get_decision(consumers[0]), "decision", None) == Decision.FUSED
        and _fused_input(out)
    )


def _fused_input(value: ir.Value | None) -> bool:
    """True if the value flows from an int8/fused producer into exactly one (fused) consumer."""
    if value is None or value.is_graph_output() or len(value.consumers()) != 1:
        return False
    producer = value.producer()
    decision = get_decision(producer) if producer is not None else None
    return decision is not None and decision.decision in (Decision.INT8, Decision.FUSED)


def _absorbable(node: ir.Node, shared_scale_ops: frozenset[str]) -> bool:
    """An activation is absorbed when its producer computes (not just moves) quantized data and
    feeds only it."""
    source = node.inputs[0]
    producer = source.producer() if source is not None else None
    if producer is None or source.is_graph_output() or len(source.consumers()) != 1:
        return False
    decision = get_decision(producer)
    if decision is None or decision.decision == Decision.FLOAT or producer.op_type in shared_scale_ops:
        return False
    if node.op_type == "Clip":
        low = const_array(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
        if low is not None and float(low) > 0:
            return False
    return True


def _quantized_activation(value: ir.Value | None, spec: TargetSpec) -> bool:
    """True if the value is (or will be) a quantized activation under the current decisions."""
    if value is None or value.const_value is not None or not is_float(value):
        return False
    producer = value.producer()
    decision = get_decision(producer) if producer is not None else None
    if decision is not None and decision.decision in (Decision.INT8, Decision.FUSED):
        # A weighted op (or its fused epilogue) can always emit int8; other ops only under the
        # target's output policy.
        if (
            spec.quantize_all_outputs
            or producer.op_type in spec.output_quantized_ops
            or producer.op_type in spec.compute_ops
            or decision.decision == Decision.FUSED
        ):
            return True
    for consumer in value.consumers():
        decision = get_decision(consumer)
        if decision is not None and decision.decision == Decision.INT8:
            if any(consumer.inputs[i] is value for i in quantizable_inputs(consumer)):
                return True
    return False


def _prune_outside_chains(pending: list[ir.Node], spec: TargetSpec) -> None:
    """Runs float every int8 elementwise node that is not inside an int8 chain, until none is left
    (``TargetSpec.int8_chains_only``), and then what only they kept quantized."""
    int8 = _runs_int8

    changed = True
    while changed:
        changed = False
        for node in pending:
            if not int8(node):
                continue
            data = [node.inputs[i] for i in quantizable_inputs(node)]
            written = all(v.const_value is not None or int8(v.producer()) for v in data if v is not None)
            read = any(int8(use.node) for out in node.outputs for use in out.uses())
            if node.op_type in spec.int8_ops and not (written and read):
                reason = (
                    f"{node.op_type} between float neighbours: int8 here would add roundings and save no float work"
                )
            elif get_decision(node).decision == Decision.FUSED and not int8(node.inputs[0].producer()):
                reason = "its producer runs float"
            elif node.op_type in spec.shared_scale_ops and not (int8(node.inputs[0].producer()) or read):
                reason = "moves data between float nodes"
            else:
                continue
            set_decision(node, Decision.FLOAT, reason)
            changed = True


def _runs_int8(node: ir.Node | None) -> bool:
    """The node is decided int8, or fused into an int8 producer."""
    decision = get_decision(node) if node is not None else None
    return decision is not None and decision.decision in (Decision.INT8, Decision.FUSED)


def _float_fixed_output_tails(graph: ir.Graph, spec: TargetSpec, *, int8_outputs: bool) -> None:
    """Runs float an int8 op with runtime-fixed output steps (TFLite's LOGISTIC: 1/256) that only
    float nodes or graph outputs read: its int8 output would be rounded to those steps and then
    converted anyway, while in float it costs the same one conversion (before it instead of after)
    and its output stays exact. YOLOv8's class scores and a text detector's probability map are such
    tails: a score of 0.241 rounded to the step 0.25 passes a 0.25 threshold. With ``int8_outputs``
    (``--io int8``) a graph output is int8 itself: its writer stays int8. Readers first (reverse
    graph order), so a chain of such ops (Sigmoid -> Softmax) runs float from its end."""
    for node in reversed(list(graph)):
        decision = get_decision(node)
        if node.op_type not in spec.fixed_output_params or decision is None or decision.decision != Decision.INT8:
            continue
        read_int8 = int8_outputs and any(out.is_graph_output() for out in node.outputs)
        read_int8 |= any(_runs_int8(use.node) for out in node.outputs for use in out.uses())
        if not read_int8:
            scale = spec.fixed_output_params[node.op_type][0]
            set_decision(
                node,
                Decision.FLOAT,
                f"{node.op_type} read only in float: its int8 output would be rounded to {spec.name}'s fixed "
                f"steps of {scale:g} for no saving (one conversion either way)",
            )


def _has_quantized_neighbour(node: ir.Node, spec: TargetSpec) -> bool:
    if any(_quantized_activation(node.inputs[i], spec) for i in quantizable_inputs(node)):
        return True
    return any(_quantized_activation(out, spec) for out in node.outputs)
