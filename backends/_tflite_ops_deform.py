"""TFLite lowering rule for DeformConv: bilinear sampling at shifted taps, then a matrix product.

For 2-D DeformConv with one group and one offset group, tap ``(i, j)`` of output pixel
``(oh, ow)`` reads the input at ``(oh s_h - pad_top + i d_h + offset_y, ow s_w - pad_left + j d_w
+ offset_x)``, bilinear with zeros outside (ONNX's reference is GridSample linear, zeros,
align_corners), through ``_tflite_ops_sampling.gather_points`` (one GATHER of all neighbours).
The samples times the mask are the ``[N * P, C * kh * kw]`` columns of a convolution: one
BATCH_MATMUL with W (constant or not) and an ADD of the bias finish it. Grouped ones are refused.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_sampling import Chain, gather_points, refuse
from qcc.irutils import attr_int


def deform_conv(lw: Lowering, node: ir.Node) -> None:
    """DeformConv (2-D, one group, one offset group) -> bilinear GATHER of the taps, BATCH_MATMUL with W."""
    chain = Chain(lw, node)
    rule = chain.rule
    x, weight, offset = rule.data(0), rule.data(1), rule.data(2)
    if len(x.shape) != 4 or attr_int(node, "group", 1) != 1 or attr_int(node, "offset_group", 1) != 1:
        raise refuse(
            node,
            f"an input of rank {len(x.shape)} with group {attr_int(node, 'group', 1)} and offset_group "
            f"{attr_int(node, 'offset_group', 1)}: qcc lowers 2-D DeformConv with one group and one offset group",
            "split the grouped DeformConv into one per group, or cut the graph before it.",
        )
    batch, channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    y = rule.output()
    oh, ow = y.shape[2:]
    taps, pixels = kh * kw, oh * ow
    strides = _ints(node, "strides", [1, 1])
    dilations = _ints(node, "dilations", [1, 1])
    pads = _ints(node, "pads", [0, 0, 0, 0])
    parts = rule.reshape(offset, [batch, taps, 2, pixels])
    coordinates = []
    for axis, (count, stride, dilation, pad, kernel) in enumerate(
        ((oh, strides[0], dilations[0], pads[0], kh), (ow, strides[1], dilations[1], pads[1], kw))
    ):
        out_index = np.arange(count) * stride - pad
        tap_index = np.arange(kernel) * dilation
        if axis == 0:
            base = tap_index[:, None, None, None] + out_index[None, None, :, None]
        else:
            base = tap_index[None, :, None, None] + out_index[None, None, None, :]
        base = np.broadcast_to(base, (kh, kw, oh, ow)).reshape(1, taps * pixels).astype(np.float32)
        begin = rule.const(np.array([0, 0, axis, 0], np.int32))
        size = rule.const(np.array([batch, taps, 1, pixels], np.int32))
        shift = rule.op("SLICE", [parts, begin, size], [batch, taps, 1, pixels], options="SliceOptions")
        coordinates.append(chain.add(rule.reshape(shift, [batch, taps * pixels]), base))
    sampled = gather_points(chain, x, coordinates, "linear", "zeros", True)  # [N, taps * P, C]
    if len(node.inputs) > 4 and node.inputs[4] is not None:
        sampled = chain.mul(sampled, rule.reshape(rule.data(4), [batch, taps * pixels, 1]))
    columns = rule.transpose(rule.reshape(sampled, [batch, taps, pixels, channels]), [0, 2, 3, 1])
    columns = rule.reshape(columns, [batch * pixels, channels * taps])
    result = chain.matmul(columns, rule.reshape(weight, [out_channels, channels * taps]), adj_y=True)
    if len(node.inputs) > 3 and node.inputs[3] is not None:
        result = chain.add(result, rule.data(3))
    result = rule.transpose(rule.reshape(result, [batch, pixels, out_channels]), [0, 2, 1])
    rule.finish(rule.reshape(result, [batch, out_channels, oh, ow]))


def _ints(node: ir.Node, name: str, default: list[int]) -> list[int]:
    attr = node.attributes.get(name)
    return default if attr is None else [int(v) for v in attr.as_ints()]


LOWERINGS: dict = {"DeformConv": deform_conv}
