"""Lowering: the annotated, NHWC IR -> a :class:`FlatModel` of TFLite builtins.

Every IR value becomes one *native* tensor, the one its producer writes: int8 (with the value's
final parameters) when the producing node runs int8, float32 otherwise, and for model inputs
whatever ``--io`` asks. A node reads each input in its own precision; when that is not the
native one, a DEQUANTIZE (int8 -> float) or QUANTIZE (float -> int8) is inserted once and reused.
So float islands, ops the plan kept float, become DEQUANTIZE -> float op -> QUANTIZE without any
special case, and the model's edges get QUANTIZE/DEQUANTIZE when ``--io float``.

Absorbed activations (Relu/Clip marked FUSED) are removed before the layout pass; their producer
records the activation (``FUSED_KEY``) and writes it as a fused activation where TFLite allows
one. The clamp itself is done by the output's quantization either way, as in the ORT simulation.

The per-op rules live in ``_tflite_ops``; an op without a rule is a :class:`BackendError` naming
the node.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.annotations import Decision, get_decision, get_quant, set_quant
from qcc.backends._tflite_writer import FlatModel, Quant, Tensor, builtin
from qcc.errors import BackendError
from qcc.irutils import const_array, remove_node_bypassing
from qcc.quantmath import quantize

FUSED_KEY = "qcc.tflite.fused"

# Int8 ops XNNPACK does not take (TFLITE.md §9) but takes in float32: they are written as
# DEQUANTIZE -> float op -> QUANTIZE, which computes exactly what the ORT simulation computes
# (DQ -> op -> Q) and keeps the delegated graph in one piece instead of splitting it at each one.
# Relu here is a standalone one that could not be fused (Silero's Relu after Squeeze(LSTM)).
FLOAT_KERNELS = frozenset({"HardSwish", "Softmax", "AveragePool", "Identity", "Relu"})

# TFLite ActivationFunctionType values.
ACT_NONE, ACT_RELU, ACT_RELU_N1_TO_1, ACT_RELU6 = 0, 1, 2, 3


# Float producers that take a fused activation (their float output is clamped exactly).
_FLOAT_FUSABLE = frozenset({"Conv", "Gemm", "Add", "Sub", "Mul"})


def absorb_activations(graph: ir.Graph) -> None:
    """Removes FUSED Relu/Clip nodes, recording their activation on the producer (see docstring).

    In float regions a Relu/Clip with a TFLite activation code is fused into a float producer
    that feeds only it, as the TFLite converter does.
    """
    for node in list(graph):
        decision = get_decision(node)
        producer = node.inputs[0].producer() if node.inputs and node.inputs[0] is not None else None
        if decision is None or decision.decision == Decision.FLOAT:
            if not _float_fusable(node, producer):
                continue
        elif decision.decision != Decision.FUSED:
            continue
        out, source = node.outputs[0], node.inputs[0]
        quant, name, code = get_quant(out), out.name, _activation_code(node)
        if remove_node_bypassing(graph, node):
            producer.meta[FUSED_KEY] = code
            set_quant(source, quant)
            source.name = name


def _float_fusable(node: ir.Node, producer: ir.Node | None) -> bool:
    if node.op_type not in ("Relu", "Clip") or producer is None or producer.op_type not in _FLOAT_FUSABLE:
        return False
    if get_quant(node.inputs[0]) is not None or get_quant(node.outputs[0]) is not None:
        return False
    decision = get_decision(producer)
    if decision is not None and decision.decision != Decision.FLOAT:
        return False
    if len(node.inputs[0].uses()) != 1 or node.inputs[0].is_graph_output():
        return False
    return _activation_code(node) != ACT_NONE


def _activation_code(node: ir.Node) -> int:
    if node.op_type == "Relu":
        return ACT_RELU
    low = const_array(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
    high = const_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    low = None if low is None else float(low)
    high = None if high is None else float(high)
    if low == 0.0 and high == 6.0:
        return ACT_RELU6
    if low == -1.0 and high == 1.0:
        return ACT_RELU_N1_TO_1
    if low == 0.0 and high is None:
        return ACT_RELU
    return ACT_NONE


class Lowering:
    """Builds the flat model node by node (see module docstring)."""

    def __init__(self, io_int8: bool) -> None:
        self.model = FlatModel()
        self.io_int8 = io_int8
        self._tensors: dict[tuple[int, bool], Tensor] = {}
        self._float_kernels: set[int] = set()

    def lower(self, graph: ir.Graph) -> FlatModel:
        """Lowers every node of the graph.

        Raises:
            BackendError: a node has no TFLite lowering, or a tensor has no static shape.
        """
        from qcc.backends._tflite_ops import LOWERINGS

        for value in graph.inputs:
            tensor = self.define(value, self.io_int8 and get_quant(value) is not None)
            self.model.inputs.append(tensor.index)
            self.model.input_names.append(value.name)
        for node in graph:
            rule = LOWERINGS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
            if rule is None:
                raise BackendError(
                    f"node {node.name!r} ({node.op_type}) has no TFLite lowering in qcc.",
                    "exclude it from the model or add a lowering to backends/_tflite_ops.py (see docs/tflite.md).",
                )
            if node.op_type in FLOAT_KERNELS and self.is_int8(node):
                self._float_kernels.add(id(node))
            rule(self, node)
        for value in graph.outputs:
            tensor = self.read(value, self.io_int8 and get_quant(value) is not None)
            self.model.outputs.append(tensor.index)
            self.model.output_names.append(value.name)
        return self.model

    # -- tensors ---------------------------------------------------------------------------------

    def is_int8(self, node: ir.Node) -> bool:
        """True if the node is written as an int8 op (planned int8, not a ``FLOAT_KERNELS`` op)."""
        if id(node) in self._float_kernels:
            return False
        decision = get_decision(node)
        return decision is not None and decision.decision == Decision.INT8

    def define(self, value: ir.Value, quantized: bool) -> Tensor:
        """Creates the native tensor of a value (a node output or a model input)."""
        if quantized:
            quant = self._quant_of(value)
            tensor = self.model.tensor(value.name, shape_of(value), np.int8, quant=quant)
        else:
            tensor = self.model.tensor(value.name, shape_of(value), _float_dtype(value))
        self._tensors[(id(value), quantized)] = tensor
        return tensor

    def alias(self, value: ir.Value, tensor: Tensor) -> None:
        """Makes an existing tensor the native tensor of ``value`` (an op that moves nothing)."""
        self._tensors[(id(value), tensor.quant is not None)] = tensor

    def read(self, value: ir.Value, quantized: bool) -> Tensor:
        """Returns the value as an int8 or float tensor, converting (once) when needed."""
        key = (id(value), quantized)
        if key in self._tensors:
            return self._tensors[key]
        array = const_array(value)
        if array is not None:
            tensor = self._constant(value, array, quantized)
        else:
            native = self._tensors.get((id(value), not quantized))
            if native is None:
                raise BackendError(f"tensor {value.name!r} is read before it is written.", "this is a qcc bug.")
            if quantized:
                tensor = self.model.tensor(f"{value.name}_int8", native.shape, np.int8, quant=self._quant_of(value))
                self.op("QUANTIZE", [native], [tensor], source=value.name)
            else:
                tensor = self.model.tensor(f"{value.name}_float", native.shape, np.float32)
                self.op("DEQUANTIZE", [native], [tensor], source=value.name)
        self._tensors[key] = tensor
        return tensor

    def input(self, node: ir.Node, index: int) -> Tensor:
        """Input ``index`` of the node, in the node's precision."""
        return self.read(node.inputs[index], self.is_int8(node))

    def output(self, node: ir.Node, index: int = 0) -> Tensor:
        """Output ``index`` of the node, in the node's precision."""
        return self.define(node.outputs[index], self.is_int8(node))

    def constant(self, name: str, array: np.ndarray, quant: Quant | None = None) -> Tensor:
        """A constant tensor (shape vectors, axes, weights)."""
        return self.model.constant(name, array, quant)

    def op(self, name: str, inputs, outputs, options: str | None = None, source: str = "", **fields) -> None:
        """Appends a builtin operator by name (``CONV_2D``)."""
        self.model.op(builtin(name), inputs, outputs, options, source=source, **fields)

    def reshape(self, x: Tensor, out: Tensor, source: str) -> Tensor:
        """Appends RESHAPE of ``x`` into ``out`` (``out``'s static shape); returns ``out``."""
        shape = self.constant(f"{source}_shape", np.array(out.shape, np.int32))
        self.op("RESHAPE", [x, shape], [out], "ReshapeOptions", source=source, new_shape=list(out.shape))
        return out

    def weight(self, node: ir.Node, index: int, transform, axis: int) -> Tensor:
        """A weight in TFLite layout: ``transform`` maps the ONNX array; ``axis`` is the new channel axis."""
        value = node.inputs[index]
        array = const_array(value)
        quant = get_quant(value)
        if not self.is_int8(node) or quant is None:
            return self.constant(value.name, transform(array.astype(np.float32)))
        data = quantize(array, quant.scale, quant.zero_point, quant.axis, ir.DataType.INT8)
        params = Quant(np.atleast_1d(quant.scale), np.atleast_1d(quant.zero_point).astype(np.int64), axis)
        return self.constant(value.name, transform(data), params)

    def bias(self, node: ir.Node, index: int, channels: int, x: Tensor, w: Tensor) -> Tensor | int:
        """The int32 bias (float when the node is float), or -1 when it has none."""
        value = node.inputs[index] if len(node.inputs) > index else None
        if not self.is_int8(node):
            array = np.zeros(channels, np.float32) if value is None else const_array(value).astype(np.float32)
            return self.constant(value.name if value is not None else f"{node.name}_bias", array.reshape(-1))
        # A per-tensor weight takes a per-tensor bias (XNNPACK refuses the mix).
        width = channels if w.quant.scale.size > 1 else 1
        scale = (np.float64(x.quant.scale[0]) * w.quant.scale.astype(np.float64)).astype(np.float32)
        scale = np.broadcast_to(scale, (width,)).copy()
        if value is None:
            data = np.zeros(channels, np.int32)
        else:
            quant = get_quant(value)
            scale = np.broadcast_to(np.asarray(quant.scale, np.float32), (width,)).copy()
            data = quantize(const_array(value).reshape(-1), scale, np.zeros(width, np.int32), 0, ir.DataType.INT32)
        name = value.name if value is not None else f"{node.name}_bias"
        return self.constant(name, data, Quant(scale, np.zeros(width, np.int64), 0))

    def _constant(self, value: ir.Value, array: np.ndarray, quantized: bool) -> Tensor:
        if quantized:
            quant = get_quant(value)
            if quant is None:
                raise BackendError(
                    f"constant {value.name!r} is read by an int8 op but has no parameters.",
                    "this is a qcc bug; --exclude the op reading it meanwhile.",
                )
            data = quantize(array, quant.scale, quant.zero_point, quant.axis, ir.DataType.INT8)
            return self.constant(value.name, data, self._quant_of(value))
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        return self.constant(value.name, array)

    def _quant_of(self, value: ir.Value) -> Quant:
        quant = get_quant(value)
        if quant is None or quant.scale is None:
            raise BackendError(
                f"tensor {value.name!r} is int8 in the TFLite model but has no quantization parameters.",
                "this is a qcc bug; --exclude the node that writes it meanwhile.",
            )
        if quant.dtype != ir.DataType.INT8:
            raise BackendError(
                f"tensor {value.name!r} is {quant.dtype.name.lower()}; TFLite int8 kernels need int8 activations.",
                "compile with --activation-type int8 (or auto) for --target tflite.",
            )
        axis = 0 if quant.axis is None else quant.axis
        return Quant(
            np.atleast_1d(quant.scale).astype(np.float32), np.atleast_1d(quant.zero_point).astype(np.int64), axis
        )


def shape_of(value: ir.Value) -> tuple[int, ...]:
    """The static shape of a value.

    Raises:
        BackendError: a dimension is not a known integer.
    """
    if value.shape is None or not all(isinstance(d, int) for d in value.shape):
        raise BackendError(
            f"tensor {value.name!r} has no static shape ({value.shape}); TFLite tensors need one.",
            "give the model static input shapes, or calibration samples of one fixed shape.",
        )
    return tuple(int(d) for d in value.shape)


def _float_dtype(value: ir.Value) -> np.dtype:
    if value.dtype is None or value.dtype == ir.DataType.FLOAT:
        return np.dtype(np.float32)
    return np.dtype(value.dtype.numpy())
