"""TFLite lowering rules: element-wise math and activations (Log, Ceil, Elu, Softplus, Mod, IsInf, ...).

Rules follow docs/tflite.md "Adding a lowering". ``LOWERINGS`` is merged into the registry in
``_tflite_ops`` after the base rules (a key here replaces a base rule of the same op).
``INT8_OPS`` / ``SHARED_SCALE_OPS`` extend ``TFLITE_SPEC`` for ops lowered here with an int8
kernel (see ``backends/tflite.py``). This family module also collects the rules of its concept
modules: ``_tflite_ops_trig`` (Tan, Asin, ..., Atanh), ``_tflite_ops_variadic`` (Sum, Mean, Max,
Min, with int8 Max/Min) and ``_tflite_ops_passthrough`` (Dropout, CastLike, BitShift); all build
their chains with ``MathChain`` (``_tflite_ops_mathchain``).

The ops run float (none has an int8 TFLite kernel XNNPACK takes), as one builtin where LiteRT
has it (LOG, CEIL, FLOOR, ROUND, SIGN, SIN, COS, ELU, FLOOR_MOD) and otherwise as a chain of
float32 builtins, exact or to float32 precision. Measured over the float32 range against float64
with LiteRT's builtin kernels: relative error below 2.5e-7 where ``|f(x)| >= 1``, absolute error
below 1.5e-7 elsewhere (near 0, sinh, asinh, atanh, softplus and the ELU family keep that absolute,
not relative, error). XNNPACK's float EXP, SIN and COS are coarser (EXP up to 3.3e-6 relative for
large arguments; see ``_tflite_ops_trig``). The chains here:

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
* ``IsInf`` compares with +-inf.

LiteRT's builtin float ADD, SUB, MUL and DIV saturate at +-FLT_MAX (their NONE activation is a
clamp to the float range), so a chain through them turns an infinite input into a large finite
output on those kernels; XNNPACK keeps the infinity. For a NaN operand the builtin MAXIMUM and
MINIMUM return the number and XNNPACK's EXP returns 0; the decompositions here keep a NaN input
NaN on both (RELU for ``max(x, 0)``).

LiteRT's float kernels compute in float32: converting float16/float64 values is the lowering's
job (a CAST at the model's edges); a rule handed such a tensor refuses the node and says so.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.backends import _tflite_ops_passthrough, _tflite_ops_trig, _tflite_ops_variadic
from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_mathchain import MAX_BROADCAST_RANK, MathChain
from qcc.backends._tflite_ops_window import unsupported
from qcc.backends._tflite_writer import Tensor
from qcc.irutils import attr_float, attr_int

LOWERINGS: dict = {}
INT8_OPS: frozenset[str] = frozenset()
SHARED_SCALE_OPS: frozenset[str] = frozenset()
# The concept modules whose rules this family collects.
CONCEPTS = (_tflite_ops_trig, _tflite_ops_variadic, _tflite_ops_passthrough)


def builtin_unary(name: str):
    """Returns the rule for a float op that is exactly one LiteRT builtin (LOG, CEIL, SIN, ...)."""

    def rule(lw: Lowering, node: ir.Node) -> None:
        chain = MathChain(lw, node)
        chain.result(name, chain.arg(0))

    return rule


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
    low = c.f("SELECT_V2", c.compare("LESS", x, c.const(-lambd)), c.f("ADD", x, c.const(bias)), c.const(0.0))
    c.result("SELECT_V2", c.compare("GREATER", x, c.const(lambd)), c.f("SUB", x, c.const(bias)), low)


def mod(lw: Lowering, node: ir.Node) -> None:
    """Mod -> FLOOR_MOD (fmod=0), or C's remainder from FLOOR_MOD (fmod=1; see module docstring)."""
    c = MathChain(lw, node)
    a, b = c.arg(0), c.arg(1)
    fmod, integer = attr_int(node, "fmod", 0), a.dtype != np.dtype(np.float32)
    if max(len(a.shape), len(b.shape)) > MAX_BROADCAST_RANK and (a.shape != b.shape or (fmod and integer)):
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


LOWERINGS.update(
    {
        "Log": builtin_unary("LOG"),
        "Ceil": builtin_unary("CEIL"),
        "Floor": builtin_unary("FLOOR"),
        "Round": builtin_unary("ROUND"),
        "Sign": builtin_unary("SIGN"),
        "Sin": builtin_unary("SIN"),
        "Cos": builtin_unary("COS"),
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
    }
)
for _concept in CONCEPTS:
    LOWERINGS.update(_concept.LOWERINGS)
