"""The integer-exact simulation of a tflite artifact: what LiteRT's int8 kernels compute, in ONNX.

The QDQ simulation computes each int8 Conv/Gemm/MatMul as ``Q(op(DQ(x), DQ(w)) + DQ(b))`` in
float32, so the float accumulation lands on the other side of a rounding tie on about one output
in 10^5. XNNPACK computes the exact int32 accumulation and requantizes once::

    acc = sum((x_q - z_x) * w_q) + b_q                      # exact integers
    y_q = saturate(round_half_even(f32(acc) * m) + z_y)     # m = (f32(s_x) * f32(s_w)) / f32(s_y)

Deep depthwise networks amplify those rare flips layer by layer (MobileNetV2: a single-element
gain of up to 17 steps), so the float simulation is a poor oracle there. This rewrite makes each
such node compute the formula above: ``DQ(x_q, 1, z_x)`` is ``x_q - z_x`` exactly, the op runs on
integer-valued float32 weights and bias (exact while every partial sum stays below 2^24, true for
the accumulations these kernels see), ``Mul(m)`` is XNNPACK's float32 product and
``QuantizeLinear(., 1, z_y)`` its rounding and saturation. Measured on the zoo (LiteRT 2.3.0):
EfficientNet-Lite0's XNNPACK output becomes bit-identical to the simulation (was 98% within one
step). The builtin kernels round twice (a fixed-point multiply, then a rounding shift) and stay
about as far from either simulation.

XNNPACK's int8 ADD and MEAN do not round exactly either, and are modelled the same way
(``_rewrite_add``: fixed-point multipliers of about 21 bits and one rounding shift; ``_rewrite_mean``:
a float32 requantization with the zero points folded into one bias). With all three, MobileNetV2's
XNNPACK output is bit-identical to the simulation on all 48 zoo eval images (94.3% within one step
with exact ADD/MEAN).

Works on the materialized simulation in place (a model ``materialize_qdq`` already cloned).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common

from qcc.irutils import NameAllocator, add_initializer, attr_float, attr_int, const_array

_EXACT_OPS = ("Conv", "Gemm", "MatMul")


def integer_exact(model: ir.Model) -> ir.Model:
    """Rewrites every int8 Conv/Gemm/MatMul of a QDQ simulation as integer arithmetic (module docstring).

    Returns:
        The same model, rewritten in place.
    """
    graph = model.graph
    names = NameAllocator(graph)
    for node in list(graph):
        if node.op_type in _EXACT_OPS and node.domain in ("", "ai.onnx"):
            _rewrite(graph, node, names)
        elif node.op_type == "Add" and node.domain in ("", "ai.onnx"):
            _rewrite_add(graph, node, names)
        elif node.op_type == "GlobalAveragePool" and node.domain in ("", "ai.onnx"):
            _rewrite_mean(graph, node, names)
    # The float weights and DequantizeLinear nodes the rewritten ops read are dead now.
    common.RemoveUnusedNodesPass()(model)
    return model


def _dequantized(value: ir.Value | None) -> tuple[ir.Node, np.ndarray, np.ndarray] | None:
    """The DequantizeLinear producing ``value`` with its constant scale and zero point, or None."""
    node = value.producer() if value is not None else None
    if node is None or node.op_type != "DequantizeLinear" or len(node.inputs) < 3:
        return None
    scale, zero_point = const_array(node.inputs[1]), const_array(node.inputs[2])
    if scale is None or zero_point is None:
        return None
    return node, scale.astype(np.float32), zero_point


class _Chain:
    """Appends the nodes of one rewrite, each output named after its node."""

    def __init__(self, graph: ir.Graph, base: str, names: NameAllocator) -> None:
        self.graph, self.base, self.names, self.nodes = graph, base, names, []

    def const(self, tag: str, array: np.ndarray) -> ir.Value:
        return add_initializer(self.graph, self.names.new(f"{self.base}_{tag}"), array, exact=True)

    def op(self, op_type: str, inputs: list, tag: str, **attributes) -> ir.Value:
        step = ir.node(op_type, inputs, attributes=attributes, name=self.names.new(f"{self.base}_{tag}"))
        step.outputs[0].name = self.names.new(f"{step.name}_out")
        self.nodes.append(step)
        return step.outputs[0]

    def replace(self, node: ir.Node, quantizer: ir.Node, value: ir.Value, zero_point: ir.Value | None = None) -> None:
        """Inserts the chain and makes ``quantizer`` round ``value`` (scale 1) in place of ``node``."""
        self.graph.insert_before(node, self.nodes)
        quantizer.replace_input_with(0, value)
        quantizer.replace_input_with(1, self.const("unit_scale", np.array(1.0, np.float32)))
        if zero_point is not None:
            quantizer.replace_input_with(2, zero_point)
        self.graph.remove(node, safe=True)


def _rewrite(graph: ir.Graph, node: ir.Node, names: NameAllocator) -> None:
    quantizer = _single_quantizer(node)
    if node.op_type == "Gemm" and (attr_float(node, "alpha", 1.0) != 1.0 or attr_float(node, "beta", 1.0) != 1.0):
        return
    x, w = _dequantized(node.inputs[0]), _dequantized(node.inputs[1])
    if quantizer is None or x is None or w is None or x[1].size != 1:
        return
    q, output_scale, _ = quantizer
    w_q = const_array(w[0].inputs[0])
    if w_q is None or w_q.dtype != np.int8 or np.any(w[2]):
        return
    # The rewrite models one requantization per output column of a 2-D weight (FULLY_CONNECTED):
    # a 1-D or batched MatMul constant has no such column axis and keeps the QDQ simulation.
    if node.op_type == "MatMul" and w_q.ndim != 2:
        return
    bias = None
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        b = _dequantized(node.inputs[2])
        b_q = const_array(b[0].inputs[0]) if b is not None else None
        if b_q is None or b_q.dtype != np.int32:
            return
        bias = b_q
    channels = w_q.shape[_channel_axis(node)]
    # float32 throughout and in XNNPACK's order: another order or double precision flips roundings.
    input_scale = np.float32(x[1].reshape(()))
    multiplier = (input_scale * np.broadcast_to(w[1].reshape(-1), (channels,))) / output_scale
    chain = _Chain(graph, node.name, names)
    centered = chain.op(
        "DequantizeLinear", [x[0].inputs[0], chain.const("one", np.array(1.0, np.float32)), x[0].inputs[2]], "centered"
    )
    inputs = [centered, chain.const("integer_weight", w_q.astype(np.float32))]
    if bias is not None:
        inputs.append(chain.const("integer_bias", bias.astype(np.float32)))
    accumulate = chain.op(node.op_type, inputs, "integer", **node.attributes)
    # Per output channel: axis 1 of a Conv output (C, then spatial axes), the last axis otherwise.
    shape = [channels] + [1] * (w_q.ndim - 2) if node.op_type == "Conv" else [channels]
    scaled = chain.op("Mul", [accumulate, chain.const("multiplier", multiplier.reshape(shape))], "requantize")
    chain.replace(node, q, scaled)


def _channel_axis(node: ir.Node) -> int:
    """The output-channel axis of the node's (ONNX-layout) weight."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        return 0 if attr_int(node, "transB", 0) else 1
    return 1


def _single_quantizer(node: ir.Node) -> tuple[ir.Node, float, np.ndarray] | None:
    """The one QuantizeLinear reading the node's output, with its per-tensor scale and zero point."""
    out = node.outputs[0]
    quantizers = out.consumers()
    if len(quantizers) != 1 or quantizers[0].op_type != "QuantizeLinear" or out.is_graph_output():
        return None
    q = quantizers[0]
    scale = const_array(q.inputs[1])
    zero_point = const_array(q.inputs[2]) if len(q.inputs) > 2 and q.inputs[2] is not None else None
    if scale is None or scale.size != 1 or zero_point is None or zero_point.dtype != np.int8:
        return None
    return q, np.float32(scale.reshape(())), zero_point


def _rewrite_add(graph: ir.Graph, node: ir.Node, names: NameAllocator) -> None:
    """Rewrites an int8 ``Q(DQ(a) + DQ(b))`` as XNNPACK's fixed-point qs8 add.

    XNNPACK rounds ``s_a / s_y`` and ``s_b / s_y`` to integer multipliers of 21-22 bits and shifts
    once (round half up); on MobileNetV2 that puts an output 1.2e-5 below a tie on the other side
    of it. The sum needs up to 31 bits, so it runs in float64 (exact)::

        shift = 20 - exponent(max(s_a / s_y, s_b / s_y));  m_i = round(s_i / s_y * 2^shift)
        y_q = saturate(floor(((a_q - z_a) m_a + (b_q - z_b) m_b + 2^(shift-1)) / 2^shift) + z_y)
    """
    quantizer = _single_quantizer(node)
    a, b = _dequantized(node.inputs[0]), _dequantized(node.inputs[1])
    if quantizer is None or a is None or b is None or a[1].size != 1 or b[1].size != 1:
        return
    q, output_scale, _ = quantizer
    ratios = [np.float32(np.float32(operand[1].reshape(())) / output_scale) for operand in (a, b)]
    exponent = int(np.frexp(max(abs(r) for r in ratios))[1]) - 1  # the float32 exponent field, unbiased
    shift = 20 - exponent
    if not 1 <= shift <= 31:
        return
    chain = _Chain(graph, node.name, names)
    terms = []
    for i, ((dq, _, zero_point), ratio) in enumerate(zip((a, b), ratios, strict=True)):
        multiplier = np.array(np.rint(ratio * np.float32(2.0**shift)), np.float64)
        integer = chain.op("Cast", [dq.inputs[0]], f"int{i}", to=ir.DataType.DOUBLE)
        offset = chain.const(f"zero_point{i}", np.array(float(zero_point.reshape(())), np.float64))
        centered = chain.op("Sub", [integer, offset], f"centered{i}")
        terms.append(chain.op("Mul", [centered, chain.const(f"multiplier{i}", multiplier)], f"scaled{i}"))
    total = chain.op("Add", terms, "integer")
    biased = chain.op("Add", [total, chain.const("rounding", np.array(2.0 ** (shift - 1), np.float64))], "biased")
    shifted = chain.op("Mul", [biased, chain.const("shift", np.array(2.0**-shift, np.float64))], "shifted")
    floored = chain.op("Floor", [shifted], "floor")
    chain.replace(node, q, chain.op("Cast", [floored], "requantize", to=ir.DataType.FLOAT))


def _rewrite_mean(graph: ir.Graph, node: ir.Node, names: NameAllocator) -> None:
    """Rewrites an int8 ``Q(GlobalAveragePool(DQ(x)))`` as XNNPACK's qs8 MEAN.

    XNNPACK sums the raw int8 values (zero point included, exact in int32), then requantizes in
    float32 with the zero points folded into one bias (fitted bit for bit on swept sums with six
    parameter sets)::

        s = f32(s_x) / (f32(n) * f32(s_y))
        y_q = saturate(round_half_even(f32(sum(x_q) * s) + f32(z_y - f32(n * z_x) * s)))

    which lands a few ulp away from the exact ``round((sum(x_q) - n z_x) s_x / (n s_y)) + z_y``.
    ``n`` (the spatial size) is read from the input's shape at run time, since the simulation keeps
    dynamic dimensions; each float32 step is one IEEE operation, as in XNNPACK's parameter setup.
    The float32 sum of int8 values is exact while ``n * 128 < 2^24``.
    """
    quantizer = _single_quantizer(node)
    x = _dequantized(node.inputs[0])
    shape = node.inputs[0].shape
    if quantizer is None or x is None or x[1].size != 1 or shape is None or len(shape) < 3:
        return
    q, output_scale, out_zero = quantizer
    chain = _Chain(graph, node.name, names)
    input_scale = chain.const("input_scale", np.array(np.float32(x[1].reshape(()))))
    # Shape -> Slice rather than Shape(start=2), which needs opset 15.
    spatial = chain.op(
        "Slice",
        [
            chain.op("Shape", [node.inputs[0]], "shape"),
            chain.const("spatial_start", np.array([2], np.int64)),
            chain.const("spatial_end", np.array([len(shape)], np.int64)),
        ],
        "spatial",
    )
    count = chain.op("ReduceProd", [spatial], "count", keepdims=0)
    count_f = chain.op("Cast", [count], "count_f", to=ir.DataType.FLOAT)
    denominator = chain.op("Mul", [count_f, chain.const("output_scale", np.array(output_scale))], "denominator")
    scale = chain.op("Div", [input_scale, denominator], "multiplier")
    input_zero = chain.const("input_zero", np.array(int(x[2].reshape(())), np.int64))
    zero_sum = chain.op("Cast", [chain.op("Mul", [count, input_zero], "zero_sum")], "zero_sum_f", to=ir.DataType.FLOAT)
    zero_offset = chain.op("Mul", [zero_sum, scale], "offset")
    output_zero = chain.const("output_zero", np.array(int(out_zero.reshape(())), np.float32))
    bias = chain.op("Sub", [output_zero, zero_offset], "bias")
    integer = chain.op("Cast", [x[0].inputs[0]], "int", to=ir.DataType.FLOAT)
    axes = chain.const("axes", np.arange(2, len(shape), dtype=np.int64))
    total = chain.op("ReduceSum", [integer, axes], "sum", keepdims=1)
    value = chain.op("Add", [chain.op("Mul", [total, scale], "scaled"), bias], "requantize")
    chain.replace(node, q, value, chain.const("zero", np.array(0, np.int8)))
