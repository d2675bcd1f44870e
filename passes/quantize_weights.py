"""Quantize weights: int8, symmetric, per output channel (or per tensor with ``--per-tensor``).

For every weight the plan annotated, ``scale[c] = max|W[c, ...]| / 127`` along the op's
output-channel axis (the axis comes from the op's semantics in ``qcc.optable``, after every graph
rewrite, so folded and fused weights get the right one), zero point 0. The float initializer is
left as it is; the backend stores the int8 values.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.annotations import Role, Stage, get_quant, quantized_values
from qcc.irutils import const_array
from qcc.passes._base import QccPass
from qcc.quantmath import block_weight_scale, qrange, symmetric_weight_scale


class QuantizeWeightsPass(QccPass):
    """Computes the scales of every planned weight (see module docstring)."""

    name = "quantize-weights"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for value in quantized_values(model.graph):
            quant = get_quant(value)
            if quant is None or quant.role != Role.WEIGHT:
                continue
            weight = const_array(value)
            assert weight is not None, f"weight {value.name} has no constant value"
            qmax = qrange(quant.dtype)[1]
            if quant.block_size is not None:
                quant.scale = block_weight_scale(weight.astype(np.float32), quant.axis, quant.block_size, qmax)
            else:
                quant.scale = symmetric_weight_scale(weight.astype(np.float32), quant.axis, qmax)
            quant.zero_point = np.zeros(quant.scale.shape, dtype=quant.dtype.numpy())
            quant.stage = Stage.FINAL
            modified = True
        return ir.passes.PassResult(model, modified)
