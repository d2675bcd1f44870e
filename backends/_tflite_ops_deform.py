"""TFLite lowering rule for DeformConv: bilinear sampling at shifted taps, then a matrix product.

For 2-D DeformConv, tap ``(i, j)`` of output pixel
``(oh, ow)`` reads the input at ``(oh s_h - pad_top + i d_h + offset_y, ow s_w - pad_left + j d_w
+ offset_x)``, bilinear with zeros outside (ONNX's reference is GridSample linear, zeros,
align_corners), through ``_tflite_ops_sampling.gather_points`` (one GATHER of all neighbours).
Each offset group samples its channels at its own positions (a batch row of its own). The samples
times the mask are the ``[N * P, C * kh * kw]`` columns of a convolution: one BATCH_MATMUL with W
(constant or not; batched over the groups) and an ADD of the bias finish it.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_sampling import Chain, gather_points, refuse
from qcc.irutils import attr_int


def deform_conv(lw: Lowering, node: ir.Node) -> None:
    """DeformConv (2-D) -> bilinear GATHER of the shifted taps, BATCH_MATMUL with W per group."""
    chain = Chain(lw, node)
    rule = chain.rule
    x, weight, offset = rule.data(0), rule.data(1), rule.data(2)
    if len(x.shape) != 4:
        raise refuse(node, f"an input of rank {len(x.shape)} (qcc lowers 2-D DeformConv)", "cut the graph before it.")
    batch, channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    groups, offset_groups = attr_int(node, "group", 1), attr_int(node, "offset_group", 1)
    y = rule.output()
    oh, ow = y.shape[2:]
    taps, pixels = kh * kw, oh * ow
    strides = _ints(node, "strides", [1, 1])
    dilations = _ints(node, "dilations", [1, 1])
    pads = _ints(node, "pads", [0, 0, 0, 0])
    # Each offset group samples its own channels at its own positions: (n, g) is one batch row.
    rows = batch * offset_groups
    parts = rule.reshape(offset, [rows, taps, 2, pixels])
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
        size = rule.const(np.array([rows, taps, 1, pixels], np.int32))
        shift = rule.op("SLICE", [parts, begin, size], [rows, taps, 1, pixels], options="SliceOptions")
        coordinates.append(chain.add(rule.reshape(shift, [rows, taps * pixels]), base))
    image = rule.reshape(x, [rows, channels // offset_groups, height, width])
    sampled = gather_points(chain, image, coordinates, "linear", "zeros", True)  # [rows, taps * P, C / G_o]
    if len(node.inputs) > 4 and node.inputs[4] is not None:
        sampled = chain.mul(sampled, rule.reshape(rule.data(4), [rows, taps * pixels, 1]))
    sampled = rule.reshape(sampled, [batch, offset_groups, taps, pixels, channels // offset_groups])
    columns = rule.transpose(sampled, [0, 3, 1, 4, 2])  # [N, P, G_o, C / G_o, taps]: channel-major columns
    per_group = channels // groups * taps
    columns = rule.transpose(rule.reshape(columns, [batch * pixels, groups, per_group]), [1, 0, 2])
    kernel = rule.reshape(weight, [groups, out_channels // groups, per_group])
    result = chain.matmul(columns, kernel, adj_y=True)  # [G, N * P, out / G]
    result = rule.reshape(rule.transpose(result, [1, 0, 2]), [batch * pixels, out_channels])
    if len(node.inputs) > 3 and node.inputs[3] is not None:
        result = chain.add(result, rule.data(3))
    result = rule.transpose(rule.reshape(result, [batch, pixels, out_channels]), [0, 2, 1])
    rule.finish(rule.reshape(result, [batch, out_channels, oh, ow]))


def _ints(node: ir.Node, name: str, default: list[int]) -> list[int]:
    attr = node.attributes.get(name)
    return default if attr is None else [int(v) for v in attr.as_ints()]


LOWERINGS: dict = {"DeformConv": deform_conv}
