"""TFLite lowering rules: element-wise math and activations (Log, Ceil, trigonometry, Elu, Softplus, Sum/Mean, ...).

Rules follow docs/tflite.md "Adding a lowering". ``LOWERINGS`` is merged into the registry in
``_tflite_ops`` after the base rules (a key here replaces a base rule of the same op).
``INT8_OPS`` / ``SHARED_SCALE_OPS`` extend ``TFLITE_SPEC`` for ops lowered here with an int8
kernel (see ``backends/tflite.py``).

The ops run float (none has an int8 TFLite kernel XNNPACK takes), as one builtin where LiteRT
has it (LOG, CEIL, FLOOR, ROUND, SIGN, SIN, COS, ELU, FLOOR_MOD) and otherwise as a chain of
float32 builtins, exact or to float32 precision. Measured over the float32 range against float64
with LiteRT's builtin kernels: relative error below 2.5e-7 where ``|f(x)| >= 1``, absolute error
below 1.5e-7 elsewhere (near 0, sinh, asinh, atanh, softplus and the ELU family keep that absolute,
not relative, error). XNNPACK's float EXP, SIN and COS are coarser (EXP up to 3.3e-6 relative for
large arguments, so sinh and cosh; tan up to 8e-6 relative next to its poles):

* ``tan x = sin x / cos x``; ``atan x = atan2(x, 1)``, ``asin x = atan2(x, sqrt((1 - x)(1 + x)))``,
  ``acos x = atan2(sqrt((1 - x)(1 + x)), x)`` (exact at +-1; ``(1 - x)(1 + x)`` keeps the
  digits ``1 - x^2`` loses near +-1);
* ``sinh x = e^x / 2 - e^-x / 2``, ``cosh x = e^x / 2 + e^-x / 2`` (``e^x / 2 = (h / 2) h`` with
  ``h = e^(x/2)``, finite wherever the result is), ``asinh x = sign(x) log(|x| + sqrt(x^2 + 1))``
  (odd, so no cancellation for x < 0), ``acosh x = log(x + sqrt((x - 1)(x + 1)))``, both through
  ``log 2|x|`` beyond 2^60 where ``x^2`` would overflow, ``atanh x = log((1 + x) / (1 - x)) / 2``;
* ``elu x = relu(x) + alpha (exp(min(x, 0)) - 1)`` (ELU itself when alpha = 1),
  ``selu = gamma elu_alpha``, ``celu x = relu(x) + alpha (exp(min(x, 0) / alpha) - 1)``;
* ``softplus x = relu(x) + log(1 + exp(-|x|))`` (never overflows), ``mish x = x tanh(softplus x)
  = x n / (n + 2)`` with ``n = e^x (e^x + 2)`` (``(1 + e^x)^2 = n + 1``; relative precision for
  x < 0, and fewer ops), ``softsign x = x / (1 + |x|)``, ``swish x = x sigmoid(alpha x)``;
* ThresholdedRelu and Shrink select with comparisons (SELECT_V2);
* ``Mod`` with ``fmod=0`` is FLOOR_MOD (the result has the divisor's sign); with ``fmod=1`` (C's
  remainder, the dividend's sign) it is ``sign(a) floor_mod(|a|, |b|)`` on floats, which is exact
  (a floor modulus of non-negative numbers is the truncated one), and
  ``r - b if r != 0 and (a < 0) != (b < 0) else r`` with ``r = floor_mod(a, b)`` on integers;
* ``IsInf`` compares with +-inf; ``Sum``/``Mean``/``Max``/``Min`` fold any number of inputs with
  ADD/MAXIMUM/MINIMUM (a single input is copied), ``Mean`` divides by their count;
* inference ``Dropout`` copies its input (its mask, if read, is all true); ``CastLike`` is a CAST;
  ``BitShift`` is RIGHT_SHIFT or STABLEHLO_SHIFT_LEFT (uint8 shifted left in int32).

LiteRT's builtin float ADD, SUB, MUL and DIV saturate at +-FLT_MAX (their NONE activation is a
clamp to the float range), so a chain through them turns an infinite input into a large finite
output on those kernels; XNNPACK keeps the infinity. For a NaN operand the builtin MAXIMUM and
MINIMUM return the number (Max and Min inherit that) and XNNPACK's EXP returns 0; the
decompositions here keep a NaN input NaN on both (RELU for ``max(x, 0)``; sinh and cosh add
``min(relu(x), 0)``, which is 0 or NaN on XNNPACK).

LiteRT's float kernels compute in float32: converting float16/float64 values is the lowering's
job (a CAST at the model's edges); a rule handed such a tensor refuses the node and says so.

Max and Min keep an int8 flavour for nodes a plan makes int8 (no spec lists them: XNNPACK does
not take int8 MAXIMUM/MINIMUM, so an int8 one would split the delegated graph): every input is
brought to the output's parameters first, which is exact, since ``max`` and ``min`` commute with
the monotone quantizer: ``Q(max(a, b)) = max(Q(a), Q(b))``.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir
from tflite.TensorType import TensorType

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_data import cast
from qcc.backends._tflite_ops_window import unsupported
from qcc.backends._tflite_writer import Tensor
from qcc.errors import BackendError
from qcc.irutils import attr_float, attr_int, const_array

LOWERINGS: dict = {}
INT8_OPS: frozenset[str] = frozenset()
SHARED_SCALE_OPS: frozenset[str] = frozenset()

# Options tables of the builtins these rules emit (None: the builtin has no options).
_OPTIONS = {
    "ADD": "AddOptions",
    "SUB": "SubOptions",
    "MUL": "MulOptions",
    "DIV": "DivOptions",
    "MAXIMUM": "MaximumMinimumOptions",
    "MINIMUM": "MaximumMinimumOptions",
    "EXP": "ExpOptions",
    "ABS": "AbsOptions",
    "NEG": "NegOptions",
    "ATAN2": "ATan2Options",
    "SIGN": "SignOptions",
    "COS": "CosOptions",
    "FLOOR_MOD": "FloorModOptions",
    "SELECT_V2": "SelectV2Options",
    "GREATER": "GreaterOptions",
    "LESS": "LessOptions",
    "EQUAL": "EqualOptions",
    "NOT_EQUAL": "NotEqualOptions",
    "LOGICAL_AND": "LogicalAndOptions",
    "LOGICAL_NOT": "LogicalNotOptions",
    "FILL": "FillOptions",
    "RIGHT_SHIFT": "RightShiftOptions",
}
# TFLite's comparison and select kernels broadcast up to 4-D; higher-rank element-wise ops run
# on a flat view of their input.
_MAX_BROADCAST_RANK = 4


class MathChain:
    """Builds one node's chain of float32 builtins (integer tensors keep their type).

    ``arg(i)`` reads input ``i``; ``result`` writes the last op into the node's output. With
    ``flat``, a unary op of rank > 4 runs on a 1-D view (the comparison kernels stop at 4-D).
    """

    def __init__(self, lw: Lowering, node: ir.Node, flat: bool = False) -> None:
        if lw.is_int8(node):
            raise unsupported(node, f"int8 {node.op_type}")
        self.lw, self.node, self.flat, self.count = lw, node, flat, 0

    def const(self, value: float) -> Tensor:
        """A float32 scalar constant."""
        self.count += 1
        return self.lw.constant(f"{self.node.name}_c{self.count}", np.array(value, np.float32))

    def op(self, name: str, inputs, shape, options: str | None = None, out=None, dtype=None, **fields):
        """Appends ``name`` writing a new tensor of ``shape`` (or ``out``) and returns it.

        The new tensor has ``dtype``, by default the type of the last non-boolean input (the
        data of SELECT_V2 and FILL; float32 for a float chain, the integer type for integers).
        """
        if out is None:
            if dtype is None:
                data = [t.dtype for t in inputs if t.dtype != np.dtype(np.bool_)]
                dtype = data[-1] if data else np.dtype(np.float32)
            self.count += 1
            out = self.lw.model.tensor(f"{self.node.name}_t{self.count}", shape, dtype)
        self.lw.op(name, inputs, [out], options, source=self.node.name, **fields)
        return out

    def arg(self, index: int) -> Tensor:
        """Input ``index`` (1-D in ``flat`` mode)."""
        tensor = self.raw(index)
        if self.flat and len(tensor.shape) > _MAX_BROADCAST_RANK:
            self.count += 1
            out = self.lw.model.tensor(f"{self.node.name}_t{self.count}", (math.prod(tensor.shape),), tensor.dtype)
            # [-1] rather than the static size: it holds for any run-time size.
            shape = self.lw.constant(f"{self.node.name}_flat", np.array([-1], np.int32))
            self.lw.op("RESHAPE", [tensor, shape], [out], "ReshapeOptions", source=self.node.name, new_shape=[-1])
            tensor = out
        return tensor

    def raw(self, index: int) -> Tensor:
        """Input ``index`` as the lowering hands it over.

        Raises:
            BackendError: it is float16/float64 (LiteRT's float kernels compute in float32).
        """
        tensor = self.lw.input(self.node, index)
        if tensor.dtype in (np.dtype(np.float16), np.dtype(np.float64)):
            raise BackendError(
                f"node {self.node.name!r} ({self.node.op_type}): tensor {tensor.name!r} is {tensor.dtype}; "
                "LiteRT's float kernels compute in float32 and qcc's TFLite lowering does not convert it.",
                "export the model in float32.",
            )
        return tensor

    def f(self, name: str, *inputs: Tensor) -> Tensor:
        """Appends the builtin ``name`` over ``inputs`` (broadcast) and returns its output."""
        return self.op(name, list(inputs), _broadcast(inputs), _OPTIONS.get(name))

    def compare(self, name: str, *inputs: Tensor) -> Tensor:
        """Appends the comparison or logical builtin ``name`` and returns its boolean output."""
        return self.op(name, list(inputs), _broadcast(inputs), _OPTIONS.get(name), dtype=np.bool_)

    def result(self, name: str, *inputs: Tensor, index: int = 0, **fields) -> None:
        """Appends the last builtin, writing output ``index`` of the node (un-flattened in ``flat`` mode)."""
        y = self.lw.output(self.node, index)
        shape = _broadcast(inputs)
        if tuple(shape) == tuple(y.shape):
            self.op(name, list(inputs), y.shape, _OPTIONS.get(name), out=y, **fields)
        else:
            self.lw.reshape(self.op(name, list(inputs), shape, _OPTIONS.get(name), **fields), y, self.node.name)

    def copy_to_output(self, index: int = 0) -> None:
        """Writes output ``index`` as a copy of input 0 (a RESHAPE to the same shape)."""
        self.lw.reshape(self.raw(0), self.lw.output(self.node, index), self.node.name)


def _broadcast(inputs) -> tuple[int, ...]:
    return tuple(np.broadcast_shapes(*(tuple(t.shape) for t in inputs)))


def builtin_unary(name: str):
    """Returns the rule for a float op that is exactly one LiteRT builtin (LOG, CEIL, SIN, ...)."""

    def rule(lw: Lowering, node: ir.Node) -> None:
        chain = MathChain(lw, node)
        chain.result(name, chain.arg(0))

    return rule


def tan(lw: Lowering, node: ir.Node) -> None:
    """Tan -> SIN / COS."""
    c = MathChain(lw, node)
    x = c.arg(0)
    c.result("DIV", c.f("SIN", x), c.f("COS", x))


def _ones_like(c: MathChain, x: Tensor) -> Tensor:
    """A float32 tensor of ones of ``x``'s shape, filled at run time (ATAN2 does not broadcast).

    The dimensions are a constant, or ``SHAPE(x)`` when one of them is known only at run time.
    """
    if x.shape_signature is not None and -1 in x.shape_signature:
        dims = c.op("SHAPE", [x], (len(x.shape),), "ShapeOptions", dtype=np.int32, out_type=TensorType.INT32)
    else:
        dims = c.lw.constant(f"{c.node.name}_dims", np.array(x.shape, np.int32))
    return c.op("FILL", [dims, c.const(1.0)], x.shape, "FillOptions")


def _one_minus_square(c: MathChain, x: Tensor) -> Tensor:
    """``sqrt((1 - x)(1 + x))``: the other leg of a unit triangle, without cancellation near +-1."""
    return c.f("SQRT", c.f("MUL", c.f("SUB", c.const(1.0), x), c.f("ADD", x, c.const(1.0))))


def atan(lw: Lowering, node: ir.Node) -> None:
    """Atan -> ATAN2(x, 1)."""
    c = MathChain(lw, node)
    x = c.arg(0)
    c.result("ATAN2", x, _ones_like(c, x))


def asin(lw: Lowering, node: ir.Node) -> None:
    """Asin -> ATAN2(x, sqrt((1 - x)(1 + x))); NaN outside [-1, 1] as ONNX."""
    c = MathChain(lw, node)
    x = c.arg(0)
    c.result("ATAN2", x, _one_minus_square(c, x))


def acos(lw: Lowering, node: ir.Node) -> None:
    """Acos -> ATAN2(sqrt((1 - x)(1 + x)), x)."""
    c = MathChain(lw, node)
    x = c.arg(0)
    c.result("ATAN2", _one_minus_square(c, x), x)


def _half_exps(c: MathChain, x: Tensor) -> tuple[Tensor, Tensor]:
    """``e^x / 2`` and ``e^-x / 2`` as ``(h / 2) h`` with ``h = e^(x/2)``: finite up to cosh's own overflow.

    ``e^x`` itself overflows float32 from x = 88.72, while ``cosh x = e^x / 2`` is finite up to 89.42.
    """
    halves = []
    for sign in (0.5, -0.5):
        h = c.f("EXP", c.f("MUL", x, c.const(sign)))
        halves.append(c.f("MUL", c.f("MUL", h, c.const(0.5)), h))
    return halves[0], halves[1]


def _nan_of(c: MathChain, x: Tensor) -> Tensor:
    """``min(relu(x), 0)``: 0, or NaN where ``x`` is NaN on XNNPACK, whose EXP maps NaN to 0.

    Added to a result of EXPs it restores the NaN with ops XNNPACK takes (a SELECT_V2 would
    split the delegated graph); on the builtin kernels EXP keeps the NaN itself.
    """
    return c.f("MINIMUM", c.f("RELU", x), c.const(0.0))


def sinh(lw: Lowering, node: ir.Node) -> None:
    """Sinh -> e^x / 2 - e^-x / 2 (+ the NaN of x)."""
    c = MathChain(lw, node)
    x = c.arg(0)
    c.result("ADD", c.f("SUB", *_half_exps(c, x)), _nan_of(c, x))


def cosh(lw: Lowering, node: ir.Node) -> None:
    """Cosh -> e^x / 2 + e^-x / 2 (+ the NaN of x)."""
    c = MathChain(lw, node)
    x = c.arg(0)
    c.result("ADD", c.f("ADD", *_half_exps(c, x)), _nan_of(c, x))


# Beyond this magnitude x^2 could overflow float32; there asinh |x| = acosh |x| = log 2|x| to
# float32 precision, which ``f(m) + log(|x| / m)`` with ``m = min(|x|, _BIG)`` computes.
_BIG = 2.0**60
_TINY = 1e-30


def _beyond_big(c: MathChain, a: Tensor, inner, last: bool = False) -> Tensor | None:
    """``inner(m) + log(a / m)``, ``m = min(a, 2^60)``: asinh or acosh of ``a >= 0`` without overflow.

    With ``last``, the sum is the node's output.
    """
    m = c.f("MINIMUM", a, c.const(_BIG))
    # (a + t) / (m + t) is exactly 1 while a <= 2^60 (0 included) and a / 2^60 beyond; NaN stays NaN.
    tiny = c.const(_TINY)
    terms = (inner(m), c.f("LOG", c.f("DIV", c.f("ADD", a, tiny), c.f("ADD", m, tiny))))
    if last:
        c.result("ADD", *terms)
        return None
    return c.f("ADD", *terms)


def asinh(lw: Lowering, node: ir.Node) -> None:
    """Asinh -> sign(x) log(|x| + sqrt(x^2 + 1)), for |x| > 2^60 through log 2|x|."""
    c = MathChain(lw, node)
    x = c.arg(0)

    def inner(m: Tensor) -> Tensor:
        return c.f("LOG", c.f("ADD", m, c.f("SQRT", c.f("ADD", c.f("MUL", m, m), c.const(1.0)))))

    c.result("MUL", c.f("SIGN", x), _beyond_big(c, c.f("ABS", x), inner))


def acosh(lw: Lowering, node: ir.Node) -> None:
    """Acosh -> log(x + sqrt((x - 1)(x + 1))), for x > 2^60 through log 2x; NaN below 1 as ONNX."""
    c = MathChain(lw, node)

    def inner(m: Tensor) -> Tensor:
        root = c.f("SQRT", c.f("MUL", c.f("SUB", m, c.const(1.0)), c.f("ADD", m, c.const(1.0))))
        return c.f("LOG", c.f("ADD", m, root))

    _beyond_big(c, c.arg(0), inner, last=True)


def atanh(lw: Lowering, node: ir.Node) -> None:
    """Atanh -> log((1 + x) / (1 - x)) / 2."""
    c = MathChain(lw, node)
    x = c.arg(0)
    ratio = c.f("DIV", c.f("ADD", c.const(1.0), x), c.f("SUB", c.const(1.0), x))
    c.result("MUL", c.f("LOG", ratio), c.const(0.5))


def _elu_terms(c: MathChain, x: Tensor, alpha: float, inner: float = 1.0) -> tuple[Tensor, Tensor]:
    """``max(x, 0)`` and ``alpha (exp(min(x, 0) / inner) - 1)``, whose sum is ELU (CELU with ``inner``).

    ``max(x, 0)`` is RELU, which keeps a NaN (LiteRT's builtin MAXIMUM returns the number).
    """
    negative = c.f("MINIMUM", x, c.const(0.0))
    if inner != 1.0:
        negative = c.f("MUL", negative, c.const(1.0 / inner))
    return c.f("RELU", x), c.f("MUL", c.f("SUB", c.f("EXP", negative), c.const(1.0)), c.const(alpha))


def elu(lw: Lowering, node: ir.Node) -> None:
    """Elu -> ELU for alpha = 1, else max(x, 0) + alpha (exp(min(x, 0)) - 1)."""
    c = MathChain(lw, node)
    x = c.arg(0)
    alpha = attr_float(node, "alpha", 1.0)
    if alpha == 1.0:
        c.result("ELU", x)
        return
    c.result("ADD", *_elu_terms(c, x, alpha))


def selu(lw: Lowering, node: ir.Node) -> None:
    """Selu -> gamma (max(x, 0) + alpha (exp(min(x, 0)) - 1))."""
    c = MathChain(lw, node)
    x = c.arg(0)
    alpha = attr_float(node, "alpha", 1.67326319217681884765625)
    gamma = attr_float(node, "gamma", 1.05070102214813232421875)
    c.result("MUL", c.f("ADD", *_elu_terms(c, x, alpha)), c.const(gamma))


def celu(lw: Lowering, node: ir.Node) -> None:
    """Celu -> max(x, 0) + alpha (exp(min(x, 0) / alpha) - 1)."""
    c = MathChain(lw, node)
    alpha = attr_float(node, "alpha", 1.0)
    if alpha == 0.0:
        raise unsupported(node, "alpha = 0 (CELU divides by alpha)")
    c.result("ADD", *_elu_terms(c, c.arg(0), alpha, inner=alpha))


def _softplus(c: MathChain, x: Tensor) -> tuple[Tensor, Tensor]:
    """``max(x, 0)`` (RELU) and ``log(1 + exp(-|x|))``, whose sum is softplus without overflow."""
    tail = c.f("LOG", c.f("ADD", c.f("EXP", c.f("NEG", c.f("ABS", x))), c.const(1.0)))
    return c.f("RELU", x), tail


def softplus(lw: Lowering, node: ir.Node) -> None:
    """Softplus -> max(x, 0) + log(1 + exp(-|x|))."""
    c = MathChain(lw, node)
    c.result("ADD", *_softplus(c, c.arg(0)))


# Beyond this, tanh(softplus x) is 1 in float32 (1 - 2e^-2x); the clamp keeps e^2x finite.
_MISH_SATURATION = 20.0


def mish(lw: Lowering, node: ir.Node) -> None:
    """Mish -> x n / (n + 2), n = e (e + 2), e = exp(min(x, 20)): ``tanh(softplus x)`` in closed form."""
    c = MathChain(lw, node)
    x = c.arg(0)
    e = c.f("EXP", c.f("MINIMUM", x, c.const(_MISH_SATURATION)))
    n = c.f("MUL", e, c.f("ADD", e, c.const(2.0)))
    c.result("MUL", x, c.f("DIV", n, c.f("ADD", n, c.const(2.0))))


def softsign(lw: Lowering, node: ir.Node) -> None:
    """Softsign -> x / (1 + |x|)."""
    c = MathChain(lw, node)
    x = c.arg(0)
    c.result("DIV", x, c.f("ADD", c.f("ABS", x), c.const(1.0)))


def swish(lw: Lowering, node: ir.Node) -> None:
    """Swish (opset 24) -> x logistic(alpha x)."""
    c = MathChain(lw, node)
    x = c.arg(0)
    alpha = attr_float(node, "alpha", 1.0)
    scaled = x if alpha == 1.0 else c.f("MUL", x, c.const(alpha))
    c.result("MUL", x, c.f("LOGISTIC", scaled))


def thresholded_relu(lw: Lowering, node: ir.Node) -> None:
    """ThresholdedRelu -> SELECT_V2(x > alpha, x, 0)."""
    c = MathChain(lw, node, flat=True)
    x = c.arg(0)
    above = c.compare("GREATER", x, c.const(attr_float(node, "alpha", 1.0)))
    c.result("SELECT_V2", above, x, c.const(0.0))


def shrink(lw: Lowering, node: ir.Node) -> None:
    """Shrink -> SELECT_V2(x > lambd, x - bias, SELECT_V2(x < -lambd, x + bias, 0))."""
    c = MathChain(lw, node, flat=True)
    x = c.arg(0)
    if x.dtype != np.dtype(np.float32):
        raise unsupported(node, f"{x.dtype} data (qcc lowers Shrink on float tensors)")
    lambd, bias = attr_float(node, "lambd", 0.5), attr_float(node, "bias", 0.0)
    low = c.op(
        "SELECT_V2",
        [c.compare("LESS", x, c.const(-lambd)), c.f("ADD", x, c.const(bias)), c.const(0.0)],
        x.shape,
        "SelectV2Options",
    )
    c.result("SELECT_V2", c.compare("GREATER", x, c.const(lambd)), c.f("SUB", x, c.const(bias)), low)


def mod(lw: Lowering, node: ir.Node) -> None:
    """Mod -> FLOOR_MOD (fmod=0), or C's remainder from FLOOR_MOD (fmod=1; see module docstring)."""
    c = MathChain(lw, node)
    a, b = c.arg(0), c.arg(1)
    fmod, integer = attr_int(node, "fmod", 0), a.dtype != np.dtype(np.float32)
    if max(len(a.shape), len(b.shape)) > _MAX_BROADCAST_RANK and (a.shape != b.shape or (fmod and integer)):
        raise unsupported(node, f"Mod of {a.shape} and {b.shape} (TFLite broadcasts and compares up to 4-D)")
    if not fmod:
        c.result("FLOOR_MOD", a, b)
    elif not integer:
        c.result("MUL", c.f("SIGN", a), c.f("FLOOR_MOD", c.f("ABS", a), c.f("ABS", b)))
    else:
        # Integers: the floor modulus differs from the remainder by b when the signs differ.
        r = c.f("FLOOR_MOD", a, b)
        zero = c.lw.constant(f"{node.name}_zero", np.array(0, a.dtype))
        signs = c.compare("NOT_EQUAL", c.compare("LESS", a, zero), c.compare("LESS", b, zero))
        fix = c.compare("LOGICAL_AND", c.compare("NOT_EQUAL", r, zero), signs)
        c.result("SELECT_V2", fix, c.f("SUB", r, b), r)


def is_inf(lw: Lowering, node: ir.Node) -> None:
    """IsInf -> EQUAL(|x|, inf), EQUAL(x, +inf) or EQUAL(x, -inf); LESS(x, x) (all false) for neither."""
    c = MathChain(lw, node, flat=True)
    x = c.arg(0)
    positive, negative = attr_int(node, "detect_positive", 1), attr_int(node, "detect_negative", 1)
    if positive and negative:
        c.result("EQUAL", c.f("ABS", x), c.const(np.inf))
    elif positive or negative:
        c.result("EQUAL", x, c.const(np.inf if positive else -np.inf))
    else:
        c.result("LESS", x, x)  # false everywhere, NaN included


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
        if not _same_params(x, y):
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
        shape = _broadcast([total, tensor])
        out = y if i == len(inputs) else lw.model.tensor(f"{node.name}_{i}", shape, np.int8, quant=y.quant)
        lw.op(name, [total, tensor], [out], _OPTIONS[name], source=node.name)
        total = out


def _same_params(a: Tensor, b: Tensor) -> bool:
    return (
        a.quant is not None
        and b.quant is not None
        and np.array_equal(a.quant.scale, b.quant.scale)
        and np.array_equal(a.quant.zero_point, b.quant.zero_point)
    )


def mean(lw: Lowering, node: ir.Node) -> None:
    """Mean -> ADD over the inputs, DIV by their count."""
    c = MathChain(lw, node)
    inputs = [c.arg(i) for i in range(len(node.inputs))]
    if len(inputs) == 1:
        c.copy_to_output()
        return
    c.result("DIV", _fold(c, "ADD", inputs, last=False), c.const(float(len(inputs))))


def dropout(lw: Lowering, node: ir.Node) -> None:
    """Inference Dropout -> a copy of its input; its mask output, if read, is all true.

    Training mode with a non-zero ratio draws random masks, which an inference artifact cannot
    reproduce: refused unless ``training_mode`` is a constant false (or the ratio a constant 0).
    """
    training = const_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else False
    ratio = const_array(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
    if training is None or (bool(np.asarray(training)) and (ratio is None or float(ratio) != 0.0)):
        raise BackendError(
            f"node {node.name!r} (Dropout) may run in training mode, which drops random elements; "
            "a TFLite artifact runs inference only.",
            "export the model in eval mode (training_mode false), or --exclude the node.",
        )
    c = MathChain(lw, node)
    c.copy_to_output()
    mask = node.outputs[1] if len(node.outputs) > 1 else None
    if mask is not None and (mask.uses() or mask.is_graph_output()):
        x = c.arg(0)
        # x < x is false everywhere (NaN included); its negation is the all-true keep mask.
        c.result("LOGICAL_NOT", c.compare("LESS", x, x), index=1)


_SHIFTED = (np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.int16), np.dtype(np.int32))


def bit_shift(lw: Lowering, node: ir.Node) -> None:
    """BitShift -> RIGHT_SHIFT or STABLEHLO_SHIFT_LEFT, for constant shifts within the type's width.

    LiteRT's left shift takes signed types only: uint8 is shifted in int32 and CAST back, which
    drops the high bits as a uint8 shift does.
    """
    direction = node.attributes.get("direction")
    left = direction is not None and direction.as_string() == "LEFT"
    x = lw.read(node.inputs[0], False)
    shift = const_array(node.inputs[1])
    bits = 8 * x.dtype.itemsize
    if x.dtype not in _SHIFTED:
        raise unsupported(node, f"{x.dtype} data (qcc shifts {', '.join(map(str, _SHIFTED))} on TFLite)")
    if shift is None or np.any(shift < 0) or np.any(shift >= bits):
        raise unsupported(node, f"shift amounts that are not constants in [0, {bits})")
    y = lw.output(node)
    if not left:
        amount = lw.constant(f"{node.name}_shift", np.asarray(shift).astype(x.dtype))
        lw.op("RIGHT_SHIFT", [x, amount], [y], "RightShiftOptions", source=node.name)
        return
    wide = np.dtype(np.int32) if x.dtype == np.dtype(np.uint8) else x.dtype
    amount = lw.constant(f"{node.name}_shift", np.asarray(shift).astype(wide))
    if wide == x.dtype:
        lw.op("STABLEHLO_SHIFT_LEFT", [x, amount], [y], source=node.name)
        return
    inside = lw.model.tensor(f"{node.name}_int32", x.shape, wide)
    shifted = lw.model.tensor(f"{node.name}_shifted", y.shape, wide)
    u8, i32 = TensorType.UINT8, TensorType.INT32
    lw.op("CAST", [x], [inside], "CastOptions", source=node.name, in_data_type=u8, out_data_type=i32)
    lw.op("STABLEHLO_SHIFT_LEFT", [inside, amount], [shifted], source=node.name)
    lw.op("CAST", [shifted], [y], "CastOptions", source=node.name, in_data_type=i32, out_data_type=u8)


LOWERINGS.update(
    {
        "Log": builtin_unary("LOG"),
        "Ceil": builtin_unary("CEIL"),
        "Floor": builtin_unary("FLOOR"),
        "Round": builtin_unary("ROUND"),
        "Sign": builtin_unary("SIGN"),
        "Sin": builtin_unary("SIN"),
        "Cos": builtin_unary("COS"),
        "Tan": tan,
        "Asin": asin,
        "Acos": acos,
        "Atan": atan,
        "Sinh": sinh,
        "Cosh": cosh,
        "Asinh": asinh,
        "Acosh": acosh,
        "Atanh": atanh,
        "Elu": elu,
        "Selu": selu,
        "Celu": celu,
        "Softplus": softplus,
        "Softsign": softsign,
        "Mish": mish,
        "Swish": swish,
        "ThresholdedRelu": thresholded_relu,
        "Shrink": shrink,
        "Mod": mod,
        "IsInf": is_inf,
        "Sum": variadic("ADD"),
        "Mean": mean,
        "Max": variadic("MAXIMUM"),
        "Min": variadic("MINIMUM"),
        "CastLike": cast,
        "Dropout": dropout,
        "BitShift": bit_shift,
    }
)
