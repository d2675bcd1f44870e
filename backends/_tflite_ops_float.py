"""Float-only lowerings: ops with no int8 TFLite kernel, decomposed into float32 builtins.

The plan keeps these ops float (float islands between DEQUANTIZE and QUANTIZE); TFLite has no
single builtin for them, so each becomes a short chain of builtins XNNPACK takes:
HardSigmoid -> MUL, ADD (fused RELU6), MUL; Erf -> Abramowitz-Stegun 7.1.26 (error < 1.5e-7);
LayerNormalization -> MEAN, SUB, MUL, MEAN, ADD, RSQRT, MUL, MUL, ADD (its optional Mean and
InvStdDev outputs are the MEAN and the RSQRT).

LiteRT's float kernels take float32: a chain reads float16/float64 inputs through a CAST to
float32 and writes such outputs through a CAST back (``FloatChain.input`` / ``FloatChain.output``).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import ACT_RELU6, Lowering
from qcc.backends._tflite_ops_window import unsupported
from qcc.backends._tflite_writer import TENSOR_TYPES, Tensor
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
        self._casts: list[tuple[Tensor, Tensor]] = []

    def const(self, value: float):
        """A float32 scalar constant."""
        self.count += 1
        return self.lw.constant(f"{self.node.name}_c{self.count}", np.array(value, np.float32))

    def array(self, value: np.ndarray, dtype=np.float32):
        """A constant tensor holding ``value`` (float32 unless ``dtype`` says otherwise)."""
        self.count += 1
        return self.lw.constant(f"{self.node.name}_c{self.count}", np.array(value, dtype, order="C"))

    def op(self, name: str, inputs, shape, options: str | None = None, out=None, **fields):
        """Appends ``name`` writing a new float tensor of ``shape`` (or ``out``) and returns it."""
        self.count += 1
        if out is None:
            out = self.lw.model.tensor(f"{self.node.name}_t{self.count}", shape, np.float32)
        self.lw.op(name, inputs, [out], options, source=self.node.name, **fields)
        return out

    def reshape(self, x: Tensor, shape) -> Tensor:
        """``x`` viewed with another static shape (a RESHAPE; the same tensor when it already has it)."""
        if tuple(x.shape) == tuple(shape):
            return x
        self.count += 1
        out = self.lw.model.tensor(f"{self.node.name}_t{self.count}", shape, x.dtype, quant=x.quant)
        return self.lw.reshape(x, out, self.node.name)

    def input(self, index: int) -> Tensor:
        """Input ``index`` as float32: a float16/float64 input is CAST (LiteRT's float kernels take float32)."""
        x = self.lw.read(self.node.inputs[index], False)
        if x.dtype == np.float32:
            return x
        return self.cast(x, np.float32, self.lw.model.tensor(f"{x.name}_f32", x.shape, np.float32))

    def output(self, index: int = 0) -> Tensor:
        """The float32 tensor the chain writes output ``index`` into.

        A float16/float64 output is written by a CAST from it, appended by :meth:`finish`.
        """
        y = self.lw.output(self.node, index)
        if y.dtype == np.float32:
            return y
        inner = self.lw.model.tensor(f"{y.name}_f32", y.shape, np.float32)
        self._casts.append((inner, y))
        return inner

    def finish(self) -> None:
        """Appends the CASTs of the outputs that are not float32 (call after the last op)."""
        for inner, y in self._casts:
            self.cast(inner, y.dtype, y)
        self._casts.clear()

    def cast(self, x: Tensor, dtype, out: Tensor) -> Tensor:
        """Appends CAST ``x`` -> ``out``.

        Raises:
            BackendError: qcc's TFLite writer has no tensor type for one of the two dtypes.
        """
        for kind in (x.dtype, np.dtype(dtype)):
            if kind not in TENSOR_TYPES:
                raise unsupported(
                    self.node,
                    f"a {kind} tensor: qcc writes TFLite tensors of "
                    f"{', '.join(sorted(str(t) for t in TENSOR_TYPES))} only, and LiteRT's float kernels take "
                    "float32; convert the model to float32",
                )
        self.lw.op(
            "CAST",
            [x],
            [out],
            "CastOptions",
            source=self.node.name,
            in_data_type=TENSOR_TYPES[x.dtype],
            out_data_type=TENSOR_TYPES[np.dtype(dtype)],
        )
        return out


def wanted(node: ir.Node, index: int) -> bool:
    """True when output ``index`` of the node exists and is read or is a graph output."""
    if len(node.outputs) <= index or node.outputs[index] is None:
        return False
    out = node.outputs[index]
    return bool(out.uses()) or out.is_graph_output()


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
    """LayerNormalization (no int8 builtin) -> float MEAN/SUB/MUL/MEAN/ADD/RSQRT/MUL/MUL/ADD.

    The optional outputs are the MEAN (``Mean``) and the RSQRT (``InvStdDev``), both of the
    reduced shape ``x.shape[:axis] + (1,) * (rank - axis)``.
    """
    chain = FloatChain(lw, node)
    x = chain.input(0)
    rank = len(x.shape)
    axis = attr_int(node, "axis", -1) % rank
    axes = lw.constant(f"{node.name}_axes", np.arange(axis, rank, dtype=np.int32))
    reduced = x.shape[:axis] + (1,) * (rank - axis)
    mean_out = chain.output(1) if wanted(node, 1) else None
    mean = chain.op("MEAN", [x, axes], reduced, "ReducerOptions", out=mean_out, keep_dims=True)
    centered = chain.op("SUB", [x, mean], x.shape, "SubOptions")
    variance = chain.op(
        "MEAN",
        [chain.op("MUL", [centered, centered], x.shape, "MulOptions"), axes],
        reduced,
        "ReducerOptions",
        keep_dims=True,
    )
    epsilon = chain.const(attr_float(node, "epsilon", 1e-5))
    inverse_out = chain.output(2) if wanted(node, 2) else None
    inverse = chain.op("RSQRT", [chain.op("ADD", [variance, epsilon], reduced, "AddOptions")], reduced, out=inverse_out)
    normed = chain.op("MUL", [centered, inverse], x.shape, "MulOptions")
    has_bias = len(node.inputs) > 2 and node.inputs[2] is not None
    y = chain.output(0)
    scaled = chain.op("MUL", [normed, chain.input(1)], x.shape, "MulOptions", out=None if has_bias else y)
    if has_bias:
        chain.op("ADD", [scaled, chain.input(2)], x.shape, "AddOptions", out=y)
    chain.finish()
