"""Residual-stream equalization: even out the channel ranges of a linear-bottleneck residual stream.

In MobileNetV2 and EfficientNet-Lite the residual stream is written by linear 1x1 "project"
convolutions, summed by ``Add`` nodes and read by the next blocks' "expand" convolutions. A few of
its channels are 10-50x larger than the rest, and every tensor of the stream (each Add's inputs
and output) is quantized with one scale: the quiet channels get a handful of levels. Because
everything that writes the stream is linear and everything that reads it is a convolution, the
stream may be divided by a per-channel factor ``s_c``: the writers' output channels (weights and
bias) ``/ s_c``, the readers' input channels ``* s_c``. The sum of the Adds is divided the same
way, so the float function is unchanged. With ``m_c`` channel ``c``'s largest magnitude over the
stream's tensors on the calibration data and ``w_c`` the readers' largest weight on that input
channel, ``s_c = sqrt(m_c / w_c)`` (SmoothQuant's migration at strength 0.5, applied to a stream
instead of one tensor). Factors below their median are raised to it, so a channel that was quiet
on the calibration data is not amplified relative to the median channel (as in
``smooth_activations``).

Measured (MobileNetV2, ``ort``, every node int8): eval output cosine 0.962 -> 0.968; at the default
bound, mixed precision needs fewer nodes float. EfficientNet-Lite0: neutral.

A stream is a set of tensors joined by ``Add`` nodes of two same-shaped activations. It is
equalized only when every tensor in it that no stream Add writes is the first output of a Conv
with constant private weights, and every reader other than a stream Add is a Conv (plain or
depthwise) with constant private weights reading it as its input; a stream that reaches a graph
input or output, a Relu, a pool or anything else is left alone. ``equalize=False`` turns it off
(with cross-layer equalization). A float rewrite that needs data: it runs among the quantization
passes before the plan, reads at most ``MAX_SAMPLES`` calibration samples, and is skipped for a
one-shot iterator, which calibration must read whole.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from qcc.irutils import attr_int, const_array, private_constants, set_constant
from qcc.options import Precision
from qcc.passes._base import QccPass
from qcc.passes.calibrate import observe_float

logger = logging.getLogger(__name__)

MAX_SAMPLES = 32  # calibration samples read for the channel ranges
SCALE_LIMIT = 1e3  # s is kept within [1, SCALE_LIMIT] times its median (no channel grows)
_CACHE = "equalize-residual"  # its key in ctx.statistics: channel ranges by tensor


class ResidualEqualizationPass(QccPass):
    """Divides each linear residual stream's channels by per-channel factors moved into the
    writing and reading convolutions (see module docstring)."""

    name = "equalize-residual"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        options, data = self.ctx.options, self.ctx.calibration
        if options.equalize is False or data is None or options.precision != Precision.INT8:
            return ir.passes.PassResult(model, False)
        streams = [s for s in _streams(model.graph) if s is not None]
        if not streams:
            return ir.passes.PassResult(model, False)
        if not data.reiterable:
            logger.info("residual-stream equalization skipped: the calibration data is a one-shot iterator")
            return ir.passes.PassResult(model, False)
        cache = self.ctx.statistics.setdefault(_CACHE, {}) if self.ctx.statistics is not None else {}
        missing = [v for stream in streams for v in stream.values if v.name not in cache]
        if missing:
            cache.update(self._observe(model, missing))
        # every stream's factors from the original weights first: a Conv may read one stream and
        # write another, and the result must not depend on which is rewritten first
        factors = [_factors(np.max([cache[v.name] for v in s.values], axis=0), s.reader_ranges()) for s in streams]
        for stream, stream_factors in zip(streams, factors, strict=True):
            stream.apply(stream_factors)
        logger.info("residual-stream equalization: %d streams", len(streams))
        return ir.passes.PassResult(model, True)

    def _observe(self, model: ir.Model, values: list[ir.Value]) -> dict[str, np.ndarray]:
        """Each channel's largest magnitude (axis 1) of ``values`` on the calibration samples."""
        names = [v.name for v in values]
        ranges = {v.name: np.zeros(v.shape[1], np.float64) for v in values}  # magnitudes: 0 is the floor
        for arrays in observe_float(model, self.ctx, names, MAX_SAMPLES, "equalize"):
            for name, array in arrays.items():
                magnitude = np.abs(array).max(axis=tuple(a for a in range(array.ndim) if a != 1))
                ranges[name] = np.maximum(ranges[name], magnitude.astype(np.float64))
        return ranges


class _Stream:
    """One residual stream: its tensors, the Convs that write it and the Convs that read it."""

    def __init__(self, values: list[ir.Value], writers: list[ir.Node], readers: list[ir.Node]) -> None:
        self.values, self.writers, self.readers = values, writers, readers

    def reader_ranges(self) -> np.ndarray:
        """Per stream channel, the largest magnitude of the readers' weights on that input channel."""
        return np.max([np.abs(_input_channels(node)).max(axis=1) for node in self.readers], axis=0)

    def apply(self, factors: np.ndarray) -> None:
        """Divides the stream's channel ``c`` by ``factors[c]``."""
        for node in self.writers:
            weight = const_array(node.inputs[1]).astype(np.float64)
            set_constant(node.inputs[1], weight / factors.reshape((-1,) + (1,) * (weight.ndim - 1)))
            if len(node.inputs) > 2 and node.inputs[2] is not None:
                set_constant(node.inputs[2], const_array(node.inputs[2]).astype(np.float64) / factors)
        for node in self.readers:
            weight = const_array(node.inputs[1]).astype(np.float64)
            if _depthwise(node):  # output channel c is input channel c's group
                shape = (-1,) + (1,) * (weight.ndim - 1)
                scale = np.repeat(factors, weight.shape[0] // factors.shape[0])
            else:
                shape, scale = (1, -1) + (1,) * (weight.ndim - 2), factors
            set_constant(node.inputs[1], weight * scale.reshape(shape))


def _streams(graph: ir.Graph) -> list[_Stream | None]:
    """The graph's residual streams; None for each that cannot be equalized."""
    adds = [node for node in graph if _joins(node)]
    parent: dict[ir.Value, ir.Value] = {}

    def root(value: ir.Value) -> ir.Value:
        while parent.setdefault(value, value) is not value:
            value = parent[value]
        return value

    for node in adds:
        for value in (node.inputs[1], node.outputs[0]):
            parent[root(value)] = root(node.inputs[0])
    members: dict[ir.Value, list[ir.Value]] = {}
    for value in list(parent):
        members.setdefault(root(value), []).append(value)
    stream_adds = set(adds)
    return [_stream(values, stream_adds) for values in members.values()]


def _joins(node: ir.Node) -> bool:
    """An Add of two activations (N, C, ...) of one rank and one known channel count C, the output
    too (other axes may be symbolic, or even broadcast: a per-channel factor commutes with that)."""
    if node.op_type != "Add" or node.domain not in ("", "ai.onnx") or len(node.inputs) != 2:
        return False
    if any(v is None or v.const_value is not None for v in node.inputs):
        return False
    shapes = [v.shape for v in (*node.inputs, node.outputs[0])]
    if any(s is None or len(s) < 3 or not isinstance(s[1], int) for s in shapes):
        return False
    return len({len(s) for s in shapes}) == 1 and len({s[1] for s in shapes}) == 1


def _stream(values: list[ir.Value], stream_adds: set[ir.Node]) -> _Stream | None:
    channels = values[0].shape[1]
    writers, readers = [], []
    for value in values:
        if value.is_graph_input() or value.is_graph_output():
            return None
        producer = value.producer()
        if producer not in stream_adds:
            if not _writer(producer, channels):
                return None
            writers.append(producer)
        for use in value.uses():
            if use.node in stream_adds:
                continue
            if not (_conv(use.node, channels) and use.idx == 0):
                return None
            readers.append(use.node)
    if not readers or len(set(writers)) != len(writers) or set(writers) & set(readers):
        return None
    return _Stream(values, writers, list(dict.fromkeys(readers)))


def _writer(node: ir.Node | None, channels: int) -> bool:
    """A Conv with constant private weights whose output channels are the stream's (any groups:
    scaling an output channel's weights and bias scales that channel exactly)."""
    return _private_conv(node) and const_array(node.inputs[1]).shape[0] == channels


def _private_conv(node: ir.Node | None) -> bool:
    return node is not None and node.op_type == "Conv" and node.domain in ("", "ai.onnx") and private_constants(node)


def _conv(node: ir.Node | None, channels: int) -> bool:
    """A Conv with constant private weights whose input channels are the stream's (plain or depthwise)."""
    if not _private_conv(node):
        return False
    weight = const_array(node.inputs[1])
    groups = attr_int(node, "group", 1)
    return (groups == 1 and weight.shape[1] == channels) or _depthwise(node, channels)


def _depthwise(node: ir.Node, channels: int | None = None) -> bool:
    weight = const_array(node.inputs[1])
    groups = attr_int(node, "group", 1)
    channels = groups if channels is None else channels
    return groups == channels > 1 and weight.shape[1] == 1 and weight.shape[0] % channels == 0


def _input_channels(node: ir.Node) -> np.ndarray:
    """A reader's weights as (stream channel, everything that channel multiplies)."""
    weight = const_array(node.inputs[1]).astype(np.float64)
    if _depthwise(node):
        return weight.reshape(attr_int(node, "group", 1), -1)
    return np.moveaxis(weight, 1, 0).reshape(weight.shape[1], -1)


def _factors(ranges: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``sqrt(m_c / w_c)``, raised to its median where below it and kept within ``SCALE_LIMIT`` of it;
    1 for channels that are zero in the data or the weights."""
    usable = (ranges > 0) & (weights > 0) & np.isfinite(ranges)
    factors = np.ones_like(ranges)
    if not usable.any():
        return factors
    factors[usable] = np.sqrt(ranges[usable] / weights[usable])
    median = np.median(factors[usable])
    factors[usable] = np.clip(factors[usable], median, median * SCALE_LIMIT)
    factors[~usable] = median
    return factors / median
