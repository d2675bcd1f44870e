"""Canonicalize: bring the float graph to the one form the later passes expect.

* ``Constant`` nodes become initializers, so every constant is ``Value.const_value``.
* ``Identity`` and inference-mode ``Dropout`` are removed (their output is their input).
* Constant folding: a node whose inputs are all constants is evaluated once (with the ONNX
  reference evaluator) and replaced by its result; ``Shape`` of a fully static tensor is folded
  first, so shape subgraphs (Shape -> Gather -> Concat -> Reshape) collapse into constants.
  Results that would be large materializations (ConstantOfShape/Expand/Tile/Range above 1M
  elements) are left as nodes.
* ``If`` with a constant condition (an initializer, a ``Constant``, or one that folding makes
  constant) is replaced by its taken branch: the branch's nodes move into the graph before it
  (values renamed where their names are taken; references to outer values are the same IR
  values, so they need no renaming), its constants become initializers, and the branch outputs
  replace the ``If`` outputs, under their names. Folding then runs again over the inlined nodes, and an ``If``
  nested in the taken branch is inlined in turn. Every target benefits: no subgraph is left for
  the plan (which does not look inside subgraphs) and TFLite needs no IF. This is part of
  :func:`fold_constants`, so the TFLite writer's folding with static shapes also inlines an
  ``If`` on a shape (``Shape(x)[1] == 512``).
* For ``--target tflite`` (one subgraph, no WHILE written), a ``Loop`` with a constant trip count
  ``M`` (at most ``_MAX_UNROLLED_NODES`` nodes once unrolled), no run-time exit (the body passes
  its condition through or returns a constant true) and no subgraph in its body is unrolled: ``M``
  copies of the body, copy ``i`` reading the constant ``i`` as iteration number and copy ``i - 1``'s
  loop-carried outputs; the final carried values are the last copy's, each scan output is
  ``Concat(Unsqueeze(s_0, 0), ..., Unsqueeze(s_{M-1}, 0))``. Folding then removes what only
  depended on the iteration number. Other targets keep the ``Loop`` (their runtimes run it).
* ``ReduceMean`` over the spatial axes (2, 3) of a 4-D tensor becomes ``GlobalAveragePool``
  (followed by a ``Reshape`` to (N, C) when ``keepdims=0``): the same numbers, and an op every
  target has an int8 kernel for.
* A zero-constant ``Pad`` of the spatial axes that feeds only a ``Conv`` (explicit "same"
  padding, as TensorFlow-style exports write it) becomes the Conv's own ``pads``: the same
  numbers, and no float op between the quantizer and the integer conv.
* Gemm's ``alpha`` and ``beta`` are folded into a constant B and C: every backend then sees
  ``A @ B + C`` (TFLite's FULLY_CONNECTED has no factors).
* Unused nodes and initializers are dropped.

Clip's ``min``/``max`` attributes (opset < 11) are already inputs here: the frontend upgrades
every model to opset 13 or newer with the ONNX version converter, which moves them.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common
from onnx.reference import ReferenceEvaluator

from qcc.irutils import (
    NameAllocator,
    add_initializer,
    const_array,
    default_opset,
    remove_node_bypassing,
    take_over,
    unique_name,
)
from qcc.passes._base import QccPass

logger = logging.getLogger(__name__)

_NEVER_FOLD = frozenset(
    {"DequantizeLinear", "QuantizeLinear", "RandomNormal", "RandomUniform", "RandomNormalLike",
     "RandomUniformLike", "Multinomial", "Bernoulli", "If", "Loop", "Scan"}
)
_EXPANDING = frozenset({"ConstantOfShape", "Expand", "Tile", "Range"})
_MAX_EXPANDED = 1 << 20
# Rounds of fold-then-inline (or unroll-then-fold): an If nested in a taken branch is inlined in the next round.
_MAX_INLINE_ROUNDS = 16
# A Loop is unrolled (tflite) only while its copies stay this small.
_MAX_UNROLLED_NODES = 1024


class CanonicalizePass(QccPass):
    """Removes no-op nodes and folds constants (see module docstring)."""

    name = "canonicalize"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model).modified
        graph = model.graph
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
                if not unroll_constant_loops(graph, default_opset(model)):
                    break
                modified = True
                fold_constants(model)
        for node in list(graph):
            if node.op_type == "ReduceMean" and node.domain == "":
                modified |= _spatial_mean_to_global_pool(graph, node, default_opset(model))
            elif node.op_type == "Pad" and node.domain == "":
                modified |= _fold_pad_into_conv(graph, node)
            elif node.op_type == "Gemm" and node.domain == "":
                modified |= _fold_gemm_factors(graph, node)
        modified |= common.RemoveUnusedNodesPass()(model).modified
        return ir.passes.PassResult(model, modified)


def inline_constant_ifs(graph: ir.Graph, opset: int) -> bool:
    """Replaces every ``If`` of the graph whose condition is a constant by its taken branch.

    Returns:
        True if any ``If`` was inlined.
    """
    inlined = False
    names = None
    for node in list(graph):
        if node.op_type != "If" or node.domain not in ("", "ai.onnx"):
            continue
        condition = const_array(node.inputs[0])
        if condition is None or condition.size != 1:
            continue
        names = names or NameAllocator(graph)
        taken = "then_branch" if bool(condition.reshape(())) else "else_branch"
        _inline_branch(graph, node, node.attributes[taken].as_graph(), names, opset)
        inlined = True
    return inlined


def _inline_branch(graph: ir.Graph, node: ir.Node, branch: ir.Graph, names: NameAllocator, opset: int) -> None:
    """Moves ``branch``'s constants and nodes before ``node`` and wires ``node``'s outputs to its outputs."""
    results = list(branch.outputs)
    branch.outputs.clear()
    for name in list(branch.initializers):
        value = branch.initializers.pop(name)
        value.name = names.new(name)
        graph.register_initializer(value)
    moved = set()
    for inner in list(branch):
        moved.add(id(inner))
        branch.remove(inner, safe=False)
        for out in inner.outputs:
            if out.name:
                out.name = names.new(out.name)
        if inner.name:
            inner.name = names.new(inner.name)
        graph.insert_before(node, inner)
    _take_results(graph, node, results, names, opset, moved)
    graph.remove(node, safe=True)


def _take_results(
    graph: ir.Graph, node: ir.Node, results: list[ir.Value], names: NameAllocator, opset: int, moved: set[int]
) -> None:
    """Makes ``results`` (values now in ``graph``) stand for ``node``'s outputs.

    A result written by a node just moved into the graph (``moved``: node ids) takes the output's
    name, so later passes that match values by name (the TFLite writer's folded instances) find
    it; an outer value passed through keeps its own name, behind an Identity if the output is a
    graph output.
    """
    taken: set[int] = set()
    for out, result in zip(node.outputs, results, strict=True):
        array = const_array(result)
        producer = result.producer()
        if array is None and producer is not None and producer.op_type == "Constant":
            # A Constant that is a branch output is not lifted to an initializer; take its value.
            folded = _evaluate(producer, opset)
            array = None if folded is None else folded[0]
        if array is not None and not result.is_graph_input():
            _replace_with_constant(graph, out, array)
        elif producer is not None and id(producer) in moved and id(result) not in taken:
            taken.add(id(result))
            name, static = out.name, result.shape is not None and all(isinstance(d, int) for d in result.shape)
            # The branch's own shape is the one to keep when shape inference could not merge the branches'.
            shape, dtype = (result.shape if static else out.shape), (result.type or out.type)
            out.replace_all_uses_with(result, replace_graph_outputs=True)
            out.name = None
            result.name, result.shape, result.type = name, shape, dtype
        elif not out.is_graph_output():
            out.replace_all_uses_with(result)
        else:
            # A graph input (or another graph output) passed through: its name cannot change.
            copy = ir.node("Identity", [result], name=names.new(f"{node.name or node.op_type}_result"))
            graph.insert_before(node, copy)
            take_over(out, copy.outputs[0])


def unroll_constant_loops(graph: ir.Graph, opset: int) -> bool:
    """Unrolls every ``Loop`` of the graph that can be (see module docstring).

    Returns:
        True if any ``Loop`` was unrolled.
    """
    unrolled = False
    names = None
    for node in list(graph):
        if node.op_type != "Loop" or node.domain not in ("", "ai.onnx"):
            continue
        body = node.attributes["body"].as_graph()
        trips = _unrollable_trips(node, body)
        if trips is None:
            continue
        names = names or NameAllocator(graph)
        _unroll(graph, node, body, trips, names, opset)
        unrolled = True
    return unrolled


def _unrollable_trips(node: ir.Node, body: ir.Graph) -> int | None:
    """The constant trip count of a Loop that can be unrolled, else None (why: logged)."""
    trip = const_array(node.inputs[0]) if node.inputs and node.inputs[0] is not None else None
    start = node.inputs[1] if len(node.inputs) > 1 else None
    go_on = const_array(start) if start is not None else np.array(True)
    cond_in, cond_out = body.inputs[1], body.outputs[0]
    producer = cond_out.producer()
    passed = cond_out is cond_in or (producer is not None and producer.op_type == "Identity"
                                     and producer.inputs[0] is cond_in)
    constant_out = const_array(cond_out)
    reason = None
    if trip is None or trip.size != 1:
        reason = "the trip count is not a constant"
    elif go_on is None or not bool(np.ravel(go_on)[0]):
        reason = "the initial condition is not a constant true"
    elif not passed and (constant_out is None or not bool(np.ravel(constant_out)[0])):
        reason = "the body computes its exit condition"
    elif any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for n in body for a in n.attributes.values()):
        reason = "the body holds a subgraph"
    elif not 1 <= int(np.ravel(trip)[0]) or int(np.ravel(trip)[0]) * max(1, len(body)) > _MAX_UNROLLED_NODES:
        reason = f"{int(np.ravel(trip)[0])} iterations of {len(body)} nodes"
    if reason is not None:
        logger.debug("not unrolling Loop %s: %s", node.name, reason)
        return None
    return int(np.ravel(trip)[0])


def _unroll(graph: ir.Graph, node: ir.Node, body: ir.Graph, trips: int, names: NameAllocator, opset: int) -> None:
    carried = list(node.inputs[2:])
    count = len(carried)
    constants = {}
    for name, value in body.initializers.items():
        constants[id(value)] = add_initializer(graph, names.new(name), value.const_value.numpy(), exact=True)
    true = add_initializer(graph, names.new(f"{node.name}_true"), np.array(True), exact=True)
    scans: list[list[ir.Value]] = [[] for _ in body.outputs[1 + count :]]
    moved: set[int] = set()
    for i in range(trips):
        mapping = dict(constants)
        iteration = add_initializer(graph, names.new(f"{node.name}_i{i}"), np.array(i, np.int64), exact=True)
        mapping[id(body.inputs[0])], mapping[id(body.inputs[1])] = iteration, true
        for inner_in, value in zip(body.inputs[2:], carried, strict=True):
            mapping[id(inner_in)] = value
        for inner in body:
            outputs = [
                ir.Value(name=names.new(f"{o.name}_i{i}") if o.name else None, type=o.type, shape=o.shape)
                for o in inner.outputs
            ]
            copy = ir.Node(
                inner.domain,
                inner.op_type,
                [None if v is None else mapping.get(id(v), v) for v in inner.inputs],
                attributes=list(inner.attributes.values()),
                outputs=outputs,
                version=inner.version,
                name=names.new(f"{inner.name or inner.op_type}_i{i}"),
            )
            mapping.update((id(o), c) for o, c in zip(inner.outputs, outputs, strict=True))
            graph.insert_before(node, copy)
            moved.add(id(copy))
        carried = [mapping.get(id(v), v) for v in body.outputs[1 : 1 + count]]
        for k, value in enumerate(body.outputs[1 + count :]):
            scans[k].append(mapping.get(id(value), value))
    results = list(carried)
    axes = add_initializer(graph, names.new(f"{node.name}_axis0"), np.array([0], np.int64), exact=True)
    for k, pieces in enumerate(scans):
        rows = []
        for i, piece in enumerate(pieces):
            row = ir.node("Unsqueeze", [piece, axes], name=names.new(f"{node.name}_scan{k}_i{i}"))
            graph.insert_before(node, row)
            rows.append(row.outputs[0])
        stacked = ir.node("Concat", rows, attributes={"axis": 0}, name=names.new(f"{node.name}_scan{k}"))
        graph.insert_before(node, stacked)
        moved.add(id(stacked))
        results.append(stacked.outputs[0])
    _take_results(graph, node, results, names, opset, moved)
    graph.remove(node, safe=True)


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
                _replace_with_constant(graph, out, array)
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
        result = _evaluate(node, opset)
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


def _evaluate(node: ir.Node, opset: int) -> list[np.ndarray] | None:
    names = [f"in{i}" if v is not None else "" for i, v in enumerate(node.inputs)]
    proto = ir.serde.serialize_node(node)
    del proto.input[:]
    proto.input.extend(names)
    del proto.output[:]
    proto.output.extend(f"out{i}" for i in range(len(node.outputs)))
    feeds = {n: const_array(v) for n, v in zip(names, node.inputs, strict=True) if n}
    try:
        evaluator = ReferenceEvaluator(proto, opsets={"": opset})
        results = evaluator.run(None, feeds)
    except Exception as exc:  # noqa: BLE001 - an op the reference cannot run simply stays a node
        logger.debug("not folding %s (%s): %s", node.name, node.op_type, exc)
        return None
    return [np.asarray(r) for r in results]


def _replace_with_constant(graph: ir.Graph, out: ir.Value, array: np.ndarray) -> None:
    """Rewires every use of ``out`` (graph outputs too) to a new initializer of the same name."""
    name = out.name
    constant = ir.Value(
        name=None,
        shape=ir.Shape(array.shape),
        type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
        const_value=ir.tensor(array, name=name),
    )
    out.replace_all_uses_with(constant, replace_graph_outputs=True)
    out.name = None
    constant.name = name
    graph.register_initializer(constant)
