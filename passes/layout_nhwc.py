"""Layout: rewrite the NCHW graph so that image ops run NHWC, with as few transposes as possible.

After this pass every value's shape is its *physical* shape and every layout change is an
explicit ``Transpose`` node; the ops that define a layout (Conv, pooling, Resize, ...) carry
``meta["qcc.layout"] = "NHWC"`` (``"NLC"`` for 1-D ops on ``[N, C, L]``) and read and write
channels-last tensors (their weights keep the ONNX layout; the TFLite lowering converts them).
Three steps, after tflite2onnx's propagation model:

1. *Define*: each layout op ``y = op(x)`` of rank ``r`` becomes ``y = T(F)(op_nhwc(T(L)(x)))``
   with ``L = (0, 2, ..., r-1, 1)`` (channels last) and ``F = L^-1`` (channels first): for 4-D
   ``T(0,2,3,1)`` / ``T(0,3,1,2)``, for 3-D ``T(0,2,1)`` on both sides. 1-D layout ops are the
   ones the lowering writes as 2-D ops of height 1 (``ONE_D_LAYOUT_OPS``).
2. *Propagate*: a transpose ``T(P)`` is pushed below its consumer when the consumer is
   element-wise (all its activation inputs come from ``T(P)``; constants are broadcast to full
   rank and permuted by ``P``) or has an axis that can be remapped (Concat, Softmax, Reduce*,
   Split, Slice, Pad, Squeeze: logical axis ``a`` is physical axis ``P[a]``; when axes are
   dropped the transpose below keeps ``P`` without them). Other ops (Reshape, Flatten, MatMul,
   ...) terminate propagation and read the NCHW tensor through the transpose.
3. *Cancel*: ``T(Q)(T(P)(x))`` is ``T(P[Q])(x)``; when that is the identity both disappear.

With ``nhwc_io`` the 4-D model inputs and outputs are NHWC themselves (no edge transposes).
Quantization annotations move with the values: a transpose's output carries its input's
parameters. The pass changes no numbers: transposes are exact.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx_ir as ir

from qcc.annotations import Decision, get_quant, set_decision, set_quant
from qcc.irutils import NameAllocator, attr_int, const_array, remove_node_bypassing
from qcc.passes._base import QccPass

LAYOUT_KEY = "qcc.layout"
TO_NHWC = (0, 2, 3, 1)
TO_NCHW = (0, 3, 1, 2)
# The meta["qcc.layout"] value of a layout op, by rank.
LAYOUT_NAMES = {3: "NLC", 4: "NHWC"}
# Layout ops whose TFLite rules read either layout (they follow the mark; an unmarked node, e.g.
# in an If branch this pass does not rewrite, is lowered channels-first).
EITHER_LAYOUT_OPS = frozenset({"LpPool", "GlobalLpPool", "LRN", "InstanceNormalization", "BatchNormalization"})
LAYOUT_OPS = (
    frozenset(
        {
            "Conv",
            "ConvTranspose",
            "MaxPool",
            "AveragePool",
            "GlobalAveragePool",
            "GlobalMaxPool",
            "Resize",
            "DepthToSpace",
            "SpaceToDepth",
        }
    )
    | EITHER_LAYOUT_OPS
)
ELEMENTWISE = frozenset(
    {
        "Relu",
        "Clip",
        "Sigmoid",
        "Tanh",
        "HardSwish",
        "HardSigmoid",
        "LeakyRelu",
        "Identity",
        "Gelu",
        "Erf",
        "Sqrt",
        "Exp",
        "Neg",
        "Abs",
        "Elu",
        "Softplus",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Max",
        "Min",
        "Pow",
        "PRelu",
        "Log",
        "Ceil",
        "Floor",
        "Round",
        "Sign",
        "Sin",
        "Cos",
        "Tan",
        "Asin",
        "Acos",
        "Atan",
        "Sinh",
        "Cosh",
        "Asinh",
        "Acosh",
        "Atanh",
        "Selu",
        "Celu",
        "Softsign",
        "Mish",
        "Swish",
        "ThresholdedRelu",
        "Shrink",
        "IsInf",
        "Mod",
        "Sum",
        "Mean",
    }
)
# Layout ops that are also defined on rank 3 ([N, C, L]); the others are 2-D only.
ONE_D_LAYOUT_OPS = frozenset(
    {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool"}
)
AXIS_OPS = frozenset(
    {"Concat", "Softmax", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "Split", "Slice", "Pad", "Squeeze"}
)


class LayoutNhwcPass(QccPass):
    """Moves image ops to NHWC and cancels the transposes that creates (see module docstring)."""

    name = "layout-nhwc"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        self._names = NameAllocator(graph)
        modified = False
        for node in list(graph):
            if defines_layout(node):
                self._define(graph, node)
                modified = True
        if self.ctx.options.nhwc_io:
            self._nhwc_inputs(graph)
        while self._propagate(graph) | _cancel(graph):
            pass
        if self.ctx.options.nhwc_io:
            self._nhwc_outputs(graph)
            _cancel(graph)
        return ir.passes.PassResult(model, modified)

    def _define(self, graph: ir.Graph, node: ir.Node) -> None:
        rank = _rank(node.inputs[0])
        node.meta[LAYOUT_KEY] = LAYOUT_NAMES[rank]
        inner = self._transpose(graph, node.inputs[0], channels_last(rank), before=node)
        node.replace_input_with(0, inner)
        self._transpose_outputs(graph, node, channels_first(rank))

    def _nhwc_inputs(self, graph: ir.Graph) -> None:
        for value in list(graph.inputs):
            if _rank(value) == 4 and not value.is_graph_output():
                uses = list(value.uses())
                value.shape = _permute_shape(value.shape, TO_NHWC)
                first = next(iter(graph), None)
                logical = self._transpose(graph, value, TO_NCHW, before=first)
                for use in uses:
                    use.node.replace_input_with(use.idx, logical)

    def _nhwc_outputs(self, graph: ir.Graph) -> None:
        for i, out in enumerate(list(graph.outputs)):
            producer = out.producer()
            if producer is None or producer.op_type != "Transpose" or _perm(producer) != TO_NCHW:
                continue
            source = producer.inputs[0]
            if source.is_graph_input() or source.is_graph_output() or source.const_value is not None:
                continue
            name = out.name
            graph.outputs[i] = source
            out.name = self._new(f"{name}_nchw")
            source.name = name

    def _propagate(self, graph: ir.Graph) -> bool:
        changed = False
        for node in list(graph):
            if node.domain != "" or node.op_type not in ELEMENTWISE | AXIS_OPS:
                continue
            perm = _common_perm(node)
            if perm is None or not self._remap(node, perm):
                continue
            for i, value in enumerate(node.inputs):
                producer = value.producer() if value is not None else None
                if producer is not None and producer.op_type == "Transpose":
                    node.replace_input_with(i, producer.inputs[0])
                elif value is not None and value.const_value is not None and _data_input(node, i):
                    node.replace_input_with(i, self._permuted_constant(graph, value, perm))
            out_perm = perm if node.op_type not in _RANK_REDUCING or _keepdims(node) else self._reduced_perm
            self._transpose_outputs(graph, node, out_perm)
            changed = True
        return changed

    def _remap(self, node: ir.Node, perm: tuple[int, ...]) -> bool:
        """Rewrites the node's axis attributes/inputs for physical data; False if it cannot."""
        op, rank = node.op_type, len(perm)
        if op in ELEMENTWISE:
            return all(_rank(v) in (None, 0, rank) or v.const_value is not None for v in node.inputs if v is not None)
        if op in ("Concat", "Softmax", "Split"):
            axis = attr_int(node, "axis", -1 if op == "Softmax" else 0)
            node.attributes["axis"] = ir.AttrInt64("axis", perm[axis % rank])
            return True
        if op in _REDUCE:
            axes = _reduce_axes(node, rank)
            if axes is None:
                return False
            physical = sorted(perm[a] for a in axes)
            if len(node.inputs) > 1 and node.inputs[1] is not None:
                node.replace_input_with(1, self._constant(np.array(physical, np.int64), "axes"))
            else:
                node.attributes["axes"] = ir.AttrInt64s("axes", physical)
            self._reduced_perm = _perm_without(perm, axes)
            return True
        if op == "Squeeze":
            axes = _squeeze_axes(node, rank)
            if axes is None:
                return False
            physical = sorted(perm[a] for a in axes)
            if len(node.inputs) > 1:
                node.replace_input_with(1, self._constant(np.array(physical, np.int64), "axes"))
            else:
                node.attributes["axes"] = ir.AttrInt64s("axes", physical)
            self._reduced_perm = _perm_without(perm, axes)
            return True
        if op == "Slice":
            starts = const_array(node.inputs[1])
            axes = const_array(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] is not None else None
            if starts is None or (len(node.inputs) > 3 and node.inputs[3] is not None and axes is None):
                return False
            axes = np.arange(len(starts)) if axes is None else axes
            physical = np.array([perm[int(a) % rank] for a in axes], np.int64)
            if len(node.inputs) < 4:
                node.resize_inputs(4)
            node.replace_input_with(3, self._constant(physical, "axes"))
            return True
        if op == "Pad":
            pads = const_array(node.inputs[1])
            if pads is None or len(pads) != 2 * rank or (len(node.inputs) > 3 and node.inputs[3] is not None):
                return False
            begins, ends = pads[:rank], pads[rank:]
            logical = [perm.index(p) for p in range(rank)]
            physical = np.concatenate([[begins[a] for a in logical], [ends[a] for a in logical]])
            node.replace_input_with(1, self._constant(physical.astype(np.int64), "pads"))
            return True
        return False

    def _transpose_outputs(self, graph: ir.Graph, node: ir.Node, perm: tuple[int, ...]) -> None:
        """Makes the node's outputs physical and puts ``T(perm)`` after each, keeping names."""
        anchor = node
        for out in node.outputs:
            if not out.uses() and not out.is_graph_output():
                continue
            uses = list(out.uses())
            was_output = [i for i, o in enumerate(graph.outputs) if o is out]
            name = out.name
            out.shape = _permute_shape(out.shape, _inverse(perm)) if out.shape is not None else None
            logical = self._transpose(graph, out, perm, after=anchor)
            anchor = logical.producer()
            for use in uses:
                use.node.replace_input_with(use.idx, logical)
            for i in was_output:
                graph.outputs[i] = logical
            out.name = self._new(f"{name}_nhwc")
            logical.name = name

    def _transpose(self, graph: ir.Graph, value: ir.Value, perm, *, before=None, after=None) -> ir.Value:
        node = ir.node("Transpose", [value], attributes={"perm": list(perm)}, name=self._new(f"{value.name}_T"))
        out = node.outputs[0]
        out.name, out.type = self._new(f"{value.name}_t"), value.type
        out.shape = _permute_shape(value.shape, perm) if value.shape is not None else None
        quant = get_quant(value)
        if quant is not None:
            shared = copy.copy(quant)
            shared.shared_with = value.name
            set_quant(out, shared)
        kind = Decision.INT8 if quant is not None else Decision.FLOAT
        set_decision(node, kind, "layout change inserted by layout-nhwc")
        if after is not None:
            graph.insert_after(after, node)
        elif before is not None:
            graph.insert_before(before, node)
        else:
            graph.append(node)
        return out

    def _permuted_constant(self, graph: ir.Graph, value: ir.Value, perm) -> ir.Value:
        array = const_array(value)
        # The op moves below Transpose(perm): its constants must go through the inverse permutation.
        array = array.reshape((1,) * (len(perm) - array.ndim) + array.shape).transpose(_inverse(perm))
        out = self._constant(array, value.name)
        quant = get_quant(value)
        if quant is not None:
            set_quant(out, copy.copy(quant))
        graph.register_initializer(out)
        return out

    def _constant(self, array: np.ndarray, base: str) -> ir.Value:
        name = self._new(f"{base}_nhwc")
        return ir.Value(
            name=name,
            shape=ir.Shape(array.shape),
            type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
            const_value=ir.tensor(np.ascontiguousarray(array), name=name),
        )

    def _new(self, base: str) -> str:
        return self._names.new(base)


_REDUCE = frozenset({"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum"})
# Axis ops whose output may have a lower rank than the transposed input (keepdims=0, Squeeze).
_RANK_REDUCING = _REDUCE | {"Squeeze"}


def defines_layout(node: ir.Node) -> bool:
    """True if the node is a layout op this pass moves to channels last (4-D, or 3-D for 1-D ops)."""
    if node.domain != "" or node.op_type not in LAYOUT_OPS:
        return False
    if node.op_type == "BatchNormalization" and any(o.uses() or o.is_graph_output() for o in node.outputs[1:]):
        return False  # the running statistics of training mode are 1-D, not images
    rank = _rank(node.inputs[0])
    return rank == 4 or (rank == 3 and node.op_type in ONE_D_LAYOUT_OPS)


def channels_last(rank: int) -> tuple[int, ...]:
    """The perm from channels-first ``[N, C, d1, ...]`` to channels-last ``[N, d1, ..., C]``."""
    return (0, *range(2, rank), 1)


def channels_first(rank: int) -> tuple[int, ...]:
    """The inverse of :func:`channels_last`."""
    return _inverse(channels_last(rank))


def _rank(value: ir.Value | None) -> int | None:
    return None if value is None or value.shape is None else len(value.shape)


def _perm(node: ir.Node) -> tuple[int, ...]:
    attr = node.attributes.get("perm")
    rank = _rank(node.inputs[0])
    return tuple(attr.as_ints()) if attr is not None else tuple(reversed(range(rank or 0)))


def _inverse(perm) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argsort(perm))


def _permute_shape(shape: ir.Shape, perm) -> ir.Shape:
    dims = list(shape)
    return ir.Shape([dims[p] for p in perm])


def _data_input(node: ir.Node, index: int) -> bool:
    """True for inputs that are tensors of the op's layout (not Clip bounds, Slice starts, ...)."""
    if node.op_type in ELEMENTWISE:
        return node.op_type != "Clip" or index == 0
    return node.op_type == "Concat"


def _common_perm(node: ir.Node) -> tuple[int, ...] | None:
    """The perm of the transposes feeding every activation input of the node, if they agree."""
    perms = set()
    for i, value in enumerate(node.inputs):
        if value is None or value.const_value is not None:
            continue
        if not _data_input(node, i) and node.op_type not in AXIS_OPS:
            return None
        if node.op_type in AXIS_OPS and node.op_type != "Concat" and i > 0:
            return None
        producer = value.producer()
        if producer is None or producer.op_type != "Transpose" or value.is_graph_output():
            return None
        perms.add(_perm(producer))
    if len(perms) != 1:
        return None
    perm = perms.pop()
    if any(_rank(o) != len(perm) and node.op_type not in _RANK_REDUCING for o in node.outputs):
        return None
    return perm


def _keepdims(node: ir.Node) -> bool:
    return node.op_type != "Squeeze" and attr_int(node, "keepdims", 1) == 1


def _perm_without(perm: tuple[int, ...], axes: list[int]) -> tuple[int, ...]:
    """The perm left on the output when the logical ``axes`` of ``T(perm)(x)`` are dropped.

    Dropping logical axis ``a`` drops physical axis ``perm[a]``; each remaining logical axis
    reads its physical axis, renumbered among the physical axes that remain.
    """
    physical = {perm[a] for a in axes}
    kept = [p for p in range(len(perm)) if p not in physical]
    return tuple(kept.index(perm[a]) for a in range(len(perm)) if a not in axes)


def _squeeze_axes(node: ir.Node, rank: int) -> list[int] | None:
    """The logical axes a Squeeze drops, when they are given (input or attribute)."""
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        axes = const_array(node.inputs[1])
        return None if axes is None else sorted(int(a) % rank for a in axes.reshape(-1))
    attr = node.attributes.get("axes")
    return None if attr is None else sorted(int(a) % rank for a in attr.as_ints())


def _reduce_axes(node: ir.Node, rank: int) -> list[int] | None:
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        axes = const_array(node.inputs[1])
        if axes is None:
            return None
        axes = axes.tolist()
    else:
        attr = node.attributes.get("axes")
        axes = list(attr.as_ints()) if attr is not None else list(range(rank))
    if not axes and attr_int(node, "noop_with_empty_axes", 0):
        return None
    return sorted(int(a) % rank for a in (axes or range(rank)))


def _cancel(graph: ir.Graph) -> bool:
    """Merges transpose chains and duplicates, removes identity and dead transposes.

    Returns:
        True if anything changed.
    """
    changed = False
    seen: dict[tuple[int, tuple[int, ...]], ir.Node] = {}
    for node in list(graph):
        if node.op_type != "Transpose" or node.outputs[0].is_graph_output():
            continue
        key = (id(node.inputs[0]), _perm(node))
        if key in seen:
            node.outputs[0].replace_all_uses_with(seen[key].outputs[0])
            graph.remove(node, safe=True)
            changed = True
        else:
            seen[key] = node
    for node in list(graph):
        if node.op_type != "Transpose" or node.graph is None:
            continue
        out = node.outputs[0]
        if not out.uses() and not out.is_graph_output():
            graph.remove(node, safe=True)
            changed = True
            continue
        producer = node.inputs[0].producer()
        if producer is not None and producer.op_type == "Transpose":
            inner = _perm(producer)
            merged = tuple(inner[q] for q in _perm(node))
            node.replace_input_with(0, producer.inputs[0])
            node.attributes["perm"] = ir.AttrInt64s("perm", list(merged))
            changed = True
        if _perm(node) == tuple(range(len(_perm(node)))):
            changed |= remove_node_bypassing(graph, node)
    return changed
