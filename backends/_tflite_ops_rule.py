"""Tensor plumbing shared by the indexing rules that ``_tflite_ops_index`` assembles.

A :class:`Rule` lowers one node: inputs are read in the node's precision (float16/float64 data
is CAST to float32, the only float the artifact computes in), a float16/float64 output is
written through a float32 stand-in that :meth:`Rule.finish` casts back, and int8 data keeps its
quantization parameters through the builtins that only move bytes. Intermediates are named
``<node>_<tag><n>``; when the last op wrote a temporary of the output's shape, type and
parameters, it writes the output itself instead (no copy).

The limits here refuse a rule before it builds an intermediate too large to be worth running
(``MAX_PAIRWISE_ELEMENTS``) or a SELECT_V2 of a rank TFLite does not broadcast
(``MAX_SELECT_RANK``).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_window import unsupported
from qcc.backends._tflite_writer import TENSOR_TYPES, Quant, Tensor
from qcc.irutils import const_array

F32 = np.dtype(np.float32)
I32 = np.dtype(np.int32)
I64 = np.dtype(np.int64)
BOOL = np.dtype(np.bool_)
# CumProd and Unique build [n, n] intermediates; beyond this many elements they are refused.
MAX_PAIRWISE_ELEMENTS = 1 << 24
# TFLite's SELECT_V2 broadcasts up to 5-D.
MAX_SELECT_RANK = 5


class Rule:
    """Tensor plumbing for one node: float32 compute, casts to and from the ONNX dtypes, temporaries."""

    def __init__(self, lw: Lowering, node: ir.Node) -> None:
        self.lw, self.node, self.count = lw, node, 0
        self.outputs: dict[int, Tensor] = {}
        self.temporaries: set[int] = set()

    def name(self, tag: str) -> str:
        self.count += 1
        return f"{self.node.name}_{tag}{self.count}"

    def const(self, array, dtype=None) -> Tensor:
        """A constant (0-d arrays stay 0-d)."""
        return self.lw.constant(self.name("c"), np.array(array, dtype=dtype))

    def zero_like(self, x: Tensor) -> Tensor:
        """A 0-d zero of ``x``'s type: its zero point, with its parameters, when ``x`` is int8."""
        if x.quant is None:
            return self.const(np.zeros((), x.dtype))
        return self.lw.constant(self.name("zero"), np.array(x.quant.zero_point[0], x.dtype), x.quant)

    def tensor(self, shape, dtype, quant=None) -> Tensor:
        """A new intermediate tensor of this rule."""
        tensor = self.lw.model.tensor(self.name("t"), shape, dtype, quant=quant)
        self.temporaries.add(tensor.index)
        return tensor

    def op(self, builtin: str, inputs, shape, dtype=F32, options: str | None = None, out=None, quant=None, **fields):
        """Appends ``builtin`` writing a new tensor (or ``out``) and returns it."""
        out = self.tensor(shape, dtype, quant) if out is None else out
        self.lw.op(builtin, inputs, [out], options, source=self.node.name, **fields)
        return out

    def cast(self, x: Tensor, dtype, out: Tensor | None = None) -> Tensor:
        """``x`` as ``dtype`` (CAST, or ``x`` itself when it already is)."""
        dtype = np.dtype(dtype)
        if x.dtype == dtype and out is None:
            return x
        for t in (x.dtype, dtype):
            if t not in TENSOR_TYPES:
                raise unsupported(self.node, f"a {t} tensor (qcc's TFLite writer stores {type_names()})")
        if x.dtype == dtype:
            return self.lw.reshape(x, out, self.node.name)
        fields = {"in_data_type": TENSOR_TYPES[x.dtype], "out_data_type": TENSOR_TYPES[dtype]}
        return self.op("CAST", [x], x.shape, dtype, "CastOptions", out=out, **fields)

    def data(self, index: int) -> Tensor:
        """Input ``index`` in the node's precision, float16/float64 cast to float32."""
        x = self.lw.input(self.node, index)
        return self.cast(x, F32) if x.dtype.kind == "f" else x

    def int32(self, index: int) -> Tensor:
        """An integer input as int32 (a constant when it is one)."""
        array = const_array(self.node.inputs[index])
        if array is not None:
            return self.const(array.astype(np.int32))
        return self.cast(self.lw.read(self.node.inputs[index], False), I32)

    def output(self, index: int = 0) -> Tensor:
        """The node's output ``index`` (defined once)."""
        if index not in self.outputs:
            self.outputs[index] = self.lw.output(self.node, index)
        return self.outputs[index]

    def result(self, index: int = 0, like: Tensor | None = None) -> Tensor:
        """The tensor to write output ``index`` into: the output itself, or a float32 stand-in for a
        float16/float64 output (not for int8 data ``like``) that :meth:`finish` casts."""
        y = self.output(index)
        if y.dtype.kind == "f" and y.dtype != F32 and (like is None or like.quant is None):
            return self.tensor(y.shape, F32)
        return y

    def finish(self, written: Tensor, index: int = 0) -> None:
        """Writes output ``index`` from ``written``: nothing when it is the output, else RESHAPE and/or CAST."""
        y = self.output(index)
        if written is y:
            return
        last = self.lw.model.ops[-1] if self.lw.model.ops else None
        if last is not None and last.outputs == [written.index] and written.index in self.temporaries:
            if (written.shape, written.dtype) == (y.shape, y.dtype) and _same_quant(written, y):
                last.outputs = [y.index]  # the last op writes the output itself: no copy
                return
        if written.dtype == y.dtype:
            self.lw.reshape(written, y, self.node.name)
            return
        self.cast(self.reshape(written, y.shape), y.dtype, out=y)

    def transpose(self, x: Tensor, perm) -> Tensor:
        perm = [int(p) for p in perm]
        if perm == sorted(perm):
            return x
        shape = [x.shape[p] for p in perm]
        return self.op("TRANSPOSE", [x, self.const(perm, np.int32)], shape, x.dtype, "TransposeOptions", quant=x.quant)

    def reshape(self, x: Tensor, shape, out: Tensor | None = None) -> Tensor:
        if out is None and tuple(shape) == tuple(x.shape):
            return x
        out = self.tensor(shape, x.dtype, x.quant) if out is None else out
        return self.lw.reshape(x, out, self.node.name)


def _same_quant(a: Tensor, b: Tensor) -> bool:
    if a.quant is None or b.quant is None:
        return a.quant is None and b.quant is None
    return bool(np.array_equal(a.quant.scale, b.quant.scale) and np.array_equal(a.quant.zero_point, b.quant.zero_point))


def type_names() -> str:
    """The tensor types qcc's TFLite writer stores, for error messages."""
    return ", ".join(sorted(str(t) for t in TENSOR_TYPES))


def attr_str(node: ir.Node, name: str, default: str) -> str:
    attr = node.attributes.get(name)
    return default if attr is None else attr.as_string()


def write_constant(lw: Lowering, node: ir.Node, array: np.ndarray, index: int = 0) -> None:
    """Output ``index`` holds a constant known at compile time: a constant copied by RESHAPE."""
    rule = Rule(lw, node)
    y = rule.output(index)
    if y.dtype not in TENSOR_TYPES:
        raise unsupported(node, f"a {y.dtype} output (qcc's TFLite writer stores {type_names()})")
    rule.finish(rule.const(np.asarray(array).astype(y.dtype).reshape(y.shape)), index)


def optional_input(node: ir.Node, index: int) -> ir.Value | None:
    """Input ``index`` of ``node``, or None when the node has fewer inputs (or leaves it empty)."""
    return node.inputs[index] if len(node.inputs) > index else None


def static_rank(node: ir.Node, value: ir.Value) -> list[int]:
    if value.shape is None or not all(isinstance(d, int) for d in value.shape):
        raise unsupported(node, f"{value.name!r} has no static shape")
    return [int(d) for d in value.shape]


def slice_row(rule: Rule, x: Tensor, i: int) -> Tensor:
    if x.data is not None:
        return rule.const(x.data[i : i + 1])
    begin = rule.const([i] + [0] * (len(x.shape) - 1), np.int32)
    size = rule.const([1, *x.shape[1:]], np.int32)
    return rule.op("SLICE", [x, begin, size], [1, *x.shape[1:]], x.dtype, "SliceOptions")


def raw_int8(tensor: Tensor) -> Tensor:
    """Marks an int8 tensor the island reads or writes as integers with parameters (1, 0).

    LiteRT reads an int8 tensor through its parameters, and qcc requires them on every int8
    tensor; scale 1 and zero point 0 say its value is the integer itself, which it is here.
    """
    if tensor.dtype == np.dtype(np.int8) and tensor.quant is None:
        tensor.quant = Quant(np.ones(1, np.float32), np.zeros(1, np.int64), 0)
    return tensor
