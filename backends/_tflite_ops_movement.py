"""TFLite lowering rules that move or mask data: Tile, DepthToSpace, SpaceToDepth, ReverseSequence,
CenterCropPad, Trilu and OneHot.

The repeats of Tile, the target of CenterCropPad and a run-time OneHot depth are read from the
static output shape. Tile is TILE and ReverseSequence REVERSE_SEQUENCE; rewrites where TFLite
has no single builtin:

* ``DepthToSpace`` CRD: channel ``c * b^2 + i * b + j`` is DCR's ``(i * b + j) * C + c``, so a
  constant GATHER of the channels turns CRD into DEPTH_TO_SPACE's DCR order (the inverse for
  SpaceToDepth CRD). Both see NHWC data (``layout-nhwc`` lists them as layout ops).
* ``Trilu``: ``SELECT_V2(col - row >= k, x, 0)`` (``<=`` for lower), ``k`` may be a tensor.
* ``OneHot``: negative indices count back (``i + depth``), out-of-range ones give an off row,
  as TFLite's ONE_HOT does for them.
* ``CenterCropPad``: SLICE then PAD, the start at ``(in - out) // 2`` (pad before ``(out - in) // 2``).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_rule import BOOL, F32, I32, Rule, attr_str, optional_input, slice_row
from qcc.backends._tflite_ops_window import unsupported
from qcc.backends._tflite_writer import Tensor
from qcc.irutils import attr_int, const_array


def tile(lw: Lowering, node: ir.Node) -> None:
    """Tile -> TILE; the repeats follow from the static shapes (int8 keeps its parameters)."""
    rule = Rule(lw, node)
    x = rule.data(0)
    y = rule.result(like=x)
    if any(d == 0 for d in x.shape):
        raise unsupported(node, "an empty input")
    repeats = [o // i for o, i in zip(y.shape, x.shape, strict=True)]
    rule.finish(rule.op("TILE", [x, rule.const(repeats, np.int32)], y.shape, x.dtype, "TileOptions", out=y))


def depth_to_space(lw: Lowering, node: ir.Node) -> None:
    """DepthToSpace (NHWC) -> DEPTH_TO_SPACE; CRD mode first reorders the channels (module docstring)."""
    _space_depth(lw, node, "DEPTH_TO_SPACE", "DepthToSpaceOptions")


def space_to_depth(lw: Lowering, node: ir.Node) -> None:
    """SpaceToDepth (NHWC) -> SPACE_TO_DEPTH; CRD mode then reorders the channels."""
    _space_depth(lw, node, "SPACE_TO_DEPTH", "SpaceToDepthOptions")


def _space_depth(lw: Lowering, node: ir.Node, builtin: str, options: str) -> None:
    rule = Rule(lw, node)
    if node.meta.get("qcc.layout") != "NHWC":
        raise unsupported(node, f"{node.op_type} on a rank-{len(node.inputs[0].shape or ())} tensor (4-D only)")
    x = rule.data(0)
    y = rule.result(like=x)
    block = attr_int(node, "blocksize", 1)
    mode = attr_str(node, "mode", "DCR")
    if mode not in ("DCR", "CRD"):
        raise unsupported(node, f"mode {mode!r}")
    deep = x.shape[3] if builtin == "DEPTH_TO_SPACE" else y.shape[3]
    few = deep // (block * block)
    # CRD channel c*b*b + s (s = i*b + j) is DCR channel s*C + c.
    crd_of_dcr = np.arange(deep).reshape(few, block * block).T.reshape(-1)
    order = np.argsort(crd_of_dcr)  # DCR position of each CRD channel
    if mode == "CRD" and builtin == "DEPTH_TO_SPACE":
        x = _gather_channels(rule, x, crd_of_dcr)
    moved = rule.op(builtin, [x], y.shape, x.dtype, options, quant=x.quant, block_size=block)
    if mode == "CRD" and builtin == "SPACE_TO_DEPTH":
        moved = _gather_channels(rule, moved, order)
    rule.finish(moved)


def _gather_channels(rule: Rule, x: Tensor, order) -> Tensor:
    return rule.op(
        "GATHER",
        [x, rule.const(np.asarray(order, np.int32))],
        x.shape,
        x.dtype,
        "GatherOptions",
        quant=x.quant,
        axis=3,
        batch_dims=0,
    )


def reverse_sequence(lw: Lowering, node: ir.Node) -> None:
    """ReverseSequence -> REVERSE_SEQUENCE (seq_dim = time_axis, batch_dim = batch_axis)."""
    rule = Rule(lw, node)
    x = rule.data(0)
    lengths = rule.int32(1)
    y = rule.result(like=x)
    reversed_ = rule.op(
        "REVERSE_SEQUENCE",
        [x, lengths],
        y.shape,
        x.dtype,
        "ReverseSequenceOptions",
        out=y,
        seq_dim=attr_int(node, "time_axis", 0),
        batch_dim=attr_int(node, "batch_axis", 1),
    )
    rule.finish(reversed_)


def center_crop_pad(lw: Lowering, node: ir.Node) -> None:
    """CenterCropPad -> SLICE (crop) then PAD (see module docstring); sizes from the static shapes."""
    rule = Rule(lw, node)
    x = rule.data(0)
    y = rule.result()
    crop_size = [min(i, o) for i, o in zip(x.shape, y.shape, strict=True)]
    begin = [(i - o) // 2 if i > o else 0 for i, o in zip(x.shape, y.shape, strict=True)]
    current = x
    if crop_size != list(x.shape):
        current = rule.op(
            "SLICE",
            [x, rule.const(begin, np.int32), rule.const(crop_size, np.int32)],
            crop_size,
            x.dtype,
            "SliceOptions",
            quant=x.quant,
        )
    pads = [((o - i) // 2, o - i - (o - i) // 2) if o > i else (0, 0) for i, o in zip(x.shape, y.shape, strict=True)]
    if any(p != (0, 0) for p in pads):
        # int8 PAD fills with the zero point: exactly 0, as ONNX pads.
        paddings = rule.const(pads, np.int32)
        current = rule.op("PAD", [current, paddings], y.shape, x.dtype, "PadOptions", quant=x.quant)
    rule.finish(current)


def trilu(lw: Lowering, node: ir.Node) -> None:
    """Trilu -> SELECT_V2(GREATER_EQUAL/LESS_EQUAL(col - row, k), x, 0)."""
    rule = Rule(lw, node)
    x = rule.data(0)
    rows, cols = x.shape[-2:]
    # SELECT_V2 broadcasts up to 5-D: the leading dimensions are folded into one.
    x = rule.reshape(x, [int(np.prod(x.shape[:-2])), rows, cols])
    offset = np.arange(cols)[None, :] - np.arange(rows)[:, None]
    upper = attr_int(node, "upper", 1)
    has_k = optional_input(node, 1) is not None
    k_array = const_array(node.inputs[1]) if has_k else np.array(0)
    if k_array is not None:
        k = int(np.ravel(k_array)[0]) if np.size(k_array) else 0
        mask = rule.const(offset >= k if upper else offset <= k)
    else:
        k_t = rule.reshape(rule.int32(1), [])
        compare = ("GREATER_EQUAL", "GreaterEqualOptions") if upper else ("LESS_EQUAL", "LessEqualOptions")
        mask = rule.op(compare[0], [rule.const(offset.astype(np.int32)), k_t], [rows, cols], BOOL, compare[1])
    kept = rule.op("SELECT_V2", [mask, x, rule.zero_like(x)], x.shape, x.dtype, "SelectV2Options", quant=x.quant)
    rule.finish(kept)


def one_hot(lw: Lowering, node: ir.Node) -> None:
    """OneHot -> ONE_HOT, negative indices moved up by ``depth`` (ONNX counts them back)."""
    rule = Rule(lw, node)
    depth_array = const_array(node.inputs[1])
    y_shape = node.outputs[0].shape
    axis = attr_int(node, "axis", -1) % (len(node.inputs[0].shape or ()) + 1)
    if depth_array is not None:
        depth = int(np.ravel(depth_array)[0])
    elif y_shape is not None and isinstance(y_shape[axis], int):
        depth = int(y_shape[axis])  # a run-time depth: the static output shape holds it
    else:
        raise unsupported(node, "a run-time depth with no static output shape")
    indices = lw.read(node.inputs[0], False)
    if indices.dtype.kind == "f":
        indices = rule.cast(rule.cast(indices, F32), I32)  # ONNX casts non-integer indices, truncating
    shape = indices.shape
    # Flat while comparing with a scalar: TFLite broadcasts comparisons up to 4-D.
    indices = rule.reshape(rule.cast(indices, I32), [int(np.prod(shape))])
    negative = rule.op("LESS", [indices, rule.const(0, np.int32)], indices.shape, BOOL, "LessOptions")
    moved = rule.op("ADD", [indices, rule.const(depth, np.int32)], indices.shape, I32, "AddOptions")
    indices = rule.op("SELECT_V2", [negative, moved, indices], indices.shape, I32, "SelectV2Options")
    indices = rule.reshape(indices, shape)
    values = const_array(node.inputs[2])
    y = rule.result()
    if values is not None:
        off, on = (rule.const(np.array(v, y.dtype)) for v in np.ravel(values)[:2])
    else:
        pair = rule.data(2) if y.dtype.kind == "f" else lw.read(node.inputs[2], False)
        off, on = (rule.reshape(slice_row(rule, pair, i), []) for i in (0, 1))
    inputs = [indices, rule.const(depth, np.int32), on, off]
    rule.finish(rule.op("ONE_HOT", inputs, y.shape, y.dtype, "OneHotOptions", out=y, axis=axis))
