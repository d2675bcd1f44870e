"""Fold BatchNormalization, and any per-channel Mul/Add by a constant, into the Conv, ConvTranspose
or Gemm that feeds it.

Inference-mode batch norm is a per-channel affine map ``y = f * (x - mean) + beta`` with
``f = gamma / sqrt(var + epsilon)``. When ``x = W * a + b`` comes from a weighted op, it folds:

    W' = W * f   (f broadcast along the weight's output-channel axis)
    b' = f * (b - mean) + beta

For Gemm ``Y = alpha * A @ B + beta_g * C`` the folded bias is ``f * (beta_g * C - mean) + beta``
with ``beta_g`` set to 1. Conditions: the batch norm is the only consumer of the weighted op's
output, every parameter is a constant, and the batch norm is in inference mode (one output).
New weight and bias initializers are created, so weights shared with other nodes are untouched.

``Mul(x, c)`` and ``Add(x, c)`` with a constant ``c`` that broadcasts along the channel axis only
(scalar, [C], [C, 1, 1], [1, C, 1, 1]) are the same map with ``f = c, beta - f * mean = 0`` and
``f = 1, beta - mean = c``, with the constant on either side (Mul and Add commute). Exporters emit
them for a conv's bias (Paddle: Conv -> Add) and for learnable affine blocks (Paddle's PP-LCNetV3:
``Mul(scale, x)``, constant first); folding them avoids requantizing after every one of them.

The same block after an activation feeds the next Conv: ``Conv(W, f * x + s)`` is
``Conv(W * f, x) + sum(W * s)`` per output channel, so a Mul folds into the Conv's weight along its
input-channel axis (grouped convs by group), and an Add into its bias when the Conv has no padding
(a padded border reads zeros, not ``s``).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common

from qcc.irutils import add_initializer, attr_float, attr_int, const_array, remove_node_bypassing
from qcc.passes._base import QccPass

logger = logging.getLogger(__name__)

_FOLDABLE = frozenset({"Conv", "ConvTranspose", "Gemm"})
_AFFINE = frozenset({"BatchNormalization", "Mul", "Add"})


class FoldBatchNormPass(QccPass):
    """Folds batch norms and constant per-channel Mul/Add into their weighted producer, or a Mul/Add
    into the Conv it feeds (see module docstring)."""

    name = "fold-batchnorm"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for bn in list(graph):  # in graph order: a chain after a Conv folds into it one node at a time
            if bn.op_type in _AFFINE and bn.domain == "" and _fold(graph, bn):
                modified = True
        for node in reversed(list(graph)):  # backwards: a chain ahead of a Conv folds from its end
            if node.op_type in _AFFINE and node.domain == "" and _fold_into_conv(graph, node):
                modified = True
        if modified:
            common.RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified)


def _fold(graph: ir.Graph, node: ir.Node) -> bool:
    data = _data_input(node)
    x = node.inputs[data]
    producer = x.producer() if x is not None else None
    if producer is None or producer.op_type not in _FOLDABLE or producer.domain != "":
        return False
    if len(node.outputs) > 1 and any(o.uses() or o.is_graph_output() for o in node.outputs[1:]):
        return False
    if len(x.uses()) != 1 or x.is_graph_output():
        return False
    weight = const_array(producer.inputs[1]) if len(producer.inputs) > 1 else None
    bias_value = producer.inputs[2] if len(producer.inputs) > 2 else None
    bias = const_array(bias_value)
    if weight is None or (bias_value is not None and bias is None):
        return False
    trans_b = attr_int(producer, "transB", 0) == 1
    if producer.op_type == "Gemm":
        channels = weight.shape[0] if trans_b else weight.shape[1]
    elif producer.op_type == "Conv":
        channels = weight.shape[0]
    else:
        channels = weight.shape[1] * attr_int(producer, "group", 1)
    affine = _channel_affine(node, channels, 2 if producer.op_type == "Gemm" else weight.ndim, 1 - data)
    if affine is None:
        return False
    factor, shift = affine

    if producer.op_type == "Gemm":
        new_weight = weight * (factor[:, None] if trans_b else factor[None, :])
        base = attr_float(producer, "beta", 1.0) * bias if bias is not None else 0.0
        new_bias = np.broadcast_to(factor * base + shift, np.broadcast(base, factor).shape)
    else:
        new_weight = _scale_conv_weight(producer, weight, factor)
        if new_weight is None:
            return False
        new_bias = factor * (bias if bias is not None else 0.0) + shift
    if new_weight.shape != weight.shape or new_bias.shape[-1] != channels:
        return False
    if not (np.all(np.isfinite(new_weight)) and np.all(np.isfinite(new_bias))):
        return False

    _set_weight_and_bias(graph, producer, new_weight, new_bias)
    if producer.op_type == "Gemm":
        producer.attributes["beta"] = ir.AttrFloat32("beta", 1.0)
    if not remove_node_bypassing(graph, node, keep_input=data):
        return False
    logger.debug("folded %s (%s) into %s", node.name, node.op_type, producer.name)
    return True


def _fold_into_conv(graph: ir.Graph, node: ir.Node) -> bool:
    """Folds ``y = f[c] * x + s[c]`` (a constant Mul or Add) into the only Conv reading ``y``.

    ``Conv(W, f * x)`` is ``Conv(W * f[in channel], x)`` exactly, zero padding included. A shift is
    exact only without padding: ``Conv(W, x + s)`` adds ``sum(W[o, i, ...] * s[i])`` to output
    channel ``o``, but a padded border reads zeros, not ``s``. A padded Conv behind ``Mul -> Add``
    still takes the scale: ``f * x + s = f * (x + s / f)`` (f nonzero), so the Add moves ahead of
    the Mul and the Mul folds.
    """
    target = _conv_reading(node)
    if target is None:
        return False
    conv, channels, data = target
    affine = _channel_affine(node, channels, len(node.inputs[data].shape), 1 - data)
    if affine is None:
        return False
    factor, shift = affine
    weight = const_array(conv.inputs[1])
    bias = const_array(conv.inputs[2]) if len(conv.inputs) > 2 else None
    new_bias = bias.astype(np.float64) if bias is not None else np.zeros(weight.shape[0])
    if np.any(shift != 0):
        if _padded(conv):
            return _move_shift_ahead_of_scale(graph, node, data, shift, conv)
        new_bias = new_bias + _per_input_channel(conv, weight, shift).reshape(weight.shape[0], -1).sum(1)
    new_weight = _per_input_channel(conv, weight, factor)
    if not (np.all(np.isfinite(new_weight)) and np.all(np.isfinite(new_bias))):
        return False
    _set_weight_and_bias(graph, conv, new_weight, new_bias if bias is not None or np.any(shift != 0) else None)
    if not remove_node_bypassing(graph, node, keep_input=data):
        return False
    logger.debug("folded %s (%s) into the input of %s", node.name, node.op_type, conv.name)
    return True


def _conv_reading(node: ir.Node) -> tuple[ir.Node, int, int] | None:
    """(conv, its input channels, node's data input) when a Mul/Add's output feeds only a Conv's data input."""
    if node.op_type not in ("Mul", "Add") or len(node.outputs) != 1:
        return None
    out = node.outputs[0]
    uses = out.uses()
    if out.is_graph_output() or len(uses) != 1 or uses[0].idx != 0:
        return None
    conv = uses[0].node
    if conv.op_type != "Conv" or conv.domain != "":
        return None
    weight = const_array(conv.inputs[1]) if len(conv.inputs) > 1 else None
    bias_value = conv.inputs[2] if len(conv.inputs) > 2 else None
    if weight is None or weight.dtype.kind != "f" or (bias_value is not None and const_array(bias_value) is None):
        return None
    channels = weight.shape[1] * attr_int(conv, "group", 1)
    data = _data_input(node)
    x_shape = node.inputs[data].shape
    if x_shape is None or len(x_shape) != weight.ndim or x_shape[1] != channels:
        return None  # the constant could broadcast x to more channels: the Conv would read fewer
    return conv, channels, data


def _padded(conv: ir.Node) -> bool:
    auto_pad = conv.attributes.get("auto_pad")
    pads = conv.attributes.get("pads")
    if auto_pad is not None and auto_pad.as_string() not in ("", "NOTSET", "VALID"):
        return True
    return pads is not None and any(pads.as_ints())


def _per_input_channel(conv: ir.Node, weight: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """``weight * vector[input channel]``: group g's output channels read input channels g*I/G..."""
    groups = attr_int(conv, "group", 1)
    per_group = weight.shape[1]
    group_of_output = np.arange(weight.shape[0]) // (weight.shape[0] // groups)
    channel = group_of_output[:, None] * per_group + np.arange(per_group)[None, :]  # [O, I/G]
    return weight * vector[channel].reshape(*channel.shape, *(1,) * (weight.ndim - 2))


def _set_weight_and_bias(graph: ir.Graph, conv: ir.Node, weight: np.ndarray, bias: np.ndarray | None) -> None:
    """Gives a weighted node new weight (and bias) initializers: the old ones may be shared."""
    dtype = const_array(conv.inputs[1]).dtype
    w_name = conv.inputs[1].name or "weight"
    conv.replace_input_with(1, add_initializer(graph, f"{w_name}_folded", weight.astype(dtype)))
    if bias is not None:
        if len(conv.inputs) < 3:
            conv.resize_inputs(3)
        conv.replace_input_with(2, add_initializer(graph, f"{conv.name or w_name}_bias_folded", bias.astype(dtype)))


def _move_shift_ahead_of_scale(graph: ir.Graph, add: ir.Node, data: int, shift: np.ndarray, conv: ir.Node) -> bool:
    """``Mul(x, f) -> Add(s) -> padded Conv`` becomes ``Add(x, s / f) -> Conv(W * f)``."""
    scaled = add.inputs[data]
    mul = scaled.producer()
    if mul is None or mul.op_type != "Mul" or mul.domain != "" or len(scaled.uses()) != 1 or scaled.is_graph_output():
        return False
    mul_data = _data_input(mul)
    affine = _channel_affine(mul, len(shift), len(scaled.shape), 1 - mul_data)
    x = mul.inputs[mul_data]
    if affine is None or np.any(affine[0] == 0) or x.shape != scaled.shape:
        return False
    factor = affine[0]
    weight = const_array(conv.inputs[1])
    new_weight = _per_input_channel(conv, weight, factor)
    unscaled = (shift / factor).reshape(1, -1, *(1,) * (len(scaled.shape) - 2))
    if not (np.all(np.isfinite(new_weight)) and np.all(np.isfinite(unscaled))):
        return False
    dtype = weight.dtype
    add.replace_input_with(1 - data, add_initializer(graph, f"{add.name or 'shift'}_unscaled", unscaled.astype(dtype)))
    add.replace_input_with(data, x)
    _set_weight_and_bias(graph, conv, new_weight, None)
    graph.remove(mul, safe=True)
    logger.debug("folded %s (Mul) into %s, ahead of %s", mul.name, conv.name, add.name)
    return True


def _data_input(node: ir.Node) -> int:
    """The index of a Mul/Add's non-constant input: Mul and Add commute, and exporters write the
    constant on either side (Paddle: ``Mul(scale, x)``). Batch norm's data is input 0."""
    if node.op_type in ("Mul", "Add") and len(node.inputs) == 2 and const_array(node.inputs[0]) is not None:
        return 1
    return 0


def _channel_affine(
    node: ir.Node, channels: int, rank: int, constant_input: int = 1
) -> tuple[np.ndarray, np.ndarray] | None:
    """Returns (factor, shift) with ``node(x) = factor[c] * x + shift[c]`` on channel axis 1, or None.

    ``constant_input`` is which input of a Mul/Add holds the constant.
    """
    if node.op_type == "BatchNormalization":
        params = [const_array(v) for v in node.inputs[1:5]]
        if attr_int(node, "training_mode", 0) != 0 or any(p is None for p in params):
            return None
        gamma, beta, mean, var = (p.astype(np.float64) for p in params)  # type: ignore[union-attr]
        factor = gamma / np.sqrt(var + attr_float(node, "epsilon", 1e-5))
        return factor, beta - mean * factor
    constant = const_array(node.inputs[constant_input]) if len(node.inputs) == 2 else None
    if constant is None or constant.dtype.kind != "f" or constant.ndim > rank:
        return None
    shape = (1,) * (rank - constant.ndim) + constant.shape
    if any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] not in (1, channels):
        return None
    vector = np.broadcast_to(constant.astype(np.float64).reshape(-1), (channels,))
    if node.op_type == "Mul":
        return vector, np.zeros(channels)
    return np.ones(channels), vector  # Add


def _scale_conv_weight(conv: ir.Node, weight: np.ndarray, factor: np.ndarray) -> np.ndarray | None:
    extra = (1,) * (weight.ndim - 2)
    if conv.op_type == "Conv":
        if weight.shape[0] != factor.shape[0]:
            return None
        return weight * factor.reshape(-1, 1, *extra)
    groups = attr_int(conv, "group", 1)
    in_channels, out_per_group = weight.shape[0], weight.shape[1]
    if out_per_group * groups != factor.shape[0]:
        return None
    grouped = weight.reshape(groups, in_channels // groups, out_per_group, *weight.shape[2:])
    return (grouped * factor.reshape(groups, 1, out_per_group, *extra)).reshape(weight.shape)
