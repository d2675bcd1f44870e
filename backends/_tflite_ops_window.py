"""Shared helpers of the TFLite window rules (convolutions, pooling, Gemm/MatMul), and Resize.

The rules live by family: Conv/ConvTranspose in ``_tflite_ops_conv``, pooling in
``_tflite_ops_pool``, FULLY_CONNECTED/BATCH_MATMUL in ``_tflite_ops_matmul``. This module keeps
what they share, on NHWC data:

* :func:`window`: a window op's attributes over (H, W). 1-D ops (NLC data after layout-nhwc) are
  the 2-D ops with height 1: ``RESHAPE [N, L, C] -> [N, 1, L, C]`` (:func:`as_image`), the op with
  kernel ``[1, k]`` (strides, dilations and pads on W only), ``RESHAPE [N, 1, L', C'] -> [N, L', C']``
  (:func:`finish_image`). The reshapes only insert a unit dimension, so they copy nothing and share
  parameters.
* Padding follows TFLITE.md §5: VALID when the ONNX pads are zero, SAME when they equal TF SAME,
  otherwise an explicit PAD (:func:`pad_image`; int8 PAD fills with the zero point, i.e. exact
  zero; max pooling pads with the lowest value) followed by VALID. :func:`nd_pads` gives the pads
  per spatial axis of any rank, the cells ``ceil_mode`` reads past them included.
* The float-on-dequantized fallback: where TFLite has no int8 kernel for what an int8 node needs
  (a grouped or 3-D transposed convolution, BATCH_MATMUL with per-channel weights, Gemm with
  transA/alpha/beta), the rule computes in float on the dequantized operands
  (:func:`dequantized`, ``DQ(Q(.))``, what the simulation reads) and QUANTIZEs the result
  (:func:`float_result`, :func:`quantize_result`), which is the simulation's ``DQ -> op -> Q``.

Resize (2-D, NHWC) is lowered here too: RESIZE_BILINEAR or RESIZE_NEAREST_NEIGHBOR, and nearest
upsampling by integer factors as CONCATENATION + RESHAPE.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from qcc.annotations import Decision, get_decision, get_quant
from qcc.backends._tflite_lower import ACT_NONE, FUSED_KEY, Lowering, cut_graph_fix
from qcc.backends._tflite_writer import Tensor
from qcc.errors import BackendError
from qcc.irutils import const_array

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
    """The error for a node qcc cannot lower, naming it, why, and a fix that works.

    ``--exclude`` is the fix only where the refusal is of the int8 form of an int8 node: the
    excluded node stays float, and float still needs a TFLite lowering. The rules that refuse the
    int8 form only start their reason with "int8 ..." or "an int8 ..."; any other reason holds for
    the float node too, so the fix is to rewrite the model, cut the graph around the node, or
    choose an ONNX target.
    """
    decision = get_decision(node)
    if why.startswith(("int8 ", "an int8 ")) and decision is not None and decision.decision == Decision.INT8:
        fix = "--exclude the node: it then runs float, which qcc lowers to TFLite."
    else:
        fix = f"rewrite the model so that it does not need this, {cut_graph_fix(node)}"
    return BackendError(f"node {node.name!r} ({node.op_type}): {why}.", fix)


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


def nd_pads(kernel, strides, dilations, pads, auto_pad: str, in_sizes, out_sizes):
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


def pad_image(lw: Lowering, node: ir.Node, x: Tensor, pads: PoolPads, lowest: bool) -> Tensor:
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


def same_quant(a: Tensor, b: Tensor) -> bool:
    """Whether ``a`` and ``b`` carry their numbers alike: both float, or int8 with equal scale and zero point."""
    if a.quant is None or b.quant is None:
        return a.quant is None and b.quant is None
    return np.array_equal(a.quant.scale, b.quant.scale) and np.array_equal(a.quant.zero_point, b.quant.zero_point)


def dequantized(lw: Lowering, node: ir.Node, index: int) -> Tensor:
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


def float_result(lw: Lowering, node: ir.Node, y: Tensor) -> Tensor:
    """Where a float computation of output ``y`` goes: ``y`` itself, or a float tensor to QUANTIZE into it."""
    if y.quant is None:
        return y
    return lw.model.tensor(f"{node.name}_float", y.shape, np.float32)


def quantize_result(lw: Lowering, node: ir.Node, result: Tensor, y: Tensor) -> None:
    """QUANTIZEs the float ``result`` into ``y`` when :func:`float_result` gave a separate tensor."""
    if result is not y:
        lw.op("QUANTIZE", [result], [y], source=node.name)


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
