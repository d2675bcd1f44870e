"""Lowering rules for windowed and weighted ops: Conv (incl. depthwise, grouped, 3-D), ConvTranspose,
Gemm/MatMul (FULLY_CONNECTED, BATCH_MATMUL), pooling and Resize, on NHWC data.

Weight layouts follow TFLITE.md §4 (Conv OHWI, depthwise [1, kh, kw, C*m], transpose conv
[Cout, kh, kw, Cin], fully connected [N, K]); padding follows §5: VALID when the ONNX pads are
zero, SAME when they equal TF SAME, otherwise an explicit PAD (int8 PAD fills with the zero point,
i.e. exact zero; max pooling pads with the lowest value) followed by VALID. A weight that is a
graph input (the plan keeps such a node float) is TRANSPOSEd at run time.

1-D convolutions and pooling (NLC data after layout-nhwc) are the 2-D ops with height 1:
``RESHAPE [N, L, C] -> [N, 1, L, C]``, the op with kernel ``[1, k]`` (strides, dilations and pads
on W only), ``RESHAPE [N, 1, L', C'] -> [N, L', C']``. The reshapes only insert a unit dimension,
so they copy nothing and share parameters. A 1-D weight ``[O, I/g, k]`` is the 2-D ``[O, I/g, 1, k]``.
3-D ones stay NCDHW (layout-nhwc moves ranks 3 and 4 only): CONV_3D / CONV_3D_TRANSPOSE between
TRANSPOSEs, and pooling tap by tap (one STRIDED_SLICE per kernel cell).

Pooling (``pool_2d``): ``ceil_mode`` is more end padding; an average whose divisor is not the
kernel size everywhere (``count_include_pad`` either way, pads that are not TF SAME, ceil_mode) is
the VALID average of the zero-padded input times ``kernel size / count`` per output position;
dilated windows and MaxPool's Indices output are computed tap by tap.

Where TFLite has no int8 kernel for what an int8 node needs (a grouped or 3-D transposed
convolution, BATCH_MATMUL with per-channel weights, Gemm with transA/alpha/beta), the rule
computes in float on the dequantized operands (``DQ(Q(.))``, what the simulation reads) and
QUANTIZEs the result, which is the simulation's ``DQ -> op -> Q``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import onnx_ir as ir

from qcc.annotations import get_quant
from qcc.backends._tflite_lower import ACT_NONE, ACT_RELU, ACT_RELU6, ACT_RELU_N1_TO_1, FUSED_KEY, Lowering, shape_of
from qcc.backends._tflite_writer import TENSOR_TYPES, Quant, Tensor
from qcc.errors import BackendError
from qcc.irutils import attr_float, attr_int, const_array
from qcc.passes.layout_nhwc import LAYOUT_KEY
from qcc.quantmath import quantize

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


def _padding(lw: Lowering, node: ir.Node, x: Tensor, win: Window):
    """Returns (input tensor, TFLite padding) for a 2-D convolution on NHWC ``x``."""
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
    if [(b, e) for b, e in zip(begin, end, strict=True)] == same:
        return x, SAME
    return _pad_image(lw, node, x, PoolPads(list(begin), list(end), list(end)), lowest=False), VALID


def conv(lw: Lowering, node: ir.Node) -> None:
    """Conv (1-D or 2-D) -> CONV_2D (OHWI weights, qdim 0) or DEPTHWISE_CONV_2D ([1, kh, kw, C*m], qdim 3).

    A weight that is a graph input (the plan keeps such a node float) is transposed at run time.
    """
    w_shape = shape_of(node.inputs[1])
    if len(w_shape) == 5:
        _volume(lw, node, transpose=False)
        return
    win = window(node, list(w_shape[2:]))
    x = as_image(lw, node, lw.input(node, 0))
    group = attr_int(node, "group", 1)
    out_c, in_c = w_shape[0], x.shape[3]
    x, padding = _padding(lw, node, x, win)
    depthwise = group == in_c and group > 1 and out_c % in_c == 0
    if depthwise:
        w = _filter(lw, node, (1, 2, 3, 0), axis=3)
        name, options = "DEPTHWISE_CONV_2D", "DepthwiseConv2DOptions"
        extra = {"depth_multiplier": out_c // in_c}
    else:
        w = _filter(lw, node, (0, 2, 3, 1), axis=0)
        name, options, extra = "CONV_2D", "Conv2DOptions", {}
    b = _bias(lw, node, 2, out_c, x, w)
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


def _filter(lw: Lowering, node: ir.Node, perm: tuple[int, ...], axis: int) -> Tensor:
    """Input 1 (an ONNX ``[O, I, (1,) k]`` filter) permuted by ``perm`` as a 2-D filter.

    A constant is transformed at compile time; a graph input (float only) by RESHAPE + TRANSPOSE.
    """
    value = node.inputs[1]
    if const_array(value) is not None:
        return lw.weight(node, 1, lambda a: _as_2d_weight(a).transpose(perm), axis=axis)
    if lw.is_int8(node):
        raise unsupported(node, "an int8 filter that is not a constant")
    w = lw.read(value, False)
    if w.dtype != np.float32:
        raise unsupported(node, f"a {w.dtype} filter (LiteRT's float convolutions take float32)")
    if len(w.shape) == 3:
        o, i, k = w.shape
        w = lw.reshape(w, lw.model.tensor(f"{w.name}_2d", (o, i, 1, k), w.dtype), node.name)
    shape = tuple(w.shape[p] for p in perm)
    out = lw.model.tensor(f"{w.name}_{node.name}_filter", shape, w.dtype)
    perm_t = lw.constant(f"{node.name}_filter_perm", np.array(perm, np.int32))
    lw.op("TRANSPOSE", [w, perm_t], [out], "TransposeOptions", source=node.name)
    return out


def _bias(lw: Lowering, node: ir.Node, index: int, channels: int, x: Tensor, w: Tensor) -> Tensor | int:
    """The node's bias as :meth:`Lowering.bias` writes it; a graph-input bias (float) is read as it is."""
    value = node.inputs[index] if len(node.inputs) > index else None
    if value is None or const_array(value) is not None:
        return lw.bias(node, index, channels, x, w)
    if lw.is_int8(node):
        raise unsupported(node, "an int8 bias that is not a constant")
    b = lw.read(value, False)
    return b if len(b.shape) == 1 else lw.reshape(b, lw.model.tensor(f"{b.name}_1d", (channels,), b.dtype), node.name)


def conv_transpose(lw: Lowering, node: ir.Node) -> None:
    """ConvTranspose (1-D or 2-D) -> TRANSPOSE_CONV (inputs: output shape, [Cout, kh, kw, Cin] weights, data, bias).

    ONNX's output is the full transposed convolution, ``(in - 1) * stride + (k - 1) * dilation + 1``
    long (plus ``output_padding`` at the end), cropped by the begin pads. TF SAME is one op when
    it is that crop; otherwise TRANSPOSE_CONV VALID writes the full output (VALID accepts up to
    ``stride - 1`` extra end cells, which hold only the bias, as ONNX's ``output_padding`` cells do)
    and a SLICE crops it. Dilation is a constant kernel with zeros between the taps. TRANSPOSE_CONV
    has no groups: a grouped one is a SPLIT of the channels, one TRANSPOSE_CONV per group and a
    CONCATENATION, in float (int8: on the dequantized input and weights, then QUANTIZE).
    """
    w_shape = shape_of(node.inputs[1])
    if len(w_shape) == 5:
        _volume(lw, node, transpose=True)
        return
    win = window(node, list(w_shape[2:]))
    group = attr_int(node, "group", 1)
    dilated = win.dilations != [1, 1]
    if (dilated or group != 1) and const_array(node.inputs[1]) is None:
        raise unsupported(node, "a dilated or grouped ConvTranspose whose weight is not a constant")
    x = as_image(lw, node, lw.input(node, 0) if group == 1 else _dequantized(lw, node, 0))
    y = lw.output(node)
    image = image_output(lw, y)
    in_hw, out_hw, strides = x.shape[1:3], image.shape[1:3], win.strides
    extent = [(k - 1) * d + 1 for k, d in zip(win.kernel, win.dilations, strict=True)]
    begins = _transpose_begins(node, win, in_hw, out_hw, extent)
    nominal = [(i - 1) * s + k for i, s, k in zip(in_hw, strides, extent, strict=True)]
    full = [max(n, b + o) for n, b, o in zip(nominal, begins, out_hw, strict=True)]
    if any(b < 0 for b in begins) or any(f - n >= s for f, n, s in zip(full, nominal, strides, strict=True)):
        raise unsupported(node, f"ConvTranspose cropping {begins} from {nominal} to {list(out_hw)}")
    tf_same = all(
        math.ceil(o / s) == i and b == max(n - o, 0) // 2
        for i, o, s, n, b in zip(in_hw, out_hw, strides, nominal, begins, strict=True)
    )
    crop = not tf_same and tuple(full) != tuple(out_hw)
    result = image if group == 1 else _float_result(lw, node, image)
    target = result
    if crop:
        shape = (image.shape[0], full[0], full[1], image.shape[3])
        target = lw.model.tensor(f"{node.name}_full", shape, result.dtype, quant=result.quant)
    options = {
        "padding": SAME if tf_same else VALID,
        "stride_w": strides[1],
        "stride_h": strides[0],
        "fused_activation_function": fused_code(node, "TRANSPOSE_CONV") if group == 1 else ACT_NONE,
    }

    def kernel(a: np.ndarray) -> np.ndarray:
        kernel_2d = _as_2d_weight(a).transpose(1, 2, 3, 0)
        return _dilate(kernel_2d, win.dilations) if dilated else kernel_2d

    if group == 1:
        w = lw.weight(node, 1, kernel, axis=0) if dilated else _filter(lw, node, (1, 2, 3, 0), axis=0)
        b = _bias(lw, node, 2, w_shape[1], x, w)
        shape_t = lw.constant(f"{node.name}_output_shape", np.array(target.shape, np.int32))
        lw.op("TRANSPOSE_CONV", [shape_t, w, x, b], [target], "TransposeConvOptions", source=node.name, **options)
    else:
        _grouped_transpose_conv(lw, node, x, target, group, kernel, options)
    if crop:
        begin = lw.constant(f"{node.name}_crop_begin", np.array([0, begins[0], begins[1], 0], np.int32))
        size = lw.constant(f"{node.name}_crop_size", np.array(image.shape, np.int32))
        lw.op("SLICE", [target, begin, size], [result], "SliceOptions", source=node.name)
    _quantize_result(lw, node, result, image)
    finish_image(lw, node, image, y)


def _grouped_transpose_conv(lw: Lowering, node: ir.Node, x: Tensor, out: Tensor, group: int, kernel, options) -> None:
    """``out`` = one float TRANSPOSE_CONV per channel group of ``x``, concatenated on channels."""
    weights = _float_constant(lw, node, 1)
    bias = _float_constant(lw, node, 2) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    in_c, out_c = x.shape[3] // group, out.shape[3] // group
    parts = [lw.model.tensor(f"{node.name}_group_in", (*x.shape[:3], in_c), np.float32) for _ in range(group)]
    axis = lw.constant(f"{node.name}_channel_axis", np.array(3, np.int32))
    lw.op("SPLIT", [axis, x], parts, "SplitOptions", source=node.name, num_splits=group)
    results = []
    for g, part in enumerate(parts):
        w = lw.constant(f"{node.name}_w{g}", kernel(weights[g * in_c : (g + 1) * in_c]).astype(np.float32))
        b_g = np.zeros(out_c, np.float32) if bias is None else bias[g * out_c : (g + 1) * out_c]
        b = lw.constant(f"{node.name}_b{g}", b_g.astype(np.float32))
        result = lw.model.tensor(f"{node.name}_group_out", (*out.shape[:3], out_c), np.float32)
        shape_t = lw.constant(f"{node.name}_group_shape", np.array(result.shape, np.int32))
        lw.op("TRANSPOSE_CONV", [shape_t, w, part, b], [result], "TransposeConvOptions", source=node.name, **options)
        results.append(result)
    lw.op("CONCATENATION", results, [out], "ConcatenationOptions", source=node.name, axis=3,
          fused_activation_function=fused_code(node, "CONCATENATION"))


def _float_constant(lw: Lowering, node: ir.Node, index: int) -> np.ndarray:
    """Constant input ``index`` as float32: its grid values ``DQ(Q(c))`` when the node is int8."""
    value = node.inputs[index]
    array = const_array(value)
    quant = get_quant(value)
    if lw.is_int8(node) and quant is not None:
        return np.asarray(quant.grid_values(array), np.float32)
    return np.asarray(array, np.float32)


def _volume(lw: Lowering, node: ir.Node, transpose: bool) -> None:
    """3-D Conv / ConvTranspose -> CONV_3D / CONV_3D_TRANSPOSE on NDHWC data (float kernels only).

    The layout pass leaves 5-D tensors NCDHW, so the data is TRANSPOSEd in and out. CONV_3D takes
    ``[kd, kh, kw, in, out]`` filters, CONV_3D_TRANSPOSE ``[kd, kh, kw, out, in]``. Pads are an
    explicit PAD before CONV_3D (VALID); the transposed convolution writes its full VALID output
    without bias, PADs the ``output_padding`` cells, SLICEs the crop, and ADDs the bias. An int8
    node runs on its dequantized input and weights and QUANTIZEs the result.
    """
    if attr_int(node, "group", 1) != 1:
        raise unsupported(node, "a grouped 3-D convolution (TFLite's CONV_3D has no groups)")
    w_value = node.inputs[1]
    kernel = list(shape_of(w_value)[2:])
    strides, dilations = int_list(node, "strides", [1, 1, 1]), int_list(node, "dilations", [1, 1, 1])
    auto = node.attributes.get("auto_pad")
    auto = auto.as_string() if auto is not None else "NOTSET"
    x = _dequantized(lw, node, 0)
    y = lw.output(node)
    result = _float_result(lw, node, y)
    to_last, to_first = (0, 2, 3, 4, 1), (0, 4, 1, 2, 3)
    inner = _transposed(lw, node, x, to_last)
    out_sizes = y.shape[2:]
    # ONNX [Cout, Cin, k...] -> [k..., Cin, Cout]; transposed, [Cin, Cout, k...] -> [k..., Cout, Cin].
    perm = (2, 3, 4, 1, 0)
    channels = shape_of(w_value)[1 if transpose else 0]
    if const_array(w_value) is not None:
        array = _float_constant(lw, node, 1)
        if transpose and dilations != [1, 1, 1]:
            dilated = np.zeros((*array.shape[:2], *((k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True))),
                               np.float32)
            dilated[:, :, :: dilations[0], :: dilations[1], :: dilations[2]] = array
            array = dilated
        w = lw.constant(f"{w_value.name}_3d", np.ascontiguousarray(array.transpose(perm)))
    elif transpose and dilations != [1, 1, 1]:
        raise unsupported(node, "a dilated 3-D ConvTranspose whose weight is not a constant")
    else:
        w = _transposed(lw, node, lw.read(w_value, False), perm)
    has_bias = len(node.inputs) > 2 and node.inputs[2] is not None
    options = {"stride_d": strides[0], "stride_h": strides[1], "stride_w": strides[2]}
    if not transpose:
        pads = int_list(node, "pads", [0] * 6)
        begin, end, _ = _nd_pads(kernel, strides, dilations, pads, auto, x.shape[2:], out_sizes)
        if any(begin) or any(end):
            paddings = lw.constant(f"{node.name}_paddings", np.array([[0, 0], *zip(begin, end, strict=True), [0, 0]],
                                                                      np.int32))
            shape = (inner.shape[0], *(d + b + e for d, b, e in zip(inner.shape[1:4], begin, end, strict=True)),
                     inner.shape[4])
            padded = lw.model.tensor(f"{node.name}_padded", shape, np.float32)
            lw.op("PAD", [inner, paddings], [padded], "PadOptions", source=node.name)
            inner = padded
        bias = _dequantized(lw, node, 2) if has_bias else -1
        conv_out = lw.model.tensor(f"{node.name}_ndhwc", (y.shape[0], *out_sizes, channels), np.float32)
        lw.op("CONV_3D", [inner, w, bias], [conv_out], "Conv3DOptions", source=node.name, padding=VALID,
              dilation_d_factor=dilations[0], dilation_h_factor=dilations[1], dilation_w_factor=dilations[2],
              fused_activation_function=node.meta.get(FUSED_KEY, ACT_NONE), **options)
    else:
        extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
        nominal = [(i - 1) * s + k for i, s, k in zip(x.shape[2:], strides, extent, strict=True)]
        begins = _transpose_crop(node, auto, x.shape[2:], out_sizes, strides, extent)
        if any(b < 0 for b in begins):
            raise unsupported(node, f"ConvTranspose cropping {begins} from {nominal} to {list(out_sizes)}")
        full = (y.shape[0], *nominal, channels)
        conv_out = lw.model.tensor(f"{node.name}_full", full, np.float32)
        shape_t = lw.constant(f"{node.name}_output_shape", np.array(full, np.int32))
        lw.op("CONV_3D_TRANSPOSE", [shape_t, w, inner], [conv_out], "Conv3DOptions", source=node.name,
              padding=VALID, dilation_d_factor=1, dilation_h_factor=1, dilation_w_factor=1, **options)
        extra = [max(b + o - n, 0) for b, o, n in zip(begins, out_sizes, nominal, strict=True)]
        if any(extra):
            paddings = lw.constant(f"{node.name}_extra", np.array([[0, 0], *((0, e) for e in extra), [0, 0]],
                                                                  np.int32))
            grown = lw.model.tensor(f"{node.name}_grown", (full[0], *(n + e for n, e in zip(nominal, extra,
                                                                                             strict=True)), channels),
                                    np.float32)
            lw.op("PAD", [conv_out, paddings], [grown], "PadOptions", source=node.name)
            conv_out = grown
        if tuple(conv_out.shape[1:4]) != tuple(out_sizes):
            cropped = lw.model.tensor(f"{node.name}_cropped", (full[0], *out_sizes, channels), np.float32)
            begin_t = lw.constant(f"{node.name}_crop_begin", np.array([0, *begins, 0], np.int32))
            size_t = lw.constant(f"{node.name}_crop_size", np.array(cropped.shape, np.int32))
            lw.op("SLICE", [conv_out, begin_t, size_t], [cropped], "SliceOptions", source=node.name)
            conv_out = cropped
        if has_bias:
            biased = lw.model.tensor(f"{node.name}_biased", conv_out.shape, np.float32)
            lw.op("ADD", [conv_out, _dequantized(lw, node, 2)], [biased], "AddOptions", source=node.name)
            conv_out = biased
    perm_t = lw.constant(f"{node.name}_to_ncdhw", np.array(to_first, np.int32))
    lw.op("TRANSPOSE", [conv_out, perm_t], [result], "TransposeOptions", source=node.name)
    _quantize_result(lw, node, result, y)


def _transposed(lw: Lowering, node: ir.Node, x: Tensor, perm) -> Tensor:
    """``x`` TRANSPOSEd by ``perm`` (a new float tensor)."""
    out = lw.model.tensor(f"{x.name}_t", tuple(x.shape[p] for p in perm), x.dtype, quant=x.quant)
    lw.op("TRANSPOSE", [x, lw.constant(f"{node.name}_perm", np.array(perm, np.int32))], [out], "TransposeOptions",
          source=node.name)
    return out


def _transpose_crop(node: ir.Node, auto_pad: str, in_sizes, out_sizes, strides, extent) -> list[int]:
    """The cells ONNX crops from the start of a ConvTranspose's full output, per spatial axis.

    With ``output_shape`` or SAME auto-padding the total crop is ``full + output_padding - out``,
    split as the ONNX spec says (SAME_UPPER puts the smaller half first); else the begin pads.
    """
    spatial = len(in_sizes)
    output_padding = int_list(node, "output_padding", [0] * spatial)
    pads = int_list(node, "pads", [0] * 2 * spatial)
    derived = node.attributes.get("output_shape") is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER")
    begins = []
    for a in range(spatial):
        if derived:
            total = (in_sizes[a] - 1) * strides[a] + extent[a] + output_padding[a] - out_sizes[a]
            begins.append(total // 2 if auto_pad == "SAME_UPPER" else total - total // 2)
        else:
            begins.append(0 if auto_pad == "VALID" else pads[a])
    return begins


def _transpose_begins(node: ir.Node, win: Window, in_hw, out_hw, extent) -> list[int]:
    """:func:`_transpose_crop` of a 1-D or 2-D ConvTranspose, as (h, w)."""
    spatial = len(shape_of(node.inputs[1])) - 2
    if spatial == 2:
        return _transpose_crop(node, win.auto_pad, in_hw, out_hw, win.strides, extent)
    return [0, *_transpose_crop(node, win.auto_pad, in_hw[1:], out_hw[1:], win.strides[1:], extent[1:])]


def _dilate(kernel: np.ndarray, dilations: list[int]) -> np.ndarray:
    """A ``[O, kh, kw, I]`` kernel with ``dilation - 1`` zeros between its taps."""
    o, kh, kw, i = kernel.shape
    out = np.zeros((o, (kh - 1) * dilations[0] + 1, (kw - 1) * dilations[1] + 1, i), kernel.dtype)
    out[:, :: dilations[0], :: dilations[1], :] = kernel
    return out


def gemm(lw: Lowering, node: ir.Node) -> None:
    """Gemm -> FULLY_CONNECTED with [N, K] weights for a constant B (alpha 1, no transA, C a vector).

    Otherwise BATCH_MATMUL(A, B, adj_x=transA, adj_y=transB), MUL alpha, ADD beta * C in float;
    an int8 node computes that on its dequantized inputs and QUANTIZEs the result, which is the
    simulation's DQ -> Gemm -> Q.
    """
    trans_a, trans_b = attr_int(node, "transA", 0), attr_int(node, "transB", 0)
    alpha, beta = attr_float(node, "alpha", 1.0), attr_float(node, "beta", 1.0)
    c = node.inputs[2] if len(node.inputs) > 2 else None
    c_array = const_array(c) if c is not None else None
    channels = shape_of(node.inputs[1])[0 if trans_b else 1]
    vector_c = c is None or (c_array is not None and beta == 1.0 and _is_vector(c_array.shape, channels))
    if not trans_a and alpha == 1.0 and const_array(node.inputs[1]) is not None and vector_c:
        _fully_connected(lw, node, (lambda a: a) if trans_b else (lambda a: a.T.copy()), 2)
        return
    y = lw.output(node)
    result = _float_result(lw, node, y)
    steps = [("BATCH_MATMUL", [_dequantized(lw, node, 0), _dequantized(lw, node, 1)], "BatchMatMulOptions",
              {"adj_x": bool(trans_a), "adj_y": bool(trans_b)})]
    if alpha != 1.0:
        steps.append(("MUL", [None, lw.constant(f"{node.name}_alpha", np.array(alpha, np.float32))], "MulOptions", {}))
    if c is not None:
        addend = _dequantized(lw, node, 2)
        if beta != 1.0:
            weighted = lw.model.tensor(f"{node.name}_c_beta", addend.shape, np.float32)
            beta_t = lw.constant(f"{node.name}_beta", np.array(beta, np.float32))
            lw.op("MUL", [addend, beta_t], [weighted], "MulOptions", source=node.name)
            addend = weighted
        steps.append(("ADD", [None, addend], "AddOptions", {}))
    # A fused activation (float Gemm + Relu) goes on the last MUL/ADD, or after a lone BATCH_MATMUL.
    code = node.meta.get(FUSED_KEY, ACT_NONE)
    current = None
    for k, (name, inputs, options, fields) in enumerate(steps):
        last = k == len(steps) - 1
        if last and name != "BATCH_MATMUL":
            fields["fused_activation_function"] = code
        out = result if last and (name != "BATCH_MATMUL" or code == ACT_NONE) else lw.model.tensor(
            f"{node.name}_{name.lower()}", y.shape, np.float32)
        lw.op(name, [current if t is None else t for t in inputs], [out], options, source=node.name, **fields)
        current = out
    if current is not result:
        lw.op(_ACTIVATIONS[code], [current], [result], source=node.name)
    _quantize_result(lw, node, result, y)


# Standalone ops for the fused activation codes (when the op that would carry one cannot).
_ACTIVATIONS = {ACT_RELU: "RELU", ACT_RELU_N1_TO_1: "RELU_N1_TO_1", ACT_RELU6: "RELU6"}


def _dequantized(lw: Lowering, node: ir.Node, index: int) -> Tensor:
    """Input ``index`` in float32: for an int8 node what the simulation reads, ``DQ(Q(input))``.

    A constant becomes its grid values; an activation is read int8 and DEQUANTIZEd.
    """
    value = node.inputs[index]
    quant = get_quant(value)
    if not lw.is_int8(node) or quant is None:
        return lw.read(value, False)
    array = const_array(value)
    if array is not None:
        return lw.constant(f"{value.name}_grid", quant.grid_values(array).astype(np.float32))
    q = lw.read(value, True)
    out = lw.model.tensor(f"{q.name}_dequantized", q.shape, np.float32)
    lw.op("DEQUANTIZE", [q], [out], source=node.name)
    return out


def _float_result(lw: Lowering, node: ir.Node, y: Tensor) -> Tensor:
    """Where a float computation of output ``y`` goes: ``y`` itself, or a float tensor to QUANTIZE into it."""
    if y.quant is None:
        return y
    return lw.model.tensor(f"{node.name}_float", y.shape, np.float32)


def _quantize_result(lw: Lowering, node: ir.Node, result: Tensor, y: Tensor) -> None:
    if result is not y:
        lw.op("QUANTIZE", [result], [y], source=node.name)


def _is_vector(shape: tuple[int, ...], channels: int) -> bool:
    """True if a Gemm C of ``shape`` is one value per output channel, or one value for all."""
    size = int(np.prod(shape)) if shape else 1
    return size == 1 or (size == channels and (len(shape) == 1 or shape[-1] == channels))


def matmul(lw: Lowering, node: ir.Node) -> None:
    """MatMul -> FULLY_CONNECTED for a constant 1-D/2-D B, BATCH_MATMUL otherwise.

    A 1-D A is ``[1, K]`` and a 1-D B ``[K, 1]`` (numpy's rule); the unit dimension is dropped
    from the result by a RESHAPE. An int8 MatMul with a constant B of rank > 2 runs float on
    the dequantized operands and QUANTIZEs its result.
    """
    a_shape, b_shape = shape_of(node.inputs[0]), shape_of(node.inputs[1])
    constant_b = const_array(node.inputs[1]) is not None
    if constant_b and len(b_shape) in (1, 2):
        _fully_connected(lw, node, lambda a: a.reshape(1, -1) if a.ndim == 1 else a.T.copy(), None)
        return
    int8_weights = constant_b and lw.is_int8(node)
    if int8_weights:
        # BATCH_MATMUL takes per-tensor int8 operands and the plan quantizes B per channel:
        # float on the dequantized operands, as the simulation computes it (DQ -> MatMul -> Q).
        a_t, b_t = _dequantized(lw, node, 0), _dequantized(lw, node, 1)
    else:
        a_t, b_t = lw.input(node, 0), lw.input(node, 1)
    y = lw.output(node)
    result = _float_result(lw, node, y) if int8_weights else y
    if len(a_shape) == 1:
        a_t = lw.reshape(a_t, lw.model.tensor(f"{a_t.name}_row", (1, a_shape[0]), a_t.dtype, quant=a_t.quant),
                         node.name)
    if len(b_shape) == 1:
        b_t = lw.reshape(b_t, lw.model.tensor(f"{b_t.name}_column", (b_shape[0], 1), b_t.dtype, quant=b_t.quant),
                         node.name)
    batch = np.broadcast_shapes(a_t.shape[:-2], b_t.shape[:-2])
    full = (*batch, a_t.shape[-2], b_t.shape[-1])
    out = result
    if tuple(full) != tuple(y.shape):
        out = lw.model.tensor(f"{node.name}_full", full, result.dtype, quant=result.quant)
    lw.op("BATCH_MATMUL", [a_t, b_t], [out], "BatchMatMulOptions", source=node.name, adj_x=False, adj_y=False)
    if out is not result:
        lw.reshape(out, result, node.name)
    _quantize_result(lw, node, result, y)


def _fully_connected(lw: Lowering, node: ir.Node, transform, bias_index) -> None:
    x = lw.input(node, 0)
    if len(x.shape) == 1:
        x = lw.reshape(x, lw.model.tensor(f"{x.name}_row", (1, x.shape[0]), x.dtype, quant=x.quant), node.name)
    w = lw.weight(node, 1, transform, axis=0)
    channels = w.shape[0]
    b = _vector_bias(lw, node, bias_index, channels, x, w) if bias_index is not None else -1
    y = lw.output(node)
    keep = len(x.shape) > 2
    full = (*x.shape[:-1], channels) if keep else (int(np.prod(x.shape[:-1])), channels)
    out = y if tuple(full) == tuple(y.shape) else lw.model.tensor(f"{node.name}_full", full, y.dtype, quant=y.quant)
    lw.op(
        "FULLY_CONNECTED",
        [x, w, b],
        [out],
        "FullyConnectedOptions",
        source=node.name,
        fused_activation_function=fused_code(node, "FULLY_CONNECTED"),
        keep_num_dims=keep,
    )
    if out is not y:
        lw.reshape(out, y, node.name)


def _vector_bias(lw: Lowering, node: ir.Node, index: int, channels: int, x: Tensor, w: Tensor) -> Tensor | int:
    """The FULLY_CONNECTED bias: ``channels`` values (LiteRT checks it), a one-value C broadcast."""
    value = node.inputs[index] if len(node.inputs) > index else None
    array = const_array(value) if value is not None else None
    if array is None or array.size == channels:
        return lw.bias(node, index, channels, x, w)
    full = np.broadcast_to(np.asarray(array).reshape(-1), (channels,))
    if not lw.is_int8(node):
        return lw.constant(f"{value.name}_{channels}", full.astype(np.float32))
    quant = get_quant(value)
    width = channels if w.quant.scale.size > 1 else 1
    scale = np.broadcast_to(np.asarray(quant.scale, np.float32).reshape(-1), (width,)).copy()
    data = quantize(full, scale, np.zeros(width, np.int32), 0, ir.DataType.INT32)
    return lw.constant(f"{value.name}_{channels}", data, Quant(scale, np.zeros(width, np.int64), 0))


def pool(lw: Lowering, node: ir.Node) -> None:
    """MaxPool/AveragePool (1-D or 2-D) -> MAX_POOL_2D/AVERAGE_POOL_2D (see :func:`pool_2d`).

    MaxPool's Indices output is computed tap by tap (:func:`_max_pool_with_indices`).
    """
    kernel = int_list(node, "kernel_shape", [])
    is_max = node.op_type == "MaxPool"
    kind = "max" if is_max else "avg"
    include_pad = bool(attr_int(node, "count_include_pad", 0))
    indices = node.outputs[1] if is_max and len(node.outputs) > 1 else None
    with_indices = indices is not None and (bool(indices.uses()) or indices.is_graph_output())
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
    begin, end, explicit = _nd_pads(kernel, strides, dilations, pads, auto, in_sizes, out_sizes)
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


def _nd_pads(kernel, strides, dilations, pads, auto_pad: str, in_sizes, out_sizes):
    """(begin, end, declared end) pads per spatial axis; ``end`` includes what ceil_mode reads past the pads."""
    spatial = len(kernel)
    begin, end = list(pads[:spatial]), list(pads[spatial:])
    if auto_pad == "VALID":
        begin, end = [0] * spatial, [0] * spatial
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        for a in range(spatial):
            total = max((out_sizes[a] - 1) * strides[a] + (kernel[a] - 1) * dilations[a] + 1 - in_sizes[a], 0)
            small, large = total // 2, total - total // 2
            begin[a], end[a] = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
    explicit = list(end)
    for a in range(spatial):
        needed = (out_sizes[a] - 1) * strides[a] + (kernel[a] - 1) * dilations[a] + 1
        end[a] += max(needed - (in_sizes[a] + begin[a] + end[a]), 0)
    return begin, end, explicit


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


@dataclasses.dataclass(frozen=True)
class PoolPads:
    """Where a pooling window reads, per spatial axis (h, w).

    Attributes:
        begin, end: the zeros (or lowest values) put before and after the input: the ONNX pads
            plus, for ``ceil_mode``, the cells the last window reads past them.
        explicit_end: the end pads ONNX declares (what ``count_include_pad=1`` counts).
    """

    begin: list[int]
    end: list[int]
    explicit_end: list[int]


def pool_pads(node: ir.Node, win: Window, in_hw, out_hw) -> PoolPads:
    """The pads of a pooling node whose input has spatial size ``in_hw`` and output ``out_hw``."""
    begin, end, explicit = _nd_pads(win.kernel, win.strides, win.dilations, win.pads, win.auto_pad, in_hw, out_hw)
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
    padded = x if tf_same else _pad_image(lw, node, x, pads, lowest=kind == "max")
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


def _pad_image(lw: Lowering, node: ir.Node, x: Tensor, pads: PoolPads, lowest: bool) -> Tensor:
    """``x`` padded by ``pads`` with zeros (PAD), or with the lowest value (PADV2) for max pooling."""
    if not any(pads.begin) and not any(pads.end):
        return x
    paddings = np.array([[0, 0], [pads.begin[0], pads.end[0]], [pads.begin[1], pads.end[1]], [0, 0]], np.int32)
    shape = (x.shape[0], x.shape[1] + pads.begin[0] + pads.end[0], x.shape[2] + pads.begin[1] + pads.end[1], x.shape[3])
    padded = lw.model.tensor(f"{node.name}_padded", shape, x.dtype, quant=x.quant)
    paddings_t = lw.constant(f"{node.name}_paddings", paddings)
    if not lowest:
        lw.op("PAD", [x, paddings_t], [padded], "PadOptions", source=node.name)
        return padded
    fill = np.array(-128 if x.quant is not None else np.finfo(np.float32).min, x.dtype)
    fill_t = lw.constant(f"{node.name}_pad_value", fill, x.quant)
    lw.op("PADV2", [x, paddings_t, fill_t], [padded], "PadV2Options", source=node.name)
    return padded


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
    padded = _pad_image(lw, node, x, pads, lowest=True)
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
    lw.op("CAST", [flat_index], [image], "CastOptions", source=node.name,
          in_data_type=TENSOR_TYPES[np.dtype(np.int32)], out_data_type=TENSOR_TYPES[indices.dtype])
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
