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

An attention mask (``Where(keep, 0, -inf)``, ``(1 - m) * finfo.min``, and the Expand/Reshape/
Cast/... that only move it) calibrates to all zeros on unpadded samples, and ``activation_params``
turns ``[0, 0]`` into scale 1 at the zero point -128: its int8 tensor then has no negative value,
the -inf of a padded token saturates to 0.0, and the padding is attended to (MiniLM, padded eval
batches: embedding cosine 0.90 against the float model, 0.998 on the same sentences unpadded).
So the range of such a value reaches ``-R`` on the side of its huge constant, with ``R`` twice the
widest output range among the int8 nodes reading it::

    scores + mask -> saturates at the Add's output minimum when mask <= -(hi - lo), so R = 2 (hi - lo)

0 stays exact (asymmetric parameters represent it exactly), so unmasked positions are unchanged;
a masked one becomes its reader's smallest value, which Softmax turns into a weight of about
``exp(-(hi - lo))``. Twice the width keeps the scale ratio of the int8 ADD small (XNNPACK's qs8
add takes input/output scale ratios below 256).
"""

from __future__ import annotations

import numpy as np
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
        masks = mask_values(model.graph)
        for members in groups:
            value_range = _with_mask_extent(union_range(members), members, masks)
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


# Constants at or beyond this magnitude are mask fills (float min/max, inf), as in the plan.
_HUGE = 1e30
# Ops that only move or select values: a mask's huge fill passes through them unchanged.
_MOVERS = frozenset(
    {
        "Where",
        "Expand",
        "Cast",
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Transpose",
        "Concat",
        "Gather",
        "Slice",
        "Split",
        "Tile",
        "Identity",
        "Pad",
    }
)
# Arithmetic that makes a mask out of a huge constant (``(1 - m) * finfo.min``, ``m + (-inf)``).
_MAKERS = frozenset({"Mul", "Add", "Sub", "Neg"})


def mask_values(graph: ir.Graph) -> dict[str, int]:
    """Values that are an additive mask: they hold a huge constant's value (or 0), by name -> the
    sign of that value (-1 or +1; 0 for both).

    A mover or maker op (``_MOVERS``, ``_MAKERS``) reading a float constant at or beyond ``_HUGE``
    writes one; a mover reading one, or a Neg, passes it on. Arithmetic combining a mask with data
    (``scores + mask``) does not: its sum is data with a calibrated range, which the int8 op
    saturates.
    """
    found: dict[str, int] = {}
    for node in graph:
        if node.domain not in ("", "ai.onnx") or node.op_type not in _MOVERS | _MAKERS:
            continue
        sign = None
        for i, value in enumerate(node.inputs):
            if value is None:
                continue
            array = const_array(value)
            if array is not None and array.dtype.kind == "f" and array.size and not np.all(np.abs(array) < _HUGE):
                low, high = bool(array.min() <= -_HUGE), bool(array.max() >= _HUGE)
                sign = 0 if low and high else (-1 if low else 1)
                # x - huge flips the sign of the fill.
                sign = -sign if node.op_type == "Sub" and i == 1 else sign
                break
            if value.name in found and (node.op_type in _MOVERS or node.op_type == "Neg"):
                sign = -found[value.name] if node.op_type == "Neg" else found[value.name]
        if sign is None:
            continue
        for out in node.outputs:
            if out is not None and out.dtype in (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE, None):
                found[out.name] = sign
    return found


def _with_mask_extent(value_range: TensorRange, members: list[ir.Value], masks: dict[str, int]) -> TensorRange:
    """The group's range, reaching ``-R`` (or ``+R``) when a member is a mask (module docstring)."""
    signs = {masks[v.name] for v in members if v.name in masks}
    if not signs:
        return value_range
    names = {v.name for v in members}
    widths = []
    for value in members:
        for use in value.uses():
            decision = get_decision(use.node)
            if decision is None or decision.decision != Decision.INT8:
                continue
            for out in use.node.outputs:
                out_range = get_range(out) if out is not None and out.name not in names else None
                if out_range is not None:
                    widths.append(out_range.max - out_range.min)
    if not widths or max(widths) <= 0.0:
        return value_range
    extent = 2.0 * max(widths)
    low = min(value_range.min, -extent) if signs & {-1, 0} else value_range.min
    high = max(value_range.max, extent) if signs & {1, 0} else value_range.max
    return TensorRange(low, high)


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
