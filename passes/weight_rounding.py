"""Weight rounding: round each layer's int8 weights so that its output moves least (GPTQ).

Rounding every weight to its nearest level minimizes the error of each weight, not of the layer's
output: on a smooth input, a depthwise kernel's nine rounding errors add up in its output. With
``H = sum x x^T``, the second moment of what the weight multiplies on the calibration data
(``_input_moments``), a rounding ``dW`` moves the output by ``tr(dW H dW^T)`` in squared error.
GPTQ (Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers", 2022; after Optimal Brain Quantization) rounds one input column at a time and
moves the not yet rounded columns of the same rows to cancel that column's error, as far as the
inputs' correlation allows, by the Cholesky factor of ``H^-1``. The scales stay those of
``quantize-weights``; only which level each weight gets changes.

For each layer the pass measures both roundings' output error on the calibration inputs and keeps
GPTQ only where it is lower; where the calibration data has fewer rows than ``ROWS_PER_COLUMN`` per
input column, ``H`` cannot tell directions apart and the layer is rounded to nearest. The chosen
values replace the weight (on the grid, so the backends' rounding reproduces them exactly); the
float model's weight is kept (``set_float_value``) for every float reference. Runs after
``calibrate`` (which observes the inputs) and before ``bias-correction``.
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnx_ir as ir

from qcc.annotations import Rounding, get_input_moments, get_quant, set_float_value, set_rounding
from qcc.irutils import const_array
from qcc.optable import WEIGHT_INPUT, weight_axis
from qcc.options import WeightRounding
from qcc.passes._base import QccPass
from qcc.quantmath import qrange

DAMPING = 0.01  # added to H's diagonal, relative to its mean: keeps H^-1 finite for unused inputs
ROWS_PER_COLUMN = 4  # fewer calibration rows than this per input column: nearest rounding
BLOCK = 128  # columns rounded between updates of the rest (GPTQ's lazy batch)
_CACHE = "weight-rounding"  # its key in ctx.statistics: levels and error by layer, weight and grid


class WeightRoundingPass(QccPass):
    """Rounds every layer with input moments by GPTQ where that is closer (see module docstring)."""

    name = "weight-rounding"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if self.ctx.options.weight_rounding == WeightRounding.NEAREST:
            return ir.passes.PassResult(model, False)
        modified = False
        for node in model.graph:
            moments = get_input_moments(node)
            if moments is not None and self._round(node, moments):
                modified = True
        return ir.passes.PassResult(model, modified)

    def _round(self, node: ir.Node, moments: object) -> bool:
        weight = node.inputs[WEIGHT_INPUT]
        quant, array = get_quant(weight), const_array(weight)
        if array is None or array.dtype != np.float32 or quant.scale is None:
            return False
        layer = moments.layer
        matrix, scale, zero_point, restore = as_rows(node, array, quant.scale, quant.zero_point, layer.groups)
        qmin, qmax = level_range(quant)
        nearest = levels_of(matrix, scale[..., None], zero_point[..., None], qmin, qmax)
        hessian = moments.sums / max(moments.rows, 1)
        nearest_error = _output_error(nearest, matrix, scale, zero_point, hessian)
        if moments.rows < ROWS_PER_COLUMN * layer.columns:
            reason = f"{moments.rows} calibration rows for {layer.columns} inputs: too few to tell them apart"
            set_rounding(node, Rounding("nearest", nearest_error, nearest_error, reason))
            return False
        key = (node.name, hashlib.sha1(array.tobytes()).hexdigest(), scale.tobytes(), zero_point.tobytes(), qmin, qmax)
        cache = self.ctx.statistics.setdefault(_CACHE, {}) if self.ctx.statistics is not None else {}
        if key not in cache:  # a re-plan with more nodes float rounds the same layers again
            levels = gptq(matrix, hessian, scale, zero_point, qmin, qmax)
            error = _output_error(levels, matrix, scale, zero_point, hessian) if levels is not None else np.inf
            cache[key] = (levels, error)
        levels, error = cache[key]
        if not error < nearest_error:
            set_rounding(node, Rounding("nearest", nearest_error, nearest_error, "GPTQ was not closer"))
            return False
        set_rounding(node, Rounding("gptq", error, nearest_error))
        set_float_value(weight, array)
        values = values_of(levels, scale[..., None], zero_point[..., None])
        weight.const_value = ir.Tensor(restore(values).astype(np.float32), name=weight.name)
        return True


def level_range(quant) -> tuple[int, int]:
    """The levels a weight may take: its type's, -127..127 when symmetric (TensorRT requires it)."""
    qmin, qmax = qrange(quant.dtype)
    return (-qmax if quant.symmetric and qmin < 0 else qmin), qmax


def gptq(
    weight: np.ndarray, hessian: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, qmin: int, qmax: int
) -> np.ndarray | None:
    """GPTQ's levels for ``weight`` (groups, rows, columns) with per-row ``scale`` and
    ``zero_point`` (groups, rows) and the inputs' second moment ``hessian`` (groups, columns,
    columns); None if ``hessian`` is not positive definite even damped."""
    return gptq_levels(weight, error_spread(hessian), scale, zero_point, qmin, qmax)


def error_spread(hessian: np.ndarray) -> np.ndarray | None:
    """``U`` (groups, columns, columns), upper triangular with ``H^-1 = U^T U`` for ``H`` the damped
    ``hessian``: row i of U is how column i's rounding error spreads onward. It depends on the
    inputs only, so several weights fitted to the same inputs (the refit's candidates) share it.
    None if ``hessian`` is not positive definite even damped."""
    columns = hessian.shape[-1]
    damped = (
        hessian
        + DAMPING
        * np.maximum(np.trace(hessian, axis1=1, axis2=2) / columns, 1e-12)[:, None, None]
        * (np.eye(columns)[None])
    )
    try:
        return np.linalg.cholesky(np.linalg.inv(damped)).transpose(0, 2, 1)
    except np.linalg.LinAlgError:
        return None


def gptq_levels(
    weight: np.ndarray, upper: np.ndarray | None, scale: np.ndarray, zero_point: np.ndarray, qmin: int, qmax: int
) -> np.ndarray | None:
    """:func:`gptq` given the inputs' :func:`error_spread` ``upper`` (None: not positive definite,
    and None is returned)."""
    if upper is None:
        return None
    groups, _, columns = weight.shape
    w = weight.astype(np.float64).copy()
    levels = np.empty_like(w)
    s, z = scale[..., None].astype(np.float64), zero_point[..., None].astype(np.float64)
    for start in range(0, columns, BLOCK):
        end = min(start + BLOCK, columns)
        errors = np.empty((groups, w.shape[1], end - start))
        for i in range(start, end):
            column = w[:, :, i : i + 1]
            level = levels_of(column, s, z, qmin, qmax)
            levels[:, :, i : i + 1] = level
            error = (column - values_of(level, s, z))[:, :, 0] / upper[:, i, i][:, None]
            w[:, :, i + 1 : end] -= error[:, :, None] * upper[:, None, i, i + 1 : end]
            errors[:, :, i - start] = error
        if end < columns:
            w[:, :, end:] -= errors @ upper[:, start:end, end:]
    return levels


def _output_error(
    levels: np.ndarray, weight: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, hessian: np.ndarray
) -> float:
    """Mean squared output change per row, ``tr(dW H dW^T) / rows``, of rounding to ``levels``."""
    delta = values_of(levels, scale[..., None], zero_point[..., None]) - weight
    return float(np.sum((delta @ hessian) * delta) / (delta.shape[0] * delta.shape[1]))


def levels_of(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, qmin: int, qmax: int) -> np.ndarray:
    """The nearest level of each value (as float64), saturated."""
    return np.clip(np.rint(x / scale) + zero_point, qmin, qmax)


def values_of(levels: np.ndarray, scale: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    """What the levels stand for."""
    return (levels - zero_point) * scale


def as_rows(node: ir.Node, array: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, groups: int):
    """The weight as (groups, output rows, input columns) in float64 with its scale and zero point
    per row, and the function that puts such a matrix back into the weight's layout."""
    axis = weight_axis(node) % array.ndim
    moved = np.moveaxis(array, axis, 0)  # output channels first; the rest is one row each
    out_channels = moved.shape[0]
    matrix = moved.reshape(groups, out_channels // groups, -1).astype(np.float64)
    per_row = np.broadcast_to(np.asarray(scale, np.float64).reshape(-1), (out_channels,))
    zeros = np.broadcast_to(np.asarray(zero_point, np.float64).reshape(-1), (out_channels,))

    def restore(rows: np.ndarray) -> np.ndarray:
        return np.moveaxis(rows.reshape(moved.shape), 0, axis)

    return matrix, per_row.reshape(groups, -1), zeros.reshape(groups, -1), restore
