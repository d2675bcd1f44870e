"""Bias correction: cancel the mean output shift that rounding the weights adds.

Rounding a weight to int8 adds ``dW = DQ(Q(W)) - W``; on inputs with per-channel mean ``E[x]``
that shifts every output channel's mean by ``dW . E[x]``, the same on every input, so it is a bias
error, not noise (Nagel et al., "Data-Free Quantization", 2019, section 4.2; here ``E[x]`` is
measured on the calibration data rather than inferred from BatchNorm). For every int8 Conv and
Gemm with a constant bias the bias becomes ``b - dW . E[x]``, so that

    E[DQ(Q(W)) x + b'] = E[W x + b]

exactly for a 1x1 convolution or a Gemm. For larger kernels the shift is the mean of
``Conv(E[x], dW)`` over the input's shape with the node's own padding, so taps that fall into the
padding count zero (on small feature maps, PP-OCRv5's 48-pixel-high lines, most of them do).
Depthwise convolutions gain most: nine weights per channel
leave large relative rounding errors. A bias shared by several nodes is left alone. Opt-in
(``bias_correction=True``, ``--bias-correction``): on the zoo it lifts MobileNetV2's and
EfficientNet's output cosine but lowers PP-OCRv5's (README, "Bias correction"). Runs after calibration
(which keeps the means, ``calibrate.channel_axes``) and before ``quantize-bias``.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.annotations import Decision, get_channel_mean, get_decision, get_float_value, get_quant, set_float_value
from qcc.irutils import attr_float, attr_int, const_array
from qcc.optable import WEIGHT_INPUT
from qcc.passes._base import QccPass
from qcc.runtime import session


class BiasCorrectionPass(QccPass):
    """Subtracts each int8 Conv/Gemm's weight-rounding shift from its bias (see module docstring)."""

    name = "bias-correction"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if not self.ctx.options.bias_correction:
            return ir.passes.PassResult(model, False)
        modified = False
        for node in model.graph:
            shift = _shift(node)
            if shift is None:
                continue
            bias = node.inputs[2]
            set_float_value(bias, const_array(bias))  # the float reference keeps the original
            corrected = (const_array(bias).astype(np.float64) - shift).astype(np.float32)
            bias.const_value = ir.Tensor(corrected, name=bias.name)
            modified = True
        return ir.passes.PassResult(model, modified)


def channel_axes(graph: ir.Graph) -> dict[str, int]:
    """The data input of every node this pass may correct, with its channel axis (1: NCHW for
    Conv, the K columns of a Gemm's A): what calibration keeps the per-channel mean of."""
    return {node.inputs[0].name: 1 for node in graph if _correctable(node)}


def _correctable(node: ir.Node) -> bool:
    """An int8 Conv, or Gemm without transA, with a data input and a private constant bias."""
    if node.op_type not in ("Conv", "Gemm") or len(node.inputs) < 3 or node.inputs[0] is None:
        return False
    if getattr(get_decision(node), "decision", None) != Decision.INT8 or attr_int(node, "transA", 0):
        return False
    bias = node.inputs[2]
    return bias is not None and const_array(bias) is not None and len(bias.uses()) == 1 and not bias.is_graph_output()


def _shift(node: ir.Node) -> np.ndarray | None:
    """``dW . E[x]`` per output channel, or None where the node is not corrected."""
    if not _correctable(node):
        return None
    data, weight, bias = node.inputs[0], node.inputs[WEIGHT_INPUT], node.inputs[2]
    quant, measured = get_quant(weight), get_channel_mean(data)
    array = const_array(weight)
    if quant is None or quant.scale is None or quant.block_size is not None or measured is None or array is None:
        return None
    mean, shape = measured
    original = get_float_value(weight)  # weight-rounding may have put the weight on its grid already
    error = quant.grid_values(array).astype(np.float64) - (array if original is None else original)
    if node.op_type == "Conv":
        groups = attr_int(node, "group", 1)
        if mean.shape[0] != groups * error.shape[1] or shape is None or len(shape) != error.ndim:
            return None
        return _conv_shift(node, error, mean, shape)
    if node.op_type == "Gemm":
        matrix = error.T if attr_int(node, "transB", 0) else error  # K x N
        if matrix.shape[0] != mean.shape[0] or const_array(bias).shape != (matrix.shape[1],):
            return None
        return attr_float(node, "alpha", 1.0) * (mean @ matrix)
    return None


def _conv_shift(node: ir.Node, error: np.ndarray, mean: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The mean over output positions of ``Conv(E[x], dW)`` with the node's own padding, strides
    and dilations, ``E[x]`` constant per channel over the input's spatial shape: where the kernel
    reaches into the padding it reads zeros, not the mean (small feature maps: most of it)."""
    image = np.broadcast_to(mean.astype(np.float32).reshape(1, -1, *([1] * (len(shape) - 2))),
                            (1, mean.shape[0], *shape[2:])).copy()
    attributes = {k: v.value for k, v in node.attributes.items() if k in _CONV_ATTRIBUTES}
    conv = ir.node("Conv", [ir.Value(name="x", shape=ir.Shape(image.shape), type=ir.TensorType(ir.DataType.FLOAT)),
                            ir.Value(name="w", shape=ir.Shape(error.shape), type=ir.TensorType(ir.DataType.FLOAT))],
                   attributes=attributes)
    conv.outputs[0].name = "y"
    graph = ir.Graph(conv.inputs, conv.outputs, nodes=[conv], opset_imports={"": 17})
    model = ir.Model(graph, ir_version=8)
    out = session(model, level="disable", what="the bias correction of " + node.name).run(
        None, {"x": image, "w": error.astype(np.float32)}
    )[0]
    return out.reshape(out.shape[1], -1).mean(axis=1).astype(np.float64)


_CONV_ATTRIBUTES = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")
