"""Smooth activations (SmoothQuant): move outlier channels of MatMul/Gemm inputs into the weights.

A transformer's LayerNorm and GELU outputs have a few channels 10-30x larger than the rest (MiniLM:
channel 99 of every LayerNorm); one scale per tensor spends most of the int8 levels on them and
rounds the other channels coarsely. For ``y = x W`` with ``x`` of shape (..., C) and ``W`` (C, N),
dividing input channel ``j`` by ``s_j`` and multiplying row ``j`` of ``W`` by it leaves ``y``
unchanged: ``y = (x diag(s)^-1) (diag(s) W)``. With ``s_j = max|x_j|^a / max|W_j|^(1-a)``
(Xiao et al., "SmoothQuant", 2023) the migration strength ``a`` trades the activation's outliers
for the weight's; per-channel weight scales absorb the larger rows well. Factors below their median
are raised to it, so a channel that was quiet on the calibration data is not amplified relative to
the median channel: on
MiniLM's eval sentences such channels came alive and, amplified, became the new outliers
(``--dynamic`` eval cosine 0.9930 without the floor, 0.9975 with it, 0.9936 unsmoothed).

Per input tensor the pass chooses ``a`` from ``ALPHAS`` by measurement: on rows of the calibration
inputs (a fixed-size reservoir per tensor, ``ChannelStats``) it fake-quantizes ``x / s`` (per tensor,
the target's activation type, the range of every channel seen) and ``diag(s) W`` (the target's
weight scheme) and keeps the ``a`` with the lowest relative output error of the tensor's layers, if
that is below ``GAIN`` times the unsmoothed error; otherwise, or with fewer than ``MIN_ROWS`` rows,
the tensor is left alone.

``1 / s`` then has to be applied to ``x`` where it is made, without changing any other reader:

* into the producer's constants, when the layers are the tensor's only readers and the producer
  runs float (where a Mul would, below: an int8 op rounds a per-channel constant per tensor):
  ``LayerNormalization`` over the last axis (scale and bias / ``s``), ``Mul`` by a constant
  (the constant / ``s``: GELU's final ``* 0.5``), ``Div`` by a constant (the constant * ``s``),
  or an ``Add``/``Sub`` of a constant after one of these (a decomposed LayerNorm's
  ``norm * gamma + beta``: both constants / ``s``);
* else, as an inserted ``Mul(x, 1/s)`` read only by the layers, where the target runs that Mul
  float ahead of the layers' input quantizer (``TargetSpec.smoothing_mul_runs_float``: the
  post-LN transformer's LayerNorm also feeds the residual Add);
* else not at all (TFLite: the Mul would itself run int8 on the unsmoothed tensor).

A float rewrite that needs data: it runs first among the quantization passes, before the plan, so
that the plan and calibration see the smoothed model. It reads the calibration data once more (at
most ``MAX_SAMPLES`` samples, spread over the set), so it is skipped for a one-shot iterator, which
calibration must read whole; the report says so. (``trt``'s method selection turns an iterator
into a list first, and smooths.)
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import onnx_ir as ir

from qcc.annotations import Smoothing, set_smoothing
from qcc.irutils import NameAllocator, add_initializer, attr_int, const_array, set_constant
from qcc.options import Precision
from qcc.passes._base import QccPass
from qcc.passes.calibrate import observe_float
from qcc.quantmath import activation_params, fake_quantize, symmetric_weight_scale

logger = logging.getLogger(__name__)

ALPHAS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
GAIN = 0.75  # smooth only where the layers' output error falls below this fraction of the unsmoothed one (a clear gain)
HELD_ROWS = 512  # calibration rows kept per tensor to measure the error on (at most)
HELD_BYTES = 128 << 20  # all tensors' rows together: fewer rows per tensor in a model with many
MIN_ROWS = 64  # fewer rows (a classifier's Gemm: one per sample): the error on them says too little
MAX_SAMPLES = 32  # calibration samples read for the channel ranges and rows
MAX_CHAIN = 4  # Add/Sub of constants followed back to the op whose constants scale the channels
SCALE_LIMIT = 1e4  # s is kept within [1 / SCALE_LIMIT, SCALE_LIMIT]
_CACHE = "smooth-activations"  # its key in ctx.statistics: channel statistics and choices by tensor


class ChannelStats:
    """Streamed, mergeable statistics of one (..., C) tensor: each channel's min and max, and a
    uniform sample of at most ``HELD_ROWS`` of its rows (reservoir sampling, fixed seed) with the
    index of the sample each came from (``--dynamic`` quantizes each sample with its own range)."""

    def __init__(self, channels: int, capacity: int = HELD_ROWS, seed: int = 0) -> None:
        self.capacity = capacity
        self.low = np.full(channels, np.inf, np.float32)
        self.high = np.full(channels, -np.inf, np.float32)
        self.rows = np.empty((0, channels), np.float32)
        self.sample_of = np.empty(0, np.int64)  # per held row: which update() it came from
        self.samples = 0
        self.seen = 0
        self.finite = True
        self._rng = np.random.default_rng(seed)

    def update(self, array: np.ndarray) -> None:
        """Folds one sample of the tensor into the statistics."""
        rows = np.asarray(array, np.float32).reshape(-1, self.low.shape[0])
        if not np.all(np.isfinite(rows)):
            self.finite = False
            return
        self.low = np.minimum(self.low, rows.min(axis=0, initial=np.inf))
        self.high = np.maximum(self.high, rows.max(axis=0, initial=-np.inf))
        free = max(self.capacity - len(self.rows), 0)
        self.rows = np.concatenate([self.rows, rows[:free]])
        self.sample_of = np.concatenate([self.sample_of, np.full(min(free, len(rows)), self.samples)])
        rest = rows[free:]
        if len(rest):  # row t (0-based, of all rows seen) replaces a random held one with chance capacity / (t + 1)
            index = np.arange(len(rest)) + self.seen + free
            slot = (self._rng.random(len(rest)) * (index + 1)).astype(np.int64)
            taken = slot < self.capacity
            self.rows[slot[taken]] = rest[taken]
            self.sample_of[slot[taken]] = self.samples
        self.seen += len(rows)
        self.samples += 1

    def merge(self, other: ChannelStats) -> None:
        """Folds statistics of the same tensor, observed on other samples, into these."""
        self.low, self.high = np.minimum(self.low, other.low), np.maximum(self.high, other.high)
        self.finite &= other.finite
        total = self.seen + other.seen
        if total:
            mine = len(self.rows)
            if mine + len(other.rows) > self.capacity:  # each side in proportion to the rows it saw
                mine = min(round(self.capacity * self.seen / total), mine)
            theirs = min(len(other.rows), self.capacity - mine)
            keep = np.sort(self._rng.choice(len(self.rows), mine, replace=False))
            take = np.sort(self._rng.choice(len(other.rows), theirs, replace=False))
            self.rows = np.concatenate([self.rows[keep], other.rows[take]])
            self.sample_of = np.concatenate([self.sample_of[keep], other.sample_of[take] + self.samples])
        self.seen = total
        self.samples += other.samples

    def held_bytes(self) -> int:
        """Bytes held, independent of the number of samples observed."""
        return self.low.nbytes + self.high.nbytes + self.rows.nbytes + self.sample_of.nbytes


class SmoothActivationsPass(QccPass):
    """Scales MatMul/Gemm input channels into their weights where that lowers the layers' int8
    output error (see module docstring)."""

    name = "smooth-activations"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        options, data = self.ctx.options, self.ctx.calibration
        if not options.smoothquant or data is None or options.precision != Precision.INT8:
            return ir.passes.PassResult(model, False)
        groups = _groups(model.graph, self.ctx)
        if not groups:
            return ir.passes.PassResult(model, False)
        if not data.reiterable:
            reason = "the calibration data is a one-shot iterator (pass a list, a dict or an .npz to smooth)"
            for value, nodes in groups:
                for node in nodes:
                    set_smoothing(node, Smoothing(value.name, 0.0, 0.0, 0.0, reason=reason))
            return ir.passes.PassResult(model, False)
        cache = self.ctx.statistics.setdefault(_CACHE, {}) if self.ctx.statistics is not None else {}
        missing = [value for value, _ in groups if value.name not in cache]
        if missing:
            cache.update(self._observe(model, missing))
        names = NameAllocator(model.graph)
        smoothed = 0
        for value, nodes in groups:
            smoothing = self._smooth(model.graph, value, nodes, cache, names)
            smoothed += bool(smoothing.alpha)
            for node in nodes:
                set_smoothing(node, smoothing)
        if smoothed:
            logger.info("smoothed %d of %d MatMul/Gemm inputs", smoothed, len(groups))
        return ir.passes.PassResult(model, bool(smoothed))

    def _observe(self, model: ir.Model, values: list[ir.Value]) -> dict[str, ChannelStats]:
        names = [v.name for v in values]
        capacity = int(np.clip(HELD_BYTES // (4 * sum(_channels(v) for v in values)), MIN_ROWS, HELD_ROWS))
        stats = {v.name: ChannelStats(_channels(v), capacity) for v in values}
        for arrays in observe_float(model, self.ctx, names, MAX_SAMPLES, "smooth"):
            for name, array in arrays.items():
                stats[name].update(array)
        return stats

    def _smooth(
        self, graph: ir.Graph, value: ir.Value, nodes: list[ir.Node], cache: dict, names: NameAllocator
    ) -> Smoothing:
        stats: ChannelStats = cache[value.name]
        if not stats.finite:
            return Smoothing(value.name, 0.0, 0.0, 0.0, reason="non-finite calibration values")
        if len(stats.rows) < min(MIN_ROWS, stats.capacity):
            reason = f"{len(stats.rows)} calibration rows: too few to measure on"
            return Smoothing(value.name, 0.0, 0.0, 0.0, reason=reason)
        runs_float = self.ctx.target.smoothing_mul_runs_float
        plan = _absorber(value, nodes)
        if plan is not None and not all(  # a per-channel constant in an int8 op is rounded per tensor
            node.op_type == "LayerNormalization" or runs_float(_data_input(node).producer(), self.ctx.options)
            for _, _, node in plan
        ):
            plan = None
        if plan is None and not runs_float(value.producer(), self.ctx.options):
            return Smoothing(value.name, 0.0, 0.0, 0.0, reason="no producer can absorb 1/s and a Mul would run int8")
        matrices = [_matrix(node) for node in nodes]
        digest = hashlib.sha1(b"".join(m.tobytes() for m in matrices)).hexdigest()
        options = self.ctx.options
        key = (value.name, options.per_channel, options.dynamic, self.ctx.activation_dtype, digest)
        if key not in cache:
            cache[key] = self._choose(stats, matrices)
        alpha, factors, error, unsmoothed = cache[key]
        if not alpha:
            return Smoothing(value.name, 0.0, error, unsmoothed, reason="no migration strength was closer")
        for node, matrix in zip(nodes, matrices, strict=True):
            _set_matrix(node, matrix * factors[:, None])
        folded = _fold(graph, value, nodes, plan, factors, names)
        return Smoothing(value.name, alpha, error, unsmoothed, folded)

    def _choose(self, stats: ChannelStats, matrices: list[np.ndarray]) -> tuple[float, np.ndarray | None, float, float]:
        """(alpha, s, error, unsmoothed error) of the best strength; alpha 0 when none gains."""
        x = stats.rows
        references = [x @ m for m in matrices]
        dtype, symmetric = self.ctx.activation_dtype, self.ctx.target.symmetric_activations
        axis = 1 if self.ctx.options.per_channel else None

        dynamic = self.ctx.options.dynamic

        def error(factors: np.ndarray) -> float:
            smooth = x / factors
            if dynamic:  # each sample's rows with their own range, as DynamicQuantizeLinear does
                xq = np.empty_like(smooth)
                for sample in np.unique(stats.sample_of):
                    rows = stats.sample_of == sample
                    params = activation_params(smooth[rows].min(), smooth[rows].max(), dtype, symmetric)
                    xq[rows] = fake_quantize(smooth[rows], *params, None, dtype)
            else:  # one range for all: every channel's over all the samples
                params = activation_params(
                    float(np.min(stats.low / factors)), float(np.max(stats.high / factors)), dtype, symmetric
                )
                xq = fake_quantize(smooth, *params, None, dtype)
            total = 0.0
            for matrix, reference in zip(matrices, references, strict=True):
                w = matrix * factors[:, None]
                w_scale = symmetric_weight_scale(w, axis)
                wq = fake_quantize(w, w_scale, np.zeros_like(w_scale, np.int8), axis, ir.DataType.INT8)
                total += float(np.sum((xq @ wq - reference) ** 2) / max(np.sum(reference**2), 1e-30))
            return total / len(matrices)

        x_max = np.maximum(np.abs(stats.low), np.abs(stats.high))
        w_max = np.max([np.abs(m).max(axis=1) for m in matrices], axis=0)
        usable = (x_max > 0) & (w_max > 0)
        unsmoothed = error(np.ones_like(x_max))
        best = (0.0, None, unsmoothed, unsmoothed)
        for alpha in ALPHAS:
            factors = np.ones_like(x_max)
            factors[usable] = x_max[usable] ** alpha / w_max[usable] ** (1 - alpha)
            factors = np.maximum(factors, np.median(factors))  # quiet channels are never amplified
            factors = np.clip(factors, 1 / SCALE_LIMIT, SCALE_LIMIT).astype(np.float32)
            measured = error(factors)
            if measured < best[2]:
                best = (alpha, factors, measured, unsmoothed)
        return best if best[2] < GAIN * unsmoothed else (0.0, None, best[2], unsmoothed)


def _groups(graph: ir.Graph, ctx) -> list[tuple[ir.Value, list[ir.Node]]]:
    """Each float tensor with the quantizable MatMul/Gemm layers that multiply it by a private
    constant weight, in graph order."""
    found: dict[int, tuple[ir.Value, list[ir.Node]]] = {}
    for node in graph:
        if _layer(node, ctx):
            found.setdefault(id(node.inputs[0]), (node.inputs[0], []))[1].append(node)
    return list(found.values())


def _layer(node: ir.Node, ctx) -> bool:
    if node.op_type not in ("MatMul", "Gemm") or node.op_type not in ctx.target.compute_ops:
        return False
    if node.domain not in ("", "ai.onnx"):
        return False
    if node.name in ctx.options.exclude or node.op_type in ctx.options.exclude:
        return False
    if node.op_type == "Gemm" and attr_int(node, "transA", 0):
        return False
    data, weight = node.inputs[0], node.inputs[1]
    array = const_array(weight)
    if data is None or data.const_value is not None or array is None or array.ndim != 2 or array.dtype != np.float32:
        return False
    if len(weight.uses()) != 1 or weight.is_graph_input() or weight.is_graph_output():
        return False
    return _channels(data) == _matrix(node).shape[0]


def _channels(value: ir.Value) -> int | None:
    """The static size of the tensor's last axis, or None."""
    if value.shape is None or not len(value.shape) or not isinstance(value.shape[-1], int):
        return None
    return value.shape[-1]


def _matrix(node: ir.Node) -> np.ndarray:
    """The weight as (C, N): what the input's channels multiply."""
    array = const_array(node.inputs[1]).astype(np.float32)
    return array.T if node.op_type == "Gemm" and attr_int(node, "transB", 0) else array


def _set_matrix(node: ir.Node, matrix: np.ndarray) -> None:
    array = matrix.T if node.op_type == "Gemm" and attr_int(node, "transB", 0) else matrix
    set_constant(node.inputs[1], array)


def _absorber(value: ir.Value, nodes: list[ir.Node]) -> list[tuple[ir.Value, bool, ir.Node]] | None:
    """How the producers can take ``1/s`` into their constants when the layers are the tensor's
    only readers (as their data input): (constant, divide by s (else multiply), its node) for
    each, or None."""
    if value.is_graph_output() or value.is_graph_input():
        return None
    if not all(u.node in nodes and u.idx == 0 for u in value.uses()):  # Gemm(h, W, h): C reads it too
        return None
    return _scaling(value, _channels(value), depth=0)


def _scaling(value: ir.Value, channels: int, depth: int) -> list[tuple[ir.Value, bool, ir.Node]] | None:
    """The constants that scale ``value``'s channels in its producer: a LayerNormalization over the
    last axis (scale and bias), a Mul by a constant, a Div by a constant, or an Add/Sub of a
    constant whose other operand (read only there) scales the same way (a decomposed LayerNorm's
    ``norm * gamma + beta``)."""
    producer = value.producer()
    if producer is None or producer.outputs[0] is not value or depth > MAX_CHAIN or value.shape is None:
        return None
    op = producer.op_type
    if producer.domain not in ("", "ai.onnx"):
        return None
    if op == "LayerNormalization":
        rank = len(value.shape)
        constants = [v for v in producer.inputs[1:3] if v is not None]
        if attr_int(producer, "axis", -1) % rank == rank - 1 and all(
            _private(v) and const_array(v).shape == (channels,) for v in constants
        ):
            return [(v, True, producer) for v in constants]
        return None
    if op not in ("Mul", "Div", "Add", "Sub") or len(producer.inputs) != 2:
        return None
    for i in (0, 1) if op != "Div" else (1,):  # Div: only the divisor
        constant, other = producer.inputs[i], producer.inputs[1 - i]
        array = const_array(constant)
        if array is None or const_array(other) is not None or not _private(constant):
            continue
        if array.ndim > len(value.shape) or (array.ndim and array.shape[-1] not in (1, channels)):
            continue
        if op in ("Mul", "Div"):
            return [(constant, op == "Mul", producer)]
        inner = _scaling(other, channels, depth + 1) if _private(other) else None
        return [(constant, True, producer), *inner] if inner is not None else None
    return None


def _data_input(node: ir.Node) -> ir.Value:
    """The operand of a Mul/Div/Add/Sub by a constant that is not the constant."""
    return next(v for v in node.inputs if v is not None and const_array(v) is None)


def _private(value: ir.Value) -> bool:
    return len(value.uses()) == 1 and not value.is_graph_input() and not value.is_graph_output()


def _fold(
    graph: ir.Graph,
    value: ir.Value,
    nodes: list[ir.Node],
    plan: list[tuple[ir.Value, bool, ir.Node]] | None,
    factors: np.ndarray,
    names: NameAllocator,
) -> str:
    """Applies ``x / s`` in the producers' constants (or an inserted Mul); returns where."""
    if plan is not None:
        for constant, divide, _ in plan:
            array = const_array(constant)
            wide = np.broadcast_to(array, (*array.shape[:-1], factors.shape[0]) if array.ndim else factors.shape)
            set_constant(constant, wide / factors if divide else wide * factors)
        return "+".join(dict.fromkeys(node.op_type for _, _, node in plan))
    inverse = add_initializer(graph, names.new(f"{value.name}_smoothing"), (1 / factors).astype(np.float32))
    mul = ir.node("Mul", [value, inverse], name=names.new(f"{value.name}_smooth"))
    smoothed = mul.outputs[0]
    smoothed.name, smoothed.type, smoothed.shape = names.new(f"{value.name}_smoothed"), value.type, value.shape
    first = next(n for n in graph if n in nodes)
    graph.insert_before(first, mul)
    for node in nodes:
        node.replace_input_with(0, smoothed)
    return "Mul (inserted)"

