"""TFLite lowering rules: trigonometric and hyperbolic functions (Tan, Asin, ..., Sinh, ..., Atanh).

Collected by the family module ``_tflite_ops_math`` (Sin and Cos, single builtins, are listed
there). The ops run float, as chains of float32 builtins (``MathChain``), exact or to float32
precision (see ``_tflite_ops_math`` for the measured error). XNNPACK's float EXP, SIN and COS
are coarser than the builtin kernels: EXP up to 3.3e-6 relative for large arguments, so sinh and
cosh; tan up to 8e-6 relative next to its poles.

* ``tan x = sin x / cos x``; ``atan x = atan2(x, 1)``, ``asin x = atan2(x, sqrt((1 - x)(1 + x)))``,
  ``acos x = atan2(sqrt((1 - x)(1 + x)), x)`` (exact at +-1; ``(1 - x)(1 + x)`` keeps the
  digits ``1 - x^2`` loses near +-1);
* ``sinh x = e^x / 2 - e^-x / 2``, ``cosh x = e^x / 2 + e^-x / 2`` (``e^x / 2 = (h / 2) h`` with
  ``h = e^(x/2)``, finite wherever the result is), ``asinh x = sign(x) log(|x| + sqrt(x^2 + 1))``
  (odd, so no cancellation for x < 0), ``acosh x = log(x + sqrt((x - 1)(x + 1)))``, both through
  ``log 2|x|`` beyond 2^60 where ``x^2`` would overflow, ``atanh x = log((1 + x) / (1 - x)) / 2``.

XNNPACK's EXP returns 0 for a NaN operand; sinh and cosh add ``min(relu(x), 0)``, which is 0 or
NaN on XNNPACK, so that a NaN input stays NaN on both resolvers.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from tflite.TensorType import TensorType

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_mathchain import MathChain
from qcc.backends._tflite_writer import Tensor


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


LOWERINGS = {
    "Tan": tan,
    "Asin": asin,
    "Acos": acos,
    "Atan": atan,
    "Sinh": sinh,
    "Cosh": cosh,
    "Asinh": asinh,
    "Acosh": acosh,
    "Atanh": atanh,
}
