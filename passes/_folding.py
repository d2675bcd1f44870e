"""Constant evaluation shared by canonicalize's folding, its control-flow rewrites and the TFLite backend.

* :func:`evaluate` runs one node on constant inputs with the ONNX reference evaluator (None when
  the reference cannot run it: the node then stays).
* :func:`replace_with_constant` makes a value an initializer of the same name, graph outputs
  included.
* :func:`standalone_node` is a node alone, its inputs and outputs renamed ``in<i>``/``out<i>``:
  what the reference evaluator and ONNX's one-node shape inference take.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_ir as ir
from onnx.reference import ReferenceEvaluator

from qcc.irutils import const_array

logger = logging.getLogger(__name__)


def evaluate(node: ir.Node, opset: int) -> list[np.ndarray] | None:
    """The outputs of ``node`` computed by the ONNX reference evaluator from its constant inputs.

    Returns:
        One array per output, or None when the reference cannot run the node (logged at debug level).
    """
    proto, names = standalone_node(node)
    feeds = {n: const_array(v) for n, v in zip(names, node.inputs, strict=True) if n}
    try:
        evaluator = ReferenceEvaluator(proto, opsets={"": opset})
        results = evaluator.run(None, feeds)
    except Exception as exc:  # noqa: BLE001 - an op the reference cannot run simply stays a node
        logger.debug("not folding %s (%s): %s", node.name, node.op_type, exc)
        return None
    return [np.asarray(r) for r in results]


def standalone_node(node: ir.Node) -> tuple[onnx.NodeProto, list[str]]:
    """The node as a proto of its own: inputs named ``in<i>`` ("" where omitted), outputs ``out<i>``.

    Returns:
        The proto and its input names, one per input of ``node``.
    """
    names = [f"in{i}" if v is not None else "" for i, v in enumerate(node.inputs)]
    proto = ir.serde.serialize_node(node)
    del proto.input[:]
    proto.input.extend(names)
    del proto.output[:]
    proto.output.extend(f"out{i}" for i in range(len(node.outputs)))
    return proto, names


def replace_with_constant(graph: ir.Graph, out: ir.Value, array: np.ndarray) -> ir.Value:
    """Rewires every use of ``out`` (graph outputs too) to a new initializer of the same name.

    Returns:
        The initializer.
    """
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
    return constant
