"""Cross-layer equalization: even out the weight ranges of consecutive convolutions.

For ``Conv1 -> [Relu] -> Conv2`` where channel ``i`` of Conv1's output is channel ``i`` of Conv2's
input, scaling that channel by ``1 / s_i`` in Conv1 (weights and bias) and by ``s_i`` in Conv2's
input weights leaves the function unchanged, because ``Relu(x / s) = Relu(x) / s`` for ``s > 0``
(Nagel et al., "Data-Free Quantization", 2019, section 4.1). With ``r1_i`` the range of Conv1's
output channel ``i`` and ``r2_i`` that of Conv2's input channel ``i``, ``s_i = sqrt(r1_i / r2_i)``
makes both ``sqrt(r1_i r2_i)``: no channel's weights are tiny next to the tensor's largest, which
is what one scale per tensor (``--per-tensor``) rounds away. Pairs are equalized in graph order,
``ROUNDS`` times (a middle layer is in two pairs). Conv2 may be depthwise (its input channel ``i``
is its group ``i``) and so may Conv1. Clip (Relu6) is not positively homogeneous and stops a
pair, as does a tensor read by anything else or a weight shared with another node.

On by default only with per-tensor weights (``equalize=None``): with per-channel scales every
output channel already has its own range, and moving range into Conv2's input channels widens
Conv2's per-channel ranges instead. ``equalize=True`` / ``False`` forces it (``False`` also turns off
``equalize_residual``). A float rewrite: it
runs before the plan, on the model the plan and calibration then see.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from qcc.irutils import attr_int, const_array, private_constants, set_constant
from qcc.passes._base import QccPass

logger = logging.getLogger(__name__)

ROUNDS = 3
_HOMOGENEOUS = frozenset({"Relu"})


class CrossLayerEqualizationPass(QccPass):
    """Rescales the channels between consecutive convolutions (see module docstring)."""

    name = "equalize"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        enabled = self.ctx.options.equalize
        if enabled is None:
            enabled = not self.ctx.options.per_channel
        if not enabled:
            return ir.passes.PassResult(model, False)
        pairs = [pair for node in model.graph if (pair := _pair(node)) is not None]
        for _ in range(ROUNDS):
            for first, second in pairs:
                _equalize(first, second)
        if pairs:
            logger.info("cross-layer equalization: %d convolution pairs", len(pairs))
        return ir.passes.PassResult(model, bool(pairs))


def _pair(first: ir.Node) -> tuple[ir.Node, ir.Node] | None:
    """``(Conv1, Conv2)`` when ``first`` is a Conv that feeds exactly one Conv, through at most one
    Relu, with constant private weights; None otherwise."""
    if first.op_type != "Conv" or not private_constants(first):
        return None
    value = first.outputs[0]
    for _ in range(2):
        if value.is_graph_output() or len(value.uses()) != 1:
            return None
        reader = value.uses()[0].node
        if reader.op_type in _HOMOGENEOUS:
            value = reader.outputs[0]
            continue
        if reader.op_type == "Conv" and reader.inputs[0] is value and private_constants(reader):
            if _channels_match(first, reader):
                return first, reader
        return None
    return None


def _channels_match(first: ir.Node, second: ir.Node) -> bool:
    """Conv1's output channel ``i`` is Conv2's input channel ``i`` (plain or depthwise Conv2)."""
    out_channels = const_array(first.inputs[1]).shape[0]
    weight2 = const_array(second.inputs[1])
    groups = attr_int(second, "group", 1)
    plain = groups == 1 and weight2.shape[1] == out_channels
    depthwise = groups == out_channels and weight2.shape[0] == out_channels and weight2.shape[1] == 1
    first_groups = attr_int(first, "group", 1)
    first_ok = first_groups == 1 or first_groups == out_channels  # plain or depthwise Conv1
    return (plain or depthwise) and first_ok


def _equalize(first: ir.Node, second: ir.Node) -> None:
    w1 = const_array(first.inputs[1]).astype(np.float64)
    w2 = const_array(second.inputs[1]).astype(np.float64)
    depthwise2 = attr_int(second, "group", 1) != 1
    r1 = np.abs(w1).reshape(w1.shape[0], -1).max(axis=1)
    inputs2 = w2.reshape(w2.shape[0], -1) if depthwise2 else np.moveaxis(w2, 1, 0).reshape(w2.shape[1], -1)
    r2 = np.abs(inputs2).max(axis=1)
    scale = np.ones_like(r1)
    usable = (r1 > 0) & (r2 > 0)
    scale[usable] = np.sqrt(r1[usable] / r2[usable])
    shape1 = (-1,) + (1,) * (w1.ndim - 1)
    set_constant(first.inputs[1], w1 / scale.reshape(shape1))
    if len(first.inputs) > 2 and first.inputs[2] is not None:
        set_constant(first.inputs[2], const_array(first.inputs[2]).astype(np.float64) / scale)
    shape2 = shape1 if depthwise2 else (1, -1) + (1,) * (w2.ndim - 2)
    set_constant(second.inputs[1], w2 * scale.reshape(shape2))

