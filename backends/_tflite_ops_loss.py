"""TFLite lowering rules for the training losses NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss.

Both are a gather and a reduction, so they are lowered instead of refused as training operators:

* ``NegativeLogLikelihoodLoss(x [N, C, d..], t [N, d..], w [C])``, computed as ``[N, C, D]``
  (the ``d..`` flattened: XNNPACK reduces up to rank 6): with
  ``h = ONE_HOT(t, C, axis=1)`` (all zeros for an index outside ``[0, C)``, which is where an
  ``ignore_index`` inside ``[0, C)`` is moved), ``hw = h * w`` (``h`` without weights) and
  ``loss = -SUM(x * hw, axis=1)``. ``reduction``: ``none`` keeps it, ``sum`` SUMs it, ``mean``
  divides that sum by ``SUM(hw)`` (the weights of the targets not ignored).
* ``SoftmaxCrossEntropyLoss(x, t, w)``: the same on ``log_prob = x - m - LOG(SUM(EXP(x - m), 1))``
  with ``m = REDUCE_MAX(x, 1)`` (the log-softmax over the class axis, any rank); ``log_prob`` is
  the optional second output.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_rule import BOOL, F32, I32, Rule, attr_str, optional_input
from qcc.backends._tflite_ops_window import unsupported
from qcc.backends._tflite_writer import Tensor
from qcc.irutils import const_array

_REDUCTIONS = ("none", "sum", "mean")


def _axes(rule: Rule, *axes: int) -> Tensor:
    return rule.const(np.array(axes, np.int32))


def _one_hot_targets(rule: Rule, shape) -> Tensor:
    """``ONE_HOT`` of the targets (input 1) as float32 ``[N, C, D]``; ignored targets give zeros."""
    node = rule.node
    batch, classes, spatial = shape
    targets = rule.reshape(rule.cast(rule.lw.read(node.inputs[1], False), I32), [batch, spatial])
    attr = node.attributes.get("ignore_index")
    if attr is not None and 0 <= attr.as_int() < classes:
        # An ignored class inside [0, C) moves to -1, whose one-hot row is all zeros.
        ignored = rule.op("EQUAL", [targets, rule.const(np.int32(attr.as_int()))], targets.shape, BOOL, "EqualOptions")
        targets = rule.op(
            "SELECT_V2", [ignored, rule.const(np.int32(-1)), targets], targets.shape, I32, "SelectV2Options"
        )
    inputs = [targets, rule.const(np.int32(classes)), rule.const(np.float32(1)), rule.const(np.float32(0))]
    return rule.op("ONE_HOT", inputs, list(shape), F32, "OneHotOptions", axis=1)


def _flat_shape(node: ir.Node, shape) -> list[int]:
    """``[N, C, d..]`` as the ``[N, C, D]`` the rules compute in (XNNPACK reduces up to rank 6)."""
    if len(shape) < 2:
        raise unsupported(node, f"an input of rank {len(shape)} (the loss takes [N, C, d..])")
    return [shape[0], shape[1], int(np.prod(shape[2:]))]


def _negative_log_likelihood(rule: Rule, log_prob: Tensor, reduced) -> None:
    """Writes output 0, the loss of ``log_prob [N, C, D]`` at the targets, shaped ``reduced`` (module docstring)."""
    node = rule.node
    reduction = attr_str(node, "reduction", "mean")
    if reduction not in _REDUCTIONS:
        raise unsupported(node, f"reduction {reduction!r}")
    shape = list(log_prob.shape)
    picked = _one_hot_targets(rule, shape)
    if optional_input(node, 2) is not None:
        broadcast = [1, shape[1], 1]
        weights = const_array(node.inputs[2])
        if weights is not None:
            weight = rule.const(weights.astype(np.float32).reshape(broadcast))
        else:
            weight = rule.reshape(rule.cast(rule.lw.read(node.inputs[2], False), F32), broadcast)
        picked = rule.op("MUL", [picked, weight], shape, F32, "MulOptions")
    product = rule.op("MUL", [log_prob, picked], shape, F32, "MulOptions")
    loss = rule.op("SUM", [product, _axes(rule, 1)], [shape[0], shape[2]], F32, "ReducerOptions", keep_dims=False)
    loss = rule.op("NEG", [loss], loss.shape, F32)
    if reduction == "none":
        rule.finish(rule.reshape(loss, list(reduced)))
        return
    loss = rule.op("SUM", [loss, _axes(rule, 0, 1)], [], F32, "ReducerOptions", keep_dims=False)
    if reduction == "mean":
        total = rule.op("SUM", [picked, _axes(rule, 0, 1, 2)], [], F32, "ReducerOptions", keep_dims=False)
        loss = rule.op("DIV", [loss, total], [], F32, "DivOptions")
    rule.finish(loss)


def negative_log_likelihood_loss(lw: Lowering, node: ir.Node) -> None:
    """NegativeLogLikelihoodLoss -> ONE_HOT, MUL, SUM, NEG (module docstring)."""
    rule = Rule(lw, node)
    x = rule.data(0)
    shape = list(x.shape)
    flat = rule.reshape(x, _flat_shape(node, shape))
    _negative_log_likelihood(rule, flat, [shape[0], *shape[2:]])


def softmax_cross_entropy_loss(lw: Lowering, node: ir.Node) -> None:
    """SoftmaxCrossEntropyLoss -> a log-softmax over axis 1, then the NLL loss (module docstring)."""
    rule = Rule(lw, node)
    x = rule.data(0)
    shape = list(x.shape)
    flat_shape = _flat_shape(node, shape)
    x = rule.reshape(x, flat_shape)
    kept = [flat_shape[0], 1, flat_shape[2]]
    peak = rule.op("REDUCE_MAX", [x, _axes(rule, 1)], kept, F32, "ReducerOptions", keep_dims=True)
    shifted = rule.op("SUB", [x, peak], flat_shape, F32, "SubOptions")
    exponent = rule.op("EXP", [shifted], flat_shape, F32)
    total = rule.op("SUM", [exponent, _axes(rule, 1)], kept, F32, "ReducerOptions", keep_dims=True)
    log_total = rule.op("LOG", [total], kept, F32)
    log_prob = rule.op("SUB", [shifted, log_total], flat_shape, F32, "SubOptions")
    if len(node.outputs) > 1 and node.outputs[1] is not None:
        # A RESHAPE (or CAST) copy into output 1: the loss below reads log_prob itself.
        y = rule.output(1)
        written = rule.reshape(log_prob, shape, out=y if y.dtype == F32 else None)
        if written is not y:
            rule.finish(written, 1)
    _negative_log_likelihood(rule, log_prob, [shape[0], *shape[2:]])


LOWERINGS = {
    "NegativeLogLikelihoodLoss": negative_log_likelihood_loss,
    "SoftmaxCrossEntropyLoss": softmax_cross_entropy_loss,
}
