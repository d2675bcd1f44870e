"""The arithmetic of affine quantization, shared by passes and backends.

``q = clamp(round_half_even(x / scale) + zero_point, qmin, qmax)`` and ``x ~ (q - zero_point) * scale``.
Weights use the symmetric int8 range [-127, 127] (zero point 0, so -128 is never produced and
products stay symmetric). Activations use the full range of their type; the real range is first
widened to include 0 so that zero (padding, ReLU output) is exactly representable.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

_RANGES = {
    ir.DataType.UINT8: (0, 255),
    ir.DataType.INT8: (-128, 127),
    ir.DataType.INT32: (-(2**31), 2**31 - 1),
    ir.DataType.FLOAT8E4M3FN: (-448, 448),
    ir.DataType.INT4: (-8, 7),
}
WEIGHT_QMAX = 127
# The smallest scale qcc emits: keeps 1/scale finite in float32 for all-zero tensors.
MIN_SCALE = np.float32(2.0**-40)


def qrange(dtype: ir.DataType) -> tuple[int, int]:
    """Returns (qmin, qmax) of an integer type."""
    return _RANGES[dtype]


def symmetric_weight_scale(weight: np.ndarray, axis: int | None, qmax: int = WEIGHT_QMAX) -> np.ndarray:
    """Returns float32 scales max|w| / qmax (127 for int8, 448 for fp8 E4M3), per channel or per tensor."""
    if axis is None:
        absmax = np.max(np.abs(weight)) if weight.size else np.float32(0)
    else:
        reduce = tuple(i for i in range(weight.ndim) if i != axis)
        absmax = np.max(np.abs(weight), axis=reduce) if weight.size else np.zeros(weight.shape[axis])
    return np.maximum(np.asarray(absmax, dtype=np.float32) / qmax, MIN_SCALE).astype(np.float32)


def block_weight_scale(weight: np.ndarray, axis: int, block: int, qmax: int) -> np.ndarray:
    """Returns float32 scales max|w| / qmax per block of ``block`` elements along ``axis``.

    The result has the weight's shape with ``axis`` divided by ``block`` (ONNX block quantization).
    """
    moved = np.moveaxis(np.abs(weight), axis, 0)
    blocks = moved.reshape(moved.shape[0] // block, block, *moved.shape[1:]).max(axis=1)
    return np.maximum(np.moveaxis(blocks, 0, axis) / qmax, MIN_SCALE).astype(np.float32)


def activation_params(rmin: float, rmax: float, dtype: ir.DataType, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """Returns (scale, zero_point) as 0-d arrays for a per-tensor activation range.

    Symmetric: zero point 0 (128 for uint8 is not used), scale = max(|rmin|, |rmax|) / qmax.
    Asymmetric: the range [min(rmin, 0), max(rmax, 0)] maps onto [qmin, qmax].
    """
    qmin, qmax = qrange(dtype)
    rmin, rmax = min(float(rmin), 0.0), max(float(rmax), 0.0)
    if rmax - rmin == 0.0:
        # A constant-zero tensor: any scale represents it; 1.0 keeps derived bias scales sane.
        return np.array(1.0, dtype=np.float32), np.array(0 if symmetric else qmin, dtype=dtype.numpy())
    if symmetric:
        scale = max(-rmin, rmax) / qmax
        zero_point = 0
    else:
        scale = (rmax - rmin) / (qmax - qmin)
        zero_point = int(np.clip(np.round(qmin - rmin / scale), qmin, qmax))
    scale = max(np.float32(scale), MIN_SCALE)
    return np.array(scale, dtype=np.float32), np.array(zero_point, dtype=dtype.numpy())


def quantize(
    x: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray,
    axis: int | None,
    dtype: ir.DataType,
    block_size: int | None = None,
) -> np.ndarray:
    """Quantizes ``x`` as ONNX QuantizeLinear does (round half to even, saturate)."""
    if block_size is not None and axis is not None:
        scale = np.repeat(scale, block_size, axis=axis)
        zero_point = np.repeat(zero_point, block_size, axis=axis)
    elif axis is not None and np.ndim(scale) == 1:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
        zero_point = zero_point.reshape(shape)
    if x.ndim == 0 or x.size <= _CHUNK_ELEMENTS:
        return _quantize(x, scale, zero_point, dtype)
    # Row blocks along axis 0 bound the float64 temporaries (a 1 GB weight would need 3 GB more).
    out = np.empty(x.shape, dtype.numpy())
    rows = max(1, _CHUNK_ELEMENTS // (x.size // x.shape[0]))
    for start in range(0, x.shape[0], rows):
        part = slice(start, start + rows)
        out[part] = _quantize(x[part], _rows(scale, part, x), _rows(zero_point, part, x), dtype)
    return out


_CHUNK_ELEMENTS = 1 << 22


def _rows(params: np.ndarray, part: slice, x: np.ndarray) -> np.ndarray:
    """The rows of broadcast parameters that go with rows ``part`` of ``x``."""
    return params[part] if np.ndim(params) == x.ndim and params.shape[0] == x.shape[0] else params


def _quantize(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, dtype: ir.DataType) -> np.ndarray:
    qmin, qmax = qrange(dtype)
    if dtype == ir.DataType.FLOAT8E4M3FN:  # symmetric: zero point 0; saturate, then round to E4M3
        scaled = np.clip(x.astype(np.float64) / scale.astype(np.float64), qmin, qmax)
        return scaled.astype(np.float32).astype(dtype.numpy())
    q = np.rint(x.astype(np.float64) / scale.astype(np.float64)) + zero_point.astype(np.int64)
    return np.clip(q, qmin, qmax).astype(np.int64).astype(dtype.numpy())


def fake_quantize(
    x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int | None, dtype: ir.DataType
) -> np.ndarray:
    """``DQ(Q(x))``: the values the quantized tensor stands for, as float32."""
    return dequantize(quantize(x, scale, zero_point, axis, dtype), scale, zero_point, axis)


def dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int | None) -> np.ndarray:
    """Dequantizes as ONNX DequantizeLinear does (float8 values are scaled, zero point 0)."""
    if axis is not None and np.ndim(scale) == 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
        zero_point = zero_point.reshape(shape)
    if q.dtype == ir.DataType.FLOAT8E4M3FN.numpy():
        return (q.astype(np.float32) * scale).astype(np.float32)
    return ((q.astype(np.int64) - zero_point.astype(np.int64)) * scale).astype(np.float32)
