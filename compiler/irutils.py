"""Small helpers over onnx-ir used by passes and backends."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

FLOAT_TYPES = frozenset({ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE})


def is_float(value: ir.Value | None) -> bool:
    """True if the value is known to hold a floating-point tensor."""
    return value is not None and value.dtype in FLOAT_TYPES


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """Returns the value's constant contents (initializer or folded constant), or None."""
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()


def set_constant(value: ir.Value, array: np.ndarray) -> None:
    """Replaces a constant value's contents with ``array`` as float32 (its shape too)."""
    array = np.array(array, np.float32, order="C")  # (ascontiguousarray would make a scalar 1-d)
    value.const_value = ir.Tensor(array, name=value.name)
    value.shape = ir.Shape(array.shape)


def private_constants(node: ir.Node) -> bool:
    """The node has constant inputs after its first, and each is read by this node alone (a
    rewrite of them changes no other node and no graph input or output)."""
    weights = [v for v in node.inputs[1:] if v is not None]
    return bool(weights) and all(
        const_array(v) is not None and len(v.uses()) == 1 and not v.is_graph_output() and not v.is_graph_input()
        for v in weights
    )


def default_opset(model: ir.Model) -> int:
    """Returns the model's version of the default ONNX domain."""
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))


def attr_int(node: ir.Node, name: str, default: int) -> int:
    """Returns an integer attribute of the node, or the default when absent."""
    attr = node.attributes.get(name)
    return default if attr is None else attr.as_int()


def attr_float(node: ir.Node, name: str, default: float) -> float:
    """Returns a float attribute of the node, or the default when absent."""
    attr = node.attributes.get(name)
    return default if attr is None else attr.as_float()


def add_initializer(graph: ir.Graph, name: str, array: np.ndarray, *, exact: bool = False) -> ir.Value:
    """Adds a constant to the graph and returns its value.

    Args:
        graph: the graph.
        name: the name, made unique first unless ``exact`` (the caller already reserved it).
        array: the contents.
    """
    name = name if exact else unique_name(graph, name)
    value = ir.Value(
        name=name,
        shape=ir.Shape(array.shape),
        type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
        const_value=ir.tensor(array, name=name),
    )
    graph.register_initializer(value)
    return value


def unique_name(graph: ir.Graph, base: str) -> str:
    """Returns ``base`` or ``base_N``, whichever is not yet a value or node name in the graph."""
    return NameAllocator(graph).new(base)


class NameAllocator:
    """Hands out value and node names not yet used in a graph (one scan, then O(1) per name)."""

    def __init__(self, graph: ir.Graph) -> None:
        self.taken = _value_names(graph) | {node.name for node in graph if node.name}

    def new(self, base: str) -> str:
        """Returns ``base`` or ``base_N``, whichever is free, and reserves it."""
        name, i = base, 0
        while name in self.taken:
            i += 1
            name = f"{base}_{i}"
        self.taken.add(name)
        return name


def _value_names(graph: ir.Graph) -> set[str]:
    names = {v.name for v in graph.inputs} | set(graph.initializers)
    for node in graph:
        names.update(v.name for v in node.outputs)
    return names


def take_over(out: ir.Value, result: ir.Value) -> None:
    """Makes ``result`` stand for ``out``: every use, graph outputs included, its name, type and shape.

    The caller removes the node that wrote ``out``, which then has no uses.
    """
    name = out.name
    result.type, result.shape = out.type, out.shape
    out.replace_all_uses_with(result, replace_graph_outputs=True)
    out.name = None
    result.name = name


def consumers_of(value: ir.Value) -> list[ir.Node]:
    """Returns the nodes reading the value, each once, in no particular order."""
    return list({id(n): n for n in value.consumers()}.values())


def remove_node_bypassing(graph: ir.Graph, node: ir.Node, keep_input: int = 0) -> bool:
    """Removes a single-output node, wiring its consumers to its input ``keep_input``.

    When the output is a graph output, the input takes over the output's name so the model's
    interface is unchanged; when that input is itself a graph input, output or initializer (it
    cannot be renamed), the node is kept.

    Returns:
        True if the node was removed.
    """
    source = node.inputs[keep_input]
    out = node.outputs[0]
    if source is None:
        return False
    if not out.is_graph_output():
        out.replace_all_uses_with(source)
        graph.remove(node, safe=True)
        return True
    if source.is_graph_input() or source.is_graph_output() or source.is_initializer():
        return False
    name = out.name
    out.replace_all_uses_with(source, replace_graph_outputs=True)
    graph.remove(node, safe=True)
    out.name = None
    source.name = name
    if source.shape is None:
        source.shape = out.shape
    return True


_NO_SHAPE = "Field 'shape' of 'type' is required but missing."


def check_onnx(model: onnx.ModelProto | str) -> None:
    """Runs the ONNX checker on a model (or a model file), accepting inputs and outputs without a shape.

    The checker insists on a ``shape`` field that ONNX's IR makes optional (a graph input of
    unknown rank, as some exporters write); ONNX Runtime loads such models, and so does qcc.

    Raises:
        onnx.checker.ValidationError: any other violation.
    """
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        if str(exc).strip().splitlines()[:1] != [_NO_SHAPE]:
            raise
