"""Lowering rules for windowed and weighted ops: Conv (incl. depthwise, grouped), ConvTranspose,
Gemm/MatMul (FULLY_CONNECTED, BATCH_MATMUL), pooling and Resize, on NHWC data.

Weight layouts follow TFLITE.md §4 (Conv OHWI, depthwise [1, kh, kw, C*m], transpose conv
[Cout, kh, kw, Cin], fully connected [N, K]); padding follows §5: VALID when the ONNX pads are
zero, SAME when they equal TF SAME, otherwise an explicit PAD (int8 PAD fills with the zero point,
i.e. exact zero; max pooling pads with the lowest value) followed by VALID.

1-D convolutions and pooling (NLC data after layout-nhwc) are the 2-D ops with height 1:
``RESHAPE [N, L, C] -> [N, 1, L, C]``, the op with kernel ``[1, k]`` (strides, dilations and pads
on W only), ``RESHAPE [N, 1, L', C'] -> [N, L', C']``. The reshapes only insert a unit dimension,
so they copy nothing and share parameters. A 1-D weight ``[O, I/g, k]`` is the 2-D ``[O, I/g, 1, k]``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import ACT_NONE, FUSED_KEY, Lowering, shape_of
from qcc.backends._tflite_writer import Tensor
from qcc.errors import BackendError
from qcc.irutils import attr_float, attr_int
from qcc.passes.layout_nhwc import LAYOUT_KEY

SAME, VALID = 0, 1
FUSABLE = {
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "TRANSPOSE_CONV",
    "FULLY_CONNECTED",
    "ADD",
    "SUB",
    "MUL",
    "CONCATENATION",
    "AVERAGE_POOL_2D",
    "MAX_POOL_2D",
}


def fused_code(node: ir.Node, op: str) -> int:
    """The fused activation recorded on the node, when the TFLite op ``op`` can carry one."""
    code = node.meta.get(FUSED_KEY, ACT_NONE)
    return code if op in FUSABLE else ACT_NONE


def int_list(node: ir.Node, name: str, default) -> list[int]:
    """An ints attribute of the node as a list, or ``default``."""
    attr = node.attributes.get(name)
    return list(attr.as_ints()) if attr is not None else list(default)


def unsupported(node: ir.Node, why: str) -> BackendError:
    """The error for a node qcc cannot lower, naming it and why."""
    return BackendError(f"node {node.name!r} ({node.op_type}): {why}.", "--exclude it or rewrite the model.")


@dataclasses.dataclass(frozen=True)
class Window:
    """A window op's attributes over (H, W); a 1-D op is a 2-D op of height 1.

    Attributes:
        kernel, strides, dilations: [h, w].
        pads: ONNX order [h_begin, w_begin, h_end, w_end].
        auto_pad: the ONNX ``auto_pad`` string (``NOTSET`` when absent).
    """

    kernel: list[int]
    strides: list[int]
    dilations: list[int]
    pads: list[int]
    auto_pad: str


def window(node: ir.Node, kernel: list[int]) -> Window:
    """The node's window attributes for a ``kernel`` of 1 or 2 spatial dimensions, as 2-D.

    Raises:
        BackendError: the kernel has another number of dimensions.
    """
    spatial = len(kernel)
    if spatial not in (1, 2):
        raise unsupported(node, f"only 1-D and 2-D windows are lowered, not {spatial}-D")
    strides, dilations = int_list(node, "strides", [1] * spatial), int_list(node, "dilations", [1] * spatial)
    pads = int_list(node, "pads", [0] * 2 * spatial)
    auto = node.attributes.get("auto_pad")
    auto = auto.as_string() if auto is not None else "NOTSET"
    if spatial == 1:
        return Window([1, *kernel], [1, *strides], [1, *dilations], [0, pads[0], 0, pads[1]], auto)
    return Window(list(kernel), strides, dilations, pads, auto)


def as_image(lw: Lowering, node: ir.Node, x: Tensor) -> Tensor:
    """``x`` when it is 4-D (NHWC); a 3-D NLC tensor viewed as ``[N, 1, L, C]``."""
    if len(x.shape) == 4:
        return x
    n, length, c = x.shape
    return lw.reshape(x, lw.model.tensor(f"{x.name}_2d", (n, 1, length, c), x.dtype, quant=x.quant), node.name)


def image_output(lw: Lowering, y: Tensor) -> Tensor:
    """The tensor a 2-D op writes for output ``y``: ``y`` itself, or ``[N, 1, L, C]`` for 3-D ``y``.

    :func:`finish_image` then reshapes it into ``y``.
    """
    if len(y.shape) == 4:
        return y
    n, length, c = y.shape
    return lw.model.tensor(f"{y.name}_2d", (n, 1, length, c), y.dtype, quant=y.quant)


def finish_image(lw: Lowering, node: ir.Node, image: Tensor, y: Tensor) -> None:
    """Writes ``y`` from the 2-D op's output ``image`` (a RESHAPE when they differ)."""
    if image is not y:
        lw.reshape(image, y, node.name)


def _as_2d_weight(array: np.ndarray) -> np.ndarray:
    """A 1-D weight ``[O, I, k]`` as the 2-D ``[O, I, 1, k]``; 2-D weights as they are."""
    return array[:, :, None, :] if array.ndim == 3 else array


def _padding(lw: Lowering, node: ir.Node, x: Tensor, win: Window, pad_value=None):
    """Returns (input tensor, TFLite padding) for a 2-D window op on NHWC ``x``."""
    in_hw = x.shape[1:3]
    same = []
    for size, k, s, d in zip(in_hw, win.kernel, win.strides, win.dilations, strict=True):
        out = math.ceil(size / s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        same.append((total // 2, total - total // 2))
    if win.auto_pad == "VALID":
        return x, VALID
    if win.auto_pad == "SAME_UPPER":
        return x, SAME
    pads = win.pads
    if win.auto_pad == "SAME_LOWER":
        pads = [same[0][1], same[1][1], same[0][0], same[1][0]]
    begin, end = pads[:2], pads[2:]
    if not any(pads):
        return x, VALID
    if [(b, e) for b, e in zip(begin, end, strict=True)] == same and node.op_type != "AveragePool":
        return x, SAME
    if node.op_type == "AveragePool" and not attr_int(node, "count_include_pad", 0):
        if [(b, e) for b, e in zip(begin, end, strict=True)] == same:
            return x, SAME
        raise unsupported(node, "average pooling with non-SAME pads that exclude padding from the divisor")
    paddings = np.array([[0, 0], [begin[0], end[0]], [begin[1], end[1]], [0, 0]], np.int32)
    shape = (x.shape[0], x.shape[1] + begin[0] + end[0], x.shape[2] + begin[1] + end[1], x.shape[3])
    padded = lw.model.tensor(f"{node.name}_padded", shape, x.dtype, quant=x.quant)
    if pad_value is None:
        lw.op("PAD", [x, lw.constant(f"{node.name}_paddings", paddings)], [padded], "PadOptions", source=node.name)
    else:
        fill = np.array(-128 if x.quant is not None else np.finfo(np.float32).min, x.dtype)
        fill_t = lw.constant(f"{node.name}_pad_value", fill, x.quant)
        lw.op(
            "PADV2",
            [x, lw.constant(f"{node.name}_paddings", paddings), fill_t],
            [padded],
            "PadV2Options",
            source=node.name,
        )
    return padded, VALID


def conv(lw: Lowering, node: ir.Node) -> None:
    """Conv (1-D or 2-D) -> CONV_2D (OHWI weights, qdim 0) or DEPTHWISE_CONV_2D ([1, kh, kw, C*m], qdim 3)."""
    w_shape = shape_of(node.inputs[1])
    win = window(node, list(w_shape[2:]))
    x = as_image(lw, node, lw.input(node, 0))
    group = attr_int(node, "group", 1)
    out_c, in_c = w_shape[0], x.shape[3]
    x, padding = _padding(lw, node, x, win)
    depthwise = group == in_c and group > 1 and out_c % in_c == 0
    if depthwise:
        w = lw.weight(node, 1, lambda a: _as_2d_weight(a).transpose(1, 2, 3, 0), axis=3)
        name, options = "DEPTHWISE_CONV_2D", "DepthwiseConv2DOptions"
        extra = {"depth_multiplier": out_c // in_c}
    else:
        w = lw.weight(node, 1, lambda a: _as_2d_weight(a).transpose(0, 2, 3, 1), axis=0)
        name, options, extra = "CONV_2D", "Conv2DOptions", {}
    b = lw.bias(node, 2, out_c, x, w)
    y = lw.output(node)
    image = image_output(lw, y)
    lw.op(
        name,
        [x, w, b],
        [image],
        options,
        source=node.name,
        padding=padding,
        stride_w=win.strides[1],
        stride_h=win.strides[0],
        dilation_w_factor=win.dilations[1],
        dilation_h_factor=win.dilations[0],
        fused_activation_function=fused_code(node, name),
        **extra,
    )
    finish_image(lw, node, image, y)


def conv_transpose(lw: Lowering, node: ir.Node) -> None:
    """ConvTranspose (1-D or 2-D) -> TRANSPOSE_CONV (inputs: output shape, [Cout, kh, kw, Cin] weights, data, bias)."""
    w_shape = shape_of(node.inputs[1])
    win = window(node, list(w_shape[2:]))
    if attr_int(node, "group", 1) != 1 or win.dilations != [1, 1]:
        raise unsupported(node, "only ungrouped, undilated ConvTranspose is lowered")
    x = as_image(lw, node, lw.input(node, 0))
    y = lw.output(node)
    image = image_output(lw, y)
    out_hw = image.shape[1:3]
    kernel, strides, pads = win.kernel, win.strides, win.pads
    totals = [(i - 1) * s + k - o for i, s, k, o in zip(x.shape[1:3], strides, kernel, out_hw, strict=True)]
    if all(t == 0 for t in totals):
        padding = VALID
    elif all(t >= 0 and pads[i] == t // 2 for i, t in enumerate(totals)):
        padding = SAME
    else:
        raise unsupported(node, f"ConvTranspose pads {pads} that are neither VALID nor TF SAME")
    w = lw.weight(node, 1, lambda a: _as_2d_weight(a).transpose(1, 2, 3, 0), axis=0)
    b = lw.bias(node, 2, w_shape[1], x, w)
    shape = lw.constant(f"{node.name}_output_shape", np.array(image.shape, np.int32))
    lw.op(
        "TRANSPOSE_CONV",
        [shape, w, x, b],
        [image],
        "TransposeConvOptions",
        source=node.name,
        padding=padding,
        stride_w=strides[1],
        stride_h=strides[0],
        fused_activation_function=fused_code(node, "TRANSPOSE_CONV"),
    )
    finish_image(lw, node, image, y)


def gemm(lw: Lowering, node: ir.Node) -> None:
    """Gemm with constant B (alpha 1, no transA) -> FULLY_CONNECTED with [N, K] weights."""
    if attr_int(node, "transA", 0) or attr_float(node, "alpha", 1.0) != 1.0:
        raise unsupported(node, "Gemm with transA or alpha != 1")
    if node.inputs[1].const_value is None:
        raise unsupported(node, "Gemm with a non-constant B")
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    if bias is not None and bias.const_value is None:
        raise unsupported(node, "Gemm with a non-constant C")
    if bias is not None and attr_float(node, "beta", 1.0) != 1.0:
        raise unsupported(node, "Gemm with beta != 1")
    trans_b = attr_int(node, "transB", 0)
    _fully_connected(lw, node, (lambda a: a) if trans_b else (lambda a: a.T.copy()), 2)


def matmul(lw: Lowering, node: ir.Node) -> None:
    """MatMul -> FULLY_CONNECTED for a constant 2-D B, BATCH_MATMUL for two activations."""
    b = node.inputs[1]
    if b.const_value is not None and len(shape_of(b)) == 2:
        _fully_connected(lw, node, lambda a: a.T.copy(), None)
        return
    a_t, b_t = lw.input(node, 0), lw.input(node, 1)
    if b.const_value is not None:
        raise unsupported(node, "MatMul with a constant B of rank > 2")
    lw.op(
        "BATCH_MATMUL", [a_t, b_t], [lw.output(node)], "BatchMatMulOptions", source=node.name, adj_x=False, adj_y=False
    )


def _fully_connected(lw: Lowering, node: ir.Node, transform, bias_index) -> None:
    x = lw.input(node, 0)
    w = lw.weight(node, 1, transform, axis=0)
    channels = w.shape[0]
    b = lw.bias(node, bias_index, channels, x, w) if bias_index is not None else -1
    y = lw.output(node)
    keep = len(x.shape) > 2
    lw.op(
        "FULLY_CONNECTED",
        [x, w, b],
        [y],
        "FullyConnectedOptions",
        source=node.name,
        fused_activation_function=fused_code(node, "FULLY_CONNECTED"),
        keep_num_dims=keep,
    )


def pool(lw: Lowering, node: ir.Node) -> None:
    """MaxPool/AveragePool (1-D or 2-D) -> MAX_POOL_2D/AVERAGE_POOL_2D (explicit PAD/PADV2 for non-SAME pads)."""
    if len(node.outputs) > 1 and node.outputs[1].uses():
        raise unsupported(node, "MaxPool indices output")
    if attr_int(node, "ceil_mode", 0):
        raise unsupported(node, "ceil_mode=1")
    win = window(node, int_list(node, "kernel_shape", []))
    if win.dilations != [1, 1]:
        raise unsupported(node, "dilated pooling")
    is_max = node.op_type == "MaxPool"
    x = as_image(lw, node, lw.input(node, 0))
    x, padding = _padding(lw, node, x, win, pad_value="min" if is_max else None)
    name = "MAX_POOL_2D" if is_max else "AVERAGE_POOL_2D"
    y = lw.output(node)
    image = image_output(lw, y)
    lw.op(
        name,
        [x],
        [image],
        "Pool2DOptions",
        source=node.name,
        padding=padding,
        stride_w=win.strides[1],
        stride_h=win.strides[0],
        filter_width=win.kernel[1],
        filter_height=win.kernel[0],
        fused_activation_function=fused_code(node, name),
    )
    finish_image(lw, node, image, y)


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


def resize(lw: Lowering, node: ir.Node) -> None:
    """Resize (2-D, NHWC) -> RESIZE_BILINEAR or RESIZE_NEAREST_NEIGHBOR with a constant size."""
    x, y = lw.input(node, 0), lw.output(node)
    mode = node.attributes.get("mode")
    mode = mode.as_string() if mode is not None else "nearest"
    ctm = node.attributes.get("coordinate_transformation_mode")
    ctm = ctm.as_string() if ctm is not None else "half_pixel"
    size = lw.constant(f"{node.name}_size", np.array(y.shape[1:3], np.int32))
    align, half = ctm == "align_corners", ctm in ("half_pixel", "pytorch_half_pixel")
    if ctm not in ("align_corners", "half_pixel", "pytorch_half_pixel", "asymmetric"):
        raise unsupported(node, f"coordinate_transformation_mode {ctm!r}")
    if mode == "linear":
        lw.op(
            "RESIZE_BILINEAR",
            [x, size],
            [y],
            "ResizeBilinearOptions",
            source=node.name,
            align_corners=align,
            half_pixel_centers=half,
        )
    elif mode == "nearest":
        nearest = node.attributes.get("nearest_mode")
        nearest = nearest.as_string() if nearest is not None else "round_prefer_floor"
        integer = all(o % i == 0 for o, i in zip(y.shape[1:3], x.shape[1:3], strict=True))
        floor_like = (ctm == "asymmetric" and nearest == "floor") or (
            ctm in ("half_pixel", "pytorch_half_pixel") and nearest in ("round_prefer_floor", "round_prefer_ceil")
        )
        if integer and floor_like:
            _replicate(lw, node, x, y)
            return
        if not (ctm == "asymmetric" and nearest == "floor"):
            raise unsupported(node, f"nearest resize with {ctm}/{nearest} at a non-integer factor")
        lw.op(
            "RESIZE_NEAREST_NEIGHBOR",
            [x, size],
            [y],
            "ResizeNearestNeighborOptions",
            source=node.name,
            align_corners=False,
            half_pixel_centers=False,
        )
    else:
        raise unsupported(node, f"Resize mode {mode!r}")


def _replicate(lw: Lowering, node: ir.Node, x, y) -> None:
    """Nearest upsampling by integer factors as CONCATENATION + RESHAPE (XNNPACK takes both).

    With these coordinate modes output pixel ``o`` reads input ``o // f``: repeating each pixel
    ``f`` times along W is ``concat([x] * f, channels)`` viewed as ``[N, H, W*f, C]``, and along H
    ``concat([x] * f, W)`` viewed as ``[N, H*f, W, C]``. Parameters are shared, so int8 is exact.
    """
    current = x
    n, h, w, c = x.shape
    steps = [(y.shape[2] // w, 3, (n, h, y.shape[2], c)), (y.shape[1] // h, 2, y.shape)]
    for factor, axis, target_shape in steps:
        if factor == 1:
            continue
        wide = list(current.shape)
        wide[axis] *= factor
        stacked = lw.model.tensor(f"{node.name}_repeat", wide, current.dtype, quant=current.quant)
        lw.op("CONCATENATION", [current] * factor, [stacked], "ConcatenationOptions", source=node.name, axis=axis)
        out = (
            y
            if tuple(target_shape) == tuple(y.shape)
            else lw.model.tensor(f"{node.name}_rows", target_shape, current.dtype, quant=current.quant)
        )
        current = lw.reshape(stacked, out, node.name)
    if current is x:
        lw.reshape(x, y, node.name)
