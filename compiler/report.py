"""The compile report: what was quantized, what stayed float and why, and what the runtime did.

The report is plain JSON-serializable data, the same from the API, the CLI (``--report``) and the
zoo. Sections: ``model`` (inputs, outputs, opset, op histogram before and after the float
rewrites), ``options``, ``nodes`` (per node: op, decision, reason), ``tensors`` (per quantized
tensor: role, dtype, axis, scale, zero point), ``totals``, ``verify`` (the backend's run of the
artifact) and ``timings``.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

import qcc
from qcc.annotations import Decision, get_decision, get_quant, quantized_values
from qcc.irutils import default_opset


def build_report(
    model: ir.Model,
    original: onnx.ModelProto,
    *,
    target: str,
    options: Any,
    activation_dtype: ir.DataType | None,
    verify: dict[str, Any] | None,
    timings: dict[str, float],
    artifact_bytes: int | None,
) -> dict[str, Any]:
    """Builds the report of one compile (see module docstring)."""
    nodes = []
    by_op: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    reasons: collections.Counter = collections.Counter()
    for node in model.graph:
        decision = get_decision(node)
        kind = decision.decision.value if decision else Decision.FLOAT.value
        reason = decision.reason if decision else "not planned"
        nodes.append({"name": node.name, "op_type": node.op_type, "decision": kind, "reason": reason})
        by_op[node.op_type][kind] += 1
        if kind == Decision.FLOAT.value:
            reasons[reason] += 1
    tensors = {}
    for value in sorted(quantized_values(model.graph), key=lambda v: v.name or ""):
        quant = get_quant(value)
        tensors[value.name] = {
            "role": quant.role.value,
            "dtype": quant.dtype.name.lower(),
            "axis": quant.axis,
            "block_size": quant.block_size,
            "scale": _plain(quant.scale),
            "zero_point": _plain(quant.zero_point),
        }
    counts = collections.Counter(n["decision"] for n in nodes)
    initializers = {i.name for i in original.graph.initializer}
    return {
        "qcc_version": qcc.__version__,
        "target": target,
        "activation_dtype": activation_dtype.name.lower() if activation_dtype is not None else None,
        "model": {
            "inputs": [_io(v) for v in original.graph.input if v.name not in initializers],
            "outputs": [_io(v) for v in original.graph.output],
            "opset": default_opset(model),
            "nodes_before": len(original.graph.node),
            "nodes_after_rewrites": len(nodes),
            "ops_before": dict(collections.Counter(n.op_type for n in original.graph.node).most_common()),
        },
        "options": _plain(dataclasses.asdict(options)) if dataclasses.is_dataclass(options) else options,
        "totals": {
            "nodes": len(nodes),
            "int8": counts[Decision.INT8.value],
            "fused": counts[Decision.FUSED.value],
            "float": counts[Decision.FLOAT.value],
            "float_reasons": dict(reasons.most_common()),
            "by_op": {op: dict(c) for op, c in sorted(by_op.items())},
            "quantized_tensors": len(tensors),
            "artifact_bytes": artifact_bytes,
        },
        "nodes": nodes,
        "tensors": tensors,
        "verify": verify,
        "timings": {k: round(v, 4) for k, v in timings.items()},
    }


def _io(value: onnx.ValueInfoProto) -> dict[str, Any]:
    tensor = value.type.tensor_type
    dims = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in tensor.shape.dim]
    return {"name": value.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name, "shape": dims}


def _plain(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
