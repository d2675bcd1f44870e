"""Fold BatchNormalization into the Conv, ConvTranspose or Gemm that feeds it.

Inference-mode batch norm is a per-channel affine map ``y = f * (x - mean) + beta`` with
``f = gamma / sqrt(var + epsilon)``. When ``x = W * a + b`` comes from a weighted op, it folds:

    W' = W * f   (f broadcast along the weight's output-channel axis)
    b' = f * (b - mean) + beta

For Gemm ``Y = alpha * A @ B + beta_g * C`` the folded bias is ``f * (beta_g * C - mean) + beta``
with ``beta_g`` set to 1. Conditions: the batch norm is the only consumer of the weighted op's
output, every parameter is a constant, and the batch norm is in inference mode (one output).
New weight and bias initializers are created, so weights shared with other nodes are untouched.
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


class FoldBatchNormPass(QccPass):
    """Folds inference-mode BatchNormalization into its weighted producer (see module docstring)."""

    name = "fold-batchnorm"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for bn in list(graph):
            if bn.op_type == "BatchNormalization" and bn.domain == "" and _fold(graph, bn):
                modified = True
        if modified:
            common.RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified)


def _fold(graph: ir.Graph, bn: ir.Node) -> bool:
    x = bn.inputs[0]
    producer = x.producer() if x is not None else None
    if producer is None or producer.op_type not in _FOLDABLE or producer.domain != "":
        return False
    if len(bn.outputs) > 1 and any(o.uses() or o.is_graph_output() for o in bn.outputs[1:]):
        return False
    if attr_int(bn, "training_mode", 0) != 0 or len(x.uses()) != 1 or x.is_graph_output():
        return False
    params = [const_array(v) for v in bn.inputs[1:5]]
    weight = const_array(producer.inputs[1]) if len(producer.inputs) > 1 else None
    if weight is None or any(p is None for p in params):
        return False
    gamma, beta, mean, var = (p.astype(np.float64) for p in params)  # type: ignore[union-attr]
    factor = gamma / np.sqrt(var + attr_float(bn, "epsilon", 1e-5))
    channels = factor.shape[0]
    bias_value = producer.inputs[2] if len(producer.inputs) > 2 else None
    bias = const_array(bias_value)
    if bias_value is not None and bias is None:
        return False

    if producer.op_type == "Gemm":
        trans_b = attr_int(producer, "transB", 0)
        new_weight = weight * (factor[:, None] if trans_b else factor[None, :])
        beta_g = attr_float(producer, "beta", 1.0)
        base = beta_g * bias if bias is not None else 0.0
        new_bias = np.broadcast_to(factor * (base - mean) + beta, np.broadcast(base, factor).shape)
    else:
        new_weight = _scale_conv_weight(producer, weight, factor)
        if new_weight is None:
            return False
        new_bias = factor * ((bias if bias is not None else 0.0) - mean) + beta
    if new_weight.shape != weight.shape or (channels != new_bias.shape[-1]):
        return False

    w_name = producer.inputs[1].name or "weight"
    producer.replace_input_with(1, add_initializer(graph, f"{w_name}_bnfolded", new_weight.astype(weight.dtype)))
    b_value = add_initializer(graph, f"{producer.name or w_name}_bias_bnfolded", new_bias.astype(weight.dtype))
    if len(producer.inputs) < 3:
        producer.resize_inputs(3)
    producer.replace_input_with(2, b_value)
    if producer.op_type == "Gemm":
        producer.attributes["beta"] = ir.AttrFloat32("beta", 1.0)
    if not remove_node_bypassing(graph, bn):
        return False
    logger.debug("folded %s into %s", bn.name, producer.name)
    return True


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
