"""TFLite lowering rule for RoiAlign: separable bilinear sample matrices and BATCH_MATMULs (float).

The data is NCHW (``layout-nhwc`` stops at RoiAlign). The bilinear sample points of a roi lie on
a product grid, so the samples along y form a ``[R, oh * gh, H]`` matrix ``Gy`` (one-hot rows
weighted by the bilinear weight, zero for a point outside ``[-1, H]``) and likewise ``Gx``; the
samples are ``Gy X Gx^T`` (two BATCH_MATMULs). ``avg`` averages the rows first
(``mean_gh(Gy) X mean_gw(Gx)^T``); ``max`` takes, as ONNX's reference and ONNX Runtime do, the
largest weighted corner of each sample over all samples of a bin: the four ``Gy_a X Gx_b^T``
(``a, b`` low/high corner) under MAXIMUM, then REDUCE_MAX. A ``sampling_ratio`` of 0 (adaptive)
needs constant rois; rois of smaller grids repeat their last sample up to the largest grid,
weighted 0 in the average.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_rule import I32, attr_str
from qcc.backends._tflite_ops_sampling import Chain, refuse
from qcc.backends._tflite_ops_window import unsupported
from qcc.backends._tflite_writer import Tensor
from qcc.irutils import attr_float, attr_int, const_array


def _roi_grids(node: ir.Node, rois: np.ndarray | None, pooled: tuple[int, int], half_pixel: bool):
    """The sampling grids along y and x: one per roi, or a single one when every roi takes it."""
    ratio = attr_int(node, "sampling_ratio", 0)
    if ratio > 0:
        return np.array([ratio]), np.array([ratio])
    if rois is None:
        raise refuse(
            node,
            "sampling_ratio 0 (adaptive) with run-time rois: the number of samples per bin would depend on the data",
            "set sampling_ratio > 0, or make the rois constant.",
        )
    scale, offset = attr_float(node, "spatial_scale", 1.0), 0.5 if half_pixel else 0.0
    boxes = rois.astype(np.float64).reshape(-1, 4) * scale - offset
    extent = np.stack([boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]], axis=1)
    if not half_pixel:
        extent = np.maximum(extent, 1.0)
    grids = np.ceil(extent / np.array(pooled)).astype(np.int64)
    if (grids <= 0).any():
        raise refuse(
            node,
            "a roi of zero or negative extent with sampling_ratio 0 (it has no sample points)",
            "set sampling_ratio > 0, or drop the empty rois.",
        )
    if (grids == grids[0]).all():
        grids = grids[:1]
    return grids[:, 0], grids[:, 1]


def _roi_positions(pooled: int, grids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample positions in bins, ``[G, pooled * max(grids)]``, and each sample's share of its bin's average.

    A roi with a smaller grid repeats its last sample (the maximum is unchanged) with share 0.
    """
    longest = int(grids.max())
    step = np.arange(longest)[None, :]
    taken = np.minimum(step, grids[:, None] - 1)
    within = (taken + 0.5) / grids[:, None]
    positions = (np.arange(pooled)[None, :, None] + within[:, None, :]).reshape(len(grids), -1)
    shares = np.broadcast_to(((step < grids[:, None]) / grids[:, None])[:, None, :], (len(grids), pooled, longest))
    return positions.astype(np.float32), shares.reshape(len(grids), -1).astype(np.float32)


def _roi_axis(chain: Chain, start: Tensor, extent: Tensor, pooled: int, positions: np.ndarray, size: int):
    """The [R, pooled * grid, size] low/high-corner sample matrices along one axis."""
    sample = chain.add(start, chain.mul(chain.mul(extent, 1.0 / pooled), positions))
    valid = chain.mul(chain.flag("GREATER_EQUAL", sample, -1.0), chain.flag("LESS_EQUAL", sample, float(size)))
    clamped = chain.clamp(sample, 0.0, size - 1.0)
    low = chain.unary("FLOOR", clamped)
    high = chain.binary("MINIMUM", chain.add(low, 1.0), size - 1.0)
    fraction = chain.sub(clamped, low)
    pixels = np.arange(size, dtype=np.float32)
    rule = chain.rule
    matrices = []
    for corner, weight in ((low, chain.sub(1.0, fraction)), (high, fraction)):
        shape = [*corner.shape, 1]
        hit = chain.flag("EQUAL", rule.reshape(corner, shape), pixels)
        matrices.append(chain.mul(hit, rule.reshape(chain.mul(weight, valid), shape)))
    return matrices


def roi_align(lw: Lowering, node: ir.Node) -> None:
    """RoiAlign -> separable bilinear sample matrices and BATCH_MATMULs (module docstring)."""
    chain = Chain(lw, node)
    rule = chain.rule
    x, rois = rule.data(0), rule.data(1)
    batch, channels, height, width = x.shape
    count = rois.shape[0]
    pooled = (attr_int(node, "output_height", 1), attr_int(node, "output_width", 1))
    half_pixel = attr_str(node, "coordinate_transformation_mode", "half_pixel") == "half_pixel"
    mode = attr_str(node, "mode", "avg")
    if mode not in ("avg", "max"):
        raise unsupported(node, f"mode {mode!r}")
    grids = _roi_grids(node, const_array(node.inputs[1]), pooled, half_pixel)
    (y_at, y_share), (x_at, x_share) = (_roi_positions(n, g) for n, g in zip(pooled, grids, strict=True))
    gh, gw = (int(g.max()) for g in grids)
    box = chain.sub(chain.mul(rois, attr_float(node, "spatial_scale", 1.0)), 0.5 if half_pixel else 0.0)
    x1, y1, x2, y2 = (rule.reshape(c, [count, 1]) for c in chain.split_last(box))
    extent_h, extent_w = chain.sub(y2, y1), chain.sub(x2, x1)
    if not half_pixel:
        extent_h, extent_w = chain.binary("MAXIMUM", extent_h, 1.0), chain.binary("MAXIMUM", extent_w, 1.0)
    rows = _roi_axis(chain, y1, extent_h, pooled[0], y_at, height)
    columns = _roi_axis(chain, x1, extent_w, pooled[1], x_at, width)
    data = x
    if batch > 1:
        index = rule.cast(lw.read(node.inputs[2], False), I32)
        data = rule.op("GATHER", [x, index], [count, channels, height, width], options="GatherOptions", axis=0)

    def samples(gy: Tensor, gx: Tensor) -> Tensor:
        gy = rule.reshape(gy, [count, 1, *gy.shape[1:]])
        gx = rule.reshape(gx, [count, 1, *gx.shape[1:]])
        return chain.matmul(chain.matmul(gy, data), gx, adj_y=True)

    if mode == "avg":

        def mean(pair, pooled_n, grid, share, size):
            total = chain.add(*pair)
            if len(share) == 1:  # one grid for every roi
                return chain.reduce("MEAN", rule.reshape(total, [count, pooled_n, grid, size]), [2])
            weighted = chain.mul(total, share[:, :, None])
            return chain.reduce("SUM", rule.reshape(weighted, [count, pooled_n, grid, size]), [2])

        result = samples(mean(rows, pooled[0], gh, y_share, height), mean(columns, pooled[1], gw, x_share, width))
    else:
        values = [samples(gy, gx) for gy in rows for gx in columns]
        best = values[0]
        for other in values[1:]:
            best = chain.binary("MAXIMUM", best, other)
        best = rule.reshape(best, [count * channels * pooled[0], gh, pooled[1], gw])
        result = chain.reduce("REDUCE_MAX", best, [1, 3])
    rule.finish(rule.reshape(result, [count, channels, *pooled]))


LOWERINGS: dict = {"RoiAlign": roi_align}
