"""TFLite lowering rule for NonMaxSuppression: one NON_MAX_SUPPRESSION_V4 per batch and class.

ONNX selects, for every batch ``b`` and class ``c``, up to ``max_output_boxes_per_class`` boxes
greedily by score (``score > score_threshold``; a box is dropped when its IoU with a selected one
is ``> iou_threshold``), and writes ``[num_selected, 3]`` int64 rows ``(b, c, box)`` in that order.
LiteRT's NON_MAX_SUPPRESSION_V4 does one ``(b, c)`` on ``[N, 4]`` corner boxes (any diagonal
pair, as ONNX's ``center_point_box=0``) and drops a box when IoU ``>= iou_threshold``; so the
threshold it gets is the next float32 above ``max(iou_threshold, 0)`` (a BITCAST, +1, BITCAST at
run time; ONNX never drops a disjoint box, which a negative threshold would). Centre boxes
``[xc, yc, w, h]`` become corners ``[yc - h/2, xc - w/2, yc + h/2, xc + w/2]``.

The number of rows depends on the values, and qcc writes static shapes: the rule lowers the
length ``k`` the model declares (``int64[k, 3]``) and refuses an undeclared one. Each ``(b, c)`` selects up to
``M = min(N, k)`` boxes (``min`` with a constant ``max_output_boxes_per_class``; a run-time one
masks the positions past it), row ``j`` of ``(b, c)`` is kept when ``j < valid``, and kept rows
go to slot ``CUMSUM(kept, exclusive)`` of a SCATTER_ND (``rows + 1`` into zeros, then ``- 1``):
rows past the number selected at run time are ``-1``, and selections beyond ``k`` are dropped.
LiteRT orders equal scores as its priority queue pops them, ONNX by the lower box index.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_rule import BOOL, F32, I32, Rule, optional_input
from qcc.backends._tflite_ops_window import unsupported
from qcc.backends._tflite_writer import Tensor
from qcc.irutils import attr_int, const_array

# (b, c) pairs each lowered to their own NON_MAX_SUPPRESSION_V4: beyond this many, refused.
_MAX_PAIRS = 256


def _scalar(rule: Rule, index: int, dtype) -> Tensor:
    """Run-time input ``index`` (one value) as a 0-d tensor of ``dtype``."""
    return rule.reshape(rule.cast(rule.lw.read(rule.node.inputs[index], False), dtype), [])


def _corners(rule: Rule, boxes: Tensor) -> Tensor:
    """``[B, N, 4]`` centre boxes ``[xc, yc, w, h]`` as corners ``[y1, x1, y2, x2]``."""
    shape = list(boxes.shape)
    half_shape = [*shape[:-1], 2]

    def columns(order):
        return rule.op(
            "GATHER", [boxes, rule.const(np.array(order, np.int32))], half_shape, F32, "GatherOptions", axis=2
        )

    centers = columns([1, 0])
    half = rule.op("MUL", [columns([3, 2]), rule.const(np.float32(0.5))], half_shape, F32, "MulOptions")
    low = rule.op("SUB", [centers, half], half_shape, F32, "SubOptions")
    high = rule.op("ADD", [centers, half], half_shape, F32, "AddOptions")
    return rule.op(
        "CONCATENATION", [low, high], shape, F32, "ConcatenationOptions", axis=2, fused_activation_function=0
    )


def _iou_threshold(rule: Rule) -> Tensor:
    """The threshold NON_MAX_SUPPRESSION_V4 compares with ``>=``: the float32 after ``max(t, 0)``."""
    value = optional_input(rule.node, 3)
    array = const_array(value) if value is not None else np.zeros(1, np.float32)
    if array is not None:
        limit = np.float32(max(float(np.ravel(array)[0]), 0.0))
        return rule.const(np.nextafter(limit, np.float32(np.inf), dtype=np.float32))
    limit = rule.op("MAXIMUM", [_scalar(rule, 3, F32), rule.const(np.float32(0))], [], F32, "MaximumMinimumOptions")
    bits = rule.op("BITCAST", [limit], [], I32)
    above = rule.op("ADD", [bits, rule.const(np.int32(1))], [], I32, "AddOptions")
    return rule.op("BITCAST", [above], [], F32)


def non_max_suppression(lw: Lowering, node: ir.Node) -> None:
    """NonMaxSuppression -> NON_MAX_SUPPRESSION_V4 per (batch, class), compacted (module docstring)."""
    rule = Rule(lw, node)
    out_shape = node.outputs[0].shape
    if out_shape is None or len(out_shape) != 2 or not isinstance(out_shape[0], int) or out_shape[0] == 0:
        raise unsupported(
            node,
            f"an output length that depends on the input values ({node.outputs[0].name!r} is {out_shape}), and qcc "
            "writes TFLite tensors with static shapes; it is lowered when the model declares a number of selected "
            "boxes above 0 (an output typed int64[k, 3]), rows past the number selected at run time being -1",
        )
    rows_wanted = int(out_shape[0])
    boxes, scores = rule.data(0), rule.data(1)
    batches, count = boxes.shape[0], boxes.shape[1]
    classes = scores.shape[1]
    if batches * classes > _MAX_PAIRS:
        raise unsupported(node, f"{batches * classes} (batch, class) pairs (qcc lowers up to {_MAX_PAIRS})")
    if attr_int(node, "center_point_box", 0):
        boxes = _corners(rule, boxes)
    width = min(count, rows_wanted)
    limit = None
    max_value = optional_input(node, 2)
    max_array = const_array(max_value) if max_value is not None else np.zeros(1, np.int64)
    if max_array is not None:
        width = min(width, int(np.ravel(max_array)[0]))
        if width <= 0:
            raise unsupported(node, "max_output_boxes_per_class 0 (an empty output)")
    else:
        limit = _scalar(rule, 2, I32)
    iou = _iou_threshold(rule)
    score_value = optional_input(node, 4)
    score_array = const_array(score_value) if score_value is not None else np.full(1, -np.inf, np.float32)
    if score_array is not None:
        score_limit = rule.const(np.float32(np.ravel(score_array)[0]))
    else:
        score_limit = _scalar(rule, 4, F32)
    flat_scores = rule.reshape(scores, [batches * classes, count])
    selected, valid = [], []
    for b in range(batches):
        batch_boxes = rule.op("GATHER", [boxes, rule.const(np.int32(b))], [count, 4], F32, "GatherOptions", axis=0)
        for c in range(classes):
            pair = b * classes + c
            pair_scores = rule.op(
                "GATHER", [flat_scores, rule.const(np.int32(pair))], [count], F32, "GatherOptions", axis=0
            )
            indices, number = rule.tensor([width], I32), rule.tensor([], I32)
            inputs = [batch_boxes, pair_scores, rule.const(np.int32(width)), iou, score_limit]
            lw.op("NON_MAX_SUPPRESSION_V4", inputs, [indices, number], source=node.name)
            selected.append(rule.reshape(indices, [1, width]))
            valid.append(rule.reshape(number, [1, 1]))
    _compact(rule, selected, valid, limit, classes, rows_wanted)


def _stack(rule: Rule, pieces: list[Tensor]) -> Tensor:
    if len(pieces) == 1:
        return pieces[0]
    shape = [len(pieces), pieces[0].shape[1]]
    return rule.op("CONCATENATION", pieces, shape, I32, "ConcatenationOptions", axis=0, fused_activation_function=0)


def _compact(rule: Rule, selected, valid, limit: Tensor | None, classes: int, rows_wanted: int) -> None:
    """Writes the ``[k, 3]`` output from the per-pair selections (module docstring)."""
    pairs, width = len(selected), selected[0].shape[1]
    chosen, numbers = _stack(rule, selected), _stack(rule, valid)
    if limit is not None:
        numbers = rule.op("MINIMUM", [numbers, limit], numbers.shape, I32, "MaximumMinimumOptions")
    positions = rule.const(np.arange(width, dtype=np.int32).reshape(1, width))
    kept = rule.op("LESS", [positions, numbers], [pairs, width], BOOL, "LessOptions")
    total = pairs * width
    kept = rule.reshape(kept, [total])
    rank = rule.op(
        "CUMSUM", [rule.cast(kept, I32), rule.const(np.int32(0))], [total], I32, "CumsumOptions", exclusive=True
    )
    fits = rule.op("LESS", [rank, rule.const(np.int32(rows_wanted))], [total], BOOL, "LessOptions")
    fits = rule.op("LOGICAL_AND", [kept, fits], [total], BOOL)
    slot = rule.op("SELECT_V2", [fits, rank, rule.const(np.int32(rows_wanted))], [total], I32, "SelectV2Options")
    pair_of = np.repeat(np.arange(pairs), width)
    labels = np.stack([pair_of // classes, pair_of % classes], 1).astype(np.int32) + 1
    box_column = rule.op(
        "ADD", [rule.reshape(chosen, [total, 1]), rule.const(np.int32(1))], [total, 1], I32, "AddOptions"
    )
    rows = rule.op(
        "CONCATENATION",
        [rule.const(labels), box_column],
        [total, 3],
        I32,
        "ConcatenationOptions",
        axis=1,
        fused_activation_function=0,
    )
    spread_shape = rule.const(np.array([rows_wanted + 1, 3], np.int32))
    spread = rule.op("SCATTER_ND", [rule.reshape(slot, [total, 1]), rows, spread_shape], [rows_wanted + 1, 3], I32)
    begin, size = rule.const(np.array([0, 0], np.int32)), rule.const(np.array([rows_wanted, 3], np.int32))
    head = rule.op("SLICE", [spread, begin, size], [rows_wanted, 3], I32, "SliceOptions")
    rule.finish(rule.op("SUB", [head, rule.const(np.int32(1))], [rows_wanted, 3], I32, "SubOptions"))


LOWERINGS = {"NonMaxSuppression": non_max_suppression}
