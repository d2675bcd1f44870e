"""TFLite lowering rules for pooling: MaxPool/AveragePool (1-D, 2-D, 3-D) and GlobalAveragePool/GlobalMaxPool.

A window of 1 or 2 spatial dimensions (:func:`pool_2d`) is MAX_POOL_2D/AVERAGE_POOL_2D on NHWC data
(a 1-D one on the ``[N, 1, L, C]`` view): SAME when the pads are TF SAME's, else VALID on an
explicitly padded input (zeros; the lowest value for max). ``ceil_mode`` is more end padding. An
average whose divisor is not the kernel size everywhere (``count_include_pad`` either way, pads
that are not TF SAME, ceil_mode) is the VALID average of the zero-padded input times
``kernel size / count`` per output position, ``count`` being the window's cells inside the input
(plus the declared pads with ``count_include_pad=1``); a sum is the average times the kernel size.
Dilated windows and MaxPool's Indices output are computed tap by tap (one STRIDED_SLICE of the
padded input per kernel cell).

3-D windows stay NCDHW (layout-nhwc moves ranks 3 and 4 only) and are pooled tap by tap
(:func:`pool_channels_first`): TFLite has no 3-D pooling. Global pools of any rank are MEAN /
REDUCE_MAX over the spatial axes, keeping dims. LpPool (``_tflite_ops_norm``) is built on the sum
pooling of :func:`pool_2d` and :func:`pool_channels_first`.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import ACT_NONE, Lowering
from qcc.backends._tflite_ops_data import cast_from_int32
from qcc.backends._tflite_ops_float import wanted
from qcc.backends._tflite_ops_window import (
    SAME,
    VALID,
    PoolPads,
    Window,
    as_image,
    finish_image,
    fused_code,
    image_output,
    int_list,
    nd_pads,
    pad_image,
    unsupported,
    window,
)
from qcc.backends._tflite_writer import Tensor
from qcc.irutils import attr_int
from qcc.passes.layout_nhwc import LAYOUT_KEY


def pool(lw: Lowering, node: ir.Node) -> None:
    """MaxPool/AveragePool (1-D or 2-D) -> MAX_POOL_2D/AVERAGE_POOL_2D (see :func:`pool_2d`).

    MaxPool's Indices output is computed tap by tap (:func:`_max_pool_with_indices`).
    """
    kernel = int_list(node, "kernel_shape", [])
    is_max = node.op_type == "MaxPool"
    kind = "max" if is_max else "avg"
    include_pad = bool(attr_int(node, "count_include_pad", 0))
    with_indices = is_max and wanted(node, 1)
    if len(kernel) == 3 and node.meta.get(LAYOUT_KEY) is None:
        if with_indices:
            raise unsupported(node, "MaxPool Indices of a 3-D window")
        pool_channels_first(lw, node, lw.input(node, 0), lw.output(node), kind, include_pad)
        return
    win = window(node, kernel)
    x = as_image(lw, node, lw.input(node, 0))
    y = lw.output(node)
    image = image_output(lw, y)
    if with_indices:
        _max_pool_with_indices(lw, node, x, image, win)
        finish_image(lw, node, image, y)
        return
    pool_2d(lw, node, x, image, win, kind, include_pad)
    finish_image(lw, node, image, y)


def pool_channels_first(lw: Lowering, node: ir.Node, x: Tensor, out: Tensor, kind: str, include_pad: bool) -> None:
    """Pooling of any spatial rank on ``[N, C, d1, ...]`` data, tap by tap (TFLite has no 3-D pooling).

    The input is padded (PAD with zeros, PADV2 with the lowest value for max) by the pads plus
    what ``ceil_mode`` reads past them; each kernel cell is one STRIDED_SLICE, combined by MAXIMUM
    or ADD; an average is the sum times ``1 / count`` per output position (the count follows
    ``count_include_pad`` as in :func:`pool_2d`).
    """
    kernel = int_list(node, "kernel_shape", [])
    spatial = len(kernel)
    strides = int_list(node, "strides", [1] * spatial)
    dilations = int_list(node, "dilations", [1] * spatial)
    pads = int_list(node, "pads", [0] * 2 * spatial)
    auto = node.attributes.get("auto_pad")
    auto = auto.as_string() if auto is not None else "NOTSET"
    in_sizes, out_sizes = x.shape[2:], out.shape[2:]
    begin, end, explicit = nd_pads(kernel, strides, dilations, pads, auto, in_sizes, out_sizes)
    padded = x
    if any(begin) or any(end):
        paddings = np.array([[0, 0], [0, 0], *zip(begin, end, strict=True)], np.int32)
        shape = (*x.shape[:2], *(s + b + e for s, b, e in zip(in_sizes, begin, end, strict=True)))
        padded = lw.model.tensor(f"{node.name}_padded", shape, x.dtype, quant=x.quant)
        paddings_t = lw.constant(f"{node.name}_paddings", paddings)
        if kind == "max":
            fill = np.array(-128 if x.quant is not None else np.finfo(np.float32).min, x.dtype)
            fill_t = lw.constant(f"{node.name}_pad_value", fill, x.quant)
            lw.op("PADV2", [x, paddings_t, fill_t], [padded], "PadV2Options", source=node.name)
        else:
            lw.op("PAD", [x, paddings_t], [padded], "PadOptions", source=node.name)
    counts = None
    if kind == "avg":
        counts = _nd_counts(kernel, strides, dilations, begin, explicit, in_sizes, out_sizes, include_pad)
        if out.quant is not None:
            raise unsupported(node, "an int8 average pooling of a 3-D window (run it float)")
    target = out if counts is None else lw.model.tensor(f"{node.name}_sum", out.shape, out.dtype, quant=out.quant)
    step = lw.constant(f"{node.name}_tap_strides", np.array([1, 1, *strides], np.int32))
    name, options = ("MAXIMUM", "MaximumMinimumOptions") if kind == "max" else ("ADD", "AddOptions")
    current = None
    cells = list(itertools.product(*(range(k) for k in kernel)))
    for position, cell in enumerate(cells):
        first = [c * d for c, d in zip(cell, dilations, strict=True)]
        last = [f + (o - 1) * s + 1 for f, o, s in zip(first, out_sizes, strides, strict=True)]
        consts = [lw.constant(f"{node.name}_tap_{k}", np.array(v, np.int32))
                  for k, v in (("begin", [0, 0, *first]), ("end", [*x.shape[:2], *last]))]
        tap = lw.model.tensor(f"{node.name}_tap", out.shape, out.dtype, quant=out.quant)
        lw.op("STRIDED_SLICE", [padded, *consts, step], [tap], "StridedSliceOptions", source=node.name)
        if current is None:
            current = tap
            continue
        combined = target if position == len(cells) - 1 else lw.model.tensor(
            f"{node.name}_acc", out.shape, out.dtype, quant=out.quant)
        lw.op(name, [current, tap], [combined], options, source=node.name)
        current = combined
    if current is not target:
        lw.reshape(current, target, node.name)
    if counts is not None:
        factor = lw.constant(f"{node.name}_divisor", (1.0 / counts).astype(np.float32)[None, None])
        lw.op("MUL", [target, factor], [out], "MulOptions", source=node.name)


def _nd_counts(kernel, strides, dilations, begin, explicit_end, in_sizes, out_sizes, include_pad: bool) -> np.ndarray:
    """How many cells each output's window averages over, shaped like the spatial output."""
    counts = np.ones((), np.float32)
    for a in range(len(kernel)):
        low = -begin[a] if include_pad else 0
        high = in_sizes[a] + (explicit_end[a] if include_pad else 0)
        starts = np.arange(out_sizes[a]) * strides[a] - begin[a]
        taps = starts[:, None] + np.arange(kernel[a])[None, :] * dilations[a]
        per_axis = ((taps >= low) & (taps < high)).sum(axis=1).astype(np.float32)
        counts = np.multiply.outer(counts, per_axis)
    return counts


def pool_pads(node: ir.Node, win: Window, in_hw, out_hw) -> PoolPads:
    """The pads of a pooling node whose input has spatial size ``in_hw`` and output ``out_hw``."""
    begin, end, explicit = nd_pads(win.kernel, win.strides, win.dilations, win.pads, win.auto_pad, in_hw, out_hw)
    return PoolPads(begin, end, explicit)


def _window_counts(win: Window, pads: PoolPads, in_hw, out_hw, include_pad: bool) -> np.ndarray:
    """How many cells each output's window averages over: ``[1, OH, OW, 1]`` float.

    ``include_pad`` counts the declared pads (ONNX ``count_include_pad=1``); the cells past them
    that ``ceil_mode`` reads are never counted (as ONNX Runtime and PyTorch).
    """
    counts = _nd_counts(win.kernel, win.strides, win.dilations, pads.begin, pads.explicit_end, in_hw, out_hw,
                        include_pad)
    return counts[None, :, :, None]


def pool_2d(lw: Lowering, node: ir.Node, x: Tensor, out: Tensor, win: Window, kind: str, include_pad: bool) -> None:
    """Writes ``out`` = the ``kind`` pooling ("max", "avg" or "sum") of NHWC ``x`` over ``win``.

    Undilated windows are one MAX_POOL_2D/AVERAGE_POOL_2D: SAME when the pads are TF's SAME pads
    (and, for an average, padding is not counted), VALID on an explicitly padded input otherwise
    (PAD with zeros; PADV2 with the lowest value for max), ``ceil_mode`` being more end padding.
    An average whose divisor is not the window size everywhere (``count_include_pad``, ceil_mode)
    is multiplied by ``kernel size / count`` per output position; a sum is the average times the
    kernel size. Dilated windows are taken tap by tap: one STRIDED_SLICE of the padded input per
    kernel cell, combined by MAXIMUM or ADD.
    """
    in_hw, out_hw = x.shape[1:3], out.shape[1:3]
    pads = pool_pads(node, win, in_hw, out_hw)
    area = win.kernel[0] * win.kernel[1]
    dilated = win.dilations != [1, 1]
    counts = _window_counts(win, pads, in_hw, out_hw, include_pad)
    tf_same = all(
        out_hw[a] == math.ceil(in_hw[a] / win.strides[a])
        and (pads.begin[a], pads.end[a]) == _same_pads(in_hw[a], out_hw[a], win.kernel[a], win.strides[a])
        for a in range(2)
    )
    # TF SAME leaves padding out of an average's divisor: right when ONNX does too.
    excluded = np.array_equal(counts, _window_counts(win, pads, in_hw, out_hw, False))
    tf_same = tf_same and not dilated and (kind == "max" or (kind == "avg" and excluded))
    padded = x if tf_same else pad_image(lw, node, x, pads, lowest=kind == "max")
    rescale = None  # what the op's result is multiplied by, per output position
    if kind == "sum" and not dilated:
        rescale = np.array(area, np.float32)
    elif kind == "avg" and dilated:
        rescale = (1.0 / counts).astype(np.float32)
    elif kind == "avg" and not tf_same and not np.all(counts == area):
        rescale = (area / counts).astype(np.float32)
    target = out if rescale is None else lw.model.tensor(f"{node.name}_pooled", out.shape, out.dtype, quant=out.quant)
    if dilated:
        _tap_pool(lw, node, padded, target, win, "max" if kind == "max" else "sum")
    else:
        name = "MAX_POOL_2D" if kind == "max" else "AVERAGE_POOL_2D"
        lw.op(
            name,
            [padded],
            [target],
            "Pool2DOptions",
            source=node.name,
            padding=SAME if tf_same else VALID,
            stride_w=win.strides[1],
            stride_h=win.strides[0],
            filter_width=win.kernel[1],
            filter_height=win.kernel[0],
            fused_activation_function=fused_code(node, name) if rescale is None else ACT_NONE,
        )
    if rescale is not None:
        if out.quant is not None:
            raise unsupported(node, "an int8 average pooling whose divisor varies (run it float)")
        factor = lw.constant(f"{node.name}_divisor", rescale)
        lw.op("MUL", [target, factor], [out], "MulOptions", source=node.name,
              fused_activation_function=fused_code(node, "MUL"))


def _same_pads(size: int, out: int, k: int, s: int) -> tuple[int, int]:
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _taps(lw: Lowering, node: ir.Node, padded: Tensor, like: Tensor, win: Window):
    """Yields ((i, j), the kernel cell's values for every output) of a window over ``padded``."""
    n, out_h, out_w, c = like.shape
    strides = lw.constant(f"{node.name}_tap_strides", np.array([1, win.strides[0], win.strides[1], 1], np.int32))
    for i in range(win.kernel[0]):
        for j in range(win.kernel[1]):
            top, left = i * win.dilations[0], j * win.dilations[1]
            begin = [0, top, left, 0]
            end = [n, top + (out_h - 1) * win.strides[0] + 1, left + (out_w - 1) * win.strides[1] + 1, c]
            tap = lw.model.tensor(f"{node.name}_tap", like.shape, padded.dtype, quant=padded.quant)
            consts = [lw.constant(f"{node.name}_tap_{k}", np.array(v, np.int32)) for k, v in (("begin", begin),
                                                                                              ("end", end))]
            lw.op("STRIDED_SLICE", [padded, *consts, strides], [tap], "StridedSliceOptions", source=node.name)
            yield (i, j), tap


def _tap_pool(lw: Lowering, node: ir.Node, padded: Tensor, out: Tensor, win: Window, kind: str) -> None:
    """``out`` = MAXIMUM or ADD over the window's taps (dilated windows)."""
    taps = [tap for _, tap in _taps(lw, node, padded, out, win)]
    name, options = ("MAXIMUM", "MaximumMinimumOptions") if kind == "max" else ("ADD", "AddOptions")
    current = taps[0]
    for k, tap in enumerate(taps[1:], 1):
        target = out if k == len(taps) - 1 else lw.model.tensor(f"{node.name}_acc", out.shape, out.dtype,
                                                                 quant=out.quant)
        lw.op(name, [current, tap], [target], options, source=node.name)
        current = target
    if current is not out:
        lw.reshape(current, out, node.name)


def _max_pool_with_indices(lw: Lowering, node: ir.Node, x: Tensor, out: Tensor, win: Window) -> None:
    """MaxPool with Indices: per kernel cell, GREATER + SELECT_V2 keep the first maximum's position.

    ONNX's index is the flat position in the NCHW input: ``(n * C + c) * H * W + h * W + w``
    (``storage_order=1``: ``... + w * H + h``). Each tap's spatial positions are a constant; padding
    (filled with the lowest value) never wins, and ties keep the earlier cell, as ONNX Runtime.
    """
    indices_value = node.outputs[1]
    n, height, width, c = x.shape
    out_h, out_w = out.shape[1:3]
    pads = pool_pads(node, win, (height, width), (out_h, out_w))
    padded = pad_image(lw, node, x, pads, lowest=True)
    column_major = attr_int(node, "storage_order", 0) == 1
    best, best_index = None, None
    for (i, j), tap in _taps(lw, node, padded, out, win):
        rows = np.arange(out_h) * win.strides[0] - pads.begin[0] + i * win.dilations[0]
        cols = np.arange(out_w) * win.strides[1] - pads.begin[1] + j * win.dilations[1]
        flat = rows[:, None] + cols[None, :] * height if column_major else rows[:, None] * width + cols[None, :]
        position = lw.constant(f"{node.name}_positions", flat.astype(np.int32)[None, :, :, None])
        if best is None:
            best, best_index = tap, position
            continue
        greater = lw.model.tensor(f"{node.name}_greater", out.shape, np.bool_)
        lw.op("GREATER", [tap, best], [greater], "GreaterOptions", source=node.name)
        chosen = lw.model.tensor(f"{node.name}_index", out.shape, np.int32)
        lw.op("SELECT_V2", [greater, position, best_index], [chosen], "SelectV2Options", source=node.name)
        larger = lw.model.tensor(f"{node.name}_max", out.shape, out.dtype, quant=out.quant)
        lw.op("MAXIMUM", [best, tap], [larger], "MaximumMinimumOptions", source=node.name)
        best, best_index = larger, chosen
    lw.reshape(best, out, node.name)
    offsets = (np.arange(n)[:, None] * c + np.arange(c)[None, :]) * height * width
    offsets_t = lw.constant(f"{node.name}_offsets", offsets.astype(np.int32).reshape(n, 1, 1, c))
    flat_index = lw.model.tensor(f"{node.name}_flat_index", out.shape, np.int32)
    lw.op("ADD", [best_index, offsets_t], [flat_index], "AddOptions", source=node.name)
    indices = lw.define(indices_value, False)
    image = indices if len(indices.shape) == 4 else lw.model.tensor(f"{indices.name}_2d", out.shape, indices.dtype)
    cast_from_int32(lw, flat_index, image, node.name)
    finish_image(lw, node, image, indices)


def global_pool(lw: Lowering, node: ir.Node) -> None:
    """GlobalAveragePool/GlobalMaxPool of any rank -> MEAN/REDUCE_MAX over the spatial axes, keeping dims.

    Layout ops (4-D NHWC, 3-D NLC after layout-nhwc) are channels last and reduce axes 1..r-2;
    other ranks keep the ONNX ``[N, C, spatial...]`` layout and reduce axes 2..r-1.
    """
    x = lw.input(node, 0)
    rank = len(x.shape)
    first = 1 if node.meta.get(LAYOUT_KEY) is not None else 2
    axes = lw.constant(f"{node.name}_axes", np.arange(first, first + rank - 2, dtype=np.int32))
    name = "MEAN" if node.op_type == "GlobalAveragePool" else "REDUCE_MAX"
    lw.op(name, [x, axes], [lw.output(node)], "ReducerOptions", source=node.name, keep_dims=True)
