"""``MathChain``: one node's chain of float32 TFLite builtins, shared by the element-wise math rules.

The math rules (``_tflite_ops_math`` and the modules it collects: ``_tflite_ops_trig``,
``_tflite_ops_variadic``, ``_tflite_ops_passthrough``) lower an op LiteRT has no single builtin
for into a short chain of builtins. A chain reads the node's inputs, appends builtins whose
outputs broadcast as numpy's do, and writes its last op into the node's output.

LiteRT's float kernels compute in float32: converting float16/float64 values is the lowering's
job (a CAST at the model's edges); a chain handed such a tensor refuses the node and says so.
Integer tensors keep their type (Mod, Max and Min of integers stay integer).

TFLite's comparison and select kernels broadcast up to 4-D, so a chain built ``flat`` runs a
unary op of higher rank on a 1-D view of its input (``RESHAPE`` to ``[-1]``) and reshapes the
result back to the output's shape.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_window import unsupported
from qcc.backends._tflite_writer import Tensor
from qcc.errors import BackendError

# Options tables of the builtins these rules emit (None: the builtin has no options).
OPTIONS = {
    "ADD": "AddOptions",
    "SUB": "SubOptions",
    "MUL": "MulOptions",
    "DIV": "DivOptions",
    "MAXIMUM": "MaximumMinimumOptions",
    "MINIMUM": "MaximumMinimumOptions",
    "EXP": "ExpOptions",
    "ABS": "AbsOptions",
    "NEG": "NegOptions",
    "ATAN2": "ATan2Options",
    "SIGN": "SignOptions",
    "COS": "CosOptions",
    "FLOOR_MOD": "FloorModOptions",
    "SELECT_V2": "SelectV2Options",
    "GREATER": "GreaterOptions",
    "LESS": "LessOptions",
    "EQUAL": "EqualOptions",
    "NOT_EQUAL": "NotEqualOptions",
    "LOGICAL_AND": "LogicalAndOptions",
    "LOGICAL_NOT": "LogicalNotOptions",
    "FILL": "FillOptions",
    "RIGHT_SHIFT": "RightShiftOptions",
}
# TFLite's comparison and select kernels broadcast up to 4-D; higher-rank element-wise ops run
# on a flat view of their input.
MAX_BROADCAST_RANK = 4


class MathChain:
    """Builds one node's chain of float32 builtins (integer tensors keep their type).

    ``arg(i)`` reads input ``i``; ``result`` writes the last op into the node's output. With
    ``flat``, a unary op of rank > 4 runs on a 1-D view (the comparison kernels stop at 4-D).
    """

    def __init__(self, lw: Lowering, node: ir.Node, flat: bool = False) -> None:
        if lw.is_int8(node):
            raise unsupported(node, f"int8 {node.op_type}")
        self.lw, self.node, self.flat, self.count = lw, node, flat, 0

    def const(self, value: float) -> Tensor:
        """A float32 scalar constant."""
        self.count += 1
        return self.lw.constant(f"{self.node.name}_c{self.count}", np.array(value, np.float32))

    def op(self, name: str, inputs, shape, options: str | None = None, out=None, dtype=None, **fields):
        """Appends ``name`` writing a new tensor of ``shape`` (or ``out``) and returns it.

        The new tensor has ``dtype``, by default the type of the last non-boolean input (the
        data of SELECT_V2 and FILL; float32 for a float chain, the integer type for integers).
        """
        if out is None:
            if dtype is None:
                data = [t.dtype for t in inputs if t.dtype != np.dtype(np.bool_)]
                dtype = data[-1] if data else np.dtype(np.float32)
            self.count += 1
            out = self.lw.model.tensor(f"{self.node.name}_t{self.count}", shape, dtype)
        self.lw.op(name, inputs, [out], options, source=self.node.name, **fields)
        return out

    def arg(self, index: int) -> Tensor:
        """Input ``index`` (1-D in ``flat`` mode)."""
        tensor = self.raw(index)
        if self.flat and len(tensor.shape) > MAX_BROADCAST_RANK:
            self.count += 1
            out = self.lw.model.tensor(f"{self.node.name}_t{self.count}", (math.prod(tensor.shape),), tensor.dtype)
            # [-1] rather than the static size: it holds for any run-time size.
            shape = self.lw.constant(f"{self.node.name}_flat", np.array([-1], np.int32))
            self.lw.op("RESHAPE", [tensor, shape], [out], "ReshapeOptions", source=self.node.name, new_shape=[-1])
            tensor = out
        return tensor

    def raw(self, index: int) -> Tensor:
        """Input ``index`` as the lowering hands it over.

        Raises:
            BackendError: it is float16/float64 (LiteRT's float kernels compute in float32).
        """
        tensor = self.lw.input(self.node, index)
        if tensor.dtype in (np.dtype(np.float16), np.dtype(np.float64)):
            raise BackendError(
                f"node {self.node.name!r} ({self.node.op_type}): tensor {tensor.name!r} is {tensor.dtype}; "
                "LiteRT's float kernels compute in float32 and qcc's TFLite lowering does not convert it.",
                "export the model in float32.",
            )
        return tensor

    def f(self, name: str, *inputs: Tensor) -> Tensor:
        """Appends the builtin ``name`` over ``inputs`` (broadcast) and returns its output."""
        return self.op(name, list(inputs), broadcast_shape(inputs), OPTIONS.get(name))

    def compare(self, name: str, *inputs: Tensor) -> Tensor:
        """Appends the comparison or logical builtin ``name`` and returns its boolean output."""
        return self.op(name, list(inputs), broadcast_shape(inputs), OPTIONS.get(name), dtype=np.bool_)

    def result(self, name: str, *inputs: Tensor, index: int = 0, **fields) -> None:
        """Appends the last builtin, writing output ``index`` of the node (un-flattened in ``flat`` mode)."""
        y = self.lw.output(self.node, index)
        shape = broadcast_shape(inputs)
        if tuple(shape) == tuple(y.shape):
            self.op(name, list(inputs), y.shape, OPTIONS.get(name), out=y, **fields)
        else:
            self.lw.reshape(self.op(name, list(inputs), shape, OPTIONS.get(name), **fields), y, self.node.name)

    def copy_to_output(self, index: int = 0) -> None:
        """Writes output ``index`` as a copy of input 0 (a RESHAPE to the same shape)."""
        self.lw.reshape(self.raw(0), self.lw.output(self.node, index), self.node.name)


def broadcast_shape(inputs) -> tuple[int, ...]:
    """Returns the shape ``inputs`` broadcast to (numpy's rules, which TFLite's kernels follow)."""
    return tuple(np.broadcast_shapes(*(tuple(t.shape) for t in inputs)))
