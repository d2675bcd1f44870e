"""Splits that undo a Concat: the Split is pushed toward the Concat until the two cancel.

Detection heads concatenate tensors of unrelated ranges and split them apart again. YOLOv5/v8
exports write ``Concat(box_i, cls_i, axis=1) -> Reshape(N, C, -1) -> Concat(axis=2) -> Split(axis=1)``:
box-regression logits (range ~[-10, 20]) and class logits travel together through three ops
that change nothing but the layout. An int8 target then gives both one scale (TFLite's and
TensorRT's CONCATENATION take one scale for all inputs), so the class logits get the box
logits' coarse step and near-threshold scores flip. Rewriting the graph so that each part
travels alone gives each its own scale, and drops the data movement on every target.

Three rules, applied until none matches; each needs the Split to be the only consumer of the
tensor it splits (else the rewrite would copy work) and static sizes along the split axis:

* ``Split(Concat(x_1..x_n, axis=a), axis=a)`` whose piece boundaries fall on input boundaries:
  each piece is its inputs (one input as is, several concatenated again). The Concat is gone.
* ``Split(Concat(x_1..x_n, axis=b), axis=a)`` with ``b != a``: each input is split along ``a``
  and piece ``j`` is the Concat along ``b`` of every input's piece ``j``.
* ``Split(Reshape(x), axis=a)`` when the Reshape keeps dims ``0..a`` of ``x`` and the output's
  dims after ``a`` are static but for at most one: ``x`` is split along ``a`` and each piece is
  reshaped to ``(0,)*a + (size,) + rest`` (``0`` copies the input's dim, ``-1`` the unknown one).

The tensor split may also be read by ``Shape`` nodes whose dims are then only gathered at
positions another tensor shares (the batch dim, in exports with a dynamic batch); those read
that tensor instead. The numbers are unchanged: each rule only reorders data movement.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from qcc.irutils import add_initializer, attr_int, const_array, take_over, unique_name

_MAX_ROUNDS = 32


def push_splits(graph: ir.Graph) -> bool:
    """Applies the three rules to every Split of ``graph`` until none matches; True if any did."""
    modified = False
    for _round in range(_MAX_ROUNDS):
        changed = False
        for node in list(graph):
            if node.op_type == "Split" and node.domain == "" and node.graph is graph:
                changed |= _push(graph, node)
        if not changed:
            break
        modified = True
    return modified


def _push(graph: ir.Graph, split: ir.Node) -> bool:
    x = split.inputs[0]
    producer = x.producer() if x is not None else None
    if producer is None or producer.domain != "" or x.is_graph_output() or x.shape is None:
        return False
    rank = len(x.shape)
    axis = attr_int(split, "axis", 0) % rank
    sizes = _split_sizes(split, x, axis)
    if sizes is None or 0 in sizes or len(sizes) != len(split.outputs) or None in split.outputs:
        return False
    if producer.op_type == "Concat":
        # Every input has the Concat output's dims but along the concat axis.
        concat_axis = attr_int(producer, "axis", 0) % rank
        shapes = _shape_reads(split, x, lambda i: i != concat_axis)
        if shapes is None or not producer.inputs or producer.inputs[0] is None:
            return False
        _rewire(shapes, producer.inputs[0])
        if concat_axis == axis:
            done = _cancel(graph, split, producer, axis, sizes)
        else:
            done = _through_concat(graph, split, producer, axis, sizes, concat_axis)
    elif producer.op_type == "Reshape":
        # Rewritten only when the Reshape keeps its input's dims up to the split axis.
        shapes = _shape_reads(split, x, lambda i: i <= axis)
        if shapes is None or producer.inputs[0] is None:
            return False
        _rewire(shapes, producer.inputs[0])
        done = _through_reshape(graph, split, producer, axis, sizes)
    else:
        return False
    if not done:
        _rewire(shapes, x)
    return done


def _rewire(shapes: list[ir.Node], value: ir.Value) -> None:
    for shape in shapes:
        shape.replace_input_with(0, value)


def _shape_reads(split: ir.Node, x: ir.Value, kept: Callable[[int], bool]) -> list[ir.Node] | None:
    """The ``Shape`` nodes reading ``x`` besides ``split``, if each reads only dims ``kept`` says
    another tensor shares (through constant non-negative ``Gather`` indices: a negative one counts
    from the end, which moves when the other tensor's rank differs); None if ``x`` has another use."""
    shapes = []
    for user, _index in x.uses():
        if user is split:
            continue
        if user.op_type != "Shape" or user.domain != "" or "start" in user.attributes or "end" in user.attributes:
            return None
        out = user.outputs[0]
        if out.is_graph_output():
            return None
        for reader, position in out.uses():
            indices = const_array(reader.inputs[1]) if reader.op_type == "Gather" and position == 0 else None
            if indices is None or np.any(indices < 0) or not all(kept(int(i)) for i in np.ravel(indices)):
                return None
        shapes.append(user)
    return shapes


def _split_sizes(split: ir.Node, x: ir.Value, axis: int) -> list[int] | None:
    total = x.shape[axis]
    if not isinstance(total, int):
        return None
    given = split.inputs[1] if len(split.inputs) > 1 else None
    if given is not None:
        array = const_array(given)
        return None if array is None else [int(s) for s in np.ravel(array)]
    attr = split.attributes.get("split")
    if attr is not None:
        return [int(s) for s in attr.as_ints()]
    count = len(split.outputs)
    if "num_outputs" in split.attributes:  # opset 18: the last piece may be smaller
        step = -(-total // count)
        return [min(step, total - i * step) for i in range(count)]
    return [total // count] * count if total % count == 0 else None


def _static_sizes(values: list[ir.Value], axis: int) -> list[int] | None:
    sizes = []
    for value in values:
        if value is None or value.shape is None or not isinstance(value.shape[axis], int):
            return None
        sizes.append(value.shape[axis])
    return sizes


def _cancel(graph: ir.Graph, split: ir.Node, concat: ir.Node, axis: int, sizes: list[int]) -> bool:
    inputs = list(concat.inputs)
    widths = _static_sizes(inputs, axis)
    if widths is None or sum(widths) != sum(sizes):
        return False
    groups, start = [], 0
    for size in sizes:
        stop, width = start, 0
        while stop < len(inputs) and width < size:
            width += widths[stop]
            stop += 1
        if width != size:
            return False
        groups.append(inputs[start:stop])
        start = stop
    for out, group in zip(split.outputs, groups, strict=True):
        if len(group) == 1:
            piece = group[0]
            if out.is_graph_output() and (
                piece.is_graph_input() or piece.is_graph_output() or piece.const_value is not None
            ):
                piece = _identity(graph, split, piece)
        else:
            node = ir.node("Concat", group, attributes={"axis": axis}, name=unique_name(graph, f"{concat.name}_part"))
            graph.insert_before(split, node)
            piece = node.outputs[0]
        if out.is_graph_output() or piece.name is None:
            take_over(out, piece)  # the graph output keeps its name
        else:
            out.replace_all_uses_with(piece)  # the piece keeps its own name (a Conv's output, say)
    graph.remove([split, concat], safe=True)
    return True


def _identity(graph: ir.Graph, before: ir.Node, value: ir.Value) -> ir.Value:
    # A graph input, output or constant cannot take over a graph output's name: copy it.
    node = ir.node("Identity", [value], name=unique_name(graph, f"{value.name}_piece"))
    graph.insert_before(before, node)
    return node.outputs[0]


def _split_node(
    graph: ir.Graph, before: ir.Node, x: ir.Value, axis: int, sizes: list[int], name: str
) -> list[ir.Value]:
    sizes_value = add_initializer(graph, f"{name}_sizes", np.array(sizes, dtype=np.int64))
    node = ir.node(
        "Split", [x, sizes_value], attributes={"axis": axis}, num_outputs=len(sizes), name=unique_name(graph, name)
    )
    graph.insert_before(before, node)
    for i, out in enumerate(node.outputs):
        out.name = unique_name(graph, f"{node.name}_output_{i}")
        out.type = x.type
        if x.shape is not None:
            dims = list(x.shape)
            dims[axis] = sizes[i]
            out.shape = ir.Shape(dims)
    return list(node.outputs)


def _through_concat(
    graph: ir.Graph, split: ir.Node, concat: ir.Node, axis: int, sizes: list[int], concat_axis: int
) -> bool:
    inputs = list(concat.inputs)
    if any(v is None or v.shape is None or v.shape[axis] != sum(sizes) for v in inputs):
        return False
    pieces = [_split_node(graph, split, v, axis, sizes, f"{split.name}_{i}") for i, v in enumerate(inputs)]
    for j, out in enumerate(split.outputs):
        node = ir.node(
            "Concat",
            [p[j] for p in pieces],
            attributes={"axis": concat_axis},
            name=unique_name(graph, f"{concat.name}_{j}"),
        )
        graph.insert_before(split, node)
        take_over(out, node.outputs[0])
    graph.remove([split, concat], safe=True)
    return True


def _through_reshape(graph: ir.Graph, split: ir.Node, reshape: ir.Node, axis: int, sizes: list[int]) -> bool:
    source, out = reshape.inputs[0], reshape.outputs[0]
    if source is None or source.shape is None or out.shape is None or len(source.shape) <= axis:
        return False
    if any(not _same_dim(source.shape[i], out.shape[i]) for i in range(axis + 1)):
        return False
    if "allowzero" in reshape.attributes and reshape.attributes["allowzero"].as_int() == 1:
        return False
    rest = list(out.shape)[axis + 1 :]
    unknown = [d for d in rest if not isinstance(d, int)]
    if len(unknown) > 1:
        return False
    rest = [d if isinstance(d, int) else -1 for d in rest]
    pieces = _split_node(graph, split, source, axis, sizes, f"{split.name}_source")
    for j, (piece, result) in enumerate(zip(pieces, split.outputs, strict=True)):
        shape = add_initializer(
            graph, f"{reshape.name}_{j}_shape", np.array([0] * axis + [sizes[j]] + rest, dtype=np.int64)
        )
        node = ir.node("Reshape", [piece, shape], name=unique_name(graph, f"{reshape.name}_{j}"))
        graph.insert_before(split, node)
        take_over(result, node.outputs[0])
    graph.remove([split, reshape], safe=True)
    return True


def _same_dim(a: object, b: object) -> bool:
    if isinstance(a, int) or isinstance(b, int):
        return a == b
    return getattr(a, "value", None) is not None and getattr(a, "value", None) == getattr(b, "value", None)
