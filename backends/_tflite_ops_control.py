"""TFLite lowering rules: control flow and recurrent ops other than LSTM (If, Loop, Scan, GRU, RNN).

Rules follow docs/tflite.md "Adding a lowering". ``LOWERINGS`` is merged into the registry in
``_tflite_ops`` after the base rules (a key here replaces a base rule of the same op).
``INT8_OPS`` / ``SHARED_SCALE_OPS`` extend ``TFLITE_SPEC`` for ops lowered here with an int8
kernel (see ``backends/tflite.py``).

qcc writes one TFLite subgraph, so control flow is flattened into it:

* ``If`` with a run-time condition: both branches are lowered into the main graph (float
  islands: the plan and quantization passes do not look inside subgraphs, so every branch node
  runs float) and each output is ``SELECT_V2(cond, then_out, else_out)``, which is ``If`` exactly
  when both branches give the same shape and type and computing the untaken one is harmless (ONNX
  ops have no side effects; an index op in the untaken branch must still be in range, as the
  branch is computed on the same inputs). Branches of different shapes would need TFLite's IF
  op with a subgraph per branch, which qcc's writer does not produce: refused, naming the shapes.
  An ``If`` whose condition is constant from the start is inlined by canonicalize; one whose
  condition becomes constant only once the input shapes are static (``Shape(x)[1] == 512``) is
  lowered here as its taken branch alone.
* ``Loop`` with a constant trip count is unrolled by canonicalize for this target
  (``passes/canonicalize.py``); one left here has a run-time trip count or condition and would
  need TFLite's WHILE with its condition and body subgraphs: refused.
* ``Scan``: refused for the same reason (WHILE); ONNX exporters write recurrences as LSTM/GRU/RNN
  or Loop, which qcc unrolls.
* ``GRU`` and ``RNN``: unrolled time steps (``_tflite_ops_rnn``, like LSTM).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering, cut_graph_fix
from qcc.backends._tflite_ops_rnn import gru, rnn
from qcc.backends._tflite_ops_window import unsupported
from qcc.errors import BackendError
from qcc.irutils import const_array
from qcc.passes._folding import standalone_node
from qcc.passes.canonicalize import fold_node
from qcc.passes.layout_nhwc import EITHER_LAYOUT_OPS, defines_layout

_WHILE = (
    "LiteRT runs it only as a WHILE op with condition and body subgraphs, which qcc's TFLite writer does not write yet"
)


def if_(lw: Lowering, node: ir.Node) -> None:
    """If (run-time condition) -> both branches in the main graph, SELECT_V2 per output.

    Raises:
        BackendError: the branches' outputs differ in shape or type, or a branch node cannot be
            lowered (named, with the branch).
    """
    branches = {}
    for key in ("then_branch", "else_branch"):
        attr = node.attributes.get(key)
        if attr is None:
            raise unsupported(node, f"no {key}")
        branches[key] = attr.as_graph()
    then_graph, else_graph = branches["then_branch"], branches["else_branch"]
    for key, graph in branches.items():
        if len(graph.outputs) != len(node.outputs):
            raise unsupported(node, f"{key} has {len(graph.outputs)} outputs, the node {len(node.outputs)}")
    constant = const_array(node.inputs[0])
    if constant is not None and constant.size == 1:
        # Constant only once shapes are static (a condition on Shape(x)): the taken branch alone.
        key = "then_branch" if bool(constant.reshape(())) else "else_branch"
        _lower_graph(lw, node, key, branches[key])
        for out, result in zip(node.outputs, branches[key].outputs, strict=True):
            tensor = lw.read(result, False)
            lw.alias(out, tensor)
            if _static(out) is None:
                # Shape inference could not merge branches of different shapes; later branches fold Shape(out).
                out.shape = ir.Shape(tensor.shape)
        return
    # Shapes known before lowering are checked first: a mismatch is then reported as such rather
    # than as whatever in a branch cannot be lowered.
    _check_same_signature(
        node,
        [
            (_static(a), _static(b), a.dtype, b.dtype)
            for a, b in zip(then_graph.outputs, else_graph.outputs, strict=True)
        ],
        known=True,
    )
    condition = lw.read(node.inputs[0], False)
    if condition.dtype != np.bool_ or int(np.prod(condition.shape)) != 1:
        raise unsupported(
            node, f"condition of type {condition.dtype} and shape {list(condition.shape)} (If takes one bool)"
        )
    if condition.shape:
        # A scalar condition broadcasts to any output shape, scalar outputs included.
        scalar = lw.model.tensor(f"{node.name}_cond", (), np.bool_)
        condition = lw.reshape(condition, scalar, node.name)
    for key, graph in branches.items():
        _lower_graph(lw, node, key, graph)
    results = zip(then_graph.outputs, else_graph.outputs, strict=True)
    pairs = [(lw.read(a, False), lw.read(b, False)) for a, b in results]
    _check_same_signature(node, [(a.shape, b.shape, a.dtype, b.dtype) for a, b in pairs], known=False)
    for index, (a, b) in enumerate(pairs):
        if _static(node.outputs[index]) is None:
            node.outputs[index].shape = ir.Shape(a.shape)  # known once the branches were lowered
        out = lw.output(node, index)
        if a.dtype != out.dtype or a.shape != out.shape:
            raise unsupported(
                node,
                f"output {index} is {a.dtype}{list(a.shape)} in the branches, "
                f"{out.dtype}{list(out.shape)} in the graph",
            )
        lw.op("SELECT_V2", [condition, a, b], [out], "SelectV2Options", source=node.name)


def _check_same_signature(node: ir.Node, outputs, known: bool) -> None:
    """Refuses branches whose outputs differ in shape or element type (SELECT_V2 needs one of each).

    Args:
        node: the If.
        outputs: per output, (then shape, else shape, then type, else type); a shape may be None.
        known: check only outputs whose shapes are both known (before lowering, from the IR).
    """
    for index, (shape_a, shape_b, type_a, type_b) in enumerate(outputs):
        if known and None in (shape_a, shape_b, type_a, type_b):
            continue
        if tuple(shape_a) != tuple(shape_b) or _type_name(type_a) != _type_name(type_b):
            described = [f"{_type_name(t)}{list(s)}" for t, s in ((type_a, shape_a), (type_b, shape_b))]
            raise BackendError(
                f"node {node.name!r} (If): output {index} is {described[0]} in then_branch and {described[1]} "
                "in else_branch; qcc computes both branches and selects with SELECT_V2, which needs one static "
                "shape and type, and TFLite's IF op needs branch subgraphs qcc's writer does not write yet.",
                "make the If's condition a constant (an initializer; it often depends on an input such as a "
                "sample-rate flag) so qcc inlines the taken branch, or make both branches return the same "
                "static shape.",
            )


def _type_name(dtype) -> str:
    """One spelling for an IR element type and a numpy one (``float32``)."""
    if dtype is None:
        return "?"
    return np.dtype(dtype.numpy()).name if isinstance(dtype, ir.DataType) else np.dtype(dtype).name


def _static(value: ir.Value) -> tuple[int, ...] | None:
    if value.shape is None or not all(isinstance(d, int) for d in value.shape):
        return None
    return tuple(int(d) for d in value.shape)


def _lower_graph(lw: Lowering, node: ir.Node, key: str, graph: ir.Graph) -> None:
    """Lowers every node of a branch into the main graph, float (see module docstring)."""
    from qcc.backends._tflite_ops import LOWERINGS

    opset = node.graph.opset_imports.get("", 17) if node.graph is not None else 17
    where = f"{node.name!r} {key}"
    for inner in graph:
        if inner.op_type == "Constant" and inner.domain in ("", "ai.onnx"):
            _constant(lw, inner)
            continue
        _infer_shapes(inner, opset)
        folded = fold_node(inner, opset)
        if folded is not None:
            # The main graph was folded with static shapes before lowering; branches were not.
            for out, array in zip(inner.outputs, folded, strict=True):
                out.const_value = ir.tensor(array, name=out.name)
                out.shape = ir.Shape(array.shape)
            continue
        rule = LOWERINGS.get(inner.op_type) if inner.domain in ("", "ai.onnx") else None
        if rule is None:
            raise BackendError(
                f"node {inner.name!r} ({inner.op_type}) in {where} (If, run-time condition) has no TFLite lowering "
                "in qcc, int8 or float.",
                f"make the If's condition a constant (an initializer) so qcc inlines the taken branch, or "
                f"{cut_graph_fix(node, 'the tensors the If and its branches read')}",
            )
        if defines_layout(inner) and inner.op_type not in EITHER_LAYOUT_OPS:
            raise BackendError(
                f"node {inner.name!r} ({inner.op_type}) in {where} (If) is a channels-first image op; qcc's NHWC "
                "layout pass does not rewrite If branches.",
                "make the If's condition a constant (an initializer) so qcc inlines the taken branch, or move "
                "the op out of the branch.",
            )
        try:
            rule(lw, inner)
        except BackendError as error:
            raise BackendError(f"in {where} (If): {error.problem}", error.fix) from None


def _infer_shapes(node: ir.Node, opset: int) -> None:
    """Static output shapes of a branch node from its inputs' (ONNX's inference of one node).

    The writer's shape inference ran over the branches before the values they read from outside
    had static shapes (an If's outputs whose branches differ, known only once the condition folds).
    """
    if all(_static(out) is not None for out in node.outputs):
        return
    if any(v is not None and (_static(v) is None or v.dtype is None) for v in node.inputs):
        return
    proto, names = standalone_node(node)
    types = {
        n: onnx.helper.make_tensor_type_proto(v.dtype.value, list(_static(v)))
        for n, v in zip(names, node.inputs, strict=True)
        if n
    }
    data = {
        n: onnx.numpy_helper.from_array(const_array(v))
        for n, v in zip(names, node.inputs, strict=True)
        if n and const_array(v) is not None
    }
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
        inferred = onnx.shape_inference.infer_node_outputs(schema, proto, types, data)
    except Exception:  # noqa: BLE001 - ONNX inference raises several types; the lowering then names the tensor
        return
    for i, out in enumerate(node.outputs):
        found = inferred.get(f"out{i}")
        if found is None or not found.tensor_type.HasField("shape"):
            continue
        dims = found.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            out.shape = ir.Shape([d.dim_value for d in dims])
            if out.dtype is None:
                out.dtype = ir.DataType(found.tensor_type.elem_type)


def _constant(lw: Lowering, node: ir.Node) -> None:
    """A Constant node left in a branch (one that is a branch output): a constant tensor."""
    attr = node.attributes.get("value")
    if attr is None:
        raise unsupported(node, "Constant without a tensor 'value'")
    array = attr.as_tensor().numpy()
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    lw.alias(node.outputs[0], lw.constant(node.outputs[0].name or "constant", array))


def loop(lw: Lowering, node: ir.Node) -> None:
    """Loop left after canonicalize (run-time trip count or condition, or too large): refused."""
    trip = const_array(node.inputs[0]) if node.inputs and node.inputs[0] is not None else None
    if trip is None:
        why = "its trip count is not a constant (a run-time input, or absent with a run-time condition)"
    else:
        why = "its trip count is constant but the loop could not be unrolled (run-time exit condition, or too large)"
    raise BackendError(
        f"node {node.name!r} (Loop): {why}; {_WHILE}.",
        "export the model with a fixed trip count and a body that always continues, so qcc unrolls it, or "
        "compile for --target ort.",
    )


def scan(lw: Lowering, node: ir.Node) -> None:
    """Scan: refused (see module docstring)."""
    raise BackendError(
        f"node {node.name!r} (Scan): {_WHILE}, and qcc does not unroll Scan.",
        "export the recurrence as LSTM/GRU/RNN (qcc unrolls those), or compile for --target ort.",
    )


LOWERINGS: dict = {"GRU": gru, "RNN": rnn, "If": if_, "Loop": loop, "Scan": scan}
INT8_OPS: frozenset[str] = frozenset()
SHARED_SCALE_OPS: frozenset[str] = frozenset()
