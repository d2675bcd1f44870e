"""TFLite lowering rules: normalizations, reductions, LogSoftmax and Hardmax, as float32 builtins.

Rules follow docs/tflite.md "Adding a lowering". ``LOWERINGS`` is merged into the registry in
``_tflite_ops`` after the base rules (a key here replaces a base rule of the same op).
None of these ops has an int8 kernel the plan uses, so they run as float islands
(``FloatChain``); ``INT8_OPS`` / ``SHARED_SCALE_OPS`` stay empty. The layout pass does not
move them, so they see the ONNX layout (channels at axis 1).

The maths, with ``m = mean``, ``v = mean((x - m)^2)`` over the op's axes (keeping dims):

* BatchNormalization, inference: ``y = x * a + b`` with ``a = scale / sqrt(var + eps)`` and
  ``b = B - mean * a`` folded at compile time (MUL, ADD) when the four are constants, computed
  at run time (RSQRT, MUL, SUB, MUL, ADD) when any is a graph input. Training mode uses the
  batch's ``m``, ``v`` over every axis but 1 and writes ``running = input * momentum + batch * (1 - momentum)``.
* InstanceNormalization: ``(x - m) / sqrt(v + eps) * scale + B``, ``m``, ``v`` over axes 2..;
  GroupNormalization: the same over ``[N, G, C/G * spatial]`` (scale per channel, or per group
  before opset 21); RMSNormalization: ``x / sqrt(mean(x^2) + eps) * scale`` over ``axis..``;
  MeanVarianceNormalization: ``(x - m) / (sqrt(v) + 1e-9)``.
* LpNormalization: ``x / max(|x|_p, FLT_MIN)`` (p = 1, 2), which is ONNX's ``0`` where the norm is 0.
* LRN: ``x / (bias + alpha / size * sum_window(x^2))^beta`` over channels, the window
  ``[c - floor((size-1)/2), c + ceil((size-1)/2)]``: LOCAL_RESPONSE_NORMALIZATION (radius
  ``(size-1)/2``, ``alpha / size``) on channels-last data (an odd size; ONNX Runtime, which qcc
  calibrates with, takes no other).
* ReduceL1 = SUM(ABS), ReduceL2 = SQRT(SUM(x*x)), ReduceSumSquare = SUM(x*x), ReduceLogSum =
  LOG(SUM), ReduceLogSumExp = LOG(SUM(EXP(x - max))) + max, ReduceProd = REDUCE_PROD; axes from the
  attribute or a constant input; empty axes reduce everything, or with ``noop_with_empty_axes``
  reduce nothing (the element-wise parts still apply, as ONNX says). ReduceMean/Max/Min/Sum keep
  their base lowering (int8 where the plan says) and gain the empty-axes cases.
* LogSoftmax = LOG_SOFTMAX on the last axis, ``x - max - LOG(SUM(EXP(x - max)))`` on another;
  Hardmax = ONE_HOT(ARG_MAX(x, axis), axis) (ARG_MAX keeps the first of equal maxima, as ONNX).
* LpPool = ``(sum_window |x|^p)^(1/p)``: ABS/MUL/POW, a sum pooling (``_tflite_ops_pool.pool_2d``,
  zeros in the pads) on channels-last data (TRANSPOSEs around it unless the layout pass made the
  node channels-last; a 3-D window is summed tap by tap on channels-first data), then SQRT/POW;
  GlobalLpPool = the same with SUM over the spatial axes.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering, shape_of
from qcc.backends._tflite_ops_float import FloatChain, wanted
from qcc.backends._tflite_ops_pool import pool_2d, pool_channels_first
from qcc.backends._tflite_ops_window import int_list, same_quant, unsupported, window
from qcc.backends._tflite_writer import TENSOR_TYPES, Tensor
from qcc.irutils import attr_float, attr_int, const_array
from qcc.passes.layout_nhwc import LAYOUT_KEY, channels_first, channels_last

INT8_OPS: frozenset[str] = frozenset()
SHARED_SCALE_OPS: frozenset[str] = frozenset()

# The smallest normal float32: a norm below it is 0 for LpNormalization (then x is 0 too).
_FLT_MIN = float(np.finfo(np.float32).tiny)
# MeanVarianceNormalization's fixed epsilon (ONNX's function body adds it to the deviation).
_MVN_EPSILON = 1e-9


def _channel_axis(node: ir.Node, rank: int) -> int:
    """Where the channels are: axis 1 (ONNX), or the last axis if the layout pass made the node channels-last."""
    return rank - 1 if node.meta.get(LAYOUT_KEY) is not None else 1


def _channel_shape(channels: int, axis: int, rank: int) -> tuple[int, ...]:
    """The shape that broadcasts a ``[C]`` vector along ``axis`` of a rank-``rank`` tensor (leading 1s dropped)."""
    return (channels,) + (1,) * (rank - 1 - axis)


def _channels_first_only(node: ir.Node) -> None:
    if node.meta.get(LAYOUT_KEY) is not None:
        raise unsupported(node, "a channels-last layout (the rule reads the ONNX layout)")


def _reduced(shape: tuple[int, ...], axes: list[int]) -> tuple[int, ...]:
    return tuple(1 if i in axes else d for i, d in enumerate(shape))


def _axes_const(chain: FloatChain, axes: list[int]) -> Tensor:
    return chain.array(np.array(axes, np.int32), np.int32)


def _moments(chain: FloatChain, x: Tensor, axes: list[int]) -> tuple[Tensor, Tensor]:
    """(x - mean, variance) over ``axes``, the variance with kept dims."""
    reduced = _reduced(x.shape, axes)
    axes_t = _axes_const(chain, axes)
    mean = chain.op("MEAN", [x, axes_t], reduced, "ReducerOptions", keep_dims=True)
    centered = chain.op("SUB", [x, mean], x.shape, "SubOptions")
    square = chain.op("MUL", [centered, centered], x.shape, "MulOptions")
    return centered, chain.op("MEAN", [square, axes_t], reduced, "ReducerOptions", keep_dims=True)


def _per_channel(chain: FloatChain, index: int, shape: tuple[int, ...]) -> Tensor:
    """Input ``index`` (a ``[C]`` vector) viewed as ``shape``: folded if constant, a RESHAPE if not."""
    array = const_array(chain.node.inputs[index])
    if array is not None:
        return chain.array(np.asarray(array, np.float32).reshape(shape))
    return chain.reshape(chain.input(index), shape)


def _inverse_std(chain: FloatChain, variance: Tensor, epsilon: float) -> Tensor:
    shifted = chain.op("ADD", [variance, chain.const(epsilon)], variance.shape, "AddOptions")
    return chain.op("RSQRT", [shifted], variance.shape)


def batch_norm(lw: Lowering, node: ir.Node) -> None:
    """BatchNormalization -> MUL + ADD with folded constants, or its run-time form (module docstring)."""
    chain = FloatChain(lw, node)
    x = chain.input(0)
    if attr_int(node, "spatial", 1) != 1:
        raise unsupported(node, "BatchNormalization with spatial=0 (per-element statistics)")
    rank, epsilon = len(x.shape), attr_float(node, "epsilon", 1e-5)
    axis = _channel_axis(node, rank)
    shape = _channel_shape(x.shape[axis], axis, rank)
    training = attr_int(node, "training_mode", 0) == 1
    y = chain.output(0)
    if not training:
        arrays = [const_array(node.inputs[i]) for i in range(1, 5)]
        if all(a is not None for a in arrays):
            scale, bias, mean, var = (np.asarray(a, np.float64) for a in arrays)
            a = scale / np.sqrt(var + epsilon)
            scaled = chain.op("MUL", [x, chain.array(a.reshape(shape))], x.shape, "MulOptions")
            chain.op("ADD", [scaled, chain.array((bias - mean * a).reshape(shape))], x.shape, "AddOptions", out=y)
            chain.finish()
            return
        centered = chain.op("SUB", [x, _per_channel(chain, 3, shape)], x.shape, "SubOptions")
        inverse = _inverse_std(chain, _per_channel(chain, 4, shape), epsilon)
    else:
        axes = [a for a in range(rank) if a != axis]
        centered, variance = _moments(chain, x, axes)
        inverse = _inverse_std(chain, variance, epsilon)
    factor = chain.op("MUL", [inverse, _per_channel(chain, 1, shape)], inverse.shape, "MulOptions")
    scaled = chain.op("MUL", [centered, factor], x.shape, "MulOptions")
    chain.op("ADD", [scaled, _per_channel(chain, 2, shape)], x.shape, "AddOptions", out=y)
    if training:
        _running_statistics(chain, x, axes, variance, x.shape[axis])
    chain.finish()


def _running_statistics(chain: FloatChain, x: Tensor, axes: list[int], variance: Tensor, width: int) -> None:
    """Training-mode outputs 1 and 2: ``input * momentum + batch * (1 - momentum)``."""
    node, channels = chain.node, (width,)
    momentum = attr_float(node, "momentum", 0.9)
    batch_mean = chain.op("MEAN", [x, _axes_const(chain, axes)], channels, "ReducerOptions", keep_dims=False)
    batches = {1: batch_mean, 2: chain.reshape(variance, channels)}
    for out_index, in_index in ((1, 3), (2, 4)):
        if not wanted(node, out_index):
            continue
        kept = chain.op("MUL", [chain.reshape(chain.input(in_index), channels), chain.const(momentum)], channels,
                        "MulOptions")
        new = chain.op("MUL", [batches[out_index], chain.const(1.0 - momentum)], channels, "MulOptions")
        chain.op("ADD", [kept, new], channels, "AddOptions", out=chain.output(out_index))


def instance_norm(lw: Lowering, node: ir.Node) -> None:
    """InstanceNormalization -> moments over the spatial axes, RSQRT, MUL by scale, ADD B."""
    chain = FloatChain(lw, node)
    x = chain.input(0)
    rank = len(x.shape)
    axis = _channel_axis(node, rank)
    shape = _channel_shape(x.shape[axis], axis, rank)
    centered, variance = _moments(chain, x, [a for a in range(1, rank) if a != axis])
    inverse = _inverse_std(chain, variance, attr_float(node, "epsilon", 1e-5))
    normed = chain.op("MUL", [centered, inverse], x.shape, "MulOptions")
    scaled = chain.op("MUL", [normed, _per_channel(chain, 1, shape)], x.shape, "MulOptions")
    chain.op("ADD", [scaled, _per_channel(chain, 2, shape)], x.shape, "AddOptions", out=chain.output())
    chain.finish()


def group_norm(lw: Lowering, node: ir.Node) -> None:
    """GroupNormalization -> RESHAPE to ``[N, G, rest]``, moments over ``rest``, RESHAPE back, scale, bias."""
    chain = FloatChain(lw, node)
    _channels_first_only(node)
    x = chain.input(0)
    groups = attr_int(node, "num_groups", 1)
    n, channels = x.shape[0], x.shape[1]
    if groups <= 0 or channels % groups:
        raise unsupported(node, f"{channels} channels in {groups} groups")
    grouped = chain.reshape(x, (n, groups, int(np.prod(x.shape[1:])) // groups))
    centered, variance = _moments(chain, grouped, [2])
    inverse = _inverse_std(chain, variance, attr_float(node, "epsilon", 1e-5))
    normed = chain.op("MUL", [centered, inverse], grouped.shape, "MulOptions")
    width = int(np.prod(shape_of(node.inputs[1])))
    y = chain.output()
    if width == channels:
        shape = (channels,) + (1,) * (len(x.shape) - 2)
        normed = chain.reshape(normed, x.shape)
        scaled = chain.op("MUL", [normed, _per_channel(chain, 1, shape)], x.shape, "MulOptions")
        chain.op("ADD", [scaled, _per_channel(chain, 2, shape)], x.shape, "AddOptions", out=y)
    elif width == groups:
        # Before opset 21 scale and bias are per group: applied on the grouped view.
        shape = (groups, 1)
        scaled = chain.op("MUL", [normed, _per_channel(chain, 1, shape)], grouped.shape, "MulOptions")
        biased = chain.op("ADD", [scaled, _per_channel(chain, 2, shape)], grouped.shape, "AddOptions")
        lw.reshape(biased, y, node.name)
    else:
        raise unsupported(node, f"a scale of {width} values for {channels} channels in {groups} groups")
    chain.finish()


def _norm_axes(node: ir.Node, rank: int) -> list[int]:
    axis = attr_int(node, "axis", -1) % rank
    return list(range(axis, rank))


def rms_norm(lw: Lowering, node: ir.Node) -> None:
    """RMSNormalization -> MUL(x, x), MEAN over ``axis..``, ADD eps, RSQRT, MUL, MUL scale."""
    chain = FloatChain(lw, node)
    x = chain.input(0)
    axes = _norm_axes(node, len(x.shape))
    square = chain.op("MUL", [x, x], x.shape, "MulOptions")
    mean = chain.op("MEAN", [square, _axes_const(chain, axes)], _reduced(x.shape, axes), "ReducerOptions",
                    keep_dims=True)
    inverse = _inverse_std(chain, mean, attr_float(node, "epsilon", 1e-5))
    normed = chain.op("MUL", [x, inverse], x.shape, "MulOptions")
    chain.op("MUL", [normed, chain.input(1)], x.shape, "MulOptions", out=chain.output())
    chain.finish()


def mean_variance_norm(lw: Lowering, node: ir.Node) -> None:
    """MeanVarianceNormalization -> moments over ``axes`` (default 0, 2, 3), SQRT, ADD 1e-9, DIV."""
    chain = FloatChain(lw, node)
    _channels_first_only(node)
    x = chain.input(0)
    rank = len(x.shape)
    axes = sorted({a % rank for a in int_list(node, "axes", [0, 2, 3])})
    centered, variance = _moments(chain, x, axes)
    deviation = chain.op("SQRT", [variance], variance.shape)
    shifted = chain.op("ADD", [deviation, chain.const(_MVN_EPSILON)], variance.shape, "AddOptions")
    chain.op("DIV", [centered, shifted], x.shape, "DivOptions", out=chain.output())
    chain.finish()


def lp_norm(lw: Lowering, node: ir.Node) -> None:
    """LpNormalization (p = 1, 2) -> ABS or MUL(x, x), SUM over the axis, (SQRT), MAXIMUM FLT_MIN, DIV."""
    chain = FloatChain(lw, node)
    p = attr_int(node, "p", 2)
    if p not in (1, 2):
        raise unsupported(node, f"p={p} (ONNX defines LpNormalization for p = 1 and 2)")
    x = chain.input(0)
    axis = attr_int(node, "axis", -1) % len(x.shape)
    reduced = _reduced(x.shape, [axis])
    magnitude = chain.op("ABS", [x], x.shape) if p == 1 else chain.op("MUL", [x, x], x.shape, "MulOptions")
    total = chain.op("SUM", [magnitude, _axes_const(chain, [axis])], reduced, "ReducerOptions", keep_dims=True)
    norm = total if p == 1 else chain.op("SQRT", [total], reduced)
    floor = chain.op("MAXIMUM", [norm, chain.const(_FLT_MIN)], reduced)
    chain.op("DIV", [x, floor], x.shape, "DivOptions", out=chain.output())
    chain.finish()


def lrn(lw: Lowering, node: ir.Node) -> None:
    """LRN over channels (axis 1, 4-D) -> TRANSPOSE, LOCAL_RESPONSE_NORMALIZATION (channels last), TRANSPOSE."""
    chain = FloatChain(lw, node)
    x = chain.input(0)
    size = attr_int(node, "size", 0)
    if len(x.shape) != 4 or size < 1 or size % 2 == 0:
        raise unsupported(node, f"LRN of size {size} on a rank-{len(x.shape)} tensor (TFLite's "
                                "LOCAL_RESPONSE_NORMALIZATION takes a window centred on the channel, on 4-D data)")
    last = node.meta.get(LAYOUT_KEY) is not None
    inner = x if last else chain.op("TRANSPOSE", [x, chain.array(_TO_NHWC, np.int32)],
                                     tuple(x.shape[p] for p in _TO_NHWC), "TransposeOptions")
    y = chain.output()
    normed = chain.op(
        "LOCAL_RESPONSE_NORMALIZATION",
        [inner],
        inner.shape,
        "LocalResponseNormalizationOptions",
        out=y if last else None,
        radius=(size - 1) // 2,
        bias=attr_float(node, "bias", 1.0),
        alpha=attr_float(node, "alpha", 1e-4) / size,
        beta=attr_float(node, "beta", 0.75),
    )
    if not last:
        chain.op("TRANSPOSE", [normed, chain.array(_TO_NCHW, np.int32)], x.shape, "TransposeOptions", out=y)
    chain.finish()


_TO_NHWC, _TO_NCHW = channels_last(4), channels_first(4)


def reduce_axes(node: ir.Node, rank: int) -> list[int] | None:
    """The sorted axes a Reduce* node reduces over; None when it reduces nothing (noop_with_empty_axes).

    Axes come from input 1 (opset 18 and the opset-13 ReduceSum) or the ``axes`` attribute; an
    axes input of static size 0 is empty even when it is a graph input.

    Raises:
        BackendError: the axes are a run-time tensor with elements.
    """
    axes: list[int] = []
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        value = node.inputs[1]
        array = const_array(value)
        if array is None and not (value.shape is not None and 0 in tuple(value.shape)):
            raise unsupported(
                node,
                "axes given at run time (the output's shape depends on their values, and qcc writes each "
                "tensor's shape into the model); make the axes an initializer",
            )
        axes = [] if array is None else [int(a) for a in np.ravel(array)]
    else:
        axes = int_list(node, "axes", [])
    if not axes:
        return None if attr_int(node, "noop_with_empty_axes", 0) else list(range(rank))
    return sorted({a % rank for a in axes})


def base_reduce(lw: Lowering, node: ir.Node) -> None:
    """ReduceMean/Max/Min/Sum -> MEAN/REDUCE_MAX/REDUCE_MIN/SUM (int8 or float), a copy for no axes."""
    names = {"ReduceMean": "MEAN", "ReduceMax": "REDUCE_MAX", "ReduceMin": "REDUCE_MIN", "ReduceSum": "SUM"}
    x = lw.input(node, 0)
    axes = reduce_axes(node, len(x.shape))
    y = lw.output(node)
    if axes is None:
        _copy(lw, node, x, y)
        return
    if node.op_type in _EMPTY_FILL and any(x.shape[a] == 0 for a in axes):
        _fill(lw, node, y, _EMPTY_FILL[node.op_type])
        return
    lw.op(
        names[node.op_type],
        [x, lw.constant(f"{node.name}_axes", np.array(axes, np.int32))],
        [y],
        "ReducerOptions",
        source=node.name,
        keep_dims=bool(attr_int(node, "keepdims", 1)),
    )


# What a max/min over no elements is in ONNX (TFLite's kernels return the lowest/highest float).
_EMPTY_FILL = {"ReduceMax": -np.inf, "ReduceMin": np.inf, "ReduceLogSumExp": -np.inf}


def _fill(lw: Lowering, node: ir.Node, y: Tensor, value: float) -> None:
    """``y`` = ``value`` everywhere (FILL; an int8 ``y`` gets the end of its range)."""
    if y.quant is not None:
        fill = np.array(-128 if value < 0 else 127, np.int8)
    else:
        fill = np.array(value, y.dtype)
    dims = lw.constant(f"{node.name}_dims", np.array(y.shape, np.int32))
    lw.op("FILL", [dims, lw.constant(f"{node.name}_value", fill, y.quant)], [y], source=node.name)


def _copy(lw: Lowering, node: ir.Node, x: Tensor, y: Tensor) -> None:
    """``y = x``: a RESHAPE when both carry the same numbers, else a requantizing QUANTIZE from float."""
    if same_quant(x, y):
        lw.reshape(x, y, node.name)
    else:
        lw.op("QUANTIZE", [lw.read(node.inputs[0], False)], [y], source=node.name)


# Reduce op -> (element-wise op before the reduction, reduction, element-wise op after it).
_REDUCTIONS = {
    "ReduceL1": ("ABS", "SUM", None),
    "ReduceL2": ("SQUARE", "SUM", "SQRT"),
    "ReduceSumSquare": ("SQUARE", "SUM", None),
    "ReduceLogSum": (None, "SUM", "LOG"),
    "ReduceProd": (None, "REDUCE_PROD", None),
}


def float_reduce(lw: Lowering, node: ir.Node) -> None:
    """ReduceL1/L2/SumSquare/LogSum/Prod -> the element-wise part, SUM or REDUCE_PROD, the final part."""
    chain = FloatChain(lw, node)
    x = chain.input(0)
    before, reduction, after = _REDUCTIONS[node.op_type]
    axes = reduce_axes(node, len(x.shape))
    keep = bool(attr_int(node, "keepdims", 1))
    y = chain.output()
    current = x
    if before == "ABS":
        current = chain.op("ABS", [x], x.shape)
    elif before == "SQUARE":
        current = chain.op("MUL", [x, x], x.shape, "MulOptions")
    if axes is not None:
        last = after is None
        current = chain.op(reduction, [current, _axes_const(chain, axes)], y.shape, "ReducerOptions",
                           out=y if last else None, keep_dims=keep)
    if after is not None:
        chain.op(after, [current], y.shape, out=y)
    elif axes is None:
        lw.reshape(current, y, node.name)
    chain.finish()


def reduce_log_sum_exp(lw: Lowering, node: ir.Node) -> None:
    """ReduceLogSumExp -> ``LOG(SUM(EXP(x - max))) + max`` (max with kept dims; no overflow)."""
    chain = FloatChain(lw, node)
    x = chain.input(0)
    axes = reduce_axes(node, len(x.shape))
    y = chain.output()
    if axes is None:  # log(exp(x)) = x
        lw.reshape(x, y, node.name)
        chain.finish()
        return
    if any(x.shape[a] == 0 for a in axes):
        _fill(lw, node, y, _EMPTY_FILL[node.op_type])
        chain.finish()
        return
    keep = bool(attr_int(node, "keepdims", 1))
    peak, _, log = _shifted_log_sum_exp(chain, x, axes, y.shape, keep)
    chain.op("ADD", [log, chain.reshape(peak, y.shape)], y.shape, "AddOptions", out=y)
    chain.finish()


def _shifted_log_sum_exp(
    chain: FloatChain, x: Tensor, axes: list[int], shape: tuple[int, ...], keep: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Emits ``LOG(SUM(EXP(x - max)))`` over ``axes``, the max taken with kept dims so EXP cannot overflow.

    Args:
        chain: the node's float chain.
        x: the input.
        axes: the reduced axes (non-negative).
        shape: the shape of the SUM and LOG results.
        keep: whether SUM keeps the reduced axes.

    Returns:
        ``max`` (reduced axes kept as 1), ``x - max`` and ``LOG(SUM(EXP(x - max)))``.
    """
    axes_t = _axes_const(chain, axes)
    peak = chain.op("REDUCE_MAX", [x, axes_t], _reduced(x.shape, axes), "ReducerOptions", keep_dims=True)
    shifted = chain.op("SUB", [x, peak], x.shape, "SubOptions")
    total = chain.op("SUM", [chain.op("EXP", [shifted], x.shape), axes_t], shape, "ReducerOptions", keep_dims=keep)
    return peak, shifted, chain.op("LOG", [total], shape)


def log_softmax(lw: Lowering, node: ir.Node) -> None:
    """LogSoftmax -> LOG_SOFTMAX on the last axis, ``x - max - LOG(SUM(EXP(x - max)))`` on another."""
    chain = FloatChain(lw, node)
    x = chain.input(0)
    rank = len(x.shape)
    axis = attr_int(node, "axis", -1) % rank
    y = chain.output()
    if axis == rank - 1:
        chain.op("LOG_SOFTMAX", [x], x.shape, "LogSoftmaxOptions", out=y)
        chain.finish()
        return
    _, shifted, log = _shifted_log_sum_exp(chain, x, [axis], _reduced(x.shape, [axis]), True)
    chain.op("SUB", [shifted, log], x.shape, "SubOptions", out=y)
    chain.finish()


def hardmax(lw: Lowering, node: ir.Node) -> None:
    """Hardmax -> ARG_MAX over the axis (int32), ONE_HOT back onto that axis (1.0 / 0.0)."""
    chain = FloatChain(lw, node)
    x = chain.input(0)
    rank = len(x.shape)
    axis = attr_int(node, "axis", -1) % rank
    index_shape = x.shape[:axis] + x.shape[axis + 1 :]
    indices = lw.model.tensor(f"{node.name}_argmax", index_shape, np.int32)
    lw.op(
        "ARG_MAX",
        [x, chain.array(np.array([axis], np.int32), np.int32)],
        [indices],
        "ArgMaxOptions",
        source=node.name,
        output_type=TENSOR_TYPES[np.dtype(np.int32)],
    )
    depth = chain.array(np.array(x.shape[axis], np.int32), np.int32)
    chain.op("ONE_HOT", [indices, depth, chain.const(1.0), chain.const(0.0)], x.shape, "OneHotOptions",
             out=chain.output(), axis=axis)
    chain.finish()


def _power(chain: FloatChain, x: Tensor, p: float) -> Tensor:
    """``|x|^p``: ABS for p = 1, MUL(x, x) for p = 2, POW(ABS(x), p) otherwise."""
    if p == 2:
        return chain.op("MUL", [x, x], x.shape, "MulOptions")
    magnitude = chain.op("ABS", [x], x.shape)
    return magnitude if p == 1 else chain.op("POW", [magnitude, chain.const(p)], x.shape)


def _root(chain: FloatChain, x: Tensor, p: float, out: Tensor) -> Tensor:
    """``x^(1/p)`` into ``out``: a copy for p = 1, SQRT for p = 2, POW otherwise."""
    if p == 1:
        return chain.lw.reshape(x, out, chain.node.name)
    if p == 2:
        return chain.op("SQRT", [x], out.shape, out=out)
    return chain.op("POW", [x, chain.const(1.0 / p)], out.shape, out=out)


def _p(node: ir.Node) -> float:
    attr = node.attributes.get("p")
    if attr is None:
        return 2.0
    return float(attr.as_int() if attr.type == ir.AttributeType.INT else attr.as_float())


def lp_pool(lw: Lowering, node: ir.Node) -> None:
    """LpPool -> ``|x|^p``, sum pooling, ``^(1/p)``: on channels-last data (1-D, 2-D), channels-first (3-D)."""
    chain = FloatChain(lw, node)
    x = chain.input(0)
    rank, p = len(x.shape), _p(node)
    y = chain.output()
    last = node.meta.get(LAYOUT_KEY) is not None
    if rank == 5 and not last:
        summed = lw.model.tensor(f"{node.name}_sum", y.shape, np.float32)
        pool_channels_first(lw, node, _power(chain, x, p), summed, "sum", include_pad=False)
        _root(chain, summed, p, y)
        chain.finish()
        return
    win = window(node, int_list(node, "kernel_shape", []))
    if not last:
        x = chain.op("TRANSPOSE", [x, chain.array(channels_last(rank), np.int32)],
                     tuple(x.shape[a] for a in channels_last(rank)), "TransposeOptions")
    y_last = y.shape if last else tuple(y.shape[a] for a in channels_last(rank))
    image_in = x.shape if rank == 4 else (x.shape[0], 1, *x.shape[1:])
    image_out = y_last if rank == 4 else (y_last[0], 1, *y_last[1:])
    powered = chain.reshape(_power(chain, x, p), image_in)
    summed = lw.model.tensor(f"{node.name}_sum", image_out, np.float32)
    pool_2d(lw, node, powered, summed, win, "sum", include_pad=False)
    direct = last and tuple(image_out) == tuple(y.shape)
    rooted = y if direct else lw.model.tensor(f"{node.name}_root", image_out, np.float32)
    _root(chain, summed, p, rooted)
    if last and not direct:
        lw.reshape(rooted, y, node.name)
    elif not last:
        back = chain.reshape(rooted, y_last)
        chain.op("TRANSPOSE", [back, chain.array(channels_first(rank), np.int32)], y.shape, "TransposeOptions",
                 out=y)
    chain.finish()


def global_lp_pool(lw: Lowering, node: ir.Node) -> None:
    """GlobalLpPool -> ``|x|^p``, SUM over the spatial axes (kept), ``^(1/p)``."""
    chain = FloatChain(lw, node)
    x = chain.input(0)
    rank, p = len(x.shape), _p(node)
    first = 1 if node.meta.get(LAYOUT_KEY) is not None else 2
    axes = list(range(first, first + rank - 2))
    y = chain.output()
    total = chain.op("SUM", [_power(chain, x, p), _axes_const(chain, axes)], y.shape, "ReducerOptions",
                     keep_dims=True)
    _root(chain, total, p, y)
    chain.finish()


LOWERINGS: dict = {
    "BatchNormalization": batch_norm,
    "InstanceNormalization": instance_norm,
    "GroupNormalization": group_norm,
    "RMSNormalization": rms_norm,
    "MeanVarianceNormalization": mean_variance_norm,
    "LpNormalization": lp_norm,
    "LRN": lrn,
    "ReduceMean": base_reduce,
    "ReduceMax": base_reduce,
    "ReduceMin": base_reduce,
    "ReduceSum": base_reduce,
    "ReduceL1": float_reduce,
    "ReduceL2": float_reduce,
    "ReduceSumSquare": float_reduce,
    "ReduceLogSum": float_reduce,
    "ReduceProd": float_reduce,
    "ReduceLogSumExp": reduce_log_sum_exp,
    "LogSoftmax": log_softmax,
    "Hardmax": hardmax,
    "LpPool": lp_pool,
    "GlobalLpPool": global_lp_pool,
}
