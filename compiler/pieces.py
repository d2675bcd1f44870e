"""A model run in pieces, in order, each piece fed what the pieces before it computed.

The refit (``passes/refit_weights.py``) reads the inputs of one wave of layers at a time, from the
quantized model with the weights fitted so far. ONNX Runtime runs every node of a session whatever
outputs are asked for, so a session of the whole model, run once per wave, computed the whole
model once per wave and sample (PP-OCRv5 det: 59 times). :class:`Pieces` cuts the graph into one
piece per request: the nodes the request needs that no earlier piece ran. Each piece is an ONNX
Runtime session of its own, made when it first runs and dropped after the request, fed the graph
inputs and the tensors earlier pieces computed (held per sample until the last piece that reads
them), so each node runs once per sample over all the requests. A piece runs the same nodes on
the same inputs as the whole model's session, and a tensor a piece hands on is one a consumer in
another piece reads, so the whole model could not have fused across it either. At the ``basic``
optimization level the outputs are the whole model's bit for bit; at ``all``, ONNX Runtime can pick
other convolution kernels for a smaller graph, which moves values by a few ulps (``tests/compiler/
test_pieces.py``), which is why the refit cuts only its fake-quantized model, run at ``basic``.

Tensors that cross pieces are held for every sample at once: the price of running each node once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnx_ir as ir

from qcc.runtime import is_large, session


class Pieces:
    """Runs ``model`` request by request (see the module docstring).

    Args:
        model: the model (not modified); its nodes in graph order.
        requests: for each request, in the order they will be run, the tensors it returns.
        level: ONNX Runtime's optimization level for every piece.
        what: how to name the model in an error.
    """

    def __init__(self, model: ir.Model, requests: Sequence[Sequence[str]], *, level: str, what: str) -> None:
        self.level, self.what = level, what
        proto = ir.serde.serialize_model(model)
        self._proto = proto
        graph = proto.graph
        self._constants = {t.name for t in graph.initializer}
        self._inputs = {i.name for i in graph.input} - self._constants
        producer = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
        ran: set[int] = set()
        self.pieces: list[list[int]] = []  # node indices of each piece, in graph order
        for names in requests:
            wanted, stack = set(), [n for n in names if n in producer]
            while stack:
                index = producer[stack.pop()]
                if index in ran or index in wanted:
                    continue
                wanted.add(index)
                stack.extend(n for n in graph.node[index].input if n in producer)
            ran |= wanted
            self.pieces.append(sorted(wanted))
        self.requests = [list(dict.fromkeys(names)) for names in requests]
        # What each piece reads from outside itself, computes for its request or later pieces, and
        # the last request that needs each tensor.
        made_by = {out: k for k, piece in enumerate(self.pieces) for i in piece for out in graph.node[i].output if out}
        self._reads: list[list[str]] = []
        self._last_use: dict[str, int] = {}
        for k, piece in enumerate(self.pieces):
            inside = {out for i in piece for out in graph.node[i].output}
            reads = [
                name
                for i in piece
                for name in graph.node[i].input
                if name and name not in inside and name not in self._constants
            ]
            self._reads.append(list(dict.fromkeys(reads)))
            for name in [*reads, *self.requests[k]]:
                self._last_use[name] = k
        self._outputs: list[list[str]] = [[] for _ in self.pieces]
        for name, k in made_by.items():
            if self._last_use.get(name, -1) >= k:
                self._outputs[k].append(name)
        self._held: dict[int, dict[str, np.ndarray]] = {}  # sample -> tensors later pieces read
        self._types = _output_types(proto)
        self._current: tuple[int, object] | None = None

    @staticmethod
    def fits(model: ir.Model) -> bool:
        """The model can be cut: no node holds a subgraph (whose outer-scope reads a cut could
        miss), every node output has a known element type, and it is under 2 GB (a piece is
        serialized whole)."""
        for node in model.graph:
            if any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values()):
                return False
            if any(out.dtype is None for out in node.outputs if out.name):
                return False
        return not is_large(model)

    def run(self, request: int, feed: Mapping[str, np.ndarray], sample: int) -> list[np.ndarray]:
        """The tensors of ``request`` for one sample (``feed``: the graph inputs); requests run in
        order, each for every sample before the next."""
        held = self._held.setdefault(sample, {})
        needed = [*self._reads[request], *self.requests[request]]
        values = {n: feed[n] if n in self._inputs else held[n] for n in needed if n in self._inputs or n in held}
        outputs = self._outputs[request]
        if outputs:
            inputs = {n: values[n] for n in self._reads[request]}
            values.update(zip(outputs, self._session(request, inputs, outputs).run(outputs, inputs), strict=True))
            held.update((n, values[n]) for n in outputs)
        result = [np.asarray(values[n]) for n in self.requests[request]]
        for name in [n for n in held if self._last_use.get(n, -1) <= request]:
            del held[name]
        return result

    def _session(self, request: int, inputs: Mapping[str, np.ndarray], outputs: list[str]):
        if self._current is None or self._current[0] != request:
            self._current = None  # the previous piece's session goes first
            piece = self._piece(request, inputs, outputs)
            self._current = (request, session(piece, level=self.level, what=self.what))
        return self._current[1]

    def _piece(self, request: int, inputs: Mapping[str, np.ndarray], outputs: list[str]) -> onnx.ModelProto:
        """The request's piece as a model: its nodes, the constants they read, the tensors they
        read from outside as inputs (typed by the arrays fed) and the tensors it computes for the
        request or later pieces as outputs."""
        graph = self._proto.graph
        nodes = [graph.node[i] for i in self.pieces[request]]
        used = {name for node in nodes for name in node.input}
        piece = onnx.helper.make_graph(
            nodes,
            f"piece{request}",
            [
                onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(array.dtype), None)
                for name, array in inputs.items()
            ],
            [onnx.helper.make_tensor_value_info(name, self._types[name], None) for name in outputs],
            [t for t in graph.initializer if t.name in used],
        )
        model = onnx.helper.make_model(piece, opset_imports=self._proto.opset_import, ir_version=self._proto.ir_version)
        model.functions.extend(self._proto.functions)
        return model


def _output_types(proto: onnx.ModelProto) -> dict[str, int]:
    """Each tensor's ONNX element type, as the serialized IR declares it."""
    types = {}
    for info in [*proto.graph.input, *proto.graph.value_info, *proto.graph.output]:
        types[info.name] = info.type.tensor_type.elem_type
    return types
