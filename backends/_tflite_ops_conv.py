"""TFLite lowering rules for convolutions: Conv (incl. depthwise, grouped, 1-D, 3-D) and ConvTranspose, on NHWC data.

Weight layouts follow TFLITE.md §4: Conv OHWI (CONV_2D, quantization axis 0), depthwise
``[1, kh, kw, C*m]`` (DEPTHWISE_CONV_2D, axis 3), transpose conv ``[Cout, kh, kw, Cin]``.
Padding is ``_tflite_ops_window``'s (TFLITE.md §5): VALID, TF SAME, or an explicit PAD then VALID.
A weight that is a graph input (the plan keeps such a node float) is TRANSPOSEd at run time. A
1-D weight ``[O, I/g, k]`` is the 2-D ``[O, I/g, 1, k]``, applied to the ``[N, 1, L, C]`` view.

ConvTranspose: ONNX's output is the full transposed convolution, ``(in - 1) * stride + (k - 1) *
dilation + 1`` long (plus ``output_padding`` at the end), cropped by the begin pads: one
TRANSPOSE_CONV SAME when that is TF's crop, else TRANSPOSE_CONV VALID (and a SLICE where it must
crop). Dilation is a constant kernel with zeros between the taps; groups are a SPLIT of the
channels, one TRANSPOSE_CONV per group and a CONCATENATION.

3-D ones stay NCDHW (layout-nhwc moves ranks 3 and 4 only): CONV_3D / CONV_3D_TRANSPOSE between
TRANSPOSEs to and from NDHWC (float kernels only).

Where TFLite has no int8 kernel for what an int8 node needs (a grouped ConvTranspose, a 3-D
convolution), the rule computes in float on the dequantized operands (``DQ(Q(.))``, what the
simulation reads) and QUANTIZEs the result, which is the simulation's ``DQ -> op -> Q``.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from qcc.annotations import get_quant
from qcc.backends._tflite_lower import ACT_NONE, FUSED_KEY, Lowering, shape_of
from qcc.backends._tflite_ops_window import (
    SAME,
    VALID,
    PoolPads,
    Window,
    as_image,
    dequantized,
    finish_image,
    float_result,
    fused_code,
    image_output,
    int_list,
    nd_pads,
    pad_image,
    quantize_result,
    unsupported,
    window,
)
from qcc.backends._tflite_writer import Tensor
from qcc.irutils import attr_int, const_array


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
    return pad_image(lw, node, x, PoolPads(list(begin), list(end), list(end)), lowest=False), VALID


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
    x = as_image(lw, node, lw.input(node, 0) if group == 1 else dequantized(lw, node, 0))
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
    result = image if group == 1 else float_result(lw, node, image)
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
    quantize_result(lw, node, result, image)
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
    x = dequantized(lw, node, 0)
    y = lw.output(node)
    result = float_result(lw, node, y)
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
        begin, end, _ = nd_pads(kernel, strides, dilations, pads, auto, x.shape[2:], out_sizes)
        if any(begin) or any(end):
            paddings = lw.constant(f"{node.name}_paddings", np.array([[0, 0], *zip(begin, end, strict=True), [0, 0]],
                                                                      np.int32))
            shape = (inner.shape[0], *(d + b + e for d, b, e in zip(inner.shape[1:4], begin, end, strict=True)),
                     inner.shape[4])
            padded = lw.model.tensor(f"{node.name}_padded", shape, np.float32)
            lw.op("PAD", [inner, paddings], [padded], "PadOptions", source=node.name)
            inner = padded
        bias = dequantized(lw, node, 2) if has_bias else -1
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
            lw.op("ADD", [conv_out, dequantized(lw, node, 2)], [biased], "AddOptions", source=node.name)
            conv_out = biased
    perm_t = lw.constant(f"{node.name}_to_ncdhw", np.array(to_first, np.int32))
    lw.op("TRANSPOSE", [conv_out, perm_t], [result], "TransposeOptions", source=node.name)
    quantize_result(lw, node, result, y)


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
