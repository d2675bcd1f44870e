"""Per-op lowering rules: one ONNX node (NHWC after ``layout-nhwc``) -> TFLite builtins.

Each rule reads its inputs through the :class:`~qcc.backends._tflite_lower.Lowering` in the
node's precision (int8 or float) and writes its outputs the same way, so the same rule serves
int8 ops and float islands. Element-wise, activation, axis and data-movement ops live here;
convolutions in ``_tflite_ops_conv``, pooling in ``_tflite_ops_pool``, Gemm/MatMul in
``_tflite_ops_matmul`` (their shared helpers and Resize in ``_tflite_ops_window``); float-only
decompositions in ``_tflite_ops_float``; the other families in the ``_tflite_ops_*`` modules whose
``LOWERINGS`` are merged below. ``LOWERINGS`` maps ONNX op types to rules:
adding an op is one function and one entry (see docs/tflite.md).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.backends import (
    _tflite_ops_attention,
    _tflite_ops_control,
    _tflite_ops_index,
    _tflite_ops_math,
    _tflite_ops_norm,
    _tflite_ops_quant,
    _tflite_ops_signal,
)
from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_conv import conv, conv_transpose
from qcc.backends._tflite_ops_data import LOWERINGS as DATA_LOWERINGS
from qcc.backends._tflite_ops_data import cast_from_int32, gather_constant, reduce_axes
from qcc.backends._tflite_ops_float import erf, hard_sigmoid, layer_norm
from qcc.backends._tflite_ops_matmul import gemm, matmul
from qcc.backends._tflite_ops_pool import global_pool, pool
from qcc.backends._tflite_ops_rnn import lstm
from qcc.backends._tflite_ops_rule import optional_input
from qcc.backends._tflite_ops_window import FUSABLE, fused_code, int_list, resize, unsupported
from qcc.irutils import attr_float, attr_int, const_array


def binary(name: str, options: str):
    """Returns the rule for an element-wise binary op (ADD, SUB, MUL, ...), broadcasting as TFLite does."""

    def rule(lw: Lowering, node: ir.Node) -> None:
        a, b = lw.input(node, 0), lw.input(node, 1)
        if name == "DIV" and a.dtype.kind in "iu":
            _integer_divide(lw, node, a, b)
            return
        fields = {"fused_activation_function": fused_code(node, name)} if name in FUSABLE else {}
        lw.op(name, [a, b], [lw.output(node)], options, source=node.name, **fields)

    return rule


def _integer_divide(lw: Lowering, node: ir.Node, a, b) -> None:
    """Integer Div (shape arithmetic) -> FLOOR_DIV in int32, which LiteRT has (not int64 DIV).

    ONNX truncates toward zero and FLOOR_DIV rounds down: they agree on the non-negative sizes
    shape subgraphs divide.
    """
    y = lw.output(node)
    quotient = y if y.dtype == np.dtype(np.int32) else lw.model.tensor(f"{node.name}_int32", y.shape, np.int32)
    lw.op("FLOOR_DIV", [lw.int32(a, node.name), lw.int32(b, node.name)], [quotient], source=node.name)
    if quotient is not y:
        cast_from_int32(lw, quotient, y, node.name)


def unary(name: str, options: str | None = None, **fields):
    """Returns the rule for a one-input op with fixed options (LOGISTIC, TANH, HARD_SWISH, ...)."""

    def rule(lw: Lowering, node: ir.Node) -> None:
        lw.op(name, [lw.input(node, 0)], [lw.output(node)], options, source=node.name, **fields)

    return rule


def power(lw: Lowering, node: ir.Node) -> None:
    """Pow -> MUL(x, x) for a constant exponent 2 (XNNPACK takes MUL, not POW), POW otherwise."""
    exponent = const_array(node.inputs[1])
    if exponent is None or exponent.size != 1 or float(exponent.reshape(())) != 2.0:
        binary("POW", "PowOptions")(lw, node)
        return
    x = lw.input(node, 0)
    lw.op(
        "MUL",
        [x, x],
        [lw.output(node)],
        "MulOptions",
        source=node.name,
        fused_activation_function=fused_code(node, "MUL"),
    )


def leaky_relu(lw: Lowering, node: ir.Node) -> None:
    """LeakyRelu -> LEAKY_RELU with its alpha."""
    lw.op(
        "LEAKY_RELU",
        [lw.input(node, 0)],
        [lw.output(node)],
        "LeakyReluOptions",
        source=node.name,
        alpha=attr_float(node, "alpha", 0.01),
    )


def prelu(lw: Lowering, node: ir.Node) -> None:
    """PRelu -> PRELU (the slope is an int8 constant in int8 regions)."""
    lw.op("PRELU", [lw.input(node, 0), lw.input(node, 1)], [lw.output(node)], source=node.name)


def gelu(lw: Lowering, node: ir.Node) -> None:
    """Gelu (opset 20) -> GELU, tanh approximation when the node asks for it."""
    approximate = node.attributes.get("approximate")
    tanh = approximate is not None and approximate.as_string() == "tanh"
    lw.op("GELU", [lw.input(node, 0)], [lw.output(node)], "GeluOptions", source=node.name, approximate=tanh)


def clip(lw: Lowering, node: ir.Node) -> None:
    """Standalone Clip -> RELU/RELU6/RELU_N1_TO_1/RELU_0_TO_1, or MAXIMUM + MINIMUM for other bounds.

    Bounds that are run-time tensors are read as they are (float only: an int8 bound would need
    the input's parameters, which a run-time value does not have); no bounds is a copy.
    """
    given = [optional_input(node, i) is not None for i in (1, 2)]
    arrays = [const_array(node.inputs[i]) if given[i - 1] else None for i in (1, 2)]
    runtime = [g and a is None for g, a in zip(given, arrays, strict=True)]
    x = lw.input(node, 0)
    if any(runtime) and x.quant is not None:
        raise unsupported(node, "int8 Clip with run-time bounds (int8 bounds need the input's parameters)")
    bounds = tuple(None if a is None else float(a) for a in arrays)
    named = {(0.0, 6.0): "RELU6", (-1.0, 1.0): "RELU_N1_TO_1", (0.0, None): "RELU", (0.0, 1.0): "RELU_0_TO_1"}
    if not any(runtime) and bounds in named:
        lw.op(named[bounds], [x], [lw.output(node)], source=node.name)
        return
    y = lw.output(node)
    steps = []
    for op, index, bound, late in (("MAXIMUM", 1, bounds[0], runtime[0]), ("MINIMUM", 2, bounds[1], runtime[1])):
        if late:
            steps.append((op, lw.read(node.inputs[index], False)))
        elif bound is not None:
            value = np.array(bound, np.float32)
            const = lw.constant(f"{node.name}_{op.lower()}", value) if x.quant is None else None
            steps.append((op, const if const is not None else _quantized_scalar(lw, node, x, bound)))
    if not steps:  # no bounds: a copy (TFLite has no identity op)
        lw.reshape(x, y, node.name)
        return
    current = x
    for i, (op, bound_t) in enumerate(steps):
        last = i == len(steps) - 1
        target = y if last else lw.model.tensor(f"{node.name}_max", x.shape, x.dtype, quant=x.quant)
        lw.op(op, [current, bound_t], [target], source=node.name)
        current = target


def _quantized_scalar(lw: Lowering, node: ir.Node, like, value: float):
    q = np.clip(np.rint(value / like.quant.scale[0]) + like.quant.zero_point[0], -128, 127).astype(np.int8)
    return lw.constant(f"{node.name}_bound", np.array(q), like.quant)


def softmax(lw: Lowering, node: ir.Node) -> None:
    """Softmax -> SOFTMAX over the last axis (TRANSPOSE around it for another axis)."""
    x = lw.input(node, 0)
    last = len(x.shape) - 1
    axis = attr_int(node, "axis", -1) % len(x.shape)
    y = lw.output(node)
    if axis == last:
        lw.op("SOFTMAX", [x], [y], "SoftmaxOptions", source=node.name, beta=1.0)
        return
    # TFLite's softmax runs over the last axis: swap the axis there and back (a self-inverse perm).
    perm = list(range(len(x.shape)))
    perm[axis], perm[last] = last, axis
    perm_t = lw.constant(f"{node.name}_perm", np.array(perm, np.int32))
    shape = [x.shape[p] for p in perm]
    inner = lw.model.tensor(f"{node.name}_in", shape, x.dtype, quant=x.quant)
    result = lw.model.tensor(f"{node.name}_out", shape, y.dtype, quant=y.quant)
    lw.op("TRANSPOSE", [x, perm_t], [inner], "TransposeOptions", source=node.name)
    lw.op("SOFTMAX", [inner], [result], "SoftmaxOptions", source=node.name, beta=1.0)
    lw.op("TRANSPOSE", [result, perm_t], [y], "TransposeOptions", source=node.name)


def reduce(lw: Lowering, node: ir.Node) -> None:
    """ReduceMean/Max/Min/Sum -> MEAN/REDUCE_MAX/REDUCE_MIN/SUM with constant int32 axes."""
    names = {"ReduceMean": "MEAN", "ReduceMax": "REDUCE_MAX", "ReduceMin": "REDUCE_MIN", "ReduceSum": "SUM"}
    x = lw.input(node, 0)
    axes = np.array(reduce_axes(node, len(x.shape)), np.int32)
    lw.op(
        names[node.op_type],
        [x, lw.constant(f"{node.name}_axes", axes)],
        [lw.output(node)],
        "ReducerOptions",
        source=node.name,
        keep_dims=bool(attr_int(node, "keepdims", 1)),
    )


def reshape(lw: Lowering, node: ir.Node) -> None:
    """Reshape/Flatten/Squeeze/Unsqueeze -> RESHAPE to the output shape.

    A Reshape to a run-time shape (computed from ``Shape``) reads it at run time; ONNX's ``0``
    entries (copy the input's dimension, unless ``allowzero``) become ``SHAPE(x)``'s entry there.
    Otherwise the new shape is the output's signature (``Lowering.reshape``).
    """
    x, y = lw.input(node, 0), lw.output(node)
    if node.op_type == "Reshape" and const_array(node.inputs[1]) is None:
        target = lw.int32(lw.read(node.inputs[1], False), node.name)
        length = target.shape[0] if len(target.shape) == 1 else None
        if length is None:
            raise unsupported(node, f"a shape input of shape {target.shape} (not a vector)")
        if not attr_int(node, "allowzero", 0):
            # where(target == 0, SHAPE(x)[:length], target); a 0 past x's rank is not valid ONNX.
            dims = lw.shape_tensor(x, node.name)
            if length < len(x.shape):
                head = lw.model.tensor(f"{node.name}_head", (length,), np.int32)
                zero = lw.constant(f"{node.name}_zero", np.array([0], np.int32))
                count = lw.constant(f"{node.name}_count", np.array([length], np.int32))
                lw.op("SLICE", [dims, zero, count], [head], "SliceOptions", source=node.name)
                dims = head
            elif length > len(x.shape):
                longer = lw.model.tensor(f"{node.name}_dims", (length,), np.int32)
                tail = lw.constant(f"{node.name}_tail", np.zeros(length - len(x.shape), np.int32))
                lw.op("CONCATENATION", [dims, tail], [longer], "ConcatenationOptions", source=node.name, axis=0)
                dims = longer
            is_zero = lw.model.tensor(f"{node.name}_is_zero", (length,), np.bool_)
            zero_scalar = lw.constant(f"{node.name}_zero_scalar", np.array(0, np.int32))
            lw.op("EQUAL", [target, zero_scalar], [is_zero], source=node.name)
            copied = lw.model.tensor(f"{node.name}_target", (length,), np.int32)
            lw.op("SELECT_V2", [is_zero, dims, target], [copied], "SelectV2Options", source=node.name)
            target = copied
        lw.reshape_to(x, target, y, node.name)
        return
    lw.reshape(x, y, node.name)


def transpose(lw: Lowering, node: ir.Node) -> None:
    """Transpose -> TRANSPOSE, or RESHAPE when only unit dimensions move."""
    x = lw.input(node, 0)
    perm = int_list(node, "perm", reversed(range(len(x.shape))))
    moved = [p for p in perm if x.shape[p] != 1]
    if moved == sorted(moved):  # only unit dimensions move: the bytes stay in order
        reshape(lw, node)
        return
    lw.op(
        "TRANSPOSE",
        [x, lw.constant(f"{node.name}_perm", np.array(perm, np.int32))],
        [lw.output(node)],
        "TransposeOptions",
        source=node.name,
    )


def concat(lw: Lowering, node: ir.Node) -> None:
    """Concat -> CONCATENATION (inputs already share the output's parameters)."""
    inputs = [lw.read(v, lw.is_int8(node)) for v in node.inputs]
    y = lw.output(node)
    lw.op(
        "CONCATENATION",
        inputs,
        [y],
        "ConcatenationOptions",
        source=node.name,
        axis=attr_int(node, "axis", 0) % len(y.shape),
        fused_activation_function=fused_code(node, "CONCATENATION"),
    )


def pad(lw: Lowering, node: ir.Node) -> None:
    """Pad with constant pads -> PAD, PADV2 for a non-zero fill value, MIRROR_PAD for reflect mode.

    ONNX ``reflect`` mirrors without repeating the edge (``[1, 2, 3]`` padded by 2 on the left is
    ``[3, 2, 1, 2, 3]``), which is TFLite's REFLECT; it needs each pad smaller than its dimension.
    ``edge`` and ``wrap`` have no TFLite builtin.
    """
    attr = node.attributes.get("mode")
    mode = attr.as_string() if attr is not None else "constant"
    if mode not in ("constant", "reflect"):
        raise unsupported(node, f"Pad mode {mode!r} (TFLite pads constant or reflect)")
    pads = const_array(node.inputs[1])
    fill = const_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    if pads is None or (len(node.inputs) > 3 and node.inputs[3] is not None):
        raise unsupported(node, "pads that are not constant, or axes")
    if np.any(pads < 0):
        raise unsupported(node, "negative pads (cropping)")
    x = lw.input(node, 0)
    rank = len(x.shape)
    paddings = lw.constant(f"{node.name}_paddings", np.stack([pads[:rank], pads[rank:]], 1).astype(np.int32))
    if mode == "reflect":
        if any(max(pads[a], pads[a + rank]) >= x.shape[a] for a in range(rank)):
            raise unsupported(node, f"reflect pads {list(pads)} not smaller than the dimensions of {x.shape}")
        lw.op("MIRROR_PAD", [x, paddings], [lw.output(node)], "MirrorPadOptions", source=node.name, mode=_REFLECT)
    elif fill is None or float(fill) == 0.0:
        lw.op("PAD", [x, paddings], [lw.output(node)], "PadOptions", source=node.name)
    else:
        value = lw.read(node.inputs[2], lw.is_int8(node))
        lw.op("PADV2", [x, paddings, value], [lw.output(node)], "PadV2Options", source=node.name)


# tflite MirrorPadMode.REFLECT: the edge value is not repeated (ONNX "reflect").
_REFLECT = 0


def slice_(lw: Lowering, node: ir.Node) -> None:
    """Slice -> SLICE for unit steps, STRIDED_SLICE otherwise (positive steps only).

    On static axes the bounds are resolved here. When a sliced axis is dynamic, or the starts or
    ends are run-time tensors, STRIDED_SLICE takes ONNX's bounds as they are (a negative bound
    counts from the end in both; bounds are clamped to int32), and axes that are not sliced run
    to the end with ``begin_mask``/``end_mask``.
    """
    x = lw.input(node, 0)
    rank = len(x.shape)
    arrays = [const_array(v) if v is not None else None for v in node.inputs[1:5]]
    axes_given = optional_input(node, 3) is not None
    if axes_given and arrays[2] is None:
        raise unsupported(node, "axes that are not constant")
    runtime = arrays[0] is None or arrays[1] is None
    count = len(arrays[0]) if arrays[0] is not None else lw.read(node.inputs[1], False).shape[0]
    axes = [int(a) % rank for a in (arrays[2] if axes_given else np.arange(count))]
    steps = arrays[3] if len(arrays) > 3 and arrays[3] is not None else np.ones(len(axes), np.int64)
    if optional_input(node, 4) is not None and arrays[3] is None:
        raise unsupported(node, "steps that are not constant")
    if np.any(np.asarray(steps) < 0):
        raise unsupported(node, "negative Slice steps")
    if runtime or any(x.signature[a] == -1 for a in axes):
        _slice_runtime(lw, node, x, axes, [int(s) for s in steps], arrays)
        return
    starts, ends = arrays[0], arrays[1]
    begin, end, stride = [0] * rank, list(x.shape), [1] * rank
    for s, e, a, st in zip(starts, ends, axes, steps, strict=False):
        dim = x.shape[a]
        begin[a] = int(np.clip(s + dim if s < 0 else s, 0, dim))
        end[a] = int(np.clip(e + dim if e < 0 else e, 0, dim))
        stride[a] = int(st)
    y = lw.output(node)
    consts = [lw.constant(f"{node.name}_{k}", np.array(v, np.int32)) for k, v in (("begin", begin), ("end", end))]
    if all(s == 1 for s in stride):
        # A dynamic axis that is not sliced runs to its end: SLICE's size -1.
        sizes = [-1 if y.signature[a] == -1 else y.shape[a] for a in range(rank)]
        size = lw.constant(f"{node.name}_size", np.array(sizes, np.int32))
        lw.op("SLICE", [x, consts[0], size], [y], "SliceOptions", source=node.name)
        return
    strides = lw.constant(f"{node.name}_strides", np.array(stride, np.int32))
    mask = sum(1 << a for a in range(rank) if x.signature[a] == -1 and a not in axes)
    lw.op(
        "STRIDED_SLICE",
        [x, *consts, strides],
        [y],
        "StridedSliceOptions",
        source=node.name,
        begin_mask=mask,
        end_mask=mask,
    )


_INT32_MAX = np.iinfo(np.int32).max


def _slice_runtime(lw: Lowering, node: ir.Node, x, axes: list[int], steps: list[int], arrays) -> None:
    """STRIDED_SLICE with ONNX's bounds (constant or run-time) on the sliced axes, masks elsewhere."""
    rank = len(x.shape)
    other = sum(1 << a for a in range(rank) if a not in axes)
    bounds = []
    for k, (array, value) in enumerate(((arrays[0], node.inputs[1]), (arrays[1], node.inputs[2]))):
        if array is not None:
            full = np.zeros(rank, np.int64)
            full[axes] = np.clip(array, -_INT32_MAX, _INT32_MAX)
            bounds.append(lw.constant(f"{node.name}_{('begin', 'end')[k]}", full.astype(np.int32)))
            continue
        # Clamp to int32 in the input's type (ONNX ends are often INT64_MAX), cast, then put the
        # values on their axes: GATHER from [values..., 0].
        t = lw.read(value, False)
        clamped = lw.model.tensor(f"{node.name}_clamped{k}", t.shape, t.dtype)
        lw.op(
            "MINIMUM",
            [t, lw.constant(f"{node.name}_max{k}", np.array(_INT32_MAX, t.dtype))],
            [clamped],
            source=node.name,
        )
        low = lw.model.tensor(f"{node.name}_low{k}", t.shape, t.dtype)
        lw.op(
            "MAXIMUM",
            [clamped, lw.constant(f"{node.name}_min{k}", np.array(-_INT32_MAX, t.dtype))],
            [low],
            source=node.name,
        )
        values = lw.int32(low, node.name)
        if axes == list(range(rank)):
            bounds.append(values)
            continue
        table = lw.model.tensor(f"{node.name}_table{k}", (t.shape[0] + 1,), np.int32)
        zero = lw.constant(f"{node.name}_zero", np.array([0], np.int32))
        lw.op("CONCATENATION", [values, zero], [table], "ConcatenationOptions", source=node.name, axis=0)
        picks = [axes.index(a) if a in axes else t.shape[0] for a in range(rank)]
        placed = lw.model.tensor(f"{node.name}_{('begin', 'end')[k]}", (rank,), np.int32)
        gather_constant(lw, table, f"{node.name}_picks{k}", np.array(picks, np.int32), placed, node.name)
        bounds.append(placed)
    stride = np.ones(rank, np.int32)
    stride[axes] = steps
    lw.op(
        "STRIDED_SLICE",
        [x, *bounds, lw.constant(f"{node.name}_strides", stride)],
        [lw.output(node)],
        "StridedSliceOptions",
        source=node.name,
        begin_mask=other,
        end_mask=other,
    )


def split(lw: Lowering, node: ir.Node) -> None:
    """Split -> SPLIT for equal parts (axis tensor first), one SLICE per part otherwise.

    SLICE rather than SPLIT_V: XNNPACK takes SLICE, not SPLIT_V.
    """
    x = lw.input(node, 0)
    axis = attr_int(node, "axis", 0) % len(x.shape)
    outputs = [lw.output(node, i) for i in range(len(node.outputs))]
    sizes = [t.shape[axis] for t in outputs]
    if len(set(sizes)) == 1:
        axis_t = lw.constant(f"{node.name}_axis", np.array(axis, np.int32))
        lw.op("SPLIT", [axis_t, x], outputs, "SplitOptions", source=node.name, num_splits=len(outputs))
        return
    start = 0
    for out in outputs:
        begin = [0] * len(x.shape)
        begin[axis] = start
        begin_t = lw.constant(f"{node.name}_begin", np.array(begin, np.int32))
        size_t = lw.constant(f"{node.name}_size", np.array(out.shape, np.int32))
        lw.op("SLICE", [x, begin_t, size_t], [out], "SliceOptions", source=node.name)
        start += out.shape[axis]


def identity(lw: Lowering, node: ir.Node) -> None:
    """Identity: the output is its input's tensor (float; ``FLOAT_KERNELS`` makes a requantize float).

    A requantize inserted by target-constraints is an int8 Identity; written in float it becomes
    DEQUANTIZE -> QUANTIZE with the new parameters, which XNNPACK takes (int8 -> int8 QUANTIZE it
    does not), and which is exactly the simulation's Q(DQ(x)).
    """
    if lw.is_int8(node):
        lw.op("QUANTIZE", [lw.input(node, 0)], [lw.output(node)], source=node.name)
    else:
        lw.alias(node.outputs[0], lw.input(node, 0))


LOWERINGS = {
    "Conv": conv,
    "ConvTranspose": conv_transpose,
    "Gemm": gemm,
    "MatMul": matmul,
    "Add": binary("ADD", "AddOptions"),
    "Sub": binary("SUB", "SubOptions"),
    "Mul": binary("MUL", "MulOptions"),
    "Div": binary("DIV", "DivOptions"),
    "Max": binary("MAXIMUM", "MaximumMinimumOptions"),
    "Min": binary("MINIMUM", "MaximumMinimumOptions"),
    "Pow": power,
    "Relu": unary("RELU"),
    "Clip": clip,
    "Sigmoid": unary("LOGISTIC"),
    "Tanh": unary("TANH"),
    "HardSwish": unary("HARD_SWISH", "HardSwishOptions"),
    "HardSigmoid": hard_sigmoid,
    "LeakyRelu": leaky_relu,
    "PRelu": prelu,
    "Gelu": gelu,
    "Sqrt": unary("SQRT"),
    "Exp": unary("EXP", "ExpOptions"),
    "Neg": unary("NEG", "NegOptions"),
    "Abs": unary("ABS", "AbsOptions"),
    "Softmax": softmax,
    "MaxPool": pool,
    "AveragePool": pool,
    "GlobalAveragePool": global_pool,
    "GlobalMaxPool": global_pool,
    "ReduceMean": reduce,
    "ReduceMax": reduce,
    "ReduceMin": reduce,
    "ReduceSum": reduce,
    "Reshape": reshape,
    "Flatten": reshape,
    "Squeeze": reshape,
    "Unsqueeze": reshape,
    "Transpose": transpose,
    "Concat": concat,
    "Pad": pad,
    "Slice": slice_,
    "Split": split,
    "Resize": resize,
    "Identity": identity,
    "Erf": erf,
    "LayerNormalization": layer_norm,
    "LSTM": lstm,
    **DATA_LOWERINGS,
}
# The op families in their own modules; each may replace a base rule above.
FAMILIES = (
    _tflite_ops_math,
    _tflite_ops_norm,
    _tflite_ops_index,
    _tflite_ops_control,
    _tflite_ops_quant,
    _tflite_ops_signal,
    _tflite_ops_attention,
)
for _family in FAMILIES:
    LOWERINGS.update(_family.LOWERINGS)
