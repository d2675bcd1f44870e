"""Invariants that hold between any two passes (checked with ``--verify-each``).

* The graph is topologically sorted and every input is defined before use.
* The model, serialized, passes the ONNX checker (below 2 GB).
* Annotations are consistent: only float tensors are quantized; FINAL parameters are finite,
  positive scales with zero points inside the type's range and shapes that match the axis;
  shared-scale references point at quantized tensors; absorbed nodes sit on a quantized producer.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from qcc.annotations import Decision, Stage, get_decision, get_quant, quantized_values
from qcc.irutils import check_onnx, is_float
from qcc.quantmath import qrange


def check_invariants(model: ir.Model, after: str) -> None:
    """Checks every invariant of the module docstring.

    Raises:
        onnx_ir.passes.InvariantError: the first violation, naming the pass that ran last.
    """
    problems = _sorted_problems(model.graph) + _annotation_problems(model.graph)
    if not problems:
        proto = ir.serde.serialize_model(model)
        if proto.ByteSize() < 2**31 - 1:
            try:
                check_onnx(proto)
            except onnx.checker.ValidationError as exc:
                problems.append(f"ONNX checker: {str(exc).splitlines()[0]}")
    if problems:
        raise ir.passes.InvariantError(f"after pass {after!r}: " + "; ".join(problems[:5]))


def _sorted_problems(graph: ir.Graph) -> list[str]:
    defined = {id(v) for v in graph.inputs} | {id(v) for v in graph.initializers.values()}
    problems = []
    for node in graph:
        for value in node.inputs:
            if value is not None and id(value) not in defined and value.const_value is None:
                problems.append(f"node {node.name!r} reads {value.name!r} before it is defined")
        defined.update(id(v) for v in node.outputs)
    return problems


def _annotation_problems(graph: ir.Graph) -> list[str]:
    problems = []
    names = {v.name for v in quantized_values(graph)}
    for value in quantized_values(graph):
        quant = get_quant(value)
        if value.dtype is not None and not is_float(value):
            problems.append(f"{value.name!r} is {value.dtype} but annotated as quantized")
        if quant.shared_with is not None and quant.shared_with not in names:
            problems.append(f"{value.name!r} shares parameters with unquantized {quant.shared_with!r}")
        if quant.stage != Stage.FINAL:
            continue
        scale, zero_point = np.asarray(quant.scale), np.asarray(quant.zero_point)
        if not np.all(np.isfinite(scale)) or not np.all(scale > 0):
            problems.append(f"{value.name!r} has a non-positive or non-finite scale")
        qmin, qmax = qrange(quant.dtype)
        if np.any(zero_point < qmin) or np.any(zero_point > qmax):
            problems.append(f"{value.name!r} has a zero point outside {quant.dtype}")
        if scale.shape != zero_point.shape:
            problems.append(f"{value.name!r}: scale and zero point shapes differ")
        if quant.block_size is not None:
            continue
        if quant.axis is None and scale.ndim != 0:
            problems.append(f"{value.name!r} is per-tensor but has {scale.size} scales")
        if quant.axis is not None and value.shape is not None and scale.ndim == 1:
            dim = value.shape[quant.axis]
            if isinstance(dim, int) and dim != scale.size:
                problems.append(f"{value.name!r}: {scale.size} scales for {dim} channels on axis {quant.axis}")
    for node in graph:
        decision = get_decision(node)
        if decision is not None and decision.decision == Decision.FUSED:
            producers = [v.producer() for v in node.inputs if v is not None and v.producer() is not None]
            if not any(get_decision(p).decision != Decision.FLOAT for p in producers):
                problems.append(f"{node.name!r} is absorbed but none of its producers is quantized")
    return problems
