"""Canonicalize: bring the float graph to the one form the later passes expect.

* ``Constant`` nodes become initializers, so every constant is ``Value.const_value``.
* ``Identity`` and inference-mode ``Dropout`` are removed (their output is their input).
* Constant folding: a node whose inputs are all constants is evaluated once (with the ONNX
  reference evaluator) and replaced by its result; ``Shape`` of a fully static tensor is folded
  first, so shape subgraphs (Shape -> Gather -> Concat -> Reshape) collapse into constants.
  Results that would be large materializations (ConstantOfShape/Expand/Tile/Range above 1M
  elements) are left as nodes.
* ``If`` with a constant condition (an initializer, a ``Constant``, or one that folding makes
  constant) is replaced by its taken branch, and folding runs again over the inlined nodes. This
  is part of :func:`fold_constants`, so every target benefits (no subgraph is left for the plan,
  and TFLite needs no IF) and the TFLite writer's folding with static shapes also inlines an
  ``If`` on a shape (``Shape(x)[1] == 512``).
* For ``--target tflite`` (one subgraph, no WHILE written), a ``Loop`` with a constant trip count
  and no run-time exit is unrolled into copies of its body, then folded. Other targets keep the
  ``Loop`` (their runtimes run it). ``passes/_control_flow.py`` states both rewrites and when
  they apply.
* ``ReduceMean`` over the spatial axes (2, 3) of a 4-D tensor becomes ``GlobalAveragePool``
  (followed by a ``Reshape`` to (N, C) when ``keepdims=0``): the same numbers, and an op every
  target has an int8 kernel for.
* A zero-constant ``Pad`` of the spatial axes that feeds only a ``Conv`` (explicit "same"
  padding, as TensorFlow-style exports write it) becomes the Conv's own ``pads``: the same
  numbers, and no float op between the quantizer and the integer conv.
* Gemm's ``alpha`` and ``beta`` are folded into a constant B and C: every backend then sees
  ``A @ B + C`` (TFLite's FULLY_CONNECTED has no factors).
* A Split that undoes a Concat (through Reshapes and Concats on other axes, as YOLO heads write
  it) is pushed up until the two cancel, so tensors of unrelated ranges no longer share one
  int8 scale (``passes/_split_concat.py``).
* Unused nodes and initializers are dropped.

Clip's ``min``/``max`` attributes (opset < 11) are already inputs here: the frontend upgrades
every model to opset 13 or newer with the ONNX version converter, which moves them.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common

from qcc.irutils import (
    add_initializer,
    const_array,
    default_opset,
    remove_node_bypassing,
    take_over,
    unique_name,
)
from qcc.passes._base import QccPass
from qcc.passes._control_flow import inline_constant_ifs, unroll_constant_loops
from qcc.passes._folding import evaluate, replace_with_constant
from qcc.passes._split_concat import push_splits

logger = logging.getLogger(__name__)

_NEVER_FOLD = frozenset(
    {"DequantizeLinear", "QuantizeLinear", "RandomNormal", "RandomUniform", "RandomNormalLike",
     "RandomUniformLike", "Multinomial", "Bernoulli", "If", "Loop", "Scan"}
)
_EXPANDING = frozenset({"ConstantOfShape", "Expand", "Tile", "Range"})
_MAX_EXPANDED = 1 << 20
# Rounds of fold-then-inline (or unroll-then-fold): an If nested in a taken branch is inlined in the next round.
_MAX_INLINE_ROUNDS = 16


class CanonicalizePass(QccPass):
    """Removes no-op nodes and folds constants (see module docstring)."""

    name = "canonicalize"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model).modified
        graph, opset = model.graph, default_opset(model)
        for node in list(graph):
            if node.op_type == "Identity" and node.domain == "":
                remove_node_bypassing(graph, node)
                modified = True
            elif node.op_type == "Dropout" and node.domain == "" and not _used(node.outputs[1:]):
                remove_node_bypassing(graph, node)
                modified = True
        modified |= fold_constants(model)
        if self.ctx.options.target == "tflite":
            for _round in range(_MAX_INLINE_ROUNDS):
                if not unroll_constant_loops(graph, opset):
                    break
                modified = True
                fold_constants(model)
        for node in list(graph):
            if node.op_type == "ReduceMean" and node.domain == "":
                modified |= _spatial_mean_to_global_pool(graph, node, opset)
            elif node.op_type == "Pad" and node.domain == "":
                modified |= _fold_pad_into_conv(graph, node)
            elif node.op_type == "Gemm" and node.domain == "":
                modified |= _fold_gemm_factors(graph, node)
        modified |= push_splits(graph)
        modified |= common.RemoveUnusedNodesPass()(model).modified
        return ir.passes.PassResult(model, modified)


def _fold_gemm_factors(graph: ir.Graph, node: ir.Node) -> bool:
    """Gemm's ``alpha`` into a constant B and ``beta`` into a constant C (each then 1)."""
    modified = False
    for index, attr in ((1, "alpha"), (2, "beta")):
        factor = node.attributes[attr].as_float() if attr in node.attributes else 1.0
        value = node.inputs[index] if len(node.inputs) > index else None
        array = const_array(value)
        if factor == 1.0 or array is None or array.dtype.kind != "f":
            continue
        scaled = add_initializer(graph, f"{value.name}_{attr}", (array * factor).astype(array.dtype))
        node.replace_input_with(index, scaled)
        node.attributes[attr] = ir.AttrFloat32(attr, 1.0)
        modified = True
    return modified


def _fold_pad_into_conv(graph: ir.Graph, pad: ir.Node) -> bool:
    out = pad.outputs[0]
    consumers = out.consumers()
    if len(consumers) != 1 or out.is_graph_output() or consumers[0].op_type != "Conv":
        return False
    conv = consumers[0]
    mode = pad.attributes.get("mode")
    if (mode is not None and mode.as_string() != "constant") or conv.inputs[0] is not out:
        return False
    pads = const_array(pad.inputs[1]) if len(pad.inputs) > 1 else None
    value = const_array(pad.inputs[2]) if len(pad.inputs) > 2 and pad.inputs[2] is not None else None
    has_axes = len(pad.inputs) > 3 and pad.inputs[3] is not None
    if pads is None or has_axes or (value is not None and np.any(value != 0)) or np.any(pads < 0):
        return False
    rank = len(pads) // 2
    begin, end = pads[:rank], pads[rank:]
    if rank < 3 or np.any(begin[:2]) or np.any(end[:2]):
        return False
    auto_pad = conv.attributes.get("auto_pad")
    if auto_pad is not None and auto_pad.as_string() not in ("NOTSET", ""):
        return False
    old = conv.attributes.get("pads")
    spatial = rank - 2
    current = np.array(old.as_ints() if old is not None else [0] * (2 * spatial), dtype=np.int64)
    merged = current + np.concatenate([begin[2:], end[2:]])
    conv.attributes["pads"] = ir.AttrInt64s("pads", [int(p) for p in merged])
    conv.replace_input_with(0, pad.inputs[0])
    graph.remove(pad, safe=True)
    return True


def _spatial_mean_to_global_pool(graph: ir.Graph, node: ir.Node, opset: int) -> bool:
    x = node.inputs[0]
    if x is None or x.shape is None or len(x.shape) != 4:
        return False
    if opset >= 18:
        axes_value = node.inputs[1] if len(node.inputs) > 1 else None
        axes = const_array(axes_value) if axes_value is not None else None
    else:
        attr = node.attributes.get("axes")
        axes = np.array(attr.as_ints()) if attr is not None else None
    if axes is None or sorted(int(a) % 4 for a in np.ravel(axes)) != [2, 3]:
        return False
    pool = ir.node("GlobalAveragePool", [x], name=node.name)
    graph.insert_before(node, pool)
    result = pool.outputs[0]
    result.name = unique_name(graph, f"{node.name}_pooled")
    keepdims = node.attributes.get("keepdims")
    if keepdims is not None and keepdims.as_int() == 0:
        shape = add_initializer(graph, f"{node.name}_shape", np.array([0, -1], dtype=np.int64))
        reshape = ir.node("Reshape", [result, shape], name=f"{node.name}_flatten")
        graph.insert_before(node, reshape)
        result.shape = ir.Shape([x.shape[0], x.shape[1], 1, 1])
        result.type = x.type
        result = reshape.outputs[0]
    take_over(node.outputs[0], result)
    graph.remove(node, safe=True)
    return True


def _used(values: list[ir.Value]) -> bool:
    return any(v is not None and (v.uses() or v.is_graph_output()) for v in values)


def fold_constants(model: ir.Model) -> bool:
    """Evaluates every node whose inputs are all constants and replaces it by its result.

    An ``If`` whose condition is (or becomes) constant is replaced by its taken branch, and
    folding goes on over the branch's nodes.

    Returns:
        True if anything was folded.
    """
    graph = model.graph
    opset = default_opset(model)
    folded = 0
    for _round in range(_MAX_INLINE_ROUNDS):
        for node in list(graph):
            result = fold_node(node, opset)
            if result is None:
                continue
            for out, array in zip(node.outputs, result, strict=True):
                replace_with_constant(graph, out, array)
            graph.remove(node, safe=False)
            folded += 1
        # An If whose condition folded is replaced by its branch, which may fold further.
        if not inline_constant_ifs(graph, opset):
            break
        folded += 1
    if folded:
        logger.debug("folded %d constant nodes", folded)
    return folded > 0


def fold_node(node: ir.Node, opset: int) -> list[np.ndarray] | None:
    """The node's outputs if they are constants (all inputs constant, or Shape of a static shape), else None."""
    if node.domain not in ("", "ai.onnx") or node.op_type in _NEVER_FOLD:
        return None
    if node.op_type == "Shape":
        result = _fold_shape(node)
    elif node.inputs and all(v is None or v.const_value is not None for v in node.inputs):
        result = evaluate(node, opset)
    else:
        return None
    if result is not None and node.op_type in _EXPANDING and any(r.size > _MAX_EXPANDED for r in result):
        return None
    return result


def _fold_shape(node: ir.Node) -> list[np.ndarray] | None:
    shape = node.inputs[0].shape if node.inputs[0] is not None else None
    if shape is None or not all(isinstance(d, int) for d in shape):
        return None
    dims = np.array([int(d) for d in shape], dtype=np.int64)
    start = node.attributes.get("start")
    end = node.attributes.get("end")
    lo = start.as_int() if start is not None else 0
    hi = end.as_int() if end is not None else len(dims)
    return [dims[lo:hi]]
