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
``f = 1, beta - mean = c``. Exporters emit them for a conv's bias (Paddle: Conv -> Add) and for
learnable affine blocks; folding them avoids requantizing after every one of them.
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
    """Folds batch norms and constant per-channel Mul/Add into their weighted producer (see module docstring)."""

    name = "fold-batchnorm"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for bn in list(graph):
            if bn.op_type in _AFFINE and bn.domain == "" and _fold(graph, bn):
                modified = True
        if modified:
            common.RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified)


def _fold(graph: ir.Graph, node: ir.Node) -> bool:
    x = node.inputs[0]
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
    affine = _channel_affine(node, channels, 2 if producer.op_type == "Gemm" else weight.ndim)
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

    w_name = producer.inputs[1].name or "weight"
    producer.replace_input_with(1, add_initializer(graph, f"{w_name}_folded", new_weight.astype(weight.dtype)))
    b_value = add_initializer(graph, f"{producer.name or w_name}_bias_folded", new_bias.astype(weight.dtype))
    if len(producer.inputs) < 3:
        producer.resize_inputs(3)
    producer.replace_input_with(2, b_value)
    if producer.op_type == "Gemm":
        producer.attributes["beta"] = ir.AttrFloat32("beta", 1.0)
    if not remove_node_bypassing(graph, node):
        return False
    logger.debug("folded %s (%s) into %s", node.name, node.op_type, producer.name)
    return True


def _channel_affine(node: ir.Node, channels: int, rank: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Returns (factor, shift) with ``node(x) = factor[c] * x + shift[c]`` on channel axis 1, or None."""
    if node.op_type == "BatchNormalization":
        params = [const_array(v) for v in node.inputs[1:5]]
        if attr_int(node, "training_mode", 0) != 0 or any(p is None for p in params):
            return None
        gamma, beta, mean, var = (p.astype(np.float64) for p in params)  # type: ignore[union-attr]
        factor = gamma / np.sqrt(var + attr_float(node, "epsilon", 1e-5))
        return factor, beta - mean * factor
    constant = const_array(node.inputs[1]) if len(node.inputs) == 2 else None
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
