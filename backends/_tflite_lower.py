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

Shapes: ``Tensor.shape`` is always static (the first calibration sample's sizes); a value with a
dynamic dimension also has ``Tensor.shape_signature`` (``-1`` there; ``Tensor.signature`` is the
signature or the shape). :meth:`Lowering.reshape` writes ``-1`` for one dynamic dimension; rules
that need a size at run time read it with :meth:`Lowering.shape_tensor`. float16 and float64
values are float32 inside the model; inputs and outputs of those types keep them at the
interface with a CAST at the edge (LiteRT's float kernels are float32).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.annotations import Decision, get_decision, get_quant, set_quant
from qcc.backends._tflite_shapes import SIGNATURE_KEY
from qcc.backends._tflite_writer import TENSOR_TYPES, FlatModel, Quant, Tensor, builtin
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


def cut_graph_fix(node: ir.Node, reads: str | None = None) -> str:
    """Returns the fix for a node qcc cannot write to TFLite at all: run the model up to it (or from
    after it) as TFLite and the rest elsewhere, or choose an ONNX target (which keeps any op in float).

    Args:
        node: the node to cut at.
        reads: the tensors the rest of the model reads, when they are not just the node's inputs
            (an If's branches read outer values too); the cut is then always before the node.
    """
    other_targets = "or compile for ort or trt, whose ONNX artifact keeps the op in float."
    if reads is None and all(v is None or v.producer() is None for v in node.inputs):
        # It reads only graph inputs and constants: nothing before it to keep, so the cut goes after it.
        return (
            f"cut the graph after node {node.name!r} with onnx.utils.extract_model(model_path, 'part.onnx', "
            "input_names=[...], output_names=[...]) (the names of that node's outputs and of the graph outputs), "
            f"compile that part for tflite and compute {node.op_type} ahead of it in your own code, {other_targets}"
        )
    reads = reads or "that node's inputs"
    return (
        f"cut the graph before node {node.name!r} with onnx.utils.extract_model(model_path, 'part.onnx', "
        f"input_names=[...], output_names=[...]) (the names of the graph inputs and of {reads}) and run the rest "
        f"separately, {other_targets}"
    )


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


def _planned_int8(node: ir.Node) -> bool:
    decision = get_decision(node)
    return decision is not None and decision.decision == Decision.INT8


class Lowering:
    """Builds the flat model node by node (see module docstring)."""

    def __init__(self, io_int8: bool) -> None:
        self.model = FlatModel()
        self.io_int8 = io_int8
        self._tensors: dict[tuple[int, bool], Tensor] = {}
        self._float_kernels: set[int] = set()
        self._casts: dict[tuple[int, str], Tensor] = {}

    def lower(self, graph: ir.Graph) -> FlatModel:
        """Lowers every node of the graph.

        Raises:
            BackendError: a node has no TFLite lowering, or a tensor has no static shape.
        """
        from qcc.backends._tflite_ops import LOWERINGS
        from qcc.backends._tflite_ops_shape import RUNTIME_LOWERINGS

        for value in graph.inputs:
            quantized = self.io_int8 and get_quant(value) is not None
            edge = _EDGE_TYPES.get(value.dtype) if not quantized else None
            if edge is None:
                tensor = self.define(value, quantized)
            else:
                # float16/float64 at the interface (under the input's name), float32 inside: CAST at the edge.
                tensor = self.model.tensor(
                    value.name, shape_of(value), edge, shape_signature=value.meta.get(SIGNATURE_KEY)
                )
                self.op("CAST", [tensor], [self.define(value, False)], **_cast_fields(edge, np.float32))
            self.model.inputs.append(tensor.index)
            self.model.input_names.append(value.name)
        for node in graph:
            rule = LOWERINGS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
            if node.domain in ("", "ai.onnx") and node.op_type in RUNTIME_LOWERINGS and _touches_dynamic(node):
                rule = RUNTIME_LOWERINGS[node.op_type]
            if rule is None:
                raise BackendError(
                    f"node {node.name!r} ({node.op_type}) has no TFLite lowering in qcc, int8 or float.",
                    cut_graph_fix(node),
                )
            if node.op_type in FLOAT_KERNELS and self.is_int8(node):
                self._float_kernels.add(id(node))
            rule(self, node)
            if id(node) in self._float_kernels:
                self._round_for_float_readers(node)
        for value in graph.outputs:
            quantized = self.io_int8 and get_quant(value) is not None
            tensor = self.read(value, quantized)
            edge = _EDGE_TYPES.get(value.dtype) if not quantized else None
            if edge is not None and tensor.dtype == np.float32:
                self.model.rename(tensor, f"{value.name}_float32")  # the output's name goes to the interface
                out = self.model.tensor(value.name, tensor.shape, edge, shape_signature=tensor.shape_signature)
                self.op("CAST", [tensor], [out], **_cast_fields(np.float32, edge))
                tensor = out
            self.model.outputs.append(tensor.index)
            self.model.output_names.append(value.name)
        return self.model

    def _round_for_float_readers(self, node: ir.Node) -> None:
        """Float readers of a ``FLOAT_KERNELS`` op's quantized output read it rounded to int8.

        The op writes float32, and only its int8 readers used to get the QUANTIZE; a float reader
        (MiniLM: the ``Where(IsNaN(p), 0, p)`` after each int8 Softmax) read the unrounded value,
        while the simulation (DQ -> op -> Q -> DQ) rounds it to the output's parameters first. On
        MiniLM every attention probability then differed from the simulation by a step of 1/256
        and the XNNPACK output drifted from it from the first layer on. QUANTIZE -> DEQUANTIZE
        gives such readers exactly the simulation's value (and int8 readers reuse the QUANTIZE).
        """
        for out in node.outputs:
            # A graph output keeps its producer's tensor, which carries the output's name.
            if out is None or out.is_graph_output() or get_quant(out) is None or (id(out), False) not in self._tensors:
                continue
            if not any(use.node.op_type in FLOAT_KERNELS or not _planned_int8(use.node) for use in out.uses()):
                continue
            rounded = self.read(out, True)
            tensor = self.model.tensor(
                f"{out.name}_rounded", rounded.shape, np.float32, shape_signature=rounded.shape_signature
            )
            self.op("DEQUANTIZE", [rounded], [tensor], source=out.name)
            self._tensors[(id(out), False)] = tensor

    # -- tensors ---------------------------------------------------------------------------------

    def is_int8(self, node: ir.Node) -> bool:
        """True if the node is written as an int8 op (planned int8, not a ``FLOAT_KERNELS`` op)."""
        return id(node) not in self._float_kernels and _planned_int8(node)

    def define(self, value: ir.Value, quantized: bool) -> Tensor:
        """Creates the native tensor of a value (a node output or a model input)."""
        if quantized:
            quant = self._quant_of(value)
            tensor = self.model.tensor(value.name, shape_of(value), np.int8, quant=quant)
        else:
            tensor = self.model.tensor(value.name, shape_of(value), _float_dtype(value))
        tensor.shape_signature = value.meta.get(SIGNATURE_KEY)
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
                if _may_be_infinite(value):
                    native = self._saturated(native, tensor.quant, value.name)
                self.op("QUANTIZE", [native], [tensor], source=value.name)
            else:
                tensor = self.model.tensor(f"{value.name}_float", native.shape, np.float32)
                self.op("DEQUANTIZE", [native], [tensor], source=value.name)
            tensor.shape_signature = native.shape_signature
        self._tensors[key] = tensor
        return tensor

    def native(self, value: ir.Value) -> Tensor:
        """The value's tensor as its producer wrote it (int8 or float): for ops that read only its shape."""
        for quantized in (True, False):
            if (id(value), quantized) in self._tensors:
                return self._tensors[(id(value), quantized)]
        return self.read(value, False)

    def _saturated(self, x: Tensor, quant: Quant, source: str) -> Tensor:
        """``x`` clamped to the range ``quant`` represents (MINIMUM, MAXIMUM): what QUANTIZE saturates to.

        LiteRT's builtin QUANTIZE converts an infinite value to an integer before it saturates
        (``-inf`` came out as 127 on an attention mask), so an infinity is clamped in float first.
        """
        low = (-128 - float(quant.zero_point[0])) * float(quant.scale[0])
        high = (127 - float(quant.zero_point[0])) * float(quant.scale[0])
        below = self.model.tensor(f"{x.name}_below", x.shape, np.float32, shape_signature=x.shape_signature)
        clamped = self.model.tensor(f"{x.name}_saturated", x.shape, np.float32, shape_signature=x.shape_signature)
        self.op("MINIMUM", [x, self.constant(f"{x.name}_high", np.array(high, np.float32))], [below], source=source)
        self.op("MAXIMUM", [below, self.constant(f"{x.name}_low", np.array(low, np.float32))], [clamped], source=source)
        return clamped

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
        """Appends RESHAPE of ``x`` into ``out``; returns ``out``.

        The new shape is ``out``'s signature, so one dynamic dimension is written ``-1``. With
        more than one, the merge of the instances (``_tflite_shapes``) reads them at run time.
        """
        dims = list(out.signature) if list(out.signature).count(-1) == 1 else list(out.shape)
        shape = self.constant(f"{source}_shape", np.array(dims, np.int32))
        self.op("RESHAPE", [x, shape], [out], "ReshapeOptions", source=source, new_shape=dims)
        return out

    def reshape_to(self, x: Tensor, shape: Tensor, out: Tensor, source: str) -> Tensor:
        """Appends RESHAPE of ``x`` into ``out`` to a run-time ``shape`` (an integer vector)."""
        self.op("RESHAPE", [x, self.int32(shape, source)], [out], source=source)
        return out

    def int32(self, tensor: Tensor, source: str) -> Tensor:
        """The integer tensor as int32 (a CAST unless it is one): shape inputs of RESHAPE, SLICE, ... take int32."""
        if tensor.dtype == np.dtype(np.int32):
            return tensor
        key = (id(tensor), "int32")
        if key not in self._casts:
            if tensor.data is not None:
                self._casts[key] = self.constant(f"{tensor.name}_int32", tensor.data.astype(np.int32))
            else:
                cast = self.model.tensor(
                    f"{tensor.name}_int32", tensor.shape, np.int32, shape_signature=tensor.shape_signature
                )
                self.op("CAST", [tensor], [cast], source=source, **_cast_fields(tensor.dtype, np.int32))
                self._casts[key] = cast
        return self._casts[key]

    def shape_tensor(self, x: Tensor, source: str) -> Tensor:
        """``SHAPE(x)`` as an int32 vector, computed at run time (once per tensor)."""
        key = (id(x), "shape")
        if key not in self._casts:
            shape = self.model.tensor(f"{x.name}_shape", (len(x.shape),), np.int32)
            self.op("SHAPE", [x], [shape], "ShapeOptions", source=source, out_type=TENSOR_TYPES[np.dtype(np.int32)])
            self._casts[key] = shape
        return self._casts[key]

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
        if array.dtype in (np.float64, np.float16):
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


def _may_be_infinite(value: ir.Value) -> bool:
    """True if the value's producer reads a constant holding an infinity (a ``-inf`` attention mask)."""
    producer = value.producer()
    if producer is None:
        return False
    for v in producer.inputs:
        array = const_array(v) if v is not None else None
        if array is not None and array.dtype.kind == "f" and np.isinf(array).any():
            return True
    return False


def _touches_dynamic(node: ir.Node) -> bool:
    """True if the node reads or writes a value with a dynamic dimension (or a run-time shape input)."""
    values = [v for v in (*node.inputs, *node.outputs) if v is not None]
    if any(SIGNATURE_KEY in v.meta for v in values):
        return True
    return node.op_type in ("Range", "ConstantOfShape") and any(v.const_value is None for v in node.inputs if v)


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
    if value.dtype is None or value.dtype in _EDGE_TYPES or value.dtype == ir.DataType.FLOAT:
        return np.dtype(np.float32)
    return np.dtype(value.dtype.numpy())


# float types LiteRT's kernels do not compute in: float32 inside, CAST at the model's edges.
_EDGE_TYPES = {ir.DataType.FLOAT16: np.dtype(np.float16), ir.DataType.DOUBLE: np.dtype(np.float64)}


def _cast_fields(source, target) -> dict:
    """The operator options of a CAST from ``source`` to ``target`` (numpy types)."""
    return {
        "options": "CastOptions",
        "in_data_type": TENSOR_TYPES[np.dtype(source)],
        "out_data_type": TENSOR_TYPES[np.dtype(target)],
    }
