"""Turn activation ranges into scales and zero points, honouring shared-scale groups.

A calibrated activation gets ``activation_params(min, max)`` for the target's type and scheme
(see ``qcc.quantmath``). A constant read by an int8 op as an activation (a bias added by ``Add``)
takes its range from its own values. A tensor marked ``shared_with`` (the output of Reshape,
MaxPool, ...) takes exactly the parameters of the tensor it shares with, following chains, so the
runtime can move the integers without requantizing. Absorbed activations need nothing special:
the range observed on a Relu/Clip output already lies inside the clamp, so its quantizer
reproduces the clamp (with an asymmetric range starting at 0 the zero point is the type's minimum).
"""

from __future__ import annotations

import onnx_ir as ir

from qcc.annotations import Role, Stage, TensorQuant, TensorRange, get_quant, get_range, quantized_values
from qcc.irutils import const_array
from qcc.passes._base import QccPass
from qcc.quantmath import activation_params


class ActivationQParamsPass(QccPass):
    """Fixes scale and zero point of every quantized activation (see module docstring)."""

    name = "activation-qparams"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        activations = {
            v.name: v for v in quantized_values(model.graph) if get_quant(v).role == Role.ACTIVATION
        }
        for value in activations.values():
            self._resolve(value, activations, set())
        return ir.passes.PassResult(model, bool(activations))

    def _resolve(self, value: ir.Value, activations: dict[str, ir.Value], visiting: set[str]) -> TensorQuant:
        quant = get_quant(value)
        if quant.stage == Stage.FINAL:
            return quant
        if quant.shared_with is not None:
            if value.name in visiting or quant.shared_with not in activations:
                raise AssertionError(f"bad shared-scale chain at {value.name}")
            source = self._resolve(activations[quant.shared_with], activations, visiting | {value.name})
            quant.scale, quant.zero_point = source.scale, source.zero_point
        else:
            value_range = get_range(value)
            if value_range is None:
                array = const_array(value)
                assert array is not None, f"activation {value.name} was not calibrated"
                value_range = TensorRange(float(array.min()), float(array.max())) if array.size else TensorRange(0, 0)
            quant.scale, quant.zero_point = activation_params(
                value_range.min, value_range.max, quant.dtype, quant.symmetric
            )
        quant.stage = Stage.FINAL
        return quant
