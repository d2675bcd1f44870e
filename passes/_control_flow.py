"""Control flow that canonicalize removes: If with a constant condition, Loop with a constant trip count.

* ``If`` with a constant condition (an initializer, a ``Constant``, or one that folding makes
  constant) is replaced by its taken branch: the branch's nodes move into the graph before it
  (values renamed where their names are taken; references to outer values are the same IR
  values, so they need no renaming), its constants become initializers, and the branch outputs
  replace the ``If`` outputs, under their names. Folding then runs again over the inlined nodes, and an ``If``
  nested in the taken branch is inlined in turn. Every target benefits: no subgraph is left for
  the plan (which does not look inside subgraphs) and TFLite needs no IF. This is part of
  :func:`~qcc.passes.canonicalize.fold_constants`, so the TFLite writer's folding with static shapes also inlines an
  ``If`` on a shape (``Shape(x)[1] == 512``).
* For ``--target tflite`` (one subgraph, no WHILE written), a ``Loop`` with a constant trip count
  ``M`` (at most ``_MAX_UNROLLED_NODES`` nodes once unrolled), no run-time exit (the body passes
  its condition through or returns a constant true) and no subgraph in its body is unrolled: ``M``
  copies of the body, copy ``i`` reading the constant ``i`` as iteration number and copy ``i - 1``'s
  loop-carried outputs; the final carried values are the last copy's, each scan output is
  ``Concat(Unsqueeze(s_0, 0), ..., Unsqueeze(s_{M-1}, 0))``. Folding then removes what only
  depended on the iteration number. Other targets keep the ``Loop`` (their runtimes run it).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from qcc.irutils import NameAllocator, add_initializer, const_array, take_over
from qcc.passes._folding import evaluate, replace_with_constant

logger = logging.getLogger(__name__)

# A Loop is unrolled (tflite) only while its copies stay this small.
_MAX_UNROLLED_NODES = 1024


def _onnx_nodes(graph: ir.Graph, op_type: str) -> list[ir.Node]:
    """The graph's nodes of the default-domain ``op_type``, listed up front (the caller rewrites the graph)."""
    return [node for node in graph if node.op_type == op_type and node.domain in ("", "ai.onnx")]


def inline_constant_ifs(graph: ir.Graph, opset: int) -> bool:
    """Replaces every ``If`` of the graph whose condition is a constant by its taken branch.

    Returns:
        True if any ``If`` was inlined.
    """
    inlined = False
    names = None
    for node in _onnx_nodes(graph, "If"):
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
            folded = evaluate(producer, opset)
            array = None if folded is None else folded[0]
        if array is not None and not result.is_graph_input():
            replace_with_constant(graph, out, array)
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
    for node in _onnx_nodes(graph, "Loop"):
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
