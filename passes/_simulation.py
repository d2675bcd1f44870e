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

Most runs switch few quantizers against the run before them (the sensitivity screening switches
one unit off the all-int8 model; the search adds one unit to the float set so far). A run then
re-runs only the graph from the first node the switched gates reach (``_Suffixes``): the last
anchored run (a full run) kept the tensors that cross ``CUTS`` cut points, and a session per cut
(built when first used) computes the rest from them. The outputs are the full run's, bit for bit
(the same kernels on the same values).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx
import onnx_ir as ir

from qcc.annotations import get_float_value
from qcc.data import Feed
from qcc.irutils import NameAllocator, add_initializer
from qcc.qdq import materialize_qdq
from qcc.quantmath import fake_quantize
from qcc.runtime import current_cost, session

CUTS = 4  # cut points a gated simulation may re-run from


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
        sim = materialize_qdq(model, keep_fused_activations=True, float_weights=True)
        quantizers = _quantizers(sim)
        self.gates: dict[str, str] = {}  # quantized tensor name -> gate input name
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
                self.gates[tensor] = _gate(sim.graph, tensor, dq, out, source, names)
            elif out is not dq.outputs[0]:
                dq.outputs[0].replace_all_uses_with(out, replace_graph_outputs=True)
        if tunable == "gates":
            self._gate_corrected(sim, originals, names)
        self.samples = list(samples)
        self.evaluations = 0
        self._cost = current_cost()  # the compile this simulation belongs to counts its runs
        self._suffixes = _Suffixes(sim, self.gates) if tunable == "gates" else None
        boundary = self._suffixes.boundary if self._suffixes is not None else {}
        self._session = session(sim, level="basic", what="the simulated quantized model", extra_outputs=boundary)
        self._outputs = [o.name for o in sim.graph.outputs]

    def run(
        self,
        quantized: Iterable[str] | None = None,
        samples: int | None = None,
        params: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> list[list[np.ndarray]]:
        """Returns the outputs on the first ``samples`` samples (None: all) with only the named
        tensors quantized (None: all; ``gates``), and activations' scale and zero point from
        ``params`` where it names them (the annotations' elsewhere; ``params``)."""
        on = set(self.gates) if quantized is None else set(quantized)
        feeds = {gate: np.array(1.0 if name in on else 0.0, np.float32) for name, gate in self.gates.items()}
        for name, (scale_input, zero_input) in self._param_inputs.items():
            scale, zero_point = (params or {}).get(name, self.params[name])
            feeds[scale_input], feeds[zero_input] = scale, zero_point
        self.evaluations += 1
        if self._cost is not None:
            self._cost.count_simulation()
        chosen = self.samples[:samples]
        if self._suffixes is not None:
            return self._suffixes.run(self._session, self._outputs, on, chosen, feeds)
        return [self._session.run(self._outputs, {**feed, **feeds}) for feed in chosen]

    def _gate_corrected(self, model: ir.Model, originals: dict[str, np.ndarray], names: NameAllocator) -> None:
        """A constant a pass corrected for the quantized model (a bias) goes back to its float
        value when its gate is off, like any quantizer."""
        for dq in [n for n in model.graph if n.op_type == "DequantizeLinear"]:
            source = dq.inputs[0]
            base = source.name.removesuffix("_quantized") if source.const_value is not None else None
            if base not in originals or base in self.gates:
                continue
            original = add_initializer(model.graph, names.new(f"{base}_float"), originals[base].astype(np.float32))
            self.gates[base] = _gate(model.graph, base, dq, dq.outputs[0], original, names)

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


class _Suffixes:
    """Re-runs a gated simulation from the first node its switched gates reach (module docstring).

    Cut ``c`` splits the node list at position ``c``; its boundary is every computed tensor written
    before ``c`` and read from ``c`` on (or a graph output). An anchored run fetches every cut's
    boundary with the outputs; a later run whose gates differ from the anchor's only from node
    ``p`` on runs the suffix of the last cut at or before ``p``, fed the anchor's boundary values.
    """

    def __init__(self, sim: ir.Model, gates: Mapping[str, str]) -> None:
        self.model = sim
        self.nodes = list(sim.graph)
        self.cuts: list[int] = []
        self.boundary: dict[str, int] = {}  # every cut's boundary tensor -> ONNX element type
        self._crossing: dict[int, list[str]] = {}
        self._sessions: dict[int, object] = {}
        self._anchor: tuple[frozenset[str], list[dict[str, np.ndarray]]] | None = None
        self._proto: onnx.ModelProto | None = None
        subgraphs = (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
        if any(a.type in subgraphs for n in self.nodes for a in n.attributes.values()):
            return  # subgraphs read outer values the cut would have to find: full runs only
        position = {id(node): i for i, node in enumerate(self.nodes)}
        by_name = {v.name: v for v in sim.graph.inputs}
        self.first = {  # quantized tensor -> first node its gate reaches
            tensor: min((position[id(use.node)] for use in by_name[gate].uses()), default=len(self.nodes))
            for tensor, gate in gates.items()
        }
        starts = sorted(set(self.first.values()))
        if len(starts) < 2:
            return
        for k in range(1, CUTS + 1):  # cuts spread over where gates start, after the first
            cut = starts[k * (len(starts) - 1) // CUTS]
            crossing = self._crossing_at(cut, position)
            if cut > 0 and crossing is not None and cut not in self._crossing:
                self.cuts.append(cut)
                self._crossing[cut] = list(crossing)
                self.boundary.update(crossing)

    def _crossing_at(self, cut: int, position: dict[int, int]) -> dict[str, int] | None:
        crossing: dict[str, int] = {}
        for node in self.nodes[:cut]:
            for value in node.outputs:
                read_later = any(position[id(use.node)] >= cut for use in value.uses())
                if read_later or value.is_graph_output():
                    if not value.name or value.dtype is None:
                        return None
                    crossing[value.name] = value.dtype.value
        return crossing

    def run(self, full, outputs: list[str], on: set[str], samples: list, gates: dict) -> list[list[np.ndarray]]:
        if not self.cuts:
            return [full.run(outputs, {**feed, **gates}) for feed in samples]
        cut = self._cut_for(frozenset(on), len(samples))
        if cut is None:  # a full run, which becomes the anchor
            names = outputs + list(self.boundary)
            kept = []
            for feed in samples:
                values = dict(zip(names, full.run(names, {**feed, **gates}), strict=True))
                kept.append(values)
            self._anchor = (frozenset(on), kept)
            return [[values[name] for name in outputs] for values in kept]
        suffix = self._session(cut)
        suffix_inputs = [i.name for i in suffix.get_inputs()]
        suffix_outputs = [o.name for o in suffix.get_outputs()]
        results = []
        for feed, anchored in zip(samples, self._anchor[1], strict=False):
            known = {**feed, **gates, **anchored}
            values = dict(
                zip(suffix_outputs, suffix.run(suffix_outputs, {n: known[n] for n in suffix_inputs}), strict=True)
            )
            results.append([values[name] if name in values else anchored[name] for name in outputs])
        return results

    def _cut_for(self, on: frozenset[str], count: int) -> int | None:
        """The last cut before every gate that differs from the anchor's; None: run in full."""
        if self._anchor is None or len(self._anchor[1]) < count:
            return None
        changed = on ^ self._anchor[0]
        start = min((self.first[t] for t in changed if t in self.first), default=len(self.nodes))
        usable = [c for c in self.cuts if c <= start]
        return max(usable) if usable else None

    def _session(self, cut: int):
        if cut not in self._sessions:
            self._sessions[cut] = session(self._suffix_model(cut), level="basic", what="the simulated quantized model")
        return self._sessions[cut]

    def _suffix_model(self, cut: int) -> onnx.ModelProto:
        if self._proto is None:
            self._proto = ir.serde.serialize_model(self.model)
        proto = onnx.ModelProto()
        proto.CopyFrom(self._proto)
        graph = proto.graph
        kept = list(graph.node)[cut:]
        read = {name for node in kept for name in node.input}
        produced = {name for node in kept for name in node.output}
        inputs = [i for i in graph.input if i.name in read]
        inputs += [
            onnx.helper.make_tensor_value_info(name, self.boundary[name], None)
            for name in self._crossing[cut]
            if name in read
        ]
        outputs = [o for o in graph.output if o.name in produced]
        initializers = [t for t in graph.initializer if t.name in read]
        del graph.node[:], graph.input[:], graph.output[:], graph.initializer[:], graph.value_info[:]
        graph.node.extend(kept)
        graph.input.extend(inputs)
        graph.output.extend(outputs)
        graph.initializer.extend(initializers)
        return proto


def _quantizers(model: ir.Model) -> dict[str, tuple[ir.Node, ir.Node]]:
    """Every Q -> DQ pair, by the name of the tensor it quantizes (the weight's for constants).

    An int32 bias has a DQ only: its rounding is far below the activations' and it has no float
    twin, so it is not a quantizer here.
    """
    found = {}
    for dq in [n for n in model.graph if n.op_type == "DequantizeLinear"]:
        q = dq.inputs[0].producer()
        if q is None or q.op_type != "QuantizeLinear":
            continue
        out = dq.outputs[0]
        found[out.name if out.is_graph_output() else q.inputs[0].name] = (q, dq)  # a graph output's DQ took its name
    return found


def _gate(graph: ir.Graph, tensor: str, dq: ir.Node, out: ir.Value, source: ir.Value, names: NameAllocator) -> str:
    """Makes every reader of the quantized tensor read ``x + gate * (DQ(Q(x)) - x)`` (gate 1 or 0,
    a float graph input; arithmetic runs faster than Where in ONNX Runtime); returns the gate."""
    gate = ir.Value(name=names.new(f"qcc_gate_{tensor}"), type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([]))
    graph.inputs.append(gate)
    readers = list(dq.outputs[0].uses())
    was_output = dq.outputs[0].is_graph_output()
    sub = ir.node("Sub", [out, source], name=names.new(f"{tensor}_gate_sub"))
    mul = ir.node("Mul", [sub.outputs[0], gate], name=names.new(f"{tensor}_gate_mul"))
    add = ir.node("Add", [source, mul.outputs[0]], name=names.new(f"{tensor}_gate"))
    for value in (sub.outputs[0], mul.outputs[0], add.outputs[0]):  # typed: a cut may pass between them
        value.type, value.shape = out.type, out.shape
    gated = add.outputs[0]
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
    return gate.name


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
