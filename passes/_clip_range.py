"""Choosing an activation's clip range from its histogram.

* ``minmax``: the observed range. Never clips, but one outlier stretches the step for every value.
* ``meanmax``: the mean over calibration samples (feeds) of each one's own min and max: an outlier
  in one sample moves the range by 1/N of its excess (a single feed holding a batch is one
  sample). What NVIDIA ModelOpt's default "entropy" calibration amounts to (its 128-bin histograms
  settle on about the first sample's peak), without the dependence on sample order; one of the two
  methods the ``trt`` default chooses from (measured below).
* ``percentile``: clip each side at the 99.99th percentile of that side's magnitudes.
* ``entropy``: TensorRT's KL-divergence search: over the magnitude histogram, the threshold whose
  128-level quantized distribution loses least information (KL divergence) against the clipped
  reference distribution; candidates every 16 bins from 128 to 2048. The threshold bounds both
  sides of the observed range.
* ``mse``: the range minimizing the expected squared quantization error, evaluated on the
  histogram: values inside the range cost ``step^2 / 12`` (uniform rounding noise), values outside
  cost their squared distance to the range. Candidates shrink both sides of the observed range by
  a common factor (for symmetric schemes, the absolute maximum); all candidates are scored in one
  vectorized pass over the bins.

Measured on the zoo (``ort``), neither clipping method wins everywhere: mse lifts MobileNetV2
top-1 agreement 0.60 -> 0.71 and PP-OCRv5 recognition exact lines 0.00 -> 0.50, but lowers the
PP-OCRv5 detector's mask IoU 0.79 -> 0.63 (sparse large activations carry the text), so minmax
stays the default on ``ort``. On ``trt`` (zoo, 5 models), ``meanmax`` matches or beats
ModelOpt everywhere: MobileNetV2 top-1 0.69 (minmax 0.63, ModelOpt 0.69), silero decisions 0.994
(0.942 / 0.989), PP-OCRv5 det mask IoU 0.89 (0.77 / 0.78), MiniLM NN 0.86 (0.83 / 0.58). ``trt``
and ``tflite`` compile with both and keep the one closer to fp32 (``TargetSpec.default_methods``);
on ``tflite``, whose every int8 op requantizes its output, meanmax raised MobileNetV2's all-int8
output cosine from 0.963 to 0.977. A graph output always keeps its observed range
(``passes/calibrate.py``): a clipped output is wrong outright (silero's speech probability never
reaches 0.5).

Whatever the method, a tensor whose every reader saturates is clipped where they saturate
(:func:`consumer_bounds`): Relu below 0, Clip at its bounds, HardSigmoid and HardSwish where they are
flat, Sigmoid and SiLU below -8. The values cut off read the same downstream, and the
rest get the finer step. YOLOv8n's Conv outputs feed SiLU and reach -144 where SiLU is 0 below -8:
bounding them took its ``tflite`` box F1 on 116 fp32 boxes from 0.88 to 0.96 and ``ort``'s from 0.89
to 0.94 (``trt`` runs SiLU float and quantizes only the SiLU outputs, so its artifact is unchanged).
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from qcc.irutils import attr_float, const_array, consumers_of
from qcc.passes._histogram import TensorHistogram

PERCENTILE = 99.99
_CANDIDATES = np.linspace(0.05, 1.0, 96)

# Beyond +-8, Sigmoid is within 3.4e-4 of 0 or 1 and SiLU (x Sigmoid(x)) within 2.7e-3 of 0. Each
# is under half an int8 step of the consumer's own output (Sigmoid's [0, 1] in 255 steps: 2.0e-3;
# a SiLU output whose maximum is 1 or more: 2.5e-3 or more), so an input clipped there reads the
# same after requantization, and a float consumer moves less than the input's own step (16 / 255
# at the least) moves it.
# Tanh saturates as well (within 6.7e-4 beyond +-4) but is left unbounded for now: in Magika's
# GELU (tanh form) the finer step let the tflite compile meet --tolerance on its 4 checked samples
# with 4 nodes float instead of 12, while calibration sample 3, unchecked, went to 1 - cosine 0.77
# (eval top-1 0.979 -> 0.915). The bound is right; the 4-sample check is what cannot see it.
SIGMOID_SATURATES = 8.0
_UNBOUNDED = (-math.inf, math.inf)


def consumer_bounds(value: ir.Value) -> tuple[float, float]:
    """Returns the interval beyond which no consumer of the value can tell the values apart.

    Every consumer saturates outside it: exactly (Relu, Clip, HardSigmoid, HardSwish and
    x HardSigmoid(x) below -3) or within half an int8 step of its output (Sigmoid, SiLU as
    x Sigmoid(x)). A range clipped to it loses nothing the consumers keep and gains resolution: a
    YOLOv8 Conv feeding a SiLU reaches -144 where SiLU is 0 below -8 (its step 4.4x too coarse). A
    graph output, or a value one consumer reads unsaturated, is unbounded.
    """
    if value.is_graph_output():
        return _UNBOUNDED
    low, high = math.inf, -math.inf
    for node in consumers_of(value):
        node_low, node_high = _saturation(node, value)
        low, high = min(low, node_low), max(high, node_high)
    return (low, high) if low <= high else _UNBOUNDED


def _saturation(node: ir.Node, value: ir.Value) -> tuple[float, float]:
    """The interval outside which ``node`` gives the same output whatever ``value`` holds there."""
    op = _onnx_op(node)
    if op == "Relu":
        return 0.0, math.inf
    if op == "Sigmoid":
        return -SIGMOID_SATURATES, SIGMOID_SATURATES
    if op == "HardSigmoid":
        return _hard_sigmoid(node)
    if op == "HardSwish":
        return -3.0, math.inf
    if op == "Clip" and node.inputs and node.inputs[0] is value:
        return _clip(node)
    if op == "Mul" and len(node.inputs) == 2:  # x Sigmoid(x) (SiLU), x HardSigmoid(x): 0 where the gate is
        other = node.inputs[1] if node.inputs[0] is value else node.inputs[0]
        gate = other.producer() if other is not None else None
        if gate is not None and _onnx_op(gate) in ("Sigmoid", "HardSigmoid") and gate.inputs[0] is value:
            return _saturation(gate, value)[0], math.inf
    return _UNBOUNDED


def _onnx_op(node: ir.Node) -> str | None:
    """The node's op type if it is a standard ONNX operator, else None."""
    return node.op_type if node.domain in ("", "ai.onnx") else None


def _hard_sigmoid(node: ir.Node) -> tuple[float, float]:
    alpha, beta = attr_float(node, "alpha", 0.2), attr_float(node, "beta", 0.5)
    if alpha <= 0:
        return _UNBOUNDED
    return -beta / alpha, (1.0 - beta) / alpha


def _clip(node: ir.Node) -> tuple[float, float]:
    bounds = []
    for index, default in ((1, -math.inf), (2, math.inf)):
        given = node.inputs[index] if len(node.inputs) > index else None
        array = const_array(given) if given is not None else None
        if given is not None and (array is None or array.size != 1):
            return _UNBOUNDED
        bounds.append(default if array is None else float(array.reshape(())))
    return bounds[0], bounds[1]


def clip_range(
    hist: TensorHistogram,
    method: str,
    levels: int,
    symmetric: bool,
    bounds: tuple[float, float] = _UNBOUNDED,
) -> tuple[float, float]:
    """Returns (low, high) for the tensor, within its observed range and ``bounds`` (widened to 0).

    Args:
        hist: the tensor's histogram.
        method: ``minmax``, ``meanmax``, ``percentile``, ``entropy`` or ``mse``.
        levels: number of integer levels of the target type (255 steps for 8 bits -> 256).
        symmetric: the scheme has zero point 0 (the range is [-a, a]).
        bounds: where the tensor's consumers saturate (:func:`consumer_bounds`).
    """
    low, high = _method_range(hist, method, levels, symmetric)
    return max(low, min(bounds[0], 0.0)), min(high, max(bounds[1], 0.0))


def _method_range(hist: TensorHistogram, method: str, levels: int, symmetric: bool) -> tuple[float, float]:
    low, high = min(hist.min, 0.0), max(hist.max, 0.0)
    if method == "meanmax" and hist.samples:
        return min(hist.sum_min / hist.samples, 0.0), max(hist.sum_max / hist.samples, 0.0)
    if method == "minmax" or hist.limit == 0.0:
        return low, high
    if method == "percentile":
        return -_side_percentile(hist.neg, hist, -low), _side_percentile(hist.pos, hist, high)
    if method == "entropy":
        threshold = _entropy_threshold(hist.pos + hist.neg) * hist.limit / len(hist.pos)
        return max(low, -threshold), min(high, threshold)
    return _best_mse(hist, low, high, levels, symmetric)


def _side_percentile(counts: np.ndarray, hist: TensorHistogram, extreme: float) -> float:
    total = counts.sum()
    if total == 0:
        return 0.0
    cumulative = np.cumsum(counts)
    index = int(np.searchsorted(cumulative, total * PERCENTILE / 100.0))
    return min(float((index + 1) * hist.limit / len(counts)), extreme)


def _entropy_threshold(counts: np.ndarray, levels: int = 128, stride: int = 16) -> int:
    """Returns the number of bins (the threshold) minimizing KL(reference || quantized)."""
    counts = counts.astype(np.float64)
    total = counts.sum()
    last = int(np.nonzero(counts)[0][-1]) + 1 if total else len(counts)
    if last <= levels:
        return last
    best, best_kl = last, np.inf
    for bins in range(levels, last + stride, stride):
        bins = min(bins, last)
        reference = counts[:bins].copy()
        reference[-1] += counts[bins:].sum()  # clipped mass lands on the edge
        # Quantize the first `bins` bins into `levels` groups, then spread each group's mass
        # uniformly over its non-empty bins.
        group = (np.arange(bins) * levels) // bins
        nonzero = counts[:bins] > 0
        mass = np.bincount(group, weights=counts[:bins], minlength=levels)
        support = np.bincount(group, weights=nonzero, minlength=levels)
        expanded = np.where(nonzero, mass[group] / np.maximum(support[group], 1), 0.0)
        p = reference / reference.sum()
        q = expanded / max(expanded.sum(), 1e-30)
        keep = p > 0
        kl = float(np.sum(p[keep] * np.log(p[keep] / np.maximum(q[keep], 1e-12))))
        if kl < best_kl:
            best, best_kl = bins, kl
    return best


def _best_mse(hist: TensorHistogram, low: float, high: float, levels: int, symmetric: bool) -> tuple[float, float]:
    centers = hist.centers()
    if symmetric:
        peak = max(-low, high)
        lows, highs = -_CANDIDATES * peak, _CANDIDATES * peak
    else:
        lows, highs = _CANDIDATES * low, _CANDIDATES * high
    steps = (highs - lows) / (levels - 1)
    # Error of each bin (rows: candidates) on each side, weighted by its count.
    over_pos = np.maximum(centers[None, :] - highs[:, None], 0.0)
    over_neg = np.maximum(centers[None, :] + lows[:, None], 0.0)
    inside = steps[:, None] ** 2 / 12.0
    cost_pos = np.where(over_pos > 0, over_pos**2, inside) @ hist.pos
    cost_neg = np.where(over_neg > 0, over_neg**2, inside) @ hist.neg
    best = int(np.argmin(cost_pos + cost_neg))
    return float(lows[best]), float(highs[best])
