"""A fake-quantized twin of the annotated model in which each quantizer can be switched off.

Sensitivity analysis needs the model's outputs with some nodes kept float, for many choices of
nodes: compiling an artifact per choice would take minutes. Instead the annotated model is
materialized once as a float QDQ graph (every quantized tensor, weights included, goes float ->
Q -> DQ; Relu and Clip stay as nodes) and every reader of a dequantized tensor reads
``Where(gate, dequantized, float)`` instead. Each quantizer's gate is a boolean graph input, so
one ONNX Runtime session answers "what if only these tensors were quantized?" by feed.

ONNX Runtime runs this graph at the basic optimization level, without its QDQ fusions: float
kernels on fake-quantized values. Against the integer kernels of the artifact this differs only
by rounding inside the kernels (one step at most per requantization), which is what a ranking
needs; the artifact's own run checks the bound (see ``mixed_precision``). Which tensors stay
quantized when some nodes run float is the plan's business (``mixed_precision`` asks it); the
simulation only switches quantizers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import onnx_ir as ir

from qcc.backends._qdq import materialize_qdq
from qcc.data import Feed
from qcc.irutils import NameAllocator
from qcc.runtime import session


class Simulation:
    """Runs the annotated model fake-quantized, with any subset of its quantizers switched on.

    Args:
        model: the annotated model, after every quantization pass (not modified).
        samples: the feeds every evaluation runs on.
    """

    def __init__(self, model: ir.Model, samples: Sequence[Feed]) -> None:
        sim = materialize_qdq(model, keep_fused_activations=True, float_weights=True)
        self.gates = _add_gates(sim)  # quantized tensor name -> gate input name
        self.samples = list(samples)
        self.evaluations = 0
        self._session = session(sim, level="basic", what="the simulated quantized model")
        self._outputs = [o.name for o in self._session.get_outputs()]

    def run(self, quantized: Iterable[str] | None = None, samples: int | None = None) -> list[list[np.ndarray]]:
        """Returns the outputs on the first ``samples`` samples (None: all) with only the named
        tensors quantized (None: all)."""
        on = set(self.gates) if quantized is None else set(quantized)
        gates = {gate: np.array(name in on) for name, gate in self.gates.items()}
        self.evaluations += 1
        return [self._session.run(self._outputs, {**feed, **gates}) for feed in self.samples[:samples]]


def _add_gates(model: ir.Model) -> dict[str, str]:
    """Puts ``Where(gate, DQ(Q(x)), x)`` between every Q/DQ pair and its readers; returns the gates
    by the name of the tensor quantized (the weight's for constants)."""
    graph = model.graph
    names = NameAllocator(graph)
    gates: dict[str, str] = {}
    for dq in [n for n in graph if n.op_type == "DequantizeLinear"]:
        q = dq.inputs[0].producer()
        if q is None or q.op_type != "QuantizeLinear":
            continue  # an int32 bias: its rounding is far below the activations' and has no float twin
        source, out = q.inputs[0], dq.outputs[0]
        tensor = out.name if out.is_graph_output() else source.name  # a graph output's DQ took its name
        gate = ir.Value(name=names.new(f"qcc_gate_{tensor}"), type=ir.TensorType(ir.DataType.BOOL), shape=ir.Shape([]))
        graph.inputs.append(gate)
        gates[tensor] = gate.name
        readers = list(out.uses())
        where = ir.node("Where", [gate, out, source], name=names.new(f"{tensor}_gate"))
        gated = where.outputs[0]
        gated.type, gated.shape = out.type, out.shape
        for use in readers:
            use.node.replace_input_with(use.idx, gated)
        if out.is_graph_output():
            graph.outputs[[o is out for o in graph.outputs].index(True)] = gated
            out.name, gated.name = names.new(f"{tensor}_dequantized"), tensor
        else:
            gated.name = names.new(f"{tensor}_gated")
        graph.insert_after(dq, where)
    return gates
