"""TFLite lowering rules: the variadic element-wise ops Sum, Mean, Max and Min.

Collected by the family module ``_tflite_ops_math``. Each folds any number of inputs left to
right with one binary builtin, broadcasting as ONNX does:

* ``Sum(x1, ..., xn) = (((x1 + x2) + x3) + ... + xn)`` with ADD; ``Max``/``Min`` likewise with
  MAXIMUM/MINIMUM; a single input is copied (a RESHAPE to the same shape);
* ``Mean(x1, ..., xn) = Sum(x1, ..., xn) / n`` (DIV by the constant count).

The float ops run as ``MathChain``s (integer Max and Min stay integer). For a NaN operand
LiteRT's builtin MAXIMUM and MINIMUM return the number, and Max and Min inherit that.

Max and Min keep an int8 flavour for nodes a plan makes int8 (no spec lists them: XNNPACK does
not take int8 MAXIMUM/MINIMUM, so an int8 one would split the delegated graph): every input is
brought to the output's parameters first (DEQUANTIZE then QUANTIZE), which is exact, since
``max`` and ``min`` commute with the monotone quantizer: ``Q(max(a, b)) = max(Q(a), Q(b))``.
An int8 Sum is refused: that identity holds for ``max`` and ``min`` only.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_mathchain import OPTIONS, MathChain, broadcast_shape
from qcc.backends._tflite_ops_window import same_quant, unsupported
from qcc.backends._tflite_writer import Tensor


def variadic(name: str):
    """Returns the rule for Sum/Max/Min: ``name`` (ADD, MAXIMUM, MINIMUM) folded over every input."""

    def rule(lw: Lowering, node: ir.Node) -> None:
        if lw.is_int8(node):
            _variadic_int8(lw, node, name)
            return
        c = MathChain(lw, node)
        _fold(c, name, [c.arg(i) for i in range(len(node.inputs))])

    return rule


def _fold(c: MathChain, name: str, inputs: list[Tensor], last: bool = True) -> Tensor | None:
    """``name`` over ``inputs`` left to right; the last op writes the node's output when ``last``."""
    if len(inputs) == 1:
        if last:
            c.copy_to_output()
        return inputs[0]
    total = inputs[0]
    for i, tensor in enumerate(inputs[1:], 2):
        if last and i == len(inputs):
            c.result(name, total, tensor)
            return None
        total = c.f(name, total, tensor)
    return total


def _variadic_int8(lw: Lowering, node: ir.Node, name: str) -> None:
    """int8 MAXIMUM/MINIMUM: inputs requantized to the output's parameters, which is exact."""
    if name == "ADD":
        raise unsupported(node, "int8 Sum")
    y = lw.output(node)
    inputs = []
    for i in range(len(node.inputs)):
        x = lw.input(node, i)
        if not same_quant(x, y):
            # DEQUANTIZE the int8 input itself (not the float value): that is the simulation's DQ(Q(x)).
            real = lw.model.tensor(f"{node.name}_in{i}_float", x.shape, np.float32)
            moved = lw.model.tensor(f"{node.name}_in{i}", x.shape, np.int8, quant=y.quant)
            lw.op("DEQUANTIZE", [x], [real], source=node.name)
            lw.op("QUANTIZE", [real], [moved], source=node.name)
            x = moved
        inputs.append(x)
    if len(inputs) == 1:
        lw.reshape(inputs[0], y, node.name)
        return
    total = inputs[0]
    for i, tensor in enumerate(inputs[1:], 2):
        shape = broadcast_shape([total, tensor])
        out = y if i == len(inputs) else lw.model.tensor(f"{node.name}_{i}", shape, np.int8, quant=y.quant)
        lw.op(name, [total, tensor], [out], OPTIONS[name], source=node.name)
        total = out


def mean(lw: Lowering, node: ir.Node) -> None:
    """Mean -> ADD over the inputs, DIV by their count."""
    c = MathChain(lw, node)
    inputs = [c.arg(i) for i in range(len(node.inputs))]
    if len(inputs) == 1:
        c.copy_to_output()
        return
    c.result("DIV", _fold(c, "ADD", inputs, last=False), c.const(float(len(inputs))))


LOWERINGS = {
    "Sum": variadic("ADD"),
    "Mean": mean,
    "Max": variadic("MAXIMUM"),
    "Min": variadic("MINIMUM"),
}
