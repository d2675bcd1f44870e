"""TFLite lowering rules for the spectral generators: HannWindow, HammingWindow, BlackmanWindow, MelWeightMatrix.

These ops compute a tensor from scalars alone. When every input is a constant the output is a
constant (computed here in float64, as ONNX's reference does, and written once); otherwise it is
computed when the model runs, in float32, so the output follows the run-time value.

Windows (``n = 0 .. size - 1``; ``N = size`` when ``periodic``, else ``size - 1``)::

    w[n] = a0 + a1 cos(2 pi n / N) + a2 cos(4 pi n / N)
    Hann (a0, a1, a2) = (1/2, -1/2, 0)        (= sin^2(pi n / N))
    Hamming           = (25/46, -21/46, 0)
    Blackman          = (0.42, -0.5, 0.08)

-> ``RANGE(0, size, 1)`` (int32), CAST, MUL by ``2 pi``, DIV by ``N``, COS (twice for Blackman),
MUL/ADD; ``output_datatype`` is reached by CAST (float16/float64 are float32 inside the artifact).

MelWeightMatrix, as ONNX defines it (``M`` mel bins, ``L`` dft_length, ``R`` sample_rate)::

    mel(f) = 2595 log10(1 + f / 700),   step = (mel(upper) - mel(lower)) / (M + 2)
    b[k]   = floor((L + 1) * 700 (10^((mel(lower) + k step) / 2595) - 1) / R),   k = 0 .. M + 1
    W[j, i] (j < L // 2 + 1), with l, c, r = b[i], b[i + 1], b[i + 2]:
        (r - j) / (r - c)                          if c <= j < r      (falling edge)
        (j - l + [c == l]) / max(c - l, 1)         elif l <= j <= c   (rising edge; 1 at c when c == l)
        0                                          otherwise

-> LOG, EXP and FLOOR for the bin edges over ``RANGE(0, M + 2)``, three SLICEs for ``l, c, r``
(a ``[1, M]`` row each) against the ``[L // 2 + 1, 1]`` column ``j``: broadcast SUB/DIV,
comparisons, LOGICAL_AND and two SELECT_V2. The run-time bin edges are floored float32 values, so
an edge that falls within float32 rounding of an integer may land one bin off ONNX's float64.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_mathchain import OPTIONS, broadcast_shape
from qcc.backends._tflite_ops_rule import BOOL, F32, I32, Rule, write_constant
from qcc.backends._tflite_ops_window import unsupported
from qcc.backends._tflite_writer import Tensor
from qcc.errors import BackendError
from qcc.irutils import attr_int, const_array

# Cosine-sum coefficients (a0, a1, a2) of each window.
WINDOW_COEFFICIENTS = {
    "HannWindow": (0.5, -0.5, 0.0),
    "HammingWindow": (25.0 / 46.0, -21.0 / 46.0, 0.0),
    "BlackmanWindow": (0.42, -0.5, 0.08),
}
_MEL_SCALE = 2595.0  # mel(f) = 2595 log10(1 + f / 700)
_MEL_BREAK = 700.0


def _f(rule: Rule, name: str, *inputs: Tensor, dtype=F32) -> Tensor:
    """Appends the builtin ``name`` over ``inputs`` (numpy broadcasting) and returns its output."""
    return rule.op(name, list(inputs), broadcast_shape(inputs), dtype, OPTIONS.get(name))


def _compare(rule: Rule, name: str, a: Tensor, b: Tensor) -> Tensor:
    return _f(rule, name, a, b, dtype=BOOL)


def _row(rule: Rule, edges: Tensor, start: int, size: Tensor, length: int) -> Tensor:
    """``edges[start : start + size]`` as a ``[1, size]`` row (SLICE of a run-time size, RESHAPE)."""
    begin = rule.const(np.array([start], np.int32))
    part = rule.op("SLICE", [edges, begin, size], [length], F32, "SliceOptions")
    return rule.op(
        "RESHAPE",
        [part, rule.const(np.array([1, -1], np.int32))],
        [1, length],
        F32,
        "ReshapeOptions",
        new_shape=[1, -1],
    )


def _scalar(rule: Rule, index: int, dtype) -> Tensor:
    """Scalar input ``index`` as a 0-d ``dtype`` tensor (a constant when it is one)."""
    value = rule.node.inputs[index]
    array = const_array(value)
    if array is not None:
        if array.size != 1:
            raise unsupported(rule.node, f"input {value.name!r} holds {array.size} values; ONNX wants a scalar")
        return rule.const(array.reshape(()).astype(dtype))
    x = rule.lw.read(value, False)
    if int(np.prod(x.shape)) != 1:
        raise unsupported(rule.node, f"input {value.name!r} is shaped {list(x.shape)}; ONNX wants a scalar")
    return rule.reshape(rule.cast(x, dtype), [])


def _arange(rule: Rule, limit: Tensor, length: int) -> Tensor:
    """``[0, 1, .., limit - 1]`` as float32 (RANGE of int32 scalars, then CAST); ``length`` is its static size."""
    zero, one = rule.const(np.int32(0)), rule.const(np.int32(1))
    return rule.cast(rule.op("RANGE", [zero, limit, one], [length], I32, "RangeOptions"), F32)


def _output_length(node: ir.Node, axis: int) -> int:
    """The static size of the output along ``axis``, which the model must declare.

    Raises:
        BackendError: it is not declared: it depends on input values shape inference cannot see.
    """
    shape = node.outputs[0].shape
    if shape is None or len(shape) <= axis or not isinstance(shape[axis], int):
        inputs = ", ".join(repr(v.name) for v in node.inputs if v is not None and const_array(v) is None)
        raise BackendError(
            f"node {node.name!r} ({node.op_type}): output {node.outputs[0].name!r} has no static shape; its size "
            f"is the run-time value of {inputs}, which ONNX shape inference cannot know, and TFLite tensors need one.",
            "declare the output's static shape in the model (the sizes of the calibration sample), or make "
            "those inputs constants.",
        )
    return int(shape[axis])


# -- windows -----------------------------------------------------------------------------------


def window_values(op_type: str, size: int, periodic: bool) -> np.ndarray:
    """The window ``op_type`` of ``size`` points in float64 (module docstring)."""
    a0, a1, a2 = WINDOW_COEFFICIENTS[op_type]
    angle = np.arange(size, dtype=np.float64) * (2.0 * math.pi) / (size if periodic else size - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return a0 + a1 * np.cos(angle) + a2 * np.cos(2.0 * angle)


def cosine_window(lw: Lowering, node: ir.Node) -> None:
    """HannWindow / HammingWindow / BlackmanWindow -> a constant, or RANGE, COS, MUL, ADD (module docstring)."""
    periodic = bool(attr_int(node, "periodic", 1))
    size = const_array(node.inputs[0])
    if size is not None:
        write_constant(lw, node, window_values(node.op_type, int(size.reshape(-1)[0]), periodic))
        return
    rule = Rule(lw, node)
    a0, a1, a2 = WINDOW_COEFFICIENTS[node.op_type]
    count = _scalar(rule, 0, I32)
    n = _arange(rule, count, _output_length(node, 0))
    period = rule.cast(count, F32)
    if not periodic:
        period = _f(rule, "SUB", period, rule.const(np.float32(1)))
    angle = _f(rule, "DIV", _f(rule, "MUL", n, rule.const(np.float32(2.0 * math.pi))), period)
    cosine = _f(rule, "MUL", _f(rule, "COS", angle), rule.const(np.float32(a1)))
    window = _f(rule, "ADD", cosine, rule.const(np.float32(a0)))
    if a2:
        double = _f(rule, "COS", _f(rule, "MUL", angle, rule.const(np.float32(2))))
        window = _f(rule, "ADD", window, _f(rule, "MUL", double, rule.const(np.float32(a2))))
    rule.finish(window)


# -- MelWeightMatrix ---------------------------------------------------------------------------


def mel_weight_values(bins: int, dft_length: int, rate: int, lower: float, upper: float) -> np.ndarray:
    """The ``[dft_length // 2 + 1, bins]`` mel filter bank in float64 (module docstring)."""
    low, high = (_MEL_SCALE * np.log10(1.0 + np.float64(f) / _MEL_BREAK) for f in (lower, upper))
    mel = np.arange(bins + 2, dtype=np.float64) * ((high - low) / (bins + 2)) + low
    hertz = _MEL_BREAK * (10.0 ** (mel / _MEL_SCALE) - 1.0)
    edges = np.floor((dft_length + 1) * hertz / rate)
    j = np.arange(dft_length // 2 + 1, dtype=np.float64)[:, None]
    left, center, right = edges[None, :bins], edges[None, 1 : bins + 1], edges[None, 2:]
    rising = (j - left + (center == left)) / np.maximum(center - left, 1.0)
    falling = (right - j) / np.maximum(right - center, 1.0)
    weights = np.where((left <= j) & (j <= center), rising, 0.0)
    return np.where((center <= j) & (j < right), falling, weights)


def mel_weight_matrix(lw: Lowering, node: ir.Node) -> None:
    """MelWeightMatrix -> a constant, or the run-time filter bank (module docstring)."""
    arrays = [const_array(v) if v is not None else None for v in node.inputs[:5]]
    if len(node.inputs) < 5 or any(v is None for v in node.inputs[:5]):
        raise unsupported(node, "fewer than the five inputs ONNX requires")
    if all(a is not None for a in arrays):
        bins, length, rate = (int(a.reshape(-1)[0]) for a in arrays[:3])
        lower, upper = (float(a.reshape(-1)[0]) for a in arrays[3:])
        write_constant(lw, node, mel_weight_values(bins, length, rate, lower, upper))
        return
    rule = Rule(lw, node)
    spectrum, bins_static = _output_length(node, 0), _output_length(node, 1)
    bins = _scalar(rule, 0, I32)
    length = _scalar(rule, 1, I32)
    rate, lower, upper = _scalar(rule, 2, F32), _scalar(rule, 3, F32), _scalar(rule, 4, F32)

    def mel(hertz: Tensor) -> Tensor:  # 2595 log10(1 + f / 700), as 2595 / ln 10 * LOG
        ratio = _f(rule, "ADD", _f(rule, "DIV", hertz, rule.const(np.float32(_MEL_BREAK))), rule.const(np.float32(1)))
        return _f(rule, "MUL", _f(rule, "LOG", ratio), rule.const(np.float32(_MEL_SCALE / math.log(10.0))))

    low = mel(lower)
    count = _f(rule, "ADD", bins, rule.const(np.int32(2)), dtype=I32)
    step = _f(rule, "DIV", _f(rule, "SUB", mel(upper), low), rule.cast(count, F32))
    points = _f(rule, "ADD", _f(rule, "MUL", _arange(rule, count, bins_static + 2), step), low)
    exponent = _f(rule, "MUL", points, rule.const(np.float32(math.log(10.0) / _MEL_SCALE)))
    growth = _f(rule, "SUB", _f(rule, "EXP", exponent), rule.const(np.float32(1)))
    hertz = _f(rule, "MUL", growth, rule.const(np.float32(_MEL_BREAK)))
    scale = _f(rule, "ADD", rule.cast(length, F32), rule.const(np.float32(1)))
    edges = _f(rule, "FLOOR", _f(rule, "DIV", _f(rule, "MUL", hertz, scale), rate))

    size = rule.reshape(bins, [1])
    left, center, right = (_row(rule, edges, k, size, bins_static) for k in range(3))
    two, one_int = rule.const(np.int32(2)), rule.const(np.int32(1))
    half = _f(rule, "ADD", _f(rule, "FLOOR_DIV", length, two, dtype=I32), one_int, dtype=I32)
    column = rule.const(np.array([-1, 1], np.int32))
    j = rule.op(
        "RESHAPE", [_arange(rule, half, spectrum), column], [spectrum, 1], F32, "ReshapeOptions", new_shape=[-1, 1]
    )

    one = rule.const(np.float32(1))
    tie = rule.cast(_compare(rule, "EQUAL", center, left), F32)
    rise = _f(rule, "MAXIMUM", _f(rule, "SUB", center, left), one)
    rising = _f(rule, "DIV", _f(rule, "ADD", _f(rule, "SUB", j, left), tie), rise)
    fall = _f(rule, "MAXIMUM", _f(rule, "SUB", right, center), one)
    falling = _f(rule, "DIV", _f(rule, "SUB", right, j), fall)
    on_rise = _compare(
        rule, "LOGICAL_AND", _compare(rule, "LESS_EQUAL", left, j), _compare(rule, "LESS_EQUAL", j, center)
    )
    on_fall = _compare(rule, "LOGICAL_AND", _compare(rule, "LESS_EQUAL", center, j), _compare(rule, "LESS", j, right))
    weights = _f(rule, "SELECT_V2", on_rise, rising, rule.const(np.float32(0)))
    rule.finish(_f(rule, "SELECT_V2", on_fall, falling, weights))


LOWERINGS: dict = {
    "HannWindow": cosine_window,
    "HammingWindow": cosine_window,
    "BlackmanWindow": cosine_window,
    "MelWeightMatrix": mel_weight_matrix,
}
