"""Float-only lowerings: ops with no int8 TFLite kernel, decomposed into float32 builtins.

The plan keeps these ops float (float islands between DEQUANTIZE and QUANTIZE); TFLite has no
single builtin for them, so each becomes a short chain of builtins XNNPACK takes:
HardSigmoid -> MUL, ADD (fused RELU6), MUL; Erf -> Abramowitz-Stegun 7.1.26 (error < 1.5e-7);
LayerNormalization -> MEAN, SUB, MUL, MEAN, ADD, RSQRT, MUL, MUL, ADD.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import ACT_RELU6, Lowering
from qcc.backends._tflite_ops_window import unsupported
from qcc.irutils import attr_float, attr_int


def hard_sigmoid(lw: Lowering, node: ir.Node) -> None:
    """HardSigmoid (float only) -> MUL, ADD with fused RELU6, MUL by 1/6: ops XNNPACK takes.

    ``clip(a x + b, 0, 1) = relu6(6 a x + 6 b) / 6``; RELU_0_TO_1 would leave the delegate.
    """
    if lw.is_int8(node):
        raise unsupported(node, "int8 HardSigmoid")
    x = lw.input(node, 0)
    scaled = lw.model.tensor(f"{node.name}_scaled", x.shape, np.float32)
    clamped = lw.model.tensor(f"{node.name}_clamped", x.shape, np.float32)
    alpha = lw.constant(f"{node.name}_alpha", np.array(6 * attr_float(node, "alpha", 0.2), np.float32))
    beta = lw.constant(f"{node.name}_beta", np.array(6 * attr_float(node, "beta", 0.5), np.float32))
    sixth = lw.constant(f"{node.name}_sixth", np.array(1 / 6, np.float32))
    lw.op("MUL", [x, alpha], [scaled], "MulOptions", source=node.name)
    lw.op("ADD", [scaled, beta], [clamped], "AddOptions", source=node.name, fused_activation_function=ACT_RELU6)
    lw.op("MUL", [clamped, sixth], [lw.output(node)], "MulOptions", source=node.name)


class FloatChain:
    """Builds a chain of float32 builtins for one node (float islands decomposed into builtins)."""

    def __init__(self, lw: Lowering, node: ir.Node) -> None:
        if lw.is_int8(node):
            raise unsupported(node, f"int8 {node.op_type}")
        self.lw, self.node, self.count = lw, node, 0

    def const(self, value: float):
        """A float32 scalar constant."""
        self.count += 1
        return self.lw.constant(f"{self.node.name}_c{self.count}", np.array(value, np.float32))

    def op(self, name: str, inputs, shape, options: str | None = None, out=None, **fields):
        """Appends ``name`` writing a new float tensor of ``shape`` (or ``out``) and returns it."""
        self.count += 1
        if out is None:
            out = self.lw.model.tensor(f"{self.node.name}_t{self.count}", shape, np.float32)
        self.lw.op(name, inputs, [out], options, source=self.node.name, **fields)
        return out


# Abramowitz & Stegun 7.1.26: erf(|x|) = 1 - t (a1 + t (a2 + ...)) exp(-x^2), t = 1 / (1 + p |x|);
# absolute error below 1.5e-7, i.e. float32 precision.
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def erf(lw: Lowering, node: ir.Node) -> None:
    """Erf (no TFLite builtin) -> float ABS/MUL/ADD/DIV/EXP chain accurate to float32."""
    chain = FloatChain(lw, node)
    x = lw.input(node, 0)
    s = x.shape
    a = chain.op("ABS", [x], s)
    t = chain.op(
        "DIV",
        [
            chain.const(1.0),
            chain.op(
                "ADD", [chain.op("MUL", [a, chain.const(_ERF_P)], s, "MulOptions"), chain.const(1.0)], s, "AddOptions"
            ),
        ],
        s,
        "DivOptions",
    )
    poly = chain.op("MUL", [t, chain.const(_ERF_A[-1])], s, "MulOptions")
    for coefficient in reversed(_ERF_A[:-1]):
        poly = chain.op("MUL", [chain.op("ADD", [poly, chain.const(coefficient)], s, "AddOptions"), t], s, "MulOptions")
    square = chain.op("MUL", [x, x], s, "MulOptions")
    gauss = chain.op("EXP", [chain.op("MUL", [square, chain.const(-1.0)], s, "MulOptions")], s)
    magnitude = chain.op("SUB", [chain.const(1.0), chain.op("MUL", [poly, gauss], s, "MulOptions")], s, "SubOptions")
    sign = chain.op("DIV", [x, chain.op("ADD", [a, chain.const(1e-30)], s, "AddOptions")], s, "DivOptions")
    chain.op("MUL", [magnitude, sign], s, "MulOptions", out=lw.output(node))


def layer_norm(lw: Lowering, node: ir.Node) -> None:
    """LayerNormalization (no int8 builtin) -> float MEAN/SUB/MUL/MEAN/ADD/RSQRT/MUL/MUL/ADD."""
    chain = FloatChain(lw, node)
    if any(out.uses() for out in node.outputs[1:]):
        raise unsupported(node, "LayerNormalization mean/inverse-std outputs")
    x = lw.input(node, 0)
    rank = len(x.shape)
    axis = attr_int(node, "axis", -1) % rank
    axes = lw.constant(f"{node.name}_axes", np.arange(axis, rank, dtype=np.int32))
    reduced = x.shape[:axis] + (1,) * (rank - axis)
    mean = chain.op("MEAN", [x, axes], reduced, "ReducerOptions", keep_dims=True)
    centered = chain.op("SUB", [x, mean], x.shape, "SubOptions")
    variance = chain.op(
        "MEAN",
        [chain.op("MUL", [centered, centered], x.shape, "MulOptions"), axes],
        reduced,
        "ReducerOptions",
        keep_dims=True,
    )
    epsilon = chain.const(attr_float(node, "epsilon", 1e-5))
    inverse = chain.op("RSQRT", [chain.op("ADD", [variance, epsilon], reduced, "AddOptions")], reduced)
    normed = chain.op("MUL", [centered, inverse], x.shape, "MulOptions")
    has_bias = len(node.inputs) > 2 and node.inputs[2] is not None
    y = lw.output(node)
    scaled = chain.op("MUL", [normed, lw.input(node, 1)], x.shape, "MulOptions", out=None if has_bias else y)
    if has_bias:
        chain.op("ADD", [scaled, lw.input(node, 2)], x.shape, "AddOptions", out=y)
