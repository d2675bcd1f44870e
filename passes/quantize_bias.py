"""Quantize biases to int32 with ``scale = input scale x weight scale``.

An integer kernel accumulates ``sum(q_x * q_w)`` in int32 at scale ``s_x * s_w[c]``; the bias is
added to that accumulator, so it must be stored at exactly that scale with zero point 0:
``q_b[c] = round(b[c] / (s_x * s_w[c]))``. When a bias is too large for int32 at that scale
(tiny weights and a large bias), the channel's weight scale is enlarged just enough for the bias
to fit, as ONNX Runtime's quantizer does; the weights are then quantized with that scale.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.annotations import Decision, Role, Stage, get_decision, get_quant
from qcc.irutils import const_array
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
            w_scale = np.broadcast_to(w_quant.scale.astype(np.float64), bias.shape).copy()
            needed = np.abs(bias) / (float(x_quant.scale) * _INT32_LIMIT)
            if np.any(needed > w_scale):
                w_scale = np.maximum(w_scale, needed * 1.0001)
                w_quant.scale = w_scale.astype(np.float32) if w_quant.axis is not None else np.float32(w_scale.max())
            bias_scale = (float(x_quant.scale) * w_quant.scale.astype(np.float64)).astype(np.float32)
            if bias_quant.axis is not None:
                bias_scale = np.broadcast_to(bias_scale, bias.shape).astype(np.float32)
            bias_quant.scale = bias_scale
            bias_quant.zero_point = np.zeros(bias_quant.scale.shape, dtype=np.int32)
            bias_quant.stage = Stage.FINAL
            modified = True
        return ir.passes.PassResult(model, modified)
