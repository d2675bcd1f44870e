"""Quantize biases to int32 with ``scale = input scale x weight scale``.

An integer kernel accumulates ``sum(q_x * q_w)`` in int32 at scale ``s_x * s_w[c]``; the bias is
added to that accumulator, so it must be stored at exactly that scale with zero point 0:
``q_b[c] = round(b[c] / (s_x * s_w[c]))``. When a bias is too large for int32 at that scale
(tiny weights and a large bias), the channel's weight scale is enlarged just enough for the bias
to fit, as ONNX Runtime's quantizer does; the weights are then quantized with that scale.
A one-value bias (Gemm's C of shape [1]) is first written out per channel, and a grouped
ConvTranspose's per-channel weight scales repeat once per group over its output channels.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.annotations import Decision, Role, Stage, get_decision, get_quant
from qcc.irutils import attr_int, const_array, set_constant
from qcc.optable import BIAS_INPUT, WEIGHT_INPUT
from qcc.passes._base import QccPass

_INT32_LIMIT = float(2**31 - 1)


class QuantizeBiasPass(QccPass):
    """Computes int32 bias parameters of every quantized Conv/Gemm (see module docstring)."""

    name = "quantize-bias"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for node in model.graph:
            decision = get_decision(node)
            index = BIAS_INPUT.get(node.op_type)
            if decision is None or decision.decision != Decision.INT8 or index is None:
                continue
            if len(node.inputs) <= index or node.inputs[index] is None:
                continue
            bias_value = node.inputs[index]
            bias_quant = get_quant(bias_value)
            if bias_quant is None or bias_quant.role != Role.BIAS:
                continue
            x_quant = get_quant(node.inputs[0])
            w_quant = get_quant(node.inputs[WEIGHT_INPUT])
            assert x_quant is not None and w_quant is not None, f"{node.name}: bias without quantized inputs"
            bias = const_array(bias_value).astype(np.float64)
            groups = _weight_groups(node, w_quant)
            w_scale = np.tile(np.atleast_1d(w_quant.scale.astype(np.float64)), groups)
            if bias.size == 1 and w_scale.size > 1 and len(bias_value.uses()) == 1:
                # One bias value broadcast over the channels: the same sum, one value per channel.
                bias = np.full(w_scale.shape, bias.item())
                set_constant(bias_value, bias)
            w_scale = np.broadcast_to(w_scale, bias.shape).copy()
            needed = np.abs(bias) / (float(x_quant.scale) * _INT32_LIMIT)
            if np.any(needed > w_scale):
                w_scale = np.maximum(w_scale, needed * 1.0001).reshape(groups, -1).max(axis=0)
                w_quant.scale = w_scale.astype(np.float32) if w_quant.axis is not None else np.float32(w_scale.max())
            w_scale = np.tile(np.atleast_1d(w_quant.scale.astype(np.float64)), groups)
            bias_scale = (float(x_quant.scale) * w_scale).astype(np.float32)
            if w_quant.axis is None:
                bias_scale = bias_scale.reshape(-1)[:1].reshape(())
            if bias_quant.axis is not None:
                bias_scale = np.broadcast_to(bias_scale, bias.shape).astype(np.float32)
            bias_quant.scale = bias_scale
            bias_quant.zero_point = np.zeros(bias_quant.scale.shape, dtype=np.int32)
            bias_quant.stage = Stage.FINAL
            modified = True
        return ir.passes.PassResult(model, modified)


def _weight_groups(node: ir.Node, w_quant) -> int:
    """How often the per-channel weight scales repeat over the output channels.

    A grouped ConvTranspose's weight is (C_in, C_out / group, kh, kw): its per-channel scales
    (axis 1) cover one group's output channels, and output channel ``k * C_out / group + j`` uses
    scale ``j``; every other layer has one scale per output channel.
    """
    if node.op_type != "ConvTranspose" or w_quant.axis is None:
        return 1
    return attr_int(node, "group", 1)
