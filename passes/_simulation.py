"""A fake-quantized twin of the annotated model in which each quantizer can be switched off.

Sensitivity analysis needs the model's outputs with some nodes kept float, for many choices of
nodes: compiling an artifact per choice would take minutes. Instead the annotated model is
materialized once as a float QDQ graph (every quantized tensor, weights included, goes float ->
Q -> DQ; Relu and Clip stay as nodes) and every reader of a dequantized tensor reads
``float + gate * (dequantized - float)`` instead. Each quantizer's gate is a graph input, ones or
zeros of the tensor's rank, so one ONNX Runtime session answers "what if only these tensors were
quantized?" by feed; runs of several choices or samples go side by side (``run_each``). A weight's
gated value is known before any run, so the weight itself is the graph input, fed the same
expression computed once in numpy for each gate value (the same float32 operations, so the same
bits): a run no longer recomputes every weight (MiniLM-L6's weight gates took 40% of each simulated
run).

ONNX Runtime runs this graph at the basic optimization level, without its QDQ fusions: float
kernels on fake-quantized values. Against the integer kernels of the artifact this differs only
by rounding inside the kernels (one step at most per requantization), which is what a ranking
needs; the artifact's own run checks the bound (see ``mixed_precision``). Which tensors stay
quantized when some nodes run float is the plan's business (``mixed_precision`` asks it); the
simulation only switches quantizers. An int32 bias is not a quantizer, except the bias of a node
whose output a Log or a divisor reads: it is gated with its float value, since rounding a small
guard to 0 there makes an infinity the artifact's float node would not.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common

from qcc.annotations import Role, get_float_value, get_quant
from qcc.data import Feed
from qcc.irutils import NameAllocator, add_initializer
from qcc.qdq import materialize_qdq
from qcc.quantmath import fake_quantize
from qcc.runtime import current_cost, session

# ONNX Runtime's basic level quantizes the float weight and bias of a Conv/MatMul/Gemm that reads a
# DequantizeLinear (WeightBiasQuantization, to fuse it later), with scales of its own. In the
# simulation with fed activation scales (``tunable="params"``) a Conv reads its DQ directly, so it
# did: Silero VAD's simulated error on trt came out 0.29 where its artifact's is 0.0037. The
# simulation's weights are on their int8 grid already and must stay as they are.
KEEP_FLOAT_WEIGHTS = ("WeightBiasQuantization",)
# Simulated runs go to this many threads at once, each run on one core: ONNX Runtime spreads a small
# model's run over cores poorly (MobileNetV2 on 2 cores: 13 ms a run on both, 8 ms a run two at a
# time), and a large model's runs take no longer this way. The values are the same bit for bit.
WORKERS = max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8))


class Simulation:
    """Runs the annotated model fake-quantized, with some quantizers switched off or some
    activations' parameters changed, by feed.

    Args:
        model: the annotated model, after every quantization pass (not modified).
        samples: the feeds every evaluation runs on.
        tunable: ``"gates"``: every quantizer can be switched off (``run(quantized=...)``);
            ``"params"``: every computed activation's scale and zero point can be changed
            (``run(params=...)``). One or the other: each costs ONNX Runtime time on every run.
    """

    def __init__(self, model: ir.Model, samples: Sequence[Feed], tunable: str = "gates") -> None:
        originals = {v.name: a for v in model.graph.initializers.values() if (a := get_float_value(v)) is not None}
        # The bias of a node whose output a Log or a divisor reads goes back to its float value
        # with its node, as the artifact's float node keeps it: a Log's 1e-6 guard folded into a
        # Conv rounds to 0 at scale s_x * s_w, and Log(0) is -inf. Other biases round far below
        # the activations, and gating them all moved MobileNetV2's search (26 float at 1 - cosine
        # 0.0020, not 0.0009).
        for node in model.graph:
            if not any(_singular_at_zero(use.node, use.idx) for out in node.outputs for use in out.uses()):
                continue
            for value in node.inputs:
                quant = get_quant(value) if value is not None else None
                if quant is not None and quant.role == Role.BIAS and value.const_value is not None:
                    originals.setdefault(value.name, value.const_value.numpy())
        sim = materialize_qdq(model, keep_fused_activations=True, float_weights=True)
        quantizers = _quantizers(sim)
        self.gates: dict[str, str] = {}  # quantized tensor name -> the graph input that switches it
        self._switch: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # tensor name -> what it is fed off, on
        # computed activation name -> its scale and zero point, which run() may replace
        self.params: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._param_inputs: dict[str, tuple[str, str]] = {}
        names = NameAllocator(sim.graph)
        for tensor, (q, dq) in quantizers.items():
            source = q.inputs[0]
            out = dq.outputs[0]
            if source.const_value is not None:
                out = _fake_quantized_constant(sim.graph, q, dq, names) or out
                if source.name in originals:  # rounded by weight-rounding: off means the float weight
                    source = add_initializer(sim.graph, names.new(f"{source.name}_float"), originals[source.name])
            elif tunable == "params":
                self._tunable_params(sim.graph, tensor, q, names)
            if tunable == "gates":
                fed = _fed_constant(sim.graph, tensor, dq, out, source, names)
                if fed is not None:
                    self.gates[tensor], self._switch[tensor] = fed
                else:
                    self.gates[tensor] = self._gate(sim.graph, tensor, dq, out, source, names)
            elif out is not dq.outputs[0]:
                dq.outputs[0].replace_all_uses_with(out, replace_graph_outputs=True)
        if tunable == "gates":
            self._gate_corrected(sim, originals, names)
            common.RemoveUnusedNodesPass()(sim)  # the fed weights' float and fake-quantized values
        self.samples = list(samples)
        self.evaluations = 0
        self._cost = current_cost()  # the compile this simulation belongs to counts its runs
        self._session = session(
            sim,
            level="basic",
            threads=1 if WORKERS > 1 else 0,
            what="the simulated quantized model",
            disabled_optimizers=KEEP_FLOAT_WEIGHTS,
        )
        self._outputs = [o.name for o in self._session.get_outputs()]

    def run(
        self,
        quantized: Iterable[str] | None = None,
        samples: int | None = None,
        params: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> list[list[np.ndarray]]:
        """Returns the outputs on the first ``samples`` samples (None: all) with only the named
        tensors quantized (None: all; ``gates``), and activations' scale and zero point from
        ``params`` where it names them (the annotations' elsewhere; ``params``)."""
        return self.run_each([quantized], samples, params)[0]

    def run_each(
        self,
        choices: Sequence[Iterable[str] | None],
        samples: int | None = None,
        params: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> list[list[list[np.ndarray]]]:
        """``run`` for each choice of quantized tensors, the runs spread over ``WORKERS`` threads."""
        jobs = []
        for quantized in choices:
            on = set(self.gates) if quantized is None else set(quantized)
            feeds = {gate: self._switch[name][name in on] for name, gate in self.gates.items()}
            for name, (scale_input, zero_input) in self._param_inputs.items():
                scale, zero_point = (params or {}).get(name, self.params[name])
                feeds[scale_input], feeds[zero_input] = scale, zero_point
            self.evaluations += 1
            if self._cost is not None:
                self._cost.count_simulation()
            jobs += [{**feed, **feeds} for feed in self.samples[:samples]]
        if WORKERS > 1 and len(jobs) > 1:
            with ThreadPoolExecutor(min(WORKERS, len(jobs))) as pool:
                outputs = list(pool.map(lambda feed: self._session.run(self._outputs, feed), jobs))
        else:
            outputs = [self._session.run(self._outputs, feed) for feed in jobs]
        per_choice = len(jobs) // max(len(choices), 1)
        return [outputs[i * per_choice : (i + 1) * per_choice] for i in range(len(choices))]

    def _gate_corrected(self, model: ir.Model, originals: dict[str, np.ndarray], names: NameAllocator) -> None:
        """A constant a pass corrected for the quantized model (a bias) goes back to its float
        value when its gate is off, like any quantizer."""
        for dq in [n for n in model.graph if n.op_type == "DequantizeLinear"]:
            source = dq.inputs[0]
            base = source.name.removesuffix("_quantized") if source.const_value is not None else None
            if base not in originals or base in self.gates:
                continue
            original = add_initializer(model.graph, names.new(f"{base}_float"), originals[base].astype(np.float32))
            self.gates[base] = self._gate(model.graph, base, dq, dq.outputs[0], original, names)

    def _gate(self, graph: ir.Graph, tensor: str, dq: ir.Node, out: ir.Value, source: ir.Value, names) -> str:
        """``_gate``, remembering the zeros and ones its gate is fed; returns the gate's name."""
        gate = _gate(graph, tensor, dq, out, source, names)
        shape = tuple(gate.shape.numpy())
        self._switch[tensor] = (np.zeros(shape, np.float32), np.ones(shape, np.float32))
        return gate.name

    def _tunable_params(self, graph: ir.Graph, tensor: str, q: ir.Node, names: NameAllocator) -> None:
        """Makes the activation's scale and zero point (shared by its Q and DQ) graph inputs."""
        scale, zero_point = q.inputs[1], q.inputs[2]
        self.params[tensor] = (scale.const_value.numpy(), zero_point.const_value.numpy())
        inputs = []
        for value, kind in ((scale, "scale"), (zero_point, "zero_point")):
            fed = ir.Value(name=names.new(f"qcc_{kind}_{tensor}"), type=value.type, shape=value.shape)
            graph.inputs.append(fed)
            for use in list(value.uses()):
                use.node.replace_input_with(use.idx, fed)
            inputs.append(fed.name)
        self._param_inputs[tensor] = (inputs[0], inputs[1])


def _singular_at_zero(node: ir.Node, index: int) -> bool:
    """The node's input ``index`` is where a value rounded to 0 turns into an infinity."""
    return (node.op_type, index) in (("Log", 0), ("Reciprocal", 0), ("Div", 1))


def _quantizers(model: ir.Model) -> dict[str, tuple[ir.Node, ir.Node]]:
    """Every Q -> DQ pair, by the name of the tensor it quantizes (the weight's for constants).

    An int32 bias has a DQ only, so it is not a quantizer here; ``Simulation`` gates it with its
    float value (``_gate_corrected``).
    """
    found = {}
    for dq in [n for n in model.graph if n.op_type == "DequantizeLinear"]:
        q = dq.inputs[0].producer()
        if q is None or q.op_type != "QuantizeLinear":
            continue
        out = dq.outputs[0]
        found[out.name if out.is_graph_output() else q.inputs[0].name] = (q, dq)  # a graph output's DQ took its name
    return found


def _gate(graph: ir.Graph, tensor: str, dq: ir.Node, out: ir.Value, source: ir.Value, names: NameAllocator) -> ir.Value:
    """Makes every reader of the quantized tensor read ``x + gate * (DQ(Q(x)) - x)`` (gate 1 or 0,
    a float graph input; arithmetic runs faster than Where in ONNX Runtime); returns the gate input.

    The gate has the tensor's rank, all ones: ONNX Runtime multiplies by a scalar of lower rank
    through its general broadcast when the tensor's last dimensions are 1, 70 times slower (a
    1280x320x1x1 weight: 1.4 ms, against 0.02 ms with a 1x1x1x1 gate; MobileNetV2's weight gates
    took half of each simulated run)."""
    rank = len(source.shape) if source.shape is not None else 0
    shape = ir.Shape([1] * rank)
    gate = ir.Value(name=names.new(f"qcc_gate_{tensor}"), type=ir.TensorType(ir.DataType.FLOAT), shape=shape)
    graph.inputs.append(gate)
    readers = list(dq.outputs[0].uses())
    was_output = dq.outputs[0].is_graph_output()
    sub = ir.node("Sub", [out, source], name=names.new(f"{tensor}_gate_sub"))
    mul = ir.node("Mul", [sub.outputs[0], gate], name=names.new(f"{tensor}_gate_mul"))
    add = ir.node("Add", [source, mul.outputs[0]], name=names.new(f"{tensor}_gate"))
    gated = add.outputs[0]
    gated.type, gated.shape = out.type, out.shape
    for use in readers:
        use.node.replace_input_with(use.idx, gated)
    if was_output:
        old = dq.outputs[0]
        graph.outputs[[o is old for o in graph.outputs].index(True)] = gated
        old.name, gated.name = names.new(f"{tensor}_dequantized"), tensor
    else:
        gated.name = names.new(f"{tensor}_gated")
    anchor = dq if dq.graph is not None else readers[0].node
    if dq.graph is not None:
        graph.insert_after(anchor, [sub, mul, add])
    else:
        graph.insert_before(anchor, [sub, mul, add])
    return gate


def _fed_constant(
    graph: ir.Graph, tensor: str, dq: ir.Node, out: ir.Value, source: ir.Value, names: NameAllocator
) -> tuple[str, tuple[np.ndarray, np.ndarray]] | None:
    """Makes a float32 constant's readers read a graph input instead of ``_gate``'s expression;
    returns the input's name and its values with the gate off and on, ``source + gate * (out -
    source)`` in float32 as ONNX Runtime's Sub, Mul and Add compute it (one IEEE operation each: the
    same bits). None where the quantized values are not a constant (blocks) or the tensor is a
    graph output."""
    if source.const_value is None or out.const_value is None or dq.outputs[0].is_graph_output():
        return None
    float_values, quantized = source.const_value.numpy(), out.const_value.numpy()
    if float_values.dtype != np.float32 or quantized.dtype != np.float32 or float_values.shape != quantized.shape:
        return None
    switch = (gated(float_values, quantized, 0.0), gated(float_values, quantized, 1.0))
    fed = ir.Value(name=names.new(f"qcc_fed_{tensor}"), type=out.type, shape=ir.Shape(float_values.shape))
    graph.inputs.append(fed)
    for use in list(dq.outputs[0].uses()):
        use.node.replace_input_with(use.idx, fed)
    return fed.name, switch


def gated(float_values: np.ndarray, quantized: np.ndarray, gate: float) -> np.ndarray:
    """``float + gate * (quantized - float)`` in float32, one rounding per operation as ONNX
    Runtime's Sub, Mul and Add (not always ``quantized`` with the gate on: ``x + (q - x)`` loses a
    ``q`` far below ``x``, and the search's rankings move with such differences)."""
    return np.ascontiguousarray(float_values + np.float32(gate) * (quantized - float_values), dtype=np.float32)


def _fake_quantized_constant(graph: ir.Graph, q: ir.Node, dq: ir.Node, names: NameAllocator) -> ir.Value | None:
    """Replaces a constant's Q -> DQ by its fake-quantized values, computed once (ONNX Runtime
    would quantize the weight again on every run); None where the pair is kept (blocks)."""
    if "block_size" in q.attributes:
        return None
    weight, scale, zero_point = (v.const_value.numpy() for v in q.inputs[:3])
    axis = q.attributes["axis"].as_int() if "axis" in q.attributes else 1
    if np.ndim(scale) == 0:
        axis = None
    elif axis < 0:
        axis += weight.ndim
    values = fake_quantize(weight, scale, zero_point, axis, q.outputs[0].dtype)
    graph.remove([q, dq], safe=False)
    return add_initializer(graph, names.new(f"{q.inputs[0].name}_fake_quantized"), values, exact=True)
