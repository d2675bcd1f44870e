"""TFLite lowering rules for the quantization operators of the user's float model, and BitCast.

QuantizeLinear, DequantizeLinear and QLinearMatMul inside the model the user hands qcc are not
qcc's own quantization: they have no int8 kernel entry, so the plan keeps them float and they
become exact float32 decompositions (a float island):

* ``QuantizeLinear``: ``y = CAST(MINIMUM(MAXIMUM(ROUND(x / s) + z, lo), hi))``. LiteRT's ROUND
  (builtin and XNNPACK) rounds half to even, as ONNX does; ``x / s`` is a DIV, as ONNX writes it.
  ``round(x / s) + z`` is an integer below 2^24 for 8- and 16-bit outputs, so float32 holds it.
* ``DynamicQuantizeLinear`` (uint8): ``s = (max(0, max x) - min(0, min x)) / 255`` (1 for an
  all-zero ``x``, as ONNX Runtime writes it), ``z = ROUND(clamp(-min(0, min x) / s, 0, 255))``,
  then ``y`` as QuantizeLinear computes it; REDUCE_MIN/REDUCE_MAX over every axis give the range
  at run time.
* ``DequantizeLinear``: ``y = (x - z) * s``; the difference is exact in float32 for 8/16-bit
  ``x`` and taken in int32 for int32 ``x``.
* Scales and zero points are per tensor (one value), per axis (a 1-D ``[C]`` reshaped to
  broadcast along ``axis``) or blocked (``block_size``: the ``[.., ceil(D / B), ..]`` tensor is
  GATHERed along ``axis`` with ``index[i] = i // B``), constant or read at run time.
* ``QLinearMatMul``: as ONNX Runtime computes it, ``acc = (a - z_a) @ (b - z_b)`` (integers, exact
  in float32 while ``K * 255^2 < 2^24``), then ``y = Q(acc * (s_a * s_b / s_y), z_y)``.
* ``QLinearConv``: the same around a float CONV_2D / DEPTHWISE_CONV_2D of ``x - z_x`` and
  ``w - z_w`` (per-channel ``w`` parameters allowed) with the int32 bias, in NHWC.
* Quantized data is int8, uint8 or int16 (and int32 for DequantizeLinear); int8 tensors these
  rules read or write as integers carry parameters (1, 0), which say exactly that (LiteRT and
  qcc's validator want parameters on every int8 tensor). uint16, 4-bit and float8 data are
  refused: qcc's TFLite writer has no such tensor types.
* ``BitCast`` -> BITCAST (code 159). float16 data is float32 inside the artifact and CAST back
  to float16 (exactly) around it; float64 bits exist only at a float64 model input.

``LOWERINGS`` collects the other families of this work: ``_tflite_ops_unpool`` (MaxUnpool),
``_tflite_ops_linalg`` (Det), ``_tflite_ops_nms`` (NonMaxSuppression), ``_tflite_ops_textvec``
(TfIdfVectorizer) and ``_tflite_ops_loss`` (NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.backends import _tflite_ops_linalg, _tflite_ops_loss, _tflite_ops_nms, _tflite_ops_textvec, _tflite_ops_unpool
from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_rule import F32, I32, Rule, optional_input, raw_int8, static_rank
from qcc.backends._tflite_ops_window import VALID, nd_pads, unsupported, window
from qcc.backends._tflite_writer import TENSOR_TYPES, Tensor
from qcc.irutils import attr_int, const_array

# Integer types a float island can write or read, with their saturation range.
_RANGES = {
    ir.DataType.INT8: (-128, 127),
    ir.DataType.UINT8: (0, 255),
    ir.DataType.INT16: (-32768, 32767),
}
# Integer types DequantizeLinear reads: the quantized ones and int32 (biases).
_DEQUANTIZABLE = (*_RANGES, ir.DataType.INT32)


def _check_type(node: ir.Node, dtype: ir.DataType | None, allowed) -> None:
    if dtype not in allowed:
        name = "unknown" if dtype is None else dtype.name.lower()
        kinds = ", ".join(t.name.lower() for t in allowed)
        raise unsupported(
            node,
            f"{name} quantized data: the float decomposition handles {kinds} (qcc's TFLite writer has no "
            "uint16, 4-bit or float8 tensors)",
        )


def _parameter(rule: Rule, index: int, x_shape, axis: int, block: int) -> Tensor | None:
    """Scale or zero point input ``index`` as float32, shaped to broadcast against ``x``.

    One value broadcasts as it is; a 1-D ``[C]`` is reshaped to ``[1, .., C, .., 1]`` (``C`` on
    ``axis``); a blocked one is repeated ``block`` times along ``axis`` (a GATHER at run time).
    """
    value = optional_input(rule.node, index)
    if value is None:
        return None
    rank = len(x_shape)
    array = const_array(value)
    shape = static_rank(rule.node, value)
    size = int(np.prod(shape))
    if size == 1:
        if array is not None:
            return rule.const(np.float32(array.reshape(())))
        return rule.reshape(rule.cast(raw_int8(rule.lw.read(value, False)), F32), [])
    if block > 0:
        if len(shape) != rank:
            raise unsupported(rule.node, f"a blocked parameter of rank {len(shape)} for data of rank {rank}")
        repeat = np.arange(x_shape[axis]) // block
        if array is not None:
            return rule.const(np.take(array.astype(np.float32), repeat, axis=axis))
        source = rule.cast(raw_int8(rule.lw.read(value, False)), F32)
        gathered = [*shape[:axis], x_shape[axis], *shape[axis + 1 :]]
        indices = rule.const(repeat.astype(np.int32))
        return rule.op("GATHER", [source, indices], gathered, F32, "GatherOptions", axis=axis, batch_dims=0)
    if len(shape) != 1 or shape[0] != x_shape[axis]:
        raise unsupported(rule.node, f"a parameter of shape {shape} for axis {axis} of data shaped {list(x_shape)}")
    broadcast = [1] * rank
    broadcast[axis] = shape[0]
    if array is not None:
        return rule.const(array.astype(np.float32).reshape(broadcast))
    return rule.reshape(rule.cast(raw_int8(rule.lw.read(value, False)), F32), broadcast)


def _axis_and_block(node: ir.Node, rank: int) -> tuple[int, int]:
    axis = attr_int(node, "axis", 1)
    axis = axis % rank if rank else 0
    return axis, attr_int(node, "block_size", 0)


def _requantize(rule: Rule, scaled: Tensor, zero_point: Tensor | None, dtype: ir.DataType) -> None:
    """Writes output 0 as ``saturate(ROUND(scaled) + zero_point)`` of the integer ``dtype``."""
    shape = scaled.shape
    low, high = _RANGES[dtype]
    rounded = rule.op("ROUND", [scaled], shape, F32)
    if zero_point is not None:
        rounded = rule.op("ADD", [rounded, zero_point], shape, F32, "AddOptions")
    clamped = rule.op("MAXIMUM", [rounded, rule.const(np.float32(low))], shape, F32, "MaximumMinimumOptions")
    clamped = rule.op("MINIMUM", [clamped, rule.const(np.float32(high))], shape, F32, "MaximumMinimumOptions")
    raw_int8(rule.output())
    rule.finish(clamped)


def quantize_linear(lw: Lowering, node: ir.Node) -> None:
    """QuantizeLinear -> DIV, ROUND, ADD, MAXIMUM, MINIMUM, CAST (module docstring)."""
    rule = Rule(lw, node)
    dtype = node.outputs[0].dtype
    _check_type(node, dtype, _RANGES)
    x = rule.data(0)
    axis, block = _axis_and_block(node, len(x.shape))
    scale = _parameter(rule, 1, x.shape, axis, block)
    zero_point = _parameter(rule, 2, x.shape, axis, block)
    scaled = rule.op("DIV", [x, scale], x.shape, F32, "DivOptions")
    _requantize(rule, scaled, zero_point, dtype)


def dynamic_quantize_linear(lw: Lowering, node: ir.Node) -> None:
    """DynamicQuantizeLinear -> REDUCE_MIN/REDUCE_MAX for the range, then QuantizeLinear's chain (module docstring)."""
    rule = Rule(lw, node)
    x = rule.data(0)

    def scalar(builtin: str, *inputs: Tensor, options: str | None = None, **fields) -> Tensor:
        return rule.op(builtin, list(inputs), [], F32, options, **fields)

    axes = rule.const(np.arange(len(x.shape), dtype=np.int32))
    zero, levels = rule.const(np.float32(0)), rule.const(np.float32(255))
    extreme = "MaximumMinimumOptions"
    smallest = scalar("REDUCE_MIN", x, axes, options="ReducerOptions", keep_dims=False)
    largest = scalar("REDUCE_MAX", x, axes, options="ReducerOptions", keep_dims=False)
    low = scalar("MINIMUM", smallest, zero, options=extreme)
    high = scalar("MAXIMUM", largest, zero, options=extreme)
    span = scalar("SUB", high, low, options="SubOptions")
    # An all-zero x has no range: ONNX Runtime then writes scale 1 (ONNX's reference writes 1/255).
    empty = rule.cast(rule.op("EQUAL", [span, zero], [], np.dtype(np.bool_), "EqualOptions"), F32)
    scale = scalar("ADD", scalar("DIV", span, levels, options="DivOptions"), empty, options="AddOptions")
    shifted = scalar("DIV", scalar("NEG", low), scale, options="DivOptions")
    clamped = scalar("MINIMUM", scalar("MAXIMUM", shifted, zero, options=extreme), levels, options=extreme)
    zero_point = scalar("ROUND", clamped)
    _requantize(rule, rule.op("DIV", [x, scale], x.shape, F32, "DivOptions"), zero_point, ir.DataType.UINT8)
    rule.finish(scale, 1)
    rule.finish(zero_point, 2)


def dequantize_linear(lw: Lowering, node: ir.Node) -> None:
    """DequantizeLinear -> CAST, SUB, MUL (module docstring); int32 data is centred in int32."""
    rule = Rule(lw, node)
    _check_type(node, node.inputs[0].dtype, _DEQUANTIZABLE)
    x = raw_int8(lw.read(node.inputs[0], False))
    axis, block = _axis_and_block(node, len(x.shape))
    scale = _parameter(rule, 1, x.shape, axis, block)
    zero_point = _parameter(rule, 2, x.shape, axis, block)
    if x.dtype == np.dtype(np.int32) and zero_point is not None:
        # int32 (bias) data: the difference in int32, as ONNX Runtime takes it, before float32 rounds it.
        integer_zero = (
            rule.cast(zero_point, I32) if zero_point.data is None else rule.const(zero_point.data.astype(I32))
        )
        x = rule.op("SUB", [x, integer_zero], x.shape, I32, "SubOptions")
        zero_point = None
    centered = rule.cast(x, F32)
    if zero_point is not None:
        centered = rule.op("SUB", [centered, zero_point], x.shape, F32, "SubOptions")
    rule.finish(rule.op("MUL", [centered, scale], x.shape, F32, "MulOptions"))


def _centered(rule: Rule, index: int, zero_index: int) -> Tensor:
    """Integer input ``index`` minus its zero point (input ``zero_index``, one value), as float32."""
    node = rule.node
    _check_type(node, node.inputs[index].dtype, _RANGES)
    x = rule.cast(raw_int8(rule.lw.read(node.inputs[index], False)), F32)
    zero = _parameter(rule, zero_index, x.shape, 0, 0) if optional_input(node, zero_index) is not None else None
    if zero is not None and zero.shape != ():
        raise unsupported(node, "a per-row or per-column zero point (qcc lowers one zero point per matrix)")
    return x if zero is None else rule.op("SUB", [x, zero], x.shape, F32, "SubOptions")


def _single(rule: Rule, index: int) -> Tensor:
    """Scale input ``index`` as a float32 scalar (QLinearMatMul's are per tensor here)."""
    value = rule.node.inputs[index]
    if value.shape is None or not all(d == 1 for d in value.shape):
        raise unsupported(rule.node, f"a per-row or per-column scale {value.name!r} (qcc lowers one scale per matrix)")
    return _parameter(rule, index, [1], 0, 0)


def qlinear_matmul(lw: Lowering, node: ir.Node) -> None:
    """QLinearMatMul -> integer BATCH_MATMUL in float32, then the requantization (module docstring)."""
    rule = Rule(lw, node)
    dtype = node.outputs[0].dtype
    _check_type(node, dtype, _RANGES)
    a, b = _centered(rule, 0, 2), _centered(rule, 3, 5)
    if len(a.shape) < 2 or len(b.shape) < 2:
        raise unsupported(node, "a 1-D operand (qcc lowers matrices and batches of them)")
    shape = list(node.outputs[0].shape)
    accumulated = rule.op("BATCH_MATMUL", [a, b], shape, F32, "BatchMatMulOptions", adj_x=False, adj_y=False)
    scales = [_single(rule, i) for i in (1, 4, 6)]
    if all(s.data is not None for s in scales):
        product = np.float32(scales[0].data) * np.float32(scales[1].data)
        multiplier = rule.const(np.float32(product / np.float32(scales[2].data)))
    else:
        product = rule.op("MUL", scales[:2], [], F32, "MulOptions")
        multiplier = rule.op("DIV", [product, scales[2]], [], F32, "DivOptions")
    scaled = rule.op("MUL", [accumulated, multiplier], shape, F32, "MulOptions")
    zero_point = _parameter(rule, 7, [1], 0, 0) if optional_input(node, 7) is not None else None
    _requantize(rule, scaled, zero_point, dtype)


def _filter(rule: Rule, depthwise: bool) -> Tensor:
    """QLinearConv's weight minus its zero point(s), float32, as a 2-D TFLite filter (OHWI, or [1, kh, kw, O])."""
    node = rule.node
    _check_type(node, node.inputs[3].dtype, _RANGES)
    w_value, zero_value = node.inputs[3], optional_input(node, 5)
    shape = [int(d) for d in w_value.shape]
    image = [shape[0], shape[1], 1, shape[2]] if len(shape) == 3 else shape
    perm = (1, 2, 3, 0) if depthwise else (0, 2, 3, 1)
    w, zero = const_array(w_value), const_array(zero_value) if zero_value is not None else np.zeros(1)
    if w is not None and zero is not None:
        centered = w.astype(np.float32).reshape(image) - zero.astype(np.float32).reshape(-1, 1, 1, 1)
        return rule.const(centered.transpose(perm))
    w = rule.reshape(rule.cast(raw_int8(rule.lw.read(w_value, False)), F32), image)
    if zero_value is not None:
        size = int(np.prod(zero_value.shape or [1]))
        zero = _parameter(rule, 5, image, 0, 0) if size > 1 else _parameter(rule, 5, [1], 0, 0)
        w = rule.op("SUB", [w, zero], image, F32, "SubOptions")
    return rule.transpose(w, perm)


def _output_scale(rule: Rule, channels: int) -> Tensor:
    """QLinearConv's requantization multiplier ``x_scale * w_scale / y_scale`` (``[O]`` or one value)."""
    node = rule.node
    values = [const_array(node.inputs[i]) for i in (1, 4, 6)]
    if all(v is not None for v in values):
        x_scale, w_scale, y_scale = (v.astype(np.float32).reshape(-1) for v in values)
        multiplier = (x_scale[0] * w_scale) / y_scale[0]
        return rule.const(multiplier if multiplier.size > 1 else np.float32(multiplier[0]))
    x_scale, y_scale = _single(rule, 1), _single(rule, 6)
    size = int(np.prod(node.inputs[4].shape or [1]))
    w_scale = _parameter(rule, 4, [channels], 0, 0) if size > 1 else _single(rule, 4)
    product = rule.op("MUL", [x_scale, w_scale], list(w_scale.shape), F32, "MulOptions")
    return rule.op("DIV", [product, y_scale], list(w_scale.shape), F32, "DivOptions")


def qlinear_conv(lw: Lowering, node: ir.Node) -> None:
    """QLinearConv -> integer CONV_2D / DEPTHWISE_CONV_2D in float32 (NHWC), then the requantization.

    ``acc = conv(x - z_x, w - z_w) + B`` is exact in float32 while ``|acc| < 2^24``; then
    ``y = Q(acc * (s_x * s_w / s_y), z_y)`` as for QLinearMatMul. The ONNX pads (zeros of
    ``x - z_x``, i.e. the zero point) become an explicit PAD.
    """
    rule = Rule(lw, node)
    dtype = node.outputs[0].dtype
    _check_type(node, dtype, _RANGES)
    w_shape = [int(d) for d in node.inputs[3].shape]
    win = window(node, w_shape[2:])
    x = _centered(rule, 0, 2)
    if len(x.shape) == 3:
        x = rule.reshape(x, [x.shape[0], x.shape[1], 1, x.shape[2]])
    x = rule.transpose(x, (0, 2, 3, 1))
    group, out_c, in_c = attr_int(node, "group", 1), w_shape[0], x.shape[3]
    depthwise = group == in_c and group > 1 and out_c % in_c == 0
    if group != 1 and not depthwise:
        raise unsupported(node, f"group={group} (qcc lowers QLinearConv with group 1 or depthwise)")
    out_shape = [int(d) for d in node.outputs[0].shape]
    out_hw = [1, out_shape[2]] if len(out_shape) == 3 else out_shape[2:]
    begin, end, _ = nd_pads(win.kernel, win.strides, win.dilations, win.pads, win.auto_pad, x.shape[1:3], out_hw)
    if any(begin) or any(end):
        paddings = np.array([[0, 0], [begin[0], end[0]], [begin[1], end[1]], [0, 0]], np.int32)
        padded = [x.shape[0], x.shape[1] + begin[0] + end[0], x.shape[2] + begin[1] + end[1], x.shape[3]]
        x = rule.op("PAD", [x, rule.const(paddings)], padded, F32, "PadOptions")
    bias = optional_input(node, 8)
    if bias is None:
        b = rule.const(np.zeros(out_c, np.float32))
    elif const_array(bias) is not None:
        b = rule.const(const_array(bias).astype(np.float32))
    else:
        b = rule.cast(lw.read(bias, False), F32)
    name, options = ("DEPTHWISE_CONV_2D", "DepthwiseConv2DOptions") if depthwise else ("CONV_2D", "Conv2DOptions")
    extra = {"depth_multiplier": out_c // in_c} if depthwise else {}
    accumulated = rule.op(
        name,
        [x, _filter(rule, depthwise), b],
        [out_shape[0], *out_hw, out_c],
        F32,
        options,
        padding=VALID,
        stride_w=win.strides[1],
        stride_h=win.strides[0],
        dilation_w_factor=win.dilations[1],
        dilation_h_factor=win.dilations[0],
        fused_activation_function=0,
        **extra,
    )
    scaled = rule.op("MUL", [accumulated, _output_scale(rule, out_c)], accumulated.shape, F32, "MulOptions")
    scaled = rule.reshape(rule.transpose(scaled, (0, 3, 1, 2)), out_shape)
    zero_point = _parameter(rule, 7, [1], 0, 0) if optional_input(node, 7) is not None else None
    _requantize(rule, scaled, zero_point, dtype)


def _model_input(lw: Lowering, value: ir.Value) -> Tensor | None:
    """The interface tensor of a model input (float64 there, float32 inside the artifact), or None."""
    if not value.is_graph_input():
        return None
    for index in lw.model.inputs:
        tensor = lw.model.tensors[index]
        if tensor.name == value.name:
            return tensor
    return None


def bit_cast(lw: Lowering, node: ir.Node) -> None:
    """BitCast -> BITCAST between types of one width (module docstring)."""
    rule = Rule(lw, node)
    source, target = node.inputs[0].dtype, node.outputs[0].dtype
    if source is None or target is None or source.itemsize != target.itemsize:
        raise unsupported(node, f"a BitCast from {source} to {target} (ONNX BitCast keeps the bit width)")
    source_type, target_type = np.dtype(source.numpy()), np.dtype(target.numpy())
    for kind in (source_type, target_type):
        if kind not in TENSOR_TYPES:
            raise unsupported(node, f"a {kind} tensor: qcc's TFLite writer has no such tensor type")
    x = raw_int8(lw.read(node.inputs[0], False))
    if source_type == np.float64:
        # The float64 bits are gone once the value is float32 inside the artifact: only a model input has them.
        x = _model_input(lw, node.inputs[0])
        if x is None or x.dtype != np.float64:
            raise unsupported(
                node,
                "BitCast of a float64 value computed inside the model: qcc's TFLite artifact computes float64 in "
                "float32, so the float64 bits are not there; BitCast a float64 model input or convert the model "
                "to float32",
            )
    elif x.dtype != source_type:
        x = rule.cast(x, source_type)  # float16 data: float32 inside, exactly float16 again
    y = raw_int8(lw.output(node))
    if y.dtype == target_type:
        lw.op("BITCAST", [x], [y], source=node.name)
        return
    bits = rule.op("BITCAST", [x], x.shape, target_type)
    rule.cast(bits, y.dtype, out=y)


LOWERINGS = {
    "QuantizeLinear": quantize_linear,
    "DynamicQuantizeLinear": dynamic_quantize_linear,
    "DequantizeLinear": dequantize_linear,
    "QLinearMatMul": qlinear_matmul,
    "QLinearConv": qlinear_conv,
    "BitCast": bit_cast,
    **_tflite_ops_unpool.LOWERINGS,
    **_tflite_ops_linalg.LOWERINGS,
    **_tflite_ops_nms.LOWERINGS,
    **_tflite_ops_textvec.LOWERINGS,
    **_tflite_ops_loss.LOWERINGS,
}
INT8_OPS: frozenset[str] = frozenset()
SHARED_SCALE_OPS: frozenset[str] = frozenset()
