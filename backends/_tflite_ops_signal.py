"""TFLite lowering rules for signal ops: DFT, STFT and Col2Im (float decompositions of builtins).

LiteRT has no Fourier transform builtin (its RFFT2D is a custom-op era kernel with power-of-two
sizes only), so a DFT along one axis is a product with a constant matrix. With the complex axis
last (``c``: 1 real, 2 real/imaginary) and ``n`` the signal index, ``k`` the frequency:

    forward:           Y[k] = sum_n x[n] exp(-2 pi i n k / L)          (k < L, or L // 2 + 1 onesided)
    inverse:           y[n] = 1/L sum_k X[k] exp(+2 pi i n k / L)
    inverse onesided:  y[n] = 1/L sum_k c_k Re(X[k] exp(+2 pi i n k / L)), c_k = 2 except DC and Nyquist

``L`` is ``dft_length``; input rows past ``L`` are dropped and a shorter input is zero-padded,
both by leaving matrix rows out. A complex coefficient ``a + ib`` becomes the real 2x2 block
``[[a, b], [-b, a]]`` acting on interleaved (re, im) pairs, so the whole transform is one
FULLY_CONNECTED over the flattened ``[n, c]`` pairs with a ``[k * c_out, n * c_in]`` weight; other
axes are moved out of the way by RESHAPE/TRANSPOSE.

STFT frames the signal by GATHER with constant indices ``f * step + n`` (computed at run time
when ``frame_step`` is a graph input), multiplies by the window (folded into the DFT matrix when
it is a constant) and applies the same matrix.

Col2Im sums blocks into the image: each element ``(c, b, l)`` of the input goes to one pixel (or
none, in the padding); SCATTER_ND writes into zeros and sums repeats, which is that sum. Pixels in
the padding go to one extra row that a SLICE drops.

The rules for GridSample and AffineGrid (sampling at computed coordinates) live in
``_tflite_ops_sampling``, RoiAlign's in ``_tflite_ops_roi``, DeformConv's in ``_tflite_ops_deform``,
the windows' and MelWeightMatrix's in ``_tflite_ops_spectral``; this module collects them.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import onnx_ir as ir

from qcc.backends import _tflite_ops_deform, _tflite_ops_roi, _tflite_ops_sampling, _tflite_ops_spectral
from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_rule import I32, Rule
from qcc.backends._tflite_ops_sampling import float_rule, refuse
from qcc.backends._tflite_ops_state import present
from qcc.backends._tflite_ops_window import unsupported
from qcc.backends._tflite_writer import Tensor
from qcc.irutils import attr_int, const_array

# A DFT matrix larger than this many float32 values (64 MiB) is refused: an FFT-sized transform
# does not belong in a dense matrix.
MAX_MATRIX_ELEMENTS = 1 << 24
# Col2Im with a run-time block_shape lowers every block shape the static shapes allow and selects
# one at run time; beyond this many candidates it is refused.
MAX_BLOCK_CANDIDATES = 4


def scalar_input(node: ir.Node, index: int) -> int | None:
    """A constant integer input's value, None when it is absent or computed at run time."""
    if not present(node, index):
        return None
    array = const_array(node.inputs[index])
    return None if array is None else int(np.asarray(array).reshape(-1)[0])


def dft_matrix(n_in: int, c_in: int, length: int, k_out: int, c_out: int, inverse: bool) -> np.ndarray:
    """The real ``[n_in * c_in, k_out * c_out]`` matrix of a DFT of ``length`` (see module docstring).

    ``c_out == 1`` with ``inverse`` is the one-sided inverse (a real signal from half a spectrum).
    """
    rows = min(n_in, length if not (inverse and c_out == 1) else length // 2 + 1)
    n = np.arange(rows, dtype=np.float64)[:, None]
    k = np.arange(k_out, dtype=np.float64)[None, :]
    if inverse and c_out == 1:  # rows are frequencies: the bins past DC and Nyquist stand for two
        weight = np.where((n == 0) | (2 * n == length), 1.0, 2.0) / length
        angle = 2 * np.pi * n * k / length
    elif inverse:
        weight, angle = 1.0 / length, 2 * np.pi * n * k / length
    else:
        weight, angle = 1.0, -2 * np.pi * n * k / length
    real, imag = weight * np.cos(angle), weight * np.sin(angle)
    matrix = np.zeros((n_in, c_in, k_out, c_out))
    matrix[:rows, 0, :, 0] = real
    if c_out == 2:
        matrix[:rows, 0, :, 1] = imag
    if c_in == 2:
        matrix[:rows, 1, :, 0] = -imag
        if c_out == 2:
            matrix[:rows, 1, :, 1] = real
    return matrix.reshape(n_in * c_in, k_out * c_out)


def check_size(node: ir.Node, rows: int, columns: int) -> None:
    """Refuses a dense matrix of more than ``MAX_MATRIX_ELEMENTS`` values."""
    if rows * columns > MAX_MATRIX_ELEMENTS:
        raise refuse(
            node,
            f"a {rows} x {columns} DFT matrix ({rows * columns} values, over qcc's limit of {MAX_MATRIX_ELEMENTS}); "
            "LiteRT has no FFT builtin and qcc lowers a DFT as a dense matrix product",
            "shorten the transform, or cut the graph before it with onnx.utils.extract_model.",
        )


def apply_matrix(rule: Rule, x: Tensor, matrix: np.ndarray) -> Tensor:
    """FULLY_CONNECTED of ``x`` ``[m, rows]`` with the constant ``matrix`` ``[rows, columns]``."""
    weights = rule.const(np.ascontiguousarray(matrix.T, np.float32))
    return rule.op(
        "FULLY_CONNECTED",
        [x, weights, -1],
        [x.shape[0], matrix.shape[1]],
        options="FullyConnectedOptions",
        keep_num_dims=False,
    )


def _dft_axes(node: ir.Node, rank: int) -> tuple[list[int], bool]:
    """The DFT axis as a one-element list, or every candidate axis when it is a run-time input (True)."""
    if "axis" in node.attributes:
        return [attr_int(node, "axis", 1) % rank], False
    if present(node, 2):
        axis = scalar_input(node, 2)
        if axis is None:
            return list(range(rank - 1)), True
        return [axis % rank], False
    opset = node.graph.opset_imports.get("", 20) if node.graph is not None else 20
    return [(1 if opset < 20 else -2) % rank], False


def _dft_length(node: ir.Node, n_in: int, k_out: int, inverse: bool, onesided: bool) -> int:
    length = scalar_input(node, 1)
    if length is None and present(node, 1):
        if onesided and not inverse:
            raise refuse(
                node,
                "a run-time dft_length with onesided=1 (two lengths fit the output's size)",
                "make dft_length a constant (an initializer).",
            )
        return k_out
    if length is None:
        return 2 * (n_in - 1) if inverse and onesided else n_in
    return length


def _dft_along(rule: Rule, x: Tensor, axis: int, length: int, k_out: int, c_out: int, inverse: bool) -> Tensor:
    """The DFT of ``x`` along ``axis``: FULLY_CONNECTED with its matrix, around RESHAPE/TRANSPOSE."""
    shape = list(x.shape)
    n_in, c_in = shape[axis], shape[-1]
    check_size(rule.node, n_in * c_in, k_out * c_out)
    matrix = dft_matrix(n_in, c_in, length, k_out, c_out, inverse)
    pre = math.prod(shape[:axis])
    post = math.prod(shape[axis + 1 : -1])
    if post == 1:
        result = apply_matrix(rule, rule.reshape(x, [pre, n_in * c_in]), matrix)
        return rule.reshape(result, [*shape[:axis], k_out, c_out])
    moved = rule.transpose(rule.reshape(x, [pre, n_in, post, c_in]), [0, 2, 1, 3])
    product = apply_matrix(rule, rule.reshape(moved, [pre * post, n_in * c_in]), matrix)
    result = rule.transpose(rule.reshape(product, [pre, post, k_out, c_out]), [0, 2, 1, 3])
    return rule.reshape(result, [*shape[:axis], k_out, *shape[axis + 1 : -1], c_out])


def dft(lw: Lowering, node: ir.Node) -> None:
    """DFT -> FULLY_CONNECTED with a constant cos/sin matrix, around RESHAPE/TRANSPOSE (module docstring).

    A run-time axis lowers every axis the static shapes allow and selects one at run time.
    """
    rule = float_rule(lw, node)
    x = rule.data(0)
    shape, y = list(x.shape), rule.output()
    rank, c_in, c_out = len(shape), shape[-1], y.shape[-1]
    inverse, onesided = bool(attr_int(node, "inverse", 0)), bool(attr_int(node, "onesided", 0))
    axes, run_time = _dft_axes(node, rank)
    if c_in not in (1, 2) or axes == [rank - 1]:
        raise unsupported(
            node, f"an input of shape {shape} with axis {axes[0]} (the last axis must be 1 or 2 and not the DFT axis)"
        )
    if onesided and inverse and c_out != 1 or not (onesided and inverse) and c_out != 2:
        raise unsupported(node, f"an output of shape {list(y.shape)} (its last dimension does not fit the DFT's kind)")
    results = []
    for axis in axes:
        length = _dft_length(node, shape[axis], y.shape[axis], inverse, onesided)
        k_out = length // 2 + 1 if onesided and not inverse else length
        fits = list(y.shape) == [*shape[:axis], k_out, *shape[axis + 1 : -1], c_out]
        if fits:
            results.append((axis, _dft_along(rule, x, axis, length, k_out, c_out, inverse)))
        elif not run_time:
            raise unsupported(node, f"an output of shape {list(y.shape)}, which does not fit a DFT of length {length}")
    if not results:
        raise unsupported(node, f"a run-time axis with which no axis fits the output shape {list(y.shape)}")
    result = results[0][1]
    if len(results) > 1:
        given = rule.reshape(rule.cast(lw.read(node.inputs[2], False), I32), [])
        for axis, other in results[1:]:
            chosen = rule.op(
                "LOGICAL_OR",
                [
                    rule.op("EQUAL", [given, rule.const(np.array(axis, np.int32))], [], np.bool_),
                    rule.op("EQUAL", [given, rule.const(np.array(axis - rank, np.int32))], [], np.bool_),
                ],
                [],
                np.bool_,
            )
            result = rule.op("SELECT_V2", [chosen, other, result], result.shape, options="SelectV2Options")
    rule.finish(result)


def _frame_length(node: ir.Node, signal: int, frames: int, bins: int, onesided: bool, step: int | None) -> int:
    """The frame length: a constant input, the window's length, or the one length the shapes allow."""
    given = scalar_input(node, 3)
    if given is not None:
        return given
    if present(node, 2):
        return int(node.inputs[2].shape[0])
    if not present(node, 3):
        return signal
    candidates = [2 * (bins - 1), 2 * bins - 1] if onesided else [bins]
    steps = [step] if step is not None else range(1, signal + 1)
    fitting = [n for n in candidates if 0 < n <= signal and any((signal - n) // s + 1 == frames for s in steps)]
    if len(set(fitting)) != 1:
        raise refuse(
            node,
            f"a run-time frame_length that the static shapes do not determine (lengths {sorted(set(fitting))} fit)",
            "make frame_length a constant (an initializer).",
        )
    return fitting[0]


def stft(lw: Lowering, node: ir.Node) -> None:
    """STFT -> GATHER of the frames, window MUL (or folded into the matrix), DFT FULLY_CONNECTED."""
    rule = float_rule(lw, node)
    x = rule.data(0)
    batch, signal, c_in = x.shape
    y = rule.output()
    frames, bins = y.shape[1], y.shape[2]
    onesided = bool(attr_int(node, "onesided", 1))
    step = scalar_input(node, 1)
    length = _frame_length(node, signal, frames, bins, onesided, step)
    expected = length // 2 + 1 if onesided else length
    if bins != expected or (step is not None and frames != (signal - length) // step + 1):
        # ONNX's STFT shape inference (onnx 1.23) reads an absent onesided as 0; ONNX Runtime uses the default 1.
        known = "onesided" not in node.attributes and bins == length
        raise refuse(
            node,
            f"an output of shape {list(y.shape)} where ONNX Runtime computes {expected} frequency bins"
            + (" (ONNX's shape inference takes an absent onesided attribute as 0, ONNX Runtime as 1)" if known else ""),
            "write onesided=1 explicitly on the STFT node (its default)."
            if known
            else "check the model's shapes with onnx.shape_inference.",
        )
    if step is not None:
        index = rule.const((np.arange(frames)[:, None] * step + np.arange(length)[None, :]).astype(np.int32))
    else:
        step_t = rule.reshape(rule.cast(lw.read(node.inputs[1], False), I32), [1, 1])
        starts = rule.op("MUL", [rule.const(np.arange(frames, dtype=np.int32)[:, None]), step_t], [frames, 1], I32)
        index = rule.op("ADD", [starts, rule.const(np.arange(length, dtype=np.int32)[None, :])], [frames, length], I32)
    framed = rule.op("GATHER", [x, index], [batch, frames, length, c_in], options="GatherOptions", axis=1)
    check_size(node, length * c_in, bins * 2)
    matrix = dft_matrix(length, c_in, length, bins, 2, inverse=False)
    if present(node, 2):
        window = const_array(node.inputs[2])
        if window is not None:
            matrix = matrix * np.repeat(window.astype(np.float64).reshape(-1), c_in)[:, None]
        else:
            weights = rule.reshape(rule.data(2), [length, 1])
            framed = rule.op("MUL", [framed, weights], framed.shape, options="MulOptions")
    flat = rule.reshape(framed, [batch * frames, length * c_in])
    rule.finish(apply_matrix(rule, flat, matrix))


def _col2im_sizes(node: ir.Node, channels_blocks: int, blocks: int, image: list[int]) -> list[list[int]]:
    """The block shapes: the constant input, or every one the static shapes allow (run-time input)."""
    known = const_array(node.inputs[2])
    if known is not None:
        return [[int(v) for v in known.reshape(-1)]]
    block_size = channels_blocks // int(node.outputs[0].shape[1])
    dims = len(image)
    fitting = []
    for shape in itertools.product(*[range(1, block_size + 1)] * dims):
        if math.prod(shape) == block_size and _block_count(node, image, list(shape)) == blocks:
            fitting.append(list(shape))
    if not fitting or len(fitting) > MAX_BLOCK_CANDIDATES:
        raise refuse(
            node,
            f"a run-time block_shape that the static shapes fit {len(fitting)} ways (qcc lowers up to "
            f"{MAX_BLOCK_CANDIDATES} and picks one at run time)",
            "make block_shape a constant (an initializer).",
        )
    return fitting


def _geometry(node: ir.Node, dims: int) -> tuple[list[int], list[int], list[int]]:
    strides = [int(v) for v in node.attributes["strides"].as_ints()] if "strides" in node.attributes else [1] * dims
    dilations = (
        [int(v) for v in node.attributes["dilations"].as_ints()] if "dilations" in node.attributes else [1] * dims
    )
    pads = [int(v) for v in node.attributes["pads"].as_ints()] if "pads" in node.attributes else [0] * (2 * dims)
    return strides, dilations, pads


def _block_count(node: ir.Node, image: list[int], block: list[int]) -> int:
    strides, dilations, pads = _geometry(node, len(image))
    counts = [
        (size + pads[d] + pads[d + len(image)] - dilations[d] * (block[d] - 1) - 1) // strides[d] + 1
        for d, size in enumerate(image)
    ]
    return math.prod(counts) if all(c > 0 for c in counts) else -1


def _col2im_targets(node: ir.Node, image: list[int], block: list[int]) -> np.ndarray:
    """The flat pixel each input element ``(b, l)`` is added to; ``prod(image)`` for the padding."""
    strides, dilations, pads = _geometry(node, len(image))
    dims = len(image)
    counts = [
        (size + pads[d] + pads[d + dims] - dilations[d] * (block[d] - 1) - 1) // strides[d] + 1
        for d, size in enumerate(image)
    ]
    b = np.indices(block).reshape(dims, -1)[:, :, None]
    position = np.indices(counts).reshape(dims, -1)[:, None, :]
    coords = [position[d] * strides[d] - pads[d] + b[d] * dilations[d] for d in range(dims)]
    inside = np.logical_and.reduce([(c >= 0) & (c < image[d]) for d, c in enumerate(coords)])
    flat = np.ravel_multi_index([np.clip(c, 0, image[d] - 1) for d, c in enumerate(coords)], image)
    return np.where(inside, flat, math.prod(image)).reshape(-1, 1).astype(np.int32)


def col2im(lw: Lowering, node: ir.Node) -> None:
    """Col2Im -> TRANSPOSE, SCATTER_ND (sums repeats) into the pixels, SLICE, TRANSPOSE (module docstring)."""
    rule = float_rule(lw, node)
    x = rule.data(0)
    batch, channels_blocks, blocks = x.shape
    y = rule.output()
    channels, image = y.shape[1], list(y.shape[2:])
    pixels = math.prod(image)
    candidates = _col2im_sizes(node, channels_blocks, blocks, image)
    block_size = channels_blocks // channels
    updates = rule.transpose(rule.reshape(x, [batch * channels, block_size, blocks]), [1, 2, 0])
    updates = rule.reshape(updates, [block_size * blocks, batch * channels])
    results = []
    for block in candidates:
        if _block_count(node, image, block) != blocks:
            raise unsupported(node, f"block_shape {block}, which gives other than {blocks} blocks")
        targets = rule.const(_col2im_targets(node, image, block))
        shape = rule.const(np.array([pixels + 1, batch * channels], np.int32))
        summed = rule.op("SCATTER_ND", [targets, updates, shape], [pixels + 1, batch * channels])
        begin, size = rule.const(np.zeros(2, np.int32)), rule.const(np.array([pixels, batch * channels], np.int32))
        results.append(rule.op("SLICE", [summed, begin, size], [pixels, batch * channels], options="SliceOptions"))
    result = results[0]
    if len(results) > 1:
        given = rule.cast(lw.read(node.inputs[2], False), I32)
        for block, other in zip(candidates[1:], results[1:], strict=True):
            equal = rule.op("EQUAL", [given, rule.const(np.array(block, np.int32))], [len(block)], np.bool_)
            chosen = rule.op(
                "REDUCE_ALL",
                [equal, rule.const(np.array([0], np.int32))],
                [],
                np.bool_,
                options="ReducerOptions",
                keep_dims=False,
            )
            result = rule.op("SELECT_V2", [chosen, other, result], result.shape, options="SelectV2Options")
    image_last = rule.reshape(rule.transpose(result, [1, 0]), [batch, channels, *image])
    rule.finish(image_last)


LOWERINGS: dict = {
    "DFT": dft,
    "STFT": stft,
    "Col2Im": col2im,
    **_tflite_ops_sampling.LOWERINGS,
    **_tflite_ops_roi.LOWERINGS,
    **_tflite_ops_deform.LOWERINGS,
    **_tflite_ops_spectral.LOWERINGS,
}
INT8_OPS: frozenset[str] = frozenset()
SHARED_SCALE_OPS: frozenset[str] = frozenset()
