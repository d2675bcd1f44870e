"""TFLite lowering rules for sampling at computed coordinates: AffineGrid, GridSample.

Both are float decompositions into builtins (data NCHW: ``layout-nhwc`` stops at them).

AffineGrid: the output is ``base @ theta^T`` per batch, ``base`` the constant ``[P, D + 1]`` grid of
normalized coordinates ``(x, y[, z], 1)`` (``-1 + (2i + 1) / n``, or ``linspace(-1, 1, n)`` with
``align_corners``): one BATCH_MATMUL with ``adj_y``.

GridSample: each grid point is denormalized per spatial axis (``x = ((g + 1) n - 1) / 2``, or
``(g + 1)(n - 1) / 2`` with ``align_corners``); nearest rounds it (ROUND is half-to-even, as
``nearbyint``). Its neighbours along each axis (1 nearest, 2 linear, 4 cubic with Keys'
``a = -0.75`` weights) and their weights are computed in float; a neighbour outside the image
reads 0 (``zeros``: its weight is masked), the edge (``border``) or its reflection about the
border ``[lo, hi]`` (``reflection``: ``lo + r - |((i - lo) mod 2r) - r|``, ``r = hi - lo``). Padding
applies to each neighbour's index, as ONNX Runtime does; ONNX's reference first also moves a
coordinate past the border, which agrees except for cubic with border padding, where qcc follows
ONNX Runtime (its float model runs there). Every combination of neighbours is one row index into
the ``[N * pixels, C]`` table of the image; one GATHER reads them all and a weighted SUM adds them
up.

DeformConv, which samples the same way, is in ``_tflite_ops_deform``; RoiAlign in ``_tflite_ops_roi``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_rule import F32, I32, Rule, attr_str
from qcc.backends._tflite_ops_window import unsupported
from qcc.backends._tflite_writer import Tensor
from qcc.errors import BackendError
from qcc.irutils import attr_int

# Float row indices are exact below 2 ** 24; a larger image table is refused.
MAX_TABLE_ROWS = 1 << 24
# Keys' cubic convolution parameter, as ONNX's GridSample uses.
CUBIC_ALPHA = -0.75

_OPTIONS = {
    "ADD": "AddOptions",
    "SUB": "SubOptions",
    "MUL": "MulOptions",
    "DIV": "DivOptions",
    "MAXIMUM": "MaximumMinimumOptions",
    "MINIMUM": "MaximumMinimumOptions",
}


def refuse(node: ir.Node, problem: str, fix: str) -> BackendError:
    """The error for a case of the node qcc does not lower, with the remedy that applies."""
    return BackendError(f"node {node.name!r} ({node.op_type}): {problem}.", fix)


def float_rule(lw: Lowering, node: ir.Node) -> Rule:
    """A :class:`Rule` for a float-only op (these ops have no int8 kernel; the plan keeps them float).

    Raises:
        BackendError: the node was planned int8.
    """
    if lw.is_int8(node):
        raise unsupported(node, f"int8 {node.op_type} (no int8 TFLite kernel; it runs as a float decomposition)")
    return Rule(lw, node)


class Chain:
    """Element-wise float arithmetic on tensors and Python numbers (numbers become constants)."""

    def __init__(self, lw: Lowering, node: ir.Node) -> None:
        self.rule = float_rule(lw, node)

    def tensor(self, value) -> Tensor:
        return value if isinstance(value, Tensor) else self.rule.const(np.array(value, np.float32))

    def binary(self, name: str, a, b, dtype=F32) -> Tensor:
        a, b = self.tensor(a), self.tensor(b)
        shape = np.broadcast_shapes(tuple(a.shape), tuple(b.shape))
        return self.rule.op(name, [a, b], list(shape), dtype, options=_OPTIONS.get(name))

    def add(self, a, b) -> Tensor:
        return self.binary("ADD", a, b)

    def sub(self, a, b) -> Tensor:
        return self.binary("SUB", a, b)

    def mul(self, a, b) -> Tensor:
        return self.binary("MUL", a, b)

    def clamp(self, x, low: float, high: float) -> Tensor:
        return self.binary("MINIMUM", self.binary("MAXIMUM", x, low), high)

    def unary(self, name: str, x: Tensor) -> Tensor:
        return self.rule.op(name, [x], x.shape)

    def flag(self, name: str, a, b) -> Tensor:
        """A comparison as a float 0/1 tensor."""
        return self.rule.cast(self.binary(name, a, b, np.dtype(np.bool_)), F32)

    def select(self, condition: Tensor, a, b) -> Tensor:
        a, b = self.tensor(a), self.tensor(b)
        shape = np.broadcast_shapes(tuple(condition.shape), tuple(a.shape), tuple(b.shape))
        return self.rule.op("SELECT_V2", [condition, a, b], list(shape), options="SelectV2Options")

    def matmul(self, a: Tensor, b: Tensor, adj_y: bool = False) -> Tensor:
        batch = np.broadcast_shapes(tuple(a.shape[:-2]), tuple(b.shape[:-2]))
        columns = b.shape[-2] if adj_y else b.shape[-1]
        return self.rule.op(
            "BATCH_MATMUL",
            [a, b],
            [*batch, a.shape[-2], columns],
            options="BatchMatMulOptions",
            adj_x=False,
            adj_y=adj_y,
        )

    def split_last(self, x: Tensor) -> list[Tensor]:
        """The components of ``x`` along its last axis, each without that axis."""
        parts = []
        for i in range(x.shape[-1]):
            begin = self.rule.const(np.array([0] * (len(x.shape) - 1) + [i], np.int32))
            size = self.rule.const(np.array([*x.shape[:-1], 1], np.int32))
            part = self.rule.op("SLICE", [x, begin, size], [*x.shape[:-1], 1], options="SliceOptions")
            parts.append(self.rule.reshape(part, x.shape[:-1]))
        return parts

    def reduce(self, name: str, x: Tensor, axes: list[int]) -> Tensor:
        shape = [d for i, d in enumerate(x.shape) if i not in axes]
        axes_t = self.rule.const(np.array(axes, np.int32))
        return self.rule.op(name, [x, axes_t], shape, options="ReducerOptions", keep_dims=False)


def _base_axis(size: int, align_corners: bool) -> np.ndarray:
    if align_corners:
        return np.linspace(-1.0, 1.0, size) if size > 1 else np.array([-1.0])
    return -1.0 + (2 * np.arange(size) + 1) / size


def affine_grid(lw: Lowering, node: ir.Node) -> None:
    """AffineGrid -> BATCH_MATMUL of the constant homogeneous base grid with theta (``adj_y``)."""
    chain = Chain(lw, node)
    rule = chain.rule
    theta = rule.data(0)
    y = rule.output()
    spatial = list(y.shape[1:-1])
    dims = len(spatial)
    if list(theta.shape[1:]) != [dims, dims + 1]:
        raise unsupported(node, f"theta of shape {list(theta.shape)} for a {dims}-D grid")
    align = bool(attr_int(node, "align_corners", 0))
    axes = np.meshgrid(*[_base_axis(n, align) for n in spatial], indexing="ij")
    # (x, y[, z], 1): the last spatial axis is x.
    base = np.stack([*reversed([a.reshape(-1) for a in axes]), np.ones(math.prod(spatial))], axis=1)
    product = chain.matmul(rule.const(base[None].astype(np.float32)), theta, adj_y=True)
    rule.finish(product)


def _denormalize(chain: Chain, g: Tensor, size: int, align: bool) -> Tensor:
    if align:
        return chain.add(chain.mul(g, (size - 1) / 2), (size - 1) / 2)
    return chain.add(chain.mul(g, size / 2), (size - 1) / 2)


def _reflect(chain: Chain, x, low: float, high: float) -> Tensor:
    span = high - low
    if span <= 0:
        return chain.tensor(np.float32(low))
    phase = chain.binary("FLOOR_MOD", chain.sub(x, low), 2 * span)
    return chain.sub(low + span, chain.unary("ABS", chain.sub(phase, span)))


def _cubic_weights(chain: Chain, t: Tensor) -> list[Tensor]:
    """Keys' weights of the neighbours at offsets -1, 0, 1, 2 of a point ``t`` in [0, 1) past the first."""
    a = CUBIC_ALPHA

    def far(d):  # |d| in [1, 2)
        return chain.sub(chain.mul(chain.add(chain.mul(chain.sub(chain.mul(d, a), 5 * a), d), 8 * a), d), 4 * a)

    def near(d):  # |d| in [0, 1)
        return chain.add(chain.mul(chain.mul(chain.sub(chain.mul(d, a + 2), a + 3), d), d), 1.0)

    one_minus = chain.sub(1.0, t)
    return [far(chain.add(t, 1.0)), near(t), near(one_minus), far(chain.add(one_minus, 1.0))]


def _neighbours(chain: Chain, x: Tensor, mode: str) -> list[tuple[Tensor, Tensor | None]]:
    """(float index, weight) of the neighbours of coordinate ``x`` along one axis (weight None: 1)."""
    if mode == "nearest":
        return [(chain.rule.cast(chain.rule.cast(x, I32), F32), None)]
    low = chain.unary("FLOOR", x)
    t = chain.sub(x, low)
    if mode == "linear":
        return [(low, chain.sub(1.0, t)), (chain.add(low, 1.0), t)]
    weights = _cubic_weights(chain, t)
    return [(chain.add(low, float(offset)), w) for offset, w in zip((-1, 0, 1, 2), weights, strict=True)]


def grid_sample(lw: Lowering, node: ir.Node) -> None:
    """GridSample -> coordinate arithmetic, one GATHER of all neighbours, weighted SUM (module docstring)."""
    chain = Chain(lw, node)
    rule = chain.rule
    x, grid = rule.data(0), rule.data(1)
    batch, channels, *spatial = x.shape
    dims = len(spatial)
    mode = attr_str(node, "mode", "linear")
    mode = {"bilinear": "linear", "bicubic": "cubic"}.get(mode, mode)  # GridSample-16's names
    padding = attr_str(node, "padding_mode", "zeros")
    align = bool(attr_int(node, "align_corners", 0))
    if mode not in ("nearest", "linear", "cubic") or padding not in ("zeros", "border", "reflection"):
        raise unsupported(node, f"mode {mode!r} with padding_mode {padding!r}")
    if grid.shape[-1] != dims:
        raise unsupported(node, f"an input of shape {list(x.shape)} with a grid of shape {list(grid.shape)}")
    if batch * math.prod(spatial) > MAX_TABLE_ROWS:
        raise refuse(
            node,
            f"an input of {batch * math.prod(spatial)} pixels (qcc indexes them with float32 row numbers, exact up to "
            f"{MAX_TABLE_ROWS})",
            "sample a smaller image, or cut the graph before GridSample.",
        )
    out_spatial = list(grid.shape[1:-1])
    points = math.prod(out_spatial)
    components = chain.split_last(rule.reshape(grid, [batch, points, dims]))
    # The grid lists x first; each component in pixels along its axis.
    coordinates = [_denormalize(chain, components[dims - 1 - d], size, align) for d, size in enumerate(spatial)]
    sampled = gather_points(chain, x, coordinates, mode, padding, align)
    result = rule.transpose(sampled, [0, 2, 1])
    rule.finish(rule.reshape(result, [batch, channels, *out_spatial]))


def gather_points(chain: Chain, x: Tensor, coordinates: list[Tensor], mode: str, padding: str, align: bool) -> Tensor:
    """The ``[N, points, C]`` values of ``x`` (``[N, C, *spatial]``) at pixel ``coordinates`` (each ``[N, points]``).

    GridSample's sampling after denormalization (module docstring).
    """
    rule = chain.rule
    batch, channels, *spatial = x.shape
    dims = len(spatial)
    points = coordinates[0].shape[1]
    table = rule.transpose(x, [0, *range(2, 2 + dims), 1])
    table = rule.reshape(table, [batch * math.prod(spatial), channels])
    per_axis = []
    for coordinate, size in zip(coordinates, spatial, strict=True):
        if mode == "nearest":
            coordinate = chain.unary("ROUND", coordinate)
        low, high = (0.0, size - 1.0) if align else (-0.5, size - 0.5)
        axis = []
        for index, weight in _neighbours(chain, coordinate, mode):
            if padding == "reflection":
                index = chain.clamp(chain.unary("FLOOR", _reflect(chain, index, low, high)), 0.0, size - 1.0)
            else:
                inside = chain.clamp(index, 0.0, size - 1.0)
                if padding == "zeros":
                    valid = chain.flag("EQUAL", index, inside)
                    weight = valid if weight is None else chain.mul(weight, valid)
                index = inside
            axis.append((index, weight))
        per_axis.append(axis)
    strides = [math.prod(spatial[d + 1 :]) for d in range(dims)]
    start = (np.arange(batch, dtype=np.float32) * math.prod(spatial))[:, None]
    rows, weights = [], []
    for combination in itertools.product(*per_axis):
        row = chain.tensor(start)
        weight = None
        for d, (index, w) in enumerate(combination):
            row = chain.add(row, chain.mul(index, float(strides[d])) if strides[d] != 1 else index)
            weight = w if weight is None else (weight if w is None else chain.mul(weight, w))
        rows.append(row)
        weights.append(weight)
    count = len(rows)
    stacked = (
        rows[0]
        if count == 1
        else rule.op("CONCATENATION", rows, [count * batch, points], options="ConcatenationOptions", axis=0)
    )
    index = rule.cast(rule.reshape(stacked, [count, batch * points]), I32)
    picked = rule.op("GATHER", [table, index], [count, batch * points, channels], options="GatherOptions", axis=0)
    if weights[0] is not None:
        weights = [chain.mul(w, np.ones((batch, points), np.float32)) for w in weights]  # full shape to stack
        weight_t = (
            weights[0]
            if count == 1
            else rule.op("CONCATENATION", weights, [count * batch, points], options="ConcatenationOptions", axis=0)
        )
        picked = chain.mul(picked, rule.reshape(weight_t, [count, batch * points, 1]))
    summed = chain.reduce("SUM", picked, [0]) if count > 1 else rule.reshape(picked, [batch * points, channels])
    return rule.reshape(summed, [batch, points, channels])


LOWERINGS: dict = {
    "AffineGrid": affine_grid,
    "GridSample": grid_sample,
}
