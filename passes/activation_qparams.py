"""Turn activation ranges into scales and zero points, honouring shared-scale groups.

A calibrated activation gets ``activation_params(min, max)`` for the target's type and scheme
(see ``qcc.quantmath``). A constant read by an int8 op as an activation (a bias added by ``Add``)
takes its range from its own values. A tensor marked ``shared_with`` (the output of Reshape,
MaxPool, ...) takes exactly the parameters of the tensor it shares with, following chains, so the
runtime can move the integers without requantizing. Absorbed activations need nothing special:
the range observed on a Relu/Clip output already lies inside the clamp, so its quantizer
reproduces the clamp (with an asymmetric range starting at 0 the zero point is the type's minimum).

Tensors that must share parameters form groups (union-find over ``shared_with`` links and the
inputs/output of the target's ``shared_group_ops``); a group's parameters come from the union of
its members' ranges. A shared-scale op's output has no range of its own, so its group's range is
its input's, exactly.
"""

from __future__ import annotations

import onnx_ir as ir

from qcc.annotations import Decision, Role, Stage, TensorRange, get_decision, get_quant, get_range, quantized_values
from qcc.irutils import const_array
from qcc.passes._base import QccPass
from qcc.quantmath import activation_params


class ActivationQParamsPass(QccPass):
    """Fixes scale and zero point of every quantized activation (see module docstring)."""

    name = "activation-qparams"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        groups = activation_groups(model.graph, self.ctx.target.shared_group_ops)
        for members in groups:
            value_range = union_range(members)
            for value in members:
                quant = get_quant(value)
                quant.scale, quant.zero_point = activation_params(
                    value_range.min, value_range.max, quant.dtype, quant.symmetric
                )
                quant.stage = Stage.FINAL
        return ir.passes.PassResult(model, bool(groups))


def activation_groups(graph: ir.Graph, shared_group_ops: frozenset[str]) -> list[list[ir.Value]]:
    """The quantized activations in groups that must share one scale and zero point (see the
    module docstring), each in graph order."""
    activations = {v.name: v for v in quantized_values(graph) if get_quant(v).role == Role.ACTIVATION}
    groups = _Groups()
    for value in activations.values():
        quant = get_quant(value)
        groups.add(value.name)
        if quant.shared_with is not None:
            groups.union(value.name, quant.shared_with)
    for node in graph:
        decision = get_decision(node)
        if node.op_type in shared_group_ops and decision and decision.decision == Decision.INT8:
            members = [v.name for v in (*node.inputs, *node.outputs) if v is not None and v.name in activations]
            for name in members[1:]:
                groups.union(members[0], name)
    return [[activations[name] for name in members] for members in groups.members().values()]


def union_range(values: list[ir.Value], ranges: dict[str, TensorRange] | None = None) -> TensorRange:
    """The smallest range holding every member's observed (or constant) values; ``ranges``
    replaces the observed range of the members it names."""
    lows, highs = [], []
    for value in values:
        value_range = (ranges or {}).get(value.name) or get_range(value)
        if value_range is None:
            array = const_array(value)
            if array is None or not array.size:
                continue
            value_range = TensorRange(float(array.min()), float(array.max()))
        lows.append(value_range.min)
        highs.append(value_range.max)
    assert lows, f"no member of the group of {values[0].name} was calibrated"
    return TensorRange(min(lows), max(highs))


class _Groups:
    """Union-find over value names."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def add(self, name: str) -> None:
        self.parent.setdefault(name, name)

    def find(self, name: str) -> str:
        self.add(name)
        while self.parent[name] != name:
            self.parent[name] = self.parent[self.parent[name]]
            name = self.parent[name]
        return name

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)

    def members(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name in list(self.parent):
            out.setdefault(self.find(name), []).append(name)
        return out
